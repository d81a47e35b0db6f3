"""PHI tagging: the one declared table of PHI element paths, and security labels from codes.

``PHI_PATHS`` is the single place that says which elements of which resource type hold PHI,
so de-identification and access control need no guesswork. It follows HIPAA Safe Harbor
(45 CFR 164.514(b)(2)): names, addresses, telecom, identifiers (MRN, SSN, member, account and
accession numbers), every date tied to the person except the year (birth, admission,
discharge, service and result dates), and free text that may quote any of those. References
(``*.subject``) point at a Patient but hold no PHI themselves. ``[x]`` marks a choice element
(any ``effectiveDateTime``/``effectivePeriod``... counts).

Security labels: every resource gets one HL7 v3 Confidentiality code (N normal, R restricted)
and the v3 ActCode sensitivity codes its ICD-10-CM / ICD-9-CM codings imply, from the one
declared table ``SENSITIVE_RANGES``.
"""

from __future__ import annotations

from carelake_normalizer.core import EXT_HL7V2_SEGMENT

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"

PHI_PATHS: dict[str, tuple[str, ...]] = {
    "Patient": (
        "Patient.identifier", "Patient.name", "Patient.telecom", "Patient.address",
        "Patient.birthDate", "Patient.deceased[x]", "Patient.multipleBirth[x]", "Patient.contact",
        "Patient.photo", "Patient.text",
        "Patient.extension('http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName')",
    ),
    "RelatedPerson": (
        "RelatedPerson.identifier", "RelatedPerson.name", "RelatedPerson.telecom",
        "RelatedPerson.address", "RelatedPerson.birthDate", "RelatedPerson.photo", "RelatedPerson.text",
    ),
    "Encounter": ("Encounter.identifier", "Encounter.period", "Encounter.text"),
    "Condition": ("Condition.onset[x]", "Condition.abatement[x]", "Condition.recordedDate",
                  "Condition.note", "Condition.text"),
    "Coverage": ("Coverage.identifier", "Coverage.subscriberId", "Coverage.period", "Coverage.text"),
    "Observation": ("Observation.identifier", "Observation.effective[x]", "Observation.issued",
                    "Observation.valueString", "Observation.valueDateTime", "Observation.note",
                    "Observation.text"),
    "DiagnosticReport": ("DiagnosticReport.identifier", "DiagnosticReport.effective[x]",
                         "DiagnosticReport.issued", "DiagnosticReport.conclusion", "DiagnosticReport.text"),
    "Immunization": ("Immunization.identifier", "Immunization.occurrence[x]", "Immunization.recorded",
                     "Immunization.note", "Immunization.text"),
    "Appointment": ("Appointment.identifier", "Appointment.start", "Appointment.end",
                    "Appointment.created", "Appointment.comment", "Appointment.description",
                    "Appointment.patientInstruction", "Appointment.text"),
    "ChargeItem": ("ChargeItem.identifier", "ChargeItem.occurrence[x]", "ChargeItem.enteredDate",
                   "ChargeItem.note", "ChargeItem.text"),
    "MedicationRequest": ("MedicationRequest.identifier", "MedicationRequest.authoredOn",
                          "MedicationRequest.note", "MedicationRequest.dosageInstruction",
                          "MedicationRequest.text"),
    "Claim": ("Claim.identifier", "Claim.billablePeriod", "Claim.created", "Claim.related",
              "Claim.supportingInfo", "Claim.item", "Claim.contained", "Claim.text"),
    "ClaimResponse": ("ClaimResponse.identifier", "ClaimResponse.created", "ClaimResponse.request",
                      "ClaimResponse.payment", "ClaimResponse.processNote", "ClaimResponse.text"),
    "MedicationDispense": ("MedicationDispense.identifier", "MedicationDispense.whenPrepared",
                           "MedicationDispense.whenHandedOver", "MedicationDispense.note",
                           "MedicationDispense.dosageInstruction", "MedicationDispense.text"),
    # Safe Harbor counts device identifiers and serial numbers.
    "Device": ("Device.identifier", "Device.udiCarrier", "Device.serialNumber", "Device.lotNumber",
               "Device.distinctIdentifier", "Device.note", "Device.text"),
}
# Extensions that may hold PHI on any resource type: a Z-segment kept whole is uninterpreted
# sender data, so it is assumed to hold PHI.
PHI_EXTENSIONS: tuple[str, ...] = (EXT_HL7V2_SEGMENT,)

