"""HL7 v2 data types to FHIR data types: CE/CWE, CX, XPN, XAD, XTN, XCN, HD, numbers.

Codes are emitted as given: the coding system comes from the name the sender put in CE/CWE-3
(table 0396), mapped to its FHIR URI when it is a well-known one, else to
``urn:carelake:local:<source>:<name>``. Normalizing codes is the terminology pass's job.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from urllib.parse import quote

from carelake_normalizer.hl7v2.parse import Rep

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
NPI = "http://hl7.org/fhir/sid/us-npi"
SSN = "http://hl7.org/fhir/sid/us-ssn"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"

# HL7 table 0396 names (and common vendor spellings) -> FHIR code system URIs.
SYSTEMS: dict[str, str] = {
    "LN": LOINC, "LOINC": LOINC,
    "I10": ICD10CM, "I10C": ICD10CM, "ICD10CM": ICD10CM, "ICD-10-CM": ICD10CM,
    "I9": ICD9CM, "I9C": ICD9CM, "I9CM": ICD9CM, "ICD9CM": ICD9CM, "ICD-9-CM": ICD9CM,
    "I10P": "http://www.cms.gov/Medicare/Coding/ICD10",
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "MVX": "http://terminology.hl7.org/CodeSystem/MVX",
    "SCT": "http://snomed.info/sct", "SNOMEDCT": "http://snomed.info/sct",
    "C4": "http://www.ama-assn.org/go/cpt", "C5": "http://www.ama-assn.org/go/cpt",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "HCPCS": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "HCPC": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm", "RXN": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "UCUM": UCUM,
    "HCPT": "http://nucc.org/provider-taxonomy", "NUCC": "http://nucc.org/provider-taxonomy",
    "CDCREC": "urn:oid:2.16.840.1.113883.6.238",
    "NUBC": "https://www.nubc.org/CodeSystem/RevenueCodes",
    "ISO6391": "urn:ietf:bcp:47", "ISO639": "urn:ietf:bcp:47",
    "NPI": NPI,
}
_HL7_TABLE = re.compile(r"HL7(\d{4})")
_UNSAFE = re.compile(r"[^A-Za-z0-9._~-]")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_COMPARATOR = re.compile(r"(<=|>=|<|>)\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))")
_RANGE = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s*-\s*([+-]?\d+(?:\.\d+)?)\s*")
_HL7_SYSTEM_CACHE: dict[tuple[str, str], str] = {}


def system_uri(name: str, source: str) -> str:
    """The FHIR code system URI for a table-0396 name as sent (empty: the source's local codes)."""
    key = (name, source)
    found = _HL7_SYSTEM_CACHE.get(key)
    if found is None:
        upper = name.upper()
        found = SYSTEMS.get(upper)
        if found is None:
            m = _HL7_TABLE.fullmatch(upper)
            if m:
                found = f"http://terminology.hl7.org/CodeSystem/v2-{m.group(1)}"
            else:
                found = local_system(source, name)
        _HL7_SYSTEM_CACHE[key] = found
    return found


def local_system(source: str, name: str = "") -> str:
    """``urn:carelake:local:<source>[:<name>]``: a code system only this source defines."""
    return f"urn:carelake:local:{_safe(source)}" + (f":{_safe(name)}" if name else "")


def _safe(text: str) -> str:
    return _UNSAFE.sub(lambda m: quote(m.group(), safe=""), text)


def code_text(code: str) -> str:
    """A FHIR code: no leading/trailing blanks, single inner spaces."""
    return code if code.isalnum() else " ".join(code.split())


def coding(code: str, display: str, system_name: str, source: str, default_system: str | None = None) -> dict | None:
    code = code_text(code)
    if not code:
        return None
    out: dict = {"system": system_uri(system_name, source) if system_name or not default_system else default_system,
                 "code": code}
    if display:
        out["display"] = display
    return out


def codeable(rep: Rep, source: str, default_system: str | None = None) -> dict | None:
    """CE/CWE/CNE: the primary and alternate codings, original text (CWE-9) or the first text."""
    if not rep.raw:
        return None
    v = rep.values(9)
    codings = []
    primary = coding(v[0], v[1], v[2], source, default_system) if v[0] else None
    if primary:
        codings.append(primary)
    alternate = coding(v[3], v[4], v[5], source, None) if v[3] else None
    if alternate:
        codings.append(alternate)
    out: dict = {}
    if codings:
        out["coding"] = codings
    text = v[8] or (v[1] if not primary else "")
    if text:
        out["text"] = text
    return out or None


def codeable_value(code: str, source: str, system: str, display: str = "") -> dict | None:
    """A CodeableConcept from a bare ID/IS value and the table it is drawn from."""
    code = code_text(code)
    if not code:
        return None
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return {"coding": [c]}


def hd_system(namespace: str, universal: str, kind: str, source: str) -> str:
    """An identifier system from an HD (assigning authority)."""
    kind = kind.upper()
    if universal and kind == "ISO":
        return f"urn:oid:{universal}"
    if universal and kind in ("URI", "URL"):
        return universal
    upper = namespace.upper()
    if upper in ("SSA", "USSSA"):
        return SSN
    if upper in ("NPI", "CMS_NPI", "USNPI"):
        return NPI
    label = namespace or universal
    return f"urn:carelake:{_safe(source)}:id:{_safe(label)}" if label else f"urn:carelake:{_safe(source)}:id"


_SYSTEM_OF: dict[tuple[str, str, str, str], str] = {}


def _system_of(namespace: str, universal: str, kind: str, source: str) -> str:
    k = (namespace, universal, kind, source)
    found = _SYSTEM_OF.get(k)
    if found is None:
        found = _SYSTEM_OF[k] = hd_system(namespace, universal, kind, source)
    return found


def identifier(rep: Rep, source: str, default_type: str | None = None) -> dict | None:
    """CX (or EI when the type is absent): value, system from the assigning authority, type."""
    v = rep.values(5)
    value = v[0]
    if not value:
        return None
    id_type = v[4] or default_type or ""
    if id_type.upper() == "SS":
        system = SSN
    else:
        namespace = v[3]
        universal = rep.c(4, 2) if len(rep.comps) > 3 and rep.d.sub in rep.comps[3] else ""
        if namespace or universal:
            system = _system_of(namespace, universal, rep.c(4, 3) if universal else "", source)
        else:
            system = f"urn:carelake:{_safe(source)}:id" + (f":{_safe(id_type)}" if id_type else "")
    out: dict = {"system": system, "value": value}
    if id_type:
        out["type"] = {"coding": [{"system": V2_0203, "code": code_text(id_type)}]}
    return out


def entity_identifier(rep: Rep, source: str, type_code: str | None = None) -> dict | None:
    """EI: entity id^namespace^universal id^type, e.g. placer/filler order numbers."""
    value, namespace, universal, kind = rep.values(4)
    if not value:
        return None
    system = _system_of(namespace, universal, kind, source) if namespace or universal else \
        f"urn:carelake:{_safe(source)}:id"
    out: dict = {"system": system, "value": value}
    if type_code:
        out["type"] = {"coding": [{"system": V2_0203, "code": type_code}]}
    return out


_NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "A": "usual",
             "B": "official", "C": "official", "S": "anonymous", "T": "temp", "U": "old", "BAD": "old"}


