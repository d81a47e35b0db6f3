"""What the CSV and JSON mappings share: the resource collector, CSV header/row reading, ISO times.

``Builder`` plays the part hl7v2/context.py's Context plays for HL7: mappers queue plain dicts with
``emit``; a ``PartError`` raised while building one resource becomes a ``PartRejected`` and the
mapping goes on; ``finish()`` runs, per resource and in the HL7 mappings' order, meta.source →
the terminology pass → security labels (read from the codes) → FHIR validation → PHI paths.

CSV: a record is one data row's bytes; its header row is read separately (the gateway keeps it at
offset 0 of the file in Bronze) and located by column *name*, so an export that reorders its columns
still maps. Names are compared trimmed, lower-case, with spaces and hyphens read as ``_``. Both are
decoded as UTF-8 (a BOM is dropped), else Windows-1252, else Latin-1 — a Windows export is often
not UTF-8 — and parsed with the csv module in strict mode (RFC 4180 quoting, CRLF or LF).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation

from carelake_normalizer.core import (
    EXT_SOURCE_TIMEZONE,
    EXT_TIMEZONE_ASSUMED,
    MappingError,
    MapResult,
    PartError,
    PartRejected,
)
from carelake_normalizer.finish import Built, finish_resources
from carelake_normalizer.ids import key, resource_id
from carelake_normalizer.timeutil import TimeError, TimeValue, parse_date, parse_ts

UCUM = "http://unitsofmeasure.org"
NPI = "http://hl7.org/fhir/sid/us-npi"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
BOM = b"\xef\xbb\xbf"
_UNSAFE = re.compile(r"[^A-Za-z0-9._~-]")


def safe(text: str) -> str:
    """A source name as it goes into a ``urn:carelake:<source>:...`` system (as hl7v2/datatypes does)."""
    return _UNSAFE.sub("-", text)


def id_system(source: str, kind: str) -> str:
    """``urn:carelake:<source>:id:<kind>``: the identifier system of a source's own numbers."""
    return f"urn:carelake:{safe(source)}:id:{kind}"


# ---- the collector ------------------------------------------------------------------------------


class _Pending:
    __slots__ = ("resource", "rt", "id", "patient_key", "event_time", "label", "position")

    def __init__(self, resource: dict, patient_key: str | None, event_time: datetime | None, label: str,
                 position: int | None) -> None:
        self.resource, self.rt, self.id = resource, resource["resourceType"], resource["id"]
        self.patient_key, self.event_time, self.label, self.position = patient_key, event_time, label, position


class Builder:
    """The resources and rejected parts of one record (or of every record of a whole file)."""

    __slots__ = ("source", "tz", "raw_id", "zone_name", "pending", "rejected", "unused", "meta", "position",
                 "tz_assumed")

    def __init__(self, source: str, tz: tzinfo, raw_id: str) -> None:
        self.source, self.tz, self.raw_id = source, tz, raw_id
        self.zone_name: str = getattr(tz, "key", None) or str(tz)
        self.pending: list[_Pending] = []
        self.rejected: list[PartRejected] = []
        self.unused: Counter[str] = Counter()
        self.meta: dict = {}
        self.position: int | None = None  # the record's line in a whole file, when mapping one
        self.tz_assumed = 0

    def rid(self, resource_type: str, *parts: str | None) -> str:
        return resource_id(self.source, resource_type, key(*parts))

    def emit(self, resource: dict, *, patient_key: str | None, event_time: datetime | None, label: str) -> None:
        """Queue a built resource ("id" set); ``label`` names the record part in a rejection."""
        self.pending.append(_Pending(resource, patient_key, event_time, label, self.position))

    def reject(self, reason_code: str, reason: str, where: str, resource_type: str | None) -> None:
        self.rejected.append(PartRejected(reason_code, reason, where, self.position, resource_type))

    def rejected_part(self, exc: PartError, resource_type: str | None) -> None:
        self.reject(exc.reason_code, exc.reason, exc.where, resource_type)

    def zone(self, resource: dict, value: TimeValue) -> None:
        """The time-zone extensions hl7v2 stamps: the zone a time was read in, and whether it was assumed."""
        ext = resource.setdefault("extension", [])
        ext.append({"url": EXT_SOURCE_TIMEZONE, "valueString": value.zone})
        if value.assumed_tz and value.has_time:
            ext.append({"url": EXT_TIMEZONE_ASSUMED, "valueBoolean": True})
            self.tz_assumed += 1

    def finish(self, terminology: Callable[[dict], object] | None, meta: dict) -> MapResult:
        """Terminology pass → security labels → validation → PHI paths, per resource (as hl7v2 does)."""
        resources = finish_resources((Built(p.resource, p.rt, p.id, p.patient_key, p.event_time, p.label, p.position)
                                      for p in self.pending), self.raw_id, terminology, self.rejected)
        self.meta.update(meta)
        self.meta["tz"] = self.zone_name
        self.meta["tz_assumed"] = self.tz_assumed
        self.meta["fields_unused"] = sum(self.unused.values())
        return MapResult(resources, self.rejected, self.unused, self.meta)


