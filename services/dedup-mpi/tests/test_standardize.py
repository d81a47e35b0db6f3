"""Standardization: one spelling per value, never an exception on bad input."""

from __future__ import annotations

import doctest
from datetime import date

import pytest

from carelake_dedup_mpi import standardize as s
from carelake_dedup_mpi.standardize import from_patient, from_row


def test_doctests() -> None:
    result = doctest.testmod(s)
    assert result.failed == 0 and result.attempted > 10


@pytest.mark.parametrize("raw, expected", [
    ("José", "JOSE"), ("  mary-ann ", "MARY-ANN"), ("O'Brien", "OBRIEN"), ("Smith - Jones", "SMITH-JONES"),
    ("Dr. John Smith Jr.", "JOHN SMITH"), ("III", "III"), ("Nguyễn", "NGUYEN"), ("Müller", "MULLER"),
    ("", None), (None, None), ("---", None), ("12345", None), ("unknown", None), (float("nan"), None),
])
def test_names(raw: object, expected: str | None) -> None:
    assert s.name(raw) == expected


def test_hyphenated_name_parts() -> None:
    assert s.name_parts(s.name("Garcia-Lopez")) == ("GARCIA", "LOPEZ")


@pytest.mark.parametrize("raw, expected", [
    ("1965-12-13", date(1965, 12, 13)), ("19651213", date(1965, 12, 13)), ("12/13/1965", date(1965, 12, 13)),
    ("13/12/1965", date(1965, 12, 13)), ("1965-12-13T00:00:00Z", date(1965, 12, 13)), ("196512130000", date(1965, 12, 13)),
    ("3/4/1965", date(1965, 3, 4)), ("1965/12/13", date(1965, 12, 13)), ("13.12.1965", date(1965, 12, 13)),
    ("1965", None), ("1965-12", None), ("19651313", None), ("02/30/1965", None), ("garbage", None), ("", None),
    ("0000-00-00", None), ("99999999", None), (None, None), ("1900-01-01", None), ("1875-06-01", None),
])
def test_dates(raw: object, expected: date | None) -> None:
    assert s.parse_date(raw) == expected


def test_addresses_abbreviated() -> None:
    assert s.address_line("123 North Main Street Suite 5") == "123 N MAIN ST STE 5"
    assert s.address_line("45 Elm Avenue, Apartment #2") == "45 ELM AVE APT 2"
    assert s.address_line("123 N. Main St.") == s.address_line("123 north main street")
    assert s.address_line("  ") is None


def test_phones_and_ssns() -> None:
    assert s.phone("1-312-555-0188") == "3125550188"
    assert s.phone("(312) 555 0188") == "3125550188"
    assert s.phone("+44 20 7946 0958") == "442079460958"  # kept as digits
    for bad in ("000-12-3456", "666-12-3456", "912-34-5678", "123-00-4567", "123-45-0000", "111111111", "12345678"):
        assert s.ssn(bad) is None, bad
    assert s.ssn("123-45-6780") == "123456780"


def test_postal_codes() -> None:
    assert s.postal_code("60601-1234") == "60601"
    assert s.postal_code("K1A 0B1", "CA") == "K1A0B1"
    assert s.postal_code("2615") == "2615"  # an Australian postcode, kept
    assert s.postal_code("00000") is None


def _patient(**extra: object) -> dict:
    base = {
        "resourceType": "Patient",
        "identifier": [
            {"system": "urn:carelake:ehr:id:EHR", "value": "E1",
             "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}},
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6780"},
        ],
        "name": [{"use": "maiden", "family": "Brown"},
                 {"use": "official", "family": "Kelly-Brown", "given": ["Jamie", "Amy"]},
                 {"use": "nickname", "given": ["Jay"]}],
        "telecom": [{"system": "email", "value": "x@example.com"}, {"system": "phone", "value": "312-555-0100", "use": "work"},
                    {"system": "phone", "value": "(872) 402-9996", "use": "home"}],
        "gender": "female", "birthDate": "1949-09-11",
        "address": [{"use": "old", "line": ["1 Old Rd"], "postalCode": "10001"},
                    {"use": "home", "line": ["07620 Misty Harbors Apt. 579"], "city": "Ramirezstad", "state": "IL",
                     "postalCode": "61729-0001", "country": "USA"}],
        "meta": {"lastUpdated": "2026-01-15T10:00:00Z"},
    }
    base.update(extra)
    return base


def test_from_patient_picks_official_home_and_ssn() -> None:
    p = from_patient(_patient(), "ehr", "ehr|E1")
    assert (p.given, p.middle, p.family) == ("JAMIE", "AMY", "KELLY-BROWN")
    assert set(p.other_names) == {"BROWN", "JAY"}
    assert p.birth_date == date(1949, 9, 11) and p.sex == "F"
    assert p.phone == "8724029996" and p.ssn == "123456780"
    assert (p.address_line, p.city, p.state, p.postal_code) == ("07620 MISTY HBRS APT 579", "RAMIREZSTAD", "IL", "61729")
    assert p.asserted_at == "2026-01-15T10:00:00Z" and p.record_key == "ehr|E1" and p.source == "ehr"


def test_from_patient_partial_or_missing_values() -> None:
    p = from_patient({"resourceType": "Patient", "birthDate": "1965-03", "name": [{"family": "Lane"}]}, "lab", "lab|1")
    assert p.birth_date is None and p.family == "LANE" and p.given is None and p.phone is None
    empty = from_patient({"resourceType": "Patient"}, "lab", "lab|2")
    assert empty.family is None and empty.birth_date is None


def test_from_patient_non_us_address() -> None:
    p = from_patient(_patient(address=[{"use": "home", "line": ["10 Downing Street"], "city": "London",
                                        "postalCode": "SW1A 2AA", "country": "GB"}]), "ehr", "ehr|E1")
    assert p.postal_code == "SW1A2AA" and p.address_line == "10 DOWNING ST"


def test_from_row_any_subset_of_columns() -> None:
    p = from_row({"record_id": "7", "given_name": "Mary Ann", "family_name": "O'Neil", "birth_date": "31/12/1980",
                  "postal_code": "60601-9999", "phone": "", "extra": "ignored"}, "csv|7")
    assert (p.given, p.middle, p.family) == ("MARY", "ANN", "ONEIL")
    assert p.birth_date == date(1980, 12, 31) and p.postal_code == "60601" and p.phone is None
    blank = from_row({}, "csv|8")
    assert blank.family is None and blank.record_key == "csv|8" and blank.source == "csv"
