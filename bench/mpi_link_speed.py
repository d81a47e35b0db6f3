"""The MPI's PostgreSQL link path: records linked per second against a large index, and their latency.

    .venv/bin/python bench/mpi_link_speed.py [--persons 1000000] [--arrivals 50000] [--batch 200]
                                              [--single 10000] [--seed 7] [--keep]

1. Bulk-loads ``--persons`` synthetic persons (one EHR record each: name, birth date, sex, address,
   phone, SSN for 60 %) with their blocking keys into a scratch database ``mpi_bench_<uuid>``
   (COPY; indexes and foreign keys built after the load, then VACUUM ANALYZE), and checks with
   EXPLAIN that the candidate lookup reads blocking_key through its primary-key index.
2. Links ``--arrivals`` records (half new people, half another source's registration of an indexed
   person: nickname or typo'd given name, a missing or changed phone, a moved address, a day/month
   swap now and then) through ``MpiStore.link`` in batches of ``--batch``; a batch's commit time
   is the latency of every record in it.
3. Links ``--single`` further records of the same mix one per call (one transaction each).

Names come from Faker's weighted en_US lists plus 20 other locales' surnames (so SMITH is ~1 %,
not the 3 % of the en_US list alone). Prints one JSON line; progress goes to stderr. The scratch
database is dropped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import random
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg.conninfo import make_conninfo

from carelake.config import settings
from carelake_dedup_mpi.blocking import cap as pass_cap
from carelake_dedup_mpi.blocking import keys as blocking_keys
from carelake_dedup_mpi.linker import decide
from carelake_dedup_mpi.model import default_model
from carelake_dedup_mpi.person import PersonRecord
from carelake_dedup_mpi.standardize import name as std_name
from carelake_dedup_mpi.store.index import BLOCKS_SQL
from carelake_dedup_mpi.store.migrate import migrate
from carelake_dedup_mpi.store.mpi import MpiStore

LOCALES = ("en_GB", "en_IE", "es_MX", "es_ES", "de_DE", "it_IT", "fr_FR", "pl_PL", "pt_BR", "nl_NL", "sv_SE",
           "no_NO", "da_DK", "fi_FI", "cs_CZ", "hu_HU", "ro_RO", "tr_TR", "en_NG", "en_IN")
SOURCES = ("lab", "pharmacy", "claims", "billing", "scheduling", "public_health")
NICK = {"ROBERT": "BOB", "WILLIAM": "BILL", "JAMES": "JIM", "ELIZABETH": "BETH", "MARGARET": "PEGGY",
        "RICHARD": "DICK", "JOSEPH": "JOE", "THOMAS": "TOM", "CHARLES": "CHUCK", "KATHERINE": "KATE",
        "MICHAEL": "MIKE", "JENNIFER": "JENNY", "PATRICIA": "PATTY", "DANIEL": "DAN", "SUSAN": "SUE"}
STATES = ("IL", "WI", "IN", "MI", "OH", "MN", "IA", "MO")


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


class Population:
    """Deterministic synthetic people (standardized values, as the store sees them)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        us = importlib.import_module("faker.providers.person.en_US").Provider
        addr = importlib.import_module("faker.providers.address.en_US").Provider
        family_w: dict[str, float] = {}
        total = sum(us.last_names.values())
        for raw, w in us.last_names.items():  # en_US: 60 % of people, by its weights
            if (n := std_name(raw)) and " " not in n:
                family_w[n] = family_w.get(n, 0) + 0.6 * w / total
        others = sorted({n for loc in LOCALES
                         for raw in importlib.import_module(f"faker.providers.person.{loc}").Provider.last_names
                         if (n := std_name(raw)) and " " not in n and n not in family_w})
        for n in others:  # the other 40 %, evenly
            family_w[n] = 0.4 / len(others)
        self.families, self.family_cum = list(family_w), list(itertools.accumulate(family_w.values()))
        given: dict[str, tuple[float, str]] = {}
        for table, sex in ((us.first_names_female, "F"), (us.first_names_male, "M")):
            for raw, w in table.items():
                if (n := std_name(raw)) and " " not in n:
                    given[n] = (w, sex)
        self.givens = list(given)
        self.given_cum = list(itertools.accumulate(w for w, _ in given.values()))
        self.sex_of = {n: s for n, (_, s) in given.items()}
        self.streets = sorted({std_name(raw) for raw in us.last_names} | set(others[:2000]))
        self.suffixes = ("ST", "AVE", "RD", "DR", "LN", "CT", "BLVD", "PL", "WAY", "TER")
        self.zips = [f"{self.rng.randint(46000, 62999):05d}" for _ in range(4000)]
        self.cities = [std_name(c) for c in addr.city_prefixes + addr.city_suffixes] or ["SPRINGFIELD"]
        self.used_phones: set[str] = set()

    def _phone(self) -> str:
        while True:
            p = f"{self.rng.choice((312, 773, 847, 630, 708, 414, 608, 317))}{self.rng.randint(2000000, 9999999)}"
            if p not in self.used_phones:
                self.used_phones.add(p)
                return p

    def person(self, key: str, asserted: str) -> PersonRecord:
        rng = self.rng
        given = rng.choices(self.givens, cum_weights=self.given_cum)[0]
        family = rng.choices(self.families, cum_weights=self.family_cum)[0]
        dob = date(1930, 1, 1) + timedelta(days=rng.randrange(85 * 365))
        ssn = f"{rng.randint(1, 665):03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}" if rng.random() < 0.6 \
            else None
        street = f"{rng.randint(1, 9999)} {rng.choice(self.streets)} {rng.choice(self.suffixes)}"
        return PersonRecord(key, key.split("|", 1)[0], given=given, middle=rng.choice("ABCDEFGHJKLMNPRSTW")
                            if rng.random() < 0.4 else None, family=family, birth_date=dob,
                            sex=self.sex_of.get(given, "U"), address_line=street, city=rng.choice(self.cities),
                            state=rng.choice(STATES), postal_code=rng.choice(self.zips), phone=self._phone(),
                            ssn=ssn, asserted_at=asserted)

    def variation(self, p: PersonRecord, key: str, asserted: str) -> PersonRecord:
        """Another source's registration of ``p``: the typical disagreements between systems."""
        rng = self.rng
        given = p.given or ""
        r = rng.random()
        if r < 0.15 and given in NICK:
            given = NICK[given]
        elif r < 0.30 and len(given) > 3:
            i = rng.randrange(1, len(given) - 1)
            given = given[:i] + given[i + 1] + given[i] + given[i + 2:]  # transposed letters
        dob = p.birth_date
        if dob and rng.random() < 0.05 and dob.day <= 12 and dob.day != dob.month:
            dob = date(dob.year, dob.day, dob.month)
        out = replace(p, record_key=key, source=key.split("|", 1)[0], given=given, birth_date=dob,
                      middle=None if rng.random() < 0.5 else p.middle, ssn=p.ssn if rng.random() < 0.5 else None,
                      asserted_at=asserted)
        if rng.random() < 0.3:
            out = replace(out, phone=None)
        if rng.random() < 0.2:
            out = replace(out, address_line=f"{rng.randint(1, 9999)} {rng.choice(self.streets)} ST",
                          postal_code=rng.choice(self.zips))
        return out


