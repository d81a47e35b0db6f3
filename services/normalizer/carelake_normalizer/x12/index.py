"""The per-file index: every claim's byte span and the enclosing loops it is read with, parsed once.

A claim record is only its CLM (or CLP) loop; who billed it, who the subscriber and the payer are,
when the file was made and who paid are in loops before it (ISA/GS, ST/BHT, 2000A/2010AA,
2000B/2010BA/2010BB, 2000C/2010CA; 835 BPR/TRN/1000A/1000B). The gateway sends thousands of
consecutive records of the same file, so the file is read once into a ``FileIndex``: the
enclosing loops as plain values (``Party``, ``Level``, ``Header``) and each claim's span.
Segments inside claims are not even decoded here (they are read when their record is mapped).

Cache (``index_for``): two levels, both safe against handing one file's context to another's claim.

1. By identity, for the common case (the caller passes the same ``bytes`` object for every record of
   a file): the last few ``(bytes object, index)`` pairs. The cache holds a strong reference to the
   bytes object, so its ``id`` cannot be reused by another object while the entry lives, and the
   lookup compares with ``is``. Cost: one ``is`` per record.
2. By content, for a caller that reads the file anew for each record: the key is ``file_key`` when
   the caller names the file for good (the Bronze object key: Bronze objects are immutable) plus the
   length and a hash of the first 4 KiB, else the SHA-256 of the whole file (~0.1 ms for a 200 KB
   file; a caller with 100 MB files should pass ``file_key``). A hash of the head and the length
   alone would not do: a re-sent corrected file can share both with the original.

In both cases the record's bytes are compared with the file's bytes at ``byte_offset`` before
the context is used (``claim_at``), and the offset must be a claim's first byte.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from carelake_normalizer.core import MappingError, PartError
from carelake_normalizer.x12 import values as v
from carelake_normalizer.x12.loops import CLOSE_835, CLOSE_837, FileLoops
from carelake_normalizer.x12.segments import Delimiters, Seg, decode, read_isa


@dataclass(slots=True)
class Party:
    """A name loop: NM1 (837) or N1 (835) with its N3/N4/DMG/REF/PRV/PER, as values."""

    loop: str
    entity: str  # NM101 / N101: 85 billing provider, IL subscriber, PR payer, QC patient, PE payee...
    person: bool  # NM102 = 1
    family: str  # NM103: last name, or the organization's name
    given: str = ""
    middle: str = ""
    prefix: str = ""
    suffix: str = ""
    id_qualifier: str = ""  # NM108 / N103: XX NPI, MI member id, PI / XV payer id, 46 ETIN...
    id: str = ""
    address: dict | None = None
    birth_date: str | None = None
    gender: str | None = None
    refs: dict[str, str] = field(default_factory=dict)  # REF01 -> REF02 (EI tax id, SY SSN, 2U payer id...)
    taxonomy: str = ""  # PRV03
    telecom: list[dict] = field(default_factory=list)
    contact_name: str = ""
    error: PartError | None = None  # a value that makes the party's resource unbuildable (e.g. DMG02)
    pos: int = 0  # the NM1/N1 segment's number in the file

    @property
    def npi(self) -> str:
        return self.id if self.id_qualifier == "XX" else ""

    def display(self) -> str:
        return " ".join(p for p in (self.given, self.family) if p) if self.person else self.family


@dataclass(slots=True)
class Level:
    """One 837 HL (2000A billing provider / 2000B subscriber / 2000C patient) or one 835 LX header."""

    code: str  # HL03: 20, 22, 23; "LX" for an 835 header number
    hl: str
    parent: str
    pos: int
    parties: dict[str, Party] = field(default_factory=dict)  # by loop id: 2010AA, 2010BA, 2010BB, 2010CA
    taxonomy: str = ""  # 2000A PRV*BI PRV03
    sbr: dict[str, str] = field(default_factory=dict)  # 2000B SBR01/02/03/04/09
    relationship: str = ""  # 2000C PAT01 (or SBR02 for 2000B)
    unused: Counter[str] = field(default_factory=Counter)
    segs: list[Seg] = field(default_factory=list)  # only while indexing
    owner: int | None = None  # the first claim read with this level (gets its unused counts)


@dataclass(slots=True)
class Header:
    """One transaction set (ST..SE) with its interchange and group: what every claim in it shares."""

    kind: str | None  # 837P | 837I | 835 | None (not a transaction set we map)
    st01: str
    version: str
    st_control: str
    sender: str  # ISA06
    receiver: str  # ISA08
    usage: str  # ISA15: P production, T test
    control: str  # ISA13
    pos: int
    created: tuple[str, str, str] | None = None  # (CCYYMMDD, HHMM, where) from BHT04/05 or 835 DTM*405
    bht_ref: str = ""
    bht_type: str = ""  # BHT06: CH chargeable, RP reporting (encounters)
    payer: Party | None = None  # 835 1000A
    payee: Party | None = None  # 835 1000B
    payment: dict = field(default_factory=dict)  # 835 BPR / TRN values
    unused: Counter[str] = field(default_factory=Counter)
    segs: list[Seg] = field(default_factory=list)
    owner: int | None = None


@dataclass(slots=True)
class ClaimSpan:
    start: int
    end: int
    pos: int  # the CLM/CLP segment's number in the file
    header: Header
    levels: tuple[Level, ...]  # 837: billing, subscriber[, patient]; 835: the LX header (if any)
    extra_unused: Counter[str] | None = None  # the enclosing loops' counts this claim carries


@dataclass(slots=True)
class FileIndex:
    d: Delimiters
    size: int
    claims: list[ClaimSpan]
    by_start: dict[int, ClaimSpan]
    errors: list[str]  # structural findings (a claim outside any transaction set...)

    def claim_at(self, offset: int, payload: bytes, data: bytes) -> ClaimSpan | None:
        """The claim starting at ``offset`` if ``payload`` is exactly the file's bytes there, else None."""
        span = self.by_start.get(offset)
        if span is None:
            return None
        if data[offset:offset + len(payload)] != payload:
            return None
        return span


