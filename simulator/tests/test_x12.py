"""The X12 837P / 837I / 835 renderers: pyx12 validates every file, and the bytes read back."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import takewhile

import pytest
import pyx12.x12file

from carelake_simulator.formats import x12
from carelake_simulator.model import (
    Address,
    Claim,
    ClaimLine,
    Coding,
    Demographics,
    Payer,
    Person,
    Provider,
    Registration,
    Remittance,
    Risk,
)
from carelake_simulator.validate import validate_x12

CREATED = datetime(2026, 1, 15, 4, 5, tzinfo=UTC)  # 22:05 the evening before in Chicago
DAY = date(2026, 1, 14)

# ---- a small hand-made world --------------------------------------------------------------------

DX = {c: Coding("ICD10CM", c, d) for c, d in (("E11.9", "Type 2 diabetes mellitus without complications"),
                                               ("I10", "Essential (primary) hypertension"),
                                               ("I50.9", "Heart failure, unspecified"))}
CPT_99214 = Coding("CPT", "99214", "Office visit, established, moderate")
CPT_83036 = Coding("CPT", "83036", "Hemoglobin A1c")
HCPCS_G0439 = Coding("HCPCS", "G0439", "Annual wellness visit, subsequent")
CPT_99223 = Coding("CPT", "99223", "Initial hospital care, high")
CPT_80048 = Coding("CPT", "80048", "Basic metabolic panel")
REV = {c: Coding("NUBC-REV", c, d) for c, d in (("0120", "Room & board, semi-private"), ("0300", "Laboratory"),
                                                 ("0450", "Emergency room"))}
INTERNIST = Coding("NUCC", "207Q00000X", "Family Medicine")
HOSPITAL = Coding("NUCC", "282N00000X", "General Acute Care Hospital")

CLINIC = Provider(npi="1234567893", given="", family="Carelake Health", taxonomy=HOSPITAL,
                  organization="Carelake Health")
DR_LEE = Provider(npi="1245319599", given="Dana", family="Lee", taxonomy=INTERNIST)
ACME = Payer(payer_id="ACME01", name="Acme Health Plan", kind="commercial")
MEDICARE = Payer(payer_id="MCR00", name="Medicare Part A and B", kind="medicare")
RISK = Risk(score=0.0, readmission_30d=0.1, diabetes_progression=0.1, ed_visit_30d=0.1)

ANA_DEMO = Demographics(given="Ana", family="O'Brien-Ruiz", middle="J", sex="F", birth_date=date(1961, 3, 9),
                        address=Address("12 Elm St Apt 4", "Springfield", "IL", "62701"))
BOB_DEMO = Demographics(given="Bob", family="Tanaka", sex="M", birth_date=date(1948, 11, 30),
                        address=Address("400 Lake Shore Dr", "Chicago", "IL", "60611-2233"))
PEOPLE = {
    "P0000001": Person(person_id="P0000001", demo=ANA_DEMO, payer=ACME, member_id="ACM900000001", pcp=DR_LEE,
                       area_id="62701", conditions=("diabetes",), risk=RISK),
    "P0000002": Person(person_id="P0000002", demo=BOB_DEMO, payer=MEDICARE, member_id="1EG4TE5MK72", pcp=DR_LEE,
                       area_id="60611", conditions=("heart_failure",), risk=RISK),
}
SUBSCRIBERS = {
    "P0000001": Registration(source="claims", mrn="CL0000101", person_id="P0000001", demo=ANA_DEMO),
    # The claims system lost Bob's birth date (a planted defect): the claim goes out without DMG.
    "P0000002": Registration(source="claims", mrn="CL0000202", person_id="P0000002",
                             demo=Demographics(given="Robert", family="Tanaka", sex="M",
                                               address=BOB_DEMO.address)),
}

OFFICE_VISIT = Claim(
    claim_id="C000000101", kind="837P", person_id="P0000001", payer=ACME, member_id="ACM900000001",
    billing=CLINIC, rendering=DR_LEE, diagnoses=(DX["E11.9"], DX["I10"]),
    lines=(ClaimLine(CPT_99214, Decimal(150), 1, DAY, (1, 2), modifiers=("25",)),
           ClaimLine(CPT_83036, Decimal("42.50"), 1, DAY, (1,)),
           ClaimLine(HCPCS_G0439, Decimal("175.25"), 1, DAY, (2, 1))),
    service_from=DAY, service_to=DAY, place_of_service="11", facility_type="131")
NO_DOB_VISIT = Claim(
    claim_id="C000000102", kind="837P", person_id="P0000002", payer=MEDICARE, member_id="1EG4TE5MK72",
    billing=CLINIC, rendering=DR_LEE, diagnoses=(DX["I50.9"],),
    lines=(ClaimLine(CPT_99214, Decimal(150), 1, DAY),),
    service_from=DAY, service_to=DAY)
ADMISSION = Claim(
    claim_id="C000000103", kind="837I", person_id="P0000002", payer=MEDICARE, member_id="1EG4TE5MK72",
    billing=CLINIC, rendering=DR_LEE, diagnoses=(DX["I50.9"], DX["I10"], DX["E11.9"]),
    lines=(ClaimLine(CPT_99223, Decimal(7200), 3, date(2026, 1, 11), revenue_code=REV["0120"]),
           ClaimLine(CPT_80048, Decimal(180), 3, date(2026, 1, 11), revenue_code=REV["0300"]),
           ClaimLine(HCPCS_G0439, Decimal("0.75"), 1, date(2026, 1, 11), revenue_code=REV["0450"])),
    service_from=date(2026, 1, 11), service_to=DAY, place_of_service="21", facility_type="111",
    encounter_id="V000000009", admit=datetime(2026, 1, 12, 3, 40, tzinfo=UTC), discharge_status="01")

REMITS = (
    Remittance(claim_id="C000000101", person_id="P0000001", payer=ACME, member_id="ACM900000001",
               billed=Decimal("367.75"), paid=Decimal("367.75"), patient_responsibility=Decimal(0), status="1",
               adjustments=(), paid_on=DAY, payer_claim_id="ACM0000000001"),
    Remittance(claim_id="C000000104", person_id="P0000001", payer=ACME, member_id="ACM900000001",
               billed=Decimal(150), paid=Decimal(85), patient_responsibility=Decimal(20), status="1",
               adjustments=(("CO", "45", Decimal(45)), ("PR", "2", Decimal(20))), paid_on=DAY,
               payer_claim_id="ACM0000000002"),
    Remittance(claim_id="C000000105", person_id="P0000002", payer=ACME, member_id="ACM900000002",
               billed=Decimal(210), paid=Decimal(0), patient_responsibility=Decimal(0), status="4",
               adjustments=(("CO", "197", Decimal(210)),), paid_on=DAY, payer_claim_id="ACM0000000003"),
)


def _837p() -> bytes:
    return x12.claims_837p([OFFICE_VISIT, NO_DOB_VISIT], SUBSCRIBERS, PEOPLE, sender_id="CARELAKEHLTH",
                           receiver_id="CLEARINGHSE", control=2601421, created=CREATED)


def _837i() -> bytes:
    return x12.claims_837i([ADMISSION], SUBSCRIBERS, PEOPLE, sender_id="CARELAKEHLTH",
                           receiver_id="CLEARINGHSE", control=2601422, created=CREATED)


def _835() -> bytes:
    return x12.remittance_835(REMITS, SUBSCRIBERS, payer=ACME, payee=CLINIC, sender_id="ACME01",
                              receiver_id="CARELAKEHLTH", control=2601423, created=CREATED)


def _835_medicare() -> bytes:
    remits = [Remittance(claim_id="C000000103", person_id="P0000002", payer=MEDICARE, member_id="1EG4TE5MK72",
                         billed=Decimal("7380.75"), paid=Decimal("5100.4"), patient_responsibility=Decimal(1676),
                         status="1", adjustments=(("CO", "45", Decimal("604.35")), ("PR", "1", Decimal(1676))),
                         paid_on=DAY, payer_claim_id="MCR0000000007")]
    return x12.remittance_835(remits, SUBSCRIBERS, payer=MEDICARE, payee=CLINIC, sender_id="MCR00",
                              receiver_id="CARELAKEHLTH", control=2601424, created=CREATED)


def _835_denied() -> bytes:
    return x12.remittance_835(REMITS[2:], SUBSCRIBERS, payer=ACME, payee=CLINIC, sender_id="ACME01",
                              receiver_id="CARELAKEHLTH", control=2601425, created=CREATED)


FILES = {"837P": _837p, "837I": _837i, "835": _835, "835-ACH": _835_medicare, "835-denied": _835_denied}


# ---- helpers ------------------------------------------------------------------------------------


def _validate(payload: bytes) -> tuple[bool, list[str], str]:
    """pyx12's verdict, every error it recorded at any level, and its 999 acknowledgement."""
    verdict = validate_x12(payload)
    return verdict.ok, list(verdict.errors), verdict.ack


