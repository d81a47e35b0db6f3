"""HL7 v2.5.1 ER7 messages as the source systems send them: ADT, ORU, VXU, SIU, DFT.

Pure functions of the model: same inputs, same bytes. Segments are plain string joins because
the simulator renders ~200k messages a day; hl7apy is used only by the tests, to validate.
Segments end in ``\\r``; encoding characters ``^~\\&``; bytes are UTF-8 (declared in MSH-18).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from carelake_simulator.model import (
    Appointment,
    Charge,
    Coding,
    Demographics,
    Encounter,
    Immunization,
    LabOrder,
    Observation,
    Person,
    Provider,
    Registration,
    VitalSigns,
)

__all__ = ["adt", "adt_merge", "dft", "escape", "hl7_ts", "oru_lab", "oru_vitals", "siu", "vxu"]

VERSION = "2.5.1"
RECEIVER = "CARELAKE"
EHR_APP = "EPIC"  # sends ADT and vitals, and places the lab orders

# Model code-system names -> HL7 table 0396 (the brief fixes I10 / I9 for diagnoses).
_SYSTEMS = {
    "ICD10CM": "I10", "ICD9CM": "I9", "LOINC": "LN", "LOCAL": "L", "CPT": "C4",
    "HCPCS": "HCPCS", "CVX": "CVX", "MVX": "MVX", "NDC": "NDC", "RXNORM": "RXNORM",
    "SNOMED": "SCT", "NUCC": "HCPT", "NUBC-REV": "NUBC",
}
_PATIENT_CLASS = {"inpatient": "I", "emergency": "E", "outpatient": "O"}
# IN1-15 plan type: X12 claim filing indicator codes (SBR09), the vocabulary the 837s use too.
_PLAN_TYPE = {"commercial": "CI", "medicare": "MB", "medicaid": "MC", "selfpay": "09"}
_RACE = {
    "1002-5": "American Indian or Alaska Native", "2028-9": "Asian",
    "2054-5": "Black or African American", "2076-8": "Native Hawaiian or Other Pacific Islander",
    "2106-3": "White", "2131-1": "Other Race",
}
_ETHNICITY = {"2135-2": "Hispanic or Latino", "2186-5": "Not Hispanic or Latino"}
_LANGUAGE = {
    "en": "English", "es": "Spanish", "zh": "Chinese", "vi": "Vietnamese", "fr": "French",
    "ar": "Arabic", "ko": "Korean", "ru": "Russian", "tl": "Tagalog", "ht": "Haitian Creole",
}
_COUNTRY = {"US": "USA", "CA": "CAN", "MX": "MEX"}  # XAD-6 is ISO 3166 alpha-3 (table 0399)
_ADT_STRUCTURE = {"A01": "ADT_A01", "A04": "ADT_A01", "A08": "ADT_A01", "A03": "ADT_A03"}
_DX_TYPE = {"A01": "A", "A04": "A", "A08": "W", "A03": "F"}  # table 0052: admit/working/final
_SIU_EVENT = {"booked": "S12", "cancelled": "S15", "noshow": "S26"}
_SIU_STATUS = {"booked": "Booked", "cancelled": "Cancelled", "noshow": "Noshow"}  # table 0278
_SIU_REASON = {
    "booked": "NEW^New appointment booked^L",
    "cancelled": "CANCEL^Appointment cancelled^L",
    "noshow": "NOSHOW^Patient did not arrive^L",
}
_NK1_GIVEN = ("Alex", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Avery")
_NK1_RELATION = ("SPO^Spouse^HL70063", "PAR^Parent^HL70063", "CHD^Child^HL70063",
                 "SIB^Sibling^HL70063")
_VITALS_PANEL = ("85353-1^Vital signs, weight, height, head circumference, oxygen saturation"
                 " and BMI panel^LN")
_MINUTES = "min^minute^UCUM"
_ESCAPES = str.maketrans({"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "~": "\\R\\", "&": "\\T\\",
                          "\r": "\\X0D\\", "\n": "\\X0A\\"})
_NEEDS_ESCAPE = re.compile(r"[\\|^~&\r\n]")

_Ts = Callable[[datetime | None], str]


# ---- primitives ----------------------------------------------------------------------------


def escape(value: object) -> str:
    """Data text with HL7 delimiters (and CR/LF) escaped; None renders empty."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    # Most data needs no escaping, and the regex test is ~7x cheaper than translate().
    return text if _NEEDS_ESCAPE.search(text) is None else text.translate(_ESCAPES)


