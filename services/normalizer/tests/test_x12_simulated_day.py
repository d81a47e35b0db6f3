"""A simulated day's claim files, record by record as the gateway splits them, against the simulator's truth.

Every 837P/837I/835 record maps (with its file, as the service will call it) to resources that
validate; Claim totals, lines and diagnoses equal the claims the simulator generated (with the
ICD-9 codes a legacy biller put in, which the terminology pass maps to ICD-10-CM); ClaimResponse
amounts equal the remittances; ids are deterministic and link 837 ↔ 835; claim-only mode and the
whole-file mode give what the records give.
"""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from carelake_ingest_gateway.files import split_x12
from carelake_normalizer import validate as validation
from carelake_normalizer.core import MapResult
from carelake_normalizer.phi import ICD9CM, ICD10CM, SENSITIVE_RANGES
from carelake_normalizer.terminology import normalize_resource
from carelake_normalizer.terminology.systems import NORMALIZED_FROM
from carelake_normalizer.x12 import map_x12
from carelake_normalizer.x12.index import clear_cache
from carelake_simulator import codes
from carelake_simulator.feeds import MessRates
from carelake_simulator.formats.x12 import _text
from carelake_simulator.simulate import SimConfig, simulate

CHICAGO = ZoneInfo("America/Chicago")
SYSTEM = {"ICD10CM": ICD10CM, "ICD9CM": ICD9CM}
# Populated elements of the simulator's files no mapping reads: the known coverage gaps.
KNOWN_GAPS = {
    "CLM-2300-CLM06", "CLM-2300-CLM07", "CLM-2300-CLM08", "CLM-2300-CLM09",  # signature, assignment, release
    "NM1-1000A-NM101", "NM1-1000A-NM102", "NM1-1000A-NM103", "NM1-1000A-NM108", "NM1-1000A-NM109",  # submitter
    "PER-1000A-PER01", "PER-1000A-PER02", "PER-1000A-PER03", "PER-1000A-PER04",
    "NM1-1000B-NM101", "NM1-1000B-NM102", "NM1-1000B-NM103", "NM1-1000B-NM108", "NM1-1000B-NM109",  # receiver
    "CLP-2100-CLP06",  # claim filing indicator
    "NM1-2100-NM102", "NM1-2100-NM103", "NM1-2100-NM104", "NM1-2100-NM105",  # the 835 patient's name
    # BPR bank routing: payer / payee accounts and the originating company id
    "BPR-HEADER-BPR05", "BPR-HEADER-BPR06", "BPR-HEADER-BPR07", "BPR-HEADER-BPR08", "BPR-HEADER-BPR09",
    "BPR-HEADER-BPR10", "BPR-HEADER-BPR12", "BPR-HEADER-BPR13", "BPR-HEADER-BPR14", "BPR-HEADER-BPR15",
}


@pytest.fixture(scope="module")
def day():  # noqa: ANN201
    return simulate(SimConfig(patients=10000, seed=4, mess=MessRates(legacy_icd9=0.1, invalid_code=0.03)))


@pytest.fixture(scope="module")
def files(day):  # noqa: ANN001, ANN201
    out = [f for f in day.files if f.kind in ("837P", "837I", "835")]
    assert {f.kind for f in out} == {"837P", "837I", "835"}
    return out


def _records(f):  # noqa: ANN001, ANN202
    """The file's records exactly as the ingest gateway splits them."""
    return list(split_x12(f.source, io.BytesIO(f.payload)))


def _map_day(files, terminology: bool = True) -> dict:  # noqa: ANN001
    """{claim id: (file, record, truth FileRecord, MapResult, flags)} for every record of the day."""
    out = {}
    for f in files:
        truth = {r.record_id: r for r in f.records}
        for rec in _records(f):
            flags: list = []

            def term(resource: dict, flags: list = flags) -> None:
                flags.extend(normalize_resource(resource, f.source))

            payload = f.payload[rec.byte_start:rec.byte_end]
            result = map_x12(payload, source=f.source, tz=CHICAGO, raw_id=f"{f.name}:{rec.byte_start}",
                             file_bytes=f.payload, byte_offset=rec.byte_start,
                             terminology=term if terminology else None)
            out[(f.kind, rec.record_id)] = (f, rec, truth[rec.record_id], result, flags)
    return out


