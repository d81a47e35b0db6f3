"""The Fellegi–Sunter model: m/u per comparison level, the prior, the thresholds; EM estimation.

A pair's score is its log2 posterior odds of being the same person::

    score = log2(λ / (1 - λ)) + Σ_fields log2(m[level] / u[level])

``m`` = P(level | same person), ``u`` = P(level | different people), ``λ`` (``prior``) = the
probability that two records drawn at random are the same person. A field missing on either side
contributes 0.

Estimation (:func:`estimate`), as splink does it: ``u`` from random record pairs (nearly all
non-matches); ``m`` by EM with ``u`` held fixed, one session per blocking pass over that pass's
candidate pairs, leaving out the fields the pass makes agree (a session blocked on birth date
cannot learn how often birth dates agree), averaged over sessions; ``λ`` from the expected number
of matching candidate pairs. Everything is smoothed towards the default model with a few
pseudo-counts, so a level never seen in a small file keeps a sane weight instead of ±infinity.
Deterministic for a given seed.

Thresholds are posterior probabilities, not weights tuned to one data set: because the score
includes the prior (refitted by EM on each data set), ``score >= log2(p / (1 - p))`` means
"P(same person | the evidence) >= p" under the model on any data. Defaults:

* ``link_threshold`` = 6.64 (p = 0.99): auto-link only when the model is 99 % sure; a wrong link
  merges two people's records (clinical harm), a missed one only leaves a duplicate.
* ``review_threshold`` = 0 (p = 0.5): below that, the evidence says "different people".

How they were checked (bench/mpi_accuracy.py, the model fitted by EM on each file): on FEBRL 1-4,
data this code was never tuned on, pairwise F1 moves by at most 0.006 for link thresholds between
p = 0.9 and p = 0.999, and p = 0.99 is the lowest of those where precision is 1.000 on all four
(at p = 0.9 FEBRL4 has 8 false pairs). The simulator's day was scored only after the thresholds
were fixed.

The default model's prior (λ = 0.001) is what EM finds on registries of a few thousand records
(FEBRL: 1e-4 to 1e-3); fit one on an extract of the real registry (``carelake mpi estimate``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import getitem
from pathlib import Path
from typing import Any

import numpy as np

from carelake_dedup_mpi import blocking
from carelake_dedup_mpi.compare import COMPARISONS, NAMES, levels, prepare
from carelake_dedup_mpi.person import PersonRecord

MODEL_VERSION = 1
DEFAULT_LINK = 6.64  # log2(0.99 / 0.01)
DEFAULT_REVIEW = 0.0  # log2(0.5 / 0.5)
_FLOOR = 1e-7

# Hand-set starting points (level order as in compare.COMPARISONS, "missing" excluded): m from the
# error rates record-linkage studies report for registration data, u from US name/date frequencies.
_DEFAULTS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    #               exact  nick   jw92   jw85   other  init   else
    "given": ((0.80, 0.03, 0.06, 0.02, 0.02, 0.01, 0.06), (0.01, 0.002, 0.004, 0.01, 0.001, 0.004, 0.969)),
    #               exact  swap   part   jw92   jw85   else
    "family": ((0.82, 0.02, 0.03, 0.05, 0.02, 0.06), (0.004, 0.0002, 0.0005, 0.003, 0.01, 0.9823)),
    #               exact  init   else
    "middle": ((0.70, 0.15, 0.15), (0.05, 0.10, 0.85)),
    #               exact  swap   typo   year   else
    "birth_date": ((0.88, 0.01, 0.05, 0.02, 0.04), (0.0003, 0.00002, 0.003, 0.005, 0.99168)),
    "sex": ((0.97, 0.03), (0.5, 0.5)),
    "postal_code": ((0.80, 0.08, 0.12), (0.01, 0.10, 0.89)),
    "address": ((0.70, 0.08, 0.05, 0.17), (0.0005, 0.001, 0.005, 0.9935)),
    "city": ((0.85, 0.03, 0.12), (0.05, 0.01, 0.94)),
    "phone": ((0.80, 0.03, 0.17), (0.0005, 0.001, 0.9985)),
    "ssn": ((0.95, 0.03, 0.02), (0.00001, 0.0003, 0.99969)),
}


def _normalized(values: Sequence[float]) -> list[float]:
    clipped = [max(float(v), _FLOOR) for v in values]
    total = sum(clipped)
    return [v / total for v in clipped]


@dataclass
class Model:
    """m and u per comparison level (index 0, "missing", is unused), the prior λ, two thresholds."""

    m: dict[str, list[float]]
    u: dict[str, list[float]]
    prior: float = 0.05
    link_threshold: float = DEFAULT_LINK
    review_threshold: float = DEFAULT_REVIEW
    meta: dict[str, Any] = field(default_factory=dict)  # how it was fitted (pairs, iterations, ...)
    # The hard-conflict rules decide enforces (linker.GUARDS); drop one only for data known to break
    # it (e.g. birth dates replaced wholesale by a synthetic corruptor).
    guards: tuple[str, ...] = ("guard:ssn-conflict", "guard:dob-conflict", "guard:twin")

    def __post_init__(self) -> None:
        self._compile()

    def _compile(self) -> None:
        """The per-level log2 weights, as tuples indexed by level (level 0 = 0.0)."""
        weights = []
        for c in COMPARISONS:
            m, u = self.m[c.name], self.u[c.name]
            if len(m) != len(c.labels) or len(u) != len(c.labels):
                raise ValueError(f"{c.name}: expected {len(c.labels)} levels {c.labels}, got m={len(m)} u={len(u)}")
            weights.append((0.0, *(math.log2(max(mi, _FLOOR) / max(ui, _FLOOR)) for mi, ui in zip(m[1:], u[1:]))))
        self._weights: tuple[tuple[float, ...], ...] = tuple(weights)
        lam = min(max(self.prior, 1e-9), 1 - 1e-9)
        self._prior_weight = math.log2(lam / (1 - lam))

    @property
    def prior_weight(self) -> float:
        """log2(λ / (1 - λ)): the score of a pair with no evidence at all."""
        return self._prior_weight

    def weights(self) -> dict[str, dict[str, float]]:
        """log2(m/u) per comparison and level label — what each level adds to a score."""
        return {c.name: dict(zip(c.labels, w)) for c, w in zip(COMPARISONS, self._weights)}

    def score_levels(self, lv: Sequence[int]) -> tuple[float, dict[str, float]]:
        """Total score and per-field contributions of a level vector (from compare.levels)."""
        contributions = {name: w[i] for name, w, i in zip(NAMES, self._weights, lv)}
        return self._prior_weight + sum(contributions.values()), contributions

    def score(self, a: PersonRecord, b: PersonRecord) -> tuple[float, dict[str, float]]:
        """The pair's log2 posterior odds and each field's contribution (missing fields: 0.0)."""
        return self.score_levels(levels(prepare(a), prepare(b)))

    def fast_score(self, lv: Sequence[int]) -> float:
        """The total alone (the hot path of decide)."""
        return self._prior_weight + sum(map(getitem, self._weights, lv))

    def probability(self, score: float) -> float:
        """P(same person) for a score."""
        return 1.0 / (1.0 + 2.0 ** (-score))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": MODEL_VERSION, "prior": self.prior, "link_threshold": self.link_threshold,
            "review_threshold": self.review_threshold, "guards": list(self.guards),
            "comparisons": {c.name: {"levels": list(c.labels), "m": self.m[c.name], "u": self.u[c.name]}
                            for c in COMPARISONS},
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Model":
        comps = data["comparisons"]
        default = default_model()
        m, u = {}, {}
        for c in COMPARISONS:
            entry = comps.get(c.name)
            if entry is None or list(entry.get("levels", [])) != list(c.labels):
                # A model written before a comparison changed: that field falls back to the defaults.
                m[c.name], u[c.name] = default.m[c.name], default.u[c.name]
            else:
                m[c.name], u[c.name] = list(entry["m"]), list(entry["u"])
        return cls(m=m, u=u, prior=float(data["prior"]), link_threshold=float(data["link_threshold"]),
                   review_threshold=float(data["review_threshold"]), meta=dict(data.get("meta") or {}),
                   guards=tuple(data.get("guards", cls.__dataclass_fields__["guards"].default)))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Model":
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def default_model() -> Model:
    """The hand-set model: used before any data is seen and as EM's starting point and smoothing prior."""
    m = {name: [0.0, *_normalized(mm)] for name, (mm, _) in _DEFAULTS.items()}
    u = {name: [0.0, *_normalized(uu)] for name, (_, uu) in _DEFAULTS.items()}
    return Model(m=m, u=u, prior=0.001)


