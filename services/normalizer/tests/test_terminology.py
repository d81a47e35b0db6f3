"""The terminology pass on example FHIR resources (synthetic, no PHI)."""

from __future__ import annotations

import copy

import pytest
from fhir.resources.R4B.claim import Claim
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medicationdispense import MedicationDispense
from fhir.resources.R4B.observation import Observation
from prometheus_client import REGISTRY

from carelake_normalizer.terminology import (
    CodeFlag,
    MapStore,
    codeable_concepts,
    normalize_resource,
)
from carelake_normalizer.terminology import systems as S
from carelake_normalizer.terminology.maps import GemRow, Icd10Entry, choose_gem_target
from carelake_normalizer.terminology.normalize import CODE_FLAG

EXT = S.NORMALIZED_FROM


@pytest.fixture(scope="module")
def store() -> MapStore:
    s = MapStore(None)  # shipped and package maps only: no operator folder
    s.warm()
    return s


def condition(system: str, code: str, display: str | None = None) -> dict:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [coding]}}


def flags_of(flags: list[CodeFlag]) -> set[tuple[str, str, str]]:
    return {(f.system, f.code, f.flag) for f in flags}


def ext_value(coding: dict) -> str:
    (ext,) = [e for e in coding["extension"] if e["url"] == EXT]
    return ext["valueString"]


# ---- ICD-9-CM -> ICD-10-CM ---------------------------------------------------------------------


def test_icd9_condition_gets_icd10_first_and_keeps_the_original(store: MapStore) -> None:
    d = condition(S.ICD9CM, "585.4", "Chronic kidney disease, Stage IV (severe)")
    original = copy.deepcopy(d["code"]["coding"][0])
    flags = normalize_resource(d, "claims", store=store)
    first, second = d["code"]["coding"]
    assert (first["system"], first["code"]) == (S.ICD10CM, "N18.4")
    assert first["display"] == "Chronic kidney disease, stage 4 (severe)"
    assert first["userSelected"] is False
    assert ext_value(first) == f"{S.ICD9CM}|585.4|{store.icd9cm.gem_info.tag}"
    assert second == original
    assert flags == []  # the GEM row 585.4 -> N18.4 is exact ("00000")
    Condition.model_validate(d)


def test_icd9_approximate_gem_entry_is_flagged(store: MapStore) -> None:
    d = condition(S.ICD9CM, "428.0")
    flags = normalize_resource(d, "claims", store=store)
    assert d["code"]["coding"][0]["code"] == "I50.9"
    assert flags == [CodeFlag("Condition.code", S.ICD9CM, "428.0", "approximate_map", "claims")]
    Condition.model_validate(d)


def test_icd9_alternatives_prefer_a_billable_target(store: MapStore) -> None:
    # GEM: 272.4 -> E78.4 or E78.5; E78.4 has had subcodes since FY2019, so E78.5 is taken.
    assert not store.icd10cm.entries["E784"].billable
    d = condition(S.ICD9CM, "272.4")
    flags = normalize_resource(d, "claims", store=store)
    assert d["code"]["coding"][0]["code"] == "E78.5"
    assert flags_of(flags) == {(S.ICD9CM, "272.4", "approximate_map")}


def test_icd9_undotted_code_maps_too(store: MapStore) -> None:
    d = condition(S.ICD9CM, "25000")
    normalize_resource(d, "claims", store=store)
    assert [c["code"] for c in d["code"]["coding"]] == ["E11.9", "25000"]


def test_icd9_combination_takes_the_first_choice_list(store: MapStore) -> None:
    # 073.0 ornithosis with pneumonia: GEM combination A70 + J17.
    d = condition(S.ICD9CM, "073.0")
    flags = normalize_resource(d, "claims", store=store)
    assert d["code"]["coding"][0]["code"] == "A70"
    assert flags_of(flags) == {(S.ICD9CM, "073.0", "approximate_map")}


