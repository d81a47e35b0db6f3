"""`carelake replay`: re-publish what Bronze holds for a source and a date range, in arrival order.

Downstream layers are rebuilt from Bronze after a bug fix. Streamed messages come back from the
segment files (overlapping segments after a crash are deduplicated by raw id); every envelope is
marked ``replayed`` and points at its exact Bronze location (segment key and byte range). Batch
files stored whole are re-announced on bronze.files.v1, marked replayed; the gateway's splitter
emits their records again (marked replayed too).
"""

from __future__ import annotations

import csv
import heapq
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from confluent_kafka import Producer

from carelake.bronze.store import BronzeStore, ObjectInfo
from carelake.serde import SchemaRegistry
from carelake.topics import Catalog
from carelake_ingest_gateway.filesplit import FileTaker
from carelake_ingest_gateway.intake import RAW_TOPIC


@dataclass(frozen=True)
class ReplayResult:
    envelopes: int
    duplicates_skipped: int
    segments: int
    files: int = 0


def _days(since: date, until: date) -> Iterator[date]:
    day = since
    while day <= until:
        yield day
        day += timedelta(days=1)


def _segment_envelopes(store: BronzeStore, index_key: str, rows: list[dict[str, str]]) -> Iterator[dict]:
    """The envelopes of one segment, rebuilt from its index rows and bytes, in segment order."""
    segment_key = index_key.removesuffix(".idx.csv")
    data = store.get(segment_key)
    for row in rows:
        start, length = int(row["offset"]), int(row["length"])
        yield {
            "id": row["raw_id"], "source": segment_key.split("/", 1)[0], "format": row["format"],
            "content_type": row["content_type"] or None, "received_at": datetime.fromisoformat(row["received_at"]),
            "bronze_key": segment_key, "sha256": row["sha256"], "byte_offset": start, "byte_length": length,
            "payload": data[start:start + length], "source_message_id": row["source_message_id"] or None,
            "source_patient_key": row["source_patient_key"] or None, "replayed": True,
            "headers": {"transport": "replay"},
        }


def bronze_envelopes(store: BronzeStore, source: str, since: date,
                     until: date | None = None) -> tuple[dict[str, list[dict[str, str]]], Iterator[dict]]:
    """(each segment index's rows, read once; envelopes merged across segments in arrival order, deduplicated)."""
    indexes = {info.key: list(csv.DictReader(io.StringIO(store.get(info.key).decode())))
               for day in _days(since, until or since)
               for info in store.list(f"{source}/{day:%Y/%m/%d}/segments/") if info.key.endswith(".idx.csv")}
    merged = heapq.merge(*(_segment_envelopes(store, k, rows) for k, rows in indexes.items()),
                         key=lambda e: e["received_at"])

    def dedup() -> Iterator[dict]:
        seen: set[str] = set()
        for env in merged:
            if env["id"] not in seen:
                seen.add(env["id"])
                yield env

    return indexes, dedup()


def replay(store: BronzeStore, bootstrap: str, catalog: Catalog, source: str, since: date,
           until: date | None = None, progress: bool = True) -> ReplayResult:
    """Re-publish a source's Bronze messages for [since, until] to bronze.raw.v1, marked replayed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    schema = SchemaRegistry.load().get(catalog.get(RAW_TOPIC).value_schema)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 20, "compression.type": "lz4"})
    indexes, envelopes = bronze_envelopes(store, source, since, until)
    total = sum(len(rows) for rows in indexes.values())
    topic, sent = catalog.physical(RAW_TOPIC), 0
    with Progress(TextColumn("replay {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not progress) as bar:
        task = bar.add_task(source, total=total)
        for env in envelopes:
            key = (env["source_patient_key"] or f"{source}|{env['source_message_id'] or env['id']}").encode()
            while True:
                try:
                    producer.produce(topic, value=schema.encode(env), key=key)
                    break
                except BufferError:
                    producer.poll(0.05)
            sent += 1
            bar.advance(task)
    if producer.flush(60):
        raise RuntimeError("replay: the broker did not acknowledge every envelope")
    return ReplayResult(envelopes=sent, duplicates_skipped=total - sent, segments=len(indexes))


def stored_files(store: BronzeStore, source: str, since: date, until: date | None = None) -> list[ObjectInfo]:
    """The batch files stored whole for ``source`` on [since, until], oldest first."""
    found = [info for day in _days(since, until or since) for info in store.list(f"{source}/{day:%Y/%m/%d}/files/")]
    return sorted(found, key=lambda info: (info.created, info.key))


def replay_files(store: BronzeStore, taker: FileTaker, source: str, since: date, until: date | None = None,
                 progress: bool = True) -> int:
    """Re-announce the source's stored files on bronze.files.v1, marked replayed; returns how many."""
    from rich.progress import track

    infos = stored_files(store, source, since, until)
    for info in track(infos, description=f"replay {source} files", disable=not progress or not infos):
        meta = info.metadata
        taker.board.clear(f"{info.key}#replay")  # a new replay starts from the first record
        taker.announce(source, info.key, info.sha256, info.size, meta.get("format", "?"),
                       meta.get("content_type"), info.created, {"file_name": meta.get("file_name", ""),
                                                                "transport": "replay"}, replayed=True)
    return len(infos)


def archived_digests(store: BronzeStore, source: str, since: date, until: date | None = None) -> set[str]:
    """SHA-256 of every message the segments hold for ``source`` on [since, until] (an audit's view)."""
    indexes, _ = bronze_envelopes(store, source, since, until)
    return {row["sha256"] for rows in indexes.values() for row in rows}
