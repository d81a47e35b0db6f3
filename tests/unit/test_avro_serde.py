"""Avro single-object encoding of every topic contract: wire format, round trips and errors."""

from __future__ import annotations

import json
import random
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastavro.schema import to_parsing_canonical_form

from carelake.errors import (
    ConfigError,
    CorruptPayloadError,
    EncodeError,
    SchemaNotFoundError,
    SerdeError,
)
from carelake.serde import (
    HEADER_LEN,
    SCHEMA_DIR,
    AvroSchema,
    SchemaRegistry,
    fingerprint_of,
    schema_dir,
)

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 8, 30, 0, 123456, tzinfo=UTC)

HL7_ADT_A01 = (
    "MSH|^~\\&|EPIC|GENHOSP|CARELAKE|CARELAKE|20240501083000||ADT^A01^ADT_A01|MSG00001|P|2.5.1\r"
    "EVN|A01|20240501083000\r"
    "PID|1||MRN0012345^^^GENHOSP^MR||DOE^JANE^Q||19560214|F|||12 MAIN ST^^SPRINGFIELD^IL^62701\r"
    "PV1|1|I|4W^412^1^GENHOSP||||1234567890^SMITH^JOHN^^^MD\r"
).encode()

PATIENT = {
    "resourceType": "Patient",
    "id": "pat-6f1c2b0e",
    "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                           "code": "R"}]},
    "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.0001", "value": "MRN0012345"}],
    "name": [{"family": "Doe", "given": ["Jane", "Q"]}],
    "gender": "female",
    "birthDate": "1956-02-14",
}

EXAMPLES: dict[str, dict] = {
    "raw_envelope": {
        "id": "raw-3f9a0c6d2b7e4a11",
        "source": "ehr",
        "format": "hl7v2",
        "content_type": "x-application/hl7-v2+er7",
        "received_at": T0,
        "bronze_key": "ehr/hl7v2/2024/05/01/batch-0001.hl7",
        "sha256": "9f2c4e1a7b3d5f60812a9c4e6b0d2f4a8c1e3b5d7f9a0c2e4b6d8f0a1c3e5b7d",
        "byte_offset": 4096,
        "byte_length": len(HL7_ADT_A01),
        "payload": HL7_ADT_A01,
        "source_message_id": "MSG00001",
        "source_patient_key": "ehr|MRN0012345",
        "replayed": False,
        "headers": {"mllp_peer": "10.0.4.17:2575", "transport": "mllp"},
    },
    "fhir_envelope": {
        "id": "pat-6f1c2b0e",
        "resource_type": "Patient",
        "resource": json.dumps(PATIENT),
        "fhir_version": "4.0.1",
        "source": "ehr",
        "source_patient_key": "ehr|MRN0012345",
        "euid": "E-000123456",
        "event_time": T0 - timedelta(minutes=5),
        "processed_at": T0 + timedelta(seconds=2),
        "lineage": {
            "raw_id": "raw-3f9a0c6d2b7e4a11",
            "bronze_key": "ehr/hl7v2/2024/05/01/batch-0001.hl7",
            "byte_offset": 4096,
            "byte_length": len(HL7_ADT_A01),
            "source_message_id": "MSG00001",
        },
        "phi_paths": ["Patient.identifier", "Patient.name", "Patient.birthDate"],
        "security_labels": ["R"],
        "replayed": True,
    },
    "dlq_record": {
        "id": "dlq-bronze.raw.v1-3-182734",
        "service": "hl7-mapper",
        "stage": "process",
        "reason_code": "unmapped_segment",
        "reason": "segment ZPI has no mapping to FHIR R4",
        "error_type": "ProcessingError",
        "source_topic": "bronze.raw.v1",
        "source_partition": 3,
        "source_offset": 182734,
        "source_key": b"ehr|MRN0012345",
        "payload": b"\xc3\x01" + bytes(range(8)) + b"\x00\x01\xfe\xff",
        "source": "ehr",
        "bronze_key": "ehr/hl7v2/2024/05/01/batch-0001.hl7",
        "failed_at": T0,
        "attempts": 3,
    },
    "mpi_link_event": {
        "event_id": "mpi-evt-000042",
        "event_type": "MERGE",
        "euid": "E-000123456",
        "record_key": "lab|L-889201",
        "previous_euid": "E-000987654",
        "score": 17.25,
        "outcome": "auto_link",
        "rule": "name_dob_address_probabilistic",
        "decided_by": "matcher",
        "contributions": {"family_name": 4.1, "given_name": 2.5, "birth_date": 6.3, "zip": 4.35},
        "occurred_at": T0,
    },
    "dq_metric": {
        "metric_id": "dq-lab-observation.loinc.valid-20240501T08",
        "source": "lab",
        "dimension": "validity",
        "rule": "observation.loinc.valid",
        "window_start": datetime(2024, 5, 1, 8, tzinfo=UTC),
        "window_end": datetime(2024, 5, 1, 9, tzinfo=UTC),
        "passed": 9812,
        "failed": 188,
        "score": 0.9812,
        "details": {"top_failure": "unknown LOINC code 99999-9"},
    },
    "feature_vector": {
        "euid": "E-000123456",
        "feature_set": "readmission_core",
        "feature_set_version": 3,
        "as_of": T0,
        "features": {"age_years": 68.0, "ed_visits_12m": 3.0, "hba1c_last": 8.2, "los_days": 5.0},
        "missing": ["bmi_last"],
    },
    "score": {
        "score_id": "score-E-000123456-readmission_30d-2.1.0-20240501T0830",
        "euid": "E-000123456",
        "model": "readmission_30d",
        "model_version": "2.1.0",
        "score": 0.37,
        "as_of": T0,
        "features_as_of": T0 - timedelta(hours=1),
        "explanation": {"ed_visits_12m": 0.12, "hba1c_last": 0.05, "age_years": -0.01},
        "threshold": 0.3,
        "alert": True,
    },
}

