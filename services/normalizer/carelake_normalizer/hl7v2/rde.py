"""Pharmacy orders to MedicationRequest: RDE^O11/O01 (RXE), OMP^O09 and ORM^O01 (RXO).

One MedicationRequest per ORC order group. Id: ORC-2 placer order number, else ORC-3 filler,
else (MSH-10, the group's number). ORC-1 order control sets the status (NW/XO/RE active,
CA/OC cancelled, DC/OD stopped, HD on-hold). Timing (TQ1, RXE-1) and the give rate are not
mapped (they show as coverage gaps).
"""

from __future__ import annotations

from carelake_normalizer.core import PartError
from carelake_normalizer.hl7v2 import datatypes as dt
from carelake_normalizer.hl7v2.context import Context
from carelake_normalizer.hl7v2.parse import Message, Segment
from carelake_normalizer.hl7v2.patient import map_patient

_STATUS = {"NW": "active", "XO": "active", "RE": "active", "OK": "active", "SC": "active", "RP": "active",
           "CA": "cancelled", "OC": "cancelled", "CR": "cancelled", "DC": "stopped", "OD": "stopped",
           "DR": "stopped", "HD": "on-hold", "OH": "on-hold", "RL": "active"}


def map_pharmacy_order(msg: Message, ctx: Context) -> None:
    what = f"{msg.code}^{msg.trigger}"
    pid = ctx.require("PID", what)
    ctx.require("ORC", what)
    if msg.first("RXE") is None and msg.first("RXO") is None:
        ctx.require("RXE" if msg.code == "RDE" else "RXO", what)
    map_patient(ctx, pid, msg.first("PD1"))
    orders: list[dict[str, Segment | list[Segment]]] = []
    for seg in msg.segments:
        if seg.name == "ORC":
            orders.append({"ORC": seg, "RXR": []})
        elif orders and seg.name in ("RXE", "RXO"):
            orders[-1][seg.name] = seg
        elif orders and seg.name == "RXR":
            orders[-1]["RXR"].append(seg)  # type: ignore[union-attr]
    for i, order in enumerate(orders, 1):
        _map_order(ctx, order, i)


def _map_order(ctx: Context, order: dict, number: int) -> None:
    source = ctx.source
    orc: Segment = order["ORC"]
    rxe: Segment | None = order.get("RXE")
    rxo: Segment | None = order.get("RXO")
    placer, filler = orc.rep(2), orc.rep(3)
    if placer.c(1):
        rid = ctx.rid("MedicationRequest", "placer", placer.c(2), placer.c(1))
    elif filler.c(1):
        rid = ctx.rid("MedicationRequest", "filler", filler.c(2), filler.c(1))
    else:
        rid = ctx.rid("MedicationRequest", "msg", ctx.msg.control_id, str(number))
    anchor = rxe or rxo or orc
    with ctx.part(anchor, "MedicationRequest"):
        medication = None
        if rxe is not None:
            medication = dt.codeable(rxe.rep(2), source)
        if medication is None and rxo is not None:
            medication = dt.codeable(rxo.rep(1), source)
        if medication is None:
            raise PartError("missing_field", f"{anchor.label}: no medication code (RXE-2 / RXO-1)",
                            anchor.where(2 if rxe is not None else 1))
        res: dict = {"resourceType": "MedicationRequest", "id": rid,
                     "status": _STATUS.get(orc.val(1).upper(), "unknown"), "intent": "order",
                     "medicationCodeableConcept": medication}
        identifiers = [i for i in (dt.entity_identifier(placer, source, "PLAC"),
                                   dt.entity_identifier(filler, source, "FILL")) if i]
        if identifiers:
            res["identifier"] = identifiers
        if ctx.patient_ref:
            res["subject"] = ctx.patient_ref
        authored = ctx.ts(orc, 9)
        if authored:
            res["authoredOn"] = authored.value
        requester = dt.practitioner(orc.rep(12), source)
        if requester:
            res["requester"] = requester
        dosage: dict = {}
        dose_rx = rxe if rxe is not None else rxo
        if dose_rx is not None:
            low_n, unit_n = (3, 5) if rxe is not None else (2, 4)
            amount = dt.decimal(dose_rx.val(low_n)) if dose_rx.has(low_n) else None
            if amount is not None:
                unit = dose_rx.rep(unit_n)
                dosage["doseAndRate"] = [{"doseQuantity": dt.quantity(amount, unit if unit else None, source)}]
            instructions = [c.get("text") or (c.get("coding") or [{}])[0].get("display")
                            for c in (dt.codeable(r, source) for r in dose_rx.reps(7 if rxe is not None else 6)) if c]
            text = "; ".join(t for t in instructions if t)
            if text:
                dosage["text"] = text
        routes = order["RXR"]
        if routes:
            route = dt.codeable(routes[0].rep(1), source, "http://terminology.hl7.org/CodeSystem/v2-0162")
            if route:
                dosage["route"] = route
            site = dt.codeable(routes[0].rep(2), source, "http://terminology.hl7.org/CodeSystem/v2-0163")
            if site:
                dosage["site"] = site
        if dosage:
            res["dosageInstruction"] = [dosage]
        if rxe is not None:
            dispense: dict = {}
            quantity = dt.decimal(rxe.val(10)) if rxe.has(10) else None
            if quantity is not None:
                unit = rxe.rep(11)
                dispense["quantity"] = dt.quantity(quantity, unit if unit else None, source)
            refills = dt.small_int(rxe.val(12), minimum=0)
            if refills is not None:
                dispense["numberOfRepeatsAllowed"] = refills
            if dispense:
                res["dispenseRequest"] = dispense
        ctx.emit(res, anchor=anchor, patient_key=ctx.patient_key, event_time=authored.at if authored else None)
