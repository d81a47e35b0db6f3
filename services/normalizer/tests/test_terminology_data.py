"""The shipped maps and the package code sets: every row checkable offline is checked."""

from __future__ import annotations

import csv
import json

import pytest

from carelake_normalizer.terminology import MapStore, normalize_resource
from carelake_normalizer.terminology import systems as S
from carelake_normalizer.terminology.maps import DATA_DIR, MAP_COLUMNS, read_manifest
from carelake_simulator import codes

MANIFEST = read_manifest(DATA_DIR)


@pytest.fixture(scope="module")
def store() -> MapStore:
    return MapStore(None)


def rows(entry: dict) -> list[dict[str, str]]:
    with (DATA_DIR / entry["file"]).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == MAP_COLUMNS
        return list(reader)


def test_manifest_lists_every_csv_once() -> None:
    files = sorted(p.name for p in DATA_DIR.glob("*.csv"))
    assert sorted(e["file"] for e in MANIFEST) == files
    assert len({e["name"] for e in MANIFEST}) == len(MANIFEST)
    assert all(e["version"] and e["source"] for e in MANIFEST)
    json.loads((DATA_DIR / "manifest.json").read_text())  # plain JSON, no comments


@pytest.mark.parametrize("entry", MANIFEST, ids=lambda e: e["name"])
def test_every_curated_row_is_well_formed_and_cited(entry: dict) -> None:
    seen = set()
    for r in rows(entry):
        assert r["source_code"] and r["source_code"] not in seen, r
        seen.add(r["source_code"])
        system = entry["target_system"]
        if system == "procedure":
            system = S.procedure_system(r["target_code"])
        assert S.format_ok(system, r["target_code"]), r  # LOINC: shape and check digit
        assert r["target_display"].strip() == r["target_display"] and r["target_display"], r
        assert r["citation"] and r["checked"], r
        if system == S.LOINC:
            assert f"https://loinc.org/{r['target_code']}" in r["citation"]
    assert seen


def test_curated_ndcs_are_listed_in_the_fda_directory(store: MapStore) -> None:
    (entry,) = [e for e in MANIFEST if e["name"] == "ndc-rxnorm"]
    directory = store.ndc_directory
    assert directory is not None and directory.info.origin == "package"
    for r in rows(entry):
        assert S.format_ok(S.NDC, r["source_code"]), r
        assert r["source_code"] in directory.status, r
        hyphenated = r["citation"].split("package ")[1].split()[0]
        assert S.ndc11(hyphenated) == r["source_code"]  # the cited package is the row's NDC


def test_curated_maps_cover_what_the_simulator_sends(store: MapStore) -> None:
    ndc = store.map_for(S.NDC).rows
    for d in codes.DRUGS.values():
        assert ndc[d.ndc.code].code == d.rxnorm.code
    lab = store.map_for(S.local_system("lab")).rows
    assert set(lab) == set(codes.LOCAL_LAB_CODES)
    for local, (_, key) in codes.LOCAL_LAB_CODES.items():
        assert (lab[local].system, lab[local].code) == (S.LOINC, codes.LABS[key].code.code)
    proc = store.map_for(S.local_system("billing")).rows
    assert set(proc) == set(codes.LOCAL_PROCEDURE_CODES)
    for local, (_, std) in codes.LOCAL_PROCEDURE_CODES.items():
        assert proc[local].code == std
        assert proc[local].system == (S.HCPCS if std.startswith("G") else S.CPT)


def test_simulator_icd10_codes_are_valid_and_billable(store: MapStore) -> None:
    used = {c.code for group in (*codes.CONDITION_CODES.values(), codes.DIABETES_COMPLICATIONS,
                                 *codes.ACUTE_CODES.values()) for c in group}
    for code in sorted(used):
        entry = store.icd10cm.entries[code.replace(".", "")]
        assert entry.billable and entry.dotted == code


def test_simulator_icd9_codes_map_back_to_icd10(store: MapStore) -> None:
    for icd10, icd9 in codes.ICD9_EQUIVALENTS.items():
        d = {"resourceType": "Condition", "code": {"coding": [{"system": S.ICD9CM, "code": icd9.code}]}}
        flags = normalize_resource(d, "claims", store=store)
        assert {f.flag for f in flags} <= {"approximate_map"}, (icd9.code, flags)
        added = d["code"]["coding"][0]
        assert added["system"] == S.ICD10CM and store.icd10cm.entries[added["code"].replace(".", "")].billable
        if not flags:  # an exact GEM row: it must be the code the simulator started from
            assert added["code"] == icd10, icd9.code


@pytest.mark.parametrize(("sim_system", "system"), [
    ("ICD10CM", S.ICD10CM), ("LOINC", S.LOINC), ("NDC", S.NDC), ("CVX", S.CVX), ("CPT", S.CPT)])
def test_simulator_planted_invalid_codes_are_caught(store: MapStore, sim_system: str, system: str) -> None:
    for code in codes.INVALID_CODES[sim_system]:
        d = {"resourceType": "Observation", "code": {"coding": [{"system": system, "code": code}]}}
        assert [f.flag for f in normalize_resource(d, "test", store=store)] == ["invalid_code"], code


def test_package_code_sets_are_what_sources_md_says(store: MapStore) -> None:
    t10 = store.icd10cm
    assert t10.info.version == "2026-04-01"
    assert sum(e.billable for e in t10.entries.values()) == 74_719  # leaves of the April 1, 2026 tabular (FY2026)
    t9 = store.icd9cm
    assert len(t9.codes) == 14_567 and t9.gem_info.rows == 23_912
    assert len(store.ndc_directory.status) == 243_941


def test_known_check_digits_and_ndc_forms() -> None:
    assert [S.loinc_check_digit(n) for n in ("4548", "2345", "718", "98979", "51990")] == [4, 7, 7, 8, 0]
    assert S.ndc11("0087-6060-05") == "00087606005"  # 4-4-2
    assert S.ndc11("12345-678-90") == "12345067890"  # 5-3-2
    assert S.ndc11("12345-6789-0") == "12345678900"  # 5-4-1
    assert S.ndc11("12345-6789-01") == "12345678901"  # 5-4-2
    assert S.ndc11("1234567890") is None  # bare 10 digits without a list: ambiguous
    assert S.ndc11("1234567890", known=lambda c: c == "12345067890") == "12345067890"
    assert S.icd9cm_dotted("25000") == "250.00" and S.icd9cm_dotted("E8889") == "E888.9"
