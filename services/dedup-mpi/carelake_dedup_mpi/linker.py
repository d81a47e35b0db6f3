"""The per-record decision: candidates from an index, scored, one outcome. Pure (no I/O).

The stream (PostgreSQL index) and ``carelake mpi link-csv`` (a temporary in-memory index) run
this same code; only the Index differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from carelake_dedup_mpi.person import PersonRecord

Outcome = Literal["auto_link", "review", "new_person", "unlinkable"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A record already in the index and the enterprise person it belongs to."""

    record: PersonRecord
    euid: str


@dataclass(frozen=True, slots=True)
class Match:
    """One scored candidate: total log2 weight and each field's contribution to it."""

    candidate: Candidate
    score: float
    contributions: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with an arriving record.

    * ``auto_link``: join ``euid`` (the best match's); ``merge_euids`` lists every *other* EUID
      that also scored at or above the link threshold — the record bridges them, so they merge
      into the oldest EUID (the caller knows ages; it picks the survivor).
    * ``review``: best score between the thresholds — a new person now, ``matches`` queued for
      a data steward.
    * ``new_person``: nothing scored at or above the review threshold.
    * ``unlinkable``: too little usable demographics to match at all (a new person, flagged; never
      a wrong link).
    """

    outcome: Outcome
    matches: tuple[Match, ...] = ()  # best first; the ones at or above the review threshold
    euid: str | None = None  # the EUID to link to (auto_link only)
    merge_euids: tuple[str, ...] = ()
    rule: str = ""  # e.g. "fs>=link", "fs:review-band", "no-candidates", "unlinkable:no-name"


class Index(Protocol):
    """Where candidate records come from: the PostgreSQL index or a temporary in-memory one."""

    def candidates(self, keys: Sequence[str], exclude: str | None = None) -> list[Candidate]:
        """Every indexed record sharing at least one blocking key (deduplicated), except ``exclude``."""
        ...
