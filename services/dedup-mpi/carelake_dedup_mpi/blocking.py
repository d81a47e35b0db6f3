"""Blocking keys: which indexed records are worth scoring against an arriving one.

Each record gets keys from several independent passes; a candidate is any record sharing at
least one key. A true match is missed only when *every* pass breaks, so each pass is chosen to
survive a different, common kind of error:

=========  ===================================  =============================================
prefix     key                                  survives
=========  ===================================  =============================================
``d:``     birth date YYYYMMDD                  any name change or typo, moves
``dx:``    year + the two day/month values      day/month swapped (only when both are <= 12)
           sorted
``sy:``    phonetic family (and each hyphen     given-name nicknames/typos, a day or month typo
           part, earlier family names) + year
``gy:``    phonetic given + birth year          a new or hyphenated surname, a day/month typo
``nn:``    the two phonetic names, sorted       swapped given/family, any birth-date error
``pz:``    postal code + family initial         a birth-date error with a given-name change
``pi:``    postal code + family and given       the same, where ``pz:`` blocks are too big
           initials                             (a registry drawn from a few ZIP codes)
``as:``    house number + phonetic street name  birth-date and postal-code errors (same home)
``ph:``    phone (digits)                       name and birth-date errors together
``ss:``    SSN                                  name and birth-date errors together
=========  ===================================  =============================================

Phonetic code: NYSIIS (jellyfish), measured against Soundex and Metaphone by pairs completeness
(share of true pairs sharing a key) on FEBRL 1-4: NYSIIS 0.998 / 0.990 / 0.984 / 0.995 with
587 / 4,625 / 8,845 / 15,144 candidate pairs; Soundex 0.998 / 0.993 / 0.989 / 0.996 for 2-16 %
more pairs; Metaphone 0.998 / 0.990 / 0.984 / 0.995 for 1-3 % more. All three reach 1.000 on the
simulator's registrations. NYSIIS is the cheapest for the same completeness (the scorer's fuzzy
name levels, not the phonetic key, decide how much a name typo costs).

Keys are short ASCII strings (stored in a PostgreSQL table and looked up by btree index).

Oversized blocks: a key shared by more than :func:`cap` records is skipped at lookup (an index
should still store it). ``pz:`` (postal code + one letter) is capped at 20 — its finer twin ``pi:``
takes over in a dense registry; exact identifiers (``d:``, ``ph:``, ``ss:``, ``as:``) at 200, where a
bigger block means a placeholder value (01/01/1900, 000-000-0000). Name + year and name-pair keys
are capped at 1,000: a common name alone selects no one (see below), but whether a candidate found
through its birth date *also* shares the family name + year is the second piece of evidence that
gets it scored — at 1M persons, JAMES + a birth year is ~500 records and SMITH + a year ~120; with
these keys capped at 50 (as they were while every record found was scored), ~0.2 % of true matches
with a common name and a changed given name or address shared only the birth date and were missed.

Which candidates are scored (:func:`select`, the one rule both indexes apply): sharing *a* key is
enough to be found, not always to be scored. At a million persons a birth date alone is shared by
~30 people and a postal code + initial by ~10, so "any shared key" means ~80 candidates a record,
nearly all strangers. A candidate is scored when what it shares with the arriving record is

* **two independent pieces of evidence**: keys from two different groups of :data:`GROUP` (the
  birth date, family name + year, given name + year, the name pair, the postal code, the address).
  Passes built from the same value are one group (``d:`` and ``dx:`` are both the birth date;
  ``pi:`` implies ``pz:``), so they never count twice; or
* **one specific key**: a specific pass (:data:`SPECIFIC`: phone, SSN, house number + street), or
  any key whose block holds at most :data:`SMALL_BLOCK` records. A key that rare is evidence on
  its own, and scoring its whole block is as cheap as scoring a phone's.

So a candidate is left out only when its one shared group is a *common* value (a birth date shared
by 30 people, a postal code + initial shared by 15): a true match keeps two groups under any single
error and most double ones (a nickname and a move still leave the birth date and family + year; a
day/month swap and a new surname still leave ``dx:`` and given + year). In registries of a few
thousand records (FEBRL 1-4) blocks are small and nearly everything found is still scored — there,
true pairs sharing only a birth date or only a postal code, with every other field fuzzy, do
score above the link threshold (~500 of them on FEBRL3); the rule keeps them all (bench/mpi_accuracy.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from functools import lru_cache
from typing import TypeVar

import jellyfish

from carelake_dedup_mpi.person import PersonRecord
from carelake_dedup_mpi.standardize import name_parts

PASSES = ("d", "dx", "sy", "gy", "nn", "pz", "pi", "as", "ph", "ss")
DEFAULT_CAP = 200
CAPS: dict[str, int] = {"pz": 20, "pi": 100, "gy": 1000, "sy": 1000, "nn": 1000}


# The evidence group of each pass (see the module docstring); SPECIFIC passes suffice alone.
GROUP: dict[str, str] = {"d": "birth_date", "dx": "birth_date", "sy": "family+year", "gy": "given+year",
                         "nn": "names", "pz": "postal", "pi": "postal", "as": "address", "ph": "phone", "ss": "ssn"}
SPECIFIC: frozenset[str] = frozenset({"as", "ph", "ss"})
SMALL_BLOCK = 10  # a key shared by at most this many records is specific whatever its pass
_GROUPS = tuple(dict.fromkeys(GROUP.values()))
_BIT = {p: 1 << _GROUPS.index(g) for p, g in GROUP.items()}
_SPECIFIC_BITS = sum({_BIT[p] for p in SPECIFIC})
_OTHER = 1 << len(_GROUPS)  # every pass not in GROUP: one more group, not specific
_RARE = 1 << (len(_GROUPS) + 1)  # a key from a small block: specific
_SPECIFIC_BITS |= _RARE


def _bit(key: str) -> int:
    """The evidence bit of a key's pass."""
    return _BIT.get(key[: key.find(":")], _OTHER)


