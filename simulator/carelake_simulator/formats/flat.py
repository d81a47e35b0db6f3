"""The feeds that are neither HL7 v2 nor X12: the pharmacy's dispense CSV, the public-health SDOH
CSV, the wearables gateway's JSON events and the wearables vendor's daily enrollment roster CSV.

Pure functions of their inputs: the same values give the same bytes. The wearable renderer is on the
hot path (hundreds of thousands of events a day), so it builds one small dict and calls json.dumps.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, tzinfo
from typing import NamedTuple
from zoneinfo import ZoneInfo

from carelake_simulator.model import (
    Dispense,
    FeedFile,
    FeedRecord,
    FileRecord,
    Registration,
    SdohArea,
    WearableReading,
)

# The pharmacy system's daily dispense export, in column order.
PHARMACY_COLUMNS: tuple[str, ...] = (
    "rx_number", "fill_date", "patient_id", "last_name", "first_name", "dob", "sex", "zip", "phone",
    "ndc", "drug_name", "quantity", "days_supply", "refill_number", "prescriber_npi", "prescriber_name",
    "pharmacy_npi",
)
SDOH_ID_COLUMNS: tuple[str, ...] = ("area_id", "state")
# The wearables vendor's daily roster of enrolled users, in column order (a vendor's roster: no SSN,
# no street address).
ENROLLMENT_COLUMNS: tuple[str, ...] = (
    "user_id", "given_name", "family_name", "birth_date", "sex", "postal_code", "phone", "email", "device_id",
    "enrolled_at",
)
PHARMACY_TZ = ZoneInfo("America/Chicago")  # the pharmacy dates fills in its own (the region's) zone


def _csv_bytes(header: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    """RFC 4180 CSV with CRLF line endings (a Windows export), UTF-8, minimal quoting."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _registration(regs: Mapping[str, Registration], d: Dispense) -> Registration:
    # The feed builder keys registrations by rx number (a person may be filed under a duplicate
    # record for one fill); callers with one record per person key them by person id.
    reg = regs.get(d.rx_number)
    return reg if reg is not None else regs[d.person_id]


def _quantity(q: object) -> str:
    text = format(q, "f") if not isinstance(q, str) else q
    return text.rstrip("0").rstrip(".") if "." in text else text


def pharmacy_csv(dispenses: Sequence[Dispense], regs: Mapping[str, Registration], *, day: date,
                 created: datetime, tz: tzinfo = PHARMACY_TZ) -> FeedFile:
    """The pharmacy system's dispense export for ``day``: one row per fill, in the given order.

    ``patient_id`` is the pharmacy's own patient number (the registration's MRN); ``regs`` maps a
    dispense's rx number, or else its person id, to the pharmacy registration it was filled under.
    ``fill_date`` is the local date of the fill; ``dob`` is empty when the pharmacy has none.
    """
    rows: list[list[str]] = []
    records: list[FileRecord] = []
    for d in dispenses:
        reg = _registration(regs, d)
        demo = reg.demo
        prescriber = d.prescriber
        prescriber_name = f"{prescriber.family}, {prescriber.given}" if prescriber.given else prescriber.family
        rows.append([
            d.rx_number,
            d.filled.astimezone(tz).date().isoformat(),
            reg.mrn,
            demo.family,
            demo.given,
            demo.birth_date.isoformat() if demo.birth_date else "",
            demo.sex,
            demo.address.postal_code if demo.address else "",
            demo.phone or "",
            d.drug.code,
            d.drug.display,
            _quantity(d.quantity),
            str(d.days_supply),
            str(d.refill_number),
            prescriber.npi,
            prescriber_name,
            d.pharmacy_npi,
        ])
        records.append(FileRecord(record_id=d.rx_number, key=f"pharmacy|{reg.mrn}", person_id=d.person_id))
    return FeedFile(source="pharmacy", name=f"pharmacy_dispenses_{day:%Y%m%d}.csv", kind="pharmacy_csv",
                    sent_time=created, payload=_csv_bytes(PHARMACY_COLUMNS, rows), content_type="text/csv",
                    records=tuple(records))


