"""The pharmacy dispense export: every row of a simulated day maps, validates and equals the truth."""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from carelake_ingest_gateway.files import split_csv
from carelake_normalizer import validate as validation
from carelake_normalizer.core import EXT_SOURCE_TIMEZONE, MappingError
from carelake_normalizer.flat import csv_rows, header_of, map_flat, map_pharmacy_csv
from carelake_normalizer.flat.pharmacy import EXT_REFILL_NUMBER
from carelake_normalizer.phi import PHI_PATHS
from carelake_normalizer.terminology import normalize_resource
from carelake_simulator import codes
from carelake_simulator.feeds import MessRates
from carelake_simulator.formats.flat import PHARMACY_TZ
from carelake_simulator.simulate import SimConfig, simulate

CHICAGO = ZoneInfo("America/Chicago")
NDC = "http://hl7.org/fhir/sid/ndc"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NPI = "http://hl7.org/fhir/sid/us-npi"


@pytest.fixture(scope="module")
def day():  # noqa: ANN201
    sim = simulate(SimConfig(patients=3000, seed=7, mess=MessRates(invalid_code=0.1)))
    export = next(f for f in sim.files if f.kind == "pharmacy_csv")
    return sim, export


def _rows(data: bytes) -> tuple[bytes, list[tuple[str | None, bytes]]]:
    """The header and each row's bytes exactly as the ingest gateway splits the file."""
    records = list(split_csv("pharmacy", io.BytesIO(data)))
    return data[:records[0].byte_start], [(r.record_id, data[r.byte_start:r.byte_end]) for r in records]


def _map(row: bytes, header: bytes, raw_id: str = "raw-1", **kw):  # noqa: ANN003, ANN202
    return map_pharmacy_csv(row, source="pharmacy", tz=CHICAGO, raw_id=raw_id, header=header, **kw)


def _by_type(result) -> dict[str, dict]:  # noqa: ANN001
    return {m.resource_type: m.resource for m in result.resources}


def test_every_row_of_the_day_maps_to_valid_fhir_equal_to_the_truth(day) -> None:  # noqa: ANN001
    sim, export = day
    header, rows = _rows(export.payload)
    truth = {d.rx_number: d for d in sim.events.dispenses}
    planted = {r.record_id for r in export.records if "invalid_code:NDC" in r.defects}
    assert len(rows) == len(export.records) > 30
    seen = Counter()
    for record_id, row in rows:
        result = _map(row, header)
        assert result.rejected == [] and not result.unused
        resources = _by_type(result)
        assert set(resources) == {"Patient", "MedicationRequest", "MedicationDispense"}
        for m in result.resources:
            assert validation.validate(m.resource, memo=False) is None
            assert m.source_patient_key == f"pharmacy|{resources['Patient']['identifier'][0]['value']}"
        d = truth[record_id]
        dispense = resources["MedicationDispense"]
        assert dispense["status"] == "completed"
        coding = dispense["medicationCodeableConcept"]["coding"][0]
        # A planted invalid NDC replaced the event's code in the feed only (FileRecord.defects says so).
        expected = d.drug.code if record_id not in planted else coding["code"]
        assert (coding["system"], coding["code"]) == (NDC, expected)
        assert record_id not in planted or coding["code"] in codes.INVALID_CODES["NDC"]
        assert dispense["medicationCodeableConcept"]["text"] == d.drug.display
        assert Decimal(str(dispense["quantity"]["value"])) == d.quantity
        assert dispense["daysSupply"] == {"value": d.days_supply, "unit": "days",
                                          "system": "http://unitsofmeasure.org", "code": "d"}
        assert dispense["whenHandedOver"] == d.filled.astimezone(PHARMACY_TZ).date().isoformat()
        assert {"url": EXT_REFILL_NUMBER, "valueUnsignedInt": d.refill_number} in dispense["extension"]
        assert dispense["type"]["coding"][0]["code"] == ("FF" if d.refill_number == 0 else "RF")
        assert dispense["performer"][0]["actor"]["identifier"] == {"system": NPI, "value": d.pharmacy_npi}
        assert dispense["subject"] == {"reference": f"Patient/{resources['Patient']['id']}"}
        request = resources["MedicationRequest"]
        assert dispense["authorizingPrescription"] == [{"reference": f"MedicationRequest/{request['id']}"}]
        assert request["requester"]["identifier"] == {"system": NPI, "value": d.prescriber.npi}
        assert request["requester"]["display"].startswith(d.prescriber.family)
        assert request["medicationCodeableConcept"] == dispense["medicationCodeableConcept"]
        seen[d.drug.code] += 1
    assert sum(seen.values()) == len(truth)


