"""The simulator's reference day from Bronze to silver.fhir.v1, held against the simulator's truth.

A day is simulated (``--patients``, default 45,000; or ``--day DIR``), then sent through real
`carelake run ingest-gateway` and `carelake run normalizer` processes on fresh topics by
``carelake.demo_day.run_day`` (HL7 over MLLP, wearables over Kafka, files over HTTP). Once Silver
has caught up — and before the processes stop — the normalizer's coverage counts are read from its
/metrics; then the run's topics are read back whole:

* ``silver.fhir.v1`` and ``dlq.normalizer.v1`` (Avro, the project's serde);
* what the gateway did not pass on: ``dlq.ingest-gateway.v1`` (each dead letter's record id read
  from the ``message_id`` header of the ``source.<source>.v1`` message it points at), the HL7
  frames it answered AR and kept under Bronze's quarantine prefix (matched to the feed by SHA-256),
  and the AR'd frames it could not keep (no readable MSH: found by the gateway's own MSH check on
  the sent bytes, and cross-checked against each MLLP lane's refusal count);

and ``carelake_normalizer.truthcheck`` builds the report: records lost, resources invalid, every
planted defect kind caught or missed, coverage gaps. It is printed; ``--json PATH`` writes it whole.
Exit status 1 when the report names a problem (or the edge cross-check fails).

    .venv/bin/python bench/normalizer_reference_day.py [--patients 45000] [--day DIR] [--json PATH] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HL7_CONTENT_TYPE = "x-application/hl7-v2+er7"
_READING_ID = re.compile(rb'"reading_id"\s*:\s*"([^"]+)"')


def read_topic(bootstrap: str, topic: str) -> Iterator[Any]:
    """Every message of ``topic`` from the beginning up to its high watermarks (no group commits)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"carelake-truthcheck-{time.time_ns()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 10_485_760})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])  # 0: the earliest still there
        idle = 0
        while ends:
            batch = consumer.consume(num_messages=5000, timeout=1.0)
            if not batch:
                idle += 1
                if idle > 30:
                    raise RuntimeError(f"{topic}: no messages for 30 s with partitions {sorted(ends)} unfinished")
                continue
            idle = 0
            for msg in batch:
                if msg.error():
                    continue
                yield msg
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    ends.pop(msg.partition(), None)
    finally:
        consumer.close()


def decoded(bootstrap: str, topic: str) -> Iterator[dict]:
    from carelake.serde import SchemaRegistry

    registry = SchemaRegistry.load()
    for msg in read_topic(bootstrap, topic):
        yield registry.decode(msg.value())[1]


@dataclass
class Edge:
    """What the gateway did not pass on, resolved to truth record ids, and the cross-check."""

    rejects: list = field(default_factory=list)  # truthcheck.EdgeReject
    by_where: Counter = field(default_factory=Counter)
    gateway_dlq: int = 0
    gateway_dlq_unresolved: int = 0
    lane_check: dict = field(default_factory=dict)  # lane -> {"refused": n, "found": n}

    @property
    def ok(self) -> bool:
        return not self.gateway_dlq_unresolved and all(v["refused"] == v["found"] for v in self.lane_check.values())


