"""The whole pipeline on a simulated day: gateway, normalizer, dedup-mpi and lake-writer as real
processes, from the sources' protocols to Gold (issue 7's end-to-end figure).

    .venv/bin/python bench/pipeline_reference_day.py [--patients 45000] [--day-dir DIR] [--json OUT]

Prints when each layer caught up, records/s end to end, each process's CPU share (CPU seconds /
wall seconds, the stack's Kafka, PostgreSQL and Gold front included) and what Gold holds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from carelake.config import settings
from carelake.demo_day import run_day
from carelake.gold.client import gold_client
from carelake_lake_writer.summary import gold_summary
from carelake_simulator.simulate import SimConfig
from carelake_simulator.simulate import run as simulate_run


def _accuracy_module():  # noqa: ANN202 - bench/mpi_accuracy.py's metric functions, loaded by path
    spec = importlib.util.spec_from_file_location("mpi_accuracy", Path(__file__).with_name("mpi_accuracy.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mpi_against_truth(client, day: Path) -> dict:  # noqa: ANN001 - clickhouse_connect Client
    """The running MPI's clustering (Gold's current links) scored against the simulator's truth."""
    acc = _accuracy_module()
    truth = acc.truth_of(day)
    pred = dict(client.query("SELECT record_key, euid FROM current_links").result_rows)
    unknown = [k for k in pred if k not in truth]
    pred = {k: e for k, e in pred.items() if k in truth}
    seen_truth = {k: truth[k] for k in pred}
    return {"records": len(pred), "not_in_truth": len(unknown), "pairwise": acc.pairwise(pred, seen_truth),
            "bcubed": acc.bcubed(pred, seen_truth),
            "per_source_pair": {k: round(v["f1"], 4) for k, v in acc.per_source_pair(pred, seen_truth).items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=45_000)
    parser.add_argument("--day-dir", type=Path, help="an existing `carelake simulate` output")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="carelake-bench-pipeline-"))
    day = args.day_dir or work / "day"
    if args.day_dir is None:
        t = time.monotonic()
        simulate_run(SimConfig(patients=args.patients), day)
        print(f"simulated {args.patients:,} patients in {time.monotonic() - t:.1f}s -> {day}")
    summary = run_day(settings(), day, work / "pipeline", timeout_s=args.timeout, full=True,
                      on_progress=lambda what: None)
    client = gold_client(summary.gold_url)
    gold = gold_summary(client, client.database)
    wall = summary.seconds
    print(f"caught up: {summary.caught_up} in {wall:.1f}s; layers caught up at {summary.stage_seconds}")
    print(f"raw envelopes {summary.raw_envelopes:,} -> {summary.raw_envelopes / wall:,.0f} records/s end to end; "
          f"Silver resources {sum(summary.silver_by_type.values()):,}; linked {summary.linked:,}")
    print("CPU share (CPU s / wall s): " + ", ".join(
        f"{name} {sec / wall:.2f}" for name, sec in sorted(summary.cpu_seconds.items(), key=lambda kv: -kv[1])))
    print(f"Gold: persons {gold.persons:,} (2+ sources {gold.persons_multi_source:,}); success rate "
          f"{gold.success_rate}; lag p50 {gold.lag_p50_s}s p99 {gold.lag_p99_s}s; MPI {dict(summary.mpi_decisions)}")
    t = time.perf_counter()
    from carelake_lake_writer.queries import patient_360

    patient_360(client, client.database, gold.showcase or "")
    print(f"one patient_360 lookup: {(time.perf_counter() - t) * 1000:.0f} ms")
    t = time.perf_counter()
    client.query("SELECT code, count(), avg(value_num) FROM observations FINAL GROUP BY code")
    print(f"full scan aggregate over observations: {(time.perf_counter() - t) * 1000:.0f} ms")
    accuracy = mpi_against_truth(client, day)
    pw, bc = accuracy["pairwise"], accuracy["bcubed"]
    print(f"MPI vs truth ({accuracy['records']:,} source records in Gold): pairwise P {pw['precision']:.4f} "
          f"R {pw['recall']:.4f} F1 {pw['f1']:.4f} (tp {pw['tp']}, fp {pw['fp']}, fn {pw['fn']}); "
          f"B-cubed F1 {bc['f1']:.4f}; per source pair F1 {accuracy['per_source_pair']}")
    if args.json:
        # Not asdict(summary): it rebuilds a Counter from (key, value) pairs, counting the pairs.
        day = {k: dict(v) if isinstance(v, dict) else v for k, v in vars(summary).items() if k != "workdir"}
        out = {"summary": day, "gold": asdict(gold),
               "mpi_accuracy": accuracy}
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
