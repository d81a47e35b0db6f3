"""Blocking: the same person under the usual errors still shares a key; keys are short and stable."""

from __future__ import annotations

import doctest
from dataclasses import replace
from datetime import date

from carelake_dedup_mpi import blocking
from carelake_dedup_mpi.blocking import keys
from carelake_dedup_mpi.memory_index import MemoryIndex
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


def test_caps_per_pass() -> None:
    # postal code + initial is low (pi takes over); name keys are high: they count as evidence for
    # candidates found through other keys (blocking.select), common names included
    assert blocking.cap("pz:62701|K") < blocking.cap("ph:2175550100") < blocking.cap("sy:KALY|1965")


# ---- which found records are scored (blocking.select; both indexes apply it)

def _crowded_index(match: PersonRecord) -> MemoryIndex:
    index = MemoryIndex()
    index.add(match, "E-MATCH")
    strangers = ("ADAMS", "BROWN", "CHEN", "DIAZ", "EVANS", "FOX", "GRANT", "HUGHES", "IBARRA", "JONES", "KHAN",
                 "LOPEZ")
    for n, family in enumerate(strangers):  # born the same day, nothing else in common
        index.add(PersonRecord(f"ehr|S{n}", "ehr", given="ZED", family=family, birth_date=BASE.birth_date,
                               postal_code=f"9{n:04d}", phone=f"90955501{n:02d}"), f"E-S{n}")
    return index


def test_a_true_match_sharing_two_passes_is_scored_a_stranger_sharing_one_weak_pass_is_not() -> None:
    # the match: nickname, moved, no phone or SSN — it shares the birth date and family name + year
    match = replace(BASE, record_key="lab|1", source="lab", given="BILL", address_line="9 OAK AVE",
                    postal_code="62999", phone=None, ssn=None)
    groups = {blocking.GROUP[k.split(":")[0]] for k in shared(BASE, match)}
    assert groups == {"birth_date", "family+year"}
    index = _crowded_index(match)
    assert len(index._blocks[f"d:{BASE.birth_date:%Y%m%d}"]) > blocking.SMALL_BLOCK  # a common birth date
    assert [c.record.record_key for c in index.candidates(keys(BASE))] == ["lab|1"]


def test_one_specific_key_is_enough() -> None:
    index = _crowded_index(replace(BASE, record_key="lab|1", source="lab", given="X", family="Y", birth_date=None,
                                   address_line=None, postal_code=None, ssn=None))  # shares the phone only
    assert [c.record.record_key for c in index.candidates(keys(BASE))] == ["lab|1"]
    # a weak key is specific too when few records share it: the same stranger, alone on that birth date
    small = MemoryIndex()
    small.add(PersonRecord("ehr|S0", "ehr", given="ZED", family="ADAMS", birth_date=BASE.birth_date), "E-S0")
    assert [c.record.record_key for c in small.candidates(keys(BASE))] == ["ehr|S0"]


def test_passes_of_one_value_count_once() -> None:
    assert not blocking.worth_scoring(["d:19650312", "dx:1965|03|12"])  # both the birth date
    assert not blocking.worth_scoring(["pz:62701|K", "pi:62701|KW"])  # pi implies pz
    assert blocking.worth_scoring(["d:19650312", "pz:62701|K"])
    assert blocking.worth_scoring(["as:12|MAN"]) and blocking.worth_scoring(["ss:123456780"])
    assert blocking.worth_scoring(["d:19650312"], block_size=lambda key: blocking.SMALL_BLOCK)