def _segments(payload: bytes) -> list[list[str]]:
    """The file read back with pyx12's X12Reader, as element lists; asserts it reported no errors."""
    reader = pyx12.x12file.X12Reader(io.StringIO(payload.decode("ascii")))
    segments = []
    for seg in reader:
        seg_id = seg.get_seg_id()
        segments.append([seg_id, *(seg.get_value(f"{seg_id}{i:02d}") or "" for i in range(1, len(seg) + 1))])
    assert reader.pop_errors() == []
    return segments


def _all(segments: list[list[str]], seg_id: str) -> list[list[str]]:
    return [s for s in segments if s[0] == seg_id]


def _check_envelope(segments: list[list[str]], control: int, transactions: int) -> None:
    """Matching control numbers and counts at every level."""
    isa, gs, ge, iea = segments[0], segments[1], segments[-2], segments[-1]
    assert (isa[0], gs[0], ge[0], iea[0]) == ("ISA", "GS", "GE", "IEA")
    assert isa[13] == iea[2] == f"{control:09d}" and iea[1] == "1"
    assert gs[6] == ge[2] == str(control)
    sts, ses = _all(segments, "ST"), _all(segments, "SE")
    assert len(sts) == len(ses) == int(ge[1]) == transactions
    assert len({st[2] for st in sts}) == transactions  # ST02 unique
    starts = [i for i, s in enumerate(segments) if s[0] == "ST"]
    ends = [i for i, s in enumerate(segments) if s[0] == "SE"]
    for start, end in zip(starts, ends, strict=True):
        assert segments[end][2] == segments[start][2]  # SE02 = ST02
        assert int(segments[end][1]) == end - start + 1  # SE01 counts ST and SE


