"""The X12 splitter and loop rules against pyx12 (the oracle), and the file index against the gateway.

pyx12's X12ContextReader walks the 5010 guides' maps: for every segment of the simulator's 837P,
837I and 835 files it must report the same segment id, the same elements and the same loop id as
carelake_normalizer.x12 (segments.py + loops.py). The file index must find each claim exactly
where the ingest gateway's splitter cuts the file into records.
"""

from __future__ import annotations

import io

import pytest

from carelake_normalizer.core import MappingError
from carelake_normalizer.x12.index import build_index
from carelake_normalizer.x12.loops import assign_file, guess_kind
from carelake_normalizer.x12.segments import guess_delimiters, read_isa, split_segments
from carelake_simulator.feeds import MessRates
from carelake_simulator.simulate import SimConfig, simulate

pyx12_context = pytest.importorskip("pyx12.x12context")
import pyx12.error_handler  # noqa: E402
import pyx12.params  # noqa: E402


@pytest.fixture(scope="module")
def x12_files():  # noqa: ANN201
    sim = simulate(SimConfig(patients=3000, seed=2, mess=MessRates(legacy_icd9=0.2)))
    files = [f for f in sim.files if f.kind in ("837P", "837I", "835")]
    assert {f.kind for f in files} == {"837P", "837I", "835"}
    return files


def _pyx12_nodes(data: bytes) -> list:
    reader = pyx12_context.X12ContextReader(pyx12.params.params(), pyx12.error_handler.errh_null(),
                                            io.StringIO(data.decode("ascii")))
    return list(reader.iter_segments())


def test_segments_elements_and_loops_equal_pyx12s(x12_files) -> None:  # noqa: ANN001
    compared = 0
    for f in x12_files:
        segs = split_segments(f.payload, read_isa(f.payload))
        assign_file(segs)
        nodes = _pyx12_nodes(f.payload)
        assert len(segs) == len(nodes), f.name
        for seg, node in zip(segs, nodes, strict=True):
            assert seg.tag == node.id, (f.name, seg.pos)
            assert seg.loop == node.x12_map_node.parent.id, (f.name, seg.label, node.cur_path)
            if seg.tag == "ISA":
                continue  # pyx12 strips the ISA's fixed-width padding
            for n in range(1, len(seg.el)):
                assert seg.el[n] == (node.seg_data.get_value(f"{seg.tag}{n:02d}") or ""), (f.name, seg.label, n)
            compared += 1
    assert compared > 500


def test_pyx12_finds_no_error_in_the_files_it_is_the_oracle_for(x12_files) -> None:  # noqa: ANN001
    """An oracle that rejected the inputs would vouch for nothing."""
    for f in x12_files[:3]:
        errh = pyx12.error_handler.err_handler()
        reader = pyx12_context.X12ContextReader(pyx12.params.params(), errh, io.StringIO(f.payload.decode("ascii")))
        for _ in reader.iter_segments():
            pass
        assert errh.get_error_count() == 0, f.name


def test_the_index_finds_each_claim_where_the_gateway_cuts_its_record(x12_files) -> None:  # noqa: ANN001
    from carelake_ingest_gateway.files import split_x12

    for f in x12_files:
        records = list(split_x12("claims", io.BytesIO(f.payload)))
        index = build_index(f.payload)
        assert [(c.start, c.end) for c in index.claims] == [(r.byte_start, r.byte_end) for r in records], f.name
        assert [r.record_id for r in records] == [r.record_id for r in f.records]
        for c, r in zip(index.claims, records, strict=True):
            segs = split_segments(f.payload[r.byte_start:r.byte_end], index.d)
            assert segs[0].tag == ("CLP" if f.kind == "835" else "CLM")
            assert segs[0].el[1] == r.record_id
            assert c.header.kind == f.kind
            assert guess_kind(segs) == f.kind  # what claim-only mode would take the record for


def test_offsets_point_at_the_segments() -> None:
    data = b"ISA*00*          *00*          *ZZ*A              *ZZ*B              *260115*2200*^*00501*000000001*0*P*:~\r\nGS*HC*A*B*20260115*2200*1*X*005010X222A1~\r\nST*837*0001~"
    segs = split_segments(data, read_isa(data))
    assert [s.tag for s in segs] == ["ISA", "GS", "ST"]
    for s in segs:
        assert data[s.offset:s.offset + len(s.tag)] == s.tag.encode()
    assert [s.pos for s in segs] == [1, 2, 3]


def test_isa_with_other_delimiters_and_padding_errors() -> None:
    fixed = (b"ISA|00|          |00|          |ZZ|A              |ZZ|B              |260115|2200|^|00501|"
             b"000000001|0|P|>'")
    d = read_isa(fixed + b"GS|HC'")
    assert (d.element, d.component, d.repetition, d.segment) == ("|", ">", "^", "'")
    # An ISA padded wrongly (a sender that trims the ids) is still read by its separators.
    loose = b"ISA*00**00**ZZ*A*ZZ*B*260115*2200*U*00401*000000001*0*T*:~" + b" " * 80
    d = read_isa(loose)
    assert (d.element, d.component, d.repetition, d.segment) == ("*", ":", "", "~")
    for bad, code in ((b"MSH|^~\\&|", "not_x12"), (b"ISA*00", "truncated"),
                      (b"ISA" + b"A" * 103, "bad_delimiters")):
        with pytest.raises(MappingError) as err:
            read_isa(bad)
        assert err.value.code == code


def test_a_claim_loop_alone_tells_its_delimiters() -> None:
    d = guess_delimiters(b"CLM*C1*110***11>B>1*Y*A*Y*Y~\nHI*ABK>I10~")
    assert (d.element, d.component, d.segment) == ("*", ">", "~")
    d = guess_delimiters(b"CLP|C1|1|100|80||12|X1'CAS|CO|45|20'")
    assert (d.element, d.segment) == ("|", "'")
    with pytest.raises(MappingError):
        guess_delimiters(b"\x00\x01 not x12")
