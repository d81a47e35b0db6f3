"""The topic catalog matches DESIGN.md's map and the Avro contracts."""

from __future__ import annotations

from pathlib import Path

import pytest

from carelake.config import Settings
from carelake.errors import TopicError
from carelake.serde import SchemaRegistry
from carelake.topics import load_catalog

DESIGN_TOPICS = {
    "bronze.raw.v1": "raw_envelope",
    "silver.fhir.v1": "fhir_envelope",
    "silver.linked.v1": "fhir_envelope",
    "mpi.links.v1": "mpi_link_event",
    "features.v1": "feature_vector",
    "scores.v1": "score",
    "dq.metrics.v1": "dq_metric",
    "dlq.normalizer.v1": "dlq_record",
}


@pytest.fixture
def catalog_path() -> Path:
    return Settings().topic_catalog


def test_every_design_topic_is_declared_with_its_contract(catalog_path: Path) -> None:
    catalog = load_catalog(catalog_path)
    for name, schema in DESIGN_TOPICS.items():
        assert catalog.get(name).value_schema == schema


def test_every_avro_value_schema_exists(catalog_path: Path) -> None:
    registry = SchemaRegistry.load()
    for spec in load_catalog(catalog_path).topics.values():
        if spec.is_avro:
            registry.get(spec.value_schema)  # raises if the contract file is missing


def test_every_dlq_topic_keeps_records_forever_and_uses_the_dlq_contract(catalog_path: Path) -> None:
    dlqs = [t for t in load_catalog(catalog_path).topics.values() if t.name.startswith("dlq.")]
    assert len(dlqs) >= 7
    for t in dlqs:
        assert t.value_schema == "dlq_record"
        assert t.retention_ms == -1 or t.name == "dlq.selftest.v1"


def test_mpi_links_is_compacted(catalog_path: Path) -> None:
    spec = load_catalog(catalog_path).get("mpi.links.v1")
    assert spec.configs() == {"cleanup.policy": "compact", "retention.ms": "-1"}


def test_prefix_renames_physical_topics_and_lookup_works_both_ways(catalog_path: Path) -> None:
    catalog = load_catalog(catalog_path, prefix="t123.")
    assert catalog.physical("bronze.raw.v1") == "t123.bronze.raw.v1"
    assert catalog.get("t123.bronze.raw.v1").name == "bronze.raw.v1"
    assert catalog.contracts_topic == "t123._carelake.contracts"


def test_unknown_topic_says_where_topics_are_declared(catalog_path: Path) -> None:
    with pytest.raises(TopicError, match="topics.toml"):
        load_catalog(catalog_path).get("bronze.raw.v2")


def test_duplicate_declaration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "topics.toml"
    entry = '[[topic]]\nname = "a.v1"\nvalue_schema = "score"\nkey = "k"\npartitions = 1\nretention_ms = 1\ncleanup = "delete"\n'
    path.write_text(entry + entry)
    with pytest.raises(TopicError, match="declared twice"):
        load_catalog(path)


def test_a_source_topic_names_its_source_under_any_prefix() -> None:
    from carelake.topics import source_of_topic

    assert source_of_topic("source.public_health.v1") == "public_health"
    assert source_of_topic("t1a2b.source.wearables.v1") == "wearables"
    assert source_of_topic("silver.fhir.v1") is None
    assert source_of_topic("resource.lab.v1") is None
