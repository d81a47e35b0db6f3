"""`carelake simulate`: a population, one day of its care, the eight feeds and the ground truth."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from faker import Faker

from carelake_simulator import store
from carelake_simulator.day import DayGenerator, Events
from carelake_simulator.feeds import FeedBuilder, MessRates
from carelake_simulator.identity import IdentityRates, Registry, register
from carelake_simulator.model import FeedFile, FeedRecord
from carelake_simulator.population import Population, generate_population
from carelake_simulator.truth import TruthWriter, config_dict

GENERATOR_VERSION = "1"


@dataclass(frozen=True)
class SimConfig:
    patients: int = 45_000
    day: date = date(2026, 1, 15)
    seed: int = 42
    device_share: float = 0.137  # adults with a streaming wearable; sized so the reference day is ~847,000 records
    wearable_minutes: int = 10  # heart-rate sampling interval
    mess: MessRates = field(default_factory=MessRates)
    identity: IdentityRates = field(default_factory=IdentityRates)


@dataclass
class Simulation:
    config: SimConfig
    population: Population
    registry: Registry
    events: Events
    records: list[FeedRecord]
    files: list[FeedFile]


Step = Callable[[str], None]


def simulate(config: SimConfig, step: Step = lambda what: None) -> Simulation:
    """Generate everything in memory (deterministic from the seed)."""
    step("population")
    pop = generate_population(config.patients, config.seed, config.day, config.device_share)
    step("registrations")
    fake = Faker("en_US")
    fake.seed_instance(config.seed ^ 0x5EED)
    registry = register(pop.people, config.identity, config.seed, fake.street_address)
    step("events")
    events = DayGenerator(pop, config.day, config.seed, config.wearable_minutes).generate()
    step("feeds")
    builder = FeedBuilder(pop, registry, events, config.seed, config.mess, config.identity)
    records = sorted(builder.records(), key=lambda r: (r.source, r.sent_time, r.message_id))
    files = builder.files()
    return Simulation(config, pop, registry, events, records, files)


def write(sim: Simulation, out: Path, step: Step = lambda what: None) -> dict:
    """Write the feeds, the truth and a manifest under ``out``; returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    truth = TruthWriter(out)
    step("writing feeds")
    counts = store.write_records(out, sim.config.day, (truth.record(r) for r in sim.records))
    store.write_files(out, sim.files)
    for f in sim.files:
        truth.file(f)
    step("writing truth")
    cfg = sim.config
    expected = truth.close(sim.population, sim.registry, sim.events, cfg.seed,
                          config_dict(patients=cfg.patients, day=str(cfg.day), seed=cfg.seed,
                                      device_share=cfg.device_share, wearable_minutes=cfg.wearable_minutes,
                                      mess=cfg.mess, identity=cfg.identity))
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "seed": cfg.seed, "patients": cfg.patients, "day": str(cfg.day),
        "messages_by_source": counts,
        "files": [{"source": f.source, "name": f.name, "kind": f.kind, "records": len(f.records),
                   "bytes": len(f.payload)} for f in sim.files],
        "records": expected["records"],
        "sha256": {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                   for p in sorted(out.glob("*/*")) if p.is_file() and not p.parent.name.startswith("_")},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def run(config: SimConfig, out: Path, step: Step = lambda what: None) -> tuple[dict, float]:
    started = time.perf_counter()
    manifest = write(simulate(config, step), out, step)
    return manifest, time.perf_counter() - started