def human_name(rep: Rep) -> dict | None:
    """XPN: family^given^middle^suffix^prefix^degree^type."""
    family, given, middle, suffix1, prefix, degree, kind = rep.values(7)
    if not (family or given or middle):
        return None
    out: dict = {}
    use = _NAME_USE.get(kind.upper())
    if use:
        out["use"] = use
    if family:
        out["family"] = family
    givens = [g for g in (given, *middle.split()) if g]
    if givens:
        out["given"] = givens
    if prefix:
        out["prefix"] = [prefix]
    suffix = [s for s in (suffix1, degree) if s]
    if suffix:
        out["suffix"] = suffix
    return out


_ADDRESS_USE = {"H": ("home", None), "B": ("work", None), "O": ("work", None), "C": ("temp", None),
                "M": (None, "postal"), "BA": ("old", None), "BDL": (None, "physical"), "P": ("home", None)}


def address(rep: Rep) -> dict | None:
    """XAD: street^other^city^state^zip^country^type."""
    line1, line2, city, state, postal, country, address_type = rep.values(7)
    if not (line1 or line2 or city or state or postal or country):
        return None
    out: dict = {}
    use, kind = _ADDRESS_USE.get(address_type.upper(), (None, None))
    if use:
        out["use"] = use
    if kind:
        out["type"] = kind
    lines = [x for x in (line1, line2) if x]
    if lines:
        out["line"] = lines
    if city:
        out["city"] = city
    if state:
        out["state"] = state
    if postal:
        out["postalCode"] = postal
    if country:
        out["country"] = country
    return out


