"""The validation memo (validate.py) may only save time: whatever it remembered from valid
resources, an invalid resource is still caught, with the same element path and message as a
whole model validation, and the fast JSON writer is only allowed for plain JSON data."""

from __future__ import annotations

import copy
import datetime
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from carelake_normalizer import validate as validation
from carelake_normalizer.core import Mapped
from carelake_normalizer.envelope import _dumps, resource_json

OBS = {"resourceType": "Observation", "id": "o1", "status": "final",
       "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                 "code": "vital-signs"}]}],
       "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
       "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-01-15T14:05:30Z",
       "issued": "2026-01-15T14:05:30Z", "valueQuantity": {"value": 62, "unit": "/min"},
       "meta": {"source": "urn:carelake:raw:r1",
                "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                              "code": "N", "display": "normal"}]}}


SAME = "same verdict as the whole validation, valid or not"


def _same_verdict(resource: dict) -> Any:
    fast, plain = validation.check(resource)
    whole = validation.validate(resource, memo=False)
    assert (fast is None) == (whole is None), (fast, whole)
    if fast is not None:
        assert (fast.where, fast.reason) == (whole.where, whole.reason)
        assert not plain
    return fast


def _changed(path: tuple, value: Any) -> dict:
    res = copy.deepcopy(OBS)
    node: Any = res
    for part in path[:-1]:
        node = node[part]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return res


@pytest.mark.parametrize(("path", "value", "where"), [
    (("effectiveDateTime",), "2026-02-30T00:00:00Z", "Observation.effectiveDateTime"),  # a leaf, known shape
    (("id",), "not valid!", "Observation.id"),
    (("valueQuantity", "value"), "sixty-two", "Observation.valueQuantity.value"),
    (("valueQuantity", "value"), "62", SAME),  # a number's type changed: whatever the model says
    (("valueQuantity", "value"), True, SAME),
    (("code", "coding", 0, "code"), "has space ", "Observation.code.coding[0].code"),  # inside a memoized coding
    (("meta", "security", 0, "bogus"), 1, "Observation.meta.security[0].bogus"),  # unknown element, deep
    (("category", 0, "coding", 0), None, None),  # null inside a list of elements
    (("status",), KeyError, "Observation.status"),  # a required element gone (new shape)
    (("valueString",), "both", "Observation"),  # two choices of value[x] (new shape)
    (("subject",), "Patient/p1", None),  # a primitive where an element belongs
    (("meta", "source"), 5, "Observation.meta.source"),
    (("resourceType",), "Patient", None),
])
def test_an_invalid_resource_is_caught_after_a_similar_valid_one_was_memoized(path: tuple, value: Any,
                                                                               where: str | None) -> None:
    for _ in range(2):  # remembered: the resource, its elements, its shapes and values
        assert validation.check(copy.deepcopy(OBS)) == (None, True)
    bad = _changed(path, value)
    if path == ("resourceType",):
        assert validation.check(bad)[0] is not None
        return
    rejected = _same_verdict(bad)
    if where is SAME:
        return
    assert rejected is not None and rejected.reason_code == "invalid_resource"
    if where is not None:
        assert rejected.where == where
    assert validation.check(copy.deepcopy(OBS)) == (None, True)  # and the valid one is still valid


def test_values_are_remembered_by_type_not_only_by_equality() -> None:
    """1, 1.0 and True are equal in Python; the memo must not let one pass for another."""
    enc = {"resourceType": "Encounter", "id": "e1", "status": "finished",
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
           "diagnosis": [{"condition": {"reference": "Condition/c1"}, "rank": 1}]}
    assert validation.check(enc) == (None, True)
    for rank in (True, 1.0, 1.5, "1", 0, None):
        other = copy.deepcopy(enc)
        other["diagnosis"][0]["rank"] = rank
        _same_verdict(other)


def test_memo_survives_being_dropped_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "MEMO_LIMIT", 3)
    monkeypatch.setattr(validation, "LEAF_LIMIT", 2)
    for i in range(30):
        res = copy.deepcopy(OBS)
        res["id"], res["valueQuantity"]["value"] = f"o{i}", 60 + i
        assert validation.check(res) == (None, True)
    _same_verdict(_changed(("effectiveDateTime",), "yesterday"))


def test_what_json_cannot_carry_never_takes_the_fast_json_writer() -> None:
    """A datetime or a NaN is not JSON data: the memo path does not establish such a resource,
    the whole validation decides, and the standard library writer refuses it as before."""
    when = _changed(("effectiveDateTime",), datetime.datetime(2026, 1, 15, 14, 5, 30, tzinfo=datetime.UTC))
    verdict, plain = validation.check(when)
    assert verdict is None and not plain  # the model takes a datetime; JSON does not
    with pytest.raises(TypeError):
        resource_json(Mapped(when, "Observation", "o1", None, None, plain_json=plain))
    nan = _changed(("valueQuantity", "value"), float("nan"))
    assert validation.check(nan)[0] is not None
    tupled = _changed(("category",), tuple(OBS["category"]))
    assert validation.check(tupled)[1] is False


def test_fast_json_writer_writes_the_same_text() -> None:
    res = copy.deepcopy(OBS)
    res["note"] = [{"text": "é \u2028 \"q\" \\ \n\t 😀 \x1f"}]
    verdict, plain = validation.check(res)
    assert verdict is None and plain
    text = resource_json(Mapped(res, "Observation", "o1", None, None, plain_json=True))
    assert text == _dumps(res) and json.loads(text) == res


# ---- a differential check on the simulated day: random breakages, memo vs whole ---------------

def _paths(node: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*path, k)
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*path, i)
            yield from _paths(v, (*path, i))


BREAKS: list[Callable[[Any], Any]] = [
    lambda v: "not a date", lambda v: " padded ", lambda v: "", lambda v: 3, lambda v: -1.5, lambda v: True,
    lambda v: None, lambda v: [], lambda v: {}, lambda v: [v], lambda v: {"bogus": 1},
    lambda v: "x" * 300, lambda v: "two\nlines", lambda v: [None],
]


def test_random_breakages_get_the_same_verdict_as_whole_validation(map_message, hl7_day) -> None:  # noqa: ANN001
    resources = []
    for record in hl7_day[::7]:
        try:
            resources += [m.resource for m in map_message(record.payload, source=record.source).resources]
        except Exception:  # noqa: BLE001 - malformed messages have no resources
            continue
    for res in resources:  # warm the memo with valid resources first
        assert validation.check(res)[0] is None
    rng = random.Random(7)
    caught = 0
    for i in range(3000):
        res = copy.deepcopy(resources[i % len(resources)])
        paths = list(_paths(res))
        path = paths[rng.randrange(len(paths))]
        node: Any = res
        for part in path[:-1]:
            node = node[part]
        if rng.random() < 0.1 and isinstance(node, dict):
            node[rng.choice(["bogus", "valueString", "text", "_status", "resourceType"])] = "x"
        elif rng.random() < 0.1 and isinstance(node, dict):
            del node[path[-1]]
        else:
            node[path[-1]] = rng.choice(BREAKS)(node[path[-1]])
        caught += _same_verdict(res) is not None
    assert caught > 1000  # most breakages are invalid; each verdict agreed with the whole validation
