"""The pure per-message pipeline: raw envelope + bytes -> Silver records, rejected parts or unmapped."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import REGISTRY

from carelake.serde import SchemaRegistry
from carelake_normalizer import pipeline
from carelake_normalizer import validate as validation
from carelake_normalizer.hl7v2 import map_hl7v2
from carelake_normalizer.terminology import systems

CHICAGO = ZoneInfo("America/Chicago")
NOW = datetime(2026, 1, 15, 18, 0, tzinfo=UTC)
PATIENT_NAME, MRN = "Testperson", "E1000001"


def seg(name: str, fields: dict[int, str]) -> str:
    out = [""] * max(fields)
    for n, v in fields.items():
        out[n - 1] = v
    return "|".join([name, *out])


def adt(msg_id: str = "M1", *, admit: str = "20260115080000-0600",
        dx: tuple[str, str, str] = ("E11.9", "Type 2 diabetes", "I10"), version: str = "2.5.1") -> bytes:
    """A synthetic ADT^A01: Patient, Encounter, Condition."""
    return ("\r".join([
        f"MSH|^~\\&|EPIC|MC|CARELAKE|CARELAKE|20260115083000-0600||ADT^A01^ADT_A01|{msg_id}|P|{version}",
        "EVN|A01|20260115083000-0600",
        f"PID|1||{MRN}^^^EHR^MR||{PATIENT_NAME}^Alex||19610304|F",
        seg("PV1", {1: "1", 2: "I", 3: "MED^401^A^CARELAKE_MC", 19: "V0000042", 44: admit}),
        f"DG1|1||{dx[0]}^{dx[1]}^{dx[2]}|||A",
    ]) + "\r").encode()


def envelope(payload: bytes, *, source: str = "ehr", fmt: str = "hl7v2", replayed: bool = False) -> dict:
    sha = hashlib.sha256(payload).hexdigest()
    return {"id": f"raw-{sha[:12]}", "source": source, "format": fmt, "content_type": None,
            "received_at": NOW, "bronze_key": f"{source}/2026/01/15/segments/", "sha256": sha,
            "byte_offset": 0, "byte_length": len(payload), "payload": payload,
            "source_message_id": "M1", "source_patient_key": f"{source}|{MRN}", "replayed": replayed,
            "headers": {}}


def run(payload: bytes, **kw) -> pipeline.Outcome:  # noqa: ANN003
    return pipeline.normalize(envelope(payload, **kw), payload, tz=CHICAGO, processed_at=NOW)


def test_an_hl7_message_becomes_silver_records_with_its_lineage() -> None:
    payload = adt()
    env = envelope(payload, replayed=True)
    out = pipeline.normalize(env, payload, tz=CHICAGO, processed_at=NOW)
    assert out.clean and out.error is None and not out.unmapped
    assert sorted(e["resource_type"] for e in out.envelopes) == ["Condition", "Encounter", "Patient"]
    encode = SchemaRegistry.load().get("fhir_envelope").encode
    for record in out.envelopes:
        resource = json.loads(record["resource"])
        assert resource["resourceType"] == record["resource_type"] and resource["id"] == record["id"]
        assert resource["meta"]["source"] == f"urn:carelake:raw:{env['id']}"
        assert record["lineage"] == {"raw_id": env["id"], "bronze_key": env["bronze_key"], "byte_offset": 0,
                                     "byte_length": len(payload), "source_message_id": "M1"}
        assert record["source"] == "ehr" and record["source_patient_key"] == f"ehr|{MRN}"
        assert record["processed_at"] == NOW and record["replayed"] is True
        assert record["security_labels"] == ["N"]
        encode(record)  # the silver.fhir.v1 contract takes it as is
    patient = next(e for e in out.envelopes if e["resource_type"] == "Patient")
    assert "Patient.name" in patient["phi_paths"] and "Patient.birthDate" in patient["phi_paths"]


def test_the_same_message_always_gives_the_same_resource_ids() -> None:
    first, again = run(adt()), run(adt())
    assert [e["id"] for e in first.envelopes] == [e["id"] for e in again.envelopes]
    assert run(adt("M2")).envelopes[0]["id"] == first.envelopes[0]["id"]  # same patient, another message


def test_codes_are_normalized_before_security_labels_and_validation() -> None:
    # ICD-9-CM V25.09 (contraceptive management) is not in the ICD-9 sensitive ranges, but its
    # ICD-10-CM equivalent Z30.09 is: only labels read after the terminology pass restrict it.
    payload = adt(dx=("V25.09", "Family planning advice", "I9"))
    out = run(payload)
    condition = next(e for e in out.envelopes if e["resource_type"] == "Condition")
    resource = json.loads(condition["resource"])
    codings = resource["code"]["coding"]
    assert (codings[0]["system"], codings[0]["code"]) == (systems.ICD10CM, "Z30.09")
    assert codings[0]["extension"][0]["url"] == systems.NORMALIZED_FROM
    assert (codings[1]["system"], codings[1]["code"]) == (systems.ICD9CM, "V25.09")  # as sent, kept
    assert condition["security_labels"] == ["R", "SEX"]
    assert {s["code"] for s in resource["meta"]["security"]} == {"R", "SEX"}
    assert validation.validate(resource, memo=False) is None  # the added coding is valid FHIR too
    # The mapping alone (the helper's default, no terminology) would have labelled it normal.
    alone = map_hl7v2(payload, source="ehr", tz=CHICAGO, raw_id="r")
    assert next(m for m in alone.resources if m.resource_type == "Condition").security_labels == ["N"]


def test_a_bad_part_is_rejected_and_the_rest_of_the_message_flows() -> None:
    out = run(adt(admit="20261345080000-0600"))  # month 13
    assert out.error is None and not out.clean
    assert sorted(e["resource_type"] for e in out.envelopes) == ["Condition", "Patient"]
    assert [(p.reason_code, p.where, p.resource_type) for p in out.rejected] == \
        [("invalid_date", "PV1[1].PV1-44", "Encounter")]
    text = out.rejected[0].text()
    assert text.startswith("PV1[1].PV1-44: ") and PATIENT_NAME not in text and MRN not in text


@pytest.mark.parametrize(("payload", "code"), [
    (b"this is not an HL7 message", "not_hl7"),
    (adt(version="2.1"), "unsupported_version"),
    (adt().replace(b"ADT^A01^ADT_A01", b"ZZZ^Z99"), "unsupported_message_type"),
    (b"", "empty"),
])
def test_a_message_that_cannot_be_read_is_rejected_whole(payload: bytes, code: str) -> None:
    out = run(payload)
    assert out.error is not None and out.error.reason_code == code
    assert out.envelopes == [] and out.rejected == [] and not out.unmapped
    assert out.error.reason and PATIENT_NAME not in out.error.text()


def test_a_truncated_x12_interchange_is_rejected_whole() -> None:
    out = run(b"ISA*00*          *00*~", fmt="x12", source="claims")
    assert out.error is not None and out.error.reason_code == "truncated" and not out.unmapped


def test_a_format_nobody_knows_is_rejected() -> None:
    out = run(b"\x00\x01", fmt="pdf")
    assert out.error is not None and out.error.reason_code == "unknown_format" and not out.unmapped


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_outcomes_are_counted_by_source_and_reason() -> None:
    source = "pipeline_count_test"
    before = {
        "patients": _sample("carelake_normalizer_resources_total", {"source": source, "resource_type": "Patient"}),
        "dates": _sample("carelake_normalizer_rejected_total", {"source": source, "reason": "invalid_date"}),
        "not_hl7": _sample("carelake_normalizer_rejected_total", {"source": source, "reason": "not_hl7"}),
        "pv1_3": _sample("carelake_normalizer_unused_fields_total", {"source": source, "field": "PV1-3"}),
        "x12": _sample("carelake_normalizer_rejected_total", {"source": source, "reason": "truncated"}),
    }
    for payload, fmt in [(adt(), "hl7v2"), (adt(admit="20261345080000-0600"), "hl7v2"),
                         (b"garbage", "hl7v2"), (b"ISA*", "x12"), (b"ISA*", "x12")]:
        pipeline.count(run(payload, source=source, fmt=fmt))
    assert _sample("carelake_normalizer_resources_total",
                   {"source": source, "resource_type": "Patient"}) == before["patients"] + 2
    assert _sample("carelake_normalizer_rejected_total",
                   {"source": source, "reason": "invalid_date"}) == before["dates"] + 1
    assert _sample("carelake_normalizer_rejected_total",
                   {"source": source, "reason": "not_hl7"}) == before["not_hl7"] + 1
    # The rejected Encounter's PV1-3 was never read: the coverage metric shows it.
    assert _sample("carelake_normalizer_unused_fields_total",
                   {"source": source, "field": "PV1-3"}) == before["pv1_3"] + 1
    assert _sample("carelake_normalizer_rejected_total", {"source": source, "reason": "truncated"}) == before["x12"] + 2


def test_a_messy_simulated_day_through_the_pipeline(messy_hl7_day) -> None:  # noqa: ANN001
    """Local lab codes reach Silver with their LOINC; clean messages lose nothing; defects are rejected."""
    loinc_added = local_obs = 0
    for record in messy_hl7_day:
        env = envelope(record.payload, source=record.source)
        out = pipeline.normalize(env, record.payload, tz=CHICAGO, processed_at=NOW)
        malformed = any(d.startswith("malformed:") for d in record.defects)
        if not malformed:
            assert out.clean, (record.message_id, out.error, out.rejected)
        else:
            assert out.error is not None or out.rejected, record.message_id
        for e in out.envelopes:
            if e["resource_type"] == "Observation" and "local_code" in record.defects:
                codings = json.loads(e["resource"])["code"]["coding"]
                if any(c["system"].startswith(systems.LOCAL_PREFIX) for c in codings):
                    local_obs += 1
                    loinc_added += codings[0]["system"] == systems.LOINC
    assert local_obs > 20
    assert loinc_added == local_obs  # every local lab code the simulator sends has a LOINC in the map
