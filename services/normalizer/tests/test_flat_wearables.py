"""Wearables readings: every clean reading becomes a valid Observation (+ Device); planted damage is rejected."""

from __future__ import annotations

import json
from collections import Counter
from zoneinfo import ZoneInfo

import pytest

from carelake_normalizer import validate as validation
from carelake_normalizer.core import EXT_SOURCE_TIMEZONE, EXT_TIMEZONE_ASSUMED, MappingError
from carelake_normalizer.flat import map_flat, map_ndjson_line, map_wearable_json
from carelake_normalizer.ids import resource_id
from carelake_normalizer.terminology import normalize_resource
from carelake_simulator.feeds import MessRates
from carelake_simulator.simulate import SimConfig, simulate

CHICAGO = ZoneInfo("America/Chicago")
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
# metric -> (LOINC codes, category, UCUM code)
EXPECTED = {
    "heart_rate": (["8867-4"], "vital-signs", "/min"),
    "spo2": (["59408-5", "2708-6"], "vital-signs", "%"),
    "glucose": (["99504-3"], "laboratory", "mg/dL"),
    "steps": (["55423-8"], "activity", "{steps}"),
}
READING = {"device_id": "DEV-1", "measured_at": "2026-01-15T06:00:08Z", "metric": "heart_rate",
           "reading_id": "DEV-1-hr-0", "sent_at": "2026-01-15T06:00:10.213Z", "unit": "/min",
           "user_id": "WU01", "value": 62}


@pytest.fixture(scope="module")
def day():  # noqa: ANN201
    sim = simulate(SimConfig(patients=800, seed=3, mess=MessRates(malformed=0.03)))
    readings = {r.reading_id: r for r in sim.events.wearables}
    return [r for r in sim.records if r.source == "wearables"], readings


def _map(payload: bytes | dict, raw_id: str = "raw-1", **kw):  # noqa: ANN003, ANN202
    data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    return map_wearable_json(data, source="wearables", tz=CHICAGO, raw_id=raw_id, **kw)


def _observation(result) -> dict:  # noqa: ANN001
    return next(m.resource for m in result.resources if m.resource_type == "Observation")


def test_every_clean_reading_of_the_day_is_a_valid_observation_equal_to_the_truth(day) -> None:  # noqa: ANN001
    records, truth = day
    clean = [r for r in records if not any(d.startswith("malformed:") for d in r.defects)]
    assert len(clean) > 10_000
    metrics = Counter()
    for record in clean:
        result = _map(record.payload, record.message_id)
        assert result.rejected == [] and not result.unused
        assert [m.resource_type for m in result.resources] == ["Device", "Observation"]
        reading = truth[record.message_id]
        obs = _observation(result)
        codes, category, ucum = EXPECTED[reading.metric]
        assert [c["code"] for c in obs["code"]["coding"]] == codes
        assert all(c["system"] == LOINC for c in obs["code"]["coding"])
        assert obs["category"][0]["coding"][0]["code"] == category
        assert obs["valueQuantity"]["value"] == reading.value
        assert (obs["valueQuantity"]["system"], obs["valueQuantity"]["code"]) == (UCUM, ucum)
        assert obs["effectiveDateTime"].endswith("Z")
        mapped = next(m for m in result.resources if m.resource_type == "Observation")
        assert mapped.event_time == reading.measured.replace(microsecond=0)
        device = result.resources[0].resource
        assert obs["device"] == {"reference": f"Device/{device['id']}"}
        assert device["identifier"][0]["value"] == reading.device_id
        if "device_not_enrolled" in record.defects:
            assert "subject" not in obs and "patient" not in device and mapped.source_patient_key is None
        else:
            assert mapped.source_patient_key == record.key
            user = record.key.split("|", 1)[1]
            patient = f"Patient/{resource_id('wearables', 'Patient', '|' + user)}"
            assert obs["subject"] == {"reference": patient} == device["patient"]
        metrics[reading.metric] += 1
    assert set(metrics) == set(EXPECTED)
    sample = [r for r in clean[:300]]
    for record in sample:  # the memoized validation the mapping used agrees with a whole one
        for m in _map(record.payload, record.message_id).resources:
            assert validation.validate(m.resource, memo=False) is None


def test_the_planted_malformed_readings_are_bad_json(day) -> None:  # noqa: ANN001
    records, _ = day
    malformed = [r for r in records if any(d.startswith("malformed:") for d in r.defects)]
    assert {d for r in malformed for d in r.defects} >= {"malformed:truncated", "malformed:invalid_json"}
    for record in malformed:
        with pytest.raises(MappingError) as err:
            _map(record.payload, record.message_id)
        assert err.value.code == "bad_json"


def test_reading_ids_make_deterministic_resource_ids() -> None:
    a, b = _map(READING, "raw-a"), _map(READING, "raw-b")
    assert [m.id for m in a.resources] == [m.id for m in b.resources]
    assert _observation(a)["id"] == resource_id("wearables", "Observation", "reading|DEV-1-hr-0")
    no_id = {k: v for k, v in READING.items() if k != "reading_id"}
    assert _observation(_map(no_id))["id"] == _observation(_map(no_id))["id"] != _observation(a)["id"]