_e = escape


def hl7_ts(dt: datetime, tz: ZoneInfo | None, with_offset: bool = True) -> str:
    """HL7 DTM: UTC +0000 when tz is None, else local time in tz with its offset."""
    if dt.tzinfo is None:  # the model is UTC throughout; never let the host's zone leak in
        dt = dt.replace(tzinfo=UTC)
    local = dt.astimezone(tz or UTC)
    return local.strftime("%Y%m%d%H%M%S%z" if with_offset else "%Y%m%d%H%M%S")


def _clock(tz: ZoneInfo | None, naive_local: bool) -> _Ts:
    """One timestamp renderer per message, so naive_local reaches every field."""
    return lambda dt: "" if dt is None else hl7_ts(dt, tz, not naive_local)


def _date(d: date | None) -> str:
    return "" if d is None else f"{d.year:04d}{d.month:02d}{d.day:02d}"


def _num(value: float | int | Decimal) -> str:
    """A plain NM: no exponent, no float noise (0.30000000000000004 -> 0.3)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _seg(name: str, fields: dict[int, str]) -> str:
    """One segment from {field number: encoded value}; trailing empty fields dropped."""
    out = [""] * max(fields)
    for i, v in fields.items():
        out[i - 1] = v
    return (name + "|" + "|".join(out)).rstrip("|")


def _message(segments: list[str]) -> bytes:
    return ("\r".join(segments) + "\r").encode()


def _ce(c: Coding | None) -> str:
    """CE code^text^system, the model's system name mapped to HL7 table 0396."""
    if c is None:
        return ""
    return f"{_e(c.code)}^{_e(c.display)}^{_SYSTEMS.get(c.system) or _e(c.system)}"


def _xcn(p: Provider | None) -> str:
    """XCN for a provider identified by NPI (assigning authority and id type NPI)."""
    if p is None:
        return ""
    return f"{_e(p.npi)}^{_e(p.family)}^{_e(p.given)}^^^^^^NPI^L^^^NPI"


def _xpn(family: str, given: str, middle: str = "") -> str:
    return f"{_e(family)}^{_e(given)}^{_e(middle)}^^^^L"  # name type L: legal name


def _pl(location: str, facility: str) -> str:
    """PL point of care^room^bed^facility; the model's location is already components."""
    parts = [_e(p) for p in location.split("^")[:3]] if location else []
    parts += [""] * (3 - len(parts))
    return "^".join(parts) + "^" + _e(facility)


def _xad(demo: Demographics) -> str:
    a = demo.address
    if a is None:
        return ""
    country = _e(_COUNTRY.get(a.country, a.country))
    return f"{_e(a.line)}^^{_e(a.city)}^{_e(a.state)}^{_e(a.postal_code)}^{country}^H"


def _xtn(demo: Demographics) -> str:
    numbers = []
    if demo.phone:
        numbers.append(f"^PRN^PH^^^{_e(demo.phone[:3])}^{_e(demo.phone[3:])}")
    if demo.email:
        numbers.append(f"^NET^Internet^{_e(demo.email)}")
    return "~".join(numbers)


def _cdc(code: str | None, names: dict[str, str]) -> str:
    return f"{_e(code)}^{names.get(code, '')}^CDCREC" if code else ""


def _value(o: Observation) -> tuple[str, str]:
    """(OBX-2 value type, OBX-5 value): numbers are NM, anything else ST."""
    v = o.value
    if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool):
        return "NM", _num(v)
    return "ST", _e(v)


# ---- shared segments -----------------------------------------------------------------------


def _msh(app: str, facility: str, sent: str, msg_type: str, msg_id: str, *,
         immunization: bool = False) -> str:
    fields = {3: _e(app), 4: _e(facility), 5: RECEIVER, 6: RECEIVER, 7: sent, 9: msg_type,
              10: _e(msg_id), 11: "P", 12: VERSION, 18: "UNICODE UTF-8"}
    if immunization:  # CDC guide: accept-ack AL, application-ack NE, message profile Z22
        fields |= {15: "AL", 16: "NE", 21: "Z22^CDCPHINVS"}
    # MSH-1 is the field separator itself, so MSH-n is the (n-1)th field after the name.
    return _seg("MSH", {1: "^~\\&"} | {i - 1: v for i, v in fields.items()})