def _enough(bits: int) -> bool:
    return bool(bits & _SPECIFIC_BITS) or bits.bit_count() >= 2


def worth_scoring(shared: Iterable[str], block_size: Callable[[str], int] = lambda key: SMALL_BLOCK + 1) -> bool:
    """The candidate-selection rule: do these shared keys show two evidence groups or a specific key?
    ``block_size(key)``: how many records share the key (default: more than SMALL_BLOCK).

    >>> worth_scoring(["d:19650304", "dx:1965|03|04"]), worth_scoring(["d:19650304", "sy:SNAT|1965"])
    (False, True)
    >>> worth_scoring(["ph:3125550188"]), worth_scoring(["pz:60601|S", "pi:60601|SA"])
    (True, False)
    """
    bits = 0
    for k in shared:
        bits |= _bit(k) | (_RARE if block_size(k) <= SMALL_BLOCK else 0)
    return _enough(bits)


R = TypeVar("R", bound=Hashable)


def select(keys: Sequence[str], block: Callable[[str], Collection[R] | None], exclude: R | None = None) -> list[R]:
    """The records worth scoring against a record with ``keys`` (:func:`worth_scoring` on what each
    shares with it, block sizes from ``block``), sorted; ``block(key)`` gives the records under a
    key (None or empty for an absent or skipped key). Both indexes (memory_index, store.index) call
    this. Set operations, not a loop per record: the members of every specific or small block, and
    of every intersection of two groups' big blocks.

    >>> blocks = {"d:19650304": ["a", "b", *"cdefghijkl"], "sy:SNAT|1965": ["a"], "ph:3125550188": ["c"]}
    >>> select(["d:19650304", "sy:SNAT|1965", "ph:3125550188"], blocks.get)
    ['a', 'c']
    """
    chosen: set[R] = set()
    groups: dict[int, set[R]] = {}
    for k in keys:
        members = block(k)
        if not members:
            continue
        bit = _bit(k)
        if bit & _SPECIFIC_BITS or len(members) <= SMALL_BLOCK:
            chosen.update(members)
        elif (group := groups.get(bit)) is None:
            groups[bit] = set(members)
        else:
            group.update(members)
    if len(groups) > 1:
        sets = list(groups.values())
        for i, a in enumerate(sets):
            for b in sets[i + 1:]:
                chosen |= a & b
    chosen.discard(exclude)  # type: ignore[arg-type]
    return sorted(chosen)  # type: ignore[type-var]


