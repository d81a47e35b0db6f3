"""A Mapped resource as a silver.fhir.v1 record (schemas/avro/fhir_envelope.avsc)."""

from __future__ import annotations

import json
from datetime import datetime

from carelake_normalizer.core import Mapped

FHIR_VERSION = "4.0.1"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def fhir_envelope(m: Mapped, *, source: str, raw_id: str, bronze_key: str, byte_offset: int,
                  byte_length: int, source_message_id: str | None, processed_at: datetime,
                  replayed: bool = False) -> dict:
    """The FhirEnvelope record for one resource (resource as compact JSON text)."""
    return {
        "id": m.id,
        "resource_type": m.resource_type,
        "resource": _dumps(m.resource),
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
