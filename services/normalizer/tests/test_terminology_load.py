"""`carelake terminology load`: tiny synthetic release files in the real formats -> operator maps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fhir.resources.R4B.medicationdispense import MedicationDispense

from carelake_normalizer.terminology import MapStore, normalize_resource
from carelake_normalizer.terminology import systems as S
from carelake_normalizer.terminology.load import (
    load_loinc_csv,
    load_rxnorm_rrf,
    rxnorm_version,
    terminology_load,
)


def rrf(*fields: str) -> str:
    """One RRF row: pipe-delimited with the trailing pipe."""
    return "|".join(fields) + "|\n"


def conso(rxcui: str, rxaui: str, sab: str, tty: str, name: str, suppress: str = "N") -> str:
    # RXCUI|LAT|TS|LUI|STT|SUI|ISPREF|RXAUI|SAUI|SCUI|SDUI|SAB|TTY|CODE|STR|SRL|SUPPRESS|CVF
    return rrf(rxcui, "ENG", "", "", "", "", "", rxaui, "", "", "", sab, tty, rxcui, name, "", suppress, "4096")


def sat(rxcui: str, atn: str, sab: str, atv: str, suppress: str = "N") -> str:
    # RXCUI|LUI|SUI|RXAUI|STYPE|CODE|ATUI|SATUI|ATN|SAB|ATV|SUPPRESS|CVF
    return rrf(rxcui, "", "", "9" + rxcui, "AUI", rxcui, "AT" + rxcui, "", atn, sab, atv, suppress, "4096")


def rel(rxcui1: str, rela: str, rxcui2: str) -> str:
    # RXCUI1|RXAUI1|STYPE1|REL|RXCUI2|RXAUI2|STYPE2|RELA|RUI|SRUI|SAB|SL|DIR|RG|SUPPRESS|CVF
    return rrf(rxcui1, "", "CUI", "RO", rxcui2, "", "CUI", rela, "R1", "", "RXNORM", "RXNORM", "", "", "N", "")


@pytest.fixture
def rxnorm_release(tmp_path: Path) -> Path:
    """A fake RxNorm full release: one brand (SBD 990002 -> SCD 990001) and one generic SCD."""
    rrf_dir = tmp_path / "RxNorm_full_09082026" / "rrf"
    rrf_dir.mkdir(parents=True)
    (rrf_dir / "RXNCONSO.RRF").write_text(
        conso("990001", "A1", "RXNORM", "SCD", "testacillin 500 MG Oral Tablet")
        + conso("990001", "A2", "RXNORM", "PSN", "testacillin 500mg tablet")
        + conso("990002", "A3", "RXNORM", "SBD", "Testabrand 500 MG Oral Tablet")
        + conso("990003", "A4", "RXNORM", "SCD", "samplezide 25 MG Oral Tablet")
        + conso("990004", "A5", "RXNORM", "SCD", "oldamine 10 MG Oral Tablet", suppress="O")
        + conso("990005", "A6", "MTHSPL", "DP", "NOT RXNORM"), encoding="utf-8")
    (rrf_dir / "RXNSAT.RRF").write_text(
        sat("990002", "NDC", "RXNORM", "12345678901")  # brand package on the SBD
        + sat("990003", "NDC", "RXNORM", "22222333344")  # generic package on the SCD
        + sat("990003", "NDC", "MTHSPL", "99999999999")  # a source-asserted NDC: not RxNorm's own
        + sat("990003", "NDC", "RXNORM", "55555666677", suppress="O")  # obsolete
        + sat("990003", "RXN_HUMAN_DRUG", "RXNORM", "US")
        + sat("990004", "NDC", "RXNORM", "44444555566"), encoding="utf-8")  # suppressed concept
    (rrf_dir / "RXNREL.RRF").write_text(
        rel("990001", "tradename_of", "990002")  # 990002 (SBD) is a tradename of 990001 (SCD)
        + rel("990002", "has_tradename", "990001"), encoding="utf-8")
    return tmp_path / "RxNorm_full_09082026"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_rxnorm_rrf_to_operator_maps(rxnorm_release: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    summary = terminology_load("rxnorm", rxnorm_release, home)
    assert summary["version"] == "09082026"
    assert (summary["ndc_rows"], summary["generalized_to_generic"], summary["concepts"]) == (2, 1, 3)
    out = home / "terminology"
    rows = {r["source_code"]: r for r in read_csv(out / "ndc_rxnorm.csv")}
    assert set(rows) == {"12345678901", "22222333344"}
    assert (rows["12345678901"]["target_code"], rows["12345678901"]["target_display"]) == (
        "990001", "testacillin 500 MG Oral Tablet")  # generalized from the SBD through tradename_of
    assert "tradename_of" in rows["12345678901"]["citation"]
    assert rows["22222333344"]["target_code"] == "990003"
    concepts = {r["code"]: r["display"] for r in read_csv(out / "rxnorm.csv")}
    assert concepts == {"990001": "testacillin 500 MG Oral Tablet", "990002": "Testabrand 500 MG Oral Tablet",
                        "990003": "samplezide 25 MG Oral Tablet"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert {(e["name"], e["version"]) for e in manifest["maps"]} == {("ndc-rxnorm", "09082026"),
                                                                      ("rxnorm", "09082026")}


def test_rxnorm_without_rxnrel_or_generic_keeps_the_attached_concept(rxnorm_release: Path, tmp_path: Path) -> None:
    load_rxnorm_rrf(rxnorm_release, tmp_path / "a", generic=False)
    assert {r["source_code"]: r["target_code"] for r in read_csv(tmp_path / "a" / "ndc_rxnorm.csv")}[
        "12345678901"] == "990002"
    (rxnorm_release / "rrf" / "RXNREL.RRF").unlink()
    summary = load_rxnorm_rrf(rxnorm_release / "rrf", tmp_path / "b", version="2026-09")
    assert summary["generalized_to_generic"] == 0 and summary["version"] == "2026-09"


def test_operator_rxnorm_is_preferred_and_cited(rxnorm_release: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    terminology_load("rxnorm", rxnorm_release, home)
    store = MapStore(home)
    m = store.map_for(S.NDC)
    assert (m.info.origin, m.info.tag) == ("operator", "ndc-rxnorm@09082026")
    assert "00087606005" not in m.rows  # the shipped curated map is replaced, not merged
    d = {"resourceType": "MedicationDispense", "status": "completed", "subject": {"reference": "Patient/p"},
         "medicationCodeableConcept": {"coding": [{"system": S.NDC, "code": "12345-6789-01"}]}}
    flags = normalize_resource(d, "pharmacy", store=store)
    rx = d["medicationCodeableConcept"]["coding"][0]
    assert (rx["system"], rx["code"]) == (S.RXNORM, "990001")
    assert rx["extension"][0]["valueString"] == f"{S.NDC}|12345-6789-01|ndc-rxnorm@09082026"
    assert {f.flag for f in flags} == {"not_in_directory"}  # a made-up NDC: not in the FDA directory
    MedicationDispense.model_validate(d)
    # the loaded concept list makes unknown RXCUIs visible
    obs = {"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": S.RXNORM, "code": "990003"}, {"system": S.RXNORM, "code": "861007"}]}}
    assert [(f.code, f.flag) for f in normalize_resource(obs, "ehr", store=store)] == [("861007", "unknown_code")]


def test_rrf_with_too_few_fields_is_refused(tmp_path: Path) -> None:
    (tmp_path / "RXNSAT.RRF").write_text("990001|NDC|RXNORM|12345678901|\n", encoding="utf-8")
    (tmp_path / "RXNCONSO.RRF").write_text(conso("990001", "A1", "RXNORM", "SCD", "x"), encoding="utf-8")
    with pytest.raises(ValueError, match="RXNSAT.RRF:1"):
        load_rxnorm_rrf(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_rxnorm_version_from_release_folder() -> None:
    assert rxnorm_version(Path("/x/RxNorm_full_09082026/rrf/RXNSAT.RRF")) == "09082026"
    assert rxnorm_version(Path("/x/release/rrf/RXNSAT.RRF")) is None


LOINC_HEADER = ["LOINC_NUM", "COMPONENT", "PROPERTY", "TIME_ASPCT", "SYSTEM", "SCALE_TYP", "METHOD_TYP", "CLASS",
                "VersionLastChanged", "CHNG_TYPE", "DefinitionDescription", "STATUS", "CONSUMER_NAME", "CLASSTYPE",
                "FORMULA", "EXMPL_ANSWERS", "SURVEY_QUEST_TEXT", "SURVEY_QUEST_SRC", "UNITSREQUIRED",
                "RELATEDNAMES2", "SHORTNAME", "ORDER_OBS", "HL7_FIELD_SUBFIELD_ID", "EXTERNAL_COPYRIGHT_NOTICE",
                "EXAMPLE_UNITS", "LONG_COMMON_NAME", "EXAMPLE_UCUM_UNITS", "STATUS_REASON", "STATUS_TEXT",
                "CHANGE_REASON_PUBLIC", "COMMON_TEST_RANK", "COMMON_ORDER_RANK", "HL7_ATTACHMENT_STRUCTURE",
                "EXTERNAL_COPYRIGHT_LINK", "PanelType", "AskAtOrderEntry", "AssociatedObservations",
                "VersionFirstReleased", "ValidHL7AttachmentRequest", "DisplayName"]


def loinc_row(code: str, name: str, status: str, changed: str) -> list[str]:
    row = dict.fromkeys(LOINC_HEADER, "")
    row.update(LOINC_NUM=code, LONG_COMMON_NAME=name, STATUS=status, VersionLastChanged=changed, CLASS="CHEM")
    return [row[h] for h in LOINC_HEADER]


@pytest.fixture
def loinc_release(tmp_path: Path) -> Path:
    folder = tmp_path / "Loinc_2.81" / "LoincTable"
    folder.mkdir(parents=True)
    with (folder / "Loinc.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)  # the release quotes every field
        w.writerow(LOINC_HEADER)
        w.writerow(loinc_row("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "ACTIVE", "2.73"))
        w.writerow(loinc_row("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "ACTIVE", "2.78"))
        w.writerow(loinc_row("11111-2", "A retired test, with a comma", "DEPRECATED", "2.40"))
        w.writerow(loinc_row("1234-0", "Bad check digit row", "ACTIVE", "2.10"))
    return tmp_path / "Loinc_2.81"


def test_loinc_csv_to_code_list(loinc_release: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    summary = terminology_load("loinc", loinc_release, home)
    assert summary["version"] == "2.78"  # the newest VersionLastChanged
    assert (summary["codes"], summary["bad_check_digit"]) == (3, 1)
    assert summary["by_status"] == {"ACTIVE": 2, "DEPRECATED": 1}
    rows = {r["code"]: r for r in read_csv(home / "terminology" / "loinc.csv")}
    assert rows["11111-2"]["display"] == "A retired test, with a comma"
    assert rows["11111-2"]["status"] == "DEPRECATED"
    store = MapStore(home)
    assert store.loinc.info.tag == "loinc@2.78"
    obs = {"resourceType": "Observation", "status": "final", "code": {"coding": [
        {"system": S.LOINC, "code": "4548-4"}, {"system": S.LOINC, "code": "11111-2"},
        {"system": S.LOINC, "code": "718-7"}, {"system": S.LOINC, "code": "718-6"}]}}
    flags = normalize_resource(obs, "lab", store=store)
    assert [(f.code, f.flag) for f in flags] == [("11111-2", "deprecated_code"), ("718-7", "unknown_code"),
                                                  ("718-6", "invalid_code")]


def test_loinc_version_can_be_given_and_wrong_file_is_refused(loinc_release: Path, tmp_path: Path) -> None:
    summary = load_loinc_csv(loinc_release / "LoincTable" / "Loinc.csv", tmp_path / "o", version="2.81")
    assert summary["version"] == "2.81"
    bad = tmp_path / "Loinc.csv"
    bad.write_text("CODE,NAME\n1-8,x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a Loinc.csv"):
        load_loinc_csv(bad, tmp_path / "o2")


def test_ndc_directory_load_replaces_the_package_copy(tmp_path: Path) -> None:
    pkg = tmp_path / "ndctext" / "package.txt"
    pkg.parent.mkdir()
    pkg.write_text(
        "PRODUCTID\tPRODUCTNDC\tNDCPACKAGECODE\tPACKAGEDESCRIPTION\tSTARTMARKETINGDATE\tENDMARKETINGDATE\t"
        "NDC_EXCLUDE_FLAG\tSAMPLE_PACKAGE\n"
        "0087-6060_x\t0087-6060\t0087-6060-05\t100 TABLET in 1 BOTTLE (0087-6060-05)\t20090601\t\tN\tN\n"
        "12345-678_y\t12345-678\t12345-678-90\t30 TABLET in 1 BOTTLE\t20200101\t20250101\tN\tN\n", encoding="latin-1")
    home = tmp_path / "home"
    summary = terminology_load("ndc", pkg.parent, home, version="2026-11-01")
    assert summary["packages"] == 2
    store = MapStore(home)
    assert store.ndc_directory.info.origin == "operator"
    assert store.ndc_directory.status == {"00087606005": "active", "12345067890": "ended 20250101"}
    d = {"resourceType": "MedicationDispense", "status": "completed",
         "medicationCodeableConcept": {"coding": [{"system": S.NDC, "code": "00173068220"}]}}
    # listed in the package's 2019 copy, absent from the operator's directory
    assert {f.flag for f in normalize_resource(d, "pharmacy", store=store)} == {"not_in_directory"}


def test_loads_accumulate_in_one_manifest(rxnorm_release: Path, loinc_release: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    terminology_load("rxnorm", rxnorm_release, home)
    terminology_load("loinc", loinc_release, home)
    terminology_load("loinc", loinc_release, home, version="2.81")
    manifest = json.loads((home / "terminology" / "manifest.json").read_text())
    assert sorted((e["name"], e["version"]) for e in manifest["maps"]) == [
        ("loinc", "2.81"), ("ndc-rxnorm", "09082026"), ("rxnorm", "09082026")]
    with pytest.raises(ValueError, match="unknown terminology kind"):
        terminology_load("snomed", loinc_release, home)
    with pytest.raises(FileNotFoundError):
        terminology_load("loinc", tmp_path / "nowhere", home)
