"""Batch files: stored whole and announced at once, split into records by a worker afterwards.

Taking a file (HTTP upload, drop folder) ends when its bytes are durable: stored whole in Bronze
under a content-addressed key, and a file envelope (payload null, byte range = the whole file) is
acknowledged on ``bronze.files.v1`` with acks=all. That is what a sender waits for, so a 100 MB
837 is taken at disk speed instead of at the speed of 477,000 claim envelopes.

The splitter consumes ``bronze.files.v1`` and emits one ``bronze.raw.v1`` envelope per record
(X12 claim, CSV row, JSON line), each pointing at the file and the record's byte range. Progress
is checkpointed in Redis every CHECKPOINT records after the broker acknowledged them, and the
file's offset is committed only when it is done: a splitter killed mid-file resumes from its last
checkpoint (records after it may be sent twice, with the same deterministic ids — never lost).
The same board answers "how far is my file" (``GET /v1/file-status/{key}``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from prometheus_client import Counter, Gauge

from carelake.bronze.store import BronzeStore, ObjectNotFoundError, bronze_key
from carelake.errors import CarelakeError
from carelake.serde import SchemaRegistry
from carelake.topics import Catalog
from carelake_ingest_gateway import files
from carelake_ingest_gateway.intake import RAW_TOPIC, envelope, raw_id
from carelake_ingest_gateway.sniff import Sniffed, sniff

log = logging.getLogger("carelake.ingest.files")

FILES_TOPIC = "bronze.files.v1"
CHECKPOINT = 10_000  # records between progress checkpoints (each one waits for the broker)
MAX_LISTED_REJECTS = 100
DEFAULT_CONTENT_TYPE = {"x12": "application/edi-x12", "csv": "text/csv", "ndjson": "application/x-ndjson"}
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")

FILES = Counter("carelake_files_total", "Batch files offered to the gateway", ["source", "format", "outcome"])
SPLIT_RECORDS = Counter("carelake_file_records_total", "Records split out of stored files",
                        ["source", "format", "outcome"])
SPLIT_BACKLOG = Gauge("carelake_file_split_backlog", "Files announced but not yet fully split (this process)")


class _Interrupted(Exception):
    """The splitter was asked to stop mid-file; the file resumes from its checkpoint next time."""


class FileRefused(CarelakeError):
    """The file was not taken; ``key`` is where its bytes were kept under quarantine, if they were."""

    def __init__(self, status: int, code: str, detail: str, key: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.key = status, code, detail, key


@dataclass(frozen=True)
class Receipt:
    key: str
    sha256: str
    size: int
    format: str
    duplicate: bool  # this exact file was already stored under this key
    announced: bool  # False when it was stored and split completely before: nothing new to do


def printable(text: str, limit: int = 500) -> str:
    return _NOT_PRINTABLE.sub("?", text)[:limit]


def file_chunks(path: str | Path, block: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(block):
            yield chunk


# ---- the status board ------------------------------------------------------------------------------


class FileBoard:
    """Per file key, a Redis hash: state (announced|splitting|done|failed), counts, checkpoint, error."""

    def __init__(self, redis_url: str, scope: str, ttl_s: int = 30 * 86400) -> None:
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, decode_responses=True)
        self.scope, self.ttl_s = scope, ttl_s

    def _key(self, key: str) -> str:
        return f"carelake:ingest:file:{self.scope}:{key}"

    def get(self, key: str) -> dict[str, str]:
        return self.redis.hgetall(self._key(key))

    def set(self, key: str, **fields: object) -> None:
        name = self._key(key)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(name, mapping={k: str(v) for k, v in fields.items()})
        pipe.expire(name, self.ttl_s)
        pipe.execute()

    def clear(self, key: str) -> None:
        self.redis.delete(self._key(key))

    def forget_scope(self) -> None:
        """Delete every file status of this scope (tests and benches with uuid-named topics)."""
        for name in self.redis.scan_iter(f"carelake:ingest:file:{self.scope}:*", count=10_000):
            self.redis.delete(name)

    def wait(self, key: str, timeout_s: float, every_s: float = 0.05) -> dict[str, str]:
        """The status once the file is done or failed, or as it stands after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.get(key)
            if status.get("state") in ("done", "failed") or time.monotonic() >= deadline:
                return status
            time.sleep(every_s)


