"""The Gold sink: each batch's rows, one insert per table, through clickhouse-connect.

The runtime calls ``write`` before it commits the batch's offsets (carelake.stream.runtime). Writes
are idempotent: every table is a ReplacingMergeTree keyed by deterministic ids, so a batch that is
written again after a crash or a retry replaces its own rows. A Gold that cannot be reached (or that
answers with an overload error) raises TransientError: the runtime retries with backoff and commits
nothing meanwhile. Any other Gold error is not retried: it stops the service loudly.

The sink connects lazily: start-up (``prepare``) migrates and checks the schema when Gold answers,
and otherwise leaves it to the first write, so a service started during a Gold outage waits instead
of crash-looping.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from prometheus_client import Counter, Histogram

from carelake.errors import CarelakeError, TransientError
from carelake_lake_writer.gold.migrate import migrate, quote_db
from carelake_lake_writer.gold.schema import check_schema
from carelake_lake_writer.p360 import Refresher, change_rows, touched
from carelake_lake_writer.rows import GoldRow
from carelake_lake_writer.tables import TABLES, column_names, column_types

log = logging.getLogger("carelake.lake_writer")

ROWS = Counter("carelake_lake_writer_rows_total", "Rows inserted into Gold (replays included), by table", ["table"])
INSERT_SECONDS = Histogram("carelake_lake_writer_insert_seconds", "Seconds per Gold insert of one table's rows",
                           buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10))

# ClickHouse error codes worth retrying: overload, timeouts, network, read-only while recovering.
TRANSIENT_CODES = {159, 160, 202, 203, 209, 210, 241, 242, 252, 285, 319, 394, 425, 999, 1002}
_CODE = re.compile(r"code:\s*(\d+)", re.IGNORECASE)


def is_transient(exc: Exception) -> bool:
    """Whether a clickhouse-connect error means "try again later" rather than "this is wrong"."""
    if isinstance(exc, OperationalError):
        return True
    match = _CODE.search(str(exc))
    return bool(match and int(match.group(1)) in TRANSIENT_CODES)


class GoldSink:
    """Writes GoldRow items to ``database``, one insert per table per batch."""

    def __init__(self, connect: Callable[[], Client], database: str, refresher: Refresher | None = None) -> None:
        quote_db(database)  # refuse a bad name now, not at the first write
        self.connect, self.database = connect, database
        self.client: Client | None = None
        self.ready = False
        # Inserts and patient_360_rows refreshes take the refresher's lock: a refresh never runs
        # while a batch is half-written, so its stamp is later than every row it could have read.
        self.refresher = refresher
        self.lock = refresher.lock if refresher is not None else threading.Lock()

    def prepare(self) -> None:
        """Connect, apply pending migrations and check the columns (ConfigError on a mismatch)."""
        try:
            if self.client is None:
                self.client = self.connect()
            if not self.ready:
                applied = migrate(self.client, self.database)
                if applied:
                    log.info("Gold migrated", extra={"database": self.database, "applied": applied})
                check_schema(self.client, self.database)
                self.ready = True
        except (OperationalError, DatabaseError) as exc:
            if is_transient(exc):
                raise TransientError(f"Gold unavailable: {_short(exc)}") from exc
            raise CarelakeError(f"Gold refused the lake-writer's set-up: {_short(exc)}") from exc
        except Exception as exc:  # urllib3/requests errors raised while the client is created
            if isinstance(exc, CarelakeError):
                raise
            raise TransientError(f"Gold unavailable: {type(exc).__name__}: {exc}") from exc

    def write(self, items: Sequence[GoldRow]) -> None:
        self.prepare()
        with self.lock:
            self._write(items)

    def refresh(self) -> int:
        """Rebuild the patient_360_rows of the people written since the last refresh (p360.py)."""
        if self.refresher is None or not self.ready or self.client is None:
            return 0
        try:
            return self.refresher.refresh(self.client, self.database)
        except (OperationalError, DatabaseError) as exc:
            raise (TransientError if is_transient(exc) else CarelakeError)(
                f"patient_360_rows refresh failed: {_short(exc)}") from exc

    def refresh_every(self, interval_s: float) -> Callable[[threading.Event], None]:
        """A background task for the runtime: refresh every ``interval_s`` until the service ends.

        A refresh holds the insert lock, so the pause after one is at least ten times its length:
        while a day loads (a full rebuild takes ~1 s at 6,700 persons) refreshing never takes more
        than a tenth of the writer's time; lookups of people changed meanwhile read the view.
        """
        def run(ended: threading.Event) -> None:
            pause = interval_s
            while not ended.wait(pause):
                started = time.monotonic()
                try:
                    self.refresh()
                except Exception as exc:  # noqa: BLE001 - lookups fall back to the view meanwhile
                    log.warning("patient_360_rows refresh failed; will retry", extra={"error": str(exc)})
                pause = max(interval_s, 10 * (time.monotonic() - started))
            try:  # the service is stopping after its last commit: leave every row fresh
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the next start rebuilds every row anyway
                log.warning("final patient_360_rows refresh failed", extra={"error": str(exc)})
        return run

    def _write(self, items: Sequence[GoldRow]) -> None:
        assert self.client is not None
        who = touched(items)
        by_table: dict[str, list[tuple]] = defaultdict(list)
        # person_changes first: a lookup during the batch already sees these people as changed.
        for item in [*change_rows(who), *items]:
            by_table[item.table].append(item.values)
        now = datetime.now(UTC)
        for table, rows in by_table.items():
            if table not in TABLES:
                raise CarelakeError(f"lake-writer produced rows for unknown Gold table {table!r}")
            data = [(*values, now) for values in rows]
            started = time.perf_counter()
            try:
                self.client.insert(f"{quote_db(self.database)}.`{table}`", data, column_names=column_names(table),
                                   column_type_names=column_types(table))
            except (OperationalError, DatabaseError) as exc:
                if is_transient(exc):
                    raise TransientError(f"Gold insert into {table} failed: {_short(exc)}") from exc
                raise CarelakeError(f"Gold refused the insert into {self.database}.{table}: {_short(exc)}") from exc
            INSERT_SECONDS.observe(time.perf_counter() - started)
            ROWS.labels(table).inc(len(data))
        if self.refresher is not None:
            self.refresher.note(who)


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:500]
