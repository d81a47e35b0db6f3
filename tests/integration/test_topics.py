"""`carelake topics create` and the start-up check, on the real broker."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from carelake.config import Settings
from carelake.errors import TopicError
from carelake.serde import SchemaRegistry
from carelake.stream.admin import check_topics, create_topics, read_contracts
from carelake.topics import Catalog

pytestmark = pytest.mark.integration


def _register(stack: Settings, catalog: Catalog, topic: str, schema: dict, fingerprint: str) -> None:
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    value = {"schema": "raw_envelope", "fingerprint": fingerprint, "full_name": schema["name"],
             "schema_json": json.dumps(schema)}
    producer.produce(catalog.contracts_topic, key=catalog.physical(topic).encode(), value=json.dumps(value).encode())
    producer.flush(10)


def test_create_makes_every_topic_as_declared_and_is_idempotent(stack: Settings, catalog: Catalog) -> None:
    first = create_topics(catalog, stack.bootstrap)
    created = {r.name for r in first if r.action == "created"}
    assert {t.physical for t in catalog.topics.values()} | {catalog.contracts_topic} == created
    registered = {r.name for r in first if r.action == "registered"}
    assert registered == {t.physical for t in catalog.topics.values() if t.is_avro}

    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    meta = admin.list_topics(timeout=10).topics
    assert len(meta[catalog.physical("bronze.raw.v1")].partitions) == catalog.get("bronze.raw.v1").partitions
    links = ConfigResource(ConfigResource.Type.TOPIC, catalog.physical("mpi.links.v1"))
    config = next(iter(admin.describe_configs([links]).values())).result()
    assert config["cleanup.policy"].value == "compact"

    second = create_topics(catalog, stack.bootstrap)
    assert {r.action for r in second} == {"exists"}
    check_topics(catalog, stack.bootstrap, list(catalog.topics))


def test_check_names_missing_and_mismatched_topics(stack: Settings, catalog: Catalog) -> None:
    with pytest.raises(TopicError, match="missing topic"):
        check_topics(catalog, stack.bootstrap, ["bronze.raw.v1"])
    create_topics(catalog, stack.bootstrap)
    current = SchemaRegistry.load().get("raw_envelope")
    _register(stack, catalog, "bronze.raw.v1", current.raw, "00" * 8)
    with pytest.raises(TopicError, match=r"bronze.raw.v1 is registered with schema raw_envelope \(0000000000000000\)"):
        check_topics(catalog, stack.bootstrap, ["bronze.raw.v1", "silver.fhir.v1"])


def test_create_refuses_a_schema_that_cannot_read_the_registered_one(stack: Settings, catalog: Catalog) -> None:
    create_topics(catalog, stack.bootstrap)
    current = SchemaRegistry.load().get("raw_envelope").raw
    older = {**current, "fields": [f for f in current["fields"] if f["name"] != "sha256"]}
    _register(stack, catalog, "bronze.raw.v1", older, "11" * 8)
    with pytest.raises(TopicError, match="not backward compatible.*sha256"):
        create_topics(catalog, stack.bootstrap)


def test_create_registers_a_compatible_new_version(stack: Settings, catalog: Catalog) -> None:
    create_topics(catalog, stack.bootstrap)
    current = SchemaRegistry.load().get("raw_envelope")
    older = {**current.raw, "fields": [*current.raw["fields"],
                                       {"name": "legacy", "type": "string", "doc": "dropped later"}]}
    _register(stack, catalog, "bronze.raw.v1", older, "22" * 8)
    results = create_topics(catalog, stack.bootstrap)
    assert [r.action for r in results if r.name == catalog.physical("bronze.raw.v1")] == ["exists", "updated"]
    assert read_contracts(catalog, stack.bootstrap)[catalog.physical("bronze.raw.v1")]["fingerprint"] == current.fingerprint.hex()
