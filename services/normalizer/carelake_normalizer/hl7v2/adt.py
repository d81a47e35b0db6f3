"""ADT to Patient, RelatedPerson (NK1), Encounter (PV1), Condition (DG1), Coverage (IN1).

A01/A04/A08/A03 and the other visit events share one mapper: the trigger only sets the
Encounter status and the diagnosis use. ADT^A40 (merge patient identifier list) is mapped so
the MPI can act on it: the surviving Patient (from PID) gets ``link`` type ``replaces`` to the
retired registration, and the retired Patient (from MRG-1) is emitted as ``active: false``
with ``link`` type ``replaced-by`` — only its identifier, so an upsert by id marks the old
record inactive without inventing demographics for it.
"""

from __future__ import annotations

from datetime import datetime

from carelake_normalizer.core import MappingError, PartError
from carelake_normalizer.hl7v2 import datatypes as dt
from carelake_normalizer.hl7v2.context import Context
from carelake_normalizer.hl7v2.parse import Message, Segment
from carelake_normalizer.hl7v2.patient import map_patient, map_related_person, patient_authority_mrn
from carelake_normalizer.hl7v2.visit import encounter_id, map_encounter, visit_key

VISIT_EVENTS = frozenset({"A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A13"})
PERSON_EVENTS = frozenset({"A28", "A31"})
MERGE_EVENTS = frozenset({"A40"})
EVENTS = VISIT_EVENTS | PERSON_EVENTS | MERGE_EVENTS

CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
DIAGNOSIS_ROLE = "http://terminology.hl7.org/CodeSystem/diagnosis-role"
_VERIFICATION = {"F": "confirmed", "A": "provisional", "W": "provisional", "P": "provisional"}
_DIAGNOSIS_USE = {"A": ("AD", "Admission diagnosis"), "F": ("DD", "Discharge diagnosis")}
SUBSCRIBER_RELATIONSHIP = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
_RELATIONSHIP = {"SEL": "self", "SPO": "spouse", "DOM": "common", "CHD": "child", "PAR": "parent",
                 "EME": "other", "OTH": "other", "FCH": "child", "STP": "child"}
COVERAGE_CLASS = "http://terminology.hl7.org/CodeSystem/coverage-class"


def map_adt(msg: Message, ctx: Context) -> None:
    trigger = msg.trigger
    if trigger in MERGE_EVENTS:
        _map_merge(msg, ctx)
        return
    what = f"ADT^{trigger}"
    evn = msg.first("EVN")
    if evn is not None:
        evn.mark(1)  # the event type, the same as MSH-9.2
        ctx.meta_time("event_recorded", evn, 2)
    pid = ctx.require("PID", what)
    pv1 = msg.first("PV1")
    if pv1 is None and trigger in VISIT_EVENTS:
        ctx.require("PV1", what)
    map_patient(ctx, pid, msg.first("PD1"))
    authority_mrn = patient_authority_mrn(pid)
    for nk1 in msg.all("NK1"):
        map_related_person(ctx, nk1, authority_mrn)
    visit = visit_key(pv1)
    enc_id = encounter_id(ctx, pv1)
    enc_ref = ctx.ref("Encounter", enc_id) if enc_id else None
    diagnoses = []
    admitted = ctx.peek_ts(pv1, 44)
    for dg1 in msg.all("DG1"):
        entry = _map_condition(ctx, dg1, visit, enc_ref, authority_mrn, admitted.at if admitted else None)
        if entry:
            diagnoses.append(entry)
    if pv1 is not None:
        map_encounter(ctx, pv1, msg.first("PV2"), trigger, evn, diagnoses)
    for in1 in msg.all("IN1"):
        _map_coverage(ctx, in1, authority_mrn)


