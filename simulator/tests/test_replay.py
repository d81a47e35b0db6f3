"""Replay without the stack: pacing, and MLLP / HTTP against small real listeners started here.

The listeners stand in for the ingest gateway (which does not exist yet); they are real sockets
speaking real MLLP and HTTP/1.1 on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from carelake.stack.parts import free_port
from carelake_simulator.model import FeedFile, FeedRecord
from carelake_simulator.replay import (
    HL7_CONTENT_TYPE,
    Pace,
    Pacer,
    ReplayError,
    ReplayStats,
    TargetUnreachableError,
    parse_ack,
    parse_rate,
    parse_speed,
    replay_http,
    replay_kafka,
    replay_mllp,
)

T0 = datetime(2026, 1, 15, 8, 0, tzinfo=UTC)


# ---- helpers ----------------------------------------------------------------------------------


def hl7(source: str, msg_id: str, mrn: str, trigger: str = "ADT^A01^ADT_A01") -> bytes:
    return (f"MSH|^~\\&|{source.upper()}|CARELAKE_MC|CARELAKE|CARELAKE|20260115080000+0000||{trigger}|"
            f"{msg_id}|P|2.5.1\rPID|1||{mrn}^^^{source.upper()}^MR\r").encode()


def hl7_records(source: str, n: int, keys: int, start: int = 0) -> list[FeedRecord]:
    out = []
    for i in range(start, start + n):
        mrn = f"{source[:1].upper()}{i % keys:05d}"
        msg_id = f"{source.upper()}{i:06d}"
        out.append(FeedRecord(source=source, kind="ADT^A01", message_id=msg_id,
                              event_time=T0 + timedelta(seconds=i), sent_time=T0 + timedelta(seconds=i, milliseconds=5),
                              key=f"{source}|{mrn}", payload=hl7(source, msg_id, mrn),
                              content_type=HL7_CONTENT_TYPE))
    return out


def wearable(i: int) -> FeedRecord:
    return FeedRecord(source="wearables", kind="wearable", message_id=f"R{i:06d}",
                      event_time=T0 + timedelta(seconds=i), sent_time=T0 + timedelta(seconds=i),
                      key=f"DEV{i % 3:04d}", payload=b'{"metric":"heart_rate","value":72}',
                      content_type="application/json")


def x12_file(name: str = "claims_837p_20260115.x12", size: int = 3_000_000) -> FeedFile:
    body = (b"ISA*00*          *00*          *ZZ*CARELAKE*ZZ*PAYER*260115*2000*^*00501*000000001*0*P*:~"
            + b"CLM*C1*100***11:B:1*Y*A*Y*Y~" * (size // 29))
    return FeedFile(source="claims", name=name, kind="837P", sent_time=T0 + timedelta(hours=12),
                    payload=body, content_type="application/edi-x12")


def msh10(message: bytes) -> str:
    return message.split(b"\r", 1)[0].decode().split("|")[9]


def pid3(message: bytes) -> str:
    pid = next(seg for seg in message.split(b"\r") if seg.startswith(b"PID|"))
    return pid.decode().split("|")[3].split("^")[0]


# ---- a small MLLP listener --------------------------------------------------------------------


class MllpListener(socketserver.ThreadingTCPServer):
    """Reads framed messages, answers AA (AE when MSH-10 ends in 7) with MSA-2 = MSH-10.

    ``drop_at``: close the connection without an ACK when the n-th message arrives (once).
    ``never_ack``: MSH-10s never answered (the sender times out).
    ``wrong_msa2``: MSH-10s answered with another control id.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, drop_at: int | None = None, never_ack: frozenset[str] = frozenset(),
                 wrong_msa2: frozenset[str] = frozenset(), ae_on_7: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), MllpHandler)
        self.lock = threading.Lock()
        self.received: list[tuple[int, str, str]] = []  # (connection number, MSH-10, MRN)
        self.connections = 0
        self.drop_at, self.dropped = drop_at, False
        self.never_ack, self.wrong_msa2, self.ae_on_7 = never_ack, wrong_msa2, ae_on_7

    @property
    def port(self) -> int:
        return self.server_address[1]


