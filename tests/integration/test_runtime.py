"""The stream runtime on the real broker: delivery, DLQ routing, faults, shutdown, metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from carelake.config import Settings, repo_root
from carelake.errors import ProcessingError, TransientError
from carelake.serde import SchemaRegistry
from carelake.stack.parts import free_port
from carelake.stream.runtime import Runner, RunnerConfig, StreamService
from carelake.stream.selftest import (
    DLQ_TOPIC,
    INPUT_TOPIC,
    RELAY_TOPIC,
    count,
    fill,
    read_topic,
    relay,
    run_relay,
)
from carelake.stream.types import Emit, Record, Reject
from carelake.topics import Catalog

pytestmark = pytest.mark.integration


def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(max(tp.offset, 0) for tp in
                   consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10))
    finally:
        consumer.close()


def run_service(stack: Settings, catalog: Catalog, process, name: str, expected: int,
                timeout_s: float = 60) -> Runner:
    service = StreamService(name=name, inputs=[INPUT_TOPIC], outputs=[RELAY_TOPIC], process=process,
                            dlq=DLQ_TOPIC)
    runner = Runner(service, catalog, RunnerConfig(bootstrap=stack.bootstrap, batch_size=200))
    import threading

    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while runner.committed_messages < expected and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    runner.stop()
    thread.join(30)
    assert not thread.is_alive(), "runner did not stop on request"
    return runner


def test_relay_delivers_every_message_and_dead_letters_corrupt_ones(stack: Settings, catalog: Catalog,
                                                                     unique: str) -> None:
    from carelake.stream.admin import create_topics

    create_topics(catalog, stack.bootstrap)
    fill(stack.bootstrap, catalog.physical(INPUT_TOPIC), 2000, corrupt=4)
    runner, _ = run_relay(stack.bootstrap, catalog, 2004, batch_size=300, group=unique, timeout_s=120)
    assert runner.committed_messages == 2004
    assert count(stack.bootstrap, catalog.physical(RELAY_TOPIC)) == 2000
    assert committed(stack.bootstrap, unique, catalog.physical(INPUT_TOPIC)) == 2004

    dlq = read_topic(stack.bootstrap, catalog.physical(DLQ_TOPIC), 4)
    registry = SchemaRegistry.load()
    records = [registry.decode(m.value())[1] for m in dlq]
    assert len(records) == 4
    for rec in records:
        assert rec["stage"] == "decode"
        assert rec["reason_code"] == "unknown_schema"  # C3 01 marker, then a fingerprint nobody knows
        assert rec["service"] == unique
        assert rec["payload"] == b"\xc3\x01not-avro-at-all"  # original bytes kept: replayable
        assert rec["reason"]
        assert rec["source_topic"] == catalog.physical(INPUT_TOPIC)


def test_one_poison_record_is_isolated_and_the_rest_flow(stack: Settings, catalog: Catalog,
                                                         unique: str) -> None:
    from carelake.stream.admin import create_topics

    create_topics(catalog, stack.bootstrap)
    fill(stack.bootstrap, catalog.physical(INPUT_TOPIC), 500)

    def process(batch: Sequence[Record]) -> list:
        out: list = []
        for r in batch:
            if r.value["id"] == "selftest-123":
                raise ValueError("boom on 123")  # an unexpected bug triggered by one record
            if r.value["id"] == "selftest-7":
                out.append(Reject(r, "DOB missing", code="missing_dob"))
                continue
            if r.value["id"] == "selftest-9":
                raise ProcessingError("unsupported HL7 version 2.1", code="unsupported_version")
            out.append(Emit(RELAY_TOPIC, r.value, r.key))
        return out

    run_service(stack, catalog, process, unique, 500)
    assert count(stack.bootstrap, catalog.physical(RELAY_TOPIC)) == 497
    registry = SchemaRegistry.load()
    dlq = {registry.decode(m.value())[1]["reason_code"]: registry.decode(m.value())[1]
           for m in read_topic(stack.bootstrap, catalog.physical(DLQ_TOPIC), 3)}
    assert set(dlq) == {"ValueError", "missing_dob", "unsupported_version"}
    assert "boom on 123" in dlq["ValueError"]["reason"]
    assert dlq["missing_dob"]["reason"] == "DOB missing"
    assert registry.get("raw_envelope").decode(dlq["missing_dob"]["payload"])["id"] == "selftest-7"


def test_transient_failure_is_retried_not_dead_lettered(stack: Settings, catalog: Catalog,
                                                        unique: str) -> None:
    from carelake.stream.admin import create_topics

    create_topics(catalog, stack.bootstrap)
    fill(stack.bootstrap, catalog.physical(INPUT_TOPIC), 50)
    failures = {"left": 3}

    def process(batch: Sequence[Record]) -> list:
        if failures["left"]:
            failures["left"] -= 1
            raise TransientError("store unavailable")
        return relay(batch)

    run_service(stack, catalog, process, unique, 50)
    assert failures["left"] == 0
    assert count(stack.bootstrap, catalog.physical(RELAY_TOPIC)) == 50
    assert count(stack.bootstrap, catalog.physical(DLQ_TOPIC)) == 0


def _start_killable(stack: Settings, catalog: Catalog, group: str, table: str, port: int,
                    log: Path) -> subprocess.Popen:
    env = {**os.environ, "CARELAKE_TOPIC_PREFIX": catalog.prefix, "CARELAKE_BATCH_SIZE": "100",
           "CARELAKE_METRICS_PORT": str(port), "SELFTEST_GROUP": group, "SELFTEST_TABLE": table,
           "SELFTEST_SINK_DELAY_S": "0.05", "PYTHONPATH": str(repo_root()),
           # static membership: the restarted process takes the killed one's partitions at once
           "CARELAKE_INSTANCE_ID": f"{group}-0"}
    return subprocess.Popen(
        [sys.executable, "-m", "carelake.cli", "run", "tests.integration.killable_service:build"],
        env=env, cwd=repo_root(), stdout=open(log, "ab"), stderr=subprocess.STDOUT,
    )


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_mid_batch_loses_nothing_and_the_sink_duplicates_nothing(
        stack: Settings, catalog: Catalog, unique: str, tmp_path: Path) -> None:
    from carelake.stream.admin import create_topics

    n = 3000
    create_topics(catalog, stack.bootstrap)
    fill(stack.bootstrap, catalog.physical(INPUT_TOPIC), n)
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {unique} (id text PRIMARY KEY, writes int NOT NULL DEFAULT 1)")
        rows = lambda: conn.execute(f"SELECT count(*) FROM {unique}").fetchone()[0]  # noqa: E731
        log = tmp_path / "service.log"
        proc = _start_killable(stack, catalog, unique, unique, free_port(), log)
        try:
            _wait(lambda: rows() >= 600, 90, f"the service to write 600 rows (log: {log.read_text()[-2000:]})")
            proc.send_signal(signal.SIGKILL)  # mid-stream: some batch is written but not committed
            proc.wait(10)
            at_kill = rows()
            assert at_kill < n, "the service finished before it could be killed; slow it down"
            proc = _start_killable(stack, catalog, unique, unique, free_port(), log)
            _wait(lambda: committed(stack.bootstrap, unique, catalog.physical(INPUT_TOPIC)) == n, 120,
                  f"the restarted service to commit all {n} (log: {log.read_text()[-2000:]})")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        # Nothing lost: every input id reached the sink exactly once as a row.
        assert rows() == n
        ids = {r[0] for r in conn.execute(f"SELECT id FROM {unique}")}
        assert ids == {f"selftest-{i}" for i in range(n)}
        # At-least-once: the replayed batch was written twice, absorbed by the upsert.
        rewrites = conn.execute(f"SELECT coalesce(sum(writes - 1), 0) FROM {unique}").fetchone()[0]
        conn.execute(f"DROP TABLE {unique}")
    total = count(stack.bootstrap, catalog.physical(RELAY_TOPIC))
    relayed = read_topic(stack.bootstrap, catalog.physical(RELAY_TOPIC), total)
    assert len(relayed) == total >= n + rewrites
    assert {SchemaRegistry.load().decode(m.value())[1]["id"] for m in relayed} == {f"selftest-{i}" for i in range(n)}


def test_sigterm_finishes_the_batch_commits_and_exits_cleanly_with_metrics_and_health(
        stack: Settings, catalog: Catalog, unique: str, tmp_path: Path) -> None:
    from carelake.stream.admin import create_topics

    n = 400
    create_topics(catalog, stack.bootstrap)
    fill(stack.bootstrap, catalog.physical(INPUT_TOPIC), n, corrupt=2)
    port = free_port()
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {unique} (id text PRIMARY KEY, writes int NOT NULL DEFAULT 1)")
        proc = _start_killable(stack, catalog, unique, unique, port, tmp_path / "s.log")
        try:
            _wait(lambda: committed(stack.bootstrap, unique, catalog.physical(INPUT_TOPIC)) == n + 2, 90,
                  "all messages committed")
            health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read())
            assert health["status"] == "ok" and health["service"] == unique
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            assert f'carelake_consumed_total{{service="{unique}",topic="{catalog.physical(INPUT_TOPIC)}"}} {n + 2}.0' in metrics
            assert f'carelake_dlq_total{{reason_code="unknown_schema",service="{unique}",stage="decode"}} 2.0' in metrics
            assert "carelake_batch_seconds_bucket" in metrics
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        conn.execute(f"DROP TABLE {unique}")
    lines = [json.loads(line) for line in (tmp_path / "s.log").read_text().splitlines() if line.startswith("{")]
    assert any(line.get("message") == "stopped" for line in lines), "no graceful stop logged"
    assert all({"ts", "level", "message"} <= set(line) for line in lines)


def test_service_refuses_to_start_when_its_topics_are_missing(stack: Settings, catalog: Catalog,
                                                              unique: str, tmp_path: Path) -> None:
    env = {**os.environ, "CARELAKE_TOPIC_PREFIX": catalog.prefix, "SELFTEST_GROUP": unique,
           "SELFTEST_TABLE": unique, "PYTHONPATH": str(repo_root())}
    run = subprocess.run(
        [sys.executable, "-m", "carelake.cli", "run", "tests.integration.killable_service:build"],
        env=env, cwd=repo_root(), capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 1
    assert "missing topic(s)" in run.stderr and catalog.physical(INPUT_TOPIC) in run.stderr
    assert "carelake topics create" in run.stderr
