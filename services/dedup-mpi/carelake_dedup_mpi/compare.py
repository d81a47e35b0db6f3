"""Field comparisons: each pair of records lands in one level per field (splink-style, declarative).

A :class:`Comparison` is a field and an ordered list of :class:`Level` objects; the first level
whose test passes is the pair's level for that field. Level 0 is always "missing" (either side
absent: weight 0, no evidence either way) and the last is "else" (nothing matched). The Model
(model.py) owns the m/u probabilities of each level; this module only says which level a pair is
in, so the same comparisons serve EM estimation (level vectors) and scoring (weights by level).

Per-record derived values (phonetics, nickname sets, name parts, date digits, sorted address
tokens) are computed once per record by :func:`prepare` (cached), which is what keeps scoring
cheap: most levels are a set lookup or a string equality; string similarity (rapidfuzz) runs
only when cheaper levels fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from nicknames import NickNamer
from rapidfuzz import fuzz
from rapidfuzz.distance import OSA, JaroWinkler

from carelake_dedup_mpi.person import PersonRecord
from carelake_dedup_mpi.standardize import name_parts

_nicknames = NickNamer()


@lru_cache(maxsize=1 << 15)
def name_equivalents(value: str) -> tuple[frozenset[str], frozenset[str]]:
    """(the name with its nicknames and formal names, its formal names) from NickNamer."""
    low = value.lower()
    canon = frozenset(c.upper() for c in _nicknames.canonicals_of(low))
    nicks = frozenset(c.upper() for c in _nicknames.nicknames_of(low))
    return frozenset({value}) | canon | nicks, canon


class Prepared(NamedTuple):
    """A PersonRecord with the values comparisons need, computed once (see :func:`prepare`).

    A tuple, so the hot loop reads fields by position.
    """

    record: PersonRecord
    given: str | None
    given_eq: frozenset[str]  # the given name, its nicknames and formal names
    given_canon: frozenset[str]
    family: str | None
    family_parts: frozenset[str]  # hyphen/space parts of the family name (2+ letters)
    names: frozenset[str]  # every name on the record: given, middle, family, parts, other names
    other_family: frozenset[str]  # family parts and earlier names (other_names)
    middle: str | None
    dob: str | None  # YYYYMMDD
    dob_ord: int  # proleptic ordinal (0 when absent)
    year: int  # birth year (0 when absent)
    sex: str | None  # M/F/O; U is absent
    postal: str | None
    address: str | None  # tokens sorted, for token-sort comparison
    city: str | None
    phone: str | None
    ssn: str | None


_recent: dict[int, Prepared] = {}  # id(record) -> Prepared; holds the record, so ids are not reused
_RECENT_MAX = 1 << 16  # ~1.3 KB each: at most ~85 MB


def prepare(p: PersonRecord) -> Prepared:
    """The comparison view of a record, cached: by object identity first (no hashing of the record in
    the hot loop), then by value (a PostgreSQL index builds new objects for the same records)."""
    hit = _recent.get(id(p))
    if hit is not None and hit.record is p:
        return hit
    prepared = _prepare_value(p)
    if len(_recent) >= _RECENT_MAX:
        _recent.clear()
    _recent[id(p)] = prepared
    return prepared


@lru_cache(maxsize=1 << 16)
def _prepare_value(p: PersonRecord) -> Prepared:
    given_eq, given_canon = name_equivalents(p.given) if p.given else (frozenset(), frozenset())
    parts = frozenset(x for x in name_parts(p.family) if len(x) > 1)
    other = frozenset(o for o in p.other_names if o)
    names = {x for x in (p.given, p.middle, p.family) if x} | parts | other
    names |= {x for x in name_parts(p.middle) if len(x) > 1}
    bd = p.birth_date
    return Prepared(
        record=p, given=p.given, given_eq=given_eq, given_canon=given_canon, family=p.family,
        family_parts=parts, names=frozenset(names), other_family=parts | other,
        middle=p.middle, dob=f"{bd.year:04d}{bd.month:02d}{bd.day:02d}" if bd else None,
        dob_ord=bd.toordinal() if bd else 0, year=bd.year if bd else 0, sex=p.sex if p.sex in ("M", "F", "O") else None,
        postal=p.postal_code, address=" ".join(sorted(p.address_line.split())) if p.address_line else None,
        city=p.city, phone=p.phone, ssn=p.ssn,
    )


# ---------------------------------------------------------------- levels

Test = Callable[[Prepared, Prepared, Any, Any], bool]


@dataclass(frozen=True, slots=True)
class Level:
    """One comparison level: a label (stable, stored in model JSON) and its test on the two values."""

    label: str
    test: Test

    def __repr__(self) -> str:  # readable in contributions and docs
        return f"Level({self.label!r})"


def exact() -> Level:
    return Level("exact", lambda a, b, x, y: x == y)


def _similarity_band(label: str, fn: Callable[[str, str], float], threshold: float) -> Level:
    """``fn(x, y) >= threshold``; bands of one similarity share the last (x, y, value), so
    consecutive levels (>= 0.92, then >= 0.85) compute it once. The memo is one tuple swapped
    atomically, so threads sharing it can only miss, never read another pair's value."""
    memo = _memos.setdefault(fn, [(None, None, 0.0)])

    def test(a: Prepared, b: Prepared, x: str, y: str) -> bool:
        last = memo[0]
        if last[0] is x and last[1] is y:
            return last[2] >= threshold
        value = fn(x, y)
        memo[0] = (x, y, value)
        return value >= threshold

    return Level(label, test)


