"""The temporary in-memory index of ``carelake mpi link-csv``: the same Index the stream's PostgreSQL one is.

A dict from blocking key to the record keys carrying it, plus each record's EUID. A block larger
than its pass's cap (blocking.cap: 20 records for postal code + initial, 100 for postal code +
initials, 1,000 for name keys, 200 otherwise) is *skipped* when looking up candidates (its records stay indexed): a key shared by that
many people — a placeholder phone, 01/01/1900, a very common name in a very large file — carries
no identity, and scoring the whole block would make linking quadratic. Matches only such a key
would find are lost; every other pass still runs. Of the records found, only those blocking.select
keeps (two evidence groups or a specific pass shared) are candidates — the stream's rule too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from carelake_dedup_mpi import blocking
from carelake_dedup_mpi.linker import Candidate
from carelake_dedup_mpi.person import PersonRecord


class MemoryIndex:
    """Records, their blocking keys and EUIDs, in memory (implements linker.Index)."""

    def __init__(self, cap: Callable[[str], int] = blocking.cap) -> None:
        self.cap = cap
        self._blocks: dict[str, list[str]] = {}
        self._records: dict[str, Candidate] = {}  # record key -> (record, its EUID)
        self._euid: dict[str, str] = {}  # record key -> EUID
        self._members: dict[str, list[str]] = {}  # EUID -> record keys

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: PersonRecord, euid: str, keys: Sequence[str] | None = None) -> None:
        """Index ``record`` under ``euid`` (re-adding a record key replaces it)."""
        rk = record.record_key
        if rk in self._records:
            self.remove(rk)
        self._records[rk] = Candidate(record, euid)
        self._euid[rk] = euid
        self._members.setdefault(euid, []).append(rk)
        for k in blocking.keys(record) if keys is None else keys:
            self._blocks.setdefault(k, []).append(rk)

    def remove(self, record_key: str) -> None:
        """Drop a record from the index (its keys, its EUID membership)."""
        cand = self._records.pop(record_key, None)
        if cand is None:
            return
        record = cand.record
        euid = self._euid.pop(record_key)
        members = self._members.get(euid, [])
        if record_key in members:
            members.remove(record_key)
        if not members:
            self._members.pop(euid, None)
        for k in blocking.keys(record):
            block = self._blocks.get(k)
            if block and record_key in block:
                block.remove(record_key)

    def euid_of(self, record_key: str) -> str | None:
        """The EUID a record currently belongs to (None if not indexed)."""
        return self._euid.get(record_key)

    def members(self, euid: str) -> list[str]:
        """The record keys of an EUID."""
        return list(self._members.get(euid, ()))

    def merge(self, survivor: str, retired: str) -> None:
        """Move every record of ``retired`` to ``survivor``; ``retired`` ceases to exist."""
        if survivor == retired:
            return
        moved = self._members.pop(retired, [])
        for rk in moved:
            self._euid[rk] = survivor
            self._records[rk] = Candidate(self._records[rk].record, survivor)
        self._members.setdefault(survivor, []).extend(moved)

    def merge_into_oldest(self, euids: Sequence[str], created: Mapping[str, int]) -> tuple[str, int]:
        """Merge ``euids`` into the one created first (a merge keeps the older EUID, as the MPI does);
        returns (the survivor, how many were merged into it)."""
        survivor = min(euids, key=created.__getitem__)
        retired = [e for e in euids if e != survivor]
        for euid in retired:
            self.merge(survivor, euid)
        return survivor, len(retired)

    def candidates(self, keys: Sequence[str], exclude: str | None = None) -> list[Candidate]:
        """The indexed records worth scoring (blocking.select: two evidence groups or a specific pass
        shared; oversized blocks skipped), except ``exclude``."""
        blocks, cap, records = self._blocks, self.cap, self._records

        def block(key: str) -> list[str] | None:
            members = blocks.get(key)
            return members if members and len(members) <= cap(key) else None

        return [records[rk] for rk in blocking.select(keys, block, exclude)]
