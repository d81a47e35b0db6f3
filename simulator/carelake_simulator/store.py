"""Feeds on disk, one folder per source as the systems would drop them, and read back for replay.

Layout under the output folder:
  <source>/<source>_<yyyymmdd>.hl7 | .ndjson   message feeds, in send order, one message per line
                                                (HL7 segments end in CR; the LF between messages
                                                is not part of a message)
  <source>/<source>_<yyyymmdd>.index.csv       per message: id, kind, key, times, byte offset/length
  <source>/<file name>                          batch files exactly as delivered (837/835, CSV)
  files.csv                                     per batch file: source, name, kind, sent time, type
"""

from __future__ import annotations

import csv
import heapq
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from pathlib import Path

from carelake_simulator.model import FeedFile, FeedRecord

INDEX_COLUMNS = ("message_id", "kind", "key", "event_time", "sent_time", "offset", "length", "content_type")
FILES_COLUMNS = ("source", "name", "kind", "sent_time", "content_type", "bytes")


def _stem(source: str, day: date) -> str:
    return f"{source}_{day:%Y%m%d}"


def write_records(out: Path, day: date, records: Iterable[FeedRecord]) -> dict[str, int]:
    """Write message feeds (records already in send order per source); returns counts per source."""
    handles: dict[str, tuple] = {}
    counts: dict[str, int] = {}
    try:
        for r in records:
            h = handles.get(r.source)
            if h is None:
                folder = out / r.source
                folder.mkdir(parents=True, exist_ok=True)
                ext = "ndjson" if r.content_type == "application/json" else "hl7"
                data = open(folder / f"{_stem(r.source, day)}.{ext}", "wb")
                index = open(folder / f"{_stem(r.source, day)}.index.csv", "w", newline="")
                writer = csv.writer(index)
                writer.writerow(INDEX_COLUMNS)
                h = handles[r.source] = (data, index, writer)
            data, _, writer = h
            offset = data.tell()
            data.write(r.payload)
            data.write(b"\n")
            writer.writerow((r.message_id, r.kind, r.key, r.event_time.isoformat(), r.sent_time.isoformat(),
                             offset, len(r.payload), r.content_type))
            counts[r.source] = counts.get(r.source, 0) + 1
    finally:
        for data, index, _ in handles.values():
            data.close()
            index.close()
    return counts


def write_files(out: Path, files: Iterable[FeedFile]) -> None:
    rows = []
    for f in files:
        folder = out / f.source
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f.name).write_bytes(f.payload)
        rows.append((f.source, f.name, f.kind, f.sent_time.isoformat(), f.content_type, len(f.payload)))
    with open(out / "files.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FILES_COLUMNS)
        writer.writerows(rows)


def iter_records(out: Path, source: str) -> Iterator[FeedRecord]:
    """One source's messages in send order, bytes exactly as written."""
    for index in sorted((out / source).glob("*.index.csv")):
        data = index.with_name(index.name.replace(".index.csv", ".ndjson"))
        if not data.exists():
            data = index.with_name(index.name.replace(".index.csv", ".hl7"))
        blob = data.read_bytes()
        with open(index, newline="") as fh:
            for row in csv.DictReader(fh):
                start = int(row["offset"])
                yield FeedRecord(
                    source=source, kind=row["kind"], message_id=row["message_id"],
                    event_time=datetime.fromisoformat(row["event_time"]),
                    sent_time=datetime.fromisoformat(row["sent_time"]), key=row["key"],
                    payload=blob[start:start + int(row["length"])], content_type=row["content_type"])


def iter_files(out: Path) -> Iterator[FeedFile]:
    path = out / "files.csv"
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda row: datetime.fromisoformat(row["sent_time"]))
    for row in rows:
        yield FeedFile(source=row["source"], name=row["name"], kind=row["kind"],
                       sent_time=datetime.fromisoformat(row["sent_time"]),
                       payload=(out / row["source"] / row["name"]).read_bytes(),
                       content_type=row["content_type"])


def iter_feed(out: Path, sources: Iterable[str] | None = None) -> Iterator[FeedRecord | FeedFile]:
    """Every message and file of an output folder, merged into one stream in send order."""
    wanted = set(sources) if sources else None
    folders = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("_"))
    streams: list[Iterator[FeedRecord | FeedFile]] = [
        iter_records(out, s) for s in folders if wanted is None or s in wanted]
    streams.append(f for f in iter_files(out) if wanted is None or f.source in wanted)
    return heapq.merge(*streams, key=lambda item: item.sent_time)


def count_feed(out: Path, sources: Iterable[str] | None = None) -> int:
    """How many items iter_feed will yield (for progress bars), without reading payloads."""
    wanted = set(sources) if sources else None
    n = 0
    for index in out.glob("*/*.index.csv"):
        if wanted is None or index.parent.name in wanted:
            with open(index) as fh:
                n += sum(1 for _ in fh) - 1
    files = out / "files.csv"
    if files.exists():
        with open(files, newline="") as fh:
            n += sum(1 for row in csv.DictReader(fh) if wanted is None or row["source"] in wanted)
    return n
