"""SIU (S12 booked ... S26 no-show) to Appointment.

Id: the filler appointment id (SCH-2), else the placer's (SCH-1), so S12, S14, S15 and S26 of
one appointment update one resource. Status from the trigger (S15 cancelled, S17 deleted,
S26 no-show), else from SCH-25 (table 0278), else booked.
"""

from __future__ import annotations

from datetime import timedelta

from carelake_normalizer.core import PartError
from carelake_normalizer.hl7v2 import datatypes as dt
from carelake_normalizer.hl7v2.context import Context
from carelake_normalizer.hl7v2.parse import Message, Segment
from carelake_normalizer.hl7v2.patient import map_patient

EVENTS = frozenset({"S12", "S13", "S14", "S15", "S17", "S26"})
_EVENT_STATUS = {"S15": "cancelled", "S17": "entered-in-error", "S26": "noshow"}
_FILLER_STATUS = {"BOOKED": "booked", "CANCELLED": "cancelled", "NOSHOW": "noshow", "COMPLETE": "fulfilled",
                  "PENDING": "pending", "WAITLIST": "waitlist", "DELETED": "entered-in-error",
                  "STARTED": "arrived", "OVERBOOK": "booked", "BLOCKED": "booked", "DC": "cancelled"}
_PARTICIPANT_STATUS = {"cancelled": "declined", "entered-in-error": "declined"}
_MINUTES = {"MIN": 1, "M": 1, "H": 60, "HR": 60, "S": 1 / 60}


def map_siu(msg: Message, ctx: Context) -> None:
    sch = ctx.require("SCH", f"SIU^{msg.trigger}")
    pid = ctx.require("PID", f"SIU^{msg.trigger}")
    map_patient(ctx, pid, msg.first("PD1"))
    source = ctx.source
    filler, placer = sch.rep(2), sch.rep(1)
    basis = ("filler", filler.c(2), filler.c(1)) if filler.c(1) else ("placer", placer.c(2), placer.c(1))
    rid = ctx.rid("Appointment", *basis)
    with ctx.part(sch, "Appointment"):
        if not basis[2]:
            raise PartError("missing_field", f"{sch.label}: no appointment id (SCH-1, SCH-2)", sch.where(2))
        status = _EVENT_STATUS.get(msg.trigger) or _FILLER_STATUS.get(sch.val(25).upper(), "booked")
        sch.mark(25)
        res: dict = {"resourceType": "Appointment", "id": rid, "status": status}
        identifiers = [i for i in (dt.entity_identifier(placer, source, "PLAC"),
                                   dt.entity_identifier(filler, source, "FILL")) if i]
        if identifiers:
            res["identifier"] = identifiers
        if status in ("cancelled", "noshow", "entered-in-error"):  # else SCH-6 stays unread: a gap
            event_reason = dt.codeable(sch.rep(6), source)
            if event_reason:
                res["cancelationReason"] = event_reason
        reason = dt.codeable(sch.rep(7), source)
        if reason:
            res["reasonCode"] = [reason]
        kind = dt.codeable(sch.rep(8), source, "http://terminology.hl7.org/CodeSystem/v2-0277")
        if kind:
            res["appointmentType"] = kind
        start, end, minutes = _timing(ctx, msg, sch)
        if start is not None and start.has_time:  # Appointment.start/end are instants: both or neither
            if end is not None and end.has_time:
                res["start"], res["end"] = start.value, end.value
            elif minutes:
                res["start"], res["end"] = start.value, _plus(start.at, minutes)
        if minutes:
            res["minutesDuration"] = minutes
        participants = []
        if ctx.patient_ref:
            participants.append({"actor": {**ctx.patient_ref, "type": "Patient"},
                                 "status": _PARTICIPANT_STATUS.get(status, "accepted")})
        for aip in msg.all("AIP"):
            for r in aip.reps(3):
                who = dt.practitioner(r, source)
                if who:
                    entry: dict = {"actor": who, "status": _PARTICIPANT_STATUS.get(status, "accepted")}
                    role = dt.codeable(aip.rep(4), source)
                    if role:
                        entry["type"] = [role]
                    participants.append(entry)
        for ail in msg.all("AIL"):
            loc = ail.rep(3)
            where = " ".join(p for p in (loc.c(1), loc.c(2), loc.c(3)) if p)
            facility = loc.c(4, 1)
            display = f"{where}, {facility}" if where and facility else where or facility
            if display:
                participants.append({"actor": {"type": "Location", "display": display},
                                     "status": _PARTICIPANT_STATUS.get(status, "accepted")})
        if not participants:
            raise PartError("missing_field", f"{sch.label}: no participant (PID, AIP, AIL)", sch.label)
        res["participant"] = participants
        ctx.emit(res, anchor=sch, patient_key=ctx.patient_key, event_time=start.at if start else None)


def _timing(ctx: Context, msg: Message, sch: Segment):  # noqa: ANN202 - (TimeValue|None, TimeValue|None, int|None)
    """Start, end and minutes: SCH-11 (TQ: ^^duration^start^end), else TQ1, else AIL/AIP/AIS."""
    start = ctx.ts(sch, 11, 4)
    end = ctx.ts(sch, 11, 5)
    minutes = _duration(sch.val(9), sch.val(10, 1))
    tq1 = msg.first("TQ1")
    if tq1 is not None:
        start = start or ctx.ts(tq1, 7)
        end = end or ctx.ts(tq1, 8)
    for name in ("AIS", "AIL", "AIP", "AIG"):
        for seg in msg.all(name):
            n = 4 if name == "AIS" else 6  # AIS-4 / AIL-6 / AIP-6 / AIG-8 start
            if name == "AIG":
                n = 8
            resource_start = ctx.ts(seg, n)
            duration = _duration(seg.val(n + 3), seg.val(n + 4, 1))
            seg.mark(n + 6)  # the resource's filler status: the appointment status carries it
            start = start or resource_start
            minutes = minutes or duration
    return start, end, minutes


def _duration(amount: str, units: str) -> int | None:
    number = dt.decimal(amount) if amount else None
    if number is None or number <= 0:
        return None
    factor = _MINUTES.get(units.upper() or "MIN")
    if factor is None:
        return None
    value = int(round(number * factor))
    return value if 0 < value <= dt.MAX_INT else None


def _plus(at, minutes: int) -> str:  # noqa: ANN001 - datetime
    return (at + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")
