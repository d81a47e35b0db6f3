"""The HTTP API over real HTTP, against the real local stack (Kafka, Redis) and a tmp-dir Bronze store."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import resource
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest

from carelake.auth import hash_key
from carelake.bronze.store import BronzeStore, open_store
from carelake.config import Settings
from carelake.serde import SchemaRegistry
from carelake.stream.admin import create_topics
from carelake.stream.runtime import Runner, RunnerConfig
from carelake.stream.selftest import count, read_topic
from carelake.topics import Catalog
from carelake_ingest_gateway.archiver import build_archiver
from carelake_ingest_gateway.filesplit import FileBoard, FileTaker, Splitter
from carelake_ingest_gateway.http_api import create_app, make_server
from carelake_ingest_gateway.intake import RAW_TOPIC, Intake
from carelake_ingest_gateway.ledger import Ledger
from carelake_simulator.formats import x12
from carelake_simulator.formats.x12 import claim_spans
from carelake_simulator.simulate import SimConfig, simulate

pytestmark = pytest.mark.integration

KEYS = {source: f"key-of-{source}-{i}" for i, source in enumerate(
    ("ehr", "lab", "pharmacy", "claims", "wearables", "public_health", "scheduling", "billing"))}
MAX_MESSAGE = 64 * 1024
MAX_FILE = 80 * 1024 * 1024


@pytest.fixture(scope="module")
def sim():
    return simulate(SimConfig(patients=1500, seed=5))


@dataclass
class Gateway:
    port: int
    store: BronzeStore
    catalog: Catalog
    bootstrap: str
    ledger: Ledger

    @property
    def topic(self) -> str:
        return self.catalog.physical(RAW_TOPIC)

    def call(self, method: str, path: str, body=None, headers: dict | None = None, source: str | None = None,
             chunked: bool = False) -> tuple[int, dict, bytes]:
        headers = dict(headers or {})
        if source:
            headers.setdefault("Authorization", f"Bearer {KEYS[source]}")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        try:
            conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def post(self, path: str, body, source: str, **kw) -> tuple[int, dict]:
        status, headers, data = self.call("POST", path, body, source=source, **kw)
        return status, json.loads(data)

    def envelopes(self, expected: int) -> list:
        registry = SchemaRegistry.load()
        return [(m.key(), registry.decode(m.value())[1]) for m in read_topic(self.bootstrap, self.topic, expected)]


@pytest.fixture
def gateway(stack, catalog, unique, tmp_path) -> Iterator[Gateway]:
    """The HTTP API with the parts behind it: the file splitter and the archiver (the re-delivery ledger)."""
    create_topics(catalog, stack.bootstrap)
    intake = Intake(stack.bootstrap, catalog, stack.redis)  # ledger and board scoped by this test's topic
    store = open_store(Settings(home=tmp_path, bronze_dir=tmp_path / "bronze"))
    board = FileBoard(stack.redis, catalog.physical(RAW_TOPIC))
    taker = FileTaker(store, stack.bootstrap, catalog, board)
    splitter = Splitter(store, stack.bootstrap, catalog, board, group=f"{unique}-splitter", checkpoint=500)
    ledger = Ledger(stack.redis, catalog.physical(RAW_TOPIC))
    archiver = Runner(build_archiver(store, ledger, name=f"{unique}-archiver"), catalog,
                      RunnerConfig(bootstrap=stack.bootstrap, batch_size=500))
    app = create_app(intake, store, taker, api_keys={s: hash_key(k) for s, k in KEYS.items()},
                     max_message=MAX_MESSAGE, max_file=MAX_FILE, rate_limits={"scheduling": 1.0},
                     spool_dir=tmp_path)
    server = make_server(app, "127.0.0.1", 0)
    threads = [threading.Thread(target=t, name=n, daemon=True)
               for n, t in (("http", server.run), ("splitter", splitter.run), ("archiver", archiver.run))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert threads[0].is_alive() and time.monotonic() < deadline, "the HTTP server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield Gateway(port, store, catalog, stack.bootstrap, ledger)
    server.should_exit = True
    splitter.stop()
    archiver.stop()
    for thread in threads:
        thread.join(30)
    intake.close()
    taker.close()
    ledger.forget_scope()
    board.forget_scope()


def _archived(gateway: Gateway, source: str, raw_id: str, timeout_s: float = 30) -> None:
    """Wait until the archiver has stored ``raw_id`` (its ledger mark is written after the segment)."""
    deadline = time.monotonic() + timeout_s
    while not gateway.ledger.stored([(source, raw_id)])[0]:
        assert time.monotonic() < deadline, f"{raw_id} was not archived"
        time.sleep(0.05)


def _record(sim, source: str, kind_prefix: str = ""):
    return next(r for r in sim.records if r.source == source and r.kind.startswith(kind_prefix) and not r.defects)


def _file(sim, kind: str):
    return next(f for f in sim.files if f.kind == kind)


# ---- messages ----------------------------------------------------------------------------------


def test_messages_are_accepted_once_on_the_raw_topic(gateway, sim):
    hl7 = _record(sim, "ehr", "ADT")
    reading = _record(sim, "wearables")
    row = b"RX9,2026-01-15,P123,Doe,Jane,1980-01-01,F,60601,,00087606005,Metformin,60,30,0,1134914260,X,1\r\n"
    sent = [("ehr", hl7.payload, hl7.content_type), ("wearables", reading.payload, "application/json"),
            ("pharmacy", row, "text/csv")]
    answers = []
    for source, payload, ctype in sent:
        status, body = gateway.post(f"/v1/messages/{source}", payload, source, headers={"Content-Type": ctype})
        assert status == 201, body
        assert body["sha256"] == hashlib.sha256(payload).hexdigest() and body["duplicate"] is False
        answers.append(body)
    assert answers[0]["message_id"] == hl7.message_id and answers[1]["message_id"] == reading.message_id

    # a re-delivery of bytes Bronze already holds is recognised, answered, and not sent again
    _archived(gateway, "ehr", answers[0]["id"])
    status, again = gateway.post("/v1/messages/ehr", hl7.payload, "ehr", headers={"Content-Type": hl7.content_type})
    assert status == 200 and again["duplicate"] is True and again["id"] == answers[0]["id"]

    assert count(gateway.bootstrap, gateway.topic) == 3
    by_id = {env["id"]: (key, env) for key, env in gateway.envelopes(3)}
    for (source, payload, ctype), answer in zip(sent, answers):
        key, env = by_id[answer["id"]]
        assert env["source"] == source and env["payload"] == payload and env["content_type"] == ctype
        assert env["sha256"] == answer["sha256"] and env["headers"]["transport"] == "http"
    assert by_id[answers[0]["id"]][0] == hl7.key.encode()  # keyed by the source patient (PID-3)
    assert by_id[answers[0]["id"]][1]["format"] == "hl7v2"


def test_bad_messages_get_the_intake_answer(gateway):
    status, body = gateway.post("/v1/messages/lab", b"\x00\x01 garbage", "lab")
    assert status == 422 and body["error"] == "bad_unknown" and "not HL7 v2" in body["detail"]
    msh = b"MSH|^~\\&|LAB|X|C|C|20260115||ORU^R01|M1|P|9.9\rPID|1||P1\r"
    status, body = gateway.post("/v1/messages/lab", msh, "lab")
    assert status == 422 and "unsupported HL7 version '9.9'" in body["detail"]
    status, body = gateway.post("/v1/messages/lab", b"   ", "lab")
    assert status == 400 and body == {"error": "empty", "detail": "empty message"}
    assert count(gateway.bootstrap, gateway.topic) == 0


# ---- auth, sources, sizes, rate -------------------------------------------------------------------


def test_keys_and_sources(gateway, sim):
    hl7 = _record(sim, "lab").payload
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {KEYS['ehr']}"},
                    {"X-API-Key": KEYS["ehr"]}, {"Authorization": f"Basic {KEYS['lab']}"}):
        status, _, data = gateway.call("POST", "/v1/messages/lab", hl7, headers)
        assert status == 401, headers
        assert json.loads(data)["error"] == "unauthorized"
    status, _, _ = gateway.call("POST", "/v1/messages/lab", hl7, {"X-API-Key": KEYS["lab"]})
    assert status == 201
    status, _, data = gateway.call("POST", "/v1/messages/radiology", hl7, {"X-API-Key": KEYS["lab"]})
    assert status == 404 and json.loads(data)["error"] == "unknown_source"
    status, _, data = gateway.call("POST", "/v1/files/radiology", b"x,y\n1,2\n", {"X-API-Key": KEYS["lab"]})
    assert status == 404


def test_oversized_bodies_get_413_before_anything_is_stored(gateway):
    # declared too large: answered from the headers, the body is never read
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    conn.putrequest("POST", "/v1/files/claims")
    conn.putheader("Authorization", f"Bearer {KEYS['claims']}")
    conn.putheader("Content-Length", str(MAX_FILE + 1))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"] == "too_large"
    conn.close()
    # undeclared (chunked) and too large: counted while reading
    big = (b"x" * 1000 for _ in range(MAX_MESSAGE // 1000 + 5))
    status, body = gateway.post("/v1/messages/lab", big, "lab", chunked=True)
    assert status == 413 and "exceeds the 65536-byte limit" in body["detail"]
    status, body = gateway.post("/v1/messages/lab", b"x" * (MAX_MESSAGE + 1), "lab")
    assert status == 413
    assert list(gateway.store.list("")) == []
    assert count(gateway.bootstrap, gateway.topic) == 0


def test_rate_limit_answers_429_with_retry_after(gateway, sim):
    msg = _record(sim, "scheduling").payload
    status, _, first = gateway.call("POST", "/v1/messages/scheduling", msg, source="scheduling")
    assert status == 201
    status, headers, data = gateway.call("POST", "/v1/messages/scheduling", msg, source="scheduling")
    assert status == 429 and headers["retry-after"] == "1" and json.loads(data)["error"] == "rate_limited"
    other = _record(sim, "ehr").payload  # other sources have their own (here: no) limit
    assert gateway.call("POST", "/v1/messages/ehr", other, source="ehr")[0] == 201
    _archived(gateway, "scheduling", json.loads(first)["id"])
    time.sleep(1.05)
    assert gateway.call("POST", "/v1/messages/scheduling", msg, source="scheduling")[0] == 200  # a duplicate


# ---- files -------------------------------------------------------------------------------------


def test_an_837_file_is_stored_whole_with_one_envelope_per_claim(gateway, sim):
    feed = _file(sim, "837P")
    spans = claim_spans(feed.payload)
    status, body = gateway.post("/v1/files/claims", feed.payload, "claims",
                                headers={"X-File-Name": f"../in/{feed.name}", "Content-Type": feed.content_type})
    assert status == 201, body
    sha = hashlib.sha256(feed.payload).hexdigest()
    today = datetime.now(UTC)
    assert body["key"] == f"claims/{today:%Y/%m/%d}/files/{sha[:16]}-{feed.name}"
    assert (body["sha256"], body["size"], body["format"]) == (sha, len(feed.payload), "x12")
    assert body["records"] == body["emitted"] == len(spans) and body["duplicate"] is False

    status, headers, stored = gateway.call("GET", f"/v1/objects/{body['key']}", source="claims")
    assert status == 200 and stored == feed.payload and headers["x-content-sha256"] == sha

    envelopes = gateway.envelopes(len(spans))
    assert count(gateway.bootstrap, gateway.topic) == len(spans)
    truth = {t.record_id: t.key for t in feed.records}
    got = sorted((env["byte_offset"], env["byte_offset"] + env["byte_length"], key, env) for key, env in envelopes)
    assert [(start, end) for start, end, _, _ in got] == [(start, end) for _, start, end in spans]
    for start, end, key, env in got:
        claim = feed.payload[start:end]
        assert env["bronze_key"] == body["key"] and env["format"] == "x12" and env["source"] == "claims"
        assert env["payload"] == claim and env["sha256"] == hashlib.sha256(claim).hexdigest()
        assert env["source_patient_key"] == truth[env["source_message_id"]] and key == env["source_patient_key"].encode()
        assert env["content_type"] == "application/edi-x12" and env["headers"]["transport"] == "http_file"

    # the same file again: recognised, nothing new on the topic
    status, again = gateway.post("/v1/files/claims", feed.payload, "claims", headers={"X-File-Name": feed.name})
    assert status == 200 and again["duplicate"] is True and again["key"] == body["key"]
    assert again["records"] == len(spans) and again["emitted"] == 0 and again["state"] == "done"
    assert count(gateway.bootstrap, gateway.topic) == len(spans)


def test_a_file_answered_asynchronously_is_followed_by_its_status(gateway, sim):
    feed = _file(sim, "pharmacy_csv")
    status, headers, data = gateway.call("POST", "/v1/files/pharmacy", feed.payload, source="pharmacy",
                                         headers={"X-File-Name": feed.name, "Prefer": "respond-async"})
    body = json.loads(data)
    assert status == 202 and headers["location"] == f"/v1/file-status/{body['key']}" == body["status_url"]
    assert gateway.store.get(body["key"]) == feed.payload  # durable before the answer
    deadline = time.monotonic() + 60
    while True:
        status, _, data = gateway.call("GET", body["status_url"], source="pharmacy")
        state = json.loads(data)
        if state["state"] == "done" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200 and state["state"] == "done" and state["records"] == state["emitted"] == len(feed.records)
    assert count(gateway.bootstrap, gateway.topic) == len(feed.records)
    assert gateway.call("GET", body["status_url"], source="lab")[0] == 401
    assert gateway.call("GET", "/v1/file-status/pharmacy/2026/01/01/files/none.csv", source="pharmacy")[0] == 404


def test_csv_and_ndjson_files(gateway, sim):
    feed = _file(sim, "pharmacy_csv")
    status, body = gateway.post("/v1/files/pharmacy", feed.payload, "pharmacy", headers={"X-File-Name": feed.name})
    assert status == 201 and body["format"] == "csv" and body["records"] == len(feed.records)
    readings = [r for r in sim.records if r.source == "wearables" and not r.defects][:50]
    ndjson = b"".join(r.payload + b"\n" for r in readings) + b"{broken\n"
    status, nd = gateway.post("/v1/files/wearables", ndjson, "wearables", headers={"X-File-Name": "day.ndjson"})
    assert status == 201 and nd["format"] == "ndjson" and nd["records"] == 51 and nd["emitted"] == 50
    assert [(r["error"], r["byte_start"]) for r in nd["rejected"]] == [("bad_json", len(ndjson) - 8)]

    envelopes = [env for _, env in gateway.envelopes(len(feed.records) + 50)]
    rows = [env for env in envelopes if env["source"] == "pharmacy"]
    assert sorted((e["source_message_id"], e["source_patient_key"]) for e in rows) == sorted(
        (t.record_id, t.key) for t in feed.records)
    for e in envelopes:
        stored = body["key"] if e["source"] == "pharmacy" else nd["key"]
        assert e["bronze_key"] == stored
        assert e["payload"] == gateway.store.get(stored, e["byte_offset"], e["byte_offset"] + e["byte_length"])
    assert sorted(e["source_message_id"] for e in envelopes if e["source"] == "wearables") == sorted(
        r.message_id for r in readings)


def test_broken_x12_envelope_is_refused_and_quarantined(gateway, sim):
    payload = _file(sim, "835").payload
    se = re.search(rb"SE\*(\d+)\*0001~", payload)
    broken = payload.replace(se.group(0), b"SE*%d*0001~" % (int(se.group(1)) - 1))
    status, body = gateway.post("/v1/files/claims", broken, "claims", headers={"X-File-Name": "remit.835"})
    assert status == 422 and body["error"] == "bad_x12_envelope"
    assert body["detail"] == (f"SE at byte {se.start()}: SE01 (segment count, ST through SE) is "
                              f"'{int(se.group(1)) - 1}', expected '{se.group(1).decode()}'")
    assert "/quarantine/" in body["key"] and gateway.store.get(body["key"]) == broken
    assert gateway.store.head(body["key"]).metadata["reason"] == body["detail"]
    assert [o.key for o in gateway.store.list("")] == [body["key"]]  # nothing under files/
    assert count(gateway.bootstrap, gateway.topic) == 0

    status, body = gateway.post("/v1/files/claims", b"\x89PNG\r\n\x1a\n not a batch", "claims")
    assert status == 415 and body["error"] == "unsupported_format" and "/quarantine/" in body["key"]


def test_objects_need_their_sources_key(gateway):
    gateway.store.put("lab/2026/01/15/files/abc-result.csv", b"a,b\n1,2\n")
    assert gateway.call("GET", "/v1/objects/lab/2026/01/15/files/abc-result.csv", source="lab")[2] == b"a,b\n1,2\n"
    assert gateway.call("GET", "/v1/objects/lab/2026/01/15/files/abc-result.csv", source="ehr")[0] == 401
    status, _, data = gateway.call("GET", "/v1/objects/lab/2026/01/15/files/nothing.csv", source="lab")
    assert status == 404 and json.loads(data)["error"] == "not_found"
    assert gateway.call("GET", "/v1/objects/etc/passwd", source="lab")[0] == 404


# ---- schema, health, metrics ---------------------------------------------------------------------


def test_openapi_health_and_metrics(gateway):
    status, _, data = gateway.call("GET", "/openapi.json")
    spec = json.loads(data)
    assert status == 200
    assert {"/v1/messages/{source}", "/v1/files/{source}", "/v1/file-status/{key}", "/v1/objects/{key}",
            "/healthz", "/metrics"} <= set(spec["paths"])
    file_answers = spec["paths"]["/v1/files/{source}"]["post"]["responses"]
    assert {"201", "202", "200", "401", "404", "413", "415", "422", "429"} <= set(file_answers)
    assert "requestBody" in spec["paths"]["/v1/files/{source}"]["post"]
    assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])
    assert json.loads(gateway.call("GET", "/healthz")[2])["status"] == "ok"
    gateway.call("POST", "/v1/messages/lab", b"MSH", {"X-API-Key": "wrong"})
    metrics = gateway.call("GET", "/metrics")[2].decode()
    assert re.search(r'carelake_http_requests_total\{endpoint="/v1/messages/\{source\}",source="lab",status="401"\} \d',
                     metrics)


# ---- a large file streams ------------------------------------------------------------------------


def big_837(sim, size: int) -> bytes:
    """An 837P of about ``size`` bytes: the simulated claims again and again under fresh claim ids."""
    base = [c for c in sim.events.claims if c.kind == "837P"]
    claims, n = [], 0
    while len(claims) * 215 < size:
        claims += [replace(c, claim_id=f"{c.claim_id[:14]}{n:08d}") for c in base]
        n += 1
    return x12.claims_837p(claims, sim.registry.primary["claims"], sim.population.by_id(),
                           sender_id="CARELAKEHLTH", receiver_id="CLEARINGHSE", control=7,
                           created=datetime(2026, 1, 15, 22, tzinfo=UTC))


@pytest.mark.timeout(900)  # ~240,000 claims, one acks=all envelope each
def test_a_large_file_streams_in_flat_memory(gateway, sim, tmp_path):
    # 6 MB keeps the suite quick; bench/http_file_intake.py posts 100 MB.
    path = tmp_path / "big.x12"
    path.write_bytes(big_837(sim, 6_000_000))
    size = path.stat().st_size
    claims = len(claim_spans(path.read_bytes()))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with open(path, "rb") as f:  # http.client streams a file object in blocks
        status, body = gateway.post("/v1/files/claims", f, "claims",
                                    headers={"X-File-Name": "big.x12", "Content-Length": str(size)})
    assert status == 201, body
    assert body["size"] == size and body["records"] == body["emitted"] == claims
    peak_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert peak_growth_mb < 40, f"peak RSS grew by {peak_growth_mb:.0f} MB while taking a {size >> 20} MB file"
    assert count(gateway.bootstrap, gateway.topic) == claims
    assert gateway.store.head(body["key"]).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
