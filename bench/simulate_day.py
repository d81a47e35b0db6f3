"""Generating the reference day to files: 45,000 patients, ~847,000 records, one core.

    .venv/bin/python bench/simulate_day.py [--patients 45000] [--runs 2] [--core 0]

Times `carelake simulate`'s whole job (population, registrations, events, rendering every feed,
writing feeds, truth and manifest) into a temporary folder that is removed afterwards.
Target: under 2 minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from carelake_simulator.simulate import SimConfig, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=45_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to (-1: no pinning)")
    args = parser.parse_args()
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})
    results = []
    for _ in range(args.runs):
        out = Path(tempfile.mkdtemp(prefix="carelake-simday-"))
        try:
            started = time.perf_counter()
            manifest, _ = run(SimConfig(patients=args.patients), out)
            seconds = time.perf_counter() - started
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        finally:
            shutil.rmtree(out, ignore_errors=True)
        results.append({"seconds": round(seconds, 2), "records": manifest["records"], "bytes": size})
        print(json.dumps(results[-1]), file=sys.stderr)
    secs = [r["seconds"] for r in results]
    print(json.dumps({
        "bench": "simulate_day", "patients": args.patients, "runs": args.runs, "pinned_core": args.core,
        "records": results[0]["records"], "output_bytes": results[0]["bytes"],
        "median_seconds": statistics.median(secs), "min_seconds": min(secs), "max_seconds": max(secs),
        "records_per_second": round(results[0]["records"] / statistics.median(secs)),
    }))


if __name__ == "__main__":
    main()
