"""MpiStore.link / ensure / euids / merge_records against the real PostgreSQL, with the real matcher."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from carelake.serde import SchemaRegistry
from carelake_dedup_mpi import blocking
from carelake_dedup_mpi.memory_index import MemoryIndex
from carelake_dedup_mpi.model import default_model
from carelake_dedup_mpi.store.index import PgIndex
from carelake_dedup_mpi.store.mpi import MpiStore

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
EVENT_FIELDS = {"event_id", "event_type", "euid", "record_key", "previous_euid", "score", "outcome", "rule",
                "decided_by", "contributions", "occurred_at"}


def test_one_person_from_two_sources_gets_one_euid(store, rec, ann, sql):
    first = store.link([rec("ehr|A1", **ann)], NOW)
    second = store.link([rec("lab|L1", given="ANNE", family="SMITH", dob="1965-03-04", phone="3125550188")], LATER)
    assert [e["event_type"] for e in first + second] == ["LINK", "LINK"]
    assert first[0]["outcome"] == "new_person" and second[0]["outcome"] == "auto_link"
    assert second[0]["euid"] == first[0]["euid"] and second[0]["score"] > 6.64
    assert second[0]["contributions"]["birth_date"] > 0
    assert store.euids(["ehr|A1", "lab|L1", "lab|nobody"]) == {"ehr|A1": first[0]["euid"], "lab|L1": first[0]["euid"]}
    # The golden record takes the EHR's given name (most trusted source) and says where it came from.
    person = store.person(first[0]["euid"], "steward1")
    assert person["golden"]["given"] == "ANN" and person["golden_sources"]["given"] == "ehr|A1"
    assert {r["record_key"] for r in person["records"]} == {"ehr|A1", "lab|L1"}
    assert sql("SELECT count(*) FROM person") == [(1,)]


def test_events_fit_the_avro_contract_and_are_stored(store, rec, ann, sql):
    events = store.link([rec("ehr|A1", **ann), rec("lab|L1", **ann)], NOW)
    schema = SchemaRegistry.load().get("mpi_link_event")
    for e in events:
        assert set(e) == EVENT_FIELDS and e["occurred_at"] == NOW and len(e["event_id"]) == 32
        assert schema.decode(schema.encode(e))["euid"] == e["euid"]
    stored = sql("SELECT event_id, event_type FROM mpi_event ORDER BY id")
    assert stored == [(e["event_id"], e["event_type"]) for e in events]
    assert [e["event_id"] for e in store.unpublished()] == [e["event_id"] for e in events]
    store.mark_published([events[0]["event_id"]])
    assert [e["event_id"] for e in store.unpublished()] == [events[1]["event_id"]]
    with pytest.raises(psycopg.Error, match="append-only"):
        sql("UPDATE mpi_event SET euid = 'X'")


def test_a_batch_sees_its_own_earlier_records(store, rec, ann):
    events = store.link([rec("ehr|A1", **ann), rec("lab|L1", **ann), rec("claims|C1", **ann)], NOW)
    assert len({e["euid"] for e in events}) == 1
    assert [e["outcome"] for e in events] == ["new_person", "auto_link", "auto_link"]


def test_known_record_unchanged_is_silent_and_changed_is_an_update(store, rec, ann, sql):
    (link,) = store.link([rec("ehr|A1", **ann)], NOW)
    assert store.link([rec("ehr|A1", **ann)], LATER) == []
    assert store.link([rec("ehr|A1", **ann, asserted_at="2026-03-01T12:05:00+00:00")], LATER) == []
    (update,) = store.link([rec("ehr|A1", **{**ann, "phone": "3125550199"})], LATER)
    assert update["event_type"] == "UPDATE" and update["euid"] == link["euid"]
    assert sql("SELECT key FROM blocking_key WHERE key LIKE 'ph:%'") == [("ph:3125550199",)]
    assert sql("SELECT golden->>'phone' FROM person") == [("3125550199",)]


def test_a_bridging_record_merges_two_persons_into_the_older(store, rec, sql):
    a = rec("ehr|A", given="ANN", family="SMITH", dob="1965-03-04")
    b = rec("lab|B", given="ANN", family="JONES", phone="3125550188", ssn="123456789", address_line="5 OAK AVE")
    b2 = rec("lab|B2", given="ANN", family="JONES", phone="3125550188", ssn="123456789", address_line="5 OAK AVE")
    (ea,) = store.link([a], NOW)
    eb = store.link([b, b2], LATER)
    assert ea["euid"] != eb[0]["euid"] and eb[0]["euid"] == eb[1]["euid"]
    bridge = rec("claims|C", given="ANN", family="SMITH", dob="1965-03-04", phone="3125550188", ssn="123456789")
    events = store.link([bridge], LATER + timedelta(minutes=1))
    survivor, retired = ea["euid"], eb[0]["euid"]
    assert [(e["event_type"], e["record_key"]) for e in events] == [
        ("LINK", "claims|C"), ("MERGE", "lab|B"), ("MERGE", "lab|B2")]
    assert all(e["euid"] == survivor for e in events)
    assert [e["previous_euid"] for e in events[1:]] == [retired, retired]
    assert set(store.euids(["ehr|A", "lab|B", "lab|B2", "claims|C"]).values()) == {survivor}
    assert sql("SELECT retired_into FROM person WHERE euid = %s", retired) == [(survivor,)]
    # A retired EUID never comes back: not from the index, not from a lookup of the person.
    with psycopg.connect(store.pool.conninfo) as conn:
        assert {c.euid for c in PgIndex(conn).candidates(["ph:3125550188"])} == {survivor}
    assert store.person(retired, "steward1")["euid"] == survivor
    assert sql("SELECT count(*) FROM link WHERE euid = %s", retired) == [(0,)]


def test_unmerge_moves_a_record_back_to_the_person_it_was_merged_from(store, rec, sql):
    (ea,) = store.link([rec("ehr|A", given="ANN", family="SMITH", dob="1965-03-04")], NOW)
    (eb,) = store.link([rec("lab|B", given="ANN", family="JONES", phone="3125550188", ssn="123456789")], NOW)
    store.link([rec("claims|C", given="ANN", family="SMITH", dob="1965-03-04", phone="3125550188",
                    ssn="123456789")], LATER)
    assert store.euids(["lab|B"]) == {"lab|B": ea["euid"]}
    out = store.unmerge("lab|B", "steward1")
    assert out["euid"] == eb["euid"] and out["previous_euid"] == ea["euid"]
    (ev,) = out["events"]
    assert (ev["event_type"], ev["euid"], ev["previous_euid"], ev["decided_by"]) == (
        "UNMERGE", eb["euid"], ea["euid"], "steward1")
    assert store.euids(["lab|B", "ehr|A"]) == {"lab|B": eb["euid"], "ehr|A": ea["euid"]}
    assert sql("SELECT retired_into FROM person WHERE euid = %s", eb["euid"]) == [(None,)]
    # A record that joined by the matcher directly (no merge) goes to a brand-new person.
    out = store.unmerge("claims|C", "steward1")
    assert out["euid"] not in (ea["euid"], eb["euid"]) and out["euid"].startswith("E")
    assert store.person(out["euid"], "steward1")["golden"]["family"] == "SMITH"


def test_unlinkable_records_are_persons_of_their_own_and_never_candidates(store, rec, ann):
    (e1,) = store.link([rec("ehr|A1", given="ANN", family="SMITH")], NOW)  # a name alone identifies no one
    assert (e1["outcome"], e1["rule"]) == ("unlinkable", "unlinkable:no-dob-phone-ssn-or-address")
    (e2,) = store.link([rec("lab|L1", **ann)], NOW)
    assert e2["outcome"] == "new_person" and e2["euid"] != e1["euid"]
    # Once it carries enough, an unlinkable record is matched again, and joins.
    events = store.link([rec("ehr|A1", **ann)], LATER)
    # The two persons merge into the older one (the unlinkable record's, registered first).
    assert [(e["event_type"], e["record_key"]) for e in events] == [("MERGE", "lab|L1"), ("UPDATE", "ehr|A1")]
    assert events[-1]["outcome"] == "auto_link" and events[-1]["euid"] == e1["euid"]
    assert store.euids(["ehr|A1", "lab|L1"]) == {"ehr|A1": e1["euid"], "lab|L1": e1["euid"]}


def test_ensure_registers_bare_keys_once(store, rec, ann, sql):
    events = store.ensure(["wearables|u1", "wearables|u2"], NOW)
    assert [(e["event_type"], e["outcome"]) for e in events] == [("LINK", "unlinkable")] * 2
    assert store.ensure(["wearables|u1"], LATER) == []
    assert sql("SELECT unlinkable, demographics FROM source_record WHERE record_key = 'wearables|u1'") == [(True, None)]
    (ee,) = store.link([rec("ehr|A1", **ann)], LATER)
    # Demographics arrive for the bare key: it is matched, and the younger person merges into its.
    events = store.link([rec("wearables|u1", **ann)], LATER)
    assert [(e["event_type"], e["record_key"], e["previous_euid"]) for e in events] == [
        ("MERGE", "ehr|A1", ee["euid"]), ("UPDATE", "wearables|u1", None)]
    assert store.euids(["wearables|u1", "ehr|A1"]) == {"wearables|u1": events[0]["euid"], "ehr|A1": events[0]["euid"]}
    assert events[-1]["outcome"] == "auto_link"


def test_a40_merge_records_follows_the_source(store, rec, sql):
    (a,) = store.link([rec("ehr|M1", given="ANN", family="SMITH", dob="1965-03-04")], NOW)
    (b,) = store.link([rec("ehr|M2", given="BOB", family="BROWN", dob="1971-07-09")], LATER)
    events = store.merge_records("ehr|M2", "ehr|M1", "source:ehr", LATER)
    assert [(e["event_type"], e["euid"], e["previous_euid"], e["rule"]) for e in events] == [
        ("MERGE", b["euid"], a["euid"], "source_merge")]
    assert store.euids(["ehr|M1", "ehr|M2"]) == {"ehr|M1": b["euid"], "ehr|M2": b["euid"]}
    assert store.merge_records("ehr|M2", "ehr|M1", "source:ehr", LATER) == []
    # An unknown retired key is registered, then merged.
    events = store.merge_records("ehr|M2", "ehr|M9", "source:ehr", LATER)
    assert [e["event_type"] for e in events] == ["LINK", "MERGE"]
    assert store.euids(["ehr|M9"]) == {"ehr|M9": b["euid"]}


def test_review_band_queues_and_accept_merges(store, rec, sql):
    (a,) = store.link([rec("ehr|A", given="ANN", family="SMITH", dob="1965-03-04")], NOW)
    (d,) = store.link([rec("lab|D", given="ANN", family="JONES", dob="1965-03-04")], LATER)
    assert d["outcome"] == "review" and d["euid"] != a["euid"]
    (item,) = store.review_queue(10, 0, "steward1")
    assert (item["record_key"], item["candidate_euid"], item["record_euid"]) == ("lab|D", a["euid"], d["euid"])
    assert item["candidate_golden"]["family"] == "SMITH"
    out = store.accept_review(item["id"], "steward1")
    assert out["euid"] == a["euid"] and [e["event_type"] for e in out["events"]] == ["MERGE"]
    assert store.euids(["lab|D"]) == {"lab|D": a["euid"]}
    assert store.review_queue(10, 0, "steward1") == []
    assert sql("SELECT outcome, decided_by FROM link WHERE record_key = 'lab|D'") == [("manual", "steward1")]


def test_review_reject_leaves_persons_apart(store, rec):
    (a,) = store.link([rec("ehr|A", given="ANN", family="SMITH", dob="1965-03-04")], NOW)
    (d,) = store.link([rec("lab|D", given="ANN", family="JONES", dob="1965-03-04")], LATER)
    (item,) = store.review_queue(10, 0, "steward1")
    assert store.reject_review(item["id"], "steward2")["status"] == "rejected"
    assert store.euids(["lab|D", "ehr|A"]) == {"lab|D": d["euid"], "ehr|A": a["euid"]}
    assert store.review_queue(10, 0, "steward1") == []


def test_operator_merge_and_events_history(store, rec, sql):
    (a,) = store.link([rec("ehr|A", given="ANN", family="SMITH", dob="1965-03-04")], NOW)
    (b,) = store.link([rec("lab|B", given="BOB", family="BROWN", dob="1971-07-09")], NOW)
    events = store.merge(a["euid"], b["euid"], "steward1")
    assert [(e["event_type"], e["decided_by"], e["rule"]) for e in events] == [("MERGE", "steward1", "operator_merge")]
    history = store.events(b["euid"], "steward1")
    assert [e["event_type"] for e in history] == ["LINK", "MERGE"]
    assert [m["euid"] for m in store.person(a["euid"], "steward1")["merged_from"]] == [b["euid"]]
    who = sql("SELECT who, action, target FROM audit ORDER BY id")
    assert who == [("steward1", "merge", f"{b['euid']}->{a['euid']}"), ("steward1", "events", b["euid"]),
                   ("steward1", "person", a["euid"])]


def test_oversized_blocks_are_skipped_like_the_matchers_index(mpi_dsn, rec):
    store = MpiStore.open(mpi_dsn, default_model(), cap=lambda key: 2 if key.startswith("d:") else 200)
    try:
        people = [rec(f"ehr|{i}", given=g, family=f, dob="1965-03-04", phone=f"31255501{i:02d}")
                  for i, (g, f) in enumerate([("ANN", "SMITH"), ("BRUNO", "GARCIA"), ("CHIDI", "OKAFOR")])]
        store.link(people, NOW)
        with psycopg.connect(mpi_dsn) as conn:
            rows, oversized = PgIndex(conn, store.cap).lookup(["d:19650304", "ph:3125550101"])
            assert oversized == {"d:19650304"} and [r.record.record_key for r in rows] == ["ehr|1"]
            assert [c.record.record_key for c in PgIndex(conn, store.cap).candidates(["d:19650304"])] == []
    finally:
        store.close()


def test_the_index_reads_back_exactly_what_was_linked(store, rec, ann, mpi_dsn):
    full = rec("ehr|F1", **ann, middle="MARIE", ssn="219099999", other_names=("JONES", "ANNIE"),
               asserted_at="2026-02-01T10:00:00+00:00")
    bare = rec("lab|F2", given="BRUNO", family="GARCIA", dob="1971-07-09")
    store.link([full, bare], NOW)
    with psycopg.connect(mpi_dsn) as conn:
        got = {c.record.record_key: c.record for c in PgIndex(conn).candidates(["d:19650304", "d:19710709"])}
    assert got == {"ehr|F1": full, "lab|F2": bare}


def test_the_stream_scores_the_same_candidates_as_the_memory_index(store, rec, sql):
    # 12 strangers born the same day as Ann (a common birth date), and Ann's EHR record
    strangers = [rec(f"ehr|S{n}", given="ZED", family=f"STRANGER{chr(65 + n)}", dob="1965-03-04",
                     postal_code=f"9{n:04d}", phone=f"90955501{n:02d}") for n in range(12)]
    ann = rec("ehr|A1", given="ANN", family="SMITH", dob="1965-03-04", phone="3125550188", postal_code="60601")
    store.link([*strangers, ann], NOW)
    # Ann again: nickname, moved, no phone — she shares the birth date and family name + year
    again = rec("lab|L1", given="ANNIE", family="SMITH", dob="1965-03-04", postal_code="60699")
    with psycopg.connect(store.pool.conninfo) as conn:
        found = PgIndex(conn, store.cap).fetch(blocking.keys(again), [blocking.keys(again)])
        assert len(found.blocks["d:19650304"]) == 13 and [r.record.record_key for r in found.rows] == ["ehr|A1"]
        cands = PgIndex(conn, store.cap).candidates(blocking.keys(again))
    memory = MemoryIndex()
    for r in [*strangers, ann]:
        memory.add(r, "E")
    assert [c.record.record_key for c in cands] == [c.record.record_key
                                                    for c in memory.candidates(blocking.keys(again))] == ["ehr|A1"]
    (event,) = store.link([again], LATER)
    assert event["outcome"] == "auto_link"
    assert sql("SELECT euid FROM source_record WHERE record_key = 'ehr|A1'") == [(event["euid"],)]
