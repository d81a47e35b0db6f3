"""Area-level social determinants (public health's SDOH CSV) to a Location per area + one Observation per measure.

The export has no patient: each row is an area (``area_id``, a 5-digit ZIP in the simulator, and
``state``) and its measures, one column each. An area becomes a Location (physicalType ``area``,
id from (source, "area", area_id), the ZIP as address.postalCode); each populated known measure an
Observation with category ``social-history`` whose subject is that Location (R4 Observation.subject
may reference a Location) and a valueQuantity in UCUM.

Codes: LOINC's SDOH content (the Gravity Project's, US Core's SDOH assessments) codes questions asked
of a person — e.g. 88122-7, 88123-5 (Hunger Vital Sign), 93030-5 (PRAPARE transportation) — not rates
measured over a population, and we found no LOINC term for a ZIP-level poverty, food-insecurity,
no-vehicle, uninsured or broadband rate, or for an area deprivation index. Using a person-level code for
an area rate would misstate what was observed, so every measure is coded in our own system
``urn:carelake:sdoh-measure`` (code = the export's column name) until a standard code is chosen.

Units: the ``*_rate`` columns are fractions (0.114) and are written as percent (11.4, UCUM ``%``);
values outside 0–1 are rejected as implausible. ``area_deprivation_index`` is dimensionless (UCUM
``1``), kept as sent (the simulator's is 0–1; the Neighborhood Atlas publishes 1–100 percentiles):
0–100 accepted. Measure columns this table does not know are counted in ``MapResult.unused``, not
mapped: their unit and scale are unknown.

Ids: Observation = (source, "sdoh", area_id, measure). The row carries no date, so the id holds no
date: a later file's value for the same area and measure replaces the earlier one (a current
estimate, not a time series), and the Observation has no effective time.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from carelake_normalizer.core import MappingError, PartError
from carelake_normalizer.flat.common import (
    OBSERVATION_CATEGORY,
    UCUM,
    Builder,
    Header,
    count_unused,
    id_system,
    json_number,
    number,
    row_getter,
)

SDOH_MEASURE = "urn:carelake:sdoh-measure"
LOCATION_TYPE = "http://terminology.hl7.org/CodeSystem/location-physical-type"
REQUIRED = ("area_id",)


@dataclass(frozen=True, slots=True)
class Measure:
    display: str
    percent: bool  # a 0-1 fraction written as %; else a dimensionless value kept as sent
    high: Decimal  # the highest plausible value as sent


MEASURES: dict[str, Measure] = {
    "area_deprivation_index": Measure("Area deprivation index", False, Decimal(100)),
    "poverty_rate": Measure("Residents below the federal poverty level [%]", True, Decimal(1)),
    "food_insecurity_rate": Measure("Residents who are food insecure [%]", True, Decimal(1)),
    "no_vehicle_rate": Measure("Households with no vehicle available [%]", True, Decimal(1)),
    "uninsured_rate": Measure("Residents without health insurance [%]", True, Decimal(1)),
    "broadband_access_rate": Measure("Households with broadband internet access [%]", True, Decimal(1)),
}
COLUMNS = frozenset({"area_id", "state", *MEASURES})
_HUNDRED = Decimal(100)


def map_row(b: Builder, header: Header, values: list[str]) -> None:
    get = row_getter(header, values)
    count_unused(b, header, values, COLUMNS)
    area = get("area_id")
    if not area:
        raise MappingError("missing_field", "area_id is empty: the row cannot be attributed to an area", "area_id")
    location_id = b.rid("Location", "area", area)
    location: dict = {"resourceType": "Location", "id": location_id,
                      "identifier": [{"system": id_system(b.source, "area"), "value": area}],
                      "mode": "instance",
                      "physicalType": {"coding": [{"system": LOCATION_TYPE, "code": "area", "display": "Area"}]}}
    address: dict = {}
    if len(area) == 5 and area.isdigit() and area.isascii():
        address["postalCode"] = area
    state = get("state")
    if state:
        address["state"] = state
    if address:
        location["address"] = address
    b.emit(location, patient_key=None, event_time=None, label="Location")
    subject = f"Location/{location_id}"
    for name in header.names:  # file order, so resources come out in the export's column order
        measure = MEASURES.get(name)
        text = get(name) if measure is not None else ""
        if not text:
            continue
        try:
            b.emit(_observation(b, area, name, measure, text, subject), patient_key=None, event_time=None,
                   label=f"Observation {name}")
        except PartError as exc:
            b.rejected_part(exc, "Observation")


def _observation(b: Builder, area: str, name: str, measure: Measure, text: str, subject: str) -> dict:
    value = number(text)
    if value is None:
        raise PartError("invalid_value", f"{name} is not a number", name)
    if not Decimal(0) <= value <= measure.high:
        raise PartError("implausible_value", f"{name} is outside 0-{measure.high}", "Observation.valueQuantity")
    if measure.percent:
        quantity = {"value": json_number(value * _HUNDRED), "unit": "%", "system": UCUM, "code": "%"}
    else:
        quantity = {"value": json_number(value), "unit": "index", "system": UCUM, "code": "1"}
    return {
        "resourceType": "Observation", "id": b.rid("Observation", "sdoh", area, name), "status": "final",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "social-history",
                                  "display": "Social History"}]}],
        "code": {"coding": [{"system": SDOH_MEASURE, "code": name, "display": measure.display}],
                 "text": measure.display},
        "subject": {"reference": subject},
        "valueQuantity": quantity,
    }
