"""The MLLP listener against the real local stack: Kafka (acks=all), Redis (re-delivery), real sockets.

Each test runs the listener on its own event loop in a background thread (port 0) and talks to it
the way a hospital interface engine would: the simulator's MLLP replayer, or a plain socket for
the bad input. Control ids get a per-test suffix so a re-run is new traffic to the Redis dedup.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import re
import socket
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import hl7
import pytest
from confluent_kafka import KafkaException
from prometheus_client import REGISTRY

from carelake.bronze.store import BronzeStore, open_store
from carelake.config import Settings
from carelake.serde import SchemaRegistry
from carelake.stream.admin import create_topics
from carelake.stream.runtime import Runner, RunnerConfig
from carelake.stream.selftest import count, read_topic
from carelake.topics import Catalog
from carelake_ingest_gateway.archiver import build_archiver
from carelake_ingest_gateway.hl7_ack import frame
from carelake_ingest_gateway.intake import RAW_TOPIC, Intake
from carelake_ingest_gateway.ledger import Ledger
from carelake_ingest_gateway.mllp import MllpServer
from carelake_simulator.model import FeedRecord
from carelake_simulator.replay import parse_ack, replay_mllp
from carelake_simulator.simulate import SimConfig, simulate

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
ROUTE = {"SUNQUEST": "lab", "EPIC": "ehr"}  # MSH-3 -> source, for the one-port-many-sources setup


# ---- the listener on a background loop --------------------------------------------------------------


class Gateway:
    """An MllpServer running on its own event loop in a thread."""

    def __init__(self, intake: Intake, source_for: str | Callable, **options: object) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mllp-test-loop", daemon=True)
        self.thread.start()
        self.server = MllpServer(intake, source_for, HOST, 0, **options)  # type: ignore[arg-type]
        self.call(self.server.start())

    @property
    def port(self) -> int:
        return self.server.port

    def call(self, coro, timeout: float = 30):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.call(self.server.stop(grace_s=10))

    def shutdown(self) -> None:
        try:
            self.stop()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def intake(stack: Settings, catalog: Catalog) -> Iterator[Intake]:
    create_topics(catalog, stack.bootstrap)
    door = Intake(stack.bootstrap, catalog, stack.redis)
    yield door
    door.close()


@pytest.fixture
def gateway(intake: Intake) -> Iterator[Callable[..., Gateway]]:
    """``gateway(source_for="lab", **MllpServer options)``; every listener started is stopped after."""
    started: list[Gateway] = []

    def make(source_for: str | Callable = "lab", **options: object) -> Gateway:
        gw = Gateway(intake, source_for, **options)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.shutdown()


@pytest.fixture(scope="module")
def feed() -> list[FeedRecord]:
    """~300 real HL7 v2 messages from the simulator: lab and EHR, none planted as malformed."""
    sim = simulate(SimConfig(patients=5000, seed=5))
    items = [r for r in sim.records if r.source in ("lab", "ehr")
             and not any("malformed" in d for d in r.defects)]
    assert 250 <= len(items) <= 400
    return items


def fresh(item: FeedRecord, token: str) -> FeedRecord:
    """The same message under a control id of its own (MSH-10 + token); all other bytes unchanged."""
    head, sep, rest = item.payload.partition(b"\r")
    fields = head.split(b"|")
    assert fields[9].decode() == item.message_id
    fields[9] += f".{token}".encode()
    return dataclasses.replace(item, payload=b"|".join(fields) + sep + rest, message_id=fields[9].decode())


# ---- a plain MLLP client ------------------------------------------------------------------------------


class Client:
    def __init__(self, port: int, timeout_s: float = 15.0, context: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection((HOST, port), timeout=timeout_s)
        self.sock = context.wrap_socket(sock, server_hostname="localhost") if context else sock
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def ack(self) -> bytes:
        """The next ACK (between the blocks); fails on timeout or close."""
        while b"\x1c\x0d" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the listener; unread {self.buffer!r}")
            self.buffer += chunk
        answer, _, self.buffer = self.buffer.partition(b"\x1c\x0d")
        assert answer.startswith(b"\x0b"), answer
        return answer[1:]

    def roundtrip(self, payload: bytes) -> bytes:
        self.send(frame(payload))
        return self.ack()

    def closed_by_listener(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return False

    def close(self) -> None:
        self.sock.close()


def msa(answer: bytes) -> tuple[str | None, str | None]:
    return parse_ack(answer)


def err(answer: bytes) -> tuple[str, str]:
    """(ERR-3 error code, ERR-8 user message, unescaped)."""
    msg = hl7.parse(answer.decode())
    return msg.extract_field("ERR", 1, 3, 1, 1), msg.unescape(str(msg.segment("ERR")[8]))


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def on_topic(stack: Settings, catalog: Catalog) -> int:
    """Envelopes on the raw topic; a just-created topic's leaders may take a moment to be known."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return count(stack.bootstrap, catalog.physical(RAW_TOPIC))
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def decoded(stack: Settings, catalog: Catalog, expected: int) -> list[tuple[int, int, bytes, dict]]:
    """(partition, offset, key, envelope) of the raw topic's messages, in partition/offset order."""
    registry = SchemaRegistry.load()
    messages = read_topic(stack.bootstrap, catalog.physical(RAW_TOPIC), expected, timeout_s=60)
    out = [(m.partition(), m.offset(), m.key(), registry.decode(m.value())[1]) for m in messages]
    return sorted(out, key=lambda t: (t[0], t[1]))


