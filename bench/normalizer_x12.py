"""X12 claim mapping speed: claim records/s of the pure mapping on one core, 837P/837I and 835.

    .venv/bin/python bench/normalizer_x12.py [--patients 45000] [--claims 20000] [--runs 3] [--core 0]
    .venv/bin/python bench/normalizer_x12.py --no-validate      # what the FHIR model validation costs
    .venv/bin/python bench/normalizer_x12.py --no-terminology   # what the terminology pass costs

Simulates a day (in memory, not timed), splits its 837P, 837I and 835 files into records exactly as
the ingest gateway does (carelake_ingest_gateway.files.split_x12), and times, per record, what the
service will do: map_x12 with the whole file and the record's offset (the enclosing loops are read
from the file; the per-file index is built on a file's first record and reused after — the build
is inside the timing) → the terminology pass → security labels → FHIR validation of every resource
(fhir.resources R4B) → one silver.fhir.v1 envelope per resource, Avro single-object encoded with
carelake.serde. 837 and 835 records are timed separately, files in the order they were sent; a
population with fewer claims than --claims is gone round again, each round with fresh copies of the
files (new bytes objects: found in the index cache by their SHA-256, as when a service re-reads a
file; the cache is cleared before each timed run, so each run builds every index once).
Prints one JSON line; per-run lines go to stderr. Target: >= 1,000 837 claims/s on one core.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from carelake.serde import SchemaRegistry
from carelake_ingest_gateway.files import split_x12
from carelake_normalizer import validate as validation
from carelake_normalizer.core import MappingError
from carelake_normalizer.envelope import fhir_envelope
from carelake_normalizer.terminology import normalize_resource
from carelake_normalizer.x12 import collect, map_x12
from carelake_normalizer.x12.index import STATS, clear_cache
from carelake_simulator.simulate import SimConfig, simulate

TZ = ZoneInfo("America/Chicago")
Record = tuple[str, bytes, int, int, str | None]  # source, file bytes, start, end, patient key


def records(patients: int, limit: int) -> dict[str, list[Record]]:
    """{"837": [...], "835": [...]}: every claim record of the day, gone round again up to ``limit``."""
    sim = simulate(SimConfig(patients=patients))
    files = [f for f in sorted(sim.files, key=lambda f: f.sent_time) if f.kind in ("837P", "837I", "835")]
    out: dict[str, list[Record]] = {"837": [], "835": []}
    rounds = 0
    while min(len(v) for v in out.values()) < limit and rounds < 1000:
        for f in files:
            data = bytes(bytearray(f.payload))  # a fresh object per round (found again by content)
            lane = out["835" if f.kind == "835" else "837"]
            for r in split_x12(f.source, io.BytesIO(data)):
                lane.append((f.source, data, r.byte_start, r.byte_end, r.patient_key))
        rounds += 1
    return {k: v[:limit] for k, v in out.items()}


def run(batch: list[Record], encode, terminology: bool) -> dict:  # noqa: ANN001
    resources = rejected = errors = 0
    now = datetime.now(UTC)
    flags: list = []
    builds = STATS["builds"]
    started = time.perf_counter()
    for source, data, start, end, patient_key in batch:
        payload = data[start:end]
        raw_id = f"{source}:{start}"

        def term(resource: dict, source: str = source) -> None:
            flags.extend(normalize_resource(resource, source))

        try:
            result = map_x12(payload, source=source, tz=TZ, raw_id=raw_id, file_bytes=data, byte_offset=start,
                             patient_key=patient_key, terminology=term if terminology else None)
        except MappingError:
            errors += 1
            continue
        rejected += len(result.rejected)
        for m in result.resources:
            encode(fhir_envelope(m, source=source, raw_id=raw_id, bronze_key="bench", byte_offset=start,
                                 byte_length=end - start, source_message_id=result.meta.get("control_id"),
                                 processed_at=now))
            resources += 1
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "claims": len(batch), "claims_per_s": round(len(batch) / seconds),
            "resources": resources, "rejected_parts": rejected, "mapping_errors": errors,
            "index_builds": STATS["builds"] - builds, "terminology_flags": len(flags),
            "us_per_claim": round(seconds / len(batch) * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=45_000)
    parser.add_argument("--claims", type=int, default=20_000, help="records per lane (837, 835)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to (-1: no pinning)")
    parser.add_argument("--no-validate", action="store_true", help="skip FHIR validation (to measure its cost)")
    parser.add_argument("--no-terminology", action="store_true", help="skip the terminology pass")
    parser.add_argument("--profile", action="store_true", help="cProfile one 837 run; top functions to stderr")
    args = parser.parse_args()
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})
    lanes = records(args.patients, args.claims)
    encode = SchemaRegistry.load().get("fhir_envelope").encode
    if args.no_validate:
        validation.validate = lambda resource, *a, **k: None  # noqa: ARG005
        collect.validate = validation.validate
    terminology = not args.no_terminology
    for lane in lanes.values():
        run(lane[:500], encode, terminology)  # warm-up: imports, model classes, code maps, caches
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(lanes["837"], encode, terminology)
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    results: dict[str, list[dict]] = {"837": [], "835": []}
    for _ in range(args.runs):
        for name, lane in lanes.items():
            clear_cache()
            results[name].append(run(lane, encode, terminology))
            print(json.dumps({"lane": name, **results[name][-1]}), file=sys.stderr)
    summary = {"bench": "normalizer_x12", "validate": not args.no_validate, "terminology": terminology,
               "pinned_core": args.core, "patients": args.patients}
    for name, rs in results.items():
        rates = [r["claims_per_s"] for r in rs]
        summary[name] = {"claims": rs[0]["claims"], "resources_per_claim": round(rs[0]["resources"] / rs[0]["claims"], 2),
                         "index_builds": rs[0]["index_builds"], "median_claims_per_s": statistics.median(rates),
                         "min": min(rates), "max": max(rates),
                         "median_us_per_claim": statistics.median(r["us_per_claim"] for r in rs),
                         "rejected_parts": rs[0]["rejected_parts"], "mapping_errors": rs[0]["mapping_errors"]}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