def test_patient_carries_the_demographics_of_the_export(day) -> None:  # noqa: ANN001
    _, export = day
    header, rows = _rows(export.payload)
    table = list(csv.DictReader(io.StringIO(export.payload.decode())))
    for (_, row), values in zip(rows, table, strict=True):
        patient = _by_type(_map(row, header))["Patient"]
        assert patient["identifier"][0]["value"] == values["patient_id"]
        assert patient["name"] == [{"family": values["last_name"], "given": values["first_name"].split()}]
        assert patient.get("birthDate") == (values["dob"] or None)
        assert patient["gender"] == {"M": "male", "F": "female"}[values["sex"]]
        assert patient["address"] == [{"use": "home", "postalCode": values["zip"]}]
        if values["phone"]:
            assert patient["telecom"][0]["value"] == values["phone"]


def test_dispense_dates_go_to_utc_and_keep_the_zone(day) -> None:  # noqa: ANN001
    _, export = day
    header, rows = _rows(export.payload)
    m = next(m for m in _map(rows[0][1], header).resources if m.resource_type == "MedicationDispense")
    assert m.event_time is not None and m.event_time.utcoffset().total_seconds() == 0
    assert m.event_time.astimezone(CHICAGO).hour == 0  # a date is its local midnight
    assert {"url": EXT_SOURCE_TIMEZONE, "valueString": "America/Chicago"} in m.resource["extension"]
    row = rows[0][1].replace(b",2026-01-15,", b",2026-01-15T14:30:00-06:00,", 1)
    dispense = _by_type(_map(row, header))["MedicationDispense"]
    assert dispense["whenHandedOver"] == "2026-01-15T20:30:00Z"
    naive = _by_type(_map(rows[0][1].replace(b",2026-01-15,", b",2026-01-15 14:30,", 1), header))
    assert naive["MedicationDispense"]["whenHandedOver"] == "2026-01-15T20:30:00Z"  # CST is UTC-6 in January


def test_terminology_pass_adds_rxnorm_and_flags_the_planted_invalid_ndcs(day) -> None:  # noqa: ANN001
    _, export = day
    header, rows = _rows(export.payload)
    planted = {r.record_id for r in export.records if "invalid_code:NDC" in r.defects}
    assert planted
    for record_id, row in rows:
        flags: list = []
        result = _map(row, header, terminology=lambda res, f=flags: f.extend(normalize_resource(res, "pharmacy")))
        assert result.rejected == []
        dispense = _by_type(result)["MedicationDispense"]
        systems = [c["system"] for c in dispense["medicationCodeableConcept"]["coding"]]
        if record_id in planted:
            assert any(f.flag == "invalid_code" and f.system == NDC for f in flags)
            assert RXNORM not in systems
        else:
            assert systems[0] == RXNORM and NDC in systems


def test_ids_are_deterministic_and_do_not_depend_on_the_raw_message(day) -> None:  # noqa: ANN001
    _, export = day
    header, rows = _rows(export.payload)
    a = [[(m.resource_type, m.id) for m in _map(row, header, raw_id="a").resources] for _, row in rows]
    b = [[(m.resource_type, m.id) for m in _map(row, header, raw_id="b").resources] for _, row in rows]
    assert a == b
    dispense_ids = [dict(r)["MedicationDispense"] for r in a]
    assert len(set(dispense_ids)) == len(dispense_ids)
    # Another source gives other ids for the same numbers.
    other = map_pharmacy_csv(rows[0][1], source="pharmacy_b", tz=CHICAGO, raw_id="a", header=header)
    assert {m.id for m in other.resources}.isdisjoint(dict(a[0]).values())


def test_shuffled_columns_with_bom_quotes_and_an_extra_column_still_map(day) -> None:  # noqa: ANN001
    _, export = day
    table = list(csv.reader(io.StringIO(export.payload.decode(), newline="")))
    names, body = table[0], table[1:]
    order = list(range(len(names)))
    random.Random(3).shuffle(order)
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    writer.writerow([names[i].upper() for i in order] + ["Loyalty Card"])
    writer.writerows([[r[i] for i in order] + [f"LC{n}"] for n, r in enumerate(body)])
    shuffled = b"\xef\xbb\xbf" + buf.getvalue().encode()
    header, rows = _rows(shuffled)
    assert header.startswith(b"\xef\xbb\xbf") and header_of(shuffled[:4096]) == header
    _, original = _rows(export.payload)
    original_header = export.payload[:export.payload.index(b"\r\n") + 2]
    for (_, row), (_, row0) in zip(rows, original, strict=True):
        got, want = _map(row, header), _map(row0, original_header)
        assert [m.resource for m in got.resources] == [m.resource for m in want.resources]
        assert got.unused == Counter({"loyalty_card": 1})