@pytest.mark.parametrize(("change", "code", "where"), [
    ({"metric": "body_temperature"}, "unknown_metric", "Observation.code"),
    ({"value": -5}, "implausible_value", "Observation.valueQuantity"),
    ({"value": 0}, "implausible_value", "Observation.valueQuantity"),
    ({"metric": "spo2", "unit": "%", "value": 101}, "implausible_value", "Observation.valueQuantity"),
    ({"metric": "steps", "unit": "{steps}", "value": -1}, "implausible_value", "Observation.valueQuantity"),
    ({"metric": "steps", "unit": "{steps}", "value": 10.5}, "invalid_value", "Observation.valueQuantity"),
    ({"value": "62"}, "invalid_value", "Observation.valueQuantity"),
    ({"value": True}, "invalid_value", "Observation.valueQuantity"),
    ({"value": None}, "missing_field", "Observation.valueQuantity"),
    ({"unit": "Hz"}, "unsupported_unit", "Observation.valueQuantity.unit"),
    ({"measured_at": "2026-02-30T06:00:00Z"}, "invalid_date", "Observation.effectiveDateTime"),
    ({"measured_at": "yesterday"}, "invalid_date", "Observation.effectiveDateTime"),
    ({"measured_at": None}, "missing_field", "Observation.effectiveDateTime"),
])
def test_bad_readings_are_rejected_parts_and_the_device_still_flows(change: dict, code: str, where: str) -> None:
    result = _map({**READING, **change})
    assert [(p.reason_code, p.where, p.resource_type) for p in result.rejected] == [(code, where, "Observation")]
    assert [m.resource_type for m in result.resources] == ["Device"]


def test_nan_is_not_a_value() -> None:
    payload = json.dumps(READING).replace('"value": 62', '"value": NaN').encode()
    assert [p.reason_code for p in _map(payload).rejected] == ["invalid_value"]


@pytest.mark.parametrize(("payload", "code"), [
    (b'{"device_id":"DEV-1","metric":"heart_rate","value":', "bad_json"),
    (b"[1, 2]", "bad_json"),
    (b"\xff\xfe{}", "bad_json"),
    (b"[" * 100_000, "bad_json"),
    (json.dumps({**READING, "metric": None}).encode(), "missing_field"),
    (json.dumps({**READING, "user_id": None, "device_id": None}).encode(), "missing_field"),
    (json.dumps({**READING, "device_id": {"id": 1}}).encode(), "invalid_value"),
])
def test_unreadable_readings_are_mapping_errors(payload: bytes, code: str) -> None:
    with pytest.raises(MappingError) as err:
        _map(payload)
    assert err.value.code == code


def test_glucose_in_mmol_and_times_with_offsets_or_none() -> None:
    result = _map({**READING, "metric": "glucose", "unit": "mmol/L", "value": 6.7,
                   "measured_at": "2026-01-15T08:00:00.5+02:00"})
    obs = _observation(result)
    assert obs["code"]["coding"][0]["code"] == "105272-9"
    assert obs["valueQuantity"] == {"value": 6.7, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"}
    assert obs["effectiveDateTime"] == "2026-01-15T06:00:00.5Z"
    assert {"url": EXT_SOURCE_TIMEZONE, "valueString": "+0200"} in obs["extension"]
    naive = _observation(_map({**READING, "measured_at": "2026-01-15T00:00:08"}))
    assert naive["effectiveDateTime"] == "2026-01-15T06:00:08Z"
    assert {"url": EXT_TIMEZONE_ASSUMED, "valueBoolean": True} in naive["extension"]


def test_unknown_keys_are_counted_and_the_terminology_pass_runs_first() -> None:
    seen: list[str] = []

    def terminology(resource: dict) -> None:
        assert "security" not in resource.get("meta", {})  # before the labels
        seen.append(resource["resourceType"])
        normalize_resource(resource, "wearables")

    result = _map({**READING, "battery": 80, "firmware": None}, terminology=terminology)
    assert seen == ["Device", "Observation"]
    assert result.unused == Counter({"battery": 1})
    assert all(m.security_labels == ["N"] for m in result.resources)
    assert "Observation.effective[x]" in result.resources[1].phi_paths


def test_map_flat_dispatch() -> None:
    line = json.dumps(READING).encode()
    for fmt in ("json", "ndjson"):
        result = map_flat(line, source="wearables", fmt=fmt, tz=CHICAGO, raw_id="r", header=None)
        assert [m.resource for m in result.resources] == [m.resource for m in _map(line, "r").resources]
    assert [m.id for m in map_ndjson_line(line, source="wearables", tz=CHICAGO, raw_id="r").resources] == \
        [m.id for m in _map(line, "r").resources]
    for payload, source, fmt in ((b'{"resourceType":"Patient"}', "ehr", "json"), (b"ISA*00*", "claims", "x12"),
                                 (b"a,b\r\n1,2\r\n", "claims", "csv"), (b"MSH|^~\\&|", "ehr", "hl7v2")):
        with pytest.raises(MappingError) as err:
            map_flat(payload, source=source, fmt=fmt, tz=CHICAGO, raw_id="r", header=None)
        assert err.value.code == "no_mapping", (source, fmt)
        assert err.value.reason.startswith(("no mapping for", f"no mapping for this {fmt}"))


def test_a_whole_ndjson_file_maps_line_by_line() -> None:
    lines = [json.dumps({**READING, "reading_id": f"r{i}", "value": 60 + i}).encode() for i in range(3)]
    lines.insert(1, b'{"metric": "heart_rate", "value":')
    lines.insert(3, b"")
    lines.append(b'{"resourceType": "Patient"}')
    result = map_flat(b"\n".join(lines) + b"\n", source="wearables", fmt="ndjson", tz=CHICAGO, raw_id="f",
                      header=None)
    assert [(p.reason_code, p.position) for p in result.rejected] == [("bad_json", 2), ("no_mapping", 6)]
    values = [m.resource["valueQuantity"]["value"] for m in result.resources if m.resource_type == "Observation"]
    assert values == [60, 61, 62] and result.meta["rows"] == 5
