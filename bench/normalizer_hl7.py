"""HL7 v2 mapping speed: messages/s of the pure mapping on one core, ADT/ORU mix.

    .venv/bin/python bench/normalizer_hl7.py [--patients 45000] [--messages 20000] [--runs 3] [--core 0]
    .venv/bin/python bench/normalizer_hl7.py --no-validate   # what the FHIR model validation costs
    .venv/bin/python bench/normalizer_hl7.py --stages        # µs per message spent in each stage
    .venv/bin/python bench/normalizer_hl7.py --terminology   # with the service's terminology pass too

Simulates a day (in memory, not timed), takes its ADT and ORU messages (EHR ADT + vitals, lab
results) in send order, and times, per message: parse → map → PHI labels → FHIR validation of
every resource (fhir.resources R4B) → one silver.fhir.v1 envelope per resource, Avro
single-object encoded with carelake.serde. Rejected parts and MappingErrors count as handled
messages (as the service would DLQ them). Prints one JSON line; per-run lines go to stderr.
Target: >= 5,000 messages/s on one core.

``--stages`` times one extra run with a timer around each stage (parse, mapping, ids, time
values, terminology, PHI labels and paths, validation, envelope, JSON dumps, Avro encode) and
prints exclusive µs per message for each (the timers add ~20-40 µs a message of their own).
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
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from carelake.serde import SchemaRegistry
from carelake_normalizer import hl7v2
from carelake_normalizer import validate as validation
from carelake_normalizer.core import MappingError
from carelake_normalizer.envelope import fhir_envelope
from carelake_normalizer.hl7v2 import map_hl7v2
from carelake_normalizer.terminology import normalize_resource
from carelake_simulator.simulate import SimConfig, simulate

TZ = ZoneInfo("America/Chicago")


def messages(patients: int, limit: int) -> list[tuple[str, str, bytes]]:
    sim = simulate(SimConfig(patients=patients))
    out = [(r.source, r.message_id, r.payload) for r in sorted(sim.records, key=lambda r: r.sent_time)
           if r.kind.startswith(("ADT^", "ORU^"))]
    while len(out) < limit:  # a small population: go round again
        out += out[: limit - len(out)]
    return out[:limit]


def run(batch: list[tuple[str, str, bytes]], encode, terminology: bool = False) -> dict:  # noqa: ANN001
    resources = rejected = errors = 0
    now = datetime.now(UTC)
    map_message, envelope = map_hl7v2, fhir_envelope  # module globals: --stages wraps them
    started, cpu_started = time.perf_counter(), time.process_time()
    for source, message_id, payload in batch:
        term = (lambda r, s=source: normalize_resource(r, s)) if terminology else None
        try:
            result = map_message(payload, source=source, tz=TZ, raw_id=message_id, terminology=term)
        except MappingError:
            errors += 1
            continue
        rejected += len(result.rejected)
        for m in result.resources:
            encode(envelope(m, source=source, raw_id=message_id, bronze_key="bench", byte_offset=0,
                            byte_length=len(payload), source_message_id=message_id, processed_at=now))
            resources += 1
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {"seconds": round(seconds, 3), "messages": len(batch), "msgs_per_s": round(len(batch) / seconds),
            "resources": resources, "rejected_parts": rejected, "mapping_errors": errors,
            "us_per_msg": round(seconds / len(batch) * 1e6, 1),
            # CPU time of this process: on a shared machine, less disturbed than wall time by waiting
            "cpu_msgs_per_s": round(len(batch) / cpu), "cpu_us_per_msg": round(cpu / len(batch) * 1e6, 1)}


class Stages:
    """Exclusive time per stage: each wrapped call's time minus that of the wrapped calls inside it."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self._inner: list[float] = []

    def wrap(self, name: str, fn: Callable) -> Callable:
        inner, seconds, clock = self._inner, self.seconds, time.perf_counter

        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            start = clock()
            inner.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = clock() - start
                seconds[name] += elapsed - inner.pop()
                if inner:
                    inner[-1] += elapsed
        return timed


def stages(batch: list[tuple[str, str, bytes]], encode, terminology: bool) -> dict:  # noqa: ANN001
    """One run with every stage timed; µs per message per stage."""
    from carelake_normalizer import envelope, finish
    from carelake_normalizer.hl7v2 import context

    st = Stages()
    this = sys.modules[__name__]
    patches = [(this, "map_hl7v2", "mapping"), (hl7v2, "parse_message", "parse"),
               (context, "resource_id", "ids"), (context, "parse_ts", "time values"),
               (context, "parse_date", "time values"), (finish, "check", "validation"),
               (finish, "security_labels", "PHI labels + paths"), (finish, "phi_paths", "PHI labels + paths"),
               (this, "normalize_resource", "terminology"), (this, "fhir_envelope", "envelope"),
               (envelope, "resource_json", "JSON dumps")]
    saved = [(mod, attr, getattr(mod, attr)) for mod, attr, _ in patches]
    for mod, attr, name in patches:
        setattr(mod, attr, st.wrap(name, getattr(mod, attr)))
    try:
        result = run(batch, st.wrap("Avro encode", encode), terminology)
    finally:
        for mod, attr, fn in saved:
            setattr(mod, attr, fn)
    n = len(batch)
    out = {name: round(s / n * 1e6, 1) for name, s in st.seconds.most_common()}
    out["timed total"] = round(sum(st.seconds.values()) / n * 1e6, 1)
    out["run us_per_msg"] = result["us_per_msg"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=45_000)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to (-1: no pinning)")
    parser.add_argument("--no-validate", action="store_true", help="skip FHIR validation (to measure its cost)")
    parser.add_argument("--profile", action="store_true", help="cProfile one run; top functions to stderr")
    parser.add_argument("--stages", action="store_true", help="one extra timed run: µs per message per stage")
    parser.add_argument("--terminology", action="store_true", help="run the terminology pass as the service does")
    args = parser.parse_args()
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})
    batch = messages(args.patients, args.messages)
    encode = SchemaRegistry.load().get("fhir_envelope").encode
    if args.no_validate:
        from carelake_normalizer import finish
        # (None: valid; True: JSON data, so the JSON stage stays comparable — the mappings' output is)
        finish.check = lambda resource, *a, **k: (None, True)  # noqa: ARG005
    run(batch[:500], encode, args.terminology)  # warm-up: imports, model classes, caches
    if args.stages:
        print(json.dumps({"stages_us_per_msg": stages(batch, encode, args.terminology)}), file=sys.stderr)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(batch, encode, args.terminology)
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    results = []
    for _ in range(args.runs):
        results.append(run(batch, encode, args.terminology))
        print(json.dumps(results[-1]), file=sys.stderr)
    rates = [r["msgs_per_s"] for r in results]
    print(json.dumps({
        "bench": "normalizer_hl7", "validate": not args.no_validate, "terminology": args.terminology,
        "pinned_core": args.core,
        "messages": len(batch), "adt": sum(p.startswith(b"MSH") and b"|ADT^" in p[:200] for _, _, p in batch),
        "resources_per_msg": round(results[0]["resources"] / len(batch), 2),
        "median_msgs_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
        "median_us_per_msg": statistics.median(r["us_per_msg"] for r in results),
        "median_cpu_msgs_per_s": statistics.median(r["cpu_msgs_per_s"] for r in results),
        "fast_validations": validation.STATS["fast"], "whole_validations": validation.STATS["whole"],
    }))


if __name__ == "__main__":
    main()