def patient_key(source: str, payload: bytes) -> str:
    return f"{source}|{hl7.parse(payload.decode()).extract_field('PID', 1, 3, 1, 1)}"


def lab_message(feed: list[FeedRecord], token: str, index: int = 0) -> bytes:
    return fresh([r for r in feed if r.source == "lab"][index], token).payload


# ---- the simulator's traffic ----------------------------------------------------------------------


def test_simulator_hl7_over_four_connections_is_acknowledged_once_durable(
        gateway: Callable[..., Gateway], feed: list[FeedRecord], stack: Settings, catalog: Catalog,
        unique: str) -> None:
    gw = gateway(lambda msh: ROUTE.get(msh.sending_app))  # one port, two sources by MSH-3
    items = [fresh(r, unique) for r in feed]
    by_source = defaultdict(int)
    for item in items:
        by_source[item.source] += 1
    before = {s: sample("carelake_mllp_acks_total", source=s, code="AA") for s in by_source}

    stats = replay_mllp(items, HOST, gw.port, progress=False, connections=4, timeout_s=30)

    # Every message answered AA with MSA-2 = its MSH-10 (the replayer checks MSA-2 per message).
    assert stats.sent == len(items), stats.by_outcome
    assert stats.by_outcome == {"AA": len(items)}
    assert on_topic(stack, catalog) == len(items)
    for source, n in by_source.items():
        assert sample("carelake_mllp_acks_total", source=source, code="AA") - before[source] == n

    envelopes = decoded(stack, catalog, len(items))
    assert len(envelopes) == len(items)
    sent = {item.message_id: item for item in items}
    seen: dict[bytes, list[str]] = defaultdict(list)
    for _, _, key, env in envelopes:
        item = sent[env["source_message_id"]]
        assert env["payload"] == item.payload  # byte-identical
        assert env["sha256"] == hashlib.sha256(item.payload).hexdigest()
        assert env["byte_length"] == len(item.payload)
        assert (env["source"], env["format"]) == (item.source, "hl7v2")
        assert env["source_patient_key"] == patient_key(item.source, item.payload)
        assert env["content_type"] == "x-application/hl7-v2+er7"
        assert env["headers"]["transport"] == "mllp"
        assert env["replayed"] is False
        assert key == env["source_patient_key"].encode()
        seen[key].append(env["source_message_id"])
    # One patient's messages share a connection and a partition: the topic holds them in send order.
    sent_order: dict[bytes, list[str]] = defaultdict(list)
    for item in items:
        sent_order[patient_key(item.source, item.payload).encode()].append(item.message_id)
    assert seen == sent_order


def test_pipelined_frames_are_answered_and_stored_in_send_order(
        gateway: Callable[..., Gateway], feed: list[FeedRecord], stack: Settings, catalog: Catalog,
        unique: str) -> None:
    gw = gateway("lab")
    base = [r for r in feed if r.source == "lab"][0]
    items = [fresh(base, f"{unique}.{i:02d}") for i in range(30)]  # one patient, 30 messages
    client = Client(gw.port)
    try:
        client.send(b"".join(frame(i.payload) for i in items))  # all at once, without waiting
        answers = [msa(client.ack()) for _ in items]
    finally:
        client.close()
    assert answers == [("AA", i.message_id) for i in items]
    envelopes = decoded(stack, catalog, len(items))
    assert [env["source_message_id"] for *_, env in envelopes] == [i.message_id for i in items]
    assert len({p for p, *_ in envelopes}) == 1