# The reference CRC-64-AVRO ("Rabin") fingerprint from the Avro spec, written independently of
# fastavro so the fingerprint check below can fail.
_EMPTY64 = 0xC15D213AA4D7A795


def _fp_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


_FP_TABLE = _fp_table()


def crc64_avro(data: bytes) -> int:
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


def signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load(SCHEMA_DIR)


def schema_files() -> list[Path]:
    return sorted(SCHEMA_DIR.glob("*.avsc"))


def test_every_schema_file_has_an_example(registry: SchemaRegistry) -> None:
    assert registry.names() == sorted(EXAMPLES)
    assert [path.stem for path in schema_files()] == sorted(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_round_trip(registry: SchemaRegistry, name: str) -> None:
    schema = registry.get(name)
    data = schema.encode(EXAMPLES[name])
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == schema.fingerprint
    assert fingerprint_of(data) == schema.fingerprint
    writer, record = registry.decode(data)
    assert writer is schema
    assert record == EXAMPLES[name]
    assert schema.decode(data) == EXAMPLES[name]
    assert registry.decode_as(data, name) == EXAMPLES[name]


def test_timestamps_come_back_as_utc(registry: SchemaRegistry) -> None:
    schema = registry.get("score")
    eastern = timezone(timedelta(hours=-4))
    record = dict(EXAMPLES["score"], as_of=T0.astimezone(eastern))
    decoded = schema.decode(schema.encode(record))
    assert decoded["as_of"] == T0
    assert decoded["as_of"].utcoffset() == timedelta(0)


def test_optional_fields_take_their_defaults(registry: SchemaRegistry) -> None:
    schema = registry.get("raw_envelope")
    required = {
        k: v
        for k, v in EXAMPLES["raw_envelope"].items()
        if k not in {"content_type", "payload", "source_message_id", "source_patient_key",
                     "replayed", "headers"}
    }
    decoded = schema.decode(schema.encode(required))
    assert decoded["payload"] is None
    assert decoded["source_patient_key"] is None
    assert decoded["replayed"] is False
    assert decoded["headers"] == {}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_fingerprint_is_crc64_avro_of_parsing_canonical_form(
    registry: SchemaRegistry, name: str
) -> None:
    schema = registry.get(name)
    raw = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    canonical = to_parsing_canonical_form(raw)
    assert schema.canonical == canonical
    assert schema.fingerprint == crc64_avro(canonical.encode()).to_bytes(8, "little")


def test_crc64_avro_matches_the_spec_test_vectors() -> None:
    # apache/avro share/test/data/schema-tests.txt, as signed Java longs.
    assert signed64(crc64_avro(b'"null"')) == 7195948357588979594
    assert signed64(crc64_avro(b'"int"')) == 8247732601305521295
    assert signed64(crc64_avro(b'"string"')) == -8142146995180207161
    foo = AvroSchema("foo", {"fields": [], "type": "record", "name": "foo"})
    assert foo.fingerprint == (-4824392279771201922).to_bytes(8, "little", signed=True)


def test_canonical_form_strips_docs_defaults_and_logical_types() -> None:
    schema = AvroSchema("tiny", {
        "type": "record", "name": "Tiny", "namespace": "org.example", "doc": "a doc",
        "fields": [
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}, "doc": "x"},
            {"name": "note", "type": ["null", "string"], "default": None},
        ],
    })
    assert schema.canonical == (
        '{"name":"org.example.Tiny","type":"record","fields":'
        '[{"name":"at","type":"long"},{"name":"note","type":["null","string"]}]}'
    )
    assert schema.full_name == "org.example.Tiny"


