"""Silver at rest: Parquet files per resource type and event day, readable without carelake.

The lake is a local folder or an S3 prefix (``CARELAKE_LAKE_URI``; see ``open_lake``), reached through
``pyarrow.fs``. Layout under the lake's root::

    silver/<ResourceType>/day=<yyyy-mm-dd>/part-<topic>-<partition>-<first offset>-<last offset>.parquet
    silver/<ResourceType>/day=<yyyy-mm-dd>/rolled-<utc stamp>-<uuid8>-<n>.parquet   (after ``compact``)

Columns: the Silver envelope head (id, resource_type, source, source_patient_key, euid, event_time,
processed_at, version, bronze_key, raw_id, security_labels, resource = the FHIR JSON) plus, for the
types Gold has a fact table for, that table's flattened columns (the rows the Gold path built; never
flattened twice). One Arrow schema per resource type (from ``tables.TABLES``), so files union cleanly.

At-least-once: the runtime calls ``ParquetSink.write`` after the batch's outputs are acknowledged and
before its offsets are committed. Locally each part is written to a hidden temp name, fsync'ed, renamed
to its deterministic name and the folder fsync'ed; on S3 the whole file is uploaded straight to its
deterministic key (an object becomes visible only when its upload completes, so there is no rename).
Either way a committed offset always has its rows stored, and a redelivered batch with the same records
rewrites the same file instead of adding one. A redelivery cut into different batches makes differently
named parts holding the same rows, and compaction briefly shows a rolled file beside its parts:
**readers dedupe by ``id`` keeping the highest ``version``** across a resource type's folder
(``argMax``/``LIMIT 1 BY id``/``QUALIFY row_number() ...``).

Compaction (``compact``, ``compact_all``, and the lake-writer's scheduled ``Compactor``) rolls only
the files it listed when it started and deletes them only after its rolled files are stored, so a
writer adding parts to the same folder meanwhile never loses a row. Locally an flock per folder keeps
two compactions apart; S3 has no lock, so **one compactor per lake**: the running lake-writer's
scheduled one (run ``carelake lake compact`` against S3 only with ``CARELAKE_LAKE_COMPACT_INTERVAL_S=0``
on the service, or while it is stopped).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from prometheus_client import Counter

from carelake.config import Settings
from carelake.errors import CarelakeError, ConfigError, TransientError
from carelake.fsutil import fsync_dir
from carelake_lake_writer.rows import GoldRow
from carelake_lake_writer.tables import FACT_HEAD, FACT_TABLE_OF, TABLES, column_names

log = logging.getLogger("carelake.lake_writer")

SILVER = "silver"
# The envelope columns every Silver file starts with, taken from the silver_resources row.
HEAD = ("id", "resource_type", "source", "source_patient_key", "euid", "event_time", "processed_at", "version",
        "bronze_key", "raw_id", "security_labels", "resource")
_SKIP_FACT = {name for name, _ in FACT_HEAD} | {"resource_type", "version", "inserted_at"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")

COMPACTIONS = Counter("carelake_lake_writer_compactions_total",
                      "Silver Parquet day folders compacted (by the scheduled compactor)", ["resource_type"])
COMPACTED_ROWS = Counter("carelake_lake_writer_compacted_rows_total",
                         "Rows read from the part files the scheduled compactor rolled", ["resource_type"])
COMPACTED_FILES = Counter("carelake_lake_writer_compacted_files_total",
                          "Files the scheduled compactor rolled into larger ones (and deleted)", ["resource_type"])
COMPACTION_ERRORS = Counter("carelake_lake_writer_compaction_errors_total",
                            "Scheduled compactions (of one folder, or a whole run) that failed; retried next run")


@dataclass(frozen=True, slots=True)
class SilverAtRest:
    """One Silver resource for the Parquet lake: where it was consumed, and the rows Gold gets for it."""

    topic: str
    partition: int
    offset: int
    silver: GoldRow  # the silver_resources row
    fact: GoldRow | None  # its fact-table row, if the type has one and it flattened


def lake_root(settings: Settings) -> Path:
    """The default local lake: beside a local Bronze folder when one exists (``<bronze parent>/lake``), else ``<home>/lake``."""
    bronze = settings.bronze
    return bronze.parent / "lake" if bronze.is_dir() else settings.home / "lake"


# ---- where the lake is --------------------------------------------------------------------------

# Markers in pyarrow's S3 error messages ("AWS Error NETWORK_CONNECTION during PutObject ...") of a
# server that is down, slow or briefly refusing: retried. Anything else (no such bucket, access
# denied, bad credentials) is a refusal that retrying will not cure.
_S3_TRANSIENT = ("NETWORK_CONNECTION", "curlCode", "SERVICE_UNAVAILABLE", "SLOW_DOWN", "THROTTLING",
                 "REQUEST_TIMEOUT", "INTERNAL_FAILURE", "REQUEST_TIME_TOO_SKEWED", "HTTP status 500",
                 "HTTP status 502", "HTTP status 503", "HTTP status 504", "Connection refused", "timed out",
                 "Timeout was reached", "Couldn't connect")
_LOCAL_TRANSIENT = (errno.ENOSPC, errno.EDQUOT, errno.EIO)


class Lake:
    """The lake's root on one filesystem: a local folder or ``s3://bucket/prefix``, via ``pyarrow.fs``.

    Paths are filesystem paths (a local absolute path, or ``bucket/key`` on S3). Writes are atomic on
    both: locally temp file + fsync + rename + fsync of the folder; on S3 a single upload of the whole
    file to its final key (visible only once complete). Failures become ``TransientError`` (disk full,
    S3 unreachable: the runtime retries and commits nothing) or ``CarelakeError`` naming the object.
    """

    def __init__(self, fs: pafs.FileSystem, base: str, uri: str, bucket: str | None = None,
                 endpoint: str = "") -> None:
        self.fs, self.base, self.uri, self.bucket, self.endpoint = fs, base.rstrip("/"), uri, bucket, endpoint

    @classmethod
    def local(cls, root: Path | str) -> Lake:
        root = Path(root).expanduser().resolve()
        return cls(pafs.LocalFileSystem(), str(root), str(root))

    @classmethod
    def s3(cls, bucket: str, prefix: str = "", *, endpoint_url: str = "", region: str = "us-east-1",
           access_key_id: str = "", secret_access_key: str = "") -> Lake:
        options: dict[str, Any] = {"region": region or None, "connect_timeout": 5}
        if endpoint_url:
            parts = urlsplit(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
            options.update(endpoint_override=parts.netloc + parts.path.rstrip("/"), scheme=parts.scheme)
        if access_key_id or secret_access_key:
            options.update(access_key=access_key_id, secret_key=secret_access_key)
        prefix = prefix.strip("/")
        uri = f"s3://{bucket}/{prefix}".rstrip("/") + (f" at {endpoint_url}" if endpoint_url else "")
        return cls(pafs.S3FileSystem(**options), f"{bucket}/{prefix}" if prefix else bucket, uri, bucket,
                   endpoint_url)

    @property
    def is_local(self) -> bool:
        return self.bucket is None

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    def path(self, *parts: str) -> str:
        return "/".join((self.base, *parts))

    def folder(self, resource_type: str, day: date | str) -> str:
        return self.path(SILVER, resource_type, f"day={day}")

    # ---- errors ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def errors(self, what: str, path: str) -> Iterator[None]:
        """Map an I/O failure on ``path`` to TransientError (retry) or CarelakeError (refused)."""
        try:
            yield
        except OSError as exc:
            where = f"s3://{path}" + (f" at {self.endpoint}" if self.endpoint else "") if self.bucket else path
            if self.is_local:
                transient = exc.errno in _LOCAL_TRANSIENT
            else:
                transient = any(marker in str(exc) for marker in _S3_TRANSIENT)
            if transient:
                raise TransientError(f"Silver Parquet {what} of {where} failed: {exc}") from exc
            raise CarelakeError(f"Silver Parquet {what} of {where} refused: {exc}") from exc

    def check(self) -> None:
        """At start-up: ConfigError if the lake's bucket does not exist or refuses us (carelake never
        creates it); TransientError if S3 does not answer. A local root is created when first written."""
        if self.is_local:
            return
        try:
            with self.errors("bucket check", self.bucket or ""):
                info = self.fs.get_file_info(self.bucket)
        except TransientError:
            raise
        except CarelakeError as exc:
            raise ConfigError(f"CARELAKE_LAKE_URI={self.uri}: the bucket {self.bucket!r} cannot be used: "
                              f"{exc.__cause__}") from exc
        if info.type == pafs.FileType.NotFound:
            raise ConfigError(f"CARELAKE_LAKE_URI={self.uri}: no bucket {self.bucket!r} on the S3 server; "
                              "create it first (carelake does not create the lake's bucket)")

    # ---- files ----------------------------------------------------------------------------------

    def files(self, under: str, recursive: bool = False) -> list[pafs.FileInfo]:
        """The ``*.parquet`` files under a folder (never the hidden temp files), sorted by path."""
        with self.errors("listing", under):
            infos = self.fs.get_file_info(pafs.FileSelector(under, allow_not_found=True, recursive=recursive))
        return sorted((i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                       and not i.base_name.startswith(".")), key=lambda i: i.path)

    def read(self, path: str) -> pa.Table:
        with self.errors("read", path), self.fs.open_input_file(path) as f:
            return pq.ParquetFile(f).read()

    def write(self, table: pa.Table, path: str) -> int:
        """Store ``table`` at ``path`` all or nothing; its size in bytes."""
        if self.is_local:
            with self.errors("write", path):
                return write_atomic(table, Path(path))
        buffer = pa.BufferOutputStream()  # the whole file first: a failed encode never starts an upload
        pq.write_table(table, buffer, compression="zstd")
        data = buffer.getvalue()
        with self.errors("write", path), self.fs.open_output_stream(path) as out:
            out.write(data)  # visible only when the upload completes at close
        return data.size

    def delete(self, path: str) -> None:
        with self.errors("delete", path):
            try:
                self.fs.delete_file(path)
            except FileNotFoundError:
                pass

    def sync(self, folder: str) -> None:
        """Make deletions in a local folder durable (nothing to do on S3)."""
        if self.is_local:
            with self.errors("fsync", folder):
                fsync_dir(Path(folder))

    @contextlib.contextmanager
    def lock(self, folder: str) -> Iterator[None]:
        """One compaction per local folder at a time (flock). S3 has no lock: one compactor per lake."""
        if not self.is_local:
            yield
            return
        with self.errors("lock", folder):
            f = open(Path(folder) / ".compact.lock", "w")  # noqa: SIM115 - held across the yield
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield


def open_lake(settings: Settings) -> Lake:
    """The lake ``CARELAKE_LAKE_URI`` names: empty = ``lake_root(settings)``; a path (or ``file://``) = that
    folder; ``s3://bucket/prefix`` = S3 with the Bronze S3 settings' endpoint, region and credentials."""
    uri = settings.lake_uri.strip()
    if not uri:
        return Lake.local(lake_root(settings))
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"CARELAKE_LAKE_URI={uri!r}: expected s3://<bucket>[/<prefix>]")
        return Lake.s3(parts.netloc, parts.path, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
                       access_key_id=settings.s3_access_key_id.get_secret_value(),
                       secret_access_key=settings.s3_secret_access_key.get_secret_value())
    if parts.scheme == "file":
        return Lake.local(parts.path)
    if parts.scheme and len(parts.scheme) > 1:  # not a Windows drive letter
        raise ConfigError(f"CARELAKE_LAKE_URI={uri!r}: expected a folder, file:///<folder> or s3://<bucket>[/<prefix>]")
    return Lake.local(uri)