_memos: dict[Callable[[str, str], float], list[tuple[Any, Any, float]]] = {}


def jaro_winkler(threshold: float) -> Level:
    """Jaro–Winkler similarity (rapidfuzz) at or above ``threshold``."""
    return _similarity_band(f"jw>={threshold:g}", JaroWinkler.similarity, threshold)


def edits(n: int) -> Level:
    """At most ``n`` edits (insert, delete, substitute, transpose adjacent)."""
    return Level(f"edits<={n}", lambda a, b, x, y: OSA.distance(x, y, score_cutoff=n) <= n)


def token_sort(threshold: int) -> Level:
    """rapidfuzz token-sort ratio (0-100) at or above ``threshold`` (values are pre-sorted)."""
    return _similarity_band(f"token_sort>={threshold}", fuzz.ratio, threshold)


def _nickname(a: Prepared, b: Prepared, x: str, y: str) -> bool:
    return y in a.given_eq or x in b.given_eq or not a.given_canon.isdisjoint(b.given_canon)


def _given_elsewhere(a: Prepared, b: Prepared, x: str, y: str) -> bool:
    """The given name appears as another name of the other record (swapped, middle, alias)."""
    return x in b.names or y in a.names


def _swapped(a: Prepared, b: Prepared, x: str, y: str) -> bool:
    """Given and family exchanged (exactly or nearly) between the two records."""
    ag, bg = a.given, b.given
    if not ag or not bg:
        return False
    return (x == bg or JaroWinkler.similarity(x, bg, score_cutoff=0.92) > 0) and \
        (y == ag or JaroWinkler.similarity(y, ag, score_cutoff=0.92) > 0)


def _family_part(a: Prepared, b: Prepared, x: str, y: str) -> bool:
    """A hyphen/space part or an earlier family name of one record is the other's family name."""
    return y in a.other_family or x in b.other_family or not a.family_parts.isdisjoint(b.family_parts)


def _initial(a: Prepared, b: Prepared, x: str, y: str) -> bool:
    return (len(x) == 1 or len(y) == 1) and x[0] == y[0]


def _dob_swap(a: Prepared, b: Prepared, x: str, y: str) -> bool:
    return x[:4] == y[:4] and x[4:6] == y[6:8] and x[6:8] == y[4:6]


def _dob_typo(a: Prepared, b: Prepared, x: str, y: str) -> bool:
    """One digit edit on YYYYMMDD, or two of year/month/day equal (one component wrong)."""
    if OSA.distance(x, y, score_cutoff=1) <= 1:
        return True
    return (x[:4] == y[:4]) + (x[4:6] == y[4:6]) + (x[6:8] == y[6:8]) >= 2


