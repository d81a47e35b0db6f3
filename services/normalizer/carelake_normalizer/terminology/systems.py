"""Code-system URIs and the format checks that need no code list.

Canonical FHIR system URIs (HL7 Terminology, https://terminology.hl7.org/external_terminologies.html):
ICD-10-CM, ICD-9-CM, NDC, RxNorm, LOINC, CVX, CPT, HCPCS Level II. Local codes of a carelake source
use ``urn:carelake:local:<source>`` (the system a site's own codes -- HL7 v2 coding system ``L`` /
``99zzz`` -- are given when the normalizer turns them into FHIR).
"""

from __future__ import annotations

import re
from collections.abc import Callable

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
NDC = "http://hl7.org/fhir/sid/ndc"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
CVX = "http://hl7.org/fhir/sid/cvx"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
LOCAL_PREFIX = "urn:carelake:local:"

# The extension marking a coding this package added (FHIR allows extensions on every Element,
# Coding included); valueString is "<original system>|<original code>|<map name>@<map version>".
NORMALIZED_FROM = "https://carelake.dev/fhir/StructureDefinition/normalized-from"


# The same code systems named by their HL7 OIDs (as some HL7 v2 and CDA senders name them); the pass
# treats a coding under an OID like one under the canonical URI, and flags it under the canonical one.
ALIASES = {
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.103": ICD9CM,  # ICD-9-CM diagnoses (6.104: procedures)
    "urn:oid:2.16.840.1.113883.6.69": NDC,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "urn:oid:2.16.840.1.113883.12.292": CVX,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
    "urn:oid:2.16.840.1.113883.6.285": HCPCS,  # HCPCS Level II
    "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": HCPCS,
}


def local_system(source: str) -> str:
    """The system URI of ``source``'s own local codes, e.g. ``urn:carelake:local:lab``."""
    return LOCAL_PREFIX + source


def local_root(system: str) -> str:
    """``urn:carelake:local:<source>`` of a local system that names a table after the source
    (``urn:carelake:local:lab:L`` -> ``urn:carelake:local:lab``); other systems unchanged."""
    if not system.startswith(LOCAL_PREFIX):
        return system
    cut = system.find(":", len(LOCAL_PREFIX))
    return system if cut < 0 else system[:cut]


# ---- shapes -----------------------------------------------------------------------------------

# ICD-10-CM: letter, digit, digit-or-letter, then up to 4 more characters after an optional dot
# (the dot, when present, comes after the third character). U codes (U07.1, U09.9) are valid.
ICD10CM_SHAPE = re.compile(r"^[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?$")
# ICD-9-CM diagnoses: 001-999 with up to two decimals, V01-V91 with up to two, E000-E999 with one.
ICD9CM_SHAPE = re.compile(r"^(?:[0-9]{3}(?:\.?[0-9]{1,2})?|V[0-9]{2}(?:\.?[0-9]{1,2})?|E[0-9]{3}(?:\.?[0-9])?)$")
LOINC_SHAPE = re.compile(r"^[0-9]{1,7}-[0-9]$")
RXCUI_SHAPE = re.compile(r"^[0-9]{1,8}$")
CVX_SHAPE = re.compile(r"^[0-9]{1,3}$")
CPT_SHAPE = re.compile(r"^[0-9]{4}[0-9FTU]$")  # category I; II ends F, III ends T, PLA ends U
HCPCS_LEVEL2_SHAPE = re.compile(r"^[A-V][0-9]{4}$")
_DIGITS = re.compile(r"^[0-9]+$")


