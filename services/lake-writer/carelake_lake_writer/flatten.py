"""FHIR R4 resources -> the fact columns of their Gold table. Pure functions over parsed JSON.

``flatten(resource)`` returns ``(table, columns)`` for the resource types Gold has a fact table
for, else ``None`` (the resource is still kept whole in ``silver_resources``). The columns are the
table's own ones (``tables.TABLES`` minus the envelope head and the version tail).

>>> flatten({"resourceType": "Immunization", "status": "completed", "occurrenceDateTime": "2026-01-15",
...          "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]}})[1]["cvx"]
'140'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from carelake_lake_writer import fhir
from carelake_lake_writer.tables import FACT_TABLE_OF

Facts = dict[str, Any]


def _identifier(resource: dict) -> str:
    for ident in resource.get("identifier") or ():
        if isinstance(ident, dict) and ident.get("value"):
            return str(ident["value"])
    return ""


def _has_type(ident: dict, code: str) -> bool:
    return any(c.get("code") == code for c in fhir.codings(ident.get("type")))


def patient(r: dict) -> Facts:
    idents = [i for i in r.get("identifier") or () if isinstance(i, dict) and i.get("value")]
    mrn = next((str(i["value"]) for i in idents if _has_type(i, "MR")), "")
    names = [n for n in r.get("name") or () if isinstance(n, dict)]
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    telecom = [t for t in r.get("telecom") or () if isinstance(t, dict)]
    addresses = [a for a in r.get("address") or () if isinstance(a, dict)]
    address = next((a for a in addresses if a.get("use") == "home"), addresses[0] if addresses else {})
    language = next((fhir.display(c.get("language")) or fhir.code(c.get("language"))
                     for c in r.get("communication") or () if isinstance(c, dict)), "")
    deceased = bool(r.get("deceasedBoolean")) or bool(r.get("deceasedDateTime"))
    replaced_by = next((fhir.ref(link.get("other")) for link in r.get("link") or ()
                        if isinstance(link, dict) and link.get("type") == "replaced-by"), "")
    return {
        "mrn": mrn,
        "family": str(name.get("family") or ""),
        "given": " ".join(str(g) for g in name.get("given") or ()),
        "birth_date": fhir.day(r.get("birthDate")),
        "gender": str(r.get("gender") or ""),
        "phone": next((str(t.get("value") or "") for t in telecom if t.get("system") == "phone"), ""),
        "email": next((str(t.get("value") or "") for t in telecom if t.get("system") == "email"), ""),
        "address_line": ", ".join(str(x) for x in address.get("line") or ()),
        "city": str(address.get("city") or ""),
        "state": str(address.get("state") or ""),
        "postal_code": str(address.get("postalCode") or ""),
        "race": fhir.us_core_text(r, "us-core-race"),
        "ethnicity": fhir.us_core_text(r, "us-core-ethnicity"),
        "language": language,
        "deceased": deceased,
        # Identifiers other than the SSN (which Gold has no use for), as system|value.
        "identifiers": [f"{i.get('system', '')}|{i['value']}" for i in idents if i.get("system") != fhir.SSN],
        "general_practitioner": next((fhir.ref_display(g) for g in r.get("generalPractitioner") or ()), ""),
        "replaced_by": replaced_by,
    }


def encounter(r: dict) -> Facts:
    period = r.get("period") if isinstance(r.get("period"), dict) else {}
    klass = r.get("class") if isinstance(r.get("class"), dict) else {}
    reasons = fhir.concepts(r.get("reasonCode"))
    hosp = r.get("hospitalization") if isinstance(r.get("hospitalization"), dict) else {}
    return {
        "identifier": _identifier(r),
        "status": str(r.get("status") or ""),
        "class_code": str(klass.get("code") or ""),
        "class_display": str(klass.get("display") or ""),
        "type_display": next((fhir.display(t) for t in fhir.concepts(r.get("type"))), ""),
        "period_start": fhir.instant(period.get("start")),
        "period_end": fhir.instant(period.get("end")),
        "reason_codes": [fhir.code(c) for c in reasons],
        "reason_displays": [fhir.display(c) for c in reasons],
        "diagnosis_refs": [fhir.ref(d.get("condition")) for d in r.get("diagnosis") or () if isinstance(d, dict)],
        "location": next((fhir.ref_display(loc.get("location")) for loc in r.get("location") or ()
                          if isinstance(loc, dict)), ""),
        "practitioner": next((fhir.ref_display(p.get("individual")) for p in r.get("participant") or ()
                              if isinstance(p, dict)), ""),
        "discharge_disposition": fhir.display(hosp.get("dischargeDisposition")) or fhir.code(hosp.get("dischargeDisposition")),
    }


def _value(r: dict) -> tuple[float | None, str, str]:
    """(numeric value, text value, unit) of an Observation's value[x]."""
    if "valueQuantity" in r:
        value, unit = fhir.quantity(r["valueQuantity"])
        return value, "", unit
    if "valueCodeableConcept" in r:
        concept = r["valueCodeableConcept"]
        return None, fhir.display(concept) or fhir.code(concept), ""
    if "valueBoolean" in r:
        return (1.0 if r["valueBoolean"] else 0.0), str(bool(r["valueBoolean"])).lower(), ""
    for key in ("valueInteger", "valueDecimal"):
        if key in r:
            return fhir.number(r[key]), "", ""
    for key in ("valueString", "valueDateTime", "valueTime"):
        if key in r:
            return None, str(r[key]), ""
    return None, "", ""


