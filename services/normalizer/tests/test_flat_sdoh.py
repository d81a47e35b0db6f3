"""Public health's area-level SDOH export: a Location per area, an Observation per measure, values as the truth."""

from __future__ import annotations

import csv
import io
from collections import Counter
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from carelake_ingest_gateway.files import split_csv
from carelake_normalizer import validate as validation
from carelake_normalizer.core import MappingError
from carelake_normalizer.flat import map_flat, map_sdoh_csv
from carelake_normalizer.flat.sdoh import MEASURES, SDOH_MEASURE
from carelake_simulator.simulate import SimConfig, simulate

CHICAGO = ZoneInfo("America/Chicago")
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@pytest.fixture(scope="module")
def day():  # noqa: ANN201
    sim = simulate(SimConfig(patients=1500, seed=9))
    return sim, next(f for f in sim.files if f.kind == "sdoh_csv")


def _rows(data: bytes) -> tuple[bytes, list[tuple[str | None, bytes]]]:
    records = list(split_csv("public_health", io.BytesIO(data)))
    return data[:records[0].byte_start], [(r.record_id, data[r.byte_start:r.byte_end]) for r in records]


def _map(row: bytes, header: bytes, raw_id: str = "raw-1"):  # noqa: ANN202
    return map_sdoh_csv(row, source="public_health", tz=CHICAGO, raw_id=raw_id, header=header)


def test_every_area_maps_to_a_location_and_one_observation_per_measure(day) -> None:  # noqa: ANN001
    sim, export = day
    header, rows = _rows(export.payload)
    areas = {a.area_id: a for a in sim.population.areas}
    assert len(rows) == len(areas) > 10
    for area_id, row in rows:
        result = _map(row, header)
        assert result.rejected == [] and not result.unused
        for m in result.resources:
            assert validation.validate(m.resource, memo=False) is None
            assert m.source_patient_key is None
        location, *observations = [m.resource for m in result.resources]
        assert location["resourceType"] == "Location"
        assert location["identifier"][0]["value"] == area_id
        assert location["address"] == {"postalCode": area_id, "state": areas[area_id].state}
        truth = areas[area_id].measures
        assert len(observations) == len(truth)
        for obs in observations:
            assert obs["subject"] == {"reference": f"Location/{location['id']}"}
            assert obs["category"][0]["coding"][0] == {"system": CATEGORY, "code": "social-history",
                                                       "display": "Social History"}
            coding = obs["code"]["coding"][0]
            assert coding["system"] == SDOH_MEASURE
            want = Decimal(repr(truth[coding["code"]]))
            got = Decimal(repr(obs["valueQuantity"]["value"]))
            if MEASURES[coding["code"]].percent:
                assert obs["valueQuantity"]["code"] == "%" and got == want * 100
            else:
                assert obs["valueQuantity"]["code"] == "1" and got == want


def test_ids_are_deterministic_per_area_and_measure(day) -> None:  # noqa: ANN001
    _, export = day
    header, rows = _rows(export.payload)
    first = [m.id for _, row in rows for m in _map(row, header, "a").resources]
    again = [m.id for _, row in rows for m in _map(row, header, "b").resources]
    assert first == again and len(set(first)) == len(first)


def test_shuffled_columns_and_an_unknown_measure(day) -> None:  # noqa: ANN001
    _, export = day
    table = list(csv.DictReader(io.StringIO(export.payload.decode())))
    names = list(table[0])[::-1] + ["walkability_score"]
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerows({**r, "walkability_score": "12"} for r in table)
    header, rows = _rows(buf.getvalue().encode())
    original_header, original = _rows(export.payload)
    for (_, row), (_, row0) in zip(rows, original, strict=True):
        got, want = _map(row, header), _map(row0, original_header)
        assert sorted(m.id for m in got.resources) == sorted(m.id for m in want.resources)
        assert {m.id: m.resource for m in got.resources} == {m.id: m.resource for m in want.resources}
        assert got.unused == Counter({"walkability_score": 1})


def test_empty_implausible_and_bad_measures(day) -> None:  # noqa: ANN001
    header = b"area_id,state,poverty_rate,uninsured_rate,area_deprivation_index,no_vehicle_rate\r\n"
    result = _map(b"60601,IL,1.7,,abc,0.25\r\n", header)
    assert sorted((p.reason_code, p.where) for p in result.rejected) == [
        ("implausible_value", "Observation.valueQuantity"), ("invalid_value", "area_deprivation_index")]
    assert [m.resource["code"]["coding"][0]["code"] for m in result.resources[1:]] == ["no_vehicle_rate"]
    assert result.resources[1].resource["valueQuantity"]["value"] == 25


def test_rows_that_cannot_be_read(day) -> None:  # noqa: ANN001
    header = b"area_id,state,poverty_rate\r\n"
    with pytest.raises(MappingError) as err:
        _map(b",IL,0.1\r\n", header)
    assert err.value.code == "missing_field"
    with pytest.raises(MappingError) as err:
        _map(b"60601,IL,0.1\r\n", b"zip,state,poverty_rate\r\n")
    assert err.value.code == "missing_column"


def test_whole_file_through_map_flat(day) -> None:  # noqa: ANN001
    sim, export = day
    result = map_flat(export.payload, source="public_health", fmt="csv", tz=CHICAGO, raw_id="f", header=None)
    counts = Counter(m.resource_type for m in result.resources)
    assert counts == {"Location": len(sim.population.areas),
                      "Observation": sum(len(a.measures) for a in sim.population.areas)}
    assert result.meta["format"] == "sdoh_csv" and result.rejected == []
