"""Two arrivals of one person at the same moment, on two connections, never leave two persons."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from carelake_dedup_mpi import linker
from carelake_dedup_mpi.model import default_model
from carelake_dedup_mpi.store.mpi import MpiStore

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ROUNDS = 20
FAMILIES = ("SMITH", "GARCIA", "OKAFOR", "NGUYEN", "KOWALSKI", "HAUGEN", "MORALES", "PATEL", "ROSSI", "DUBOIS",
            "TANAKA", "MURPHY", "SILVA", "JENSEN", "ABARA", "LINDQVIST", "MORETTI", "FISCHER", "OWUSU", "KEANE")
GIVENS = ("ANN", "BRUNO", "CHIDI", "DARIA", "EMIL", "FATIMA", "GUNNAR", "HANA", "IGOR", "JUNE")


def slow_decide(model, record, candidates):
    """The real decision, 20 ms late: both racers read the index before either commits (without the
    store's blocking-key locks, every round of the first test ends with two persons)."""
    time.sleep(0.02)
    return linker.decide(model, record, candidates)


def _race(calls: list) -> list:
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # reported below, not swallowed
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def test_same_person_from_two_sources_at_once_gets_one_euid(mpi_dsn, rec):
    one = MpiStore.open(mpi_dsn, default_model(), max_size=1, decide=slow_decide)
    two = MpiStore.open(mpi_dsn, default_model(), max_size=1, run_migrations=False, decide=slow_decide)
    try:
        for i in range(ROUNDS):
            who = dict(given=GIVENS[i % 10], family=FAMILIES[i], dob=f"19{50 + i}-03-04", phone=f"312555{i:04d}")
            _race([lambda: one.link([rec(f"ehr|E{i}", **who)], NOW),
                   lambda: two.link([rec(f"lab|L{i}", **who, sex="F")], NOW)])
            found = one.euids([f"ehr|E{i}", f"lab|L{i}"])
            assert found[f"ehr|E{i}"] == found[f"lab|L{i}"], f"round {i}: two persons {found}"
    finally:
        one.close()
        two.close()


def test_a_bridge_racing_an_operator_merge_leaves_no_record_on_a_retired_person(mpi_dsn, rec, sql):
    one = MpiStore.open(mpi_dsn, default_model(), max_size=1, decide=slow_decide)
    two = MpiStore.open(mpi_dsn, default_model(), max_size=1, run_migrations=False)
    try:
        for i in range(10):
            dob, family = f"19{60 + i}-05-06", FAMILIES[i]
            (a,) = one.link([rec(f"ehr|A{i}", given="ANN", family=family, dob=dob)], NOW)
            (b,) = one.link([rec(f"lab|B{i}", given="BRUNO", family=FAMILIES[-1 - i], dob=f"19{40 + i}-01-02")], NOW)
            _race([lambda: one.link([rec(f"claims|C{i}", given="ANN", family=family, dob=dob,
                                         phone=f"773555{i:04d}")], NOW),
                   lambda: two.merge(b["euid"], a["euid"], "steward1")])
            assert sql("SELECT count(*) FROM source_record r JOIN person p ON p.euid = r.euid "
                       "WHERE p.retired_into IS NOT NULL") == [(0,)]
            found = one.euids([f"ehr|A{i}", f"lab|B{i}", f"claims|C{i}"])
            assert len(set(found.values())) == 1, found
    finally:
        one.close()
        two.close()
