"""Property tests: whatever bytes arrive, map_hl7v2 returns a MapResult or raises MappingError.

Never another exception (that would stop a stream), never an ``internal_error`` (a mapping bug
caught at the last line of defence), and every resource it does return is valid FHIR.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carelake_normalizer import validate as validation
from carelake_normalizer.core import MappingError, MapResult
from carelake_normalizer.hl7v2 import map_hl7v2, split_batch

CHICAGO = ZoneInfo("America/Chicago")
SETTINGS = settings(max_examples=400, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SEEDS = [
    ("MSH|^~\\&|EPIC|MC|CARELAKE|CARELAKE|20260115083000-0600||ADT^A01^ADT_A01|M1|P|2.5.1\rEVN|A01|20260115083000\r"
     "PID|1||E1^^^EHR^MR~900112222^^^SSA^SS||Doe^Jane^Q^^^^L||19610304|F|||12 Elm^^Town^IL^62701||^PRN^PH^^^217^5550100\r"
     "NK1|1|Doe^John|SPO^Spouse^HL70063\rPV1|1|I|MED^1^A^MC||||123^Ward^Ben^^^^^^NPI^L^^^NPI||||||||||||V1|||||||||||||||||||"
     "||||||20260115080000-0600\rDG1|1||E11.9^Diabetes^I10|||A\rIN1|1|X|P1^^^^NIIP|Plan||||||||||CI|Doe^Jane|SEL\rZPI|1|x\r"),
    ("MSH|^~\\&|LAB|L|CARELAKE|CARELAKE|20260115||ORU^R01|M2|P|2.3\nPID|||L1||Roe^Sam||19800101|M\n"
     "ORC|RE|O1|F1\nOBR|1|O1|F1|24323-8^CMP^LN|||202601150830\nOBX|1|NM|2345-7^Glu^LN||90|mg/dL|70-99|N|||F\n"
     "OBX|2|SN|777-3^Plt^LN||>^400|10*3/uL||H|||F\nOBX|3|ST|x^y^L||text \\T\\ more||||||F\nNTE|1||note\n"),
    ("MSH|^~\\&|C|F|R|R|20260115||SIU^S12^SIU_S12|M3|P|2.5.1\rSCH|A1^E|A1^C|||||R^R^L|ROUTINE|30|min|^^M30^202601160900^"
     "202601160930\rPID|1||S1^^^SCH^MR||Doe^J\rRGS|1\rAIL|1||CLINIC^2\rAIP|1||123^Q^A\r"),
    ("MSH|^~\\&|B|F|R|R|20260115||DFT^P03|M4|P|2.5.1\rEVN|P03|20260115\rPID|1||B1^^^BILL^MR||Doe^J\rPV1|1|U\r"
     "FT1|1|T1||20260115|20260115|CG|99213^Visit^C4|||1|10.00&USD\r"),
    ("MSH|^~\\&|I|F|R|R|20260115||VXU^V04|M5|P|2.5.1\rPID|1||I1^^^IIS^MR||Doe^J\rORC|RE||IMM1^PH\r"
     "RXA|0|1|20260115|20260115|140^Flu^CVX|0.5|mL||00^New^NIP001||||||LOT1||PMC^Sanofi^MVX|||CP|A\rRXR|IM^^HL70162\r"),
    ("MSH|^~\\&|P|F|R|R|20260115||RDE^O11|M6|P|2.5.1\rPID|1||R1^^^RX^MR||Doe^J\rORC|NW|RX1\r"
     "RXE|^^^20260115|860975^Metformin^RXNORM|500||mg|||||60|TAB|2\rRXR|PO\r"),
]
DELIMITER_BYTES = st.sampled_from([b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"\x0b", b"\x1c", b'""', b"MSH",
                                   b"\\X0\\", b"\\", b"99999999999999", b"-2500", b"\xff\xfe"])


def _check(payload: bytes) -> None:
    try:
        result = map_hl7v2(payload, source="fuzz", tz=CHICAGO, raw_id="fuzz-1")
    except MappingError as exc:
        assert exc.code != "internal_error", exc.reason
        assert exc.reason
        return
    assert isinstance(result, MapResult)
    for m in result.resources:
        assert validation.validate(m.resource, memo=False) is None
    assert sum(result.unused.values()) == result.meta["fields_unused"]


@SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes_never_crash(data: bytes) -> None:
    _check(data)


@SETTINGS
@given(st.sampled_from(SEEDS), st.binary(max_size=400))
def test_random_bytes_after_a_valid_header_never_crash(seed: str, tail: bytes) -> None:
    _check(seed.encode()[: seed.index("\r" if "\r" in seed else "\n") + 1] + tail)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)).encode())
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "duplicate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "delete":
            del data[at: at + draw(st.integers(1, 30))]
        elif kind == "insert":
            data[at:at] = draw(st.one_of(DELIMITER_BYTES, st.binary(min_size=1, max_size=12)))
        elif kind == "replace" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "duplicate":
            end = min(len(data), at + draw(st.integers(1, 80)))
            data[end:end] = data[at:end]
    return bytes(data)


@SETTINGS
@given(mutated())
def test_mutated_messages_never_crash(payload: bytes) -> None:
    _check(payload)


FIELD_VALUES = st.one_of(
    st.text(alphabet="0123456789+-.", max_size=24),  # dates, numbers, offsets, half of each
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
    st.lists(st.text(alphabet="AZaz09^~&\\.-<>= :", max_size=8), max_size=5).map("^".join),
    st.sampled_from(['""', "^", "~", "&", "\\", "\\X\\", "99999999999999", "20260230", "2026011525",
                     "<5", ">=", "^>^", "^1^:^", "1^2^3^4^5^6^7^8^9", "~~~", "I10", "LN", "SEL"]),
)


@st.composite
def field_edits(draw: st.DrawFn) -> bytes:
    """A valid message with values written into random fields: the mappers' paths, not the reader's."""
    text = draw(st.sampled_from(SEEDS))
    sep = "\r" if "\r" in text else "\n"
    segments = [s.split("|") for s in text.rstrip(sep).split(sep)]
    for _ in range(draw(st.integers(1, 8))):
        segment = draw(st.sampled_from(segments[1:]))
        n = draw(st.integers(1, 40))
        segment.extend([""] * (n + 1 - len(segment)))
        segment[n] = draw(FIELD_VALUES)
    return (sep.join("|".join(s) for s in segments) + sep).encode()


@SETTINGS
@given(field_edits())
def test_messages_with_odd_field_values_never_crash(payload: bytes) -> None:
    _check(payload)


@SETTINGS
@given(st.lists(st.one_of(st.sampled_from(SEEDS).map(str.encode), st.binary(max_size=60)), max_size=6),
       st.sampled_from([b"", b"\n", b"\r\n", b"\x1c\r\x0b"]))
def test_split_batch_loses_no_message(parts: list[bytes], glue: bytes) -> None:
    data = glue.join(parts)
    messages = split_batch(data)
    assert sum(m.count(b"MSH|") for m in messages) == data.count(b"MSH|")
    for m in messages:
        _check(m)
