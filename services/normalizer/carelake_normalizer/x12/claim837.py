"""837P / 837I claim loop (2300 with its 2310x names and 2400 lines) to a FHIR Claim.

| X12 | Claim |
|---|---|
| CLM01 | identifier (``urn:carelake:<source>:id:patient-control-number``); the id's source id |
| CLM02 | total (USD) |
| CLM05-1/-2/-3 | 837P: place of service → item.locationCodeableConcept; 837I: type of bill (facility + frequency) → supportingInfo ``typeofbill``; frequency → extension x12-claim-frequency, 8 (void) → status ``cancelled`` |
| BHT04/05 (DTP dates without a file) | created |
| DTP*434 RD8 (837I) / the lines' DTP*472 (837P) | billablePeriod |
| DTP*435 (837I admission) | supportingInfo ``admissionperiod`` |
| CL1 01/02/03 | supportingInfo ``admtype`` / ``pointoforigin`` / ``discharge-status`` (NUBC) |
| REF*EA | the Patient's MR identifier |
| REF*F8 | related (prior claim, the payer's number) |
| REF*D9 | identifier (clearinghouse claim number) |
| REF*G1 | insurance.preAuthRef |
| HI ABK/ABF/ABJ/APR/ABN (ICD-10-CM), BK/BF/BJ/PR/BN (ICD-9-CM) | diagnosis (one per code, with every role it is sent in; HI0x-9 present-on-admission → onAdmission) |
| 2310x / 2420x NM1*82/71/72/ZZ/DN/DQ + PRV | careTeam (CARIN roles) → Practitioner (or Organization) resources; PRV03 → qualification |
| 2310 NM1*77 | facility (logical reference: NPI + name) |
| LX / SV1 (837P) / SV2 (837I) | item: sequence, productOrService (HC → CPT / HCPCS), modifier, net (charge), quantity, revenue (SV201, NUBC), locationCodeableConcept (SV105), diagnosisSequence (SV107 pointers) |
| 2400 DTP*472 | item.servicedDate / servicedPeriod |

Not mapped (counted in MapResult.unused): CLM06-CLM20 (signature, assignment, release, related
causes, special program, delay reason), the 2300 DTPs other than 434/435, HI codes other than
diagnoses (ICD-10-PCS procedures, occurrence / value / condition codes, DRG), 2320/2330 other
payers (coordination of benefits), PWK/CN1/AMT/K3/NTE/CR*/CRC, 2400 REF/AMT/NTE, 2410 drug
identification, 2430 line adjudication.
"""

from __future__ import annotations

from carelake_normalizer.core import MappingError, PartError
from carelake_normalizer.ids import key
from carelake_normalizer.x12 import parties
from carelake_normalizer.x12 import values as v
from carelake_normalizer.x12.collect import Collector
from carelake_normalizer.x12.index import ClaimSpan, Header, Level, read_party
from carelake_normalizer.x12.segments import Seg, amount, quantity

CLAIM_TYPE = {"837P": ("professional", "Professional"), "837I": ("institutional", "Institutional")}
# 2310x / 2420x name loops that are care team members, by NM101 -> CARIN care team role.
CARE_TEAM_ROLE = {"82": "rendering", "71": "attending", "72": "operating", "ZZ": "otheroperating",
                  "DN": "referring", "P3": "referring", "DQ": "supervisor"}
ON_ADMISSION = {"Y": "y", "N": "n", "U": "u", "W": "w"}
ON_ADMISSION_SYSTEM = "http://terminology.hl7.org/CodeSystem/ex-diagnosis-on-admission"
_POINTER_QUALIFIERS = frozenset({"ABK", "ABF", "BK", "BF"})  # the codes SV107 pointers count
UCUM = "http://unitsofmeasure.org"
_UNIT_BASIS = {"MJ": ("min", "min"), "DA": ("d", "d")}  # SV103 / SV204 (UN units: no unit)