# ---- bad input --------------------------------------------------------------------------------------


def test_bad_input_is_answered_and_the_connection_keeps_working(
        gateway: Callable[..., Gateway], feed: list[FeedRecord], stack: Settings, catalog: Catalog,
        unique: str) -> None:
    gw = gateway("lab", max_frame=64 * 1024)
    port = str(gw.port)
    good = [lab_message(feed, f"{unique}.{i}") for i in range(4)]
    control = [g.split(b"\r")[0].split(b"|")[9].decode() for g in good]
    rejected = sample("carelake_intake_total", source="lab", format="?", transport="mllp", outcome="bad_hl7v2")
    client = Client(gw.port)
    try:
        # Garbage bytes outside any frame: skipped to the next start block, counted, not answered.
        junk_before = sample("carelake_mllp_protocol_errors_total", port=port, kind="junk")
        client.send(b"\x00\x01 GET / HTTP/1.1\r\nHost: x\r\n\r\n" + frame(good[0]))
        assert msa(client.ack()) == ("AA", control[0])
        assert sample("carelake_mllp_protocol_errors_total", port=port, kind="junk") == junk_before + 1

        # A frame whose MSH cannot be read: AR, ERR 102, and nothing to echo in MSA-2.
        for payload in (b"\x89PNG\r\n\x1a\n not hl7 at all", b"MSH|^~\\&|APP\rPID|1\r", b"",
                        b"MSH|BILLING|CARELAKE_MC|CARELAKE|CARELAKE|20260115||DFT^P03^DFT_P03|B1|P|2.5.1\r"):
            answer = client.roundtrip(payload)
            assert msa(answer) == ("AR", None), payload
            assert err(answer) == ("102", "unparseable MSH segment")

        # A version we do not speak: AR, ERR 203, MSA-2 = its control id.
        v99 = good[1].replace(b"|2.5.1|", b"|9.9|", 1)
        answer = client.roundtrip(v99)
        assert msa(answer) == ("AR", control[1])
        code, text = err(answer)
        assert code == "203" and "unsupported HL7 version '9.9'" in text
        assert hl7.parse(answer.decode()).segment("MSH")[12][0] == "2.5.1"

        # MSH-10 empty: AR, ERR 101.
        no_id = good[1].replace(control[1].encode(), b"", 1)
        answer = client.roundtrip(no_id)
        assert msa(answer) == ("AR", None)
        assert err(answer)[0] == "101"

        assert msa(client.roundtrip(good[1])) == ("AA", control[1])

        # A frame over the limit: AR "too large" (MSA-2 read from its head), the rest discarded.
        big = good[2] + b"NTE|1||" + b"x" * (100 * 1024) + b"\r"
        answer = client.roundtrip(big)
        assert msa(answer) == ("AR", control[2])
        assert "too large" in err(answer)[1]
        assert msa(client.roundtrip(good[2])) == ("AA", control[2])
    finally:
        client.close()

    # A new connection works too, and only the accepted messages are on the topic.
    client = Client(gw.port)
    try:
        assert msa(client.roundtrip(good[3])) == ("AA", control[3])
    finally:
        client.close()
    assert on_topic(stack, catalog) == 4
    assert sample("carelake_mllp_acks_total", source="lab", code="AR") >= 7
    # Every rejection is counted as an intake outcome too: four unreadable MSHs, version 9.9, no MSH-10.
    assert sample("carelake_intake_total", source="lab", format="?", transport="mllp",
                  outcome="bad_hl7v2") == rejected + 6


def test_truncated_frame_is_never_acknowledged(
        gateway: Callable[..., Gateway], feed: list[FeedRecord], stack: Settings, catalog: Catalog,
        unique: str) -> None:
    gw = gateway("lab")
    port = str(gw.port)
    first, second, third = (lab_message(feed, f"{unique}.{i}") for i in range(3))
    truncated = sample("carelake_mllp_protocol_errors_total", port=port, kind="truncated")

    client = Client(gw.port)
    client.send(frame(first)[:-40])  # the sender dies mid-message
    client.close()
    wait_for(lambda: sample("carelake_mllp_protocol_errors_total", port=port, kind="truncated") == truncated + 1)
    assert on_topic(stack, catalog) == 0

    # A sender that gives up on a frame and starts over on the same connection: one answer, for the new one.
    client = Client(gw.port)
    try:
        client.send(frame(second)[:-40] + frame(third))
        assert msa(client.ack()) == ("AA", third.split(b"|")[9].decode())
        assert msa(client.roundtrip(first)) == ("AA", first.split(b"|")[9].decode())
    finally:
        client.close()
    assert sample("carelake_mllp_protocol_errors_total", port=port, kind="truncated") == truncated + 2
    assert on_topic(stack, catalog) == 2