def as_lake(root: Lake | Path | str) -> Lake:
    """A Lake as is; a local folder as a local Lake."""
    return root if isinstance(root, Lake) else Lake.local(root)


# ---- schema -------------------------------------------------------------------------------------

def _arrow_type(kind: str) -> pa.DataType:
    if kind.startswith("Nullable(") or kind.startswith("LowCardinality("):
        return _arrow_type(kind[kind.index("(") + 1:-1])
    if kind.startswith("Array("):
        return pa.list_(_arrow_type(kind[6:-1]))
    if kind.startswith("DateTime64"):
        return pa.timestamp("us", tz="UTC")
    return {"String": pa.string(), "Float64": pa.float64(), "Date32": pa.date32(), "Bool": pa.bool_(),
            "Int32": pa.int32(), "Int64": pa.int64(), "UInt64": pa.uint64()}[kind]


_SILVER_TYPES = dict(TABLES["silver_resources"])
_SCHEMAS: dict[str, pa.Schema] = {}


def schema_of(resource_type: str) -> pa.Schema:
    """The Arrow schema of a resource type's files: the envelope head, then its fact columns."""
    schema = _SCHEMAS.get(resource_type)
    if schema is None:
        fields = [pa.field(name, _arrow_type(_SILVER_TYPES[name])) for name in HEAD]
        table = FACT_TABLE_OF.get(resource_type)
        if table:
            fields += [pa.field(name, _arrow_type(kind)) for name, kind in TABLES[table] if name not in _SKIP_FACT]
        schema = _SCHEMAS[resource_type] = pa.schema(fields)
    return schema