# ---- building ------------------------------------------------------------------------------------


def build_index(data: bytes) -> FileIndex:
    """Read a whole interchange once; MappingError if it has no readable ISA."""
    d = read_isa(data)
    term = d.segment_bytes
    sep = d.element_bytes
    loops = FileLoops()
    interchange = Header(None, "", "", "", "", "", "", "", 1)  # ISA/GS/GE/IEA and anything outside ST..SE
    header: Header = interchange
    headers: list[Header] = [interchange]
    levels: dict[str, Level] = {}
    all_levels: list[Level] = []
    level: Level | None = None
    lx: Level | None = None
    claims: list[ClaimSpan] = []
    errors: list[str] = []
    open_claim: list | None = None  # [start, pos, header, levels]
    isa: Seg | None = None
    gs_version = ""
    closers_837 = tuple(t.encode() + sep for t in CLOSE_837)
    closers_835 = tuple(t.encode() + sep for t in CLOSE_835)
    pos = 0
    at = 0
    n = len(data)
    while at < n:
        cut = data.find(term, at)
        end = n if cut < 0 else cut
        body_start = at
        while body_start < end and data[body_start] in b"\r\n\t ":
            body_start += 1
        raw = data[body_start:end].rstrip(b"\r\n")
        at = end + len(term)
        if not raw:
            continue
        pos += 1
        if open_claim is not None:
            closers = closers_835 if open_claim[4] else closers_837
            if not raw.startswith(closers):
                continue  # inside the claim: read when its record is mapped
            claims.append(_span(open_claim, body_start))
            open_claim = None
        el = decode(raw).split(d.element)
        while len(el) > 1 and el[-1] == "":
            el.pop()
        seg = Seg(el, pos, body_start, d)
        loops.place(seg)
        tag = seg.tag
        if tag in ("CLM", "CLP"):
            if header is interchange:
                errors.append(f"segment {pos}: {tag} outside a transaction set")
            chain: tuple[Level, ...]
            if tag == "CLP":
                chain = (lx,) if lx is not None else ()
            else:
                chain = _chain(level, levels)
            open_claim = [body_start, pos, header, chain, tag == "CLP"]
            continue
        if tag == "ISA":
            isa = seg
            seg.used = ~0  # delimiters, ids, control number, usage: read into the header
            interchange.segs.append(seg)
        elif tag == "GS":
            gs_version = seg.peek(8)
            seg.used = ~0
            interchange.segs.append(seg)
        elif tag in ("GE", "IEA"):
            seg.used = ~0  # counts and control numbers: the gateway checks the envelope
            interchange.segs.append(seg)
            header = interchange
        elif tag == "ST":
            header = Header(loops.kind, seg.peek(1), seg.peek(3) or gs_version, seg.peek(2),
                            isa.peek(6) if isa else "", isa.peek(8) if isa else "", isa.peek(15) if isa else "",
                            isa.peek(13) if isa else "", pos)
            seg.used = ~0
            header.segs.append(seg)
            headers.append(header)
            levels, level, lx = {}, None, None
        elif tag == "SE":
            seg.used = ~0
            header.segs.append(seg)
        elif tag == "HL":
            level = Level(seg.peek(3), seg.peek(1), seg.peek(2), pos)
            seg.mark(1, 2, 3, 4)  # the tree itself (HL04: has children)
            level.segs.append(seg)
            levels[level.hl] = level
            all_levels.append(level)
        elif tag == "LX" and loops.kind == "835":
            lx = Level("LX", seg.peek(1), "", pos)
            seg.mark(1)
            lx.segs.append(seg)
            all_levels.append(lx)
        elif seg.loop in ("2000", "2000A", "2000B", "2000C", "2010AA", "2010AB", "2010AC", "2010BA", "2010BB",
                          "2010CA") and loops.kind != "835":
            (level.segs if level is not None else header.segs).append(seg)
        elif seg.loop == "2000" and lx is not None:
            lx.segs.append(seg)
        else:
            header.segs.append(seg)
    if open_claim is not None:
        claims.append(_span(open_claim, n))
    for h in headers:
        _read_header(h)
    for lv in all_levels:
        _read_level(lv)
    _assign_owners(claims, interchange, headers, all_levels)
    return FileIndex(d, n, claims, {c.start: c for c in claims}, errors)


