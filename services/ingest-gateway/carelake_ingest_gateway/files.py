"""Split a batch file into the records it carries, each with its byte range in the file.

Pure and streaming: a reader is consumed in blocks, so a 100 MB file splits in constant memory and
the file itself stays whole (the caller slices record bytes out of it by range).

* X12 837/835: the interchange envelope is checked first (a broken one raises X12EnvelopeError
  naming the segment and what is wrong, before any record is yielded); then one record per 837
  2300 claim loop with its service lines, or per 835 2100 claim payment loop.
* CSV export: one record per data row, the header kept aside; quoted newlines stay in their row.
* NDJSON: one record per non-blank line.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

BLOCK = 1 << 20
MAX_SEGMENT = 1 << 20  # X12 segments are short; a longer one means the terminator is not the ISA's

# ISA elements are fixed width, which makes the ISA 106 characters with its terminator.
ISA_ELEMENTS = (
    (2, "authorization qualifier"), (10, "authorization information"), (2, "security qualifier"),
    (10, "security information"), (2, "sender id qualifier"), (15, "sender id"),
    (2, "receiver id qualifier"), (15, "receiver id"), (6, "date"), (4, "time"),
    (1, "repetition separator"), (5, "version"), (9, "control number"), (1, "acknowledgment requested"),
    (1, "usage indicator"), (1, "component separator"),
)
ISA_LENGTH = 106

# CSV columns that identify a row / its patient in the exports we know (pharmacy, SDOH, generic).
ID_COLUMNS = ("rx_number", "area_id", "user_id", "record_id", "id")  # pharmacy, SDOH, wearables roster
PATIENT_COLUMNS = (("patient_id", "{}"), ("user_id", "{}"), ("area_id", "area:{}"))


class FileFormatError(ValueError):
    """The file cannot be split: unknown format or unreadable structure."""

    code = "bad_file"


class X12EnvelopeError(FileFormatError):
    """A broken ISA/GS/ST/SE/GE/IEA envelope; the message names the segment, its byte offset and the fault."""

    code = "bad_x12_envelope"

    def __init__(self, segment: str, offset: int, problem: str) -> None:
        self.segment, self.offset, self.problem = segment, offset, problem
        super().__init__(f"{segment} at byte {offset}: {problem}")


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a file: ``data[byte_start:byte_end]`` are its exact bytes."""

    record_id: str | None
    patient_key: str | None  # <source>|<id>, when the format carries it cheaply
    byte_start: int
    byte_end: int


def detect_format(head: bytes, name: str | None = None, content_type: str | None = None) -> str:
    """``x12``, ``ndjson`` or ``csv`` from a file's first bytes, its name and content type."""
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    ctype, name = (content_type or "").lower(), (name or "").lower()
    if first.startswith(b"ISA") or "x12" in ctype:
        return "x12"
    if first.startswith(b"{") or "ndjson" in ctype or "jsonl" in ctype or name.endswith((".ndjson", ".jsonl")):
        return "ndjson"
    header = first.split(b"\n", 1)[0]
    if ctype.startswith("text/csv") or name.endswith(".csv") or (b"," in header and _is_text(header)):
        return "csv"
    raise FileFormatError("not an X12 interchange (no ISA), NDJSON or a CSV export with a header row")


def _is_text(line: bytes) -> bool:
    try:
        return line.decode("utf-8").replace("\t", "").replace("\r", "").isprintable()
    except UnicodeDecodeError:
        return False


def split(fmt: str, source: str, data: bytes | BinaryIO) -> Iterator[Record]:
    """The records of a file in ``fmt`` (see detect_format); a reader must be seekable for X12."""
    stream = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
    if fmt == "x12":
        return split_x12(source, stream)
    if fmt == "csv":
        return split_csv(source, stream)
    if fmt == "ndjson":
        return split_ndjson(stream)
    raise FileFormatError(f"no splitter for format {fmt!r}")


# ---- X12 ---------------------------------------------------------------------------------------


