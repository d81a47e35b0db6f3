"""Each source system's own registrations of the people, with the mess real registration makes.

Every system issues its own identifier. A share of registrations carry demographic variations
(nicknames, typos, swapped day/month, a move, a new surname, missing fields), and a share of
people are registered twice in the same system — the duplicates the MPI must find. Every
variation is recorded on the Registration, so the ground truth can list it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date

from carelake_simulator.model import Demographics, Person, Registration

NICKNAMES = {
    "William": "Bill", "Robert": "Bob", "Richard": "Dick", "James": "Jim", "John": "Jack",
    "Michael": "Mike", "Joseph": "Joe", "Thomas": "Tom", "Charles": "Chuck", "Christopher": "Chris",
    "Daniel": "Dan", "Matthew": "Matt", "Anthony": "Tony", "Steven": "Steve", "Andrew": "Andy",
    "Joshua": "Josh", "Kenneth": "Ken", "Edward": "Ed", "Ronald": "Ron", "Timothy": "Tim",
    "Gregory": "Greg", "Jeffrey": "Jeff", "Benjamin": "Ben", "Samuel": "Sam", "Alexander": "Alex",
    "Nicholas": "Nick", "Patrick": "Pat", "Elizabeth": "Liz", "Jennifer": "Jen", "Patricia": "Pat",
    "Margaret": "Peggy", "Susan": "Sue", "Jessica": "Jess", "Katherine": "Kate", "Kimberly": "Kim",
    "Deborah": "Debbie", "Rebecca": "Becky", "Cynthia": "Cindy", "Kathleen": "Kathy",
    "Christina": "Tina", "Victoria": "Vicky", "Samantha": "Sam", "Abigail": "Abby",
    "Alexandra": "Alex", "Catherine": "Cathy", "Pamela": "Pam", "Jacqueline": "Jackie",
}

# Identifier formats per system: each looks like what that kind of system issues.
MRN_FORMATS: dict[str, Callable[[random.Random], str]] = {
    "ehr": lambda r: f"E{r.randint(10**7, 10**8 - 1)}",
    "lab": lambda r: f"L{r.randint(10**6, 10**7 - 1)}",
    "pharmacy": lambda r: f"RX{r.randint(10**6, 10**7 - 1)}",
    "wearables": lambda r: f"WU{r.getrandbits(40):010x}",
    "public_health": lambda r: f"IIS{r.randint(10**7, 10**8 - 1)}",
    "scheduling": lambda r: f"S{r.randint(10**6, 10**7 - 1)}",
    "billing": lambda r: f"B{r.randint(10**7, 10**8 - 1)}",
}
SSN_KEPT = {"ehr": 0.7, "billing": 0.6, "lab": 0.2, "pharmacy": 0.3, "public_health": 0.1,
            "scheduling": 0.2, "wearables": 0.0, "claims": 0.0}
DUPLICATE_SOURCES = ("ehr", "lab", "pharmacy", "scheduling", "billing", "public_health")


@dataclass(frozen=True)
class IdentityRates:
    variation: float = 0.12  # share of non-EHR registrations whose demographics differ from the truth
    duplicate: float = 0.02  # share of people registered twice in one system (per system)
    duplicate_use: float = 0.35  # share of a duplicated person's events filed under the duplicate


def _typo(rng: random.Random, s: str) -> str:
    if len(s) < 3:
        return s
    i = rng.randrange(1, len(s) - 1)
    op = rng.choice(("swap", "drop", "double", "replace"))
    if op == "swap":
        return s[:i] + s[i + 1] + s[i] + s[i + 2:]
    if op == "drop":
        return s[:i] + s[i + 1:]
    if op == "double":
        return s[:i] + s[i] + s[i:]
    return s[:i] + rng.choice("aeiourstln") + s[i + 1:]


def _swap_day_month(d: date | None) -> date | None:
    if d is None or d.day > 12 or d.day == d.month:
        return None  # not swappable: caller picks another variation
    return d.replace(month=d.day, day=d.month)


def vary(demo: Demographics, rng: random.Random, fake_street: Callable[[], str]) -> tuple[Demographics, str]:
    """One realistic demographic variation of ``demo``; returns the variant and its kind."""
    for _ in range(8):
        kind = rng.choice(("nickname", "typo_given", "typo_family", "swap_day_month", "moved",
                           "new_surname", "missing_phone", "missing_ssn", "missing_address",
                           "hyphenated_surname", "swapped_names", "missing_middle"))
        if kind == "nickname" and demo.given in NICKNAMES:
            return replace(demo, given=NICKNAMES[demo.given]), kind
        if kind == "typo_given":
            return replace(demo, given=_typo(rng, demo.given)), kind
        if kind == "typo_family":
            return replace(demo, family=_typo(rng, demo.family)), kind
        if kind == "swap_day_month" and (swapped := _swap_day_month(demo.birth_date)) is not None:
            return replace(demo, birth_date=swapped), kind
        if kind == "moved" and demo.address is not None:
            return replace(demo, address=replace(demo.address, line=fake_street())), kind
        if kind == "new_surname" and demo.sex == "F":
            return replace(demo, family=rng.choice(("Garcia", "Nguyen", "Okafor", "Kowalski", "Patel", "Larsen"))), kind
        if kind == "missing_phone" and demo.phone:
            return replace(demo, phone=None), kind
        if kind == "missing_ssn" and demo.ssn:
            return replace(demo, ssn=None), kind
        if kind == "missing_address" and demo.address is not None:
            return replace(demo, address=None), kind
        if kind == "hyphenated_surname" and "-" not in demo.family:
            return replace(demo, family=f"{demo.family}-{rng.choice(('Lopez', 'Smith', 'Brown', 'Chen'))}"), kind
        if kind == "swapped_names":
            return replace(demo, given=demo.family, family=demo.given), kind
        if kind == "missing_middle" and demo.middle:
            return replace(demo, middle=""), kind
    return replace(demo, given=_typo(rng, demo.given)), "typo_given"


class Registry:
    """Every system's registrations; answers "which registration does this event file under?"."""

    def __init__(self) -> None:
        self.primary: dict[str, dict[str, Registration]] = {}  # source -> person_id -> registration
        self.duplicates: dict[str, dict[str, Registration]] = {}  # source -> person_id -> duplicate
        self.all: list[Registration] = []

    def add(self, reg: Registration) -> None:
        table = self.duplicates if reg.duplicate_of else self.primary
        table.setdefault(reg.source, {})[reg.person_id] = reg
        self.all.append(reg)

    def for_event(self, source: str, person_id: str, rng: random.Random, duplicate_use: float) -> Registration:
        dup = self.duplicates.get(source, {}).get(person_id)
        if dup is not None and rng.random() < duplicate_use:
            return dup
        return self.primary[source][person_id]


