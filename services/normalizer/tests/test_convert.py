"""`carelake convert` and `carelake terminology load`, run as an analyst runs them: the real CLI in a subprocess."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from carelake.config import repo_root
from carelake_normalizer import pipeline
from carelake_normalizer.convert import detect_format
from carelake_normalizer.terminology import MapStore, normalize_resource, systems
from carelake_simulator.feeds import MessRates
from carelake_simulator.simulate import SimConfig, simulate

CHICAGO = ZoneInfo("America/Chicago")


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "CARELAKE_SOURCE_TIMEZONES"}
    return subprocess.run([sys.executable, "-m", "carelake.cli", *map(str, args)], capture_output=True,
                           cwd=repo_root(), env={**base, **(env or {})}, timeout=120)


def flat(text: bytes) -> str:
    """stderr without the console's line wrapping."""
    return " ".join(text.decode().split())


def seg(name: str, fields: dict[int, str]) -> str:
    out = [""] * max(fields)
    for n, v in fields.items():
        out[n - 1] = v
    return "|".join([name, *out])


def adt(msg_id: str, admit: str) -> bytes:
    return ("\r".join([
        f"MSH|^~\\&|EPIC|MC|CARELAKE|CARELAKE|20260115083000-0600||ADT^A01^ADT_A01|{msg_id}|P|2.5.1",
        "EVN|A01|20260115083000-0600",
        "PID|1||E7000007^^^EHR^MR||Convertperson^Lee||19800202|F",
        seg("PV1", {1: "1", 2: "I", 3: "MED^401^A^CARELAKE_MC", 19: "V0000123", 44: admit}),
        "DG1|1||I10^Essential hypertension^I10|||A",
    ]) + "\r").encode()


@pytest.fixture(scope="module")
def lab_messages() -> list[bytes]:
    sim = simulate(SimConfig(patients=1500, seed=7, mess=MessRates(malformed=0.0)))
    out = [r.payload for r in sim.records if r.source == "lab" and r.content_type == "x-application/hl7-v2+er7"]
    assert len(out) >= 10
    return out[:12]


def expected_ids(messages: list[bytes], source: str = "lab", *, clean: bool = True) -> Counter:
    """(resourceType, id) of what the service's pipeline makes of each message on its own."""
    found: Counter = Counter()
    for m in messages:
        env = {"id": "x", "source": source, "format": "hl7v2", "bronze_key": "k", "byte_offset": 0,
               "byte_length": len(m), "payload": m, "source_message_id": None, "replayed": False}
        out = pipeline.normalize(env, m, tz=CHICAGO, processed_at=datetime.now(UTC))
        assert out.clean or not clean
        found.update((e["resource_type"], e["id"]) for e in out.envelopes)
    return found


def printed(stdout: bytes) -> Counter:
    resources = [json.loads(line) for line in stdout.decode().splitlines()]
    return Counter((r["resourceType"], r["id"]) for r in resources)


def framed(messages: list[bytes], how: str) -> bytes:
    if how == "lines":
        return b"\n".join(messages) + b"\n"
    if how == "mllp":
        return b"".join(b"\x0b" + m + b"\x1c\r" for m in messages)
    if how == "batch":
        head = b"FHS|^~\\&|LIS|LAB|CARELAKE|CARELAKE|20260115120000\rBHS|^~\\&|LIS|LAB|CARELAKE|CARELAKE|20260115120000\r"
        tail = f"BTS|{len(messages)}\rFTS|1\r".encode()
        return head + b"".join(messages) + tail
    raise ValueError(how)


@pytest.mark.parametrize("how", ["lines", "mllp", "batch"])
def test_every_message_of_a_file_becomes_fhir_json_lines(tmp_path: Path, lab_messages: list[bytes], how: str) -> None:
    path = tmp_path / f"feed-{how}.hl7"
    path.write_bytes(framed(lab_messages, how))
    done = cli("convert", path, "--source", "lab")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""
    assert printed(done.stdout) == expected_ids(lab_messages)


