"""The MPI service: silver.fhir.v1 -> silver.linked.v1 (+ mpi.links.v1), over the runtime, and its operator API.

Per batch of Silver envelopes:

1. every Patient resource becomes a PersonRecord (the last one per source record in the batch wins)
   and is linked in one PostgreSQL transaction (``MpiStore.link``): new records are matched on
   arrival, known ones updated;
2. a retired registration (an HL7 A40's ``Patient.link`` type ``replaced-by``) merges into the
   surviving registration's person (``MpiStore.merge_records``), decided by the source;
3. every other source patient key the batch mentions (e.g. a wearables user seen only on
   Observations) is registered if unknown, as a person flagged unlinkable (``MpiStore.ensure``);
4. every envelope is re-emitted on silver.linked.v1 stamped with its record's current EUID and
   keyed by it, so one person's resources from every source share a partition;
5. the decisions go to the compacted mpi.links.v1 through the store's outbox: events are rows of
   ``mpi_event`` written in the same transactions as the links; a batch emits every unpublished
   event and its sink marks them published only after the broker has acknowledged them, so a
   crash between the database and the broker re-sends instead of losing (consumers dedupe by
   event_id; the topic keeps the latest per record).

A database that fails raises TransientError from the store; the runtime retries the batch with
backoff and commits nothing meanwhile (decisions already written are found again as "known,
unchanged" and their events are still in the outbox).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from carelake.config import Settings, parse_pairs
from carelake.stream.runtime import StreamService
from carelake.stream.types import Emit, Output, Record, Reject, Write
from carelake_dedup_mpi.person import PersonRecord
from carelake_dedup_mpi.standardize import from_patient

log = logging.getLogger("carelake.dedup_mpi")

NAME = "dedup-mpi"
SILVER_TOPIC = "silver.fhir.v1"
LINKED_TOPIC = "silver.linked.v1"
LINKS_TOPIC = "mpi.links.v1"

LINKED = Counter("carelake_mpi_resources_linked_total", "Silver resources re-emitted with an EUID, by source",
                 ["source"])
UNKEYED = Counter("carelake_mpi_resources_unkeyed_total",
                  "Silver resources with no patient key, passed through without an EUID, by source", ["source"])
DECISIONS = Counter("carelake_mpi_decisions_total", "MPI link events by type and outcome, per source",
                    ["source", "event_type", "outcome"])
REVIEW_DEPTH = Gauge("carelake_mpi_review_queue_depth", "Open review items waiting for a data steward")
DUPLICATES = Counter("carelake_mpi_duplicates_found_total",
                     "Source records found to be a person the index already knew (auto-links and merges), "
                     "by the record's source", ["source"])
BATCH_LINK_SECONDS = Histogram("carelake_mpi_batch_link_seconds",
                               "Seconds to link one batch's Patient records in PostgreSQL (the per-record "
                               "latency of a record in that batch)",
                               buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))


def _retired_into(resource: dict) -> str | None:
    """The surviving MRN of a registration an A40 retired (its replaced-by link), else None."""
    for link in resource.get("link") or ():
        if link.get("type") == "replaced-by":
            ident = (link.get("other") or {}).get("identifier") or {}
            if ident.get("value"):
                return str(ident["value"])
    return None


def _source_of(key: str) -> str:
    return key.partition("|")[0]


class Mpi:
    """The service's process function over an MpiStore (the PostgreSQL index)."""

    def __init__(self, store: Any, outbox_batch: int = 5000, review_every_s: float = 10.0) -> None:
        self.store = store
        self.outbox_batch = outbox_batch
        self.review_every_s, self._review_at = review_every_s, 0.0

    def process(self, batch: Sequence[Record]) -> list[Output]:
        now = datetime.now(UTC)
        out: list[Output] = []
        people: dict[str, PersonRecord] = {}
        merges: list[tuple[str, str, str]] = []  # (surviving key, retired key, source)
        keys: set[str] = set()
        kept: list[Record] = []
        for record in batch:
            env = record.value
            key = env.get("source_patient_key")
            if key and "|" not in key:  # not <source>|<id>: nothing the index can key (passes through)
                key = None
            if env["resource_type"] == "Patient" and key:
                try:
                    resource = json.loads(env["resource"])
                except ValueError as exc:  # the normalizer validated it: a corrupt envelope
                    out.append(Reject(record, f"Patient resource is not JSON: {exc}", code="invalid_resource"))
                    continue
                surviving = _retired_into(resource)
                if surviving is not None:
                    source = _source_of(key)
                    merges.append((f"{source}|{surviving}", key, source))
                else:
                    people[key] = from_patient(resource, env["source"], key)
            if key:
                keys.add(key)
            kept.append(record)
        if people:
            started = time.perf_counter()
            self.store.link(list(people.values()), now)
            BATCH_LINK_SECONDS.observe(time.perf_counter() - started)
        if keys - people.keys():
            self.store.ensure(sorted(keys - people.keys()), now)
        for surviving, retired, source in merges:
            self.store.merge_records(surviving, retired, f"source:{source}", now)
        euids = self.store.euids(sorted(keys)) if keys else {}
        for record in kept:
            env = record.value
            euid = euids.get(env.get("source_patient_key") or "")
            if euid is None:
                UNKEYED.labels(env["source"]).inc()
                out.append(Emit(LINKED_TOPIC, env, record.key))
                continue
            LINKED.labels(env["source"]).inc()
            out.append(Emit(LINKED_TOPIC, {**env, "euid": euid}, euid))
        out.extend(self._outbox())
        if time.monotonic() - self._review_at >= self.review_every_s:
            REVIEW_DEPTH.set(self.store.open_reviews())
            self._review_at = time.monotonic()
        return out

    def _outbox(self) -> list[Output]:
        """Every unpublished decision as an Emit, and one Write to mark them published once acknowledged."""
        events = self.store.unpublished(self.outbox_batch)
        if not events:
            return []
        for e in events:
            source = _source_of(e["record_key"])
            DECISIONS.labels(source, e["event_type"], e.get("outcome") or "").inc()
            if e.get("outcome") == "auto_link" or e["event_type"] == "MERGE":
                DUPLICATES.labels(source).inc()
        emits: list[Output] = [Emit(LINKS_TOPIC, e, e["record_key"]) for e in events]
        return [*emits, Write([e["event_id"] for e in events])]


