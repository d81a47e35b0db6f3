"""The normalizer on the real broker: raw envelopes in, Silver FHIR records and dead letters out."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from carelake.bronze.local import LocalStore
from carelake.bronze.store import LocalConfig
from carelake.config import Settings
from carelake.serde import SchemaRegistry
from carelake.stream.admin import create_topics
from carelake.stream.runtime import Runner, RunnerConfig
from carelake.stream.selftest import count, read_topic
from carelake.topics import Catalog
from carelake_ingest_gateway.intake import envelope as gateway_envelope
from carelake_ingest_gateway.sniff import sniff
from carelake_normalizer import pipeline, service
from carelake_simulator.feeds import MessRates
from carelake_simulator.simulate import SimConfig, simulate

pytestmark = pytest.mark.integration

HL7 = "x-application/hl7-v2+er7"
RECEIVED = datetime(2026, 1, 15, 20, 0, tzinfo=UTC)
RAW, SILVER, DLQ = "bronze.raw.v1", "silver.fhir.v1", "dlq.normalizer.v1"


def _seg(name: str, fields: dict[int, str]) -> str:
    out = [""] * max(fields)
    for n, v in fields.items():
        out[n - 1] = v
    return "|".join([name, *out])


def _adt_with_impossible_admit_time() -> bytes:
    """A synthetic ADT^A01 whose PV1-44 is February 30: the Encounter is rejected, the rest flows."""
    return ("\r".join([
        "MSH|^~\\&|EPIC|MC|CARELAKE|CARELAKE|20260115083000-0600||ADT^A01^ADT_A01|PLANTED-DATE|P|2.5.1",
        "EVN|A01|20260115083000-0600",
        "PID|1||E9000009^^^EHR^MR||Planted^Pat||19700101|M",
        _seg("PV1", {1: "1", 2: "I", 3: "MED^401^A^CARELAKE_MC", 19: "V0000999", 44: "20260230080000-0600"}),
        "DG1|1||E11.9^Type 2 diabetes^I10|||A",
    ]) + "\r").encode()


def _by_hand(source: str, fmt: str, payload: bytes | None, data: bytes, *, bronze_key: str | None = None,
             offset: int = 0) -> dict:
    """A raw envelope as raw_envelope.avsc describes it, for bytes the gateway's door would refuse
    (they still reach bronze.raw.v1 as records of stored files) or that live in a Bronze file."""
    sha = hashlib.sha256(data).hexdigest()
    return {"id": hashlib.sha256(f"{source}|{sha}|".encode()).hexdigest()[:32], "source": source, "format": fmt,
            "content_type": None, "received_at": RECEIVED,
            "bronze_key": bronze_key or f"{source}/2026/01/15/files/{sha[:16]}-planted", "sha256": sha,
            "byte_offset": offset, "byte_length": len(data), "payload": payload, "source_message_id": None,
            "source_patient_key": None, "replayed": False, "headers": {"transport": "test"}}


def _via_gateway(source: str, payload: bytes) -> dict:
    sniffed = sniff(source, payload, HL7)
    assert sniffed.problem is None, sniffed.problem
    return gateway_envelope(source, payload, sniffed, hashlib.sha256(payload).hexdigest(), RECEIVED,
                            content_type=HL7, transport="test", inline_limit=256 * 1024)


def _inputs(store: LocalStore) -> tuple[list[dict], dict[str, str]]:
    """~200 simulated HL7 messages through the gateway's envelope, plus planted ones.

    Returns the envelopes and, for the planted malformed ones, raw id -> the reason code expected.
    """
    sim = simulate(SimConfig(patients=1700, seed=21, mess=MessRates(malformed=0.0)))
    messages = [r for r in sim.records if r.content_type == HL7]
    assert len(messages) > 180
    envs = [_via_gateway(r.source, r.payload) for r in messages[:-2]]
    # Two messages as records of a file stored whole in Bronze: read back by key and byte range.
    a, b = messages[-2].payload, messages[-1].payload
    key = "lab/2026/01/15/files/00000000deadbeef-results.hl7"
    store.put(key, a + b"\r\n" + b)
    envs.append(_by_hand(messages[-2].source, "hl7v2", None, a, bronze_key=key))
    envs.append(_by_hand(messages[-1].source, "hl7v2", None, b, bronze_key=key, offset=len(a) + 2))

    adt = next(r.payload for r in messages if r.kind.startswith("ADT^"))
    planted = {
        "not_hl7": _by_hand("ehr", "hl7v2", b"GARBAGE\rNOT AN HL7 MESSAGE\r", b"GARBAGE\rNOT AN HL7 MESSAGE\r"),
        "unsupported_version": _by_hand("ehr", "hl7v2", adt.replace(b"|P|2.5.1|", b"|P|2.1|", 1),
                                        adt.replace(b"|P|2.5.1|", b"|P|2.1|", 1)),
        # Segment separators lost in transit: the gateway still takes it (its MSH reads), the normalizer cannot.
        "no_segment_separators": _via_gateway("ehr", adt.replace(b"\r", b" ").rstrip() + b"\r"),
        "invalid_date": _via_gateway("ehr", _adt_with_impossible_admit_time()),
    }
    assert planted["unsupported_version"]["payload"] != adt
    x12 = b"ISA*00*          *00*          *ZZ*SUBMITTER      *ZZ*RECEIVER       *260115*1200*^*00501*000000001*0*P*:~"
    envs += list(planted.values()) + [_by_hand("claims", "x12", x12, x12)]
    return envs, {e["id"]: code for code, e in planted.items()}


def _expected(envs: list[dict], store: LocalStore) -> tuple[list[pipeline.Outcome], Counter]:
    """What the pure pipeline says for the same inputs."""
    outcomes = []
    for e in envs:
        data = e["payload"] if e["payload"] is not None else \
            store.get(e["bronze_key"], e["byte_offset"], e["byte_offset"] + e["byte_length"])
        outcomes.append(pipeline.normalize(e, data, tz=service.timezone_for(e["source"], {}), processed_at=RECEIVED))
    dead = Counter()
    for o in outcomes:
        for p in ([o.error] if o.error else o.rejected):
            dead[(o.raw_id, p.reason_code)] += 1
    return outcomes, dead


def _produce(bootstrap: str, topic: str, envs: list[dict]) -> None:
    schema = SchemaRegistry.load().get("raw_envelope")
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 10})
    for e in envs:
        producer.produce(topic, value=schema.encode(e), key=(e["source_patient_key"] or e["id"]).encode())
    assert producer.flush(30) == 0


def _run(runner: Runner, expected: int, timeout_s: float = 120) -> None:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while runner.committed_messages < expected and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    runner.stop()
    thread.join(30)
    assert not thread.is_alive(), "the normalizer did not stop on request"
    assert runner.committed_messages == expected


def _unmapped(source: str, fmt: str) -> float:
    return REGISTRY.get_sample_value("carelake_normalizer_unmapped_total", {"source": source, "format": fmt}) or 0.0


def test_raw_envelopes_become_silver_resources_and_dead_letters(stack: Settings, catalog: Catalog, unique: str,
                                                               tmp_path: Path) -> None:
    create_topics(catalog, stack.bootstrap, [catalog.get(t) for t in (RAW, SILVER, DLQ)])
    settings = stack.model_copy(update={"bronze_dir": tmp_path / "bronze"})
    store = LocalStore(LocalConfig(root=tmp_path / "bronze"))
    envs, planted = _inputs(store)
    outcomes, dead = _expected(envs, store)
    n_resources = sum(len(o.envelopes) for o in outcomes)
    n_dead = sum(dead.values())
    x12 = envs[-1]
    assert n_resources > 400 and set(planted) <= {raw_id for raw_id, _ in dead}

    built = dataclasses.replace(service.build(settings), name=unique)  # its own consumer group
    registry = SchemaRegistry.load()
    _produce(stack.bootstrap, catalog.physical(RAW), envs)
    unmapped_before = _unmapped("claims", "x12")
    _run(Runner(built, catalog, RunnerConfig(bootstrap=stack.bootstrap, batch_size=50)), len(envs))

    # Silver: exactly the resources the pure pipeline makes, each decodable and consistent.
    assert count(stack.bootstrap, catalog.physical(SILVER)) == n_resources
    silver = [(m.key(), registry.decode(m.value())[1])
              for m in read_topic(stack.bootstrap, catalog.physical(SILVER), n_resources)]
    assert len(silver) == n_resources
    for key, record in silver:
        resource = json.loads(record["resource"])
        assert resource["resourceType"] == record["resource_type"] and resource["id"] == record["id"]
        if record["source_patient_key"]:
            assert key == record["source_patient_key"].encode()
        assert record["security_labels"] and record["replayed"] is False
    by_raw = Counter(r["lineage"]["raw_id"] for _, r in silver)
    assert by_raw == Counter({o.raw_id: len(o.envelopes) for o in outcomes if o.envelopes})
    file_offsets = {e["byte_offset"] for e in envs if e["bronze_key"].endswith("-results.hl7")}
    assert len(file_offsets) == 2
    assert {r["lineage"]["byte_offset"] for _, r in silver if r["lineage"]["bronze_key"].endswith("-results.hl7")} \
        == file_offsets

    # DLQ: exactly the planted malformed messages and parts, with their reasons, Bronze key and source.
    assert count(stack.bootstrap, catalog.physical(DLQ)) == n_dead
    letters = [registry.decode(m.value())[1] for m in read_topic(stack.bootstrap, catalog.physical(DLQ), n_dead)]
    env_by_id = {e["id"]: e for e in envs}
    seen = Counter()
    for letter in letters:
        raw = registry.get("raw_envelope").decode(letter["payload"])  # the input, unchanged: replayable
        seen[(raw["id"], letter["reason_code"])] += 1
        assert letter["service"] == unique and letter["stage"] == "process"
        assert letter["bronze_key"] == env_by_id[raw["id"]]["bronze_key"]
        assert letter["source"] == env_by_id[raw["id"]]["source"]
        assert "Planted" not in letter["reason"] and "E9000009" not in letter["reason"]
    assert seen == dead
    assert len({letter["id"] for letter in letters}) == len(letters)  # one dead letter per part, each its own id
    assert {(raw_id, code) for raw_id, code in seen} == set(planted.items())

    # The X12 record: no mapping yet, so neither Silver nor a dead letter — only counted.
    # An interchange with no transaction set: read, nothing in it, neither Silver nor a dead letter.
    assert x12["id"] not in by_raw and x12["id"] not in {k for k, _ in seen}
    assert _unmapped("claims", "x12") == unmapped_before

    # Replayed envelopes give the same resources under the same ids.
    _produce(stack.bootstrap, catalog.physical(RAW), [{**e, "replayed": True} for e in envs])
    _run(Runner(built, catalog, RunnerConfig(bootstrap=stack.bootstrap, batch_size=50)), len(envs))
    assert count(stack.bootstrap, catalog.physical(SILVER)) == 2 * n_resources
    both = [registry.decode(m.value())[1]
            for m in read_topic(stack.bootstrap, catalog.physical(SILVER), 2 * n_resources)]
    first = Counter((r["id"], r["resource"]) for r in both if not r["replayed"])
    again = Counter((r["id"], r["resource"]) for r in both if r["replayed"])
    assert sum(again.values()) == n_resources and again == first
