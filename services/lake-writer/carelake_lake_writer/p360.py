"""patient_360_rows: the patient_360 view kept as a table, refreshed for the people each batch touched.

Why: the view is the one definition of a Patient 360, but computing it for one person costs ~10
aggregations and joins, ~350 ms through the chDB front even when every read is narrowed to the
person's records. A stored row is one read by the sorting key.

How it stays honest (no stale row is ever served):

* The sink notes who each batch touched (:func:`touched`: record keys, EUIDs, and "everyone" when a
  payer/area resource or an area measure arrives) and writes ``person_changes`` rows for them
  *before* the batch's own rows, stamped with the batch's ``inserted_at``.
* The :class:`Refresher` (a background task of the running writer) rebuilds the rows of the people
  noted since its last run, from the view, stamping ``refreshed_at`` after taking the lock every
  insert holds, so every row it could have read was inserted before that stamp.
* A lookup (``queries.patient_360``) serves a stored row only when no ``person_changes`` row of its
  records, of its EUID, or of everyone is newer than the row's ``refreshed_at``; otherwise it reads
  the view. So a crash that loses the refresher's notes costs speed, never correctness, and the
  writer rebuilds every row at its start.

With several writer replicas, each refreshes the people its own batches touched; a lookup's check
still compares against every replica's ``person_changes``, so it stays correct.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from clickhouse_connect.driver import Client
from prometheus_client import Counter, Histogram

from carelake.gold.protocol import sql_string
from carelake_lake_writer.gold.migrate import quote_db
from carelake_lake_writer.queries import CHANGES_TABLE, ROWS_TABLE, keys_of, person_filters
from carelake_lake_writer.rows import GoldRow
from carelake_lake_writer.tables import column_names

log = logging.getLogger("carelake.lake_writer")

SHARED_TYPES = frozenset({"Organization", "Location"})  # payer names and SDOH areas: in everyone's row
CHUNK = 50  # people per incremental refresh statement (the filters list their records in the SQL text)

REFRESHED = Counter("carelake_lake_writer_p360_refreshed_total", "patient_360_rows rebuilt, by kind", ["kind"])
REFRESH_SECONDS = Histogram("carelake_lake_writer_p360_refresh_seconds", "Seconds per patient_360_rows refresh",
                            buckets=(0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30))

_COL = {table: {name: i for i, name in enumerate(column_names(table))}
        for table in ("silver_resources", "euid_map", "observations")}


@dataclass
class Touched:
    """Who some batches touched: record keys, EUIDs, or everyone."""

    keys: set[str] = field(default_factory=set)
    euids: set[str] = field(default_factory=set)
    everyone: bool = False

    def __bool__(self) -> bool:
        return self.everyone or bool(self.keys or self.euids)

    def update(self, other: Touched) -> None:
        self.keys |= other.keys
        self.euids |= other.euids
        self.everyone |= other.everyone


def touched(items: Iterable[GoldRow]) -> Touched:
    """Who a batch's Gold rows touch. Pure. A fact row always comes with its silver_resources row,
    so that row names the record and its stamped EUID; an MPI event names the record, its EUID and
    the EUID it left."""
    out = Touched()
    sr, em, ob = _COL["silver_resources"], _COL["euid_map"], _COL["observations"]
    for item in items:
        v = item.values
        if item.table == "silver_resources":
            if v[sr["resource_type"]] in SHARED_TYPES:
                out.everyone = True
            if v[sr["source_patient_key"]]:
                out.keys.add(v[sr["source_patient_key"]])
            if v[sr["euid"]]:
                out.euids.add(v[sr["euid"]])
        elif item.table == "euid_map":
            out.keys.add(v[em["record_key"]])
            out.euids.update(e for e in (v[em["euid"]], v[em["previous_euid"]]) if e)
        elif (item.table == "observations" and not v[ob["source_patient_key"]]
              and v[ob["category"]] == "social-history"):
            out.everyone = True  # an area measure: any person's SDOH flags may change
    return out


def change_rows(who: Touched) -> list[GoldRow]:
    """The ``person_changes`` rows for who a batch touched (the sink appends ``inserted_at``)."""
    rows = [GoldRow(CHANGES_TABLE, ("record", key)) for key in sorted(who.keys)]
    rows += [GoldRow(CHANGES_TABLE, ("person", euid)) for euid in sorted(who.euids)]
    if who.everyone:
        rows.append(GoldRow(CHANGES_TABLE, ("everyone", "")))
    return rows


# ---- refreshing ---------------------------------------------------------------------------------

def _stamp(at: datetime) -> str:
    """``at`` as a DateTime64(6, 'UTC') literal (microseconds kept: freshness compares them)."""
    return f"toDateTime64({sql_string(at.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f'))}, 6, 'UTC')"


def rebuild_all(client: Client, database: str, at: datetime) -> int:
    """Every person's row from the view; people gone from Gold (merged away) get a deleted row."""
    db = quote_db(database)
    client.command(f"INSERT INTO {db}.{ROWS_TABLE} SELECT *, {_stamp(at)}, 0 FROM {db}.patient_360")
    client.command(f"INSERT INTO {db}.{ROWS_TABLE} (euid, refreshed_at, deleted) SELECT euid, {_stamp(at)}, 1 "
                   f"FROM {db}.{ROWS_TABLE} FINAL WHERE euid NOT IN (SELECT euid FROM {db}.person_records)")
    return int(client.command(f"SELECT count() FROM {db}.{ROWS_TABLE} FINAL"))