@pytest.mark.parametrize(("code", "expected"), [
    ("000.1", {"invalid_code"}),  # shaped like ICD-9, no such code
    ("ABC", {"invalid_code"}),
    ("250", {"non_billable", "unmapped"}),  # a category: only its subcodes are codes
])
def test_icd9_invalid_or_header_codes(store: MapStore, code: str, expected: set[str]) -> None:
    d = condition(S.ICD9CM, code)
    flags = normalize_resource(d, "claims", store=store)
    assert {f.flag for f in flags} == expected
    (coding,) = d["code"]["coding"]  # kept, nothing added; the flags written on it
    assert (coding["system"], coding["code"]) == (S.ICD9CM, code)
    assert {e["valueCode"] for e in coding["extension"] if e["url"] == CODE_FLAG} == expected


def test_gem_choice_rule() -> None:
    icd10 = {"A01": Icd10Entry("A01", False), "A011": Icd10Entry("A01.1", True), "B02": Icd10Entry("B02", True)}
    row = lambda t, a=False, n=False, c=False, s=0, cl=0: GemRow(t, a, n, c, s, cl)  # noqa: E731
    assert choose_gem_target((), icd10) is None
    assert choose_gem_target((row("NoDx", n=True),), icd10) is None
    assert choose_gem_target((row("A01"), row("A011")), icd10) == (row("A011"), True)  # billable first
    assert choose_gem_target((row("A01"),), icd10) == (row("A01"), False)  # only a header: taken
    assert choose_gem_target((row("ZZZ"),), icd10) is None  # target gone from the tabular
    combo = (row("B02", c=True, s=1, cl=1), row("A011", c=True, s=1, cl=2), row("A01", c=True, s=2, cl=1))
    assert choose_gem_target(combo, icd10) == (combo[0], True)


# ---- ICD-10-CM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["E11.999", "Z99.999", "I10.9", "J44.99", "N18.35", "A00-A09", "1", "e11.9x"])
def test_invalid_icd10_is_kept_and_flagged(store: MapStore, code: str) -> None:
    d = condition(S.ICD10CM, code)
    flags = normalize_resource(d, "ehr", store=store)
    assert flags == [CodeFlag("Condition.code", S.ICD10CM, code, "invalid_code", "ehr")]
    assert d["code"]["coding"] == [{"system": S.ICD10CM, "code": code,
                                    "extension": [{"url": CODE_FLAG, "valueCode": "invalid_code"}]}]
    Condition.model_validate(d)
    normalize_resource(d, "ehr", store=store)  # again: the flag is not written twice
    assert len(d["code"]["coding"][0]["extension"]) == 1


def test_icd10_header_is_non_billable(store: MapStore) -> None:
    d = condition(S.ICD10CM, "E11")
    assert flags_of(normalize_resource(d, "ehr", store=store)) == {(S.ICD10CM, "E11", "non_billable")}
    assert len(d["code"]["coding"]) == 1


def test_valid_icd10_is_untouched(store: MapStore) -> None:
    d = condition(S.ICD10CM, "S72.001A", "Fracture of unspecified part of neck of right femur")
    before = copy.deepcopy(d)
    assert normalize_resource(d, "ehr", store=store) == []
    assert d == before


def test_undotted_icd10_gets_the_dotted_form(store: MapStore) -> None:
    d = condition(S.ICD10CM, "E119")
    assert normalize_resource(d, "claims", store=store) == []
    first, second = d["code"]["coding"]
    assert (first["code"], second["code"]) == ("E11.9", "E119")
    assert ext_value(first) == f"{S.ICD10CM}|E119|icd10cm-dotted@1"


# ---- NDC -> RxNorm -----------------------------------------------------------------------------


def dispense(code: str) -> dict:
    return {"resourceType": "MedicationDispense", "id": "md1", "status": "completed",
            "subject": {"reference": "Patient/p1"},
            "medicationCodeableConcept": {"coding": [{"system": S.NDC, "code": code, "display": "Glucophage 500 mg"}],
                                          "text": "metformin 500 mg"}}


