"""ORU^R01 (lab results and charted vitals) to Observation per OBX + DiagnosticReport per OBR.

Groups as in the ORU_R01 structure: PID [PD1] [PV1 [PV2]] { [ORC] OBR {[NTE]} { OBX {[NTE]} } }, the
patient group repeating. Observation ids hash (source, filler order number — else placer, else
MSH-10 + OBR number —, OBX-3 system and code, OBX-4 sub-id, the code's occurrence in the order),
so a corrected result (OBX-11 C) replaces the preliminary one. PV1 only gives the Encounter
reference (see visit.py). Each Observation carries its code as sent (LOINC or local), its value
(NM → valueQuantity with UCUM, SN → Quantity/Range/Ratio, CE/CWE → CodeableConcept, ST/TX/FT →
string, DT/DTM → dateTime, TM → time), OBX-7 as referenceRange and OBX-8 as interpretation.
"""

from __future__ import annotations

from carelake_normalizer.core import PartError
from carelake_normalizer.hl7v2 import datatypes as dt
from carelake_normalizer.hl7v2.context import Context
from carelake_normalizer.hl7v2.parse import Message, Segment
from carelake_normalizer.hl7v2.patient import map_patient
from carelake_normalizer.hl7v2.visit import encounter_reference

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
# OBX-11 (table 0085) -> Observation.status
_OBS_STATUS = {"F": "final", "C": "corrected", "P": "preliminary", "R": "preliminary", "S": "preliminary",
               "X": "cancelled", "N": "cancelled", "D": "entered-in-error", "W": "entered-in-error",
               "I": "registered", "O": "registered", "U": "final", "A": "amended"}
# OBR-25 (table 0123) -> DiagnosticReport.status
_REPORT_STATUS = {"O": "registered", "I": "registered", "S": "registered", "A": "partial", "R": "partial",
                  "P": "preliminary", "C": "corrected", "F": "final", "X": "cancelled",
                  "Y": "unknown", "Z": "unknown", "M": "corrected"}
# The LOINC codes of the FHIR vital-signs profile (and its panels).
VITAL_SIGNS = frozenset({
    "85353-1", "85354-9", "9279-1", "8867-4", "2708-6", "59408-5", "8310-5", "8302-2", "9843-4",
    "29463-7", "39156-5", "8480-6", "8462-4", "8478-0", "3150-0", "3151-8", "8287-5", "8306-3",
})
_CATEGORY = {
    "vital-signs": {"coding": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}]},
    "laboratory": {"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory", "display": "Laboratory"}]},
}
_TEXT_TYPES = frozenset({"ST", "TX", "FT", "ID", "IS", ""})
_CODED_TYPES = frozenset({"CE", "CWE", "CNE", "CF"})


class _Order:
    __slots__ = ("orc", "obr", "results", "notes")

    def __init__(self, orc: Segment | None, obr: Segment | None) -> None:
        self.orc, self.obr = orc, obr
        self.results: list[tuple[Segment, list[Segment]]] = []
        self.notes: list[Segment] = []


class _PatientGroup:
    __slots__ = ("pid", "pd1", "pv1", "orders")

    def __init__(self, pid: Segment) -> None:
        self.pid, self.pd1, self.pv1 = pid, None, None
        self.orders: list[_Order] = []


def groups(msg: Message) -> list[_PatientGroup]:
    """The message's patient groups with their orders and results, in order."""
    out: list[_PatientGroup] = []
    current: _PatientGroup | None = None
    pending_orc: Segment | None = None
    for seg in msg.segments:
        name = seg.name
        if name == "PID":
            current = _PatientGroup(seg)
            out.append(current)
            pending_orc = None
        elif current is None:
            continue
        elif name == "PD1":
            current.pd1 = seg
        elif name == "PV1":
            current.pv1 = seg
        elif name == "ORC":
            pending_orc = seg
        elif name == "OBR":
            current.orders.append(_Order(pending_orc, seg))
            pending_orc = None
        elif name == "OBX":
            if not current.orders:
                current.orders.append(_Order(pending_orc, None))
                pending_orc = None
            current.orders[-1].results.append((seg, []))
        elif name == "NTE" and current.orders:
            order = current.orders[-1]
            (order.results[-1][1] if order.results else order.notes).append(seg)
    return out