def rebuild_people(client: Client, database: str, euids: list[str], at: datetime) -> None:
    """These people's rows from the view, narrowed to their records; an EUID with no records left
    gets a deleted row. The filters go in the statement's SETTINGS (the body), not the URL."""
    db = quote_db(database)
    keys = sorted({k for ks in keys_of(client, database, euids).values() for k in ks})
    settings = f" SETTINGS additional_table_filters = {sql_string(person_filters(database, keys))}" if keys else ""
    people = "[" + ", ".join(sql_string(e) for e in euids) + "]"
    if keys:
        client.command(f"INSERT INTO {db}.{ROWS_TABLE} SELECT *, {_stamp(at)}, 0 FROM {db}.patient_360 "
                       f"WHERE euid IN {people}{settings}")
    client.command(f"INSERT INTO {db}.{ROWS_TABLE} (euid, refreshed_at, deleted) SELECT e, {_stamp(at)}, 1 "
                   f"FROM (SELECT arrayJoin({people}) AS e) WHERE e NOT IN (SELECT euid FROM {db}.person_records)"
                   f"{settings}")


def differences(client: Client, database: str) -> int:
    """Rows of the view not stored plus stored rows not in the view: 0 once a refresh ran with nothing
    written since (for tests and benches; while data flows, stored rows lag by design)."""
    db = quote_db(database)
    view = f"SELECT * FROM {db}.patient_360"
    stored = f"SELECT * EXCEPT (refreshed_at, deleted) FROM {db}.{ROWS_TABLE} FINAL"
    return sum(int(client.command(f"SELECT count() FROM (({a}) EXCEPT ({b}))")) for a, b in ((view, stored), (stored, view)))


def current_euids(client: Client, database: str, keys: Iterable[str]) -> set[str]:
    """The current EUIDs of some record keys (``current_records``)."""
    db = quote_db(database)
    keys = sorted(keys)
    found: set[str] = set()
    for start in range(0, len(keys), 500):  # parameters travel in the URL
        found.update(e for (e,) in client.query(
            f"SELECT DISTINCT euid FROM {db}.current_records WHERE record_key IN {{k:Array(String)}} AND euid != ''",
            parameters={"k": keys[start:start + 500]}).result_rows)
    return found


class Refresher:
    """Notes who batches touched (``note``); ``refresh`` rebuilds their rows (the service calls it on a timer).

    ``lock`` is the sink's: inserts and refreshes never overlap. The first refresh rebuilds every row
    (what a previous process noted and did not refresh is unknown).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending = Touched(everyone=True)
        # Measured costs: a chunk has a fixed cost (~0.5 s through the chDB front on the reference
        # day) and a full rebuild grows with Gold; whichever is cheaper for the people noted runs.
        self.full_seconds = float("inf")
        self.chunk_seconds = 0.0

    def full_is_cheaper(self, people: int) -> bool:
        return -(-people // CHUNK) * self.chunk_seconds >= self.full_seconds

    def note(self, who: Touched) -> None:
        """Called with ``lock`` held, after the batch's inserts."""
        self.pending.update(who)

    def refresh(self, client: Client, database: str, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
        """Rebuild the rows of everyone noted; returns how many people (all rows: their count). Holds ``lock``."""
        with self.lock:
            who, self.pending = self.pending, Touched()
            if not who:
                return 0
            started = time.perf_counter()
            try:
                at = now()  # after the lock: every insert this stamp could miss has finished
                euids = set() if who.everyone else who.euids | current_euids(client, database, who.keys)
                if who.everyone or self.full_is_cheaper(len(euids)):
                    t = time.perf_counter()
                    n, kind = rebuild_all(client, database, at), "all"
                    self.full_seconds = time.perf_counter() - t
                else:
                    ordered = sorted(euids)
                    for start in range(0, len(ordered), CHUNK):
                        t = time.perf_counter()
                        rebuild_people(client, database, ordered[start:start + CHUNK], at)
                        self.chunk_seconds = time.perf_counter() - t
                    n, kind = len(ordered), "people"
            except BaseException:
                self.pending.update(who)  # try again next time
                raise
            REFRESHED.labels(kind).inc(n)
            REFRESH_SECONDS.observe(time.perf_counter() - started)
            log.info("patient_360_rows refreshed", extra={"kind": kind, "people": n,
                                                          "seconds": round(time.perf_counter() - started, 3)})
            return n
