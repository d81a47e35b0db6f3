"""truthcheck on hand-built truth, Silver envelopes and dead letters (no stack)."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from carelake.serde import SchemaRegistry
from carelake_normalizer.core import EXT_SOURCE_TIMEZONE, EXT_TIMEZONE_ASSUMED
from carelake_normalizer.terminology import MapStore, normalize_resource
from carelake_normalizer.terminology import systems as S
from carelake_normalizer.terminology.normalize import CODE_FLAG
from carelake_normalizer.truthcheck import (
    DETECTIONS,
    M_NO_BIRTHDATE,
    M_PATIENT_LINK,
    NORMALIZER,
    OUT_OF_SCOPE,
    UNDECLARED,
    EdgeReject,
    check,
    code_flag,
    coverage_rows,
    detection_for,
    file_of,
    markers,
    normalized_from,
    raw_envelope_of,
    render,
    to_json,
)

NOW = datetime(2026, 1, 15, 12, tzinfo=UTC)
FILE_837, FILE_835, FILE_RX = "837P_20260115.x12", "835_LKS01_20260115.x12", "pharmacy_dispenses_20260115.csv"
TRUTH = [  # source, kind, record_id, file, key, defects
    ("ehr", "ADT^A04", "EHR1", "", "ehr|E1", ""),
    ("ehr", "ADT^A04", "EHR2", "", "ehr|E2", "invalid_code:ICD10CM;late"),
    ("ehr", "ADT^A04", "EHR3", "", "ehr|E3", "malformed:bad_header"),
    ("ehr", "ADT^A40", "EHR4", "", "ehr|E4", "merge_of_duplicate;timestamp_without_zone"),
    ("lab", "ORU^R01", "LAB1", "", "lab|L1", "missing_dob"),
    ("lab", "ORU^R01", "LAB2", "", "lab|L2", "malformed:truncated"),
    ("lab", "ORU^R01", "LAB3", "", "lab|L3", "timestamp_without_zone"),
    ("lab", "ORU^R01", "LAB4", "", "lab|L4", "local_code;invalid_code:LOINC"),
    ("claims", "837P", "C1", FILE_837, "claims|M1", "legacy_icd9"),
    ("claims", "835", "C1", FILE_835, "claims|M1", ""),  # same claim id, another file: never delivered here
    ("pharmacy", "pharmacy_csv", "RX1", FILE_RX, "pharmacy|P1", ""),
    ("wearables", "wearable", "DEV-1-hr-0", "", "wearables|W1", "device_not_enrolled"),
    ("wearables", "wearable", "DEV-1-hr-10", "", "wearables|W1", "malformed:invalid_json"),
    ("lab", "ORU^R01", "LAB5", "", "lab|L5", "no_such_kind"),
]


@pytest.fixture
def truth(tmp_path: Path) -> Path:
    folder = tmp_path / "_truth"
    folder.mkdir()
    with open(folder / "records.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("source", "kind", "record_id", "file", "key", "person_id", "defects"))
        for source, kind, rid, file, key, defects in TRUTH:
            w.writerow((source, kind, rid, file, key, "P1", defects))
    return folder


def silver(resource: dict, source: str, message_id: str | None, *, file: str = "",
           patient_key: str | None = "x|1") -> dict:
    key = f"{source}/2026/01/15/files/0123456789abcdef-{file}" if file else f"{source}/2026/01/15/segments/"
    return {"id": resource["id"], "resource_type": resource["resourceType"], "resource": json.dumps(resource),
            "fhir_version": "4.0.1", "source": source, "source_patient_key": patient_key, "euid": None,
            "event_time": None, "processed_at": NOW,
            "lineage": {"raw_id": "r", "bronze_key": key, "byte_offset": 0, "byte_length": 1,
                        "source_message_id": message_id},
            "phi_paths": [], "security_labels": []}


def dead_letter(source: str, message_id: str, code: str) -> dict:
    env = {"id": "raw-" + message_id, "source": source, "format": "hl7v2", "content_type": None, "received_at": NOW,
           "bronze_key": f"{source}/2026/01/15/segments/", "sha256": "0" * 64, "byte_offset": 0, "byte_length": 3,
           "payload": b"MSH", "source_message_id": message_id, "source_patient_key": None, "replayed": False,
           "headers": {}}
    raw = SchemaRegistry.load().get("raw_envelope").encode(env)
    return {"id": "t:0:1", "service": "normalizer", "stage": "process", "reason_code": code, "reason": "x",
            "error_type": "Reject", "source_topic": "bronze.raw.v1", "source_partition": 0, "source_offset": 1,
            "source_key": None, "payload": raw, "source": source, "bronze_key": env["bronze_key"],
            "failed_at": NOW, "attempts": 1}


def patient(pid: str, birth: str | None = "1960-08-29", **more: object) -> dict:
    res = {"resourceType": "Patient", "id": pid, **more}
    if birth:
        res["birthDate"] = birth
    return res


def coded(rid: str, system: str, code: str, *exts: dict, time: bool = True, assumed: bool = False) -> dict:
    coding = {"system": system, "code": code, **({"extension": list(exts)} if exts else {})}
    res = {"resourceType": "Observation", "id": rid, "status": "final", "code": {"coding": [coding]},
           "subject": {"reference": "Patient/p"}}
    if time:
        res["extension"] = [{"url": EXT_SOURCE_TIMEZONE, "valueString": "America/Chicago"}]
        if assumed:
            res["extension"].append({"url": EXT_TIMEZONE_ASSUMED, "valueBoolean": True})
    return res


FLAG_INVALID = {"url": CODE_FLAG, "valueCode": "invalid_code"}


def run_check(truth: Path) -> object:
    envs = [
        silver(patient("p1"), "ehr", "EHR1"),
        silver(coded("c2", S.ICD10CM, "E11.999", FLAG_INVALID), "ehr", "EHR2"),
        silver(patient("p4", link=[{"other": {"reference": "Patient/old"}, "type": "replaces"}]), "ehr", "EHR4"),
        silver(patient("old", None, link=[{"other": {"reference": "Patient/p4"}, "type": "replaced-by"}]),
               "ehr", "EHR4"),
        silver(patient("l1", None), "lab", "LAB1"),
        silver(coded("o3", S.LOINC, "4548-4", assumed=True), "lab", "LAB3"),
        silver(coded("o4", S.LOINC, "4548-5", FLAG_INVALID), "lab", "LAB4"),  # its local code was planted over
        silver(coded("cl1", S.ICD10CM, "N18.4", {"url": S.NORMALIZED_FROM,
                                                 "valueString": f"{S.ICD9CM}|585.4|gem@2018"}),
               "claims", "C1", file=FILE_837),
        # A CSV export without an id column: found by its patient key, unique in its file.
        silver(patient("rx1"), "pharmacy", None, file=FILE_RX, patient_key="pharmacy|P1"),
        silver({"resourceType": "Observation", "id": "w1", "status": "final", "code": {"text": "hr"}},
               "wearables", "DEV-1-hr-0", patient_key=None),
        silver(patient("bad", "1960-13-45"), "lab", "LAB5"),  # invalid: month 13
        silver(patient("stray"), "ehr", "EHR999"),  # names no truth record
    ]
    dlq = [dead_letter("lab", "LAB2", "truncated"), dead_letter("lab", "LAB5", "invalid_date")]
    edge = [EdgeReject("ehr", "EHR3", "mllp AR", "unparseable MSH segment"),
            EdgeReject("wearables", "DEV-1-hr-10", "dlq.ingest-gateway.v1", "bad_json"),
            EdgeReject("ehr", "NOPE", "mllp AR")]
    coverage = {("ehr", "PID-11"): 3, ("lab", "PID-11"): 2, ("ehr", "PV1-2"): 7, ("lab", "ORC-1"): 0}
    return check(truth, envs, dlq, coverage, edge)


def test_records_are_accounted_per_source(truth: Path) -> None:
    r = run_check(truth)
    rows = {s.source: s for s in r.sources}
    assert (rows["ehr"].records, rows["ehr"].mapped, rows["ehr"].edge, rows["ehr"].lost) == (4, 3, 1, 0)
    assert (rows["lab"].records, rows["lab"].mapped, rows["lab"].dlq, rows["lab"].partial) == (5, 4, 2, 1)
    assert rows["ehr"].unmatched_silver == 1
    assert rows["pharmacy"].mapped == 1  # joined by the unique patient key
    # The 835's C1 is another record than the 837's: nothing of it arrived, so it is lost.
    claims = rows["claims"]
    assert (claims.mapped, claims.lost, claims.lost_examples) == (1, 1, [f"claims:{FILE_835}:C1"])
    assert r.lost == 1
    assert rows["wearables"].edge == 1 and rows["wearables"].mapped == 1
    assert r.edge_unmatched == ["ehr:NOPE (mllp AR)"]
    assert r.dlq_reasons == {"lab:truncated": 1, "lab:invalid_date": 1}


def test_every_resource_is_validated_again(truth: Path) -> None:
    r = run_check(truth)
    assert r.validation.resources == 12
    assert r.invalid == 1 and "Patient/bad" in r.validation.invalid_examples[0]
    assert r.validation.by_type["Patient"] == 7


def test_defects_are_caught_the_declared_way(truth: Path) -> None:
    r = run_check(truth)
    rows = {d.kind: d for d in r.defects}
    assert (rows["malformed:bad_header"].edge, rows["malformed:truncated"].dlq) == (1, 1)
    assert rows["malformed:invalid_json"].edge == 1
    assert rows["invalid_code:ICD10CM"].flag == 1 and rows["invalid_code:LOINC"].flag == 1
    assert rows["legacy_icd9"].flag == 1
    assert rows["missing_dob"].flag == 1 and rows["missing_dob"].unplanted_marked == 0  # the A40 stub is no gap
    tz = rows["timestamp_without_zone"]
    assert (tz.planted, tz.flag, tz.na, tz.missed) == (2, 1, 1, 0)  # the A40 holds no time: n/a
    local = rows["local_code"]
    assert (local.flag, local.na, local.missed) == (0, 1, 0) and "invalid_code:LOINC" in next(iter(local.na_why))
    merge = rows["merge_of_duplicate"]
    assert merge.scope == OUT_OF_SCOPE and (merge.check_ok, merge.check_failed) == (1, 0)
    assert rows["device_not_enrolled"].check_ok == 1
    assert rows["late"].scope == OUT_OF_SCOPE and rows["late"].missed == 0
    # A kind nobody declared is in scope and missed, never silently passed.
    odd = rows["no_such_kind"]
    assert odd.scope == NORMALIZER and odd.missed == 1 and odd.how == UNDECLARED.how
    assert set(r.missed()) == {"no_such_kind"}
    assert [d.scope for d in r.defects] == sorted((d.scope for d in r.defects), key=lambda s: s != NORMALIZER)


def test_problems_name_lost_invalid_and_missed(truth: Path) -> None:
    problems = run_check(truth).problems()
    assert problems == ["1 records lost (neither Silver, DLQ nor refused at the edge)", "1 Silver resources invalid",
                        "1 planted no_such_kind missed"]


def test_coverage_rows_sum_sources_largest_first() -> None:
    rows = coverage_rows({("ehr", "PID-11"): 3, ("lab", "PID-11"): 2, ("ehr", "PV1-2"): 7, ("lab", "ORC-1"): 0,
                          ("ehr", "AL1-3"): 5})
    assert [(c.field, c.unused) for c in rows] == [("PV1-2", 7), ("AL1-3", 5), ("PID-11", 5)]
    assert rows[2].by_source == {"ehr": 3, "lab": 2}


def test_render_and_json(truth: Path) -> None:
    r = run_check(truth)
    text = render(r)
    for part in ("LOST", "claims:835_LKS01_20260115.x12:C1", "out of scope", "1/1 a Patient with link", "PV1-2",
                 "n/a 1: no resource of the message holds a time", "RESULT: 1 records lost"):
        assert part in text, part
    data = json.loads(json.dumps(to_json(r)))
    assert data["totals"]["lost"] == 1 and data["totals"]["invalid"] == 1
    assert data["coverage"][0] == {"field": "PV1-2", "unused": 7, "by_source": {"ehr": 7}}


def test_detection_table() -> None:
    assert detection_for("invalid_code:ICD10CM").markers == (code_flag("invalid_code", S.ICD10CM),)
    assert detection_for("invalid_code:CVX").kind == "invalid_code:"  # the family row
    assert detection_for("malformed:garbage").edge and detection_for("malformed:garbage").dlq_codes
    assert detection_for("whatever") is UNDECLARED
    for d in DETECTIONS:
        assert d.scope in (NORMALIZER, OUT_OF_SCOPE) and d.how
        assert d.scope == OUT_OF_SCOPE or d.markers or d.dlq_codes or d.edge


def test_markers_of_resources() -> None:
    assert M_NO_BIRTHDATE in markers(patient("p", None))
    assert markers(patient("p", None, link=[{"type": "replaced-by", "other": {"reference": "Patient/q"}}])) \
        == {M_PATIENT_LINK}
    local = coded("o", S.LOINC, "4548-4", {"url": S.NORMALIZED_FROM, "valueString": "urn:carelake:local:lab:L|A1C|m@1"})
    assert normalized_from("local:lab") in markers(local)
    unmapped = coded("o", "urn:carelake:local:ehr:HL70086", "HMO", {"url": CODE_FLAG, "valueCode": "unmapped"})
    assert code_flag("unmapped", "local:ehr") in markers(unmapped)
    assert code_flag("unmapped", "local:lab") not in markers(unmapped)


def test_the_terminology_pass_writes_flags_truthcheck_reads() -> None:
    store = MapStore(None)
    store.warm()
    res = coded("c", S.ICD10CM, "E11.999", time=False)
    normalize_resource(res, "ehr", store=store)
    assert code_flag("invalid_code", S.ICD10CM) in markers(res)
    icd9 = coded("d", S.ICD9CM, "585.4", time=False)
    normalize_resource(icd9, "claims", store=store)
    assert normalized_from(S.ICD9CM) in markers(icd9)


def test_file_of_and_raw_envelope_of() -> None:
    assert file_of("claims/2026/01/15/files/0123456789abcdef-837P_20260115.x12") == "837P_20260115.x12"
    assert file_of("ehr/2026/01/15/segments/") == "" and file_of(None) == ""
    env = raw_envelope_of(dead_letter("lab", "LAB2", "truncated"))
    assert env is not None and env["source_message_id"] == "LAB2"
    assert raw_envelope_of({"payload": b"not avro"}) is None and raw_envelope_of({"payload": b""}) is None
