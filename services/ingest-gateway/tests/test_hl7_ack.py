"""HL7 ACKs and MLLP deframing: pure functions, no services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import hl7
import hl7apy
import pytest

from carelake_ingest_gateway.hl7_ack import (
    HEAD_BYTES,
    Frame,
    FrameReader,
    Junk,
    Oversize,
    Truncated,
    ack,
    escape,
    frame,
    readable_msh,
)
from carelake_ingest_gateway.sniff import parse_msh
from carelake_simulator.validate import validate_hl7

NOW = datetime(2026, 1, 15, 21, 7, 30, tzinfo=UTC)
ORU = (b"MSH|^~\\&|SUNQUEST|CARELAKE_LAB|CARELAKE|CARELAKE|20260115150721-0600||ORU^R01^ORU_R01|"
       b"LAB2026011500000002|P|2.5.1||||||UNICODE UTF-8\r"
       b"PID|1||L4375915^^^LAB^MR||Doe^Jane^^^^^L||19720623|F\r"
       b"OBR|1|ORD1^EPIC|ACC1^SUNQUEST|57021-8^CBC W Auto Differential panel - Blood^LN\r"
       b"OBX|1|NM|718-7^Hemoglobin [Mass/volume] in Blood^LN||13.8|g/dL^g/dL^UCUM|12-17.5|N|||F\r")


def _msh(payload: bytes = ORU, version: str | None = None):
    if version is not None:
        payload = payload.replace(b"|2.5.1|", f"|{version}|".encode(), 1)
    msh = parse_msh(payload)
    assert msh is not None
    return msh


def _parse(answer: bytes) -> hl7.Message:
    assert answer.endswith(b"\r") and b"\n" not in answer
    return hl7.parse(answer.decode())


# ---- the ACK -------------------------------------------------------------------------------------


def test_aa_swaps_sender_and_receiver_and_answers_the_control_id() -> None:
    msg = _parse(ack(_msh(), "AA", now=NOW, control_id="A1B2C3"))
    msh = msg.segment("MSH")
    assert str(msh[1]) == "|" and str(msh[2]) == "^~\\&"
    assert (str(msh[3]), str(msh[4])) == ("CARELAKE", "CARELAKE")
    assert (str(msh[5]), str(msh[6])) == ("SUNQUEST", "CARELAKE_LAB")
    assert str(msh[7]) == "20260115210730+0000"
    assert str(msh[9]) == "ACK^R01^ACK"
    assert str(msh[10]) == "A1B2C3"
    assert (str(msh[11]), str(msh[12])) == ("P", "2.5.1")
    assert [str(s[0]) for s in msg] == ["MSH", "MSA"]  # no ERR on success
    assert (str(msg.segment("MSA")[1]), str(msg.segment("MSA")[2])) == ("AA", "LAB2026011500000002")


def test_timestamp_keeps_the_given_offset() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=-6)))  # the same instant as NOW
    assert str(_parse(ack(_msh(), "AA", now=NOW, control_id="1")).segment("MSH")[7]) == "20260115210730+0000"
    assert str(_parse(ack(_msh(), "AA", now=local, control_id="1")).segment("MSH")[7]) == "20260115150730-0600"


@pytest.mark.parametrize(("code", "error_code"), [("AR", "102"), ("AE", "207"), ("AR", "203"), ("CR", "101")])
def test_errors_carry_an_err_segment(code: str, error_code: str) -> None:
    msg = _parse(ack(_msh(), code, text="why it failed", error_code=error_code, now=NOW, control_id="X9"))
    assert [str(s[0]) for s in msg] == ["MSH", "MSA", "ERR"]
    assert (str(msg.segment("MSA")[1]), str(msg.segment("MSA")[2])) == (code, "LAB2026011500000002")
    err = msg.segment("ERR")
    assert msg.extract_field("ERR", 1, 3, 1, 1) == error_code
    assert msg.extract_field("ERR", 1, 3, 1, 3) == "HL70357"
    assert str(err[4]) == "E"
    assert str(err[8]) == "why it failed"


def test_error_code_defaults_to_application_internal_error() -> None:
    msg = _parse(ack(_msh(), "AE", text="broker down", now=NOW, control_id="1"))
    assert msg.extract_field("ERR", 1, 3, 1, 1) == "207"


@pytest.mark.parametrize("code", ["AA", "CA"])
def test_no_err_on_accept_even_with_text(code: str) -> None:
    msg = _parse(ack(_msh(), code, text="ignored", error_code="207", now=NOW, control_id="1"))
    assert [str(s[0]) for s in msg] == ["MSH", "MSA"]


def test_unknown_ack_code_is_refused() -> None:
    with pytest.raises(ValueError):
        ack(_msh(), "OK", now=NOW, control_id="1")


@pytest.mark.parametrize("code", ["AA", "AE", "AR", "CA", "CE", "CR"])
def test_ack_passes_hl7apy_strict_validation(code: str) -> None:
    answer = ack(_msh(), code, text="unsupported HL7 version '9.9'", error_code="203", now=NOW,
                 control_id="0123456789abcdef0123")
    verdict = validate_hl7(answer)
    assert verdict.ok, verdict.errors


@pytest.mark.parametrize("version", ["2.3.1", "2.4", "2.5", "2.6", "2.7", "2.7.1", "2.8"])
def test_ack_is_written_in_the_senders_version(version: str) -> None:
    answer = ack(_msh(version=version), "AR", text="bad data", error_code="102", now=NOW, control_id="1")
    msg = _parse(answer)
    assert str(msg.segment("MSH")[12]) == version
    if version in hl7apy.SUPPORTED_LIBRARIES:  # hl7apy has no 2.7.1 tables
        verdict = validate_hl7(answer)
        assert verdict.ok, verdict.errors
    if version in ("2.3.1", "2.4"):  # no ERR-3/ERR-8 yet: ERR-1 (error code and location) and MSA-3
        assert str(msg.segment("MSA")[3]) == "bad data"
        assert msg.extract_field("ERR", 1, 1, 1, 4, 1) == "102"
    else:
        assert msg.extract_field("ERR", 1, 3, 1, 1) == "102"


def test_version_23_has_no_message_structure_component() -> None:
    msg = _parse(ack(_msh(version="2.3"), "AA", now=NOW, control_id="1"))
    assert str(msg.segment("MSH")[9]) == "ACK^R01"


def test_unsupported_version_is_answered_in_the_default_version() -> None:
    msg = _parse(ack(_msh(version="9.9"), "AR", text="unsupported", error_code="203", now=NOW, control_id="1"))
    assert str(msg.segment("MSH")[12]) == "2.5.1"
    assert str(msg.segment("MSA")[2]) == "LAB2026011500000002"
    assert msg.extract_field("ERR", 1, 3, 1, 1) == "203"


def test_unreadable_msh_gets_a_default_ack() -> None:
    answer = ack(None, "AR", text="unparseable MSH", error_code="102", now=NOW, control_id="C1")
    msg = _parse(answer)
    msh = msg.segment("MSH")
    assert (str(msh[3]), str(msh[4]), str(msh[5]), str(msh[6])) == ("CARELAKE", "CARELAKE", "", "")
    assert (str(msh[9]), str(msh[12])) == ("ACK^^ACK", "2.5.1")
    assert (str(msg.segment("MSA")[1]), str(msg.segment("MSA")[2])) == ("AR", "")
    assert msg.extract_field("ERR", 1, 3, 1, 1) == "102"
    assert str(msg.segment("ERR")[8]) == "unparseable MSH"


def test_reason_is_escaped() -> None:
    reason = "field a|b, component c^d, repeat e~f, escape g\\h, sub i&j\r\nnext line"
    msg = _parse(ack(_msh(), "AR", text=reason, error_code="102", now=NOW, control_id="1"))
    raw = str(msg.segment("ERR")[8])
    assert raw == "field a\\F\\b, component c\\S\\d, repeat e\\R\\f, escape g\\E\\h, sub i\\T\\j next line"
    assert msg.unescape(raw) == reason.replace("\r\n", " ")
    assert len(msg) == 3  # the reason's line break did not start a segment


def test_escape_uses_the_senders_escape_character() -> None:
    assert escape("a|b^c", "|", "^~#&") == "a#F#b#S#c"
    assert escape("x#y", "|", "^~\\&#") == "x\\P\\y"  # 2.7 truncation character


def test_ack_uses_the_senders_delimiters() -> None:
    payload = ORU.replace(b"|", b"#").replace(b"^", b"$").replace(b"MSH#$~\\&", b"MSH#$~\\&", 1)
    msh = _msh(payload)
    assert (msh.field_sep, msh.encoding) == ("#", "$~\\&")
    answer = ack(msh, "AR", text="a#b$c", error_code="102", now=NOW, control_id="1")
    assert answer.startswith(b"MSH#$~\\&#CARELAKE#CARELAKE#SUNQUEST#CARELAKE_LAB#")
    assert b"\rMSA#AR#LAB2026011500000002\r" in answer
    assert b"#102$Data type error$HL70357#E####a\\F\\b\\S\\c\r" in answer
    msg = _parse(answer)
    assert str(msg.segment("MSA")[2]) == "LAB2026011500000002"


def test_msh_without_encoding_characters_is_not_readable() -> None:
    # MSH-2 missing (the simulator's "malformed:bad_header"): every later field would read shifted.
    broken = b"MSH|BILLING|CARELAKE_MC|CARELAKE|CARELAKE|20260115160748-0600||DFT^P03^DFT_P03|B5|P|2.5.1|||\r"
    assert parse_msh(broken) is None and readable_msh(broken) is None
    msg = _parse(ack(None, "AR", text="unparseable MSH", error_code="102", now=NOW, control_id="1"))
    assert str(msg.segment("MSH")[2]) == "^~\\&"  # defaults, not "BILLING" as delimiters
    assert readable_msh(ORU) == parse_msh(ORU)


# ---- framing ----------------------------------------------------------------------------------------


def test_frame_wraps_in_start_and_end_blocks() -> None:
    assert frame(b"MSH|x") == b"\x0bMSH|x\x1c\x0d"


def _all(reader: FrameReader, chunks: list[bytes], close: bool = False) -> list:
    events = [e for chunk in chunks for e in reader.feed(chunk)]
    return events + (reader.close() if close else [])


SECOND = ORU.replace(b"LAB2026011500000002", b"LAB2026011500000003")
STREAM = frame(ORU) + b"\r\n" + frame(SECOND)  # a line break between frames is tolerated, not junk


def test_two_frames_in_one_chunk() -> None:
    assert _all(FrameReader(), [STREAM], close=True) == [Frame(ORU), Frame(SECOND)]


def test_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        events = _all(FrameReader(), [STREAM[:cut], STREAM[cut:]], close=True)
        assert events == [Frame(ORU), Frame(SECOND)], f"split at byte {cut}"


def test_one_byte_at_a_time() -> None:
    reader = FrameReader()
    assert _all(reader, [bytes([b]) for b in STREAM], close=True) == [Frame(ORU), Frame(SECOND)]
    assert (reader.frames, reader.junk_bytes, reader.truncated) == (2, 0, 0)


def test_junk_before_a_frame_is_skipped_and_counted() -> None:
    reader = FrameReader()
    assert _all(reader, [b"GET / HTTP/1.1\r\n", b"\x00\xff" + frame(ORU)]) == [Junk(18), Frame(ORU)]
    assert reader.junk_bytes == 18


def test_junk_between_frames_and_at_close() -> None:
    events = _all(FrameReader(), [frame(ORU) + b"garbage" + frame(SECOND) + b"trailing"], close=True)
    assert events == [Frame(ORU), Junk(7), Frame(SECOND), Junk(8)]


def test_lone_file_separator_is_payload() -> None:
    payload = b"MSH|a\x1cb\x1c"
    data = frame(payload)
    for cut in range(len(data) + 1):
        assert _all(FrameReader(), [data[:cut], data[cut:]]) == [Frame(payload)]


def test_empty_frame() -> None:
    assert _all(FrameReader(), [b"\x0b\x1c\x0d"]) == [Frame(b"")]


def test_frame_at_the_limit_passes_one_byte_over_does_not() -> None:
    assert _all(FrameReader(max_frame=len(ORU)), [frame(ORU)]) == [Frame(ORU)]
    events = _all(FrameReader(max_frame=len(ORU) - 1), [frame(ORU)])
    assert events == [Oversize(len(ORU), ORU)]


def test_oversize_frame_is_discarded_keeping_its_head_and_the_next_frame_is_read() -> None:
    big = ORU + b"NTE|1||" + b"x" * 200_000 + b"\r"
    reader = FrameReader(max_frame=10_000)
    data = frame(big) + frame(SECOND)
    events = _all(reader, [data[i:i + 4096] for i in range(0, len(data), 4096)], close=True)
    assert len(events) == 2
    over, nxt = events
    assert isinstance(over, Oversize) and over.nbytes == len(big)
    assert over.head == big[:HEAD_BYTES]
    assert over.msh is not None and over.msh.control_id == "LAB2026011500000002"
    assert nxt == Frame(SECOND)
    assert (reader.oversize, reader.frames) == (1, 1)


def test_close_mid_frame_is_truncated() -> None:
    reader = FrameReader()
    data = frame(ORU)
    assert reader.feed(data[:50]) == []
    assert reader.in_frame
    assert reader.close() == [Truncated(49, "closed")]
    assert reader.truncated == 1


def test_close_between_end_bytes_is_truncated() -> None:
    reader = FrameReader()
    assert reader.feed(frame(ORU)[:-1]) == []  # 0x1C arrived, 0x0D never did
    assert reader.close() == [Truncated(len(ORU) + 1, "closed")]


def test_close_of_an_oversize_frame_is_truncated() -> None:
    reader = FrameReader(max_frame=10)
    assert reader.feed(b"\x0b" + b"y" * 100) == []
    assert reader.close() == [Truncated(100, "closed")]


def test_close_with_nothing_pending() -> None:
    reader = FrameReader()
    reader.feed(frame(ORU))
    assert reader.close() == []


def test_start_block_inside_a_frame_restarts() -> None:
    events = _all(FrameReader(), [b"\x0bMSH|^~\\&|half a mess", frame(ORU)])
    assert events == [Truncated(20, "restarted"), Frame(ORU)]


def test_max_frame_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FrameReader(max_frame=0)
