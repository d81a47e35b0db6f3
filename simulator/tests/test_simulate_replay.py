"""`carelake simulate replay --to kafka` from a written day, on the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from carelake.config import Settings
from carelake.stream.admin import create_topics
from carelake.stream.selftest import count, read_topic
from carelake.topics import Catalog
from carelake_simulator import store
from carelake_simulator.simulate import SimConfig, run

pytestmark = pytest.mark.integration


def test_a_written_day_replays_to_the_source_topics(stack: Settings, catalog: Catalog, tmp_path: Path) -> None:
    manifest, _ = run(SimConfig(patients=150, seed=3), tmp_path / "day")
    create_topics(catalog, stack.bootstrap)
    env = {**os.environ, "CARELAKE_TOPIC_PREFIX": catalog.prefix}
    done = subprocess.run([sys.executable, "-m", "carelake.cli", "simulate", "replay", "--from",
                           str(tmp_path / "day"), "--to", "kafka", "--rate", "20000/s"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for source, n in manifest["messages_by_source"].items():
        assert count(stack.bootstrap, catalog.physical(f"source.{source}.v1")) == n, source
    assert "skipped_file" in done.stdout  # batch files go over HTTP or a drop folder, not Kafka
    # Bytes arrive exactly as written on disk.
    on_disk = {r.message_id: r.payload for r in store.iter_records(tmp_path / "day", "lab")}
    got = read_topic(stack.bootstrap, catalog.physical("source.lab.v1"), len(on_disk))
    assert {dict(m.headers())["message_id"].decode(): m.value() for m in got} == on_disk