def guarded(what: str, run: Callable[[], MapResult]) -> MapResult:
    """``run()``; a bug in a mapping must not stop the stream: anything but MappingError becomes one."""
    try:
        return run()
    except MappingError:
        raise
    except Exception as exc:  # noqa: BLE001 - the message goes to the DLQ with the exception's type
        raise MappingError("internal_error", f"{type(exc).__name__} while mapping {what}: {str(exc)[:200]}",
                           None) from exc


# ---- CSV ----------------------------------------------------------------------------------------


def decode(data: bytes) -> tuple[str, str]:
    """(text, charset): UTF-8 without its BOM, else Windows-1252, else Latin-1 (never fails)."""
    if data.startswith(BOM):
        data = data[3:]
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "windows-1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "iso-8859-1"


def column_name(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


@dataclass(frozen=True, slots=True)
class Header:
    names: tuple[str, ...]  # normalized column names, in file order ("" for an unnamed column)
    index: dict[str, int]  # normalized name -> position
    charset: str

    def missing(self, required: tuple[str, ...]) -> list[str]:
        return [c for c in required if c not in self.index]


_HEADERS: dict[bytes, Header] = {}
_HEADER_CACHE_LIMIT = 256  # distinct headers; every row of a file repeats its file's


def read_header(header: bytes) -> Header:
    """The column names of a CSV header row (its first row if more bytes are given); cached by bytes."""
    found = _HEADERS.get(header)
    if found is None:
        found = _read_header(header)
        if len(_HEADERS) >= _HEADER_CACHE_LIMIT:
            _HEADERS.clear()
        _HEADERS[header] = found
    return found


def _read_header(header: bytes) -> Header:
    text, charset = decode(header)
    try:
        row = next(csv.reader(io.StringIO(text, newline=""), strict=True), None)
    except csv.Error as exc:
        raise MappingError("bad_header", f"the CSV header row cannot be read: {exc}", "header") from None
    names = tuple(column_name(n) for n in row or ())
    if not any(names):
        raise MappingError("bad_header", "the CSV header row is empty", "header")
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if not name:
            continue
        if name in index:
            raise MappingError("bad_header", f"column {i + 1} repeats the name of column {index[name] + 1}",
                               "header")
        index[name] = i
    return Header(names, index, charset)


def read_row(row: bytes, header: Header) -> list[str]:
    """The trimmed fields of one data row; MappingError unless it is exactly one row of the header's width."""
    text, _ = decode(row)
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline=""), strict=True) if r]
    except csv.Error as exc:
        raise MappingError("bad_csv", f"the CSV row cannot be read: {exc}", "row") from None
    if not rows:
        raise MappingError("empty_row", "the CSV record holds no row", "row")
    if len(rows) > 1:
        raise MappingError("bad_csv", f"the CSV record holds {len(rows)} rows, not one", "row")
    values = rows[0]
    if len(values) != len(header.names):
        raise MappingError("column_count", f"the row has {len(values)} fields, the header names "
                           f"{len(header.names)}: its values cannot be matched to columns", "row")
    return [v.strip() for v in values]


