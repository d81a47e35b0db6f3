"""MpiStore: the master patient index in PostgreSQL, for the stream and for data stewards.

Every public method is one transaction on a pooled connection. A transaction that lost a race
(a person it decided on was retired meanwhile, or PostgreSQL chose it as a deadlock victim) runs
again, up to ``attempts`` times; a database that cannot be reached raises TransientError, so the
stream runtime retries the batch without committing offsets.

Operator methods take the operator's id and write one ``audit`` row per call, reads included,
in the same transaction as what they did (a refused call is audited too, with its error).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from carelake.errors import TransientError
from carelake_dedup_mpi import blocking, linker
from carelake_dedup_mpi.person import PersonRecord
from carelake_dedup_mpi.store import linking, operations, persons
from carelake_dedup_mpi.store.errors import Invalid, MpiError
from carelake_dedup_mpi.store.events import Event, insert_events
from carelake_dedup_mpi.store.migrate import migrate

log = logging.getLogger("carelake.dedup_mpi.store")

T = TypeVar("T")
_OPERATOR = re.compile(r"[\w.@:+-]{1,120}")
_RETRY = (persons.Stale, psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise Invalid("now must be timezone-aware")
    return now.astimezone(UTC)


class MpiStore:
    """The PostgreSQL index over a connection pool (``open`` builds one; ``close`` closes it).

    ``keys``, ``cap`` and ``decide`` are the matcher's blocking keys, per-key block caps and decision,
    injectable for tests and benchmarks.
    """

    def __init__(self, pool: ConnectionPool, model: Any, *, keys: linking.Keys = blocking.keys,
                 decide: linking.Decide = linker.decide, cap: Callable[[str], int] = blocking.cap,
                 attempts: int = 5) -> None:
        self.pool, self.model, self.keys, self.decide, self.cap = pool, model, keys, decide, cap
        self.attempts = attempts

    @classmethod
    def open(cls, dsn: str, model: Any, *, min_size: int = 1, max_size: int = 4, timeout: float = 10.0,
             run_migrations: bool = True, **options: Any) -> "MpiStore":
        """A store on a new pool; migrates the database first unless told not to."""
        pool = ConnectionPool(dsn, min_size=min_size, max_size=max_size, timeout=timeout, open=True,
                              kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))},
                              name="mpi")
        store = cls(pool, model, **options)
        if run_migrations:
            try:
                with store._connection() as conn:
                    migrate(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                pool.close()
                raise TransientError(f"MPI database unavailable: {exc}") from exc
            except BaseException:
                pool.close()
                raise
        return store

    def close(self) -> None:
        self.pool.close()

    # ---- transactions ---------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        try:
            with self.pool.connection() as conn:
                yield conn
        except (PoolTimeout, PoolClosed) as exc:
            raise TransientError(f"MPI database unavailable: {exc}") from exc

    def _run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """``work`` in one transaction, run again when it lost a race; outages as TransientError."""
        for attempt in range(1, self.attempts + 1):
            try:
                with self._connection() as conn, conn.transaction():
                    return work(conn)
            except _RETRY as exc:
                if attempt == self.attempts:
                    raise TransientError(f"MPI transaction kept losing races: {exc}") from exc
                log.info("retrying an MPI transaction", extra={"attempt": attempt, "why": str(exc)})
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                raise TransientError(f"MPI database error: {exc}") from exc
        raise AssertionError("unreachable")

    def _audited(self, operator: str, action: str, target: str | None,
                 work: Callable[[psycopg.Connection, datetime], T], detail: Callable[[T], dict] | None = None) -> T:
        """``work`` plus its audit row in one transaction; a refusal (MpiError) is audited, then raised."""
        if not isinstance(operator, str) or not _OPERATOR.fullmatch(operator):
            raise Invalid("an operator id (letters, digits, . _ @ : + -, at most 120) is required")

        def audited(conn: psycopg.Connection) -> tuple[T | None, MpiError | None]:
            now = datetime.now(UTC)
            result: T | None = None
            error: MpiError | None = None
            try:
                with conn.transaction():
                    result = work(conn, now)
            except MpiError as exc:
                error = exc
            note = {"error": error.code, "detail": error.detail} if error else (detail(result) if detail else {})
            conn.execute("INSERT INTO audit (who, action, target, at, detail) VALUES (%s, %s, %s, %s, %s)",
                         (operator, action, target, now, json.dumps(note, default=str)))
            return result, error

        result, error = self._run(audited)
        if error is not None:
            raise error
        return result  # type: ignore[return-value]

    # ---- the stream ---------------------------------------------------------------------------

    def link(self, records: Sequence[PersonRecord], now: datetime) -> list[Event]:
        """Link a batch of source records in one transaction; the events, in order (see linking.py)."""
        when = _now(now)
        if not records:
            return []

        def work(conn: psycopg.Connection) -> list[Event]:
            batch = linking.Batch(conn, when, model=self.model, keys=self.keys, decide=self.decide, cap=self.cap)
            batch.decide_all(records)
            out = batch.apply()
            insert_events(conn, out)
            return out

        return self._run(work)

    def ensure(self, record_keys: Sequence[str], now: datetime) -> list[Event]:
        """Register keys seen without demographics as unlinkable persons of their own (when unknown)."""
        when = _now(now)

        def work(conn: psycopg.Connection) -> list[Event]:
            out = linking.ensure(conn, record_keys, when)
            insert_events(conn, out)
            return out

        return self._run(work) if record_keys else []

    def euids(self, record_keys: Sequence[str]) -> dict[str, str]:
        """The current (surviving) EUID of each known key; unknown keys are absent."""
        if not record_keys:
            return {}
        return self._run(lambda conn: operations.euids(conn, list(record_keys)))

    def merge_records(self, surviving_key: str, retired_key: str, decided_by: str, now: datetime) -> list[Event]:
        """A source's merge (HL7 A40): the retired key's person merges into the surviving key's."""
        when = _now(now)
        return self._run(lambda conn: operations.merge_records(conn, surviving_key, retired_key, decided_by, when))

    def unpublished(self, limit: int = 5000) -> list[Event]:
        """Events not yet marked published (the outbox), oldest first."""
        def work(conn: psycopg.Connection) -> list[Event]:
            rows = conn.execute("SELECT e.payload FROM mpi_outbox o JOIN mpi_event e ON e.id = o.event_pk "
                                "ORDER BY o.event_pk LIMIT %s", (limit,)).fetchall()
            return [{**p, "occurred_at": datetime.fromisoformat(p["occurred_at"])} for (p,) in rows]

        return self._run(work)

    def mark_published(self, event_ids: Sequence[str]) -> None:
        """Take events off the outbox once the broker has acknowledged them."""
        if event_ids:
            self._run(lambda conn: conn.execute(
                "DELETE FROM mpi_outbox o USING mpi_event e WHERE e.id = o.event_pk AND e.event_id = ANY(%s)",
                (list(event_ids),)))

    # ---- operators (each audited) ---------------------------------------------------------------

    def person(self, euid: str, operator: str) -> dict[str, Any]:
        """Golden record, linked records with their links, merge history (a retired EUID answers with
        its survivor; ``requested`` keeps what was asked)."""
        return self._audited(operator, "person", euid, lambda conn, now: operations.person(conn, euid),
                             lambda r: {"euid": r["euid"], "records": len(r["records"])})

    def lookup(self, record_key: str, operator: str) -> str:
        return self._audited(operator, "lookup", record_key, lambda conn, now: operations.lookup(conn, record_key),
                             lambda euid: {"euid": euid})

    def review_queue(self, limit: int, offset: int, operator: str) -> list[dict[str, Any]]:
        if not (1 <= limit <= 1000 and offset >= 0):
            raise Invalid("limit must be 1..1000 and offset >= 0")
        return self._audited(operator, "review_queue", None,
                             lambda conn, now: operations.review_queue(conn, limit, offset),
                             lambda rows: {"limit": limit, "offset": offset, "ids": [r["id"] for r in rows]})

    def accept_review(self, item_id: int, operator: str) -> dict[str, Any]:
        return self._audited(operator, "accept_review", str(item_id),
                             lambda conn, now: operations.accept_review(conn, item_id, operator, now), _summary)

    def reject_review(self, item_id: int, operator: str) -> dict[str, Any]:
        return self._audited(operator, "reject_review", str(item_id),
                             lambda conn, now: operations.reject_review(conn, item_id, operator, now), _summary)

    def merge(self, survivor: str, retired: str, operator: str) -> list[Event]:
        """An operator's merge: every record of ``retired``'s person moves to ``survivor``'s."""
        return self._audited(operator, "merge", f"{retired}->{survivor}",
                             lambda conn, now: operations.merge(conn, survivor, retired, operator, now),
                             lambda out: {"events": len(out)})

    def unmerge(self, record_key: str, operator: str) -> dict[str, Any]:
        """Move one record out of its person (back where a merge took it from, else a new person)."""
        return self._audited(operator, "unmerge", record_key,
                             lambda conn, now: operations.unmerge(conn, record_key, operator, now), _summary)

    def events(self, euid: str, operator: str) -> list[Event]:
        return self._audited(operator, "events", euid, lambda conn, now: operations.events(conn, euid),
                             lambda out: {"events": len(out)})

    def open_reviews(self) -> int:
        """How many review items wait for a data steward (a metric: no PHI, not audited)."""
        return int(self._run(lambda conn: conn.execute(
            "SELECT count(*) FROM review_item WHERE status = 'open'").fetchone()[0]))


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "events"} | {"events": len(result.get("events", ()))}
