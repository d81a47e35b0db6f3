"""Survivorship: the golden record of one enterprise person from its linked source records. Pure.

Each group of fields is decided by a declared rule (``RULES``): the fields of a group always come
from one record together (a street never pairs with another record's city), and the rule orders
the records that have the group's primary field by its criteria, best first:

* ``trust`` — the source's place in ``SOURCE_TRUST`` (a source not listed ranks after all of them);
* ``recent`` — the latest ``asserted_at`` (or, when the source asserted none, when the index received
  the record);
* ``complete`` — most of the group's fields present, then the longest values.

Identity fields (name, birth date, sex, SSN) trust the source first; contact fields (address,
phone) take the most recent first, since people move and change numbers and every source hears
of it at a different time. Ties end on the record key, so the result never depends on input order.
``other_names`` is the union of every record's other names and of names that lost to the golden one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from carelake_dedup_mpi.person import PersonRecord

# Most trusted first: registration desks and payers verify identity; feeds further down copy it.
SOURCE_TRUST: tuple[str, ...] = ("ehr", "billing", "claims", "lab", "pharmacy", "scheduling",
                                 "public_health", "wearables")

Criterion = Literal["trust", "recent", "complete"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One group of fields taken together from the best record; ``fields[0]`` must be present."""

    fields: tuple[str, ...]
    order: tuple[Criterion, ...]


IDENTITY: tuple[Criterion, ...] = ("trust", "recent", "complete")
CONTACT: tuple[Criterion, ...] = ("recent", "trust", "complete")

RULES: tuple[Rule, ...] = (
    Rule(("family", "given", "middle"), IDENTITY),
    Rule(("birth_date",), IDENTITY),
    Rule(("sex",), IDENTITY),
    Rule(("ssn",), IDENTITY),
    Rule(("address_line", "city", "state", "postal_code"), CONTACT),
    Rule(("phone",), CONTACT),
)

_UNKNOWN_SEX = {"U", ""}


def _trust(source: str) -> int:
    try:
        return SOURCE_TRUST.index(source)
    except ValueError:
        return len(SOURCE_TRUST)


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _present(record: PersonRecord, name: str) -> bool:
    value = getattr(record, name)
    if name == "sex":
        return value is not None and value not in _UNKNOWN_SEX
    return value not in (None, "")


def _sort_key(record: PersonRecord, trust: int, recency: tuple, rule: Rule) -> tuple:
    parts: list[Any] = []
    for criterion in rule.order:
        if criterion == "trust":
            parts.append(trust)
        elif criterion == "recent":
            parts.append(recency)
        else:
            present = [getattr(record, f) for f in rule.fields if _present(record, f)]
            parts.append((-len(present), -sum(len(str(v)) for v in present)))
    parts.append(record.record_key)
    return tuple(parts)


def golden(records: Sequence[tuple[PersonRecord, str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The golden demographics of one person and, per field, the record_key it came from.

    ``records`` are (record, received_at) pairs — received_at (ISO-8601 UTC) stands in for
    ``asserted_at`` when the source asserted none. The demographics have PersonRecord.to_json's
    field names and formats (minus record_key, source and asserted_at); a field no record has is
    absent. ``sources["other_names"]`` lists every record key that contributed one.
    """
    out: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    ranks: dict[int, tuple[int, tuple]] = {}  # per record (by position): trust, recency (newest first)
    for rule in RULES:
        having = [i for i, (r, _) in enumerate(records) if _present(r, rule.fields[0])]
        if not having:
            continue
        if len(having) > 1:
            for i in having:
                if i not in ranks:
                    r, received_at = records[i]
                    stamp = _instant(r.asserted_at) or _instant(received_at)
                    ranks[i] = (_trust(r.source), (0, -stamp.timestamp()) if stamp else (1, 0.0))
            best = records[min(having, key=lambda i: _sort_key(records[i][0], *ranks[i], rule))][0]
        else:
            best = records[having[0]][0]
        for name in rule.fields:
            if _present(best, name):
                value = getattr(best, name)
                out[name] = value.isoformat() if name == "birth_date" else value
                sources[name] = best.record_key
    names: dict[str, set[str]] = {}
    for record, _ in records:
        for name in record.other_names:
            names.setdefault(name, set()).add(record.record_key)
        for name, field in ((record.family, "family"), (record.given, "given")):
            if name and name != out.get(field):
                names.setdefault(name, set()).add(record.record_key)
    for name in (out.get("family"), out.get("given")):
        names.pop(name, None)
    if names:
        out["other_names"] = sorted(names)
        sources["other_names"] = sorted({key for keys in names.values() for key in keys})
    return out, sources
