"""Small readers of FHIR R4 JSON: codings, references, times. Pure, no I/O.

Everything here tolerates missing or oddly shaped elements (returns ``None``/``""``) because a
Silver resource is valid FHIR but any optional element may be absent.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
CVX = "http://hl7.org/fhir/sid/cvx"
SSN = "http://hl7.org/fhir/sid/us-ssn"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"


def codings(concept: Any) -> list[dict]:
    """The codings of a CodeableConcept (or of a bare Coding), never None."""
    if not isinstance(concept, dict):
        return []
    if "coding" in concept:
        return [c for c in concept.get("coding") or () if isinstance(c, dict)]
    return [concept] if "code" in concept else []


def first_coding(concept: Any, system: str | None = None) -> dict:
    """The first coding (of ``system`` when given), else ``{}``."""
    for c in codings(concept):
        if system is None or c.get("system") == system:
            return c
    return {}


def code(concept: Any, system: str | None = None) -> str:
    return str(first_coding(concept, system).get("code") or "")


def display(concept: Any, system: str | None = None) -> str:
    """The coding's display, else the concept's text."""
    c = first_coding(concept, system)
    text = concept.get("text") if isinstance(concept, dict) else None
    return str(c.get("display") or text or "")


def concepts(items: Any) -> list[dict]:
    return [c for c in items or () if isinstance(c, dict)]


def ref(reference: Any) -> str:
    """A Reference's ``reference`` text ("Patient/abc"), else its identifier as system|value, else ''."""
    if not isinstance(reference, dict):
        return ""
    if reference.get("reference"):
        return str(reference["reference"])
    ident = reference.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        return f"{ident.get('system', '')}|{ident['value']}"
    return ""


def ref_display(reference: Any) -> str:
    """Who a Reference points at, for people: its display, else the reference text."""
    if not isinstance(reference, dict):
        return ""
    return str(reference.get("display") or ref(reference))


def instant(value: Any) -> datetime | None:
    """A FHIR date/dateTime/instant as an aware UTC datetime (partial dates: their first moment).

    A dateTime without an offset is read as UTC (Silver normalizes times to UTC already).
    """
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    try:
        if len(text) == 4:
            return datetime(int(text), 1, 1, tzinfo=UTC)
        if len(text) == 7:
            return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
        if len(text) == 10:
            return datetime(int(text[:4]), int(text[5:7]), int(text[8:10]), tzinfo=UTC)
        parsed = datetime.fromisoformat(text)  # Python 3.11 reads a trailing Z
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def day(value: Any) -> date | None:
    """A FHIR date (or the date part of a dateTime) as a date; partial dates: their first day."""
    moment = instant(value[:10] if isinstance(value, str) else value)
    return moment.date() if moment else None


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def quantity(q: Any) -> tuple[float | None, str]:
    """(value, unit) of a Quantity."""
    if not isinstance(q, dict):
        return None, ""
    return number(q.get("value")), str(q.get("unit") or q.get("code") or "")


def money(m: Any) -> float | None:
    return number(m.get("value")) if isinstance(m, dict) else None


def extension(resource: dict, url: str) -> dict | None:
    for ext in resource.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == url:
            return ext
    return None


def us_core_text(resource: dict, name: str) -> str:
    """The text (else first ombCategory display) of a US Core race/ethnicity extension."""
    ext = extension(resource, US_CORE + name)
    if not ext:
        return ""
    parts = {e.get("url"): e for e in ext.get("extension") or () if isinstance(e, dict)}
    if "text" in parts:
        return str(parts["text"].get("valueString") or "")
    return str((parts.get("ombCategory") or {}).get("valueCoding", {}).get("display") or "")


def effective(resource: dict, prefix: str) -> datetime | None:
    """``<prefix>DateTime`` / ``<prefix>Instant`` / ``<prefix>Period.start`` / ``<prefix>Date``."""
    for suffix in ("DateTime", "Instant", "Date"):
        if f"{prefix}{suffix}" in resource:
            return instant(resource[f"{prefix}{suffix}"])
    period = resource.get(f"{prefix}Period")
    if isinstance(period, dict):
        return instant(period.get("start"))
    return None
