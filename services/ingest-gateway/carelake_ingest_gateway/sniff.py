"""Cheap facts about raw bytes, read without a full parse: format, message id, patient key.

Pure functions; the gateway uses them to key envelopes (one patient's messages stay ordered) and
to answer HL7 senders before anything heavier runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

SUPPORTED_HL7_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8")


@dataclass(frozen=True)
class Sniffed:
    format: str  # hl7v2 | json | csv | x12 | ndjson | unknown
    message_id: str | None = None
    patient_key: str | None = None  # <source>|<id>
    message_type: str | None = None  # e.g. ADT^A01
    version: str | None = None
    problem: str | None = None  # why the bytes cannot be accepted, if they cannot


@dataclass(frozen=True)
class Msh:
    """The parts of an HL7 MSH segment an ACK needs."""

    field_sep: str
    encoding: str
    sending_app: str
    sending_facility: str
    receiving_app: str
    receiving_facility: str
    message_type: str
    control_id: str
    processing_id: str
    version: str


def parse_msh(payload: bytes) -> Msh | None:
    """The MSH of an ER7 message, or None if the bytes do not start with a readable MSH."""
    head = payload.lstrip(b"\x0b\r\n ")[:2048]
    if not head.startswith(b"MSH") or len(head) < 9:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    segment = text.split("\r", 1)[0].split("\n", 1)[0]
    sep = segment[3]
    fields = segment.split(sep)
    delimiters = sep + fields[1][:4] if len(fields) > 1 else ""
    # MSH-1 and MSH-2 must be distinct punctuation, or every field is read one place off.
    if len(fields) < 12 or len(fields[1]) < 2 or len(set(delimiters)) != len(delimiters) \
            or any(c.isalnum() or c.isspace() for c in delimiters):
        return None
    # fields[0] is "MSH", fields[1] the encoding characters (MSH-2), so MSH-n is fields[n - 1].
    comp = fields[1][0] if fields[1] else "^"
    return Msh(field_sep=sep, encoding=fields[1], sending_app=fields[2], sending_facility=fields[3],
               receiving_app=fields[4], receiving_facility=fields[5],
               message_type="^".join(fields[8].split(comp)[:2]), control_id=fields[9],
               processing_id=fields[10], version=fields[11].split(comp)[0])


def hl7_patient_id(payload: bytes, source: str, msh: Msh) -> str | None:
    """``<source>|<PID-3 first identifier>``, the key one patient's messages share."""
    for segment in payload.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"PID" + msh.field_sep.encode()):
            fields = segment.decode("utf-8", "replace").split(msh.field_sep)
            if len(fields) > 3 and fields[3]:
                # MSH-2 is component, repetition, escape, subcomponent: the first repetition's first component.
                ident = fields[3].split(msh.encoding[1:2] or "~")[0].split(msh.encoding[:1] or "^")[0]
                return f"{source}|{ident}" if ident else None
    return None


def sniff(source: str, payload: bytes, content_type: str | None = None, msh: Msh | None = None) -> Sniffed:
    """Decide what ``payload`` is and pull out what the envelope needs (``msh``: already parsed)."""
    stripped = payload.lstrip()
    if msh is not None or stripped.startswith(b"MSH") or (content_type or "").endswith("hl7-v2+er7"):
        msh = msh or parse_msh(payload)
        if msh is None:
            return Sniffed("hl7v2", problem="unparseable MSH segment")
        if not msh.control_id:
            return Sniffed("hl7v2", message_type=msh.message_type, version=msh.version,
                           problem="MSH-10 (message control id) is empty")
        if msh.version not in SUPPORTED_HL7_VERSIONS:
            return Sniffed("hl7v2", msh.control_id, message_type=msh.message_type, version=msh.version,
                           problem=f"unsupported HL7 version {msh.version!r}; supported: {', '.join(SUPPORTED_HL7_VERSIONS)}")
        return Sniffed("hl7v2", msh.control_id, hl7_patient_id(payload, source, msh), msh.message_type, msh.version)
    if stripped.startswith(b"ISA"):
        return Sniffed("x12")
    if stripped.startswith(b"{") or (content_type or "").startswith("application/json"):
        try:
            doc = json.loads(payload)
        except ValueError as exc:
            return Sniffed("json", problem=f"invalid JSON: {exc}")
        if not isinstance(doc, dict):
            return Sniffed("json", problem="JSON message must be an object")
        mid = doc.get("reading_id") or doc.get("id") or doc.get("message_id")
        user = doc.get("user_id") or doc.get("patient_id")
        key = f"{source}|{user}" if user else (f"{source}|device:{doc['device_id']}" if doc.get("device_id") else None)
        return Sniffed("json", str(mid) if mid is not None else None, key)
    if (content_type or "").startswith("text/csv"):
        return Sniffed("csv")
    return Sniffed("unknown", problem="not HL7 v2 (no MSH), X12 (no ISA), JSON or CSV")
