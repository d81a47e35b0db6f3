"""The topic catalog (schemas/topics.toml): load it, create the topics, check them before a service starts.

Each Avro topic's value contract (schema name + fingerprint) is registered in a small compacted
topic, ``_carelake.contracts``, when the topics are created. A service compares the registered
contract with the schemas it was built with, so a broker set up by another version of the
contracts is caught at start-up instead of as a stream of undecodable messages.
"""

from __future__ import annotations

import json
import re
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path

from carelake.errors import TopicError

CONTRACTS_TOPIC = "_carelake.contracts"
_SOURCE_TOPIC = re.compile(r"(?:^|\.)source\.([a-z0-9_]+)\.v1$")
EXTERNAL = "external"


@dataclass(frozen=True)
class TopicSpec:
    """One catalog entry; ``name`` is the logical name, ``physical`` what the broker holds."""

    name: str
    physical: str
    partitions: int
    retention_ms: int
    cleanup: str
    value_schema: str
    key: str
    description: str = ""
    producers: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()

    @property
    def is_avro(self) -> bool:
        return self.value_schema != EXTERNAL

    def configs(self) -> dict[str, str]:
        return {"cleanup.policy": self.cleanup, "retention.ms": str(self.retention_ms)}


@dataclass(frozen=True)
class Catalog:
    """Every topic of the catalog under one optional name prefix (tests use a uuid prefix)."""

    topics: dict[str, TopicSpec]
    prefix: str = ""

    def get(self, name: str) -> TopicSpec:
        """Look a topic up by logical or physical name."""
        spec = self.topics.get(name)
        if spec is None:
            for s in self.topics.values():
                if s.physical == name:
                    return s
            raise TopicError(f"topic {name!r} is not in the catalog (schemas/topics.toml)")
        return spec

    def physical(self, name: str) -> str:
        return self.get(name).physical

    @property
    def contracts_topic(self) -> str:
        return f"{self.prefix}{CONTRACTS_TOPIC}"


def load_catalog(path: Path, prefix: str = "") -> Catalog:
    """Parse the catalog file; every value schema must exist unless it is 'external'."""
    data = tomllib.loads(path.read_text())
    defaults = data.get("defaults", {})
    topics: dict[str, TopicSpec] = {}
    for raw in data.get("topic", []):
        entry = {**defaults, **raw}
        name = entry["name"]
        if name in topics:
            raise TopicError(f"topic {name!r} is declared twice in {path}")
        topics[name] = TopicSpec(
            name=name,
            physical=f"{prefix}{name}",
            partitions=int(entry["partitions"]),
            retention_ms=int(entry["retention_ms"]),
            cleanup=entry["cleanup"],
            value_schema=entry["value_schema"],
            key=entry["key"],
            description=entry.get("description", ""),
            producers=tuple(entry.get("producers", ())),
            consumers=tuple(entry.get("consumers", ())),
        )
    return Catalog(topics=topics, prefix=prefix)


def scratch_prefix() -> str:
    """A fresh prefix so a test's topics never meet another test's."""
    return f"t{uuid.uuid4().hex[:12]}."


def contract_of(schema_name: str, schema_dir: Path | None = None) -> dict[str, str]:
    """The value contract a topic is registered with: schema name and hex fingerprint."""
    from carelake.serde import SchemaRegistry

    schema = SchemaRegistry.load(schema_dir).get(schema_name)
    return {"schema": schema.name, "fingerprint": schema.fingerprint.hex(), "full_name": schema.full_name}


def encode_contract(contract: dict[str, str]) -> bytes:
    return json.dumps(contract, sort_keys=True).encode()


def source_of_topic(topic: str) -> str | None:
    """The source system a ``source.<source>.v1`` topic (under any prefix) carries, else None.

    >>> source_of_topic("demo1.source.wearables.v1"), source_of_topic("silver.fhir.v1")
    ('wearables', None)
    """
    found = _SOURCE_TOPIC.search(topic)
    return found.group(1) if found else None