def map_claim(col: Collector, segs: list[Seg], kind: str, span: ClaimSpan | None, *,
              patient_key: str | None) -> None:
    """One 2300 loop (``segs[0]`` is its CLM) into ``col``: the Claim and the enclosing loops' resources."""
    clm = segs[0]
    claim_id = clm.val(1)
    if not claim_id:
        raise MappingError("missing_field", "CLM01 (patient control number) is empty: the claim cannot be "
                           "identified", clm.where(1))
    header = span.header if span is not None else None
    billing = subscriber = patient_level = None
    for level in span.levels if span is not None else ():
        if level.code == "20":
            billing = level
        elif level.code == "22":
            subscriber = level
        elif level.code == "23":
            patient_level = level
    mrn = ""
    for seg in segs:
        if seg.tag == "REF" and seg.loop == "2300" and seg.peek(1) == "EA" and seg.peek(2):
            seg.mark(1)
            mrn = seg.val(2)
            break

    # The enclosing loops' resources: they flow even when the claim itself is rejected.
    patient_ref = coverage_ref = payer_reference = provider_reference = None
    if subscriber is not None:
        patient_ref, coverage_ref, payer_reference, member_key = _member(col, subscriber, patient_level, mrn)
        patient_key = member_key or patient_key
    if billing is not None:
        party = billing.parties.get("2010AA")
        if party is not None:
            provider_reference = parties.emit_provider(col, party, billing.taxonomy)

    contained: list[dict] = []
    if patient_ref is None:
        patient_ref, patient_key = _claim_only_patient(col, patient_key, mrn, contained)
    try:
        for seg in segs:
            seg.check_count()
        res, event_time = _claim(col, segs, kind, claim_id, header, patient_ref)
        if contained:
            res["contained"] = contained
        res["provider"] = provider_reference or {"display": "billing provider (2010AA) not in the record"}
        if payer_reference is not None:
            res["insurer"] = payer_reference
        res["insurance"][0]["coverage"] = coverage_ref or {"display": "coverage (2000B) not in the record"}
        col.emit(_ordered(res), patient_key=patient_key, event_time=event_time,
                 label=f"2300 CLM (claim {claim_id[:38]})", position=clm.pos)
    except PartError as exc:
        col.reject(exc, getattr(exc, "position", clm.pos), "Claim")


def _member(col: Collector, level: Level, patient_level: Level | None, mrn: str):  # noqa: ANN202
    """Patient, Coverage and payer Organization of a 2000B (and its 2000C); their references."""
    sub = level.parties.get("2010BA")
    payer = level.parties.get("2010BB")
    payer_id = parties.payer_id(payer)
    member = sub.id if sub is not None else ""
    payer_reference = parties.emit_payer(col, payer) if payer is not None else None
    if sub is not None and not member:  # ids would collapse every such member into one Patient / Coverage
        col.reject(PartError("missing_field", "2010BA NM109 (member id) is empty: the patient and the coverage "
                             "cannot be identified", "2010BA NM109"), sub.pos, "Patient")
        return None, None, payer_reference, None
    dependent = patient_level.parties.get("2010CA") if patient_level is not None else None
    if dependent is not None:
        patient_ref, patient_key = parties.emit_patient(col, dependent, member, payer_id, dependent=True, mrn=mrn)
        relationship = patient_level.relationship
    elif sub is not None:
        patient_ref, patient_key = parties.emit_patient(col, sub, member, payer_id, dependent=False, mrn=mrn)
        relationship = level.relationship or "18"
    else:
        return None, None, payer_reference, None
    coverage_ref = parties.emit_coverage(
        col, member=member, payer=payer_id, patient=patient_ref, relationship=relationship, sbr=level.sbr,
        payer_reference=payer_reference or {"display": "payer (2010BB) not in the file"},
        patient_key=patient_key, position=level.pos)
    return patient_ref, coverage_ref, payer_reference, patient_key


def _claim_only_patient(col: Collector, patient_key: str | None, mrn: str,
                        contained: list[dict]) -> tuple[dict, str | None]:
    """The patient of a claim without its file: the envelope's patient key (``<source>|<member id>``,
    as the gateway keys claim records) gives the Patient id the file would give; else a contained
    Patient holding what the loop has (the REF*EA medical record number)."""
    prefix = f"{col.source}|"
    member = (patient_key[len(prefix):] if patient_key.startswith(prefix) else patient_key) if patient_key else ""
    if member:
        return {"reference": f"Patient/{col.rid('Patient', member)}"}, patient_key
    patient: dict = {"resourceType": "Patient", "id": "patient"}
    if mrn:
        patient["identifier"] = [{"type": v.concept(v.V2_0203, "MR", "Medical record number"),
                                  "system": v.id_system(col.source, "MR"), "value": mrn}]
    contained.append(patient)
    return {"reference": "#patient"}, None