def test_unknown_fingerprint_is_schema_not_found(registry: SchemaRegistry) -> None:
    data = registry.get("score").encode(EXAMPLES["score"])
    unknown = data[:2] + bytes(b ^ 0xFF for b in data[2:10]) + data[10:]
    with pytest.raises(SchemaNotFoundError, match="fingerprint"):
        registry.decode(unknown)
    with pytest.raises(SchemaNotFoundError):
        registry.decode_as(unknown, "score")
    # Decoding with one schema a payload written with another is the same error.
    with pytest.raises(SchemaNotFoundError, match=registry.get("score").fingerprint.hex()):
        registry.get("dq_metric").decode(data)


def test_unknown_name_lists_known_names(registry: SchemaRegistry) -> None:
    with pytest.raises(SchemaNotFoundError, match="raw_envelope"):
        registry.get("no_such_schema")


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_truncated_or_extended_body_is_corrupt(registry: SchemaRegistry, name: str) -> None:
    data = registry.get(name).encode(EXAMPLES[name])
    for bad in (data[:-1], data[: len(data) // 2], data[:HEADER_LEN], data + b"\x00"):
        with pytest.raises(CorruptPayloadError) as info:
            registry.decode(bad)
        assert isinstance(info.value, SerdeError)


def test_garbage_body_is_corrupt(registry: SchemaRegistry) -> None:
    header = registry.get("raw_envelope").encode(EXAMPLES["raw_envelope"])[:HEADER_LEN]
    # A string length of 2**63-1 with no bytes behind it, and a union index far out of range.
    for body in (b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x02a\x02b\x02c\x7f"):
        with pytest.raises(CorruptPayloadError) as info:
            registry.decode(header + body)
        assert info.value.__cause__ is not None


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_random_bodies_decode_or_raise_corrupt(registry: SchemaRegistry, name: str) -> None:
    """Whatever the bytes, decode gives a record or CorruptPayloadError, never another error."""
    rng = random.Random(name)
    header = registry.get(name).encode(EXAMPLES[name])[:HEADER_LEN]
    for _ in range(300):
        body = rng.randbytes(rng.randrange(64))
        try:
            registry.decode(header + body)
        except CorruptPayloadError:
            pass


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc3", b"\xc3\x01\x00\x01\x02", b"\x00\x01" + bytes(20), b"Obj\x01" + bytes(20),
     b"MSH|^~\\&|EPIC|GENHOSP"],
)
def test_missing_marker_or_short_payload_is_corrupt(registry: SchemaRegistry, data: bytes) -> None:
    with pytest.raises(CorruptPayloadError):
        fingerprint_of(data)
    with pytest.raises(CorruptPayloadError):
        registry.decode(data)


def test_wrong_marker_with_known_fingerprint_is_corrupt(registry: SchemaRegistry) -> None:
    data = registry.get("score").encode(EXAMPLES["score"])
    with pytest.raises(CorruptPayloadError, match="marker"):
        registry.decode(b"\xc3\x00" + data[2:])


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("raw_envelope", {"bronze_key": None}),
        ("fhir_envelope", {"lineage": {"raw_id": "r"}}),
        ("score", {"score": "high"}),
        ("mpi_link_event", {"event_type": "SPLIT"}),
        ("dlq_record", {"source_partition": "3"}),
        ("dq_metric", {"passed": 2**70}),
        ("feature_vector", {"features": {"age_years": "68"}}),
        ("score", {"as_of": datetime(2024, 5, 1, 8, 30)}),  # naive: would be read as local time
        ("score", {"scroe": 0.5}),  # unknown key, most likely a typo
    ],
)
def test_record_not_fitting_the_schema_is_encode_error(
    registry: SchemaRegistry, name: str, change: dict
) -> None:
    with pytest.raises(EncodeError):
        registry.get(name).encode(dict(EXAMPLES[name], **change))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_missing_required_field_is_encode_error(registry: SchemaRegistry, name: str) -> None:
    raw = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    required = [field["name"] for field in raw["fields"] if "default" not in field]
    assert required
    for field in required:
        record = {k: v for k, v in EXAMPLES[name].items() if k != field}
        with pytest.raises(EncodeError, match=field):
            registry.get(name).encode(record)