_TELECOM_USE = {"PRN": "home", "ORN": "home", "VHN": "home", "WPN": "work", "EMR": "temp",
                "ASN": "temp", "BPN": "work", "NET": None, "PRS": "mobile"}
_TELECOM_SYSTEM = {"PH": "phone", "FX": "fax", "CP": "phone", "BP": "pager", "INTERNET": "email",
                   "X.400": "email", "MD": "other", "TDD": "other", "TTY": "other", "SAT": "phone"}


def contact_point(rep: Rep, default_use: str | None) -> dict | None:
    """XTN: [formatted]^use^equipment^email^country^area^local^extension ... ^unformatted(12)."""
    v = rep.values(12)
    equipment = v[2].upper()
    use_code = v[1].upper()
    system = _TELECOM_SYSTEM.get(equipment)
    if equipment in ("INTERNET", "X.400") or use_code == "NET":
        value = v[3] or v[0]
        system = "email"
    else:
        value = v[11]
        if not value and v[6]:
            value = f"{v[4] and '+' + v[4] + ' ' or ''}{v[5]}{v[6]}"
            if v[7]:
                value += f" x{v[7]}"
        value = value or v[0]
        if system is None:
            system = "email" if "@" in value else "phone"
    if not value:
        return None
    out: dict = {"system": system, "value": value}
    use = "mobile" if equipment == "CP" else _TELECOM_USE.get(use_code, default_use)
    if use:
        out["use"] = use
    return out


def practitioner(rep: Rep, source: str) -> dict | None:
    """XCN as a logical Reference: by NPI (or the assigning authority) with a display name."""
    v = rep.values(13)
    ident, family, given, middle = v[0], v[1], v[2], v[3]
    if not (ident or family or given):
        return None
    out: dict = {"type": "Practitioner"}
    if ident:
        namespace = v[8]
        id_type = v[12].upper()
        if id_type == "NPI" or namespace.upper() == "NPI":
            system = NPI
        elif namespace or rep.c(9, 2):
            system = _system_of(namespace, rep.c(9, 2), rep.c(9, 3), source)
        else:
            system = f"urn:carelake:{_safe(source)}:id:practitioner"
        out["identifier"] = {"system": system, "value": ident}
    first = f"{given} {middle}" if given and middle else given or middle
    display = f"{family}, {first}" if family and first else family or first
    if display:
        out["display"] = display
    return out


MAX_INT = 2_147_483_647  # FHIR integer/positiveInt/unsignedInt are 32-bit


def small_int(text: str, minimum: int = 1) -> int | None:
    """A FHIR positiveInt (or unsignedInt with minimum=0) from digits, None if not one."""
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        return None
    value = int(text)
    return value if minimum <= value <= MAX_INT else None


def decimal(text: str) -> int | float | None:
    """An NM value as a JSON number (int when integral as written), None if not a number."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    if "." not in text and "e" not in text.lower():
        return int(d)
    return float(d)


def quantity(value: int | float, unit: Rep | None, source: str) -> dict:
    """A Quantity with the unit of a CE/CWE (UCUM when the sender says so or names no system)."""
    out: dict = {"value": value}
    if unit is not None and unit.raw:
        code, text, system_name = unit.values(3)
        out["unit"] = text or code
        if code:
            # v2.5+ names UCUM the default for units; an empty system is read as UCUM.
            out["system"] = UCUM if system_name.upper() in ("", "UCUM") else system_uri(system_name, source)
            out["code"] = code_text(code)
    return out


def reference_range(text: str, unit: Rep | None, source: str) -> dict | None:
    """OBX-7 as a referenceRange: low/high when the text is "a-b", ">a" or "<b"; the text always."""
    text = text.strip()
    if not text:
        return None
    out: dict = {}
    m = _RANGE.fullmatch(text)
    if m:
        low, high = decimal(m.group(1)), decimal(m.group(2))
        if low is not None and high is not None:
            out["low"] = quantity(low, unit, source)
            out["high"] = quantity(high, unit, source)
    else:
        m = _COMPARATOR.fullmatch(text)
        if m:
            v = decimal(m.group(2))
            if v is not None:
                out["low" if m.group(1).startswith(">") else "high"] = quantity(v, unit, source)
    out["text"] = text
    return out


def comparator_quantity(text: str) -> tuple[str, int | float] | None:
    """'<5', '>=60' as (comparator, value)."""
    m = _COMPARATOR.fullmatch(text.strip())
    if not m:
        return None
    v = decimal(m.group(2))
    return None if v is None else (m.group(1), v)
