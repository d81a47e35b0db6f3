"""Schema migrations: applied once, recorded, safe to run from two processes at once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import psycopg
import pytest

from carelake_dedup_mpi.store.index import BLOCKS_SQL
from carelake_dedup_mpi.store.migrate import available, migrate

pytestmark = pytest.mark.integration

TABLES = {"source_record", "blocking_key", "person", "link", "review_item", "mpi_event", "mpi_outbox", "audit",
          "mpi_schema_migrations"}


def test_migrate_is_idempotent_and_recorded(mpi_dsn, sql):
    versions = [v for v, _ in available()]
    assert versions[0] == "0001"
    assert migrate(mpi_dsn) == versions
    assert migrate(mpi_dsn) == []
    with psycopg.connect(mpi_dsn) as conn:  # a caller's own (non-autocommit) connection works too
        assert migrate(conn) == []
        assert conn.autocommit is False
    tables = {t for (t,) in sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert TABLES <= tables
    assert [v for (v,) in sql("SELECT version FROM mpi_schema_migrations ORDER BY version")] == versions


def test_two_migrators_at_once_apply_each_migration_once(mpi_dsn, sql):
    results: list[list[str]] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        results.append(migrate(mpi_dsn))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results, key=len) == [[], [v for v, _ in available()]]


def test_blocking_lookups_use_the_index(store, rec, ann, sql):
    people = [rec(f"ehr|{i}", **{**ann, "given": f"ANN{i}", "phone": f"312555{i:04d}"}) for i in range(50)]
    store.link(people, datetime(2026, 3, 1, tzinfo=UTC))
    sql("ANALYZE")
    with psycopg.connect(store.pool.conninfo) as conn:
        conn.execute("SET enable_seqscan = off")  # a table this small is read whole; is the index usable?
        plan = "\n".join(row[0] for row in conn.execute(
            "EXPLAIN " + BLOCKS_SQL, {"keys": ["ph:3125550001", "d:19650304"], "caps": [200, 200]}))
    assert "Index Only Scan using blocking_key_pkey" in plan, plan  # (the bench checks the plan at 1M persons)