_SILVER_AT = {name: i for i, name in enumerate(column_names("silver_resources"))}
_PLANS: dict[str, list[tuple[bool, int]]] = {}


def _plan(resource_type: str) -> list[tuple[bool, int]]:
    """Per column of the type's schema: (from the fact row?, index in that row's values). The head
    comes from the silver_resources row (the fact row carries the same envelope values)."""
    plan = _PLANS.get(resource_type)
    if plan is None:
        table = FACT_TABLE_OF.get(resource_type)
        fact_at = {name: i for i, name in enumerate(column_names(table))} if table else {}
        plan = _PLANS[resource_type] = [(False, _SILVER_AT[name]) if name in HEAD else (True, fact_at[name])
                                        for name in schema_of(resource_type).names]
    return plan


def to_table(resource_type: str, items: Sequence[SilverAtRest]) -> pa.Table:
    """The items (all of ``resource_type``) as one Arrow table in its schema, built column by column
    (no dict per row: this is a third of the lake-writer's CPU)."""
    schema = schema_of(resource_type)
    columns = []
    for field, (from_fact, i) in zip(schema, _plan(resource_type), strict=True):
        if from_fact:
            values = [item.fact.values[i] if item.fact is not None else None for item in items]
        else:
            values = [item.silver.values[i] for item in items]
        columns.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