class Enrollment(NamedTuple):
    """One device enrolled on a wearables user account."""

    reg: Registration  # the wearables registration: user id (its MRN) and the demographics the user gave
    device_id: str
    enrolled_at: datetime


def enrollment_csv(enrollments: Sequence[Enrollment], *, day: date, created: datetime) -> FeedFile:
    """The wearables vendor's roster for ``day``: one row per enrolled device, in the given order.

    ``user_id`` is the platform's user id (the registration's MRN, the ``user_id`` its readings carry);
    the demographics are the registration's, as the user typed them; ``enrolled_at`` is a UTC instant.
    """
    rows: list[list[str]] = []
    records: list[FileRecord] = []
    for e in enrollments:
        demo = e.reg.demo
        rows.append([
            e.reg.mrn,
            demo.given,
            demo.family,
            demo.birth_date.isoformat() if demo.birth_date else "",
            demo.sex,
            demo.address.postal_code if demo.address else "",
            demo.phone or "",
            demo.email or "",
            e.device_id,
            iso_utc(e.enrolled_at),
        ])
        records.append(FileRecord(record_id=e.reg.mrn, key=e.reg.key, person_id=e.reg.person_id))
    return FeedFile(source="wearables", name=f"enrollments_{day:%Y%m%d}.csv", kind="enrollment_csv",
                    sent_time=created, payload=_csv_bytes(ENROLLMENT_COLUMNS, rows), content_type="text/csv",
                    records=tuple(records))


def _measure(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def sdoh_csv(areas: Sequence[SdohArea], *, day: date, created: datetime) -> FeedFile:
    """Area-level social determinants: ``area_id`` (ZIP), ``state``, then one column per measure in
    name order (the union over all areas; empty where an area lacks one). Rows follow ``areas``."""
    measures = sorted({name for a in areas for name in a.measures})
    rows = [[a.area_id, a.state, *(_measure(a.measures.get(m)) for m in measures)] for a in areas]
    records = tuple(FileRecord(record_id=a.area_id, key=f"public_health|area:{a.area_id}") for a in areas)
    return FeedFile(source="public_health", name=f"sdoh_areas_{day:%Y%m%d}.csv", kind="sdoh_csv",
                    sent_time=created, payload=_csv_bytes((*SDOH_ID_COLUMNS, *measures), rows),
                    content_type="text/csv", records=records)


def iso_utc(t: datetime) -> str:
    """ISO-8601 in UTC with a ``Z``: seconds, or milliseconds when the instant has a fraction."""
    u = t if t.tzinfo is UTC else t.astimezone(UTC)
    # isoformat ends "+00:00" for an aware UTC instant; milliseconds are truncated, not rounded.
    return u.isoformat(timespec="milliseconds" if u.microsecond else "seconds")[:-6] + "Z"


def wearable_event(reading: WearableReading, reg: Registration | None, sent: datetime) -> FeedRecord:
    """One reading as the device gateway posts it: compact JSON, keys sorted, UTF-8.

    ``user_id`` is the wearables platform's own user id (the registration's MRN), or null for a
    device that was never enrolled; such a record is keyed by its device id.
    """
    # Keys are written in sorted order, so json.dumps need not sort them (same bytes, less work).
    body = {
        "device_id": reading.device_id,
        "measured_at": iso_utc(reading.measured),
        "metric": reading.metric,
        "reading_id": reading.reading_id,
        "sent_at": iso_utc(sent),
        "unit": reading.unit,
        "user_id": reg.mrn if reg is not None else None,
        "value": reading.value,
    }
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    key = f"wearables|{reg.mrn}" if reg is not None else f"wearables|device:{reading.device_id}"
    return FeedRecord(source="wearables", kind="wearable", message_id=reading.reading_id,
                      event_time=reading.measured, sent_time=sent, key=key, payload=payload,
                      content_type="application/json", person_id=reading.person_id)
