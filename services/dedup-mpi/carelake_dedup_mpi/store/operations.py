"""What data stewards (and sources' merge messages) do to the index, each in the caller's transaction.

Every function that moves records locks the persons involved first (persons.lock_persons), then
re-reads what it decided on: when it changed meanwhile it raises Stale and the store runs it again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from carelake_dedup_mpi.store import linking, persons
from carelake_dedup_mpi.store.errors import Conflict, NotFound
from carelake_dedup_mpi.store.events import EVENT_COLUMNS, Event, event, from_row, insert_events

_RECORDS_SQL = """
SELECT r.record_key, r.source, r.demographics, r.unlinkable, r.first_seen, r.updated_at,
       l.score, l.outcome, l.rule, l.contributions, l.decided_by, l.decided_at
FROM source_record r JOIN link l ON l.record_key = r.record_key
WHERE r.euid = %s ORDER BY r.record_key
"""

_QUEUE_SQL = """
SELECT ri.id, ri.record_key, sr.euid AS record_euid, cp.euid AS candidate_euid, ri.score, ri.contributions,
       ri.created_at, sr.demographics, cp.golden AS candidate_golden
FROM review_item ri
JOIN source_record sr ON sr.record_key = ri.record_key
JOIN person p ON p.euid = ri.candidate_euid
JOIN person cp ON cp.euid = COALESCE(p.retired_into, p.euid)
WHERE ri.status = 'open'
ORDER BY ri.id LIMIT %s OFFSET %s
"""


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def person(conn: psycopg.Connection, euid: str) -> dict[str, Any]:
    """The person's golden record, every linked record with its link, and its merge history."""
    survivor = persons.resolve(conn, euid)
    cur = conn.cursor(row_factory=dict_row)
    p = cur.execute("SELECT euid, created_at, golden, golden_sources, updated_at FROM person WHERE euid = %s",
                    (survivor,)).fetchone()
    records = cur.execute(_RECORDS_SQL, (survivor,)).fetchall()
    merged = cur.execute("SELECT euid, retired_at FROM person WHERE retired_into = %s ORDER BY retired_at, euid",
                         (survivor,)).fetchall()
    history = cur.execute(f"SELECT {EVENT_COLUMNS} FROM mpi_event WHERE event_type IN ('MERGE', 'UNMERGE') "
                          "AND (euid = %s OR previous_euid = %s) ORDER BY id", (survivor, survivor)).fetchall()
    for r in records:
        for col in ("first_seen", "updated_at", "decided_at"):
            r[col] = _utc(r[col])
    return {
        "euid": survivor, "requested": euid, "created_at": _utc(p["created_at"]), "updated_at": _utc(p["updated_at"]),
        "golden": p["golden"], "golden_sources": p["golden_sources"], "records": records,
        "merged_from": [{"euid": m["euid"], "retired_at": _utc(m["retired_at"])} for m in merged],
        "merge_history": [from_row(h) for h in history],
    }


def lookup(conn: psycopg.Connection, record_key: str) -> str:
    row = conn.execute("SELECT r.euid FROM source_record r WHERE r.record_key = %s", (record_key,)).fetchone()
    if row is None:
        raise NotFound(f"no record {record_key!r}")
    return row[0]


def euids(conn: psycopg.Connection, record_keys: list[str]) -> dict[str, str]:
    rows = conn.execute("SELECT r.record_key, COALESCE(p.retired_into, r.euid) FROM source_record r "
                        "JOIN person p ON p.euid = r.euid WHERE r.record_key = ANY(%s)", (record_keys,))
    return dict(rows.fetchall())


def review_queue(conn: psycopg.Connection, limit: int, offset: int) -> list[dict[str, Any]]:
    """Open review items, oldest first, with the record's demographics and the candidate's golden record."""
    rows = conn.cursor(row_factory=dict_row).execute(_QUEUE_SQL, (limit, offset)).fetchall()
    for r in rows:
        r["created_at"] = _utc(r["created_at"])
    return rows


def events(conn: psycopg.Connection, euid: str) -> list[Event]:
    """Every event that named ``euid`` (as the person, or as the previous one), oldest first."""
    persons.resolve(conn, euid)  # NotFound for an EUID never issued
    rows = conn.cursor(row_factory=dict_row).execute(
        f"SELECT {EVENT_COLUMNS} FROM mpi_event WHERE euid = %s OR previous_euid = %s ORDER BY id", (euid, euid))
    return [from_row(r) for r in rows]


def _review_item(conn: psycopg.Connection, item_id: int, lock: bool = False) -> tuple[str, str, float | None, dict]:
    row = conn.execute("SELECT record_key, candidate_euid, score, contributions, status FROM review_item "
                       "WHERE id = %s" + (" FOR UPDATE" if lock else ""), (item_id,)).fetchone()
    if row is None:
        raise NotFound(f"no review item {item_id}")
    if row[4] != "open":
        raise Conflict(f"review item {item_id} was already {row[4]}")
    return row[0], row[1], row[2], row[3]


