"""The flat feeds: pharmacy, SDOH and wearables enrollment CSV files and wearable JSON events parse back to
their inputs."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from carelake_simulator import codes
from carelake_simulator.formats import flat
from carelake_simulator.model import (
    Address,
    Demographics,
    Dispense,
    Provider,
    Registration,
    SdohArea,
    WearableReading,
)

DAY = date(2026, 1, 15)
CREATED = datetime(2026, 1, 16, 5, 30, tzinfo=UTC)
PRESCRIBER = Provider(npi=codes.make_npi(1000), given="Ada", family="Quill", taxonomy=codes.TAXONOMY["family_medicine"])
PHARMACY_NPI = codes.make_npi(9012)


def _reg(person_id: str, mrn: str, **demo: object) -> Registration:
    base = dict(given="Maria", family="Testperson", sex="F", birth_date=date(1961, 3, 4),
                address=Address(line="1 Synthetic Way", city="Springfield", state="IL", postal_code="62701"),
                phone="3125550100")
    base.update(demo)
    return Registration(source="pharmacy", mrn=mrn, person_id=person_id, demo=Demographics(**base))


def _dispense(rx: str, person_id: str, drug: str, filled: datetime, qty: str = "60", refill: int = 0) -> Dispense:
    d = codes.DRUGS[drug]
    return Dispense(rx_number=rx, person_id=person_id, drug=d.ndc, quantity=Decimal(qty), days_supply=30,
                    prescriber=PRESCRIBER, pharmacy_npi=PHARMACY_NPI, filled=filled, refill_number=refill)


def _fixture() -> tuple[list[Dispense], dict[str, Registration]]:
    regs = {
        "P0000001": _reg("P0000001", "RX100001"),
        # no DOB on file, and a name with a comma and a double quote
        "P0000002": _reg("P0000002", "RX100002", given='Jo "JJ"', family="O'Neil, Jr", birth_date=None, phone=None,
                         address=None, sex="M"),
    }
    dispenses = [
        _dispense("RX2601150000001", "P0000001", "metformin_500", datetime(2026, 1, 15, 15, 4, 5, tzinfo=UTC)),
        # 01:30 UTC on the 16th is the evening of the 15th in the pharmacy's zone
        _dispense("RX2601150000002", "P0000002", "insulin_glargine", datetime(2026, 1, 16, 1, 30, tzinfo=UTC),
                  qty="10.0", refill=3),
    ]
    return dispenses, regs


def _parse(payload: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(payload.decode("utf-8"), newline="")))


def test_pharmacy_csv_round_trips() -> None:
    dispenses, regs = _fixture()
    file = flat.pharmacy_csv(dispenses, regs, day=DAY, created=CREATED)
    assert (file.source, file.kind, file.content_type) == ("pharmacy", "pharmacy_csv", "text/csv")
    assert file.name == "pharmacy_dispenses_20260115.csv" and file.sent_time == CREATED
    rows = _parse(file.payload)
    assert tuple(rows[0]) == flat.PHARMACY_COLUMNS
    got = [dict(zip(rows[0], r)) for r in rows[1:]]
    assert len(got) == 2 and all(len(r) == len(flat.PHARMACY_COLUMNS) for r in rows)
    first, second = got
    assert first == {
        "rx_number": "RX2601150000001", "fill_date": "2026-01-15", "patient_id": "RX100001",
        "last_name": "Testperson", "first_name": "Maria", "dob": "1961-03-04", "sex": "F", "zip": "62701",
        "phone": "3125550100", "ndc": codes.DRUGS["metformin_500"].ndc.code,
        "drug_name": codes.DRUGS["metformin_500"].ndc.display, "quantity": "60", "days_supply": "30",
        "refill_number": "0", "prescriber_npi": PRESCRIBER.npi, "prescriber_name": "Quill, Ada",
        "pharmacy_npi": PHARMACY_NPI,
    }
    assert second["last_name"] == "O'Neil, Jr" and second["first_name"] == 'Jo "JJ"'
    assert second["dob"] == "" and second["zip"] == "" and second["phone"] == ""
    assert second["fill_date"] == "2026-01-15"  # local date of an evening fill
    assert second["quantity"] == "10" and second["refill_number"] == "3"
    assert len(second["ndc"]) == 11 and second["ndc"].isdigit()


def test_pharmacy_csv_uses_crlf_and_quotes_only_when_needed() -> None:
    dispenses, regs = _fixture()
    payload = flat.pharmacy_csv(dispenses, regs, day=DAY, created=CREATED).payload
    lines = payload.split(b"\r\n")
    assert lines[-1] == b"" and len(lines) == 4  # header, two rows, final CRLF
    assert b"\n" not in payload.replace(b"\r\n", b"")
    assert b'"O\'Neil, Jr","Jo ""JJ"""' in payload
    assert lines[0] == ",".join(flat.PHARMACY_COLUMNS).encode()


