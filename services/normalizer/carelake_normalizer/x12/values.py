"""X12 values to FHIR data types: dates (D8, RD8, DT), names, addresses, identifiers, code systems.

Dates: D8 ``CCYYMMDD`` is a FHIR date as written (never shifted); RD8 ``CCYYMMDD-CCYYMMDD`` a
Period of two dates (start not after end); DT ``CCYYMMDDHHMM`` a local time of the sender, read in
the source's zone and given in UTC (timeutil). An impossible value is a PartError
``invalid_date`` naming the element (``2400[1] DTP*472 DTP03``).
"""

from __future__ import annotations

import re
from datetime import tzinfo

from carelake_normalizer.core import PartError
from carelake_normalizer.terminology.systems import (
    ICD9CM,
    ICD10CM,
    icd9cm_dotted,
    icd9cm_key,
    procedure_system,
)
from carelake_normalizer.timeutil import TimeError, TimeValue, parse_date, parse_ts
from carelake_normalizer.x12.segments import Seg

NPI = "http://hl7.org/fhir/sid/us-npi"
EIN = "urn:oid:2.16.840.1.113883.4.4"  # US IRS Employer Identification Number
SSN = "http://hl7.org/fhir/sid/us-ssn"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
NUCC = "http://nucc.org/provider-taxonomy"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
PROCESS_PRIORITY = "http://terminology.hl7.org/CodeSystem/processpriority"
REVENUE = "http://terminology.hl7.org/CodeSystem/ex-revenue-center"
DIAGNOSIS_TYPE = "http://terminology.hl7.org/CodeSystem/ex-diagnosistype"
C4BB_DIAGNOSIS_TYPE = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBClaimDiagnosisType"
C4BB_CARE_TEAM_ROLE = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBClaimCareTeamRole"
C4BB_SUPPORTING_INFO = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBSupportingInfoType"
C4BB_ADJUDICATION = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudication"
ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
PAYMENT_TYPE = "http://terminology.hl7.org/CodeSystem/ex-paymenttype"
SUBSCRIBER_RELATIONSHIP = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
COVERAGE_CLASS = "http://terminology.hl7.org/CodeSystem/coverage-class"
RELATED_CLAIM = "http://terminology.hl7.org/CodeSystem/related-claim-relationship"
PLACE_OF_SERVICE = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
TYPE_OF_BILL = "https://www.nubc.org/CodeSystem/TypeOfBill"
ADMISSION_TYPE = "https://www.nubc.org/CodeSystem/PriorityTypeOfAdm"
POINT_OF_ORIGIN = "https://www.nubc.org/CodeSystem/PointOfOrigin"
DISCHARGE_STATUS = "https://www.nubc.org/CodeSystem/PatDischargeStatus"
CARC = "https://x12.org/codes/claim-adjustment-reason-codes"
# X12 code lists with no registered FHIR URI yet: named under our own namespace (not
# urn:carelake:local:, so the terminology pass leaves them alone rather than flagging "unmapped").
X12_LIST = "urn:carelake:x12:"
ADJUSTMENT_GROUP = X12_LIST + "claim-adjustment-group"
CLAIM_STATUS = X12_LIST + "claim-status"
FILING_INDICATOR = X12_LIST + "claim-filing-indicator"
FREQUENCY = X12_LIST + "claim-frequency"
# Extensions of our own (core.EXT_BASE) for X12 codes FHIR R4 has no element for.
EXT_CLAIM_FREQUENCY = "https://carelake.dev/fhir/StructureDefinition/x12-claim-frequency"  # CLM05-3
EXT_CLAIM_STATUS = "https://carelake.dev/fhir/StructureDefinition/x12-claim-status"  # CLP02
# HCPCS/CPT modifiers: the terminology pass checks CPT/HCPCS codings for a 5-character shape, which
# a 2-character modifier never has; modifiers get their own system until the pass knows them.
MODIFIER = X12_LIST + "procedure-modifier"

_D8 = re.compile(r"\d{8}")
_RD8 = re.compile(r"(\d{8})-(\d{8})")
_DT = re.compile(r"\d{12}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._~-]")