def accept_review(conn: psycopg.Connection, item_id: int, operator: str, now: datetime) -> dict[str, Any]:
    """The record belongs to the candidate: its person merges into the candidate's (the candidate survives)."""
    record_key, candidate, score, contributions = _review_item(conn, item_id)
    mine, theirs = lookup(conn, record_key), persons.resolve(conn, candidate)
    persons.lock_alive(conn, {mine, theirs})
    _review_item(conn, item_id, lock=True)
    if lookup(conn, record_key) != mine:
        raise persons.Stale("the record moved meanwhile")
    out: list[Event] = []
    if mine != theirs:
        out = persons.merge(conn, theirs, mine, now, decided_by=operator, outcome="manual", rule="review_accept")
        persons.refresh_golden(conn, [theirs], now)
    conn.execute("UPDATE link SET score = %s, outcome = 'manual', rule = 'review_accept', contributions = %s, "
                 "decided_by = %s, decided_at = %s WHERE record_key = %s",
                 (score, psycopg.types.json.Jsonb(contributions), operator, now, record_key))
    conn.execute("UPDATE review_item SET status = 'accepted', decided_by = %s, decided_at = %s WHERE id = %s",
                 (operator, now, item_id))
    insert_events(conn, out)
    return {"review_id": item_id, "status": "accepted", "euid": theirs, "events": out}


def reject_review(conn: psycopg.Connection, item_id: int, operator: str, now: datetime) -> dict[str, Any]:
    """The record is not the candidate: the item is closed; nothing moves."""
    _review_item(conn, item_id, lock=True)
    conn.execute("UPDATE review_item SET status = 'rejected', decided_by = %s, decided_at = %s WHERE id = %s",
                 (operator, now, item_id))
    return {"review_id": item_id, "status": "rejected", "events": []}


def merge(conn: psycopg.Connection, survivor: str, retired: str, decided_by: str, now: datetime, *,
          rule: str = "operator_merge") -> list[Event]:
    """Every record of ``retired``'s person moves to ``survivor``'s; Conflict when they are one person already."""
    s, r = persons.resolve(conn, survivor), persons.resolve(conn, retired)
    if s == r:
        raise Conflict(f"{survivor} and {retired} are one person already ({s})")
    persons.lock_alive(conn, {s, r})
    out = persons.merge(conn, s, r, now, decided_by=decided_by, outcome="manual", rule=rule)
    persons.refresh_golden(conn, [s], now)
    insert_events(conn, out)
    return out


def merge_records(conn: psycopg.Connection, surviving_key: str, retired_key: str, decided_by: str,
                  now: datetime) -> list[Event]:
    """A source merged two of its registrations (HL7 A40): the retired key's person joins the surviving
    key's. Either key is registered (unlinkable, no demographics yet) when unknown."""
    if surviving_key == retired_key:
        return []
    out = linking.ensure(conn, [surviving_key, retired_key], now, rule="source-merge")
    insert_events(conn, out)
    found = euids(conn, [surviving_key, retired_key])
    s, r = found[surviving_key], found[retired_key]
    if s == r:
        return out
    persons.lock_alive(conn, {s, r})
    moved = persons.merge(conn, s, r, now, decided_by=decided_by, outcome="manual", rule="source_merge")
    persons.refresh_golden(conn, [s], now)
    insert_events(conn, moved)
    return out + moved


def unmerge(conn: psycopg.Connection, record_key: str, operator: str, now: datetime) -> dict[str, Any]:
    """Move one record out of its person: back to the person a merge took it from (revived if retired),
    or to a new person when it never came by a merge. Conflict when it is its person's only record."""
    current = lookup(conn, record_key)
    row = conn.execute("SELECT previous_euid FROM mpi_event WHERE euid = %s AND record_key = %s "
                       "AND event_type = 'MERGE' ORDER BY id DESC LIMIT 1", (current, record_key)).fetchone()
    previous = row[0] if row and row[0] != current else None
    state = persons.lock_persons(conn, {current} | ({previous} if previous else set()))
    if state.get(current, "gone") is not None or lookup(conn, record_key) != current:
        raise persons.Stale("the record or its person changed meanwhile")
    (members,) = conn.execute("SELECT count(*) FROM source_record WHERE euid = %s", (current,)).fetchone()
    if members < 2:
        raise Conflict(f"{record_key} is the only record of {current}; there is nothing to unmerge")
    if previous is not None:
        target = previous
        conn.execute("UPDATE person SET retired_into = NULL, retired_at = NULL, updated_at = %s WHERE euid = %s",
                     (now, target))
    else:
        target = persons.new_euid()
        persons.insert_persons(conn, [(target, {}, {})], now)
    conn.execute("UPDATE source_record SET euid = %s, updated_at = %s WHERE record_key = %s", (target, now, record_key))
    conn.execute("UPDATE link SET euid = %s, score = NULL, outcome = 'manual', rule = 'unmerge', contributions = '{}', "
                 "decided_by = %s, decided_at = %s WHERE record_key = %s", (target, operator, now, record_key))
    persons.refresh_golden(conn, [current, target], now)
    out = [event("UNMERGE", target, record_key, now, previous_euid=current, outcome="manual", rule="unmerge",
                 decided_by=operator)]
    insert_events(conn, out)
    return {"record_key": record_key, "euid": target, "previous_euid": current, "events": out}
