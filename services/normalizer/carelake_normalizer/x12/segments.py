"""X12 segments: the delimiters an ISA declares, a segment splitter, elements that remember being read.

The hot path of the X12 mapping is a plain splitter (``bytes.split`` on the ISA's segment
terminator, then on its element separator): a claim record is ~15 segments and splits in a few
microseconds. pyx12 (the X12 parser the tests use as the oracle) reads the same files segment for
segment and element for element; see tests/test_x12_parser.py and the package docstring for the
measurements behind the choice.

Text: X12 5010 allows the basic and extended character sets (ASCII); a sender that writes UTF-8
anyway is read as UTF-8, anything else as Latin-1, so decoding never fails.

Every ``Seg`` keeps a bitmask of the elements the mapping read (``val``/``comp``/``mark``);
``unused`` lists the populated elements nobody read — the coverage metric of ``MapResult.unused``,
named ``<segment>-<loop>-<element>`` (``NM1-2010BA-NM103``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from carelake_normalizer.core import MappingError, PartError

ISA_LENGTH = 106
# The ISA's element separator positions when every element has its fixed width.
_ISA_SEPARATORS = (3, 6, 17, 20, 31, 34, 50, 53, 69, 76, 81, 83, 89, 99, 101, 103)
_TAG = re.compile(r"[A-Z][A-Z0-9]{1,2}")
# Most elements a segment may have (the 5010 TR3s / X12 dictionary); more means the data is broken
# (a separator inside a value, two segments run together). Segments not listed are not checked.
MAX_ELEMENTS = {
    "ISA": 16, "GS": 8, "ST": 3, "SE": 2, "GE": 2, "IEA": 2, "BHT": 6, "HL": 4, "PRV": 6, "SBR": 9,
    "PAT": 9, "NM1": 12, "N1": 6, "N3": 2, "N4": 7, "DMG": 11, "REF": 4, "PER": 9, "CLM": 20, "DTP": 3,
    "CL1": 4, "HI": 12, "LX": 1, "SV1": 21, "SV2": 10, "CLP": 14, "CAS": 19, "SVC": 7, "BPR": 21,
    "TRN": 4, "DTM": 6, "AMT": 3, "QTY": 4, "MOA": 9, "MIA": 24, "PLB": 14, "LQ": 2, "K3": 3, "NTE": 2,
    "CUR": 21, "TS3": 24, "TS2": 19, "RDM": 7, "PWK": 9, "CN1": 6, "CR1": 10, "CRC": 7, "HCP": 15,
    "SVD": 7, "LIN": 31, "CTP": 11, "OI": 6,
}


@dataclass(frozen=True, slots=True)
class Delimiters:
    element: str
    component: str
    repetition: str  # "" when the interchange declares none (4010: ISA11 is the standards id "U")
    segment: str

    @property
    def segment_bytes(self) -> bytes:
        return self.segment.encode("latin-1")

    @property
    def element_bytes(self) -> bytes:
        return self.element.encode("latin-1")


def read_isa(data: bytes) -> Delimiters:
    """The delimiters an interchange declares in its ISA; MappingError if there is no readable ISA.

    The ISA is fixed width (106 characters), but senders that pad wrongly exist, so the elements are
    found by the element separator (character 4) and the terminator is the character after ISA16.
    """
    if not data.startswith(b"ISA"):
        raise MappingError("not_x12", "the data does not start with an ISA segment", "ISA")
    if len(data) < ISA_LENGTH:
        raise MappingError("truncated", f"the interchange has {len(data)} bytes, an ISA alone is {ISA_LENGTH}",
                           "ISA")
    sep = data[3:4]
    if sep.isalnum() or sep in (b" ", b"\r", b"\n"):
        raise MappingError("bad_delimiters", "ISA: the element separator (character 4) is a letter, digit or "
                           "blank", "ISA")
    if all(data[i:i + 1] == sep for i in _ISA_SEPARATORS):
        component, term = data[104:105], data[105:106]
        repetition = data[82:83]
    else:
        parts = data[:400].split(sep, 16)
        if len(parts) < 17 or len(parts[16]) < 2:
            raise MappingError("bad_delimiters", "ISA: fewer than 16 elements before the segment terminator",
                               "ISA16")
        component, term = parts[16][:1], parts[16][1:2]
        repetition = parts[11][:1]
    if term.isalnum() or term in (sep, b" ", component):
        raise MappingError("bad_delimiters", "ISA: the segment terminator (after ISA16) is not a delimiter",
                           "ISA16")
    if component.isalnum() or component in (sep, b" "):
        raise MappingError("bad_delimiters", "ISA16 (component separator) is a letter, digit or blank", "ISA16")
    rep = repetition.decode("latin-1")
    if repetition.isalnum() or repetition in (sep, term, component, b" "):
        rep = ""  # 4010: ISA11 is the interchange standards identifier, not a separator
    return Delimiters(sep.decode("latin-1"), component.decode("latin-1"), rep, term.decode("latin-1"))


_TERMINATORS = ("~", "'", "\x1c", "\x85")


def guess_delimiters(payload: bytes) -> Delimiters:
    """Delimiters of a claim loop that came without its file (claim-only): the separator after the
    first segment id, the first usual terminator present (else a line break), ``:`` unless CLM05 /
    SVC01 / SV101 show another component separator."""
    m = re.match(rb"[\r\n\s]*[A-Z][A-Z0-9]{1,2}([^A-Za-z0-9\s])", payload[:16])
    if m is None:
        raise MappingError("not_x12", "the record does not start with an X12 segment id and element separator",
                           "segment 1")
    sep = m.group(1).decode("latin-1")
    text = payload[:4096].decode("latin-1")
    term = next((t for t in _TERMINATORS if t in text and t != sep), "\n")
    component = ":"
    first = text.lstrip().split(term, 1)[0].split(sep)
    candidates = []
    if first[0] == "CLM" and len(first) > 5:
        candidates.append(first[5][2:3])
    for seg in text.split(term):
        el = seg.strip().split(sep)
        if el[0] in ("SV1", "SVC", "SV2") and len(el) > 1:
            candidates.append(el[1 if el[0] != "SV2" else 2 if len(el) > 2 else 1][2:3])
    for c in candidates:
        if c and not c.isalnum() and c not in (sep, term, " "):
            component = c
            break
    return Delimiters(sep, component, "", term)


def decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


class Seg:
    """One segment: ``el[0]`` is its id, ``el[n]`` element n (as sent, trailing blanks dropped)."""

    __slots__ = ("el", "tag", "pos", "offset", "loop", "label", "used", "d")

    def __init__(self, el: list[str], pos: int, offset: int, d: Delimiters) -> None:
        self.el, self.tag, self.pos, self.offset, self.d = el, el[0], pos, offset, d
        self.loop = ""  # the TR3 loop id ("2300", "2010BA", "HEADER"), set by loops.assign
        self.label = el[0]  # "2400[2] DTP*472": the loop (with the line number) and the qualified segment
        self.used = 1  # bit n: element n was read; bit 0 (the id) always

    def __repr__(self) -> str:
        return f"Seg({self.label!r}, pos={self.pos})"

    def val(self, n: int) -> str:
        """Element n, stripped ("" when absent); marks it read."""
        el = self.el
        if n < len(el):
            self.used |= 1 << n
            return el[n].strip()
        return ""

    def peek(self, n: int) -> str:
        """Element n without marking it read (for loop detection and qualifiers already accounted for)."""
        el = self.el
        return el[n].strip() if n < len(el) else ""

    def comp(self, n: int) -> list[str]:
        """The components of composite element n (``[]`` when absent); marks it read."""
        v = self.val(n)
        return [c.strip() for c in v.split(self.d.component)] if v else []

    def mark(self, *ns: int) -> None:
        for n in ns:
            self.used |= 1 << n

    def where(self, n: int | None = None) -> str:
        """``2400[2] DTP*472 DTP03`` / ``2300 CLM02``: the loop, the segment (with its qualifier, if it
        has one) and the element."""
        if n is None:
            return self.label
        label = self.label
        if label.endswith(" " + self.tag):
            label = label[: -len(self.tag) - 1]
        return f"{label} {self.tag}{n:02d}"

    def fail(self, reason_code: str, problem: str, n: int | None = None, suffix: str = "") -> PartError:
        """A PartError naming element n of this segment (``where``: ``2400[1] DTP*472 DTP03``; the
        segment's number rides along as ``position``)."""
        where = self.where(n) + suffix
        err = PartError(reason_code, f"{where}: {problem}", where)
        err.position = self.pos  # type: ignore[attr-defined]
        return err

    def check_count(self) -> None:
        """PartError when the segment has more elements than its definition allows."""
        limit = MAX_ELEMENTS.get(self.tag)
        if limit is not None and len(self.el) - 1 > limit:
            raise self.fail("too_many_elements", f"{len(self.el) - 1} elements, a {self.tag} has at most {limit} "
                            "(a separator inside a value?)", limit + 1)

    def unused(self, into: Counter[str]) -> None:
        used = self.used
        el = self.el
        for n in range(1, len(el)):
            if not used >> n & 1 and el[n].strip():
                into[f"{self.tag}-{self.loop or '?'}-{self.tag}{n:02d}"] += 1


def split_segments(data: bytes, d: Delimiters, start_pos: int = 1, base: int = 0) -> list[Seg]:
    """Every segment of ``data`` (line breaks between segments skipped; empty segments dropped).

    ``pos`` numbers the segments from ``start_pos``; ``offset`` is each segment's first byte in
    ``data`` plus ``base``. A segment whose id is not 2-3 upper-case letters/digits raises
    MappingError (the terminator is not the one the record uses, or the bytes are not X12).
    """
    term = d.segment_bytes
    sep = d.element
    out: list[Seg] = []
    offset = base
    pos = start_pos
    for raw in data.split(term):
        body = raw.lstrip(b"\r\n\t ")
        if body:
            body = body.rstrip(b"\r\n")
            if body:
                el = decode(body).split(sep)
                tag = el[0]
                if not _TAG.fullmatch(tag):
                    raise MappingError("not_x12", f"segment {pos} does not start with an X12 segment id "
                                       f"({_shape(tag)})", f"segment {pos}")
                if el[-1] == "" and len(el) > 1:
                    while len(el) > 1 and el[-1] == "":
                        el.pop()
                out.append(Seg(el, pos, offset + len(raw) - len(raw.lstrip(b"\r\n\t ")), d))
                pos += 1
        offset += len(raw) + len(term)
    return out


def _shape(text: str) -> str:
    kinds = sorted({"digits" if c.isdigit() else "letters" if c.isalpha() else "symbols" for c in text[:40]})
    return f"a {len(text)}-character value ({', '.join(kinds) or 'empty'})"


# ---- values -------------------------------------------------------------------------------------

_AMOUNT = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")


def amount(seg: Seg, n: int, *, required: bool = False) -> int | float | None:
    """An X12 R (decimal) element as a JSON number; PartError if malformed (or missing and required)."""
    text = seg.val(n)
    if not text:
        if required:
            raise seg.fail("missing_field", "the amount is empty", n)
        return None
    if not _AMOUNT.fullmatch(text) or len(text) > 18:
        raise seg.fail("invalid_value", f"not a decimal amount ({_shape(text)})", n)
    if "." in text:
        value = float(text)
        return int(value) if value.is_integer() else value
    return int(text)


def quantity(seg: Seg, n: int) -> int | float | None:
    """A quantity element (R): as ``amount``, but zero or negative is PartError."""
    value = amount(seg, n)
    if value is not None and value <= 0:
        raise seg.fail("invalid_value", "the quantity is not positive", n)
    return value
