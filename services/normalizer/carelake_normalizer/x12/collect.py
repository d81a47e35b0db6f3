"""The resources and rejected parts of one claim record (or of a whole file), and how they finish.

``finish()`` runs, per resource and in the HL7 mappings' order (hl7v2/context.py): meta.source →
the terminology pass → security labels (read from the codes) → FHIR validation → PHI paths.

Two things phi.py does not do yet for claims, done here until it does (see PENDING_PHI_PATHS and
``labels``): PHI paths of Claim and ClaimResponse (phi.PHI_PATHS has no entry for them), and the
sensitivity of a Claim's diagnoses (phi.sensitivity reads ``code``/``reasonCode``/..., not
``diagnosis[].diagnosisCodeableConcept``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, tzinfo
from urllib.parse import quote

from carelake_normalizer.core import Mapped, MapResult, PartError, PartRejected
from carelake_normalizer.ids import key, resource_id
from carelake_normalizer.phi import PHI_PATHS, phi_paths, security_labels
from carelake_normalizer.validate import validate

# PHI elements of the claim resources (HIPAA Safe Harbor: account and claim numbers, dates tied
# to the person's care except the year, anything that may quote them). Top-level elements, as
# phi.PHI_PATHS lists them; an element holding a PHI sub-element (Claim.item: servicedDate) is
# listed whole. To move into phi.PHI_PATHS; entries phi.py has win.
PENDING_PHI_PATHS: dict[str, tuple[str, ...]] = {
    "Claim": ("Claim.identifier", "Claim.billablePeriod", "Claim.created", "Claim.related",
              "Claim.supportingInfo", "Claim.item", "Claim.contained", "Claim.text"),
    "ClaimResponse": ("ClaimResponse.identifier", "ClaimResponse.created", "ClaimResponse.request",
                      "ClaimResponse.payment", "ClaimResponse.processNote",
                      "ClaimResponse.text"),
}


def x12_phi_paths(resource: dict) -> list[str]:
    rt = resource["resourceType"]
    found = phi_paths(resource)
    if rt in PHI_PATHS:
        return found
    extra = PENDING_PHI_PATHS.get(rt)
    if extra:
        found += [p for p in extra if p.split(".", 1)[1] in resource]
    return found


def labels(resource: dict) -> list[str]:
    """security_labels, with a Claim's diagnosis codes counted as the codes they are."""
    diagnosis = resource.get("diagnosis") if resource["resourceType"] == "Claim" else None
    if not diagnosis:
        return security_labels(resource)
    shim = {"resourceType": "Claim",
            "reasonCode": [d["diagnosisCodeableConcept"] for d in diagnosis if "diagnosisCodeableConcept" in d]}
    found = security_labels(shim)
    resource.setdefault("meta", {})["security"] = shim["meta"]["security"]
    return found


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
        source_uri = f"urn:carelake:raw:{quote(self.raw_id, safe='')}" if self.raw_id else None
        resources: list[Mapped] = []
        for p in self.pending:
            res = p.resource
            if source_uri:
                res.setdefault("meta", {})["source"] = source_uri
            if terminology is not None:
                terminology(res)  # codes first: the labels are read from them, added codings validated
            found = labels(res)
            bad = validate(res)
            if bad is not None:
                self.rejected.append(PartRejected(bad.reason_code, f"{p.label}: {bad.reason}", bad.where,
                                                  p.position, p.rt))
                continue
            resources.append(Mapped(res, p.rt, p.id, p.patient_key, p.event_time, x12_phi_paths(res), found))
        self.meta["tz"] = self.zone
        self.meta["fields_unused"] = sum(self.unused.values())
        return MapResult(resources, self.rejected, self.unused, self.meta)
