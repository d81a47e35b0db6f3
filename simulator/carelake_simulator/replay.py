"""Replay a simulated day to where a health system's traffic goes: Kafka, an MLLP listener, HTTP.

Every replayer takes the items of ``store.iter_feed`` (FeedRecord messages and FeedFile batch files,
merged in send order) and sends them unchanged:

* :func:`replay_kafka` produces each message to ``source.<source>.v1`` (files are skipped: a real
  system never puts an 837 on a topic, it drops the file),
* :func:`replay_mllp` sends the HL7 v2 messages over MLLP, waiting for each ACK (original mode),
* :func:`replay_http` POSTs messages to ``/v1/messages/<source>`` and files to ``/v1/files/<source>``.

Pacing (:class:`Pace`, :class:`Pacer`) is a rate (token bucket) or a speed-up of the send times.
One patient's messages keep their order: MLLP and HTTP route every item by a stable hash of its key
to one connection, and Kafka keeps one key in one partition.
"""

from __future__ import annotations

import http.client
import logging
import queue
import re
import socket
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from carelake.errors import CarelakeError, TopicError
from carelake_simulator.model import FeedFile, FeedRecord

if TYPE_CHECKING:
    from carelake.topics import Catalog

log = logging.getLogger(__name__)

HL7_CONTENT_TYPE = "x-application/hl7-v2+er7"
START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\x0d"
ACCEPTED_ACKS = frozenset({"AA", "CA"})
REJECTED_ACKS = frozenset({"AE", "AR", "CE", "CR"})
QUEUE_DEPTH = 256  # items waiting per connection / worker (back-pressure on the reader)
GIVE_UP_AFTER = 3  # consecutive undeliverable items before a connection is declared dead

Item = FeedRecord | FeedFile


class ReplayError(CarelakeError):
    """A replay could not run (its target is unreachable, a topic is missing, ...)."""


class TargetUnreachableError(ReplayError, ConnectionError):
    """The target refused or did not answer the first connection."""


# ---- pacing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pace:
    """How fast to send: ``rate`` items per second, or ``speed`` times the send-time clock.

    Neither means as fast as the target takes them; both is an error.
    """

    rate: float | None = None
    speed: float | None = None

    def __post_init__(self) -> None:
        if self.rate is not None and self.speed is not None:
            raise ValueError("give a rate or a speed, not both")
        for name, value in (("rate", self.rate), ("speed", self.speed)):
            if value is not None and not (0 < value < float("inf")):
                raise ValueError(f"{name} must be a positive number, got {value!r}")


_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*/\s*([a-z]+)\s*$", re.IGNORECASE)
_RATE_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
}
_SPEED = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*[x×]?\s*$", re.IGNORECASE)


def parse_rate(text: str) -> float:
    """``"2000/s"``, ``"500/min"``, ``"120000/h"`` -> items per second."""
    match = _RATE.match(text or "")
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _RATE_UNITS:
        raise ValueError(f"rate must look like 2000/s, 500/min or 120000/h, got {text!r}")
    value = float(match.group(1)) / _RATE_UNITS[unit]
    if value <= 0:
        raise ValueError(f"rate must be above zero, got {text!r}")
    return value


def parse_speed(text: str) -> float:
    """``"3600x"`` -> 3600.0: one hour of send times replayed in one second."""
    match = _SPEED.match(text or "")
    if not match:
        raise ValueError(f"speed must look like 3600x (a multiple of real time), got {text!r}")
    value = float(match.group(1))
    if value <= 0:
        raise ValueError(f"speed must be above zero, got {text!r}")
    return value


