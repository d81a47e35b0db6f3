"""VXU → Immunization, SIU → Appointment, DFT → ChargeItem, RDE/OMP → MedicationRequest."""

from __future__ import annotations

import pytest

from carelake_normalizer.core import MappingError

PID = "PID|1||S100^^^SCHEDULING^MR||Doe^Jane||19610304|F"


def msg(msh_type: str, *segments: str, ts: str = "20260115083000-0600", msg_id: str = "X1") -> str:
    return "\r".join([f"MSH|^~\\&|APP|FAC|CARELAKE|CARELAKE|{ts}||{msh_type}|{msg_id}|P|2.5.1", *segments]) + "\r"


def only(result, rt: str) -> dict:  # noqa: ANN001
    found = [m.resource for m in result.resources if m.resource_type == rt]
    assert len(found) == 1, [m.resource_type for m in result.resources]
    return found[0]


def vxu(status: str = "CP", action: str = "A") -> str:
    return msg("VXU^V04^VXU_V04", PID.replace("S100^^^SCHEDULING", "IIS9^^^PUBLIC_HEALTH"),
               "ORC|RE||IMM1^CARELAKE_PH|||||||||8084012345^Quill^Ada^^^^^^NPI^L^^^NPI",
               f"RXA|0|1|20260115100000+0000|20260115100000+0000|140^Influenza, seasonal^CVX|0.5|mL^milliliters^UCUM||"
               f"00^New immunization record^NIP001|8084012345^Quill^Ada^^^^^^NPI^L^^^NPI|^^^CARELAKE_PH||||"
               f"PMC51046||PMC^Sanofi Pasteur^MVX|||{status}|{action}",
               "RXR|C28161^Intramuscular^NCIT|LD^Left Deltoid^HL70163")


def test_vxu_to_immunization(map_message) -> None:
    result = map_message(vxu(), source="public_health")
    assert result.rejected == []
    imm = only(result, "Immunization")
    assert imm["vaccineCode"]["coding"][0] == {"system": "http://hl7.org/fhir/sid/cvx", "code": "140",
                                               "display": "Influenza, seasonal"}
    assert imm["status"] == "completed" and imm["occurrenceDateTime"] == "2026-01-15T10:00:00Z"
    assert imm["doseQuantity"]["value"] == 0.5 and imm["lotNumber"] == "PMC51046" and imm["primarySource"] is True
    assert imm["manufacturer"]["identifier"]["system"] == "http://terminology.hl7.org/CodeSystem/MVX"
    assert imm["site"]["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/v2-0163"
    refused = only(map_message(vxu("RE"), source="public_health"), "Immunization")
    deleted = only(map_message(vxu(action="D"), source="public_health"), "Immunization")
    assert (refused["status"], deleted["status"]) == ("not-done", "entered-in-error")
    assert refused["id"] == deleted["id"] == imm["id"]


def siu(event: str, status: str) -> str:
    timing = "|||||20260116090000-0600|||30|min^minute^UCUM||" + f"{status}^{status}^HL70278"
    return msg(f"SIU^{event}^SIU_S12",
               f"SCH|A1^EPIC|A1^CADENCE|||||FOLLOWUP^Follow-up^L|ROUTINE^Routine^HL70276|30|min|"
               f"^^M30^20260116090000-0600^20260116093000-0600||||||||||||||{status}^{status}^HL70278",
               PID, "RGS|1", f"AIL|1||CLINIC^2^A^CARELAKE_MC{timing}",
               f"AIP|1||8084012345^Quill^Ada^^^^^^NPI^L^^^NPI|207Q00000X^Family Medicine^HCPT{timing}")


@pytest.mark.parametrize(("event", "filler_status", "status"), [
    ("S12", "Booked", "booked"), ("S15", "Cancelled", "cancelled"), ("S26", "Noshow", "noshow"),
    ("S14", "Complete", "fulfilled"),
])
def test_siu_to_appointment_status(map_message, event: str, filler_status: str, status: str) -> None:
    result = map_message(siu(event, filler_status), source="scheduling")
    assert result.rejected == []
    appt = only(result, "Appointment")
    assert appt["status"] == status
    assert (appt["start"], appt["end"], appt["minutesDuration"]) == ("2026-01-16T15:00:00Z", "2026-01-16T15:30:00Z", 30)
    actors = [p["actor"] for p in appt["participant"]]
    assert actors[0]["reference"].startswith("Patient/") and actors[1]["identifier"]["value"] == "8084012345"
    assert actors[2] == {"type": "Location", "display": "CLINIC 2 A, CARELAKE_MC"}


def test_siu_updates_of_one_appointment_share_its_id(map_message) -> None:
    ids = {only(map_message(siu(e, s), source="scheduling"), "Appointment")["id"]
           for e, s in (("S12", "Booked"), ("S15", "Cancelled"), ("S26", "Noshow"))}
    assert len(ids) == 1


def test_dft_to_charge_item(map_message) -> None:
    result = map_message(msg(
        "DFT^P03^DFT_P03", "EVN|P03|20260115120000-0600", PID.replace("S100^^^SCHEDULING", "B7^^^BILLING"),
        "PV1|1|U" + "|" * 17 + "V0000042",
        "FT1|1|T123||20260115110000-0600|20260115110000-0600|CG|99213^Office visit, est^C4|||1|125.50&USD|||||||"
        "|E11.9^Type 2 diabetes^I10|8084012345^Quill^Ada^^^^^^NPI^L^^^NPI||||99213^Office visit, est^C4"),
        source="billing")
    assert result.rejected == []
    charge = only(result, "ChargeItem")
    assert charge["status"] == "billable"
    assert charge["code"]["coding"] == [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213",
                                         "display": "Office visit, est"}]
    assert charge["priceOverride"] == {"value": 125.5, "currency": "USD"} and charge["quantity"] == {"value": 1}
    assert charge["occurrenceDateTime"] == "2026-01-15T17:00:00Z"
    assert charge["context"]["reference"].startswith("Encounter/")
    assert charge["reason"][0]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10-cm"
    assert [i["value"] for i in charge["identifier"]] == ["T123"]


