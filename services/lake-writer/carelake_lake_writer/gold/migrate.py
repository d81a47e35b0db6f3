"""Versioned Gold DDL: ``sql/NNNN_name.sql`` applied in order, recorded in ``schema_migrations``.

Each file is a list of statements separated by ``;`` at the end of a line (the Gold front takes
one statement per request); ``{db}`` stands for the target database. Every statement is written
to be re-runnable (``IF NOT EXISTS``), so a migration interrupted half-way is simply applied again.
A migration already recorded with a different checksum means its file was edited after it ran:
that is refused (add a new file instead).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clickhouse_connect.driver import Client

from carelake.errors import ConfigError

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def quote_db(database: str) -> str:
    """The database name, backquoted; only plain identifiers are accepted (it is pasted into DDL)."""
    if not _IDENT.match(database):
        raise ConfigError(f"Gold database name {database!r} must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return f"`{database}`"


def migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    found = []
    for path in sorted(sql_dir.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ConfigError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ConfigError(f"two migrations share a version number in {sql_dir}")
    return found


def statements(text: str, database: str) -> list[str]:
    """The file's statements with ``{db}`` filled in: comment lines dropped, split at ``;`` line ends."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    body = body.replace("{db}", quote_db(database))
    return [s.strip() for s in re.split(r";\s*$", body, flags=re.MULTILINE) if s.strip()]


def migrate(client: Client, database: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Create ``database`` if needed and apply every migration not yet recorded; returns those applied."""
    db = quote_db(database)
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, checksum String, "
        "applied_at DateTime64(3, 'UTC')) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {int(v): c for v, c in client.query(
        f"SELECT version, argMax(checksum, applied_at) FROM {db}.schema_migrations GROUP BY version").result_rows}
    applied = []
    for m in migrations(sql_dir):
        if m.version in done:
            if done[m.version] != m.checksum:
                raise ConfigError(f"migration {m.path.name} was changed after it was applied to {database}; "
                                  "add a new migration instead of editing an applied one")
            continue
        for statement in statements(m.text, database):
            client.command(statement)
        client.insert(f"{db}.schema_migrations", [[m.version, m.name, m.checksum, datetime.now(UTC)]],
                      column_names=["version", "name", "checksum", "applied_at"])
        applied.append(m.path.name)
    return applied
