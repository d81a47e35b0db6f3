"""Structural validation of every resource through the fhir.resources models.

fhir.resources 8 ships FHIR R5 at its top level (``fhir.resources.patient``) and the R4B release
(4.3.0) as ``fhir.resources.R4B``; there is no plain-R4 package any more. R4B is the R4-compatible
release (same resources and elements for everything mapped here: Patient, Encounter, Condition,
Coverage, RelatedPerson, Observation, DiagnosticReport, Immunization, Appointment, ChargeItem,
MedicationRequest), so Silver resources are validated against R4B and declared as 4.0.1 (R4).

What the models check: element names (extra elements forbidden), cardinality, primitive formats
(id, code, uri, date, dateTime, instant, decimal), choice-type exclusivity and required
elements. What they do not check: value-set bindings (e.g. Observation.status is only checked to
be a code) — the mappings emit binding values from their own tables.

Cost: the fhir.resources validators are Python (fhir_core's model validators run for every
nested element), ~80-300 µs per resource as mapped here. To spend that less often without
validating less, complex elements are validated on their own with their own model and the
validated instance is remembered by value (``repr`` of the element): a resource whose
``code``, ``category``, ``subject`` or ``meta`` was seen before reuses the instance, which
pydantic accepts without re-validating. An element is valid or not independently of the
resource it sits in (the parent's own checks — required elements, choice types, unknown
elements — still run on every resource), so the outcome is the same as a whole validation;
on any error the whole resource is validated again, uncached, for the exact path and message.
"""

from __future__ import annotations

import importlib
import typing
from typing import Any

from pydantic import ValidationError

from carelake_normalizer.core import PartRejected

_MODELS: dict[str, Any] = {}
_PLANS: dict[str, dict[str, tuple[bool, Any]]] = {}  # type -> JSON name -> (is list, element model)
_MEMO: dict[tuple[Any, str], Any] = {}  # (element model, repr of the value) -> validated instance
MEMO_LIMIT = 50_000  # entries; the memo is dropped whole when full (cheap, and rare)


def model_of(resource_type: str) -> Any:
    """The fhir.resources R4B model class of a resource type (imported once)."""
    model = _MODELS.get(resource_type)
    if model is None:
        if not resource_type.isalpha():
            raise KeyError(resource_type)
        module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
        model = getattr(module, resource_type)
        _MODELS[resource_type] = model
    return model


def _element_model(annotation: Any) -> tuple[bool, Any] | None:
    """(is a list, FHIR element model) of a field annotation, None for primitives."""
    if isinstance(annotation, type) and hasattr(annotation, "get_model_klass"):
        return False, annotation.get_model_klass()
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (list, typing.List):  # noqa: UP006
        found = _element_model(args[0]) if args else None
        return (True, found[1]) if found else None
    for arg in args:
        found = _element_model(arg)
        if found:
            return found
    return None


def _plan(resource_type: str, model: Any) -> dict[str, tuple[bool, Any]]:
    plan = _PLANS.get(resource_type)
    if plan is None:
        plan = {}
        for name, info in model.model_fields.items():
            found = _element_model(info.annotation)
            if found is not None and not name.endswith("__ext") and found[1].__name__ != "Resource":
                plan[info.alias or name] = found
        _PLANS[resource_type] = plan
    return plan


def _memoized(klass: Any, value: Any) -> Any:
    if not isinstance(value, dict):
        return value  # let the parent's validation say what is wrong with it
    k = (klass, repr(value))
    found = _MEMO.get(k)
    if found is None:
        found = klass.model_validate(value)
        if len(_MEMO) >= MEMO_LIMIT:
            _MEMO.clear()
        _MEMO[k] = found
    return found


def validate(resource: dict, memo: bool = True) -> PartRejected | None:
    """None if ``resource`` is structurally valid FHIR R4(B), else why, with the element path."""
    rt = resource.get("resourceType")
    try:
        model = model_of(rt)  # type: ignore[arg-type]
    except (KeyError, ImportError, AttributeError, TypeError):
        return PartRejected("invalid_resource", f"unknown resource type {rt!r}", str(rt), None, None)
    if memo:
        try:
            plan = _plan(rt, model)
            data = dict(resource)
            for name, value in resource.items():
                found = plan.get(name)
                if found is not None:
                    if found[0] and isinstance(value, list):
                        data[name] = [_memoized(found[1], v) for v in value]
                    else:
                        data[name] = _memoized(found[1], value)
            model.model_validate(data)
            return None
        except (ValidationError, ValueError, TypeError):
            pass  # validate again, whole and uncached, for the exact element path and message
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        paths = [_path(rt, e["loc"]) for e in errors]
        reason = "; ".join(f"{p}: {_message(e)}" for p, e in zip(paths, errors[:3], strict=False))
        if len(errors) > 3:
            reason += f"; and {len(errors) - 3} more"
        return PartRejected("invalid_resource", reason, paths[0] if paths else rt, None, rt)
    except (ValueError, TypeError) as exc:  # a validator raising outside pydantic's wrapping
        return PartRejected("invalid_resource", f"{type(exc).__name__}: {exc}"[:300], rt, None, rt)
    return None if not memo else _memo_disagrees(rt)


def _memo_disagrees(rt: str) -> PartRejected:
    # The element-wise validation failed but the whole one passed: never expected, never hidden.
    return PartRejected("invalid_resource", "element-wise and whole validation disagree", str(rt), None, rt)


def _path(resource_type: str, loc: tuple) -> str:
    out = resource_type
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _message(error: dict) -> str:
    # pydantic messages name the rule, not the value; keep them short.
    return str(error.get("msg", "invalid"))[:200]
