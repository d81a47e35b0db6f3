"""Writes on persons shared by the stream and the operators: locks, merges, moves, golden records.

Lock order, everywhere: advisory locks on blocking and record keys first (stream only), then the
person rows involved, FOR UPDATE in EUID order in one statement, then their records. Everything
that re-points records holds the row locks of both persons, so a person being retired is never
linked to meanwhile.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg

from carelake_dedup_mpi.golden import golden
from carelake_dedup_mpi.person import PersonRecord
from carelake_dedup_mpi.store.bulk import recordset
from carelake_dedup_mpi.store.errors import NotFound
from carelake_dedup_mpi.store.events import Event, event


class Stale(Exception):
    """What a transaction read changed under it (a person was retired meanwhile): run it again."""


def new_euid() -> str:
    return "E" + uuid.uuid4().hex[:12]


def lock_id(text: str) -> int:
    """A stable signed 64-bit advisory lock id for a key."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8, person=b"carelake-mpi").digest(),
                          "big", signed=True)


def lock_keys(conn: psycopg.Connection, texts: Iterable[str]) -> None:
    """Transaction advisory locks on every text, taken in one sorted pass (so never a deadlock)."""
    ids = sorted({lock_id(t) for t in texts})
    if ids:
        conn.execute("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS k", (ids,))


def lock_persons(conn: psycopg.Connection, euids: Iterable[str]) -> dict[str, str | None]:
    """Row-lock the persons (EUID order); returns each one's retired_into. Missing ones are absent."""
    wanted = sorted(set(euids))
    if not wanted:
        return {}
    rows = conn.execute("SELECT euid, retired_into FROM person WHERE euid = ANY(%s) ORDER BY euid FOR UPDATE",
                        (wanted,)).fetchall()
    return dict(rows)


def lock_alive(conn: psycopg.Connection, euids: Iterable[str]) -> None:
    """Row-lock persons that must still exist and be alive; Stale when one was retired meanwhile."""
    wanted = set(euids)
    state = lock_persons(conn, wanted)
    if len(state) != len(wanted) or any(into is not None for into in state.values()):
        raise Stale(f"persons changed meanwhile: {sorted(wanted)}")


def resolve(conn: psycopg.Connection, euid: str) -> str:
    """The surviving EUID of any EUID ever issued; NotFound for one never issued."""
    row = conn.execute("SELECT COALESCE(retired_into, euid) FROM person WHERE euid = %s", (euid,)).fetchone()
    if row is None:
        raise NotFound(f"no person {euid!r}")
    return row[0]


def ages(conn: psycopg.Connection, euids: Iterable[str]) -> dict[str, tuple[datetime, int]]:
    """(created_at, seq) of each person: the smallest is the oldest."""
    rows = conn.execute("SELECT euid, created_at, seq FROM person WHERE euid = ANY(%s)", (sorted(set(euids)),))
    return {euid: (created, seq) for euid, created, seq in rows}


def merge(conn: psycopg.Connection, survivor: str, retired: str, now: datetime, *, decided_by: str,
          outcome: str, rule: str) -> list[Event]:
    """Move every record of ``retired`` to ``survivor`` and retire it; one MERGE event per moved record.

    The caller holds both persons' row locks. Open review items that now ask whether a record
    belongs to its own person are closed as accepted.
    """
    moved = conn.execute("UPDATE source_record SET euid = %s, updated_at = %s WHERE euid = %s RETURNING record_key",
                         (survivor, now, retired)).fetchall()
    with conn.pipeline():
        conn.execute("UPDATE link SET euid = %s WHERE euid = %s", (survivor, retired))
        conn.execute("UPDATE person SET retired_into = %s WHERE retired_into = %s", (survivor, retired))
        conn.execute("UPDATE person SET retired_into = %s, retired_at = %s, updated_at = %s WHERE euid = %s",
                     (survivor, now, now, retired))
        conn.execute(
            "UPDATE review_item ri SET status = 'accepted', decided_by = %(by)s, decided_at = %(now)s "
            "FROM source_record sr WHERE ri.status = 'open' AND sr.record_key = ri.record_key "
            "AND sr.euid = %(s)s "
            "AND (SELECT COALESCE(p.retired_into, p.euid) FROM person p WHERE p.euid = ri.candidate_euid) = %(s)s",
            {"by": decided_by, "now": now, "s": survivor})
    return [event("MERGE", survivor, rk, now, previous_euid=retired, outcome=outcome, rule=rule,
                  decided_by=decided_by) for (rk,) in sorted(moved)]


def refresh_golden(conn: psycopg.Connection, euids: Iterable[str], now: datetime) -> None:
    """Recompute the golden record of each person from its records (one read, one write)."""
    wanted = sorted(set(euids))
    if not wanted:
        return
    members: dict[str, list[tuple[PersonRecord, str]]] = {e: [] for e in wanted}
    rows = conn.execute("SELECT euid, demographics, updated_at FROM source_record "
                        "WHERE euid = ANY(%s) AND demographics IS NOT NULL", (wanted,))
    for euid, demographics, updated_at in rows:
        members[euid].append((PersonRecord.from_json(demographics), updated_at.isoformat()))
    write_golden(conn, {euid: golden(records) for euid, records in members.items()}, now)


def write_golden(conn: psycopg.Connection, values: dict[str, tuple[dict[str, Any], dict[str, Any]]],
                 now: datetime) -> None:
    if not values:
        return
    rows = [{"e": euid, "g": g, "s": src} for euid, (g, src) in sorted(values.items())]
    conn.execute("UPDATE person p SET golden = t.g, golden_sources = t.s, updated_at = %s "
                 "FROM json_to_recordset(%s::json) AS t(e text, g jsonb, s jsonb) WHERE p.euid = t.e",
                 (now, recordset(rows)))


def insert_persons(conn: psycopg.Connection, rows: Sequence[tuple[str, dict, dict]], now: datetime) -> None:
    """New persons (euid, golden, golden_sources), created now, in creation order."""
    if not rows:
        return
    conn.execute("INSERT INTO person (euid, created_at, updated_at, golden, golden_sources) "
                 "SELECT t.e, %s, %s, t.g, t.s FROM json_to_recordset(%s::json) AS t(e text, g jsonb, s jsonb)",
                 (now, now, recordset([{"e": e, "g": g, "s": src} for e, g, src in rows])))