def test_pharmacy_orders_to_medication_request(map_message) -> None:
    rde = msg("RDE^O11^RDE_O11", PID,
              "ORC|NW|RX1^EPIC||||||||20260115080000-0600|||8084012345^Quill^Ada^^^^^^NPI^L^^^NPI",
              "RXE|^^^20260115^^R|860975^Metformin 500 MG Oral Tablet^RXNORM|500||mg^mg^UCUM|||||60|TAB|2",
              "RXR|PO^Oral^HL70162")
    result = map_message(rde)
    assert result.rejected == []
    req = only(result, "MedicationRequest")
    assert req["status"] == "active" and req["intent"] == "order"
    assert req["medicationCodeableConcept"]["coding"][0]["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
    assert req["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 500
    assert req["dispenseRequest"] == {"quantity": {"value": 60, "unit": "TAB", "system": "http://unitsofmeasure.org",
                                                   "code": "TAB"}, "numberOfRepeatsAllowed": 2}
    cancelled = only(map_message(rde.replace("ORC|NW|", "ORC|CA|")), "MedicationRequest")
    assert cancelled["status"] == "cancelled" and cancelled["id"] == req["id"]
    omp = msg("OMP^O09^OMP_O09", PID, "ORC|NW|RX2^EPIC", "RXO|197361^Amlodipine 5 MG^RXNORM|5||mg")
    assert only(map_message(omp), "MedicationRequest")["medicationCodeableConcept"]["coding"][0]["code"] == "197361"
    with pytest.raises(MappingError) as err:
        map_message(msg("ORM^O01^ORM_O01", PID, "ORC|NW|LAB1", "OBR|1|LAB1||24323-8^CMP^LN"))
    assert err.value.code == "unsupported_message_type"  # a lab order, not a pharmacy one