@pytest.fixture(scope="module")
def mapped(files):  # noqa: ANN001, ANN201
    clear_cache()
    return _map_day(files)


def _one(result: MapResult, rt: str) -> dict:
    found = [m.resource for m in result.resources if m.resource_type == rt]
    assert len(found) == 1, (rt, [m.resource_type for m in result.resources], result.rejected)
    return found[0]


def _originals(concept: dict) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in concept["coding"]
            if not any(e["url"] == NORMALIZED_FROM for e in c.get("extension", ()))]


def test_every_record_maps_with_its_file_and_every_resource_validates(mapped) -> None:  # noqa: ANN001
    kinds: Counter[str] = Counter()
    for (kind, claim_id), (_f, _rec, _truth, result, _flags) in mapped.items():
        assert result.rejected == [], (claim_id, result.rejected)
        assert result.meta["context"] == "file"
        assert result.meta["transaction"] == kind
        types = Counter(m.resource_type for m in result.resources)
        if kind == "835":
            assert types["ClaimResponse"] == 1 and types["Organization"] == 2, types
        else:
            assert types["Claim"] == 1 and types["Patient"] == 1 and types["Coverage"] == 1, types
            assert types["Organization"] == 2, types  # the payer and the (organization) billing provider
        for m in result.resources:
            assert validation.validate(m.resource, memo=False) is None, (claim_id, m.resource_type)
            assert m.id == m.resource["id"]
            kinds[m.resource_type] += 1
    assert kinds["Claim"] > 100 and kinds["ClaimResponse"] > 100 and kinds["Practitioner"] > 10


def test_claims_equal_the_simulators_truth(day, mapped) -> None:  # noqa: ANN001
    truth = {c.claim_id: c for c in day.events.claims}
    registrations = day.registry.primary["claims"]
    checked = Counter()
    for (kind, claim_id), (_f, _rec, record, result, flags) in mapped.items():
        if kind == "835":
            continue
        claim = truth[claim_id]
        res = _one(result, "Claim")
        as_sent = _expected_dx(claim, record)
        got = [_originals(d["diagnosisCodeableConcept"])[0] for d in res["diagnosis"]]
        if "invalid_code:ICD10CM" in record.defects:  # the file's first code is an invalid one, not the truth's
            assert got[0] != as_sent[0]
            assert any(f.flag == "invalid_code" and f.code == got[0][1] for f in flags)
            as_sent[0] = got[0]
            checked["invalid"] += 1
        assert got == list(dict.fromkeys(as_sent)), claim_id  # one entry per code (principal = admitting)
        assert res["type"]["coding"][0]["code"] == ("professional" if kind == "837P" else "institutional")
        assert Decimal(str(res["total"]["value"])) == claim.total
        assert len(res["item"]) == len(claim.lines)
        for item, line in zip(res["item"], claim.lines, strict=True):
            assert Decimal(str(item["net"]["value"])) == line.charge
            assert item["quantity"]["value"] == line.units
            assert item["productOrService"]["coding"][0]["code"] == line.procedure.code
            assert item["servicedDate"] == line.service_date.isoformat()
            assert [m["coding"][0]["code"] for m in item.get("modifier", [])] == list(line.modifiers[:4])
            if kind == "837I":
                assert item["revenue"]["coding"][0]["code"] == line.revenue_code.code
            else:
                pointed = [res["diagnosis"][s - 1] for s in item["diagnosisSequence"]]
                assert [_originals(d["diagnosisCodeableConcept"])[0] for d in pointed] == \
                    list(dict.fromkeys(as_sent[p - 1] for p in line.diagnosis_pointers))
        assert res["diagnosis"][0]["type"][0]["coding"][0]["code"] == "principal"
        if kind == "837I":
            bill = next(s for s in res["supportingInfo"] if s["category"]["coding"][0]["code"] == "typeofbill")
            assert bill["code"]["coding"][0]["code"] == claim.facility_type
            assert res["billablePeriod"] == {"start": claim.service_from.isoformat(),
                                             "end": claim.service_to.isoformat()}
            assert [c["role"]["coding"][0]["code"] for c in res["careTeam"]] == ["attending"]
        elif claim.rendering.npi != claim.billing.npi:
            assert res["careTeam"][0]["role"]["coding"][0]["code"] == "rendering"
        # The patient and their coverage, from the 2000B loop the record does not hold.
        patient = _one(result, "Patient")
        demo = registrations[claim.person_id].demo
        assert patient["name"][0]["family"] == _text(demo.family, 60)
        if demo.birth_date is not None:
            assert patient["birthDate"] == demo.birth_date.isoformat()
        else:
            assert "birthDate" not in patient
        member = next(i for i in patient["identifier"] if i["type"]["coding"][0]["code"] == "MB")
        assert member == {"type": member["type"], "system": f"urn:carelake:member-id:{claim.payer.payer_id}",
                          "value": claim.member_id}
        coverage = _one(result, "Coverage")
        assert res["patient"] == coverage["beneficiary"] == {"reference": f"Patient/{patient['id']}"}
        assert res["insurance"][0]["coverage"] == {"reference": f"Coverage/{coverage['id']}"}
        provider = next(m.resource for m in result.resources if res["provider"]["reference"].endswith(m.id))
        assert {"system": "http://hl7.org/fhir/sid/us-npi", "value": claim.billing.npi} in provider["identifier"]
        checked[kind] += 1
    assert checked["837P"] > 100 and checked["837I"] >= 3 and checked["invalid"] >= 1


