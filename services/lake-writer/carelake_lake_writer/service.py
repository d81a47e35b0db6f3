"""The lake-writer service: Silver, MPI links, raw arrivals and dead letters -> Gold, over the runtime.

Per consumed record (``process`` is pure; the sink does the I/O):

* ``silver.linked.v1`` -> a ``silver_resources`` row (the FHIR JSON whole, with lineage), a
  ``resource_lineage`` row (raw message -> resource) and, for
  the resource types Gold has facts for, one fact row (``flatten.py``). A resource that is not JSON
  is rejected to ``dlq.lake-writer.v1``; a resource whose flattening fails keeps its Silver row and
  the fact part is rejected (``part="fact"``), so one odd resource never blocks the stream.
  With ``at_rest`` (the running service), each resource is also handed to the Silver Parquet lake
  (``parquet.py``) with where it was consumed and the same rows, so nothing is flattened twice.
* ``mpi.links.v1`` -> an ``euid_map`` row (the latest event per record_key wins); tombstones skipped.
* ``bronze.raw.v1`` -> a ``raw_arrivals`` row: metadata only, never the payload bytes.
* ``dlq.normalizer.v1``, ``dlq.ingest-gateway.v1``, ``dlq.dedup-mpi.v1`` -> ``dead_letters`` rows
  (reason and location, never the payload).

The Gold database is the path of ``CARELAKE_GOLD_URL`` (``http://host:8123/<database>``), default
``carelake``; it is created and migrated at start-up and its columns are checked against the writer's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

from carelake.config import Settings
from carelake.errors import TransientError
from carelake.gold.client import gold_client
from carelake.stream.runtime import StreamService
from carelake.stream.types import Output, Record, Reject, Write
from carelake_lake_writer.gold.sink import GoldSink
from carelake_lake_writer.p360 import Refresher
from carelake_lake_writer.parquet import Compactor, LakeSink, ParquetSink, SilverAtRest, open_lake
from carelake_lake_writer.rows import (
    BadResource,
    dead_letter_row,
    fact_row,
    lineage_row,
    link_row,
    parse_resource,
    raw_row,
    silver_row,
)

log = logging.getLogger("carelake.lake_writer")

NAME = "lake-writer"
DEFAULT_DATABASE = "carelake"
LINKED_TOPIC = "silver.linked.v1"
LINKS_TOPIC = "mpi.links.v1"
RAW_TOPIC = "bronze.raw.v1"
DLQ_INPUTS = ("dlq.normalizer.v1", "dlq.ingest-gateway.v1", "dlq.dedup-mpi.v1")
INPUTS = (LINKED_TOPIC, LINKS_TOPIC, RAW_TOPIC, *DLQ_INPUTS)


def gold_database(url: str) -> str:
    """The Gold database named by the URL's path (or ``?database=``), else ``carelake``."""
    parts = urlsplit(url)
    return unquote(parts.path.strip("/")) or dict(parse_qsl(parts.query)).get("database") or DEFAULT_DATABASE


class LakeWriter:
    """The process function: routes each record by the logical topic it came from."""

    def __init__(self, at_rest: bool = False) -> None:
        self.at_rest = at_rest  # also emit SilverAtRest items for the Parquet lake
        self._kinds: dict[str, str] = {}  # physical topic -> logical topic (prefixes differ per environment)

    def kind(self, topic: str) -> str:
        kind = self._kinds.get(topic)
        if kind is None:
            kind = next((t for t in INPUTS if topic.endswith(t)), "")  # physical = prefix + logical
            self._kinds[topic] = kind
        return kind

    def __call__(self, batch: Sequence[Record]) -> list[Output]:
        out: list[Output] = []
        for record in batch:
            value = record.value
            if value is None:  # a compaction tombstone
                continue
            kind = self.kind(record.topic)
            if kind == LINKED_TOPIC:
                self._silver(record, out)
            elif kind == LINKS_TOPIC:
                out.append(Write(link_row(value)))
            elif kind == RAW_TOPIC:
                out.append(Write(raw_row(value)))
            elif kind in DLQ_INPUTS:
                out.append(Write(dead_letter_row(value)))
            else:
                out.append(Reject(record, f"the lake-writer does not read topic {record.topic!r}", code="unknown_topic"))
        return out

    def _silver(self, record: Record, out: list[Output]) -> None:
        envelope = record.value
        try:
            resource = parse_resource(envelope)
        except BadResource as exc:
            out.append(Reject(record, str(exc), code=exc.code))
            return
        silver = silver_row(envelope)
        out.append(Write(silver))
        out.append(Write(lineage_row(envelope)))
        try:
            fact = fact_row(envelope, resource)
        except Exception as exc:  # noqa: BLE001 - one odd resource must not stop the stream; its Silver row stays
            out.append(Reject(record, f"{envelope.get('resource_type')} {envelope.get('id')}: could not flatten "
                                      f"({type(exc).__name__}: {exc})", code="flatten_failed", part="fact"))
            fact = None
        else:
            if fact is not None:
                out.append(Write(fact))
        if self.at_rest:
            out.append(Write(SilverAtRest(record.topic, record.partition, record.offset, silver, fact)))


def build(settings: Settings) -> StreamService:
    """The lake-writer over the runtime; Gold is migrated and checked now if it answers, else at the first write.

    Silver resources also land as Parquet in the lake ``CARELAKE_LAKE_URI`` names (default
    ``lake_root(settings)``, ``<bronze parent>/lake``; or ``s3://bucket/prefix``): a missing S3 bucket is a
    ConfigError now. A background ``Compactor`` rolls the day folders' part files every
    ``lake_compact_interval_s`` (0 = never) while the service runs.
    """
    database = gold_database(settings.gold)
    # database=None: the client must work before the database exists; every statement names it.
    refresher = Refresher() if settings.p360_refresh_interval_s > 0 else None
    gold = GoldSink(lambda: gold_client(settings.gold, database=None), database, refresher)
    try:
        gold.prepare()
    except TransientError as exc:
        log.warning("Gold not reachable at start-up; will retry at the first write", extra={"error": str(exc)})
    lake = open_lake(settings)
    parquet = ParquetSink(lake)
    try:
        parquet.prepare()  # ConfigError: no such bucket, access refused
    except TransientError as exc:
        log.warning("the Parquet lake is not reachable at start-up; will retry at the first write",
                    extra={"lake": lake.uri, "error": str(exc)})
    compactor = Compactor(lake, interval_s=settings.lake_compact_interval_s,
                          min_parts=settings.lake_compact_min_parts, target_mb=settings.lake_compact_target_mb)
    log.info("Silver at rest as Parquet", extra={"lake": lake.uri, "compact_interval_s": compactor.interval_s})
    return StreamService(name=NAME, inputs=list(INPUTS), process=LakeWriter(at_rest=True),
                         sink=LakeSink(gold, parquet), background=[
                             *([compactor] if compactor.interval_s > 0 else []),
                             *([gold.refresh_every(settings.p360_refresh_interval_s)] if refresher else [])])