def _closing_spans(payload: bytes, opener: bytes, closers: tuple[bytes, ...]) -> list[tuple[str, int, int]]:
    """The reference split, line by line: an opener up to the next opener or closer segment."""
    spans, offset, current = [], 0, None
    for line in payload.splitlines(keepends=True):
        seg_id = line.split(b"*", 1)[0]
        if current and (seg_id == opener or seg_id in closers):
            spans.append((current[0], current[1], offset))
            current = None
        if seg_id == opener:
            current = (line.split(b"*")[1].decode(), offset)
        offset += len(line)
    return spans


# ---- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", FILES)
def test_pyx12_validates_the_file(kind: str) -> None:
    payload = FILES[kind]()
    ok, errors, ack = _validate(payload)
    assert ok and errors == [], f"pyx12 rejected the {kind} file:\n" + "\n".join(errors) + "\n999:\n" + ack
    if kind.startswith("837"):
        # pyx12 cannot write a 999 for an 835: its AK2 needs ST03, which the 835 guide marks Not Used.
        assert "IK5*A~" in ack and "AK9*A*1*1*1~" in ack, ack


def test_pyx12_rejects_a_broken_file() -> None:
    """The validator is not vacuous: a bad claim filing indicator and a wrong SE count are caught."""
    payload = _837p().replace(b"SBR*P*18*******CI~", b"SBR*P*18*******XX~").replace(b"SE*47*", b"SE*46*")
    ok, errors, ack = _validate(payload)
    assert not ok
    assert any("SBR" in e for e in errors) and any("SE count" in e for e in errors), errors
    assert "IK5*R" in ack