def map_oru(msg: Message, ctx: Context) -> None:
    ctx.require("PID", "ORU^R01")
    ctx.require("OBR", "ORU^R01")
    for group in groups(msg):
        map_patient(ctx, group.pid, group.pd1)
        enc_ref = encounter_reference(ctx, group.pv1)
        for order in group.orders:
            _map_order(ctx, order, enc_ref)


def _order_key(ctx: Context, order: _Order) -> tuple[str, ...]:
    obr, orc = order.obr, order.orc
    for seg, n, kind in ((obr, 3, "filler"), (orc, 3, "filler"), (obr, 2, "placer"), (orc, 2, "placer")):
        if seg is not None:
            rep = seg.rep(n)
            if rep.c(1):
                return (kind, rep.c(2) or rep.c(3), rep.c(1))
    number = obr.val(1) if obr is not None else ""
    return ("message", ctx.msg.control_id, number or "1")


def _map_order(ctx: Context, order: _Order, enc_ref: dict | None) -> None:
    source = ctx.source
    obr = order.obr
    key = _order_key(ctx, order)
    report_id = ctx.rid("DiagnosticReport", *key)
    results: list[dict] = []
    seen: dict[tuple[str, str, str], int] = {}
    for obx, notes in order.results:
        code = obx.rep(3)
        k = (code.c(3), code.c(1), obx.val(4))
        seen[k] = seen.get(k, 0) + 1
        rid = ctx.rid("Observation", *key, *k, str(seen[k]))
        with ctx.part(obx, "Observation"):
            _map_observation(ctx, obx, notes, rid, enc_ref, obr)
            results.append(ctx.ref("Observation", rid))
    if obr is None:
        return
    with ctx.part(obr, "DiagnosticReport"):
        code = dt.codeable(obr.rep(4), source)
        if code is None:
            raise PartError("missing_field", f"{obr.label}: no universal service id (OBR-4)", obr.where(4))
        res: dict = {"resourceType": "DiagnosticReport", "id": report_id,
                     "status": _REPORT_STATUS.get(obr.val(25).upper(), "unknown"), "code": code}
        identifiers = []
        for seg, n, type_code in ((obr, 2, "PLAC"), (obr, 3, "FILL")):
            ident = dt.entity_identifier(seg.rep(n), source, type_code)
            if ident:
                identifiers.append(ident)
        if order.orc is not None:
            order.orc.mark(2, 3)  # the same order numbers as OBR-2/OBR-3
        if identifiers:
            res["identifier"] = identifiers
        section = obr.val(24)
        if section:
            res["category"] = [{"coding": [{"system": V2_0074, "code": dt.code_text(section)}]}]
        if ctx.patient_ref:
            res["subject"] = ctx.patient_ref
        if enc_ref:
            res["encounter"] = enc_ref
        effective = ctx.ts(obr, 7)
        if effective:
            res["effectiveDateTime"] = effective.value
        issued = ctx.ts(obr, 22)
        if issued and issued.instant():
            res["issued"] = issued.instant()
        if results:
            res["result"] = results
        ctx.emit(res, anchor=obr, patient_key=ctx.patient_key, event_time=effective.at if effective else None)


def _map_observation(ctx: Context, obx: Segment, notes: list[Segment], rid: str, enc_ref: dict | None,
                     obr: Segment | None) -> None:
    source = ctx.source
    code = dt.codeable(obx.rep(3), source)
    if code is None:
        raise PartError("missing_field", f"{obx.label}: no observation identifier (OBX-3)", obx.where(3))
    status_code = obx.val(11).upper()
    res: dict = {"resourceType": "Observation", "id": rid, "status": _OBS_STATUS.get(status_code, "unknown")}
    loinc = code["coding"][0]["code"] if code.get("coding") and code["coding"][0]["system"] == dt.LOINC else ""
    res["category"] = [_CATEGORY["vital-signs" if loinc in VITAL_SIGNS else "laboratory"]]
    res["code"] = code
    if ctx.patient_ref:
        res["subject"] = ctx.patient_ref
    if enc_ref:
        res["encounter"] = enc_ref
    effective = ctx.ts(obx, 14) or (ctx.ts(obr, 7) if obr is not None else None)
    if effective:
        res["effectiveDateTime"] = effective.value
    issued = ctx.ts(obr, 22) if obr is not None else None
    if issued is not None and issued.instant():
        res["issued"] = issued.instant()
    value_type = obx.val(2).upper()
    unit = obx.rep(6)
    _set_value(ctx, obx, res, value_type, unit)
    if obx.has(7):
        rr = dt.reference_range(obx.val(7), unit if unit else None, source)
        if rr:
            res["referenceRange"] = [rr]
    flags = []
    for rep in obx.reps(8):
        flag = rep.c(1)
        if flag:
            system = rep.c(3)
            flags.append({"coding": [{"system": INTERPRETATION if system.upper() in ("", "HL70078") else
                                      dt.system_uri(system, source), "code": dt.code_text(flag)}]})
    if flags:
        res["interpretation"] = flags
    method = dt.codeable(obx.rep(17), source)
    if method:
        res["method"] = method
    performers = [p for p in (dt.practitioner(r, source) for r in obx.reps(16)) if p]
    org = obx.val(23)
    if org:
        performers.append({"type": "Organization", "display": org})
    if performers:
        res["performer"] = performers
    instance = dt.entity_identifier(obx.rep(21), source) if obx.has(21) else None
    if instance:
        res["identifier"] = [instance]
    texts = [t for t in (" ".join(r.text() for r in nte.reps(3)) for nte in notes) if t]
    if texts:
        res["note"] = [{"text": t} for t in texts]
    ctx.emit(res, anchor=obx, patient_key=ctx.patient_key, event_time=effective.at if effective else None)


