"""835 claim payment loop (2100 CLP with its 2110 service payments) to a FHIR ClaimResponse.

ClaimResponse rather than ExplanationOfBenefit: the 835 is the payer's adjudication of a claim the
provider sent (the request), which is what ClaimResponse models; an EOB is the payer's account to
the member and would repeat the claim's content the 835 does not carry (diagnoses, lines' codes).

| X12 | ClaimResponse |
|---|---|
| CLP01 | request: the Claim (``Claim/<id of source + CLP01>``, as the 837 mapping makes it) and its identifier |
| CLP02 | outcome (complete; ``error`` for 4 denied / 23 not our claim), disposition (the status's name), extension x12-claim-status (the code) |
| CLP03 / CLP04 / CLP05 | adjudication + total: submitted / benefit (paid) / CARIN memberliability |
| CLP07 | identifier (payer claim control number) |
| CLP08 | type institutional (a facility code); without it the type is not stated (text) |
| CAS (2100 / 2110) | adjudication: category = group code (CO, PR, OA, PI, CR), reason = CARC, amount, value = quantity |
| NM1*QC (MI) / NM1*IL (MI) | patient (Patient id of the member id, as the 837 mapping makes it) |
| SVC02 / SVC03 / AMT*B6 (2110) | item (itemSequence = the SVC's order): submitted / benefit / eligible |
| BPR16, TRN02 | payment.date, payment.identifier (check / EFT trace number); payment.amount = CLP04 |
| DTM*405 (production date) | created |
| 1000A N1*PR (+REF*2U) / 1000B N1*PE (XX NPI, REF*TJ) | insurer / requestor Organizations |

No Patient is emitted from an 835: its NM1*QC holds a name and member id only, and the 837's
Patient (same id) is richer. Not mapped (MapResult.unused): CLP06 filing indicator, CLP09
frequency, CLP11-14 DRG, the 2100 NM1s other than QC/IL, MIA/MOA, REF, DTM, PER, AMT, QTY; SVC01
procedure and SVC04-07 (R4 ClaimResponse.item has no code), 2110 DTM/REF/LQ; PLB.
"""

from __future__ import annotations

from carelake_normalizer.core import MappingError, PartError
from carelake_normalizer.x12 import parties
from carelake_normalizer.x12 import values as v
from carelake_normalizer.x12.collect import Collector
from carelake_normalizer.x12.index import ClaimSpan
from carelake_normalizer.x12.segments import Seg, amount

# CLP02 claim status: (ClaimResponse.outcome, name).
STATUS = {
    "1": ("complete", "Processed as primary"), "2": ("complete", "Processed as secondary"),
    "3": ("complete", "Processed as tertiary"), "4": ("error", "Denied"),
    "19": ("complete", "Processed as primary, forwarded to additional payer(s)"),
    "20": ("complete", "Processed as secondary, forwarded to additional payer(s)"),
    "21": ("complete", "Processed as tertiary, forwarded to additional payer(s)"),
    "22": ("complete", "Reversal of previous payment"),
    "23": ("error", "Not our claim, forwarded to additional payer(s)"),
    "25": ("complete", "Predetermination pricing only - no payment"),
}
SUBMITTED = v.concept(v.ADJUDICATION, "submitted", "Submitted Amount")
BENEFIT = v.concept(v.ADJUDICATION, "benefit", "Benefit Amount")
ELIGIBLE = v.concept(v.ADJUDICATION, "eligible", "Eligible Amount")
MEMBER_LIABILITY = v.concept(v.C4BB_ADJUDICATION, "memberliability", "Member liability")


def map_payment(col: Collector, segs: list[Seg], span: ClaimSpan | None, *, patient_key: str | None) -> None:
    clp = segs[0]
    claim_id = clp.val(1)
    if not claim_id:
        raise MappingError("missing_field", "CLP01 (patient control number) is empty: the payment cannot be "
                           "matched to a claim", clp.where(1))
    header = span.header if span is not None else None
    payer_reference = payee_reference = None
    if header is not None:
        if header.payer is not None:
            payer_reference = parties.emit_payer(col, header.payer)
        if header.payee is not None:
            payee_reference = parties.emit_provider(col, header.payee)
    try:
        for seg in segs:
            seg.check_count()
        res, event_time = _response(col, segs, claim_id, header)
        patient, key = _patient(col, segs, patient_key)
        res["patient"] = patient
        res["insurer"] = payer_reference or {"display": "payer (835 1000A) not in the record"}
        if payee_reference is not None:
            res["requestor"] = payee_reference
        col.emit(_ordered(res), patient_key=key, event_time=event_time,
                 label=f"2100 CLP (claim {claim_id[:38]})", position=clp.pos)
    except PartError as exc:
        col.reject(exc, getattr(exc, "position", clp.pos), "ClaimResponse")


def _patient(col: Collector, segs: list[Seg], patient_key: str | None) -> tuple[dict, str | None]:
    """The member id of NM1*QC (the patient) or, for a dependent, NM1*IL (the insured) with QC's name."""
    qc = il = None
    for seg in segs:
        if seg.tag == "NM1" and seg.loop == "2100":
            q = seg.peek(1)
            if q == "QC" and qc is None:
                qc = seg
            elif q == "IL" and il is None:
                il = seg
    if qc is not None and qc.peek(8) == "MI" and qc.peek(9):
        qc.mark(1, 8, 9)
        ref, _, key = parties.patient_ref_for(col, qc.val(9))
        return ref, key
    if il is not None and il.peek(8) == "MI" and il.peek(9) and qc is not None and qc.peek(3):
        il.mark(1, 8, 9)
        qc.mark(1, 3, 4)
        dependent = parties.Party("2010CA", "QC", True, qc.val(3), qc.val(4))
        ref, _, key = parties.patient_ref_for(col, il.val(9), dependent)
        return ref, key
    prefix = f"{col.source}|"
    member = (patient_key[len(prefix):] if patient_key.startswith(prefix) else patient_key) if patient_key else ""
    if member:
        return {"reference": f"Patient/{col.rid('Patient', member)}"}, patient_key
    return {"display": "patient not identified by a member id (NM1*QC / NM1*IL NM109)"}, None


