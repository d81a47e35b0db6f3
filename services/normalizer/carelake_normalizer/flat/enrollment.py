"""The wearables vendor's daily enrollment roster (one CSV row per enrolled device) to Patient and Device.

The readings carry a user id and no demographics; the roster is where the vendor says who its users
are, so it is what lets the MPI link a wearables user to the person the other systems know.

Columns, located by name (the simulator's order: ``formats/flat.py`` ENROLLMENT_COLUMNS):

| column | becomes |
|---|---|
| user_id (required) | Patient id and identifier (``urn:carelake:<source>:id:user``, type PI); the source patient key |
| given_name, family_name | Patient.name (given split on spaces) |
| birth_date | Patient.birthDate (a calendar date, never shifted) |
| sex | Patient.gender (M/F/O/U, as the pharmacy export reads it) |
| postal_code | Patient.address: postalCode only (the roster holds no street address) |
| phone, email | Patient.telecom (phone ``mobile``: what a user gives an app; email) |
| device_id | Device id and identifier, Device.patient |
| enrolled_at | the Device's event time (when the device joined the account) |

``enrolled_at`` is not written into the Device: R4 has no element for it, and a date tied to a
person is PHI that an extension would carry untagged.

Ids are the ones the readings use (wearables.py), so the roster fills in what the readings point at:
Patient = (source, "", user_id), Device = (source, "device", device_id); both carry the readings'
source patient key ``<source>|<user_id>``.

Outcomes: an empty user_id → MappingError ``missing_field`` (the row names no one); an impossible
birth_date → the Patient is a PartRejected ``invalid_date`` (where ``birth_date``); an impossible
enrolled_at → the Device is a PartRejected ``invalid_date`` (where ``enrolled_at``). An empty
device_id gives the Patient alone.
"""

from __future__ import annotations

from carelake_normalizer.core import MappingError, PartError
from carelake_normalizer.flat.common import (
    V2_0203,
    Builder,
    Header,
    count_unused,
    id_system,
    iso_time,
    row_getter,
    row_patient,
)

REQUIRED = ("user_id",)
COLUMNS = frozenset({"user_id", "given_name", "family_name", "birth_date", "sex", "postal_code", "phone", "email",
                     "device_id", "enrolled_at"})


def map_row(b: Builder, header: Header, values: list[str]) -> None:
    """One roster row into ``b`` (MappingError when it names no user)."""
    get = row_getter(header, values)
    count_unused(b, header, values, COLUMNS)
    user = get("user_id")
    if not user:
        raise MappingError("missing_field", "user_id is empty: the enrollment cannot be attributed to a user",
                           "user_id")
    source = b.source
    patient_id = b.rid("Patient", "", user)
    patient_key = f"{source}|{user}"
    try:
        b.emit(_patient(patient_id, user, source, get), patient_key=patient_key, event_time=None, label="Patient")
    except PartError as exc:
        b.rejected_part(exc, "Patient")

    device = get("device_id")
    if not device:
        return
    try:
        enrolled = get("enrolled_at")
        at = iso_time(enrolled, b.tz, b.zone_name, "enrolled_at").at if enrolled else None
        res = {"resourceType": "Device", "id": b.rid("Device", "device", device),
               "identifier": [{"system": id_system(source, "device"), "value": device}],
               "patient": {"reference": f"Patient/{patient_id}"}}
        b.emit(res, patient_key=patient_key, event_time=at, label="Device")
    except PartError as exc:
        b.rejected_part(exc, "Device")


def _patient(patient_id: str, user: str, source: str, get) -> dict:  # noqa: ANN001 - get(column) -> str
    ident = {"system": id_system(source, "user"), "value": user, "type": {"coding": [{"system": V2_0203, "code": "PI"}]}}
    return row_patient(patient_id, ident, get, family="family_name", given="given_name", sex="sex",
                       birth="birth_date", postal="postal_code", phone_use="mobile", email="email")