def test_a_broken_message_is_reported_and_the_rest_still_printed(tmp_path: Path, lab_messages: list[bytes]) -> None:
    good = lab_messages[:3]
    partial = adt("CONV-1", "20260230080000-0600")  # February 30: its Encounter is rejected
    data = b"\n".join([good[0], b"THIS LINE IS NOT HL7", good[1], partial, good[2]]) + b"\n"
    path = tmp_path / "broken.hl7"
    path.write_bytes(data)
    done = cli("convert", path, "--source", "lab", "--format", "hl7v2")
    assert done.returncode == 2
    problems = [json.loads(line) for line in done.stderr.decode().splitlines()]
    assert [(p["reason_code"], p["message_index"], p["byte_start"]) for p in problems] == [
        ("not_hl7", 1, len(good[0]) + 1),
        ("invalid_date", 3, data.index(partial)),
    ]
    assert problems[1]["where"] == "PV1[1].PV1-44" and "Convertperson" not in problems[1]["reason"]
    assert set(problems[0]) == {"reason_code", "reason", "where", "message_index", "byte_start"}
    of_partial = expected_ids([partial], clean=False)
    assert sorted(t for t, _ in of_partial) == ["Condition", "Patient"]
    assert printed(done.stdout) == expected_ids(good) + of_partial


def _admit(stdout: bytes) -> str:
    resources = [json.loads(line) for line in stdout.decode().splitlines()]
    return next(r["period"]["start"] for r in resources if r["resourceType"] == "Encounter")


def test_times_without_an_offset_are_read_in_the_given_or_the_sources_zone(tmp_path: Path) -> None:
    path = tmp_path / "naive.hl7"
    path.write_bytes(adt("CONV-2", "20260115080000"))
    assert _admit(cli("convert", path, "--tz", "America/New_York").stdout) == "2026-01-15T13:00:00Z"
    assert _admit(cli("convert", path).stdout) == "2026-01-15T14:00:00Z"  # the default zone, Chicago
    assert _admit(cli("convert", path, env={"CARELAKE_SOURCE_TIMEZONES": "ehr=UTC"}).stdout) == "2026-01-15T08:00:00Z"


@pytest.mark.parametrize(("content", "args", "message"), [
    (b"MSH|^~\\&|A|B|C|D|20260115||ADT^A01|1|P|2.5.1\r", ("--format", "pdf"), "unknown format 'pdf'"),
    (b"MSH|^~\\&|A|B|C|D|20260115||ADT^A01|1|P|2.5.1\r", ("--tz", "Mars/Olympus"), "not an IANA time zone"),
    (b"", (), "cannot tell the format"),
    (b"", ("--format", "hl7v2"), "holds no messages"),
])
def test_usage_errors_exit_1_with_a_clear_message(tmp_path: Path, content: bytes, args: tuple, message: str) -> None:
    path = tmp_path / "input.dat"
    path.write_bytes(content)
    done = cli("convert", path, *args)
    assert done.returncode == 1 and done.stdout == b""
    assert message in flat(done.stderr)


def test_an_unreadable_file_exits_1(tmp_path: Path) -> None:
    done = cli("convert", tmp_path / "nowhere.hl7")
    assert done.returncode == 1 and "cannot read" in flat(done.stderr)


