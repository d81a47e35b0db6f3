"""ASC X12 5010 claims to FHIR R4: ``map_x12`` maps one claim record (or a whole file).

| transaction | module | resources |
|---|---|---|
| 837P 005010X222A1, 837I 005010X223A2 | claim837.py, parties.py | Claim, Patient, Coverage, Organization (payer, billing provider), Practitioner (billing / rendering / attending... providers that are people) |
| 835 005010X221A1 | remit835.py, parties.py | ClaimResponse, Organization (payer, payee) |

A record is what the ingest gateway splits a file into: one 837 2300 loop with its 2400 lines
(``CLM``..), or one 835 2100 loop (``CLP``..). The loops around it (ISA/GS, ST/BHT, 2000A/2010AA
billing provider, 2000B/2010BA subscriber, 2010BB payer, 2000C/2010CA patient; 835 BPR/TRN/DTM,
1000A payer, 1000B payee) are read from the whole file when the caller has it (``file_bytes`` and
the record's ``byte_offset`` in it, as the raw envelope gives them): index.py reads each file
once and caches it. Without the file the claim still maps with what its loop holds
(``MapResult.meta["context"] == "claim-only"``): the patient from ``patient_key`` (the envelope's
``source_patient_key``, ``<source>|<member id>``, which gives the same Patient id), provider,
payer and coverage as display-only references, Claim.created from the latest service date.

A whole interchange as ``payload`` (``carelake convert claims.x12``) maps every claim in it; each
resource appears once, a claim that cannot be read is a rejected part.

Parser. The hot path is a hand-written splitter driven by the ISA's delimiters (segments.py) and
the TR3 loop rules (loops.py); pyx12 4.0 is the oracle in tests/test_x12_parser.py, which parses
the simulator's files with pyx12's X12ContextReader and requires the same segments, elements and
loop ids. Measured on the simulator's 837P (578 claims, 8,663 segments, one core):
pyx12 X12ContextReader (the loop-aware reader that knows the guides) 1.14 s = ~500 claims/s —
half the 1,000 claims/s target before any mapping or FHIR validation; pyx12 X12Reader (segments
only, no loops) 47 ms = ~12,000 claims/s but needs a whole interchange (a record has no ISA) and
gives no byte offsets; the splitter 1.7 ms = ~340,000 claims/s. End to end (bench/normalizer_x12.py:
map with the file, terminology pass, labels, FHIR validation, Avro envelopes; one pinned core):
~1,330 837 claims/s (6 resources a claim; about half the time is FHIR validation) and ~2,400 835
records/s; indexing the 230 KB 837P file once costs ~23 ms.

Rejections: a record that is not X12, holds no CLM/CLP, starts with another segment, holds a
segment that closes a claim loop (HL, SE, LX in an 835...), or a claim without its id (CLM01 /
CLP01) raises MappingError with ``where`` (``segment 1``, ``2300 CLM01``...); a bad value
(impossible date, malformed amount, too many elements, a diagnosis pointer to nowhere) rejects the
resource it feeds as a PartRejected naming loop, segment and element (``2400[2] DTP*472 DTP03``).
``MapResult.unused`` counts populated elements nothing read, as ``<segment>-<loop>-<element>``
(``CLM-2300-CLM06``); an enclosing loop's counts go with the first claim read with it, so the
records of a file add up to the whole file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import tzinfo

from carelake_normalizer.core import MappingError, MapResult, PartRejected
from carelake_normalizer.x12 import claim837, remit835
from carelake_normalizer.x12.collect import Collector
from carelake_normalizer.x12.index import ClaimSpan, FileIndex, check_claim_kind, index_for
from carelake_normalizer.x12.loops import CLOSE_835, CLOSE_837, ClaimLoops, guess_kind
from carelake_normalizer.x12.segments import Seg, guess_delimiters, split_segments

__all__ = ["map_x12"]

_BOM = b"\xef\xbb\xbf"
_ENVELOPE = frozenset({"ISA", "IEA", "GS", "GE", "ST", "SE"})


def map_x12(payload: bytes, *, source: str, tz: tzinfo, raw_id: str, file_bytes: bytes | None = None,
            byte_offset: int = 0, terminology: Callable[[dict], object] | None = None,
            patient_key: str | None = None, file_key: str | None = None) -> MapResult:
    """One claim record (or a whole X12 file) to FHIR resources; MappingError if it cannot be read at all.

    ``file_bytes``/``byte_offset``: the whole file the record came from and where the record starts
    in it (the enclosing loops are read from there). ``file_key``: a name that identifies
    ``file_bytes``' content for good (the Bronze object key) — lets the per-file index be found
    without hashing the whole file when the caller reads the file anew for each record.
    ``patient_key``: the envelope's source patient key, used when the file is not given.
    ``terminology`` runs on each resource before its security labels and its validation.
    """
    try:
        return _map(payload, source, tz, raw_id, file_bytes, byte_offset, terminology, patient_key, file_key)
    except MappingError:
        raise
    except Exception as exc:  # a mapping bug must not stop the stream: the record goes to the DLQ
        raise MappingError("internal_error", f"{type(exc).__name__} while mapping X12: {str(exc)[:200]}",
                           None) from exc


def _map(payload: bytes, source: str, tz: tzinfo, raw_id: str, file_bytes: bytes | None, byte_offset: int,
         terminology: Callable[[dict], object] | None, patient_key: str | None, file_key: str | None) -> MapResult:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise MappingError("not_x12", f"the payload is {type(payload).__name__}, not bytes", None)
    payload = bytes(payload)
    head = payload.lstrip(_BOM).lstrip(b" \t\r\n")
    if not head:
        raise MappingError("empty", "the record is empty", None)
    col = Collector(source, tz, raw_id)
    if head.startswith(b"ISA"):
        return _map_file(col, head, terminology, file_key)
    span: ClaimSpan | None = None
    index: FileIndex | None = None
    if file_bytes is not None:
        try:
            index = index_for(file_bytes, file_key)
        except MappingError as exc:
            col.rejected.append(PartRejected("context_unreadable", f"the file given for the record cannot be "
                                             f"read ({exc.code}: {exc.reason}); mapped without it", "file_bytes"))
            index = None
        if index is not None:
            span = index.claim_at(byte_offset, payload, file_bytes)
            if span is None:
                col.rejected.append(PartRejected(
                    "context_mismatch", f"the record is not the claim loop at byte {byte_offset} of the given file; "
                    "mapped without the file's enclosing loops", "byte_offset"))
                index = None
    d = index.d if index is not None else guess_delimiters(head)
    tag = head[:4].split(d.element.encode("latin-1"), 1)[0]
    if tag not in (b"CLM", b"CLP"):  # before splitting the rest: the first segment says what the record is
        shown = tag.decode("latin-1") if tag.isalnum() and len(tag) <= 3 else "?"
        raise MappingError("not_a_claim", f"the record starts with {shown}, not with an 837 CLM (2300) or an "
                           "835 CLP (2100) segment", f"segment 1 ({shown})")
    first = span.pos if span is not None else 1
    segs = split_segments(payload if span is not None else head, d, start_pos=first,
                          base=byte_offset if span is not None else 0)
    if not segs:
        raise MappingError("empty", "the record holds no X12 segment", None)
    kind = check_claim_kind(span) if span is not None else guess_kind(segs)
    claims = _claims(segs, kind)
    for group in claims:
        _map_one(col, group, kind, span, patient_key)
    for seg in segs:
        seg.unused(col.unused)
    if span is not None and span.extra_unused:
        col.unused.update(span.extra_unused)
    col.meta.update(_meta(kind, span, claims, segs))
    col.meta["context"] = "file" if span is not None else "claim-only"
    return col.finish(terminology)


def _claims(segs: list[Seg], kind: str) -> list[list[Seg]]:
    """The claim loops of a record, each with its loop ids set; MappingError when it is not claim loops."""
    opener = "CLP" if kind == "835" else "CLM"
    first = segs[0]
    if first.tag != opener:
        what = "an 835 CLP (2100)" if kind == "835" else "an 837 CLM (2300)"
        raise MappingError("not_a_claim", f"the record starts with {first.tag}, not with {what} segment",
                           f"segment {first.pos} ({first.tag})")
    closers = (CLOSE_835 if kind == "835" else CLOSE_837) - {opener}
    state = ClaimLoops(kind)
    out: list[list[Seg]] = []
    for seg in segs:
        if seg.tag in closers or seg.tag in _ENVELOPE:
            raise MappingError("not_a_claim", f"segment {seg.pos} ({seg.tag}) closes a claim loop: the record holds "
                               "more than claim loops", f"segment {seg.pos} ({seg.tag})")
        if seg.tag == opener:
            out.append([])
        state.place(seg)
        out[-1].append(seg)
    return out


def _map_one(col: Collector, group: list[Seg], kind: str, span: ClaimSpan | None, patient_key: str | None) -> None:
    if kind == "835":
        remit835.map_payment(col, group, span, patient_key=patient_key)
    else:
        claim837.map_claim(col, group, kind, span, patient_key=patient_key)


def _meta(kind: str, span: ClaimSpan | None, claims: list[list[Seg]], segs: list[Seg]) -> dict:
    meta: dict = {"format": "x12", "transaction": kind, "claims": len(claims), "segments": len(segs),
                  "claim_ids": [g[0].peek(1) for g in claims],
                  "control_id": claims[0][0].peek(1) if claims else None,
                  "elements_populated": sum(1 for s in segs for e in s.el[1:] if e.strip())}
    if span is not None:
        h = span.header
        meta.update({"version": h.version, "sender": h.sender, "receiver": h.receiver, "usage": h.usage,
                     "interchange_control": h.control, "st_control": h.st_control, "bht_ref": h.bht_ref,
                     "file_segment": span.pos})
    return meta


def _map_file(col: Collector, data: bytes, terminology: Callable[[dict], object] | None,
              file_key: str | None) -> MapResult:
    """Every claim of a whole interchange (each resource once; an unreadable claim is a rejected part)."""
    index = index_for(data, file_key)
    kinds: Counter[str] = Counter()
    segments = populated = 0
    for span in index.claims:
        try:
            kind = check_claim_kind(span)
            segs = split_segments(data[span.start:span.end], index.d, start_pos=span.pos, base=span.start)
            groups = _claims(segs, kind)
            for group in groups:
                _map_one(col, group, kind, span, None)
        except MappingError as exc:
            col.rejected.append(PartRejected(exc.code, exc.reason, exc.where or f"segment {span.pos}", span.pos,
                                             "ClaimResponse" if data[span.start:span.start + 3] == b"CLP" else "Claim"))
            continue
        kinds[kind] += len(groups)
        segments += len(segs)
        populated += sum(1 for s in segs for e in s.el[1:] if e.strip())
        for seg in segs:
            seg.unused(col.unused)
        if span.extra_unused:
            col.unused.update(span.extra_unused)
    for problem in index.errors:
        col.rejected.append(PartRejected("structure", problem, problem.split(":", 1)[0]))
    header = index.claims[0].header if index.claims else None
    col.meta.update({"format": "x12", "context": "file", "claims": len(index.claims), "transactions": dict(kinds),
                     "claim_segments": segments, "elements_populated": populated, "bytes": index.size})
    if header is not None:
        col.meta.update({"sender": header.sender, "receiver": header.receiver, "usage": header.usage,
                         "interchange_control": header.control, "control_id": header.control})
    return col.finish(terminology)
