"""Capture: systems that already produce to Kafka (``source.<source>.v1``) get their bytes into Bronze.

A pure process over the runtime: each captured message becomes a raw envelope on bronze.raw.v1
(payload inline, exactly the bytes the system wrote); the archiver then writes it to a segment.
A message the gateway cannot accept goes to dlq.ingest-gateway.v1 with its reason and its
original bytes, so it can be inspected and replayed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from carelake.stream.runtime import StreamService
from carelake.stream.types import Emit, Record, Reject
from carelake.topics import Catalog
from carelake_ingest_gateway.intake import RAW_TOPIC, SOURCES, envelope
from carelake_ingest_gateway.sniff import sniff

CAPTURED = tuple(f"source.{s}.v1" for s in SOURCES)
MAX_MESSAGE = 900 * 1024  # what fits a default Kafka message with its envelope


def capture_one(source: str, record: Record) -> Emit | Reject:
    """One captured message -> its raw envelope (pure)."""
    payload = record.value or b""
    headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
    if not payload.strip():
        return Reject(record, "empty message", code="empty")
    if len(payload) > MAX_MESSAGE:
        return Reject(record, f"message of {len(payload)} bytes exceeds {MAX_MESSAGE}", code="too_large")
    sniffed = sniff(source, payload, headers.get("content_type"))
    if sniffed.problem:
        return Reject(record, sniffed.problem, code=f"bad_{sniffed.format}")
    received = datetime.fromtimestamp(record.timestamp_ms / 1000, UTC) if record.timestamp_ms > 0 else datetime.now(UTC)
    env = envelope(source, payload, sniffed, hashlib.sha256(payload).hexdigest(), received,
                   content_type=headers.get("content_type"), transport="kafka", inline_limit=MAX_MESSAGE,
                   headers={"kafka_topic": record.topic, "kafka_offset": str(record.offset)})
    return Emit(RAW_TOPIC, env, sniffed.patient_key or record.key)


def build_capture(catalog: Catalog, name: str = "ingest-capture") -> StreamService:
    source_of = {catalog.physical(t): t.split(".")[1] for t in CAPTURED}

    def process(batch: Sequence[Record]) -> list[Emit | Reject]:
        return [capture_one(source_of[r.topic], r) for r in batch]

    return StreamService(name=name, inputs=list(CAPTURED), outputs=[RAW_TOPIC], process=process,
                         dlq="dlq.ingest-gateway.v1")
