"""The curated code tables: shapes, check digits, cross-references, and the planted invalid codes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from carelake_simulator import codes
from carelake_simulator.model import Coding

ICD10 = codes.ICD10CM_PATTERN


def all_icd10() -> list[Coding]:
    out = [c for group in codes.CONDITION_CODES.values() for c in group]
    out += list(codes.DIABETES_COMPLICATIONS)
    out += [c for group in codes.ACUTE_CODES.values() for c in group]
    return out


def all_loinc() -> list[Coding]:
    out = [t.code for t in codes.LABS.values()] + [t.code for t in codes.VITALS.values()]
    out += [panel for panel, _ in codes.LAB_PANELS.values()]
    out += [coding for coding, _ in codes.WEARABLE_METRICS.values()]
    return out


# ---- the published check-digit algorithms ---------------------------------------------------


@pytest.mark.parametrize("code", [
    "4548-4", "2345-7", "2160-0", "718-7", "8480-6", "8462-4", "8867-4", "29463-7", "39156-5",
    "51990-0", "24331-1", "57021-8", "98979-8", "62238-1", "33914-3", "17861-6", "12345-5",
])
def test_loinc_check_digit_accepts_known_codes(code: str) -> None:
    # 12345-5 is the worked example in the LOINC users' guide.
    assert codes.loinc_check_digit_ok(code)


@pytest.mark.parametrize("code", [
    "4548-5", "2345-8", "718-6", "12345-6", "4548", "4548-", "-4", "45484", "4548-44", "A548-4", "",
    "12345678-9",
])
def test_loinc_check_digit_rejects_bad_codes(code: str) -> None:
    assert not codes.loinc_check_digit_ok(code)


def test_loinc_check_digit_of_worked_example() -> None:
    assert codes.loinc_check_digit("12345") == 5


def test_npi_check_digit_matches_cms_example() -> None:
    # CMS's NPI check-digit example: 123456789 -> check digit 3.
    assert codes.npi_check_digit("123456789") == 3
    assert codes.npi_check_digit_ok("1234567893")
    for bad in ("1234567890", "123456789", "12345678931", "3234567893", "0234567893", "12345678A3"):
        assert not codes.npi_check_digit_ok(bad)


def test_make_npi_is_valid_deterministic_and_one_to_one() -> None:
    seeds = [0, 1, 2, 999, 1000, 1001, 2000, 3000, 4000, 4400, 8000, 9000, 9049, 10**8 - 1, 10**8, 2 * 10**8 - 1]
    npis = [codes.make_npi(s) for s in seeds]
    assert all(codes.npi_check_digit_ok(n) for n in npis)
    assert len(set(npis)) == len(npis)
    assert npis == [codes.make_npi(s) for s in seeds]
    assert codes.make_npi(0)[0] == "1" and codes.make_npi(10**8)[0] == "2"
    block = {codes.make_npi(s) for s in range(1000, 6000)}
    assert len(block) == 5000
    with pytest.raises(ValueError):
        codes.make_npi(-1)
    with pytest.raises(ValueError):
        codes.make_npi(2 * 10**8)


# ---- shapes of every standard code -----------------------------------------------------------


def test_every_loinc_passes_its_check_digit() -> None:
    for c in all_loinc():
        assert c.system == "LOINC"
        assert codes.loinc_check_digit_ok(c.code), c


def test_every_icd10_code_is_well_formed() -> None:
    for c in all_icd10():
        assert c.system == "ICD10CM"
        assert ICD10.match(c.code), c
        assert c.display and c.display == c.display.strip()
    assert ICD10.match("Z00.00")  # the fallback diagnosis day.py uses


def test_icd10_codes_have_one_display_each() -> None:
    seen: dict[str, str] = {}
    for c in all_icd10():
        assert seen.setdefault(c.code, c.display) == c.display, c.code


def test_icd9_equivalents_map_known_codes_to_icd9() -> None:
    known = {c.code for c in all_icd10()}
    assert set(codes.ICD9_EQUIVALENTS) <= known
    for code, icd9 in codes.ICD9_EQUIVALENTS.items():
        assert icd9.system == "ICD9CM"
        assert icd9.code[:1].isdigit() or icd9.code[:1] in "VE", icd9
        body = icd9.code.replace(".", "")
        assert body.isalnum() and 3 <= len(body) <= 5, icd9
    # every condition has at least one mappable code for legacy billers, except the post-2018 ones
    for key, group in codes.CONDITION_CODES.items():
        assert any(c.code in codes.ICD9_EQUIVALENTS for c in group), key


def test_ndc_drug_shapes() -> None:
    for key, drug in codes.DRUGS.items():
        assert drug.key == key
        assert drug.ndc.system == "NDC" and codes.NDC11_PATTERN.match(drug.ndc.code), drug
        assert drug.rxnorm.system == "RXNORM" and drug.rxnorm.code.isdigit(), drug
        assert drug.condition in codes.CONDITION_CODES, drug
        assert drug.days_supply and all(d > 0 for d in drug.days_supply)
        assert drug.units_per_day > 0
        assert drug.ndc.display and drug.rxnorm.display


def test_vaccine_code_shapes() -> None:
    for key, v in codes.VACCINES.items():
        assert v.key == key
        assert v.cvx.system == "CVX" and codes.CVX_PATTERN.match(v.cvx.code), v
        assert v.mvx.system == "MVX" and codes.MVX_PATTERN.match(v.mvx.code), v
        assert v.cpt.system == "CPT" and codes.CPT_PATTERN.match(v.cpt.code), v
        assert isinstance(v.dose_ml, Decimal) and v.dose_ml > 0
    assert codes.VACCINES["influenza"].season


def test_procedure_code_shapes() -> None:
    for group in codes.VISIT_CPT.values():
        for c in group:
            pattern = codes.CPT_PATTERN if c.system == "CPT" else codes.HCPCS_PATTERN
            assert c.system in ("CPT", "HCPCS") and pattern.match(c.code), c
    for c in codes.LAB_CPT.values():
        assert c.system == "CPT" and codes.CPT_PATTERN.match(c.code), c
    cpt_like = {c.code for g in codes.VISIT_CPT.values() for c in g} | {c.code for c in codes.LAB_CPT.values()}
    for local_code, (coding, std) in codes.LOCAL_PROCEDURE_CODES.items():
        assert coding.system == "LOCAL" and coding.code == local_code
        assert std in cpt_like, std


def test_visit_levels_are_ordered() -> None:
    # day.py indexes these tuples by level (e.g. [2:] = level 3 and up, [2] = 99213).
    assert codes.VISIT_CPT["established_outpatient"][2].code == "99213"
    assert [c.code for c in codes.VISIT_CPT["ed"]] == ["99281", "99282", "99283", "99284", "99285"]
    for group in codes.VISIT_CPT.values():
        assert [c.code for c in group] == sorted(c.code for c in group)


def test_taxonomy_revenue_pos_carc_shapes() -> None:
    for c in codes.TAXONOMY.values():
        assert c.system == "NUCC" and codes.NUCC_PATTERN.match(c.code), c
    for c in codes.REVENUE_CODES.values():
        assert c.system == "NUBC-REV" and len(c.code) == 4 and c.code.isdigit(), c
    for pos in codes.PLACE_OF_SERVICE.values():
        assert len(pos) == 2 and pos.isdigit()
    for carc, text in codes.CARC.items():
        assert carc.isdigit() and text


def test_payers_are_synthetic_and_cover_every_kind() -> None:
    ids = [p[0] for p in codes.PAYERS]
    assert len(set(ids)) == len(ids)
    assert len({i[:3].upper() for i in ids}) == len(ids)  # member-id prefixes stay distinct
    assert {p[2] for p in codes.PAYERS} == {"commercial", "medicare", "medicaid", "selfpay"}


# ---- cross-references --------------------------------------------------------------------------


def test_panels_and_local_codes_point_at_known_labs() -> None:
    for key, (panel, members) in codes.LAB_PANELS.items():
        assert members and all(m in codes.LABS for m in members), key
        assert key in codes.LAB_CPT
    for local_code, (coding, key) in codes.LOCAL_LAB_CODES.items():
        assert coding.system == "LOCAL" and coding.code == local_code
        assert key in codes.LABS
    # one local code per lab (the feed builder inverts this table)
    targets = [key for _, key in codes.LOCAL_LAB_CODES.values()]
    assert len(targets) == len(set(targets))


def test_lab_ranges_are_consistent() -> None:
    for t in (*codes.LABS.values(), *codes.VITALS.values()):
        assert t.unit and t.decimals >= 0
        if t.low is not None and t.high is not None:
            assert t.low < t.high, t.key


def test_every_listed_key_exists() -> None:
    assert set(codes.CONDITION_CODES) == {"diabetes", "hypertension", "hyperlipidemia", "chf", "copd", "asthma",
                                          "ckd", "depression", "cad", "afib", "obesity"}
    assert set(codes.ACUTE_CODES) == {"chest_pain", "pneumonia", "uti", "sepsis", "copd_exacerbation",
                                      "chf_exacerbation", "hyperglycemia", "fall_injury", "abdominal_pain",
                                      "cellulitis", "syncope"}
    assert {"hba1c", "glucose", "creatinine", "egfr", "bun", "sodium", "potassium", "chloride", "co2", "calcium",
            "total_cholesterol", "ldl", "hdl", "triglycerides", "hemoglobin", "wbc", "platelets", "uacr", "tsh",
            "alt"} <= set(codes.LABS)
    assert {"bmp", "lipid", "cbc", "hba1c", "uacr", "tsh"} <= set(codes.LAB_PANELS)
    assert {"bmp", "lipid", "cbc", "hba1c", "uacr", "tsh"} <= set(codes.LAB_CPT)
    assert set(codes.VITALS) == {"systolic", "diastolic", "heart_rate", "resp_rate", "temperature", "spo2",
                                 "weight", "height", "bmi"}
    assert set(codes.WEARABLE_METRICS) == {"heart_rate", "steps", "spo2", "glucose"}
    assert set(codes.VACCINES) == {"influenza", "covid19", "tdap", "pneumococcal", "zoster", "hepb"}
    assert set(codes.VISIT_CPT) == {"new_outpatient", "established_outpatient", "ed", "inpatient_initial",
                                    "inpatient_discharge", "annual_wellness", "preventive", "immunization_admin"}
    assert {"room_board", "pharmacy", "lab", "radiology", "ed", "ekg", "observation"} <= set(codes.REVENUE_CODES)
    assert {"family_medicine", "internal_medicine", "emergency_medicine", "cardiology", "endocrinology",
            "nurse_practitioner", "pharmacist", "hospital", "clinical_lab", "pulmonology", "nephrology",
            "psychiatry"} <= set(codes.TAXONOMY)
    assert codes.PLACE_OF_SERVICE == {"office": "11", "inpatient": "21", "ed": "23", "outpatient_hospital": "22",
                                      "telehealth": "10"}
    assert set(codes.CARC) >= {"1", "2", "3", "45", "96", "97", "16", "50", "197", "204"}
    assert set(codes.INVALID_CODES) >= {"ICD10CM", "LOINC", "NDC", "CVX", "CPT"}
    assert codes.LABS["hba1c"].code.code == "4548-4"
    assert codes.LAB_PANELS["bmp"][0].code == "51990-0"
    assert {k: c.code for k, c in codes.LAB_CPT.items()} == {"bmp": "80048", "lipid": "80061", "cbc": "85025",
                                                              "hba1c": "83036", "uacr": "82043", "tsh": "84443"}


# ---- the planted invalid codes ----------------------------------------------------------------


def test_invalid_codes_are_disjoint_from_the_valid_tables() -> None:
    valid = {
        "ICD10CM": {c.code for c in all_icd10()} | set(codes.ICD9_EQUIVALENTS),
        "LOINC": {c.code for c in all_loinc()},
        "NDC": {d.ndc.code for d in codes.DRUGS.values()},
        "CVX": {v.cvx.code for v in codes.VACCINES.values()},
        "CPT": {c.code for g in codes.VISIT_CPT.values() for c in g} | {c.code for c in codes.LAB_CPT.values()}
               | {v.cpt.code for v in codes.VACCINES.values()},
    }
    for system, bad in codes.INVALID_CODES.items():
        assert bad, system
        assert not set(bad) & valid.get(system, set()), system


def test_invalid_codes_fail_the_checks_that_apply() -> None:
    bad = codes.INVALID_CODES
    assert all(not codes.loinc_check_digit_ok(c) for c in bad["LOINC"])
    assert all(LOINC_SHAPED(c) for c in bad["LOINC"])  # they look right: only the check digit is wrong
    assert all(not codes.NDC11_PATTERN.match(c) for c in bad["NDC"])
    assert all(c.isdigit() for c in bad["NDC"])
    assert all(not codes.CVX_PATTERN.match(c) for c in bad["CVX"])
    assert all(not codes.CPT_PATTERN.match(c) for c in bad["CPT"])
    # ICD-10-CM fakes are well formed, so only a code-set lookup catches them
    assert all(ICD10.match(c) for c in bad["ICD10CM"])


def LOINC_SHAPED(code: str) -> bool:  # noqa: N802 - reads as a predicate in the assertion above
    return bool(codes.LOINC_PATTERN.match(code))