def edge_rejects(bootstrap: str, catalog: Any, day: Path, bronze_dir: Path, refused: dict[str, int]) -> Edge:
    """The gateway's refusals and dead letters of this run as truthcheck.EdgeReject (see the module text)."""
    from carelake.bronze.store import open_store
    from carelake.config import Settings
    from carelake_ingest_gateway.sniff import sniff
    from carelake_normalizer.truthcheck import EdgeReject
    from carelake_simulator import store as feed_store

    edge = Edge()
    # 1. dlq.ingest-gateway.v1 (captured Kafka messages it could not take): the record id from the
    #    message_id header of the source message the dead letter points at.
    dead = list(decoded(bootstrap, catalog.physical("dlq.ingest-gateway.v1")))
    edge.gateway_dlq = len(dead)
    wanted: dict[str, set[tuple[int, int]]] = {}
    for d in dead:
        wanted.setdefault(d["source_topic"], set()).add((d["source_partition"], d["source_offset"]))
    ids: dict[tuple[str, int, int], str] = {}
    for topic, places in wanted.items():
        for msg in read_topic(bootstrap, topic):
            if (msg.partition(), msg.offset()) in places:
                mid = dict(msg.headers() or ()).get("message_id")
                if mid:
                    ids[(topic, msg.partition(), msg.offset())] = mid.decode()
    for d in dead:
        topic = d["source_topic"]
        source = d.get("source") or topic.removeprefix(catalog.prefix).split(".")[1]
        rid = ids.get((topic, d["source_partition"], d["source_offset"]))
        if rid is None:  # fall back on the bytes (a reading cut short may have lost its id)
            m = _READING_ID.search(d["payload"] or b"")
            rid = m.group(1).decode() if m else None
        if rid is None:
            edge.gateway_dlq_unresolved += 1
            continue
        edge.rejects.append(EdgeReject(source, rid, "dlq.ingest-gateway.v1", d["reason_code"]))
        edge.by_where["dlq.ingest-gateway.v1"] += 1

    # 2. HL7 frames answered AR: kept under quarantine (matched by SHA-256), or not keepable.
    sent: dict[str, tuple[str, str, str | None]] = {}  # sha256 -> (source, message id, sniff problem)
    for source in sorted(p.name for p in day.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for r in feed_store.iter_records(day, source):
            if r.content_type == HL7_CONTENT_TYPE:
                sent[hashlib.sha256(r.payload).hexdigest()] = (source, r.message_id,
                                                               sniff(source, r.payload, r.content_type).problem)
    store = open_store(Settings(bronze_dir=bronze_dir))
    found: Counter[str] = Counter()
    quarantined: set[str] = set()
    for info in store.list(""):
        if "/quarantine/" not in info.key or info.key.rsplit(".", 1)[-1] != "hl7":
            continue
        digest = hashlib.sha256(store.get(info.key)).hexdigest()
        hit = sent.get(digest)
        if hit is None or digest in quarantined:
            continue
        quarantined.add(digest)
        source, mid, problem = hit
        reason = problem or info.metadata.get("reason_code", "")
        edge.rejects.append(EdgeReject(source, mid, "mllp AR, quarantined", reason))
        edge.by_where["mllp AR, quarantined"] += 1
        found[source] += 1
    for digest, (source, mid, problem) in sent.items():
        if digest in quarantined or problem is None:
            continue
        if "MSH" in problem and "unparseable" in problem:  # the gateway cannot attribute it, so keeps nothing
            edge.rejects.append(EdgeReject(source, mid, "mllp AR, not kept (no readable MSH)", problem))
            edge.by_where["mllp AR, not kept (no readable MSH)"] += 1
            found[source] += 1
    for lane, n in sorted(refused.items()):
        if lane.startswith("mllp:"):
            edge.lane_check[lane] = {"refused": n, "found": found.get(lane.split(":", 1)[1], 0)}
    for source, n in found.items():
        edge.lane_check.setdefault(f"mllp:{source}", {"refused": refused.get(f"mllp:{source}", 0), "found": n})
    return edge


@dataclass
class Run:
    report: Any  # truthcheck.TruthReport
    summary: Any  # carelake.demo_day.DaySummary
    edge: Edge
    coverage: dict
    flags: dict
    silver_read: int
    dlq_read: int
    check_s: float


def run_and_check(s: Any, day: Path, work: Path, *, prefix: str | None = None, timeout_s: float = 1800,
                  keep: bool = False, memo_validation: bool = False) -> Run:
    """``day`` through the real processes (run_day), its topics read back, the truth check; topics dropped
    unless ``keep``. Resources are validated again whole (the models on every resource) unless
    ``memo_validation`` (the normalizer's own memo path: ~7x faster, not independent of it)."""
    from carelake.demo_day import run_day
    from carelake.stream.selftest import drop
    from carelake.topics import load_catalog
    from carelake_normalizer.truthcheck import TruthCheck

    coverage: dict[tuple[str, str], float] = {}
    flags: dict[str, float] = {}

    def inspect(summary: Any, gateway: Any, normalizer: Any) -> None:
        for labels, value in normalizer.samples("carelake_normalizer_unused_fields_total"):
            coverage[(labels.get("source", "?"), labels.get("field", "?"))] = value
        for labels, value in normalizer.samples("carelake_terminology_flags_total"):
            k = f"{labels.get('source')}:{labels.get('flag')}:{labels.get('system')}"
            flags[k] = flags.get(k, 0) + value

    summary = run_day(s, day, work, timeout_s=timeout_s, prefix=prefix, inspect=inspect)
    catalog = load_catalog(s.topic_catalog, summary.prefix)
    try:
        if not summary.caught_up:
            raise RuntimeError(f"Silver did not catch up in {timeout_s:g} s")
        t0 = time.perf_counter()
        edge = edge_rejects(s.bootstrap, catalog, day, work / "gateway" / "bronze", summary.refused)
        options = {}
        if memo_validation:
            from carelake_normalizer.validate import validate
            options["validate"] = validate
        tc = TruthCheck(day / "_truth", **options)
        silver = dlq = 0
        for env in decoded(s.bootstrap, catalog.physical("silver.fhir.v1")):
            tc.add_silver(env)
            silver += 1
        for dead in decoded(s.bootstrap, catalog.physical("dlq.normalizer.v1")):
            tc.add_dlq(dead)
            dlq += 1
        for e in edge.rejects:
            tc.add_edge(e)
        report = tc.report(coverage)
        return Run(report, summary, edge, coverage, flags, silver, dlq, time.perf_counter() - t0)
    finally:
        if not keep:
            drop(s.bootstrap, catalog)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=45_000)
    parser.add_argument("--day", type=Path, help="an existing `carelake simulate --out` folder to send")
    parser.add_argument("--json", type=Path, help="write the whole report here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and the topics")
    parser.add_argument("--memo-validation", action="store_true",
                        help="validate Silver again through the normalizer's memo path instead of whole")
    args = parser.parse_args()

    from carelake.config import settings
    from carelake_normalizer.truthcheck import render, to_json
    from carelake_simulator.simulate import SimConfig
    from carelake_simulator.simulate import run as simulate_run

    s = settings()
    work = Path(tempfile.mkdtemp(prefix="carelake-bench-truth-"))
    try:
        day, simulated_s = args.day, None
        if day is None:
            day = work / "day"
            t0 = time.perf_counter()
            simulate_run(SimConfig(patients=args.patients), day)
            simulated_s = round(time.perf_counter() - t0, 1)
        run = run_and_check(s, day, work / "pipeline", keep=args.keep, memo_validation=args.memo_validation)
        r, summary = run.report, run.summary
        print(render(r))
        print(f"\nedge: {dict(run.edge.by_where)}; gateway DLQ {run.edge.gateway_dlq:,} "
              f"({run.edge.gateway_dlq_unresolved} unresolved); MLLP refusals found/refused: "
              + ", ".join(f"{k} {v['found']}/{v['refused']}" for k, v in run.edge.lane_check.items()))
        metric_silver = sum(summary.silver_by_type.values())
        print(f"silver.fhir.v1 read {run.silver_read:,} (normalizer counted {metric_silver:,}); "
              f"dlq.normalizer.v1 read {run.dlq_read:,}; day to Silver {summary.seconds:.1f} s; "
              f"topics read and checked in {run.check_s:.1f} s")
        out = {
            "bench": "normalizer_reference_day", "patients": args.patients if args.day is None else None,
            "simulated_s": simulated_s, "day_to_silver_s": round(summary.seconds, 1),
            "check_s": round(run.check_s, 1), "caught_up": summary.caught_up,
            "validation": "memo path" if args.memo_validation else "whole model (memo=False)",
            "delivered": summary.delivered, "refused": summary.refused, "raw_envelopes": summary.raw_envelopes,
            "silver_read": run.silver_read, "silver_counted": metric_silver, "dlq_read": run.dlq_read,
            "edge": {"by_where": dict(run.edge.by_where), "gateway_dlq": run.edge.gateway_dlq,
                     "gateway_dlq_unresolved": run.edge.gateway_dlq_unresolved, "lanes": run.edge.lane_check},
            "terminology_flags": dict(sorted(run.flags.items())),
            "report": to_json(r),
        }
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=2, default=str))
        print(json.dumps({k: out[k] for k in ("bench", "patients", "day_to_silver_s", "check_s", "silver_read",
                                              "dlq_read")} | {"lost": r.lost, "invalid": r.invalid,
                                                               "missed": r.missed(), "edge_ok": run.edge.ok}))
        if r.problems() or not run.edge.ok or run.silver_read != metric_silver:
            raise SystemExit(1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