def _expected_dx(claim, record) -> list[tuple[str, str]]:  # noqa: ANN001
    """The claim's diagnoses as the file carries them (ICD-9 where the legacy biller put them)."""
    dxs = claim.diagnoses[:12] if claim.kind == "837P" else claim.diagnoses[:25]
    if "legacy_icd9" in record.defects:
        dxs = tuple(codes.ICD9_EQUIVALENTS.get(dx.code, dx) for dx in dxs)
    return [(SYSTEM[dx.system], dx.code) for dx in dxs]


def test_icd9_diagnoses_are_mapped_to_icd10_by_the_terminology_pass(mapped) -> None:  # noqa: ANN001
    seen = 0
    for (kind, _claim_id), (_f, _rec, record, result, _flags) in mapped.items():
        if kind == "835" or "legacy_icd9" not in record.defects:
            continue
        res = _one(result, "Claim")
        for d in res["diagnosis"]:
            coding = d["diagnosisCodeableConcept"]["coding"]
            if coding[-1]["system"] != ICD9CM:
                continue
            added = coding[0]
            assert added["system"] == ICD10CM and added["userSelected"] is False
            assert added["extension"][0]["url"] == NORMALIZED_FROM
            assert added["extension"][0]["valueString"].startswith(f"{ICD9CM}|{coding[-1]['code']}|")
            seen += 1
    assert seen >= 3


def test_the_same_records_without_terminology_keep_icd9_as_sent(files) -> None:  # noqa: ANN001
    plain = _map_day([f for f in files if f.kind != "835"], terminology=False)
    icd9 = [d for (_k, _c), (_f, _r, rec, result, _fl) in plain.items() if "legacy_icd9" in rec.defects
            for d in _one(result, "Claim")["diagnosis"]]
    assert icd9 and all(len(d["diagnosisCodeableConcept"]["coding"]) == 1 for d in icd9)
    assert any(d["diagnosisCodeableConcept"]["coding"][0]["system"] == ICD9CM for d in icd9)


