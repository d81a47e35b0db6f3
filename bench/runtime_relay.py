"""Runtime overhead: messages/s through consume → decode → no-op process → encode → produce → commit.

Runs on the local broker (`carelake stack up`), on fresh uuid-named topics that are dropped after.
The runtime process is pinned to one CPU core (librdkafka's threads included); the broker runs
beside it on the machine's other core. Filling the input topic is not timed.

    .venv/bin/python bench/runtime_relay.py [--messages 200000] [--payload 1024] [--batch 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

from carelake.config import settings
from carelake.stack import manager
from carelake.stream.selftest import INPUT_TOPIC, RELAY_TOPIC, count, drop, fill, prepare, run_relay


def one_run(n: int, payload: int, batch: int) -> dict:
    s = settings()
    catalog = prepare(s.bootstrap, s.topic_catalog)
    try:
        t0 = time.perf_counter()
        fill(s.bootstrap, catalog.physical(INPUT_TOPIC), n, payload_size=payload)
        fill_s = time.perf_counter() - t0
        cpu0 = time.process_time()
        runner, seconds = run_relay(s.bootstrap, catalog, n, batch_size=batch, timeout_s=600)
        cpu = time.process_time() - cpu0
        relayed = count(s.bootstrap, catalog.physical(RELAY_TOPIC))
        if runner.committed_messages < n or relayed < n:
            raise SystemExit(f"incomplete run: committed {runner.committed_messages}, relayed {relayed} of {n}")
        return {"messages": n, "seconds": round(seconds, 3), "rate": round(n / seconds),
                "cpu_seconds": round(cpu, 2), "fill_seconds": round(fill_s, 2)}
    finally:
        drop(s.bootstrap, catalog)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--payload", type=int, default=1024, help="payload bytes per envelope")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin the runtime to (-1: no pinning)")
    args = parser.parse_args()
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})  # before librdkafka starts threads, so they inherit it
    manager.up(settings(), ["kafka"])
    runs = [one_run(args.messages, args.payload, args.batch) for _ in range(args.runs)]
    for r in runs:
        print(json.dumps(r), file=sys.stderr)
    rates = [r["rate"] for r in runs]
    summary = {
        "bench": "runtime_relay", "messages_per_run": args.messages, "payload_bytes": args.payload,
        "batch": args.batch, "runs": args.runs, "pinned_core": args.core,
        "median_rate": round(statistics.median(rates)), "min_rate": min(rates), "max_rate": max(rates),
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
