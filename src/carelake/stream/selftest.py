"""A relay through the real runtime on the real broker, shared by the runtime bench and its tests.

It fills a uuid-prefixed copy of ``bronze.raw.v1`` with synthetic envelopes (no PHI: the payload
is filler bytes) plus some corrupt messages, relays them unchanged to a scratch topic through the
full runtime (consume → decode → process → encode → produce → commit), and reports what came out.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from carelake.serde import SchemaRegistry
from carelake.stream.admin import create_topics
from carelake.stream.runtime import Runner, RunnerConfig, StreamService
from carelake.stream.types import Emit, Record
from carelake.topics import Catalog, load_catalog, scratch_prefix

RELAY_TOPIC = "selftest.relay.v1"
DLQ_TOPIC = "dlq.selftest.v1"
INPUT_TOPIC = "bronze.raw.v1"


def envelope(i: int, payload_size: int = 1024) -> dict:
    """A synthetic raw envelope carrying ``payload_size`` filler bytes."""
    payload = (f"MSH|^~\\&|SELFTEST|{i}|".encode() * (payload_size // 20 + 1))[:payload_size]
    return {
        "id": f"selftest-{i}", "source": "selftest", "format": "hl7v2", "content_type": None,
        "received_at": datetime.now(UTC), "bronze_key": f"bronze/selftest/{i // 1000}.seg",
        "sha256": hashlib.sha256(payload).hexdigest(), "byte_offset": 0, "byte_length": len(payload),
        "payload": payload, "source_message_id": str(i), "source_patient_key": f"selftest|{i % 997}",
        "replayed": False, "headers": {},
    }


def relay(batch: Sequence[Record]) -> list[Emit]:
    """The no-op process: re-emit every envelope unchanged, keyed as it came."""
    return [Emit(RELAY_TOPIC, r.value, r.key) for r in batch]


@dataclass(frozen=True)
class RelayResult:
    sent: int
    corrupt: int
    relayed: int
    dead_lettered: int
    seconds: float
    dlq_reasons: dict[str, int] = field(default_factory=dict)  # "stage/reason_code: reason" -> count

    @property
    def rate(self) -> float:
        return (self.sent + self.corrupt) / self.seconds if self.seconds else 0.0


def prepare(bootstrap: str, catalog_path: os.PathLike, prefix: str | None = None) -> Catalog:
    """A uuid-prefixed catalog with the relay's input, output and DLQ topics created."""
    catalog = load_catalog(catalog_path, prefix or scratch_prefix())
    create_topics(catalog, bootstrap, [catalog.get(t) for t in (INPUT_TOPIC, RELAY_TOPIC, DLQ_TOPIC)])
    return catalog


def fill(bootstrap: str, topic: str, n: int, corrupt: int = 0, payload_size: int = 1024,
         progress: Callable[[int], None] = lambda k: None) -> None:
    """Produce ``n`` encoded envelopes and ``corrupt`` undecodable messages, spread through the stream."""
    schema = SchemaRegistry.load().get("raw_envelope")
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 20, "compression.type": "lz4", "batch.size": 1_000_000})
    bad_every = n // corrupt if corrupt else 0
    for i in range(n):
        value = schema.encode(envelope(i, payload_size))
        if bad_every and i % bad_every == 0 and i // bad_every < corrupt:
            _produce(producer, topic, b"\xc3\x01not-avro-at-all", f"selftest|bad{i}".encode())
        _produce(producer, topic, value, f"selftest|{i % 997}".encode())
        if i % 10_000 == 0:
            progress(i)
    producer.flush(60)
    progress(n)


def _produce(producer: Producer, topic: str, value: bytes, key: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key)
            return
        except BufferError:
            producer.poll(0.05)


def run_relay(bootstrap: str, catalog: Catalog, expected: int, batch_size: int = 1000,
              timeout_s: float = 300.0, group: str | None = None) -> tuple[Runner, float]:
    """Run the relay until ``expected`` messages are committed; returns the runner and seconds taken."""
    service = StreamService(name=group or f"{catalog.prefix}selftest", inputs=[INPUT_TOPIC],
                            outputs=[RELAY_TOPIC], process=relay, dlq=DLQ_TOPIC)
    runner = Runner(service, catalog, RunnerConfig(bootstrap=bootstrap, batch_size=batch_size))
    thread = threading.Thread(target=runner.run, name="relay", daemon=True)
    started = time.perf_counter()
    thread.start()
    deadline = time.monotonic() + timeout_s
    while runner.committed_messages < expected and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    runner.stop()
    thread.join(60)
    return runner, elapsed


def count(bootstrap: str, topic: str) -> int:
    """Messages in a topic: the sum of its partitions' high watermarks (fresh topics start at 0)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "carelake-counter"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in meta.partitions)
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[Message]:
    """Up to ``expected`` messages of a topic, read from the beginning under a throwaway group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"carelake-reader-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            out += [m for m in consumer.consume(1000, 0.5) if not m.error()]
    finally:
        consumer.close()
    return out


def dlq_reasons(bootstrap: str, topic: str, expected: int) -> dict[str, int]:
    """What the DLQ says, grouped: "stage/reason_code: reason" -> count."""
    registry = SchemaRegistry.load()
    records = [registry.decode(m.value())[1] for m in read_topic(bootstrap, topic, expected)]
    return dict(Counter(f"{r['stage']}/{r['reason_code']}: {r['reason']}" for r in records))


def drop(bootstrap: str, catalog: Catalog) -> None:
    """Delete every topic under the catalog's prefix."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if catalog.prefix and t.startswith(catalog.prefix)]
    if names:
        for fut in admin.delete_topics(names, operation_timeout=30).values():
            fut.result()


def relay_once(bootstrap: str, catalog_path: os.PathLike, n: int, corrupt: int = 0,
               payload_size: int = 1024, batch_size: int = 1000, keep: bool = False) -> RelayResult:
    """Fill, relay and count once, on fresh uuid-named topics that are dropped afterwards."""
    catalog = prepare(bootstrap, catalog_path)
    try:
        fill(bootstrap, catalog.physical(INPUT_TOPIC), n, corrupt, payload_size)
        runner, seconds = run_relay(bootstrap, catalog, n + corrupt, batch_size)
        dead = count(bootstrap, catalog.physical(DLQ_TOPIC))
        return RelayResult(sent=n, corrupt=corrupt, relayed=count(bootstrap, catalog.physical(RELAY_TOPIC)),
                           dead_lettered=dead, seconds=seconds,
                           dlq_reasons=dlq_reasons(bootstrap, catalog.physical(DLQ_TOPIC), dead))
    finally:
        if not keep:
            drop(bootstrap, catalog)
