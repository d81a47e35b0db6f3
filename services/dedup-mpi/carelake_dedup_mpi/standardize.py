"""Raw demographics -> PersonRecord: one standard spelling per value, so comparison sees people, not typing.

Pure functions, none of which raises on bad input: a value that cannot be made sense of becomes
None (absent), which the matcher treats as "no evidence" rather than as a disagreement.

* Names: upper-case ASCII (unidecode folds accents: José -> JOSE), punctuation dropped
  (O'Brien -> OBRIEN), titles and generational suffixes removed (DR, MR, JR, III ...), a hyphen
  kept (SMITH-JONES stays whole; :func:`name_parts` gives the parts for comparison).
* Dates: ISO, YYYYMMDD, MM/DD/YYYY, DD/MM/YYYY when the day is > 12 (unambiguous), a timestamp's
  date part. Partial dates (1965, 1965-03) are None: a year alone must not look like a birth date;
  so are placeholders (1900-01-01, 1899-12-31) and years before 1880.
* Addresses: USPS abbreviations for street suffixes, directions and unit designators.
* Phones: digits; a US number loses its leading country code 1 (10 digits).
* SSN: 9 digits, or None for numbers the SSA never issues (area 000, 666, 9xx; group 00; serial
  0000; 123456789; one digit repeated) — placeholders must not become evidence.
* Postal codes: a US ZIP (or ZIP+4) becomes its first 5 digits; any other country's code is kept
  upper-case without spaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from unidecode import unidecode

from carelake_dedup_mpi.person import PersonRecord

SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
US_COUNTRIES = frozenset({"", "US", "USA", "UNITED STATES", "UNITED STATES OF AMERICA", "U S A", "U S"})

# Removed wherever they appear in a name (titles, generational and degree suffixes).
NAME_NOISE = frozenset({
    "MR", "MRS", "MS", "MISS", "MSTR", "DR", "PROF", "REV", "SIR",
    "JR", "SR", "JNR", "SNR", "II", "III", "IV", "MD", "PHD", "ESQ", "DDS",
})
# Placeholders some systems put where a name is unknown.
NAME_PLACEHOLDERS = frozenset({"UNKNOWN", "UNK", "NONE", "NULL", "NA", "N A", "BABY", "BABY BOY",
                               "BABY GIRL", "TEST", "NO NAME", "NONAME"})

ADDRESS_ABBREVIATIONS: dict[str, str] = {
    # street suffixes (USPS Publication 28, the common ones)
    "STREET": "ST", "STR": "ST", "AVENUE": "AVE", "AV": "AVE", "AVEN": "AVE", "BOULEVARD": "BLVD",
    "ROAD": "RD", "DRIVE": "DR", "DRV": "DR", "LANE": "LN", "COURT": "CT", "CRT": "CT", "PLACE": "PL",
    "TERRACE": "TER", "TERR": "TER", "CIRCLE": "CIR", "CIRCUIT": "CCT", "CRESCENT": "CRES",
    "HIGHWAY": "HWY", "PARKWAY": "PKWY", "PKY": "PKWY", "SQUARE": "SQ", "TRAIL": "TRL",
    "EXPRESSWAY": "EXPY", "FREEWAY": "FWY", "ALLEY": "ALY", "HEIGHTS": "HTS", "MOUNT": "MT",
    "MOUNTAIN": "MTN", "POINT": "PT", "CENTER": "CTR", "CENTRE": "CTR", "JUNCTION": "JCT",
    "CROSSING": "XING", "GARDENS": "GDNS", "GARDEN": "GDN", "HARBOR": "HBR", "HARBORS": "HBRS",
    "ISLAND": "IS", "KNOLL": "KNL", "KNOLLS": "KNLS", "MEADOWS": "MDWS", "MEADOW": "MDW",
    "PARK": "PARK", "PLAZA": "PLZ", "RIDGE": "RDG", "STATION": "STA", "SPRINGS": "SPGS",
    "VALLEY": "VLY", "VIEW": "VW", "VILLAGE": "VLG", "WAY": "WAY", "ESTATES": "EST", "GROVE": "GRV",
    "HILL": "HL", "HILLS": "HLS", "LAKE": "LK", "LAKES": "LKS", "CREEK": "CRK", "FORD": "FRD",
    "FORGE": "FRG", "FORT": "FT", "GLEN": "GLN", "ROUTE": "RTE", "TURNPIKE": "TPKE", "WALK": "WALK",
    "CLOSE": "CL", "PARADE": "PDE", "ESPLANADE": "ESP", "GROVES": "GRVS", "SHOALS": "SHLS",
    "SHORE": "SHR", "SHORES": "SHRS", "STREAM": "STRM", "SUMMIT": "SMT", "TUNNEL": "TUNL",
    "UNION": "UN", "VIADUCT": "VIA", "VISTA": "VIS", "WELLS": "WLS", "LOOP": "LOOP", "PASS": "PASS",
    "COVE": "CV", "CANYON": "CYN", "BRIDGE": "BRG", "BROOK": "BRK", "BYPASS": "BYP", "CAUSEWAY": "CSWY",
    "EXTENSION": "EXT", "FIELDS": "FLDS", "FIELD": "FLD", "FALLS": "FLS", "FERRY": "FRY",
    "ISLE": "ISLE", "LANDING": "LNDG", "MANOR": "MNR", "MILL": "ML", "MILLS": "MLS", "ORCHARD": "ORCH",
    "OVAL": "OVAL", "PINES": "PNES", "PORT": "PRT", "PRAIRIE": "PR", "RANCH": "RNCH", "RAPIDS": "RPDS",
    "REST": "RST", "RIVER": "RIV", "ROW": "ROW", "RUN": "RUN", "SPRING": "SPG", "TRACE": "TRCE",
    "TRACK": "TRAK", "UNDERPASS": "UPAS", "WOODS": "WDS", "ROADS": "RDS", "STREETS": "STS",
    # directions
    "NORTH": "N", "SOUTH": "S", "EAST": "E", "WEST": "W", "NORTHEAST": "NE", "NORTHWEST": "NW",
    "SOUTHEAST": "SE", "SOUTHWEST": "SW",
    # unit designators
    "APARTMENT": "APT", "APMT": "APT", "APMNT": "APT", "SUITE": "STE", "UNIT": "UNIT", "BUILDING": "BLDG",
    "FLOOR": "FL", "ROOM": "RM", "DEPARTMENT": "DEPT", "NUMBER": "",
}

_NON_ALNUM = re.compile(r"[^A-Z0-9\- ]+")
_NON_ALNUM_NO_HYPHEN = re.compile(r"[^A-Z0-9 ]+")
_SPACES = re.compile(r"\s+")
_DIGITS = re.compile(r"\D+")
_DATE_PATTERNS = (
    (re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ].*)?$"), "ymd"),
    (re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$"), "ymd"),
    (re.compile(r"^(\d{4})\.(\d{1,2})\.(\d{1,2})$"), "ymd"),
    (re.compile(r"^(\d{4})(\d{2})(\d{2})(?:\d{4,6}(?:\.\d+)?)?(?:[+-]\d{4})?$"), "ymd"),
    (re.compile(r"^(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4})$"), "xy"),
)


def _text(value: Any) -> str:
    """Any raw value as a stripped string ('' for None/NaN)."""
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN from pandas
        return ""
    return str(value).strip()


def fold(value: Any) -> str:
    """Upper-case ASCII with single spaces. ``fold(" josé  d'arc ")`` -> ``"JOSE D'ARC"``.

    >>> fold(" josé  d'arc ")
    "JOSE D'ARC"
    """
    return _SPACES.sub(" ", unidecode(_text(value)).upper()).strip()


def name(value: Any) -> str | None:
    """A standardized name: upper ASCII, no punctuation or titles/suffixes, hyphens kept.

    >>> name("Dr. José O'Brien-Smith, Jr.")
    'JOSE OBRIEN-SMITH'
    >>> name("  ") is None, name("Unknown") is None
    (True, True)
    """
    s = fold(value).replace("'", "").replace("`", "")
    s = _NON_ALNUM.sub(" ", s)
    s = re.sub(r"\s*-\s*", "-", s).strip("- ")
    tokens = [t for t in s.split() if t and t.strip("-")]
    if len(tokens) > 1:
        tokens = [t for t in tokens if t not in NAME_NOISE] or tokens[:1]
    out = " ".join(t.strip("-") for t in tokens)
    if not out or out in NAME_PLACEHOLDERS or not any(c.isalpha() for c in out):
        return None
    return out


@lru_cache(maxsize=1 << 16)
def name_parts(value: str | None) -> tuple[str, ...]:
    """The parts of a standardized name: ``"SMITH-JONES"`` -> ``("SMITH", "JONES")``.

    >>> name_parts("DE LA CRUZ-SMITH")
    ('DE', 'LA', 'CRUZ', 'SMITH')
    """
    if not value:
        return ()
    return tuple(value.replace("-", " ").split())


def parse_date(value: Any) -> date | None:
    """A full calendar date from the common shapes; None for partial or unparseable dates.

    >>> parse_date("1965-12-13"), parse_date("19651213"), parse_date("12/13/1965")
    (datetime.date(1965, 12, 13), datetime.date(1965, 12, 13), datetime.date(1965, 12, 13))
    >>> parse_date("13/12/1965"), parse_date("03/04/1965")
    (datetime.date(1965, 12, 13), datetime.date(1965, 3, 4))
    >>> parse_date("1965-12"), parse_date("1965"), parse_date("31/31/1965"), parse_date("n/a")
    (None, None, None, None)
    """
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    s = _text(value)
    if not s:
        return None
    if re.fullmatch(r"\d{8}\.0", s):  # a spreadsheet's float
        s = s[:-2]
    for pattern, order in _DATE_PATTERNS:
        m = pattern.match(s)
        if not m:
            continue
        a, b, c = (int(g) for g in m.groups())
        if order == "ymd":
            return _date(a, b, c)
        # MM/DD/YYYY is the US default; DD/MM/YYYY only when the first number cannot be a month.
        if a > 12 and b <= 12:
            return _date(c, b, a)
        return _date(c, a, b)
    return None


# Dates systems write when the birth date is unknown: never evidence of identity.
PLACEHOLDER_DATES = frozenset({date(1900, 1, 1), date(1899, 12, 31), date(1899, 12, 30), date(1901, 1, 1)})


def _date(y: int, m: int, d: int) -> date | None:
    if not 1880 <= y <= 2200:
        return None
    try:
        out = date(y, m, d)
    except ValueError:
        return None
    return None if out in PLACEHOLDER_DATES else out


def sex(value: Any) -> str | None:
    """M, F, O or U from the usual codings (FHIR gender, HL7 v2 AdministrativeSex, words, 1/2).

    >>> sex("female"), sex("M"), sex("other"), sex("unknown"), sex("x")
    ('F', 'M', 'O', 'U', 'O')
    """
    s = fold(value)
    if not s:
        return None
    if s in ("M", "MALE", "MAN", "1", "BOY"):
        return "M"
    if s in ("F", "FEMALE", "WOMAN", "2", "GIRL", "W"):
        return "F"
    if s in ("O", "OTHER", "X", "A", "NONBINARY", "NON-BINARY", "AMBIGUOUS"):
        return "O"
    return "U"


def address_line(value: Any) -> str | None:
    """An address line with USPS abbreviations and no punctuation.

    >>> address_line("123 North Main Street, Apartment 4B")
    '123 N MAIN ST APT 4B'
    >>> address_line("07620 Misty Harbors Apt. 579")
    '07620 MISTY HBRS APT 579'
    """
    s = _NON_ALNUM_NO_HYPHEN.sub(" ", fold(value).replace("-", " "))
    tokens = [ADDRESS_ABBREVIATIONS.get(t, t) for t in s.split()]
    out = " ".join(t for t in tokens if t)
    return out or None


def city(value: Any) -> str | None:
    """A city name: upper ASCII, punctuation dropped, SAINT/FORT/MOUNT abbreviated.

    >>> city("St. Louis"), city("Saint Louis"), city("")
    ('ST LOUIS', 'ST LOUIS', None)
    """
    s = _NON_ALNUM_NO_HYPHEN.sub(" ", fold(value).replace("-", " "))
    tokens = [{"SAINT": "ST", "FORT": "FT", "MOUNT": "MT"}.get(t, t) for t in s.split()]
    return " ".join(tokens) or None


def state(value: Any) -> str | None:
    """A state or province as given, upper-case (``il`` -> ``IL``)."""
    s = _NON_ALNUM_NO_HYPHEN.sub("", fold(value))
    return s or None


def postal_code(value: Any, country: Any = None) -> str | None:
    """A US ZIP's first 5 digits; another country's postal code upper-case without spaces.

    >>> postal_code("60601-1234"), postal_code("606011234"), postal_code("sw1a 1aa", "GB"), postal_code("2615")
    ('60601', '60601', 'SW1A1AA', '2615')
    """
    s = re.sub(r"[\s\-]+", "", fold(value))
    if not s or set(s) == {"0"}:
        return None
    us = fold(country) in US_COUNTRIES
    if us and s.isdigit() and len(s) in (5, 9):
        return s[:5]
    if s.endswith(".0") and s[:-2].isdigit():  # a spreadsheet's float
        s = s[:-2]
    return s[:10] if s.isalnum() else None


def phone(value: Any) -> str | None:
    """Digits only; a US number as 10 digits (leading 1 dropped); None for placeholders.

    >>> phone("+1 (312) 555-0188"), phone("312.555.0188 x12"), phone("0000000000"), phone("12")
    ('3125550188', '3125550188', None, None)
    """
    s = _text(value)
    if not s:
        return None
    s = re.split(r"(?i)\s*(?:x|ext\.?)\s*\d+\s*$", s)[0]
    digits = _DIGITS.sub("", s)
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    if len(digits) < 7 or len(digits) > 15 or len(set(digits)) == 1 or digits in ("1234567890", "0123456789"):
        return None
    return digits


def ssn(value: Any) -> str | None:
    """Nine digits, or None when the number is one the SSA never issues.

    >>> ssn("123-45-6788"), ssn("000-12-3456"), ssn("666123456"), ssn("912345678"), ssn("123456789")
    ('123456788', None, None, None, None)
    """
    digits = _DIGITS.sub("", _text(value))
    if len(digits) != 9:
        return None
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    if digits in ("123456789", "987654321", "078051120", "219099999") or len(set(digits)) == 1:
        return None
    return digits


# ---------------------------------------------------------------- FHIR Patient


def _codes(identifier: Mapping[str, Any]) -> set[str]:
    return {c.get("code", "") for c in (identifier.get("type") or {}).get("coding") or ()}


def _pick(items: Iterable[Mapping[str, Any]], uses: tuple[str, ...]) -> Mapping[str, Any] | None:
    items = [i for i in items if isinstance(i, Mapping)]
    for use in uses:
        for item in items:
            if item.get("use") == use:
                return item
    return items[0] if items else None


def from_patient(resource: Mapping[str, Any], source: str, record_key: str) -> PersonRecord:
    """A FHIR R4 Patient (as the normalizer emits it) as a PersonRecord.

    The official name (else the first) gives given/middle/family; maiden, old, nickname and other
    names go to ``other_names``; the home address and home/mobile phone are preferred; the SSN comes
    from the ``us-ssn`` identifier (or one typed SS).
    """
    names = [n for n in resource.get("name") or () if isinstance(n, Mapping)]
    main = _pick([n for n in names if n.get("use") not in ("old", "maiden", "nickname", "anonymous")]
                 or names, ("official", "usual"))
    given = middle = family = None
    if main is not None:
        givens = [g for g in (name(x) for x in main.get("given") or ()) if g]
        family = name(main.get("family"))
        if givens:
            first = givens[0].split(" ")
            given = first[0]
            rest = first[1:] + givens[1:]
            middle = " ".join(rest) or None
        if family is None and main.get("text") and not givens:
            parts = (name(main.get("text")) or "").split(" ")
            given, family = (parts[0], parts[-1]) if len(parts) > 1 else (None, parts[0] or None)
    other: list[str] = []
    for n in names:
        if n is main:
            continue
        for value in [n.get("family"), *(n.get("given") or ())]:
            v = name(value)
            if v and v not in other and v not in (given, family):
                other.append(v)

    telecoms = [t for t in resource.get("telecom") or () if isinstance(t, Mapping) and t.get("system") == "phone"]
    tel = _pick([t for t in telecoms if t.get("use") not in ("work", "old", "temp")] or telecoms, ("home", "mobile"))
    addresses = [a for a in resource.get("address") or () if isinstance(a, Mapping)]
    addr = _pick([a for a in addresses if a.get("use") not in ("old", "billing", "temp")] or addresses, ("home",))

    ssn_value = None
    for ident in resource.get("identifier") or ():
        if isinstance(ident, Mapping) and (ident.get("system") == SSN_SYSTEM or "SS" in _codes(ident)):
            ssn_value = ssn(ident.get("value"))
            if ssn_value:
                break

    birth = _text(resource.get("birthDate"))
    line = city_ = state_ = postal = None
    if addr is not None:
        line = address_line(" ".join(_text(x) for x in addr.get("line") or () if _text(x)))
        city_ = city(addr.get("city"))
        state_ = state(addr.get("state"))
        postal = postal_code(addr.get("postalCode"), addr.get("country"))
    return PersonRecord(
        record_key=record_key, source=source, given=given, middle=middle, family=family,
        birth_date=parse_date(birth) if len(birth) >= 10 else None,
        sex=sex(resource.get("gender")), address_line=line, city=city_, state=state_, postal_code=postal,
        phone=phone(tel.get("value")) if tel else None, ssn=ssn_value, other_names=tuple(other),
        asserted_at=_text((resource.get("meta") or {}).get("lastUpdated")) or None,
    )


# ---------------------------------------------------------------- CSV rows

CSV_COLUMNS = ("record_id", "given_name", "family_name", "birth_date", "sex", "address_line", "city", "state",
               "postal_code", "phone", "ssn")


def from_row(row: Mapping[str, Any], record_key: str, source: str = "csv") -> PersonRecord:
    """A CSV row (columns :data:`CSV_COLUMNS`, any missing or empty; others ignored) as a PersonRecord.

    A given_name with several words keeps the first as ``given`` and the rest as ``middle``.
    """
    given = name(row.get("given_name"))
    middle = None
    if given and " " in given:
        given, middle = given.split(" ", 1)
    return PersonRecord(
        record_key=record_key, source=source, given=given, middle=middle, family=name(row.get("family_name")),
        birth_date=parse_date(row.get("birth_date")), sex=sex(row.get("sex")),
        address_line=address_line(row.get("address_line")), city=city(row.get("city")), state=state(row.get("state")),
        postal_code=postal_code(row.get("postal_code"), row.get("country")), phone=phone(row.get("phone")),
        ssn=ssn(row.get("ssn")),
    )
