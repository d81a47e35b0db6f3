"""DFT^P03 (and P11) to ChargeItem, one per FT1.

Id: FT1-2 transaction id, else (MSH-10, FT1-1). FT1-6 transaction type: CG (charge) is
billable; CD/CR (credits) and PY (payments) are not charges to bill: they map to
``not-billable`` so the amount is kept but never summed as a charge.
"""

from __future__ import annotations

from carelake_normalizer.core import PartError
from carelake_normalizer.hl7v2 import datatypes as dt
from carelake_normalizer.hl7v2.context import Context
from carelake_normalizer.hl7v2.parse import Message, Segment
from carelake_normalizer.hl7v2.patient import map_patient
from carelake_normalizer.hl7v2.visit import encounter_reference

_STATUS = {"CG": "billable", "CD": "not-billable", "CR": "not-billable", "PY": "not-billable",
           "AJ": "billable"}
_FUNCTION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"


def map_dft(msg: Message, ctx: Context) -> None:
    what = f"DFT^{msg.trigger}"
    evn = msg.first("EVN")
    if evn is not None:
        evn.mark(1)
        ctx.meta_time("event_recorded", evn, 2)
    pid = ctx.require("PID", what)
    ctx.require("FT1", what)
    map_patient(ctx, pid, msg.first("PD1"))
    enc_ref = encounter_reference(ctx, msg.first("PV1"))
    for ft1 in msg.all("FT1"):
        _map_charge(ctx, ft1, enc_ref)


def _map_charge(ctx: Context, ft1: Segment, enc_ref: dict | None) -> None:
    source = ctx.source
    txn = ft1.val(2)
    rid = ctx.rid("ChargeItem", "txn", txn) if txn else ctx.rid("ChargeItem", "msg", ctx.msg.control_id,
                                                                 ft1.val(1) or str(ft1.nth))
    with ctx.part(ft1, "ChargeItem"):
        code = dt.codeable(ft1.rep(7), source)
        procedure = dt.codeable(ft1.rep(25), source)
        if code is None and procedure is None:
            raise PartError("missing_field", f"{ft1.label}: no transaction code (FT1-7) or procedure (FT1-25)",
                            ft1.where(7))
        if code is None:
            code = procedure
        elif procedure is not None:
            known = {(c.get("system"), c.get("code")) for c in code.get("coding", [])}
            extra = [c for c in procedure.get("coding", []) if (c.get("system"), c.get("code")) not in known]
            if extra:
                code.setdefault("coding", []).extend(extra)
        kind = ft1.val(6).upper()
        res: dict = {"resourceType": "ChargeItem", "id": rid, "status": _STATUS.get(kind, "unknown"),
                     "code": code}
        if txn:
            res["identifier"] = [{"system": f"urn:carelake:{source}:id:transaction", "value": txn}]
        if ctx.patient_ref:
            res["subject"] = ctx.patient_ref
        if enc_ref:
            res["context"] = enc_ref
        when = ctx.ts(ft1, 4)
        if when:
            res["occurrenceDateTime"] = when.value
        posted = ctx.ts(ft1, 5)
        if posted:
            res["enteredDate"] = posted.value
        quantity = dt.decimal(ft1.val(10)) if ft1.has(10) else None
        if quantity is not None:
            res["quantity"] = {"value": quantity}
        amount = dt.decimal(ft1.val(11, 1, 1)) if ft1.has(11) else None
        if amount is not None:
            money: dict = {"value": amount}
            currency = ft1.val(11, 1, 2)
            if currency:
                money["currency"] = currency
            res["priceOverride"] = money
        performers = []
        for n, code_, display in ((20, "PRF", "performer"), (21, "ORD", "orderer")):  # noqa: B007
            for r in ft1.reps(n):
                who = dt.practitioner(r, source)
                if who:
                    performers.append({"function": {"coding": [{"system": _FUNCTION, "code": code_,
                                                                "display": display}]}, "actor": who})
        if performers:
            res["performer"] = performers
        reasons = [c for c in (dt.codeable(r, source) for r in ft1.reps(19)) if c]
        if reasons:
            res["reason"] = reasons
        ctx.emit(res, anchor=ft1, patient_key=ctx.patient_key, event_time=when.at if when else None)