def test_text_cannot_break_segments_and_icd9_uses_bk_bf() -> None:
    demo = Demographics(given="José*", family="Smith~Jones", sex="X", birth_date=date(1970, 1, 1),
                        address=Address("1 Main: St^", "Chicago", "IL", "60601"))
    subscribers = {**SUBSCRIBERS, "P0000001": Registration("claims", "CL0000101", "P0000001", demo)}
    icd9 = (Coding("ICD9CM", "250.00", "Diabetes mellitus"), Coding("ICD9CM", "401.9", "Hypertension"))
    claim = replace(OFFICE_VISIT, diagnoses=icd9)
    payload = x12.claims_837p([claim], subscribers, PEOPLE, sender_id="CARELAKEHLTH", receiver_id="CLEARINGHSE",
                              control=7, created=CREATED)
    ok, errors, ack = _validate(payload)
    assert ok and errors == [], "\n".join(errors) + "\n" + ack
    text = payload.decode()
    assert "NM1*IL*1*SmithJones*Jose****MI*ACM900000001~" in text
    assert "N3*1 Main St~" in text and "DMG*D8*19700101*U~" in text
    assert "HI*BK:25000*BF:4019~" in text


def test_the_claims_systems_record_is_sent_as_it_is() -> None:
    """No registration: the person stands in (no MRN). A registration without an address: no N3/N4."""
    moved = {"P0000001": replace(SUBSCRIBERS["P0000001"], demo=replace(ANA_DEMO, address=None))}
    payload = x12.claims_837p([OFFICE_VISIT, NO_DOB_VISIT], moved, PEOPLE, sender_id="CARELAKEHLTH",
                              receiver_id="CLEARINGHSE", control=8, created=CREATED)
    ok, errors, ack = _validate(payload)
    assert ok and errors == [], "\n".join(errors) + "\n" + ack
    segments = _segments(payload)
    assert [s[1] for s in _all(segments, "N3")] == ["1680 HEALTHCARE WAY", "400 Lake Shore Dr"]  # Bob's from truth
    assert [s[2] for s in _all(segments, "DMG")] == ["19610309", "19481130"]
    assert [s[2] for s in _all(segments, "REF") if s[1] == "EA"] == ["CL0000101"]


# ---- reading back -------------------------------------------------------------------------------


def test_837p_reads_back() -> None:
    payload = _837p()
    segments = _segments(payload)
    _check_envelope(segments, 2601421, transactions=1)
    assert len(payload.split(b"~\n")[0]) + 1 == 106  # ISA is fixed width
    assert segments[0][9:11] == ["260114", "2205"]  # stamped in the billing system's local time
    assert _all(segments, "ST")[0][3] == "005010X222A1" and segments[1][8] == "005010X222A1"
    clms = _all(segments, "CLM")
    assert [(c[1], c[2], c[5]) for c in clms] == [("C000000101", "367.75", "11:B:1"), ("C000000102", "150", "11:B:1")]
    assert Decimal(clms[0][2]) == sum(Decimal(s[2]) for s in _all(segments, "SV1")[:3])
    assert [s[1:] for s in _all(segments, "HI")] == [["ABK:E119", "ABF:I10"], ["ABK:I509"]]
    assert [s[1] for s in _all(segments, "SV1")] == ["HC:99214:25", "HC:83036", "HC:G0439", "HC:99214"]
    assert [s[7] for s in _all(segments, "SV1")] == ["1:2", "1", "2:1", "1"]
    assert [s[9] for s in _all(segments, "SBR")] == ["CI", "MB"]
    assert [s[2] for s in _all(segments, "REF") if s[1] == "EA"] == ["CL0000101", "CL0000202"]
    assert [s[1:] for s in _all(segments, "DMG")] == [["D8", "19610309", "F"]]  # Bob's has no birth date
    assert [s[1:5] for s in _all(segments, "HL")] == [["1", "", "20", "1"], ["2", "1", "22", "0"], ["3", "1", "22", "0"]]