def _map_condition(ctx: Context, dg1: Segment, visit: tuple[str, str] | None, enc_ref: dict | None,
                   authority_mrn: tuple[str, str], admitted: datetime | None) -> dict | None:
    """DG1 to Condition; returns the Encounter.diagnosis entry, or None if rejected.

    Event time: DG1-5 (diagnosis date/time), else the visit's admission (PV1-44).
    """
    source = ctx.source
    code = dg1.rep(3)
    coding_method = dg1.val(2)  # v2.3: the coding system, when DG1-3 names none
    system_name = code.c(3) or coding_method
    concept = dt.codeable(code, source)
    if concept and coding_method and not code.c(3) and concept.get("coding"):
        concept["coding"][0]["system"] = dt.system_uri(coding_method, source)
    description = dg1.val(4)
    if concept is None and description:
        concept = {"text": description}
    elif concept is not None and description and "text" not in concept:
        concept["text"] = description
    anchor = ("visit", *visit) if visit else ("patient", *authority_mrn)
    rid = ctx.rid("Condition", *anchor, system_name, code.c(1) or description)
    accepted = None
    with ctx.part(dg1, "Condition"):
        if concept is None:
            raise PartError("missing_field", f"{dg1.label}: no diagnosis code (DG1-3) or text (DG1-4)",
                            dg1.where(3))
        dx_type = dg1.val(6).upper()
        res: dict = {
            "resourceType": "Condition", "id": rid,
            "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "encounter-diagnosis",
                                      "display": "Encounter Diagnosis"}]}],
            "code": concept,
        }
        status = _VERIFICATION.get(dx_type)
        if status:
            res["verificationStatus"] = {"coding": [{"system": CONDITION_VER_STATUS, "code": status}]}
        if ctx.patient_ref:
            res["subject"] = ctx.patient_ref
        if enc_ref:
            res["encounter"] = enc_ref
        recorded = ctx.ts(dg1, 5)
        if recorded:
            res["recordedDate"] = recorded.value
        asserter = dt.practitioner(dg1.rep(16), ctx.source)
        if asserter:
            res["asserter"] = asserter
        ctx.emit(res, anchor=dg1, patient_key=ctx.patient_key, event_time=recorded.at if recorded else admitted)
        entry: dict = {"condition": ctx.ref("Condition", rid)}
        use = _DIAGNOSIS_USE.get(dx_type)
        if use:
            entry["use"] = {"coding": [{"system": DIAGNOSIS_ROLE, "code": use[0], "display": use[1]}]}
        rank = dt.small_int(dg1.val(15))
        if rank is not None:
            entry["rank"] = rank
        accepted = entry
    return accepted


