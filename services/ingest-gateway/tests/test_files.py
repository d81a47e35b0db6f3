"""Splitting batch files into records: no services needed."""

from __future__ import annotations

import io
import re

import pytest

from carelake_ingest_gateway import files
from carelake_simulator.formats.x12 import claim_spans
from carelake_simulator.simulate import SimConfig, simulate


@pytest.fixture(scope="module")
def feed_files():
    return simulate(SimConfig(patients=2000, seed=11)).files


def _x12(feed_files, kind):
    return next(f for f in feed_files if f.kind == kind)


@pytest.mark.parametrize("kind", ["837P", "837I", "835"])
def test_x12_files_split_into_exactly_their_claims(feed_files, kind):
    feed = _x12(feed_files, kind)
    assert files.detect_format(feed.payload[:4096], feed.name, feed.content_type) == "x12"
    records = list(files.split("x12", "claims", feed.payload))

    assert [(r.record_id, r.byte_start, r.byte_end) for r in records] == claim_spans(feed.payload)
    assert [(r.record_id, r.patient_key) for r in records] == [(t.record_id, t.key) for t in feed.records]
    opener = b"CLP*" if kind == "835" else b"CLM*"
    for r in records:
        text = feed.payload[r.byte_start:r.byte_end]
        assert text.startswith(opener + r.record_id.encode() + b"*")
        assert text.endswith(b"~\n") and text.count(opener) == 1
        # the claim runs up to the next loop: what follows opens a claim, subscriber or closes the set
        assert re.match(rb"(CLM|CLP|HL|LX|SE|PLB)\*", feed.payload[r.byte_end:r.byte_end + 4])


def test_x12_from_a_reader_gives_the_same_records(feed_files, tmp_path):
    feed = _x12(feed_files, "837P")
    path = tmp_path / feed.name
    path.write_bytes(feed.payload)
    with open(path, "rb") as f:
        assert list(files.split("x12", "claims", f)) == list(files.split("x12", "claims", feed.payload))


def test_x12_records_span_read_blocks(feed_files, monkeypatch):
    """Segments cut by the reader's block boundary are put back together."""
    feed = _x12(feed_files, "837P")
    expected = list(files.split("x12", "claims", feed.payload))
    monkeypatch.setattr(files, "BLOCK", 7)
    assert list(files.split("x12", "claims", io.BytesIO(feed.payload))) == expected


def _broken(payload: bytes, old: bytes, new: bytes) -> bytes:
    assert old in payload
    return payload.replace(old, new, 1)


def _envelope_error(payload: bytes) -> files.X12EnvelopeError:
    with pytest.raises(files.X12EnvelopeError) as caught:
        next(files.split("x12", "claims", payload))  # nothing comes out before the envelope is checked
    return caught.value


def test_wrong_se_count_names_the_segment_and_both_counts(feed_files):
    payload = _x12(feed_files, "837P").payload
    se = re.search(rb"SE\*(\d+)\*0001~", payload)
    wrong = _broken(payload, se.group(0), b"SE*%d*0001~" % (int(se.group(1)) + 1))
    err = _envelope_error(wrong)
    assert err.segment == "SE" and err.offset == se.start()
    assert f"SE01 (segment count, ST through SE) is '{int(se.group(1)) + 1}', expected '{se.group(1).decode()}'" in str(err)


def test_missing_iea_is_reported(feed_files):
    payload = _x12(feed_files, "835").payload
    iea = payload.rindex(b"IEA*")
    err = _envelope_error(payload[:iea])
    assert err.segment == "IEA" and "missing" in str(err) and "is not closed" in str(err)


def test_truncated_isa_names_the_short_element(feed_files):
    payload = _x12(feed_files, "837P").payload
    short = _broken(payload, b"*ZZ*CARELAKEHLTH   *", b"*ZZ*CARELAKEHLTH*")  # ISA06 not padded to 15
    err = _envelope_error(short)
    assert err.segment == "ISA" and err.offset == 0
    assert "ISA06 (sender id) is 12 characters, the fixed width is 15" in str(err)
    assert "ISA at byte 0: " in str(err)