def read_isa(head: bytes) -> tuple[bytes, bytes]:
    """The element separator and segment terminator an interchange declares, after checking its ISA."""
    if not head.startswith(b"ISA"):
        raise X12EnvelopeError("ISA", 0, "the file does not start with an ISA segment")
    if len(head) < ISA_LENGTH:
        raise X12EnvelopeError("ISA", 0, f"truncated: the file has {len(head)} bytes, the ISA alone is {ISA_LENGTH}")
    sep = head[3:4]
    elements = head[4:ISA_LENGTH].split(sep, len(ISA_ELEMENTS) - 1)
    for n, (element, (width, what)) in enumerate(zip(elements, ISA_ELEMENTS), start=1):
        got = len(element) if n < len(ISA_ELEMENTS) else len(element) - 1  # ISA16 + the terminator
        if got != width:
            raise X12EnvelopeError("ISA", 0, f"ISA{n:02d} ({what}) is {got} characters, the fixed width is "
                                   f"{width}; the ISA must be exactly {ISA_LENGTH} characters")
    if len(elements) < len(ISA_ELEMENTS):
        raise X12EnvelopeError("ISA", 0, f"truncated: {len(elements)} of {len(ISA_ELEMENTS)} elements in its "
                               f"{ISA_LENGTH} characters")
    term = head[ISA_LENGTH - 1:ISA_LENGTH]
    if term.isalnum() or term in (sep, b" "):
        raise X12EnvelopeError("ISA", 0, f"segment terminator {term!r} (character {ISA_LENGTH}) is not a delimiter")
    return sep, term


def _segments(stream: BinaryIO, term: bytes) -> Iterator[tuple[int, bytes]]:
    """(byte offset, segment without its terminator) for each segment; line breaks between segments skipped."""
    offset, rest = stream.tell(), b""
    while block := stream.read(BLOCK):
        parts = (rest + block).split(term)
        rest = parts.pop()  # the unterminated tail waits for the next block
        for part in parts:
            body = part.lstrip(b"\r\n")
            if body:
                yield offset + len(part) - len(body), body
            offset += len(part) + 1
        if len(rest) > MAX_SEGMENT:  # a wrong terminator must not pull the whole file into memory
            raise X12EnvelopeError(re.match(rb"\w{0,3}", rest.lstrip(b"\r\n")).group().decode("latin-1"), offset,
                                   f"no segment terminator {term.decode('latin-1')!r} within {MAX_SEGMENT} bytes")
    if body := rest.lstrip(b"\r\n").rstrip():  # a last segment without its terminator
        yield offset + len(rest) - len(rest.lstrip(b"\r\n")), body


CONTROL_TAGS = (b"ISA", b"IEA", b"GS", b"GE", b"ST", b"SE")
FAST_BLOCK = 8 << 20
Event = tuple[int, int, bytes | None, list[bytes] | None]  # (segment index, byte offset, tag, elements)


class _Doubt(Exception):
    """The fast scan cannot vouch for the file; the segment-by-segment check decides (and explains)."""


def check_x12(stream: BinaryIO) -> tuple[bytes, bytes]:
    """Check every interchange's envelope; returns (element separator, segment terminator).

    ISA 106 characters; GS..GE and ST..SE nested and closed; SE01 = segments from ST to SE;
    GE01 = transaction sets; IEA01 = groups; control numbers match (SE02/ST02, GE02/GS06, IEA02/ISA13).

    A fast scan finds only the envelope segments (a regex over large blocks, segment counts by
    counting terminators: ~5x the speed of a Python loop over every segment) and vouches for a
    sound file; anything it finds wrong or unusual (empty segments, a missing terminator) is
    checked again segment by segment, which names the segment, its byte offset and the fault.
    """
    start = stream.tell()
    sep, term = read_isa(stream.read(ISA_LENGTH))
    stream.seek(start)
    try:
        _walk_envelopes(_fast_events(stream, sep, term), sep, term, stream)
    except (_Doubt, X12EnvelopeError):
        stream.seek(start)
        _walk_envelopes(_slow_events(stream, sep, term), sep, term, stream)
    stream.seek(start)
    return sep, term


def _slow_events(stream: BinaryIO, sep: bytes, term: bytes) -> Iterator[Event]:
    """Every segment; only envelope segments carry their elements."""
    for index, (offset, seg) in enumerate(_segments(stream, term)):
        tag = seg[:4].split(sep, 1)[0]
        yield index, offset, tag, (seg.split(sep) if tag in CONTROL_TAGS else None)


