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


def lookup_latency(client, n: int = 200, wait_s: float = 20) -> dict:  # noqa: ANN001 - clickhouse_connect Client
    """Patient 360 lookups of ``n`` persons (most sources first) by EUID and by one of their source keys,
    once the lake-writer has refreshed the stored rows (up to ``wait_s``), and from the narrowed view."""
    from carelake_lake_writer.queries import patient_360, person_keys, view_row

    db = client.database
    people = client.query(f"SELECT euid, identifiers[1] FROM person_records ORDER BY length(sources) DESC, euid "
                          f"LIMIT {n}").result_rows
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(patient_360(client, db, e)["lookup"]["served_from"] != "rows"
                                              for e, _ in people):
        time.sleep(1)

    def timed(fn) -> float:  # noqa: ANN001
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1000

    by_euid = sorted(timed(lambda e=e: patient_360(client, db, e)) for e, _ in people)
    by_key = sorted(timed(lambda k=k: patient_360(client, db, k)) for _, k in people)
    view = sorted(timed(lambda e=e: view_row(client, db, e, person_keys(client, db, e))) for e, _ in people[:20])
    served = sum(patient_360(client, db, e)["lookup"]["served_from"] == "rows" for e, _ in people)

    def pct(xs: list[float], q: float) -> float:
        return round(xs[min(len(xs) - 1, int(q * len(xs)))], 1)

    return {"n": len(people), "served_from_rows": served, "euid_p50_ms": pct(by_euid, 0.5),
            "euid_p99_ms": pct(by_euid, 0.99), "key_p50_ms": pct(by_key, 0.5), "key_p99_ms": pct(by_key, 0.99),
            "view_p50_ms": pct(view, 0.5)}


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
    lookups = lookup_latency(client, wait_s=3 * settings().p360_refresh_interval_s + 5)
    print(f"patient_360 lookups ({lookups['n']} persons, stored rows: {lookups['served_from_rows']}): by EUID p50 "
          f"{lookups['euid_p50_ms']} ms p99 {lookups['euid_p99_ms']} ms; by source:mrn p50 {lookups['key_p50_ms']} ms "
          f"p99 {lookups['key_p99_ms']} ms; from the view (narrowed, no stored row) p50 {lookups['view_p50_ms']} ms")
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
        out = {"summary": day, "gold": asdict(gold), "patient_360_lookups": lookups,
               "mpi_accuracy": accuracy}
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