class MllpHandler(socketserver.BaseRequestHandler):
    server: MllpListener

    def handle(self) -> None:
        with self.server.lock:
            self.server.connections += 1
            conn = self.server.connections
        buffer = b""
        while True:
            end = buffer.find(b"\x1c\x0d")
            if end < 0:
                chunk = self.request.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                continue
            frame, buffer = buffer[:end], buffer[end + 2:]
            message = frame[frame.index(b"\x0b") + 1:]
            control = msh10(message)
            with self.server.lock:
                self.server.received.append((conn, control, pid3(message)))
                drop = (self.server.drop_at is not None and not self.server.dropped
                        and len(self.server.received) == self.server.drop_at)
                self.server.dropped |= drop
            if drop:
                self.request.shutdown(socket.SHUT_RDWR)
                return
            if control in self.server.never_ack:
                continue
            code = "AE" if self.server.ae_on_7 and control.endswith("7") else "AA"
            answered = "WRONG" + control if control in self.server.wrong_msa2 else control
            ack = (f"MSH|^~\\&|CARELAKE|CARELAKE|EPIC|CARELAKE_MC|20260115080001+0000||ACK^A01^ACK|"
                   f"A{control}|P|2.5.1\rMSA|{code}|{answered}\r")
            self.request.sendall(b"\x0b" + ack.encode() + b"\x1c\x0d")


@pytest.fixture
def mllp() -> Iterator[type[MllpListener]]:
    servers: list[MllpListener] = []

    def start(**kwargs) -> MllpListener:  # type: ignore[no-untyped-def]
        server = MllpListener(**kwargs)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        server.shutdown()
        server.server_close()


# ---- a small HTTP gateway ---------------------------------------------------------------------


class Gateway(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), GatewayHandler)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class GatewayHandler(http.server.BaseHTTPRequestHandler):
    server: Gateway
    protocol_version = "HTTP/1.1"  # keep-alive, like a real gateway
    disable_nagle_algorithm = True  # headers and body go in two writes

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.requests.append((self.path, dict(self.headers.items()), body))
        if self.path.startswith("/gw/v1/files/"):
            status = 202
        elif b"BADMSG" in body:
            status = 400
        else:
            status = 201
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    server = Gateway()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


# ---- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, per_second", [
    ("2000/s", 2000.0), ("500/min", 500 / 60), ("120000/h", 120000 / 3600), (" 2.5 / sec ", 2.5),
    ("60/minute", 1.0), ("7200/hour", 2.0), ("10/S", 10.0),
])
def test_parse_rate(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["", "2000", "fast", "2000/day", "/s", "-5/s", "0/s", "1e3/s", "2000/s/s"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="rate must"):
        parse_rate(text)


@pytest.mark.parametrize("text, factor", [("3600x", 3600.0), ("1x", 1.0), ("0.5x", 0.5), ("60", 60.0), ("10X", 10.0)])
def test_parse_speed(text: str, factor: float) -> None:
    assert parse_speed(text) == factor


@pytest.mark.parametrize("text", ["", "x", "fast", "0x", "-2x", "3600xx", "2000/s"])
def test_parse_speed_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="speed must"):
        parse_speed(text)


def test_pace_takes_one_or_neither() -> None:
    assert Pace() == Pace(None, None)
    with pytest.raises(ValueError, match="not both"):
        Pace(rate=10, speed=10)
    with pytest.raises(ValueError, match="positive"):
        Pace(rate=0)


def test_parse_ack() -> None:
    assert parse_ack(b"MSH|^~\\&|A|B|C|D|20260115||ACK|X1|P|2.5.1\rMSA|AA|MSG00001\r") == ("AA", "MSG00001")
    assert parse_ack(b"\x0bMSH#^~\\&#A\rMSA#CR#M9\r\x1c\x0d") == ("CR", "M9")
    assert parse_ack(b"MSH|^~\\&|A\nMSA|AE|M2|bad segment\n") == ("AE", "M2")
    assert parse_ack(b"garbage") == (None, None)