def _fast_events(stream: BinaryIO, sep: bytes, term: bytes) -> Iterator[Event]:
    """Envelope segments only, plus one body event per run of other segments; raises _Doubt if unsure."""
    t, e = re.escape(term), re.escape(sep)
    control = re.compile(t + rb"[\r\n]*((?:ISA|IEA|GS|GE|ST|SE)" + e + rb"[^" + t + rb"]*)")
    empty = re.compile(t + rb"[\r\n]*" + t)
    base_index = base_offset = 0
    last_index = -1  # segment index of the last envelope segment yielded
    carry = b""
    while True:
        block = stream.read(FAST_BLOCK)
        data = carry + block
        cut = data.rfind(term) + 1 if block else len(data)  # whole segments only, until the end
        chunk, carry = data[:cut], data[cut:]
        if len(carry) > MAX_SEGMENT or (base_offset and re.match(rb"[\r\n]*" + t, chunk)) or empty.search(chunk):
            raise _Doubt
        # Segment i starts after the i-th terminator; a chunk starts at a segment start.
        scan = term + chunk  # a virtual terminator before the chunk: every segment follows one
        counted, at = base_index - 1, 0
        for m in control.finditer(scan):
            counted += scan.count(term, at, m.start() + 1)
            at = m.start() + 1
            if counted > last_index + 1:
                yield counted - 1, -1, None, None  # other segments between envelope segments
            seg = m.group(1)
            yield counted, base_offset + m.start(1) - 1, seg[:4].split(sep, 1)[0], seg.split(sep)
            last_index = counted
        segments_here = chunk.count(term)
        base_index += segments_here
        base_offset += len(chunk)
        if not block:
            if chunk[chunk.rfind(term) + 1:].strip() or base_index - 1 > last_index:
                raise _Doubt  # something after the last envelope segment, or an unterminated tail
            return


def _walk_envelopes(events: Iterator[Event], sep: bytes, term: bytes, stream: BinaryIO) -> None:
    isa = gs = st = None  # the open envelopes: (offset, control number, children counted / segment index)
    done_at = None
    for index, offset, tag, el in events:
        if el is None:
            if st is None:
                raise X12EnvelopeError((tag or b"").decode("latin-1") or "segment", offset,
                                       "segment outside a transaction set (ST..SE)")
            continue
        if tag == b"ISA":
            if isa is not None:
                raise X12EnvelopeError("ISA", offset, f"interchange {isa[1]} is not closed by an IEA before this ISA")
            if done_at is not None:
                read_isa(sep.join(el) + term)
            isa, done_at = [offset, el[13].decode("latin-1") if len(el) > 13 else "", 0], None
        elif isa is None:
            raise X12EnvelopeError(tag.decode(), offset, "segment after the IEA that closed the interchange")
        elif tag == b"GS":
            if gs is not None:
                raise X12EnvelopeError("GS", offset, f"group {gs[1]} is not closed by a GE before this GS")
            gs = [offset, _el(el, 6), 0]
        elif tag == b"ST":
            if gs is None:
                raise X12EnvelopeError("ST", offset, "transaction set outside a functional group (GS..GE)")
            if st is not None:
                raise X12EnvelopeError("ST", offset, f"transaction set {st[1]} is not closed by an SE before this ST")
            st = [offset, _el(el, 2), index]
        elif tag == b"SE":
            if st is None:
                raise X12EnvelopeError("SE", offset, "SE without an open ST")
            _same("SE", offset, "SE01 (segment count, ST through SE)", _el(el, 1), str(index - st[2] + 1))
            _same("SE", offset, "SE02 (control number)", _el(el, 2), st[1], f"ST02 at byte {st[0]}")
            gs[2], st = gs[2] + 1, None
        elif tag == b"GE":
            if gs is None or st is not None:
                what = "without an open GS" if gs is None else f"while transaction set {st[1]} has no SE"
                raise X12EnvelopeError("GE", offset, f"GE {what}")
            _same("GE", offset, "GE01 (transaction set count)", _el(el, 1), str(gs[2]))
            _same("GE", offset, "GE02 (control number)", _el(el, 2), gs[1], f"GS06 at byte {gs[0]}")
            isa[2], gs = isa[2] + 1, None
        else:  # IEA
            if gs is not None:
                raise X12EnvelopeError("IEA", offset, f"IEA while group {gs[1]} has no GE")
            _same("IEA", offset, "IEA01 (functional group count)", _el(el, 1), str(isa[2]))
            _same("IEA", offset, "IEA02 (control number)", _el(el, 2), isa[1], "ISA13")
            isa, done_at = None, offset
    if isa is not None:
        open_ = f"transaction set {st[1]} (ST at byte {st[0]}) has no SE; " if st else ""
        open_ += f"group {gs[1]} (GS at byte {gs[0]}) has no GE; " if gs else ""
        raise X12EnvelopeError("IEA", stream.tell(), f"missing: {open_}interchange {isa[1]} is not closed "
                               "(file truncated?)")