class _Claim:
    """What the walk over a claim's segments gathers."""

    __slots__ = ("diagnosis", "by_code", "pointers", "care_team", "team_index", "items", "item", "line_dates",
                 "supporting", "related", "identifiers", "billable", "facility", "pre_auth")

    def __init__(self) -> None:
        self.diagnosis: list[dict] = []
        self.by_code: dict[tuple[str, str], dict] = {}
        self.pointers: list[int] = []  # SV107 pointer n -> diagnosis sequence
        self.care_team: list[dict] = []
        self.team_index: dict[tuple, int] = {}
        self.items: list[dict] = []
        self.item: dict | None = None
        self.line_dates: list[str] = []
        self.supporting: list[dict] = []
        self.related: list[dict] = []
        self.identifiers: list[dict] = []
        self.billable: dict | None = None
        self.facility: dict | None = None
        self.pre_auth: str = ""


def _claim(col: Collector, segs: list[Seg], kind: str, claim_id: str, header: Header | None,
           patient_ref: dict) -> tuple[dict, object]:
    clm = segs[0]
    tz, zone = col.tz, col.zone
    total = amount(clm, 2, required=True)
    facility, _qualifier, frequency = (clm.comp(5) + ["", "", ""])[:3]
    c = _Claim()
    c.identifiers.append({"system": v.id_system(col.source, "patient-control-number"), "value": claim_id})
    if kind == "837I" and facility:
        c.supporting.append(_info("typeofbill", "Type of bill", code=(v.TYPE_OF_BILL, facility + frequency)))
    place = facility if kind == "837P" else ""
    i, n = 1, len(segs)
    while i < n:
        seg = segs[i]
        tag, loop = seg.tag, seg.loop
        i += 1
        if tag == "NM1" and loop[:4] in ("2310", "2420"):
            group = [seg]
            while i < n and segs[i].loop == loop and segs[i].tag != "NM1":
                group.append(segs[i])
                i += 1
            _name_loop(col, c, seg, group, loop)
        elif tag == "HI":
            _diagnoses(seg, c)
        elif tag == "DTP" and loop == "2300":
            _claim_date(seg, c, tz, zone)
        elif tag == "CL1":
            for k, (cat, cat_display, system) in enumerate((
                    ("admtype", "Admission Type", v.ADMISSION_TYPE),
                    ("pointoforigin", "Point Of Origin", v.POINT_OF_ORIGIN),
                    ("discharge-status", "Discharge Status", v.DISCHARGE_STATUS)), start=1):
                value = seg.val(k)
                if value:
                    c.supporting.append(_info(cat, cat_display, code=(system, value)))
        elif tag == "REF" and loop == "2300":
            _claim_ref(col, seg, c)
        elif tag == "LX":
            seg.mark(1)  # the line number: items are numbered in order
            c.item = {"sequence": len(c.items) + 1}
            c.items.append(c.item)
        elif tag in ("SV1", "SV2") and loop == "2400":
            if c.item is None or "net" in c.item:  # a second service segment without its LX: its own line
                c.item = {"sequence": len(c.items) + 1}
                c.items.append(c.item)
            _service(col, seg, c, place)
        elif tag == "DTP" and loop == "2400" and seg.peek(1) == "472" and c.item is not None:
            seg.mark(1)
            value = v.period(seg, 2, 3, tz, zone)
            if "period" in value:
                c.item["servicedPeriod"] = value["period"]
                c.line_dates += [value["period"]["start"], value["period"]["end"]]
            else:
                day = value.get("date") or value["dateTime"][:10]
                c.item["servicedDate"] = day
                c.line_dates.append(day)
    if not c.items:
        raise clm.fail("missing_segment", "the claim has no service line (2400 LX with SV1/SV2)")
    for item in c.items:
        if "productOrService" not in item:
            service = "SV1" if kind == "837P" else "SV2"
            raise clm.fail("missing_segment", f"service line {item['sequence']} has no {service}")
    billable = c.billable
    if billable is None and c.line_dates:
        billable = {"start": min(c.line_dates), "end": max(c.line_dates)}
    created = v.transaction_time(header.created, tz, zone) if header is not None else None
    res: dict = {"resourceType": "Claim", "id": col.rid("Claim", claim_id), "identifier": c.identifiers,
                 "status": "cancelled" if frequency == "8" else "active",
                 "type": v.concept(v.CLAIM_TYPE, *CLAIM_TYPE[kind])}
    if frequency:  # 1 original, 7 replacement, 8 void...: no R4 element, so an extension
        res["extension"] = [{"url": v.EXT_CLAIM_FREQUENCY, "valueCoding": v.coding(v.FREQUENCY, frequency)}]
    res["use"] = "claim"
    res["patient"] = patient_ref
    if billable is not None:
        res["billablePeriod"] = billable
    if created is not None:
        res["created"] = created.value
        event_time = created.at
    else:  # no file: the latest date the loop gives, never the clock
        dates = [d for d in (*c.line_dates, *(billable.values() if billable else ())) if d]
        if not dates:
            raise clm.fail("missing_field", "no transaction date (BHT04 is not in the record) and no service date "
                           "to date the claim by")
        res["created"] = max(d[:10] for d in dates)
        event_time = None
    res["priority"] = v.concept(v.PROCESS_PRIORITY, "normal", "Normal")
    if c.related:
        res["related"] = c.related
    if c.facility is not None:
        res["facility"] = c.facility
    if c.care_team:
        res["careTeam"] = c.care_team
    if c.supporting:
        for k, entry in enumerate(c.supporting, start=1):
            entry["sequence"] = k
        res["supportingInfo"] = c.supporting
    if c.diagnosis:
        res["diagnosis"] = c.diagnosis
    insurance: dict = {"sequence": 1, "focal": True}
    if c.pre_auth:
        insurance["preAuthRef"] = [c.pre_auth]
    res["insurance"] = [insurance]
    res["item"] = c.items
    res["total"] = v.money(total)
    return res, event_time