@pytest.mark.parametrize("args", [(), ("{tmp}/a.hl7", "--no-such-option")])
def test_command_line_mistakes_exit_1_not_2_which_means_rejected_parts(tmp_path: Path, args: tuple) -> None:
    (tmp_path / "a.hl7").write_bytes(adt("CONV-3", "20260115080000-0600"))
    done = cli("convert", *(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 1 and done.stdout == b""


def test_format_detection() -> None:
    assert detect_format(b"\xef\xbb\xbfMSH|^~\\&|") == "hl7v2"
    assert detect_format(b"\x0bMSH|^~\\&|") == "hl7v2"
    assert detect_format(b"\r\nFHS|^~\\&|") == "hl7v2"
    assert detect_format(b"BHS|^~\\&|") == "hl7v2"
    assert detect_format(b"ISA*00*") == "x12"
    assert detect_format(b"[{") == "json"
    assert detect_format(b"a,b\n1,2\n") == "csv"
    assert detect_format(b"hello") is None


# ---- `carelake terminology load` (the other command issue 5 adds) ------------------------------


def loinc_csv(path: Path) -> Path:
    """A tiny synthetic Loinc.csv in the release's layout (columns found by name)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["LOINC_NUM", "COMPONENT", "LONG_COMMON_NAME", "STATUS", "VersionLastChanged"])
        w.writerow(["2345-7", "Glucose", "Glucose [Mass/volume] in Serum or Plasma", "ACTIVE", "2.80"])
        w.writerow(["4548-4", "Hemoglobin A1c", "Hemoglobin A1c/Hemoglobin.total in Blood", "ACTIVE", "2.79"])
        w.writerow(["1003-3", "Old test", "A retired test", "DEPRECATED", "2.61"])
        w.writerow(["2345-8", "Bad", "A code failing its check digit", "ACTIVE", "2.80"])
    return path


def test_terminology_load_loinc_through_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = cli("terminology", "load", "loinc", loinc_csv(tmp_path / "Loinc.csv"), env={"CARELAKE_HOME": str(home)})
    assert done.returncode == 0, done.stderr.decode()
    summary = json.loads(done.stdout)
    assert summary["kind"] == "loinc" and summary["version"] == "2.80"
    assert (summary["codes"], summary["bad_check_digit"]) == (3, 1)
    manifest = json.loads((home / "terminology" / "manifest.json").read_text())
    assert [m["name"] for m in manifest["maps"]] == ["loinc"]

    # A process started afterwards checks LOINC codes against the loaded release.
    store = MapStore(home)
    def flags(code: str) -> list[str]:
        obs = {"resourceType": "Observation", "code": {"coding": [{"system": systems.LOINC, "code": code}]}}
        return [f.flag for f in normalize_resource(obs, "lab", store=store)]
    assert flags("2345-7") == [] and flags("1003-3") == ["deprecated_code"] and flags("718-7") == ["unknown_code"]

    again = cli("terminology", "load", "loinc", tmp_path / "Loinc.csv", "--version", "2.81",
                env={"CARELAKE_HOME": str(home)})
    assert again.returncode == 0 and json.loads(again.stdout)["version"] == "2.81"


@pytest.mark.parametrize(("args", "message"), [
    (("snomed", "x"), "unknown kind 'snomed'"),
    (("loinc", "{tmp}/missing"), "no such file or folder"),
    (("loinc", "{tmp}/not-loinc.csv"), "not a Loinc.csv"),
])
def test_terminology_load_errors_exit_1(tmp_path: Path, args: tuple[str, str], message: str) -> None:
    (tmp_path / "not-loinc.csv").write_text("code,name\n1,a\n")
    done = cli("terminology", "load", *(a.format(tmp=tmp_path) for a in args),
               env={"CARELAKE_HOME": str(tmp_path / "home")})
    assert done.returncode == 1 and message in flat(done.stderr)
    assert not (tmp_path / "home" / "terminology" / "manifest.json").exists()


def test_csv_exports_and_json_readings_convert(tmp_path: Path) -> None:
    from carelake_simulator.simulate import SimConfig, simulate

    sim = simulate(SimConfig(patients=300, seed=6))
    export = next(f for f in sim.files if f.kind == "pharmacy_csv")
    path = tmp_path / export.name
    path.write_bytes(export.payload)
    done = cli("convert", path, "--source", "pharmacy")
    assert done.returncode == 0, flat(done.stderr)
    kinds = [json.loads(line)["resourceType"] for line in done.stdout.splitlines()]
    assert kinds.count("MedicationDispense") == len(export.records)

    readings = [r for r in sim.records if r.source == "wearables" and not r.defects][:20]
    lines = tmp_path / "readings.ndjson"
    lines.write_bytes(b"".join(r.payload + b"\n" for r in readings) + b"{broken\n")
    done = cli("convert", lines, "--source", "wearables")
    assert done.returncode == 2  # the broken line is rejected, the rest printed
    observations = [json.loads(line) for line in done.stdout.splitlines()]
    assert sum(o["resourceType"] == "Observation" for o in observations) == len(readings)
    [problem] = [json.loads(line) for line in done.stderr.splitlines()]
    assert problem["reason_code"] == "bad_json" and problem["message_index"] == len(readings)