class Pacer:
    """When each item may be sent; the scheduling is pure, the sleeping is injected.

    * rate: a token bucket holding ``burst`` tokens (default 50 ms worth, at least one), refilled
      at ``rate`` per second; an item takes a token or waits for the next one.
    * speed: item i goes at ``start + (sent_time_i - sent_time_0) / speed`` on the wall clock
      (an item whose send time is earlier than the one before goes at once).
    * neither: no wait.

    Call :meth:`delay` (or :meth:`wait`) once per item, in order: each call reserves the item's slot.
    """

    def __init__(self, pace: Pace, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, burst: float | None = None) -> None:
        self.pace = pace
        self._clock, self._sleep = clock, sleep
        self.burst = burst if burst is not None else max(1.0, (pace.rate or 0.0) * 0.05)
        self._tokens = self.burst
        self._last: float | None = None  # rate: when the bucket was last refilled
        self._start: float | None = None  # speed: wall time of the first item
        self._first: datetime | None = None  # speed: send time of the first item

    def delay(self, sent_time: datetime | None = None) -> float:
        """Seconds from now until this item may go (0.0 when it may go now)."""
        now = self._clock()
        if self.pace.rate is not None:
            rate = self.pace.rate
            if self._last is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._last) * rate)
            self._last = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / rate
        if self.pace.speed is not None and sent_time is not None:
            if self._first is None or self._start is None:
                self._first, self._start = sent_time, now
                return 0.0
            due = self._start + (sent_time - self._first).total_seconds() / self.pace.speed
            return max(0.0, due - now)
        return 0.0

    def wait(self, sent_time: datetime | None = None) -> float:
        """Sleep until this item may go; returns the seconds slept."""
        seconds = self.delay(sent_time)
        if seconds > 0:
            self._sleep(seconds)
        return seconds


# ---- results and progress ---------------------------------------------------------------------


@dataclass
class ReplayStats:
    """What a replay did.

    ``sent``: items the target accepted (Kafka: delivered; MLLP: AA/CA with the right MSA-2;
    HTTP: 2xx). ``failed``: items handed to the target that it rejected or never took.
    ``by_source``: items handed to the target (sent + failed) per source; ``bytes``: their payload
    bytes. ``by_outcome``: every item's outcome — ACK code, HTTP status, "delivered", a Kafka error
    name, "connection_error", "timeout", "skipped_file", "skipped_not_hl7", and "msa2_mismatch"
    once more for each ACK that answered another message.
    """

    sent: int = 0
    failed: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    by_outcome: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    bytes: int = 0

    @property
    def rate(self) -> float:
        """Items accepted per second."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class _Progress:
    """A rich progress bar on stderr (items, items/s, MB/s), or nothing when not wanted."""

    def __init__(self, enabled: bool, total: int | None, label: str) -> None:
        self._bar = None
        if not enabled:
            return
        from rich.console import Console

        console = Console(stderr=True)
        if not console.is_terminal or console.is_dumb_terminal:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.text import Text

        class Throughput(ProgressColumn):
            def render(self, task):  # type: ignore[no-untyped-def]
                elapsed = task.elapsed or 0.0
                if elapsed <= 0:
                    return Text("")
                mb = task.fields.get("bytes", 0) / elapsed / 1e6
                return Text(f"{task.completed / elapsed:,.0f} items/s {mb:,.2f} MB/s")

        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             Throughput(), TimeElapsedColumn(), console=console, transient=False)
        self._task = self._bar.add_task(label, total=total, bytes=0)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, done: int, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, bytes=nbytes)


class _Tally:
    """Thread-safe counters behind ReplayStats, feeding the progress bar."""

    def __init__(self, progress: _Progress) -> None:
        self._lock = threading.Lock()
        self._progress = progress
        self.done = self.sent = self.failed = self.bytes = 0
        self.by_source: Counter[str] = Counter()
        self.by_outcome: Counter[str] = Counter()

    def add(self, source: str, size: int, outcome: str, ok: bool | None, extra: str | None = None) -> None:
        """Count one item; ``ok`` None = skipped (not handed to the target)."""
        with self._lock:
            self.done += 1
            self.by_outcome[outcome] += 1
            if extra:
                self.by_outcome[extra] += 1
            if ok is not None:
                self.by_source[source] += 1
                self.bytes += size
                if ok:
                    self.sent += 1
                else:
                    self.failed += 1
            done, nbytes = self.done, self.bytes
        self._progress.update(done, nbytes)

    def stats(self, seconds: float) -> ReplayStats:
        with self._lock:
            return ReplayStats(sent=self.sent, failed=self.failed, by_source=dict(self.by_source),
                               by_outcome=dict(self.by_outcome), seconds=seconds, bytes=self.bytes)


def _iso(moment: datetime) -> str:
    """ISO-8601 in UTC (a naive datetime is taken to be UTC already)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _route(item: Item, lanes: int) -> int:
    """The lane (connection / worker) of an item: a stable hash of the patient key (files: name)."""
    key = item.key if isinstance(item, FeedRecord) else item.name
    return zlib.crc32(key.encode()) % lanes


# ---- Kafka ------------------------------------------------------------------------------------