def test_remittances_equal_the_truth_and_link_to_their_claims(day, mapped) -> None:  # noqa: ANN001
    remits = {r.claim_id: r for r in day.events.remittances}
    outcomes = Counter()
    for (kind, claim_id), (_f, _rec, _record, result, _flags) in mapped.items():
        if kind != "835":
            continue
        remit = remits[claim_id]
        res = _one(result, "ClaimResponse")
        totals = {t["category"]["coding"][0]["code"]: Decimal(str(t["amount"]["value"])) for t in res["total"]}
        assert totals == {"submitted": remit.billed, "benefit": remit.paid}
        assert Decimal(str(res["payment"]["amount"]["value"])) == remit.paid
        assert res["payment"]["date"] == remit.paid_on.isoformat()
        cas = [(a["category"]["coding"][0]["code"], a["reason"]["coding"][0]["code"], Decimal(str(a["amount"]["value"])))
               for a in res["adjudication"] if "reason" in a]
        assert cas == [(g, r, a) for g, r, a in remit.adjustments]
        assert res["outcome"] == ("error" if remit.status == "4" else "complete")
        outcomes[res["outcome"]] += 1
        # The 835 points at the Claim and the Patient the 837 mapping made.
        claim_kind = next(k for k in ("837P", "837I") if (k, claim_id) in mapped)
        claim_result = mapped[(claim_kind, claim_id)][3]
        claim = _one(claim_result, "Claim")
        assert res["request"]["reference"] == f"Claim/{claim['id']}"
        assert res["patient"] == claim["patient"]
        assert res["requestor"] == claim["provider"]
        assert res["insurer"] == claim["insurer"]
    assert outcomes["complete"] > 50 and outcomes["error"] >= 1


def test_ids_are_deterministic_across_runs(files, mapped) -> None:  # noqa: ANN001
    clear_cache()
    again = _map_day(files)
    assert again.keys() == mapped.keys()
    for k, (_f, _r, _t, result, _fl) in mapped.items():
        other = again[k][3]
        assert [(m.resource_type, m.id) for m in result.resources] == [(m.resource_type, m.id) for m in other.resources]
        assert [m.resource for m in result.resources] == [m.resource for m in other.resources]


def test_phi_paths_and_sensitivity_labels(mapped) -> None:  # noqa: ANN001
    restricted = 0
    for (kind, _claim_id), (_f, _rec, _record, result, _flags) in mapped.items():
        for m in result.resources:
            if m.resource_type == "Claim":
                assert {"Claim.identifier", "Claim.created", "Claim.item", "Claim.billablePeriod"} <= set(m.phi_paths)
                dx = [c["code"] for d in m.resource["diagnosis"] for c in d["diagnosisCodeableConcept"]["coding"]
                      if c["system"] == ICD10CM]
                sensitive = any(lo <= code[:3] <= hi for code in dx for lo, hi, _ in SENSITIVE_RANGES[ICD10CM])
                assert ("R" in m.security_labels) == sensitive
                restricted += sensitive
            elif m.resource_type == "ClaimResponse":
                assert {"ClaimResponse.identifier", "ClaimResponse.request", "ClaimResponse.payment"} <= set(m.phi_paths)
            elif m.resource_type == "Patient":
                assert {"Patient.identifier", "Patient.name"} <= set(m.phi_paths)
            elif m.resource_type == "Organization":
                assert m.phi_paths == [] and m.security_labels == ["N"]
    assert restricted >= 1


def test_coverage_gaps_are_the_known_ones(mapped) -> None:  # noqa: ANN001
    unused: Counter[str] = Counter()
    for _f, _rec, _record, result, _flags in mapped.values():
        unused.update(result.unused)
    assert set(unused) == KNOWN_GAPS, (sorted(set(unused) - KNOWN_GAPS), sorted(KNOWN_GAPS - set(unused)))
    assert unused["CLM-2300-CLM06"] > 100  # the gaps really are counted


