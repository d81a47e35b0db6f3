"""PV1 (+PV2) to Encounter, and the Encounter reference other messages make from PV1-19.

The Encounter id is a hash of (source, PV1-19 visit number with its assigning authority), so
A01, A08 and A03 of one stay share it. Messages that only mention a visit (ORU vitals, DFT)
reference that id without emitting an Encounter: their PV1 is a pointer, often thinner than
the ADT's (class U, no location), and emitting it would overwrite the ADT's version.
"""

from __future__ import annotations

from carelake_normalizer.hl7v2 import datatypes as dt
from carelake_normalizer.hl7v2.context import Context
from carelake_normalizer.hl7v2.parse import Segment

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_CLASS = {
    "I": ("IMP", "inpatient encounter"), "O": ("AMB", "ambulatory"), "E": ("EMER", "emergency"),
    "P": ("PRENC", "pre-admission"), "R": ("AMB", "ambulatory"), "B": ("IMP", "inpatient encounter"),
    "C": ("AMB", "ambulatory"),
}
_UNKNOWN_CLASS = {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK",
                  "display": "unknown"}
# Trigger event -> Encounter.status (None: from PV1-45, finished when a discharge time is set).
_STATUS = {"A01": "in-progress", "A02": "in-progress", "A03": "finished", "A04": "in-progress",
           "A05": "planned", "A06": "in-progress", "A07": "in-progress", "A08": None,
           "A11": "cancelled", "A13": "in-progress", "A28": None, "A31": None}
_PARTICIPANTS = ((7, "ATND", "attender"), (8, "REF", "referrer"), (9, "CON", "consultant"),
                 (17, "ADM", "admitter"))
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"


def visit_key(pv1: Segment | None) -> tuple[str, str] | None:
    """(assigning authority, visit number) from PV1-19, or None."""
    if pv1 is None:
        return None
    rep = pv1.rep(19)
    number = rep.c(1)
    return (rep.c(4, 1), number) if number else None


def encounter_id(ctx: Context, pv1: Segment | None) -> str | None:
    k = visit_key(pv1)
    return ctx.rid("Encounter", *k) if k else None


def encounter_reference(ctx: Context, pv1: Segment | None) -> dict | None:
    rid = encounter_id(ctx, pv1)
    return ctx.ref("Encounter", rid) if rid else None


def map_encounter(ctx: Context, pv1: Segment, pv2: Segment | None, trigger: str,
                  evn: Segment | None, diagnoses: list[dict]) -> str | None:
    """Emit the Encounter of a PV1 with a visit number; returns its id (None if no visit)."""
    rid = encounter_id(ctx, pv1)
    if rid is None:
        return None
    source = ctx.source
    with ctx.part(pv1, "Encounter"):
        res: dict = {"resourceType": "Encounter", "id": rid}
        ident = dt.identifier(pv1.rep(19), source, "VN")
        if ident:
            res["identifier"] = [ident]
        pclass = pv1.val(2).upper()
        found = _CLASS.get(pclass)
        res["class"] = {"system": ACT_CODE, "code": found[0], "display": found[1]} if found else _UNKNOWN_CLASS
        admission_type = dt.codeable_value(pv1.val(4), source, dt.system_uri("HL70007", source))
        if admission_type:
            res["type"] = [admission_type]
        service = dt.codeable_value(pv1.val(10), source, dt.system_uri("HL70069", source))
        if service:
            res["serviceType"] = service
        if ctx.patient_ref:
            res["subject"] = ctx.patient_ref
        participants = []
        for n, code, display in _PARTICIPANTS:
            for r in pv1.reps(n):
                who = dt.practitioner(r, source)
                if who:
                    participants.append({"type": [{"coding": [{"system": PARTICIPATION, "code": code,
                                                               "display": display}]}], "individual": who})
        if participants:
            res["participant"] = participants
        start, end = ctx.ts(pv1, 44), ctx.ts(pv1, 45)
        occurred = ctx.ts(evn, 6) if evn is not None else None
        if start is None and occurred is not None and trigger in ("A01", "A04", "A05"):
            start = occurred
        if end is None and occurred is not None and trigger == "A03":
            end = occurred
        status = _STATUS.get(trigger, None) or ("finished" if end else "in-progress")
        res["status"] = status
        period = {}
        if start:
            period["start"] = start.value
        if end:
            period["end"] = end.value
        if period:
            res["period"] = period
        hospitalization = {}
        admit_source = dt.codeable_value(pv1.val(14), source, dt.system_uri("HL70023", source))
        if admit_source:
            hospitalization["admitSource"] = admit_source
        readmission = dt.codeable_value(pv1.val(13), source, dt.system_uri("HL70092", source))
        if readmission:
            hospitalization["reAdmission"] = readmission
        disposition = dt.codeable_value(pv1.val(36), source, dt.system_uri("HL70112", source))
        if disposition:
            hospitalization["dischargeDisposition"] = disposition
        pre_admit = dt.identifier(pv1.rep(5), source, "PRE") if pv1.has(5) else None
        if pre_admit:
            hospitalization["preAdmissionIdentifier"] = pre_admit
        if hospitalization:
            res["hospitalization"] = hospitalization
        location = _location(pv1)
        if location:
            res["location"] = [{"location": {"display": location}, "status": "active" if status != "finished"
                                else "completed"}]
        if pv2 is not None:
            reason = [c for c in (dt.codeable(r, source) for r in pv2.reps(3)) if c]
            if reason:
                res["reasonCode"] = reason
        if diagnoses:
            res["diagnosis"] = diagnoses
        ctx.emit(res, anchor=pv1, patient_key=ctx.patient_key, event_time=start.at if start else None)
    return rid


def _location(pv1: Segment) -> str:
    """PL point of care^room^bed^facility as a display string."""
    rep = pv1.rep(3)
    parts = [rep.c(1), rep.c(2), rep.c(3)]
    where = " ".join(p for p in parts if p)
    facility = rep.c(4, 1)
    return f"{where}, {facility}" if where and facility else where or facility