_EVENT_TIME, _PROCESSED_AT, _RESOURCE_TYPE = (_SILVER_AT[n] for n in ("event_time", "processed_at", "resource_type"))


def event_day(item: SilverAtRest) -> date:
    """The folder day of a resource: its event time's UTC day, else the day it was processed."""
    moment: datetime = item.silver.values[_EVENT_TIME] or item.silver.values[_PROCESSED_AT]
    return (moment.astimezone(UTC) if moment.tzinfo else moment).date()


# ---- atomic files -------------------------------------------------------------------------------

def write_atomic(table: pa.Table, path: Path) -> int:
    """Write ``table`` to ``path`` all or nothing: a hidden temp file, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # never matched by *.parquet globs
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path.stat().st_size


def day_folder(root: Path, resource_type: str, day: date | str) -> Path:
    return root / SILVER / resource_type / f"day={day}"


# ---- the sink -----------------------------------------------------------------------------------

class ParquetSink:
    """Writes each batch's ``SilverAtRest`` items: one file per (resource type, event day, topic partition)."""

    def __init__(self, root: Lake | Path | str) -> None:
        self.lake = as_lake(root)
        self.root = root

    def prepare(self) -> None:
        """Check the lake can be written (the S3 bucket exists): ConfigError now rather than at a write."""
        self.lake.check()

    def write(self, items: Sequence[SilverAtRest]) -> None:
        groups: dict[tuple[str, date, str, int], list[SilverAtRest]] = defaultdict(list)
        for item in items:
            key = (item.silver.values[_RESOURCE_TYPE], event_day(item), item.topic, item.partition)
            groups[key].append(item)
        for (resource_type, day, topic, partition), group in groups.items():
            offsets = [item.offset for item in group]
            name = f"part-{_UNSAFE.sub('_', topic)}-{partition}-{min(offsets)}-{max(offsets)}.parquet"
            table = to_table(resource_type, group)
            # TransientError (disk full, S3 down) is retried with nothing committed; a refusal stops the service.
            self.lake.write(table, f"{self.lake.folder(_UNSAFE.sub('_', resource_type), day)}/{name}")