_ORDER = {k: i for i, k in enumerate((
    "resourceType", "id", "meta", "contained", "extension", "identifier", "status", "type", "subType", "use",
    "patient", "billablePeriod", "created", "insurer", "provider", "priority", "related", "facility", "careTeam",
    "supportingInfo", "diagnosis", "insurance", "item", "total"))}


def _ordered(res: dict) -> dict:
    """Elements in the order FHIR lists them (for people reading Silver; JSON readers do not care)."""
    return dict(sorted(res.items(), key=lambda kv: _ORDER.get(kv[0], 99)))


def _claim_date(seg: Seg, c: _Claim, tz, zone: str) -> None:  # noqa: ANN001
    q = seg.peek(1)
    if q == "434":  # statement from-through dates (837I)
        seg.mark(1)
        value = v.period(seg, 2, 3, tz, zone)
        if "period" in value:
            c.billable = value["period"]
        else:
            day = value.get("date") or value["dateTime"]
            c.billable = {"start": day, "end": day}
    elif q == "435":  # admission date / hour
        seg.mark(1)
        value = v.period(seg, 2, 3, tz, zone)
        start = value.get("dateTime") or value.get("date") or value["period"]["start"]
        c.supporting.append(_info("admissionperiod", "Admission Period", period={"start": start}))


def _claim_ref(col: Collector, seg: Seg, c: _Claim) -> None:
    q = seg.peek(1)
    if not seg.peek(2):
        return
    if q == "F8":  # the payer's number of the claim this one replaces or voids
        seg.mark(1)
        c.related.append({"relationship": v.concept(v.RELATED_CLAIM, "prior", "Prior Claim"),
                          "reference": {"system": v.id_system(col.source, "payer-claim-control-number"),
                                        "value": seg.val(2)}})
    elif q == "D9":
        seg.mark(1)
        c.identifiers.append({"system": v.id_system(col.source, "clearinghouse-claim-number"), "value": seg.val(2)})
    elif q == "G1":
        seg.mark(1)
        c.pre_auth = seg.val(2)


def _info(category: str, display: str, *, code: tuple[str, str] | None = None, period: dict | None = None) -> dict:
    entry: dict = {"sequence": 0, "category": v.concept(v.C4BB_SUPPORTING_INFO, category, display)}
    if period is not None:
        entry["timingPeriod"] = period
    if code is not None:
        entry["code"] = v.concept(*code)
    return entry


def _diagnoses(seg: Seg, c: _Claim) -> None:
    comp = seg.d.component
    for n in range(1, len(seg.el)):
        raw = seg.peek(n)
        if not raw:
            continue
        parts = raw.split(comp)
        q = parts[0].strip().upper()
        found = v.DIAGNOSIS_QUALIFIERS.get(q)
        if found is None:
            continue  # ICD-10-PCS procedures, occurrence / value / condition codes, DRG: not mapped (unused)
        seg.mark(n)
        code = parts[1].strip() if len(parts) > 1 else ""
        if not code:
            raise seg.fail("missing_field", "the diagnosis code (component 2) is empty", n, "-2")
        system, role = found
        code = v.diagnosis_code(system, code)
        entry = c.by_code.get((system, code))
        if entry is None:
            entry = {"sequence": len(c.diagnosis) + 1,
                     "diagnosisCodeableConcept": {"coding": [{"system": system, "code": code}]}, "type": []}
            c.diagnosis.append(entry)
            c.by_code[(system, code)] = entry
        types = entry["type"]
        if not any(t["coding"][-1]["code"] == role for t in types):
            codings = [v.coding(v.C4BB_DIAGNOSIS_TYPE, role)]
            if role in v.CORE_DIAGNOSIS_TYPE:
                codings.insert(0, v.coding(v.DIAGNOSIS_TYPE, role))
            types.append({"coding": codings})
        poa = parts[8].strip().upper() if len(parts) > 8 else ""
        if poa in ON_ADMISSION:
            entry["onAdmission"] = v.concept(ON_ADMISSION_SYSTEM, ON_ADMISSION[poa])
        if q in _POINTER_QUALIFIERS:
            c.pointers.append(entry["sequence"])


