"""Deterministic ids and HL7 time values: what a replay and a reader of Silver rely on."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from carelake_normalizer.ids import key, resource_id
from carelake_normalizer.timeutil import TimeError, parse_date, parse_ts

CHICAGO = ZoneInfo("America/Chicago")
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def test_resource_id_is_deterministic_legal_and_depends_on_every_part() -> None:
    a = resource_id("ehr", "Patient", key("EHR", "E1"))
    assert a == resource_id("ehr", "Patient", key("EHR", "E1"))
    assert FHIR_ID.fullmatch(a)
    assert len({a, resource_id("lab", "Patient", key("EHR", "E1")), resource_id("ehr", "Encounter", key("EHR", "E1")),
                resource_id("ehr", "Patient", key("EHR", "E2"))}) == 4


def test_key_keeps_parts_apart_even_when_they_hold_the_separator() -> None:
    assert key("a|b", "c") != key("a", "b|c")
    assert key("a", None) == key("a", "")


@pytest.mark.parametrize(("text", "value", "precision"), [
    ("2026", "2026", "year"),
    ("202601", "2026-01", "month"),
    ("20260115", "2026-01-15", "day"),
    ("2026011508", "2026-01-15T14:00:00Z", "hour"),
    ("202601150830", "2026-01-15T14:30:00Z", "minute"),
    ("20260115083005", "2026-01-15T14:30:05Z", "second"),
    ("20260115083005.12", "2026-01-15T14:30:05.12Z", "fraction"),
])
def test_local_times_become_utc_at_the_precision_sent(text: str, value: str, precision: str) -> None:
    tv = parse_ts(text, CHICAGO)
    assert (tv.value, tv.precision) == (value, precision)


def test_an_explicit_offset_wins_over_the_source_zone_and_is_recorded() -> None:
    tv = parse_ts("20260115083005+0100", CHICAGO, "America/Chicago")
    assert tv.value == "2026-01-15T07:30:05Z"
    assert not tv.assumed_tz and tv.zone == "+0100"
    assert tv.at == datetime(2026, 1, 15, 7, 30, 5, tzinfo=UTC)


def test_a_time_without_offset_is_read_in_the_source_zone_with_daylight_saving() -> None:
    winter, summer = parse_ts("20260115120000", CHICAGO, "America/Chicago"), parse_ts("20260715120000", CHICAGO)
    assert winter.value == "2026-01-15T18:00:00Z" and winter.assumed_tz and winter.zone == "America/Chicago"
    assert summer.value == "2026-07-15T17:00:00Z"


def test_a_date_is_never_shifted_by_a_zone() -> None:
    assert parse_ts("19610304", ZoneInfo("Pacific/Kiritimati")).value == "1961-03-04"
    assert parse_date("196103042330-1200") == "1961-03-04"  # a birth time late in the day keeps its date
    assert parse_date("196103") == "1961-03"


@pytest.mark.parametrize("text", [
    "20260230", "20261301", "20260100", "2026011525", "202601150860", "20260115083060",
    "20230229", "0000", "20260115083005+2500", "2026-01-15", "2026011", "20260115.5", "abc", "",
])
def test_impossible_or_malformed_dates_raise_time_error(text: str) -> None:
    with pytest.raises(TimeError):
        parse_ts(text, CHICAGO)


def test_time_errors_do_not_quote_the_value() -> None:
    with pytest.raises(TimeError) as err:
        parse_ts("Smith1961", CHICAGO)
    assert "Smith" not in str(err.value)


def test_leap_day_is_a_real_date() -> None:
    assert parse_date("20240229") == "2024-02-29"