def test_837i_reads_back() -> None:
    segments = _segments(_837i())
    _check_envelope(segments, 2601422, transactions=1)
    assert _all(segments, "ST")[0][3] == "005010X223A2"
    (clm,) = _all(segments, "CLM")
    assert clm[1:3] == ["C000000103", "7380.75"] and clm[5] == "11:A:1"
    assert [s[1:] for s in _all(segments, "DTP")[:2]] == [["434", "RD8", "20260111-20260114"],
                                                          ["435", "DT", "202601112140"]]  # 03:40 UTC = 21:40 CST
    assert _all(segments, "CL1")[0][1:] == ["1", "1", "01"]
    assert [s[1:] for s in _all(segments, "HI")] == [["ABK:I509"], ["ABJ:I509"], ["ABF:I10", "ABF:E119"]]
    assert [s[1:6] for s in _all(segments, "SV2")] == [["0120", "HC:99223", "7200", "UN", "3"],
                                                       ["0300", "HC:80048", "180", "UN", "3"],
                                                       ["0450", "HC:G0439", "0.75", "UN", "1"]]
    assert _all(segments, "NM1")[-1][1:3] == ["71", "1"] and _all(segments, "SBR")[0][9] == "MA"


@pytest.mark.parametrize("kind", ["835", "835-ACH", "835-denied"])
def test_835_reads_back_and_balances(kind: str) -> None:
    segments = _segments(FILES[kind]())
    _check_envelope(segments, {"835": 2601423, "835-ACH": 2601424, "835-denied": 2601425}[kind], transactions=1)
    bpr, clps = _all(segments, "BPR")[0], _all(segments, "CLP")
    assert Decimal(bpr[2]) == sum(Decimal(c[4]) for c in clps)  # BPR02 = sum of CLP04 (no PLB)
    for i, clp in enumerate(segments):  # billed - paid = the claim's adjustments; PR ones = patient share
        if clp[0] != "CLP":
            continue
        cas = takewhile(lambda s: s[0] == "CAS", segments[i + 1 :])  # CAS follows CLP directly
        adjustments = [(s[1], Decimal(s[j + 1])) for s in cas for j in range(2, len(s), 3) if s[j]]
        assert Decimal(clp[3]) - Decimal(clp[4]) == sum(a for _, a in adjustments)
        assert Decimal(clp[5] or 0) == sum(a for group, a in adjustments if group == "PR")
    if kind == "835":
        assert bpr[1:5] == ["I", "452.75", "C", "CHK"] and bpr[16] == "20260114"
        assert [(c[1], c[2], c[6]) for c in clps] == [("C000000101", "1", "12"), ("C000000104", "1", "12"),
                                                      ("C000000105", "4", "12")]
        assert [s[1:] for s in _all(segments, "CAS")] == [["CO", "45", "45"], ["PR", "2", "20"], ["CO", "197", "210"]]
        assert [s[9] for s in _all(segments, "NM1")] == ["ACM900000001", "ACM900000001", "ACM900000002"]
        assert _all(segments, "ST")[0][1:] == ["835", "0001"]  # no ST03 in an 835
    elif kind == "835-ACH":
        assert bpr[1:6] == ["I", "5100.4", "C", "ACH", "CCP"] and clps[0][6] == "MB"
    else:  # nothing paid: no money moves
        assert bpr[1:5] == ["H", "0", "C", "NON"] and clps[0][2] == "4"