def _span(open_claim: list, end: int) -> ClaimSpan:
    start, pos, header, chain, _ = open_claim
    return ClaimSpan(start, end, pos, header, chain)


def _chain(level: Level | None, levels: dict[str, Level]) -> tuple[Level, ...]:
    """The HL chain of a claim, top down: billing (20), subscriber (22)[, patient (23)]."""
    out: list[Level] = []
    seen = 0
    while level is not None and seen < 10:
        out.append(level)
        level = levels.get(level.parent) if level.parent else None
        seen += 1
    return tuple(reversed(out))


def _assign_owners(claims: list[ClaimSpan], interchange: Header, headers: list[Header],
                   levels: list[Level]) -> None:
    """Each enclosing loop's unused counts go with the first claim read with it (so a file's records
    add up to what the whole file maps to); loops no claim is read with go with the file's first."""
    for i, c in enumerate(claims):
        for owner in (c.header, *c.levels):
            if owner.owner is None:
                owner.owner = i
    if interchange.owner is None and claims:
        interchange.owner = 0
    for owner in (*headers, *levels):
        if not owner.unused:
            continue
        i = owner.owner if owner.owner is not None else 0 if claims else None
        if i is None:
            continue
        span = claims[i]
        if span.extra_unused is None:
            span.extra_unused = Counter()
        span.extra_unused.update(owner.unused)


# ---- reading the loops into values ---------------------------------------------------------------


