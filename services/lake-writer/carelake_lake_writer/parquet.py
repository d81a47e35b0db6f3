"""Silver at rest: Parquet files per resource type and event day, readable without carelake.

Layout under the lake root (``lake_root``)::

    silver/<ResourceType>/day=<yyyy-mm-dd>/part-<topic>-<partition>-<first offset>-<last offset>.parquet
    silver/<ResourceType>/day=<yyyy-mm-dd>/rolled-<utc stamp>-<uuid8>-<n>.parquet   (after ``compact``)

Columns: the Silver envelope head (id, resource_type, source, source_patient_key, euid, event_time,
processed_at, version, bronze_key, raw_id, security_labels, resource = the FHIR JSON) plus, for the
types Gold has a fact table for, that table's flattened columns (the rows the Gold path built; never
flattened twice). One Arrow schema per resource type (from ``tables.TABLES``), so files union cleanly.

At-least-once: the runtime calls ``ParquetSink.write`` after the batch's outputs are acknowledged and
before its offsets are committed. Each part is written to a hidden temp name, fsync'ed, renamed to its
deterministic name and the folder fsync'ed, so a committed offset always has its rows on disk, and a
redelivered batch with the same records rewrites the same file instead of adding one. A redelivery cut
into different batches makes differently named parts holding the same rows, and compaction briefly
shows a rolled file beside its parts: **readers dedupe by ``id`` keeping the highest ``version``**
across a resource type's folder (``argMax``/``LIMIT 1 BY id``/``QUALIFY row_number() ...``).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from carelake.config import Settings
from carelake.errors import CarelakeError, TransientError
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


@dataclass(frozen=True, slots=True)
class SilverAtRest:
    """One Silver resource for the Parquet lake: where it was consumed, and the rows Gold gets for it."""

    topic: str
    partition: int
    offset: int
    silver: GoldRow  # the silver_resources row
    fact: GoldRow | None  # its fact-table row, if the type has one and it flattened


def lake_root(settings: Settings) -> Path:
    """The lake's root: beside a local Bronze folder when one exists (``<bronze parent>/lake``), else ``<home>/lake``."""
    bronze = settings.bronze
    return bronze.parent / "lake" if bronze.is_dir() else settings.home / "lake"


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


def _row(item: SilverAtRest) -> dict[str, Any]:
    row = dict(zip(column_names("silver_resources"), item.silver.values, strict=False))
    if item.fact is not None:
        row.update(zip(column_names(item.fact.table), item.fact.values, strict=False))
    return row


def event_day(row: dict[str, Any]) -> date:
    """The folder day of a row: its event time's UTC day, else the day it was processed."""
    moment: datetime = row.get("event_time") or row["processed_at"]
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

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, items: Sequence[SilverAtRest]) -> None:
        groups: dict[tuple[str, date, str, int], list[tuple[int, dict]]] = defaultdict(list)
        for item in items:
            row = _row(item)
            groups[(row["resource_type"], event_day(row), item.topic, item.partition)].append((item.offset, row))
        for (resource_type, day, topic, partition), rows in groups.items():
            offsets = [offset for offset, _ in rows]
            name = f"part-{_UNSAFE.sub('_', topic)}-{partition}-{min(offsets)}-{max(offsets)}.parquet"
            schema = schema_of(resource_type)
            table = pa.Table.from_pylist([{f: r.get(f) for f in schema.names} for _, r in rows], schema=schema)
            try:
                write_atomic(table, day_folder(self.root, _UNSAFE.sub("_", resource_type), day) / name)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                    raise TransientError(f"Silver Parquet write failed: {exc}") from exc  # retried, nothing committed
                raise CarelakeError(f"Silver Parquet write under {self.root} failed: {exc}") from exc


class LakeSink:
    """The lake-writer's sink: Gold rows to Gold, then Silver resources to Parquet, before the commit."""

    def __init__(self, gold: Any, parquet: ParquetSink | None) -> None:
        self.gold, self.parquet = gold, parquet

    def prepare(self) -> None:
        self.gold.prepare()

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


def compact(root: Path, resource_type: str, day: str, target_mb: float = 128,
            now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> dict[str, int]:
    """Roll a day folder's part files (and rolled files under the target) into files of about ``target_mb``.

    Rows are deduplicated by id keeping the highest version. The rolled files are written atomically
    under names readers glob *before* the inputs are deleted, so a reader never misses a row; in
    between it may see a row twice, which the reader's (id, max version) dedupe absorbs.
    """
    folder = day_folder(root, resource_type, day)
    stats = {"inputs": 0, "outputs": 0, "rows_in": 0, "rows_out": 0}
    if not folder.is_dir():
        return stats
    target = int(target_mb * 1024 * 1024)
    with open(folder / ".compact.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one compaction per folder at a time
        files = sorted(folder.glob("*.parquet"))
        inputs = [p for p in files if p.name.startswith("part-") or p.stat().st_size < target // 2]
        if not any(p.name.startswith("part-") for p in inputs) and len(inputs) < 2:
            return stats
        schema = schema_of(resource_type)
        merged = pa.concat_tables([_conform(pq.ParquetFile(p).read(), schema) for p in inputs])
        stats.update(inputs=len(inputs), rows_in=merged.num_rows)
        rows = _dedupe(merged)
        size_in = sum(p.stat().st_size for p in inputs)
        per_file = max(1, int(rows.num_rows * target / max(size_in, 1)) if size_in > target else rows.num_rows)
        stamp = f"{now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        for n, start in enumerate(range(0, rows.num_rows, per_file)):
            write_atomic(rows.slice(start, per_file), folder / f"rolled-{stamp}-{n:04d}.parquet")
            stats["outputs"] += 1
        stats["rows_out"] = rows.num_rows
        for p in inputs:  # only after every rolled file is durable
            p.unlink(missing_ok=True)
        fsync_dir(folder)
    log.info("Silver Parquet compacted", extra={"resource_type": resource_type, "day": day, **stats})
    return stats


def compact_all(root: Path, day: str | None = None, target_mb: float = 128) -> dict[str, dict[str, int]]:
    """Compact every resource type's folder for ``day`` (yyyy-mm-dd), or for every day: ``"<type>/day=<d>" -> stats``."""
    out: dict[str, dict[str, int]] = {}
    base = root / SILVER
    if not base.is_dir():
        return out
    for folder in sorted(base.glob(f"*/day={day}" if day else "*/day=*")):
        if folder.is_dir():
            resource_type, folder_day = folder.parent.name, folder.name.removeprefix("day=")
            out[f"{resource_type}/day={folder_day}"] = compact(root, resource_type, folder_day, target_mb)
    return out