def cap(key: str) -> int:
    """The largest block of ``key``'s pass that is still looked up (see the module docstring).

    >>> cap("pz:60601|S"), cap("d:19650304")
    (20, 200)
    """
    return CAPS.get(key[: key.find(":")], DEFAULT_CAP)


# Estimation (model.blocked_pairs) enumerates every pair of a block — quadratic — so it keeps the
# name keys at 50: pairs of a very common name are nearly all non-matches and would swamp EM.
PAIR_CAPS: dict[str, int] = {**CAPS, "gy": 50, "sy": 50, "nn": 50}


def pair_cap(key: str) -> int:
    """The largest block of ``key``'s pass whose pairs EM estimation uses (model.blocked_pairs).

    >>> pair_cap("sy:SNAT|1965"), cap("sy:SNAT|1965")
    (50, 1000)
    """
    return PAIR_CAPS.get(key[: key.find(":")], DEFAULT_CAP)


@lru_cache(maxsize=1 << 16)
def phonetic(value: str) -> str:
    """NYSIIS code of a standardized name or name part (spaces and hyphens ignored); '' for none.

    >>> phonetic("SMITH"), phonetic("SMITT"), phonetic("O NEIL-SMITH")
    ('SNAT', 'SNAT', 'ONALSNAT')
    """
    letters = "".join(c for c in value if c.isalpha())
    return jellyfish.nysiis(letters) if letters else ""


def family_codes(p: PersonRecord) -> list[str]:
    """Phonetic codes of the family name, its hyphen/space parts and earlier family names (max 4)."""
    out: list[str] = []
    values = [p.family] if p.family else []
    values += list(name_parts(p.family))
    values += list(p.other_names)
    for v in values:
        code = phonetic(v) if v else ""
        if code and code not in out:
            out.append(code)
    return out[:4]


def street_key(line: str) -> str | None:
    """House number and phonetic street name of a standardized address line, or None.

    >>> street_key("363 BANKS ST APT 4"), street_key("PO BOX 12"), street_key("BANKS ST")
    ('363|BANC', None, None)
    """
    tokens = line.split()
    if len(tokens) < 2 or not any(c.isdigit() for c in tokens[0]):
        return None
    street = next((t for t in tokens[1:] if len(t) >= 3 and t.isalpha()), None)
    return f"{tokens[0]}|{phonetic(street)}" if street else None


def keys(p: PersonRecord) -> list[str]:
    """The record's blocking keys, deduplicated, in pass order; [] when nothing is usable.

    >>> from datetime import date
    >>> keys(PersonRecord("a|1", "a", given="ANN", family="SMITH", birth_date=date(1965, 3, 4),
    ...                    postal_code="60601", phone="3125550188"))
    ['d:19650304', 'dx:1965|03|04', 'sy:SNAT|1965', 'gy:AN|1965', 'nn:AN|SNAT', 'pz:60601|S', 'pi:60601|SA', 'ph:3125550188']
    """
    out: list[str] = []
    bd = p.birth_date
    fams = family_codes(p)
    given = phonetic(p.given) if p.given else ""
    if bd is not None:
        y = f"{bd.year:04d}"
        out.append(f"d:{y}{bd.month:02d}{bd.day:02d}")
        if bd.day <= 12 and bd.day != bd.month:
            lo, hi = sorted((bd.month, bd.day))
            out.append(f"dx:{y}|{lo:02d}|{hi:02d}")
        out.extend(f"sy:{f}|{y}" for f in fams)
        if given:
            out.append(f"gy:{given}|{y}")
    if given and fams:
        a, b = sorted((given, fams[0]))
        out.append(f"nn:{a}|{b}")
    if p.postal_code and p.family:
        out.append(f"pz:{p.postal_code}|{p.family[0]}")
        if p.given:
            out.append(f"pi:{p.postal_code}|{p.family[0]}{p.given[0]}")
    if p.address_line and (street := street_key(p.address_line)):
        out.append(f"as:{street}")
    if p.phone:
        out.append(f"ph:{p.phone}")
    if p.ssn:
        out.append(f"ss:{p.ssn}")
    return list(dict.fromkeys(out))
