"""X12 mapping details on hand-written files: what the simulator does not send (a 2000C dependent,
line-level providers, a service facility, replacement / void claims, 835 service lines), broken
records with the precise ``where`` of each rejection, the per-file cache, and random input."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carelake_normalizer import validate as validation
from carelake_normalizer.core import MappingError, MapResult
from carelake_normalizer.ids import resource_id
from carelake_normalizer.x12 import map_x12
from carelake_normalizer.x12.index import STATS, build_index, clear_cache

CHICAGO = ZoneInfo("America/Chicago")


def _isa(sep: str = "*", comp: str = ":", term: str = "~", version: str = "005010X222A1", control: int = 1,
         functional: str = "HC") -> list[str]:
    isa = (f"ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *260115*2200*^*00501*"
           f"{control:09d}*0*T*{comp}")
    return [isa.replace("*", sep), f"GS*{functional}*SENDER*RECEIVER*20260115*2200*{control}*X*{version}".replace("*", sep)]


def _file(body: list[str], *, version: str = "005010X222A1", st01: str = "837", sep: str = "*", comp: str = ":",
          term: str = "~", functional: str = "HC") -> bytes:
    segments = _isa(sep, comp, term, version, functional=functional)
    st = [f"ST*{st01}*0001*{version}", *body]
    st.append(f"SE*{len(st) + 1}*0001")
    segments += [s.replace("*", sep).replace(":", comp) for s in st]
    segments += ["GE*1*1".replace("*", sep), "IEA*1*000000001".replace("*", sep)]
    return (f"{term}\n".join(segments) + f"{term}\n").encode()


HEADER_837 = [
    "BHT*0019*00*REF1*20260115*2200*CH",
    "NM1*41*2*BILLING SYSTEM*****46*SENDER", "PER*IC*OFFICE*TE*3125550100",
    "NM1*40*2*RECEIVER*****46*RECEIVER",
    "HL*1**20*1", "PRV*BI*PXC*207Q00000X",
    "NM1*85*1*WELBY*MARCUS****XX*1234567893", "N3*1 MAIN ST", "N4*CHICAGO*IL*606011234", "REF*SY*900000001",
    "HL*2*1*22*1", "SBR*S*19*GRP100*ACME GROUP*****CI",
    "NM1*IL*1*DOE*JOHN*Q***MI*MEM001", "N3*9 ELM ST", "N4*CHICAGO*IL*60601", "DMG*D8*19700101*M",
    "NM1*PR*2*ACME HEALTH*****PI*ACME1",
    "HL*3*2*23*0", "PAT*19",
    "NM1*QC*1*DOE*JANE", "N3*9 ELM ST", "N4*CHICAGO*IL*60601", "DMG*D8*20150601*F",
]
CLAIM_A = [
    "CLM*PCN-A*300***11:B:7*Y*A*Y*Y", "REF*F8*PAYERCLAIM9", "REF*D9*CH123", "REF*G1*AUTH77", "REF*EA*MRN55",
    "HI*ABK:F329*ABF:Z0000*ABF:F329",
    "NM1*82*1*HOUSE*GREGORY****XX*1245319599", "PRV*PE*PXC*207R00000X",
    "NM1*77*2*CLINIC ONE*****XX*1679576722", "N3*2 OAK ST", "N4*CHICAGO*IL*60602",
    "LX*1", "SV1*HC:99214:25*200*UN*1*22**1:2", "DTP*472*D8*20260110",
    "LX*2", "SV1*HC:G0008*100*MJ*15***3", "DTP*472*RD8*20260110-20260111",
    "NM1*82*1*CAMERON*ALLISON****XX*1003000126",
]
CLAIM_VOID = ["CLM*PCN-B*50***11:B:8*Y*A*Y*Y", "HI*BK:2500", "LX*1", "SV1*HC:99213*50*UN*1***1",
              "DTP*472*D8*20260112"]


def file_837(*claims: list[str]) -> bytes:
    body = list(HEADER_837)
    for c in claims or (CLAIM_A, CLAIM_VOID):
        body += c
    return _file(body)


def file_835(claims: list[str] | None = None) -> bytes:
    body = ["BPR*I*230*C*ACH*CCP*01*001234567*DA*123456789*1234567890**01*009876543*DA*9876543*20260116",
            "TRN*1*TRACE42*1234567890", "DTM*405*20260115",
            "N1*PR*ACME HEALTH", "N3*PO BOX 1", "N4*CHICAGO*IL*60680", "REF*2U*ACME1",
            "N1*PE*MARCUS WELBY*XX*1234567893", "REF*TJ*071234567", "LX*1"]
    body += claims or [
        "CLP*PCN-A*1*300*230*20*12*PAY-1*11", "NM1*QC*1*DOE*JANE****MI*MEM001",
        "SVC*HC:99214:25*200*160**1", "DTM*472*20260110", "CAS*CO*45*20", "CAS*PR*2*20", "AMT*B6*180",
        "SVC*HC:G0008*100*70**15", "CAS*CO*45*30",
        "CLP*PCN-C*22*-50*-50**12*PAY-2", "NM1*QC*1*ROE*RICHARD****MI*MEM002", "CAS*CR*129*-50",
    ]
    return _file(body, version="005010X221A1", st01="835", functional="HP")


def records(data: bytes) -> list[tuple[int, int]]:
    return [(c.start, c.end) for c in build_index(data).claims]


def map_record(data: bytes, i: int = 0, **kw) -> MapResult:  # noqa: ANN003
    start, end = records(data)[i]
    return map_x12(data[start:end], source="claims", tz=CHICAGO, raw_id="r1", file_bytes=data, byte_offset=start, **kw)


def _of(result: MapResult, rt: str) -> list[dict]:
    return [m.resource for m in result.resources if m.resource_type == rt]


# ---- what the simulator does not send -------------------------------------------------------------


def test_a_dependent_patient_replacement_claim_line_providers_and_facility() -> None:
    result = map_record(file_837())
    assert result.rejected == []
    (patient,) = _of(result, "Patient")
    assert patient["name"][0] == {"use": "official", "family": "DOE", "given": ["JANE"]}
    assert patient["birthDate"] == "2015-06-01" and patient["gender"] == "female"
    # A dependent has no member id of its own: identified by the subscriber's, the name (and MRN).
    assert [i["type"]["coding"][0]["code"] for i in patient["identifier"]] == ["MR"]
    (coverage,) = _of(result, "Coverage")
    assert coverage["relationship"]["coding"][0]["code"] == "child"
    assert coverage["subscriberId"] == "MEM001" and "subscriber" not in coverage
    assert coverage["order"] == 2 and coverage["class"][0]["value"] == "GRP100"
    (claim,) = _of(result, "Claim")
    assert claim["patient"] == {"reference": f"Patient/{patient['id']}"}
    assert claim["status"] == "active"
    assert claim["extension"][0]["valueCoding"]["code"] == "7"
    assert claim["related"][0]["reference"]["value"] == "PAYERCLAIM9"
    assert {"system": "urn:carelake:claims:id:clearinghouse-claim-number", "value": "CH123"} in claim["identifier"]
    assert claim["insurance"][0]["preAuthRef"] == ["AUTH77"]
    assert claim["facility"] == {"type": "Location", "identifier": {"system": "http://hl7.org/fhir/sid/us-npi",
                                                                    "value": "1679576722"}, "display": "CLINIC ONE"}
    # The billing provider is a person: a Practitioner.
    assert claim["provider"]["reference"].startswith("Practitioner/")
    roles = [(c["role"]["coding"][0]["code"], c["provider"]["reference"]) for c in claim["careTeam"]]
    assert [r for r, _ in roles] == ["rendering", "rendering"]
    assert claim["careTeam"][0]["qualification"]["coding"][0]["code"] == "207R00000X"
    line1, line2 = claim["item"]
    assert line1["modifier"][0]["coding"][0]["code"] == "25"
    assert line1["locationCodeableConcept"]["coding"][0]["code"] == "22"  # SV105 over CLM05-1
    assert line2["locationCodeableConcept"]["coding"][0]["code"] == "11"
    assert line1["diagnosisSequence"] == [1, 2]
    # F32.9 is sent twice (principal and other): one diagnosis, both roles; pointer 3 lands on it.
    assert [d["diagnosisCodeableConcept"]["coding"][0]["code"] for d in claim["diagnosis"]] == ["F32.9", "Z00.00"]
    assert [t["coding"][-1]["code"] for t in claim["diagnosis"][0]["type"]] == ["principal", "other"]
    assert line2["diagnosisSequence"] == [1]
    assert line2["productOrService"]["coding"][0]["system"] == "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
    assert line2["quantity"] == {"value": 15, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"}
    assert line2["servicedPeriod"] == {"start": "2026-01-10", "end": "2026-01-11"}
    assert line2["careTeamSequence"] == [2]  # the 2420A line-level rendering provider
    assert claim["billablePeriod"] == {"start": "2026-01-10", "end": "2026-01-11"}
    assert claim["created"] == "2026-01-16T04:00:00Z"  # BHT 2026-01-15 22:00 Chicago
    assert "R" in result.resources[[m.resource_type for m in result.resources].index("Claim")].security_labels
    practitioners = _of(result, "Practitioner")
    assert {p["identifier"][0]["value"] for p in practitioners} == {"1234567893", "1245319599", "1003000126"}
    # The service facility's N3/N4 and the submitter loop are not read: counted, named by loop.
    assert result.unused["N3-2310C-N301"] == 1 and result.unused["NM1-1000A-NM103"] == 1
    assert result.unused["REF-2010AA-REF02"] == 1  # an SSN as the billing provider's tax id: not read


def test_void_claim_icd9_and_the_second_record_of_a_file() -> None:
    data = file_837()
    result = map_record(data, 1)
    assert result.rejected == []
    (claim,) = _of(result, "Claim")
    assert claim["status"] == "cancelled"
    assert claim["diagnosis"][0]["diagnosisCodeableConcept"]["coding"] == [
        {"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": "250.0"}]
    # The first record of the file carried the enclosing loops' gaps; the second does not repeat them.
    assert "NM1-1000A-NM103" not in result.unused


def test_remittance_with_service_lines_and_a_reversal() -> None:
    data = file_835()
    result = map_record(data, 0)
    assert result.rejected == []
    (res,) = _of(result, "ClaimResponse")
    assert res["type"]["coding"][0]["code"] == "institutional"  # CLP08 facility code
    assert res["created"] == "2026-01-15"
    assert res["payment"] == {"type": res["payment"]["type"], "amount": {"value": 230, "currency": "USD"},
                              "date": "2026-01-16",
                              "identifier": {"system": "urn:carelake:claims:id:payment-trace-number",
                                             "value": "TRACE42"}}
    item1, item2 = res["item"]
    cats = [(a["category"]["coding"][0]["code"], a["amount"]["value"]) for a in item1["adjudication"]]
    assert cats == [("submitted", 200), ("benefit", 160), ("CO", 20), ("PR", 20), ("eligible", 180)]
    assert item2["itemSequence"] == 2
    assert [a["category"]["coding"][0]["code"] for a in res["adjudication"]] == ["submitted", "benefit",
                                                                                 "memberliability"]
    member = resource_id("claims", "Patient", "MEM001")
    assert res["patient"] == {"reference": f"Patient/{member}"}
    assert res["request"]["reference"] == f"Claim/{resource_id('claims', 'Claim', 'PCN-A')}"
    payer, payee = _of(result, "Organization")
    assert payer["identifier"][0]["value"] == "ACME1" and payer["address"][0]["postalCode"] == "60680"
    assert payee["identifier"][1]["value"] == "071234567"
    reversal = map_record(data, 1)
    (rev,) = _of(reversal, "ClaimResponse")
    assert rev["disposition"] == "Reversal of previous payment"
    assert rev["total"][1]["amount"]["value"] == -50
    assert rev["id"] != res["id"]


def test_other_delimiters() -> None:
    data = file_837(CLAIM_VOID).replace(b"*", b"|").replace(b":", b">").replace(b"~", b"'")
    data = data.replace(b"ISA|00|          |00|          |ZZ|SENDER         |ZZ|RECEIVER       |260115|2200|^|",
                        b"ISA|00|          |00|          |ZZ|SENDER         |ZZ|RECEIVER       |260115|2200|^|")
    result = map_record(data)
    assert result.rejected == [] and _of(result, "Claim")[0]["total"]["value"] == 50
    whole = map_x12(data, source="claims", tz=CHICAGO, raw_id="w")
    assert [m.resource_type for m in whole.resources].count("Claim") == 1


# ---- broken records ------------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "code", "where"), [
    (b"", "empty", None),
    (b"hello, world", "not_x12", "segment 1"),
    (b"MSH|^~\\&|EHR|", "not_a_claim", "segment 1 (MSH)"),
    (b"NM1*IL*1*DOE~", "not_a_claim", "segment 1 (NM1)"),
    (b"CLM**100***11:B:1~LX*1~SV1*HC:99213*100*UN*1***1~", "missing_field", "2300 CLM01"),
    (b"CLM*A*100***11:B:1~HL*4*1*22*0~", "not_a_claim", "segment 2 (HL)"),
    (b"CLP**1*100*80~", "missing_field", "2100 CLP01"),
])
def test_a_record_that_cannot_be_read_names_where(payload: bytes, code: str, where: str | None) -> None:
    with pytest.raises(MappingError) as err:
        map_x12(payload, source="claims", tz=CHICAGO, raw_id="r")
    assert (err.value.code, err.value.where) == (code, where)


@pytest.mark.parametrize(("segment", "replacement", "code", "where"), [
    ("CLM*PCN-B*50***11:B:8*Y*A*Y*Y", "CLM*PCN-B*5O***11:B:8*Y*A*Y*Y", "invalid_value", "2300 CLM02"),
    ("CLM*PCN-B*50***11:B:8*Y*A*Y*Y", "CLM*PCN-B****11:B:8*Y*A*Y*Y", "missing_field", "2300 CLM02"),
    ("DTP*472*D8*20260112", "DTP*472*D8*20260230", "invalid_date", "2400[1] DTP*472 DTP03"),
    ("DTP*472*D8*20260112", "DTP*472*RD8*20260112-20260101", "invalid_date", "2400[1] DTP*472 DTP03"),
    ("DTP*472*D8*20260112", "DTP*472*XX*20260112", "invalid_value", "2400[1] DTP*472 DTP02"),
    ("SV1*HC:99213*50*UN*1***1", "SV1*HC:99213*50*UN*1***7", "invalid_value", "2400[1] SV107"),
    ("SV1*HC:99213*50*UN*1***1", "SV1*HC:99213*50*UN*0***1", "invalid_value", "2400[1] SV104"),
    ("SV1*HC:99213*50*UN*1***1", "SV1*HC*50*UN*1***1", "missing_field", "2400[1] SV101-2"),
    ("SV1*HC:99213*50*UN*1***1", "SV1*HC:99213*50*UN*1***1" + "*X" * 16, "too_many_elements", "2400[1] SV122"),
    ("HI*BK:2500", "HI*BK:2500*ABF", "missing_field", "2300 HI02-2"),
    ("LX*1~\nSV1*HC:99213*50*UN*1***1~\nDTP*472*D8*20260112", "LX*1", "missing_segment", "2300 CLM"),
])
def test_a_bad_value_rejects_the_claim_and_names_the_element(segment: str, replacement: str, code: str,
                                                            where: str) -> None:
    data = file_837(CLAIM_VOID)
    broken = data.replace(segment.encode(), replacement.encode())
    assert broken != data
    result = map_record(broken)
    assert [(p.reason_code, p.where, p.resource_type) for p in result.rejected] == [(code, where, "Claim")]
    assert result.rejected[0].position is not None
    # The enclosing loops' resources still flow.
    assert {m.resource_type for m in result.resources} == {"Patient", "Coverage", "Organization", "Practitioner"}


def test_an_impossible_birth_date_rejects_the_patient_only() -> None:
    data = file_837(CLAIM_VOID).replace(b"DMG*D8*20150601*F", b"DMG*D8*20150631*F")
    result = map_record(data)
    assert [(p.reason_code, p.where, p.resource_type) for p in result.rejected] == [
        ("invalid_date", "2010CA DMG02", "Patient")]
    assert _of(result, "Claim") and _of(result, "Coverage")


def test_a_subscriber_without_member_id_is_not_a_patient() -> None:
    data = file_837(CLAIM_VOID).replace(b"NM1*IL*1*DOE*JOHN*Q***MI*MEM001", b"NM1*IL*1*DOE*JOHN*Q")
    result = map_record(data)
    assert [(p.reason_code, p.where, p.resource_type) for p in result.rejected] == [
        ("missing_field", "2010BA NM109", "Patient")]
    assert not _of(result, "Patient") and not _of(result, "Coverage")
    (claim,) = _of(result, "Claim")
    assert claim["patient"] == {"reference": "#patient"}  # never a Patient id every such member would share
    assert claim["insurer"]["reference"].startswith("Organization/")


def test_835_bad_status_and_cas_without_reason() -> None:
    bad = file_835(["CLP*PCN-A*99*300*230**12*PAY-1", "NM1*QC*1*DOE*JANE****MI*MEM001",
                    "CLP*PCN-B*1*300*230**12*PAY-2", "CAS*CO**20"])
    first, second = map_record(bad, 0), map_record(bad, 1)
    assert [(p.reason_code, p.where) for p in first.rejected] == [("invalid_value", "2100 CLP02")]
    assert [(p.reason_code, p.where) for p in second.rejected] == [("missing_field", "2100 CAS*CO CAS02")]


def test_unsupported_transaction_sets() -> None:
    dental = _file(HEADER_837 + CLAIM_VOID, version="005010X224A2")
    whole = map_x12(dental, source="claims", tz=CHICAGO, raw_id="w")
    assert [(p.reason_code, p.where) for p in whole.rejected] == [("unsupported_transaction", "ST01")]
    with pytest.raises(MappingError) as err:
        map_record(dental)
    assert err.value.code == "unsupported_transaction"


def test_a_record_that_is_not_the_files_bytes_at_its_offset_maps_claim_only() -> None:
    data = file_837()
    (s0, e0), (s1, _e1) = records(data)
    result = map_x12(data[s0:e0], source="claims", tz=CHICAGO, raw_id="r", file_bytes=data, byte_offset=s1,
                     patient_key="claims|MEM001")
    assert result.meta["context"] == "claim-only"
    assert [p.reason_code for p in result.rejected] == ["context_mismatch"]
    assert _of(result, "Claim")[0]["patient"] == {"reference": f"Patient/{resource_id('claims', 'Patient', 'MEM001')}"}
    assert not _of(result, "Patient")  # no context: never another claim's patient


# ---- the per-file cache --------------------------------------------------------------------------


def test_the_file_is_indexed_once() -> None:
    clear_cache()
    data = file_837(CLAIM_A, CLAIM_VOID, CLAIM_VOID)
    for i in range(3):
        map_record(data, i)
    assert STATS["builds"] == 1 and STATS["identity_hits"] == 2
    copy = bytes(bytearray(data))  # the same file read again: found by its content
    start, end = records(copy)[1]
    map_x12(copy[start:end], source="claims", tz=CHICAGO, raw_id="r", file_bytes=copy, byte_offset=start)
    assert STATS["builds"] == 1 and STATS["content_hits"] == 1
    # A different file of the same length and head is a different file.
    other = data.replace(b"MEM001", b"MEM009")
    assert len(other) == len(data)
    result = map_x12(other[start:end], source="claims", tz=CHICAGO, raw_id="r", file_bytes=other, byte_offset=start)
    assert STATS["builds"] == 2
    assert _of(result, "Coverage")[0]["subscriberId"] == "MEM009"
    # With a file key the whole file is not hashed; the key names the content for good.
    map_x12(data[start:end], source="claims", tz=CHICAGO, raw_id="r", file_bytes=bytes(bytearray(data)),
            byte_offset=start, file_key="bronze/claims/837P.x12")
    assert STATS["builds"] == 3


# ---- random input --------------------------------------------------------------------------------

FILE = file_837()
SPANS = records(FILE)
FILE_835 = file_835()


def _check(call) -> None:  # noqa: ANN001
    try:
        result = call()
    except MappingError as exc:
        assert exc.code != "internal_error", exc  # a bug, not bad input
        return
    assert isinstance(result, MapResult)
    for m in result.resources:
        assert validation.validate(m.resource, memo=False) is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_never_crash(data: bytes) -> None:
    _check(lambda: map_x12(data, source="claims", tz=CHICAGO, raw_id="r"))
    _check(lambda: map_x12(b"CLM*" + data, source="claims", tz=CHICAGO, raw_id="r"))


_MUTATIONS = st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["del", "ins", "sub"]),
                                st.sampled_from(list(b"*:~^\n0123456789ABCDEFGHIJ-. \x00\xff"))),
                      min_size=1, max_size=8)


def _mutate(data: bytes, mutations: list) -> bytes:
    out = bytearray(data)
    for at, op, byte in mutations:
        if not out:
            break
        i = at % len(out)
        if op == "del":
            del out[i]
        elif op == "ins":
            out.insert(i, byte)
        else:
            out[i] = byte
    return bytes(out)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(SPANS) - 1), _MUTATIONS, st.booleans())
def test_mutated_claim_records_never_crash(i: int, mutations: list, with_file: bool) -> None:
    start, end = SPANS[i]
    record = _mutate(FILE[start:end], mutations)
    kw = {"file_bytes": FILE, "byte_offset": start} if with_file else {}
    _check(lambda: map_x12(record, source="claims", tz=CHICAGO, raw_id="r", **kw))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_MUTATIONS, st.booleans())
def test_mutated_whole_files_never_crash(mutations: list, remittance: bool) -> None:
    data = _mutate(FILE_835 if remittance else FILE, mutations)
    _check(lambda: map_x12(data, source="claims", tz=CHICAGO, raw_id="r"))
    index_spans = []
    try:
        index_spans = records(data)
    except MappingError:
        pass
    for start, end in index_spans[:2]:  # a record of the mutated file, with the mutated file as context
        _check(lambda s=start, e=end: map_x12(data[s:e], source="claims", tz=CHICAGO, raw_id="r",
                                              file_bytes=data, byte_offset=s))