def _evn(event: str, recorded: str, occurred: str = "") -> str:
    return _seg("EVN", {1: event, 2: recorded, 6: occurred})


def _pid(reg: Registration) -> str:
    d = reg.demo
    ids = f"{_e(reg.mrn)}^^^{_e(reg.source.upper())}^MR"
    if d.ssn:
        ids += f"~{_e(d.ssn)}^^^SSA^SS"
    lang = f"{_e(d.language)}^{_LANGUAGE.get(d.language, '')}^ISO6391" if d.language else ""
    return _seg("PID", {
        1: "1", 3: ids, 5: _xpn(d.family, d.given, d.middle), 7: _date(d.birth_date),
        8: _e(d.sex), 10: _cdc(d.race, _RACE), 11: _xad(d), 13: _xtn(d), 15: lang,
        22: _cdc(d.ethnicity, _ETHNICITY),
    })


def _pv1(patient_class: str, visit_number: str, *, location: str = "",
         attending: Provider | None = None, disposition: str = "", admit: str = "",
         discharge: str = "") -> str:
    return _seg("PV1", {1: "1", 2: patient_class, 3: location, 7: _xcn(attending),
                        19: _e(visit_number), 36: _e(disposition), 44: admit, 45: discharge})


def _nk1(person: Person, msg_id: str) -> str:
    """One synthetic next of kin, picked deterministically from the message id."""
    n = zlib.crc32(msg_id.encode())  # not hash(): that is salted per process
    d = person.demo
    area = d.phone[:3] if d.phone else "555"
    phone = f"^PRN^PH^^^{_e(area)}^555{n % 10000:04d}"  # a 555 exchange: never a real line
    return _seg("NK1", {1: "1", 2: _xpn(d.family, _NK1_GIVEN[n % len(_NK1_GIVEN)]),
                        3: _NK1_RELATION[(n >> 8) % len(_NK1_RELATION)], 4: _xad(d), 5: phone})


def _in1(person: Person, reg: Registration) -> str:
    p, d = person.payer, reg.demo
    return _seg("IN1", {
        1: "1", 2: _e(p.kind.upper()), 3: f"{_e(p.payer_id)}^^^^NIIP", 4: _e(p.name),
        15: _PLAN_TYPE.get(p.kind, _e(p.kind)), 16: _xpn(d.family, d.given),
        17: "SEL^Self^HL70063", 18: _date(d.birth_date), 36: _e(person.member_id),
    })


def _obx(i: int, o: Observation, ts: _Ts, default_time: datetime) -> str:
    vtype, value = _value(o)
    unit = f"{_e(o.unit)}^{_e(o.unit)}^UCUM" if o.unit else ""
    return _seg("OBX", {1: str(i), 2: vtype, 3: _ce(o.code), 5: value, 6: unit,
                        7: _e(o.reference_range), 8: _e(o.flag), 11: "F",
                        14: ts(o.observed or default_time)})


def _oru(msh: str, reg: Registration, pv1: str | None, placer: str, filler: str, service: str,
         orderer: Provider | None, observed: datetime, resulted: datetime,
         observations: tuple[Observation, ...], ts: _Ts) -> bytes:
    """ORU^R01 shared by lab results and charted vitals: PID [PV1] ORC OBR OBX*."""
    segments = [msh, _pid(reg)]
    if pv1:
        segments.append(pv1)
    segments.append(_seg("ORC", {1: "RE", 2: placer, 3: filler, 12: _xcn(orderer)}))
    segments.append(_seg("OBR", {1: "1", 2: placer, 3: filler, 4: service, 7: ts(observed),
                                 16: _xcn(orderer), 22: ts(resulted), 25: "F"}))
    segments += [_obx(i, o, ts, observed) for i, o in enumerate(observations, 1)]
    return _message(segments)


# ---- messages ------------------------------------------------------------------------------