def test_redelivery_of_identical_bytes_is_acknowledged_not_stored_twice(
        gateway: Callable[..., Gateway], feed: list[FeedRecord], stack: Settings, catalog: Catalog,
        unique: str, tmp_path: Path) -> None:
    gw = gateway("lab")
    payload = lab_message(feed, unique)
    control = payload.split(b"|")[9].decode()
    redeliveries = sample("carelake_bronze_redeliveries_total", source="lab")
    client = Client(gw.port)
    try:
        assert msa(client.roundtrip(payload)) == ("AA", control)
        assert msa(client.roundtrip(payload)) == ("AA", control)  # the sender missed our ACK and resends
    finally:
        client.close()
    client = Client(gw.port)
    try:
        assert msa(client.roundtrip(payload)) == ("AA", control)  # ...or resends after reconnecting
    finally:
        client.close()
    # Every copy is acknowledged on the topic (the ACK waits for the broker alone); the archiver
    # recognises the re-deliveries by raw id and stores the bytes once.
    assert on_topic(stack, catalog) == 3
    store = open_store(Settings(home=tmp_path, bronze_dir=tmp_path / "bronze"))
    ledger = Ledger(stack.redis, catalog.physical(RAW_TOPIC))
    archiver = Runner(build_archiver(store, ledger, name=f"{unique}-archiver"), catalog,
                      RunnerConfig(bootstrap=stack.bootstrap, batch_size=1))  # one copy per batch: the ledger decides
    thread = threading.Thread(target=archiver.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while archiver.committed_messages < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    archiver.stop()
    thread.join(30)
    try:
        assert archiver.committed_messages == 3
        segments = [o for o in store.list("lab/") if o.key.endswith(".seg")]
        assert [store.get(o.key) for o in segments] == [payload]
        assert sample("carelake_bronze_redeliveries_total", source="lab") == redeliveries + 2
    finally:
        ledger.forget_scope()


# ---- modes, routing, lifecycle -------------------------------------------------------------------------


def test_enhanced_mode_answers_commit_acks(
        gateway: Callable[..., Gateway], feed: list[FeedRecord], unique: str) -> None:
    gw = gateway("lab", enhanced=True)
    payload = lab_message(feed, unique)
    control = payload.split(b"|")[9].decode()
    client = Client(gw.port)
    try:
        assert msa(client.roundtrip(payload)) == ("CA", control)
        answer = client.roundtrip(payload.replace(b"|2.5.1|", b"|9.9|", 1))
        assert msa(answer) == ("CR", control)
        assert err(answer)[0] == "203"
    finally:
        client.close()


def test_a_message_no_source_claims_is_rejected(
        gateway: Callable[..., Gateway], feed: list[FeedRecord], stack: Settings, catalog: Catalog,
        unique: str) -> None:
    gw = gateway(lambda msh: ROUTE.get(msh.sending_app))
    payload = lab_message(feed, unique).replace(b"|SUNQUEST|", b"|SOMEONE_ELSE|", 1)
    client = Client(gw.port)
    try:
        answer = client.roundtrip(payload)
        assert msa(answer)[0] == "AR"
        code, text = err(answer)
        assert code == "207" and "SOMEONE_ELSE" in text
    finally:
        client.close()
    assert on_topic(stack, catalog) == 0


def test_idle_connections_are_closed_and_counted(gateway: Callable[..., Gateway]) -> None:
    gw = gateway("lab", idle_timeout_s=0.3)
    port = str(gw.port)
    idle = sample("carelake_mllp_protocol_errors_total", port=port, kind="idle_timeout")
    client = Client(gw.port, timeout_s=5)
    try:
        wait_for(lambda: sample("carelake_mllp_connections", port=port) == 1)
        assert client.closed_by_listener()
    finally:
        client.close()
    wait_for(lambda: sample("carelake_mllp_connections", port=port) == 0)
    assert sample("carelake_mllp_protocol_errors_total", port=port, kind="idle_timeout") == idle + 1


def test_stop_answers_what_it_took_and_takes_nothing_more(
        gateway: Callable[..., Gateway], feed: list[FeedRecord], stack: Settings, catalog: Catalog,
        unique: str) -> None:
    gw = gateway("lab")
    items = [fresh([r for r in feed if r.source == "lab"][0], f"{unique}.{i:02d}") for i in range(200)]
    acked = sample("carelake_mllp_acks_total", source="lab", code="AA")
    idle = Client(gw.port)
    busy = Client(gw.port)
    try:
        busy.send(b"".join(frame(i.payload) for i in items))
        wait_for(lambda: sample("carelake_mllp_acks_total", source="lab", code="AA") > acked)
        gw.stop()  # mid-stream: the message in hand is finished and answered, the rest left unanswered
        answers = []
        while True:
            try:
                answers.append(msa(busy.ack()))
            except ConnectionError:
                break
        assert idle.closed_by_listener()
    finally:
        idle.close()
        busy.close()
    # Whatever was answered was answered AA, in order, and is on the topic; nothing else is.
    assert 1 <= len(answers) < len(items)
    assert answers == [("AA", i.message_id) for i in items[:len(answers)]]
    assert on_topic(stack, catalog) == len(answers)
    with pytest.raises(OSError):
        Client(gw.port, timeout_s=2)


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "mllp.crt", tmp / "mllp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_listener(gateway: Callable[..., Gateway], feed: list[FeedRecord], tmp_path: Path,
                      unique: str) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    gw = gateway("lab", ssl_context=server_ctx)
    payload = lab_message(feed, unique)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client = Client(gw.port, context=client_ctx)
    try:
        assert msa(client.roundtrip(payload)) == ("AA", payload.split(b"|")[9].decode())
    finally:
        client.close()
    with pytest.raises(OSError):  # a plain-TCP sender gets no answer
        plain = Client(gw.port, timeout_s=3)
        try:
            plain.roundtrip(lab_message(feed, unique + "x"))
        finally:
            plain.close()


