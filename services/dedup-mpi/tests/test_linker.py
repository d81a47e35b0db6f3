"""decide: who links, who does not, and why (through the in-memory index, as link-csv runs it)."""

from __future__ import annotations

import doctest
from dataclasses import replace

from carelake_dedup_mpi import blocking, linker
from carelake_dedup_mpi.compare import levels, prepare
from carelake_dedup_mpi.linker import Candidate, decide, new_euid, usable
from carelake_dedup_mpi.memory_index import MemoryIndex
from carelake_dedup_mpi.model import default_model
from carelake_dedup_mpi.person import PersonRecord
from carelake_dedup_mpi.standardize import from_row

MODEL = default_model()


def row(rid: str, **values: str) -> PersonRecord:
    base = {"given_name": "William", "family_name": "Kelly", "birth_date": "1965-03-12", "sex": "M",
            "address_line": "12 Main Street", "city": "Springfield", "state": "IL", "postal_code": "62701",
            "phone": "217-555-0100"}
    base.update(values)
    return from_row(base, f"csv|{rid}")


def link(first: PersonRecord, second: PersonRecord) -> linker.Decision:
    index = MemoryIndex()
    index.add(first, new_euid(first.record_key))
    return decide(MODEL, second, index.candidates(blocking.keys(second)))


def test_doctests() -> None:
    assert doctest.testmod(linker).failed == 0


def test_the_usual_variations_link() -> None:
    base = row("1")
    variants = {
        "nickname": row("2", given_name="Bill"),
        "accents and case": row("2", given_name="WİLLİAM", family_name="kélly"),
        "hyphenated surname": row("2", family_name="Kelly-Smith"),
        "new surname": row("2", family_name="Garcia"),
        "swapped given/family": row("2", given_name="Kelly", family_name="William"),
        "day/month swapped": row("2", birth_date="1965-12-03"),
        "typo and moved": row("2", family_name="Kely", address_line="9 Oak Ave", postal_code="62702"),
        "US date format, phone with country code": row("2", birth_date="03/12/1965", phone="+1 217 555 0100"),
        "no phone or address": row("2", phone="", address_line="", postal_code="", city=""),
    }
    for what, variant in variants.items():
        d = link(base, variant)
        assert d.outcome == "auto_link", (what, d)
        assert d.euid == new_euid("csv|1") and d.rule == "fs>=link"
        assert d.matches[0].score >= MODEL.link_threshold and d.matches[0].contributions


def test_same_name_born_years_apart_does_not_link() -> None:
    # father and son: same name, address and phone (JR/SR stripped), birth dates 25 years apart
    d = link(row("1", given_name="William Sr"), row("2", given_name="William Jr", birth_date="1990-07-01"))
    assert d.outcome != "auto_link"
    d = link(row("1", phone="", address_line=""), row("2", birth_date="1975-03-12", phone="", address_line=""))
    assert d.outcome != "auto_link"


def test_a_strong_score_with_a_conflicting_ssn_goes_to_review() -> None:
    d = link(row("1", ssn="123-45-6780"), row("2", ssn="234-56-7891"))
    assert d.outcome == "review" and d.rule == "guard:ssn-conflict" and d.euid is None
    assert d.matches[0].score >= MODEL.link_threshold  # the score alone would have linked
    one_digit = link(row("1", ssn="123-45-6780"), row("2", ssn="123-45-6789"))
    assert one_digit.outcome == "auto_link"  # a typo is not a conflict


def test_guards_can_be_switched_off() -> None:
    model = default_model()
    model.guards = ()
    index = MemoryIndex()
    index.add(row("1", ssn="123-45-6780"), "E1")
    second = row("2", ssn="234-56-7891")
    assert decide(model, second, index.candidates(blocking.keys(second))).outcome == "auto_link"


