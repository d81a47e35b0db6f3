"""The population: people with demographics, payers, PCPs, chronic conditions and hidden risk.

Deterministic from a seed. Names and streets come from Faker (en_US); everything statistical comes
from one ``random.Random`` so the same seed gives the same people.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

from faker import Faker

from carelake_simulator import codes, risk
from carelake_simulator.model import Address, Demographics, Payer, Person, Provider, Risk, SdohArea

# Age bands (lower bound, upper bound, share) — roughly the US population pyramid.
AGE_BANDS = ((0, 17, 0.21), (18, 34, 0.22), (35, 49, 0.19), (50, 64, 0.19), (65, 79, 0.14), (80, 95, 0.05))

# Diagnosed prevalence by age band (18-44, 45-64, 65+), from CDC/NHANES summaries, rounded:
# diabetes (National Diabetes Statistics Report), hypertension (NHANES 2017-2020), CHF, COPD,
# CKD (diagnosed), CAD, AFib, depression, asthma, hyperlipidemia (diagnosed/treated), obesity (coded).
PREVALENCE: dict[str, tuple[float, float, float]] = {
    "diabetes": (0.04, 0.145, 0.24),
    "hypertension": (0.10, 0.38, 0.62),
    "hyperlipidemia": (0.07, 0.28, 0.45),
    "obesity": (0.15, 0.22, 0.18),
    "chf": (0.003, 0.012, 0.07),
    "copd": (0.015, 0.06, 0.11),
    "asthma": (0.08, 0.08, 0.07),
    "ckd": (0.015, 0.05, 0.14),
    "cad": (0.005, 0.05, 0.14),
    "afib": (0.002, 0.012, 0.09),
    "depression": (0.09, 0.08, 0.06),
}
# Comorbidity: diabetes multiplies the odds of these (shared causes: obesity, vascular disease).
DIABETES_LIFTS = {"ckd": 2.5, "cad": 2.0, "hypertension": 1.8, "hyperlipidemia": 1.6, "chf": 1.8}
PAYER_BY_AGE = {  # share of commercial, medicaid, selfpay below 65; 65+ is mostly Medicare
    "under65": (0.66, 0.26, 0.08),
    "over65": (0.12, 0.06, 0.02),  # remainder Medicare
}
RACE = (("2106-3", 0.60), ("2054-5", 0.13), ("2028-9", 0.06), ("2131-1", 0.21))  # CDC race codes
HISPANIC = 0.19  # share coded 2135-2 (Hispanic or Latino); others 2186-5


@dataclass(frozen=True)
class Population:
    people: tuple[Person, ...]
    areas: tuple[SdohArea, ...]
    pcps: tuple[Provider, ...]
    hospitalists: tuple[Provider, ...]
    ed_physicians: tuple[Provider, ...]
    specialists: tuple[Provider, ...]
    payers: tuple[Payer, ...]
    deprivation: dict[str, float]  # area id -> area deprivation index in [0, 1]

    def by_id(self) -> dict[str, Person]:
        return {p.person_id: p for p in self.people}


def _providers(fake: Faker, rng: random.Random, n: int, taxonomy: str, start: int) -> tuple[Provider, ...]:
    tax = codes.TAXONOMY[taxonomy]
    return tuple(
        Provider(npi=codes.make_npi(start + i), given=fake.first_name(), family=fake.last_name(), taxonomy=tax,
                 organization="Carelake Medical Group")
        for i in range(n)
    )


def _areas(fake: Faker, rng: random.Random, n: int) -> tuple[tuple[SdohArea, ...], dict[str, float], dict[str, str]]:
    """``n`` ZIP areas of one region with a deprivation index and SDOH measures derived from it."""
    zips: list[str] = []
    while len(zips) < n:
        z = fake.zipcode_in_state("IL")
        if z not in zips:
            zips.append(z)
    areas, deprivation, cities = [], {}, {}
    for z in zips:
        d = rng.betavariate(2.0, 3.0)  # most areas moderately deprived, a tail of high deprivation
        deprivation[z] = d
        cities[z] = fake.city()
        areas.append(SdohArea(area_id=z, state="IL", measures={
            "area_deprivation_index": round(d, 3),
            "poverty_rate": round(0.04 + 0.30 * d + rng.uniform(-0.02, 0.02), 3),
            "food_insecurity_rate": round(0.05 + 0.22 * d + rng.uniform(-0.02, 0.02), 3),
            "no_vehicle_rate": round(0.02 + 0.18 * d + rng.uniform(-0.01, 0.01), 3),
            "uninsured_rate": round(0.03 + 0.15 * d + rng.uniform(-0.01, 0.01), 3),
            "broadband_access_rate": round(0.95 - 0.25 * d + rng.uniform(-0.02, 0.02), 3),
        }))
    return tuple(areas), deprivation, cities


def _age(rng: random.Random) -> int:
    x = rng.random()
    for lo, hi, share in AGE_BANDS:
        if x < share:
            return rng.randint(lo, hi)
        x -= share
    return rng.randint(80, 95)


def _conditions(rng: random.Random, age: int) -> tuple[str, ...]:
    if age < 18:
        return ("asthma",) if rng.random() < 0.07 else ()
    band = 0 if age < 45 else 1 if age < 65 else 2
    has = {"diabetes"} if rng.random() < PREVALENCE["diabetes"][band] else set()
    for cond, rates in PREVALENCE.items():
        if cond == "diabetes":
            continue
        p = rates[band]
        if "diabetes" in has and cond in DIABETES_LIFTS:
            odds = p / (1 - p) * DIABETES_LIFTS[cond]
            p = odds / (1 + odds)
        if rng.random() < p:
            has.add(cond)
    return tuple(sorted(has))


def _payer(rng: random.Random, age: int, payers: dict[str, list[Payer]]) -> Payer:
    if age >= 65:
        com, mcd, selfp = PAYER_BY_AGE["over65"]
        kinds = (("commercial", com), ("medicaid", mcd), ("selfpay", selfp), ("medicare", 1.0))
    else:
        com, mcd, selfp = PAYER_BY_AGE["under65"]
        kinds = (("commercial", com), ("medicaid", mcd), ("selfpay", selfp))
    x = rng.random()
    for kind, share in kinds:
        if x < share or kind == kinds[-1][0]:
            return rng.choice(payers[kind])
        x -= share
    raise AssertionError("unreachable")


def _pick(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    x = rng.random()
    for code, share in table:
        if x < share:
            return code
        x -= share
    return table[-1][0]


def _hba1c(rng: random.Random, conditions: tuple[str, ...], z: float) -> float | None:
    if "diabetes" in conditions:
        # Diabetics: mean ~7.4 %, a long right tail; worse with higher latent risk.
        return round(min(14.0, max(5.6, rng.gauss(7.1 + 0.35 * z, 1.2))), 1)
    if rng.random() < 0.25:  # some non-diabetics are screened
        return round(min(6.4, max(4.3, rng.gauss(5.4, 0.35))), 1)
    return None


def generate_population(n: int, seed: int, as_of: date, device_share: float = 0.11) -> Population:
    """``n`` synthetic people living in one region, as of ``as_of``."""
    rng = random.Random(seed)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    n_areas = max(20, min(400, n // 120))
    areas, deprivation, cities = _areas(fake, rng, n_areas)
    area_ids = [a.area_id for a in areas]
    pcps = _providers(fake, rng, max(5, n // 750), "family_medicine", 1_000)
    hospitalists = _providers(fake, rng, max(3, n // 3000), "internal_medicine", 2_000)
    ed_docs = _providers(fake, rng, max(3, n // 3000), "emergency_medicine", 3_000)
    specialists = tuple(
        p for i, tax in enumerate(("cardiology", "endocrinology", "pulmonology", "nephrology", "psychiatry"))
        for p in _providers(fake, rng, max(1, n // 9000), tax, 4_000 + 100 * i)
    )
    payers: dict[str, list[Payer]] = {}
    for payer_id, name, kind in codes.PAYERS:
        payers.setdefault(kind, []).append(Payer(payer_id, name, kind))
    people = []
    for i in range(n):
        age = _age(rng)
        sex = "F" if rng.random() < 0.51 else "M"
        birth = as_of - timedelta(days=age * 365 + rng.randint(0, 364))
        conditions = _conditions(rng, age)
        area = rng.choice(area_ids)
        payer = _payer(rng, age, payers)
        z = risk.risk_index(age, conditions, deprivation[area], payer.kind, noise=rng.gauss(0, 0.35))
        a1c = _hba1c(rng, conditions, z)
        given = fake.first_name_female() if sex == "F" else fake.first_name_male()
        middle = (fake.first_name_female() if sex == "F" else fake.first_name_male()) if rng.random() < 0.6 else ""
        family = fake.last_name()
        demo = Demographics(
            given=given, family=family, middle=middle, sex=sex, birth_date=birth,
            ssn=f"9{rng.randint(0, 99):02d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}",
            address=Address(line=fake.street_address(), city=cities[area], state="IL", postal_code=area),
            phone=f"{rng.choice(('312', '773', '872', '630', '708', '847'))}{rng.randint(2000000, 9999999)}",
            email=f"{given.lower()}.{family.lower()}{rng.randint(1, 99)}@example.com",
            language="es" if rng.random() < 0.12 else "en",
            race=_pick(rng, RACE), ethnicity="2135-2" if rng.random() < HISPANIC else "2186-5",
        )
        devices = (f"DEV-{seed % 1000:03d}-{i:07d}",) if age >= 18 and rng.random() < device_share else ()
        people.append(Person(
            person_id=f"P{i + 1:07d}", demo=demo, payer=payer,
            member_id=f"{payer.payer_id[:3].upper()}{rng.randint(10**8, 10**9 - 1)}",
            pcp=rng.choice(pcps), area_id=area, conditions=conditions,
            risk=Risk(score=round(z, 4), readmission_30d=round(risk.readmission_probability(z), 5),
                      diabetes_progression=round(risk.diabetes_progression_probability(z, conditions, a1c), 5),
                      ed_visit_30d=round(risk.ed_visit_probability(z), 5)),
            hba1c=a1c, devices=devices,
        ))
    return Population(people=tuple(people), areas=areas, pcps=pcps, hospitalists=hospitalists,
                      ed_physicians=ed_docs, specialists=specialists,
                      payers=tuple(p for ps in payers.values() for p in ps), deprivation=deprivation)


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))