def row_getter(header: Header, values: list[str]) -> Callable[[str], str]:
    """``get(column)``: a row's value in a named column, "" when the file has no such column."""
    idx = header.index

    def get(name: str) -> str:
        i = idx.get(name)
        return values[i] if i is not None else ""

    return get


def count_unused(b: Builder, header: Header, values: list[str], known: frozenset[str]) -> None:
    """Populated columns the mapping does not know: the coverage gaps (``MapResult.unused``)."""
    for name, value in zip(header.names, values, strict=True):
        if value and name not in known:
            b.unused[name or "(unnamed)"] += 1


def csv_rows(data: bytes) -> tuple[bytes, list[tuple[int, int, int]]]:
    """A whole CSV file: (its header row's bytes, [(line number, byte start, byte end)] per data row).

    A row runs to the line end at which its double quotes balance (RFC 4180: a quoted field may hold
    line breaks; an escaped quote is two quotes), so rows split here as the gateway splits them.
    Blank lines are skipped. Line numbers count from 1 (the header is line 1).
    """
    rows: list[tuple[int, int, int]] = []
    header: bytes | None = None
    start = pos = 0
    quotes = 0
    line = first_line = 1
    for raw in data.splitlines(keepends=True):
        if pos == start:
            first_line = line
        quotes += raw.count(b'"')
        pos += len(raw)
        line += 1
        if quotes % 2:
            continue  # inside a quoted field: the row goes on
        if header is None:
            header = data[start:pos]
        elif data[start:pos].strip():
            rows.append((first_line, start, pos))
        start, quotes = pos, 0
    if start < len(data):  # an unbalanced quote runs to the end: one last (broken) row
        if header is None:
            header = data[start:]
        elif data[start:].strip():
            rows.append((first_line, start, len(data)))
    return header or b"", rows


def header_of(prefix: bytes) -> bytes | None:
    """The header row of a CSV file from its first bytes, or None if they do not hold a complete row."""
    quotes = 0
    pos = 0
    for raw in prefix.splitlines(keepends=True):
        quotes += raw.count(b'"')
        pos += len(raw)
        if not quotes % 2 and raw.endswith((b"\n", b"\r")):
            return prefix[:pos]
    return None


# ---- values -------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def number(text: str) -> Decimal | None:
    """A plain decimal number (no exponent, no thousands separators), None if ``text`` is not one."""
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        return None


def json_number(d: Decimal) -> int | float:
    """A Decimal as a JSON number: int when integral, else the nearest float (for FHIR decimal)."""
    return int(d) if d == d.to_integral_value() else float(d)


def whole(text: str, minimum: int, where: str) -> int | None:
    """A non-negative whole number (FHIR unsignedInt/positiveInt); None if empty; PartError if not one."""
    if not text:
        return None
    d = number(text)
    if d is None or d != d.to_integral_value() or d < minimum or d > 2_147_483_647:
        raise PartError("invalid_value", f"{where} is not a whole number of at least {minimum}", where)
    return int(d)


# ISO-8601 dates and times as exports write them (plus compact HL7-like digits and US M/D/Y dates).
_ISO = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})(?:[T ](\d{2}):?(\d{2})(?::?(\d{2})(?:[.,](\d{1,9}))?)?)?"
                  r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?")
_US_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
# The common case on the hot path: a UTC instant as the wearables gateway sends it.
_UTC = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?Z")


