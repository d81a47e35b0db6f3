"""Resources of the enclosing loops: Patient, Coverage, payer / provider Organization, Practitioner.

Ids (ids.resource_id with the record's source):

| resource | source id |
|---|---|
| Patient (subscriber is the patient) | the member id (NM109 of 2010BA NM1*IL, or of an 835 NM1*QC) |
| Patient (2000C dependent) | member id + "dependent" + last + first name (upper case) |
| Coverage | payer id + member id |
| Organization (payer) | "payer" + payer id (2010BB NM109 / 835 REF*2U or N104), else "payer-name" + name |
| Organization / Practitioner (provider) | "npi" + NPI, else "name" + last + first name |

A party whose loop holds an impossible value (a DMG02 birth date of Feb 30) is a rejected part;
the resources that reference it keep the reference (its id does not depend on the bad value).
"""

from __future__ import annotations

from carelake_normalizer.core import PartError
from carelake_normalizer.ids import key
from carelake_normalizer.x12 import values as v
from carelake_normalizer.x12.collect import Collector
from carelake_normalizer.x12.index import Party

ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
# SBR02 / PAT01 individual relationship codes -> FHIR subscriber-relationship.
RELATIONSHIP = {"18": "self", "01": "spouse", "19": "child", "53": "common", "G8": "other", "21": "other",
                "20": "other", "39": "other", "40": "other"}
PAYER_ID_QUALIFIERS = ("PI", "XV")


def payer_id(payer: Party | None) -> str:
    if payer is None:
        return ""
    if payer.id and payer.id_qualifier in PAYER_ID_QUALIFIERS + ("",):
        return payer.id
    return payer.refs.get("2U") or payer.refs.get("FY") or payer.id


def payer_ref(col: Collector, payer: Party) -> tuple[dict, str]:
    pid = payer_id(payer)
    rid = col.rid("Organization", "payer", pid) if pid else col.rid("Organization", "payer-name", payer.family.upper())
    return {"reference": f"Organization/{rid}"}, rid


def _unidentified(col: Collector, party: Party, rt: str) -> dict:
    """A party with neither an id nor a name: its resource is rejected, references to it say so."""
    segment = "N1" if party.loop.startswith("1000") else "NM1"
    where = f"{party.loop} {segment}{'04' if segment == 'N1' else '09'}"
    col.reject(PartError("missing_field", f"{where}: the {party.loop} party has neither an identifier nor a name",
                         where), party.pos, rt)
    return {"display": f"{party.loop} party without identifier or name"}


def emit_payer(col: Collector, payer: Party) -> dict:
    """The payer's Organization (2010BB NM1*PR or 835 1000A N1*PR); returns its reference."""
    if not payer_id(payer) and not payer.family:
        return _unidentified(col, payer, "Organization")
    ref, rid = payer_ref(col, payer)
    try:
        if payer.error is not None:
            raise payer.error
        res: dict = {"resourceType": "Organization", "id": rid, "active": True,
                     "type": [v.concept(ORGANIZATION_TYPE, "pay", "Payer")]}
        pid = payer_id(payer)
        if pid:
            res["identifier"] = [{"system": v.id_system(col.source, "payer"), "value": pid}]
        if payer.family:
            res["name"] = payer.family
        if payer.telecom:
            res["telecom"] = payer.telecom
        if payer.address:
            res["address"] = [payer.address]
        segment = "N1" if payer.loop.startswith("1000") else "NM1"
        col.emit(res, patient_key=None, event_time=None, label=f"{payer.loop} {segment}*{payer.entity}",
                 position=payer.pos)
    except PartError as exc:
        col.reject(exc, payer.pos, "Organization")
    return ref


def provider_ref(col: Collector, party: Party) -> tuple[dict, str, str]:
    """(reference, id, resource type) of a provider: Practitioner for a person (NM102 = 1), else Organization."""
    rt = "Practitioner" if party.person else "Organization"
    npi = party.npi
    rid = col.rid(rt, "npi", npi) if npi else col.rid(rt, "name", party.family.upper(), party.given.upper())
    return {"reference": f"{rt}/{rid}"}, rid, rt