def test_large_message_travels_whole_and_one_over_the_intake_limit_is_refused(
        gateway: Callable[..., Gateway], feed: list[FeedRecord], stack: Settings, catalog: Catalog,
        intake: Intake, unique: str) -> None:
    gw = gateway("lab")  # max_frame 4 MiB, capped at the intake's own message limit
    large = lab_message(feed, unique) + b"NTE|1||" + b"y" * (300 * 1024) + b"\r"
    over = lab_message(feed, unique + "o") + b"NTE|1||" + b"z" * intake.max_message + b"\r"
    client = Client(gw.port)
    try:
        assert msa(client.roundtrip(large)) == ("AA", large.split(b"|")[9].decode())
        answer = client.roundtrip(over)
        assert msa(answer) == ("AR", over.split(b"|")[9].decode())
        assert "too large" in err(answer)[1]
    finally:
        client.close()
    [(_, _, _, env)] = decoded(stack, catalog, 1)
    assert env["payload"] == large  # above the 256 KiB inline limit of file records, still inline


# ---- quarantine ------------------------------------------------------------------------------------------


@pytest.fixture
def bronze(tmp_path: Path) -> BronzeStore:
    """A real local Bronze store of the test's own."""
    return open_store(Settings(home=tmp_path, bronze_dir=tmp_path / "bronze"))