def _walk_named(schema: object, found: list[dict]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _walk_named(branch, found)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed"):
            found.append(schema)
        for field in schema.get("fields", []):
            _walk_named(field["type"], found)
        for key in ("items", "values"):
            if key in schema:
                _walk_named(schema[key], found)


def _walk_types(schema: object) -> list[object]:
    if isinstance(schema, list):
        return [schema] + [t for branch in schema for t in _walk_types(branch)]
    if isinstance(schema, dict):
        out: list[object] = [schema]
        for field in schema.get("fields", []):
            out += _walk_types(field["type"])
        for key in ("items", "values"):
            if key in schema:
                out += _walk_types(schema[key])
        return out
    return [schema]


@pytest.mark.parametrize("path", schema_files(), ids=lambda p: p.stem)
def test_schema_file_conventions(path: Path) -> None:
    raw = json.loads(path.read_text())
    schema = AvroSchema.from_file(path)
    assert raw["namespace"] == "org.carelake.v1"
    # raw_envelope.avsc holds org.carelake.v1.RawEnvelope, and so on.
    record_name = "".join(part.capitalize() for part in path.stem.split("_"))
    assert schema.full_name == f"org.carelake.v1.{record_name}"
    named: list[dict] = []
    _walk_named(raw, named)
    for node in named:
        assert node.get("doc"), f"{node['name']} has no doc"
        for field in node.get("fields", []):
            assert field.get("doc"), f"{node['name']}.{field['name']} has no doc"
            field_type = field["type"]
            if isinstance(field_type, list):
                # Optional fields: ["null", T] with a null default.
                assert field_type[0] == "null" and len(field_type) == 2, field["name"]
                assert field.get("default", "absent") is None, field["name"]
    for node in _walk_types(raw):
        # Timestamps are UTC microseconds, never millis or local.
        if isinstance(node, dict) and "logicalType" in node:
            assert node == {"type": "long", "logicalType": "timestamp-micros"}


def test_schema_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CARELAKE_SCHEMA_DIR", raising=False)
    assert schema_dir() == SCHEMA_DIR
    shutil.copy(SCHEMA_DIR / "score.avsc", tmp_path / "score.avsc")
    monkeypatch.setenv("CARELAKE_SCHEMA_DIR", str(tmp_path))
    assert schema_dir() == tmp_path
    assert SchemaRegistry.load().names() == ["score"]


def test_load_is_cached_per_directory(tmp_path: Path) -> None:
    assert SchemaRegistry.load(SCHEMA_DIR) is SchemaRegistry.load(SCHEMA_DIR)
    shutil.copy(SCHEMA_DIR / "score.avsc", tmp_path / "score.avsc")
    assert SchemaRegistry.load(tmp_path) is not SchemaRegistry.load(SCHEMA_DIR)


def test_missing_or_empty_schema_dir_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        SchemaRegistry.load(tmp_path / "nope")
    with pytest.raises(ConfigError):
        SchemaRegistry.load(tmp_path)


def test_decode_as_reads_an_older_writer_schema_into_the_current_one(tmp_path: Path) -> None:
    """A registry holding history/<name>/<n>.avsc decodes old payloads into the current schema."""
    old_raw = json.loads((SCHEMA_DIR / "raw_envelope.avsc").read_text())
    new_raw = json.loads(json.dumps(old_raw))
    new_raw["fields"].append({"name": "priority", "type": ["null", "string"], "default": None,
                              "doc": "Sender's processing priority."})
    (tmp_path / "raw_envelope.avsc").write_text(json.dumps(new_raw))
    (tmp_path / "history" / "raw_envelope").mkdir(parents=True)
    (tmp_path / "history" / "raw_envelope" / "1.avsc").write_text(json.dumps(old_raw))

    registry = SchemaRegistry.load(tmp_path)
    old_data = AvroSchema("raw_envelope", old_raw).encode(EXAMPLES["raw_envelope"])
    writer, as_written = registry.decode(old_data)
    assert writer.name == "raw_envelope"
    assert writer is not registry.get("raw_envelope")
    assert "priority" not in as_written
    assert registry.decode_as(old_data, "raw_envelope") == dict(EXAMPLES["raw_envelope"],
                                                                priority=None)
    new_data = registry.get("raw_envelope").encode(dict(EXAMPLES["raw_envelope"], priority="S"))
    assert registry.decode_as(new_data, "raw_envelope")["priority"] == "S"


def test_decode_as_an_unrelated_schema_is_serde_error(registry: SchemaRegistry) -> None:
    data = registry.get("score").encode(EXAMPLES["score"])
    with pytest.raises(SerdeError):
        registry.decode_as(data, "raw_envelope")
    with pytest.raises(SchemaNotFoundError):
        registry.decode_as(data, "no_such_schema")
