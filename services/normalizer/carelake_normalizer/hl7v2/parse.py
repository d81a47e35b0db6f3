"""A small, lazy HL7 v2 ER7 reader: delimiters from MSH, segments, fields on demand.

Hand-written rather than python-hl7 or hl7apy because of speed: on the simulator's day
(5,143 messages) python-hl7's ``hl7.parse`` costs ~620 µs a message and hl7apy (tolerant, no
groups) ~19 ms, against a budget of ~200 µs for a whole message (parse, map, validate, encode)
at 5,000 msg/s. Splitting segments and fields costs ~5 µs a message; components,
subcomponents and escapes are only worked out for the fields a mapping reads. The tests check
this reader against python-hl7 field by field on simulated messages.

Handled: any field separator and encoding characters from MSH-1/MSH-2 (4, or 5 with the v2.7
truncation character); segment terminators ``\\r``, ``\\n`` or ``\\r\\n``; MLLP framing bytes;
a UTF-8 BOM; escape sequences ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\P\\ \\Xhh..\\ \\.br\\`` (highlighting and
character-set escapes dropped); the HL7 null ``""`` read as empty; batches (FHS/BHS/BTS/FTS)
through ``split_batch``. Every field read is marked, so unread populated fields can be counted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from carelake_normalizer.core import MappingError

SUPPORTED_VERSION = re.compile(r"2\.(3|4|5|6|7|8)(\.\d{1,2})?")
_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")
_NAMES: dict[str, bool] = {}  # three characters -> a segment name? (remembered: few distinct)
_BATCH_SEGMENTS = frozenset({"FHS", "BHS", "BTS", "FTS"})
_CHARSETS = {"8859/1": "latin-1", "8859/15": "iso8859-15", "ASCII": "ascii", "UNICODE UTF-8": "utf-8",
             "UTF-8": "utf-8", "WINDOWS-1252": "cp1252", "CP1252": "cp1252"}
_NULL = '""'


def _subcomponent(comp: str, s: int, d: "Delimiters") -> str:
    """Subcomponent ``s`` of one component's raw text, unescaped and stripped; "" for the HL7 null."""
    if not comp:
        return ""
    if d.sub in comp:
        parts = comp.split(d.sub)
        comp = parts[s - 1] if s <= len(parts) else ""
    elif s > 1:
        return ""
    if d.esc in comp:
        return d.unescape(comp).strip()
    if comp == _NULL:
        return ""
    return comp.strip()

class Delimiters:
    __slots__ = ("field", "comp", "rep", "esc", "sub", "trunc", "_escape_re")

    def __init__(self, field: str, enc: str) -> None:
        self.field = field
        self.comp = enc[0] if len(enc) > 0 else "^"
        self.rep = enc[1] if len(enc) > 1 else "~"
        self.esc = enc[2] if len(enc) > 2 else "\\"
        self.sub = enc[3] if len(enc) > 3 else "&"
        self.trunc = enc[4] if len(enc) > 4 else ""
        e = re.escape(self.esc)
        self._escape_re = re.compile(f"{e}([^{e}\\r\\n]{{1,200}}){e}")

    def unescape(self, text: str) -> str:
        if self.esc not in text:
            return text
        return self._escape_re.sub(self._replace, text)

    def _replace(self, m: re.Match) -> str:
        code = m.group(1)
        simple = {"F": self.field, "S": self.comp, "T": self.sub, "R": self.rep, "E": self.esc,
                  "P": self.trunc}.get(code)
        if simple is not None:
            return simple
        if code[0] == "X" and len(code) > 1:
            try:
                raw = bytes.fromhex(code[1:])
            except ValueError:
                return m.group(0)
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw.decode("latin-1")
        if code in (".br", ".sp") or code.startswith(".sp"):
            return "\n"
        if code in ("H", "N") or code[0] in "CMZ" or code[0] == ".":
            return ""  # highlighting, character-set switches, local and formatting escapes
        return m.group(0)  # not an escape sequence: keep the text as sent