def quarantined(store: BronzeStore, source: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    """key -> (bytes, metadata) of everything under the source's quarantine prefixes."""
    return {info.key: (store.get(info.key), info.metadata) for info in store.list(f"{source}/")
            if "/quarantine/" in info.key}


def test_refused_frames_are_quarantined_with_their_reason(
        gateway: Callable[..., Gateway], feed: list[FeedRecord], bronze: BronzeStore, stack: Settings,
        catalog: Catalog, unique: str) -> None:
    gw = gateway("lab", max_frame=64 * 1024, store=bronze)
    good = [lab_message(feed, f"{unique}.{i}") for i in range(3)]
    control = [g.split(b"\r")[0].split(b"|")[9].decode() for g in good]
    v99 = good[0].replace(b"|2.5.1|", b"|9.9|", 1)
    no_id = good[1].replace(control[1].encode(), b"", 1)
    big = good[2] + b"NTE|1||" + b"x" * (100 * 1024) + b"\r"
    counted = {r: sample("carelake_quarantined_total", source="lab", transport="mllp", reason=r)
               for r in ("bad_hl7v2", "too_large")}
    client = Client(gw.port)
    try:
        answer = client.roundtrip(v99)
        assert msa(answer) == ("AR", control[0]) and "unsupported HL7 version '9.9'" in err(answer)[1]
        assert err(client.roundtrip(no_id))[0] == "101"
        answer = client.roundtrip(big)
        assert msa(answer) == ("AR", control[2]) and "too large" in err(answer)[1]
        # Unattributable: no readable MSH. Answered as before, not stored.
        assert msa(client.roundtrip(b"MSH|^~\\&|APP\rPID|1\r")) == ("AR", None)
        assert msa(client.roundtrip(good[2])) == ("AA", control[2])  # accepted input is never quarantined
    finally:
        client.close()

    kept = quarantined(bronze, "lab")
    assert len(kept) == 3
    by_bytes = {data: (key, meta) for key, (data, meta) in kept.items()}
    assert set(by_bytes) == {v99, no_id, big[:4096]}  # exactly the bytes received; the oversize frame's head
    for data, (key, meta) in by_bytes.items():
        name = key.rsplit("/", 1)[1]
        assert re.fullmatch(rf"lab/\d{{4}}/\d{{2}}/\d{{2}}/quarantine/mllp-\d{{8}}T\d{{6}}-"
                            rf"{hashlib.sha256(data).hexdigest()[:16]}\.hl7", key), key
        assert name[5:13] == key.split("/")[1] + key.split("/")[2] + key.split("/")[3]  # the key's day, UTC
        assert meta["transport"] == "mllp" and re.fullmatch(r"127\.0\.0\.1:\d+", meta["peer"])
    key, meta = by_bytes[v99]
    assert meta["reason_code"] == "bad_hl7v2" and "unsupported HL7 version '9.9'" in meta["reason"]
    assert (meta["control_id"], meta["complete"], meta["frame_bytes"]) == (control[0], "true", str(len(v99)))
    assert by_bytes[no_id][1]["reason_code"] == "bad_hl7v2" and "MSH-10" in by_bytes[no_id][1]["reason"]
    meta = by_bytes[big[:4096]][1]
    assert (meta["reason_code"], meta["complete"], meta["frame_bytes"]) == ("too_large", "false", str(len(big)))
    assert sample("carelake_quarantined_total", source="lab", transport="mllp",
                  reason="bad_hl7v2") == counted["bad_hl7v2"] + 2
    assert sample("carelake_quarantined_total", source="lab", transport="mllp",
                  reason="too_large") == counted["too_large"] + 1
    assert on_topic(stack, catalog) == 1


def test_frames_no_source_claims_are_not_quarantined(
        gateway: Callable[..., Gateway], feed: list[FeedRecord], bronze: BronzeStore, unique: str) -> None:
    gw = gateway(lambda msh: ROUTE.get(msh.sending_app), store=bronze)
    message = lab_message(feed, unique)
    client = Client(gw.port)
    try:
        assert msa(client.roundtrip(message.replace(b"|SUNQUEST|", b"|SOMEONE_ELSE|", 1)))[0] == "AR"
        assert msa(client.roundtrip(b"\x89PNG\r\n\x1a\n not hl7"))[0] == "AR"
        # Routed by MSH-3 and refused as content: kept under the routed source.
        v99 = message.replace(b"|2.5.1|", b"|9.9|", 1)
        assert msa(client.roundtrip(v99))[0] == "AR"
    finally:
        client.close()
    assert [data for data, _ in quarantined(bronze, "lab").values()] == [v99]
    assert list(bronze.list("")) == list(bronze.list("lab/"))  # nothing filed anywhere else


def test_a_failing_store_still_answers_the_rejection(
        gateway: Callable[..., Gateway], feed: list[FeedRecord], bronze: BronzeStore, unique: str) -> None:
    # A real store failure: an object where the quarantine folder must go (today and tomorrow, for midnight).
    today = dt.datetime.now(dt.UTC)
    for day in (today, today + dt.timedelta(days=1)):
        bronze.put(f"lab/{day:%Y/%m/%d}/quarantine", b"an object in the way")
    gw = gateway("lab", store=bronze)
    good = lab_message(feed, unique)
    control = good.split(b"|")[9].decode()
    errors = sample("carelake_quarantine_errors_total", source="lab", transport="mllp")
    client = Client(gw.port)
    try:
        answer = client.roundtrip(good.replace(b"|2.5.1|", b"|9.9|", 1))
        assert msa(answer) == ("AR", control) and err(answer)[0] == "203"
        assert msa(client.roundtrip(good)) == ("AA", control)  # the connection keeps working
    finally:
        client.close()
    assert sample("carelake_quarantine_errors_total", source="lab", transport="mllp") == errors + 1
    assert quarantined(bronze, "lab") == {}
