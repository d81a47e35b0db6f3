"""HL7 DTM/TS/DT values to FHIR date/dateTime/instant, in UTC, at the precision sent.

* ``YYYY``, ``YYYYMM``, ``YYYYMMDD`` (no time): a FHIR date at that precision, never shifted.
* With a time: an instant in UTC ("...Z"). An explicit ``+/-ZZZZ`` offset is used; without one
  the source's zone is assumed (DST-aware through ZoneInfo) and ``assumed_tz`` says so. Missing
  minutes/seconds are zero-filled (FHIR needs seconds once there is a time); ``precision``
  keeps what was sent.
* Impossible values (month 13, Feb 30, hour 25, offset +2500) raise ``TimeError``.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo

_DTM = re.compile(r"(\d{4}|\d{6}|\d{8}|\d{10}|\d{12}|\d{14})(?:\.(\d{1,6}))?([+-]\d{4})?")
_PRECISION = {4: "year", 6: "month", 8: "day", 10: "hour", 12: "minute", 14: "second"}
_OFFSETS: dict[str, tzinfo] = {}


class TimeError(ValueError):
    """Not a valid HL7 date/time: wrong shape or an impossible value."""


@dataclass(frozen=True, slots=True)
class TimeValue:
    value: str  # FHIR date ("2026", "2026-01", "2026-01-15") or UTC dateTime ("...T14:30:05Z")
    precision: str  # year | month | day | hour | minute | second | fraction
    assumed_tz: bool  # a time without an offset, read in the source's zone
    at: datetime  # the start of the value as an aware UTC datetime (dates: local midnight)
    zone: str  # the zone the value was read in: the offset as sent ("-0600") or a zone name

    @property
    def has_time(self) -> bool:
        return "T" in self.value

    def instant(self) -> str | None:
        """The value as a FHIR instant (needs a time to the second), else None."""
        return self.value if self.precision in ("second", "fraction") else None


_CACHE: dict[tuple[str, tzinfo, str | None], TimeValue] = {}
CACHE_LIMIT = 20_000


def parse_ts(text: str, tz: tzinfo, zone_name: str | None = None) -> TimeValue:
    """An HL7 DTM/TS (component 1) as a FHIR date or UTC dateTime; TimeError if impossible.

    Results are remembered (a message repeats its timestamps: OBX-14, OBR-7, MSH-7...).
    """
    k = (text, tz, zone_name)
    found = _CACHE.get(k)
    if found is None:
        found = _parse_ts(text, tz, zone_name)
        if len(_CACHE) >= CACHE_LIMIT:
            _CACHE.clear()
        _CACHE[k] = found
    return found


def _parse_ts(text: str, tz: tzinfo, zone_name: str | None) -> TimeValue:
    m = _DTM.fullmatch(text.strip())
    if m is None:
        raise TimeError(f"{_shape(text)} is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])")
    digits, frac, offset = m.groups()
    n = len(digits)
    if frac and n != 14:
        raise TimeError("fractional seconds without seconds")
    year, month, day, hour, minute, second = _fields(digits)
    if n <= 8:  # a date: kept at its precision, never shifted by a zone
        local = datetime(year, month, day, tzinfo=tz)
        value = digits[:4] + (f"-{digits[4:6]}" if n >= 6 else "") + (f"-{digits[6:8]}" if n == 8 else "")
        return TimeValue(value, _PRECISION[n], offset is None, local.astimezone(UTC),
                         offset or zone_name or str(tz))
    micro = int(frac.ljust(6, "0")) if frac else 0
    if offset is not None:
        zone: tzinfo = _offset(offset)
    else:
        zone = tz
    local = datetime(year, month, day, hour, minute, second, micro, tzinfo=zone)
    at = local.astimezone(UTC)
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        stamp += "." + f"{at.microsecond:06d}"[: len(frac)]
    return TimeValue(stamp + "Z", "fraction" if frac else _PRECISION[n], offset is None, at,
                     offset or zone_name or str(tz))


def parse_date(text: str) -> str:
    """An HL7 DT/DTM as a FHIR date at its precision, the time (if any) checked and dropped.

    For birth dates and the like: the calendar date as written, never shifted to UTC.
    """
    m = _DTM.fullmatch(text.strip())
    if m is None:
        raise TimeError(f"{_shape(text)} is not an HL7 date (YYYY[MM[DD]])")
    digits, frac, offset = m.groups()
    if frac and len(digits) != 14:
        raise TimeError("fractional seconds without seconds")
    _fields(digits)
    if offset is not None:
        _offset(offset)
    n = min(len(digits), 8)
    return digits[:4] + (f"-{digits[4:6]}" if n >= 6 else "") + (f"-{digits[6:8]}" if n == 8 else "")


def _fields(digits: str) -> tuple[int, int, int, int, int, int]:
    n = len(digits)
    year = int(digits[:4])
    month = int(digits[4:6]) if n >= 6 else 1
    day = int(digits[6:8]) if n >= 8 else 1
    hour = int(digits[8:10]) if n >= 10 else 0
    minute = int(digits[10:12]) if n >= 12 else 0
    second = int(digits[12:14]) if n >= 14 else 0
    if year < 1:
        raise TimeError("year 0000 does not exist")
    if not 1 <= month <= 12:
        raise TimeError(f"month {month:02d} does not exist")
    last = calendar.monthrange(year, month)[1]
    if not 1 <= day <= last:
        raise TimeError(f"day {day:02d} does not exist in {year:04d}-{month:02d}")
    if hour > 23 or minute > 59 or second > 59:
        raise TimeError(f"time {hour:02d}:{minute:02d}:{second:02d} does not exist")
    return year, month, day, hour, minute, second


def _offset(text: str) -> tzinfo:
    found = _OFFSETS.get(text)
    if found is None:
        hours, minutes = int(text[1:3]), int(text[3:5])
        if hours > 14 or minutes > 59 or (hours == 14 and minutes):
            raise TimeError(f"UTC offset {text} does not exist")
        delta = timedelta(hours=hours, minutes=minutes)
        found = timezone(-delta if text[0] == "-" else delta)
        _OFFSETS[text] = found
    return found


def _shape(text: str) -> str:
    """Describe a bad value without quoting it (it may be PHI): its length and character classes."""
    kinds = sorted({"digits" if c.isdigit() else "letters" if c.isalpha() else "symbols" for c in text})
    return f"a {len(text)}-character value ({', '.join(kinds) or 'empty'})"
