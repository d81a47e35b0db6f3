"""HL7 v2 (2.3–2.8) to FHIR R4: ``map_hl7v2`` reads MSH-9 and hands the message to its family.

| MSH-9 | module | resources |
|---|---|---|
| ADT A01–A08, A11, A13, A28, A31, A40 | adt.py | Patient, RelatedPerson, Encounter, Condition, Coverage |
| ORU R01 | oru.py | Patient, Observation, DiagnosticReport |
| VXU V04 | vxu.py | Patient, Immunization |
| SIU S12–S15, S17, S26 | siu.py | Patient, Appointment |
| DFT P03, P11 | dft.py | Patient, ChargeItem |
| RDE O11/O01, OMP O09, ORM O01 (with RXO) | rde.py | Patient, MedicationRequest |
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo

from carelake_normalizer.core import MappingError, MapResult
from carelake_normalizer.hl7v2 import adt, dft, oru, rde, siu, vxu
from carelake_normalizer.hl7v2.context import REQUIRED, Context
from carelake_normalizer.hl7v2.parse import (
    SUPPORTED_VERSION,
    Message,
    parse_message,
    split_batch,
    split_batch_spans,
)

__all__ = ["MAPPERS", "map_hl7v2", "parse_message", "split_batch", "split_batch_spans"]

Mapper = Callable[[Message, Context], None]
MAPPERS: dict[tuple[str, str], Mapper] = {
    **{("ADT", t): adt.map_adt for t in adt.EVENTS},
    ("ORU", "R01"): oru.map_oru,
    ("VXU", "V04"): vxu.map_vxu,
    **{("SIU", t): siu.map_siu for t in siu.EVENTS},
    ("DFT", "P03"): dft.map_dft,
    ("DFT", "P11"): dft.map_dft,
    ("RDE", "O11"): rde.map_pharmacy_order,
    ("RDE", "O01"): rde.map_pharmacy_order,
    ("OMP", "O09"): rde.map_pharmacy_order,
    ("ORM", "O01"): rde.map_pharmacy_order,
}


def map_hl7v2(payload: bytes, *, source: str, tz: tzinfo, raw_id: str,
              terminology: Callable[[dict], object] | None = None) -> MapResult:
    """One HL7 v2 message to FHIR resources; MappingError if it cannot be read at all.

    ``terminology`` (the service passes the terminology pass) runs on each resource before its
    security labels and its validation: labels follow from codes, and added codings are validated.
    """
    msg = parse_message(payload)
    _check_header(msg)
    trigger = msg.trigger
    if not trigger and msg.code == "ADT":  # v2.3 senders may leave the trigger to EVN-1
        evn = msg.first("EVN")
        trigger = msg.trigger = evn.val(1).upper() if evn is not None else ""
    mapper = MAPPERS.get((msg.code, trigger))
    if mapper is None or (msg.code == "ORM" and msg.first("RXO") is None):
        mapped = ", ".join(sorted({c for c, _ in MAPPERS}))
        raise MappingError("unsupported_message_type",
                           f"{msg.code}^{trigger} is not a mapped message type (mapped: {mapped})", "MSH-9")
    _check_truncation(msg)
    ctx = Context(msg, source, tz, raw_id)
    ctx.meta["sending_application"] = msg.msh.val(3)
    ctx.meta["sending_facility"] = msg.msh.val(4)
    ctx.meta["receiving_application"] = msg.msh.val(5)
    ctx.meta["receiving_facility"] = msg.msh.val(6)
    ctx.meta["processing_id"] = msg.msh.val(11)
    ctx.meta["structure"] = msg.structure
    msg.msh.mark(15, 16, 18, 21)  # acknowledgment modes, charset (used to decode), profile id
    ctx.meta_time("message_time", msg.msh, 7)
    try:
        mapper(msg, ctx)
        return ctx.finish(terminology)
    except MappingError:
        raise
    except Exception as exc:  # a mapping bug must not stop the stream: the message goes to the DLQ
        raise MappingError("internal_error", f"{type(exc).__name__} while mapping {msg.code}^{trigger}: "
                           f"{str(exc)[:200]}", None) from exc


def _check_header(msg: Message) -> None:
    msh = msg.msh
    if len(msg.segments) == 1:
        if _looks_one_line(msg):
            raise MappingError("no_segment_separators", "the message is one line: its segment separators "
                               "are missing or are not CR/LF", "MSH")
        if not msg.terminated or len(msh.fields) < 13:
            raise MappingError("truncated", "the message ends inside or right after MSH", "MSH")
    if not msg.code:
        code = "truncated" if not msg.terminated and len(msh.fields) < 10 else "missing_field"
        raise MappingError(code, "MSH-9 (message type) is empty", "MSH-9")
    version = msg.version
    if not version:
        code = "truncated" if not msg.terminated and len(msh.fields) < 13 else "unsupported_version"
        raise MappingError(code, "MSH-12 (version id) is empty", "MSH-12")
    if not SUPPORTED_VERSION.fullmatch(version):
        raise MappingError("unsupported_version", f"HL7 version {version[:12]!r} is not supported "
                           "(2.3 to 2.8.x)", "MSH-12")


def _looks_one_line(msg: Message) -> bool:
    fs = msg.d.field
    body = fs.join(msg.msh.fields[2:])
    return any(f"{name}{fs}" in body for name in ("EVN", "PID", "PV1", "OBR", "OBX", "ORC", "SCH", "RXA", "FT1"))


# Segments that open something the message must go on with: a message cannot end on them.
CANNOT_END = frozenset({"MSH", "EVN", "PID", "PD1", "NK1", "ORC", "SCH"})
CANNOT_END_IN = {"ORU": frozenset({"OBR"})}


def _check_truncation(msg: Message) -> None:
    """A message without its final terminator whose last segment lacks a required field, or is
    one a message cannot end on, was cut in transit: that segment is dropped (and reported)."""
    if msg.terminated or len(msg.segments) < 2:
        return
    last = msg.segments[-1]
    missing = [n for n in REQUIRED.get(last.name, ()) if not last.has(n)]
    if missing or last.name in CANNOT_END or last.name in CANNOT_END_IN.get(msg.code, ()):
        # Dropping the cut segment keeps a half segment from becoming a half resource; the mapper
        # then rejects the message if a required segment is gone, or maps what is complete.
        msg.segments.pop()
        msg.cut = (last, missing[0] if missing else 0)