# ICD code ranges -> (ActCode sensitivity, why). Ranges compare the code's first three
# characters (the category), inclusive. One match makes the resource R (restricted).
SENSITIVE_RANGES: dict[str, tuple[tuple[str, str, str], ...]] = {
    ICD10CM: (
        ("B20", "B20", "HIV"),  # HIV disease
        ("Z21", "Z21", "HIV"),  # asymptomatic HIV infection status
        ("R75", "R75", "HIV"),  # inconclusive laboratory evidence of HIV
        # Substance use disorders (42 CFR Part 2), tobacco (F17) excluded as Part 2 excludes it.
        ("F10", "F16", "ETH"),
        ("F18", "F19", "ETH"),
        ("F20", "F48", "PSY"),  # schizophrenia, mood, anxiety and other non-psychotic disorders
        ("F50", "F50", "PSY"),  # eating disorders
        ("F60", "F69", "PSY"),  # personality disorders
        ("A50", "A64", "STD"),  # infections with a predominantly sexual mode of transmission
        ("T74", "T74", "SDV"),  # adult and child abuse, confirmed
        ("T76", "T76", "SDV"),  # adult and child abuse, suspected
        ("Z30", "Z30", "SEX"),  # contraceptive management
        ("O04", "O04", "SEX"),  # complications following termination of pregnancy
    ),
    ICD9CM: (
        ("042", "042", "HIV"),
        ("V08", "V08", "HIV"),
        ("291", "292", "ETH"),
        ("303", "304", "ETH"),
        ("305", "305", "ETH"),  # nondependent abuse (305.1 tobacco is included: coarse, on purpose)
        ("295", "302", "PSY"),
        ("306", "316", "PSY"),
        ("090", "099", "STD"),
    ),
}
_RESTRICTED = {"HIV", "ETH", "PSY", "STD", "SDV", "SEX"}
_SENSITIVITY_DISPLAY = {
    "HIV": "HIV/AIDS information sensitivity", "ETH": "substance abuse information sensitivity",
    "PSY": "psychiatry disorder information sensitivity",
    "STD": "sexually transmitted disease information sensitivity",
    "SDV": "sexual assault, abuse, or domestic violence information sensitivity",
    "SEX": "sexuality and reproductive health information sensitivity",
}
_CONF_DISPLAY = {"N": "normal", "R": "restricted"}
# Where codings that can carry a diagnosis live, per resource type (top-level elements).
_CODED = ("code", "valueCodeableConcept", "reasonCode", "reason", "conclusionCode")

_CHOICE_PREFIXES: dict[str, list[tuple[str, str]]] = {}  # type -> [(path, key or prefix)]


def _compiled(resource_type: str) -> list[tuple[str, str]]:
    found = _CHOICE_PREFIXES.get(resource_type)
    if found is None:
        found = [(p, p.split(".", 1)[1].removesuffix("[x]"))
                 for p in PHI_PATHS.get(resource_type, ()) if "extension(" not in p]
        _CHOICE_PREFIXES[resource_type] = found
    return found


_PATHS_SEEN: dict[tuple, tuple[str, ...]] = {}  # (type, element names, extension urls) -> paths
_PATHS_LIMIT = 10_000


def phi_paths(resource: dict) -> list[str]:
    """The declared PHI paths present in ``resource`` (in table order).

    They follow from the resource type, its element names and its extension URLs only, so the
    answer is remembered by those (a mapping emits few such combinations).
    """
    rt = resource["resourceType"]
    extensions = resource.get("extension")
    k = (rt, tuple(resource), tuple([e.get("url") for e in extensions]) if extensions else ())
    found = _PATHS_SEEN.get(k)
    if found is None:
        found = tuple(_phi_paths(resource))
        if len(_PATHS_SEEN) >= _PATHS_LIMIT:
            _PATHS_SEEN.clear()
        _PATHS_SEEN[k] = found
    return list(found)


def _phi_paths(resource: dict) -> list[str]:
    rt = resource["resourceType"]
    out = []
    for path, element in _compiled(rt):
        if path.endswith("[x]"):
            if any(k.startswith(element) for k in resource):
                out.append(path)
        elif element in resource:
            out.append(path)
    extensions = resource.get("extension")
    if extensions:
        urls = {e.get("url") for e in extensions}
        for path in PHI_PATHS.get(rt, ()):
            if "extension(" in path and path.split("'")[1] in urls:
                out.append(path)
        for url in PHI_EXTENSIONS:
            if url in urls:
                out.append(f"{rt}.extension('{url}')")
    return out


def sensitivity(resource: dict) -> list[str]:
    """ActCode sensitivity codes implied by the ICD codings in ``resource`` (sorted, unique)."""
    found: set[str] = set()
    for element in _CODED:
        value = resource.get(element)
        if value is not None:
            for concept in value if isinstance(value, list) else (value,):
                if isinstance(concept, dict):
                    _concept(concept, found)
    for diagnosis in resource.get("diagnosis") or ():  # Claim.diagnosis[].diagnosisCodeableConcept
        if isinstance(diagnosis, dict) and isinstance(diagnosis.get("diagnosisCodeableConcept"), dict):
            _concept(diagnosis["diagnosisCodeableConcept"], found)
    return sorted(found) if found else []


def _concept(concept: dict, found: set[str]) -> None:
    """The codings of a CodeableConcept (or of a CodeableReference-like {concept: ...})."""
    codings = concept.get("coding")
    if codings is None and isinstance(concept.get("concept"), dict):
        codings = concept["concept"].get("coding")
    for coding in codings or ():
        ranges = SENSITIVE_RANGES.get(coding.get("system")) if isinstance(coding, dict) else None
        code = coding.get("code") if ranges is not None else None
        if isinstance(code, str):
            category = code.upper()[:3]
            for low, high, label in ranges:  # type: ignore[union-attr]
                if low <= category <= high:
                    found.add(label)


def security_labels(resource: dict) -> list[str]:
    """Set ``resource.meta.security`` (confidentiality + sensitivity) and return the codes."""
    labels = sensitivity(resource)
    if not labels:  # the usual case
        security = [{"system": CONFIDENTIALITY, "code": "N", "display": "normal"}]
        conf = "N"
    else:
        conf = "R" if _RESTRICTED.intersection(labels) else "N"
        security = [{"system": CONFIDENTIALITY, "code": conf, "display": _CONF_DISPLAY[conf]}]
        security += [{"system": ACT_CODE, "code": c, "display": _SENSITIVITY_DISPLAY[c]} for c in labels]
    resource.setdefault("meta", {})["security"] = security
    return [conf, *labels]