def safe(text: str) -> str:
    """A value as it goes into a ``urn:carelake:...`` system (as hl7v2/datatypes does)."""
    return _UNSAFE.sub("-", text)


def id_system(source: str, kind: str) -> str:
    return f"urn:carelake:{safe(source)}:id:{kind}"


def member_system(payer_id: str) -> str:
    """The member id system of a payer: ``urn:carelake:member-id:<payer id>``."""
    return f"urn:carelake:member-id:{safe(payer_id) if payer_id else 'unknown-payer'}"


# ---- dates --------------------------------------------------------------------------------------


def d8_text(text: str, where: str) -> str:
    """A CCYYMMDD value read earlier (e.g. into the file index) as a FHIR date; PartError invalid_date."""
    if not _D8.fullmatch(text):
        raise PartError("invalid_date", f"{where}: a D8 date is CCYYMMDD (8 digits)", where)
    try:
        return parse_date(text)
    except TimeError as exc:
        raise PartError("invalid_date", f"{where}: {exc}", where) from None


def d8(seg: Seg, n: int, text: str | None = None) -> str:
    """A D8 element (CCYYMMDD) as a FHIR date; PartError invalid_date."""
    value = seg.val(n) if text is None else text
    if not _D8.fullmatch(value):
        raise seg.fail("invalid_date", "a D8 date is CCYYMMDD (8 digits)", n)
    try:
        return parse_date(value)
    except TimeError as exc:
        raise seg.fail("invalid_date", str(exc), n) from None


def period(seg: Seg, fmt_n: int, value_n: int, tz: tzinfo, zone: str) -> dict:
    """A date (D8), range (RD8) or date-time (DT) element pair as {"date"|"period"|"dateTime": ...}."""
    fmt = seg.val(fmt_n).upper()
    text = seg.val(value_n)
    if not text:
        raise seg.fail("missing_field", "the date is empty", value_n)
    if fmt == "D8":
        return {"date": d8(seg, value_n, text)}
    if fmt == "RD8":
        m = _RD8.fullmatch(text)
        if m is None:
            raise seg.fail("invalid_date", "an RD8 range is CCYYMMDD-CCYYMMDD", value_n)
        start, end = d8(seg, value_n, m.group(1)), d8(seg, value_n, m.group(2))
        if end < start:
            raise seg.fail("invalid_date", "the range ends before it starts", value_n)
        return {"period": {"start": start, "end": end}}
    if fmt == "DT":
        if not _DT.fullmatch(text):
            raise seg.fail("invalid_date", "a DT date-time is CCYYMMDDHHMM (12 digits)", value_n)
        return {"dateTime": local_time(seg, value_n, text, tz, zone).value}
    raise seg.fail("invalid_value", f"date format {fmt[:6]!r} is not D8, RD8 or DT", fmt_n)


def local_time(seg: Seg, n: int, text: str, tz: tzinfo, zone: str) -> TimeValue:
    try:
        return parse_ts(text, tz, zone)
    except TimeError as exc:
        raise seg.fail("invalid_date", str(exc), n) from None


def transaction_time(created: tuple[str, str, str] | None, tz: tzinfo, zone: str) -> TimeValue | None:
    """BHT04 + BHT05 (or an 835's DTM*405 date) as a UTC dateTime / date; PartError if impossible."""
    if created is None:
        return None
    text, time, where = created
    if not _D8.fullmatch(text):
        raise PartError("invalid_date", f"{where}: the transaction date is not CCYYMMDD", where)
    digits = text
    if time[:4].isdigit() and len(time) >= 4:
        digits += time[:6] if time[:6].isdigit() and len(time) >= 6 else time[:4]
    try:
        return parse_ts(digits, tz, zone)
    except TimeError as exc:
        raise PartError("invalid_date", f"{where}: {exc}", where) from None


# ---- people, places, ids ------------------------------------------------------------------------

GENDER = {"M": "male", "F": "female", "U": "unknown"}


