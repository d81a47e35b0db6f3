"""The service's pure parts without Kafka or Gold: routing, rejects, migrations' text, the schema diff."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from carelake.errors import ConfigError
from carelake.stream.types import Record, Reject, Write
from carelake_lake_writer.gold.migrate import migrations, quote_db, statements
from carelake_lake_writer.gold.schema import differences
from carelake_lake_writer.service import INPUTS, LakeWriter, gold_database
from carelake_lake_writer.tables import TABLES

AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def envelope(fhir: dict, **over) -> dict:
    return {"id": fhir.get("id", "x"), "resource_type": fhir.get("resourceType", "Basic"),
            "resource": json.dumps(fhir), "fhir_version": "4.0.1", "source": "ehr",
            "source_patient_key": "ehr|E1", "euid": "EAAA", "event_time": None, "processed_at": AT,
            "lineage": {"raw_id": "r1", "bronze_key": "ehr/a.hl7", "byte_offset": 0, "byte_length": 9,
                        "source_message_id": None},
            "phi_paths": [], "security_labels": [], "replayed": False, **over}


def tables_of(outputs: list) -> list[str]:
    return [o.item.table for o in outputs if isinstance(o, Write)]


def test_each_input_topic_goes_to_its_table_under_any_prefix() -> None:
    process = LakeWriter()
    raw = {"id": "r1", "source": "lab", "format": "hl7v2", "content_type": None, "received_at": AT,
           "bronze_key": "lab/x", "sha256": "ab", "byte_offset": 0, "byte_length": 5, "payload": b"MSH|PHI",
           "source_message_id": None, "source_patient_key": "lab|1", "replayed": False, "headers": {}}
    link = {"event_id": "ev", "event_type": "MERGE", "euid": "E2", "record_key": "lab|1", "previous_euid": "E1",
            "score": None, "outcome": None, "rule": None, "decided_by": "steward", "contributions": {},
            "occurred_at": AT}
    dlq = {"id": "t:0:1", "service": "normalizer", "stage": "process", "reason_code": "missing_segment",
           "reason": "no OBR", "error_type": "Reject", "source_topic": "bronze.raw.v1", "source_partition": 0,
           "source_offset": 1, "source_key": None, "payload": b"secret bytes", "source": "lab",
           "bronze_key": "lab/x", "failed_at": AT, "attempts": 1}
    batch = [Record.of(envelope({"resourceType": "Encounter", "id": "e1"}), topic="t1a2.silver.linked.v1"),
             Record.of(link, topic="t1a2.mpi.links.v1"), Record.of(raw, topic="t1a2.bronze.raw.v1"),
             Record.of(dlq, topic="t1a2.dlq.normalizer.v1"), Record.of(None, topic="t1a2.mpi.links.v1")]
    out = process(batch)
    assert tables_of(out) == ["silver_resources", "resource_lineage", "encounters", "euid_map", "raw_arrivals",
                              "dead_letters"]
    rows = {o.item.table: o.item.values for o in out}
    # Payload bytes never reach Gold: only their size, and no column holds them.
    assert b"MSH|PHI" not in rows["raw_arrivals"] and b"secret bytes" not in rows["dead_letters"]
    assert rows["dead_letters"][-2] == len(b"secret bytes")
    assert rows["euid_map"][:4] == ("lab|1", "E2", "MERGE", "E1")


def test_a_resource_that_is_not_json_is_rejected_and_nothing_is_written() -> None:
    bad = envelope({"resourceType": "Observation"}, resource="{not json")
    out = LakeWriter()([Record.of(bad, topic="silver.linked.v1")])
    assert len(out) == 1 and isinstance(out[0], Reject) and out[0].code == "bad_resource_json"


def test_a_resource_that_cannot_be_flattened_keeps_its_silver_row_and_rejects_the_fact(monkeypatch) -> None:
    from carelake_lake_writer import flatten as flat

    def boom(resource: dict) -> dict:
        raise KeyError("surprise")

    monkeypatch.setitem(flat.FLATTENERS, "Condition", boom)
    out = LakeWriter()([Record.of(envelope({"resourceType": "Condition", "id": "c"}), topic="silver.linked.v1")])
    assert tables_of(out) == ["silver_resources", "resource_lineage"]
    rejects = [o for o in out if isinstance(o, Reject)]
    assert len(rejects) == 1 and rejects[0].code == "flatten_failed" and rejects[0].part == "fact"


def test_an_unexpected_topic_is_rejected() -> None:
    out = LakeWriter()([Record.of({"x": 1}, topic="scores.v1")])
    assert isinstance(out[0], Reject) and out[0].code == "unknown_topic"


def test_the_gold_database_comes_from_the_url() -> None:
    assert gold_database("http://127.0.0.1:18123") == "carelake"
    assert gold_database("http://127.0.0.1:18123/t_abc") == "t_abc"
    assert gold_database("https://u:p@gold:8443/?database=clinical") == "clinical"
    assert "dlq.dedup-mpi.v1" in INPUTS and "silver.linked.v1" in INPUTS


def test_migration_files_split_into_single_statements_for_a_named_database() -> None:
    files = migrations()
    assert [m.version for m in files] == sorted(m.version for m in files) and files[0].version == 1
    for m in files:
        for sql in statements(m.text, "t_x"):
            assert sql.startswith(("CREATE", "INSERT INTO")) and ";" not in sql.rstrip().rstrip(";")[-1:]
            assert "{db}" not in sql and "`t_x`." in sql
    created = {s.split()[5].split(".")[1] for m in files for s in statements(m.text, "t_x")
               if s.startswith("CREATE TABLE IF NOT EXISTS")}
    assert set(TABLES) <= created


def test_database_names_that_are_not_identifiers_are_refused() -> None:
    assert quote_db("t_1") == "`t_1`"
    with pytest.raises(ConfigError):
        quote_db("x`; DROP DATABASE y")


def test_schema_differences_name_the_table_and_column() -> None:
    expected = {"a": (("id", "String"), ("n", "UInt64")), "b": (("id", "String"),)}
    actual = {"a": {"id": "String", "n": "Int64", "extra": "String"}}
    problems = differences(expected, actual, "db")
    assert problems == ["table db.a: column n is Int64, the writer inserts UInt64", "table db.b is missing"]
    assert differences(expected, {"a": {"id": "String", "n": "UInt64"}, "b": {"id": "String"}}, "db") == []
