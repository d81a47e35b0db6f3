"""Schema migrations of the MPI database: ``migrations/NNNN_name.sql``, applied once each, in order.

Each file runs in its own transaction together with its row in ``mpi_schema_migrations``, under a
session advisory lock, so two processes starting at once apply each migration exactly once.
"""

from __future__ import annotations

import re
from importlib import resources

import psycopg

from carelake.errors import TransientError

_FILE = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
_LOCK = 0x6D70695F6D6967  # "mpi_mig": serializes concurrent migrators


def available() -> list[tuple[str, str]]:
    """Every migration shipped with the package, as (version, sql), oldest first."""
    folder = resources.files("carelake_dedup_mpi.store") / "migrations"
    found = [(m.group(1), f.read_text()) for f in folder.iterdir() if (m := _FILE.fullmatch(f.name))]
    return sorted(found)


def migrate(conn_or_dsn: psycopg.Connection | str) -> list[str]:
    """Apply the migrations this database lacks; returns the versions applied now (empty when current)."""
    if isinstance(conn_or_dsn, str):
        try:
            conn = psycopg.connect(conn_or_dsn, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise TransientError(f"MPI database unreachable: {exc}") from exc
        with conn:
            return _apply(conn)
    return _apply(conn_or_dsn)


def _apply(conn: psycopg.Connection) -> list[str]:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()  # each migration needs a transaction of its own, not the caller's open one
    autocommit = conn.autocommit
    conn.autocommit = True
    applied: list[str] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
    try:
        with conn.transaction():
            conn.execute("CREATE TABLE IF NOT EXISTS mpi_schema_migrations ("
                         " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {row[0] for row in conn.execute("SELECT version FROM mpi_schema_migrations")}
        for version, sql in available():
            if version in done:
                continue
            with conn.transaction():
                conn.execute(sql)
                conn.execute("INSERT INTO mpi_schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
        conn.autocommit = autocommit
    return applied