def test_other_envelope_faults(feed_files):
    payload = _x12(feed_files, "837P").payload
    assert "the file has 40 bytes" in str(_envelope_error(payload[:40]))
    control = re.search(rb"GE\*1\*(\d+)~", payload)
    err = _envelope_error(_broken(payload, control.group(0), b"GE*1*999~"))
    assert err.segment == "GE" and "GE02 (control number) is '999'" in str(err)
    err = _envelope_error(_broken(payload, b"GE*1*", b"GE*2*"))
    assert "GE01 (transaction set count) is '2', expected '1'" in str(err)
    err = _envelope_error(payload[:106] + payload[106:].replace(b"~", b"") * 2000)  # not the ISA's terminator
    assert err.segment == "GS" and err.offset == 106 and "no segment terminator '~' within" in str(err)
    st = payload.index(b"ST*837")
    err = _envelope_error(payload[:st] + payload[payload.index(b"BHT*"):])  # ST dropped
    assert err.segment == "BHT" and "outside a transaction set" in str(err)


def test_a_file_of_two_interchanges_splits_both(feed_files):
    a, b = [f.payload for f in feed_files if f.kind == "835"][:2]
    both = a + b
    records = list(files.split("x12", "claims", both))
    assert len(records) == len(claim_spans(a)) + len(claim_spans(b))
    assert records[-1].byte_end <= len(both) and both[records[-1].byte_start:].startswith(b"CLP*")


# ---- CSV ------------------------------------------------------------------------------------


def test_pharmacy_csv_rows_with_ids_and_patient_keys(feed_files):
    feed = next(f for f in feed_files if f.kind == "pharmacy_csv")
    assert files.detect_format(feed.payload[:4096], feed.name, feed.content_type) == "csv"
    records = list(files.split("csv", "pharmacy", feed.payload))
    assert [(r.record_id, r.patient_key) for r in records] == [(t.record_id, t.key) for t in feed.records]
    lines = feed.payload.split(b"\r\n")[1:-1]  # the simulator's rows hold no newlines
    assert [feed.payload[r.byte_start:r.byte_end] for r in records] == [line + b"\r\n" for line in lines]


def test_sdoh_csv_rows_keyed_by_area(feed_files):
    feed = next(f for f in feed_files if f.kind == "sdoh_csv")
    records = list(files.split("csv", "public_health", feed.payload))
    assert [(r.record_id, r.patient_key) for r in records] == [(t.record_id, t.key) for t in feed.records]


def test_csv_quoted_newline_and_comma_stay_in_their_row():
    data = ("\ufeffrx_number,patient_id,drug_name,note\r\n"
            "RX1,P1,\"Lantus, 10 mL vial\",plain\r\n"
            "\r\n"
            "RX2,P2,Metformin,\"take with food\r\nline two, still the note\"\r\n"
            "RX3,P3,Élan \"\"brand\"\",last").encode()
    records = list(files.split("csv", "pharmacy", data))
    assert [(r.record_id, r.patient_key) for r in records] == [
        ("RX1", "pharmacy|P1"), ("RX2", "pharmacy|P2"), ("RX3", "pharmacy|P3")]
    rows = [data[r.byte_start:r.byte_end] for r in records]
    assert rows[0] == b'RX1,P1,"Lantus, 10 mL vial",plain\r\n'
    assert rows[1] == b'RX2,P2,Metformin,"take with food\r\nline two, still the note"\r\n'
    assert rows[2] == 'RX3,P3,Élan ""brand"",last'.encode()
    assert records[-1].byte_end == len(data)


def test_csv_without_known_columns_still_splits():
    records = list(files.split("csv", "lab", b"a,b\n1,2\n3,4\n"))
    assert [(r.record_id, r.patient_key, r.byte_start, r.byte_end) for r in records] == [
        (None, None, 4, 8), (None, None, 8, 12)]


