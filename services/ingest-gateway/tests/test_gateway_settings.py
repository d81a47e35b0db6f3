"""The gateway's TLS and rate-limit settings: parsing errors, and TLS served on real sockets.

The certificates are made here (self-signed, for localhost and 127.0.0.1, an hour long). The MLLP
and HTTP servers are the gateway's own, built from the settings by the same functions service.py
uses, against the real Kafka and Redis; the last test runs `carelake run ingest-gateway` itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import http.client
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from carelake.auth import hash_key
from carelake.bronze.store import open_store
from carelake.config import Settings, repo_root
from carelake.errors import ConfigError
from carelake.stack.parts import free_port
from carelake.stream.admin import create_topics
from carelake.topics import Catalog
from carelake_ingest_gateway.filesplit import FileBoard, FileTaker
from carelake_ingest_gateway.hl7_ack import frame
from carelake_ingest_gateway.http_api import create_app, make_server
from carelake_ingest_gateway.intake import RAW_TOPIC, Intake
from carelake_ingest_gateway.mllp import MllpServer
from carelake_ingest_gateway.service import parse_rate_limits, tls_from

HOST = "127.0.0.1"
LAB_KEY = "synthetic-lab-key"


def hl7(control_id: str) -> bytes:
    """A small synthetic ORU^R01 (no real person)."""
    return (f"MSH|^~\\&|SUNQUEST|SYNLAB|CARELAKE|CARELAKE|20260115083000||ORU^R01^ORU_R01|{control_id}|P|2.5.1\r"
            "PID|1||SYN000123^^^SYNLAB^MR||TESTPATIENT^ALPHA||19800101|F\r"
            "OBR|1||ORD1|2345-7^Glucose^LN\r"
            "OBX|1|NM|2345-7^Glucose^LN||95|mg/dL|70-99|N|||F\r").encode()


def self_signed(folder: Path, name: str = "gateway") -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


def mllp_roundtrip(port: int, payload: bytes, cafile: Path | None, timeout_s: float = 15) -> bytes:
    """One framed message over TLS (or plain TCP without ``cafile``); the ACK between the blocks."""
    sock = socket.create_connection((HOST, port), timeout=timeout_s)
    if cafile is not None:
        sock = ssl.create_default_context(cafile=str(cafile)).wrap_socket(sock, server_hostname="localhost")
    with sock:
        sock.sendall(frame(payload))
        answer = b""
        while b"\x1c\x0d" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before an ACK; got {answer!r}")
            answer += chunk
    return answer[1:answer.index(b"\x1c\x0d")]


def msa_code(ack: bytes) -> str:
    [msa] = [s for s in ack.split(b"\r") if s.startswith(b"MSA|")]
    return msa.split(b"|")[1].decode()


def https(port: int, cafile: Path, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPSConnection(HOST, port, timeout=30, context=ssl.create_default_context(cafile=str(cafile)))
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


# ---- settings -----------------------------------------------------------------------------------


def test_tls_is_off_unless_both_files_are_set(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    assert tls_from(Settings(home=tmp_path)) == (None, {})
    context, options = tls_from(Settings(home=tmp_path, tls_certfile=cert[0], tls_keyfile=cert[1]))
    assert isinstance(context, ssl.SSLContext) and context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert options == {"ssl_certfile": str(cert[0]), "ssl_keyfile": str(cert[1])}


@pytest.mark.parametrize("which", ["cert", "key"])
def test_one_tls_file_without_the_other_names_both_variables(tmp_path: Path, cert: tuple[Path, Path],
                                                              which: str) -> None:
    settings = Settings(home=tmp_path, tls_certfile=cert[0]) if which == "cert" else \
        Settings(home=tmp_path, tls_keyfile=cert[1])
    with pytest.raises(ConfigError, match="CARELAKE_TLS_CERTFILE and CARELAKE_TLS_KEYFILE") as caught:
        tls_from(settings)
    assert ("only CARELAKE_TLS_CERTFILE" if which == "cert" else "only CARELAKE_TLS_KEYFILE") in str(caught.value)


def test_unusable_tls_files_stop_start_up(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    other_cert, other_key = self_signed(tmp_path, "other")
    for certfile, keyfile in ((tmp_path / "missing.crt", cert[1]), (cert[0], other_key), (cert[1], cert[0])):
        with pytest.raises(ConfigError, match="CARELAKE_TLS_CERTFILE=.*CARELAKE_TLS_KEYFILE="):
            tls_from(Settings(home=tmp_path, tls_certfile=certfile, tls_keyfile=keyfile))
    assert other_cert.exists()


def test_tls_and_drop_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CARELAKE_HOME", str(tmp_path))
    monkeypatch.setenv("CARELAKE_TLS_CERTFILE", "/etc/carelake/tls/tls.crt")
    monkeypatch.setenv("CARELAKE_TLS_KEYFILE", "")  # an empty manifest value means unset
    monkeypatch.setenv("CARELAKE_RATE_LIMITS", "lab=200,ehr=500")
    monkeypatch.setenv("CARELAKE_DROP_POLL_S", "2.5")
    settings = Settings()
    assert (settings.tls_certfile, settings.tls_keyfile) == (Path("/etc/carelake/tls/tls.crt"), None)
    assert parse_rate_limits(settings.rate_limits) == {"lab": 200.0, "ehr": 500.0}
    assert (settings.drop, settings.drop_poll_s) == (tmp_path / "drop", 2.5)
    monkeypatch.setenv("CARELAKE_DROP_DIR", str(tmp_path / "sftp"))
    assert Settings().drop == tmp_path / "sftp"
    with pytest.raises(ConfigError, match="only CARELAKE_TLS_CERTFILE"):
        tls_from(settings)


def test_rate_limits_parse() -> None:
    assert parse_rate_limits("") == {}
    assert parse_rate_limits(" lab=200 , ehr=0.5 ,") == {"lab": 200.0, "ehr": 0.5}


@pytest.mark.parametrize("text", ["lab=0", "lab=-5", "lab=fast", "lab=nan", "lab=inf", "lab=", "lab",
                                  "radiology=10", "lab=10,ehr=1e999"])
def test_bad_rate_limits_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="CARELAKE_RATE_LIMITS"):
        parse_rate_limits(text)


# ---- TLS on real sockets ------------------------------------------------------------------------


@pytest.fixture
def intake(stack: Settings, catalog: Catalog) -> Iterator[Intake]:
    create_topics(catalog, stack.bootstrap)
    door = Intake(stack.bootstrap, catalog, stack.redis)
    yield door
    door.close()


@pytest.mark.integration
def test_mllp_listener_serves_tls_from_the_settings(intake: Intake, tmp_path: Path, cert: tuple[Path, Path],
                                                    unique: str) -> None:
    context, _ = tls_from(Settings(home=tmp_path, tls_certfile=cert[0], tls_keyfile=cert[1]))
    server = MllpServer(intake, "lab", HOST, free_port(), ssl_context=context)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="mllp-tls-test", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(15)
        ack = mllp_roundtrip(server.port, hl7(f"TLS{unique}"), cafile=cert[0])
        assert msa_code(ack) == "AA" and f"|TLS{unique}".encode() in ack
        with pytest.raises((ConnectionError, OSError)):  # plain TCP gets no ACK from a TLS listener
            mllp_roundtrip(server.port, hl7(f"TLS{unique}x"), cafile=None)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(grace_s=5), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.integration
def test_http_api_serves_tls_and_rate_limits_from_the_settings(stack: Settings, catalog: Catalog, intake: Intake,
                                                               tmp_path: Path, cert: tuple[Path, Path],
                                                               unique: str) -> None:
    settings = Settings(home=tmp_path, bronze_dir=tmp_path / "bronze", tls_certfile=cert[0], tls_keyfile=cert[1],
                        rate_limits="lab=0.001")  # one request, then none for ~17 minutes: no race with refill
    _, options = tls_from(settings)
    store = open_store(settings)
    taker = FileTaker(store, stack.bootstrap, catalog, FileBoard(stack.redis, catalog.physical(RAW_TOPIC)))
    app = create_app(intake, store, taker, api_keys={"lab": hash_key(LAB_KEY)},
                     rate_limits=parse_rate_limits(settings.rate_limits))
    server = make_server(app, HOST, free_port(), **options)
    thread = threading.Thread(target=server.run, name="https-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the HTTPS server did not start"
            time.sleep(0.02)
        port = server.config.port
        status, body = https(port, cert[0], "/v1/messages/lab", hl7(f"H{unique}"))
        assert (status, body["error"]) == (401, "unauthorized")
        auth = {"Authorization": f"Bearer {LAB_KEY}", "Content-Type": "x-application/hl7-v2+er7"}
        status, body = https(port, cert[0], "/v1/messages/lab", hl7(f"H{unique}"), auth)
        assert status == 201 and body["message_id"] == f"H{unique}"
        status, body = https(port, cert[0], "/v1/messages/lab", hl7(f"H{unique}2"), auth)
        assert (status, body["error"]) == (429, "rate_limited")
        plain = http.client.HTTPConnection(HOST, port, timeout=10)  # plain HTTP to the TLS port: no answer
        with pytest.raises((http.client.HTTPException, OSError)):
            plain.request("GET", "/healthz")
            plain.getresponse()
        plain.close()
    finally:
        server.should_exit = True
        thread.join(15)
        taker.close()


# ---- the gateway process ------------------------------------------------------------------------------


@pytest.mark.integration
def test_gateway_process_serves_tls_on_mllp_and_http(stack: Settings, catalog: Catalog, tmp_path: Path,
                                                     cert: tuple[Path, Path], unique: str) -> None:
    create_topics(catalog, stack.bootstrap)
    mllp, http_port, metrics = free_port(), free_port(), free_port()
    env = {**os.environ, "CARELAKE_TOPIC_PREFIX": catalog.prefix, "CARELAKE_BRONZE_DIR": str(tmp_path / "bronze"),
           "CARELAKE_MLLP_PORTS": f"lab={mllp}", "CARELAKE_HTTP_PORT": str(http_port),
           "CARELAKE_METRICS_PORT": str(metrics), "CARELAKE_TLS_CERTFILE": str(cert[0]),
           "CARELAKE_TLS_KEYFILE": str(cert[1]), "CARELAKE_RATE_LIMITS": "lab=50",
           "CARELAKE_API_KEY_HASHES": f"lab={hashlib.sha256(LAB_KEY.encode()).hexdigest()}"}
    log = tmp_path / "gateway.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "carelake.cli", "run", "ingest-gateway"], env=env,
                                cwd=repo_root(), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"gateway did not become healthy: {log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://{HOST}:{metrics}/healthz", timeout=2) as r:
                    if json.loads(r.read())["status"] == "ok":
                        break
            except OSError:
                pass
            time.sleep(0.3)
        try:
            assert msa_code(mllp_roundtrip(mllp, hl7(f"P{unique}"), cafile=cert[0], timeout_s=60)) == "AA"
            assert https(http_port, cert[0], "/v1/messages/lab", hl7(f"Q{unique}"))[0] == 401
        except (AssertionError, OSError) as exc:
            raise AssertionError(f"{exc!r}; gateway log: {log.read_text()[-3000:]}") from exc
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]


@pytest.mark.integration
def test_gateway_process_refuses_half_a_tls_setting(stack: Settings, catalog: Catalog, tmp_path: Path,
                                                    cert: tuple[Path, Path]) -> None:
    env = {**os.environ, "CARELAKE_TOPIC_PREFIX": catalog.prefix, "CARELAKE_BRONZE_DIR": str(tmp_path / "bronze"),
           "CARELAKE_METRICS_PORT": str(free_port()), "CARELAKE_TLS_CERTFILE": str(cert[0])}
    env.pop("CARELAKE_TLS_KEYFILE", None)
    proc = subprocess.run([sys.executable, "-m", "carelake.cli", "run", "ingest-gateway"], env=env,
                          cwd=repo_root(), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert "CARELAKE_TLS_CERTFILE and CARELAKE_TLS_KEYFILE" in proc.stdout + proc.stderr