def _luhn_sum(digits: str) -> int:
    """Luhn sum with every second digit doubled, starting from the rightmost."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total


def loinc_check_digit(number: str) -> int:
    """LOINC's mod-10 check digit of the part before the hyphen (LOINC Users' Guide, appendix:
    double the odd-position digits counted from the right, sum all digits of the results and of the
    even-position digits, subtract from the next multiple of ten) -- the Luhn check digit."""
    return (10 - _luhn_sum(number) % 10) % 10


def loinc_ok(code: str) -> bool:
    """``code`` is shaped ``N{1,7}-N`` and its check digit is right."""
    if not LOINC_SHAPE.match(code):
        return False
    number, check = code.split("-")
    return loinc_check_digit(number) == int(check)


def icd10cm_key(code: str) -> str | None:
    """The undotted upper-case form of a well-shaped ICD-10-CM code, else None."""
    c = code.strip().upper()
    if not ICD10CM_SHAPE.match(c):
        return None
    return c.replace(".", "")


def icd9cm_key(code: str) -> str | None:
    """The undotted form of a well-shaped ICD-9-CM diagnosis code, else None."""
    c = code.strip().upper()
    if not ICD9CM_SHAPE.match(c):
        return None
    return c.replace(".", "")


def icd9cm_dotted(key: str) -> str:
    """Dot an undotted ICD-9-CM diagnosis code (E codes after 4 characters, others after 3)."""
    at = 4 if key.startswith("E") else 3
    return key if len(key) <= at else f"{key[:at]}.{key[at:]}"


def ndc11_candidates(code: str) -> tuple[str, ...]:
    """The HIPAA 11-digit (5-4-2) forms an NDC as written can stand for.

    Hyphenated 10-digit NDCs are unambiguous: 4-4-2 pads the labeler, 5-3-2 the product, 5-4-1 the
    package, each with a leading zero; 5-4-2 is already 11 digits. 11 bare digits are themselves. 10
    bare digits could be any of the three, so all three are returned and the caller disambiguates
    with a code list. Anything else is not an NDC: ``()``.
    """
    c = code.strip()
    if "-" in c:
        parts = c.split("-")
        if len(parts) != 3 or not all(_DIGITS.match(p) for p in parts):
            return ()
        a, b, p = parts
        shape = (len(a), len(b), len(p))
        if shape == (4, 4, 2):
            return ("0" + a + b + p,)
        if shape == (5, 3, 2):
            return (a + "0" + b + p,)
        if shape == (5, 4, 1):
            return (a + b + "0" + p,)
        if shape == (5, 4, 2):
            return (a + b + p,)
        return ()
    if not _DIGITS.match(c):
        return ()
    if len(c) == 11:
        return (c,)
    if len(c) == 10:
        return ("0" + c, c[:5] + "0" + c[5:], c[:9] + "0" + c[9:])
    return ()


def ndc11(code: str, known: Callable[[str], bool] | None = None) -> str | None:
    """The 11-digit NDC ``code`` is, or None when it is no NDC or is ambiguous.

    A bare 10-digit NDC is resolved only when exactly one of its three readings is ``known``.
    """
    cands = ndc11_candidates(code)
    if len(cands) == 1:
        return cands[0]
    if not cands or known is None:
        return None
    hits = [c for c in cands if known(c)]
    return hits[0] if len(hits) == 1 else None


def procedure_system(code: str) -> str:
    """CPT for CPT-shaped codes, HCPCS for Level II codes (a letter and four digits)."""
    return HCPCS if HCPCS_LEVEL2_SHAPE.match(code) else CPT


def format_ok(system: str, code: str) -> bool:
    """The shape check of a target code of ``system`` (used by the curated-map data test)."""
    if system == LOINC:
        return loinc_ok(code)
    if system == RXNORM:
        return bool(RXCUI_SHAPE.match(code))
    if system == CPT:
        return bool(CPT_SHAPE.match(code))
    if system == HCPCS:
        return bool(HCPCS_LEVEL2_SHAPE.match(code) or CPT_SHAPE.match(code))
    if system == CVX:
        return bool(CVX_SHAPE.match(code))
    if system == NDC:
        return len(ndc11_candidates(code)) == 1 and len(code) == 11
    if system == ICD10CM:
        return icd10cm_key(code) is not None
    if system == ICD9CM:
        return icd9cm_key(code) is not None
    raise ValueError(f"no format check for {system}")