class Rep:
    """One repetition of a field: components and subcomponents, unescaped on access."""

    __slots__ = ("raw", "comps", "d")

    def __init__(self, raw: str, d: Delimiters) -> None:
        self.raw = raw
        self.comps = raw.split(d.comp) if raw else []
        self.d = d

    def c(self, i: int, s: int = 1) -> str:
        """Component ``i`` (1-based), subcomponent ``s``, unescaped; "" if absent or HL7 null."""
        comps = self.comps
        if i > len(comps):
            return ""
        return _subcomponent(comps[i - 1], s, self.d)

    def values(self, n: int) -> list[str]:
        """Components 1..n (first subcomponent of each), unescaped: one call for a whole data type."""
        d = self.d
        raw = self.raw
        if d.sub not in raw and d.esc not in raw and _NULL not in raw:  # the usual case: text as sent
            out = [comp.strip() for comp in self.comps[:n]]
            if len(out) < n:
                out.extend([""] * (n - len(out)))
            return out
        out = []
        for comp in self.comps[:n]:
            if comp:
                if d.sub in comp:
                    comp = comp.split(d.sub, 1)[0]
                if d.esc in comp:
                    comp = d.unescape(comp)
                elif comp == _NULL:
                    comp = ""
                comp = comp.strip()
            out.append(comp)
        if len(out) < n:
            out.extend([""] * (n - len(out)))
        return out

    def text(self) -> str:
        """The whole repetition as text (components re-joined): for ST/TX/FT values."""
        raw = self.raw
        return "" if raw == _NULL else self.d.unescape(raw).strip()

    def __bool__(self) -> bool:
        raw = self.raw
        if not raw:
            return False
        d = self.d
        if d.comp not in raw and d.sub not in raw:
            return raw != _NULL
        rest = raw.replace(d.comp, "").replace(d.sub, "")
        return bool(rest) and rest != _NULL


class Segment:
    """One segment; ``fields[n]`` is field n as sent (MSH: fields[1] is MSH-1, the separator)."""

    __slots__ = ("name", "fields", "used", "pos", "nth", "d")

    def __init__(self, name: str, fields: list[str], pos: int, nth: int, d: Delimiters) -> None:
        self.name, self.fields, self.pos, self.nth, self.d = name, fields, pos, nth, d
        self.used = 0b11 if name == "MSH" else 0b1  # the name (and MSH-1/MSH-2) count as read

    @property
    def label(self) -> str:
        """``OBX[3]``: the segment and its occurrence in the message."""
        return f"{self.name}[{self.nth}]"

    def where(self, n: int) -> str:
        return f"{self.name}[{self.nth}].{self.name}-{n}"

    def has(self, n: int) -> bool:
        """Is field n populated (not marked as read)."""
        return n < len(self.fields) and self.fields[n] not in ("", _NULL)

    def raw(self, n: int) -> str:
        """Field n as sent (escaped, all repetitions), marked as read."""
        self.used |= 1 << n
        return self.fields[n] if n < len(self.fields) else ""

    def val(self, n: int, c: int = 1, s: int = 1) -> str:
        """First repetition, component c, subcomponent s, unescaped ("" if absent)."""
        self.used |= 1 << n
        if n >= len(self.fields):
            return ""
        raw = self.fields[n]
        if not raw or raw == _NULL:
            return ""
        d = self.d
        if d.comp in raw or d.rep in raw or d.sub in raw:
            if d.rep in raw:
                raw = raw.split(d.rep, 1)[0]
            comps = raw.split(d.comp) if raw else ()
            if c > len(comps):
                return ""
            return _subcomponent(comps[c - 1], s, d)  # as Rep.c, without building a Rep
        if c > 1 or s > 1:
            return ""
        return d.unescape(raw).strip() if d.esc in raw else raw.strip()

    def rep(self, n: int) -> Rep:
        """The first repetition of field n."""
        self.used |= 1 << n
        raw = self.fields[n] if n < len(self.fields) else ""
        return Rep(raw.split(self.d.rep, 1)[0] if raw else "", self.d)

    def reps(self, n: int) -> list[Rep]:
        """Every non-empty repetition of field n."""
        self.used |= 1 << n
        raw = self.fields[n] if n < len(self.fields) else ""
        if not raw or raw == _NULL:
            return []
        d = self.d
        out = [Rep(r, d) for r in raw.split(d.rep) if r]  # an empty repetition is never kept
        return [r for r in out if r]

    def mark(self, *ns: int) -> None:
        for n in ns:
            self.used |= 1 << n

    def unused_fields(self) -> Iterator[int]:
        """Populated fields never read."""
        used = self.used
        for n, value in enumerate(self.fields):
            if value and value != _NULL and not (used >> n) & 1:
                if self.name == "MSH" and n < 3:
                    continue
                yield n


