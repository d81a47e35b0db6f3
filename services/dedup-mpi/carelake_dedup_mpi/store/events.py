"""MPI link events (schemas/avro/mpi_link_event.avsc) as dicts, and their rows in ``mpi_event``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from carelake_dedup_mpi.store.bulk import recordset

Event = dict[str, Any]


def event(event_type: str, euid: str, record_key: str, occurred_at: datetime, *,
          previous_euid: str | None = None, score: float | None = None, outcome: str | None = None,
          rule: str | None = None, decided_by: str = "matcher",
          contributions: Mapping[str, float] | None = None) -> Event:
    """One event with exactly the Avro record's fields; ``event_id`` is a fresh uuid4 hex."""
    return {
        "event_id": uuid.uuid4().hex,
        "event_type": event_type,
        "euid": euid,
        "record_key": record_key,
        "previous_euid": previous_euid,
        "score": None if score is None else float(score),
        "outcome": outcome,
        "rule": rule or None,
        "decided_by": decided_by,
        "contributions": {str(k): float(v) for k, v in (contributions or {}).items()},
        "occurred_at": occurred_at.astimezone(UTC),
    }


def from_row(row: Mapping[str, Any]) -> Event:
    """An event read back from ``mpi_event`` (the columns, not the payload)."""
    return {
        "event_id": row["event_id"], "event_type": row["event_type"], "euid": row["euid"],
        "record_key": row["record_key"], "previous_euid": row["previous_euid"], "score": row["score"],
        "outcome": row["outcome"], "rule": row["rule"], "decided_by": row["decided_by"],
        "contributions": dict(row["contributions"] or {}), "occurred_at": row["occurred_at"].astimezone(UTC),
    }


EVENT_COLUMNS = ("event_id, event_type, euid, record_key, previous_euid, score, outcome, rule, decided_by, "
                 "contributions, occurred_at")

_INSERT = """
WITH written AS (
    INSERT INTO mpi_event (event_id, event_type, euid, record_key, previous_euid, score, outcome, rule,
                           decided_by, contributions, occurred_at, payload)
    SELECT t.event_id, t.event_type, t.euid, t.record_key, t.previous_euid, t.score, t.outcome, t.rule,
           t.decided_by, t.contributions, t.occurred_at, t.payload
    FROM json_to_recordset(%s::json) AS t(event_id text, event_type text, euid text, record_key text,
         previous_euid text, score float8, outcome text, rule text, decided_by text, contributions jsonb,
         occurred_at timestamptz, payload jsonb)
    RETURNING id
)
INSERT INTO mpi_outbox (event_pk) SELECT id FROM written
"""


def insert_events(conn: psycopg.Connection, events: Sequence[Event]) -> None:
    """Append ``events`` to mpi_event (ids in list order) and to the outbox, in one statement."""
    if not events:
        return
    rows = []
    for e in events:
        stored = {**e, "occurred_at": e["occurred_at"].isoformat()}
        rows.append({**stored, "payload": stored})
    conn.execute(_INSERT, (recordset(rows),))