def adt(event: str, enc: Encounter, reg: Registration, person: Person, msg_id: str,
        sent: datetime, tz: ZoneInfo | None = None, *, sending_app: str = EHR_APP,
        facility: str = "CARELAKE_MC", naive_local: bool = False) -> bytes:
    """ADT^A01/A03/A04/A08 for one encounter, as the EHR sends it."""
    if event not in _ADT_STRUCTURE:
        raise ValueError(f"unsupported ADT event {event!r}")
    ts = _clock(tz, naive_local)
    # Only the discharge tells how the stay ended; the model knows an outpatient's end early.
    discharged = event == "A03"
    occurred = enc.discharge if discharged else enc.admit if event in ("A01", "A04") else None
    pv1 = _pv1(_PATIENT_CLASS.get(enc.kind, "U"), enc.encounter_id,
               location=_pl(enc.location, enc.facility), attending=enc.attending,
               disposition=enc.disposition if discharged else "", admit=ts(enc.admit),
               discharge=ts(enc.discharge) if discharged else "")
    segments = [
        _msh(sending_app, facility, ts(sent), f"ADT^{event}^{_ADT_STRUCTURE[event]}", msg_id),
        _evn(event, ts(sent), ts(occurred)),
        _pid(reg),
        _seg("PD1", {4: _xcn(person.pcp)}),
        _nk1(person, msg_id),
        pv1,
    ]
    segments += [_seg("DG1", {1: str(i), 3: _ce(dx), 6: _DX_TYPE[event], 15: str(i)})
                 for i, dx in enumerate(enc.diagnoses, 1)]
    segments.append(_in1(person, reg))
    return _message(segments)


def adt_merge(surviving: Registration, retired_mrn: str, msg_id: str, sent: datetime,
              tz: ZoneInfo | None = None, *, sending_app: str = EHR_APP,
              facility: str = "CARELAKE_MC", naive_local: bool = False) -> bytes:
    """ADT^A40 (structure ADT_A39): merge the retired MRN into the surviving one."""
    ts = _clock(tz, naive_local)
    return _message([
        _msh(sending_app, facility, ts(sent), "ADT^A40^ADT_A39", msg_id),
        _evn("A40", ts(sent)),
        _pid(surviving),
        _seg("MRG", {1: f"{_e(retired_mrn)}^^^{_e(surviving.source.upper())}^MR"}),
    ])


def oru_lab(order: LabOrder, reg: Registration, msg_id: str, sent: datetime,
            tz: ZoneInfo | None = None, *, sending_app: str = "SUNQUEST",
            facility: str = "CARELAKE_LAB", naive_local: bool = False) -> bytes:
    """ORU^R01 lab result: one OBR for the panel, one OBX per analyte."""
    ts = _clock(tz, naive_local)
    msh = _msh(sending_app, facility, ts(sent), "ORU^R01^ORU_R01", msg_id)
    placer = f"{_e(order.order_id)}^{EHR_APP}"
    filler = f"{_e(order.filler_id)}^{_e(sending_app)}"
    return _oru(msh, reg, None, placer, filler, _ce(order.panel), order.ordered_by,
                order.collected, order.resulted, order.observations, ts)


def oru_vitals(v: VitalSigns, reg: Registration, enc: Encounter | None, msg_id: str,
               sent: datetime, tz: ZoneInfo | None = None, *, sending_app: str = EHR_APP,
               facility: str = "CARELAKE_MC", naive_local: bool = False) -> bytes:
    """ORU^R01 of vitals charted in the EHR, tied to the visit by PV1-19."""
    ts = _clock(tz, naive_local)
    msh = _msh(sending_app, facility, ts(sent), "ORU^R01^ORU_R01", msg_id)
    if enc is not None:
        pv1 = _pv1(_PATIENT_CLASS.get(enc.kind, "U"), enc.encounter_id,
                   location=_pl(enc.location, enc.facility), attending=enc.attending,
                   admit=ts(enc.admit))
    else:  # encounter not at hand: still name the visit, with class U (unknown)
        pv1 = _pv1("U", v.encounter_id)
    ids = f"{_e(v.vitals_id)}^{_e(sending_app)}"
    return _oru(msh, reg, pv1, ids, ids, _VITALS_PANEL, enc.attending if enc else None,
                v.taken, v.taken, v.observations, ts)