def _map_coverage(ctx: Context, in1: Segment, authority_mrn: tuple[str, str]) -> None:
    """IN1 to Coverage; id from the patient, the payer (IN1-3) and the policy number (IN1-36)."""
    if ctx.patient_ref is None:
        return
    source = ctx.source
    payer = in1.rep(3)
    payer_id = payer.c(1)
    payer_name = in1.val(4)
    policy = in1.val(36)
    plan = in1.rep(2)
    rid = ctx.rid("Coverage", *authority_mrn, payer_id or payer_name, policy or plan.c(1) or in1.val(1))
    with ctx.part(in1, "Coverage"):
        if not (payer_id or payer_name):
            raise PartError("missing_field", f"{in1.label}: no insurance company id (IN1-3) or name (IN1-4)",
                            in1.where(3))
        payor: dict = {"type": "Organization"}
        if payer_id:
            namespace = payer.c(4, 1) or payer.c(5)
            payor["identifier"] = {"system": f"urn:carelake:{source}:id:payer{('-' + namespace) if namespace else ''}",
                                   "value": payer_id}
        if payer_name:
            payor["display"] = payer_name
        res: dict = {"resourceType": "Coverage", "id": rid, "status": "active",
                     "beneficiary": ctx.patient_ref, "payor": [payor]}
        if policy:
            res["subscriberId"] = policy
            res["identifier"] = [{"system": f"urn:carelake:{source}:id:member{('-' + payer_id) if payer_id else ''}",
                                  "value": policy, "type": {"coding": [{"system": dt.V2_0203, "code": "MB"}]}}]
        plan_type = in1.val(15)
        if plan_type:
            # IN1-15 draws on user-defined table 0086: the sender's own codes
            res["type"] = {"coding": [{"system": dt.local_system(source, "HL70086"),
                                       "code": dt.code_text(plan_type)}]}
        relationship = in1.rep(17)
        rel_code = relationship.c(1).upper()
        if rel_code:
            codings = []
            mapped = _RELATIONSHIP.get(rel_code)
            if mapped:
                codings.append({"system": SUBSCRIBER_RELATIONSHIP, "code": mapped})
            original = dt.coding(relationship.c(1), relationship.c(2), relationship.c(3), source,
                                 "http://terminology.hl7.org/CodeSystem/v2-0063")
            if original:
                codings.append(original)
            res["relationship"] = {"coding": codings}
            if rel_code == "SEL":
                res["subscriber"] = ctx.patient_ref
                in1.mark(16, 18)  # the insured's name and birth date are the patient's own
        start, end = ctx.date(in1, 12), ctx.date(in1, 13)
        if start or end:
            res["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
        classes = []
        if plan.c(1):
            entry = {"type": {"coding": [{"system": COVERAGE_CLASS, "code": "plan"}]}, "value": plan.c(1)}
            if plan.c(2):
                entry["name"] = plan.c(2)
            classes.append(entry)
        group = in1.val(8)
        if group:
            entry = {"type": {"coding": [{"system": COVERAGE_CLASS, "code": "group"}]}, "value": group}
            if in1.val(9):
                entry["name"] = in1.val(9)
            classes.append(entry)
        if classes:
            res["class"] = classes
        ctx.emit(res, anchor=in1, patient_key=ctx.patient_key)


def _map_merge(msg: Message, ctx: Context) -> None:
    """A40: each PID/MRG pair merges the MRG-1 registration into the PID's."""
    evn = msg.first("EVN")
    if evn is not None:
        evn.mark(1)
        ctx.meta_time("event_recorded", evn, 2)
    pid_segments = msg.all("PID")
    if not pid_segments:
        ctx.require("PID", "ADT^A40")
    if not msg.all("MRG"):
        ctx.require("MRG", "ADT^A40")
    current: dict | None = None
    for seg in msg.segments:
        if seg.name == "PID":
            current = map_patient(ctx, seg, None)
        elif seg.name == "MRG" and current is not None:
            _merge(ctx, seg, current)


def _merge(ctx: Context, mrg: Segment, surviving: dict) -> None:
    retired = mrg.rep(1)
    mrn = retired.c(1)
    if not mrn:
        if not ctx.msg.terminated and mrg is ctx.msg.segments[-1]:
            raise MappingError("truncated", "the message ends inside MRG", mrg.where(1))
        ctx.reject("missing_field", f"{mrg.label}: MRG-1 (prior patient identifier) is empty",
                   mrg.where(1), mrg, "Patient")
        return
    authority = retired.c(4, 1) or retired.c(4, 2)
    retired_id = ctx.rid("Patient", authority, mrn)
    if retired_id == surviving["id"]:
        ctx.reject("invalid_value", f"{mrg.label}: MRG-1 names the surviving patient itself", mrg.where(1),
                   mrg, "Patient")
        return
    surviving.setdefault("link", []).append({"other": ctx.ref("Patient", retired_id), "type": "replaces"})
    with ctx.part(mrg, "Patient"):
        res = {"resourceType": "Patient", "id": retired_id,
               "identifier": [dt.identifier(retired, ctx.source, "MR")],
               "active": False,
               "link": [{"other": _surviving_ref(ctx, surviving), "type": "replaced-by"}]}
        ctx.emit(res, anchor=mrg, patient_key=f"{ctx.source}|{mrn}")


def _surviving_ref(ctx: Context, surviving: dict) -> dict:
    """The retired registration's pointer to the surviving one, with its MRN beside the id: the
    MPI keys records by source and MRN and must not need the surviving Patient to find it."""
    ref = dict(ctx.ref("Patient", surviving["id"]))
    mrn = (ctx.patient_key or "").partition("|")[2]
    ident = next((i for i in surviving.get("identifier", ()) if i.get("value") == mrn), None)
    if ident is not None:
        ref["identifier"] = {k: v for k, v in ident.items() if k in ("system", "value", "type")}
    return ref
