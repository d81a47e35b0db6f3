"""FHIR resources -> Gold fact columns, on hand-written resources shaped like the normalizer's and
on every resource of a simulated day."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime

from carelake_lake_writer.flatten import flatten
from carelake_lake_writer.rows import silver_rows
from carelake_lake_writer.tables import FACT_TABLE_OF, TABLES

EHR_PATIENT = {
    "resourceType": "Patient", "id": "p1",
    "identifier": [
        {"system": "urn:carelake:ehr:id:EHR", "value": "E21971830",
         "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}},
        {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "911326547",
         "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS"}]}}],
    "name": [{"use": "official", "family": "Lindsey", "given": ["Felicia", "Crystal"]}],
    "telecom": [{"system": "phone", "value": "3128194316", "use": "home"},
                {"system": "email", "value": "felicia.lindsey93@example.com"}],
    "gender": "female", "birthDate": "1946-09-12",
    "address": [{"use": "home", "line": ["612 Luis Mall"], "city": "East Crystalshire", "state": "IL",
                 "postalCode": "60618", "country": "USA"}],
    "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en", "display": "English"}]}}],
    "extension": [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race", "extension": [
        {"url": "ombCategory", "valueCoding": {"code": "2106-3", "display": "White"}},
        {"url": "text", "valueString": "White"}]}],
}
LAB = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                              "code": "laboratory"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "Hemoglobin A1c"}]},
    "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-01-15T16:09:13Z",
    "valueQuantity": {"value": 7.9, "unit": "%"},
    "referenceRange": [{"low": {"value": 4}, "high": {"value": 5.6}}],
    "interpretation": [{"coding": [{"code": "H"}]}],
}
ENCOUNTER = {
    "resourceType": "Encounter", "id": "e1", "status": "in-progress",
    "identifier": [{"system": "urn:carelake:ehr:id:VN", "value": "V2601150000046"}],
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER", "display": "emergency"},
    "subject": {"reference": "Patient/p1"}, "period": {"start": "2026-01-15T14:10:13Z"},
    "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "R07.9",
                                "display": "Chest pain"}]}],
    "location": [{"location": {"display": "ED 20 A, CARELAKE_MC"}}],
    "diagnosis": [{"condition": {"reference": "Condition/c1"}}],
}
DISPENSE = {
    "resourceType": "MedicationDispense", "id": "m1", "status": "completed",
    "medicationCodeableConcept": {"coding": [
        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "979492",
         "display": "losartan potassium 50 MG Oral Tablet"},
        {"system": "http://hl7.org/fhir/sid/ndc", "code": "00006095254"}]},
    "subject": {"reference": "Patient/p1"}, "quantity": {"value": 30},
    "daysSupply": {"value": 30, "unit": "days"}, "whenHandedOver": "2026-01-15",
    "authorizingPrescription": [{"reference": "MedicationRequest/r1"}],
    "extension": [{"url": "https://carelake.dev/fhir/StructureDefinition/refill-number", "valueUnsignedInt": 2}],
}
CLAIM = {
    "resourceType": "Claim", "id": "cl1", "status": "active", "use": "claim",
    "type": {"coding": [{"code": "professional"}]}, "patient": {"reference": "Patient/p1"},
    "billablePeriod": {"start": "2026-01-15", "end": "2026-01-15"}, "created": "2026-01-16T04:00:00Z",
    "insurer": {"reference": "Organization/payer"},
    "diagnosis": [{"sequence": 1, "diagnosisCodeableConcept": {"coding": [
        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E66.811"}]}}],
    "item": [{"sequence": 1, "productOrService": {"coding": [{"code": "99215"}]}, "net": {"value": 165}},
             {"sequence": 2, "productOrService": {"coding": [{"code": "36415"}]}, "net": {"value": 12.5}}],
    "total": {"value": 177.5, "currency": "USD"},
}
COVERAGE_837 = {
    "resourceType": "Coverage", "id": "cv1", "status": "active", "subscriberId": "MDW757816750",
    "identifier": [{"system": "urn:carelake:member-id:MDW04", "value": "MDW757816750"}],
    "beneficiary": {"reference": "Patient/p1"}, "payor": [{"reference": "Organization/b696"}], "order": 1,
}


def test_patient_demographics_and_identifiers_without_the_ssn() -> None:
    table, facts = flatten(EHR_PATIENT)
    assert table == "patients"
    assert (facts["mrn"], facts["family"], facts["given"]) == ("E21971830", "Lindsey", "Felicia Crystal")
    assert facts["birth_date"] == date(1946, 9, 12) and facts["gender"] == "female"
    assert (facts["city"], facts["postal_code"], facts["language"], facts["race"]) == (
        "East Crystalshire", "60618", "English", "White")
    assert facts["identifiers"] == ["urn:carelake:ehr:id:EHR|E21971830"]  # the SSN is not carried into Gold
    assert facts["phone"] == "3128194316" and facts["email"].startswith("felicia")


def test_lab_observation_has_loinc_value_unit_time_and_interpretation() -> None:
    table, facts = flatten(LAB)
    assert table == "observations"
    assert (facts["code_system"], facts["code"], facts["value_num"], facts["unit"]) == (
        "http://loinc.org", "4548-4", 7.9, "%")
    assert facts["effective"] == datetime(2026, 1, 15, 16, 9, 13, tzinfo=UTC)
    assert (facts["category"], facts["interpretation"], facts["ref_low"], facts["ref_high"]) == (
        "laboratory", "H", 4.0, 5.6)


def test_encounter_class_status_period_and_reason() -> None:
    _, facts = flatten(ENCOUNTER)
    assert (facts["class_code"], facts["status"], facts["identifier"]) == ("EMER", "in-progress", "V2601150000046")
    assert facts["period_start"] == datetime(2026, 1, 15, 14, 10, 13, tzinfo=UTC) and facts["period_end"] is None
    assert facts["reason_codes"] == ["R07.9"] and facts["reason_displays"] == ["Chest pain"]
    assert facts["diagnosis_refs"] == ["Condition/c1"] and facts["location"] == "ED 20 A, CARELAKE_MC"


def test_dispense_has_rxnorm_ndc_days_supply_and_when() -> None:
    table, facts = flatten(DISPENSE)
    assert table == "medications"
    assert (facts["rxnorm"], facts["ndc"], facts["days_supply"], facts["quantity"], facts["refill"]) == (
        "979492", "00006095254", 30.0, 30.0, 2)
    assert facts["when"] == datetime(2026, 1, 15, tzinfo=UTC)
    assert facts["prescription_ref"] == "MedicationRequest/r1"


def test_claim_total_diagnoses_and_lines() -> None:
    table, facts = flatten(CLAIM)
    assert table == "claims"
    assert (facts["total"], facts["currency"], facts["claim_type"]) == (177.5, "USD", "professional")
    assert facts["diagnoses"] == ["E66.811"]
    assert facts["line_codes"] == ["99215", "36415"] and facts["line_amounts"] == [165.0, 12.5]
    assert facts["billable_start"] == datetime(2026, 1, 15, tzinfo=UTC)


def test_coverage_payer_from_an_837_member_id_system() -> None:
    _, facts = flatten(COVERAGE_837)
    assert (facts["payer_id"], facts["member_id"], facts["payer_ref"], facts["priority"]) == (
        "MDW04", "MDW757816750", "Organization/b696", 1)


def test_resource_types_without_a_fact_table_flatten_to_nothing() -> None:
    assert flatten({"resourceType": "Device", "id": "d"}) is None
    assert flatten({"resourceType": "Organization", "id": "o"}) is None
    assert flatten({"id": "no type"}) is None


def test_odd_shapes_do_not_raise() -> None:
    odd = {"resourceType": "Observation", "id": "x", "code": "not-a-concept", "category": [None, 3],
           "valueQuantity": {"value": "n/a"}, "effectiveDateTime": "garbage", "component": [None]}
    _, facts = flatten(odd)
    assert facts["code"] == "" and facts["value_num"] is None and facts["effective"] is None
    _, facts = flatten({"resourceType": "Patient", "id": "p", "birthDate": "1950-07", "name": "x"})
    assert facts["birth_date"] == date(1950, 7, 1) and facts["family"] == ""


def test_every_resource_of_a_simulated_day_flattens_into_its_tables_columns(silver_day) -> None:
    seen: Counter[str] = Counter()
    for envelope in silver_day.envelopes:
        rows = silver_rows(envelope)
        assert rows[0].table == "silver_resources" and rows[1].table == "resource_lineage"
        for row in rows:
            assert len(row.values) == len(TABLES[row.table]) - 1  # all but inserted_at, stamped by the sink
            seen[row.table] += 1
        kind = envelope["resource_type"]
        assert (len(rows) == 3) == (kind in FACT_TABLE_OF)
    # The day has every fact family the issue asks for.
    for table in ("patients", "encounters", "observations", "conditions", "medications", "claims", "appointments",
                  "immunizations", "coverages"):
        assert seen[table] > 0, table
    labs = [flatten(json.loads(e["resource"]))[1] for e in silver_day.envelopes
            if e["resource_type"] == "Observation" and '"laboratory"' in e["resource"]]
    assert labs and all(f["code_system"] == "http://loinc.org" and f["code"] for f in labs)
    conditions = [flatten(json.loads(e["resource"]))[1] for e in silver_day.envelopes if e["resource_type"] == "Condition"]
    assert conditions and all(c["code_system"] == "http://hl7.org/fhir/sid/icd-10-cm" for c in conditions)
