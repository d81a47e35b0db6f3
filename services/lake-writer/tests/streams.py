"""Test plumbing for the lake-writer on the real broker: produce Avro inputs, run the service in a thread."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, Producer, TopicPartition

from carelake.config import Settings
from carelake.serde import SchemaRegistry
from carelake.stream.runtime import Runner, RunnerConfig
from carelake.topics import Catalog
from carelake_lake_writer.service import INPUTS, build

SCHEMAS = {"silver.linked.v1": "fhir_envelope", "mpi.links.v1": "mpi_link_event", "bronze.raw.v1": "raw_envelope",
           "dlq.normalizer.v1": "dlq_record", "dlq.ingest-gateway.v1": "dlq_record", "dlq.dedup-mpi.v1": "dlq_record"}
TOPICS = (*INPUTS, "dlq.lake-writer.v1")


def produce(bootstrap: str, catalog: Catalog, topic: str, values: Iterable[dict],
            key: Callable[[dict], str | None]) -> int:
    schema = SchemaRegistry.load().get(SCHEMAS[topic])
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 10})
    n = 0
    for value in values:
        k = key(value)
        producer.produce(catalog.physical(topic), value=schema.encode(value), key=k.encode() if k else None)
        n += 1
        if n % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    return n


def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(max(tp.offset, 0) for tp in consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10))
    finally:
        consumer.close()


class Running:
    """The lake-writer (under the test's own consumer group) running in a thread until ``stop``."""

    def __init__(self, settings: Settings, catalog: Catalog, group: str, batch_size: int = 500,
                 max_backoff_s: float = 30.0) -> None:
        service = dataclasses.replace(build(settings), name=group, dlq="dlq.lake-writer.v1")
        self.runner = Runner(service, catalog, RunnerConfig(bootstrap=settings.bootstrap, batch_size=batch_size,
                                                            max_retry_backoff_s=max_backoff_s))
        self.thread = threading.Thread(target=self.runner.run, daemon=True, name=f"lake-writer-{group}")
        self.thread.start()

    def wait_committed(self, n: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while self.runner.committed_messages < n and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.05)
        assert self.runner.committed_messages >= n, (
            f"committed {self.runner.committed_messages} of {n} (thread alive: {self.thread.is_alive()})")

    def stop(self) -> None:
        self.runner.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the lake-writer did not stop on request"