class Message:
    __slots__ = ("segments", "d", "terminated", "charset", "msh", "version", "code", "trigger",
                 "structure", "control_id", "bad_lines", "cut")

    def __init__(self, segments: list[Segment], d: Delimiters, terminated: bool, charset: str,
                 bad_lines: list[int]) -> None:
        self.segments, self.d, self.terminated, self.charset = segments, d, terminated, charset
        self.bad_lines = bad_lines  # positions of lines that are not segments
        self.cut: tuple[Segment, int] | None = None  # the last segment, when it was cut off in transit
        self.msh = segments[0]
        self.version = self.msh.val(12)
        self.code = self.msh.val(9, 1).upper()
        self.trigger = self.msh.val(9, 2).upper()
        self.structure = self.msh.val(9, 3).upper()
        self.control_id = self.msh.val(10)

    def first(self, name: str) -> Segment | None:
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def all(self, name: str) -> list[Segment]:
        return [seg for seg in self.segments if seg.name == name]


# ---- reading one message ---------------------------------------------------------------------


def strip_framing(payload: bytes) -> bytes:
    """Drop MLLP framing (0x0B ... 0x1C 0x0D), a BOM and surrounding blank space."""
    data = payload
    if data[:1] == b"\x0b" or b"\x0b" in data[:8]:
        data = data[data.index(b"\x0b") + 1:]
    end = data.find(b"\x1c")
    if end >= 0:
        data = data[:end]
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.lstrip(b" \t\r\n\x00")


