"""What every mapping returns: mapped resources, rejected parts, unused-field counts.

A mapping is a pure function ``raw bytes -> MapResult``. One bad part of a message (a resource
that fails validation, an impossible date) becomes a ``PartRejected`` while the other resources
of the message still flow; only a message that cannot be read at all raises ``MappingError``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from carelake.errors import ProcessingError

# Extension URLs of our own, under the same base as the terminology pass's normalized-from.
EXT_BASE = "https://carelake.dev/fhir/StructureDefinition/"
EXT_SOURCE_TIMEZONE = EXT_BASE + "source-timezone"  # valueString: the offset as sent, or the zone assumed
EXT_TIMEZONE_ASSUMED = EXT_BASE + "timezone-assumed"  # valueBoolean: a time came without an offset
EXT_HL7V2_SEGMENT = EXT_BASE + "hl7v2-segment"  # a Z-segment kept whole: "segment" + "raw"


@dataclass(slots=True)
class Mapped:
    """One FHIR R4 resource ready for the silver.fhir.v1 envelope."""

    resource: dict
    resource_type: str
    id: str
    source_patient_key: str | None
    event_time: datetime | None  # UTC
    phi_paths: list[str] = field(default_factory=list)
    security_labels: list[str] = field(default_factory=list)
    # Validation established that the resource holds only JSON data (validate.check): the envelope
    # may write it with the fast serializer. False: the standard library writes it (and refuses
    # what JSON cannot carry).
    plain_json: bool = False


@dataclass(slots=True, frozen=True)
class PartRejected:
    """A part of a message that did not become a resource, and why (no PHI in ``reason``)."""

    reason_code: str  # e.g. invalid_date, invalid_resource, truncated, missing_field
    reason: str
    where: str  # segment/field ("OBX[3].OBX-5") or element path ("Observation.valueQuantity")
    position: int | None = None  # the segment's line in the message, 1-based
    resource_type: str | None = None  # the resource the part would have become, when known


@dataclass(slots=True)
class MapResult:
    resources: list[Mapped]
    rejected: list[PartRejected]
    # Populated fields the mapping did not read, per segment field ("PID-11"); coverage gaps.
    unused: Counter[str] = field(default_factory=Counter)
    meta: dict = field(default_factory=dict)


class MappingError(ProcessingError):
    """The message cannot be read at all (no MSH, broken delimiters, unknown type...)."""

    def __init__(self, code: str, reason: str, where: str | None = None) -> None:
        super().__init__(reason, code)
        self.where = where

    def __repr__(self) -> str:
        return f"MappingError({self.code!r}, {self.reason!r}, {self.where!r})"


class PartError(Exception):
    """Raised inside a resource builder: that resource becomes a PartRejected."""

    def __init__(self, reason_code: str, reason: str, where: str) -> None:
        super().__init__(reason)
        self.reason_code, self.reason, self.where = reason_code, reason, where