def observation(r: dict) -> Facts:
    coding = fhir.first_coding(r.get("code"))
    value, text, unit = _value(r)
    ranges = [x for x in r.get("referenceRange") or () if isinstance(x, dict)]
    low = fhir.quantity(ranges[0].get("low"))[0] if ranges else None
    high = fhir.quantity(ranges[0].get("high"))[0] if ranges else None
    components = [c for c in r.get("component") or () if isinstance(c, dict)]
    return {
        "status": str(r.get("status") or ""),
        "category": next((fhir.code(c) for c in fhir.concepts(r.get("category"))), ""),
        "code_system": str(coding.get("system") or ""),
        "code": str(coding.get("code") or ""),
        "display": fhir.display(r.get("code")),
        "value_num": value,
        "value_text": text,
        "unit": unit,
        "effective": fhir.effective(r, "effective"),
        "issued": fhir.instant(r.get("issued")),
        "interpretation": next((fhir.code(c) for c in fhir.concepts(r.get("interpretation"))), ""),
        "ref_low": low,
        "ref_high": high,
        "subject_ref": fhir.ref(r.get("subject")),
        "encounter_ref": fhir.ref(r.get("encounter")),
        "device_ref": fhir.ref(r.get("device")),
        "component_codes": [fhir.code(c.get("code")) for c in components],
        "component_values": [fhir.quantity(c.get("valueQuantity"))[0] for c in components],
    }


def condition(r: dict) -> Facts:
    coding = fhir.first_coding(r.get("code"), fhir.ICD10CM) or fhir.first_coding(r.get("code"))
    return {
        "clinical_status": fhir.code(r.get("clinicalStatus")),
        "verification_status": fhir.code(r.get("verificationStatus")),
        "category": next((fhir.code(c) for c in fhir.concepts(r.get("category"))), ""),
        "code_system": str(coding.get("system") or ""),
        "code": str(coding.get("code") or ""),
        "display": str(coding.get("display") or "") or fhir.display(r.get("code")),
        "onset": fhir.effective(r, "onset"),
        "abatement": fhir.effective(r, "abatement"),
        "recorded": fhir.instant(r.get("recordedDate")),
        "encounter_ref": fhir.ref(r.get("encounter")),
    }