# ---- pacing with a fake clock -----------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_rate_spaces_items_evenly() -> None:
    clock = FakeClock()
    pacer = Pacer(Pace(rate=100), clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(1000):
        pacer.wait()
        times.append(clock.now)
    assert times[-1] == pytest.approx(10.0, abs=0.1)  # 1000 items at 100/s: ~10 s
    assert times == sorted(times)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) == pytest.approx(0.01)
    burst = sum(1 for t in times if t == 0.0)
    assert 1 <= burst <= 10  # a small burst at the start, then smooth
    assert all(g == pytest.approx(0.01) for g in gaps[burst:])


def test_rate_refills_after_a_pause_but_only_up_to_the_burst() -> None:
    clock = FakeClock()
    pacer = Pacer(Pace(rate=10), clock=clock, sleep=clock.sleep, burst=3)
    assert [pacer.delay() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pacer.delay() == pytest.approx(0.1)  # reserved, not slept: the schedule runs ahead
    assert pacer.delay() == pytest.approx(0.2)
    clock.now += 60  # a long pause refills the bucket to 3, not 600
    assert [pacer.delay() for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.1)]


def test_speed_maps_an_hour_to_a_second() -> None:
    clock = FakeClock()
    clock.now = 1234.5  # any start
    pacer = Pacer(Pace(speed=3600), clock=clock, sleep=clock.sleep)
    sent = [T0 + timedelta(seconds=36 * i) for i in range(101)]  # one hour of send times
    times = []
    for s in sent:
        pacer.wait(s)
        times.append(clock.now - 1234.5)
    assert times[0] == 0.0
    assert times[-1] == pytest.approx(1.0)
    assert times == pytest.approx([0.01 * i for i in range(101)])
    assert times == sorted(times)


def test_speed_sends_a_late_item_at_once_and_keeps_order() -> None:
    clock = FakeClock()
    pacer = Pacer(Pace(speed=60), clock=clock, sleep=clock.sleep)
    pacer.wait(T0)
    pacer.wait(T0 + timedelta(minutes=1))  # one second later
    assert clock.now == pytest.approx(1.0)
    assert pacer.wait(T0 + timedelta(seconds=30)) == 0.0  # earlier than the one before: no wait, no reorder
    assert pacer.wait(T0 + timedelta(minutes=2)) == pytest.approx(1.0)


def test_no_pace_never_waits() -> None:
    clock = FakeClock()
    pacer = Pacer(Pace(), clock=clock, sleep=clock.sleep)
    assert all(pacer.wait(T0 + timedelta(hours=i)) == 0.0 for i in range(100))
    assert clock.sleeps == []


def test_stats_rate() -> None:
    assert ReplayStats(sent=500, failed=0, by_source={}, by_outcome={}, seconds=2.0, bytes=0).rate == 250.0
    assert ReplayStats().rate == 0.0


# ---- MLLP ---------------------------------------------------------------------------------------