def load(dsn: str, pop: Population, n: int, keep: int, now: datetime) -> list[tuple[PersonRecord, str]]:
    """COPY ``n`` persons in; returns ``keep`` of them (record, euid), spread over the load."""
    kept: list[tuple[PersonRecord, str]] = []
    every = max(1, n // max(1, keep))
    stamp = now.isoformat()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no FK triggers during the load
        for ddl in ("ALTER TABLE blocking_key DROP CONSTRAINT blocking_key_pkey", "DROP INDEX source_record_euid",
                    "DROP INDEX link_euid"):
            conn.execute(ddl)
        started, done = time.monotonic(), 0
        with conn.cursor() as cur:
            for chunk_start in range(0, n, 50_000):
                chunk = [pop.person(f"ehr|{i:08d}", "2025-01-01T00:00:00+00:00")
                         for i in range(chunk_start, min(n, chunk_start + 50_000))]
                euids = ["E" + uuid.uuid4().hex[:12] for _ in chunk]
                with cur.copy("COPY person (euid, created_at, updated_at, golden, golden_sources) FROM STDIN") as cp:
                    for p, e in zip(chunk, euids, strict=True):
                        demo = {k: v for k, v in p.to_json().items() if v not in (None, []) and k not in
                                ("record_key", "source", "asserted_at")}
                        cp.write_row((e, stamp, stamp, json.dumps(demo), json.dumps({k: p.record_key for k in demo})))
                with cur.copy("COPY source_record (record_key, source, demographics, blocking_keys, euid, unlinkable, "
                              "first_seen, updated_at) FROM STDIN") as cp:
                    cp.set_types(["text", "text", "jsonb", "text[]", "text", "bool", "timestamptz", "timestamptz"])
                    all_keys = []
                    for p, e in zip(chunk, euids, strict=True):
                        ks = blocking_keys(p)
                        all_keys.append(ks)
                        cp.write_row((p.record_key, p.source, p.to_json(), ks, e, False, now, now))
                with cur.copy("COPY blocking_key (key, record_key) FROM STDIN") as cp:
                    for p, ks in zip(chunk, all_keys, strict=True):
                        for k in ks:
                            cp.write_row((k, p.record_key))
                with cur.copy("COPY link (record_key, euid, outcome, rule, decided_by, decided_at) FROM STDIN") as cp:
                    for p, e in zip(chunk, euids, strict=True):
                        cp.write_row((p.record_key, e, "new_person", "bench-load", "matcher", stamp))
                for i, (p, e) in enumerate(zip(chunk, euids, strict=True)):
                    if (chunk_start + i) % every == 0 and len(kept) < keep:
                        kept.append((p, e))
                done += len(chunk)
                log(f"loaded {done:,} persons ({done / (time.monotonic() - started):,.0f}/s)")
        log("building indexes ...")
        conn.execute("ALTER TABLE blocking_key ADD PRIMARY KEY (key, record_key)")
        conn.execute("CREATE INDEX source_record_euid ON source_record (euid)")
        conn.execute("CREATE INDEX link_euid ON link (euid)")
        conn.execute("VACUUM ANALYZE")
        log(f"load + indexes: {time.monotonic() - started:.0f} s")
    return kept


def reload(dsn: str, keep: int) -> list[tuple[PersonRecord, str]]:
    """The persons of an earlier run's load, read back (a sample spread over the table)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT demographics, euid FROM source_record TABLESAMPLE SYSTEM (5) "
                            "WHERE record_key LIKE 'ehr|%%' LIMIT %s", (keep,)).fetchall()
    return [(PersonRecord.from_json(d), e) for d, e in rows]


def explain(dsn: str, sample: list[str]) -> tuple[bool, str]:
    with psycopg.connect(dsn) as conn:
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + BLOCKS_SQL,
                                                     {"keys": sample, "caps": [pass_cap(k) for k in sample]}))
    return "Index Only Scan using blocking_key_pkey" in plan, plan


def arrivals(pop: Population, kept: list[tuple[PersonRecord, str]], count: int, start: int,
             rng: random.Random, run_id: str) -> Iterator[tuple[PersonRecord, str | None]]:
    """(record, the EUID it should join or None for a new person), half and half."""
    for i in range(start, start + count):
        key = f"{rng.choice(SOURCES)}|{run_id}{i:08d}"
        stamp = "2026-01-01T00:00:00+00:00"
        if i % 2:
            p, euid = kept[rng.randrange(len(kept))]
            yield pop.variation(p, key, stamp), euid
        else:
            yield pop.person(key, stamp), None


CANDIDATES: list[int] = []


def counting_decide(model, record, candidates):  # type: ignore[no-untyped-def]
    """The real decision; counts the candidates it scored."""
    CANDIDATES.append(len(candidates))
    return decide(model, record, candidates)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def run(store: MpiStore, items: list[tuple[PersonRecord, str | None]], batch: int, now: datetime) -> dict:
    CANDIDATES.clear()
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    right = linked_variations = 0
    started = time.perf_counter()
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        t0 = time.perf_counter()
        events = store.link([r for r, _ in chunk], now)
        took = time.perf_counter() - t0
        latencies += [took] * len(chunk)
        truth = {r.record_key: e for r, e in chunk}
        for e in events:
            if e["event_type"] == "LINK":
                outcomes[e["outcome"]] = outcomes.get(e["outcome"], 0) + 1
                if truth.get(e["record_key"]) is not None:
                    linked_variations += 1
                    right += e["euid"] == truth[e["record_key"]] and e["outcome"] == "auto_link"
        if (i // batch) % max(1, 5000 // batch) == 0:
            log(f"  batch {batch}: {i + len(chunk):,}/{len(items):,} "
                f"({(i + len(chunk)) / (time.perf_counter() - started):,.0f} records/s)")
    seconds = time.perf_counter() - started
    return {"records": len(items), "batch": batch, "seconds": round(seconds, 2),
            "records_per_s": round(len(items) / seconds), "p50_ms": round(1000 * pct(latencies, 0.5), 2),
            "p99_ms": round(1000 * pct(latencies, 0.99), 2), "outcomes": outcomes,
            "candidates_per_record": round(sum(CANDIDATES) / max(1, len(CANDIDATES)), 1),
            "variations_auto_linked_right": round(right / max(1, linked_variations), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--arrivals", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--single", type=int, default=10_000, help="records linked one per transaction")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cap", type=int, default=0,
                    help="one block cap for every key instead of blocking.cap's per-pass caps (0 = those)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    ap.add_argument("--database", help="reuse a database kept by an earlier --keep run (no load, not dropped)")
    args = ap.parse_args()

    admin = settings().postgres_dsn
    name = args.database or f"mpi_bench_{uuid.uuid4().hex}"
    if not args.database:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    dsn = make_conninfo(admin, dbname=name)
    log(f"scratch database {name}")
    try:
        migrate(dsn)
        pop = Population(args.seed)
        now = datetime(2026, 3, 1, tzinfo=UTC)
        kept = load(dsn, pop, args.persons, 20_000, now) if not args.database else reload(dsn, 20_000)
        sample = [k for p, _ in kept[:25] for k in blocking_keys(p)]
        index_used, plan = explain(dsn, sample)
        log(plan)
        run_id = uuid.uuid4().hex[:6].upper()
        rng = random.Random(f"{args.seed}-{run_id}")
        pop.rng = random.Random(f"{args.seed}-{run_id}-people")  # arrivals are new people, not the load's again
        batched = list(arrivals(pop, kept, args.arrivals, 0, rng, run_id))
        single = list(arrivals(pop, kept, args.single, args.arrivals, rng, run_id))
        cap = (lambda key: args.cap) if args.cap else pass_cap
        store = MpiStore.open(dsn, default_model(), min_size=1, max_size=1, cap=cap, decide=counting_decide)
        try:
            log(f"linking {len(batched):,} records in batches of {args.batch} ...")
            batch_result = run(store, batched, args.batch, now)
            log(f"linking {len(single):,} records one at a time ...")
            single_result = run(store, single, 1, now) if single else None
        finally:
            store.close()
        with psycopg.connect(dsn) as conn:
            blocks = conn.execute("SELECT count(*), max(n), percentile_disc(0.99) WITHIN GROUP (ORDER BY n) "
                                  "FROM (SELECT count(*) AS n FROM blocking_key GROUP BY key) s").fetchone()
        print(json.dumps({"bench": "mpi_link_speed", "persons": args.persons, "cap": args.cap or "blocking.cap",
                          "index_used": index_used,
                          "blocking_keys": blocks[0], "largest_block": blocks[1], "block_p99": blocks[2],
                          "batched": batch_result, "single": single_result}))
    finally:
        if not (args.keep or args.database):
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            log(f"dropped {name}")


if __name__ == "__main__":
    main()
