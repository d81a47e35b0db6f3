"""A simulated day end to end: clean messages become valid FHIR, planted defects become rejections.

The simulator records every defect it plants (FeedRecord.defects, the day's _truth/defects.csv);
each must surface as a MappingError or a PartRejected with the right reason, or — for defects
that are data, not damage (local codes, missing birth dates, times without a zone) — as what a
reader of Silver can see.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from zoneinfo import ZoneInfo

import pytest

from carelake_normalizer import validate as validation
from carelake_normalizer.core import EXT_TIMEZONE_ASSUMED, MappingError, MapResult
from carelake_simulator import codes

CHICAGO = ZoneInfo("America/Chicago")

# What each planted way of breaking a message must become.
MALFORMED = {
    "malformed:garbage": {"not_hl7"},
    "malformed:bad_header": {"bad_header"},
    "malformed:unsupported_version": {"unsupported_version"},
    "malformed:no_segments": {"no_segment_separators"},
    # Cut at a segment boundary the message looks complete but lacks a required segment; cut
    # inside a last segment it loses that segment (or the damaged value is rejected).
    "malformed:truncated": {"truncated", "missing_segment", "invalid_date", "invalid_value"},
}
EXPECTED_TYPES = {
    "ADT^A01": {"Patient", "RelatedPerson", "Encounter", "Condition", "Coverage"},
    "ADT^A03": {"Patient", "RelatedPerson", "Encounter", "Condition", "Coverage"},
    "ADT^A04": {"Patient", "RelatedPerson", "Encounter", "Condition", "Coverage"},
    "ADT^A08": {"Patient", "RelatedPerson", "Encounter", "Condition", "Coverage"},
    "ADT^A40": {"Patient"},
    "ORU^R01": {"Patient", "Observation", "DiagnosticReport"},
    "VXU^V04": {"Patient", "Immunization"},
    "SIU^S12": {"Patient", "Appointment"}, "SIU^S15": {"Patient", "Appointment"},
    "SIU^S26": {"Patient", "Appointment"},
    "DFT^P03": {"Patient", "ChargeItem"},
}
# Populated fields of the simulator's messages that no mapping reads: the known coverage gaps.
KNOWN_GAPS = {
    "ORC-1", "ORC-12", "OBR-16",  # order control and ordering provider: no ServiceRequest is emitted
    "PV1-2", "PV1-3", "PV1-7", "PV1-44",  # ORU/DFT PV1 is only a pointer to the ADT's Encounter
    "SCH-12", "SCH-16", "SCH-20",  # placer/filler contacts and entered-by person
    "SCH-6",  # the event reason of a booking (kept only as the reason for a cancellation / no-show)
}


def _map(record) -> MapResult | MappingError:  # noqa: ANN001
    from carelake_normalizer.hl7v2 import map_hl7v2

    try:
        return map_hl7v2(record.payload, source=record.source, tz=CHICAGO, raw_id=record.message_id)
    except MappingError as exc:
        return exc


@pytest.fixture(scope="module")
def day(hl7_day):  # noqa: ANN001, ANN201
    return [(r, _map(r)) for r in hl7_day]


@pytest.fixture(scope="module")
def messy_day(messy_hl7_day):  # noqa: ANN001, ANN201
    return [(r, _map(r)) for r in messy_hl7_day]


def _malformed(record) -> str | None:  # noqa: ANN001
    return next((d for d in record.defects if d.startswith("malformed:")), None)


def test_every_clean_message_maps_to_valid_fhir_with_nothing_rejected(day) -> None:
    clean = [(r, out) for r, out in day if _malformed(r) is None]
    assert len(clean) > 800
    kinds = Counter()
    for record, out in clean:
        assert isinstance(out, MapResult), (record.message_id, out)
        assert out.rejected == [], (record.message_id, out.rejected)
        assert {m.resource_type for m in out.resources} <= EXPECTED_TYPES[record.kind]
        assert "Patient" in {m.resource_type for m in out.resources}
        kinds[record.kind] += 1
        for m in out.resources:
            assert m.id == m.resource["id"] and m.resource_type == m.resource["resourceType"]
            assert m.security_labels and m.resource["meta"]["security"]
            assert m.event_time is None or m.event_time.utcoffset().total_seconds() == 0
    assert {"ADT^A01", "ADT^A03", "ADT^A04", "ADT^A08", "ADT^A40", "ORU^R01", "VXU^V04", "SIU^S12",
            "SIU^S15", "SIU^S26", "DFT^P03"} <= set(kinds)


def test_clean_resources_also_pass_whole_uncached_validation(day) -> None:
    checked = 0
    for _record, out in day[::7]:
        if isinstance(out, MapResult):
            for m in out.resources:
                assert validation.validate(m.resource, memo=False) is None
                checked += 1
    assert checked > 500


def test_every_planted_malformation_is_rejected_with_its_reason(messy_day) -> None:
    seen: Counter[str] = Counter()
    for record, out in messy_day:
        how = _malformed(record)
        if how is None:
            assert isinstance(out, MapResult) and out.rejected == [], (record.message_id, out)
            continue
        seen[how] += 1
        codes_found = {out.code} if isinstance(out, MappingError) else {p.reason_code for p in out.rejected}
        assert codes_found and codes_found <= MALFORMED[how], (record.message_id, how, out)
    assert set(seen) == set(MALFORMED) and min(seen.values()) >= 5


def test_rejection_reasons_never_quote_the_patient(messy_day) -> None:
    for record, out in messy_day:
        reasons = [out.reason] if isinstance(out, MappingError) else [p.reason for p in out.rejected]
        for reason in reasons:
            assert "example.com" not in reason and "^^^" not in reason, (record.message_id, reason)


def test_lab_messages_without_a_birth_date_still_map_without_one(messy_day) -> None:
    missing = [out for r, out in messy_day if "missing_dob" in r.defects and isinstance(out, MapResult)]
    assert missing
    for out in missing:
        patient = next(m.resource for m in out.resources if m.resource_type == "Patient")
        assert "birthDate" not in patient and "Patient.birthDate" not in out.resources[0].phi_paths


def test_local_lab_codes_and_invalid_codes_pass_through_as_given(messy_day) -> None:
    local, invalid_dx = 0, 0
    for record, out in messy_day:
        if not isinstance(out, MapResult):
            continue
        for m in out.resources:
            coding = m.resource.get("code", {}).get("coding", [{}])[0]
            if "local_code" in record.defects and m.resource_type == "Observation":
                local += coding.get("system") == "urn:carelake:local:lab:L"
            if "invalid_code:ICD10CM" in record.defects and m.resource_type == "Condition":
                invalid_dx += coding.get("code") in codes.INVALID_CODES["ICD10CM"]
    assert local > 0 and invalid_dx > 0


def test_times_without_a_zone_are_flagged_and_times_with_one_are_not(messy_day) -> None:
    flagged = unflagged = 0
    for record, out in messy_day:
        if not isinstance(out, MapResult) or not out.resources:
            continue
        assumed = any(e.get("url") == EXT_TIMEZONE_ASSUMED for m in out.resources
                      for e in m.resource.get("extension", []))
        if "timestamp_without_zone" in record.defects:
            assert out.meta["tz_assumed"] > 0, record.message_id
            # A merge's only times are MSH-7 and EVN-2 (message metadata): no resource to flag.
            assert assumed or record.kind == "ADT^A40", record.message_id
            flagged += 1
        else:
            assert out.meta["tz_assumed"] == 0 and not assumed, record.message_id
            unflagged += 1
    assert flagged > 5 and unflagged > 100


def test_one_registration_is_one_patient_id_across_messages(day) -> None:
    ids = defaultdict(set)
    for _record, out in day:
        if isinstance(out, MapResult):
            for m in out.resources:
                if m.resource_type == "Patient" and m.resource.get("active", True):
                    ids[m.source_patient_key].add(m.id)
    assert len(ids) > 300
    assert all(len(v) == 1 for v in ids.values())


def test_adt_events_of_one_visit_share_the_encounter_and_vitals_point_at_it(day) -> None:
    by_visit = defaultdict(set)
    adt_encounters, vitals_refs = set(), set()
    for record, out in day:
        if not isinstance(out, MapResult):
            continue
        for m in out.resources:
            if m.resource_type == "Encounter":
                by_visit[m.resource["identifier"][0]["value"]].add(m.id)
                adt_encounters.add(m.id)
            if record.source == "ehr" and m.resource_type == "Observation" and "encounter" in m.resource:
                vitals_refs.add(m.resource["encounter"]["reference"].split("/")[1])
    assert all(len(v) == 1 for v in by_visit.values())
    assert any(len(v) == 1 for v in by_visit.values())
    assert vitals_refs & adt_encounters


def test_merges_link_the_duplicate_to_the_surviving_registration(day) -> None:
    merges = [out for r, out in day if r.kind == "ADT^A40" and isinstance(out, MapResult)]
    assert merges
    for out in merges:
        surviving, retired = out.resources
        assert surviving.resource["link"][0] == {"other": {"reference": f"Patient/{retired.id}"}, "type": "replaces"}
        assert retired.resource["active"] is False


def test_coverage_gaps_are_counted_and_are_the_known_ones(day) -> None:
    unused: Counter[str] = Counter()
    for _record, out in day:
        if isinstance(out, MapResult):
            unused.update(out.unused)
            assert out.meta["fields_unused"] == sum(out.unused.values())
            assert out.meta["fields_populated"] > out.meta["fields_unused"]
    assert unused, "the simulator sends fields nobody maps; they must be counted"
    assert set(unused) <= KNOWN_GAPS, set(unused) - KNOWN_GAPS