def _el(elements: list[bytes], n: int) -> str:
    return elements[n].decode("latin-1").strip() if len(elements) > n else ""


def _same(tag: str, offset: int, what: str, found: str, expected: str, where: str = "") -> None:
    # Control numbers compare as numbers when both are (ISA13 is zero-padded, IEA02 may not be).
    if found == expected or (found.isdigit() and expected.isdigit() and int(found) == int(expected)):
        return
    against = f" (from {where})" if where else ""
    raise X12EnvelopeError(tag, offset, f"{what} is {found or 'missing'!r}, expected {expected!r}{against}")


def split_x12(source: str, stream: BinaryIO) -> Iterator[Record]:
    """837: one record per CLM loop up to the next CLM/HL/SE; 835: one per CLP loop up to CLP/LX/SE/PLB."""
    sep, term = check_x12(stream)
    nm1, clm, clp, hl = b"NM1" + sep, b"CLM" + sep, b"CLP" + sep, b"HL" + sep
    closers = (hl, b"SE" + sep, b"GE" + sep, b"IEA" + sep)
    payment_closers = (b"LX" + sep, b"PLB" + sep)  # in an 837 LX opens a service line, in an 835 a header
    subscriber: str | None = None  # 837 2010BA NM1*IL, read before its claims
    claim: list = []  # the open claim: [id, start, patient key, is 835]
    for offset, seg in _segments(stream, term):
        opens = seg.startswith((clm, clp))
        if claim and (opens or seg.startswith(closers) or (claim[3] and seg.startswith(payment_closers))):
            yield Record(claim[0], claim[2], claim[1], offset)
            claim = []
        if opens:
            el = seg.split(sep, 2)
            key = None if seg.startswith(clp) else subscriber
            claim = [el[1].decode("latin-1") if len(el) > 1 else None, offset, key, seg.startswith(clp)]
        elif seg.startswith(nm1):
            el = seg.split(sep)  # NM101 IL subscriber (QC patient in an 835), NM108 MI, NM109 member id
            if len(el) > 9 and el[8] == b"MI" and el[9] and el[1] in (b"IL", b"QC"):
                member = f"{source}|{el[9].decode('latin-1')}"
                if el[1] == b"IL" and not claim:
                    subscriber = member
                elif claim and claim[3] and (claim[2] is None or el[1] == b"IL"):
                    claim[2] = member
        elif seg.startswith(hl) and seg.split(sep)[3:4] != [b"23"]:  # a 2000C patient keeps its subscriber
            subscriber = None


# ---- CSV and NDJSON --------------------------------------------------------------------------------


class _Lines:
    """Decoded lines of a binary reader for csv.reader, counting the bytes it has handed out."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.pos = stream, stream.tell()

    def __iter__(self) -> Iterator[str]:
        for raw in self.stream:
            text = raw.decode("utf-8-sig" if self.pos == 0 else "utf-8", "replace")
            self.pos += len(raw)
            yield text


def split_csv(source: str, stream: BinaryIO) -> Iterator[Record]:
    """One record per data row; a row's range covers its quoted newlines and its line ending."""
    lines = _Lines(stream)
    # csv.reader pulls exactly the lines of one row per next(), so lines.pos brackets each row.
    reader = csv.reader(lines)
    start = lines.pos
    try:
        header = next(reader, [])
        columns = {name.strip().lower(): i for i, name in enumerate(header)}
        id_col = next((columns[c] for c in ID_COLUMNS if c in columns), None)
        key_col, key_fmt = next(((columns[c], f) for c, f in PATIENT_COLUMNS if c in columns), (None, ""))
        start = lines.pos
        for row in reader:
            if row:  # csv.reader gives [] for a blank line
                rid = row[id_col] if id_col is not None and id_col < len(row) and row[id_col] else None
                pid = row[key_col] if key_col is not None and key_col < len(row) and row[key_col] else None
                yield Record(rid, f"{source}|{key_fmt.format(pid)}" if pid else None, start, lines.pos)
            start = lines.pos
    except csv.Error as exc:
        raise FileFormatError(f"CSV row at line {reader.line_num} (byte {start}): {exc}") from exc


def split_ndjson(stream: BinaryIO) -> Iterator[Record]:
    """One record per non-blank line (the line's range includes its newline)."""
    pos = stream.tell()
    for line in stream:
        if line.strip():
            yield Record(None, None, pos, pos + len(line))
        pos += len(line)