def medication(r: dict) -> Facts:
    concept = r.get("medicationCodeableConcept")
    rx = fhir.first_coding(concept, fhir.RXNORM)
    dispense = r.get("resourceType") == "MedicationDispense"
    days, _ = fhir.quantity(r.get("daysSupply"))
    request = r.get("dispenseRequest") if isinstance(r.get("dispenseRequest"), dict) else {}
    if days is None and request:
        duration = request.get("expectedSupplyDuration")
        days = fhir.quantity(duration)[0] if isinstance(duration, dict) else None
    refill_ext = fhir.extension(r, "https://carelake.dev/fhir/StructureDefinition/refill-number")
    refill = refill_ext.get("valueUnsignedInt") if refill_ext else None
    quantity = fhir.quantity(r.get("quantity") if dispense else request.get("quantity"))[0]
    when = (fhir.instant(r.get("whenHandedOver")) or fhir.instant(r.get("whenPrepared"))) if dispense \
        else fhir.instant(r.get("authoredOn"))
    return {
        "resource_type": str(r.get("resourceType")),
        "status": str(r.get("status") or ""),
        "intent": str(r.get("intent") or ""),
        "rxnorm": str(rx.get("code") or ""),
        "ndc": fhir.code(concept, fhir.NDC),
        "display": str(rx.get("display") or "") or fhir.display(concept),
        "quantity": quantity,
        "days_supply": days,
        "when": when,
        "refill": refill if isinstance(refill, int) else None,
        "prescription_ref": next((fhir.ref(p) for p in r.get("authorizingPrescription") or ()), ""),
        "prescriber": fhir.ref_display(r.get("requester")),
        "identifier": _identifier(r),
    }


def _total(r: dict) -> float | None:
    total = r.get("total")
    if isinstance(total, dict):  # Claim.total is Money
        return fhir.money(total)
    for t in total or ():  # ClaimResponse.total is a list by category
        if isinstance(t, dict) and fhir.code(t.get("category")) == "submitted":
            return fhir.money(t.get("amount"))
    return None


def claim(r: dict) -> Facts:
    response = r.get("resourceType") == "ClaimResponse"
    items = [i for i in r.get("item") or () if isinstance(i, dict)]
    period = r.get("billablePeriod") if isinstance(r.get("billablePeriod"), dict) else {}
    payment = r.get("payment") if isinstance(r.get("payment"), dict) else {}
    return {
        "resource_type": str(r.get("resourceType")),
        "identifier": _identifier(r),
        "status": str(r.get("status") or ""),
        "use": str(r.get("use") or ""),
        "claim_type": fhir.code(r.get("type")),
        "created": fhir.instant(r.get("created")),
        "billable_start": fhir.instant(period.get("start")),
        "billable_end": fhir.instant(period.get("end")),
        "total": _total(r),
        "paid": fhir.money(payment.get("amount")) if response else None,
        "currency": str((r.get("total") or {}).get("currency") or "") if isinstance(r.get("total"), dict) else "",
        "outcome": str(r.get("outcome") or ""),
        "diagnoses": [fhir.code(d.get("diagnosisCodeableConcept")) for d in r.get("diagnosis") or ()
                      if isinstance(d, dict)],
        "line_codes": [fhir.code(i.get("productOrService")) for i in items],
        "line_amounts": [fhir.money(i.get("net")) for i in items],
        "insurer_ref": fhir.ref(r.get("insurer")),
        "provider_ref": fhir.ref(r.get("provider") or r.get("requestor")),
        "request_ref": fhir.ref(r.get("request")),
        "coverage_ref": next((fhir.ref(i.get("coverage")) for i in r.get("insurance") or ()
                              if isinstance(i, dict)), ""),
    }