# ---- NDJSON and detection -----------------------------------------------------------------------


def test_ndjson_one_record_per_line():
    data = b'{"reading_id": "r1"}\n\n{"reading_id": "r2", "note": "a\\nb"}\r\n{"reading_id": "r3"}'
    records = list(files.split("ndjson", "wearables", data))
    assert [data[r.byte_start:r.byte_end] for r in records] == [
        b'{"reading_id": "r1"}\n', b'{"reading_id": "r2", "note": "a\\nb"}\r\n', b'{"reading_id": "r3"}']


def test_detect_format():
    assert files.detect_format(b'{"a": 1}\n') == "ndjson"
    assert files.detect_format(b"x,y\n1,2\n") == "csv"
    assert files.detect_format(b"anything", "export.csv") == "csv"
    for garbage in (b"\x00\x01garbage", b"\x89PNG,\x00\x1a\n"):
        with pytest.raises(files.FileFormatError, match="not an X12 interchange"):
            files.detect_format(garbage)


# ---- the fast envelope scan decides exactly as the segment-by-segment check ---------------------


def _slow_verdict(data: bytes) -> str:
    from carelake_ingest_gateway.files import (
        X12EnvelopeError,
        _slow_events,
        _walk_envelopes,
        read_isa,
    )

    stream = io.BytesIO(data)
    try:
        sep, term = read_isa(data[:106])
        _walk_envelopes(_slow_events(stream, sep, term), sep, term, stream)
    except X12EnvelopeError as exc:
        return str(exc)
    return "ok"


def _verdict(data: bytes, block: int) -> str:
    import carelake_ingest_gateway.files as files_module

    saved, files_module.FAST_BLOCK = files_module.FAST_BLOCK, block
    try:
        files.check_x12(io.BytesIO(data))
    except files.X12EnvelopeError as exc:
        return str(exc)
    finally:
        files_module.FAST_BLOCK = saved
    return "ok"


def test_fast_envelope_scan_agrees_with_the_full_check_on_mutated_files() -> None:
    import random

    sim = simulate(SimConfig(patients=400, seed=3))
    originals = [f.payload for f in sim.files if f.kind in ("837P", "837I", "835")]
    for data in originals:  # the fast scan vouches for sound files by itself (no fallback)
        for block in (64, 1 << 20):
            saved, files.FAST_BLOCK = files.FAST_BLOCK, block
            try:
                sep, term = files.read_isa(data[:106])
                files._walk_envelopes(files._fast_events(io.BytesIO(data), sep, term), sep, term, io.BytesIO())
            finally:
                files.FAST_BLOCK = saved
    rng = random.Random(11)
    cases = 0
    for data in originals:
        segments = data.split(b"~")
        for _ in range(40):
            cut = list(segments)
            i = rng.randrange(1, len(cut) - 1)
            kind = rng.choice(["drop", "dup", "empty", "crlf", "se01", "truncate", "junk_tail", "none"])
            if kind == "drop":
                del cut[i]
            elif kind == "dup":
                cut.insert(i, cut[i])
            elif kind == "empty":
                cut.insert(i, b"")
            elif kind == "crlf":
                cut[i] = b"\r\n" + cut[i]
            elif kind == "se01":
                j = next((k for k, s in enumerate(cut) if s.startswith(b"SE*")), None)
                if j is not None:
                    parts = cut[j].split(b"*")
                    parts[1] = str(int(parts[1]) + rng.choice([-1, 1])).encode()
                    cut[j] = b"*".join(parts)
            mutated = b"~".join(cut)
            if kind == "truncate":
                mutated = mutated[:rng.randrange(200, len(mutated))]
            elif kind == "junk_tail":
                mutated += b"NM1*XX*1~"
            for block in (64, 1000, 1 << 20):  # block edges fall inside and between segments
                assert _verdict(mutated, block) == _slow_verdict(mutated), (kind, block)
            cases += 1
    assert cases >= 120
