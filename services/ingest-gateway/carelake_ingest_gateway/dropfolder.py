"""The drop folder: batch files delivered SFTP-style into ``<root>/<source>/``, taken once complete.

Layout, per known source (the folders are created at start)::

    <root>/<source>/<name>                    delivered: waiting, or still being written
    <root>/<source>/.done/<yyyymmdd>/<name>   taken (UTC day; ``<stem>-1<ext>``... when the name is there)
    <root>/<source>/.rejected/<name>          refused; ``<name>.reason.json`` beside it says why.
                                              Fix it and move it back into <root>/<source>/ to offer it again.

A file is offered to ``take`` only when it is complete: names starting with "." or ending in
``.part``, ``.tmp`` or ``.filepart`` are uploads in progress (SFTP clients and servers write under
such a name and rename when done), an empty file is one whose writer has not started, and any
other file must show the same size, mtime and inode on two consecutive scans, so a writer still
appending is left alone. A writer that pauses longer than a poll interval can still be taken early;
senders that rename when done never are.

Scanning is polling with ``os.scandir``, deliberately not inotify: inotify sees nothing written on
another host, so it misses uploads into NFS / SMB / SFTP-server-backed volumes, which is where drop
folders live. A scan of a folder is one directory read; files are taken one at a time, in name order.

``take`` owns idempotency: a file taken but not yet moved (a crash, a second instance polling the
same folder) is offered again, and the callee stores it under a content-addressed Bronze key while
the intake recognises records already sent. An error marked transient (``TransientError``, HTTP
status 503, or ``code == "unavailable"``) leaves the file where it is and retries it with backoff;
any other exception rejects it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from carelake.errors import CarelakeError, ConfigError, TransientError
from carelake_ingest_gateway.intake import SOURCES

log = logging.getLogger("carelake.ingest.drop")

DROP_FILES = Counter("carelake_drop_files_total",
                     "Drop-folder files by outcome: taken, rejected, retry (transient error), "
                     "gone (moved by someone else)", ["source", "outcome"])
DONE, REJECTED = ".done", ".rejected"
IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".filepart")
MAX_BACKOFF_S = 300.0


@dataclass(frozen=True)
class DropOutcome:
    """What a ``take`` may return (any object will do; DropFolder only logs it)."""

    key: str
    records: int | None = None


Take = Callable[[str, Path, str], Any]  # (source, path, name) -> outcome; raises to reject
_Stamp = tuple[int, int, int]  # (size, mtime_ns, inode)


class DropFolder:
    """Watches ``root/<source>/`` for every known source and hands each complete file to ``take``.

    ``run()`` polls every ``poll_s`` seconds until ``stop()``; ``poll_once()`` is one scan (tests
    drive it directly). Not thread-safe: one thread polls.
    """

    def __init__(self, root: Path, take: Take, poll_s: float = 1.0, *, sources: Iterable[str] = SOURCES) -> None:
        if not poll_s > 0:
            raise ConfigError(f"CARELAKE_DROP_POLL_S must be a positive number of seconds, got {poll_s!r}")
        self.root, self.take, self.poll_s = Path(root), take, poll_s
        self.sources = tuple(sources)
        self._seen: dict[Path, _Stamp] = {}  # what the previous scan saw: a file is complete when unchanged
        self._retry: dict[Path, tuple[float, float]] = {}  # path -> (not before, next backoff) after transient errors
        self._stop = threading.Event()
        for source in self.sources:
            (self.root / source).mkdir(parents=True, exist_ok=True)

    def run(self) -> None:
        log.info("drop folder watching", extra={"root": str(self.root), "poll_s": self.poll_s})
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - e.g. a file that cannot be moved: log, keep polling the rest
                log.exception("drop folder scan failed")
            self._stop.wait(self.poll_s)
        log.info("drop folder stopped", extra={"root": str(self.root)})

    def stop(self, *_: object) -> None:
        """Stop after the file in hand (a take is never interrupted half-way)."""
        self._stop.set()

    def poll_once(self) -> int:
        """One scan of every source folder; returns how many files were taken or rejected."""
        seen: dict[Path, _Stamp] = {}
        handled = 0
        for source in self.sources:
            folder = self.root / source
            try:
                entries = sorted(_candidates(folder), key=lambda e: e[0])
            except OSError as exc:  # unmounted, permissions: say so every scan, keep the others going
                log.error("drop folder unreadable", extra={"folder": str(folder), "error": str(exc)})
                continue
            for name, stamp in entries:
                if self._stop.is_set():
                    break
                path = folder / name
                seen[path] = stamp
                if self._seen.get(path) != stamp or not self._due(path):
                    continue  # new or still changing: look again next scan
                if self._offer(source, path, name):
                    handled += 1
                    del seen[path]
        self._seen = seen
        self._retry = {p: r for p, r in self._retry.items() if p in seen}
        return handled

    # ---- one file ---------------------------------------------------------------------------------

    def _offer(self, source: str, path: Path, name: str) -> bool:
        """Take one complete file and file it under .done or .rejected; False when it stays for a retry."""
        started = time.perf_counter()
        try:
            outcome = self.take(source, path, name)
        except Exception as exc:  # noqa: BLE001 - the callee's refusal or failure: classified below
            if _transient(exc):
                self._back_off(path)
                DROP_FILES.labels(source, "retry").inc()
                log.warning("drop file not taken; will retry", extra={"source": source, "file": name,
                                                                      "error": f"{type(exc).__name__}: {exc}"})
                return False
            return self._reject(source, path, name, exc)
        self._retry.pop(path, None)
        try:
            moved = _move_unique(path, path.parent / DONE / datetime.now(UTC).strftime("%Y%m%d"), name)
        except FileNotFoundError:
            DROP_FILES.labels(source, "gone").inc()
            log.warning("drop file taken but gone before it was moved (another instance?)",
                        extra={"source": source, "file": name})
            return True
        DROP_FILES.labels(source, "taken").inc()
        log.info("drop file taken", extra={"source": source, "file": name, "moved_to": str(moved),
                                           "outcome": _describe(outcome),
                                           "take_s": round(time.perf_counter() - started, 3)})
        return True

    def _reject(self, source: str, path: Path, name: str, exc: Exception) -> bool:
        self._retry.pop(path, None)
        code = getattr(exc, "code", None) or type(exc).__name__
        try:
            moved = _move_unique(path, path.parent / REJECTED, name)
        except FileNotFoundError:
            DROP_FILES.labels(source, "gone").inc()
            return True
        reason = {"error": str(code), "detail": str(exc)[:4000], "time": datetime.now(UTC).isoformat(),
                  "source": source, "file": name}
        if isinstance(getattr(exc, "key", None), str):  # where the callee kept the bytes (quarantine), if it did
            reason["key"] = exc.key  # type: ignore[attr-defined]
        _write_json(moved.with_name(moved.name + ".reason.json"), reason)
        DROP_FILES.labels(source, "rejected").inc()
        log.warning("drop file rejected", extra={"source": source, "file": name, "moved_to": str(moved),
                                                 "error": code, "detail": str(exc)[:500]})
        return True

    def _due(self, path: Path) -> bool:
        retry = self._retry.get(path)
        return retry is None or time.monotonic() >= retry[0]

    def _back_off(self, path: Path) -> None:
        wait = self._retry.get(path, (0.0, self.poll_s))[1]
        self._retry[path] = (time.monotonic() + wait, min(wait * 2, MAX_BACKOFF_S))


# ---- helpers ----------------------------------------------------------------------------------------


def _candidates(folder: Path) -> list[tuple[str, _Stamp]]:
    """(name, stamp) of the regular files in ``folder`` that are not uploads in progress."""
    out = []
    with os.scandir(folder) as it:
        for entry in it:
            name = entry.name
            if name.startswith(".") or name.lower().endswith(IN_PROGRESS_SUFFIXES):
                continue
            try:
                # Symlinks are skipped: a link could hand the gateway any file on its host.
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # renamed or removed since the directory read
                continue
            if st.st_size == 0:  # created, not written yet (or useless): never taken as it is
                continue
            out.append((name, (st.st_size, st.st_mtime_ns, st.st_ino)))
    return out


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError) or getattr(exc, "code", None) == "unavailable":
        return True
    return isinstance(exc, CarelakeError) and exc.http_status_code() == 503


def _move_unique(src: Path, folder: Path, name: str) -> Path:
    """Move ``src`` into ``folder`` as ``name``, or ``<stem>-<n><suffix>`` if taken; never overwrites."""
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = _split(name)
    for n in itertools.count():
        dst = folder / (name if n == 0 else f"{stem}-{n}{suffix}")
        try:
            os.link(src, dst)  # fails if dst exists, unlike rename, which would replace it
        except FileExistsError:
            continue
        except FileNotFoundError:
            raise
        except OSError:  # a filesystem without hard links: check, then rename (a narrow race at worst)
            if dst.exists():
                continue
            os.rename(src, dst)
            return dst
        os.unlink(src)
        return dst
    raise AssertionError("unreachable")


def _split(name: str) -> tuple[str, str]:
    dot = name.find(".", 1)
    return (name, "") if dot < 0 else (name[:dot], name[dot:])


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def _describe(outcome: Any) -> Any:
    """The outcome as something a JSON log line can hold."""
    if dataclasses.is_dataclass(outcome) and not isinstance(outcome, type):
        return dataclasses.asdict(outcome)
    if hasattr(outcome, "model_dump"):
        return outcome.model_dump()
    return outcome if isinstance(outcome, str | int | float | bool | dict | list | None) else repr(outcome)[:500]
