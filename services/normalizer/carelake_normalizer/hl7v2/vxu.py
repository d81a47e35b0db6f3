"""VXU^V04 to Immunization (one per RXA), as the CDC HL7 2.5.1 immunization guide sends it.

Id: the sender's immunization id (ORC-3, which the guide makes the key for updates and
deletes), else (patient, RXA-3 administration date, RXA-5 vaccine code).
"""

from __future__ import annotations

from carelake_normalizer.core import PartError
from carelake_normalizer.hl7v2 import datatypes as dt
from carelake_normalizer.hl7v2.context import Context
from carelake_normalizer.hl7v2.parse import Message, Segment
from carelake_normalizer.hl7v2.patient import map_patient, patient_authority_mrn

_STATUS = {"CP": "completed", "PA": "completed", "RE": "not-done", "NA": "not-done"}
_FUNCTION = "http://terminology.hl7.org/CodeSystem/v2-0443"
CVX = "http://hl7.org/fhir/sid/cvx"


def map_vxu(msg: Message, ctx: Context) -> None:
    pid = ctx.require("PID", "VXU^V04")
    ctx.require("RXA", "VXU^V04")
    map_patient(ctx, pid, msg.first("PD1"))
    authority_mrn = patient_authority_mrn(pid)
    orc: Segment | None = None
    rxa: Segment | None = None
    routes: dict[int, Segment] = {}
    pairs: list[tuple[Segment | None, Segment]] = []
    for seg in msg.segments:
        if seg.name == "ORC":
            orc = seg
        elif seg.name == "RXA":
            rxa = seg
            pairs.append((orc, seg))
            orc = None
        elif seg.name == "RXR" and rxa is not None:
            routes[rxa.pos] = seg
    for orc_seg, rxa_seg in pairs:
        _map_immunization(ctx, orc_seg, rxa_seg, routes.get(rxa_seg.pos), authority_mrn)


def _map_immunization(ctx: Context, orc: Segment | None, rxa: Segment, rxr: Segment | None,
                      authority_mrn: tuple[str, str]) -> None:
    source = ctx.source
    filler = orc.rep(3) if orc is not None else None
    vaccine = rxa.rep(5)
    if filler is not None and filler.c(1):
        rid = ctx.rid("Immunization", "filler", filler.c(2), filler.c(1))
    else:
        rid = ctx.rid("Immunization", *authority_mrn, rxa.val(3), vaccine.c(3), vaccine.c(1))
    with ctx.part(rxa, "Immunization"):
        code = dt.codeable(vaccine, source, CVX)
        if code is None:
            raise PartError("missing_field", f"{rxa.label}: no vaccine code (RXA-5)", rxa.where(5))
        given = ctx.ts(rxa, 3)
        if given is None:
            raise PartError("missing_field", f"{rxa.label}: no administration date (RXA-3)", rxa.where(3))
        ctx.ts(rxa, 4)  # end of administration: the same instant for a dose; read, not kept
        action = rxa.val(21).upper()
        completion = rxa.val(20).upper()
        status = "entered-in-error" if action == "D" else _STATUS.get(completion, "completed")
        res: dict = {"resourceType": "Immunization", "id": rid, "status": status, "vaccineCode": code,
                     "occurrenceDateTime": given.value}
        if ctx.patient_ref:
            res["patient"] = ctx.patient_ref
        if filler is not None and filler.c(1):
            res["identifier"] = [dt.entity_identifier(filler, source, "FILL")]
        if orc is not None:
            placer = dt.entity_identifier(orc.rep(2), source, "PLAC")
            if placer:
                res.setdefault("identifier", []).append(placer)
            orc.mark(1)  # order control RE: an observation to follow, nothing to map
        amount = rxa.val(6)
        number = dt.decimal(amount) if amount and amount != "999" else None  # 999: amount unknown
        if number is not None:
            res["doseQuantity"] = dt.quantity(number, rxa.rep(7) if rxa.rep(7) else None, source)
        source_info = rxa.rep(9)
        if source_info.c(1):
            res["primarySource"] = source_info.c(1) == "00"
            if source_info.c(1) != "00":
                origin = dt.codeable(source_info, source)
                if origin:
                    res["reportOrigin"] = origin
        performers = []
        for r in rxa.reps(10):
            who = dt.practitioner(r, source)
            if who:
                performers.append({"function": {"coding": [{"system": _FUNCTION, "code": "AP",
                                                            "display": "Administering Provider"}]},
                                   "actor": who})
        if orc is not None:
            for r in orc.reps(12):
                who = dt.practitioner(r, source)
                if who:
                    performers.append({"function": {"coding": [{"system": _FUNCTION, "code": "OP",
                                                                "display": "Ordering Provider"}]},
                                       "actor": who})
        if performers:
            res["performer"] = performers
        place = rxa.rep(11)
        where = place.c(4, 1) or place.c(1)
        if where:
            res["location"] = {"display": where}
        if rxa.val(15):
            res["lotNumber"] = rxa.val(15)
        expires = ctx.date(rxa, 16)
        if expires:
            res["expirationDate"] = expires
        maker = rxa.rep(17)
        if maker.c(1) or maker.c(2):
            manufacturer: dict = {"type": "Organization"}
            if maker.c(1):
                manufacturer["identifier"] = {"system": dt.system_uri(maker.c(3) or "MVX", source),
                                              "value": maker.c(1)}
            if maker.c(2):
                manufacturer["display"] = maker.c(2)
            res["manufacturer"] = manufacturer
        refusal = dt.codeable(rxa.rep(18), source)
        if refusal:
            res["statusReason"] = refusal
        reasons = [c for c in (dt.codeable(r, source) for r in rxa.reps(19)) if c]
        if reasons:
            res["reasonCode"] = reasons
        recorded = ctx.ts(rxa, 22)
        if recorded:
            res["recorded"] = recorded.value
        if rxr is not None:
            route = dt.codeable(rxr.rep(1), source, "http://terminology.hl7.org/CodeSystem/v2-0162")
            if route:
                res["route"] = route
            site = dt.codeable(rxr.rep(2), source, "http://terminology.hl7.org/CodeSystem/v2-0163")
            if site:
                res["site"] = site
        ctx.emit(res, anchor=rxa, patient_key=ctx.patient_key, event_time=given.at)