def _response(col: Collector, segs: list[Seg], claim_id: str, header) -> tuple[dict, object]:  # noqa: ANN001
    clp = segs[0]
    status = clp.val(2)
    found = STATUS.get(status)
    if found is None:
        raise clp.fail("invalid_value", f"claim status {status[:4]!r} is not an 835 claim status code", 2)
    outcome, disposition = found
    billed = amount(clp, 3, required=True)
    paid = amount(clp, 4, required=True)
    patient_owes = amount(clp, 5)
    payer_number = clp.val(7)
    facility = clp.val(8)
    source = col.source
    res: dict = {"resourceType": "ClaimResponse",
                 "id": col.rid("ClaimResponse", payer_number, claim_id, "reversal" if status == "22" else "")}
    if payer_number:
        res["identifier"] = [{"system": v.id_system(source, "payer-claim-control-number"), "value": payer_number}]
    res["status"] = "active"
    if facility:
        res["type"] = v.concept(v.CLAIM_TYPE, "institutional", "Institutional")
    else:
        res["type"] = {"text": "not stated in the 835 (no CLP08 facility code)"}
    res["extension"] = [{"url": v.EXT_CLAIM_STATUS, "valueCoding": v.coding(v.CLAIM_STATUS, status, disposition)}]
    res["use"] = "claim"
    created = v.transaction_time(header.created, col.tz, col.zone) if header is not None else None
    event_time = None
    if created is not None:
        res["created"] = created.value
        event_time = created.at
    res["request"] = {"reference": f"Claim/{col.rid('Claim', claim_id)}",
                      "identifier": {"system": v.id_system(source, "patient-control-number"), "value": claim_id}}
    res["outcome"] = outcome
    res["disposition"] = disposition
    adjudication = [{"category": SUBMITTED, "amount": v.money(billed)}, {"category": BENEFIT, "amount": v.money(paid)}]
    if patient_owes is not None:
        adjudication.append({"category": MEMBER_LIABILITY, "amount": v.money(patient_owes)})
    items: list[dict] = []
    item: dict | None = None
    dates: list[str] = []
    for seg in segs[1:]:
        tag, loop = seg.tag, seg.loop
        if tag == "CAS":
            (item["adjudication"] if item is not None else adjudication).extend(_cas(seg))
        elif tag == "SVC":
            item = {"itemSequence": len(items) + 1, "adjudication": []}
            charge, line_paid = amount(seg, 2, required=True), amount(seg, 3, required=True)
            item["adjudication"] += [{"category": SUBMITTED, "amount": v.money(charge)},
                                     {"category": BENEFIT, "amount": v.money(line_paid)}]
            items.append(item)
        elif tag == "AMT" and loop == "2110" and seg.peek(1) == "B6" and item is not None:
            seg.mark(1)
            allowed = amount(seg, 2, required=True)
            item["adjudication"].append({"category": ELIGIBLE, "amount": v.money(allowed)})
        elif tag == "DTM" and loop == "2100" and seg.peek(1) in ("050", "232", "233") and created is None:
            seg.mark(1)
            dates.append(v.d8(seg, 2))
    if "created" not in res:
        if not dates:
            raise clp.fail("missing_field", "no production date (DTM*405 is not in the record) and no claim date "
                           "(DTM*050/232/233) to date the response by")
        res["created"] = max(dates)
    res["adjudication"] = adjudication
    if items:
        res["item"] = items
    res["total"] = [{"category": SUBMITTED, "amount": v.money(billed)},
                    {"category": BENEFIT, "amount": v.money(paid)}]
    payment: dict = {"type": v.concept(v.PAYMENT_TYPE, "complete", "Complete"), "amount": v.money(paid)}
    if header is not None:
        p = header.payment
        if p.get("date"):
            payment["date"] = v.d8_text(p["date"], p["date_where"])
        if p.get("trace"):
            payment["identifier"] = {"system": v.id_system(source, "payment-trace-number"), "value": p["trace"]}
    res["payment"] = payment
    return res, event_time


def _cas(seg: Seg) -> list[dict]:
    """CAS01 group and up to six (reason, amount, quantity) triplets."""
    group = seg.val(1).upper()
    if not group:
        raise seg.fail("missing_field", "the adjustment group code is empty", 1)
    out = []
    for n in range(2, min(len(seg.el), 20), 3):
        reason = seg.val(n)
        if not reason and not seg.peek(n + 1):
            continue
        if not reason:
            raise seg.fail("missing_field", "an adjustment amount without its reason code", n)
        entry: dict = {"category": v.concept(v.ADJUSTMENT_GROUP, group),
                       "reason": v.concept(v.CARC, reason), "amount": v.money(amount(seg, n + 1, required=True))}
        units = amount(seg, n + 2)
        if units is not None:
            entry["value"] = units
        out.append(entry)
    return out


_ORDER = {k: i for i, k in enumerate((
    "resourceType", "id", "meta", "contained", "extension", "identifier", "status", "type", "subType", "use",
    "patient", "created", "insurer", "requestor", "request", "outcome", "disposition", "item", "adjudication",
    "total", "payment"))}


def _ordered(res: dict) -> dict:
    return dict(sorted(res.items(), key=lambda kv: _ORDER.get(kv[0], 99)))
