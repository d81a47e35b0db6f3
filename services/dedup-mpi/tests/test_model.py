"""The Fellegi–Sunter model: scores that order pairs sensibly, JSON round trips, EM that finds the truth."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import date, timedelta

import pytest

from carelake_dedup_mpi.compare import COMPARISONS, levels, prepare
from carelake_dedup_mpi.model import Model, default_model, estimate
from carelake_dedup_mpi.person import PersonRecord

ANN = PersonRecord("a|1", "a", given="ANN", middle="MARIE", family="KOWALSKI", birth_date=date(1971, 5, 14), sex="F",
                   address_line="12 MAIN ST", city="SPRINGFIELD", state="IL", postal_code="62701", phone="2175550100",
                   ssn="123456780")


def test_same_person_scores_high_and_strangers_low() -> None:
    m = default_model()
    same, _ = m.score(ANN, replace(ANN, record_key="b|1", source="b"))
    typo, _ = m.score(ANN, replace(ANN, record_key="b|1", family="KOWALSKY", phone=None))
    stranger = PersonRecord("b|2", "b", given="JOHN", family="BAKER", birth_date=date(1950, 1, 2), sex="M",
                            postal_code="60601", address_line="9 ELM AVE", city="CHICAGO", phone="3125550199")
    other, _ = m.score(ANN, stranger)
    assert same > typo > m.link_threshold > m.review_threshold > other


def test_contributions_explain_the_score() -> None:
    m = default_model()
    total, parts = m.score(ANN, replace(ANN, record_key="b|1", phone=None, birth_date=date(1971, 5, 15)))
    assert set(parts) == {c.name for c in COMPARISONS}
    assert parts["phone"] == 0.0  # missing on one side: no evidence
    assert parts["birth_date"] < m.weights()["birth_date"]["exact"]
    assert total == pytest.approx(m.prior_weight + sum(parts.values()))


def test_levels_name_the_cases() -> None:
    def level(field: str, a: PersonRecord, b: PersonRecord) -> str:
        c = next(c for c in COMPARISONS if c.name == field)
        return c.labels[levels(prepare(a), prepare(b))[[x.name for x in COMPARISONS].index(field)]]

    assert level("given", ANN, replace(ANN, given="ANNIE")) == "nickname"
    assert level("family", ANN, replace(ANN, given="KOWALSKI", family="ANN")) == "swapped"
    assert level("family", ANN, replace(ANN, family="KOWALSKI-SMITH")) == "hyphen-part"
    assert level("birth_date", ANN, replace(ANN, record_key="b|1")) == "exact"
    assert level("birth_date", ANN, replace(ANN, birth_date=date(1971, 5, 4))) == "typo"
    assert level("birth_date", replace(ANN, birth_date=date(1971, 5, 4)),
                 replace(ANN, birth_date=date(1971, 4, 5))) == "day-month-swapped"
    assert level("ssn", ANN, replace(ANN, ssn="123456708")) == "edits<=1"
    assert level("ssn", ANN, replace(ANN, ssn=None)) == "missing"
    assert level("address", ANN, replace(ANN, address_line="12 MAIN ST APT 3")) == "token_sort>=70"


def test_model_json_round_trip(tmp_path) -> None:
    m = default_model()
    m.link_threshold, m.guards = 9.5, ("guard:ssn-conflict",)
    path = tmp_path / "model.json"
    m.save(path)
    back = Model.load(path)
    assert back.to_json() == json.loads(path.read_text())
    assert back.score(ANN, ANN) == m.score(ANN, ANN) and back.guards == ("guard:ssn-conflict",)


# A seeded synthetic population with known error rates: every duplicated person has exactly one
# original and one copy, so the true m of a field's "exact" level is 1 - its error rate.
RATES = {"given": 0.10, "family": 0.08, "birth_date": 0.06, "postal_code": 0.20, "phone": 0.15}


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice("BDFGKLMNPRSTVZ") + rng.choice("AEIOU") for _ in range(syllables))


def _typo(rng: random.Random, s: str) -> str:
    i = rng.randrange(len(s))
    return s[:i] + rng.choice([c for c in "BCDFGHKLMNPRST" if c != s[i]]) + s[i + 1:]


def synthetic(seed: int = 11, people: int = 2500) -> tuple[list[PersonRecord], dict[str, str]]:
    rng = random.Random(seed)
    givens = [_word(rng, rng.choice((2, 3))) for _ in range(150)]
    families = [_word(rng, rng.choice((2, 3, 4))) for _ in range(600)]
    zips = [f"{rng.randrange(10000, 99999)}" for _ in range(300)]
    records, truth = [], {}
    for n in range(people):
        bd = date(1930, 1, 1) + timedelta(days=rng.randrange(80 * 365))
        p = PersonRecord(f"s|{n}", "s", given=rng.choice(givens), family=rng.choice(families), birth_date=bd,
                         sex=rng.choice("MF"), postal_code=rng.choice(zips),
                         address_line=f"{rng.randrange(1, 999)} {_word(rng, 3)} ST", phone=f"{rng.randrange(2, 9)}{rng.randrange(10**9):09d}")
        records.append(p)
        truth[p.record_key] = str(n)
        if rng.random() < 0.4:
            d = replace(p, record_key=f"s|{n}d")
            if rng.random() < RATES["given"]:
                d = replace(d, given=_typo(rng, d.given))
            if rng.random() < RATES["family"]:
                d = replace(d, family=_typo(rng, d.family))
            if rng.random() < RATES["birth_date"]:
                d = replace(d, birth_date=bd + timedelta(days=rng.choice((-1, 1)) * rng.randrange(1, 9)))
            if rng.random() < RATES["postal_code"]:
                d = replace(d, postal_code=rng.choice(zips), address_line=f"{rng.randrange(1, 999)} {_word(rng, 3)} AVE")
            if rng.random() < RATES["phone"]:
                d = replace(d, phone=f"{rng.randrange(2, 9)}{rng.randrange(10**9):09d}")
            records.append(d)
            truth[d.record_key] = str(n)
    rng.shuffle(records)
    return records, truth


def test_em_recovers_the_true_m_probabilities() -> None:
    records, _ = synthetic()
    fitted = estimate(records, max_pairs=60_000)
    for field, rate in RATES.items():
        exact = fitted.m[field][1]
        assert exact == pytest.approx(1 - rate, abs=0.05), (field, exact, 1 - rate)
    # λ: ~1000 true pairs among ~3.5k records
    n = fitted.meta["records"]
    assert fitted.prior * n * (n - 1) / 2 == pytest.approx(sum(1 for r in records if r.record_key.endswith("d")), rel=0.15)


def test_estimate_is_deterministic_and_keeps_thresholds() -> None:
    records, _ = synthetic(seed=3, people=600)
    start = default_model()
    start.link_threshold = 8.0
    a, b = estimate(records, start, 20_000, seed=5), estimate(records, start, 20_000, seed=5)
    assert a.to_json() == b.to_json() and a.link_threshold == 8.0


def test_estimate_on_tiny_inputs() -> None:
    assert estimate([]).meta["fitted"] is False
    assert estimate([ANN]).m == default_model().m
    two = estimate([ANN, replace(ANN, record_key="b|1")])
    assert 0 < two.prior <= 0.5