def _set_value(ctx: Context, obx: Segment, res: dict, value_type: str, unit) -> None:  # noqa: ANN001
    source = ctx.source
    if not obx.has(5):
        return
    where = obx.where(5)
    if value_type == "NM":
        text = obx.val(5)
        number = dt.decimal(text)
        if number is not None:
            res["valueQuantity"] = dt.quantity(number, unit if unit else None, source)
            return
        compared = dt.comparator_quantity(text)
        if compared is None:
            raise PartError("invalid_value", f"{where}: the value is not a number (OBX-2 is NM)", where)
        q = dt.quantity(compared[1], unit if unit else None, source)
        res["valueQuantity"] = {"value": q.pop("value"), "comparator": compared[0], **q}
    elif value_type == "SN":
        rep = obx.rep(5)
        comparator, first, separator, second = rep.c(1), rep.c(2), rep.c(3), rep.c(4)
        n1, n2 = dt.decimal(first), dt.decimal(second) if second else None
        if n1 is None:
            raise PartError("invalid_value", f"{where}: not a structured numeric (SN) value", where)
        if separator == "-" and n2 is not None:
            res["valueRange"] = {"low": dt.quantity(n1, unit if unit else None, source),
                                 "high": dt.quantity(n2, unit if unit else None, source)}
        elif separator in (":", "/") and n2 is not None:
            res["valueRatio"] = {"numerator": {"value": n1}, "denominator": {"value": n2}}
        else:
            q = dt.quantity(n1, unit if unit else None, source)
            if comparator in ("<", ">", "<=", ">="):
                q = {"value": q.pop("value"), "comparator": comparator, **q}
            elif comparator not in ("", "="):
                raise PartError("invalid_value", f"{where}: SN comparator is not one of < > <= >= =", where)
            res["valueQuantity"] = q
    elif value_type in _CODED_TYPES:
        concept = dt.codeable(obx.rep(5), source)
        if concept:
            res["valueCodeableConcept"] = concept
    elif value_type == "DT":
        res["valueDateTime"] = ctx.date(obx, 5)
    elif value_type in ("DTM", "TS"):
        value = ctx.ts(obx, 5)
        if value:
            res["valueDateTime"] = value.value
    elif value_type == "TM":
        text = obx.val(5)
        digits = text.split("+")[0].split("-")[0].split(".")[0]
        if not (digits.isdigit() and len(digits) in (2, 4, 6)):
            raise PartError("invalid_value", f"{where}: not an HL7 time (HH[MM[SS]])", where)
        hh, mm, ss = int(digits[:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
        if hh > 23 or mm > 59 or ss > 59:
            raise PartError("invalid_date", f"{where}: time {hh:02d}:{mm:02d}:{ss:02d} does not exist", where)
        res["valueTime"] = f"{hh:02d}:{mm:02d}:{ss:02d}"
    elif value_type in _TEXT_TYPES:
        text = "\n".join(t for t in (r.text() for r in obx.reps(5)) if t)
        if text:
            res["valueString"] = text
    else:
        # ED, RP, XPN, AD, CP... no mapping: the value stays unread and shows as a coverage gap.
        obx.used &= ~(1 << 5)
        res["dataAbsentReason"] = {"coding": [{"system": DATA_ABSENT, "code": "unsupported",
                                               "display": "Unsupported"}]}
