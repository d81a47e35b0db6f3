"""The MPI service's process function over a real PostgreSQL index: Silver in, linked Silver and link events out."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from carelake.stream.types import Emit, Record, Write
from carelake_dedup_mpi.service import LINKED_TOPIC, LINKS_TOPIC, Mpi, OutboxSink
from carelake_dedup_mpi.store.mpi import MpiStore

T0 = int(datetime(2026, 1, 15, 12, tzinfo=UTC).timestamp() * 1_000_000)


def patient(source: str, mrn: str, given: str, family: str, dob: str, **extra: object) -> dict:
    return {"resourceType": "Patient", "id": f"{source}-{mrn}",
            "identifier": [{"system": f"urn:carelake:{source}:id", "value": mrn,
                            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                 "code": "MR"}]}}],
            "name": [{"family": family, "given": [given]}], "birthDate": dob, "gender": "female",
            "telecom": [{"system": "phone", "value": "3125550188", "use": "home"}],
            "address": [{"line": ["363 Banks St"], "city": "Chicago", "state": "IL", "postalCode": "60601"}],
            **extra}


def envelope(source: str, key: str | None, resource: dict) -> Record:
    env = {"id": resource["id"], "resource_type": resource["resourceType"], "resource": json.dumps(resource),
           "fhir_version": "4.0.1", "source": source, "source_patient_key": key, "euid": None,
           "event_time": None, "processed_at": T0,
           "lineage": {"raw_id": "r1", "bronze_key": f"{source}/2026/01/15/x", "byte_offset": 0, "byte_length": 1,
                       "source_message_id": "m1"},
           "phi_paths": [], "security_labels": [], "replayed": False}
    return Record.of(env, key=key)


def linked(out: list) -> dict[str, str | None]:
    """resource id -> the EUID it was re-emitted with."""
    return {json.loads(e.value["resource"])["id"]: e.value["euid"] for e in out
            if isinstance(e, Emit) and e.topic == LINKED_TOPIC}


def test_one_person_from_two_sources_gets_one_euid_and_every_resource_is_stamped(store: MpiStore) -> None:
    mpi = Mpi(store)
    obs = {"resourceType": "Observation", "id": "obs-1", "status": "final", "code": {"text": "A1c"}}
    org = {"resourceType": "Organization", "id": "org-1", "name": "Lab"}
    out = mpi.process([
        envelope("ehr", "ehr|E1", patient("ehr", "E1", "Ann", "Smith", "1965-03-04")),
        envelope("lab", "lab|L1", patient("lab", "L1", "Anne", "Smith", "1965-03-04")),
        envelope("lab", "lab|L1", obs),
        envelope("lab", None, org),
    ])
    stamped = linked(out)
    assert stamped["ehr-E1"] == stamped["lab-L1"] == stamped["obs-1"] is not None
    assert stamped["org-1"] is None  # not tied to a patient: passed through unstamped
    keyed = {e.value["id"]: e.key for e in out if isinstance(e, Emit) and e.topic == LINKED_TOPIC}
    assert keyed["obs-1"] == stamped["obs-1"]  # one person's resources share a partition key: the EUID
    events = [e.value for e in out if isinstance(e, Emit) and e.topic == LINKS_TOPIC]
    assert {(e["record_key"], e["event_type"], e["outcome"]) for e in events} == {
        ("ehr|E1", "LINK", "new_person"), ("lab|L1", "LINK", "auto_link")}
    assert all(isinstance(e, Emit) and e.key == e.value["record_key"] for e in out
               if isinstance(e, Emit) and e.topic == LINKS_TOPIC)


def test_events_stay_in_the_outbox_until_the_sink_marks_them_published(store: MpiStore) -> None:
    mpi, sink = Mpi(store), OutboxSink(store)
    first = mpi.process([envelope("ehr", "ehr|E1", patient("ehr", "E1", "Ann", "Smith", "1965-03-04"))])
    sent = [e.value["event_id"] for e in first if isinstance(e, Emit) and e.topic == LINKS_TOPIC]
    assert len(sent) == 1
    # The broker never acknowledged (crash before the sink ran): the next batch sends them again.
    again = mpi.process([envelope("ehr", "ehr|E1", patient("ehr", "E1", "Ann", "Smith", "1965-03-04"))])
    assert [e.value["event_id"] for e in again if isinstance(e, Emit) and e.topic == LINKS_TOPIC] == sent
    sink.write([w.item for w in again if isinstance(w, Write)])
    quiet = mpi.process([envelope("ehr", "ehr|E1", patient("ehr", "E1", "Ann", "Smith", "1965-03-04"))])
    assert not [e for e in quiet if isinstance(e, Emit) and e.topic == LINKS_TOPIC]


def test_a_key_seen_without_demographics_is_its_own_unlinkable_person(store: MpiStore) -> None:
    reading = {"resourceType": "Observation", "id": "hr-1", "status": "final", "code": {"text": "HR"}}
    out = Mpi(store).process([envelope("wearables", "wearables|WU1", reading)])
    assert linked(out)["hr-1"] is not None
    (event,) = [e.value for e in out if isinstance(e, Emit) and e.topic == LINKS_TOPIC]
    assert event["record_key"] == "wearables|WU1" and event["outcome"] == "unlinkable"


def test_an_a40_merges_the_retired_registration_into_the_surviving_one(store: MpiStore) -> None:
    mpi = Mpi(store)
    # Two registrations of one person in the EHR, too different for the matcher to join.
    mpi.process([envelope("ehr", "ehr|E1", patient("ehr", "E1", "Ann", "Smith", "1965-03-04")),
                 envelope("ehr", "ehr|E2", patient("ehr", "E2", "Beth", "Jones", "1971-08-09"))])
    before = store.euids(["ehr|E1", "ehr|E2"])
    assert before["ehr|E1"] != before["ehr|E2"]
    retired = {"resourceType": "Patient", "id": "ehr-E2", "active": False,
               "identifier": [{"system": "urn:carelake:ehr:id", "value": "E2"}],
               "link": [{"other": {"reference": "Patient/ehr-E1", "identifier": {"value": "E1"}},
                         "type": "replaced-by"}]}
    out = mpi.process([envelope("ehr", "ehr|E2", retired)])
    after = store.euids(["ehr|E1", "ehr|E2"])
    assert after["ehr|E1"] == after["ehr|E2"]
    merges = [e.value for e in out if isinstance(e, Emit) and e.topic == LINKS_TOPIC
              and e.value["event_type"] == "MERGE"]
    assert merges and merges[0]["decided_by"] == "source:ehr"
