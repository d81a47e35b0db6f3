"""Finishing mapped resources, the same for every format: one order, one place.

meta.source (the raw message) → terminology pass (codes first: labels are read from them, and
the codings it adds are validated too) → security labels → validation (a failing resource becomes
a PartRejected, the others flow) → PHI paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import NamedTuple
from urllib.parse import quote

from carelake_normalizer.core import Mapped, PartRejected
from carelake_normalizer.phi import phi_paths, security_labels
from carelake_normalizer.validate import check


class Built(NamedTuple):
    """A resource a mapping built, with what its envelope and a rejection need."""

    resource: dict
    resource_type: str
    id: str
    patient_key: str | None
    event_time: datetime | None
    label: str  # where it came from, e.g. "PID" or "2300 CLM", for a rejection's reason
    position: int | None


def finish_resources(built: Iterable[Built], raw_id: str | None,
                     terminology: Callable[[dict], object] | None,
                     rejected: list[PartRejected]) -> list[Mapped]:
    """The valid resources as Mapped; each invalid one appended to ``rejected``."""
    source_uri = f"urn:carelake:raw:{quote(raw_id, safe='')}" if raw_id else None
    resources: list[Mapped] = []
    for b in built:
        res = b.resource
        if source_uri:
            res.setdefault("meta", {})["source"] = source_uri
        if terminology is not None:
            terminology(res)
        labels = security_labels(res)
        bad, plain = check(res)
        if bad is not None:
            rejected.append(PartRejected(bad.reason_code, f"{b.label}: {bad.reason}", bad.where, b.position,
                                         b.resource_type))
            continue
        resources.append(Mapped(res, b.resource_type, b.id, b.patient_key, b.event_time, phi_paths(res), labels,
                                plain))
    return resources