def human_name(family: str, given: str, middle: str, prefix: str, suffix: str) -> dict | None:
    if not (family or given):
        return None
    name: dict = {"use": "official"}
    if family:
        name["family"] = family
    givens = [g for g in (given, middle) if g]
    if givens:
        name["given"] = givens
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name


def postal_code(text: str) -> str:
    """A 9-digit US ZIP as ZIP+4 (60660-2160); anything else as sent."""
    return f"{text[:5]}-{text[5:]}" if len(text) == 9 and text.isdigit() else text


def address(n3: Seg | None, n4: Seg | None) -> dict | None:
    """N3 (street lines) + N4 (city, state, postal code, country, subdivision) as a FHIR Address."""
    out: dict = {}
    if n3 is not None:
        lines = [v for v in (n3.val(1), n3.val(2)) if v]
        if lines:
            out["line"] = lines
    if n4 is not None:
        city, state, postal, country = n4.val(1), n4.val(2), n4.val(3), n4.val(4)
        subdivision = n4.val(7)
        if city:
            out["city"] = city
        if state or subdivision:
            out["state"] = state or subdivision
        if postal:
            out["postalCode"] = postal_code(postal)
        if country:
            out["country"] = country
    return out or None


def money(value: int | float) -> dict:
    return {"value": value, "currency": "USD"}


def coding(system: str, code: str, display: str | None = None) -> dict:
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return c


def concept(system: str, code: str, display: str | None = None) -> dict:
    return {"coding": [coding(system, code, display)]}


# ---- procedure and diagnosis codes --------------------------------------------------------------

HIPPS = "https://www.cms.gov/Medicare/Medicare-Fee-for-Service-Payment/ProspMedicareFeeSvcPmtGen/HIPPSCodes"


def procedure(qualifier: str, code: str) -> dict:
    """A procedure composite's qualifier and code as a Coding: HC → CPT (5 digits, or 4 + F/T/U) or
    HCPCS level II (a letter and 4 digits); HP → HIPPS; NU (revenue code) → NUBC revenue centers;
    other qualifiers → ``urn:carelake:x12:product-service-id:<qualifier>``."""
    q = qualifier.upper()
    if q == "HC":
        return {"system": procedure_system(code.upper()), "code": code.upper()}
    if q == "HP":
        return {"system": HIPPS, "code": code}
    if q == "NU":
        return {"system": REVENUE, "code": code}
    return {"system": f"{X12_LIST}product-service-id:{safe(q or 'none')}", "code": code}


def modifiers(parts: list[str]) -> list[dict]:
    return [{"coding": [{"system": MODIFIER, "code": m.upper()}]} for m in parts if m]


# HI qualifiers: ICD-10-CM (A...) and ICD-9-CM; what role the code plays on the claim.
DIAGNOSIS_QUALIFIERS: dict[str, tuple[str, str]] = {
    "ABK": (ICD10CM, "principal"), "BK": (ICD9CM, "principal"),
    "ABF": (ICD10CM, "other"), "BF": (ICD9CM, "other"),
    "ABJ": (ICD10CM, "admitting"), "BJ": (ICD9CM, "admitting"),
    "APR": (ICD10CM, "patientreasonforvisit"), "PR": (ICD9CM, "patientreasonforvisit"),
    "ABN": (ICD10CM, "externalcauseofinjury"), "BN": (ICD9CM, "externalcauseofinjury"),
}
# Roles with a code in the core example system too (principal, admitting).
CORE_DIAGNOSIS_TYPE = {"principal", "admitting"}


_ICD10_UNDOTTED = re.compile(r"[A-Z][0-9][0-9A-Z][0-9A-Z]{1,4}")


def diagnosis_code(system: str, code: str) -> str:
    """ICD codes travel in X12 without their point; the FHIR ICD-10-CM / ICD-9-CM systems use the
    dotted form, so a well-shaped code gets its point back (a malformed one stays as sent, for the
    terminology pass to flag)."""
    code = code.upper()
    if "." in code:
        return code
    if system == ICD10CM:
        return f"{code[:3]}.{code[3:]}" if _ICD10_UNDOTTED.fullmatch(code) else code
    key = icd9cm_key(code)
    return icd9cm_dotted(key) if key is not None else code
