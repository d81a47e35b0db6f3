"""Replay to the real local Kafka: topics per source, bytes, keys, headers and per-key order."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from carelake.stream.admin import create_topics
from carelake.stream.selftest import count, read_topic
from carelake.topics import Catalog
from carelake_simulator.model import FeedFile, FeedRecord
from carelake_simulator.replay import HL7_CONTENT_TYPE, Pace, ReplayError, replay_kafka

pytestmark = pytest.mark.integration


T0 = datetime(2026, 1, 15, 8, 0, tzinfo=UTC)
SOURCES = {"ehr": ("ADT^A01", "ADT^A01^ADT_A01", 250), "lab": ("ORU^R01", "ORU^R01^ORU_R01", 150),
           "scheduling": ("SIU^S12", "SIU^S12^SIU_S12", 100)}


def hl7(source: str, trigger: str, msg_id: str, mrn: str, ts: datetime) -> bytes:
    return (f"MSH|^~\\&|{source.upper()}|CARELAKE_MC|CARELAKE|CARELAKE|{ts:%Y%m%d%H%M%S}+0000||{trigger}|"
            f"{msg_id}|P|2.5.1\rPID|1||{mrn}^^^{source.upper()}^MR\r").encode()


def feed() -> tuple[list[FeedRecord], FeedFile]:
    records = []
    for source, (kind, trigger, n) in SOURCES.items():
        for i in range(n):
            event = T0 + timedelta(seconds=7 * i)
            sent = event + (timedelta(hours=3) if i % 50 == 0 else timedelta(seconds=2))  # some late ones
            mrn = f"{source[:2].upper()}{i % 17:04d}"
            msg_id = f"{source[:3].upper()}{i:05d}"
            records.append(FeedRecord(source=source, kind=kind, message_id=msg_id, event_time=event,
                                      sent_time=sent, key=f"{source}|{mrn}",
                                      payload=hl7(source, trigger, msg_id, mrn, event),
                                      content_type=HL7_CONTENT_TYPE))
    records.sort(key=lambda r: r.sent_time)
    file = FeedFile(source="claims", name="claims_837p_20260115.x12", kind="837P",
                    sent_time=T0 + timedelta(hours=12),
                    payload=b"ISA*00*          *00*          *ZZ*CARELAKE*ZZ*PAYER~CLM*C1*100~IEA*1*000000001~",
                    content_type="application/edi-x12")
    return records, file


def test_replay_to_kafka(stack, catalog: Catalog) -> None:  # type: ignore[no-untyped-def]
    create_topics(catalog, stack.bootstrap)
    records, file = feed()
    items = [*records[:300], file, *records[300:]]
    stats = replay_kafka(items, stack.bootstrap, catalog, progress=False)

    assert (stats.sent, stats.failed) == (500, 0)
    assert stats.by_outcome == {"delivered": 500, "skipped_file": 1}
    assert stats.by_source == {s: n for s, (_, _, n) in SOURCES.items()}
    assert stats.bytes == sum(len(r.payload) for r in records)
    assert count(stack.bootstrap, catalog.physical("source.claims.v1")) == 0  # the file was not sent

    by_id = {r.message_id: r for r in records}
    for source, (kind, _, n) in SOURCES.items():
        topic = catalog.physical(f"source.{source}.v1")
        assert count(stack.bootstrap, topic) == n
        messages = read_topic(stack.bootstrap, topic, n)
        assert len(messages) == n
        seen = Counter()
        for m in messages:
            headers = {k: v.decode() for k, v in m.headers()}
            assert set(headers) == {"kind", "message_id", "content_type", "event_time", "sent_time"}
            r = by_id[headers["message_id"]]
            seen[r.message_id] += 1
            assert r.source == source
            assert m.value() == r.payload  # bytes unchanged
            assert m.key() == r.key.encode()
            assert headers["kind"] == kind == r.kind
            assert headers["content_type"] == HL7_CONTENT_TYPE
            assert headers["event_time"] == r.event_time.isoformat()  # ISO-8601 UTC
            assert headers["sent_time"] == r.sent_time.isoformat()
            assert datetime.fromisoformat(headers["sent_time"]).utcoffset() == timedelta(0)
        assert set(seen.values()) == {1}  # once each (idempotent producer)

        # one key: one partition, and in send order there
        partitions: dict[str, set[int]] = defaultdict(set)
        for m in messages:
            partitions[m.key().decode()].add(m.partition())
        assert all(len(p) == 1 for p in partitions.values())
        key = f"{source}|{source[:2].upper()}0003"
        stored = [dict(m.headers())["message_id"].decode()
                  for m in sorted(messages, key=lambda m: m.offset()) if m.key() == key.encode()]
        assert stored == [r.message_id for r in records if r.key == key]
        assert len(stored) >= 5


def test_replay_to_kafka_paced(stack, catalog: Catalog) -> None:  # type: ignore[no-untyped-def]
    topic = catalog.get("source.lab.v1")
    create_topics(catalog, stack.bootstrap, [topic])
    records = [r for r in feed()[0] if r.source == "lab"][:40]
    stats = replay_kafka(records, stack.bootstrap, catalog, pace=Pace(rate=200), progress=False)
    assert stats.sent == 40
    assert stats.seconds >= 0.15  # 39 gaps of 5 ms, less a burst of 10
    assert count(stack.bootstrap, topic.physical) == 40


def test_replay_to_kafka_names_a_missing_topic(stack, catalog: Catalog) -> None:  # type: ignore[no-untyped-def]
    records = [r for r in feed()[0] if r.source == "ehr"][:3]
    with pytest.raises(ReplayError, match=rf"topic {catalog.physical('source.ehr.v1')} does not exist"):
        replay_kafka(records, stack.bootstrap, catalog, progress=False)
