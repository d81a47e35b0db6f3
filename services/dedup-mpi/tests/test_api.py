"""The operator API over real HTTP (uvicorn in a thread), against the real PostgreSQL.

(fastapi's TestClient needs httpx, which the project does not install; a real server is closer anyway.)
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import uvicorn

from carelake.auth import hash_key
from carelake_dedup_mpi.api import create_app

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = "steward-console-key"


class Api:
    def __init__(self, port: int) -> None:
        self.port = port

    def call(self, method: str, path: str, body: dict | None = None, operator: str | None = "steward1",
             key: str | None = KEY) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if operator is not None:
            headers["X-Operator"] = operator
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()


@pytest.fixture
def api(store) -> Iterator[Api]:
    server = uvicorn.Server(uvicorn.Config(create_app(store, {"console": hash_key(KEY)}), host="127.0.0.1", port=0,
                                           log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    yield Api(server.servers[0].sockets[0].getsockname()[1])
    server.should_exit = True
    thread.join(10)


def test_every_call_needs_an_operator_and_a_key(api, store, rec, ann, sql):
    (e,) = store.link([rec("ehr|A1", **ann)], NOW)
    status, body = api.call("GET", f"/v1/persons/{e['euid']}", operator=None)
    assert (status, body["error"]) == (401, "operator_required")
    assert api.call("GET", f"/v1/persons/{e['euid']}", key=None)[0] == 401
    status, body = api.call("GET", f"/v1/persons/{e['euid']}", key="wrong")
    assert (status, body["error"]) == (401, "unauthorized")
    assert api.call("POST", "/v1/merge", {"survivor": e["euid"], "retired": "E0"}, operator="bad id!")[0] == 401
    assert sql("SELECT count(*) FROM audit") == [(0,)]  # refused at the door, nothing was read


def test_person_lookup_and_events_are_audited_reads(api, store, rec, ann, sql):
    (a,) = store.link([rec("ehr|A1", **ann)], NOW)
    store.link([rec("lab|L1", **ann)], NOW)
    status, person = api.call("GET", f"/v1/persons/{a['euid']}")
    assert status == 200 and person["golden"]["family"] == "SMITH"
    assert [(r["record_key"], r["outcome"]) for r in person["records"]] == [("ehr|A1", "new_person"),
                                                                          ("lab|L1", "auto_link")]
    assert person["records"][1]["contributions"]["birth_date"] > 0
    assert api.call("GET", "/v1/lookup?key=lab|L1") == (200, {"record_key": "lab|L1", "euid": a["euid"]})
    assert api.call("GET", "/v1/lookup?source=lab&id=L1")[1]["euid"] == a["euid"]
    status, body = api.call("GET", "/v1/lookup?key=lab|nobody")
    assert (status, body["error"]) == (404, "not_found")
    assert api.call("GET", "/v1/lookup")[0] == 422
    status, events = api.call("GET", f"/v1/persons/{a['euid']}/events")
    assert status == 200 and [e["event_type"] for e in events["events"]] == ["LINK", "LINK"]
    assert api.call("GET", "/v1/persons/Enope/events")[0] == 404
    assert api.call("GET", "/v1/persons/Enope")[0] == 404
    audit = sql("SELECT who, action, target, detail->>'error' FROM audit ORDER BY id")
    assert audit == [("steward1", "person", a["euid"], None), ("steward1", "lookup", "lab|L1", None),
                     ("steward1", "lookup", "lab|L1", None), ("steward1", "lookup", "lab|nobody", "not_found"),
                     ("steward1", "events", a["euid"], None), ("steward1", "events", "Enope", "not_found"),
                     ("steward1", "person", "Enope", "not_found")]


def test_review_queue_accept_and_reject(api, store, rec):
    (a,) = store.link([rec("ehr|A", given="ANN", family="SMITH", dob="1965-03-04")], NOW)
    (d,) = store.link([rec("lab|D", given="ANN", family="JONES", dob="1965-03-04")], NOW)
    (e,) = store.link([rec("lab|E", given="ANN", family="WHITE", dob="1965-03-04")], NOW)  # asks about A and D
    status, queue = api.call("GET", "/v1/review?limit=10")
    assert status == 200 and queue["limit"] == 10
    items = {i["record_key"]: i for i in queue["items"]}
    assert items["lab|D"]["candidate_euid"] == a["euid"]
    status, out = api.call("POST", f"/v1/review/{items['lab|D']['id']}/accept")
    assert status == 200 and out["euid"] == a["euid"] and out["events"][0]["event_type"] == "MERGE"
    status, body = api.call("POST", f"/v1/review/{items['lab|D']['id']}/accept")
    assert (status, body["error"]) == (409, "conflict")
    for item in queue["items"]:
        if item["record_key"] == "lab|E":
            assert api.call("POST", f"/v1/review/{item['id']}/reject")[1]["status"] == "rejected"
    assert api.call("POST", "/v1/review/999999/reject")[0] == 404
    assert api.call("GET", "/v1/review?limit=0")[0] == 422
    assert api.call("GET", "/v1/review")[1]["items"] == []
    assert store.euids(["lab|D", "lab|E"]) == {"lab|D": a["euid"], "lab|E": e["euid"]}
    assert d["euid"] != a["euid"]


def test_merge_and_unmerge(api, store, rec):
    (a,) = store.link([rec("ehr|A", given="ANN", family="SMITH", dob="1965-03-04")], NOW)
    (b,) = store.link([rec("lab|B", given="BOB", family="BROWN", dob="1971-07-09")], NOW)
    status, out = api.call("POST", "/v1/merge", {"survivor": a["euid"], "retired": b["euid"]})
    assert status == 200 and out["euid"] == a["euid"]
    assert [(e["event_type"], e["decided_by"]) for e in out["events"]] == [("MERGE", "steward1")]
    status, body = api.call("POST", "/v1/merge", {"survivor": a["euid"], "retired": b["euid"]})
    assert (status, body["error"]) == (409, "conflict")
    assert api.call("POST", "/v1/merge", {"survivor": a["euid"]})[0] == 422
    assert api.call("POST", "/v1/merge", {"survivor": a["euid"], "retired": "Enope"})[0] == 404
    status, out = api.call("POST", "/v1/unmerge", {"record_key": "lab|B"})
    assert status == 200 and out["euid"] == b["euid"] and out["events"][0]["event_type"] == "UNMERGE"
    status, body = api.call("POST", "/v1/unmerge", {"record_key": "lab|B"})
    assert (status, body["error"]) == (409, "conflict")  # alone in its person again
    assert api.call("POST", "/v1/unmerge", {"record_key": "lab|nobody"})[0] == 404


def test_database_outage_is_503(api, store):
    store.close()
    status, body = api.call("GET", "/v1/lookup?key=ehr|A")
    assert (status, body["error"]) == (503, "unavailable")