class OutboxSink:
    """The runtime's sink: marks emitted events published (after the broker acknowledged them)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def write(self, items: Sequence[Any], /) -> None:
        ids = [event_id for batch in items for event_id in batch]
        if ids:
            self.store.mark_published(ids)


class MpiService:
    """The Runnable `carelake run dedup-mpi` drives: the stream loop plus the operator API."""

    name = NAME

    def __init__(self, settings: Settings) -> None:
        from carelake.services import runner_for
        from carelake_dedup_mpi.api import create_app
        from carelake_dedup_mpi.model import Model, default_model
        from carelake_dedup_mpi.store.mpi import MpiStore

        model = Model.from_json(json.loads(settings.mpi_model.read_text())) if settings.mpi_model else default_model()
        self.store = MpiStore.open(settings.postgres_dsn, model)
        stream = StreamService(name=NAME, inputs=[SILVER_TOPIC], outputs=[LINKED_TOPIC, LINKS_TOPIC],
                               process=Mpi(self.store).process, sink=OutboxSink(self.store))
        self.runner = runner_for(stream, settings)
        keys = parse_pairs(settings.mpi_api_key_hashes.get_secret_value(), "CARELAKE_MPI_API_KEY_HASHES")
        import uvicorn

        self.api = uvicorn.Server(uvicorn.Config(create_app(self.store, keys or None), host=settings.mpi_api_host,
                                                 port=settings.mpi_api_port, log_config=None))
        self._threads: list[threading.Thread] = []

    def run(self) -> None:
        self._threads = [threading.Thread(target=self.api.run, name="api", daemon=True)]
        self._threads[0].start()
        log.info("operator API started", extra={"port": self.api.config.port})
        try:
            self.runner.run()
        finally:
            self.api.should_exit = True
            self._threads[0].join(10)
            self.store.close()

    def stop(self, *_: object) -> None:
        self.runner.stop()

    def health(self) -> tuple[bool, dict]:
        ok, details = self.runner.health()
        api = bool(self._threads) and self._threads[0].is_alive() and self.api.started
        return ok and api, {**details, "api_listening": api}


def build(settings: Settings) -> MpiService:
    """The MPI as a Runnable (``carelake run dedup-mpi``)."""
    return MpiService(settings)
