"""A Mapped resource as a silver.fhir.v1 record (schemas/avro/fhir_envelope.avsc)."""

from __future__ import annotations

import json
from datetime import datetime

from pydantic_core import to_json

from carelake_normalizer.core import Mapped

FHIR_VERSION = "4.0.1"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def resource_json(m: Mapped) -> str:
    """The resource as compact JSON text (UTF-8 kept, no NaN). A resource validation found to hold
    only JSON data (``m.plain_json``) is written by pydantic-core (Rust, ~3.5x faster): the same
    text, except that a float with an exponent may be spelled differently (1.5e-7 for 1.5e-07)."""
    return to_json(m.resource).decode() if m.plain_json else _dumps(m.resource)


def fhir_envelope(m: Mapped, *, source: str, raw_id: str, bronze_key: str, byte_offset: int,
                  byte_length: int, source_message_id: str | None, processed_at: datetime,
                  replayed: bool = False) -> dict:
    """The FhirEnvelope record for one resource (resource as compact JSON text)."""
    return {
        "id": m.id,
        "resource_type": m.resource_type,
        "resource": resource_json(m),
        "fhir_version": FHIR_VERSION,
        "source": source,
        "source_patient_key": m.source_patient_key,
        "euid": None,
        "event_time": m.event_time,
        "processed_at": processed_at,
        "lineage": {"raw_id": raw_id, "bronze_key": bronze_key, "byte_offset": byte_offset,
                    "byte_length": byte_length, "source_message_id": source_message_id},
        "phi_paths": m.phi_paths,
        "security_labels": m.security_labels,
        "replayed": replayed,
    }
