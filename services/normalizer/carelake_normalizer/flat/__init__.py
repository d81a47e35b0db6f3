"""CSV exports and JSON readings to FHIR R4: pure mappings with map_hl7v2's conventions.

| (source, format) | function | module | resources |
|---|---|---|---|
| (pharmacy, csv) | ``map_pharmacy_csv`` | pharmacy.py | Patient, MedicationRequest, MedicationDispense |
| (public_health, csv) | ``map_sdoh_csv`` | sdoh.py | Location, Observation (social-history) |
| (wearables, csv): the enrollment roster (header: user_id) | (map_flat) | enrollment.py | Patient, Device |
| (any, json / ndjson), a wearables-shaped object | ``map_wearable_json`` / ``map_ndjson_line`` | wearables.py | Device, Observation |

``map_flat`` picks one by (source, format). Every function returns a ``MapResult``; raises
``MappingError`` only when the input cannot be read at all (bad JSON, a header without the required
columns, a row that does not fit its header, a record that names no patient/area); one bad part (an
impossible date, an implausible value) is a ``PartRejected`` and the rest still flows. ``terminology``
(the service passes the terminology pass) runs on each resource before its security labels and its
validation, as in ``map_hl7v2``.

A CSV record is one data row's bytes; ``header`` is the file's header row (the gateway keeps it at
offset 0 of the file in Bronze: ``header_of(first bytes of the file)`` cuts it out). Given a whole
file with ``header=None`` (what ``carelake convert export.csv`` does), ``map_flat`` reads the first
row as the header and maps every row; a row that cannot be read becomes a PartRejected with its line
number as ``position``. ``csv_rows`` gives the rows' byte ranges, for a caller that maps row by row.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo

from carelake_normalizer.core import MappingError, MapResult
from carelake_normalizer.flat import enrollment, pharmacy, sdoh, wearables
from carelake_normalizer.flat.common import (
    Builder,
    Header,
    csv_rows,
    guarded,
    header_of,
    read_header,
    read_row,
)

__all__ = ["CSV_MAPPINGS", "csv_rows", "header_of", "map_flat", "map_ndjson_line", "map_pharmacy_csv",
           "map_sdoh_csv", "map_wearable_json"]

Terminology = Callable[[dict], object] | None
# source -> (kind, required columns, row mapper)
CSV_MAPPINGS = {
    "pharmacy": ("pharmacy_csv", pharmacy.REQUIRED, pharmacy.map_row),
    "public_health": ("sdoh_csv", sdoh.REQUIRED, sdoh.map_row),
    "wearables": ("enrollment_csv", enrollment.REQUIRED, enrollment.map_row),
}
JSON_FORMATS = ("json", "ndjson")


def map_pharmacy_csv(row: bytes, *, source: str, tz: tzinfo, raw_id: str, header: bytes,
                     terminology: Terminology = None) -> MapResult:
    """One row of the pharmacy's dispense export (``header``: the export's header row)."""
    return _csv_row("pharmacy", row, source=source, tz=tz, raw_id=raw_id, header=header, terminology=terminology)


def map_sdoh_csv(row: bytes, *, source: str, tz: tzinfo, raw_id: str, header: bytes,
                 terminology: Terminology = None) -> MapResult:
    """One row (one area) of public health's SDOH export (``header``: the export's header row)."""
    return _csv_row("public_health", row, source=source, tz=tz, raw_id=raw_id, header=header,
                    terminology=terminology)


def map_wearable_json(payload: bytes, *, source: str, tz: tzinfo, raw_id: str,
                      terminology: Terminology = None) -> MapResult:
    """One wearables reading (a JSON object)."""
    def run() -> MapResult:
        b = Builder(source, tz, raw_id)
        wearables.map_reading(b, wearables.parse(payload))
        return b.finish(terminology, {"format": "wearable_json"})
    return guarded("a wearable reading", run)


def map_ndjson_line(line: bytes, *, source: str, tz: tzinfo, raw_id: str,
                    terminology: Terminology = None) -> MapResult:
    """One line of an NDJSON file: a wearables reading."""
    return map_wearable_json(line, source=source, tz=tz, raw_id=raw_id, terminology=terminology)


def map_flat(payload: bytes, *, source: str, fmt: str, tz: tzinfo, raw_id: str, header: bytes | None = None,
             terminology: Terminology = None) -> MapResult:
    """The mapping for (source, format): a CSV row (or, with ``header=None``, a whole CSV file), a JSON
    reading, or NDJSON lines. MappingError ``no_mapping`` for anything else."""
    if fmt == "csv" and source in CSV_MAPPINGS:
        if header is not None:
            return _csv_row(source, payload, source=source, tz=tz, raw_id=raw_id, header=header,
                            terminology=terminology)
        return guarded(f"a {source} CSV file", lambda: _csv_file(source, payload, tz, raw_id, terminology))
    if fmt in JSON_FORMATS:
        return guarded(f"{fmt} from {source}", lambda: _json(payload, source, fmt, tz, raw_id, terminology))
    raise MappingError("no_mapping", f"no mapping for {fmt[:40]} from {source[:40]}", "format")


# ---- CSV ----------------------------------------------------------------------------------------


def _csv_row(export: str, row: bytes, *, source: str, tz: tzinfo, raw_id: str, header: bytes,
             terminology: Terminology) -> MapResult:
    """One row of ``export`` (a CSV_MAPPINGS key: whose export layout) from ``source`` (ids, keys)."""
    kind, required, map_row = CSV_MAPPINGS[export]

    def run() -> MapResult:
        h = _header(header, kind, required)
        b = Builder(source, tz, raw_id)
        map_row(b, h, read_row(row, h))
        return b.finish(terminology, {"format": kind, "charset": h.charset, "rows": 1})
    return guarded(f"a {kind} row", run)


def _header(header: bytes, kind: str, required: tuple[str, ...]) -> Header:
    h = read_header(header)
    missing = h.missing(required)
    if missing:
        # The header's own names are not quoted: a file without a header would put a row's values here.
        raise MappingError("missing_column", f"the {kind} header ({len(h.names)} columns) has no "
                           f"{', '.join(missing)} column", "header")
    return h


def _csv_file(source: str, data: bytes, tz: tzinfo, raw_id: str, terminology: Terminology) -> MapResult:
    kind, required, map_row = CSV_MAPPINGS[source]
    header, rows = csv_rows(data)
    h = _header(header, kind, required)
    b = Builder(source, tz, raw_id)
    for line, start, end in rows:
        b.position = line
        try:
            map_row(b, h, read_row(data[start:end], h))
        except MappingError as exc:
            b.reject(exc.code, exc.reason, exc.where or "row", None)
    b.position = None
    return b.finish(terminology, {"format": kind, "charset": h.charset, "rows": len(rows)})


# ---- JSON ---------------------------------------------------------------------------------------


def _json(payload: bytes, source: str, fmt: str, tz: tzinfo, raw_id: str, terminology: Terminology) -> MapResult:
    lines = [payload] if fmt == "json" else payload.splitlines()
    if fmt == "ndjson" and sum(1 for line in lines if line.strip()) == 1:
        lines = [payload]
    b = Builder(source, tz, raw_id)
    if len(lines) == 1:  # one message: unreadable or of an unknown shape, it is rejected whole
        doc = wearables.parse(payload)
        if not wearables.is_reading(doc):
            raise MappingError("no_mapping", f"no mapping for this {fmt} object from {source[:40]} (a wearables "
                               "reading has metric and device_id or user_id)", "format")
        wearables.map_reading(b, doc)
        return b.finish(terminology, {"format": "wearable_json"})
    readings = 0
    for number, line in enumerate(lines, 1):  # a whole NDJSON file: each line is one part
        if not line.strip():
            continue
        readings += 1
        b.position = number
        try:
            doc = wearables.parse(line)
            if not wearables.is_reading(doc):
                raise MappingError("no_mapping", f"line {number} is not a wearables reading", "format")
            wearables.map_reading(b, doc)
        except MappingError as exc:
            b.reject(exc.code, exc.reason, exc.where or f"line {number}", None)
    b.position = None
    return b.finish(terminology, {"format": "wearable_ndjson", "rows": readings})