def test_whole_file_without_header_maps_every_row(day) -> None:  # noqa: ANN001
    _, export = day
    result = map_flat(export.payload, source="pharmacy", fmt="csv", tz=CHICAGO, raw_id="file", header=None)
    header, rows = _rows(export.payload)
    assert result.rejected == [] and result.meta["rows"] == len(rows)
    per_row = [m.resource for _, row in rows for m in _map(row, header, raw_id="file").resources]
    assert [m.resource for m in result.resources] == per_row
    spans = csv_rows(export.payload)[1]
    assert [export.payload[s:e] for _, s, e in spans] == [row for _, row in rows]


def test_a_broken_row_in_a_whole_file_is_one_rejected_part_with_its_line(day) -> None:  # noqa: ANN001
    _, export = day
    lines = export.payload.split(b"\r\n")
    lines[3] = lines[3] + b",surplus"
    result = map_flat(b"\r\n".join(lines), source="pharmacy", fmt="csv", tz=CHICAGO, raw_id="f", header=None)
    assert [(p.reason_code, p.position) for p in result.rejected] == [("column_count", 4)]
    assert len(result.resources) == 3 * (len(export.records) - 1)


def test_an_impossible_fill_date_rejects_only_the_dispense(day) -> None:  # noqa: ANN001
    _, export = day
    header, rows = _rows(export.payload)
    result = _map(rows[0][1].replace(b",2026-01-15,", b",2026-02-30,", 1), header)
    assert [(p.reason_code, p.where, p.resource_type) for p in result.rejected] == [
        ("invalid_date", "fill_date", "MedicationDispense")]
    assert {m.resource_type for m in result.resources} == {"Patient", "MedicationRequest"}


@pytest.mark.parametrize(("old", "new", "code", "where"), [
    (b",90,90,", b",-90,90,", "invalid_value", "quantity"),
    (b",90,90,", b",90,ninety,", "invalid_value", "days_supply"),
    (b",90,90,3,", b",90,90,-1,", "invalid_value", "refill_number"),
])
def test_bad_numbers_reject_the_dispense(day, old: bytes, new: bytes, code: str, where: str) -> None:  # noqa: ANN001
    _, export = day
    header, rows = _rows(export.payload)
    row = next(r for _, r in rows if old in r)
    result = _map(row.replace(old, new, 1), header)
    assert [(p.reason_code, p.where) for p in result.rejected] == [(code, where)]


def test_rows_that_cannot_be_read_are_mapping_errors(day) -> None:  # noqa: ANN001
    _, export = day
    header, rows = _rows(export.payload)
    row = rows[0][1]
    cases = {
        "column_count": row.replace(b"\r\n", b",extra\r\n"),
        "empty_row": b"\r\n",
        "bad_csv": b'"unterminated,1,2\r\n',
        "missing_field": b"," + row.split(b",", 1)[1],  # no rx_number
    }
    for code, bad in cases.items():
        with pytest.raises(MappingError) as err:
            _map(bad, header)
        assert err.value.code == code, code
    with pytest.raises(MappingError) as err:
        _map(row, b"rx,fill_date\r\n")
    assert err.value.code == "missing_column"
    with pytest.raises(MappingError) as err:
        _map(row, b"rx_number,rx_number,patient_id\r\n")
    assert err.value.code == "bad_header"


def test_a_windows_1252_export_still_maps(day) -> None:  # noqa: ANN001
    _, export = day
    header, rows = _rows(export.payload)
    row = rows[0][1]
    family = row.split(b",")[3]
    result = _map(row.replace(b"," + family + b",", ",Muñoz,".encode("cp1252"), 1), header)
    assert _by_type(result)["Patient"]["name"][0]["family"] == "Muñoz"


def test_phi_paths_of_the_new_resource_types_once_declared(day) -> None:  # noqa: ANN001
    """phi.py does not declare MedicationDispense yet (see the flat package's report); once it does,
    the dispense date must be among its PHI paths."""
    if "MedicationDispense" not in PHI_PATHS:
        pytest.skip("phi.PHI_PATHS has no MedicationDispense entry yet")
    _, export = day
    header, rows = _rows(export.payload)
    m = next(m for m in _map(rows[0][1], header).resources if m.resource_type == "MedicationDispense")
    assert "MedicationDispense.whenHandedOver" in m.phi_paths
    assert "MedicationDispense.identifier" in m.phi_paths
