"""The archiver: raw envelopes from bronze.raw.v1 into immutable Bronze segment files.

Streamed messages are not one object each — 847,000 tiny objects a day would make listing and
replay crawl. Each consumed batch becomes one segment per (source, day, partition), named by the
Kafka offsets it covers, with a CSV index beside it (raw id, message id, byte range inside the
segment, SHA-256, Kafka offset, received time). Segment names come from offsets, so a batch
re-read after a crash writes the same object again (idempotent) or, if it is cut differently,
an overlapping segment; readers deduplicate by raw id. Offsets are committed only after the
segment and its index are stored (the runtime's sink contract).

Re-deliveries (an envelope whose raw id Bronze already holds, see ledger.py) are counted in
``carelake_bronze_redeliveries_total`` and not written again. Without Redis the archiver keeps
writing (a re-delivery may then be stored twice; readers deduplicate by raw id) rather than stop
Bronze.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from prometheus_client import Counter

from carelake.bronze.store import BronzeStore
from carelake.errors import TransientError
from carelake.stream.runtime import StreamService
from carelake.stream.types import Record, Write
from carelake_ingest_gateway.ledger import Ledger

log = logging.getLogger("carelake.ingest.archiver")

REDELIVERIES = Counter("carelake_bronze_redeliveries_total",
                       "Messages re-delivered with identical bytes and id: recognised, not stored again", ["source"])
LEDGER_DOWN = Counter("carelake_bronze_ledger_unavailable_total",
                      "Archiver batches written without the re-delivery check (Redis unreachable)")

INDEX_COLUMNS = ("raw_id", "source_message_id", "offset", "length", "sha256", "kafka_partition",
                 "kafka_offset", "received_at", "source_patient_key", "format", "content_type")


def segment_key(source: str, day: datetime, partition: int, first: int, last: int) -> str:
    return f"{source}/{day:%Y/%m/%d}/segments/p{partition:03d}-{first:012d}-{last:012d}.seg"


def streamed(env: dict) -> bool:
    """A streamed message (its bytes only on the topic), not a record of a file stored whole."""
    return env.get("payload") is not None and env["bronze_key"].endswith("/segments/")


def build_segments(records: Sequence[Record]) -> list[tuple[str, bytes, bytes]]:
    """Pure: group envelopes into (segment key, segment bytes, index CSV bytes).

    Envelopes whose bytes already live in Bronze (records of a stored file, whether their payload
    is inline or referenced) are not copied again.
    """
    groups: dict[tuple[str, str, int], list[Record]] = defaultdict(list)
    for r in records:
        env = r.value
        if not streamed(env):
            continue
        when = env["received_at"].astimezone(UTC)
        groups[(env["source"], f"{when:%Y-%m-%d}", r.partition)].append(r)
    out = []
    for (source, day, partition), group in sorted(groups.items()):
        data, index = io.BytesIO(), io.StringIO()
        writer = csv.writer(index)
        writer.writerow(INDEX_COLUMNS)
        for r in group:
            env, payload = r.value, r.value["payload"]
            start = data.tell()
            data.write(payload)
            sha = hashlib.sha256(payload).hexdigest()
            if sha != env["sha256"]:
                raise ValueError(f"envelope {env['id']} payload does not match its sha256")
            writer.writerow((env["id"], env.get("source_message_id") or "", start, len(payload), sha, r.partition,
                             r.offset, env["received_at"].isoformat(), env.get("source_patient_key") or "",
                             env["format"], env.get("content_type") or ""))
        key = segment_key(source, datetime.fromisoformat(day), partition, group[0].offset, group[-1].offset)
        out.append((key, data.getvalue(), index.getvalue().encode()))
    return out


def first_copies(records: Sequence[Record]) -> tuple[list[Record], list[Record]]:
    """Pure: (first copy of each (source, raw id) with an inline payload, every later copy in the batch)."""
    seen: set[tuple[str, str]] = set()
    keep, again = [], []
    for r in records:
        if not streamed(r.value):
            continue  # a record of a stored file: its bytes are in Bronze already
        ident = (r.value["source"], r.value["id"])
        (again if ident in seen else keep).append(r)
        seen.add(ident)
    return keep, again


class SegmentSink:
    """Writes a batch's segments and indexes to the Bronze store; a store failure is retried."""

    def __init__(self, store: BronzeStore, ledger: Ledger | None = None) -> None:
        self.store, self.ledger = store, ledger

    def write(self, items: Sequence[Record]) -> None:
        keep, again = first_copies(items)
        idents = [(r.value["source"], r.value["id"]) for r in keep]
        held = [False] * len(keep)
        if self.ledger is not None:
            try:
                held = self.ledger.stored(idents)
            except Exception:  # noqa: BLE001 - store twice rather than stop Bronze
                LEDGER_DOWN.inc()
                log.warning("re-delivery ledger unavailable; writing the batch without the check")
        for r in again + [r for r, h in zip(keep, held) if h]:
            REDELIVERIES.labels(r.value["source"]).inc()
        fresh = [r for r, h in zip(keep, held) if not h]
        self._write_segments(fresh)
        if self.ledger is not None and fresh:
            try:
                self.ledger.mark([(r.value["source"], r.value["id"]) for r in fresh])
            except Exception:  # noqa: BLE001 - an unmarked message is only stored twice if re-delivered
                LEDGER_DOWN.inc()
                log.warning("could not mark archived messages in the re-delivery ledger")

    def _write_segments(self, records: Sequence[Record]) -> None:
        for key, data, index in build_segments(records):
            try:
                # The segment first, then its index: an index never points at a missing segment.
                self.store.put(key, data, metadata={"kind": "segment", "messages": str(index.count(b"\n") - 1)})
                self.store.put(f"{key}.idx.csv", index, metadata={"kind": "segment-index"})
            except OSError as exc:
                raise TransientError(f"Bronze store write failed for {key}: {exc}") from exc


def archive(batch: Sequence[Record]) -> list[Write]:
    """The archiver's process: every envelope goes to the segment sink."""
    return [Write(r) for r in batch]


def build_archiver(store: BronzeStore, ledger: Ledger | None = None,
                   name: str = "ingest-archiver") -> StreamService:
    return StreamService(name=name, inputs=["bronze.raw.v1"], outputs=[], process=archive,
                         sink=SegmentSink(store, ledger), dlq="dlq.ingest-gateway.v1")