def _read_header(h: Header) -> None:
    for seg in h.segs:
        tag = seg.tag
        if tag == "BHT":
            seg.mark(1, 2)  # structure code (0019) and purpose (00 original / 18 reissue)
            h.bht_ref = seg.val(3)
            date, time = seg.val(4), seg.val(5)
            if date:
                h.created = (date, time, seg.where(4))
            h.bht_type = seg.val(6)
    if h.kind == "835":
        _read_835_header(h)
    _finish_unused(h.segs, h.unused)
    h.segs = []


def _read_835_header(h: Header) -> None:
    groups = _loops(h.segs)
    for loop, segs in groups:
        first = segs[0]
        if loop == "1000A" and first.tag == "N1":
            h.payer = read_party(segs)
        elif loop == "1000B" and first.tag == "N1":
            h.payee = read_party(segs)
    for seg in h.segs:
        tag = seg.tag
        if tag == "BPR" and not h.payment.get("bpr"):
            h.payment["bpr"] = True
            h.payment["handling"] = seg.val(1)  # I remittance + payment, H notification only
            h.payment["total"] = seg.peek(2)
            h.payment["total_where"] = seg.where(2)
            seg.mark(2)
            h.payment["credit"] = seg.val(3)  # C credit / D debit
            h.payment["method"] = seg.val(4)  # ACH, CHK, FWT, BOP, NON
            h.payment["date"] = seg.val(16)
            h.payment["date_where"] = seg.where(16)
        elif tag == "TRN" and not h.payment.get("trace"):
            seg.mark(1)
            h.payment["trace"] = seg.val(2)  # check or EFT trace number
            h.payment["originator"] = seg.val(3)  # 1 + payer TIN
        elif tag == "DTM" and seg.peek(1) == "405":
            seg.mark(1)
            h.created = (seg.val(2), "", seg.where(2))


def _read_level(lv: Level) -> None:
    for loop, segs in _loops(lv.segs):
        first = segs[0]
        if first.tag in ("NM1", "N1"):
            lv.parties[loop] = read_party(segs)
            continue
        for seg in segs:
            tag = seg.tag
            if tag == "PRV" and lv.code == "20":
                seg.mark(1, 2)
                lv.taxonomy = seg.val(3)
            elif tag == "SBR":
                lv.sbr = {"responsibility": seg.val(1), "relationship": seg.val(2), "group": seg.val(3),
                          "group_name": seg.val(4), "filing": seg.val(9)}
                lv.relationship = lv.sbr["relationship"]
            elif tag == "PAT" and lv.code == "23":
                lv.relationship = seg.val(1)
    _finish_unused(lv.segs, lv.unused)
    lv.segs = []


def _loops(segs: list[Seg]) -> list[tuple[str, list[Seg]]]:
    """Consecutive segments grouped by loop id (a new NM1/N1 always opens a group)."""
    out: list[tuple[str, list[Seg]]] = []
    for seg in segs:
        if not out or out[-1][0] != seg.loop or seg.tag in ("NM1", "N1"):
            out.append((seg.loop, [seg]))
        else:
            out[-1][1].append(seg)
    return out


# REF qualifiers a party's resource reads, by loop (the rest stay unread: MapResult.unused).
REFS = {"2010AA": ("EI",), "2010BA": ("SY",), "2010CA": ("SY",), "2010BB": ("2U", "FY"), "1000A": ("2U",),
        "1000B": ("TJ",)}