def test_each_enforced_guard_applies_on_its_own() -> None:
    model = default_model()
    model.guards = ("guard:dob-conflict",)  # the SSN guard off: the birth-year one must still hold
    index = MemoryIndex()
    index.add(row("1", ssn="123-45-6780"), "E1")
    second = row("2", ssn="234-56-7891", birth_date="1975-03-12")
    d = decide(model, second, index.candidates(blocking.keys(second)))
    assert d.outcome != "auto_link"
    assert linker.conflicts(*map(prepare, (row("1"), row("2", birth_date="1990-01-01"))),
                            levels(prepare(row("1")), prepare(row("2", birth_date="1990-01-01")))) == (
        "guard:dob-conflict",)


def test_strangers_are_new_people() -> None:
    d = link(row("1"), row("2", given_name="Maria", family_name="Kelly", birth_date="1965-03-12", sex="F",
                        phone="", address_line="4 Elm St"))
    assert d.outcome in ("new_person", "review") and d.euid is None
    assert link(row("1"), row("2", given_name="Ann", family_name="Zhou", birth_date="2001-01-01", address_line="",
                                 postal_code="", phone="")).outcome == "new_person"


def test_too_little_to_match_is_unlinkable() -> None:
    assert usable(row("1", birth_date="", phone="", address_line="")) == "no-dob-phone-ssn-or-address"
    assert usable(row("1", family_name="")) == "no-name"
    d = decide(MODEL, row("2", birth_date="", phone="", address_line=""), [Candidate(row("1"), "E1")])
    assert d.outcome == "unlinkable" and d.rule == "unlinkable:no-dob-phone-ssn-or-address"
    assert decide(MODEL, row("1"), []).outcome == "new_person"


def test_a_record_bridging_two_people_merges_them() -> None:
    old = row("1", phone="")  # person A: no phone
    other = row("2", birth_date="", address_line="", postal_code="", city="")  # person B: phone only
    d = decide(MODEL, row("3"), [Candidate(old, "EA"), Candidate(other, "EB")])
    assert d.outcome == "auto_link" and {d.euid, *d.merge_euids} == {"EA", "EB"}
    assert len(d.matches) == 2 and d.matches[0].score >= d.matches[1].score


def test_best_record_per_person_decides() -> None:
    good, weak = row("1"), row("2", given_name="Wilhelmina", sex="F", phone="", address_line="")
    d = decide(MODEL, row("3"), [Candidate(weak, "EA"), Candidate(good, "EA")])
    assert d.outcome == "auto_link" and len(d.matches) == 1 and d.matches[0].candidate.record is good


def test_memory_index_merge_and_exclude() -> None:
    index = MemoryIndex()
    a, b = row("1"), row("2", given_name="Bill")
    index.add(a, "EA")
    index.add(b, "EB")
    index.merge("EA", "EB")
    assert index.euid_of("csv|2") == "EA" and sorted(index.members("EA")) == ["csv|1", "csv|2"]
    cands = index.candidates(blocking.keys(a), exclude="csv|1")
    assert [c.record.record_key for c in cands] == ["csv|2"] and cands[0].euid == "EA"


def test_memory_index_skips_oversized_blocks() -> None:
    index = MemoryIndex(cap=lambda key: 3)
    for n in range(5):  # five people sharing one placeholder phone
        index.add(PersonRecord(f"x|{n}", "x", family=f"F{n}", phone="5555555555"), f"E{n}")
    assert index.candidates(["ph:5555555555"]) == []
    small = MemoryIndex()
    small.add(PersonRecord("x|1", "x", family="F", phone="5555555555"), "E1")
    assert len(small.candidates(["ph:5555555555"])) == 1


def test_euids_are_deterministic() -> None:
    assert new_euid("csv|1") == new_euid("csv|1") != new_euid("csv|2")
    assert len(new_euid("csv|1")) == 13 and new_euid("csv|1").startswith("E")


def test_same_person_twice_in_one_source_links() -> None:
    first = row("1")
    again = replace(row("2"), source="csv")
    assert link(first, again).outcome == "auto_link"
