"""PID (+PD1) to Patient and NK1 to RelatedPerson: shared by every message with a patient.

The Patient id is a hash of (source, PID-3 first identifier's assigning authority, its value),
so every message about the same registration (A01, A08, ORU, SIU...) yields the same id. The
source patient key is ``<source>|<PID-3 first id>``, as the ingest gateway keys raw messages.
"""

from __future__ import annotations

from carelake_normalizer.core import MappingError, PartError
from carelake_normalizer.hl7v2 import datatypes as dt
from carelake_normalizer.hl7v2.context import Context
from carelake_normalizer.hl7v2.parse import Segment

US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
US_CORE_ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
MOTHERS_MAIDEN_NAME = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"
CDCREC = "urn:oid:2.16.840.1.113883.6.238"
_OMB_RACE = frozenset({"1002-5", "2028-9", "2054-5", "2076-8", "2106-3", "UNK", "ASKU"})
_OMB_ETHNICITY = frozenset({"2135-2", "2186-5", "UNK", "ASKU"})
GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown", "N": "unknown",
          "X": "other"}
_MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"


def map_patient(ctx: Context, pid: Segment, pd1: Segment | None = None) -> dict:
    """Set ctx.patient_* from PID-3 and emit the Patient; returns the Patient dict (even if rejected)."""
    ids = pid.reps(3)
    first = ids[0] if ids else None
    mrn = first.c(1) if first else ""
    if not mrn:
        if not ctx.msg.terminated and pid is ctx.msg.segments[-1]:
            raise MappingError("truncated", "the message ends inside PID before PID-3", pid.where(3))
        raise MappingError("missing_field", "PID-3 (patient identifier) is empty: the message cannot be "
                           "attributed to a patient", pid.where(3))
    authority = first.c(4, 1) or first.c(4, 2)
    pid_id = ctx.rid("Patient", authority, mrn)
    ctx.patient_id = pid_id
    ctx.patient_ref = ctx.ref("Patient", pid_id)
    ctx.patient_key = f"{ctx.source}|{mrn}"
    res: dict = {"resourceType": "Patient", "id": pid_id}
    with ctx.part(pid, "Patient"):
        source = ctx.source
        identifiers = [i for i in (dt.identifier(r, source, "MR") for r in ids) if i]
        identifiers += [i for i in (dt.identifier(r, source, "PT") for r in pid.reps(2)) if i]
        identifiers += [i for i in (dt.identifier(r, source, None) for r in pid.reps(4)) if i]
        acct = dt.identifier(pid.rep(18), source, "AN")
        if acct:
            identifiers.append(acct)
        ssn = pid.val(19)
        if ssn:
            identifiers.append({"system": dt.SSN, "value": ssn,
                                "type": {"coding": [{"system": dt.V2_0203, "code": "SS"}]}})
        dl = pid.rep(20)
        if dl.c(1):
            identifiers.append({"system": f"urn:carelake:{source}:id:DL{('-' + dl.c(2)) if dl.c(2) else ''}",
                                "value": dl.c(1), "type": {"coding": [{"system": dt.V2_0203, "code": "DL"}]}})
        res["identifier"] = _unique(identifiers)
        names = [n for n in (dt.human_name(r) for r in pid.reps(5)) if n]
        if names:
            res["name"] = names
        telecom = [t for t in (dt.contact_point(r, "home") for r in pid.reps(13)) if t]
        telecom += [t for t in (dt.contact_point(r, "work") for r in pid.reps(14)) if t]
        if telecom:
            res["telecom"] = telecom
        gender = GENDER.get(pid.val(8).upper())
        if gender:
            res["gender"] = gender
        birth = ctx.date(pid, 7)
        if birth:
            res["birthDate"] = birth
        died = ctx.ts(pid, 29)
        if died:
            res["deceasedDateTime"] = died.value
        elif pid.val(30).upper() in ("Y", "N"):
            res["deceasedBoolean"] = pid.val(30).upper() == "Y"
        addresses = [a for a in (dt.address(r) for r in pid.reps(11)) if a]
        if addresses:
            res["address"] = addresses
        marital = dt.codeable(pid.rep(16), source, "http://terminology.hl7.org/CodeSystem/v2-0002")
        if marital:
            res["maritalStatus"] = marital
        order = dt.small_int(pid.val(25))
        if order is not None:
            res["multipleBirthInteger"] = order
        elif pid.val(24).upper() in ("Y", "N"):
            res["multipleBirthBoolean"] = pid.val(24).upper() == "Y"
        language = pid.rep(15)
        if language:
            lang = dt.codeable(language, source, "urn:ietf:bcp:47")
            if lang:
                res["communication"] = [{"language": lang}]
        if pd1 is not None:
            gp = [p for p in (dt.practitioner(r, source) for r in pd1.reps(4)) if p]
            if gp:
                res["generalPractitioner"] = gp
        ext = []
        race = _race_ext(pid, 10, US_CORE_RACE, _OMB_RACE)
        if race:
            ext.append(race)
        ethnicity = _race_ext(pid, 22, US_CORE_ETHNICITY, _OMB_ETHNICITY)
        if ethnicity:
            ext.append(ethnicity)
        maiden = pid.rep(6).c(1)
        if maiden:
            ext.append({"url": MOTHERS_MAIDEN_NAME, "valueString": maiden})
        if ext:
            res["extension"] = ext
        ctx.emit(res, anchor=pid, patient_key=ctx.patient_key)
    return res