def read_party(segs: list[Seg]) -> Party:
    """NM1/N1 and the segments of its loop as a Party (N3/N4, DMG, PRV, PER and the REFs in REFS)."""
    nm = segs[0]
    if nm.tag == "NM1":
        p = Party(nm.loop, nm.val(1), nm.val(2) == "1", nm.val(3), nm.val(4), nm.val(5), nm.val(6), nm.val(7),
                  nm.val(8).upper(), nm.val(9), pos=nm.pos)
    else:  # N1: entity, name, id qualifier, id
        p = Party(nm.loop, nm.val(1), False, nm.val(2), id_qualifier=nm.val(3).upper(), id=nm.val(4), pos=nm.pos)
    n3 = n4 = None
    for seg in segs[1:]:
        tag = seg.tag
        try:
            seg.check_count()
        except PartError as exc:
            p.error = p.error or exc
        if tag == "N3":
            n3 = seg
        elif tag == "N4":
            n4 = seg
        elif tag == "DMG":
            fmt = seg.val(1).upper()
            if seg.peek(2):
                if fmt not in ("D8", ""):
                    p.error = p.error or PartError("invalid_value", f"{seg.where(1)}: date format {fmt[:4]!r} is "
                                                   "not D8", seg.where(1))
                try:
                    p.birth_date = v.d8(seg, 2)
                except PartError as exc:
                    p.error = p.error or exc
            sex = seg.val(3).upper()
            if sex:
                gender = v.GENDER.get(sex)
                if gender is None:
                    p.error = p.error or PartError("invalid_value", f"{seg.where(3)}: gender code is not M, F or "
                                                   "U", seg.where(3))
                p.gender = gender
        elif tag == "REF":
            q = seg.peek(1).upper()
            if q in REFS.get(nm.loop, ()) and seg.peek(2):
                seg.mark(1)
                p.refs.setdefault(q, seg.val(2))
        elif tag == "PRV":
            seg.mark(1, 2)
            p.taxonomy = seg.val(3)
        elif tag == "PER":
            p.contact_name = seg.val(2)
            seg.mark(1)
            for k in (3, 5, 7):
                kind, number = seg.val(k).upper(), seg.val(k + 1)
                system = {"TE": "phone", "FX": "fax", "EM": "email"}.get(kind)
                if system and number:
                    p.telecom.append({"system": system, "value": number, "use": "work"})
    try:
        nm.check_count()
    except PartError as exc:
        p.error = p.error or exc
    p.address = v.address(n3, n4)
    return p


def _finish_unused(segs: list[Seg], into: Counter[str]) -> None:
    for seg in segs:
        seg.unused(into)


# ---- the cache ----------------------------------------------------------------------------------

IDENTITY_SLOTS = 4  # files held by identity (strong references: at most this many files in memory)
CONTENT_SLOTS = 32  # indexes held by content key (no file bytes kept)
_lock = threading.Lock()
_by_identity: list[tuple[bytes, FileIndex]] = []
_by_content: OrderedDict[tuple, FileIndex] = OrderedDict()
STATS = Counter()  # builds, identity hits, content hits (for tests and the bench)


def index_for(data: bytes, file_key: str | None = None) -> FileIndex:
    """The index of ``data``, built once per file (see the module text for the cache)."""
    with _lock:
        for obj, idx in _by_identity:
            if obj is data:
                STATS["identity_hits"] += 1
                return idx
    if file_key is not None:
        key: tuple = ("key", file_key, len(data), hashlib.sha256(data[:4096]).digest())
    else:
        key = ("sha256", len(data), hashlib.sha256(data).digest())
    with _lock:
        idx = _by_content.get(key)
        if idx is not None:
            _by_content.move_to_end(key)
            STATS["content_hits"] += 1
    if idx is None:
        idx = build_index(data)
        STATS["builds"] += 1
        with _lock:
            _by_content[key] = idx
            while len(_by_content) > CONTENT_SLOTS:
                _by_content.popitem(last=False)
    with _lock:
        if isinstance(data, bytes):  # a bytearray/memoryview could change under us: content key only
            _by_identity.insert(0, (data, idx))
            del _by_identity[IDENTITY_SLOTS:]
    return idx


def clear_cache() -> None:
    with _lock:
        _by_identity.clear()
        _by_content.clear()
        STATS.clear()


def check_claim_kind(span: ClaimSpan) -> str:
    """The transaction kind a claim is mapped as; MappingError when its transaction set is not mapped."""
    kind = span.header.kind
    if kind is None:
        what = f"{span.header.st01 or 'no'} transaction set" + (f" ({span.header.version})" if span.header.version
                                                                  else "")
        raise MappingError("unsupported_transaction", f"the claim is in a {what}; mapped: 837P (005010X222), "
                           "837I (005010X223), 835 (005010X221)", "ST01")
    return kind
