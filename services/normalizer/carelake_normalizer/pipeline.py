"""One raw message to its Silver records: the normalizer's pure per-message pipeline.

``normalize(env, payload, tz=..., processed_at=...)`` takes a decoded raw envelope
(schemas/avro/raw_envelope.avsc) and the message bytes, and returns an :class:`Outcome`:

* ``hl7v2``: ``map_hl7v2`` with the terminology pass run on each resource before its security
  labels and its validation (codes decide the labels; added codings must validate too); every
  valid resource becomes a silver.fhir.v1 record (``envelope.fhir_envelope``) with its lineage
  from the raw envelope; every part that did not become a resource is a :class:`RejectedPart`;
  a message that cannot be read at all (``MappingError``) is rejected whole (``Outcome.error``).
* ``csv`` (pharmacy and SDOH exports: a row, with its file's header row passed in), ``json`` and
  ``ndjson`` (wearables readings): ``flat.map_flat``, the same terminology → labels → validation.
* ``x12``: ``x12.map_x12`` — one 837 claim or 835 claim payment, with the enclosing loops
  (provider, subscriber, payer) read from the whole file when it is passed in.
* any other format: rejected whole (``unknown_format``).

No I/O and no metrics here (so ``carelake convert`` and the bench run it as is); the service
counts each outcome with :func:`count` into the Prometheus counters below.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from prometheus_client import Counter as PromCounter

from carelake_normalizer.core import Mapped, MappingError, PartRejected
from carelake_normalizer.envelope import fhir_envelope
from carelake_normalizer.flat import map_flat
from carelake_normalizer.hl7v2 import map_hl7v2
from carelake_normalizer.terminology import CodeFlag, normalize_resource
from carelake_normalizer.x12 import map_x12

MAPPED_FORMATS = ("hl7v2", "x12", "csv", "json", "ndjson")
# Formats the gateway accepts whose mappings are not written yet: kept, not rejected (none today).
UNMAPPED_FORMATS: tuple[str, ...] = ()

RESOURCES = PromCounter("carelake_normalizer_resources_total",
                        "FHIR resources the normalizer emitted to silver.fhir.v1", ["source", "resource_type"])
REJECTED = PromCounter("carelake_normalizer_rejected_total",
                       "Rejected messages (MappingError) and rejected parts of messages, by reason code",
                       ["source", "reason"])
UNUSED_FIELDS = PromCounter("carelake_normalizer_unused_fields_total",
                            "Populated source fields no mapping read (coverage gaps), e.g. field=PID-11",
                            ["source", "field"])
UNMAPPED = PromCounter("carelake_normalizer_unmapped_total",
                       "Raw messages of a format with no mapping yet: left in Bronze, replayable later",
                       ["source", "format"])


@dataclass(slots=True, frozen=True)
class RejectedPart:
    """A part of a message (or the whole message) that did not become a resource. No PHI in ``reason``."""

    reason_code: str
    reason: str
    where: str | None
    resource_type: str | None = None
    position: int | None = None  # the segment's line in the message, 1-based, when known

    @classmethod
    def of(cls, part: PartRejected) -> RejectedPart:
        return cls(part.reason_code, part.reason, part.where, part.resource_type, part.position)

    @classmethod
    def of_error(cls, exc: MappingError) -> RejectedPart:
        return cls(exc.code, exc.reason, exc.where)

    def text(self) -> str:
        """``where: reason`` — what a DLQ record's ``reason`` says."""
        return f"{self.where}: {self.reason}" if self.where else self.reason

    def as_dict(self) -> dict:
        return {"reason_code": self.reason_code, "reason": self.reason, "where": self.where}


