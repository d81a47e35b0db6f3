"""Flat-format mapping speed on one core: wearable readings/s and pharmacy CSV rows/s.

    .venv/bin/python bench/normalizer_flat.py [--patients 5000] [--readings 50000] [--rows 5000] [--runs 3] [--core 0]
    .venv/bin/python bench/normalizer_flat.py --breakdown     # where a reading's time goes (stage by stage)
    .venv/bin/python bench/normalizer_flat.py --profile       # cProfile of one wearables run to stderr

Simulates a day (in memory, not timed), takes its wearables JSON readings in send order and its
pharmacy export's rows (each row with the export's header, as the service gets them), and times per
record what the service does: map (JSON/CSV parse → FHIR dicts) → terminology pass → security
labels → FHIR validation of every resource (fhir.resources R4B, validate.py's element memo) → one
silver.fhir.v1 envelope per resource, Avro single-object encoded with carelake.serde.
MappingErrors and rejected parts count as handled records (the service would DLQ them).
``--no-terminology`` leaves the terminology pass out (as bench/normalizer_hl7.py does).

Prints one JSON line (per-run lines and the breakdown go to stderr). The reference day has ~847,000
records, ~99 % of them wearable readings.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from carelake.serde import SchemaRegistry
from carelake_normalizer import validate as validation
from carelake_normalizer.core import MappingError
from carelake_normalizer.envelope import fhir_envelope
from carelake_normalizer.flat import common, csv_rows, map_pharmacy_csv, map_wearable_json
from carelake_normalizer.terminology import normalize_resource
from carelake_simulator.simulate import SimConfig, simulate

TZ = ZoneInfo("America/Chicago")
Record = tuple[str, str, bytes]  # source, raw id, payload


def workload(patients: int, readings: int, rows: int) -> tuple[list[Record], list[Record], bytes]:
    sim = simulate(SimConfig(patients=patients))
    wear = [(r.source, r.message_id, r.payload) for r in sorted(sim.records, key=lambda r: r.sent_time)
            if r.source == "wearables"]
    export = next(f for f in sim.files if f.kind == "pharmacy_csv")
    header, spans = csv_rows(export.payload)
    pharmacy = [(export.source, f"{export.name}:{start}", export.payload[start:end]) for _, start, end in spans]
    return _cycle(wear, readings), _cycle(pharmacy, rows), header


def _cycle(items: list[Record], n: int) -> list[Record]:
    out = list(items)
    while out and len(out) < n:  # a small population: go round again
        out += items[: n - len(out)]
    return out[:n]


def run(batch: list[Record], mapper: Callable, encode: Callable | None, terminology: bool) -> dict:
    resources = rejected = errors = 0
    now = datetime.now(UTC)
    started = time.perf_counter()
    for source, raw_id, payload in batch:
        flags: list = []
        term = (lambda res, s=source, f=flags: f.extend(normalize_resource(res, s))) if terminology else None
        try:
            result = mapper(payload, source=source, tz=TZ, raw_id=raw_id, terminology=term)
        except MappingError:
            errors += 1
            continue
        rejected += len(result.rejected)
        for m in result.resources:
            if encode is not None:
                encode(fhir_envelope(m, source=source, raw_id=raw_id, bronze_key="bench", byte_offset=0,
                                     byte_length=len(payload), source_message_id=raw_id, processed_at=now))
            resources += 1
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "records": len(batch), "per_s": round(len(batch) / seconds),
            "resources": resources, "rejected_parts": rejected, "mapping_errors": errors,
            "us_per_record": round(seconds / len(batch) * 1e6, 1)}


def _no_validation() -> Callable[[], None]:
    real = common.validate
    common.validate = lambda resource, *a, **k: None  # noqa: ARG005
    return lambda: setattr(common, "validate", real)


def breakdown(batch: list[Record], mapper: Callable, encode: Callable) -> dict:
    """µs per record of each stage, by difference between runs that leave stages out."""
    def us(**kw: object) -> float:
        return statistics.median(run(batch, mapper, **kw)["us_per_record"] for _ in range(3))  # type: ignore[arg-type]

    full = us(encode=encode, terminology=True)
    no_encode = us(encode=None, terminology=True)
    no_term = us(encode=None, terminology=False)
    restore = _no_validation()
    try:
        bare = us(encode=None, terminology=False)
    finally:
        restore()
    # FHIR validation with the element memo off: what validate.py's memo saves.
    common.validate = lambda resource, *a, **k: validation.validate(resource, memo=False)  # noqa: ARG005
    try:
        unmemo = us(encode=None, terminology=False)
    finally:
        common.validate = validation.validate
    return {"total_us": full, "map_labels_phi_us": bare, "validation_us": round(no_term - bare, 1),
            "validation_without_memo_us": round(unmemo - bare, 1), "terminology_us": round(no_encode - no_term, 1),
            "envelope_avro_us": round(full - no_encode, 1),
            "validation_share": round((no_term - bare) / full, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=5_000)
    parser.add_argument("--readings", type=int, default=50_000)
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to (-1: no pinning)")
    parser.add_argument("--no-terminology", action="store_true", help="leave the terminology pass out")
    parser.add_argument("--breakdown", action="store_true", help="time each stage of a wearable reading")
    parser.add_argument("--profile", action="store_true", help="cProfile one wearables run; top functions to stderr")
    args = parser.parse_args()
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})
    readings, rows, header = workload(args.patients, args.readings, args.rows)
    encode = SchemaRegistry.load().get("fhir_envelope").encode
    terminology = not args.no_terminology

    def pharmacy(payload: bytes, **kw: object):  # noqa: ANN202
        return map_pharmacy_csv(payload, header=header, **kw)  # type: ignore[arg-type]

    run(readings[:1000], map_wearable_json, encode, terminology)  # warm-up: imports, model classes, caches
    run(rows[:200], pharmacy, encode, terminology)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(readings, map_wearable_json, encode, terminology)
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    stages = None
    if args.breakdown:
        stages = breakdown(readings, map_wearable_json, encode)
        print(json.dumps({"wearable_stages": stages}), file=sys.stderr)
    out: dict = {"bench": "normalizer_flat", "terminology": terminology, "pinned_core": args.core}
    for name, batch, mapper in (("wearables", readings, map_wearable_json), ("pharmacy", rows, pharmacy)):
        results = []
        for _ in range(args.runs):
            results.append(run(batch, mapper, encode, terminology))
            print(json.dumps({name: results[-1]}), file=sys.stderr)
        rates = [r["per_s"] for r in results]
        out[name] = {"records": len(batch), "resources_per_record": round(results[0]["resources"] / len(batch), 2),
                     "mapping_errors": results[0]["mapping_errors"], "median_per_s": statistics.median(rates),
                     "min": min(rates), "max": max(rates),
                     "median_us": statistics.median(r["us_per_record"] for r in results)}
    if stages is not None:
        out["wearable_stages_us"] = stages
    print(json.dumps(out))


if __name__ == "__main__":
    main()