def test_ten_digit_ndc_gets_rxnorm_and_the_11_digit_form(store: MapStore) -> None:
    d = dispense("0087-6060-05")
    flags = normalize_resource(d, "pharmacy", store=store)
    rx, ndc11, orig = d["medicationCodeableConcept"]["coding"]
    assert (rx["system"], rx["code"]) == (S.RXNORM, "861007")
    assert rx["display"] == "metformin hydrochloride 500 MG Oral Tablet"
    assert ext_value(rx) == f"{S.NDC}|0087-6060-05|{store.map_for(S.NDC).info.tag}"
    assert (ndc11["system"], ndc11["code"]) == (S.NDC, "00087606005")
    assert ext_value(ndc11) == f"{S.NDC}|0087-6060-05|ndc-11-digit@1"
    assert orig == {"system": S.NDC, "code": "0087-6060-05", "display": "Glucophage 500 mg"}
    assert flags == []
    MedicationDispense.model_validate(d)


def test_bare_ten_digit_ndc_is_resolved_by_the_directory(store: MapStore) -> None:
    d = dispense("0087606005")  # 4-4-2 without hyphens: only 00087606005 is a listed package
    assert normalize_resource(d, "pharmacy", store=store) == []
    assert [c["code"] for c in d["medicationCodeableConcept"]["coding"]] == ["861007", "00087606005", "0087606005"]


def test_eleven_digit_ndc_adds_only_rxnorm(store: MapStore) -> None:
    d = dispense("00173068220")
    assert normalize_resource(d, "pharmacy", store=store) == []
    assert [c["code"] for c in d["medicationCodeableConcept"]["coding"]] == ["745679", "00173068220"]


@pytest.mark.parametrize("code", ["0008822203", "000872220333", "173068220", "0059701523", "12-34-56", "abc"])
def test_malformed_ndc_is_invalid(store: MapStore, code: str) -> None:
    d = dispense(code)
    flags = normalize_resource(d, "pharmacy", store=store)
    assert flags_of(flags) == {(S.NDC, code, "invalid_code")}
    assert len(d["medicationCodeableConcept"]["coding"]) == 1


def test_listed_ndc_without_a_map_row_is_unmapped(store: MapStore) -> None:
    d = dispense("0002-0800-01")  # a listed package (Lilly sterile diluent), not in the curated map
    assert flags_of(normalize_resource(d, "pharmacy", store=store)) == {(S.NDC, "0002-0800-01", "unmapped")}
    assert [c["code"] for c in d["medicationCodeableConcept"]["coding"]] == ["00002080001", "0002-0800-01"]


def test_unlisted_ndc_is_flagged_not_in_directory(store: MapStore) -> None:
    d = dispense("99999-9999-99")
    flags = normalize_resource(d, "pharmacy", store=store)
    assert flags_of(flags) == {(S.NDC, "99999-9999-99", "not_in_directory"), (S.NDC, "99999-9999-99", "unmapped")}


# ---- local codes -------------------------------------------------------------------------------


def observation(system: str, code: str) -> dict:
    return {"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"coding": [{"system": system, "code": code, "display": "HEMOGLOBIN A1C"}]},
            "subject": {"reference": "Patient/p1"}, "valueQuantity": {"value": 7.2, "unit": "%"}}


