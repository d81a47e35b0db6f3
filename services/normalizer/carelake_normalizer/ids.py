"""Deterministic FHIR resource ids, so a replay or a re-send yields the same ids.

The id is a hash of (source, resource type, source id); the source id is chosen per resource so
the same real-world fact keeps its id across updates (an A08 gives the A01's Patient and
Encounter ids). The id is a plain SHA-256: MRNs have little entropy, so an id does not hide which
MRN it came from from someone who can enumerate MRNs; treat ids as PHI-adjacent.
"""

from __future__ import annotations

import hashlib

ID_LENGTH = 40  # hex chars of SHA-256: 160 bits, within FHIR's [A-Za-z0-9-.]{1,64}


_SEEN: dict[str, str] = {}  # "source|type|source_id" -> id: a message names its patient many times
_SEEN_LIMIT = 50_000


def resource_id(source: str, resource_type: str, source_id: str) -> str:
    """sha256("source|type|source_id") as 40 hex characters: a legal FHIR id."""
    text = f"{source}|{resource_type}|{source_id}"
    found = _SEEN.get(text)
    if found is None:
        found = hashlib.sha256(text.encode("utf-8")).hexdigest()[:ID_LENGTH]
        if len(_SEEN) >= _SEEN_LIMIT:
            _SEEN.clear()
        _SEEN[text] = found
    return found


def key(*parts: str | None) -> str:
    """Join the parts of a source id unambiguously ("|" inside a part is escaped)."""
    out = [p or "" for p in parts]
    text = "|".join(out)
    if "\\" not in text and text.count("|") == len(out) - 1:  # no part holds "|" or "\\": nothing to escape
        return text
    return "|".join(p.replace("\\", "\\\\").replace("|", "\\|") for p in out)
