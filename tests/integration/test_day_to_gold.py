"""The whole path on a small day: gateway, normalizer, dedup-mpi and lake-writer as real processes,
then Gold compared with the simulator's truth."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest

from carelake.config import Settings
from carelake.demo_day import run_day
from carelake.gold.client import gold_client
from carelake.stream.selftest import count, drop
from carelake.topics import load_catalog
from carelake_lake_writer.queries import patient_360
from carelake_simulator.simulate import SimConfig
from carelake_simulator.simulate import run as simulate_run

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_a_day_reaches_gold_with_one_euid_per_true_person(stack: Settings, tmp_path: Path) -> None:
    day = tmp_path / "day"
    simulate_run(SimConfig(patients=1200, seed=11, device_share=0.02), day)
    summary = run_day(stack, day, tmp_path / "pipeline", timeout_s=600, full=True)
    catalog = load_catalog(stack.topic_catalog, summary.prefix)
    gold = gold_client(summary.gold_url)
    try:
        assert summary.caught_up, summary.stage_seconds
        truth = {r["key"]: r["person_id"] for r in csv.DictReader(open(day / "_truth" / "registrations.csv"))}
        links = gold.query("SELECT record_key, euid FROM current_links").result_rows
        assert len(links) > 100
        euids_of, people_of = defaultdict(set), defaultdict(set)
        for key, euid in links:
            assert key in truth, f"{key} is in Gold but no source registered it"
            euids_of[truth[key]].add(euid)
            people_of[euid].add(truth[key])
        split = {p: e for p, e in euids_of.items() if len(e) > 1}
        mixed = {e: p for e, p in people_of.items() if len(p) > 1}
        assert not split, f"true persons under several EUIDs: {list(split.items())[:5]}"
        assert not mixed, f"EUIDs holding several true persons: {list(mixed.items())[:5]}"
        # One patient_360 row per EUID that Gold knows, and none for an EUID merged away.
        rows, distinct = gold.query("SELECT count(), uniqExact(euid) FROM patient_360").result_rows[0]
        assert rows == distinct == len(people_of)
        # Every Silver resource reached Gold once (replays and retries never double it).
        silver = count(stack.bootstrap, catalog.physical("silver.fhir.v1"))
        linked = count(stack.bootstrap, catalog.physical("silver.linked.v1"))
        assert linked == silver == sum(summary.silver_by_type.values())
        in_gold = gold.query("SELECT uniqExact(raw_id, id) FROM resource_lineage").result_rows[0][0]
        distinct_silver = gold.query("SELECT count() FROM silver_resources FINAL").result_rows[0][0]
        assert in_gold <= silver and distinct_silver <= in_gold and distinct_silver > 0
        raw = gold.query("SELECT count() FROM raw_arrivals FINAL").result_rows[0][0]
        assert raw == summary.raw_envelopes
        # Records per source: what the sources sent (the truth) = what Gold holds + what the gateway
        # refused at its edge (MLLP AR answers; unreadable readings in its capture DLQ, also in Gold).
        by_source = dict(gold.query("SELECT source, count() FROM raw_arrivals FINAL GROUP BY source").result_rows)
        at_edge = dict(gold.query("SELECT source, count() FROM dead_letters FINAL WHERE service LIKE 'ingest%' "
                                  "GROUP BY source").result_rows)
        truth_by_source = _truth_by_source(day)
        assert set(by_source) >= {"ehr", "lab", "pharmacy", "wearables", "claims", "billing"}
        for source, sent in truth_by_source.items():
            refused = summary.refused.get(f"mllp:{source}", 0) + at_edge.get(source, 0)
            assert by_source.get(source, 0) + refused == sent, (source, by_source.get(source), refused, sent)
        # A person found by a source key shows every source that knows them.
        sources_of: dict[str, set[str]] = defaultdict(set)
        for k, e in links:
            sources_of[e].add(k.split("|", 1)[0])
        key = min(k for k, e in links if len(sources_of[e]) >= 2)
        person = patient_360(gold, gold.database, key.replace("|", ":", 1))
        assert person is not None and person["lookup"]["resolved_by"] == "record_key"
        assert key in person["identifiers"] and len(person["sources"]) >= 2
    finally:
        drop(stack.bootstrap, catalog)
        gold.command(f"DROP DATABASE IF EXISTS `{summary.mpi_database}`")
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{summary.mpi_database}" WITH (FORCE)')


def _truth_by_source(day: Path) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for row in csv.DictReader(open(day / "_truth" / "records.csv")):
        counts[row["source"]] += 1
    return counts