def test_local_lab_code_gets_loinc(store: MapStore) -> None:
    d = observation(S.local_system("lab"), "A1C")
    assert normalize_resource(d, "lab", store=store) == []
    loinc, local = d["code"]["coding"]
    assert (loinc["system"], loinc["code"], loinc["display"]) == (
        S.LOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood")
    assert ext_value(loinc).startswith("urn:carelake:local:lab|A1C|local-lab-loinc@")
    assert local["code"] == "A1C"
    Observation.model_validate(d)


def test_unknown_local_code_is_unmapped(store: MapStore) -> None:
    d = observation(S.local_system("lab"), "ZZTOP")
    assert flags_of(normalize_resource(d, "lab", store=store)) == {("urn:carelake:local:lab", "ZZTOP", "unmapped")}
    d = observation(S.local_system("ehr"), "A1C")  # a local system no map claims
    assert {f.flag for f in normalize_resource(d, "ehr", store=store)} == {"unmapped"}


def test_local_procedure_codes_get_cpt_or_hcpcs(store: MapStore) -> None:
    claim_item = lambda code: {"system": S.local_system("billing"), "code": code}  # noqa: E731
    d = {"resourceType": "Procedure", "status": "completed", "subject": {"reference": "Patient/p1"},
         "code": {"coding": [claim_item("CDM300213")]}, "reasonCode": [{"coding": [claim_item("CDM770438")]}]}
    assert normalize_resource(d, "billing", store=store) == []
    assert (d["code"]["coding"][0]["system"], d["code"]["coding"][0]["code"]) == (S.CPT, "99213")
    assert (d["reasonCode"][0]["coding"][0]["system"], d["reasonCode"][0]["coding"][0]["code"]) == (S.HCPCS, "G0438")


# ---- LOINC, RxNorm, CVX, CPT, HCPCS shapes -----------------------------------------------------


@pytest.mark.parametrize(("system", "code", "bad"), [
    (S.LOINC, "4548-4", False), (S.LOINC, "4548-5", True), (S.LOINC, "2345-8", True), (S.LOINC, "718-6", True),
    (S.LOINC, "12345-6", True), (S.LOINC, "45484", True),
    (S.RXNORM, "861007", False), (S.RXNORM, "86100A", True),
    (S.CVX, "140", False), (S.CVX, "1400", True), (S.CVX, "X40", True),
    (S.CPT, "99213", False), (S.CPT, "0001U", False), (S.CPT, "9921X", True), (S.CPT, "992131", True),
    (S.CPT, "8004", True),
    (S.HCPCS, "G0438", False), (S.HCPCS, "99213", False), (S.HCPCS, "Z0438", True), (S.HCPCS, "G043", True),
])
def test_shape_checks(store: MapStore, system: str, code: str, bad: bool) -> None:
    d = observation(system, code)
    flags = normalize_resource(d, "lab", store=store)
    assert flags_of(flags) == ({(system, code, "invalid_code")} if bad else set())
    assert len(d["code"]["coding"]) == 1


def test_bad_loinc_check_digit_still_validates_as_fhir(store: MapStore) -> None:
    d = observation(S.LOINC, "4548-5")
    assert [f.flag for f in normalize_resource(d, "lab", store=store)] == ["invalid_code"]
    Observation.model_validate(d)


# ---- the walk ----------------------------------------------------------------------------------


def test_unknown_system_is_left_alone(store: MapStore) -> None:
    d = condition("http://snomed.info/sct", "44054006", "Diabetes mellitus type 2")
    d["category"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                  "code": "problem-list-item"}]}]
    before = copy.deepcopy(d)
    assert normalize_resource(d, "ehr", store=store) == []
    assert d == before


def test_nested_and_listed_concepts_with_paths(store: MapStore) -> None:
    d = {"resourceType": "Claim", "status": "active", "use": "claim", "created": "2026-01-15",
         "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
         "patient": {"reference": "Patient/p1"}, "provider": {"reference": "Organization/o1"},
         "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority",
                                  "code": "normal"}]},
         "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/c1"}}],
         "diagnosis": [
             {"sequence": 1, "diagnosisCodeableConcept": {"coding": [{"system": S.ICD10CM, "code": "E11.999"}]}},
             {"sequence": 2, "diagnosisCodeableConcept": {"coding": [{"system": S.ICD9CM, "code": "401.9"}]}},
         ],
         "item": [{"sequence": 1, "productOrService": {"coding": [{"system": S.CPT, "code": "9921X"}]},
                   "extension": [{"url": "https://example.org/x",
                                  "valueCodeableConcept": {"coding": [{"system": S.LOINC, "code": "2160-1"}]}}]}]}
    paths = [p for p, _ in codeable_concepts(d)]
    assert paths == ["Claim.type", "Claim.priority", "Claim.diagnosis[0].diagnosisCodeableConcept",
                     "Claim.diagnosis[1].diagnosisCodeableConcept", "Claim.item[0].productOrService",
                     "Claim.item[0].extension[0].valueCodeableConcept"]
    flags = normalize_resource(d, "claims", store=store)
    assert [(f.path, f.flag) for f in flags] == [
        ("Claim.diagnosis[0].diagnosisCodeableConcept", "invalid_code"),
        ("Claim.diagnosis[1].diagnosisCodeableConcept", "approximate_map"),
        ("Claim.item[0].productOrService", "invalid_code"),
        ("Claim.item[0].extension[0].valueCodeableConcept", "invalid_code"),
    ]
    assert d["diagnosis"][1]["diagnosisCodeableConcept"]["coding"][0]["code"] == "I10"
    Claim.model_validate(d)


