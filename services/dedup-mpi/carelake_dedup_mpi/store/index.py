"""Candidate records from PostgreSQL: the Index protocol over one connection, and a batch's view of it.

Both answer with *surviving* EUIDs only. In the database that holds by construction — a merge
re-points every record of the retired person in the transaction that sets its ``retired_into``
(persons.merge), so ``source_record.euid`` is never a retired EUID and the lookup needs no join to
person; the batch's own merges are followed in memory (BatchIndex.retire).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields

import psycopg

from carelake_dedup_mpi import blocking
from carelake_dedup_mpi.linker import Candidate
from carelake_dedup_mpi.person import PersonRecord

_FIELDS = tuple(f.name for f in fields(PersonRecord))
_OTHER = _FIELDS.index("other_names")


def _column(name: str) -> tuple[str, str]:
    """How the lookup reads one PersonRecord field (and its SQL type, for the oversized rows)."""
    if name in ("record_key", "source"):
        return f"r.{name}", "text"
    if name == "birth_date":
        return "(r.demographics->>'birth_date')::date", "date"
    if name == "other_names":
        return ("CASE WHEN r.demographics->'other_names' <> '[]' "
                "THEN ARRAY(SELECT jsonb_array_elements_text(r.demographics->'other_names')) END", "text[]")
    return f"r.demographics->>'{name}'", "text"


# Index-only scan of blocking_key's primary key per key, at most cap + 1 rows each (the cap is the
# key's pass's, blocking.cap); a key with more records than its cap is dropped before any record is
# read, and reported (a row with a NULL euid); then each distinct record once, with the keys it was
# found under, its EUID and its fields one by one — the server takes the jsonb apart, and binary
# results need no JSON parsing here (40 % less time than demographics as JSON, at ~15,000 candidate
# records a batch of 200 against 1M persons; bench/mpi_link_speed.py). Unlinkable records are never
# indexed, so never candidates.
ROWS_SQL = f"""
WITH hits AS (
    SELECT k.key, k.cap, b.record_key
    FROM unnest(%(keys)s::text[], %(caps)s::int[]) AS k(key, cap)
    CROSS JOIN LATERAL (SELECT b.record_key FROM blocking_key b WHERE b.key = k.key LIMIT k.cap + 1) AS b
), sizes AS (
    SELECT key, count(*) <= min(cap) AS small FROM hits GROUP BY key
), found AS (
    SELECT h.record_key, array_agg(h.key) AS keys
    FROM hits h JOIN sizes s ON s.key = h.key AND s.small
    GROUP BY h.record_key
)
SELECT f.keys, r.euid, {", ".join(_column(n)[0] for n in _FIELDS)}
FROM found f JOIN source_record r ON r.record_key = f.record_key
UNION ALL
SELECT ARRAY[key], NULL, {", ".join(f"NULL::{_column(n)[1]}" for n in _FIELDS)} FROM sizes WHERE NOT small
"""


@dataclass(frozen=True, slots=True)
class IndexRow:
    keys: list[str]  # the asked-for keys this record is indexed under
    record: PersonRecord
    euid: str


class PgIndex:
    """The Index protocol over an open connection (reads in the caller's transaction).

    ``cap(key)`` is the largest block still looked up (blocking.cap: per pass); bigger ones are skipped.
    """

    def __init__(self, conn: psycopg.Connection, cap: Callable[[str], int] = blocking.cap) -> None:
        self.conn, self.cap = conn, cap

    def lookup(self, keys: Iterable[str]) -> tuple[list[IndexRow], set[str]]:
        """Every record indexed under any of ``keys`` (once each), and the keys skipped as oversized;
        one query for all keys."""
        wanted = sorted(set(keys))
        if not wanted:
            return [], set()
        found = self.conn.execute(ROWS_SQL, {"keys": wanted, "caps": [self.cap(k) for k in wanted]},
                                  binary=True).fetchall()
        rows, oversized = [], set()
        for ks, euid, *values in found:
            if euid is None:
                oversized.add(ks[0])
                continue
            values[_OTHER] = tuple(values[_OTHER] or ())
            rows.append(IndexRow(ks, PersonRecord(*values), euid))
        return rows, oversized

    def rows(self, keys: Iterable[str]) -> list[IndexRow]:
        return self.lookup(keys)[0]

    def candidates(self, keys: Sequence[str], exclude: str | None = None) -> list[Candidate]:
        view = BatchIndex()
        view.load(*self.lookup(keys))
        return view.candidates(keys, exclude)


class BatchIndex:
    """One batch's candidates in memory: loaded once from PgIndex.rows, then kept up to date as the
    batch's own records are decided (added, re-keyed) and its merges retire EUIDs."""

    def __init__(self) -> None:
        self._by_key: dict[str, set[str]] = {}
        self._oversized: set[str] = set()
        self._keys_of: dict[str, list[str]] = {}
        self._records: dict[str, PersonRecord] = {}
        self._euid: dict[str, str] = {}
        self._retired: dict[str, str] = {}

    def load(self, rows: Iterable[IndexRow], oversized: Iterable[str] = ()) -> None:
        """Rows from PgIndex.lookup; ``oversized`` keys are never used, not even by the batch's records."""
        self._oversized.update(oversized)
        for row in rows:
            rk = row.record.record_key
            for key in row.keys:
                self._by_key.setdefault(key, set()).add(rk)
            self._keys_of.setdefault(rk, []).extend(row.keys)
            self._records[rk] = row.record
            self._euid[rk] = row.euid

    def add(self, record: PersonRecord, euid: str, keys: Iterable[str]) -> None:
        """Index ``record`` under ``keys`` as a member of ``euid`` (replacing what it had)."""
        self.remove(record.record_key)
        self._records[record.record_key] = record
        self._euid[record.record_key] = euid
        self._keys_of[record.record_key] = list(keys)
        for key in keys:
            self._by_key.setdefault(key, set()).add(record.record_key)

    def remove(self, record_key: str) -> None:
        if self._records.pop(record_key, None) is None:
            return
        self._euid.pop(record_key, None)
        for key in self._keys_of.pop(record_key, ()):
            self._by_key[key].discard(record_key)

    def retire(self, retired: str, survivor: str) -> None:
        """``retired`` merged into ``survivor``: its records now resolve to the survivor."""
        self._retired[retired] = survivor
        for old, into in self._retired.items():
            if into == retired:
                self._retired[old] = survivor

    def resolve(self, euid: str) -> str:
        return self._retired.get(euid, euid)

    def euid_of(self, record_key: str) -> str | None:
        euid = self._euid.get(record_key)
        return None if euid is None else self.resolve(euid)

    def candidates(self, keys: Sequence[str], exclude: str | None = None) -> list[Candidate]:
        found: set[str] = set()
        for key in keys:
            if key not in self._oversized:
                found |= self._by_key.get(key, set())
        found.discard(exclude)  # type: ignore[arg-type]
        return [Candidate(self._records[rk], self.resolve(self._euid[rk])) for rk in sorted(found)]
