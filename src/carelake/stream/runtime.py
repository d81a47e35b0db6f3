"""The consume → decode → process → encode → produce → sink → commit loop every service runs.

Delivery is at-least-once: offsets are committed only after every output of the batch is
acknowledged by the broker (acks=all, idempotent producer) and the sink has written. A crash at
any point replays the uncommitted batch, which idempotent sinks absorb. Bad input never stops the
loop: a message that cannot be decoded, processed or encoded goes to the service's DLQ with the
reason and its original bytes. See docs/decisions/0002-stream-runtime.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from carelake.errors import CarelakeError, EncodeError, ProcessingError, SerdeError, TransientError
from carelake.serde import SchemaRegistry
from carelake.stream import metrics as m
from carelake.stream.types import Emit, Output, ProcessFn, Record, Reject, Sink, Write
from carelake.topics import Catalog, source_of_topic

log = logging.getLogger("carelake.stream")
T = TypeVar("T")


@dataclass
class StreamService:
    """What a service hands the runtime: its name, topics, pure process function and optional sink."""

    name: str
    inputs: Sequence[str]
    process: ProcessFn
    outputs: Sequence[str] = ()
    sink: Sink | None = None
    dlq: str | None = None  # default dlq.<name>.v1
    # Tasks beside the loop (e.g. the lake-writer's scheduled compaction): each runs in a daemon
    # thread from the start of ``Runner.run`` and is handed an Event set when the loop ends.
    background: Sequence[Callable[[threading.Event], None]] = ()

    @property
    def dlq_topic(self) -> str:
        return self.dlq or f"dlq.{self.name}.v1"


@dataclass
class RunnerConfig:
    bootstrap: str
    batch_size: int = 500
    poll_timeout_s: float = 0.5
    max_retry_backoff_s: float = 30.0
    consumer: dict[str, Any] = field(default_factory=dict)  # librdkafka overrides
    producer: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Prepared:
    """A batch's encoded outputs, ready to produce, plus the items for the sink."""

    messages: list[tuple[str, bytes | None, bytes | None, dict[str, bytes] | None]] = field(default_factory=list)
    writes: list[Any] = field(default_factory=list)
    rejected: int = 0


