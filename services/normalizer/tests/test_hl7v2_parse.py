"""The HL7 v2 reader: delimiters, escapes, terminators, framing, batches — and python-hl7 agrees."""

from __future__ import annotations

import hl7
import pytest

from carelake_normalizer.core import MappingError
from carelake_normalizer.hl7v2.parse import parse_message, split_batch, split_batch_spans

ADT = ("MSH|^~\\&|EPIC|MC|CARELAKE|CARELAKE|20260115083000-0600||ADT^A01^ADT_A01|M1|P|2.5.1\r"
       "EVN|A01|20260115083000-0600\r"
       "PID|1||E1^^^EHR^MR~900112222^^^SSA^SS||O\\T\\Brien^Ann^^^^^L||19610304|F\r"
       "PV1|1|I|MED^401^A^MC||||||||||||||||V1\r")


def test_fields_components_repetitions_and_subcomponents() -> None:
    msg = parse_message(ADT.encode())
    pid = msg.first("PID")
    assert (msg.code, msg.trigger, msg.structure, msg.version, msg.control_id) == ("ADT", "A01", "ADT_A01", "2.5.1", "M1")
    assert [r.c(1) for r in pid.reps(3)] == ["E1", "900112222"]
    assert pid.reps(3)[1].c(4) == "SSA"
    assert pid.val(5) == "O&Brien" and pid.val(5, 2) == "Ann"
    assert pid.val(99) == "" and pid.rep(99).c(1) == ""
    assert msg.first("PV1").val(3, 4) == "MC"


@pytest.mark.parametrize(("escaped", "text"), [
    ("A\\F\\B", "A|B"), ("A\\S\\B", "A^B"), ("A\\T\\B", "A&B"), ("A\\R\\B", "A~B"), ("A\\E\\B", "A\\B"),
    ("Z\\X4A6F7365\\", "ZJose"), ("M\\XC3A9\\lanie", "Mélanie"), ("line1\\.br\\line2", "line1\nline2"),
    ("\\H\\bold\\N\\", "bold"), ("C:\\temp", "C:\\temp"), ("50\\%", "50\\%"),
])
def test_escape_sequences(escaped: str, text: str) -> None:
    msg = parse_message(f"MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5\rNTE|1||{escaped}\r".encode())
    assert msg.first("NTE").val(3) == text


def test_other_delimiters_declared_in_msh() -> None:
    msg = parse_message(b"MSH#:*!@#A#B#C#D#2026##ADT:A08#1#P#2.4\rPID#1##E1:::EHR:MR*E2#\r")
    assert msg.d.field == "#" and msg.d.comp == ":" and msg.d.rep == "*"
    assert [r.c(1) for r in msg.first("PID").reps(3)] == ["E1", "E2"]


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_any_segment_terminator(sep: str) -> None:
    msg = parse_message(ADT.replace("\r", sep).encode())
    assert [s.name for s in msg.segments] == ["MSH", "EVN", "PID", "PV1"]
    assert msg.terminated


def test_mllp_framing_bom_and_hl7_null() -> None:
    framed = b"\x0b\xef\xbb\xbf" + ADT.replace("O\\T\\Brien", '""').encode() + b"\x1c\r"
    msg = parse_message(framed)
    assert msg.first("PID").val(5) == "" and msg.first("PID").val(5, 2) == "Ann"


def test_non_utf8_bytes_are_read_with_the_declared_charset() -> None:
    data = ("MSH|^~\\&|A|B|C|D|2026||ADT^A08|1|P|2.5||||||8859/1\rPID|1||E1||Mu\u00f1oz^Jos\u00e9\r").encode("latin-1")
    msg = parse_message(data)
    assert msg.charset == "latin-1" and msg.first("PID").val(5) == "Muñoz"


@pytest.mark.parametrize(("payload", "code"), [
    (b"", "empty"),
    (b"PID|1||E1\r", "not_hl7"),
    (b"\x00\xff garbage", "not_hl7"),
    (b"MSH|EPIC|MC|CARELAKE|CARELAKE|2026||ADT^A01|1|P|2.5\r", "bad_header"),
    (b"MSHA^~\\&|x\r", "bad_header"),
    (b"MSH|^^\\&|A|B\r", "bad_header"),
    (ADT.encode() + ADT.encode(), "batch_not_split"),
])
def test_unreadable_messages_raise_mapping_error(payload: bytes, code: str) -> None:
    with pytest.raises(MappingError) as err:
        parse_message(payload)
    assert err.value.code == code


def test_split_batch_handles_fhs_bhs_batches_with_lf_segments() -> None:
    one, two = ADT.replace("M1", "M2"), ADT.replace("M1", "M3")
    batch = ("FHS|^~\\&|EPIC\nBHS|^~\\&|EPIC\n" + one.replace("\r", "\n") + two.replace("\r", "\n")
             + "BTS|2\nFTS|1\n").encode()
    messages = split_batch(batch)
    assert [parse_message(m).control_id for m in messages] == ["M2", "M3"]
    assert all(m.startswith(b"MSH") for m in messages)


def test_split_batch_handles_an_mllp_stream() -> None:
    stream = b"".join(b"\x0b" + ADT.replace("M1", f"M{i}").encode() + b"\x1c\r" for i in range(3))
    assert [parse_message(m).control_id for m in split_batch(stream)] == ["M0", "M1", "M2"]


def test_split_batch_gives_junk_its_own_item_and_keeps_offsets() -> None:
    data = ADT.encode() + b"\n\x07\x08\xfe random bytes \n" + ADT.replace("M1", "M9").encode()
    spans = split_batch_spans(data)
    parts = [data[a:b] for a, b in spans]
    assert len(parts) == 3
    assert parse_message(parts[0]).control_id == "M1" and parse_message(parts[2]).control_id == "M9"
    with pytest.raises(MappingError):
        parse_message(parts[1])


def test_split_batch_on_a_simulated_feed_file_matches_its_messages(hl7_day) -> None:
    """The simulator writes one message per line; splitting the joined file gives them back."""
    payloads = [r.payload for r in hl7_day if r.source == "lab" and not any(d.startswith("malformed") for d in r.defects)]
    data = b"\n".join(payloads) + b"\n"
    assert [m.rstrip(b"\n") for m in split_batch(data)] == payloads


def test_the_reader_agrees_with_python_hl7_on_simulated_messages(hl7_day) -> None:
    """Every field of every segment, raw and unescaped, as python-hl7 reads it."""
    compared = 0
    for record in hl7_day[::3]:
        if any(d.startswith("malformed") for d in record.defects):
            continue
        text = record.payload.decode()
        ours, theirs = parse_message(record.payload), hl7.parse(text)
        assert [s.name for s in ours.segments] == [str(s[0]) for s in theirs]
        for seg, ref in zip(ours.segments, theirs, strict=True):
            for n in range(1, len(ref)):
                raw = str(ref[n])
                assert seg.fields[n] == raw, f"{seg.name}-{n}"
                if n > 2 and raw and not any(c in raw for c in "^~&"):
                    assert seg.val(n) == theirs.unescape(raw).strip()
                compared += 1
    assert compared > 5000
