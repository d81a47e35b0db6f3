"""Avro single-object encoding of carelake records, with writer schemas found by fingerprint.

Wire format (Avro spec, "Single-object encoding"): the marker ``C3 01``, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the Avro binary body.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException, to_parsing_canonical_form
from fastavro.schema import fingerprint as schema_fingerprint

from carelake.errors import (
    ConfigError,
    CorruptPayloadError,
    EncodeError,
    SchemaNotFoundError,
    SerdeError,
)

MARKER = b"\xc3\x01"
FINGERPRINT_LEN = 8
HEADER_LEN = len(MARKER) + FINGERPRINT_LEN

# src/carelake/serde/avro.py -> parents[3] is the repository root.
SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas" / "avro"
# Older versions of a schema live in <schema dir>/history/<name>/<n>.avsc: readable, never written.
HISTORY_DIR = "history"


def schema_dir() -> Path:
    """The schema directory: $CARELAKE_SCHEMA_DIR when set, else SCHEMA_DIR."""
    override = os.environ.get("CARELAKE_SCHEMA_DIR")
    return Path(override) if override else SCHEMA_DIR


def fingerprint_of(data: bytes) -> bytes:
    """The 8 writer-schema fingerprint bytes of a single-object encoded payload."""
    if len(data) < HEADER_LEN:
        raise CorruptPayloadError(
            f"payload of {len(data)} bytes is shorter than the {HEADER_LEN}-byte Avro header"
        )
    if data[:2] != MARKER:
        raise CorruptPayloadError(
            f"payload starts with {bytes(data[:2]).hex()}, not the Avro single-object marker c301"
        )
    return bytes(data[2:HEADER_LEN])


class AvroSchema:
    """One parsed record schema and its single-object encoding."""

    __slots__ = ("name", "full_name", "fingerprint", "parsed", "raw", "canonical", "_header", "_ts_paths")

    def __init__(self, name: str, raw: dict) -> None:
        self.name = name
        self.raw = raw
        try:
            # A fresh named-type table per schema, so two files may each define e.g. Lineage.
            self.parsed: dict = fastavro.parse_schema(raw, named_schemas={})
            self.canonical = to_parsing_canonical_form(raw)
        except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"Avro schema {name!r} is invalid: {exc}") from exc
        if not isinstance(self.parsed, dict) or self.parsed.get("type") != "record":
            raise ConfigError(f"Avro schema {name!r} must be a record at the top level")
        self.full_name: str = self.parsed["name"]
        # fastavro returns the hex of the little-endian CRC-64-AVRO bytes: the spec's byte order.
        self.fingerprint = bytes.fromhex(schema_fingerprint(self.canonical, "CRC-64-AVRO"))
        self._header = MARKER + self.fingerprint
        # Only timestamp fields can hold datetimes; checking just them keeps encode fast.
        self._ts_paths = _timestamp_paths(self.parsed)

    @classmethod
    def from_file(cls, path: Path, name: str | None = None) -> AvroSchema:
        """Load a ``.avsc`` file; the name defaults to the file stem."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read Avro schema {path}: {exc}") from exc
        return cls(name or path.stem, raw)

    def __repr__(self) -> str:
        return f"AvroSchema({self.name!r}, {self.full_name}, fingerprint={self.fingerprint.hex()})"

    def encode(self, record: dict) -> bytes:
        """Single-object encode ``record``; EncodeError if it does not fit the schema."""
        naive = _naive_datetime_path(record, self._ts_paths)
        if naive is not None:
            # fastavro would silently read a naive datetime as local time; contracts are UTC.
            raise EncodeError(f"{self.full_name}: {naive} is a naive datetime, give it a timezone")
        out = io.BytesIO()
        out.write(self._header)
        try:
            # strict_allow_default: unknown keys (typos) fail instead of being dropped silently.
            fastavro.schemaless_writer(out, self.parsed, record, strict_allow_default=True)
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            raise EncodeError(f"{self.full_name}: {exc}") from exc
        return out.getvalue()

    def decode(self, data: bytes) -> dict:
        """Decode a payload written with exactly this schema."""
        found = fingerprint_of(data)
        if found != self.fingerprint:
            raise SchemaNotFoundError(
                f"payload schema fingerprint {found.hex()} is not {self.full_name} "
                f"({self.fingerprint.hex()})"
            )
        return _read_body(data, self, self)


