"""PHI tagging from the one declared table, security labels from codes, FHIR validation."""

from __future__ import annotations

import copy

import pytest

from carelake_normalizer import validate as validation
from carelake_normalizer.core import EXT_HL7V2_SEGMENT, EXT_SOURCE_TIMEZONE
from carelake_normalizer.phi import ACT_CODE, CONFIDENTIALITY, PHI_PATHS, phi_paths, security_labels

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"


def condition(code: str, system: str = ICD10) -> dict:
    return {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": system, "code": code}]}}


def test_phi_paths_lists_only_the_declared_paths_present() -> None:
    patient = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Doe"}], "gender": "female",
               "birthDate": "1961-03-04", "deceasedDateTime": "2020-01-01T00:00:00Z"}
    assert phi_paths(patient) == ["Patient.name", "Patient.birthDate", "Patient.deceased[x]"]
    obs = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
           "subject": {"reference": "Patient/p1"}, "valueQuantity": {"value": 1}}
    assert phi_paths(obs) == []  # a reference is not PHI in itself; a number is not either


def test_z_segment_extensions_are_phi_but_our_time_zone_extension_is_not() -> None:
    obs = {"resourceType": "Observation", "extension": [{"url": EXT_SOURCE_TIMEZONE, "valueString": "-0600"}]}
    assert phi_paths(obs) == []
    obs["extension"].append({"url": EXT_HL7V2_SEGMENT, "extension": []})
    assert phi_paths(obs) == [f"Observation.extension('{EXT_HL7V2_SEGMENT}')"]


def test_every_declared_path_belongs_to_its_resource_type() -> None:
    for rt, paths in PHI_PATHS.items():
        assert paths and all(p.startswith(f"{rt}.") for p in paths)
    for rt in ("Patient", "RelatedPerson", "Encounter", "Condition", "Coverage", "Observation",
               "DiagnosticReport", "Immunization", "Appointment", "ChargeItem", "MedicationRequest"):
        assert rt in PHI_PATHS, f"{rt} is mapped but has no PHI entry"


@pytest.mark.parametrize(("code", "labels"), [
    ("B20", ["R", "HIV"]), ("Z21", ["R", "HIV"]), ("F11.20", ["R", "ETH"]), ("F10.239", ["R", "ETH"]),
    ("F32.9", ["R", "PSY"]), ("A54.9", ["R", "STD"]), ("T74.11XA", ["R", "SDV"]),
    ("F17.210", ["N"]),  # nicotine dependence: outside 42 CFR Part 2
    ("E11.9", ["N"]), ("I10", ["N"]),
])
def test_security_labels_follow_icd10cm_ranges(code: str, labels: list[str]) -> None:
    res = condition(code)
    assert security_labels(res) == labels
    security = res["meta"]["security"]
    assert security[0]["system"] == CONFIDENTIALITY and security[0]["code"] == labels[0]
    assert [s["code"] for s in security[1:] if s["system"] == ACT_CODE] == labels[1:]


def test_icd9_and_other_systems() -> None:
    assert security_labels(condition("042", "http://hl7.org/fhir/sid/icd-9-cm")) == ["R", "HIV"]
    assert security_labels(condition("B20", "http://loinc.org")) == ["N"]  # not an ICD code at all


def test_valid_resource_passes_and_invalid_one_names_the_element() -> None:
    obs = {"resourceType": "Observation", "id": "o1", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
           "valueQuantity": {"value": 90, "unit": "mg/dL"}}
    assert validation.validate(obs) is None
    bad = copy.deepcopy(obs)
    bad["valueQuantity"]["value"] = "ninety"
    rejected = validation.validate(bad)
    assert rejected is not None and rejected.reason_code == "invalid_resource"
    assert rejected.where == "Observation.valueQuantity.value"
    assert "ninety" not in rejected.reason  # the value may be PHI: never quoted
    bad = copy.deepcopy(obs)
    bad["effectiveDateTime"] = "2026-02-30"
    assert validation.validate(bad).where == "Observation.effectiveDateTime"
    bad = copy.deepcopy(obs)
    bad["referenceRange"] = [{"low": {"value": "x"}}]
    assert validation.validate(bad).where == "Observation.referenceRange[0].low.value"
    bad = copy.deepcopy(obs)
    bad["bogus"] = 1
    assert validation.validate(bad).where == "Observation.bogus"
    bad = copy.deepcopy(obs)
    bad["valueString"] = "both"
    assert validation.validate(bad).where == "Observation"  # choice type given twice


def test_memoized_validation_gives_the_same_verdict_as_whole_validation(map_message, hl7_day) -> None:
    """The element memo may only save time: on the simulated day and on broken copies of its
    resources, element-wise and whole validation agree, resource by resource."""
    resources = []
    for record in hl7_day[::5]:  # every source and message type
        try:
            resources += [m.resource for m in map_message(record.payload, source=record.source).resources]
        except Exception:  # noqa: BLE001 - malformed messages have no resources to compare
            continue
    assert len(resources) > 500
    breakers = [
        lambda r: r.__setitem__("id", "not valid!"),
        lambda r: r.setdefault("meta", {}).__setitem__("lastUpdated", "yesterday"),
        lambda r: r.__setitem__("extension", [{"url": "urn:x"}, None]),
        lambda r: r.__setitem__("text", {"status": "generated"}),  # narrative without its div
    ]
    for i, res in enumerate(resources):
        assert validation.validate(res) is None and validation.validate(res, memo=False) is None
        broken = copy.deepcopy(res)
        breakers[i % len(breakers)](broken)
        memo, whole = validation.validate(broken), validation.validate(broken, memo=False)
        assert memo is not None and whole is not None
        assert (memo.where, memo.reason) == (whole.where, whole.reason)
