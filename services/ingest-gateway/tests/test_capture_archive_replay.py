"""Kafka capture -> raw envelopes -> archiver segments in Bronze -> replay, on the real broker."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer

from carelake.bronze.store import open_store
from carelake.config import Settings
from carelake.serde import SchemaRegistry
from carelake.stream.admin import create_topics
from carelake.stream.runtime import Runner, RunnerConfig
from carelake.stream.selftest import count, read_topic
from carelake.topics import Catalog
from carelake_ingest_gateway.archiver import build_archiver, build_segments
from carelake_ingest_gateway.capture import build_capture
from carelake_ingest_gateway.replay import bronze_envelopes, replay
from carelake_simulator.simulate import SimConfig, simulate

pytestmark = pytest.mark.integration


def _run_until(runner: Runner, expected: int, timeout_s: float = 60) -> None:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while runner.committed_messages < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.stop()
    thread.join(30)
    assert runner.committed_messages >= expected, f"only {runner.committed_messages} of {expected} committed"


def test_captured_messages_land_in_bronze_segments_and_replay(stack: Settings, catalog: Catalog, unique: str,
                                                              tmp_path: Path) -> None:
    create_topics(catalog, stack.bootstrap)
    sim = simulate(SimConfig(patients=120, seed=9))
    wanted = [r for r in sim.records if r.source in ("lab", "ehr", "wearables")][:1500]
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    for r in wanted:
        producer.produce(catalog.physical(f"source.{r.source}.v1"), value=r.payload, key=r.key.encode(),
                         headers={"content_type": r.content_type})
    producer.flush(30)

    capture = Runner(build_capture(catalog, name=f"{unique}-capture"), catalog,
                     RunnerConfig(bootstrap=stack.bootstrap, batch_size=500))
    _run_until(capture, len(wanted))
    malformed = [r for r in wanted if any(d.startswith("malformed") for d in r.defects)]
    raw_topic = catalog.physical("bronze.raw.v1")
    assert count(stack.bootstrap, raw_topic) + count(stack.bootstrap, catalog.physical("dlq.ingest-gateway.v1")) \
        == len(wanted)
    assert count(stack.bootstrap, raw_topic) >= len(wanted) - len(malformed)

    store = open_store(Settings(home=tmp_path, bronze_dir=tmp_path / "bronze"))
    accepted = count(stack.bootstrap, raw_topic)
    archiver = Runner(build_archiver(store, name=f"{unique}-archiver"), catalog,
                      RunnerConfig(bootstrap=stack.bootstrap, batch_size=400))
    _run_until(archiver, accepted)

    # Every accepted message's bytes are in a segment, unchanged, found through the index.
    originals = {r.payload for r in wanted}
    today = datetime.now(UTC).date()
    found: Counter[str] = Counter()
    for source in ("lab", "ehr", "wearables"):
        indexes, envs = bronze_envelopes(store, source, today)
        for env in envs:
            assert env["payload"] in originals
            assert store.get(env["bronze_key"], env["byte_offset"], env["byte_offset"] + env["byte_length"]) \
                == env["payload"]
            found[source] += 1
    assert sum(found.values()) == accepted

    # Replay re-publishes them, marked as replayed.
    result = replay(store, stack.bootstrap, catalog, "lab", today, progress=False)
    assert result.envelopes == found["lab"] > 0
    registry = SchemaRegistry.load()
    replayed = [registry.decode(m.value())[1] for m in read_topic(stack.bootstrap, raw_topic, accepted + found["lab"])]
    assert sum(1 for e in replayed if e["replayed"]) == found["lab"]


def test_segments_are_named_by_offsets_and_skip_file_records() -> None:
    from carelake.stream.types import Record

    now = datetime(2026, 1, 15, 12, tzinfo=UTC)

    def env(i: int, payload: bytes | None) -> dict:
        import hashlib

        return {"id": f"r{i}", "source": "lab", "format": "hl7v2", "content_type": None, "received_at": now,
                "bronze_key": "lab/2026/01/15/segments/", "sha256": hashlib.sha256(payload or b"").hexdigest(),
                "byte_offset": 0, "byte_length": len(payload or b""), "payload": payload,
                "source_message_id": f"M{i}", "source_patient_key": "lab|L1", "replayed": False, "headers": {}}

    records = [Record(env(i, b"MSH|%d" % i), partition=2, offset=100 + i) for i in range(3)]
    records.append(Record(env(9, None), partition=2, offset=103))  # a file record: bytes already in Bronze
    inline = env(10, b"RX1,P1")  # a small file record travels inline, but its file is in Bronze too
    inline["bronze_key"] = "pharmacy/2026/01/15/files/abc-rx.csv"
    records.append(Record(inline, partition=2, offset=104))
    [(key, data, index)] = build_segments(records)
    assert key == "lab/2026/01/15/segments/p002-000000000100-000000000102.seg"
    assert data == b"MSH|0MSH|1MSH|2"
    assert index.decode().count("\n") == 4  # header + three rows
