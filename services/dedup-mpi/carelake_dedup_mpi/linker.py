"""The per-record decision: candidates from an index, scored, one outcome. Pure (no I/O).

The stream (PostgreSQL index) and ``carelake mpi link-csv`` (a temporary in-memory index) run
this same code; only the Index differs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from carelake_dedup_mpi.compare import NAMES, Prepared, level_index, levels, prepare
from carelake_dedup_mpi.model import Model
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
        """The indexed records worth scoring against a record with these blocking keys (deduplicated),
        except ``exclude``: blocking.select's rule (two evidence groups or one specific key shared)."""
        ...


# ---------------------------------------------------------------- the decision

EUID_NAMESPACE = uuid.UUID("6f1c3d2a-8e0b-5c47-9a3e-4d2b7c1e0f59")  # carelake MPI EUIDs (fixed forever)


def new_euid(record_key: str) -> str:
    """The EUID a person gets when ``record_key`` is their first record: ``E`` + 12 hex digits (uuid5).

    >>> new_euid("csv|1")
    'EA3BF10DA07C0'
    """
    return "E" + uuid.uuid5(EUID_NAMESPACE, record_key).hex[:12].upper()


def usable(p: PersonRecord) -> str | None:
    """None when the record carries enough to match on, else why not.

    A family name plus one of birth date / phone / SSN / address line is the minimum: a name alone
    (or a birth date alone) is shared by too many people to ever be evidence of identity.

    >>> usable(PersonRecord("a|1", "a", family="SMITH")), usable(PersonRecord("a|1", "a", given="ANN"))
    ('no-dob-phone-ssn-or-address', 'no-name')
    """
    if not p.family:
        return "no-name"
    if p.birth_date is None and not p.phone and not p.ssn and not p.address_line:
        return "no-dob-phone-ssn-or-address"
    return None


# Hard conflicts: with these, no score may auto-link (the pair goes to review at most). Each is a
# declared rule recorded in Decision.rule; Model.guards says which ones are enforced. Typo-level
# differences (one SSN digit, a swapped day/month) are not conflicts: the comparison levels weigh them.
_SSN, _DOB, _GIVEN, _SEX = (NAMES.index(n) for n in ("ssn", "birth_date", "given", "sex"))
_SSN_ELSE, _GIVEN_ELSE, _SEX_ELSE = level_index("ssn", "else"), level_index("given", "else"), level_index("sex", "else")
_SSN_EXACT, _DOB_EXACT = level_index("ssn", "exact"), level_index("birth_date", "exact")
GUARDS: dict[str, str] = {
    "guard:ssn-conflict": "both records carry a valid SSN and they differ by more than one edit",
    "guard:dob-conflict": "both records carry a birth date, the birth years are more than one year apart "
                          "and the SSNs do not match exactly",
    "guard:twin": "same birth date, both given names present and unrelated (not a typo, nickname, initial "
                  "or swap) and the sexes differ: how boy/girl twins and other multiple births look",
}


def conflicts(a: Prepared, b: Prepared, lv: Sequence[int]) -> tuple[str, ...]:
    """Every guard rule a pair breaks (see GUARDS), in GUARDS order."""
    out = []
    if lv[_SSN] == _SSN_ELSE:
        out.append("guard:ssn-conflict")
    if a.year and b.year and abs(a.year - b.year) > 1 and lv[_SSN] != _SSN_EXACT:
        out.append("guard:dob-conflict")
    if lv[_DOB] == _DOB_EXACT and lv[_GIVEN] == _GIVEN_ELSE and lv[_SEX] == _SEX_ELSE:
        out.append("guard:twin")
    return tuple(out)


def decide(model: Model, record: PersonRecord, candidates: Sequence[Candidate]) -> Decision:
    """Score ``record`` against every candidate and decide (see Decision).

    Each EUID scores as its best-scoring record. An EUID with any hard conflict (GUARDS) against
    the record cannot be auto-linked, whatever its score: it goes to review if it scored at or above
    the review threshold. Bridged EUIDs (``merge_euids``) are the other unconflicted EUIDs at or
    above the link threshold.
    """
    reason = usable(record)
    if reason is not None:
        return Decision("unlinkable", rule=f"unlinkable:{reason}")
    if not candidates:
        return Decision("new_person", rule="no-candidates")
    a = prepare(record)
    best: dict[str, tuple[float, Candidate, list[int]]] = {}
    guarded: dict[str, str] = {}
    for cand in candidates:
        b = prepare(cand.record)
        lv = levels(a, b)
        s = model.fast_score(lv)
        if lv[_SSN] == _SSN_ELSE or lv[_DOB] > _DOB_EXACT or lv[_SEX] == _SEX_ELSE:  # cheap pre-check
            enforced = [rule for rule in conflicts(a, b, lv) if rule in model.guards]
            if enforced:
                guarded.setdefault(cand.euid, enforced[0])
        cur = best.get(cand.euid)
        if cur is None or s > cur[0]:
            best[cand.euid] = (s, cand, lv)
    ranked = sorted(best.items(), key=lambda kv: -kv[1][0])
    kept = tuple(Match(c, s, model.score_levels(lv)[1]) for _, (s, c, lv) in ranked if s >= model.review_threshold)
    linkable = [euid for euid, (s, _, _) in ranked if s >= model.link_threshold and euid not in guarded]
    if linkable:
        return Decision("auto_link", kept, euid=linkable[0], merge_euids=tuple(linkable[1:]), rule="fs>=link")
    if kept:
        top = kept[0].candidate.euid
        rule = guarded[top] if top in guarded and kept[0].score >= model.link_threshold else "fs:review-band"
        return Decision("review", kept, rule=rule)
    return Decision("new_person", rule="fs<review")