def emit_provider(col: Collector, party: Party, taxonomy: str = "") -> dict:
    """A billing / rendering / attending provider or an 835 payee as Practitioner or Organization."""
    if not party.npi and not party.family:
        return _unidentified(col, party, "Practitioner" if party.person else "Organization")
    ref, rid, rt = provider_ref(col, party)
    try:
        if party.error is not None:
            raise party.error
        identifiers = []
        if party.npi:
            identifiers.append({"system": v.NPI, "value": party.npi})
        tax_id = party.refs.get("EI") or party.refs.get("TJ")  # 837 2010AA REF*EI / 835 1000B REF*TJ
        res: dict = {"resourceType": rt, "id": rid}
        taxonomy = taxonomy or party.taxonomy
        if rt == "Organization":
            if tax_id:
                identifiers.append({"system": v.EIN, "value": tax_id,
                                    "type": v.concept(v.V2_0203, "TAX", "Tax ID number")})
            if identifiers:
                res["identifier"] = identifiers
            res["active"] = True
            types = [v.concept(ORGANIZATION_TYPE, "prov", "Healthcare Provider")]
            if taxonomy:
                types.append(v.concept(v.NUCC, taxonomy))
            res["type"] = types
            if party.family:
                res["name"] = party.family
            if party.contact_name or party.telecom:
                contact: dict = {}
                if party.contact_name:
                    contact["name"] = {"text": party.contact_name}
                if party.telecom:
                    contact["telecom"] = party.telecom
                res["contact"] = [contact]
        else:
            if identifiers:
                res["identifier"] = identifiers
            name = v.human_name(party.family, party.given, party.middle, party.prefix, party.suffix)
            if name:
                res["name"] = [name]
            if party.telecom:
                res["telecom"] = party.telecom
            if taxonomy:
                res["qualification"] = [{"code": v.concept(v.NUCC, taxonomy)}]
        if party.address:
            res["address"] = [party.address]
        col.emit(res, patient_key=None, event_time=None, label=f"{party.loop} NM1*{party.entity}",
                 position=party.pos)
    except PartError as exc:
        col.reject(exc, party.pos, rt)
    return ref


def patient_source_id(member: str, dependent: Party | None) -> str:
    """The Patient's source id: the member id, or for a 2000C dependent the member id and the name."""
    if dependent is None:
        return member
    return key(member, "dependent", dependent.family.upper(), dependent.given.upper())


def patient_ref_for(col: Collector, member: str, dependent: Party | None = None) -> tuple[dict, str, str]:
    sid = patient_source_id(member, dependent)
    rid = col.rid("Patient", sid)
    return {"reference": f"Patient/{rid}"}, rid, f"{col.source}|{sid}"


def emit_patient(col: Collector, person: Party, member: str, payer: str, *, dependent: bool,
                 mrn: str = "", event_time=None) -> tuple[dict, str]:  # noqa: ANN001
    """The patient: the subscriber (2010BA) or the 2000C dependent (2010CA); returns (ref, patient key)."""
    ref, rid, patient_key = patient_ref_for(col, member, person if dependent else None)
    try:
        if person.error is not None:
            raise person.error
        res: dict = {"resourceType": "Patient", "id": rid}
        identifiers = []
        if member and not dependent:
            identifiers.append({"type": v.concept(v.V2_0203, "MB", "Member Number"),
                                "system": v.member_system(payer), "value": member})
        ssn = person.refs.get("SY")
        if ssn:
            identifiers.append({"type": v.concept(v.V2_0203, "SS", "Social Security number"), "system": v.SSN,
                                "value": ssn})
        if mrn:
            identifiers.append({"type": v.concept(v.V2_0203, "MR", "Medical record number"),
                                "system": v.id_system(col.source, "MR"), "value": mrn})
        if identifiers:
            res["identifier"] = identifiers
        name = v.human_name(person.family, person.given, person.middle, person.prefix, person.suffix)
        if name:
            res["name"] = [name]
        if person.gender:
            res["gender"] = person.gender
        if person.birth_date:
            res["birthDate"] = person.birth_date
        if person.address:
            res["address"] = [person.address]
        col.emit(res, patient_key=patient_key, event_time=event_time, label=f"{person.loop} NM1*{person.entity}",
                 position=person.pos)
    except PartError as exc:
        col.reject(exc, person.pos, "Patient")
    return ref, patient_key


def emit_coverage(col: Collector, *, member: str, payer: str, payer_reference: dict, patient: dict,
                  relationship: str, sbr: dict, patient_key: str, position: int) -> dict:
    rid = col.rid("Coverage", payer, member)
    ref = {"reference": f"Coverage/{rid}"}
    res: dict = {"resourceType": "Coverage", "id": rid, "status": "active"}
    if member:
        res["identifier"] = [{"type": v.concept(v.V2_0203, "MB", "Member Number"),
                              "system": v.member_system(payer), "value": member}]
        res["subscriberId"] = member
    filing = sbr.get("filing")
    if filing:
        res["type"] = v.concept(v.FILING_INDICATOR, filing)
    rel = RELATIONSHIP.get(relationship)
    if rel == "self":
        res["subscriber"] = patient
    res["beneficiary"] = patient
    if rel:
        res["relationship"] = v.concept(v.SUBSCRIBER_RELATIONSHIP, rel)
    res["payor"] = [payer_reference]
    group = sbr.get("group")
    if group:
        cls: dict = {"type": v.concept(v.COVERAGE_CLASS, "group", "Group"), "value": group}
        if sbr.get("group_name"):
            cls["name"] = sbr["group_name"]
        res["class"] = [cls]
    order = {"P": 1, "S": 2, "T": 3}.get(sbr.get("responsibility", ""))
    if order:
        res["order"] = order
    col.emit(res, patient_key=patient_key, event_time=None, label="2000B SBR", position=position)
    return ref
