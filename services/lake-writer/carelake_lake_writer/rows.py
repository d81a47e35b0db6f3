"""Decoded topic records -> Gold rows. Pure: the service's process function is these plus routing.

A :class:`GoldRow` holds one table's values in the table's column order without ``inserted_at``,
which the sink stamps when it writes. Payload bytes (raw envelopes, dead letters) are never copied:
only their size is kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from carelake_lake_writer.flatten import flatten
from carelake_lake_writer.tables import TABLES

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class GoldRow:
    """One row for ``table``: values in ``tables.TABLES[table]`` order, ``inserted_at`` left off."""

    table: str
    values: tuple


class BadResource(ValueError):
    """The envelope's resource is not a JSON object: the record goes to the lake-writer's DLQ."""

    code = "bad_resource_json"


def micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime: the ``version`` of rows it produced."""
    delta = moment - EPOCH if moment.tzinfo else moment.replace(tzinfo=UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _ordered(table: str, values: dict[str, Any]) -> GoldRow:
    names = TABLES[table]
    return GoldRow(table, tuple(values[name] for name, _ in names[:-1]))  # the last one is inserted_at


def parse_resource(envelope: dict) -> dict:
    try:
        resource = json.loads(envelope["resource"])
    except (TypeError, ValueError) as exc:
        raise BadResource(f"resource {envelope.get('id')!r} is not JSON: {type(exc).__name__}") from None
    if not isinstance(resource, dict):
        raise BadResource(f"resource {envelope.get('id')!r} is not a JSON object")
    return resource


def _head(envelope: dict) -> dict[str, Any]:
    lineage = envelope.get("lineage") or {}
    return {
        "id": envelope["id"], "source": envelope["source"],
        "source_patient_key": envelope.get("source_patient_key") or "", "euid": envelope.get("euid") or "",
        "event_time": envelope.get("event_time"), "processed_at": envelope["processed_at"],
        "raw_id": lineage.get("raw_id") or "", "bronze_key": lineage.get("bronze_key") or "",
        "version": micros(envelope["processed_at"]),
    }


def silver_row(envelope: dict) -> GoldRow:
    """A silver.linked.v1 envelope -> its ``silver_resources`` row (the resource JSON kept whole)."""
    lineage = envelope.get("lineage") or {}
    return _ordered("silver_resources", {
        **_head(envelope), "resource_type": envelope["resource_type"],
        # The raw envelope's received_at is not on the Silver envelope; KPIs join raw_arrivals by
        # raw_id for the true ingest time, and this column keeps the best time known at write.
        "ingested_at": envelope["processed_at"],
        "byte_offset": lineage.get("byte_offset") or 0, "byte_length": lineage.get("byte_length") or 0,
        "source_message_id": lineage.get("source_message_id") or "",
        "fhir_version": envelope.get("fhir_version") or "", "resource": envelope["resource"],
        "phi_paths": list(envelope.get("phi_paths") or ()),
        "security_labels": list(envelope.get("security_labels") or ()),
        "replayed": bool(envelope.get("replayed")),
    })


def lineage_row(envelope: dict) -> GoldRow:
    """The (raw message, resource) pair of a Silver envelope, for lineage and per-message KPIs."""
    lineage = envelope.get("lineage") or {}
    return _ordered("resource_lineage", {
        "raw_id": lineage.get("raw_id") or "", "id": envelope["id"], "resource_type": envelope["resource_type"],
        "source": envelope["source"], "linked": bool(envelope.get("euid")), "processed_at": envelope["processed_at"],
        "version": micros(envelope["processed_at"]),
    })


def fact_row(envelope: dict, resource: dict) -> GoldRow | None:
    """The fact-table row of a Silver envelope's resource, or None for types without a fact table."""
    fact = flatten(resource)
    if fact is None:
        return None
    table, columns = fact
    return _ordered(table, {**_head(envelope), **columns})


def silver_rows(envelope: dict) -> list[GoldRow]:
    """Every row of a Silver envelope: ``silver_resources``, ``resource_lineage`` and, for known types, its fact."""
    fact = fact_row(envelope, parse_resource(envelope))
    return [silver_row(envelope), lineage_row(envelope)] + ([fact] if fact else [])


def link_row(event: dict) -> GoldRow:
    """An mpi.links.v1 event -> its ``euid_map`` row (the latest per record_key wins)."""
    return _ordered("euid_map", {
        "record_key": event["record_key"], "euid": event["euid"], "event_type": str(event["event_type"]),
        "previous_euid": event.get("previous_euid") or "", "event_id": event["event_id"],
        "occurred_at": event["occurred_at"], "score": event.get("score"), "outcome": event.get("outcome") or "",
        "rule": event.get("rule") or "", "decided_by": event.get("decided_by") or "",
        "version": micros(event["occurred_at"]),
    })


def raw_row(envelope: dict) -> GoldRow:
    """A bronze.raw.v1 envelope -> its ``raw_arrivals`` row: metadata only, never the payload."""
    return _ordered("raw_arrivals", {
        "id": envelope["id"], "source": envelope["source"], "format": envelope["format"],
        "content_type": envelope.get("content_type") or "", "received_at": envelope["received_at"],
        "bronze_key": envelope["bronze_key"], "sha256": envelope["sha256"],
        "byte_offset": envelope["byte_offset"], "byte_length": envelope["byte_length"],
        "inline": envelope.get("payload") is not None, "source_message_id": envelope.get("source_message_id") or "",
        "replayed": bool(envelope.get("replayed")), "version": micros(envelope["received_at"]),
    })


def dead_letter_row(record: dict) -> GoldRow:
    """A dlq.*.v1 record -> its ``dead_letters`` row: the reason and where, never the payload."""
    return _ordered("dead_letters", {
        "id": record["id"], "service": record["service"], "stage": record["stage"],
        "reason_code": record["reason_code"], "reason": record["reason"], "error_type": record["error_type"],
        "source_topic": record["source_topic"], "source_partition": record["source_partition"],
        "source_offset": record["source_offset"], "source": record.get("source") or "",
        "bronze_key": record.get("bronze_key") or "", "failed_at": record["failed_at"],
        "attempts": record.get("attempts") or 1, "payload_size": len(record.get("payload") or b""),
        "version": micros(record["failed_at"]),
    })
