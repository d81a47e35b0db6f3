"""The one door every protocol uses: validate, envelope, produce with acks=all, wait until durable.

A message is accepted only once the broker has acknowledged its envelope (payload inline) on
``bronze.raw.v1`` with acks=all; the archiver writes Bronze segments from there, and recognises
re-deliveries of identical bytes (ledger.py), so the ACK path waits for the broker alone. A caller
that wants to tell a sender "you sent this before" (the HTTP API) asks ``recheck=True``: the
admission then looks the raw id up in the ledger and answers a duplicate without producing.
Input that is parseable but rejected is kept under Bronze's quarantine prefix.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter

from carelake.errors import CarelakeError
from carelake.serde import SchemaRegistry
from carelake.topics import Catalog
from carelake_ingest_gateway.ledger import Ledger
from carelake_ingest_gateway.sniff import Msh, Sniffed, sniff

log = logging.getLogger("carelake.ingest")

SOURCES = ("ehr", "lab", "pharmacy", "claims", "wearables", "public_health", "scheduling", "billing")
RAW_TOPIC = "bronze.raw.v1"
ADMIT_BATCH = 500  # admissions taken from the queue at once (their ledger lookups share a round trip)
INTAKE = Counter("carelake_intake_total", "Messages and files offered to the gateway",
                 ["source", "format", "transport", "outcome"])


class IntakeError(CarelakeError):
    """The gateway did not take the input; ``ack_code`` is the HL7 answer, ``http_status`` the HTTP one."""

    def __init__(self, reason: str, *, code: str, ack_code: str = "AR", http_status: int = 422) -> None:
        super().__init__(reason)
        self.reason, self.code, self.ack_code, self.http_status = reason, code, ack_code, http_status


@dataclass(frozen=True)
class Accepted:
    raw_id: str
    sha256: str
    duplicate: bool
    sniffed: Sniffed


def raw_id(source: str, sha256: str, message_id: str | None) -> str:
    """Deterministic envelope id: the same bytes from the same source under the same id are one message."""
    return hashlib.sha256(f"{source}|{sha256}|{message_id or ''}".encode()).hexdigest()[:32]


def stream_prefix(source: str, when: datetime) -> str:
    """Where the archiver puts this message's segment; the segment index maps raw id -> key + offset."""
    return f"{source}/{when:%Y/%m/%d}/segments/"


def envelope(source: str, payload: bytes, sniffed: Sniffed, sha: str, received: datetime, *,
             content_type: str | None, transport: str, inline_limit: int,
             bronze_key: str | None = None, byte_offset: int = 0, headers: dict[str, str] | None = None) -> dict:
    """The raw envelope (schemas/avro/raw_envelope.avsc) for one message or one record of a file."""
    return {
        "id": raw_id(source, sha, sniffed.message_id), "source": source, "format": sniffed.format,
        "content_type": content_type, "received_at": received,
        "bronze_key": bronze_key or stream_prefix(source, received), "sha256": sha,
        "byte_offset": byte_offset, "byte_length": len(payload),
        "payload": payload if len(payload) <= inline_limit else None,
        "source_message_id": sniffed.message_id, "source_patient_key": sniffed.patient_key,
        "replayed": False, "headers": {"transport": transport, **(headers or {})},
    }