# ---------------------------------------------------------------- estimation

# The fields a blocking pass makes agree (or correlate) among its pairs, match or not: a session of
# EM on that pass's pairs must not estimate their m, or it would learn "they always agree" (splink
# trains one session per blocking rule for the same reason).
PASS_FIXES: dict[str, frozenset[str]] = {
    "d": frozenset({"birth_date"}),
    "dx": frozenset({"birth_date"}),
    "sy": frozenset({"family", "birth_date"}),
    "gy": frozenset({"given", "birth_date", "sex"}),
    "nn": frozenset({"given", "family", "sex"}),
    "pz": frozenset({"postal_code", "city", "family"}),
    "pi": frozenset({"postal_code", "city", "family", "given"}),
    "as": frozenset({"address", "postal_code", "city"}),
    "ph": frozenset({"phone"}),
    "ss": frozenset({"ssn"}),
}


def blocked_pairs(records: Sequence[PersonRecord]) -> dict[str, np.ndarray]:
    """Per blocking pass, the record-index pairs sharing one of its keys, as codes ``i * n + j`` (i < j).

    Blocks over their pass's pair cap (blocking.pair_cap: the linking caps, with name keys kept at 50)
    are skipped.
    """
    n = len(records)
    blocks: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        for k in blocking.keys(r):
            blocks.setdefault(k, []).append(i)
    per_pass: dict[str, list[int]] = {}
    for key, members in blocks.items():
        if len(members) < 2 or len(members) > blocking.pair_cap(key):
            continue
        codes = per_pass.setdefault(key.split(":", 1)[0], [])
        for x in range(len(members)):
            a = members[x] * n
            codes.extend(a + b for b in members[x + 1:])
    return {p: _sorted_unique(np.array(c, dtype=np.int64)) for p, c in per_pass.items()}


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy's hash-based unique is several times slower on int64 codes)."""
    if len(a) == 0:
        return a
    a = np.sort(a)
    keep = np.empty(len(a), dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _member(sorted_values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Which of ``sorted_values`` are in ``sorted_set`` (both sorted)."""
    if len(sorted_set) == 0:
        return np.zeros(len(sorted_values), dtype=bool)
    pos = np.searchsorted(sorted_set, sorted_values)
    pos[pos == len(sorted_set)] = 0
    return sorted_set[pos] == sorted_values


def level_matrix(records: Sequence[PersonRecord], pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Level vectors of the pairs, one row each (uint8)."""
    prepared = [prepare(r) for r in records]
    out = np.zeros((len(pairs), len(COMPARISONS)), dtype=np.uint8)
    for row, (i, j) in enumerate(pairs):
        out[row] = levels(prepared[i], prepared[j])
    return out


def _log_table(probs: dict[str, list[float]]) -> list[np.ndarray]:
    return [np.log(np.maximum(np.array(probs[c.name]), _FLOOR)) for c in COMPARISONS]


def _posterior(lv: np.ndarray, lam: float, log_m: list[np.ndarray], log_u: list[np.ndarray],
               use: Sequence[int]) -> np.ndarray:
    la = np.full(len(lv), math.log(lam))
    lb = np.full(len(lv), math.log(1 - lam))
    for k in use:
        col = lv[:, k]
        la += log_m[k][col] * (col > 0)
        lb += log_u[k][col] * (col > 0)
    return 1.0 / (1.0 + np.exp(np.clip(lb - la, -700, 700)))


def _em_session(lv: np.ndarray, m: dict[str, list[float]], log_u: list[np.ndarray], use: list[int],
                start: Model, iterations: int, pseudo: float) -> tuple[dict[str, list[float]], float, int]:
    """EM for m (of the ``use`` comparisons) and λ on one session's pairs, u fixed."""
    lam, m = 0.1, {k: list(v) for k, v in m.items()}
    done = 0
    for done in range(1, iterations + 1):
        w = _posterior(lv, lam, _log_table(m), log_u, use)
        new_lam = float(min(max(w.mean(), 1e-6), 1 - 1e-6))
        delta = abs(new_lam - lam)
        for k in use:
            c = COMPARISONS[k]
            counts = np.bincount(lv[:, k], weights=w, minlength=len(c.labels))[1:]
            prior_m = np.array(start.m[c.name][1:])
            new = [0.0, *_normalized((counts + pseudo * prior_m) / (counts.sum() + pseudo))]
            delta = max(delta, max(abs(a - b) for a, b in zip(m[c.name], new)))
            m[c.name] = new
        lam = new_lam
        if delta < 1e-5:
            break
    return m, lam, done


def estimate(records: Sequence[PersonRecord], model: Model | None = None, max_pairs: int = 200_000,
             iterations: int = 20, *, seed: int = 0, random_pairs: int | None = None,
             pseudo_counts: float = 10.0, min_session_pairs: int = 30) -> Model:
    """Fit m, u and λ on ``records`` themselves (unsupervised); thresholds are kept from ``model``.

    * ``u``: level frequencies over ``random_pairs`` random pairs (default ``max_pairs // 2``).
    * ``m``: one EM session per blocking pass over that pass's pairs (u fixed; the fields the pass
      makes agree are left out, PASS_FIXES), averaged over sessions weighted by their expected
      matches. At most ``max_pairs`` blocked pairs (a seeded sample when there are more).
    * ``λ``: the expected number of matching pairs among all blocked pairs (EM for λ alone, m and u
      fixed), divided by the number of record pairs: P(two random records are the same person).
    """
    start = model or default_model()
    rng = np.random.default_rng(seed)
    n = len(records)
    keep = {"link_threshold": start.link_threshold, "review_threshold": start.review_threshold,
            "guards": start.guards}
    if n < 2:
        return Model(m={k: list(v) for k, v in start.m.items()}, u={k: list(v) for k, v in start.u.items()},
                     prior=start.prior, meta={"records": n, "fitted": False}, **keep)
    all_pairs = n * (n - 1) // 2

    # u: random pairs
    n_random = min(random_pairs if random_pairs is not None else max_pairs // 2, all_pairs)
    i = rng.integers(0, n, n_random)
    j = rng.integers(0, n - 1, n_random)
    j = np.where(j >= i, j + 1, j)
    u: dict[str, list[float]] = {}
    if n_random:
        rl = level_matrix(records, list(zip(i.tolist(), j.tolist())))
        for k, c in enumerate(COMPARISONS):
            counts = np.bincount(rl[:, k], minlength=len(c.labels))[1:].astype(float)
            prior_u = np.array(start.u[c.name][1:])
            u[c.name] = [0.0, *_normalized((counts + pseudo_counts * prior_u) / (counts.sum() + pseudo_counts))]
    else:
        u = {k: list(v) for k, v in start.u.items()}
    log_u = _log_table(u)

    # the blocked pairs, sampled down to max_pairs
    per_pass = blocked_pairs(records)
    union = _sorted_unique(np.concatenate(list(per_pass.values()))) if per_pass else np.zeros(0, np.int64)
    n_blocked = len(union)
    if len(union) > max_pairs:
        union = np.sort(rng.choice(union, max_pairs, replace=False))
    lv = level_matrix(records, list(zip((union // n).tolist(), (union % n).tolist())))

    # m: one EM session per pass
    sums = {c.name: np.zeros(len(c.labels)) for c in COMPARISONS}
    totals = dict.fromkeys(NAMES, 0.0)
    sessions = {}
    for p, codes in sorted(per_pass.items()):
        rows = _member(union, codes)
        if rows.sum() < min_session_pairs:
            continue
        fixed = PASS_FIXES.get(p, frozenset())
        use = [k for k, c in enumerate(COMPARISONS) if c.name not in fixed]
        m_s, lam_s, its = _em_session(lv[rows], start.m, log_u, use, start, iterations, pseudo_counts)
        matches = lam_s * int(rows.sum())
        sessions[p] = {"pairs": int(rows.sum()), "lambda": round(lam_s, 6), "iterations": its}
        for k in use:
            name = COMPARISONS[k].name
            sums[name] += matches * np.array(m_s[name])
            totals[name] += matches
    m = {name: ([0.0, *_normalized(sums[name][1:] / totals[name])] if totals[name] > 0 else list(start.m[name]))
         for name in NAMES}

    # λ: expected matches among the blocked pairs, over all pairs
    every = list(range(len(COMPARISONS)))
    lam_c = 0.1
    for _ in range(iterations):
        w = _posterior(lv, lam_c, _log_table(m), log_u, every)
        new = float(min(max(w.mean(), 1e-9), 1 - 1e-9))
        if abs(new - lam_c) < 1e-7:
            break
        lam_c = new
    expected = lam_c * n_blocked
    prior = min(max(expected / all_pairs, 1e-9), 0.5)
    meta = {"records": n, "blocked_pairs": n_blocked, "sampled_pairs": len(union), "random_pairs": n_random,
            "expected_matching_pairs": round(expected, 1), "sessions": sessions, "seed": seed, "fitted": True}
    return Model(m=m, u=u, prior=prior, meta=meta, **keep)
