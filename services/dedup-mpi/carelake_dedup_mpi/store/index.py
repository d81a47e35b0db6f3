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


# Two reads. First the blocks: an index-only scan of blocking_key's primary key per key, at most
# cap + 1 record keys each (the cap is the key's pass's, blocking.cap) — a key with more records than
# its cap is oversized and never used. No record is read yet: which of the found records are worth
# scoring is decided in Python by blocking.select, the rule MemoryIndex applies too (two evidence
# groups or one specific key shared with an arriving record), and only those are read — each once,
# its fields taken out of the jsonb one by one on the server, binary results (no JSON parsing here).
# At 1M persons that reads ~5 records an arriving record instead of ~80 (bench/mpi_link_speed.py).
# Unlinkable records are never indexed, so never candidates.
BLOCKS_SQL = """
SELECT k.key, ARRAY(SELECT b.record_key FROM blocking_key b WHERE b.key = k.key LIMIT k.cap + 1)
FROM unnest(%(keys)s::text[], %(caps)s::int[]) AS k(key, cap)
"""
RECORDS_SQL = f"""
SELECT r.euid, {", ".join(_column(n)[0] for n in _FIELDS)}
FROM source_record r WHERE r.record_key = ANY(%(records)s::text[])
"""


@dataclass(frozen=True, slots=True)
class IndexRow:
    keys: list[str]  # the asked-for keys this record is indexed under
    record: PersonRecord
    euid: str


@dataclass(slots=True)
class Found:
    """What one lookup found: the blocks of the asked keys, the records read, the oversized keys."""

    blocks: dict[str, list[str]]  # key -> every record key under it (oversized keys left out)
    rows: list[IndexRow]  # the records read (see PgIndex.fetch)
    oversized: set[str]


class PgIndex:
    """The Index protocol over an open connection (reads in the caller's transaction).

    ``cap(key)`` is the largest block still looked up (blocking.cap: per pass); bigger ones are skipped.
    """

    def __init__(self, conn: psycopg.Connection, cap: Callable[[str], int] = blocking.cap) -> None:
        self.conn, self.cap = conn, cap

    def fetch(self, keys: Iterable[str], queries: Iterable[Sequence[str]] | None = None) -> Found:
        """The blocks of ``keys`` and the records in them worth scoring against at least one of
        ``queries`` (each the keys of one arriving record; blocking.select) — every record found
        when ``queries`` is None. Two queries whatever the number of keys."""
        return self.read(*self.blocks(keys)(), queries)

    def blocks(self, keys: Iterable[str]) -> Callable[[], tuple[dict[str, list[str]], set[str]]]:
        """Send the blocks query for ``keys`` now (it can ride in the caller's pipeline); the
        returned function gives (blocks, oversized keys) once its result is in."""
        wanted = sorted(set(keys))
        if not wanted:
            return lambda: ({}, set())
        cur = self.conn.execute(BLOCKS_SQL, {"keys": wanted, "caps": [self.cap(k) for k in wanted]}, binary=True)

        def result() -> tuple[dict[str, list[str]], set[str]]:
            blocks: dict[str, list[str]] = {}
            oversized: set[str] = set()
            for key, members in cur.fetchall():
                if len(members) > self.cap(key):
                    oversized.add(key)
                elif members:
                    blocks[key] = members
            return blocks, oversized

        return result

    def read(self, blocks: dict[str, list[str]], oversized: set[str],
             queries: Iterable[Sequence[str]] | None = None) -> Found:
        """The records of ``blocks`` worth scoring against at least one of ``queries`` (all when None)."""
        if queries is None:
            chosen = {rk for members in blocks.values() for rk in members}
        else:
            chosen = set()
            for q in queries:
                chosen.update(blocking.select(q, blocks.get))
        rows: list[IndexRow] = []
        if chosen:
            keys_of: dict[str, list[str]] = {rk: [] for rk in chosen}
            for key, members in blocks.items():
                for rk in chosen.intersection(members):
                    keys_of[rk].append(key)
            for euid, *values in self.conn.execute(RECORDS_SQL, {"records": sorted(chosen)}, binary=True):
                values[_OTHER] = tuple(values[_OTHER] or ())
                record = PersonRecord(*values)
                rows.append(IndexRow(keys_of[record.record_key], record, euid))
        return Found(blocks, rows, oversized)

    def lookup(self, keys: Iterable[str]) -> tuple[list[IndexRow], set[str]]:
        """Every record indexed under any of ``keys`` (once each), and the keys skipped as oversized."""
        found = self.fetch(keys)
        return found.rows, found.oversized

    def rows(self, keys: Iterable[str]) -> list[IndexRow]:
        return self.lookup(keys)[0]

    def candidates(self, keys: Sequence[str], exclude: str | None = None) -> list[Candidate]:
        view = BatchIndex()
        view.load_found(self.fetch(keys, [keys]))
        return view.candidates(keys, exclude)