def _within_a_year(a: Prepared, b: Prepared, x: str, y: str) -> bool:
    return abs(a.dob_ord - b.dob_ord) <= 366


def _zip3(a: Prepared, b: Prepared, x: str, y: str) -> bool:
    return len(x) == 5 and len(y) == 5 and x[:3] == y[:3]


def _phone_near(a: Prepared, b: Prepared, x: str, y: str) -> bool:
    return x[-7:] == y[-7:] or OSA.distance(x, y, score_cutoff=1) <= 1


@dataclass(frozen=True, slots=True)
class Comparison:
    """A field compared through ordered levels. Level 0 = missing, then ``levels``, then else."""

    name: str
    attr: str  # the Prepared attribute that must be present on both sides
    levels: tuple[Level, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        """Every level's label, index = level number."""
        return ("missing", *(lv.label for lv in self.levels), "else")

    def level(self, a: Prepared, b: Prepared) -> int:
        x, y = getattr(a, self.attr), getattr(b, self.attr)
        if x is None or y is None:
            return 0
        for i, lv in enumerate(self.levels, 1):
            if lv.test(a, b, x, y):
                return i
        return len(self.levels) + 1


COMPARISONS: tuple[Comparison, ...] = (
    Comparison("given", "given", (exact(), Level("nickname", _nickname), jaro_winkler(0.92),
                                  jaro_winkler(0.85), Level("other-name", _given_elsewhere),
                                  Level("initial", _initial))),
    Comparison("family", "family", (exact(), Level("swapped", _swapped), Level("hyphen-part", _family_part),
                                    jaro_winkler(0.92), jaro_winkler(0.85))),
    Comparison("middle", "middle", (exact(), Level("initial", _initial))),
    Comparison("birth_date", "dob", (exact(), Level("day-month-swapped", _dob_swap), Level("typo", _dob_typo),
                                     Level("within-1-year", _within_a_year))),
    Comparison("sex", "sex", (exact(),)),
    Comparison("postal_code", "postal", (exact(), Level("zip3", _zip3))),
    Comparison("address", "address", (exact(), token_sort(90), token_sort(70))),
    Comparison("city", "city", (exact(), jaro_winkler(0.9))),
    Comparison("phone", "phone", (exact(), Level("near", _phone_near))),
    Comparison("ssn", "ssn", (exact(), edits(1))),
)
NAMES: tuple[str, ...] = tuple(c.name for c in COMPARISONS)
ELSE: dict[str, int] = {c.name: len(c.levels) + 1 for c in COMPARISONS}


def level_index(comparison: str, label: str) -> int:
    """The level number of ``label`` in ``comparison`` (e.g. ``("ssn", "else")`` -> 3)."""
    return next(c for c in COMPARISONS if c.name == comparison).labels.index(label)


def _compile() -> Callable[[Prepared, Prepared], list[int]]:
    """One function computing every comparison's level (no per-field dispatch in the hot loop)."""
    plans = []
    for c in COMPARISONS:
        if c.levels[0].label != "exact":
            raise ValueError(f"{c.name}: the first level must be exact (the hot loop tests it inline)")
        tests = tuple((lv.test, n) for n, lv in enumerate(c.levels[1:], 2))
        plans.append((Prepared._fields.index(c.attr), tests, len(c.levels) + 1))
    plans_t = tuple(plans)

    def levels(a: Prepared, b: Prepared) -> list[int]:
        out = []
        append = out.append
        for idx, tests, other in plans_t:
            x = a[idx]
            y = b[idx]
            if x is None or y is None:
                append(0)
            elif x == y:
                append(1)
            else:
                for test, n in tests:
                    if test(a, b, x, y):
                        append(n)
                        break
                else:
                    append(other)
        return out

    return levels


levels: Callable[[Prepared, Prepared], list[int]] = _compile()
levels.__doc__ = "The level of every comparison in COMPARISONS for a pair of prepared records."
