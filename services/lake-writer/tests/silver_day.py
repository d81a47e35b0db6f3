"""A small simulated day as the lake-writer's inputs, built through the project's public tools.

``carelake simulate`` writes a day of the eight feeds; ``carelake convert`` maps each feed file to
FHIR R4 (what the normalizer emits). This module wraps the resources as silver.linked.v1 envelopes
the way the normalizer and the MPI would: the source patient key from the source's MRN (the
pharmacy's and wearables' own user ids), the EUID from the simulator's ground truth (a perfect MPI),
lineage pointing at a raw envelope per source message (``meta.source``), plus the matching
bronze.raw.v1 envelopes and one mpi.links.v1 LINK per source record.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

# feed file glob -> source (the wearables feed is cut to its first lines: it is 2/3 of a day)
FEEDS = {
    "ehr/*.hl7": "ehr", "lab/*.hl7": "lab", "scheduling/*.hl7": "scheduling", "billing/*.hl7": "billing",
    "public_health/*.hl7": "public_health", "public_health/sdoh_*.csv": "public_health",
    "pharmacy/*.csv": "pharmacy", "claims/*.x12": "claims", "wearables/*.ndjson": "wearables",
}
PATIENT_REFS = ("subject", "patient", "beneficiary")


def euid_of(person_id: str) -> str:
    """A stable EUID per simulated person (what a perfect MPI would assign)."""
    return "E" + hashlib.sha1(person_id.encode()).hexdigest()[:12].upper()


@dataclass
class SilverDay:
    envelopes: list[dict] = field(default_factory=list)  # silver.linked.v1 values
    raw: list[dict] = field(default_factory=list)  # bronze.raw.v1 values (metadata; payload null)
    links: list[dict] = field(default_factory=list)  # mpi.links.v1 LINK events
    person_of_key: dict[str, str] = field(default_factory=dict)  # source|mrn -> person id (truth)

    def keys_of(self, euid: str) -> set[str]:
        return {e["source_patient_key"] for e in self.envelopes if e["euid"] == euid and e["source_patient_key"]}


def _cli(*args: str) -> bytes:
    """Run a `carelake` command in this process (its public CLI) and return its stdout."""
    from typer.testing import CliRunner

    from carelake.cli.main import app

    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    if result.exit_code not in (0, 2):  # 2 = some parts rejected (planted mess), the rest converted
        raise RuntimeError(f"carelake {' '.join(args)} exited {result.exit_code}: {result.output[-2000:]}")
    return result.stdout_bytes


def simulate_and_convert(out: Path, patients: int = 400, seed: int = 7,
                         wearable_lines: int = 300) -> dict[Path, tuple[str, list[dict]]]:
    """Simulate a day into ``out`` and convert every feed file: path -> (source, resources)."""
    sim = out / "sim"
    _cli("simulate", "--out", str(sim), "--patients", str(patients), "--seed", str(seed))
    for path in sorted(sim.glob("wearables/*.ndjson")):  # keep the first lines only
        lines = path.read_text().splitlines()[:wearable_lines]
        path.write_text("\n".join(lines) + "\n")
    converted = {}
    for pattern, source in FEEDS.items():
        for path in sorted(sim.glob(pattern)):
            stdout = _cli("convert", str(path), "--source", source)
            converted[path] = (source, [json.loads(line) for line in stdout.decode().splitlines() if line.strip()])
    return converted


def _mrn(patient: dict) -> str | None:
    idents = [i for i in patient.get("identifier") or () if isinstance(i, dict) and i.get("value")]
    for code in ("MR", "MB"):
        for ident in idents:
            if any(c.get("code") == code for c in (ident.get("type") or {}).get("coding") or ()):
                return str(ident["value"])
    return None


def _wearable_users(path: Path) -> dict[str, str]:
    """reading id and device id -> user id, from the raw wearables feed."""
    users = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # planted malformed lines
        if isinstance(rec, dict) and rec.get("user_id"):
            users[str(rec.get("reading_id"))] = rec["user_id"]
            users[str(rec.get("device_id"))] = rec["user_id"]
    return users


def build_day(out: Path, patients: int = 400, seed: int = 7, wearable_lines: int = 300,
              started: datetime | None = None) -> SilverDay:
    converted = simulate_and_convert(out, patients, seed, wearable_lines)
    truth = {row["key"]: row["person_id"]
             for row in csv.DictReader((out / "sim" / "_truth" / "registrations.csv").open())}
    day = SilverDay(person_of_key=truth)
    at = started or datetime.now(UTC)
    raw_seen: dict[str, dict] = {}
    for path, (source, resources) in converted.items():
        wearable_users = _wearable_users(path) if source == "wearables" else {}
        key_of_patient = {f"Patient/{r['id']}": f"{source}|{mrn}" for r in resources
                          if r["resourceType"] == "Patient" and (mrn := _mrn(r))}
        for resource in resources:
            at += timedelta(microseconds=50)
            if resource["resourceType"] == "Patient":
                key = key_of_patient.get(f"Patient/{resource['id']}")
            elif wearable_users:
                ident = next((i.get("value") for i in resource.get("identifier") or ()), None)
                user = wearable_users.get(str(ident))
                key = f"wearables|{user}" if user else None
            else:
                ref = next((resource[f].get("reference") for f in PATIENT_REFS
                            if isinstance(resource.get(f), dict) and resource[f].get("reference")), None)
                ref = ref or next((p["actor"]["reference"] for p in resource.get("participant") or ()
                                   if str((p.get("actor") or {}).get("reference", "")).startswith("Patient/")), None)
                key = key_of_patient.get(ref or "")
            person = truth.get(key or "")
            raw_id = str((resource.get("meta") or {}).get("source", "urn:carelake:raw:none")).rsplit(":", 1)[-1]
            bronze_key = f"{source}/2026/01/15/{path.name}"
            day.envelopes.append({
                "id": resource["id"], "resource_type": resource["resourceType"], "resource": json.dumps(resource),
                "fhir_version": "4.0.1", "source": source, "source_patient_key": key,
                "euid": euid_of(person) if person else None, "event_time": None, "processed_at": at,
                "lineage": {"raw_id": raw_id, "bronze_key": bronze_key, "byte_offset": 0, "byte_length": 100,
                            "source_message_id": None},
                "phi_paths": [], "security_labels": ["N"], "replayed": False,
            })
            if raw_id not in raw_seen:
                raw_seen[raw_id] = {
                    "id": raw_id, "source": source, "format": path.suffix.lstrip(".").replace("hl7", "hl7v2"),
                    "content_type": None, "received_at": at - timedelta(seconds=2), "bronze_key": bronze_key,
                    "sha256": hashlib.sha256(raw_id.encode()).hexdigest(), "byte_offset": 0, "byte_length": 100,
                    "payload": None, "source_message_id": None, "source_patient_key": key, "replayed": False,
                    "headers": {},
                }
    day.raw = list(raw_seen.values())
    linked_keys = sorted({e["source_patient_key"] for e in day.envelopes if e["euid"]})
    for i, key in enumerate(linked_keys):
        day.links.append(link_event(key, euid_of(truth[key]), at + timedelta(microseconds=i)))
    return day


def link_event(record_key: str, euid: str, at: datetime, event_type: str = "LINK",
               previous: str | None = None) -> dict:
    return {"event_id": hashlib.sha1(f"{record_key}{euid}{at}".encode()).hexdigest(), "event_type": event_type,
            "euid": euid, "record_key": record_key, "previous_euid": previous, "score": None, "outcome": "auto_link",
            "rule": "truth", "decided_by": "matcher", "contributions": {}, "occurred_at": at}
