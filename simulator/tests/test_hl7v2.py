"""HL7 v2.5.1 formatters: python-hl7 reads back what was set; hl7apy validates 2.5.1 strictly."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import hl7
import pytest
from hl7apy import load_reference

from carelake_simulator.formats import hl7v2
from carelake_simulator.model import (
    Address,
    Appointment,
    Charge,
    Coding,
    Demographics,
    Encounter,
    Immunization,
    LabOrder,
    Observation,
    Payer,
    Person,
    Provider,
    Registration,
    Risk,
    VitalSigns,
)
from carelake_simulator.validate import validate_hl7

CHICAGO = ZoneInfo("America/Chicago")
T0 = datetime(2026, 1, 15, 14, 30, 5, tzinfo=UTC)  # 08:30:05 in Chicago (CST, -0600)

# ---- a small hand-made world: all synthetic (555 phones, 9xx SSN, 80840-prefix NPIs) ------------

PCP = Provider("8084012345", "Ada", "Quill", Coding("NUCC", "207Q00000X", "Family Medicine"))
HOSPITALIST = Provider("8084054321", "Ben", "Ward", Coding("NUCC", "208M00000X", "Hospitalist"))
NURSE = Provider("8084099999", "Cara", "Vance", Coding("NUCC", "163W00000X", "Registered Nurse"))
DEMO = Demographics(
    given="Jane", family="Doe", middle="Q", sex="F", birth_date=date(1961, 3, 4), ssn="900123456",
    address=Address("12 Elm St", "Springfield", "IL", "62701"), phone="2175550123",
    email="jane.doe@example.org", race="2106-3", ethnicity="2186-5")
PERSON = Person(
    person_id="P0000001", demo=DEMO, payer=Payer("60054", "Synthetic Health Plan", "commercial"),
    member_id="W123456789", pcp=PCP, area_id="62701", conditions=("diabetes", "hypertension"),
    risk=Risk(0.4, 0.12, 0.2, 0.05), hba1c=7.4)
EHR_REG = Registration("ehr", "E1000001", "P0000001", DEMO)
LAB_REG = Registration("lab", "L77", "P0000001", replace(DEMO, ssn=None))
# A second patient whose record is as sparse as the model allows: every optional field empty.
SPARSE_REG = Registration("ehr", "E1000002", "P0000002", Demographics(given="Sam", family="Roe"))

INPATIENT = Encounter(
    encounter_id="V0000042", person_id="P0000001", kind="inpatient", admit=T0,
    discharge=T0 + timedelta(days=3), facility="CARELAKE_MC", location="MED^401^A",
    attending=HOSPITALIST, disposition="06",
    diagnoses=(Coding("ICD10CM", "E11.9", "Type 2 diabetes mellitus without complications"),
               Coding("ICD10CM", "I10", "Essential (primary) hypertension")),
    procedures=(Coding("CPT", "99223", "Initial hospital care"),))
HBA1C = Coding("LOINC", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood")
GLUCOSE = Coding("LOINC", "2345-7", "Glucose [Mass/volume] in Serum or Plasma")
LAB_ORDER = LabOrder(
    order_id="ORD000123", filler_id="ACC98765", person_id="P0000001",
    panel=Coding("LOINC", "24323-8", "Comprehensive metabolic panel"), ordered_by=PCP,
    collected=T0, resulted=T0 + timedelta(hours=2),
    observations=(
        Observation(HBA1C, 7.4, "%", "4.0-5.6", "H", T0 + timedelta(minutes=90)),
        Observation(GLUCOSE, 142.0, "mg/dL", "70-99", "H"),
        Observation(Coding("LOCAL", "KSER", "POTASSIUM SERUM"), 4.1, "mmol/L", "3.5-5.1", "N"),
        Observation(Coding("LOINC", "33914-3", "eGFR (MDRD)"), ">60", "mL/min/{1.73_m2}", ">60"),
    ))
VITALS = VitalSigns("VS0001", "P0000001", "V0000042", T0 + timedelta(minutes=20), (
    Observation(Coding("LOINC", "8480-6", "Systolic blood pressure"), 138, "mm[Hg]"),
    Observation(Coding("LOINC", "8462-4", "Diastolic blood pressure"), 86, "mm[Hg]"),
    Observation(Coding("LOINC", "8867-4", "Heart rate"), 78, "/min"),
    Observation(Coding("LOINC", "29463-7", "Body weight"), 81.6, "kg"),
))
FLU = Coding("CVX", "150", "Influenza, injectable, quadrivalent, preservative free")
IMMUNIZATION = Immunization("IMM0001", "P0000001", FLU, Coding("MVX", "SKB", "GlaxoSmithKline"),
                            T0, "AB12C", Decimal("0.5"), administered_by=NURSE)
VISIT = Coding("CPT", "99213", "Office or other outpatient visit, established patient")
APPOINTMENTS = {
    status: Appointment(f"APT{i}", "P0000001", PCP, T0 + timedelta(days=7), 30, VISIT, status,
                        location="CLINIC", event_time=T0)
    for i, status in enumerate(("booked", "cancelled", "noshow"), 1)
}
CHARGE = Charge("TX0001", "P0000001", "V0000042", VISIT, Decimal("150.00"), 1, T0,
                performed_by=PCP)


def render_all(**kw) -> dict[str, bytes]:
    """Every builder and event once, keyed by a readable name."""
    out = {f"ADT^{e}": hl7v2.adt(e, INPATIENT, EHR_REG, PERSON, f"ADT{e}", T0, CHICAGO, **kw)
           for e in ("A01", "A03", "A04", "A08")}
    out["ADT^A40"] = hl7v2.adt_merge(EHR_REG, "E9000001", "MRG1", T0, CHICAGO, **kw)
    out["ADT^sparse"] = hl7v2.adt("A04", INPATIENT, SPARSE_REG, PERSON, "ADTS", T0, **kw)
    out["ORU^lab"] = hl7v2.oru_lab(LAB_ORDER, LAB_REG, "LAB1", T0, CHICAGO, **kw)
    out["ORU^vitals"] = hl7v2.oru_vitals(VITALS, EHR_REG, INPATIENT, "VIT1", T0, CHICAGO, **kw)
    out["ORU^vitals-noenc"] = hl7v2.oru_vitals(VITALS, EHR_REG, None, "VIT2", T0, None, **kw)
    out["VXU^V04"] = hl7v2.vxu(IMMUNIZATION, EHR_REG, "VXU1", T0, None, **kw)
    for status, appt in APPOINTMENTS.items():
        out[f"SIU^{status}"] = hl7v2.siu(appt, EHR_REG, f"SIU{status}", T0, CHICAGO, **kw)
    out["DFT^P03"] = hl7v2.dft(CHARGE, EHR_REG, "DFT1", T0, CHICAGO, **kw)
    return out


MESSAGES = render_all()


def parsed(name: str) -> hl7.Message:
    return hl7.parse(MESSAGES[name].decode())


def field(msg: hl7.Message, segment: str, n: int, occurrence: int = 0) -> str:
    """The raw ER7 text of one field, all repetitions, still escaped."""
    return str(msg.segments(segment)[occurrence][n])


def strict(text: str) -> bool:
    verdict = validate_hl7(text.encode())
    assert verdict.ok, verdict.errors
    return verdict.ok


# ---- structure -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_hl7apy_strict_structure(name: str) -> None:
    assert strict(MESSAGES[name].decode()) is True


def _structure_pattern(children: tuple) -> str:
    """A regex over "SEG," tokens for an hl7apy message structure: groups nest, cardinality kept."""
    quantifier = {(1, 1): "", (0, 1): "?", (0, -1): "*", (1, -1): "+"}
    parts = []
    for child, ref, cardinality, *_ in children:
        body = _structure_pattern(ref[1]) if len(child) > 3 else f"{child},"
        parts.append(f"(?:{body}){quantifier[cardinality]}")
    return "".join(parts)


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_segment_order_matches_structure(name: str) -> None:
    # hl7apy's group finder accepts siblings out of order (IN1 before DG1 still validates), so
    # the order is checked here against the same 2.5.1 structure definitions hl7apy ships.
    msg = parsed(name)
    structure = msg["MSH.F9.R1.C3"]
    pattern = _structure_pattern(load_reference(structure, "Message", "2.5.1")[1])
    segments = [str(s[0]) for s in msg]
    assert re.fullmatch(pattern, "".join(f"{s}," for s in segments)), (structure, segments)


def test_segment_order_check_catches_a_swap() -> None:
    pattern = _structure_pattern(load_reference("ADT_A01", "Message", "2.5.1")[1])
    assert re.fullmatch(pattern, "MSH,EVN,PID,PV1,DG1,IN1,")
    assert not re.fullmatch(pattern, "MSH,EVN,PID,PV1,IN1,DG1,")


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_er7_framing(name: str) -> None:
    payload = MESSAGES[name]
    assert payload.startswith(b"MSH|^~\\&|") and payload.endswith(b"\r")
    assert b"\n" not in payload and b"None" not in payload
    msg = parsed(name)
    assert msg["MSH.F5"] == msg["MSH.F6"] == "CARELAKE"
    assert msg["MSH.F11"] == "P" and msg["MSH.F12"] == "2.5.1"


@pytest.mark.parametrize(("name", "msg_type"), [
    ("ADT^A01", "ADT^A01^ADT_A01"), ("ADT^A03", "ADT^A03^ADT_A03"),
    ("ADT^A04", "ADT^A04^ADT_A01"), ("ADT^A08", "ADT^A08^ADT_A01"),
    ("ADT^A40", "ADT^A40^ADT_A39"), ("ORU^lab", "ORU^R01^ORU_R01"),
    ("ORU^vitals", "ORU^R01^ORU_R01"), ("VXU^V04", "VXU^V04^VXU_V04"),
    # table 0354: S12 through S26 share the structure SIU_S12
    ("SIU^booked", "SIU^S12^SIU_S12"), ("SIU^cancelled", "SIU^S15^SIU_S12"),
    ("SIU^noshow", "SIU^S26^SIU_S12"), ("DFT^P03", "DFT^P03^DFT_P03"),
])
def test_message_type(name: str, msg_type: str) -> None:
    assert field(parsed(name), "MSH", 9) == msg_type


# ---- content: python-hl7 reads back what was set -------------------------------------------------


def test_msh_and_pid() -> None:
    msg = parsed("ADT^A01")
    assert msg["MSH.F3"] == "EPIC" and msg["MSH.F4"] == "CARELAKE_MC"
    assert msg["MSH.F7"] == "20260115083005-0600" and msg["MSH.F10"] == "ADTA01"
    assert field(msg, "PID", 3) == "E1000001^^^EHR^MR~900123456^^^SSA^SS"
    assert [msg[f"PID.F5.R1.C{c}"] for c in (1, 2, 3)] == ["Doe", "Jane", "Q"]
    assert msg["PID.F7"] == "19610304" and msg["PID.F8"] == "F"
    assert field(msg, "PID", 10) == "2106-3^White^CDCREC"
    assert field(msg, "PID", 11) == "12 Elm St^^Springfield^IL^62701^USA^H"
    assert msg["PID.F13.R1.C6"] == "217" and msg["PID.F13.R1.C7"] == "5550123"
    assert msg["PID.F15.R1.C1"] == "en" and msg["PID.F22.R1.C1"] == "2186-5"
    # no SSN on file at the lab: no SS repetition
    assert field(parsed("ORU^lab"), "PID", 3) == "L77^^^LAB^MR"


def test_sparse_demographics_render_empty() -> None:
    msg = parsed("ADT^sparse")
    assert field(msg, "PID", 3) == "E1000002^^^EHR^MR"
    assert msg["PID.F7"] == "" and msg["PID.F8"] == "U"
    pid = msg.segment("PID")
    # race, address, phone, ethnicity: empty (or trimmed off the end), never "None"
    assert all(n >= len(pid) or str(pid[n]) == "" for n in (10, 11, 13, 22))


def test_adt_segments() -> None:
    a01, a03 = parsed("ADT^A01"), parsed("ADT^A03")
    assert [str(s[0]) for s in a01] == ["MSH", "EVN", "PID", "PD1", "NK1", "PV1", "DG1", "DG1",
                                        "IN1"]
    assert a01["PD1.F4.R1.C1"] == "8084012345" and a01["NK1.F2.R1.C1"] == "Doe"
    assert a01["PV1.F2"] == "I" and field(a01, "PV1", 3) == "MED^401^A^CARELAKE_MC"
    assert a01["PV1.F7.R1.C1"] == "8084054321" and a01["PV1.F7.R1.C13"] == "NPI"
    assert a01["PV1.F19"] == "V0000042" and a01["PV1.F44"] == "20260115083005-0600"
    # an admission does not yet know how the stay ends; the discharge does
    assert a01["PV1.F36"] == "" and a01["PV1.F45"] == ""
    assert a03["PV1.F36"] == "06" and a03["PV1.F45"] == "20260118083005-0600"
    assert a03["EVN.F6"] == "20260118083005-0600"
    assert [str(d[3]) for d in a01.segments("DG1")] == [
        "E11.9^Type 2 diabetes mellitus without complications^I10",
        "I10^Essential (primary) hypertension^I10"]
    assert a01["DG1.F6"] == "A" and a03["DG1.F6"] == "F"
    assert a01["IN1.F3.R1.C1"] == "60054" and a01["IN1.F4"] == "Synthetic Health Plan"
    assert a01["IN1.F15"] == "CI" and a01["IN1.F36"] == "W123456789"


def test_adt_patient_class_and_icd9() -> None:
    enc = replace(INPATIENT, kind="emergency",
                  diagnoses=(Coding("ICD9CM", "250.00", "Diabetes mellitus type II"),))
    msg = hl7.parse(hl7v2.adt("A04", enc, EHR_REG, PERSON, "X", T0).decode())
    assert msg["PV1.F2"] == "E" and msg["DG1.F3.R1.C3"] == "I9"
    with pytest.raises(ValueError):
        hl7v2.adt("A99", INPATIENT, EHR_REG, PERSON, "X", T0)


def test_adt_merge() -> None:
    msg = parsed("ADT^A40")
    assert field(msg, "MRG", 1) == "E9000001^^^EHR^MR"
    assert field(msg, "PID", 3).startswith("E1000001^^^EHR^MR")


def test_oru_lab() -> None:
    msg = parsed("ORU^lab")
    assert msg["MSH.F3"] == "SUNQUEST" and msg["MSH.F4"] == "CARELAKE_LAB"
    assert msg["ORC.F1"] == "RE"
    assert msg["OBR.F2.R1.C1"] == "ORD000123" and msg["OBR.F3.R1.C1"] == "ACC98765"
    assert field(msg, "OBR", 4) == "24323-8^Comprehensive metabolic panel^LN"
    assert msg["OBR.F7"] == "20260115083005-0600" and msg["OBR.F22"] == "20260115103005-0600"
    assert msg["OBR.F16.R1.C1"] == "8084012345"
    obx = msg.segments("OBX")
    assert [str(o[2]) for o in obx] == ["NM", "NM", "NM", "ST"]
    assert [str(o[3]) for o in obx] == [
        "4548-4^Hemoglobin A1c/Hemoglobin.total in Blood^LN",
        "2345-7^Glucose [Mass/volume] in Serum or Plasma^LN",
        "KSER^POTASSIUM SERUM^L",  # a site-local code: coding system L
        "33914-3^eGFR (MDRD)^LN"]
    assert [str(o[5]) for o in obx] == ["7.4", "142", "4.1", ">60"]
    assert str(obx[0][6]) == "%^%^UCUM" and str(obx[0][7]) == "4.0-5.6"
    assert [str(o[8]) for o in obx] == ["H", "H", "N", "N"]
    assert all(str(o[11]) == "F" for o in obx)
    assert str(obx[0][14]) == "20260115100005-0600"  # its own observed time
    assert str(obx[1][14]) == "20260115083005-0600"  # none given: the collection time


def test_missing_dob_renders_empty_pid7() -> None:
    reg = replace(LAB_REG, demo=replace(LAB_REG.demo, birth_date=None))
    payload = hl7v2.oru_lab(LAB_ORDER, reg, "LAB2", T0)
    assert hl7.parse(payload.decode())["PID.F7"] == ""
    assert b"None" not in payload and strict(payload.decode())


def test_oru_vitals() -> None:
    msg = parsed("ORU^vitals")
    assert msg["MSH.F3"] == "EPIC" and msg["PV1.F19"] == "V0000042" and msg["PV1.F2"] == "I"
    assert msg["OBR.F4.R1.C1"] == "85353-1"
    obx = msg.segments("OBX")
    assert [str(o[3][0][0]) for o in obx] == ["8480-6", "8462-4", "8867-4", "29463-7"]
    assert [str(o[5]) for o in obx] == ["138", "86", "78", "81.6"]
    assert str(obx[0][6]) == "mm[Hg]^mm[Hg]^UCUM"
    no_enc = parsed("ORU^vitals-noenc")
    assert no_enc["PV1.F19"] == "V0000042" and no_enc["PV1.F2"] == "U"


def test_vxu() -> None:
    msg = parsed("VXU^V04")
    assert msg["MSH.F15"] == "AL" and msg["MSH.F16"] == "NE"
    assert field(msg, "MSH", 21) == "Z22^CDCPHINVS"
    assert msg["ORC.F1"] == "RE" and msg["ORC.F3.R1.C1"] == "IMM0001"
    rxa = msg.segment("RXA")
    assert str(rxa[3]) == "20260115143005+0000"
    assert str(rxa[5]) == "150^Influenza, injectable, quadrivalent, preservative free^CVX"
    assert str(rxa[6]) == "0.5" and str(rxa[7]).startswith("mL^")
    assert str(rxa[10][0][0]) == "8084099999"
    assert str(rxa[15]) == "AB12C" and str(rxa[17]) == "SKB^GlaxoSmithKline^MVX"
    assert str(rxa[20]) == "CP" and str(rxa[21]) == "A"
    assert field(msg, "RXR", 1) == "IM^^HL70162" and field(msg, "RXR", 2) == "LD^^HL70163"


@pytest.mark.parametrize(("status", "filler_status"), [
    ("booked", "Booked"), ("cancelled", "Cancelled"), ("noshow", "Noshow")])
def test_siu(status: str, filler_status: str) -> None:
    msg = parsed(f"SIU^{status}")
    assert [str(s[0]) for s in msg] == ["MSH", "SCH", "PID", "RGS", "AIL", "AIP"]
    appt_id = APPOINTMENTS[status].appointment_id
    assert msg["SCH.F1.R1.C1"] == msg["SCH.F2.R1.C1"] == appt_id
    assert field(msg, "SCH", 7) == "99213^Office or other outpatient visit, established patient^C4"
    assert msg["SCH.F9"] == "30"
    assert field(msg, "SCH", 11) == "^^M30^20260122083005-0600^20260122090005-0600"
    assert msg["SCH.F25.R1.C1"] == msg["AIL.F12.R1.C1"] == filler_status
    assert msg["AIP.F3.R1.C1"] == "8084012345" and msg["AIP.F4.R1.C1"] == "207Q00000X"
    assert field(msg, "AIL", 3) == "CLINIC^^^CARELAKE_MC"


def test_siu_rejects_unknown_status() -> None:
    with pytest.raises(ValueError):
        hl7v2.siu(replace(APPOINTMENTS["booked"], status="waitlist"), EHR_REG, "X", T0)


def test_dft() -> None:
    msg = parsed("DFT^P03")
    assert msg["EVN.F1"] == "P03" and msg["PV1.F19"] == "V0000042"
    ft1 = msg.segment("FT1")
    assert str(ft1[2]) == "TX0001" and str(ft1[4]) == "20260115083005-0600"
    assert str(ft1[6]) == "CG"
    assert str(ft1[7]) == "99213^Office or other outpatient visit, established patient^C4"
    assert str(ft1[10]) == "1" and str(ft1[11][0][0][0]) == "150.00"
    assert str(ft1[20][0][0]) == "8084012345"
    hcpcs = replace(CHARGE, procedure=Coding("HCPCS", "G0439", "Annual wellness visit"))
    assert hl7.parse(hl7v2.dft(hcpcs, EHR_REG, "X", T0).decode())["FT1.F7.R1.C3"] == "HCPCS"


# ---- escaping, time, determinism -----------------------------------------------------------------


def test_escaping_round_trips() -> None:
    family = "Smith & Wesson^Jr|x~y\\z"
    demo = replace(DEMO, family=family, address=replace(DEMO.address, line="1 A&B Rd\rSuite 2"))
    payload = hl7v2.adt("A01", INPATIENT, replace(EHR_REG, demo=demo), PERSON, "ESC1", T0)
    assert len(payload.split(b"\r")) == 9 + 1  # 9 segments: the CR inside data split nothing
    msg = hl7.parse(payload.decode())
    assert msg["PID.F5.R1.C1"] == family  # python-hl7's accessor unescapes
    assert msg["PID.F5.R1.C2"] == "Jane"  # the ^ inside the family name shifted no component
    assert msg["PID.F11.R1.C1"] == "1 A&B Rd\rSuite 2"
    assert hl7v2.escape("a|b^c~d\\e&f") == "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f"
    assert hl7v2.escape(None) == "" and hl7v2.escape("plain") == "plain"
    assert strict(payload.decode())


def test_hl7_ts() -> None:
    summer = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert hl7v2.hl7_ts(T0, None) == "20260115143005+0000"
    assert hl7v2.hl7_ts(T0, CHICAGO) == "20260115083005-0600"
    assert hl7v2.hl7_ts(summer, CHICAGO) == "20260701070000-0500"  # daylight time
    assert hl7v2.hl7_ts(summer, ZoneInfo("America/New_York")) == "20260701080000-0400"
    assert hl7v2.hl7_ts(T0, CHICAGO, with_offset=False) == "20260115083005"
    assert hl7v2.hl7_ts(T0, None, with_offset=False) == "20260115143005"


def test_naive_local_drops_every_offset() -> None:
    naive = render_all(naive_local=True)
    for name, payload in naive.items():
        text = payload.decode()
        assert "+0000" not in text and "-0600" not in text, name
        assert strict(text), name
    msg = hl7.parse(naive["ORU^lab"].decode())
    assert msg["MSH.F7"] == "20260115083005" and msg["OBR.F7"] == "20260115083005"


def test_deterministic() -> None:
    assert render_all() == MESSAGES
    same = hl7v2.adt("A01", INPATIENT, EHR_REG, PERSON, "SAME", T0)
    assert same == hl7v2.adt("A01", INPATIENT, EHR_REG, PERSON, "SAME", T0)
    # NK1 and MSH-10 follow the message id
    assert same != hl7v2.adt("A01", INPATIENT, EHR_REG, PERSON, "OTHER", T0)
