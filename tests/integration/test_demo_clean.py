"""`carelake demo --clean`: what earlier demo runs left behind is dropped, and nothing else."""

from __future__ import annotations

import psycopg
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from carelake.config import Settings
from carelake.demo_day import clean_runs
from carelake.gold.client import gold_client

pytestmark = pytest.mark.integration


def test_clean_runs_drops_old_runs_topics_and_databases_but_keeps_others(stack: Settings, unique: str) -> None:
    old, kept = "demo20000101000000.", "demo20000101000001."
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    other = f"{unique}.silver.fhir.v1"
    for fut in admin.create_topics([NewTopic(t, 1, 1) for t in (f"{old}silver.fhir.v1", f"{kept}silver.fhir.v1",
                                                                  other)]).values():
        fut.result()
    gold = gold_client(stack.gold, database=None)
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        for name in ("run_demo20000101000000", "run_demo20000101000001"):
            conn.execute(f'CREATE DATABASE "{name}"')
            gold.command(f"CREATE DATABASE IF NOT EXISTS `{name}`")
    try:
        # Only runs stamped before mid-2000: a developer's own demo runs on this stack stay.
        dropped = clean_runs(stack, keep=kept, before="20000601000000")
        assert f"{old}silver.fhir.v1" in dropped["topics"] and f"{kept}silver.fhir.v1" not in dropped["topics"]
        assert "run_demo20000101000000" in dropped["postgres"] and "run_demo20000101000000" in dropped["gold"]
        topics = admin.list_topics(timeout=10).topics
        assert other in topics and f"{kept}silver.fhir.v1" in topics
        with psycopg.connect(stack.postgres_dsn) as conn:
            left = {n for (n,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'run_demo%'")}
        assert "run_demo20000101000001" in left and "run_demo20000101000000" not in left
    finally:
        for fut in admin.delete_topics([f"{kept}silver.fhir.v1", other]).values():
            fut.result()
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "run_demo20000101000001" WITH (FORCE)')
        gold.command("DROP DATABASE IF EXISTS `run_demo20000101000001`")