@dataclass(slots=True)
class Outcome:
    """What one raw message became."""

    raw_id: str
    source: str
    format: str
    envelopes: list[dict] = field(default_factory=list)  # silver.fhir.v1 records, in mapping order
    mapped: list[Mapped] = field(default_factory=list)  # the same resources (envelopes[i] is mapped[i])
    rejected: list[RejectedPart] = field(default_factory=list)  # parts; the rest of the message flowed
    error: RejectedPart | None = None  # the whole message was rejected (nothing else is set)
    unmapped: bool = False  # a format without a mapping yet: neither emitted nor rejected
    unused: Counter[str] = field(default_factory=Counter)  # coverage gaps, e.g. {"PID-11": 1}
    flags: list[CodeFlag] = field(default_factory=list)  # the terminology pass's findings
    meta: dict = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """Everything in the message became a resource (an unmapped format is not clean)."""
        return not self.unmapped and self.error is None and not self.rejected


def normalize(env: dict, payload: bytes, *, tz: tzinfo, processed_at: datetime,
              header: bytes | None = None, file_bytes: bytes | None = None) -> Outcome:
    """A raw envelope and its bytes -> Silver records, rejected parts, or unmapped (see the module).

    ``header``: for a CSV row, its file's header row (None: ``payload`` is a whole CSV file).
    ``file_bytes``: for an X12 claim, the whole file it came from (None: the claim loop alone).
    """
    source, fmt, raw_id = env["source"], env["format"], env["id"]
    out = Outcome(raw_id=raw_id, source=source, format=fmt)
    if fmt in UNMAPPED_FORMATS:
        out.unmapped = True
        return out
    if fmt not in MAPPED_FORMATS:
        out.error = RejectedPart("unknown_format", f"format {fmt[:40]!r} is not one the normalizer knows "
                                 f"(mapped: {', '.join(MAPPED_FORMATS)}; pending: {', '.join(UNMAPPED_FORMATS)})",
                                 "format")
        return out

    flags = out.flags

    def terminology(resource: dict) -> None:
        flags.extend(normalize_resource(resource, source))

    try:
        if fmt == "hl7v2":
            result = map_hl7v2(payload, source=source, tz=tz, raw_id=raw_id, terminology=terminology)
        elif fmt == "x12":
            result = map_x12(payload, source=source, tz=tz, raw_id=raw_id, file_bytes=file_bytes,
                             byte_offset=env["byte_offset"], terminology=terminology,
                             patient_key=env.get("source_patient_key"), file_key=env["bronze_key"])
        else:
            result = map_flat(payload, source=source, fmt=fmt, tz=tz, raw_id=raw_id, header=header,
                              terminology=terminology)
    except MappingError as exc:
        out.error = RejectedPart.of_error(exc)
        return out
    out.unused, out.meta = result.unused, result.meta
    out.rejected = [RejectedPart.of(p) for p in result.rejected]
    message_id = env.get("source_message_id") or result.meta.get("control_id") or None
    replayed = bool(env.get("replayed", False))
    for m in result.resources:
        try:
            record = fhir_envelope(m, source=source, raw_id=raw_id, bronze_key=env["bronze_key"],
                                   byte_offset=env["byte_offset"], byte_length=env["byte_length"],
                                   source_message_id=message_id, processed_at=processed_at, replayed=replayed)
        except (ValueError, TypeError) as exc:  # e.g. a NaN that JSON cannot carry: that resource only
            out.rejected.append(RejectedPart("invalid_resource", f"not serializable as JSON: {type(exc).__name__}",
                                             m.resource_type, m.resource_type))
            continue
        out.envelopes.append(record)
        out.mapped.append(m)
    return out


def count(outcome: Outcome) -> None:
    """Add one outcome to the normalizer's counters (terminology flags count themselves)."""
    source = outcome.source
    if outcome.unmapped:
        UNMAPPED.labels(source, outcome.format).inc()
        return
    if outcome.error is not None:
        REJECTED.labels(source, outcome.error.reason_code).inc()
        return
    for rt, n in Counter(m.resource_type for m in outcome.mapped).items():
        RESOURCES.labels(source, rt).inc(n)
    for code, n in Counter(p.reason_code for p in outcome.rejected).items():
        REJECTED.labels(source, code).inc(n)
    for name, n in outcome.unused.items():
        UNUSED_FIELDS.labels(source, name).inc(n)