# ---- taking a file -------------------------------------------------------------------------------


class FileTaker:
    """Check, store whole (or quarantine), announce. Blocking; safe from several threads."""

    def __init__(self, store: BronzeStore, bootstrap: str, catalog: Catalog, board: FileBoard) -> None:
        self.store, self.board = store, board
        self.topic = catalog.physical(FILES_TOPIC)
        self.schema = SchemaRegistry.load().get(catalog.get(FILES_TOPIC).value_schema)
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 0})
        self._lock = threading.Lock()

    def take(self, source: str, path: str | Path, name: str, content_type: str | None, *,
             transport: str, sha256: str | None = None, head: bytes | None = None) -> Receipt:
        """Take the file at ``path`` (the caller's; it is copied, not moved). Raises FileRefused."""
        now = datetime.now(UTC)
        size = os.path.getsize(path)
        if size == 0:
            raise FileRefused(400, "empty", "empty file")
        if sha256 is None:
            digest = hashlib.sha256()
            for chunk in file_chunks(path):
                digest.update(chunk)
            sha256 = digest.hexdigest()
        if head is None:
            with open(path, "rb") as f:
                head = f.read(4096)
        object_name = f"{sha256[:16]}-{name}"
        meta = {"file_name": name, "transport": transport,
                **({"content_type": printable(content_type, 200)} if content_type else {})}

        def quarantine(status: int, error: files.FileFormatError) -> FileRefused:
            qkey = bronze_key(source, now, object_name, kind="quarantine")
            self.store.put_stream(qkey, file_chunks(path), {**meta, "reason": printable(str(error))})
            FILES.labels(source, "?", "quarantined").inc()
            log.warning("file quarantined", extra={"source": source, "key": qkey, "reason": str(error)})
            return FileRefused(status, error.code if status == 422 else "unsupported_format", str(error), qkey)

        try:
            fmt = files.detect_format(head, name, content_type)
        except files.FileFormatError as exc:
            raise quarantine(415, exc) from None
        if fmt == "x12":  # a broken interchange envelope is refused before anything is announced
            with open(path, "rb") as f:
                try:
                    files.check_x12(f)
                except files.FileFormatError as exc:
                    raise quarantine(422, exc) from None
        key = bronze_key(source, now, object_name)
        try:
            duplicate = self.store.head(key).sha256 == sha256
        except ObjectNotFoundError:
            duplicate = False
        if not duplicate:
            self.store.put_stream(key, file_chunks(path), {**meta, "format": fmt})
        # A re-delivered file is announced again unless it was split completely: that is how a
        # file cut short (sender or gateway crash) gets finished. The splitter skips done files.
        announced = not (duplicate and self.board.get(key).get("state") == "done")
        if announced:
            self.announce(source, key, sha256, size, fmt, content_type, now, {"file_name": name,
                                                                               "transport": transport})
        FILES.labels(source, fmt, "duplicate" if duplicate else "stored").inc()
        return Receipt(key, sha256, size, fmt, duplicate, announced)

    def announce(self, source: str, key: str, sha256: str, size: int, fmt: str, content_type: str | None,
                 received: datetime, headers: dict[str, str], *, replayed: bool = False) -> None:
        """The file envelope on bronze.files.v1, acknowledged (acks=all) before this returns."""
        env = {"id": raw_id(source, sha256, key), "source": source, "format": fmt, "content_type": content_type,
               "received_at": received, "bronze_key": key, "sha256": sha256, "byte_offset": 0,
               "byte_length": size, "payload": None, "source_message_id": None, "source_patient_key": None,
               "replayed": replayed, "headers": {"kind": "file", **headers}}
        status_key = f"{key}#replay" if replayed else key
        if self.board.get(status_key):  # a re-delivery of a file cut short: keep its checkpoint and counts
            self.board.set(status_key, state="announced")
        else:
            self.board.set(status_key, state="announced", records=0, emitted=0, rejected=0)
        failure: list[str] = []

        def delivered(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                failure.append(err.str())

        with self._lock:
            self.producer.produce(self.topic, value=self.schema.encode(env), key=f"{source}|{sha256}".encode(),
                                  on_delivery=delivered)
            left = self.producer.flush(30)
        if left or failure:
            raise FileRefused(503, "unavailable", "the file is stored in Bronze but its announcement was not "
                              f"acknowledged ({failure[0] if failure else 'timeout'}); send it again", key)

    def close(self) -> None:
        self.producer.flush(30)


# ---- splitting -------------------------------------------------------------------------------------


@dataclass
class Progress:
    records: int = 0
    emitted: int = 0
    rejected: int = 0
    listed: list[dict] = field(default_factory=list)  # the first MAX_LISTED_REJECTS rejected records


class Splitter:
    """Consumes bronze.files.v1 and emits each file's records to bronze.raw.v1; run()/stop()/health()."""

    name = "ingest-splitter"

    def __init__(self, store: BronzeStore, bootstrap: str, catalog: Catalog, board: FileBoard, *,
                 group: str | None = None, inline_limit: int = 256 * 1024, spool_dir: Path | None = None,
                 checkpoint: int = CHECKPOINT) -> None:
        self.store, self.board, self.inline_limit = store, board, inline_limit
        self.spool_dir, self.checkpoint = spool_dir, checkpoint
        registry = SchemaRegistry.load()
        self.files_topic, self.raw_topic = catalog.physical(FILES_TOPIC), catalog.physical(RAW_TOPIC)
        self.raw_schema = registry.get(catalog.get(RAW_TOPIC).value_schema)
        self.registry = registry
        self.consumer = Consumer({"bootstrap.servers": bootstrap,
                                  "group.id": group or f"{catalog.prefix}ingest-splitter",
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                  "partition.assignment.strategy": "cooperative-sticky",
                                  "max.poll.interval.ms": 1_800_000})  # one file may take minutes
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 20, "compression.type": "lz4", "batch.size": 1_000_000,
                                  "queue.buffering.max.messages": 200_000})
        self._stop = threading.Event()
        self._last_error: str | None = None

    def stop(self, *_: object) -> None:
        self._stop.set()

    def health(self) -> tuple[bool, dict]:
        return self._last_error is None, {"last_error": self._last_error}

    def run(self) -> None:
        self.consumer.subscribe([self.files_topic])
        try:
            while not self._stop.is_set():
                msg = self.consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    log.warning("splitter consumer error", extra={"error": msg.error().str()})
                    continue
                self._one(msg)
        finally:
            self.producer.flush(30)
            self.consumer.close()

    def _one(self, msg: object) -> None:
        """Split one announced file until done; a broker or store failure retries it from its checkpoint."""
        _, env = self.registry.decode(msg.value())
        SPLIT_BACKLOG.inc()
        try:
            while not self._stop.is_set():
                try:
                    self.split(env)
                    self._last_error = None
                    self.consumer.commit(message=msg, asynchronous=False)
                    return
                except _Interrupted:
                    return
                except (KafkaException, OSError, redis.RedisError) as exc:
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("file split interrupted; retrying from the checkpoint",
                                extra={"key": env["bronze_key"], "error": self._last_error})
                    self._stop.wait(2.0)
        finally:
            SPLIT_BACKLOG.dec()

    def split(self, env: dict) -> Progress:
        """Emit the records of the file ``env`` announces (resuming after its checkpoint)."""
        key, source, fmt = env["bronze_key"], env["source"], env["format"]
        status_key = f"{key}#replay" if env["replayed"] else key
        status = self.board.get(status_key)
        if status.get("state") == "done" and not env["replayed"]:
            return Progress(int(status["records"]), int(status["emitted"]), int(status["rejected"]))
        resume = int(status.get("checkpoint", 0))
        done = Progress(emitted=int(status.get("emitted", 0)) if resume else 0,
                        rejected=int(status.get("rejected", 0)) if resume else 0)
        self.board.set(status_key, state="splitting")
        content_type = env.get("content_type") or DEFAULT_CONTENT_TYPE.get(fmt)
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                failures.append(err.str())

        started = time.perf_counter()
        with self._local_copy(key) as path, open(path, "rb") as stream, \
                open(path, "rb", buffering=1 << 20) as reader:
            try:
                for record in files.split(fmt, source, stream):
                    done.records += 1
                    if done.records <= resume:
                        continue
                    reader.seek(record.byte_start)  # records come in file order: served from the buffer
                    payload = reader.read(record.byte_end - record.byte_start)
                    self._emit(env, record, payload, content_type, done, delivered)
                    if done.records % self.checkpoint == 0:
                        self._checkpoint(status_key, done, failures)
                        if self._stop.is_set():
                            raise _Interrupted
            except files.FileFormatError as exc:  # unreadable past some point: what came before stays sent
                self._checkpoint(status_key, done, failures)
                self.board.set(status_key, state="failed", records=done.records, error=printable(str(exc)))
                FILES.labels(source, fmt, "split_failed").inc()
                log.warning("file split failed", extra={"key": key, "error": str(exc)})
                return done
        self._checkpoint(status_key, done, failures)
        self.board.set(status_key, state="done", records=done.records, seconds=round(time.perf_counter() - started, 3))
        SPLIT_RECORDS.labels(source, fmt, "emitted").inc(done.emitted)
        SPLIT_RECORDS.labels(source, fmt, "rejected").inc(done.rejected)
        log.info("file split", extra={"key": key, "records": done.records, "emitted": done.emitted,
                                      "rejected": done.rejected, "replayed": env["replayed"],
                                      "seconds": round(time.perf_counter() - started, 3)})
        return done

    def _emit(self, file_env: dict, record: files.Record, payload: bytes, content_type: str | None,
              done: Progress, delivered: object) -> None:
        source, fmt = file_env["source"], file_env["format"]
        if fmt == "ndjson":  # a JSON line is a message like any other: sniff reads its ids
            sniffed = sniff(source, payload, "application/json")
            if sniffed.problem:
                done.rejected += 1
                if len(done.listed) < MAX_LISTED_REJECTS:
                    done.listed.append({"byte_start": record.byte_start, "byte_end": record.byte_end,
                                        "error": f"bad_{sniffed.format}", "detail": sniffed.problem})
                return
        else:
            sniffed = Sniffed(fmt, record.record_id, record.patient_key)
        sha = hashlib.sha256(payload).hexdigest()
        env = envelope(source, payload, sniffed, sha, datetime.now(UTC), content_type=content_type,
                       transport=file_env["headers"].get("transport", "file"), inline_limit=self.inline_limit,
                       bronze_key=file_env["bronze_key"], byte_offset=record.byte_start,
                       headers={"file_format": fmt})
        env["replayed"] = file_env["replayed"]
        key = (sniffed.patient_key or f"{source}|{sniffed.message_id or env['id']}").encode()
        value = self.raw_schema.encode(env)
        while True:
            try:
                self.producer.produce(self.raw_topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                self.producer.poll(0.05)
        done.emitted += 1

    def _checkpoint(self, status_key: str, done: Progress, failures: list[str]) -> None:
        """Wait for the broker, then record how far the file is; a failed delivery retries the file."""
        left = self.producer.flush(60)
        if left or failures:
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, failures[0] if failures
                                            else f"{left} records unacknowledged"))
        self.board.set(status_key, checkpoint=done.records, records=done.records, emitted=done.emitted,
                       rejected=done.rejected, **({"rejects": _json(done.listed)} if done.listed else {}))

    @contextmanager
    def _local_copy(self, key: str) -> Iterator[Path]:
        """The stored file as a local path: the local store's own file, or a spooled download."""
        path = self.store.local_path(key)
        if path is not None:
            yield path
            return
        fd, tmp = tempfile.mkstemp(prefix="carelake-split-", dir=self.spool_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self.store.open_stream(key):
                    out.write(chunk)
            yield Path(tmp)
        finally:
            os.unlink(tmp)


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