def vxu(imm: Immunization, reg: Registration, msg_id: str, sent: datetime,
        tz: ZoneInfo | None = None, *, sending_app: str = "IIS_CLIENT",
        facility: str = "CARELAKE_PH", naive_local: bool = False) -> bytes:
    """VXU^V04 per the CDC HL7 2.5.1 immunization guide: one administered dose."""
    ts = _clock(tz, naive_local)
    given = ts(imm.administered)
    by = _xcn(imm.administered_by)
    return _message([
        _msh(sending_app, facility, ts(sent), "VXU^V04^VXU_V04", msg_id, immunization=True),
        _pid(reg),
        _seg("ORC", {1: "RE", 3: f"{_e(imm.immunization_id)}^{_e(facility)}", 12: by}),
        # RXA-9 00 (NIP001): a new record of an administered dose; RXA-20 CP, RXA-21 A (add).
        _seg("RXA", {1: "0", 2: "1", 3: given, 4: given, 5: _ce(imm.vaccine),
                     6: _num(imm.dose_ml), 7: "mL^milliliters^UCUM",
                     9: "00^New immunization record^NIP001", 10: by, 11: f"^^^{_e(facility)}",
                     15: _e(imm.lot), 17: _ce(imm.manufacturer), 20: "CP", 21: "A"}),
        _seg("RXR", {1: f"{_e(imm.route)}^^HL70162", 2: f"{_e(imm.site)}^^HL70163"}),
    ])


def siu(appt: Appointment, reg: Registration, msg_id: str, sent: datetime,
        tz: ZoneInfo | None = None, *, sending_app: str = "CADENCE",
        facility: str = "CARELAKE_MC", naive_local: bool = False) -> bytes:
    """SIU^S12/S15/S26 for a booked, cancelled or no-show appointment."""
    if appt.status not in _SIU_EVENT:
        raise ValueError(f"unsupported appointment status {appt.status!r}")
    ts = _clock(tz, naive_local)
    start, end = ts(appt.start), ts(appt.start + timedelta(minutes=appt.minutes))
    status = f"{_SIU_STATUS[appt.status]}^{_SIU_STATUS[appt.status]}^HL70278"
    minutes, provider, app = str(appt.minutes), _xcn(appt.provider), _e(sending_app)
    appt_id = _e(appt.appointment_id)
    timing = {6: start, 9: minutes, 10: _MINUTES, 12: status}  # AIL/AIP start, duration, status
    return _message([
        # Table 0354: S12 through S26 all use message structure SIU_S12.
        _msh(sending_app, facility, ts(sent), f"SIU^{_SIU_EVENT[appt.status]}^SIU_S12", msg_id),
        # SCH-11 (TQ) is ^^duration^start^end; SCH-16 and SCH-20 are required persons.
        _seg("SCH", {1: f"{appt_id}^{EHR_APP}", 2: f"{appt_id}^{app}",
                     6: _SIU_REASON[appt.status], 7: _ce(appt.reason),
                     8: "ROUTINE^Routine appointment^HL70276", 9: minutes, 10: _MINUTES,
                     11: f"^^M{minutes}^{start}^{end}", 12: provider, 16: provider,
                     20: f"{app}^{app}^SCHEDULER", 25: status}),
        _pid(reg),
        _seg("RGS", {1: "1"}),
        # SIU_S12 orders a resource group's service, general, location, personnel: AIL first.
        _seg("AIL", {1: "1", 3: _pl(appt.location, facility)} | timing),
        _seg("AIP", {1: "1", 3: provider, 4: _ce(appt.provider.taxonomy)} | timing),
    ])


def dft(charge: Charge, reg: Registration, msg_id: str, sent: datetime,
        tz: ZoneInfo | None = None, *, sending_app: str = "BILLING",
        facility: str = "CARELAKE_MC", naive_local: bool = False) -> bytes:
    """DFT^P03: one posted charge (FT1 type CG) against the visit."""
    ts = _clock(tz, naive_local)
    posted, code = ts(charge.posted), _ce(charge.procedure)
    return _message([
        _msh(sending_app, facility, ts(sent), "DFT^P03^DFT_P03", msg_id),
        _evn("P03", ts(sent)),
        _pid(reg),
        _pv1("U", charge.encounter_id),  # a charge carries no visit class: U (table 0004)
        _seg("FT1", {1: "1", 2: _e(charge.transaction_id), 4: posted, 5: posted, 6: "CG",
                     7: code, 10: str(charge.quantity), 11: f"{_num(charge.amount)}&USD",
                     20: _xcn(charge.performed_by), 25: code}),
    ])
