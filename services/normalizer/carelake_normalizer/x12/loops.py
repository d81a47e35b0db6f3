"""Which TR3 loop each segment is in: the loop ids of the 5010 guides (pyx12's map names).

837P 005010X222A1, 837I 005010X223A2, 835 005010X221A1. Envelope segments get pyx12's names
(``ISA_LOOP``, ``GS_LOOP``, ``ST_LOOP``, ``HEADER``); the rest follows the guides: a loop opens on
its first segment (HL by its level code, NM1/N1 by the entity identifier, CLM, LX, SBR, SVC...)
and every other segment stays in the loop open before it. tests/test_x12_parser.py checks the
assignment against pyx12's X12ContextReader (which walks the guides' maps) on simulated files.
"""

from __future__ import annotations

from collections.abc import Iterable

from carelake_normalizer.x12.segments import Seg

ENVELOPE = {"ISA": "ISA_LOOP", "IEA": "ISA_LOOP", "GS": "GS_LOOP", "GE": "GS_LOOP", "ST": "ST_LOOP",
            "SE": "ST_LOOP"}
# 837 context loops, by NM101 (outside a claim) and by HL03.
NM1_837 = {"41": "1000A", "40": "1000B", "85": "2010AA", "87": "2010AB", "PE": "2010AC", "IL": "2010BA",
           "PR": "2010BB", "QC": "2010CA"}
HL_LEVEL = {"20": "2000A", "22": "2000B", "23": "2000C"}
# Claim-level name loops by NM101.
NM1_2310 = {
    "837P": {"DN": "2310A", "P3": "2310A", "82": "2310B", "77": "2310C", "DQ": "2310D", "PW": "2310E",
             "45": "2310F"},
    "837I": {"71": "2310A", "72": "2310B", "ZZ": "2310C", "82": "2310D", "77": "2310E", "DN": "2310F"},
}
NM1_2330 = {
    "837P": {"IL": "2330A", "PR": "2330B", "DN": "2330C", "P3": "2330C", "82": "2330D", "77": "2330E",
             "DQ": "2330F", "85": "2330G"},
    "837I": {"IL": "2330A", "PR": "2330B", "71": "2330C", "72": "2330D", "ZZ": "2330E", "77": "2330F",
             "82": "2330G", "DN": "2330I", "85": "2330H"},
}
NM1_2420 = {
    "837P": {"82": "2420A", "QB": "2420B", "77": "2420C", "DQ": "2420D", "DK": "2420E", "DN": "2420F",
             "P3": "2420F", "PW": "2420G", "45": "2420H"},
    "837I": {"72": "2420A", "ZZ": "2420B", "82": "2420C", "DN": "2420D"},
}
# Segments whose first element qualifies them: their label names it ("DTP*472", "NM1*IL").
QUALIFIED = frozenset({"NM1", "N1", "DTP", "DTM", "REF", "AMT", "QTY", "CAS", "PER", "PRV", "HL", "K3", "PWK",
                       "NTE", "CRC", "MIA", "MOA"})
# Segments that end an 837 claim loop (2300 and its 2400 lines) / an 835 claim payment (2100).
CLOSE_837 = frozenset({"HL", "SE", "GE", "IEA", "ST", "GS", "ISA", "CLM"})
CLOSE_835 = frozenset({"LX", "PLB", "SE", "GE", "IEA", "ST", "GS", "ISA", "CLP"})


class ClaimLoops:
    """The loop state inside one claim (837 2300.. / 835 2100..): feed it the claim's segments in order."""

    __slots__ = ("kind", "loop", "line", "sbr", "n2110")

    def __init__(self, kind: str) -> None:
        self.kind = kind  # 837P | 837I | 835
        self.loop = ""
        self.line = 0  # 2400 line (LX) count
        self.sbr = False  # a 2320 other subscriber has opened: NM1s are 2330x
        self.n2110 = 0

    def place(self, seg: Seg) -> None:
        tag = seg.tag
        kind = self.kind
        if kind == "835":
            if tag == "CLP":
                self.loop, self.n2110 = "2100", 0
            elif tag == "SVC":
                self.loop = "2110"
                self.n2110 += 1
            loop = self.loop or "2100"
            label_loop = f"2110[{self.n2110}]" if loop == "2110" else loop
        else:
            if tag == "CLM":
                self.loop, self.line, self.sbr = "2300", 0, False
            elif tag == "LX":
                self.loop = "2400"
                self.line += 1
            elif self.line == 0:  # the claim header's loops
                if tag == "SBR":
                    self.loop, self.sbr = "2320", True
                elif tag == "NM1":
                    table = (NM1_2330 if self.sbr else NM1_2310).get(kind) or NM1_2310["837P"]
                    self.loop = table.get(seg.peek(1), "2330" if self.sbr else "2310")
            else:  # a service line's loops
                if tag == "LIN":
                    self.loop = "2410"
                elif tag == "NM1":
                    self.loop = (NM1_2420.get(kind) or NM1_2420["837P"]).get(seg.peek(1), "2420")
                elif tag == "SVD":
                    self.loop = "2430"
                elif tag == "LQ":
                    self.loop = "2440"
            loop = self.loop or "2300"
            label_loop = f"{loop}[{self.line}]" if self.line else loop
        seg.loop = loop
        seg.label = _label(label_loop, seg)