def _race_ext(pid: Segment, n: int, url: str, omb: frozenset[str]) -> dict | None:
    """US Core race/ethnicity: CDC race & ethnicity codes (CDCREC) as ombCategory/detailed + text."""
    reps = pid.reps(n)
    if not reps:
        return None
    parts = []
    texts = []
    for r in reps:
        code, display, system = r.c(1), r.c(2), r.c(3).upper()
        texts.append(display or code)
        if code and system in ("CDCREC", "HL70005", "HL70189"):
            coding = {"system": CDCREC, "code": code}
            if display:
                coding["display"] = display
            parts.append({"url": "ombCategory" if code in omb else "detailed", "valueCoding": coding})
    text = ", ".join(t for t in texts if t)
    if not text:
        return None
    parts.append({"url": "text", "valueString": text})
    return {"url": url, "extension": parts}


def _unique(identifiers: list[dict]) -> list[dict]:
    seen = set()
    out = []
    for i in identifiers:
        k = (i.get("system"), i["value"])
        if k not in seen:
            seen.add(k)
            out.append(i)
    return out


def map_related_person(ctx: Context, nk1: Segment, authority_mrn: tuple[str, str]) -> None:
    """NK1 to RelatedPerson; id from the patient and NK1-1 (the set id a sender updates by)."""
    if ctx.patient_ref is None:
        return
    set_id = nk1.val(1) or str(nk1.nth)
    rid = ctx.rid("RelatedPerson", *authority_mrn, set_id)
    with ctx.part(nk1, "RelatedPerson"):
        source = ctx.source
        res: dict = {"resourceType": "RelatedPerson", "id": rid, "patient": ctx.patient_ref}
        names = [n for n in (dt.human_name(r) for r in nk1.reps(2)) if n]
        if names:
            res["name"] = names
        relationship = [c for c in (dt.codeable(nk1.rep(3), source,
                                                "http://terminology.hl7.org/CodeSystem/v2-0063"),
                                    dt.codeable(nk1.rep(7), source,
                                                "http://terminology.hl7.org/CodeSystem/v2-0131")) if c]
        if relationship:
            res["relationship"] = relationship
        telecom = [t for t in (dt.contact_point(r, "home") for r in nk1.reps(5)) if t]
        telecom += [t for t in (dt.contact_point(r, "work") for r in nk1.reps(6)) if t]
        if telecom:
            res["telecom"] = telecom
        addresses = [a for a in (dt.address(r) for r in nk1.reps(4)) if a]
        if addresses:
            res["address"] = addresses
        gender = GENDER.get(nk1.val(15).upper())
        if gender:
            res["gender"] = gender
        birth = ctx.date(nk1, 16)
        if birth:
            res["birthDate"] = birth
        start, end = ctx.date(nk1, 8), ctx.date(nk1, 9)
        if start or end:
            res["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
        if not (names or telecom or addresses):
            raise PartError("missing_field", f"{nk1.label}: no name, phone or address", nk1.where(2))
        ctx.emit(res, anchor=nk1, patient_key=ctx.patient_key)


def patient_authority_mrn(pid: Segment) -> tuple[str, str]:
    first = pid.rep(3)
    return first.c(4, 1) or first.c(4, 2), first.c(1)