# ---- splitting, determinism, speed --------------------------------------------------------------


@pytest.mark.parametrize("kind", FILES)
def test_claim_spans_cut_each_claim(kind: str) -> None:
    payload = FILES[kind]()
    if kind.startswith("835"):
        expected = _closing_spans(payload, b"CLP", (b"LX", b"SE", b"PLB"))
    else:
        expected = _closing_spans(payload, b"CLM", (b"HL", b"SE"))
    spans = x12.claim_spans(payload)
    assert spans == expected and len(spans) == {"837P": 2, "837I": 1, "835": 3, "835-ACH": 1, "835-denied": 1}[kind]
    for claim_id, start, end in spans:
        assert payload[start:end].startswith(f"{'CLP' if kind.startswith('835') else 'CLM'}*{claim_id}*".encode())
        assert payload[start:end].endswith(b"~\n")
    first = payload[spans[0][1] : spans[0][2]].decode()
    if kind == "837P":  # a claim's span carries its service lines
        assert first.count("\nLX*") == 3 and first.count("\nSV1*") == 3


def test_claim_spans_of_a_truncated_file_end_at_the_end() -> None:
    payload = _837p()
    cut = payload[: payload.index(b"SV1*HC:83036")]
    assert x12.claim_spans(cut) == [("C000000101", payload.index(b"CLM*C000000101"), len(cut))]
    with pytest.raises(ValueError):
        x12.claim_spans(b"MSH|^~\\&|")


def test_same_inputs_same_bytes() -> None:
    for render in FILES.values():
        assert render() == render()
    reordered = dict(reversed(list(SUBSCRIBERS.items())))
    assert x12.claims_837p([OFFICE_VISIT, NO_DOB_VISIT], reordered, PEOPLE, sender_id="CARELAKEHLTH",
                           receiver_id="CLEARINGHSE", control=2601421, created=CREATED) == _837p()


def test_a_days_claims_split_into_transaction_sets() -> None:
    people = {f"P{i:07d}": replace(PEOPLE["P0000001"], person_id=f"P{i:07d}") for i in range(5000)}
    subscribers = {pid: replace(SUBSCRIBERS["P0000001"], person_id=pid, mrn=f"CL{i:07d}")
                   for i, pid in enumerate(people)}
    claims = [replace(OFFICE_VISIT, claim_id=f"C{i:09d}", person_id=f"P{i % 5000:07d}") for i in range(20_000)]
    # Speed is measured in bench/ (bench/simulate_day.py), never asserted here.
    payload = x12.claims_837p(claims, subscribers, people, sender_id="CARELAKEHLTH", receiver_id="CLEARINGHSE",
                              control=2601421, created=CREATED)
    assert payload.count(b"\nST*837*") == 4 and payload.count(b"\nCLM*") == 20_000  # at most 5000 claims a set
    spans = x12.claim_spans(payload)
    assert [s[0] for s in spans] == [c.claim_id for c in claims]  # each subscriber's claims sit together
    assert payload[-40:].endswith(b"GE*4*2601421~\nIEA*1*002601421~\n")


def test_bad_envelope_values_are_refused() -> None:
    with pytest.raises(ValueError):
        x12.claims_837i([], SUBSCRIBERS, PEOPLE, sender_id="CARELAKEHLTH", receiver_id="CLEARINGHSE",
                        control=1, created=CREATED)
    with pytest.raises(ValueError):
        x12.claims_837p([OFFICE_VISIT], SUBSCRIBERS, PEOPLE, sender_id="A-SENDER-ID-THAT-IS-TOO-LONG",
                        receiver_id="CLEARINGHSE", control=1, created=CREATED)
    with pytest.raises(ValueError):
        x12.claims_837p([OFFICE_VISIT], SUBSCRIBERS, PEOPLE, sender_id="CARELAKEHLTH",
                        receiver_id="CLEARINGHSE", control=1_000_000_000, created=CREATED)
