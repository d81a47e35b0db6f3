"""Whatever bytes arrive, the flat mappings answer with a MapResult or a MappingError — never a crash.

``internal_error`` is a MappingError too (the guard around every mapping), but it means a bug: these
tests fail on it. Every resource a mapping returns has passed FHIR validation.
"""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carelake_normalizer import validate as validation
from carelake_normalizer.core import MappingError, MapResult
from carelake_normalizer.flat import map_flat

CHICAGO = ZoneInfo("America/Chicago")
PHARMACY_HEADER = (b"rx_number,fill_date,patient_id,last_name,first_name,dob,sex,zip,phone,ndc,drug_name,quantity,"
                   b"days_supply,refill_number,prescriber_npi,prescriber_name,pharmacy_npi\r\n")
PHARMACY_ROW = (b'RX2601150000065,2026-01-15,RX6014032,Lane,Charlene,1977-04-12,F,60123,7735810300,00597015230,'
                b'"Jardiance (empagliflozin) 10 mg tablet, bottle of 30",90,90,3,1134914260,"Wilkerson, Victor",'
                b'1071188993\r\n')
SDOH_HEADER = (b"area_id,state,area_deprivation_index,broadband_access_rate,food_insecurity_rate,no_vehicle_rate,"
               b"poverty_rate,uninsured_rate\r\n")
SDOH_ROW = b"62620,IL,0.194,0.89,0.076,0.053,0.114,0.05\r\n"
READING = (b'{"device_id":"DEV-042-0000444","measured_at":"2026-01-15T06:00:08Z","metric":"heart_rate",'
           b'"reading_id":"DEV-042-0000444-hr-0","sent_at":"2026-01-15T06:00:10.213Z","unit":"/min",'
           b'"user_id":"WU9b8a2f8039","value":62}')
TARGETS = (("pharmacy", "csv", PHARMACY_HEADER), ("public_health", "csv", SDOH_HEADER),
           ("pharmacy", "csv", None), ("wearables", "json", None), ("wearables", "ndjson", None),
           ("claims", "csv", None), ("ehr", "x12", None))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(payload: bytes, source: str, fmt: str, header: bytes | None) -> MapResult | None:
    try:
        result = map_flat(payload, source=source, fmt=fmt, tz=CHICAGO, raw_id="h", header=header)
    except MappingError as exc:
        assert exc.code != "internal_error", exc.reason
        return None
    for m in result.resources:
        assert validation.validate(m.resource, memo=False) is None
        json.dumps(m.resource, allow_nan=False)  # the envelope must be able to carry it
    return result


@SETTINGS
@given(payload=st.binary(max_size=400), target=st.sampled_from(TARGETS))
def test_random_bytes(payload: bytes, target: tuple) -> None:
    source, fmt, header = target
    _outcome(payload, source, fmt, header)


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for position, cut, insert in edits:
        at = position % (len(out) + 1)
        out[at:at + cut] = insert
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 4),
                           st.binary(max_size=4) | st.sampled_from([b",", b'"', b"\r\n", b"-", b"9", b"\x00", b"{",
                                                                    b"\xef\xbb\xbf", b"\xff"])),
                 min_size=1, max_size=5)


@SETTINGS
@given(edits=EDITS, which=st.sampled_from(["pharmacy", "sdoh"]), in_header=st.booleans())
def test_mutated_csv_rows_and_headers(edits: list, which: str, in_header: bool) -> None:
    source, header, row = (("pharmacy", PHARMACY_HEADER, PHARMACY_ROW) if which == "pharmacy"
                           else ("public_health", SDOH_HEADER, SDOH_ROW))
    if in_header:
        header = _mutate(header, edits)
    else:
        row = _mutate(row, edits)
    _outcome(row, source, "csv", header)
    _outcome(header + row + row, source, "csv", None)  # the same as a whole file


@SETTINGS
@given(edits=EDITS)
def test_mutated_json_readings(edits: list) -> None:
    _outcome(_mutate(READING, edits), "wearables", "json", None)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)


@SETTINGS
@given(values=st.dictionaries(st.sampled_from(["device_id", "measured_at", "metric", "reading_id", "sent_at",
                                               "unit", "user_id", "value", "extra"]), JSON_VALUES, max_size=8))
def test_readings_with_any_json_values(values: dict) -> None:
    doc = {**json.loads(READING), **values}
    _outcome(json.dumps(doc).encode(), "wearables", "json", None)