def test_second_pass_adds_nothing_and_existing_targets_are_not_duplicated(store: MapStore) -> None:
    d = condition(S.ICD9CM, "250.00")
    normalize_resource(d, "claims", store=store)
    once = copy.deepcopy(d)
    normalize_resource(d, "claims", store=store)
    assert d == once
    both = condition(S.ICD9CM, "250.00")
    both["code"]["coding"].append({"system": S.ICD10CM, "code": "E11.9"})
    normalize_resource(both, "claims", store=store)
    assert [c["code"] for c in both["code"]["coding"]] == ["250.00", "E11.9"]


def test_malformed_codings_are_skipped(store: MapStore) -> None:
    d = {"resourceType": "Observation", "code": {"coding": ["x", None, {"system": S.LOINC}, {"code": "4548-5"},
                                                        {"system": 5, "code": "1"}]}}
    before = copy.deepcopy(d)
    assert normalize_resource(d, "lab", store=store) == []
    assert d == before


def test_flags_are_counted_per_source_system_and_flag(store: MapStore) -> None:
    labels = {"source": "test-counter", "system": S.LOINC, "flag": "invalid_code"}
    before = REGISTRY.get_sample_value("carelake_terminology_flags_total", labels) or 0.0
    for _ in range(3):
        normalize_resource(observation(S.LOINC, "4548-5"), "test-counter", store=store)
    normalize_resource(observation(S.LOINC, "4548-4"), "test-counter", store=store)
    assert REGISTRY.get_sample_value("carelake_terminology_flags_total", labels) == before + 3


def test_local_table_of_a_source_uses_the_source_map(store: MapStore) -> None:
    # the HL7 v2 mapper names a local table after the source: CE-3 "L" from the lab -> ...:lab:L
    d = observation("urn:carelake:local:lab:L", "GLU-S")
    assert normalize_resource(d, "lab", store=store) == []
    added = d["code"]["coding"][0]
    assert (added["system"], added["code"]) == (S.LOINC, "2345-7")
    assert ext_value(added).startswith("urn:carelake:local:lab:L|GLU-S|local-lab-loinc@")
    assert {f.flag for f in normalize_resource(observation("urn:carelake:local:pharmacy:L", "GLU-S"), "x",
                                               store=store)} == {"unmapped"}


def test_codings_under_hl7_oids_are_treated_as_their_system(store: MapStore) -> None:
    d = condition("urn:oid:2.16.840.1.113883.6.103", "428.0")  # ICD-9-CM diagnoses by OID
    flags = normalize_resource(d, "claims", store=store)
    assert d["code"]["coding"][0]["code"] == "I50.9"
    assert ext_value(d["code"]["coding"][0]).startswith("urn:oid:2.16.840.1.113883.6.103|428.0|")
    assert flags_of(flags) == {(S.ICD9CM, "428.0", "approximate_map")}  # flagged under the canonical URI
    bad = observation("urn:oid:2.16.840.1.113883.6.285", "Z0438")  # HCPCS by OID
    assert flags_of(normalize_resource(bad, "billing", store=store)) == {(S.HCPCS, "Z0438", "invalid_code")}
