"""HL7 v2 acknowledgements and MLLP framing, as pure functions of bytes.

``ack`` writes the ACK a receiver owes a sender; ``frame`` wraps a message in MLLP's start and end
blocks; ``FrameReader`` takes whatever chunks a socket hands over and gives back whole frames, with
protocol problems (junk between frames, a frame over the size limit, a connection closed mid-frame)
as events rather than exceptions, so one bad sender never costs the messages around it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

from carelake_ingest_gateway.sniff import SUPPORTED_HL7_VERSIONS, Msh, parse_msh

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
_FS = 0x1C
_CR = 0x0D

RESPONDER = "CARELAKE"  # MSH-3 and MSH-4 of every ACK carelake sends
DEFAULT_VERSION = "2.5.1"  # when the sender's MSH is unreadable or names a version we do not speak
DEFAULT_ENCODING = "^~\\&"

ACCEPT_CODES = frozenset({"AA", "CA"})
ERROR_CODES = frozenset({"AE", "AR", "CE", "CR"})
ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}  # original-mode code -> enhanced-mode (commit) code

# HL7 table 0357 (message error condition codes) as ERR-3 uses them.
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_VERSION_ID = "203"
APPLICATION_INTERNAL_ERROR = "207"
ERROR_TEXT = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}


@functools.lru_cache(maxsize=64)
def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


def escape(text: str, field_sep: str = "|", encoding: str = DEFAULT_ENCODING) -> str:
    """``text`` as an HL7 v2 TX/ST value: delimiters become \\F\\ \\S\\ \\R\\ \\E\\ \\T\\, line breaks spaces."""
    comp, rep, esc, sub = (encoding + DEFAULT_ENCODING[len(encoding):])[:4]
    if not _has_any(text, field_sep + encoding + "\r\n"):
        return text  # the common case: nothing to escape
    out = text.replace(esc, f"{esc}E{esc}")  # the escape character first, or it would be doubled below
    for char, name in ((field_sep, "F"), (comp, "S"), (rep, "R"), (sub, "T")):
        out = out.replace(char, f"{esc}{name}{esc}")
    if len(encoding) > 4:  # 2.7+: the truncation character
        out = out.replace(encoding[4], f"{esc}P{esc}")
    return " ".join(out.splitlines()) if ("\r" in out or "\n" in out) else out


def _has_any(text: str, chars: str) -> bool:
    return any(c in text for c in chars)


def _timestamp(now: datetime) -> str:
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return _format_second(now.replace(microsecond=0), now.utcoffset())


@functools.lru_cache(maxsize=8)
def _format_second(moment: datetime, offset: object) -> str:
    # One ACK per message: the same second is formatted many times. The offset is part of the key
    # because datetimes equal as instants hash alike whatever their zone.
    return moment.strftime("%Y%m%d%H%M%S%z")


def ack(msh: Msh | None, code: str, *, text: str = "", error_code: str | None = None, now: datetime,
        control_id: str) -> bytes:
    """The HL7 v2 ACK answering the message whose MSH is ``msh`` (None: its MSH was unreadable).

    Written in the sender's delimiters and version (2.5.1 when unreadable or unsupported), sending
    and receiving applications swapped, MSA-2 = the sender's MSH-10. ``code`` is AA/AE/AR or, in
    enhanced mode, CA/CE/CR; an error code adds an ERR segment with ``error_code`` (HL7 table
    0357, default 207) and ``text`` as the user message. Versions before 2.5 have no ERR-3/ERR-8,
    so there the error goes in ERR-1 (error code and location) and the text in MSA-3.
    """
    if code not in ACCEPT_CODES | ERROR_CODES:
        raise ValueError(f"ACK code must be one of AA AE AR CA CE CR, got {code!r}")
    if msh is not None and not plausible_delimiters(msh):
        msh = None  # its fields cannot be trusted either
    if msh is not None:
        sep = msh.field_sep
        encoding = msh.encoding
        spare = [c for c in DEFAULT_ENCODING + "#$%*" if c not in sep + encoding]
        while len(encoding) < 4:  # a short MSH-2: the missing delimiters from the defaults not in use
            encoding += spare.pop(0)
        version = msh.version if msh.version in SUPPORTED_HL7_VERSIONS else DEFAULT_VERSION
        parts = msh.message_type.split("^")
        trigger = parts[1] if len(parts) > 1 else ""
        receiving_app, receiving_facility = msh.sending_app, msh.sending_facility
        processing_id, answered = msh.processing_id or "P", msh.control_id
    else:
        sep, encoding, version, trigger = "|", DEFAULT_ENCODING, DEFAULT_VERSION, ""
        receiving_app = receiving_facility = answered = ""
        processing_id = "P"
    comp = encoding[0]
    modern = _version_key(version) >= (2, 5)
    structure = [] if _version_key(version) < (2, 3, 1) else ["ACK"]
    message_type = comp.join(["ACK", trigger, *structure]) if trigger or structure else "ACK"
    message_text = escape(text, sep, encoding)

    segments = [sep.join(["MSH", encoding, RESPONDER, RESPONDER, receiving_app, receiving_facility,
                          _timestamp(now), "", message_type, escape(control_id, sep, encoding),
                          processing_id, version])]
    msa = ["MSA", code, answered]
    if code in ERROR_CODES:
        err = error_code or APPLICATION_INTERNAL_ERROR
        cwe = comp.join([err, ERROR_TEXT.get(err, ""), "HL70357"])
        if modern:
            # ERR-3 HL7 error code, ERR-4 severity, ERR-8 user message.
            error = sep.join(["ERR", "", "", cwe, "E", "", "", "", message_text])
        else:
            # ERR-1 error code and location: <segment>^<sequence>^<field>^<code (CE, as subcomponents)>.
            sub = encoding[3]
            error = sep.join(["ERR", comp.join(["", "", "", sub.join([err, ERROR_TEXT.get(err, ""), "HL70357"])])])
            msa.append(message_text)  # MSA-3 text message: where pre-2.5 receivers look for the reason
        segments += [sep.join(msa), error]
    else:
        segments.append(sep.join(msa))
    return ("\r".join(segments) + "\r").encode("utf-8")


def plausible_delimiters(msh: Msh) -> bool:
    """MSH-1 and MSH-2 look like delimiters: distinct punctuation, not letters or digits.

    An MSH missing MSH-2 (``MSH|APP|FAC|...``) otherwise reads as encoding characters "APP" with
    every later field shifted by one.
    """
    return _plausible(msh.field_sep, msh.encoding)


@functools.lru_cache(maxsize=64)
def _plausible(field_sep: str, encoding: str) -> bool:
    chars = field_sep + encoding
    return (1 <= len(encoding) <= 5 and len(set(chars)) == len(chars)
            and all(not c.isalnum() and not c.isspace() and c.isprintable() for c in chars))


def readable_msh(payload: bytes) -> Msh | None:
    """``parse_msh`` that also refuses an MSH whose delimiters are not delimiters."""
    msh = parse_msh(payload)
    return msh if msh is not None and plausible_delimiters(msh) else None


def frame(payload: bytes) -> bytes:
    """One MLLP frame: start block 0x0B, the payload, end block 0x1C 0x0D."""
    return START_BLOCK + payload + END_BLOCK


# ---- reading frames ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete frame's payload (between the blocks, exactly as sent)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Junk:
    """Bytes outside any frame that were skipped (whitespace alone between frames is not junk)."""

    nbytes: int


@dataclass(frozen=True, slots=True)
class Oversize:
    """A complete frame over the size limit: its bytes were discarded, all but the head.

    ``head`` is its first bytes (up to :data:`HEAD_BYTES`), enough to read the MSH and answer it.
    """

    nbytes: int
    head: bytes

    @property
    def msh(self) -> Msh | None:
        return parse_msh(self.head)


@dataclass(frozen=True, slots=True)
class Truncated:
    """A frame that never ended: the connection closed ("closed") or a new start block began
    ("restarted"). Nothing of it may be acknowledged."""

    nbytes: int
    reason: str


Event = Frame | Junk | Oversize | Truncated

HEAD_BYTES = 4096
_WHITESPACE = b" \t\r\n"


class FrameReader:
    """Incremental MLLP deframer: feed it chunks of any size, get back events in stream order.

    A start block inside a frame abandons the frame (``Truncated("restarted")``) and begins a new
    one, so a sender that gave up mid-message and started over is understood; a 0x1C not followed
    by 0x0D is payload. Memory is bounded by ``max_frame``: past it only the head is kept.
    """

    def __init__(self, max_frame: int = 4 * 1024 * 1024) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self._in_frame = False
        self._buf = bytearray()
        self._size = 0  # bytes of the current frame so far, discarded ones included
        self._discarding = False  # the current frame went over max_frame
        self._pending_fs = False  # the last chunk ended with 0x1C: the end block may be split
        self._junk = 0
        self._junk_counts = False  # the current run outside frames holds more than whitespace
        self.frames = self.junk_bytes = self.oversize = self.truncated = 0

    @property
    def in_frame(self) -> bool:
        """True while a frame has started and not ended."""
        return self._in_frame

    def feed(self, data: bytes) -> list[Event]:
        """The events completed by ``data`` (often none, one frame, or several)."""
        events: list[Event] = []
        i, n = 0, len(data)
        while i < n:
            if not self._in_frame:
                start = data.find(START_BLOCK, i)
                self._note_junk(data[i:n if start < 0 else start])
                if start < 0:
                    break
                self._flush_junk(events)
                self._begin()
                i = start + 1
                continue
            if self._pending_fs:
                self._pending_fs = False
                if data[i] == _CR:
                    events.append(self._finish())
                    i += 1
                    continue
                self._append(b"\x1c")  # a lone 0x1C is payload
            end = data.find(END_BLOCK, i)
            restart = data.find(START_BLOCK, i, end if end >= 0 else n)
            if restart >= 0:
                self._append(data[i:restart])
                events.append(self._abandon("restarted"))
                self._begin()
                i = restart + 1
            elif end >= 0:
                self._append(data[i:end])
                events.append(self._finish())
                i = end + 2
            else:
                stop = n - 1 if data[n - 1] == _FS else n
                self._append(data[i:stop])
                self._pending_fs = stop < n
                i = n
        return events

    def close(self) -> list[Event]:
        """The connection ended: a frame still open is ``Truncated("closed")``; pending junk is reported."""
        events: list[Event] = []
        if self._in_frame:
            if self._pending_fs:
                self._append(b"\x1c")
                self._pending_fs = False
            events.append(self._abandon("closed"))
        self._flush_junk(events)
        return events

    # ---- internals --------------------------------------------------------------------------------

    def _begin(self) -> None:
        self._in_frame, self._size, self._discarding, self._pending_fs = True, 0, False, False
        self._buf = bytearray()

    def _append(self, piece: bytes) -> None:
        if not piece:
            return
        self._size += len(piece)
        if self._discarding:
            if len(self._buf) < HEAD_BYTES:
                self._buf += piece[:HEAD_BYTES - len(self._buf)]
        elif self._size > self.max_frame:
            self._discarding = True
            self._buf += piece
            del self._buf[HEAD_BYTES:]
        else:
            self._buf += piece

    def _finish(self) -> Event:
        self._in_frame = False
        buf, self._buf = bytes(self._buf), bytearray()
        if self._discarding:
            self.oversize += 1
            return Oversize(self._size, buf)
        self.frames += 1
        return Frame(buf)

    def _abandon(self, reason: str) -> Truncated:
        self._in_frame, self._buf = False, bytearray()
        self.truncated += 1
        return Truncated(self._size, reason)

    def _note_junk(self, piece: bytes) -> None:
        if piece:
            self._junk += len(piece)
            if not self._junk_counts and piece.strip(_WHITESPACE):
                self._junk_counts = True

    def _flush_junk(self, events: list[Event]) -> None:
        if self._junk and self._junk_counts:
            self.junk_bytes += self._junk
            events.append(Junk(self._junk))
        self._junk, self._junk_counts = 0, False
