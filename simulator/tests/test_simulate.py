"""The whole simulator: feeds parse with external parsers, truth is consistent, mess is planted at
the configured rates, and the same seed gives the same bytes."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import date, datetime
from pathlib import Path

import pytest

from carelake_simulator import store
from carelake_simulator.check import check_output
from carelake_simulator.feeds import MessRates
from carelake_simulator.identity import IdentityRates
from carelake_simulator.simulate import SimConfig, run

# High mess rates so a small population gives the rate checks statistical power.
MESS = MessRates(malformed=0.02, missing_dob_lab=0.10, late=0.05, invalid_code=0.03, local_lab_code=0.20,
                 naive_local_time=0.05, out_of_order=0.05, legacy_icd9=0.10, merge=0.5)
IDENTITY = IdentityRates(variation=0.25, duplicate=0.05)
CONFIG = SimConfig(patients=6000, day=date(2026, 1, 15), seed=7, mess=MESS, identity=IDENTITY)


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("day")
    manifest, _ = run(CONFIG, out)
    return out, manifest


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_all_eight_sources_deliver(day: tuple[Path, dict]) -> None:
    out, manifest = day
    expected = json.loads((out / "_truth" / "expected.json").read_text())
    assert set(expected["records_by_source"]) == {"ehr", "lab", "pharmacy", "claims", "wearables",
                                                  "public_health", "scheduling", "billing"}
    kinds = set(expected["records_by_kind"])
    for kind in ("ehr:ADT^A01", "ehr:ADT^A03", "ehr:ADT^A04", "ehr:ADT^A08", "ehr:ORU^R01", "lab:ORU^R01",
                 "public_health:VXU^V04", "scheduling:SIU^S12", "scheduling:SIU^S15", "scheduling:SIU^S26",
                 "billing:DFT^P03", "claims:837P", "claims:835", "pharmacy:pharmacy_csv",
                 "public_health:sdoh_csv", "wearables:wearable", "wearables:enrollment_csv"):
        assert kind in kinds, kind
    by_count = Counter(expected["records_by_source"])
    assert by_count.most_common(1)[0][0] == "wearables"  # readings dominate a real day by count


def test_every_record_parses_with_external_parsers_unless_planted_malformed(day: tuple[Path, dict]) -> None:
    report = check_output(day[0])
    assert report.ok, report.failures[:5]
    csv_files = sum(1 for f in _rows(day[0] / "files.csv") if f["content_type"] == "text/csv")
    assert csv_files == 3  # pharmacy dispenses, SDOH areas, wearables enrollment roster
    assert report.checked["hl7"] > 200 and report.checked["x12"] >= 2 and report.checked["csv"] == csv_files
    assert report.malformed_rejected > 0


def test_truth_names_the_person_behind_every_record(day: tuple[Path, dict]) -> None:
    out, _ = day
    regs = {r["key"]: r["person_id"] for r in _rows(out / "_truth" / "registrations.csv")}
    records = _rows(out / "_truth" / "records.csv")
    assert len(records) == json.loads((out / "_truth" / "expected.json").read_text())["records"]
    for rec in records:
        if rec["key"].startswith(("wearables|device:", "public_health|area:")):
            continue  # unenrolled devices and area rows carry no patient key
        assert regs[rec["key"]] == rec["person_id"], rec
    # Each system issues its own identifier: one person, a different key per source.
    keys_by_person: dict[str, set[str]] = defaultdict(set)
    for key, person in regs.items():
        keys_by_person[person].add(key.split("|", 1)[0])
    assert max(len(v) for v in keys_by_person.values()) >= 7


def test_enrollment_roster_lists_exactly_the_enrolled_users(day: tuple[Path, dict]) -> None:
    out, _ = day
    roster = _rows(out / "wearables" / f"enrollments_{CONFIG.day:%Y%m%d}.csv")
    # Who the readings say is enrolled: a reading names its user, or only its device when never enrolled.
    index = _rows(out / "wearables" / f"wearables_{CONFIG.day:%Y%m%d}.index.csv")
    users = {r["key"].split("|", 1)[1] for r in index if not r["key"].startswith("wearables|device:")}
    unenrolled = {r["key"].split(":", 1)[1] for r in index if r["key"].startswith("wearables|device:")}
    assert unenrolled, "a few devices are never enrolled"
    assert [r["user_id"] for r in roster] == sorted(users)  # one row per enrolled user, by user id
    assert not {r["device_id"] for r in roster} & unenrolled
    # ... and no registrant of an unenrolled device is listed.
    regs = _rows(out / "_truth" / "registrations.csv")
    wearables = {r["person_id"]: r["mrn"] for r in regs if r["source"] == "wearables"}
    people = {p["person_id"]: p["devices"].split(";") for p in _rows(out / "_truth" / "people.csv")}
    never = {wearables[pid] for pid, devices in people.items() if set(devices) & unenrolled}
    assert never and not never & {r["user_id"] for r in roster}
    # A vendor roster: the user's own demographics and device, no SSN or street address.
    assert set(roster[0]) == {"user_id", "given_name", "family_name", "birth_date", "sex", "postal_code", "phone",
                              "email", "device_id", "enrolled_at"}
    sent = next(f["sent_time"] for f in _rows(out / "files.csv") if f["kind"] == "enrollment_csv")
    assert all(r["given_name"] and r["family_name"] for r in roster)
    assert all(datetime.fromisoformat(r["enrolled_at"]) < datetime.fromisoformat(sent) for r in roster)
    truth = {r["record_id"]: r for r in _rows(out / "_truth" / "records.csv") if r["kind"] == "enrollment_csv"}
    assert len(truth) == len(roster)
    for r in roster:
        rec = truth[r["user_id"]]
        assert rec["key"] == f"wearables|{r['user_id']}" and wearables[rec["person_id"]] == r["user_id"]
        assert r["device_id"] in people[rec["person_id"]]


def test_duplicate_pairs_are_the_same_person_in_the_same_system(day: tuple[Path, dict]) -> None:
    out, _ = day
    regs = {(r["source"], r["mrn"]): r for r in _rows(out / "_truth" / "registrations.csv")}
    pairs = _rows(out / "_truth" / "duplicate_pairs.csv")
    assert pairs
    for p in pairs:
        a, b = regs[(p["source"], p["mrn_a"])], regs[(p["source"], p["mrn_b"])]
        assert a["person_id"] == b["person_id"] == p["person_id"] and a["mrn"] != b["mrn"]
        assert b["variations"], "a duplicate registration differs from the first somehow"


def _within(observed: int, n: int, p: float) -> bool:
    """Observed count within 4 standard deviations of a binomial(n, p) mean."""
    sd = math.sqrt(n * p * (1 - p))
    return abs(observed - n * p) <= 4 * sd + 1


def test_planted_rates_match_the_configuration(day: tuple[Path, dict]) -> None:
    out, _ = day
    records = _rows(out / "_truth" / "records.csv")
    defects = Counter(d for r in records for d in r["defects"].split(";") if d)
    lab = [r for r in records if r["source"] == "lab"]
    messages = [r for r in records if not r["file"]]
    assert _within(defects["missing_dob"], len(lab), MESS.missing_dob_lab)
    assert _within(sum(v for k, v in defects.items() if k.startswith("malformed")), len(messages), MESS.malformed)
    hl7 = [r for r in messages if r["source"] != "wearables" and r["kind"] != "ADT^A40"]
    assert _within(defects["late"], len(hl7), MESS.late)
    regs = _rows(out / "_truth" / "registrations.csv")
    primaries = [r for r in regs if not r["duplicate_of"] and r["source"] != "ehr"]
    varied = sum(1 for r in primaries if r["variations"])
    assert _within(varied, len(primaries), IDENTITY.variation)
    dup_sources = {"ehr", "lab", "pharmacy", "scheduling", "billing", "public_health"}
    n_primary = sum(1 for r in regs if not r["duplicate_of"] and r["source"] in dup_sources)
    assert _within(sum(1 for r in regs if r["duplicate_of"]), n_primary, IDENTITY.duplicate)


def test_missing_dob_really_is_missing_in_the_bytes(day: tuple[Path, dict]) -> None:
    out, _ = day
    missing = {r["record_id"] for r in _rows(out / "_truth" / "records.csv") if "missing_dob" in r["defects"]}
    assert missing
    for rec in store.iter_records(out, "lab"):
        if rec.message_id in missing and b"malformed" not in rec.payload:
            pid = next(s for s in rec.payload.split(b"\r") if s.startswith(b"PID|"))
            assert pid.split(b"|")[7] == b"", pid


def test_outcomes_hold_probabilities_and_labels_for_everyone(day: tuple[Path, dict]) -> None:
    out, _ = day
    outcomes = _rows(out / "_truth" / "outcomes.csv")
    assert len(outcomes) == CONFIG.patients
    for row in outcomes[:200]:
        assert 0 < float(row["p_readmission_30d"]) < 1 and row["label_ed_visit_30d"] in ("0", "1")
    expected = json.loads((out / "_truth" / "expected.json").read_text())
    share = expected["population"]["diabetics_hba1c_over_9_share"]
    people = _rows(out / "_truth" / "people.csv")
    diabetics = [p for p in people if "diabetes" in p["conditions"].split(";")]
    assert share == round(sum(1 for p in diabetics if float(p["hba1c"]) > 9) / len(diabetics), 4)


def test_same_seed_same_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    small = SimConfig(patients=300, seed=11)
    a, _ = run(small, tmp_path / "a")
    b, _ = run(small, tmp_path / "b")
    c, _ = run(SimConfig(patients=300, seed=12), tmp_path / "c")
    assert a["sha256"] == b["sha256"]
    assert a["sha256"] != c["sha256"]


def test_the_files_on_disk_replay_in_send_order(day: tuple[Path, dict]) -> None:
    out, manifest = day
    items = list(store.iter_feed(out))
    assert len(items) == store.count_feed(out)
    assert all(x.sent_time <= y.sent_time for x, y in zip(items, items[1:]))
    assert sum(manifest["messages_by_source"].values()) + len(manifest["files"]) == len(items)


def test_cli_writes_a_day_and_refuses_a_bad_date(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "carelake.cli", "simulate", "--patients", "200", "--out",
                         str(tmp_path / "d")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "d" / "manifest.json").exists() and "records for 200 patients" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "carelake.cli", "simulate", "--day", "15/01/2026", "--out",
                          str(tmp_path / "e")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr
