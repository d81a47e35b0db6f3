"""The normalizer service's process function, called with plain records (no Kafka)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import REGISTRY

from carelake.bronze.local import LocalStore
from carelake.bronze.s3 import S3Store
from carelake.bronze.store import LocalConfig, S3Config
from carelake.config import Settings
from carelake.errors import ConfigError, TransientError
from carelake.services import load_builder
from carelake.stack.parts import free_port
from carelake.stream.types import Emit, Record, Reject
from carelake_normalizer import service
from carelake_normalizer.service import Normalizer, source_timezones

NOW = datetime(2026, 1, 15, 18, 0, tzinfo=UTC)
MRN = "E2000002"


def seg(name: str, fields: dict[int, str]) -> str:
    out = [""] * max(fields)
    for n, v in fields.items():
        out[n - 1] = v
    return "|".join([name, *out])


def adt(msg_id: str = "M1", *, admit: str = "20260115080000-0600", mrn: str = MRN) -> bytes:
    return ("\r".join([
        f"MSH|^~\\&|EPIC|MC|CARELAKE|CARELAKE|20260115083000-0600||ADT^A01^ADT_A01|{msg_id}|P|2.5.1",
        "EVN|A01|20260115083000-0600",
        f"PID|1||{mrn}^^^EHR^MR||Testperson^Sam||19700101|M",
        seg("PV1", {1: "1", 2: "I", 3: "MED^401^A^CARELAKE_MC", 19: "V0000077", 44: admit}),
        "DG1|1||E11.9^Type 2 diabetes^I10|||A",
    ]) + "\r").encode()


def env(payload: bytes | None, *, data: bytes | None = None, source: str = "ehr", fmt: str = "hl7v2",
        bronze_key: str = "ehr/2026/01/15/segments/", offset: int = 0) -> dict:
    body = payload if payload is not None else data
    assert body is not None
    sha = hashlib.sha256(body).hexdigest()
    return {"id": f"raw-{sha[:12]}", "source": source, "format": fmt, "content_type": None, "received_at": NOW,
            "bronze_key": bronze_key, "sha256": sha, "byte_offset": offset, "byte_length": len(body),
            "payload": payload, "source_message_id": None, "source_patient_key": None, "replayed": False,
            "headers": {}}


def _rejected(source: str, reason: str) -> float:
    return REGISTRY.get_sample_value("carelake_normalizer_rejected_total", {"source": source, "reason": reason}) or 0.0


def normalizer(store=None) -> Normalizer:  # noqa: ANN001
    return Normalizer(store, {})


def test_resources_are_emitted_to_silver_keyed_by_their_patient() -> None:
    out = normalizer().process([Record.of(env(adt()), key="ehr|raw-key")])
    assert all(isinstance(o, Emit) and o.topic == "silver.fhir.v1" for o in out)
    assert sorted(o.value["resource_type"] for o in out) == ["Condition", "Encounter", "Patient"]
    assert {o.key for o in out} == {f"ehr|{MRN}"}


def test_a_partly_rejected_message_emits_its_good_resources_and_one_reject_per_bad_part() -> None:
    record = Record.of(env(adt(admit="20260230080000-0600")), key="ehr|raw-key")  # February 30
    out = normalizer().process([record])
    emitted = [o for o in out if isinstance(o, Emit)]
    rejects = [o for o in out if isinstance(o, Reject)]
    assert sorted(o.value["resource_type"] for o in emitted) == ["Condition", "Patient"]
    assert [(r.code, r.record) for r in rejects] == [("invalid_date", record)]
    assert rejects[0].reason.startswith("PV1[1].PV1-44: ") and MRN not in rejects[0].reason


def test_unreadable_messages_are_rejected_each_with_its_reason() -> None:
    garbage = Record.of(env(b"not hl7 at all"), key="ehr|x")
    x12 = Record.of(env(b"ISA*00*          *00*~", source="claims", fmt="x12"), key="claims|x")
    out = normalizer().process([garbage, x12])
    assert [(o.record, o.code) for o in out if isinstance(o, Reject)] == [(garbage, "not_hl7"), (x12, "truncated")]
    assert len(out) == 2


def test_a_payload_that_does_not_match_its_sha256_is_rejected() -> None:
    e = env(adt())
    e["payload"] = adt("M9")
    out = normalizer().process([Record.of(e)])
    assert [(type(o), o.code) for o in out] == [(Reject, "sha256_mismatch")]


def test_referenced_payloads_are_read_from_bronze_by_byte_range(tmp_path: Path) -> None:
    store = LocalStore(LocalConfig(root=tmp_path))
    first, second = adt("F1"), adt("F2", mrn="E3000003")
    key = "ehr/2026/01/15/files/0123456789abcdef-batch.hl7"
    store.put(key, first + b"\n" + second)
    records = [Record.of(env(None, data=first, bronze_key=key)),
               Record.of(env(None, data=second, bronze_key=key, offset=len(first) + 1)),
               Record.of(env(None, data=first, bronze_key="ehr/2026/01/15/files/missing.hl7"))]
    missing_before = _rejected("ehr", "bronze_not_found")
    out = normalizer(store).process(records)
    assert _rejected("ehr", "bronze_not_found") == missing_before + 1
    keys = sorted({o.key for o in out if isinstance(o, Emit)})
    assert keys == [f"ehr|{MRN}", "ehr|E3000003"]
    lineage = {json.loads(o.value["resource"])["id"]: o.value["lineage"] for o in out if isinstance(o, Emit)}
    assert {(v["bronze_key"], v["byte_offset"]) for v in lineage.values()} == {(key, 0), (key, len(first) + 1)}
    assert [(o.record, o.code) for o in out if isinstance(o, Reject)] == [(records[2], "bronze_not_found")]


def test_a_store_that_is_down_is_a_transient_error_for_the_runtime_to_retry() -> None:
    # A real S3 client pointed at a port nobody listens on.
    store = S3Store(S3Config(bucket="carelake-bronze", endpoint_url=f"http://127.0.0.1:{free_port()}",
                             access_key_id="test", secret_access_key="test"))
    record = Record.of(env(None, data=adt(), bronze_key="ehr/2026/01/15/files/0123456789abcdef-a.hl7"))
    with pytest.raises(TransientError):
        normalizer(store).process([Record.of(env(adt())), record])


def test_source_time_zones_come_from_the_settings() -> None:
    zones = source_timezones(" ehr=America/New_York, lab=UTC ,")
    assert {k: v for k, v in zones.items() if k} == {"ehr": ZoneInfo("America/New_York"), "lab": ZoneInfo("UTC")}
    assert service.timezone_for("billing", zones) == ZoneInfo("America/Chicago")
    assert service.timezone_for("billing", source_timezones("", "America/Denver")) == ZoneInfo("America/Denver")
    assert service.timezone_for("billing", {}) == ZoneInfo("America/Chicago")
    with pytest.raises(ConfigError, match="CARELAKE_SOURCE_TIMEZONES"):
        source_timezones("ehr")
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        source_timezones("ehr=Mars/Olympus")
    with pytest.raises(ConfigError, match="CARELAKE_DEFAULT_TIMEZONE"):
        source_timezones("", "Nowhere/Land")


def test_a_naive_time_is_read_in_its_source_zone() -> None:
    payload = adt(admit="20260115080000")  # no offset
    by_zone = {}
    for zone in ("America/New_York", "UTC"):
        out = Normalizer(None, {"ehr": ZoneInfo(zone)}).process([Record.of(env(payload))])
        encounter = next(json.loads(o.value["resource"]) for o in out if o.value["resource_type"] == "Encounter")
        by_zone[zone] = encounter["period"]["start"]
    assert by_zone == {"America/New_York": "2026-01-15T13:00:00Z", "UTC": "2026-01-15T08:00:00Z"}


def test_the_service_is_registered_and_declares_its_topics(tmp_path: Path) -> None:
    assert load_builder("normalizer") is service.build
    built = service.build(Settings(home=tmp_path))
    assert (built.name, list(built.inputs), list(built.outputs), built.dlq_topic) == \
        ("normalizer", ["bronze.raw.v1"], ["silver.fhir.v1"], "dlq.normalizer.v1")
    out = built.process([Record.of(env(adt()))])
    assert len(out) == 3 and all(isinstance(o, Emit) for o in out)