def test_pharmacy_records_line_up_with_rows() -> None:
    dispenses, regs = _fixture()
    file = flat.pharmacy_csv(dispenses, regs, day=DAY, created=CREATED)
    rows = _parse(file.payload)[1:]
    assert [r.record_id for r in file.records] == [row[0] for row in rows]
    assert [r.key for r in file.records] == [f"pharmacy|{row[2]}" for row in rows]
    assert [r.person_id for r in file.records] == ["P0000001", "P0000002"]
    assert all(r.defects == () for r in file.records)


def test_pharmacy_registrations_may_be_keyed_by_rx_number() -> None:
    dispenses, regs = _fixture()
    dup = _reg("P0000001", "RX900001")  # this fill was made under a duplicate record
    file = flat.pharmacy_csv(dispenses, {**regs, "RX2601150000001": dup}, day=DAY, created=CREATED)
    assert _parse(file.payload)[1][2] == "RX900001"
    assert file.records[0].key == "pharmacy|RX900001"


def test_pharmacy_csv_is_deterministic_and_empty_day_has_a_header() -> None:
    dispenses, regs = _fixture()
    a = flat.pharmacy_csv(dispenses, regs, day=DAY, created=CREATED)
    b = flat.pharmacy_csv(list(dispenses), dict(regs), day=DAY, created=CREATED)
    assert a == b
    empty = flat.pharmacy_csv([], {}, day=DAY, created=CREATED)
    assert _parse(empty.payload) == [list(flat.PHARMACY_COLUMNS)] and empty.records == ()


def test_enrollment_csv_round_trips_without_ssn_or_street() -> None:
    user = replace(_reg("P0000001", "WU00000000a1", email="maria.t@example.com", ssn="900-11-2222"),
                   source="wearables")
    bare = replace(_reg("P0000002", "WU00000000b2", given='Jo "JJ"', family="O'Neil, Jr", birth_date=None,
                        phone=None, address=None, sex="M"), source="wearables")
    at = datetime(2025, 6, 1, 14, 5, 9, tzinfo=UTC)
    file = flat.enrollment_csv([flat.Enrollment(user, "DEV-001-0000001", at),
                                flat.Enrollment(bare, "DEV-001-0000002", at + timedelta(days=3))],
                               day=DAY, created=CREATED)
    assert (file.source, file.kind, file.content_type) == ("wearables", "enrollment_csv", "text/csv")
    assert file.name == "enrollments_20260115.csv" and file.sent_time == CREATED
    rows = _parse(file.payload)
    assert tuple(rows[0]) == flat.ENROLLMENT_COLUMNS
    first, second = (dict(zip(rows[0], r)) for r in rows[1:])
    assert first == {"user_id": "WU00000000a1", "given_name": "Maria", "family_name": "Testperson",
                     "birth_date": "1961-03-04", "sex": "F", "postal_code": "62701", "phone": "3125550100",
                     "email": "maria.t@example.com", "device_id": "DEV-001-0000001",
                     "enrolled_at": "2025-06-01T14:05:09Z"}
    assert second["family_name"] == "O'Neil, Jr" and second["given_name"] == 'Jo "JJ"'
    assert (second["birth_date"], second["postal_code"], second["phone"]) == ("", "", "")
    assert b"900-11-2222" not in file.payload and b"Synthetic Way" not in file.payload
    assert [(r.record_id, r.key, r.person_id) for r in file.records] == [
        ("WU00000000a1", "wearables|WU00000000a1", "P0000001"), ("WU00000000b2", "wearables|WU00000000b2", "P0000002")]
    assert file.payload.endswith(b"\r\n") and b"\n" not in file.payload.replace(b"\r\n", b"")
    again = flat.enrollment_csv([flat.Enrollment(user, "DEV-001-0000001", at),
                                 flat.Enrollment(bare, "DEV-001-0000002", at + timedelta(days=3))],
                                day=DAY, created=CREATED)
    assert again == file


