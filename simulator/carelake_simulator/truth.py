"""The ground truth written beside the feeds (``<out>/_truth/``): who every record is about, the
true duplicates, every planted defect, each person's outcome probabilities and realised labels,
and the expected values the Gold layer should compute.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from carelake_simulator.day import Events
from carelake_simulator.identity import Registry
from carelake_simulator.model import FeedFile, FeedRecord
from carelake_simulator.population import Population, age_on

POOR_CONTROL_HBA1C = 9.0  # HEDIS HBD: HbA1c poor control (> 9.0 %)


def _csv(path: Path, header: tuple[str, ...], rows: Iterable[tuple]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


class TruthWriter:
    """Collects per-record truth while feeds stream past, then writes everything at the end."""

    def __init__(self, out: Path) -> None:
        self.dir = out / "_truth"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._records = open(self.dir / "records.csv", "w", newline="")
        self._writer = csv.writer(self._records)
        self._writer.writerow(("source", "kind", "record_id", "file", "key", "person_id", "defects"))
        self.defects: Counter[str] = Counter()  # defect kind -> records
        self.records_by_source: Counter[str] = Counter()
        self.records_by_kind: Counter[str] = Counter()
        self._defect_rows: list[tuple[str, str, str, str]] = []

    def record(self, r: FeedRecord) -> FeedRecord:
        self._row(r.source, r.kind, r.message_id, "", r.key, r.person_id, r.defects)
        return r

    def file(self, f: FeedFile) -> None:
        for rec in f.records:
            self._row(f.source, f.kind, rec.record_id, f.name, rec.key, rec.person_id, rec.defects)

    def _row(self, source: str, kind: str, record_id: str, file: str, key: str, person_id: str | None,
             defects: tuple[str, ...]) -> None:
        self._writer.writerow((source, kind, record_id, file, key, person_id or "", ";".join(defects)))
        self.records_by_source[source] += 1
        self.records_by_kind[f"{source}:{kind}"] += 1
        for d in defects:
            self.defects[d] += 1
            self._defect_rows.append((source, record_id, file, d))

    def close(self, pop: Population, registry: Registry, events: Events, seed: int, config: dict) -> dict:
        """Write the remaining truth files; returns the expected values (also in expected.json)."""
        self._records.close()
        _csv(self.dir / "defects.csv", ("source", "record_id", "file", "defect"), self._defect_rows)
        day = events.day
        _csv(self.dir / "people.csv",
             ("person_id", "sex", "birth_date", "age", "area_id", "payer_kind", "conditions", "hba1c", "devices"),
             ((p.person_id, p.demo.sex, p.demo.birth_date, age_on(p.demo.birth_date, day), p.area_id,
               p.payer.kind, ";".join(p.conditions), p.hba1c if p.hba1c is not None else "", ";".join(p.devices))
              for p in pop.people))
        labels = random.Random(seed ^ 0x1ABE1)
        _csv(self.dir / "outcomes.csv",
             ("person_id", "risk_index", "p_readmission_30d", "p_diabetes_progression", "p_ed_visit_30d",
              "label_diabetes_progression", "label_ed_visit_30d"),
             ((p.person_id, p.risk.score, p.risk.readmission_30d, p.risk.diabetes_progression, p.risk.ed_visit_30d,
               int(labels.random() < p.risk.diabetes_progression), int(labels.random() < p.risk.ed_visit_30d))
              for p in pop.people))
        people = pop.by_id()
        _csv(self.dir / "discharges.csv",
             ("encounter_id", "person_id", "discharge_time", "p_readmission_30d", "label_readmitted_30d"),
             ((e.encounter_id, e.person_id, e.discharge.isoformat() if e.discharge else "",
               people[e.person_id].risk.readmission_30d, int(label)) for e, label in events.discharges))
        _csv(self.dir / "registrations.csv",
             ("source", "mrn", "key", "person_id", "duplicate_of", "variations"),
             ((r.source, r.mrn, r.key, r.person_id, r.duplicate_of or "", ";".join(r.variations))
              for r in registry.all))
        pairs = [(r.source, r.duplicate_of, r.mrn, r.person_id) for r in registry.all if r.duplicate_of]
        _csv(self.dir / "duplicate_pairs.csv", ("source", "mrn_a", "mrn_b", "person_id"), pairs)
        expected = self._expected(pop, events, pairs, config)
        (self.dir / "expected.json").write_text(json.dumps(expected, indent=2, default=str))
        return expected

    def _expected(self, pop: Population, events: Events, pairs: list, config: dict) -> dict:
        diabetics = [p for p in pop.people if "diabetes" in p.conditions]
        poor = [p for p in diabetics if p.hba1c is not None and p.hba1c > POOR_CONTROL_HBA1C]
        people = pop.by_id()
        a1c_today = [(o.person_id, obs.value) for o in events.labs for obs in o.observations
                     if obs.code.code == "4548-4" and "diabetes" in people[o.person_id].conditions]
        lab_records = self.records_by_source.get("lab", 0)
        return {
            "config": config,
            "records": sum(self.records_by_source.values()),
            "records_by_source": dict(sorted(self.records_by_source.items())),
            "records_by_kind": dict(sorted(self.records_by_kind.items())),
            "planted_defects": dict(sorted(self.defects.items())),
            "planted_rates": {
                "missing_dob_lab": self.defects["missing_dob"] / lab_records if lab_records else None,
                "malformed": sum(v for k, v in self.defects.items() if k.startswith("malformed"))
                / max(1, sum(self.records_by_source.values())),
            },
            "registrations": {"within_system_duplicate_pairs": len(pairs)},
            "population": {
                "patients": len(pop.people),
                "by_condition": dict(sorted(Counter(c for p in pop.people for c in p.conditions).items())),
                "diabetics": len(diabetics),
                "diabetics_hba1c_over_9_share": round(len(poor) / len(diabetics), 4) if diabetics else None,
                "mean_p_readmission_30d": round(sum(p.risk.readmission_30d for p in pop.people) / len(pop.people), 4),
                "mean_p_ed_visit_30d": round(sum(p.risk.ed_visit_30d for p in pop.people) / len(pop.people), 4),
            },
            "day": {
                "date": str(events.day),
                "encounters_by_kind": dict(Counter(e.kind for e in events.encounters)),
                "inpatient_admissions": sum(1 for t, e, _ in events.adt if t == "A01"),
                "discharges": len(events.discharges),
                "discharges_readmitted_30d_label": sum(1 for _, label in events.discharges if label),
                "lab_orders": len(events.labs),
                "hba1c_results_of_diabetics": len(a1c_today),
                "hba1c_results_of_diabetics_over_9_share":
                    round(sum(1 for _, v in a1c_today if v > POOR_CONTROL_HBA1C) / len(a1c_today), 4)
                    if a1c_today else None,
                "dispenses": len(events.dispenses),
                "claims": len(events.claims),
                "remittances": len(events.remittances),
                "appointments_by_status": dict(Counter(a.status for a in events.appointments)),
                "immunizations": len(events.immunizations),
                "wearable_readings": len(events.wearables),
            },
        }


def config_dict(**parts: object) -> dict:
    """Dataclass configs as plain dicts for expected.json."""
    return {k: asdict(v) if hasattr(v, "__dataclass_fields__") else v for k, v in parts.items()}
