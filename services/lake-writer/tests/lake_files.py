"""Helpers of the Silver Parquet tests (local and S3): envelopes as the sink's items, batches, a
newer version of a resource, and one scheduled compaction run in a thread."""

from __future__ import annotations

import copy
import json
import threading
import time
from datetime import timedelta

from carelake.stream.types import Record, Write
from carelake_lake_writer.parquet import Compactor, ParquetSink, SilverAtRest
from carelake_lake_writer.service import LakeWriter

TOPIC = "t_x.silver.linked.v1"


def items(envelopes: list[dict], first_offset: int = 0, partition: int = 0) -> list[SilverAtRest]:
    records = [Record.of(e, topic=TOPIC, partition=partition, offset=first_offset + i) for i, e in enumerate(envelopes)]
    return [o.item for o in LakeWriter(at_rest=True)(records) if isinstance(o, Write) and isinstance(o.item, SilverAtRest)]


def write_in_batches(sink: ParquetSink, envelopes: list[dict], size: int) -> None:
    for start in range(0, len(envelopes), size):
        sink.write(items(envelopes[start:start + size], first_offset=start))


def day_of(envelope: dict) -> str:
    return str((envelope["event_time"] or envelope["processed_at"]).date())


def amended(envelope: dict) -> dict:
    """A newer version of the envelope's resource: re-processed a second later, status "amended"."""
    newer = copy.deepcopy(envelope)
    newer["processed_at"] = envelope["processed_at"] + timedelta(seconds=1)
    resource = json.loads(newer["resource"])
    resource["status"] = "amended"
    newer["resource"] = json.dumps(resource)
    return newer


def redelivered_with_an_amendment(sink: ParquetSink, day: list[dict]) -> dict:
    """Write the day in batches, redeliver its first 1,000 cut into other batches (other part names,
    same rows), then a newer version of one Observation; returns that Observation's first version."""
    write_in_batches(sink, day, 400)
    write_in_batches(sink, day[:1000], 250)
    old = next(e for e in day if e["resource_type"] == "Observation")
    sink.write(items([amended(old)], first_offset=len(day) + 1))
    return old


def run_once(compactor: Compactor, timeout_s: float = 30) -> None:
    """Run the scheduled compactor in its thread until it has completed one run, then stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=compactor, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while compactor.runs < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert compactor.runs >= 1, "the compactor never ran"
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