def test_claim_only_mode_maps_the_claim_with_what_the_loop_has(files, mapped) -> None:  # noqa: ANN001
    done = Counter()
    for f in files:
        for rec in _records(f):
            payload = f.payload[rec.byte_start:rec.byte_end]
            result = map_x12(payload, source=f.source, tz=CHICAGO, raw_id="r", patient_key=rec.patient_key,
                             terminology=lambda res: normalize_resource(res, "claims"))
            assert result.meta["context"] == "claim-only"
            if f.kind == "835":
                # The simulator's 2100 loops carry no date (DTM*050/232/233) and the production date is
                # in the file's header: ClaimResponse.created (required) cannot be given, never guessed.
                assert [(p.reason_code, p.where, p.resource_type) for p in result.rejected] == \
                    [("missing_field", "2100 CLP", "ClaimResponse")]
                dated = payload.replace(b"~", b"~DTM*050*20260114~", 1)
                result = map_x12(dated, source=f.source, tz=CHICAGO, raw_id="r", patient_key=rec.patient_key)
                assert _one(result, "ClaimResponse")["created"] == "2026-01-14"
            assert result.rejected == [], result.rejected
            full = mapped[(f.kind, rec.record_id)][3]
            rt = "ClaimResponse" if f.kind == "835" else "Claim"
            alone, with_file = _one(result, rt), _one(full, rt)
            others = {m.resource_type for m in result.resources} - {rt}
            assert others <= {"Practitioner"}  # a 2310 rendering / attending provider is in the loop itself
            assert alone["id"] == with_file["id"]
            assert alone["patient"] == with_file["patient"]  # the patient key gives the same Patient id
            assert alone["total"] == with_file["total"]
            if rt == "Claim":
                assert alone["item"] == with_file["item"] and alone["diagnosis"] == with_file["diagnosis"]
                assert "display" in alone["provider"] and "display" in alone["insurance"][0]["coverage"]
                latest = [i["servicedDate"] for i in alone["item"]] + [alone["billablePeriod"]["end"]]
                assert alone["created"] == max(latest)  # the loop's latest date, not the clock
            done[f.kind] += 1
    assert done["837P"] and done["837I"] and done["835"]
    # Without a patient key either: a contained Patient with the loop's REF*EA medical record number.
    f = next(f for f in files if f.kind == "837P")
    rec = _records(f)[0]
    result = map_x12(f.payload[rec.byte_start:rec.byte_end], source=f.source, tz=CHICAGO, raw_id="r")
    claim = _one(result, "Claim")
    assert claim["patient"] == {"reference": "#patient"}
    assert claim["contained"][0]["identifier"][0]["type"]["coding"][0]["code"] == "MR"
    assert "Claim.contained" in next(m for m in result.resources if m.resource_type == "Claim").phi_paths


def test_a_whole_file_maps_to_what_its_records_map_to(files, mapped) -> None:  # noqa: ANN001
    for f in files:
        whole = map_x12(f.payload, source=f.source, tz=CHICAGO, raw_id="whole")
        assert whole.rejected == []
        assert whole.meta["claims"] == len(f.records)
        from_records = {}
        unused: Counter[str] = Counter()
        for (kind, _cid), (ff, _rec, _t, result, _fl) in mapped.items():
            if ff is f:
                unused.update(result.unused)
                for m in result.resources:
                    from_records.setdefault((m.resource_type, m.id), m)
        assert {(m.resource_type, m.id) for m in whole.resources} == set(from_records)
        assert len(whole.resources) == len(from_records)  # each resource once
        assert whole.unused == unused  # an enclosing loop's gaps are counted once either way


def test_silver_envelopes_encode(mapped) -> None:  # noqa: ANN001
    from carelake.serde import SchemaRegistry
    from carelake_normalizer.envelope import fhir_envelope

    encode = SchemaRegistry.load().get("fhir_envelope").encode
    now = datetime.now(UTC)
    n = 0
    for _f, rec, _t, result, _fl in list(mapped.values())[:60]:
        for m in result.resources:
            assert encode(fhir_envelope(m, source="claims", raw_id="r", bronze_key="k", byte_offset=rec.byte_start,
                                        byte_length=rec.byte_end - rec.byte_start, source_message_id=None,
                                        processed_at=now))
            n += 1
    assert n > 100
