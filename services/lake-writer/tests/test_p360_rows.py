"""patient_360_rows: who a batch touches (pure), and against Gold: stored rows equal the view, a row
is served only while fresh, and a merge is never answered from a stale row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from silver_day import SilverDay, link_event

from carelake.config import Settings
from carelake.gold.client import gold_client
from carelake.stream.types import Record, Write
from carelake_lake_writer.gold.sink import GoldSink
from carelake_lake_writer.p360 import Refresher, Touched, change_rows, differences, touched
from carelake_lake_writer.queries import patient_360
from carelake_lake_writer.service import LakeWriter

AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def silver(fhir: dict, key: str = "ehr|E1", euid: str = "EAAA", **over) -> Record:
    value = {"id": fhir.get("id", "x"), "resource_type": fhir["resourceType"], "resource": json.dumps(fhir),
             "fhir_version": "4.0.1", "source": key.partition("|")[0] or "public_health", "source_patient_key": key,
             "euid": euid, "event_time": None, "processed_at": AT,
             "lineage": {"raw_id": "r1", "bronze_key": "ehr/a.hl7", "byte_offset": 0, "byte_length": 9,
                         "source_message_id": None},
             "phi_paths": [], "security_labels": [], "replayed": False, **over}
    return Record.of(value, topic="silver.linked.v1")


def rows_of(records: list[Record]) -> list:
    return [o.item for o in LakeWriter()(records) if isinstance(o, Write)]


def test_a_batch_touches_its_records_their_euids_and_everyone_only_for_shared_facts() -> None:
    link = Record.of(link_event("lab|L1", "EBBB", AT, "MERGE", previous="ECCC"), topic="mpi.links.v1")
    who = touched(rows_of([silver({"resourceType": "Encounter", "id": "e1", "status": "finished",
                                   "class": {"code": "AMB"}}), link]))
    assert who == Touched(keys={"ehr|E1", "lab|L1"}, euids={"EAAA", "EBBB", "ECCC"}, everyone=False)
    # A wearable reading of no patient does not touch everyone; an area measure and a payer do.
    reading = {"resourceType": "Observation", "id": "o1", "status": "final", "category": [{"coding": [
        {"code": "vital-signs"}]}], "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": 70}}
    assert not touched(rows_of([silver(reading, key="", euid="")]))
    area = {**reading, "id": "o2", "category": [{"coding": [{"code": "social-history"}]}],
            "subject": {"reference": "Location/z1"}}
    assert touched(rows_of([silver(area, key="", euid="")])).everyone
    assert touched(rows_of([silver({"resourceType": "Organization", "id": "p1", "name": "Payer"},
                                   key="", euid="")])).everyone
    assert [r.values for r in change_rows(Touched({"b", "a"}, {"E1"}, True))] == [
        ("record", "a"), ("record", "b"), ("person", "E1"), ("everyone", "")]


def _silver_records(day: SilverDay) -> list[Record]:
    return [Record.of(e, topic="silver.linked.v1", offset=i) for i, e in enumerate(day.envelopes)]


def _link_records(links: list[dict]) -> list[Record]:
    return [Record.of(e, topic="mpi.links.v1", offset=i) for i, e in enumerate(links)]


@pytest.mark.integration
def test_stored_rows_equal_the_view_and_a_merge_is_never_answered_from_a_stale_row(
        stack: Settings, gold_db: tuple, silver_day: SilverDay) -> None:
    client, db = gold_db
    refresher = Refresher()
    sink = GoldSink(lambda: gold_client(stack.gold, database=None), db, refresher)
    items = rows_of([*_silver_records(silver_day), *_link_records(silver_day.links)])
    for start in range(0, len(items), 5000):
        sink.write(items[start:start + 5000])
    assert sink.refresh() > 0  # the first refresh rebuilds every row
    assert differences(client, db) == 0

    # Two people, each with an EHR record and one other record; the second's other record moves to the first.
    people = sorted(e for e in {x["euid"] for x in silver_day.envelopes if x["euid"]}
                    if len(silver_day.keys_of(e)) >= 2 and any(k.startswith("ehr|") for k in silver_day.keys_of(e)))
    keep, gone = people[0], people[1]
    ehr_key = sorted(k for k in silver_day.keys_of(keep) if k.startswith("ehr|"))[0]
    moved = sorted(silver_day.keys_of(gone))
    fresh = patient_360(client, db, ehr_key)
    assert fresh["lookup"]["served_from"] == "rows" and fresh["euid"] == keep

    # MERGE every record of `gone` into `keep`, written but not refreshed: no stale row may be served.
    later = max(e["occurred_at"] for e in silver_day.links) + timedelta(seconds=5)
    merges = [link_event(k, keep, later + timedelta(seconds=i), "MERGE", previous=gone)
              for i, k in enumerate(moved)]
    sink.write(rows_of(_link_records(merges)))
    after = patient_360(client, db, ehr_key)
    assert after["lookup"]["served_from"] == "view"
    assert set(moved) <= set(after["identifiers"]) and after["euid"] == keep
    old = patient_360(client, db, gone)
    assert old["euid"] == keep and old["lookup"]["resolved_by"] == "merged"

    # After the refresh the merged row is stored, the merged-away person is gone, and both equal the view.
    assert sink.refresh() >= 2
    again = patient_360(client, db, moved[0])
    assert again["lookup"]["served_from"] == "rows" and set(moved) <= set(again["identifiers"])
    assert {k: v for k, v in again.items() if k != "lookup"} == {k: v for k, v in after.items() if k != "lookup"}
    assert int(client.command(f"SELECT count() FROM `{db}`.patient_360_rows FINAL WHERE euid = '{gone}'")) == 0
    assert differences(client, db) == 0
