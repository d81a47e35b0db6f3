"""The lake-writer on the real stack: Kafka scratch topics in, a uuid Gold database out."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from silver_day import SilverDay, link_event
from streams import TOPICS, Running, committed, produce

from carelake.config import Settings
from carelake.errors import ConfigError, TransientError
from carelake.stack.parts import free_port
from carelake.stream.admin import create_topics
from carelake.topics import Catalog
from carelake_lake_writer.gold.data_tests import run_data_tests
from carelake_lake_writer.gold.migrate import migrate
from carelake_lake_writer.gold.schema import check_schema
from carelake_lake_writer.p360 import differences
from carelake_lake_writer.queries import gold_query, patient_360
from carelake_lake_writer.rows import raw_row
from carelake_lake_writer.service import build

pytestmark = pytest.mark.integration

FACTS = {"patients": ("Patient",), "encounters": ("Encounter",), "observations": ("Observation",),
         "conditions": ("Condition",), "medications": ("MedicationDispense", "MedicationRequest"),
         "claims": ("Claim", "ClaimResponse"), "appointments": ("Appointment",), "immunizations": ("Immunization",),
         "coverages": ("Coverage",)}
KEY_LABS = ("4548-4", "33914-3", "62238-1", "98979-8", "13457-7", "18262-6", "2089-1")
SPLIT = "ESPLIT0000001"


def settings_for(stack: Settings, catalog: Catalog, database: str, gold: str | None = None) -> Settings:
    return stack.model_copy(update={"gold_url": f"{gold or stack.gold}/{database}", "topic_prefix": catalog.prefix})


def dead_letter(i: int, service: str, at) -> dict:
    return {"id": f"bronze.raw.v1:0:{i}", "service": service, "stage": "process", "reason_code": "missing_segment",
            "reason": "ORU^R01 has no OBR", "error_type": "Reject", "source_topic": "bronze.raw.v1",
            "source_partition": 0, "source_offset": i, "source_key": None, "payload": b"MSH|^~\\&|PHI here",
            "source": "lab", "bronze_key": "lab/2026/01/15/lab.hl7", "failed_at": at, "attempts": 1}


def counts(client, db: str) -> dict[str, int]:
    tables = ["silver_resources", "resource_lineage", *FACTS, "euid_map", "raw_arrivals", "dead_letters"]
    out = {t: int(client.command(f"SELECT count() FROM `{db}`.{t} FINAL")) for t in tables}
    out["patient_360"] = int(client.command(f"SELECT count() FROM `{db}`.patient_360"))
    return out


def split_person(day: SilverDay) -> tuple[SilverDay, str, str, str]:
    """The day with one person's lab record under a second EUID (the MPI has not linked it yet).

    Returns (day, euid, ehr key, lab key) for a person with an EHR record and a lab record that
    carries a key lab result.
    """
    for lab_key in sorted({e["source_patient_key"] for e in day.envelopes
                           if e["source"] == "lab" and e["euid"] and any(c in e["resource"] for c in KEY_LABS)}):
        euid = next(e["euid"] for e in day.envelopes if e["source_patient_key"] == lab_key)
        ehr = sorted(k for k in day.keys_of(euid) if k.startswith("ehr|"))
        if ehr:
            break
    else:
        raise AssertionError("the simulated day has nobody with an EHR record and a lab result")
    split = copy.copy(day)
    split.envelopes = [{**e, "euid": SPLIT} if e["source_patient_key"] == lab_key else e for e in day.envelopes]
    split.links = [link_event(lab_key, SPLIT, ev["occurred_at"]) if ev["record_key"] == lab_key else ev
                   for ev in day.links]
    return split, euid, ehr[0], lab_key


def produce_day(stack: Settings, catalog: Catalog, day: SilverDay, dead_letters: list[dict]) -> int:
    n = produce(stack.bootstrap, catalog, "silver.linked.v1", day.envelopes, lambda e: e["euid"] or e["id"])
    n += produce(stack.bootstrap, catalog, "mpi.links.v1", day.links, lambda e: e["record_key"])
    n += produce(stack.bootstrap, catalog, "bronze.raw.v1", day.raw, lambda e: e["source_patient_key"] or e["id"])
    n += produce(stack.bootstrap, catalog, "dlq.normalizer.v1", dead_letters[:3], lambda e: None)
    n += produce(stack.bootstrap, catalog, "dlq.dedup-mpi.v1", dead_letters[3:], lambda e: None)
    return n


def parquet_ids(bronze: Path) -> set[str]:
    """The ids in the Silver Parquet lake beside ``bronze`` (the lake-writer's root: <bronze parent>/lake)."""
    import pyarrow.parquet as pq

    return {i for p in (bronze.parent / "lake" / "silver").rglob("*.parquet")
            for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()}


def test_a_day_lands_in_gold_a_merge_rekeys_patient_360_and_a_replay_changes_nothing(
        stack: Settings, catalog: Catalog, unique: str, gold_db: tuple, silver_day: SilverDay, tmp_path: Path) -> None:
    client, db = gold_db
    create_topics(catalog, stack.bootstrap, [catalog.get(t) for t in TOPICS])
    day, euid, ehr_key, lab_key = split_person(silver_day)
    at = max(e["processed_at"] for e in day.envelopes)
    dead = [dead_letter(i, "normalizer", at) for i in range(3)] + [dead_letter(9, "dedup-mpi", at)]
    total = produce_day(stack, catalog, day, dead)
    (bronze := tmp_path / "bronze").mkdir()  # Silver Parquet goes beside it, not into the stack's lake
    running = Running(settings_for(stack, catalog, db).model_copy(update={"bronze_dir": bronze}), catalog, unique)
    try:
        started = time.perf_counter()
        running.wait_committed(total)
        seconds = time.perf_counter() - started

        # Counts: one row per distinct id, whatever the number of copies streamed.
        got = counts(client, db)
        assert got["silver_resources"] == len({e["id"] for e in day.envelopes})
        for table, kinds in FACTS.items():
            assert got[table] == len({e["id"] for e in day.envelopes if e["resource_type"] in kinds}), table
        assert got["euid_map"] == len(day.links) and got["raw_arrivals"] == len(day.raw)
        assert got["dead_letters"] == 4
        assert got["resource_lineage"] == len({(e["lineage"]["raw_id"], e["id"]) for e in day.envelopes})
        assert parquet_ids(bronze) == {e["id"] for e in day.envelopes}  # Silver at rest, committed with Gold
        rows = sum(v for k, v in got.items() if k != "patient_360")
        print(f"\n{total} messages -> {rows} Gold rows in {seconds:.1f} s ({rows / seconds:,.0f} rows/s incl. start-up)")

        # Before the merge the person is split in two.
        before = patient_360(client, db, ehr_key)
        assert before is not None and before["euid"] == euid and lab_key not in before["identifiers"]
        split = patient_360(client, db, lab_key.replace("|", ":"))
        assert split is not None and split["euid"] == SPLIT and split["identifiers"] == [lab_key]
        assert any(split[lab] for lab in ("hba1c", "egfr", "ldl"))  # the lab result is on the split row

        # Data tests and KPIs.
        assert run_data_tests(client, db) == {"accepted_statuses": [], "not_null_keys": [], "unique_ids": []}
        _, kpis = gold_query(client, f"SELECT layer, sum(records_in), sum(records_out), sum(dead_letters), "
                                     f"sumMap(dlq_by_reason) FROM `{db}`.pipeline_kpis GROUP BY layer ORDER BY layer")
        by_layer = {row[0]: row[1:] for row in kpis}
        assert by_layer["bronze"][:2] == (len(day.raw), len(day.raw))
        assert by_layer["linked"][0] == got["resource_lineage"]
        assert by_layer["silver"][2] == 3 and by_layer["dlq"][3] == {"normalizer/missing_segment": 3,
                                                                    "dedup-mpi/missing_segment": 1}

        # A MERGE moves the lab record under the surviving EUID: one row, both records, the lab's facts.
        persons = got["patient_360"]
        merge = link_event(lab_key, euid, at + timedelta(seconds=5), "MERGE", previous=SPLIT)
        produce(stack.bootstrap, catalog, "mpi.links.v1", [merge], lambda e: e["record_key"])
        running.wait_committed(total + 1)
        after = patient_360(client, db, lab_key)
        assert after is not None and after["euid"] == euid
        assert {ehr_key, lab_key} <= set(after["identifiers"]) and {"ehr", "lab"} <= set(after["sources"])
        assert any(after[lab] and after[lab]["source"] == "lab" for lab in ("hba1c", "egfr", "ldl"))
        assert counts(client, db)["patient_360"] == persons - 1
        old = patient_360(client, db, SPLIT)
        assert old is not None and old["euid"] == euid and old["lookup"]["resolved_by"] == "merged"
        started = time.perf_counter()
        for _ in range(5):
            patient_360(client, db, ehr_key)
        print(f"patient_360 lookup by record key: {(time.perf_counter() - started) / 5 * 1000:.0f} ms")

        # A replay of everything (same envelopes, links, raw arrivals, dead letters) changes no count.
        snapshot = counts(client, db)
        replayed = produce_day(stack, catalog, day, dead)
        replayed += produce(stack.bootstrap, catalog, "mpi.links.v1", [merge], lambda e: e["record_key"])
        running.wait_committed(total + 1 + replayed)
        assert counts(client, db) == snapshot
        assert patient_360(client, db, lab_key)["euid"] == euid  # the replayed LINK is older than the MERGE
        assert run_data_tests(client, db) == {"accepted_statuses": [], "not_null_keys": [], "unique_ids": []}
    finally:
        running.stop()
    # The stopping writer refreshed the stored Patient 360 rows last: each equals the view.
    assert differences(client, db) == 0
    assert patient_360(client, db, lab_key)["lookup"]["served_from"] == "rows"


def test_migrations_are_idempotent_and_a_drifted_column_stops_the_writer(stack: Settings, catalog: Catalog,
                                                                        gold_db: tuple) -> None:
    client, db = gold_db
    assert migrate(client, db)  # applies every file
    assert migrate(client, db) == []  # and then nothing
    check_schema(client, db)
    client.command(f"ALTER TABLE `{db}`.observations MODIFY COLUMN value_num Nullable(Float32)")
    with pytest.raises(ConfigError, match=r"observations: column value_num is Nullable\(Float32\)"):
        check_schema(client, db)
    client.command(f"ALTER TABLE `{db}`.observations DROP COLUMN unit")
    with pytest.raises(ConfigError, match="observations: column unit"):
        build(settings_for(stack, catalog, db))


def test_a_gold_outage_retries_commits_nothing_then_catches_up(stack: Settings, catalog: Catalog, unique: str,
                                                                gold_db: tuple, silver_day: SilverDay) -> None:
    client, db = gold_db
    create_topics(catalog, stack.bootstrap, [catalog.get(t) for t in TOPICS])
    raw = silver_day.raw[:40]
    produce(stack.bootstrap, catalog, "bronze.raw.v1", raw, lambda e: e["id"])
    down = settings_for(stack, catalog, db, gold=f"http://127.0.0.1:{free_port()}")  # nothing listens there

    service = build(down)  # starts anyway: Gold is checked at the first write
    with pytest.raises(TransientError, match="Gold unavailable"):
        service.sink.write([raw_row(raw[0])])

    running = Running(down, catalog, unique, max_backoff_s=0.5)
    try:
        deadline = time.monotonic() + 30
        while not running.runner.health()[1]["retrying"] and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # several retries
        ok, health = running.runner.health()
        assert not ok and health["retrying"]
        assert running.runner.committed_messages == 0
        assert committed(stack.bootstrap, unique, catalog.physical("bronze.raw.v1")) == 0
    finally:
        running.stop()
    assert not client.query("SELECT 1 FROM system.databases WHERE name = {d:String}", parameters={"d": db}).result_rows

    running = Running(settings_for(stack, catalog, db), catalog, unique)  # Gold is back: the same group resumes
    try:
        running.wait_committed(len(raw))
    finally:
        running.stop()
    assert int(client.command(f"SELECT count() FROM `{db}`.raw_arrivals FINAL")) == len(raw)
    assert committed(stack.bootstrap, unique, catalog.physical("bronze.raw.v1")) == len(raw)


def _start(stack: Settings, catalog: Catalog, db: str, group: str, log: Path) -> subprocess.Popen:
    here = Path(__file__).resolve().parent
    env = {**os.environ, "CARELAKE_TOPIC_PREFIX": catalog.prefix, "CARELAKE_GOLD_URL": f"{stack.gold}/{db}",
           "CARELAKE_BATCH_SIZE": "50", "CARELAKE_METRICS_PORT": str(free_port()), "LW_GROUP": group,
           "CARELAKE_BRONZE_DIR": str(log.parent / "bronze"),  # Silver Parquet goes beside it
           "CARELAKE_INSTANCE_ID": f"{group}-0",  # static membership: the restart takes the partitions back at once
           "PYTHONPATH": os.pathsep.join([str(here), str(here.parent), str(here.parents[2])])}
    return subprocess.Popen([sys.executable, "-m", "carelake.cli", "run", "killable_lake_writer:build"], env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def test_sigkill_mid_load_then_restart_ends_with_exactly_what_was_produced(
        stack: Settings, catalog: Catalog, unique: str, gold_db: tuple, silver_day: SilverDay, tmp_path: Path) -> None:
    client, db = gold_db
    t0 = time.monotonic()
    create_topics(catalog, stack.bootstrap, [catalog.get(t) for t in TOPICS])
    produced = {"silver.linked.v1": produce(stack.bootstrap, catalog, "silver.linked.v1", silver_day.envelopes,
                                            lambda e: e["euid"] or e["id"]),
                "bronze.raw.v1": produce(stack.bootstrap, catalog, "bronze.raw.v1", silver_day.raw, lambda e: e["id"])}
    migrate(client, db)  # so the kill lands in the load, not in the migrations
    log = tmp_path / "lake-writer.log"
    (tmp_path / "bronze").mkdir()  # the Parquet lake goes beside it (see _start)
    physical = lambda: int(client.command(f"SELECT count() FROM `{db}`.silver_resources"))
    proc = _start(stack, catalog, db, unique, log)
    try:
        deadline = time.monotonic() + 90
        while physical() < 400 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert physical() >= 400, log.read_text()[-3000:]
        print(f"\nkill at {time.monotonic() - t0:.1f}s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert committed(stack.bootstrap, unique, catalog.physical("silver.linked.v1")) < produced["silver.linked.v1"], \
            "the writer finished before it could be killed"
        proc = _start(stack, catalog, db, unique, log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(
                committed(stack.bootstrap, unique, catalog.physical(t)) < n for t, n in produced.items()):
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        print(f"caught up at {time.monotonic() - t0:.1f}s")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    got = counts(client, db)
    assert got["silver_resources"] == len({e["id"] for e in silver_day.envelopes})
    assert got["raw_arrivals"] == len(silver_day.raw)
    for table, kinds in FACTS.items():
        assert got[table] == len({e["id"] for e in silver_day.envelopes if e["resource_type"] in kinds}), table
    assert run_data_tests(client, db)["unique_ids"] == []
    assert parquet_ids(tmp_path / "bronze") == {e["id"] for e in silver_day.envelopes}  # no row lost to the kill
