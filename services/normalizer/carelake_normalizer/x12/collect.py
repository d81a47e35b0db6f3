"""The resources and rejected parts of one claim record (or of a whole file), and how they finish.

``finish()`` finishes them as every mapping does (finish.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, tzinfo

from carelake_normalizer.core import MapResult, PartError, PartRejected
from carelake_normalizer.finish import Built, finish_resources
from carelake_normalizer.ids import key, resource_id


class _Pending:
    __slots__ = ("resource", "rt", "id", "patient_key", "event_time", "label", "position")

    def __init__(self, resource: dict, patient_key: str | None, event_time: datetime | None, label: str,
                 position: int | None) -> None:
        self.resource, self.rt, self.id = resource, resource["resourceType"], resource["id"]
        self.patient_key, self.event_time, self.label, self.position = patient_key, event_time, label, position


class Collector:
    """What one record (or one whole file) maps to, before finishing."""

    __slots__ = ("source", "tz", "zone", "raw_id", "pending", "rejected", "unused", "meta", "ids")

    def __init__(self, source: str, tz: tzinfo, raw_id: str) -> None:
        self.source, self.tz, self.raw_id = source, tz, raw_id
        self.zone: str = getattr(tz, "key", None) or str(tz)
        self.pending: list[_Pending] = []
        self.rejected: list[PartRejected] = []
        self.unused: Counter[str] = Counter()
        self.meta: dict = {}
        self.ids: set[tuple[str, str]] = set()  # (type, id) emitted: a whole file emits each resource once

    def rid(self, resource_type: str, *parts: str | None) -> str:
        return resource_id(self.source, resource_type, key(*parts))

    def emit(self, resource: dict, *, patient_key: str | None, event_time: datetime | None, label: str,
             position: int | None) -> None:
        k = (resource["resourceType"], resource["id"])
        if k in self.ids:
            return
        self.ids.add(k)
        self.pending.append(_Pending(resource, patient_key, event_time, label, position))

    def reject(self, exc: PartError, position: int | None, resource_type: str | None) -> None:
        self.rejected.append(PartRejected(exc.reason_code, exc.reason, exc.where, position, resource_type))

    def finish(self, terminology: Callable[[dict], object] | None) -> MapResult:
        resources = finish_resources((Built(p.resource, p.rt, p.id, p.patient_key, p.event_time, p.label, p.position)
                                      for p in self.pending), self.raw_id, terminology, self.rejected)
        self.meta["tz"] = self.zone
        self.meta["fields_unused"] = sum(self.unused.values())
        return MapResult(resources, self.rejected, self.unused, self.meta)