def replay_kafka(items: Iterable[Item], bootstrap: str, catalog: Catalog, pace: Pace = Pace(),
                 total: int | None = None, progress: bool = True, timeout_s: float = 10.0) -> ReplayStats:
    """Produce every FeedRecord to ``source.<source>.v1``: key = record key, value = payload bytes.

    Headers: kind, message_id, content_type, event_time, sent_time (ISO-8601 UTC). Idempotent
    producer, acks=all, lz4. FeedFiles are skipped (counted as "skipped_file").
    """
    from confluent_kafka import KafkaError, KafkaException, Producer

    producer = Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        "compression.type": "lz4", "linger.ms": 20, "batch.size": 1_000_000,
        "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000)),
        "logger": logging.getLogger("carelake_simulator.replay.kafka"),  # not raw lines on stderr
    })
    try:
        topics = set(producer.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        reason = err.str() if isinstance(err, KafkaError) else str(err)
        raise TargetUnreachableError(f"cannot reach Kafka at {bootstrap}: {reason}") from None

    physical: dict[str, str] = {}  # source -> physical topic
    source_of: dict[str, str] = {}  # physical topic -> source

    def topic_for(source: str) -> str:
        name = physical.get(source)
        if name is None:
            try:
                name = catalog.physical(f"source.{source}.v1")
            except TopicError as exc:
                raise ReplayError(f"no topic for source {source!r}: {exc}") from None
            if name not in topics:
                topics.update(producer.list_topics(timeout=timeout_s).topics)  # never auto-creates
                if name not in topics:
                    raise ReplayError(f"topic {name} does not exist on Kafka at {bootstrap}; "
                                      "create it with `carelake topics create`")
            physical[source], source_of[name] = name, source
        return name

    def sleep(seconds: float) -> None:  # serve delivery reports while pacing
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            producer.poll(left)

    with _Progress(progress, total, "kafka") as bar:
        tally = _Tally(bar)

        def delivered(err, msg) -> None:  # type: ignore[no-untyped-def]
            source = source_of.get(msg.topic(), "?")
            size = len(msg.value() or b"")
            if err is None:
                tally.add(source, size, "delivered", True)
            else:
                tally.add(source, size, err.name() or str(err.code()), False)

        pacer = Pacer(pace, sleep=sleep)
        started = time.perf_counter()
        try:
            for item in items:
                if isinstance(item, FeedFile):
                    tally.add(item.source, len(item.payload), "skipped_file", None)
                    continue
                topic = topic_for(item.source)
                pacer.wait(item.sent_time)
                headers = [("kind", item.kind.encode()), ("message_id", item.message_id.encode()),
                           ("content_type", item.content_type.encode()),
                           ("event_time", _iso(item.event_time).encode()),
                           ("sent_time", _iso(item.sent_time).encode())]
                while True:
                    try:
                        producer.produce(topic, value=item.payload, key=item.key.encode(),
                                         headers=headers, on_delivery=delivered)
                        break
                    except BufferError:  # the local queue is full: let deliveries drain it
                        producer.poll(0.05)
                    except KafkaException as exc:  # refused before queueing, e.g. too large
                        err = exc.args[0] if exc.args else None
                        name = err.name() if isinstance(err, KafkaError) else "produce_error"
                        tally.add(item.source, len(item.payload), name, False)
                        break
                producer.poll(0)
        finally:
            while producer.flush(1.0) > 0:  # bounded by message.timeout.ms; keeps the bar moving
                pass
        return tally.stats(time.perf_counter() - started)


# ---- lanes: one thread per connection, one ordered queue each ---------------------------------


_STOP = object()


class _Lane(threading.Thread):
    """A worker owning one connection and one queue; subclasses send one item and say how it went."""

    def __init__(self, index: int, tally: _Tally, cancel: threading.Event) -> None:
        super().__init__(name=f"replay-{index}", daemon=True)
        self.queue: queue.Queue[object] = queue.Queue(QUEUE_DEPTH)
        self.tally, self.cancel = tally, cancel
        self.dead = False  # gave up after GIVE_UP_AFTER consecutive undeliverable items
        self._failures = 0

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                break
            assert isinstance(item, FeedRecord | FeedFile)
            size = len(item.payload)
            if self.cancel.is_set():
                continue
            if self.dead:
                self.tally.add(item.source, size, "unreachable", False)
                continue
            try:
                outcome, ok, extra = self.send(item)
            except Exception:  # a bug must not strand the reader on a full queue
                log.exception("replay: sending %s failed unexpectedly", getattr(item, "name", None)
                              or getattr(item, "message_id", "?"))
                outcome, ok, extra = "error", False, None
            if outcome in ("connection_error", "timeout"):
                self._failures += 1
                if self._failures >= GIVE_UP_AFTER:
                    self.dead = True
                    log.error("replay: %s gave up after %d undeliverable items in a row", self.name,
                              self._failures)
            else:
                self._failures = 0
            self.tally.add(item.source, size, outcome, ok, extra)
        self.close()

    def send(self, item: Item) -> tuple[str, bool, str | None]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _run_lanes(items: Iterable[Item], lanes: list[_Lane], pace: Pace, tally: _Tally,
               skip: Callable[[Item], str | None], cancel: threading.Event) -> None:
    """Pace the items onto their lanes in order, then wait for every lane to finish."""
    for lane in lanes:
        lane.start()
    pacer = Pacer(pace)
    ok = False
    try:
        for item in items:
            reason = skip(item)
            if reason:
                tally.add(item.source, len(item.payload), reason, None)
                continue
            pacer.wait(item.sent_time)
            lanes[_route(item, len(lanes))].queue.put(item)
        ok = True
    finally:
        if not ok:
            cancel.set()
        for lane in lanes:
            lane.queue.put(_STOP)
        for lane in lanes:
            lane.join(None if ok else 5.0)


# ---- MLLP -------------------------------------------------------------------------------------


def parse_ack(ack: bytes) -> tuple[str | None, str | None]:
    """(MSA-1, MSA-2) of an HL7 v2 ACK, or (None, None) when it has no MSA segment."""
    text = ack.decode("latin-1").strip(START_BLOCK.decode() + END_BLOCK.decode() + "\n")
    sep = "|"
    if text.startswith("MSH") and len(text) > 3:
        sep = text[3]
    for segment in re.split(r"\r\n|\r|\n", text):
        if segment.startswith("MSA" + sep):
            fields = segment.split(sep)
            code = fields[1].strip() if len(fields) > 1 else ""
            control = fields[2].strip() if len(fields) > 2 else ""
            return code or None, control or None
    return None, None


def _connect(host: str, port: int, timeout_s: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _MllpLane(_Lane):
    def __init__(self, index: int, tally: _Tally, cancel: threading.Event, host: str, port: int,
                 timeout_s: float, sock: socket.socket) -> None:
        super().__init__(index, tally, cancel)
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.sock: socket.socket | None = sock
        self._buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock, self._buffer = None, b""

    def _read_frame(self) -> bytes:
        assert self.sock is not None
        deadline = time.monotonic() + self.timeout_s
        while True:
            end = self._buffer.find(END_BLOCK)
            if end >= 0:
                frame, self._buffer = self._buffer[:end], self._buffer[end + len(END_BLOCK):]
                start = frame.find(START_BLOCK)
                return frame[start + 1:] if start >= 0 else frame
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no ACK within {self.timeout_s:g}s")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("the listener closed the connection")
            self._buffer += chunk

    def send(self, item: Item) -> tuple[str, bool, str | None]:
        assert isinstance(item, FeedRecord)
        frame = START_BLOCK + item.payload + END_BLOCK
        failure: OSError | None = None
        for attempt in range(2):  # the first try, and one resend on a fresh connection
            try:
                if self.sock is None:
                    if attempt:
                        time.sleep(0.05)
                    self.sock = _connect(self.host, self.port, self.timeout_s)
                self.sock.sendall(frame)
                ack = self._read_frame()
                break
            except OSError as exc:  # dropped, reset, refused or timed out
                failure = exc
                self.close()
        else:
            log.warning("replay: MLLP message %s to %s:%d not acknowledged: %s", item.message_id,
                        self.host, self.port, _why(failure) if failure else "?")
            return ("timeout" if isinstance(failure, TimeoutError) else "connection_error"), False, None
        code, control = parse_ack(ack)
        if code is None:
            return "bad_ack", False, None
        mismatch = control != item.message_id
        ok = code in ACCEPTED_ACKS and not mismatch
        return code, ok, "msa2_mismatch" if mismatch else None


def replay_mllp(items: Iterable[Item], host: str, port: int, pace: Pace = Pace(),
                total: int | None = None, progress: bool = True, connections: int = 4,
                timeout_s: float = 30) -> ReplayStats:
    """Send the HL7 v2 messages over MLLP on ``connections`` connections, one ACK at a time each.

    A patient's messages share a connection (stable hash of the key), so they arrive in order. A
    dropped connection is reopened and the unacknowledged message resent once. Files and non-HL7
    messages are skipped ("skipped_file", "skipped_not_hl7").
    """
    if connections < 1:
        raise ValueError("connections must be at least 1")
    socks: list[socket.socket] = []
    try:
        for _ in range(connections):
            socks.append(_connect(host, port, timeout_s))
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise TargetUnreachableError(f"cannot reach MLLP listener at {host}:{port}: {_why(exc)}") from None

    def skip(item: Item) -> str | None:
        if isinstance(item, FeedFile):
            return "skipped_file"
        if item.content_type != HL7_CONTENT_TYPE:
            return "skipped_not_hl7"
        return None

    with _Progress(progress, total, "mllp") as bar:
        tally, cancel = _Tally(bar), threading.Event()
        lanes: list[_Lane] = [_MllpLane(i, tally, cancel, host, port, timeout_s, sock)
                              for i, sock in enumerate(socks)]
        started = time.perf_counter()
        _run_lanes(items, lanes, pace, tally, skip, cancel)
        return tally.stats(time.perf_counter() - started)


# ---- HTTP -------------------------------------------------------------------------------------


class _HttpLane(_Lane):
    def __init__(self, index: int, tally: _Tally, cancel: threading.Event,
                 conn: http.client.HTTPConnection, prefix: str, api_keys: dict[str, str] | None = None) -> None:
        super().__init__(index, tally, cancel)
        self.conn, self.prefix, self.api_keys = conn, prefix, api_keys or {}

    def close(self) -> None:
        self.conn.close()

    def send(self, item: Item) -> tuple[str, bool, str | None]:
        source = quote(item.source, safe="")
        if isinstance(item, FeedRecord):
            path = f"{self.prefix}/v1/messages/{source}"
            headers = {"Content-Type": item.content_type, "X-Message-Id": item.message_id,
                       "X-Event-Time": _iso(item.event_time), "X-Sent-Time": _iso(item.sent_time)}
        else:
            path = f"{self.prefix}/v1/files/{source}"
            headers = {"Content-Type": item.content_type, "X-File-Name": item.name,
                       "X-Sent-Time": _iso(item.sent_time)}
        headers["Content-Length"] = str(len(item.payload))
        if item.source in self.api_keys:
            headers["Authorization"] = f"Bearer {self.api_keys[item.source]}"
        failure: Exception | None = None
        for attempt in range(2):  # a kept-alive connection may have been closed under us: resend once
            try:
                if attempt:
                    time.sleep(0.05)
                self.conn.request("POST", path, body=item.payload, headers=headers)
                response = self.conn.getresponse()
                response.read()
                status = response.status
                break
            except (OSError, http.client.HTTPException) as exc:
                failure = exc
                self.conn.close()  # http.client reconnects on the next request
        else:
            log.warning("replay: POST %s failed: %s", path, _why(failure) if failure else "?")
            return ("timeout" if isinstance(failure, TimeoutError) else "connection_error"), False, None
        return str(status), 200 <= status < 300, None


def replay_http(items: Iterable[Item], base_url: str, pace: Pace = Pace(), total: int | None = None,
                progress: bool = True, workers: int = 4, timeout_s: float = 60,
                api_keys: dict[str, str] | None = None) -> ReplayStats:
    """POST messages to ``{base_url}/v1/messages/{source}`` and files to ``{base_url}/v1/files/{source}``.

    Outcomes are the status codes ("201", "400", ...); 2xx counts as sent. A patient's messages go
    through one worker (stable hash of the key) so they arrive in order. ``api_keys`` (source ->
    key) are sent as ``Authorization: Bearer``.
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    url = urlsplit(base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"base URL must be http(s)://host[:port][/path], got {base_url!r}")
    kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    prefix = url.path.rstrip("/")
    conns: list[http.client.HTTPConnection] = []
    try:
        for _ in range(workers):
            conn = kind(url.hostname, url.port, timeout=timeout_s)
            conns.append(conn)
            conn.connect()
    except OSError as exc:
        for conn in conns:
            conn.close()
        raise TargetUnreachableError(f"cannot reach HTTP gateway at {base_url}: {_why(exc)}") from None

    with _Progress(progress, total, "http") as bar:
        tally, cancel = _Tally(bar), threading.Event()
        lanes: list[_Lane] = [_HttpLane(i, tally, cancel, conn, prefix, api_keys) for i, conn in enumerate(conns)]
        started = time.perf_counter()
        _run_lanes(items, lanes, pace, tally, lambda item: None, cancel)
        return tally.stats(time.perf_counter() - started)

