"""The wearables enrollment roster: every row of a simulated day is a valid Patient + Device under the
readings' patient key; a row that names no user or holds an impossible date is rejected precisely."""

from __future__ import annotations

import io
from zoneinfo import ZoneInfo

import pytest

from carelake_ingest_gateway.files import split_csv
from carelake_normalizer import validate as validation
from carelake_normalizer.core import MappingError
from carelake_normalizer.flat import map_flat, map_wearable_json
from carelake_normalizer.phi import PHI_PATHS
from carelake_simulator.simulate import SimConfig, simulate

CHICAGO = ZoneInfo("America/Chicago")
USER_SYSTEM = "urn:carelake:wearables:id:user"


@pytest.fixture(scope="module")
def day():  # noqa: ANN201
    sim = simulate(SimConfig(patients=1500, seed=5))
    roster = next(f for f in sim.files if f.kind == "enrollment_csv")
    return sim, roster


def _rows(data: bytes) -> tuple[bytes, list[tuple[str | None, bytes]]]:
    """The header and each row's bytes exactly as the ingest gateway splits the file (with its patient keys)."""
    records = list(split_csv("wearables", io.BytesIO(data)))
    return data[:records[0].byte_start], [(r.patient_key, data[r.byte_start:r.byte_end]) for r in records]


def _map(row: bytes, header: bytes | None, raw_id: str = "raw-1"):  # noqa: ANN202
    return map_flat(row, source="wearables", fmt="csv", tz=CHICAGO, raw_id=raw_id, header=header)


def _by_type(result) -> dict[str, dict]:  # noqa: ANN001
    return {m.resource_type: m.resource for m in result.resources}


def test_every_roster_row_is_a_valid_patient_and_device_under_the_readings_key(day) -> None:  # noqa: ANN001
    sim, roster = day
    header, rows = _rows(roster.payload)
    regs = {r.mrn: r for r in sim.registry.primary["wearables"].values()}
    people = sim.population.by_id()
    # What the readings of the same day reference: patient key -> (Patient reference, Device id).
    readings = {}
    for rec in sim.records:
        if rec.source == "wearables" and rec.key not in readings and not rec.key.startswith("wearables|device:"):
            mapped = map_wearable_json(rec.payload, source="wearables", tz=CHICAGO, raw_id="r")
            if mapped.resources:
                obs = _by_type(mapped)["Observation"]
                readings[rec.key] = (obs["subject"], obs["device"]["reference"])
    assert len(rows) == len(roster.records) > 100
    for (gateway_key, row), truth in zip(rows, roster.records, strict=True):
        result = _map(row, header)
        assert result.rejected == [] and not result.unused
        assert [m.resource_type for m in result.resources] == ["Patient", "Device"]
        patient, device = (m.resource for m in result.resources)
        user = patient["identifier"][0]["value"]
        key = f"wearables|{user}"
        assert key == truth.key == gateway_key  # the simulator's truth and the gateway's split agree
        for m in result.resources:
            assert m.source_patient_key == key
            assert validation.validate(m.resource, memo=False) is None
            assert set(m.phi_paths) <= set(PHI_PATHS[m.resource_type])
        assert set(result.resources[0].phi_paths) == {f"Patient.{k}" for k in patient if k in (
            "identifier", "name", "telecom", "address", "birthDate")}  # every identifying element is tagged
        assert result.resources[1].event_time is not None and result.resources[1].event_time.date() < sim.config.day
        assert patient["identifier"][0]["system"] == USER_SYSTEM
        assert device["patient"] == {"reference": f"Patient/{patient['id']}"}
        if key in readings:  # the roster fills in exactly what the readings point at
            subject, device_ref = readings[key]
            assert subject == device["patient"] and device_ref == f"Device/{device['id']}"
        # The demographics are the wearables registration's, variations and all.
        demo = regs[user].demo
        assert patient["name"] == [{"family": demo.family, "given": demo.given.split()}]
        assert patient.get("birthDate") == (demo.birth_date.isoformat() if demo.birth_date else None)
        assert patient["gender"] == {"M": "male", "F": "female"}[demo.sex]
        assert patient.get("address") == ([{"use": "home", "postalCode": demo.address.postal_code}]
                                          if demo.address else None)
        telecom = {t["system"]: t["value"] for t in patient.get("telecom", [])}
        assert telecom.get("phone") == demo.phone and telecom.get("email") == demo.email
        assert device["identifier"][0]["value"] in people[regs[user].person_id].devices
    assert len(readings) >= len(rows) * 0.9  # nearly every enrolled user sent readings today


def test_whole_file_maps_every_row_as_the_rows_do(day) -> None:  # noqa: ANN001
    _, roster = day
    result = _map(roster.payload, None, raw_id="file")
    header, rows = _rows(roster.payload)
    assert result.rejected == [] and result.meta["rows"] == len(rows) and result.meta["format"] == "enrollment_csv"
    assert [m.resource for m in result.resources] == [
        m.resource for _, row in rows for m in _map(row, header, raw_id="file").resources]


def test_bad_rows_are_rejected_with_precise_reasons(day) -> None:  # noqa: ANN001
    _, roster = day
    header, rows = _rows(roster.payload)
    row = rows[0][1]
    fields = row.decode().rstrip("\r\n").split(",")
    names = header.decode().rstrip("\r\n").split(",")
    col = {n: i for i, n in enumerate(names)}

    def edit(**changes: str) -> bytes:
        out = list(fields)
        for name, value in changes.items():
            out[col[name]] = value
        return (",".join(out) + "\r\n").encode()

    # No user: the row names no one; as a row message it goes to the DLQ whole.
    with pytest.raises(MappingError) as err:
        _map(edit(user_id=""), header)
    assert (err.value.code, err.value.where) == ("missing_field", "user_id")
    # An impossible birth date rejects the Patient only; the Device still links the device to the user.
    result = _map(edit(birth_date="1980-02-30"), header)
    assert [(p.reason_code, p.where, p.resource_type) for p in result.rejected] == [
        ("invalid_date", "birth_date", "Patient")]
    assert [m.resource_type for m in result.resources] == ["Device"]
    # An impossible enrollment time rejects the Device only.
    result = _map(edit(enrolled_at="2025-13-01T10:00:00Z"), header)
    assert [(p.reason_code, p.where, p.resource_type) for p in result.rejected] == [
        ("invalid_date", "enrolled_at", "Device")]
    assert [m.resource_type for m in result.resources] == ["Patient"]
    # In a whole file, the row without a user is one rejected part at its line; the rest still maps.
    data = header + edit(user_id="") + b"".join(r for _, r in rows[1:3])
    result = _map(data, None)
    assert [(p.reason_code, p.where, p.position) for p in result.rejected] == [("missing_field", "user_id", 2)]
    assert len(result.resources) == 4


def test_a_wearables_csv_without_user_id_is_not_a_roster() -> None:
    with pytest.raises(MappingError) as err:
        _map(b"device_id,enrolled_at\r\nDEV-1,2025-01-01T00:00:00Z\r\n", None)
    assert err.value.code == "missing_column" and "enrollment_csv" in err.value.reason