def _label(loop: str, seg: Seg) -> str:
    if seg.tag in QUALIFIED:
        q = seg.peek(1)
        if q:
            return f"{loop} {seg.tag}*{q}"
    return f"{loop} {seg.tag}"


def kind_of(version: str, st01: str) -> str | None:
    """837P / 837I / 835 from the implementation guide in ST03 or GS08 (and ST01); None if not mapped."""
    v = version.upper()
    if st01 == "835" or "X221" in v or "X091" in v:
        return "835" if st01 in ("835", "") else None
    if st01 not in ("837", ""):
        return None
    if "X222" in v or "X098" in v:
        return "837P"
    if "X223" in v or "X096" in v:
        return "837I"
    return None


def guess_kind(segs: Iterable[Seg]) -> str:
    """837P / 837I / 835 of a claim loop without its file: CLP is an 835; SV2, CL1 or an institutional
    CLM05-2 (A) make an 837I; otherwise 837P."""
    for seg in segs:
        tag = seg.tag
        if tag == "CLP":
            return "835"
        if tag in ("SV2", "CL1"):
            return "837I"
        if tag == "CLM":
            clm05 = seg.peek(5).split(seg.d.component)
            if len(clm05) > 1 and clm05[1] == "A":
                return "837I"
    return "837P"


class FileLoops:
    """The loop state of a whole interchange: ``place`` each segment in file order.

    A caller may skip the segments inside a claim (the file index does: it needs only the enclosing
    loops) as long as it places the segments that open and close claims.
    """

    __slots__ = ("kind", "claim", "loop", "version")

    def __init__(self) -> None:
        self.kind: str | None = None  # of the open transaction set
        self.claim: ClaimLoops | None = None  # the open claim, if any
        self.loop = ""
        self.version = ""  # GS08

    def place(self, seg: Seg) -> None:
        tag = seg.tag
        env = ENVELOPE.get(tag)
        if env is not None:
            self.claim = None
            if tag == "GS":
                self.version = seg.peek(8)
            elif tag == "ST":
                self.kind = kind_of(seg.peek(3) or self.version, seg.peek(1))
                self.loop = "HEADER"
            seg.loop, seg.label = env, _label(env, seg)
            return
        kind = self.kind
        if kind == "835":
            if tag == "CLP":
                self.claim = ClaimLoops("835")
            elif tag in ("LX", "PLB"):
                self.claim = None
                self.loop = "2000" if tag == "LX" else "FOOTER"
            elif tag == "N1" and self.claim is None:
                self.loop = {"PR": "1000A", "PE": "1000B"}.get(seg.peek(1), "1000")
        elif kind is not None:
            if tag == "CLM":
                self.claim = ClaimLoops(kind)
            elif tag == "HL":
                self.claim = None
                self.loop = HL_LEVEL.get(seg.peek(3), "2000")
            elif tag == "NM1" and self.claim is None:
                self.loop = NM1_837.get(seg.peek(1), self.loop)
        elif tag in ("CLM", "CLP"):  # a claim in a transaction set we do not map: still a claim loop
            self.claim = ClaimLoops("835" if tag == "CLP" else "837P")
        if self.claim is not None:
            self.claim.place(seg)
        else:
            loop = self.loop or "HEADER"
            seg.loop, seg.label = loop, _label(loop, seg)


def assign_file(segs: list[Seg]) -> None:
    """Set ``loop`` and ``label`` of every segment of a whole interchange."""
    state = FileLoops()
    for seg in segs:
        state.place(seg)