def register(people: tuple[Person, ...], rates: IdentityRates, seed: int,
             fake_street: Callable[[], str]) -> Registry:
    """Register every person in every system that knows them (wearables: device users only)."""
    rng = random.Random(seed ^ 0x1D)
    registry = Registry()
    issued: set[str] = set()

    def new_id(source: str) -> str:
        while True:
            mrn = MRN_FORMATS[source](rng)
            if mrn not in issued:
                issued.add(mrn)
                return mrn

    for source in ("ehr", "lab", "pharmacy", "claims", "wearables", "public_health", "scheduling", "billing"):
        for person in people:
            if source == "wearables" and not person.devices:
                continue
            demo, variations = person.demo, ()
            if rng.random() >= SSN_KEPT[source]:
                demo = replace(demo, ssn=None)
            if source != "ehr" and rng.random() < rates.variation:
                demo, kind = vary(demo, rng, fake_street)
                variations = (kind,)
            # The claims system knows the patient by the payer's member id.
            mrn = person.member_id if source == "claims" else new_id(source)
            reg = Registration(source=source, mrn=mrn, person_id=person.person_id, demo=demo,
                               variations=variations)
            registry.add(reg)
            if source in DUPLICATE_SOURCES and rng.random() < rates.duplicate:
                dup_demo, kind1 = vary(person.demo, rng, fake_street)
                kinds = (kind1,)
                if rng.random() < 0.4:
                    dup_demo, kind2 = vary(dup_demo, rng, fake_street)
                    kinds = (kind1, kind2)
                registry.add(Registration(source=source, mrn=new_id(source), person_id=person.person_id,
                                          demo=dup_demo, duplicate_of=mrn, variations=kinds))
    return registry