def test_sdoh_csv_round_trips() -> None:
    areas = [
        SdohArea("60601", "IL", {"poverty_rate": 0.123, "area_deprivation_index": 0.5, "food_insecurity_rate": 0.1}),
        SdohArea("60602", "IL", {"poverty_rate": 0.2}),
    ]
    file = flat.sdoh_csv(areas, day=DAY, created=CREATED)
    assert (file.source, file.kind, file.name) == ("public_health", "sdoh_csv", "sdoh_areas_20260115.csv")
    rows = _parse(file.payload)
    assert rows[0] == ["area_id", "state", "area_deprivation_index", "food_insecurity_rate", "poverty_rate"]
    assert rows[1] == ["60601", "IL", "0.5", "0.1", "0.123"]
    assert rows[2] == ["60602", "IL", "", "", "0.2"]
    assert file.payload.endswith(b"\r\n") and b"\n" not in file.payload.replace(b"\r\n", b"")
    assert [(r.record_id, r.key, r.person_id) for r in file.records] == [
        ("60601", "public_health|area:60601", None), ("60602", "public_health|area:60602", None)]
    assert flat.sdoh_csv(list(areas), day=DAY, created=CREATED) == file


def _reading(**kw: object) -> WearableReading:
    base = dict(reading_id="DEV-001-0000001-hr-600", device_id="DEV-001-0000001", person_id="P0000001",
                metric="heart_rate", value=72, unit="/min", measured=datetime(2026, 1, 15, 16, 0, 12, tzinfo=UTC))
    base.update(kw)
    return WearableReading(**base)  # type: ignore[arg-type]


def test_wearable_event_round_trips() -> None:
    reading = _reading()
    reg = Registration(source="wearables", mrn="WU-778812", person_id="P0000001",
                       demo=Demographics(given="Maria", family="Testperson"))
    sent = reading.measured + timedelta(seconds=41, microseconds=250_600)
    record = flat.wearable_event(reading, reg, sent)
    body = json.loads(record.payload.decode("utf-8"))
    assert body == {
        "reading_id": "DEV-001-0000001-hr-600", "device_id": "DEV-001-0000001", "user_id": "WU-778812",
        "metric": "heart_rate", "value": 72, "unit": "/min", "measured_at": "2026-01-15T16:00:12Z",
        "sent_at": "2026-01-15T16:00:53.250Z",
    }
    assert record.payload == json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
    assert b" " not in record.payload
    assert (record.source, record.kind, record.message_id) == ("wearables", "wearable", reading.reading_id)
    assert record.key == "wearables|WU-778812" and record.content_type == "application/json"
    assert record.person_id == "P0000001" and record.event_time == reading.measured and record.sent_time == sent
    assert datetime.fromisoformat(body["measured_at"].replace("Z", "+00:00")) == reading.measured


def test_wearable_event_of_an_unenrolled_device() -> None:
    reading = _reading(metric="glucose", value=143.5, unit="mg/dL")
    record = flat.wearable_event(reading, None, reading.measured + timedelta(seconds=5))
    body = json.loads(record.payload)
    assert body["user_id"] is None and body["value"] == 143.5 and body["unit"] == "mg/dL"
    assert record.key == "wearables|device:DEV-001-0000001"


def test_wearable_event_converts_to_utc_and_is_deterministic() -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2026, 1, 15, 10, 0, 12, tzinfo=ZoneInfo("America/Chicago"))
    reading = _reading(measured=local)
    a = flat.wearable_event(reading, None, local)
    b = flat.wearable_event(_reading(measured=local), None, local)
    assert a == b
    assert json.loads(a.payload)["measured_at"] == "2026-01-15T16:00:12Z"