class Intake:
    """Shared by the MLLP listener, the HTTP API, the drop folder and the Kafka capture."""

    def __init__(self, bootstrap: str, catalog: Catalog, redis_url: str | None = None, *,
                 inline_limit: int = 256 * 1024, max_message: int = 900 * 1024,
                 producer_config: dict | None = None) -> None:
        self.topic = catalog.physical(RAW_TOPIC)
        self.schema = SchemaRegistry.load().get(catalog.get(RAW_TOPIC).value_schema)
        self.inline_limit, self.max_message = inline_limit, max_message
        # linger 0: a sender in HL7 original mode waits for each ACK, so batching only adds latency.
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 0, "compression.type": "lz4", **(producer_config or {})})
        self.ledger = Ledger(redis_url, self.topic) if redis_url else None
        self._closing = threading.Event()
        self._queue: queue.Queue[_Admission | None] = queue.Queue()
        self._admitter = threading.Thread(target=self._admit_loop, name="intake-admit", daemon=True)
        self._poller = threading.Thread(target=self._poll, name="intake-producer", daemon=True)
        self._admitter.start()
        self._poller.start()

    def _poll(self) -> None:
        while not self._closing.is_set():
            try:
                self.producer.poll(0.05)  # delivery callbacks run here and resolve the waiting futures
            except Exception:  # noqa: BLE001 - one bad callback must not stop every later delivery
                log.exception("delivery callback failed")

    def close(self) -> None:
        """Finish admissions, wait for the broker; anything still unacknowledged fails as unavailable."""
        self._queue.put(None)
        self._admitter.join(30)
        if self.producer.flush(30):
            self.producer.purge()
            self.producer.poll(0)  # purged messages' callbacks fire now, failing their futures
        self._closing.set()
        self._poller.join(5)

    # ---- the door --------------------------------------------------------------------------

    def check(self, source: str, payload: bytes, content_type: str | None, msh: Msh | None = None) -> Sniffed:
        """Validate without side effects; raises IntakeError with the answer the sender gets."""
        if source not in SOURCES:
            raise IntakeError(f"unknown source {source!r}; known: {', '.join(SOURCES)}", code="unknown_source",
                              http_status=404)
        if len(payload) > self.max_message:
            raise IntakeError(f"message of {len(payload)} bytes exceeds the {self.max_message}-byte limit",
                              code="too_large", http_status=413)
        if not payload.strip():
            raise IntakeError("empty message", code="empty", http_status=400)
        sniffed = sniff(source, payload, content_type, msh)
        if sniffed.problem:
            raise IntakeError(sniffed.problem, code=f"bad_{sniffed.format}", http_status=422)
        return sniffed

    def submit(self, source: str, payload: bytes, *, transport: str, content_type: str | None = None,
               timeout_s: float = 30.0, recheck: bool = False) -> Accepted:
        """Accept one message: returns once it is durable on the raw topic (or a duplicate of one)."""
        return self.start(source, payload, transport=transport, content_type=content_type,
                          recheck=recheck).result(timeout_s)

    async def submit_async(self, source: str, payload: bytes, *, transport: str,
                           content_type: str | None = None) -> Accepted:
        # Shielded: a caller that gives up (timeout, closed connection) must not cancel the shared
        # future the delivery callback will resolve.
        return await asyncio.shield(asyncio.wrap_future(self.start(source, payload, transport=transport,
                                                                   content_type=content_type)))

    def start(self, source: str, payload: bytes, *, transport: str, content_type: str | None = None,
              envelope_fields: dict | None = None, sniffed: Sniffed | None = None,
              recheck: bool = False, msh: Msh | None = None) -> Future[Accepted]:
        """Validate, then admit on the intake thread; the future resolves when the broker acknowledges.

        ``recheck``: first look the raw id up in the ledger; a message Bronze already holds resolves
        as a duplicate without being produced again.

        ``sniffed`` is for records of a stored file whose splitter already read their id and patient:
        only the source is checked (the message size limit is for messages, and the bytes are in Bronze).
        """
        done: Future[Accepted] = Future()
        try:
            if sniffed is None:
                sniffed = self.check(source, payload, content_type, msh)
            elif source not in SOURCES:
                raise IntakeError(f"unknown source {source!r}", code="unknown_source", http_status=404)
        except IntakeError as exc:
            INTAKE.labels(source if source in SOURCES else "unknown", "?", transport, exc.code).inc()
            done.set_exception(exc)
            return done
        # Redis and produce() can block; they run on the admission thread, never on an event loop.
        sha = hashlib.sha256(payload).hexdigest()
        self._queue.put(_Admission(done, source, payload, sniffed, transport, content_type, envelope_fields,
                                   sha, raw_id(source, sha, sniffed.message_id), recheck))
        return done

    def _admit_loop(self) -> None:
        """Take every waiting admission, look up the rechecked ones in one ledger round trip, produce."""
        while True:
            first = self._queue.get()
            batch = [first]
            while first is not None and len(batch) < ADMIT_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            items = [a for a in batch if a is not None]
            for admission, stored in zip(items, self._stored_before(items)):
                try:
                    self._admit(admission, stored)
                except Exception as exc:  # noqa: BLE001 - fail this message, keep the door open
                    log.exception("admission failed")
                    _fail(admission.done, IntakeError(f"internal error: {exc}", code="internal", ack_code="AE",
                                                      http_status=500))
            if len(items) < len(batch):
                return  # close() asked us to stop, after everything queued before it

    def _admit(self, a: _Admission, stored: bool) -> None:
        done, source, payload, sniffed, transport = a.done, a.source, a.payload, a.sniffed, a.transport
        content_type, envelope_fields, sha, rid = a.content_type, a.envelope_fields, a.sha, a.rid
        if stored:
            INTAKE.labels(source, sniffed.format, transport, "duplicate").inc()
            _resolve(done, Accepted(rid, sha, True, sniffed))
            return
        # A message travels inline (it fits a Kafka message: max_message); a record of a stored file
        # is inlined only when small, and otherwise referenced by its file key and byte range.
        in_file = bool(envelope_fields and "bronze_key" in envelope_fields)
        env = envelope(source, payload, sniffed, sha, datetime.now(UTC), content_type=content_type,
                       transport=transport, inline_limit=self.inline_limit if in_file else len(payload),
                       **(envelope_fields or {}))
        key = (sniffed.patient_key or f"{source}|{sniffed.message_id or rid}").encode()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                INTAKE.labels(source, sniffed.format, transport, "accepted").inc()
                _resolve(done, Accepted(rid, sha, False, sniffed))
            else:
                self._failed(done, source, rid, sniffed.format, transport, err.str())

        while True:
            try:
                self.producer.produce(self.topic, value=self.schema.encode(env), key=key, on_delivery=delivered)
                return
            except BufferError:  # the local queue is full: wait for the poller to drain it
                self._closing.wait(0.01)
            except KafkaException as exc:
                self._failed(done, source, rid, sniffed.format, transport, str(exc))
                return

    def _failed(self, done: Future[Accepted], source: str, rid: str, fmt: str, transport: str, why: str) -> None:
        INTAKE.labels(source, fmt, transport, "unavailable").inc()
        _fail(done, IntakeError(f"raw topic did not acknowledge: {why}", code="unavailable", ack_code="AE",
                                http_status=503))

    def _stored_before(self, items: list[_Admission]) -> list[bool]:
        """For each admission: does Bronze already hold it (only asked for ``recheck`` ones)?"""
        asked = [a for a in items if a.recheck]
        if self.ledger is None or not asked:
            return [False] * len(items)
        try:
            held = dict(zip((a.rid for a in asked), self.ledger.stored([(a.source, a.rid) for a in asked])))
        except Exception:  # noqa: BLE001 - ledger down: produce again; the archiver stores it once
            log.warning("re-delivery ledger unavailable; accepting without the check")
            return [False] * len(items)
        return [a.recheck and held.get(a.rid, False) for a in items]


@dataclass(frozen=True)
class _Admission:
    done: Future[Accepted]
    source: str
    payload: bytes
    sniffed: Sniffed
    transport: str
    content_type: str | None
    envelope_fields: dict | None
    sha: str
    rid: str
    recheck: bool = False


def _resolve(done: Future[Accepted], value: Accepted) -> None:
    if not done.done():  # a caller may have cancelled it; the delivery thread must never die of that
        done.set_result(value)


def _fail(done: Future[Accepted], exc: BaseException) -> None:
    if not done.done():
        done.set_exception(exc)