class LakeSink:
    """The lake-writer's sink: Gold rows to Gold, then Silver resources to Parquet, before the commit."""

    def __init__(self, gold: Any, parquet: ParquetSink | None) -> None:
        self.gold, self.parquet = gold, parquet

    def prepare(self) -> None:
        self.gold.prepare()
        if self.parquet is not None:
            self.parquet.prepare()

    def write(self, items: Sequence[Any]) -> None:
        at_rest = [item for item in items if isinstance(item, SilverAtRest)]
        rows = [item for item in items if not isinstance(item, SilverAtRest)] if at_rest else items
        if rows:
            self.gold.write(rows)
        if at_rest and self.parquet is not None:
            self.parquet.write(at_rest)


# ---- rolling ------------------------------------------------------------------------------------

def _dedupe(table: pa.Table) -> pa.Table:
    """One row per id: the highest version (ties: any one of the identical copies)."""
    if table.num_rows == 0:
        return table
    table = table.sort_by([("id", "ascending"), ("version", "descending")])
    ids = table.column("id").combine_chunks()
    keep = pc.fill_null(pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)), True)
    return table.filter(pa.concat_arrays([pa.array([True]), keep]))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``'s columns and types (a column an older file lacks becomes nulls)."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def compact(root: Lake | Path | str, resource_type: str, day: str, target_mb: float = 128,
            now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> dict[str, int]:
    """Roll a day folder's part files (and rolled files under half the target) into files of about ``target_mb``.

    Rows are deduplicated by id keeping the highest version. Only the files listed at the start are
    rolled. The rolled files are stored (atomically) under names readers glob *before* the inputs are
    deleted, so a reader never misses a row, nor does a part a writer adds meanwhile; in between a
    reader may see a row twice, which its (id, max version) dedupe absorbs.
    """
    lake = as_lake(root)
    folder = lake.folder(resource_type, day)
    stats = {"inputs": 0, "outputs": 0, "rows_in": 0, "rows_out": 0}
    if lake.is_local and not Path(folder).is_dir():
        return stats
    target = int(target_mb * 1024 * 1024)
    with lake.lock(folder):  # local: one compaction per folder at a time; S3: one compactor per lake
        inputs = [i for i in lake.files(folder) if i.base_name.startswith("part-") or i.size < target // 2]
        if not any(i.base_name.startswith("part-") for i in inputs) and len(inputs) < 2:
            return stats
        schema = schema_of(resource_type)
        merged = pa.concat_tables([_conform(lake.read(i.path), schema) for i in inputs])
        stats.update(inputs=len(inputs), rows_in=merged.num_rows)
        rows = _dedupe(merged)
        size_in = sum(i.size for i in inputs)
        per_file = max(1, int(rows.num_rows * target / max(size_in, 1)) if size_in > target else rows.num_rows)
        stamp = f"{now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        for n, start in enumerate(range(0, rows.num_rows, per_file)):
            lake.write(rows.slice(start, per_file), f"{folder}/rolled-{stamp}-{n:04d}.parquet")
            stats["outputs"] += 1
        stats["rows_out"] = rows.num_rows
        for i in inputs:  # only after every rolled file is stored
            lake.delete(i.path)
        lake.sync(folder)
    log.info("Silver Parquet compacted", extra={"lake": lake.uri, "resource_type": resource_type, "day": day,
                                                **stats})
    return stats


def day_folders(root: Lake | Path | str, day: str | None = None) -> dict[tuple[str, str], list[pafs.FileInfo]]:
    """Every day folder's Parquet files, from one listing: ``(resource type, day) -> files``."""
    lake = as_lake(root)
    base = lake.path(SILVER)
    folders: dict[tuple[str, str], list[pafs.FileInfo]] = defaultdict(list)
    for info in lake.files(base, recursive=True):
        relative = info.path[len(base) + 1:].split("/")
        if len(relative) == 3 and relative[1].startswith("day="):
            folder_day = relative[1].removeprefix("day=")
            if day is None or folder_day == day:
                folders[(relative[0], folder_day)].append(info)
    return dict(sorted(folders.items()))


def compact_all(root: Lake | Path | str, day: str | None = None, target_mb: float = 128,
                min_parts: int = 0, stop: threading.Event | None = None) -> dict[str, dict[str, int]]:
    """Compact every resource type's folder for ``day`` (yyyy-mm-dd), or for every day: ``"<type>/day=<d>" -> stats``.

    ``min_parts``: only folders holding at least that many part files. ``stop``: return between folders once set.
    """
    lake = as_lake(root)
    out: dict[str, dict[str, int]] = {}
    for (resource_type, folder_day), files in day_folders(lake, day).items():
        if stop is not None and stop.is_set():
            break
        if sum(f.base_name.startswith("part-") for f in files) >= min_parts:
            out[f"{resource_type}/day={folder_day}"] = compact(lake, resource_type, folder_day, target_mb)
    return out


class Compactor:
    """The running lake-writer's scheduled compaction: a StreamService ``background`` task.

    Every ``interval_s`` it compacts the day folders holding at least ``min_parts`` part files (into
    files of about ``target_mb``), while the writer keeps adding parts. It is the lake's one compactor
    on S3; locally the per-folder flock also keeps ``carelake lake compact`` apart from it. A failed
    run is logged and counted and tried again at the next interval; it never stops the writer.
    """

    def __init__(self, lake: Lake, interval_s: float = 300, min_parts: int = 8, target_mb: float = 128) -> None:
        self.lake, self.interval_s, self.min_parts, self.target_mb = lake, interval_s, max(1, min_parts), target_mb
        self.runs = 0  # completed runs (tests poll it)

    def run_once(self, stop: threading.Event | None = None) -> dict[str, dict[str, int]]:
        """Compact every folder with enough parts now. A folder that fails is logged, counted and skipped
        (retried next run); S3 or the disk being unavailable (TransientError) ends the run."""
        started, failed = time.monotonic(), 0
        done: dict[str, dict[str, int]] = {}
        for (resource_type, day), files in day_folders(self.lake).items():
            if stop is not None and stop.is_set():
                break
            if sum(f.base_name.startswith("part-") for f in files) < self.min_parts:
                continue
            try:
                stats = compact(self.lake, resource_type, day, self.target_mb)
            except TransientError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. an unreadable file: the other folders still roll
                failed += 1
                COMPACTION_ERRORS.inc()
                log.warning("scheduled compaction of a folder failed; retrying at the next run", extra={
                    "lake": self.lake.uri, "resource_type": resource_type, "day": day,
                    "error": f"{type(exc).__name__}: {exc}"})
                continue
            done[f"{resource_type}/day={day}"] = stats
            if stats["inputs"]:
                COMPACTIONS.labels(resource_type).inc()
                COMPACTED_ROWS.labels(resource_type).inc(stats["rows_in"])
                COMPACTED_FILES.labels(resource_type).inc(stats["inputs"])
        log.info("scheduled compaction run", extra={
            "lake": self.lake.uri, "folders": sum(1 for s in done.values() if s["inputs"]), "failed": failed,
            "files_in": sum(s["inputs"] for s in done.values()), "rows_in": sum(s["rows_in"] for s in done.values()),
            "rows_out": sum(s["rows_out"] for s in done.values()), "seconds": round(time.monotonic() - started, 3)})
        self.runs += 1
        return done

    def __call__(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set (the service stopping); the first run one interval after the start."""
        if self.interval_s <= 0:
            return
        log.info("scheduled compaction started", extra={"lake": self.lake.uri, "interval_s": self.interval_s,
                                                        "min_parts": self.min_parts, "target_mb": self.target_mb})
        while not stop.wait(self.interval_s):
            try:
                self.run_once(stop)
            except Exception as exc:  # noqa: BLE001 - S3 down, a bad file: try again next time, keep writing
                COMPACTION_ERRORS.inc()
                log.warning("scheduled compaction failed; retrying at the next interval",
                            extra={"lake": self.lake.uri, "error": f"{type(exc).__name__}: {exc}"})
