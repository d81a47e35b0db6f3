"""HL7 v2 mapping speed: messages/s of the pure mapping on one core, ADT/ORU mix.

    .venv/bin/python bench/normalizer_hl7.py [--patients 45000] [--messages 20000] [--runs 3] [--core 0]
    .venv/bin/python bench/normalizer_hl7.py --no-validate   # what the FHIR model validation costs

Simulates a day (in memory, not timed), takes its ADT and ORU messages (EHR ADT + vitals, lab
results) in send order, and times, per message: parse → map → PHI labels → FHIR validation of
every resource (fhir.resources R4B) → one silver.fhir.v1 envelope per resource, Avro
single-object encoded with carelake.serde. Rejected parts and MappingErrors count as handled
messages (as the service would DLQ them). Prints one JSON line; per-run lines go to stderr.
Target: >= 5,000 messages/s on one core.
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
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from carelake.serde import SchemaRegistry
from carelake_normalizer import validate as validation
from carelake_normalizer.core import MappingError
from carelake_normalizer.envelope import fhir_envelope
from carelake_normalizer.hl7v2 import map_hl7v2
from carelake_simulator.simulate import SimConfig, simulate

TZ = ZoneInfo("America/Chicago")


def messages(patients: int, limit: int) -> list[tuple[str, str, bytes]]:
    sim = simulate(SimConfig(patients=patients))
    out = [(r.source, r.message_id, r.payload) for r in sorted(sim.records, key=lambda r: r.sent_time)
           if r.kind.startswith(("ADT^", "ORU^"))]
    while len(out) < limit:  # a small population: go round again
        out += out[: limit - len(out)]
    return out[:limit]


def run(batch: list[tuple[str, str, bytes]], encode) -> dict:  # noqa: ANN001
    resources = rejected = errors = 0
    now = datetime.now(UTC)
    started = time.perf_counter()
    for source, message_id, payload in batch:
        try:
            result = map_hl7v2(payload, source=source, tz=TZ, raw_id=message_id)
        except MappingError:
            errors += 1
            continue
        rejected += len(result.rejected)
        for m in result.resources:
            encode(fhir_envelope(m, source=source, raw_id=message_id, bronze_key="bench", byte_offset=0,
                                 byte_length=len(payload), source_message_id=message_id, processed_at=now))
            resources += 1
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "messages": len(batch), "msgs_per_s": round(len(batch) / seconds),
            "resources": resources, "rejected_parts": rejected, "mapping_errors": errors,
            "us_per_msg": round(seconds / len(batch) * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=45_000)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to (-1: no pinning)")
    parser.add_argument("--no-validate", action="store_true", help="skip FHIR validation (to measure its cost)")
    parser.add_argument("--profile", action="store_true", help="cProfile one run; top functions to stderr")
    args = parser.parse_args()
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})
    batch = messages(args.patients, args.messages)
    encode = SchemaRegistry.load().get("fhir_envelope").encode
    if args.no_validate:
        validation.validate = lambda resource, *a, **k: None  # noqa: ARG005
        from carelake_normalizer.hl7v2 import context
        context.validate = validation.validate
    run(batch[:500], encode)  # warm-up: imports, model classes, caches
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(batch, encode)
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    results = []
    for _ in range(args.runs):
        results.append(run(batch, encode))
        print(json.dumps(results[-1]), file=sys.stderr)
    rates = [r["msgs_per_s"] for r in results]
    print(json.dumps({
        "bench": "normalizer_hl7", "validate": not args.no_validate, "pinned_core": args.core,
        "messages": len(batch), "adt": sum(p.startswith(b"MSH") and b"|ADT^" in p[:200] for _, _, p in batch),
        "resources_per_msg": round(results[0]["resources"] / len(batch), 2),
        "median_msgs_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
        "median_us_per_msg": statistics.median(r["us_per_msg"] for r in results),
    }))


if __name__ == "__main__":
    main()
