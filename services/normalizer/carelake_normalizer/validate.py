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

Cost, and how it is spent less often without validating less (decision 0007). A model validation
runs Python for every element (fhir_core's before/after model validators and the wrap validator of
each complex element): ~80-350 µs a resource. But what a model checks splits into two parts:

* the **node checks** of each element (``reject_null_complex_elements``, required elements,
  choice types, unknown elements, the resourceType check of ``__init__``). They read only which
  keys an element has, which are null, lists or objects — its *shape* — never a primitive value;
* the **field checks**: each primitive value against its field's own core schema (regex, date,
  decimal...), each complex value against its element model — one value at a time.

So an element is valid exactly when its shape passes the node checks, each primitive value passes
its field's schema and each complex value is a valid element. ``validate`` establishes that:

1. a complex element seen before with the very same value (``repr``, per model) is valid;
2. else the element's shape is looked up: a shape not seen before is validated by the model on
   the element as it is (whole, so node and field checks both run), and remembered if it passes;
3. for a known shape each primitive value is checked with the field's own pydantic-core schema
   (taken from the model's core schema, so it is the very check the model runs), remembered per
   field and Python type; each complex value recursively, from 1.

Only passes are remembered; anything not established (a value or shape that fails, an element kind
this does not decompose, a validator that turns a value into null) falls back to the whole
resource's model validation, which also gives the exact element path of an error. A model class
is decomposed only if its validators are exactly fhir_core's base ones (checked at first use);
others are validated by their model (with the value memo). Memos are dropped whole when full.
"""

from __future__ import annotations

import importlib
import marshal
import typing
from math import isfinite as _finite
from typing import Any

from pydantic import ValidationError
from pydantic_core import SchemaValidator

from carelake_normalizer.core import PartRejected

# Memo sizes: each memo (per model, per field and Python type, shapes) is dropped whole when full
# (cheap, and rare), alone: a field of unique values (ids) filling up does not drop the others.
MEMO_LIMIT = 20_000  # element values per model, and shapes
LEAF_LIMIT = 10_000  # primitive values per field and Python type (cheap to check again)
STATS = {"fast": 0, "whole": 0}  # resources established by the memo path / by a whole validation

_MARSHAL_VERSION = 2
_dumps = marshal.dumps  # the memo key of an element value: exact (types included), ~2x faster than repr
_MODELS: dict[str, Any] = {}
_INFOS: dict[Any, _Info] = {}
_SHAPES: set[tuple] = set()

_PRIMITIVE, _ONE, _MANY = 1, 2, 3  # field kinds (anything else is not decomposed)
_SCALARS = frozenset({str, int, float, bool, type(None)})  # primitive values remembered (by type and value)


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


class _Field:
    """How one element (by its JSON name) of a model is checked."""

    __slots__ = ("kind", "klass", "info", "check", "seen")

    def __init__(self, kind: int, klass: Any = None, check: SchemaValidator | None = None) -> None:
        self.kind, self.klass, self.check = kind, klass, check
        self.info: _Info | None = None  # of ``klass``, on first use
        self.seen: dict[type, set] = {}  # Python type -> primitive values that passed ``check``

    def resolve(self) -> _Info:
        self.info = _info(self.klass)
        return self.info


class _Info:
    """A model's fields, and the complex values already known valid for it."""

    __slots__ = ("klass", "fields", "decomposed", "valid")

    def __init__(self, klass: Any) -> None:
        self.klass = klass
        self.fields: dict[str, _Field] = {}
        self.valid: set[bytes] = set()  # element values that passed (marshal.dumps, version 2)
        self.decomposed = _decomposable(klass)
        if self.decomposed:
            self.decomposed = self._compile()

    def _compile(self) -> bool:
        klass = self.klass
        model = _find(klass.__pydantic_core_schema__, lambda s: s.get("type") == "model" and s.get("cls") is klass)
        fields = _find(model, lambda s: s.get("type") == "model-fields") if model else None
        if fields is None:
            return False
        config = model.get("config")
        for name, info in klass.model_fields.items():
            element = _element_model(info.annotation)
            if name.endswith("__ext") or info.metadata:
                kind = _Field(0)  # primitive extensions (``_status``) and constrained fields: not decomposed
            elif element is not None:
                kind = _Field(_MANY if element[0] else _ONE, element[1]) if element[1].__name__ != "Resource" \
                    else _Field(0)
            else:
                try:
                    kind = _Field(_PRIMITIVE, check=SchemaValidator(fields["fields"][name]["schema"], config))
                except Exception:  # noqa: BLE001 - a schema that does not stand alone: not decomposed
                    kind = _Field(0)
            # by JSON name only: a field given by its Python name (populate_by_name) is not decomposed
            self.fields[info.alias or name] = kind
        return True


def _decomposable(klass: Any) -> bool:
    """Does ``klass`` validate with exactly fhir_core's base model validators (node checks by shape)?"""
    from fhir_core.fhirabstractmodel import FHIRAbstractModel as Base

    decorators = klass.__pydantic_decorators__
    if set(decorators.model_validators) != {"reject_null_complex_elements", "validate_after_model_construction"}:
        return False
    if decorators.field_validators or decorators.validators or decorators.root_validators:
        return False
    if any(getattr(klass, n) is not getattr(Base, n)
           for n in ("__init__", "_validate_one_of_many", "_validate_required_primitive_elements")):
        return False
    for name in ("reject_null_complex_elements", "validate_after_model_construction"):
        mine = decorators.model_validators[name].func
        base = Base.__pydantic_decorators__.model_validators[name].func
        if getattr(mine, "__func__", mine) is not getattr(base, "__func__", base):  # classmethods are bound
            return False
    return klass.model_config.get("extra") == "forbid"


def _find(schema: Any, pred: typing.Callable[[dict], bool]) -> dict | None:
    if isinstance(schema, dict):
        if pred(schema):
            return schema
        children: typing.Iterable[Any] = schema.values()
    elif isinstance(schema, list):
        children = schema
    else:
        return None
    for child in children:
        found = _find(child, pred)
        if found is not None:
            return found
    return None


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


def _info(klass: Any) -> _Info:
    info = _INFOS.get(klass)
    if info is None:
        info = _INFOS[klass] = _Info(klass)
    return info


def _remember(memo: set, k: Any, limit: int | None = None) -> None:
    if len(memo) >= (limit or MEMO_LIMIT):
        memo.clear()
    memo.add(k)


def clear_memo() -> None:
    """Forget every remembered value and shape (the model and field tables stay)."""
    _SHAPES.clear()
    for info in _INFOS.values():
        info.valid.clear()
        for f in info.fields.values():
            f.seen.clear()


def _primitive_ok(f: _Field, v: Any) -> bool:
    t = type(v)
    if t is list:
        if not all(type(x) is str for x in v):
            return all(_plain_scalar(x) for x in v) and _check(f, v)
        k: Any = tuple(v)
    elif t in _SCALARS:
        if t is float and not _finite(v):
            return False  # NaN and infinities: JSON cannot carry them (the whole validation decides)
        k = v
    else:
        return False  # not JSON data (an object, a datetime...): the whole validation decides
    seen = f.seen.get(t)
    if seen is not None and k in seen:
        return True
    if not _check(f, v):
        return False
    if seen is None:
        seen = f.seen[t] = set()
    _remember(seen, k, LEAF_LIMIT)
    return True


def _check(f: _Field, v: Any) -> bool:
    try:
        out = f.check.validate_python(v)  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - not established; the whole validation decides
        return False
    return (out is None) == (v is None)  # null-ness decides node checks: it must not change


def _element_ok(info: _Info, value: dict) -> bool:
    """Is ``value`` a valid element of ``info.klass`` (memo by value, else by shape and parts)."""
    try:
        k = _dumps(value, _MARSHAL_VERSION)
    except ValueError:  # not plain data (marshal cannot write it): validated, not remembered
        k = None
    return k in info.valid or _element_new(info, value, k)


def _element_new(info: _Info, value: dict, k: bytes | None) -> bool:
    """``_element_ok`` for a value not remembered (``k``: its memo key, None if it has none)."""
    if info.decomposed:
        ok = _node_ok(info, value)
    else:
        try:
            info.klass.model_validate(value)
            ok = _plain(value)
        except Exception:  # noqa: BLE001
            ok = False
    if ok and k is not None:
        _remember(info.valid, k)
    return ok


def _plain_scalar(v: Any) -> bool:
    t = type(v)
    return t in _SCALARS and (t is not float or _finite(v))


def _plain(value: Any) -> bool:
    """Only JSON data: dicts with str keys, lists, str, int, float (finite), bool, None; exact types."""
    t = type(value)
    if t is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if t is list:
        return all(_plain(v) for v in value)
    return _plain_scalar(value)


def _node_ok(info: _Info, value: dict) -> bool:
    """The shape of ``value`` known valid, and each of its values valid (see the module)."""
    fields = info.fields
    for k, v in value.items():
        f = fields.get(k)
        if f is None:
            if (k == "resourceType" or k == "resource_type") and type(v) is str:
                continue  # checked against the model by ``__init__``: its value is part of the shape
            return False  # an unknown element: the whole validation names it
        kind = f.kind
        if kind == _PRIMITIVE:
            t = type(v)
            seen = f.seen.get(t)
            if seen is not None and t is not list and v in seen:
                continue  # the usual case, inline
            if not _primitive_ok(f, v):
                return False
        elif kind == _ONE:
            if type(v) is dict:
                child = f.info or f.resolve()
                try:  # _element_ok, inline
                    k = _dumps(v, _MARSHAL_VERSION)
                except ValueError:
                    k = None
                if k not in child.valid and not _element_new(child, v, k):
                    return False
            elif v is not None:
                return False
        elif kind == _MANY:
            if type(v) is list:
                child = f.info or f.resolve()
                for item in v:
                    if type(item) is not dict or not _element_ok(child, item):
                        return False
            elif v is not None:
                return False
        else:
            return False
    # The shape: element names, the Python type of each value (null, list, object or which
    # primitive) and the resourceType given, if any. The node checks read nothing else.
    key = (info.klass, tuple(value), tuple(map(type, value.values())), value.get("resourceType"),
           value.get("resource_type"))
    if key in _SHAPES:
        return True
    try:  # a new shape: the model checks the element whole, once
        info.klass.model_validate(value)
    except Exception:  # noqa: BLE001
        return False
    _remember(_SHAPES, key)
    return True


def validate(resource: dict, memo: bool = True) -> PartRejected | None:
    """None if ``resource`` is structurally valid FHIR R4(B), else why, with the element path.

    ``memo=False``: the whole model validation only (what the memo path must agree with).
    """
    return check(resource, memo)[0]


def check(resource: dict, memo: bool = True) -> tuple[PartRejected | None, bool]:
    """``validate``, and whether the resource is known to hold only JSON data (dicts with str keys,
    lists, str, int, finite float, bool, None — exact types): true when the memo path established
    it valid, which only walks such data; the envelope may then use a faster JSON writer."""
    rt = resource.get("resourceType")
    try:
        model = model_of(rt)  # type: ignore[arg-type]
    except (KeyError, ImportError, AttributeError, TypeError):
        return PartRejected("invalid_resource", f"unknown resource type {rt!r}", str(rt), None, None), False
    if memo:
        info = _info(model)
        if info.decomposed and type(resource) is dict and _node_ok(info, resource):
            STATS["fast"] += 1
            return None, True
        STATS["whole"] += 1
    return _whole(rt, model, resource), False


def _whole(rt: str, model: Any, resource: dict) -> PartRejected | None:
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
    return None


def _path(resource_type: str, loc: tuple) -> str:
    out = resource_type
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _message(error: dict) -> str:
    # pydantic messages name the rule, not the value; keep them short.
    return str(error.get("msg", "invalid"))[:200]