class SchemaRegistry:
    """The schemas of a directory: current ones by name, every known version by fingerprint."""

    def __init__(self, schemas: Iterable[AvroSchema], history: Iterable[AvroSchema] = ()) -> None:
        self._by_name: dict[str, AvroSchema] = {}
        self._by_fingerprint: dict[bytes, AvroSchema] = {}
        for schema in schemas:
            clash = self._by_name.get(schema.name) or self._by_fingerprint.get(schema.fingerprint)
            if clash is not None:
                raise ConfigError(
                    f"Avro schemas {clash!r} and {schema!r} share a name or a fingerprint"
                )
            self._by_name[schema.name] = schema
            self._by_fingerprint[schema.fingerprint] = schema
        for old in history:
            # Same fingerprint as a current schema means only docs/defaults changed: keep current.
            self._by_fingerprint.setdefault(old.fingerprint, old)

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaRegistry:
        """The registry of ``directory`` (default: schema_dir()), loaded once per directory."""
        return _load_registry(Path(directory or schema_dir()).resolve())

    def get(self, name: str) -> AvroSchema:
        """The current schema called ``name`` (file stem, e.g. "raw_envelope")."""
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaNotFoundError(
                f"no Avro schema named {name!r}; known: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Names of the current schemas, sorted."""
        return sorted(self._by_name)

    def writer_of(self, data: bytes) -> AvroSchema:
        """The schema a payload was written with, found by its fingerprint."""
        found = fingerprint_of(data)
        try:
            return self._by_fingerprint[found]
        except KeyError:
            raise SchemaNotFoundError(
                f"unknown Avro schema fingerprint {found.hex()}; known schemas: "
                f"{', '.join(self.names())}"
            ) from None

    def decode(self, data: bytes) -> tuple[AvroSchema, dict]:
        """Decode with the writer schema; returns that schema and the record as written."""
        writer = self.writer_of(data)
        return writer, _read_body(data, writer, writer)

    def decode_as(self, data: bytes, reader: str) -> dict:
        """Decode with the writer schema, resolved into the current schema called ``reader``."""
        target = self.get(reader)
        return _read_body(data, self.writer_of(data), target)


@lru_cache(maxsize=None)
def _load_registry(directory: Path) -> SchemaRegistry:
    if not directory.is_dir():
        raise ConfigError(f"Avro schema directory {directory} does not exist (CARELAKE_SCHEMA_DIR)")
    current = [AvroSchema.from_file(path) for path in sorted(directory.glob("*.avsc"))]
    if not current:
        raise ConfigError(f"no *.avsc files in Avro schema directory {directory}")
    history = [
        AvroSchema.from_file(path, name=path.parent.name)
        for path in sorted(directory.glob(f"{HISTORY_DIR}/*/*.avsc"))
    ]
    return SchemaRegistry(current, history)


def _read_body(data: bytes, writer: AvroSchema, reader: AvroSchema) -> dict:
    body = io.BytesIO(data)
    body.seek(HEADER_LEN)
    try:
        record = fastavro.schemaless_reader(
            body, writer.parsed, None if reader is writer else reader.parsed
        )
    except SchemaResolutionError as exc:
        raise SerdeError(f"{reader!r} cannot read data written with {writer!r}: {exc}") from exc
    except Exception as exc:
        # fastavro reports malformed bytes as EOFError, IndexError, UnicodeDecodeError and more;
        # whichever it is, the body is not a record of the writer schema.
        raise CorruptPayloadError(f"{writer.full_name} body is not decodable: {exc!r}") from exc
    if body.tell() != len(data):
        raise CorruptPayloadError(
            f"{writer.full_name} body has {len(data) - body.tell()} trailing bytes"
        )
    return record


def _timestamp_paths(schema: Any, prefix: tuple[str, ...] = ()) -> tuple[tuple[str, ...], ...]:
    """Field paths (through nested records) whose type is a timestamp logical type."""
    if isinstance(schema, list):  # a union: any branch may be a timestamp or a record
        return tuple(p for branch in schema for p in _timestamp_paths(branch, prefix))
    if not isinstance(schema, dict):
        return ()
    if str(schema.get("logicalType", "")).startswith(("timestamp", "local-timestamp")):
        return (prefix,)
    if schema.get("type") == "record":
        return tuple(p for f in schema["fields"] for p in _timestamp_paths(f["type"], (*prefix, f["name"])))
    return ()


def _naive_datetime_path(record: dict, paths: tuple[tuple[str, ...], ...]) -> str | None:
    """The first timestamp field path of ``record`` holding a timezone-naive datetime, if any."""
    for path in paths:
        value: Any = record
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, datetime) and value.tzinfo is None:
            return ".".join(path)
    return None
