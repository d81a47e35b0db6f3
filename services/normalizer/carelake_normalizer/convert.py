"""``carelake convert FILE``: the normalizer's mapping on a file, without the stack.

For an interface analyst testing a feed: the same pure pipeline the service runs (pipeline.py:
mapping, terminology, security labels, FHIR validation) on a single message, an HL7 batch
(FHS/BHS), an MLLP-framed capture or a file of messages one after another. Each valid resource
is printed as one JSON line on stdout (the resource itself); each rejected part as one JSON line
on stderr: ``{"reason_code", "reason", "where", "message_index", "byte_start"}`` (``message_index``
counts messages from 0 in file order; ``byte_start`` is the message's first byte in the file).

Exit status: 0 when everything converted, 2 when some parts or messages were rejected (the rest
is still printed), 1 on a usage error (unreadable file, unknown format, a format with no mapping
yet, unknown time zone).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from carelake_normalizer import pipeline
from carelake_normalizer.hl7v2 import split_batch_spans

FORMATS = ("hl7v2", "x12", "csv", "json")
OK, USAGE, REJECTED = 0, 1, 2
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class UsageError(Exception):
    """What the analyst asked for cannot be done (exit 1)."""


def detect_format(data: bytes) -> str | None:
    """The format of a file from its first bytes (MSH/FHS/BHS or an MLLP start block: hl7v2)."""
    head = data[:4096]
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    if head.lstrip(b" \t\r\n\x00")[:1] == b"\x0b":
        return "hl7v2"
    head = head.lstrip()
    if head[:3] in (b"MSH", b"FHS", b"BHS"):
        return "hl7v2"
    if head[:3] == b"ISA":
        return "x12"
    if head[:1] in (b"{", b"["):
        return "json"
    first = head.split(b"\n", 1)[0]
    if b"," in first:
        return "csv"
    return None


@dataclass(frozen=True, slots=True)
class Converted:
    """One message of the file and what it became."""

    index: int
    start: int
    outcome: pipeline.Outcome


def _spans(data: bytes, fmt: str) -> list[tuple[int, int]]:
    """What is mapped one at a time: HL7 messages, JSON lines, or a CSV export whole (its rows inside)."""
    if fmt == "hl7v2":
        return split_batch_spans(data)
    if fmt == "json":
        spans, start = [], 0
        for line in data.splitlines(keepends=True):
            if line.strip():
                spans.append((start, start + len(line.rstrip(b"\r\n"))))
            start += len(line)
        return spans
    return [(0, len(data))]


def convert(data: bytes, *, source: str, tz: tzinfo, name: str = "file", fmt: str = "hl7v2") -> Iterator[Converted]:
    """Each message of ``data`` (HL7 v2 message, JSON line, or the whole CSV export) through the pipeline."""
    now = datetime.now(UTC)
    for index, (start, end) in enumerate(_spans(data, fmt)):
        payload = data[start:end]
        sha = hashlib.sha256(payload).hexdigest()
        env = {
            # Not the gateway's raw id (that one also hashes MSH-10); only meta.source shows it.
            "id": hashlib.sha256(f"{source}|{sha}|{name}|{start}".encode()).hexdigest()[:32],
            "source": source, "format": fmt, "bronze_key": f"convert/{name}", "sha256": sha,
            "byte_offset": start, "byte_length": len(payload), "payload": payload,
            "source_message_id": None, "replayed": False,
        }
        yield Converted(index, start, pipeline.normalize(env, payload, tz=tz, processed_at=now))


def _timezone(source: str, tz_name: str | None) -> tzinfo:
    if tz_name:
        try:
            return ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise UsageError(f"--tz {tz_name!r} is not an IANA time zone (e.g. America/Chicago, UTC)") from None
    from carelake.config import Settings
    from carelake_normalizer.service import source_timezones, timezone_for

    config = Settings()  # the service's own settings, read now (a test may change the environment)
    return timezone_for(source, source_timezones(config.source_timezones, config.default_timezone))


def run(path: Path, *, fmt: str | None, source: str, tz_name: str | None, stdout: BinaryIO,
        stderr: BinaryIO) -> int:
    """The command: convert ``path`` and print; returns the exit status. UsageError for exit 1."""
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if fmt is None:
        fmt = detect_format(data)
        if fmt is None:
            raise UsageError(f"cannot tell the format of {path} from its first bytes; give --format "
                             f"({', '.join(FORMATS)})")
    tz = _timezone(source, tz_name)
    messages = rejected = 0
    for item in convert(data, source=source, tz=tz, name=Path(path).name, fmt=fmt):
        messages += 1
        outcome = item.outcome
        problems = [outcome.error] if outcome.error is not None else outcome.rejected
        for envelope in outcome.envelopes:
            stdout.write(envelope["resource"].encode("utf-8") + b"\n")
        for p in problems:
            rejected += 1
            line = {**p.as_dict(), "message_index": item.index, "byte_start": item.start}
            stderr.write(_dumps(line).encode("utf-8") + b"\n")
    stdout.flush()
    stderr.flush()
    if messages == 0:
        raise UsageError(f"{path} holds no messages")
    return REJECTED if rejected else OK