def _hl7_form(text: str) -> str:
    """An ISO-8601 (or M/D/YYYY) date/time rewritten as an HL7 DTM for timeutil; TimeError if neither."""
    text = text.strip()
    m = _ISO.fullmatch(text)
    if m is None:
        u = _US_DATE.fullmatch(text)
        if u is None:
            raise TimeError(f"a {len(text)}-character value is not an ISO-8601 date/time "
                            "(YYYY-MM-DD[THH:MM[:SS]][Z|+HH:MM])")
        return f"{u.group(3)}{int(u.group(1)):02d}{int(u.group(2)):02d}"
    year, month, day, hour, minute, second, frac, offset = m.groups()
    out = year + month + day + (hour or "") + (minute or "") + (second or "")
    if frac:
        out += "." + frac[:6]
    if offset:
        if hour is None:
            raise TimeError("a UTC offset without a time")
        out += "+0000" if offset == "Z" else offset[0] + offset[1:].replace(":", "").ljust(4, "0")
    return out


def iso_time(text: str, tz: tzinfo, zone_name: str, where: str) -> TimeValue:
    """An ISO-8601 date or date-time as a FHIR date / UTC dateTime (timeutil's rules); PartError if impossible.

    A date stays a date (never shifted; ``at`` is its local midnight in ``tz``); a time without an
    offset is read in ``tz`` and marked assumed.
    """
    m = _UTC.fullmatch(text)
    if m is not None:  # fast path, not cached: readings' instants are nearly all distinct
        try:
            y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
            frac = m.group(7)
            at = datetime(y, mo, d, h, mi, s, int(frac.ljust(6, "0")) if frac else 0, tzinfo=UTC)
        except ValueError as exc:
            raise PartError("invalid_date", f"{where}: {exc}", where) from None
        return TimeValue(text, "fraction" if frac else "second", False, at, "+0000")
    try:
        return parse_ts(_hl7_form(text), tz, zone_name)
    except TimeError as exc:
        raise PartError("invalid_date", f"{where}: {exc}", where) from None


def iso_date(text: str, where: str) -> str:
    """A calendar date (birth dates): YYYY-MM-DD / YYYYMMDD / M/D/YYYY, as written, never shifted."""
    try:
        return parse_date(_hl7_form(text)[:8])
    except TimeError as exc:
        raise PartError("invalid_date", f"{where}: {exc}", where) from None


# Administrative sex of flat feeds (HL7 table 0001 letters or words) -> FHIR Patient.gender.
GENDER = {"M": "male", "F": "female", "O": "other", "X": "other", "U": "unknown", "N": "unknown",
          "MALE": "male", "FEMALE": "female", "OTHER": "other", "UNKNOWN": "unknown"}


def row_patient(patient_id: str, identifier: dict, get: Callable[[str], str], *, family: str, given: str,
                sex: str, birth: str, postal: str, phone_use: str, email: str | None = None) -> dict:
    """A Patient from one row's demographic columns (named by the keywords); empty columns are left out.

    Only a postal code is taken for the address: flat feeds carry no more of it.
    """
    res: dict = {"resourceType": "Patient", "id": patient_id, "identifier": [identifier]}
    family_name, given_names = get(family), get(given)
    if family_name or given_names:
        name: dict = {}
        if family_name:
            name["family"] = family_name
        if given_names:
            name["given"] = given_names.split()
        res["name"] = [name]
    telecom = []
    if phone := get("phone"):
        telecom.append({"system": "phone", "value": phone, "use": phone_use})
    if email and (address := get(email)):
        telecom.append({"system": "email", "value": address})
    if telecom:
        res["telecom"] = telecom
    if gender := GENDER.get(get(sex).upper()):
        res["gender"] = gender
    if dob := get(birth):
        res["birthDate"] = iso_date(dob, birth)
    if code := get(postal):
        res["address"] = [{"use": "home", "postalCode": code}]
    return res
