"""The pharmacy's dispense export (one CSV row per fill) to Patient, MedicationRequest, MedicationDispense.

Columns, located by name (the simulator's order: ``formats/flat.py`` PHARMACY_COLUMNS):

| column | becomes |
|---|---|
| rx_number (required) | MedicationDispense / MedicationRequest identifier; the ids |
| patient_id (required) | Patient id and identifier (MR); every subject; the source patient key |
| last_name, first_name, dob, sex, zip, phone | Patient name, birthDate, gender, address.postalCode, telecom |
| ndc, drug_name | medicationCodeableConcept: NDC as given (the terminology pass adds the 11-digit form and RxNorm) + text |
| quantity, days_supply | MedicationDispense.quantity, daysSupply (UCUM ``d``) |
| fill_date | MedicationDispense.whenHandedOver: a date stays a date; a time goes to UTC (timeutil rules) |
| refill_number | MedicationDispense.type (v3 ActCode FF first fill / RF refill) + the refill-number extension |
| prescriber_npi, prescriber_name | MedicationRequest.requester: a Practitioner reference by NPI |
| pharmacy_npi | MedicationDispense.performer: the dispensing pharmacy, an Organization reference by NPI |

Why a MedicationRequest: FHIR R4 has no prescriber element on MedicationDispense — ``performer`` is
who dispensed (the pharmacy), and the prescriber is the requester of the prescription
``authorizingPrescription`` points to. The row proves a prescription exists (its Rx number, its
prescriber), so it is emitted with status ``unknown`` (the export does not say whether it is still
active) and intent ``order``. Practitioner and Organization are logical references (identifier +
display), as the HL7 v2 mappings make them; no Practitioner resource is emitted.

Ids: Patient = (source, "", patient_id) — the same id an HL7 v2 message from this source gives a
PID-3 without an assigning authority; MedicationRequest = (source, "rx", rx_number) — refills of one
prescription share it; MedicationDispense = (source, "rx", rx_number, refill_number).
"""

from __future__ import annotations

from carelake_normalizer.core import EXT_BASE, MappingError, PartError
from carelake_normalizer.flat.common import (
    NPI,
    UCUM,
    V2_0203,
    Builder,
    Header,
    count_unused,
    id_system,
    iso_time,
    json_number,
    number,
    row_getter,
    row_patient,
    whole,
)

NDC = "http://hl7.org/fhir/sid/ndc"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
EXT_REFILL_NUMBER = EXT_BASE + "refill-number"  # valueUnsignedInt: 0 for the first fill

REQUIRED = ("rx_number", "patient_id")
COLUMNS = frozenset({
    "rx_number", "fill_date", "patient_id", "last_name", "first_name", "dob", "sex", "zip", "phone", "ndc",
    "drug_name", "quantity", "days_supply", "refill_number", "prescriber_npi", "prescriber_name", "pharmacy_npi",
})
_FILL_TYPE = {True: ("FF", "First Fill"), False: ("RF", "Refill")}


def map_row(b: Builder, header: Header, values: list[str]) -> None:
    """One dispense row into ``b`` (MappingError when it cannot be attributed at all)."""
    get = row_getter(header, values)
    count_unused(b, header, values, COLUMNS)
    rx, pid = get("rx_number"), get("patient_id")
    if not rx:
        raise MappingError("missing_field", "rx_number is empty: the dispense cannot be identified", "rx_number")
    if not pid:
        raise MappingError("missing_field", "patient_id is empty: the dispense cannot be attributed to a patient",
                           "patient_id")
    source = b.source
    patient_id = b.rid("Patient", "", pid)
    patient_ref = {"reference": f"Patient/{patient_id}"}
    patient_key = f"{source}|{pid}"
    try:
        b.emit(_patient(patient_id, pid, source, get), patient_key=patient_key, event_time=None, label="Patient")
    except PartError as exc:
        b.rejected_part(exc, "Patient")

    rx_system = id_system(source, "rx")
    request_id = b.rid("MedicationRequest", "rx", rx)
    try:
        medication = _medication(get("ndc"), get("drug_name"))
        request: dict = {"resourceType": "MedicationRequest", "id": request_id,
                         "identifier": [{"system": rx_system, "value": rx}],
                         "status": "unknown", "intent": "order", "medicationCodeableConcept": medication,
                         "subject": patient_ref}
        requester = _npi_reference("Practitioner", get("prescriber_npi"), get("prescriber_name"))
        if requester:
            request["requester"] = requester
        b.emit(request, patient_key=patient_key, event_time=None, label="MedicationRequest")
    except PartError as exc:
        b.rejected_part(exc, "MedicationRequest")

    refill = get("refill_number")
    try:
        refills = whole(refill, 0, "refill_number")
        res: dict = {"resourceType": "MedicationDispense", "id": b.rid("MedicationDispense", "rx", rx, refill),
                     "identifier": [{"system": rx_system, "value": rx}], "status": "completed"}
        if refills is not None:
            code, display = _FILL_TYPE[refills == 0]
            res["type"] = {"coding": [{"system": ACT_CODE, "code": code, "display": display}]}
            res.setdefault("extension", []).append({"url": EXT_REFILL_NUMBER, "valueUnsignedInt": refills})
        res["medicationCodeableConcept"] = _medication(get("ndc"), get("drug_name"))
        res["subject"] = patient_ref
        performer = _npi_reference("Organization", get("pharmacy_npi"), "")
        if performer:
            res["performer"] = [{"actor": performer}]
        res["authorizingPrescription"] = [{"reference": f"MedicationRequest/{request_id}"}]
        quantity = get("quantity")
        if quantity:
            q = number(quantity)
            if q is None or q <= 0:
                raise PartError("invalid_value", "quantity is not a positive number", "quantity")
            res["quantity"] = {"value": json_number(q)}
        days = whole(get("days_supply"), 1, "days_supply")
        if days is not None:
            res["daysSupply"] = {"value": days, "unit": "days", "system": UCUM, "code": "d"}
        event_time = None
        filled = get("fill_date")
        if filled:
            when = iso_time(filled, b.tz, b.zone_name, "fill_date")
            res["whenHandedOver"] = when.value
            b.zone(res, when)
            event_time = when.at
        b.emit(res, patient_key=patient_key, event_time=event_time, label="MedicationDispense")
    except PartError as exc:
        b.rejected_part(exc, "MedicationDispense")


def _patient(patient_id: str, pid: str, source: str, get) -> dict:  # noqa: ANN001 - get(column) -> str
    mrn = {"system": id_system(source, "MR"), "value": pid, "type": {"coding": [{"system": V2_0203, "code": "MR"}]}}
    return row_patient(patient_id, mrn, get, family="last_name", given="first_name", sex="sex", birth="dob",
                       postal="zip", phone_use="home")


def _medication(ndc: str, drug_name: str) -> dict:
    if not ndc and not drug_name:
        raise PartError("missing_field", "no drug: ndc and drug_name are empty", "ndc")
    concept: dict = {}
    if ndc:
        coding = {"system": NDC, "code": ndc}
        if drug_name:
            coding["display"] = drug_name
        concept["coding"] = [coding]
    if drug_name:
        concept["text"] = drug_name
    return concept


def _npi_reference(resource_type: str, npi: str, name: str) -> dict | None:
    """A logical reference by NPI with a display name (``Family, Given`` as exported)."""
    if not npi and not name:
        return None
    out: dict = {"type": resource_type}
    if npi:
        out["identifier"] = {"system": NPI, "value": npi}
    if name:
        out["display"] = name
    return out