def appointment(r: dict) -> Facts:
    reasons = fhir.concepts(r.get("reasonCode"))
    actors = [p.get("actor") for p in r.get("participant") or () if isinstance(p, dict)]
    actors = [a for a in actors if isinstance(a, dict)]
    minutes = r.get("minutesDuration")
    return {
        "identifier": _identifier(r),
        "status": str(r.get("status") or ""),
        "start": fhir.instant(r.get("start")),
        "end": fhir.instant(r.get("end")),
        "minutes": minutes if isinstance(minutes, int) else None,
        "appointment_type": fhir.display(r.get("appointmentType")) or fhir.code(r.get("appointmentType")),
        "reason_codes": [fhir.code(c) for c in reasons],
        "reason_displays": [fhir.display(c) for c in reasons],
        "practitioner": next((fhir.ref_display(a) for a in actors if a.get("type") == "Practitioner"
                              or str(a.get("reference", "")).startswith("Practitioner/")), ""),
        "location": next((fhir.ref_display(a) for a in actors if a.get("type") == "Location"
                          or str(a.get("reference", "")).startswith("Location/")), ""),
    }


def immunization(r: dict) -> Facts:
    concept = r.get("vaccineCode")
    cvx = fhir.first_coding(concept, fhir.CVX) or fhir.first_coding(concept)
    dose, dose_unit = fhir.quantity(r.get("doseQuantity"))
    return {
        "status": str(r.get("status") or ""),
        "cvx": str(cvx.get("code") or ""),
        "display": str(cvx.get("display") or "") or fhir.display(concept),
        "occurrence": fhir.effective(r, "occurrence"),
        "lot_number": str(r.get("lotNumber") or ""),
        "dose": dose,
        "dose_unit": dose_unit,
        "route": fhir.code(r.get("route")),
        "performer": next((fhir.ref_display(p.get("actor")) for p in r.get("performer") or ()
                           if isinstance(p, dict)), ""),
        "location": fhir.ref_display(r.get("location")),
    }


def coverage(r: dict) -> Facts:
    payor = next((p for p in r.get("payor") or () if isinstance(p, dict)), {})
    ident = payor.get("identifier") if isinstance(payor.get("identifier"), dict) else {}
    plan = next((str(c.get("value") or "") for c in r.get("class") or () if isinstance(c, dict)), "")
    period = r.get("period") if isinstance(r.get("period"), dict) else {}
    member = str(r.get("subscriberId") or "") or _identifier(r)
    payer_id = str(ident.get("value") or "")
    if not payer_id:  # an 837's Coverage names the payer only in its member-id system: urn:...:member-id:MDW04
        system = next((str(i.get("system") or "") for i in r.get("identifier") or () if isinstance(i, dict)), "")
        payer_id = system.rsplit(":", 1)[-1] if "member-id" in system else ""
    order = r.get("order")
    return {
        "status": str(r.get("status") or ""),
        "payer_id": payer_id,
        "payer_name": str(payor.get("display") or ""),
        "payer_ref": str(payor.get("reference") or ""),
        "member_id": member,
        "plan": plan,
        "coverage_type": fhir.code(r.get("type")),
        "relationship": fhir.code(r.get("relationship")),
        "period_start": fhir.instant(period.get("start")),
        "period_end": fhir.instant(period.get("end")),
        "priority": order if isinstance(order, int) else None,
    }


FLATTENERS: dict[str, Callable[[dict], Facts]] = {
    "Patient": patient, "Encounter": encounter, "Observation": observation, "Condition": condition,
    "MedicationDispense": medication, "MedicationRequest": medication, "Claim": claim, "ClaimResponse": claim,
    "Appointment": appointment, "Immunization": immunization, "Coverage": coverage,
}


def flatten(resource: dict) -> tuple[str, Facts] | None:
    """The (fact table, columns) of one FHIR resource, or None when Gold has no fact table for its type."""
    kind = resource.get("resourceType")
    fn = FLATTENERS.get(kind) if isinstance(kind, str) else None
    return (FACT_TABLE_OF[kind], fn(resource)) if fn else None