class Runner:
    """Runs one StreamService against Kafka until stopped (SIGTERM/SIGINT or ``stop()``)."""

    def __init__(self, service: StreamService, catalog: Catalog, config: RunnerConfig,
                 registry: SchemaRegistry | None = None) -> None:
        self.service, self.catalog, self.config = service, catalog, config
        self.registry = registry or SchemaRegistry.load()
        self._stop = threading.Event()
        self._last_loop = time.monotonic()
        self._retrying = False
        self._assigned: set[tuple[str, int]] = set()
        self._lag_at = 0.0
        self._delivery_errors: list[KafkaError] = []
        self.committed_messages = 0  # messages whose batch is fully delivered and committed
        # Resolve topics once: logical name -> (physical name, schema or None for external bytes).
        self._in = {catalog.physical(t): self._schema_of(t) for t in service.inputs}
        self._out = {t: (catalog.physical(t), self._schema_of(t)) for t in [*service.outputs, service.dlq_topic]}
        self._dlq_schema = self.registry.get("dlq_record")
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    def _schema_of(self, topic: str):  # noqa: ANN202 - AvroSchema | None
        spec = self.catalog.get(topic)
        return self.registry.get(spec.value_schema) if spec.is_avro else None

    # ---- lifecycle -------------------------------------------------------------------------

    def stop(self, *_: object) -> None:
        """Ask the loop to finish its batch, commit and close."""
        self._stop.set()

    def health(self) -> tuple[bool, dict]:
        stale = time.monotonic() - self._last_loop
        ok = stale < 60 and not self._retrying
        return ok, {"service": self.service.name, "assigned_partitions": len(self._assigned),
                    "seconds_since_loop": round(stale, 1), "retrying": self._retrying}

    def run(self) -> None:
        cfg = self.config
        self._producer = Producer({
            "bootstrap.servers": cfg.bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "compression.type": "lz4", "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000, **cfg.producer,
        })
        self._consumer = Consumer({
            "bootstrap.servers": cfg.bootstrap, "group.id": self.service.name,
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest", "partition.assignment.strategy": "cooperative-sticky",
            "fetch.wait.max.ms": 100, **cfg.consumer,
        })
        self._consumer.subscribe(list(self._in), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)
        log.info("started", extra={"inputs": list(self._in), "group": self.service.name})
        ended = threading.Event()
        tasks = [threading.Thread(target=task, args=(ended,), name=f"{self.service.name}-background-{i}", daemon=True)
                 for i, task in enumerate(self.service.background)]
        for thread in tasks:
            thread.start()
        try:
            while not self._stop.is_set():
                self._last_loop = time.monotonic()
                msgs = self._consumer.consume(cfg.batch_size, cfg.poll_timeout_s)
                if msgs:
                    self._handle(msgs)
                self._update_lag()
        except TransientError:
            if not self._stop.is_set():
                raise
            # Asked to stop while a dependency was down: the batch stays uncommitted and is
            # redelivered to whoever owns the partition next.
            log.warning("stopped while retrying; batch left uncommitted")
        finally:
            ended.set()
            for thread in tasks:
                thread.join(30)
            # Graceful: the last batch was committed inside _handle; flush stragglers, leave the group.
            self._producer.flush(30)
            self._consumer.close()
            log.info("stopped")

    # Each batch is committed before the next poll, so a revoke never strands processed work.
    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        self._assigned |= {(p.topic, p.partition) for p in parts}
        log.info("assigned", extra={"partitions": [f"{p.topic}[{p.partition}]" for p in parts]})

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        self._assigned -= {(p.topic, p.partition) for p in parts}
        for p in parts:
            try:
                m.LAG.remove(self.service.name, p.topic, str(p.partition))
            except KeyError:  # never measured
                pass
        log.info("revoked", extra={"partitions": [f"{p.topic}[{p.partition}]" for p in parts]})

    # ---- one batch -------------------------------------------------------------------------

    def _handle(self, msgs: list[Message]) -> None:
        started = time.perf_counter()
        name = self.service.name
        records: list[Record] = []
        prepared = _Prepared()
        consumed: Counter[str] = Counter()
        for msg in msgs:
            if msg.error():
                if msg.error().fatal():
                    raise KafkaException(msg.error())
                log.warning("consume error", extra={"error": str(msg.error())})
                continue
            consumed[msg.topic()] += 1
            try:
                records.append(self._decode(msg))
            except SerdeError as exc:
                self._to_dlq(prepared, _record_of(msg), "decode", exc.code, str(exc), type(exc).__name__)
        for topic, n in consumed.items():  # one labelled increment per batch, not per message
            m.CONSUMED.labels(name, topic).inc(n)
        self._prepare(records, prepared)
        self._deliver(prepared)
        self._commit(msgs)
        self.committed_messages += sum(consumed.values())
        m.BATCH_SIZE.labels(name).observe(len(msgs))
        m.BATCH_SECONDS.labels(name).observe(time.perf_counter() - started)

    def _decode(self, msg: Message) -> Record:
        schema = self._in[msg.topic()]
        raw = msg.value()
        value: Any = raw
        if schema is not None and raw is not None:
            value = self.registry.decode_as(raw, schema.name)
        return Record(value=value, key=msg.key(), topic=msg.topic(), partition=msg.partition(),
                      offset=msg.offset(), timestamp_ms=msg.timestamp()[1],
                      headers=tuple(msg.headers() or ()), raw=raw)

    def _prepare(self, records: list[Record], prepared: _Prepared) -> None:
        """Run process over the batch; on an unexpected failure, isolate the bad record(s)."""
        if not records:
            return
        try:
            self._collect(self._call_process(records), prepared)
            return
        except TransientError:
            raise  # only reaches here while stopping: leave the batch uncommitted
        except Exception as exc:  # noqa: BLE001 - a record-level fault; find which record
            if len(records) == 1:
                self._reject_exc(prepared, records[0], exc)
                return
            log.warning("batch failed; isolating records", extra={"error": repr(exc), "size": len(records)})
        for record in records:  # one at a time, so only the poison message goes to the DLQ
            one = _Prepared()
            try:
                self._collect(self._call_process([record]), one)
            except TransientError:
                raise
            except Exception as exc:  # noqa: BLE001 - anything a record triggers is that record's fault
                self._reject_exc(prepared, record, exc)
                continue
            prepared.messages += one.messages
            prepared.writes += one.writes
            prepared.rejected += one.rejected

    def _call_process(self, records: list[Record]) -> list[Output]:
        return self._retrying_transient("process", lambda: list(self.service.process(records)))

    def _retrying_transient(self, what: str, call: Callable[[], T]) -> T:
        """Run ``call``, retrying TransientError (a store that is down) with exponential backoff."""
        backoff = 0.5
        while True:
            try:
                result = call()
                self._retrying = False
                return result
            except TransientError as exc:
                if self._stop.is_set():
                    raise
                self._retrying = True
                m.RETRIES.labels(self.service.name).inc()
                log.warning(f"{what} failed; retrying", extra={"error": str(exc), "backoff_s": backoff})
                time.sleep(backoff)
                backoff = min(backoff * 2, self.config.max_retry_backoff_s)

    def _collect(self, outputs: Iterable[Output], prepared: _Prepared) -> None:
        staged = _Prepared()
        for out in outputs:
            if isinstance(out, Emit):
                physical, schema = self._out_topic(out.topic)
                value = None if out.value is None else (schema.encode(out.value) if schema else out.value)
                key = out.key.encode() if isinstance(out.key, str) else out.key
                staged.messages.append((physical, key, value, out.headers))
            elif isinstance(out, Reject):
                self._to_dlq(staged, out.record, "process", out.code, out.reason, "Reject", out.part)
            elif isinstance(out, Write):
                staged.writes.append(out.item)
            else:
                raise TypeError(f"process returned {type(out).__name__}; expected Emit, Reject or Write")
        # Only a fully encoded batch is kept, so an isolation retry never emits twice.
        prepared.messages += staged.messages
        prepared.writes += staged.writes
        prepared.rejected += staged.rejected

    def _out_topic(self, topic: str):  # noqa: ANN202
        try:
            return self._out[topic]
        except KeyError:
            raise CarelakeError(
                f"{self.service.name} emitted to {topic!r}, which is not among its declared outputs "
                f"{list(self._out)}"
            ) from None

    def _reject_exc(self, prepared: _Prepared, record: Record, exc: BaseException) -> None:
        stage = "encode" if isinstance(exc, EncodeError) else "process"
        code = exc.code if isinstance(exc, (ProcessingError, SerdeError)) else type(exc).__name__
        self._to_dlq(prepared, record, stage, code, str(exc) or repr(exc), type(exc).__name__)

    def _to_dlq(self, prepared: _Prepared, record: Record, stage: str, code: str, reason: str,
                error_type: str, part: str | None = None) -> None:
        value = record.value if isinstance(record.value, dict) else {}
        dlq = {
            "id": f"{record.topic}:{record.partition}:{record.offset}" + (f"#{part}" if part else ""),
            "service": self.service.name, "stage": stage, "reason_code": code[:64],
            "reason": reason[:4000], "error_type": error_type, "source_topic": record.topic,
            "source_partition": record.partition, "source_offset": record.offset,
            "source_key": record.key, "payload": record.raw or b"",
            # Raw bytes from a source.<source>.v1 topic carry no envelope: the topic names the source.
            "source": _str_or_none(value.get("source")) or source_of_topic(record.topic),
            "bronze_key": _str_or_none(value.get("bronze_key")),
            "failed_at": datetime.now(UTC), "attempts": 1,
        }
        physical, _ = self._out[self.service.dlq_topic]
        prepared.messages.append((physical, record.key, self._dlq_schema.encode(dlq), None))
        prepared.rejected += 1
        m.DLQ.labels(self.service.name, stage, code[:64]).inc()
        log.warning("sent to DLQ", extra={"stage": stage, "reason_code": code, "reason": reason[:300],
                                          "topic": record.topic, "partition": record.partition,
                                          "offset": record.offset})

    def _deliver(self, prepared: _Prepared) -> None:
        """Produce everything, write the sink, and wait until the broker has acknowledged all."""
        assert self._producer is not None
        produce = self._producer.produce
        for topic, key, value, headers in prepared.messages:
            while True:
                try:
                    produce(topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery)
                    break
                except BufferError:  # local queue full: let librdkafka drain, then retry
                    self._producer.poll(0.05)
        if prepared.writes and self.service.sink is not None:
            self._write_sink(prepared.writes)
        remaining = self._producer.flush(60)
        if remaining or self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            # Not committing: the batch is redelivered after restart; idempotent sinks absorb it.
            raise CarelakeError(f"{remaining} undelivered, errors: {[str(e) for e in errors[:5]]}")
        for topic, n in Counter(topic for topic, *_ in prepared.messages).items():
            m.PRODUCED.labels(self.service.name, topic).inc(n)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(err)

    def _write_sink(self, items: list[Any]) -> None:
        self._retrying_transient("sink", lambda: self.service.sink.write(items))  # type: ignore[union-attr]
        m.SINK_WRITES.labels(self.service.name).inc(len(items))

    def _commit(self, msgs: list[Message]) -> None:
        offsets: dict[tuple[str, int], int] = {}
        for msg in msgs:
            if not msg.error():
                offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
        if not offsets:
            return
        assert self._consumer is not None
        try:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                  asynchronous=False)
        except KafkaException as exc:
            # Lost the partitions in a rebalance: the new owner re-processes; sinks are idempotent.
            log.warning("commit failed", extra={"error": str(exc)})

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at < 5 or not self._assigned or self._consumer is None:
            return
        self._lag_at = now
        parts = [TopicPartition(t, p) for t, p in self._assigned]
        try:
            committed = self._consumer.committed(parts, timeout=2)
        except KafkaException:
            return
        for tp in committed:
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                pos = tp.offset if tp.offset >= 0 else 0
                m.LAG.labels(self.service.name, tp.topic, str(tp.partition)).set(max(high - pos, 0))


def _record_of(msg: Message) -> Record:
    return Record(value=None, key=msg.key(), topic=msg.topic(), partition=msg.partition(),
                  offset=msg.offset(), timestamp_ms=msg.timestamp()[1], raw=msg.value())


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) else None
