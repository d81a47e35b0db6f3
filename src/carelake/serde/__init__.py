"""Avro contracts of carelake's Kafka topics: single-object encoding and schema evolution checks."""

from carelake.serde.avro import (
    HEADER_LEN,
    MARKER,
    SCHEMA_DIR,
    AvroSchema,
    SchemaRegistry,
    fingerprint_of,
    schema_dir,
)
from carelake.serde.compat import backward_incompatibilities

__all__ = [
    "HEADER_LEN",
    "MARKER",
    "SCHEMA_DIR",
    "AvroSchema",
    "SchemaRegistry",
    "backward_incompatibilities",
    "fingerprint_of",
    "schema_dir",
]