def decode(data: bytes) -> tuple[str, str]:
    """Bytes as text: UTF-8 when it is, else the charset MSH-18 names, else Windows-1252."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    head = data.split(b"\r", 1)[0].split(b"\n", 1)[0]
    declared = ""
    if len(head) > 4:
        parts = head.split(head[3:4])
        if len(parts) > 17:
            declared = parts[17].split(b"^")[0].decode("ascii", "replace").strip().upper()
    codec = _CHARSETS.get(declared, "cp1252")
    if codec == "utf-8":
        codec = "cp1252"  # declared UTF-8 but is not: the usual vendor mislabel
    return data.decode(codec, errors="replace"), codec


def parse_message(payload: bytes) -> Message:
    """Read one ER7 message; MappingError when it has no usable MSH or delimiters."""
    data = strip_framing(payload)
    if not data:
        raise MappingError("empty", "the message is empty", None)
    text, charset = decode(data)
    terminated = text.rstrip(" \t\x00").endswith(("\r", "\n"))
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    # A batch wrapped around one message (FHS/BHS ... BTS/FTS): read the message inside it.
    while lines and lines[0][:3] in _BATCH_SEGMENTS:
        lines.pop(0)
    if not lines or not lines[0].startswith("MSH"):
        raise MappingError("not_hl7", "the message does not start with an MSH segment", "MSH")
    first = lines[0]
    if len(first) < 8:
        raise MappingError("truncated" if not terminated else "bad_header",
                           "the MSH segment is too short to hold its delimiters", "MSH")
    fs = first[3]
    if fs.isalnum() or fs.isspace():
        raise MappingError("bad_header", "MSH-1 (field separator) is a letter, digit or blank", "MSH-1")
    msh_parts = first.split(fs)
    enc = msh_parts[1]
    delims = fs + enc
    if not 2 <= len(enc) <= 5 or len(set(delims)) != len(delims) or \
            any(c.isalnum() or c.isspace() for c in enc):
        raise MappingError("bad_header", f"MSH-2 ({len(enc)} characters) is not a set of encoding "
                           "characters (^~\\& or similar)", "MSH-2")
    d = Delimiters(fs, enc)
    segments: list[Segment] = []
    counts: dict[str, int] = {}
    bad: list[int] = []
    in_message = True
    for pos, line in enumerate(lines, 1):
        if not line or line.isspace():
            continue
        name = line[:3]
        good = _NAMES.get(name)
        if good is None:
            good = _NAMES[name] = _SEGMENT_NAME.fullmatch(name) is not None
            if len(_NAMES) > 4096:
                _NAMES.clear()
        if not good or (len(line) > 3 and line[3] != fs):
            upper = name.upper() if name.isascii() else ""
            if _SEGMENT_NAME.fullmatch(upper) and (len(line) == 3 or line[3] == fs):
                name = upper  # lower-case segment names: a known vendor quirk
            else:
                bad.append(pos)
                continue
        if name in _BATCH_SEGMENTS:
            in_message = False  # the batch trailer: nothing after it belongs to this message
            continue
        if name == "MSH" and segments:
            raise MappingError("batch_not_split", "more than one MSH: a batch must be split first "
                               "(split_batch)", f"MSH@{pos}")
        if not in_message:
            bad.append(pos)
            continue
        if name == "MSH":
            fields = ["MSH", fs, *msh_parts[1:]]
        else:
            fields = line.split(fs)
            fields[0] = name
        nth = counts[name] = counts.get(name, 0) + 1
        segments.append(Segment(name, fields, pos, nth, d))
    return Message(segments, d, terminated, charset, bad)


# ---- batches and files -------------------------------------------------------------------------

_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n|$)")


def split_batch_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of each message in a file or batch.

    Handles FHS/BHS/BTS/FTS batches, MLLP-framed streams, one message per line (segments
    separated by ``\\r``) and ``\\n``- or ``\\r\\n``-separated segments. Each MSH starts a message;
    a run of lines that are not segments becomes an item of its own (so it is rejected, not
    silently merged into its neighbour). A span ends after its last segment's terminator.
    """
    spans: list[tuple[int, int]] = []
    start: int | None = None
    end = 0
    junk = False  # the current span holds lines that are not HL7 segments

    def close() -> None:
        nonlocal start
        if start is not None and end > start:
            spans.append((start, end))
        start = None

    for m in _LINE.finditer(data):
        line_start, line_end = m.span()
        if line_start == line_end:
            break
        line = m.group()
        lead = len(line) - len(line.lstrip(b"\x0b\x1c\xef\xbb\xbf \t\x00"))
        body = line[lead:].rstrip(b"\r\n")
        body_trimmed = body.replace(b"\x1c", b"").strip()
        if not body_trimmed:
            if b"\x1c" in line and start is not None:  # MLLP end of block: the message is done
                end = line_end
                close()
            continue
        name = body[:3]
        is_segment = re.fullmatch(rb"[A-Za-z][A-Za-z0-9]{2}", name) is not None and \
            (len(body) == 3 or not body[3:4].isalnum())
        if is_segment and name.upper() in (b"FHS", b"BHS", b"BTS", b"FTS") and b"MSH" not in body[3:]:
            close()  # a batch header or trailer: no message data in it
            continue
        if is_segment and name == b"MSH":
            close()
            start, junk = line_start + lead, False
        elif not is_segment and not junk:
            close()
            start, junk = line_start + lead, True
        elif is_segment and junk:
            pass  # segments after junk without an MSH stay with the junk: they have no header
        elif start is None:
            start, junk = line_start + lead, not is_segment or name != b"MSH"
        end = line_end
        if b"\x1c" in line:
            close()
    close()
    return spans


def split_batch(data: bytes) -> list[bytes]:
    """The messages of a file or batch as byte strings (see split_batch_spans)."""
    return [data[a:b] for a, b in split_batch_spans(data)]