def _per_key(received: list[tuple[int, str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for _, control, mrn in received:
        out[mrn].append(control)
    return out


def test_mllp_delivers_every_message_once_in_per_key_order(mllp) -> None:  # type: ignore[no-untyped-def]
    server = mllp()
    records = hl7_records("ehr", 200, keys=23) + hl7_records("lab", 100, keys=11, start=200)
    items = [*records[:150], wearable(1), x12_file(size=1000), *records[150:]]
    stats = replay_mllp(items, "127.0.0.1", server.port, progress=False, connections=4, timeout_s=5)

    sent_ids = [r.message_id for r in records]
    assert Counter(c for _, c, _ in server.received) == Counter(sent_ids)  # each exactly once
    expected: dict[str, list[str]] = defaultdict(list)
    for r in records:
        expected[r.key.split("|")[1]].append(r.message_id)
    assert _per_key(server.received) == expected  # one patient's messages in order
    per_key_conns = defaultdict(set)
    for conn, _, mrn in server.received:
        per_key_conns[mrn].add(conn)
    assert all(len(c) == 1 for c in per_key_conns.values())  # one patient, one connection
    assert len({conn for conn, _, _ in server.received}) > 1  # several connections in use
    assert server.connections == 4

    rejected = sum(1 for i in sent_ids if i.endswith("7"))
    assert stats.by_outcome == {"AA": 300 - rejected, "AE": rejected, "skipped_file": 1, "skipped_not_hl7": 1}
    assert (stats.sent, stats.failed) == (300 - rejected, rejected)
    assert stats.by_source == {"ehr": 200, "lab": 100}
    assert stats.bytes == sum(len(r.payload) for r in records)
    assert stats.seconds > 0 and stats.rate > 0


def test_mllp_resends_after_a_dropped_connection(mllp) -> None:  # type: ignore[no-untyped-def]
    server = mllp(drop_at=57, ae_on_7=False)
    records = hl7_records("ehr", 150, keys=10)
    stats = replay_mllp(records, "127.0.0.1", server.port, progress=False, connections=3, timeout_s=5)

    arrivals = Counter(c for _, c, _ in server.received)
    dropped = server.received[56][1]
    assert server.dropped
    assert set(arrivals) == {r.message_id for r in records}  # everything arrived
    assert arrivals[dropped] == 2 and sum(arrivals.values()) == 151  # only the unacknowledged one twice
    assert server.connections == 4  # three, and one reconnect
    assert (stats.sent, stats.failed) == (150, 0)
    assert stats.by_outcome == {"AA": 150}
    # the resend kept the patient's order: its first arrival and its resend are adjacent for that key
    for mrn, ids in _per_key(server.received).items():
        deduped = [c for i, c in enumerate(ids) if i == 0 or ids[i - 1] != c]
        assert deduped == [r.message_id for r in records if r.key == f"ehr|{mrn}"]


def test_mllp_counts_timeouts_and_control_id_mismatches(mllp) -> None:  # type: ignore[no-untyped-def]
    records = hl7_records("ehr", 20, keys=4)
    server = mllp(never_ack=frozenset({records[5].message_id}),
                  wrong_msa2=frozenset({records[8].message_id}), ae_on_7=False)
    stats = replay_mllp(records, "127.0.0.1", server.port, progress=False, connections=2, timeout_s=0.3)

    assert stats.by_outcome == {"AA": 19, "timeout": 1, "msa2_mismatch": 1}
    assert (stats.sent, stats.failed) == (18, 2)
    arrivals = Counter(c for _, c, _ in server.received)
    assert arrivals[records[5].message_id] == 2  # sent, timed out, resent once on a new connection
    assert all(arrivals[r.message_id] == 1 for r in records if r is not records[5])


def test_mllp_paced_by_rate(mllp) -> None:  # type: ignore[no-untyped-def]
    server = mllp(ae_on_7=False)
    stats = replay_mllp(hl7_records("ehr", 30, keys=5), "127.0.0.1", server.port, pace=Pace(rate=100),
                        progress=False, connections=2)
    assert stats.sent == 30
    assert stats.seconds >= 0.25  # 29 gaps of 10 ms, less a burst of 5


def test_mllp_unreachable_raises_a_clear_error() -> None:
    port = free_port()
    before = threading.active_count()
    with pytest.raises(TargetUnreachableError) as info:
        replay_mllp(hl7_records("ehr", 3, keys=1), "127.0.0.1", port, progress=False)
    assert str(info.value) == f"cannot reach MLLP listener at 127.0.0.1:{port}: connection refused"
    assert isinstance(info.value, ReplayError) and isinstance(info.value, ConnectionError)
    assert threading.active_count() == before  # failed before any worker started


# ---- HTTP ---------------------------------------------------------------------------------------


def test_http_posts_messages_and_whole_files(gateway: Gateway) -> None:
    records = hl7_records("ehr", 60, keys=7) + hl7_records("lab", 40, keys=5, start=60)
    bad = FeedRecord(source="lab", kind="ORU^R01", message_id="LABBAD", event_time=T0, sent_time=T0,
                     key="lab|L00000", payload=b"BADMSG not hl7", content_type=HL7_CONTENT_TYPE)
    files = [x12_file(), FeedFile(source="pharmacy", name="pharmacy_dispenses_20260115.csv", kind="pharmacy_csv",
                                  sent_time=T0, payload=b"rx_number,ndc\nRX1,00002-1433-80\n",
                                  content_type="text/csv")]
    items = [*records[:50], files[0], wearable(3), bad, *records[50:], files[1]]
    stats = replay_http(items, gateway.url + "/gw/", progress=False, workers=3)

    by_path = Counter(path for path, _, _ in gateway.requests)
    assert by_path == {"/gw/v1/messages/ehr": 60, "/gw/v1/messages/lab": 41, "/gw/v1/messages/wearables": 1,
                       "/gw/v1/files/claims": 1, "/gw/v1/files/pharmacy": 1}
    assert stats.by_outcome == {"201": 101, "400": 1, "202": 2}
    assert (stats.sent, stats.failed) == (103, 1)
    assert stats.by_source == {"ehr": 60, "lab": 41, "wearables": 1, "claims": 1, "pharmacy": 1}
    assert stats.bytes == sum(len(i.payload) for i in items)

    messages = {h["X-Message-Id"]: (h, body) for path, h, body in gateway.requests if "/messages/" in path}
    for r in [*records, bad, wearable(3)]:
        headers, body = messages[r.message_id]
        assert body == r.payload
        assert headers["Content-Type"] == r.content_type
        assert datetime.fromisoformat(headers["X-Event-Time"]) == r.event_time
        assert datetime.fromisoformat(headers["X-Sent-Time"]) == r.sent_time
        assert headers["X-Event-Time"].endswith("+00:00")

    received_files = {h["X-File-Name"]: (path, h, body) for path, h, body in gateway.requests if "/files/" in path}
    for f in files:
        path, headers, body = received_files[f.name]
        assert body == f.payload  # whole, byte for byte (3 MB for the 837)
        assert headers["Content-Type"] == f.content_type
        assert int(headers["Content-Length"]) == len(f.payload)

    order: dict[str, list[str]] = defaultdict(list)
    for _, h, body in gateway.requests:
        if "X-Message-Id" in h and h["X-Message-Id"].startswith(("EHR", "LAB0")):
            order[pid3(body)].append(h["X-Message-Id"])
    expected: dict[str, list[str]] = defaultdict(list)
    for r in records:
        expected[r.key.split("|")[1]].append(r.message_id)
    assert order == expected  # one patient's messages in order


def test_http_unreachable_raises_a_clear_error() -> None:
    port = free_port()
    with pytest.raises(TargetUnreachableError,
                       match=rf"^cannot reach HTTP gateway at http://127\.0\.0\.1:{port}: connection refused$"):
        replay_http([wearable(1)], f"http://127.0.0.1:{port}", progress=False)


def test_http_rejects_a_bad_base_url() -> None:
    with pytest.raises(ValueError, match="base URL"):
        replay_http([], "127.0.0.1:8080", progress=False)


def test_kafka_unreachable_raises_a_clear_error() -> None:
    from carelake.config import settings
    from carelake.topics import load_catalog

    port = free_port()
    catalog = load_catalog(settings().topic_catalog, "tunreachable.")
    with pytest.raises(TargetUnreachableError, match=rf"^cannot reach Kafka at 127\.0\.0\.1:{port}: "):
        replay_kafka(hl7_records("ehr", 1, keys=1), f"127.0.0.1:{port}", catalog, progress=False, timeout_s=1.5)
