"""Blocking: the same person under the usual errors still shares a key; keys are short and stable."""

from __future__ import annotations

import doctest
from dataclasses import replace
from datetime import date

from carelake_dedup_mpi import blocking
from carelake_dedup_mpi.blocking import keys
from carelake_dedup_mpi.person import PersonRecord

BASE = PersonRecord("ehr|1", "ehr", given="WILLIAM", middle="J", family="KELLY", birth_date=date(1965, 3, 12),
                    sex="M", address_line="12 MAIN ST", city="SPRINGFIELD", state="IL", postal_code="62701",
                    phone="2175550100", ssn="123456780")


def shared(a: PersonRecord, b: PersonRecord) -> set[str]:
    return set(keys(a)) & set(keys(b))


def test_doctests() -> None:
    assert doctest.testmod(blocking).failed == 0


def test_keys_are_short_stable_strings() -> None:
    k = keys(BASE)
    assert k == keys(replace(BASE, record_key="lab|9", source="lab"))  # depend on demographics only
    assert len(k) == len(set(k)) and all(len(x) <= 40 and x.isascii() and ":" in x for x in k)
    assert "d:19650312" in k and "ph:2175550100" in k and "ss:123456780" in k


def test_nothing_usable_gives_no_keys() -> None:
    assert keys(PersonRecord("a|1", "a")) == []
    assert keys(PersonRecord("a|1", "a", sex="F", city="X")) == []


def test_each_common_error_still_shares_a_key() -> None:
    stripped = replace(BASE, phone=None, ssn=None, address_line=None, postal_code=None)
    cases = {
        "day/month swapped": replace(stripped, birth_date=date(1965, 12, 3)),
        "new surname": replace(stripped, family="GARCIA"),
        "hyphenated surname": replace(stripped, family="KELLY-SMITH", birth_date=date(1965, 3, 13)),
        "swapped given/family": replace(stripped, given="KELLY", family="WILLIAM", birth_date=date(1966, 3, 12)),
        "family typo and birth-date typo": replace(stripped, family="KELLEY", birth_date=date(1965, 3, 21)),
        "nickname and birth-date typo": replace(stripped, given="BILL", birth_date=date(1965, 8, 12)),
    }
    for what, variant in cases.items():
        assert shared(stripped, variant), what


def test_address_and_identifier_passes_survive_name_and_date_errors() -> None:
    other = replace(BASE, given="WM", family="KELY", birth_date=date(1956, 1, 1), phone=None, ssn=None)
    assert any(k.startswith("as:") for k in shared(BASE, other))
    by_phone = replace(BASE, given="X", family="Y", birth_date=None, address_line=None, postal_code=None, ssn=None)
    assert shared(BASE, by_phone) == {"ph:2175550100"}


def test_non_us_and_odd_values_do_not_crash() -> None:
    p = PersonRecord("a|1", "a", given="Ø", family="-", postal_code="SW1A2AA", address_line="FLAT 3 10 DOWNING ST")
    assert isinstance(keys(p), list)


def test_weak_passes_have_lower_caps() -> None:
    assert blocking.cap("pz:62701|K") < blocking.cap("sy:KALY|1965") < blocking.cap("ph:2175550100")