def _name_loop(col: Collector, c: _Claim, nm1: Seg, group: list[Seg], loop: str) -> None:
    """A 2310x / 2420x name loop: a care team member (with its Practitioner or Organization) or the
    service facility (a logical Location reference); other name loops stay unread."""
    entity = nm1.peek(1)
    if entity == "77" and loop.startswith("2310"):
        nm1.mark(1, 2, 3, 8, 9)
        ref: dict = {"type": "Location"}
        if nm1.peek(8) == "XX" and nm1.peek(9):
            ref["identifier"] = {"system": v.NPI, "value": nm1.peek(9)}
        if nm1.peek(3):
            ref["display"] = nm1.peek(3)
        c.facility = ref
        return
    role = CARE_TEAM_ROLE.get(entity)
    if role is None:
        return
    party = read_party(group)
    k = (party.npi or key(party.family.upper(), party.given.upper()), role)
    seq = c.team_index.get(k)
    if seq is None:
        entry: dict = {"sequence": len(c.care_team) + 1, "provider": parties.emit_provider(col, party),
                       "role": v.concept(v.C4BB_CARE_TEAM_ROLE, role)}
        if party.taxonomy:
            entry["qualification"] = v.concept(v.NUCC, party.taxonomy)
        c.care_team.append(entry)
        seq = c.team_index[k] = entry["sequence"]
    if loop.startswith("2420") and c.item is not None:
        c.item.setdefault("careTeamSequence", []).append(seq)


def _service(col: Collector, seg: Seg, c: _Claim, place: str) -> None:
    item = c.item
    professional = seg.tag == "SV1"
    proc_n = 1 if professional else 2
    proc = seg.comp(proc_n)
    if proc and (len(proc) < 2 or not proc[1]):
        raise seg.fail("missing_field", "the procedure code (component 2) is empty", proc_n, "-2")
    if professional and not proc:
        raise seg.fail("missing_field", "the procedure (SV101) is empty", proc_n)
    if not professional:
        revenue = seg.val(1)
        if not revenue:
            raise seg.fail("missing_field", "the revenue code is empty", 1)
        item["revenue"] = v.concept(v.REVENUE, revenue)
    if proc:
        item["productOrService"] = {"coding": [v.procedure(proc[0], proc[1])]}
        mods = v.modifiers(proc[2:6])
        if mods:
            item["modifier"] = mods
    else:  # an 837I line with only a revenue code: the revenue code is the service
        item["productOrService"] = v.concept(v.REVENUE, item["revenue"]["coding"][0]["code"])
    charge_n, basis_n, units_n = (2, 3, 4) if professional else (3, 4, 5)
    charge = amount(seg, charge_n, required=True)
    basis = seg.val(basis_n).upper()
    units = quantity(seg, units_n)
    if units is not None:
        q: dict = {"value": units}
        unit = _UNIT_BASIS.get(basis)
        if unit is not None:
            q.update(unit=unit[0], system=UCUM, code=unit[1])
        item["quantity"] = q
    item["net"] = v.money(charge)
    if professional:
        pos = seg.val(5) or place
        if pos:
            item["locationCodeableConcept"] = v.concept(v.PLACE_OF_SERVICE, pos)
        sequences = []
        for p in seg.comp(7):
            if not p:
                continue
            if not p.isdigit() or not 1 <= int(p) <= len(c.pointers):
                raise seg.fail("invalid_value", f"diagnosis pointer {p[:3]!r} does not point at one of the "
                               f"claim's {len(c.pointers)} diagnosis codes", 7)
            sequences.append(c.pointers[int(p) - 1])
        if sequences:
            item["diagnosisSequence"] = list(dict.fromkeys(sequences))
