"""Topic creation and start-up checks against the real broker."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from carelake.errors import TopicError
from carelake.topics import Catalog, TopicSpec, contract_of, encode_contract


@dataclass(frozen=True)
class TopicResult:
    name: str
    action: str  # created | exists | registered | updated


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000})


def read_contracts(catalog: Catalog, bootstrap: str, timeout_s: float = 10.0) -> dict[str, dict]:
    """The latest registered contract per topic (physical name), read from the compacted topic."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "carelake-contract-reader",
        "enable.auto.commit": False, "enable.partition.eof": True,
    })
    try:
        tp = TopicPartition(catalog.contracts_topic, 0)
        deadline = time.monotonic() + timeout_s
        while True:  # a just-created topic takes a moment to reach the broker's metadata
            try:
                low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
                break
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise TopicError(
                        f"contract topic {catalog.contracts_topic} is missing; run `carelake topics create`"
                    ) from exc
                time.sleep(0.2)
        contracts: dict[str, dict] = {}
        if high <= low:
            return contracts
        consumer.assign([TopicPartition(catalog.contracts_topic, 0, low)])
        seen = low
        while seen < high:
            msg = consumer.poll(timeout_s)
            if msg is None:
                raise TopicError(f"timed out reading {catalog.contracts_topic}")
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    break
                raise TopicError(f"reading {catalog.contracts_topic}: {msg.error()}")
            seen = msg.offset() + 1
            key = msg.key().decode()
            if msg.value() is None:
                contracts.pop(key, None)
            else:
                contracts[key] = json.loads(msg.value())
        return contracts
    finally:
        consumer.close()


def create_topics(catalog: Catalog, bootstrap: str, specs: Iterable[TopicSpec] | None = None) -> list[TopicResult]:
    """Create missing topics (idempotent) and register each Avro topic's value contract."""
    from carelake.serde import SchemaRegistry
    from carelake.serde.compat import backward_incompatibilities

    specs = list(specs if specs is not None else catalog.topics.values())
    admin = _admin(bootstrap)
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [NewTopic(catalog.contracts_topic, 1, 1, config={"cleanup.policy": "compact"})]
    wanted += [NewTopic(s.physical, s.partitions, 1, config=s.configs()) for s in specs]
    results: list[TopicResult] = []
    todo = [t for t in wanted if t.topic not in existing]
    for name, fut in (admin.create_topics(todo, operation_timeout=30).items() if todo else []):
        try:
            fut.result()
            results.append(TopicResult(name, "created"))
        except KafkaException as exc:
            if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: another creator won the race
                raise TopicError(f"creating {name}: {exc.args[0].str()}") from exc
    results += [TopicResult(t.topic, "exists") for t in wanted if t.topic in existing]
    _wait_visible(admin, [t.topic for t in todo])

    registered = read_contracts(catalog, bootstrap)
    registry = SchemaRegistry.load()
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for spec in specs:
        if not spec.is_avro:
            continue
        ours = contract_of(spec.value_schema)
        theirs = registered.get(spec.physical)
        if theirs is not None and theirs["fingerprint"] == ours["fingerprint"]:
            continue
        if theirs is not None and "schema_json" in theirs:
            problems = backward_incompatibilities(
                json.loads(theirs["schema_json"]), registry.get(spec.value_schema).parsed
            )
            if problems:
                raise TopicError(
                    f"{spec.physical}: schema {spec.value_schema} is not backward compatible with the "
                    f"registered one: {'; '.join(problems)}"
                )
        value = {**ours, "schema_json": json.dumps(registry.get(spec.value_schema).parsed)}
        producer.produce(catalog.contracts_topic, key=spec.physical.encode(), value=encode_contract(value))
        results.append(TopicResult(spec.physical, "updated" if theirs else "registered"))
    if producer.flush(15) != 0:
        raise TopicError("registering topic contracts timed out")
    return results


def _wait_visible(admin: AdminClient, names: list[str], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while names and time.monotonic() < deadline:
        topics = admin.list_topics(timeout=10).topics
        if all(n in topics and not topics[n].error for n in names):
            return
        time.sleep(0.1)


def check_topics(catalog: Catalog, bootstrap: str, names: Iterable[str]) -> None:
    """Raise TopicError with a clear message if any topic is missing, mis-declared or mis-registered."""
    specs = [catalog.get(n) for n in names]
    admin = _admin(bootstrap)
    try:
        metadata = admin.list_topics(timeout=10)
    except KafkaException as exc:
        raise TopicError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    problems: list[str] = []
    missing = [s.physical for s in specs if s.physical not in metadata.topics]
    if missing:
        problems.append(f"missing topic(s) {missing}")
    present = [s for s in specs if s.physical in metadata.topics]
    if present:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, s.physical) for s in present]
        for spec, fut in zip(present, admin.describe_configs(resources).values()):
            cleanup = fut.result()["cleanup.policy"].value
            if cleanup != spec.cleanup:
                problems.append(f"{spec.physical} has cleanup.policy={cleanup}, catalog says {spec.cleanup}")
    avro = [s for s in present if s.is_avro]
    if avro:
        registered = read_contracts(catalog, bootstrap) if not missing else {}
        for spec in avro:
            ours = contract_of(spec.value_schema)
            theirs = registered.get(spec.physical)
            if theirs is None:
                problems.append(f"{spec.physical} has no registered contract")
            elif theirs["fingerprint"] != ours["fingerprint"]:
                problems.append(
                    f"{spec.physical} is registered with schema {theirs['schema']} "
                    f"({theirs['fingerprint']}), this build has {ours['schema']} ({ours['fingerprint']})"
                )
    if problems:
        raise TopicError("; ".join(problems) + ". Run `carelake topics create` to create or register them.")
