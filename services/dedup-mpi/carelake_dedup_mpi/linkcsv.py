"""``carelake mpi link-csv``: deduplicate a CSV of people exactly as the stream would link them.

The file's rows become PersonRecords (standardize.from_row); the model is fitted on the file's own
records by EM unless one is given; then the records are linked one by one, in file order, through
linker.decide over a MemoryIndex — the stream's algorithm with an in-memory index instead of
PostgreSQL. A new person (new_person, review, unlinkable) gets a new EUID; auto_link joins the
best EUID; a record bridging several EUIDs merges them into the oldest.

Output: ``record_id, euid, score`` per linked row, in file order, with each row's *final* EUID
(after later merges). ``score`` is the deciding match's score (auto_link, review), empty for a new
person.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from carelake.errors import CarelakeError
from carelake_dedup_mpi import blocking
from carelake_dedup_mpi.linker import decide, new_euid
from carelake_dedup_mpi.memory_index import MemoryIndex
from carelake_dedup_mpi.model import Model, default_model
from carelake_dedup_mpi.model import estimate as fit
from carelake_dedup_mpi.person import PersonRecord
from carelake_dedup_mpi.standardize import from_row

MAX_ERRORS_KEPT = 100
# Other spellings of the standard columns, accepted as the same column (record_id has none: it
# must be named so, to avoid guessing which column identifies a row).
ALIASES = {
    "first_name": "given_name", "firstname": "given_name", "given": "given_name", "forename": "given_name",
    "last_name": "family_name", "lastname": "family_name", "surname": "family_name", "family": "family_name",
    "dob": "birth_date", "date_of_birth": "birth_date", "birthdate": "birth_date", "gender": "sex",
    "address": "address_line", "street": "address_line", "address1": "address_line", "address_1": "address_line",
    "zip": "postal_code", "zipcode": "postal_code", "zip_code": "postal_code", "postcode": "postal_code",
    "phone_number": "phone", "telephone": "phone", "social_security_number": "ssn", "suburb": "city",
}


class LinkCsvError(CarelakeError):
    """The file cannot be linked at all (unreadable, or no record_id column)."""

    http_status = 400


@dataclass
class LinkStats:
    """What one link-csv run did."""

    records: int = 0  # rows linked
    persons: int = 0  # distinct EUIDs at the end
    links: int = 0  # auto_link decisions
    reviews: int = 0
    unlinkable: int = 0
    merges: int = 0  # EUIDs retired because a record bridged them
    seconds: float = 0.0  # the whole run: read, estimate, link, write
    read_seconds: float = 0.0
    estimate_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # "line 7: ..." (first MAX_ERRORS_KEPT)
    error_count: int = 0
    model: Model | None = None


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _delimiter(header_line: str) -> str:
    """The delimiter the header uses most among , ; tab | (a comma when none)."""
    counts = {d: header_line.count(d) for d in ",;\t|"}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_records(path: Path, source: str = "csv") -> tuple[list[tuple[str, PersonRecord]], list[str]]:
    """(record_id, PersonRecord) per usable row in file order, and "line N: why" for skipped rows."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LinkCsvError(f"cannot read {path}: {exc.strerror or exc}") from None
    text = _decode(data).replace("\x00", "")
    first = next((line for line in text.splitlines() if line.strip()), "")
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(first))
    header: list[str] | None = None
    out: list[tuple[str, PersonRecord]] = []
    errors: list[str] = []
    seen: set[str] = set()
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [_column(c) for c in row]
            if "record_id" not in header:
                raise LinkCsvError(f"{path}: no record_id column in the header (columns: {', '.join(row)}); "
                                   "link-csv needs one to name each row in its output")
            continue
        line = reader.line_num
        values = {h: (row[i] if i < len(row) else "") for i, h in enumerate(header) if h}
        rid = values.get("record_id", "").strip()
        if not rid:
            errors.append(f"line {line}: missing record_id (row skipped)")
            continue
        if rid in seen:
            errors.append(f"line {line}: duplicate record_id {rid!r} (row skipped)")
            continue
        seen.add(rid)
        try:
            out.append((rid, from_row(values, f"{source}|{rid}", source)))
        except Exception as exc:  # standardization never raises by design; a bug must not lose the file
            errors.append(f"line {line}: {type(exc).__name__}: {exc} (row skipped)")
    if header is None:
        raise LinkCsvError(f"{path}: empty file (no header with a record_id column)")
    return out, errors


def _column(name: str) -> str:
    key = name.strip().lstrip("\ufeff").lower().replace(" ", "_").replace("-", "_")
    return ALIASES.get(key, key)


def link_records(model: Model, records: list[PersonRecord],
                 on_progress: Callable[[int], None] | None = None) -> tuple[list[tuple[str, float | None]], LinkStats]:
    """Link records in order, as the stream would; returns (final EUID, score) per record and stats."""
    index = MemoryIndex()
    created: dict[str, int] = {}
    stats = LinkStats()
    decided: list[tuple[str, float | None]] = []
    for n, rec in enumerate(records, 1):
        keys = blocking.keys(rec)
        d = decide(model, rec, index.candidates(keys))
        score = d.matches[0].score if d.matches else None
        if d.outcome == "auto_link" and d.euid is not None:
            euid, merged = index.merge_into_oldest([d.euid, *d.merge_euids], created)
            stats.merges += merged
            stats.links += 1
        else:
            euid = new_euid(rec.record_key)
            created[euid] = n
            stats.reviews += d.outcome == "review"
            stats.unlinkable += d.outcome == "unlinkable"
        index.add(rec, euid, keys)
        decided.append((rec.record_key, score))
        if on_progress is not None and n % 1000 == 0:
            on_progress(1000)
    stats.records = len(records)
    final = [(index.euid_of(rk) or "", s) for rk, s in decided]
    stats.persons = len({e for e, _ in final})
    return final, stats


def link_csv(input: Path, out: Path, *, model_path: Path | None = None, estimate: bool = True,
             progress: bool = False) -> LinkStats:
    """Deduplicate ``input`` into ``out`` (``record_id, euid, score``); see the module docstring."""
    started = time.perf_counter()
    rows, errors = read_records(input)
    records = [r for _, r in rows]
    read = time.perf_counter()
    if model_path is not None:
        try:
            model = Model.load(model_path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LinkCsvError(f"cannot use the model {model_path}: {type(exc).__name__}: {exc}") from None
    elif estimate:
        model = fit(records)
    else:
        model = default_model()
    fitted = time.perf_counter()
    with _progress(progress, len(records)) as advance:
        final, stats = link_records(model, records, advance)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["record_id", "euid", "score"])
        for (rid, _), (euid, score) in zip(rows, final):
            w.writerow([rid, euid, "" if score is None else f"{score:.2f}"])
    stats.errors, stats.error_count = errors[:MAX_ERRORS_KEPT], len(errors)
    stats.model = model
    stats.read_seconds = round(read - started, 3)
    stats.estimate_seconds = round(fitted - read, 3)
    stats.seconds = round(time.perf_counter() - started, 3)
    return stats


class _progress:
    """A rich progress bar on stderr (or nothing); the context value advances it."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self._bar = None

    def __enter__(self) -> Callable[[int], None] | None:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task("linking", total=self.total)
        return lambda k: self._bar.advance(task, k)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def iter_output(path: Path) -> Iterator[dict[str, str]]:
    """The rows of a link-csv output file (for tests and benches)."""
    with open(path, newline="", encoding="utf-8") as fh:
        yield from csv.DictReader(fh)
