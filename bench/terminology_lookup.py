"""The normalizer's terminology pass: codings normalized per second over a realistic mix, one core.

    .venv/bin/python bench/terminology_lookup.py [--resources 200000] [--runs 3] [--core 0]

Builds FHIR resource dicts with the simulator's own codes in the proportions of a simulated day
(lab and vital-sign Observations with LOINC, Conditions and claim diagnoses in ICD-10-CM, charges in
CPT/HCPCS, dispenses with NDCs, immunizations with CVX) and its planted mess (5 % of lab codes the
lab's own, 2 % of claim diagnoses in ICD-9-CM, 0.5 % invalid codes, some 10-digit NDCs), then times
``normalize_resource`` over them (copies made before the clock starts). Loading the maps once
(``MapStore.warm``) is timed separately. Prints one JSON line; per-run lines go to stderr.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import time

from carelake_normalizer.terminology import MapStore, codeable_concepts, normalize_resource
from carelake_normalizer.terminology import systems as S
from carelake_simulator import codes


def _cc(system: str, code: str) -> dict:
    return {"coding": [{"system": system, "code": code}]}


def make_mix(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    labs = [t.code.code for t in codes.LABS.values()]
    vitals = [t.code.code for t in codes.VITALS.values()]
    locals_ = list(codes.LOCAL_LAB_CODES)
    dx10 = [c.code for g in (*codes.CONDITION_CODES.values(), *codes.ACUTE_CODES.values()) for c in g]
    dx9 = [c.code for c in codes.ICD9_EQUIVALENTS.values()]
    cpt = [c.code for g in codes.VISIT_CPT.values() for c in g] + [c.code for c in codes.LAB_CPT.values()]
    ndcs = [d.ndc.code for d in codes.DRUGS.values()]
    cvx = [v.cvx.code for v in codes.VACCINES.values()]
    bad = codes.INVALID_CODES

    def observation() -> dict:
        if rng.random() < 0.4:
            code = _cc(S.LOINC, rng.choice(vitals))
        elif rng.random() < 0.05:
            code = _cc(S.local_system("lab"), rng.choice(locals_))
        elif rng.random() < 0.005:
            code = _cc(S.LOINC, rng.choice(bad["LOINC"]))
        else:
            code = _cc(S.LOINC, rng.choice(labs))
        return {"resourceType": "Observation", "status": "final", "code": code,
                "category": [_cc("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory")],
                "subject": {"reference": "Patient/p"}, "valueQuantity": {"value": 1.0}}

    def condition() -> dict:
        code = rng.choice(bad["ICD10CM"]) if rng.random() < 0.005 else rng.choice(dx10)
        return {"resourceType": "Condition", "subject": {"reference": "Patient/p"}, "code": _cc(S.ICD10CM, code),
                "category": [_cc("http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis")]}

    def claim() -> dict:
        legacy = rng.random() < 0.02
        dx = [{"sequence": i + 1, "diagnosisCodeableConcept":
               _cc(S.ICD9CM, rng.choice(dx9)) if legacy else _cc(S.ICD10CM, rng.choice(dx10))} for i in range(3)]
        items = [{"sequence": i + 1, "productOrService": _cc(S.CPT, rng.choice(cpt))} for i in range(2)]
        kind = _cc("http://terminology.hl7.org/CodeSystem/claim-type", "professional")
        return {"resourceType": "Claim", "status": "active", "type": kind, "diagnosis": dx, "item": items}

    def dispense() -> dict:
        ndc = rng.choice(ndcs)
        if rng.random() < 0.1:  # sent as a hyphenated 4-4-2
            ndc = f"{ndc[1:5]}-{ndc[5:9]}-{ndc[9:]}"
        elif rng.random() < 0.005:
            ndc = rng.choice(bad["NDC"])
        return {"resourceType": "MedicationDispense", "status": "completed",
                "medicationCodeableConcept": _cc(S.NDC, ndc)}

    def immunization() -> dict:
        return {"resourceType": "Immunization", "status": "completed", "vaccineCode": _cc(S.CVX, rng.choice(cvx))}

    makers = (observation, condition, claim, dispense, immunization)
    weights = (60, 15, 10, 12, 3)
    return [rng.choices(makers, weights)[0]() for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to (-1: no pinning)")
    args = parser.parse_args()
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})
    started = time.perf_counter()
    store = MapStore(None)
    store.warm()
    load_seconds = time.perf_counter() - started
    mix = make_mix(args.resources)
    codings = sum(len(cc["coding"]) for r in mix for _, cc in codeable_concepts(r))
    results = []
    for _ in range(args.runs):
        batch = copy.deepcopy(mix)
        flags = 0
        t0 = time.perf_counter()
        for r in batch:
            flags += len(normalize_resource(r, "bench", store=store))
        secs = time.perf_counter() - t0
        results.append({"seconds": round(secs, 3), "codings_per_second": round(codings / secs),
                        "resources_per_second": round(len(batch) / secs), "flags": flags})
        print(json.dumps(results[-1]), file=sys.stderr)
    med = statistics.median(r["codings_per_second"] for r in results)
    print(json.dumps({
        "bench": "terminology_lookup", "resources": args.resources, "codings": codings, "runs": args.runs,
        "pinned_core": args.core, "load_seconds": round(load_seconds, 2),
        "median_codings_per_second": med,
        "median_resources_per_second": statistics.median(r["resources_per_second"] for r in results),
        "flags_per_run": results[0]["flags"],
    }))


if __name__ == "__main__":
    main()