class BatchIndex:
    """One batch's candidates in memory: loaded once from PgIndex.fetch, then kept up to date as the
    batch's own records are decided (added, re-keyed) and its merges retire EUIDs.

    Block membership is known for every record found (so block sizes are exact for blocking.select),
    fields only for the records read; candidates are the read ones blocking.select keeps. The
    database's blocks are kept as read; the batch's changes are layered on top (records added under
    a key, records gone from the blocks they were read under)."""

    def __init__(self) -> None:
        self._db: dict[str, list[str]] = {}  # key -> record keys, as read
        self._found: set[str] = set()  # every record in _db's blocks
        self._gone: set[str] = set()  # records of _db removed (or re-keyed) since: not in its blocks any more
        self._extra: dict[str, list[str]] = {}  # key -> records the batch added under it
        self._oversized: set[str] = set()
        self._keys_of: dict[str, list[str]] = {}  # record added by the batch -> its keys
        self._records: dict[str, PersonRecord] = {}
        self._euid: dict[str, str] = {}
        self._retired: dict[str, str] = {}

    def load(self, rows: Iterable[IndexRow], oversized: Iterable[str] = ()) -> None:
        """Rows from PgIndex.lookup; ``oversized`` keys are never used, not even by the batch's records."""
        blocks: dict[str, list[str]] = {}
        found = []
        for row in rows:
            for key in row.keys:
                blocks.setdefault(key, []).append(row.record.record_key)
            found.append(row)
        self.load_found(Found(blocks, found, set(oversized)))

    def load_found(self, found: Found) -> None:
        """What PgIndex.fetch found: every block's membership, the records it read."""
        self._oversized.update(found.oversized)
        for key, members in found.blocks.items():
            self._db[key] = [*self._db[key], *members] if key in self._db else members
            self._found.update(members)
        for row in found.rows:
            self._records[row.record.record_key] = row.record
            self._euid[row.record.record_key] = row.euid

    def add(self, record: PersonRecord, euid: str, keys: Iterable[str]) -> None:
        """Index ``record`` under ``keys`` as a member of ``euid`` (replacing what it had)."""
        rk = record.record_key
        self.remove(rk)
        self._records[rk] = record
        self._euid[rk] = euid
        self._keys_of[rk] = list(keys)
        for key in self._keys_of[rk]:
            self._extra.setdefault(key, []).append(rk)

    def remove(self, record_key: str) -> None:
        self._records.pop(record_key, None)
        self._euid.pop(record_key, None)
        if record_key in self._found:
            self._gone.add(record_key)
        for key in self._keys_of.pop(record_key, ()):
            self._extra[key].remove(record_key)

    def _block(self, key: str) -> list[str] | None:
        if key in self._oversized:
            return None
        members = self._db.get(key)
        if members and self._gone:
            members = [rk for rk in members if rk not in self._gone]
        extra = self._extra.get(key)
        return [*members, *extra] if members and extra else (members or extra)

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
        """The records worth scoring (blocking.select over the batch's view), except ``exclude``."""
        records = self._records
        return [Candidate(records[rk], self.resolve(self._euid[rk]))
                for rk in blocking.select(keys, self._block, exclude) if rk in records]
