"""The drop folder against a real folder and a real local Bronze store (no services needed).

The taker here is a real callable, not a stand-in for the file splitter's logic: it stores the
file whole under a content-addressed key, as the gateway does, and refuses files whose first line
is ``BROKEN`` (a format error with a code). Scans are driven with ``poll_once()``, so "unchanged
across two scans" is exercised without sleeping. Data is synthetic.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from carelake.bronze.store import BronzeStore, StoreUnavailableError, bronze_key, open_store
from carelake.config import Settings
from carelake.errors import CarelakeError, ConfigError
from carelake_ingest_gateway.dropfolder import DropFolder, DropOutcome
from carelake_ingest_gateway.intake import SOURCES

CSV = b"rx_id,fill_date,patient_id,ndc\r\nRX1,2026-01-15,SYN0001,00087606005\r\n"


class BrokenFile(CarelakeError):
    http_status = 422
    code = "bad_csv_header"

    def __init__(self, detail: str, key: str) -> None:
        super().__init__(detail)
        self.key = key


class Taker:
    """Stores each file whole in Bronze (content-addressed); quarantines and refuses files starting with BROKEN."""

    def __init__(self, store: BronzeStore) -> None:
        self.store = store
        self.calls: list[tuple[str, str, bytes]] = []
        self.fail_next: Exception | None = None

    def __call__(self, source: str, path: Path, name: str) -> DropOutcome:
        data = path.read_bytes()
        self.calls.append((source, name, data))
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        object_name = f"{hashlib.sha256(data).hexdigest()[:16]}-{name}"
        meta = {"file_name": name, "transport": "drop"}
        if data.startswith(b"BROKEN"):
            key = bronze_key(source, datetime.now(UTC), object_name, kind="quarantine")
            self.store.put(key, data, {**meta, "reason": "line 1 is not a CSV header"})
            raise BrokenFile(f"{name}: line 1 is not a CSV header", key)
        key = bronze_key(source, datetime.now(UTC), object_name)
        with open(path, "rb") as f:
            self.store.put_stream(key, iter(lambda: f.read(1 << 16), b""), meta)
        return DropOutcome(key, records=data.count(b"\n") - 1)


@pytest.fixture
def store(tmp_path: Path) -> BronzeStore:
    return open_store(Settings(home=tmp_path, bronze_dir=tmp_path / "bronze"))


@pytest.fixture
def taker(store: BronzeStore) -> Taker:
    return Taker(store)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "drop"


@pytest.fixture
def drop(root: Path, taker: Taker) -> DropFolder:
    return DropFolder(root, taker, poll_s=0.01)


def sample(source: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("carelake_drop_files_total", {"source": source, "outcome": outcome}) or 0.0


def done(root: Path, source: str, name: str) -> Path:
    [moved] = (root / source / ".done").glob(f"*/{name}")
    assert re.fullmatch(r"\d{8}", moved.parent.name)  # .done/<yyyymmdd>/
    return moved


def stored(store: BronzeStore, source: str) -> dict[str, bytes]:
    return {info.key: store.get(info.key) for info in store.list(f"{source}/")}


# ---- tests -------------------------------------------------------------------------------------------


def test_source_folders_are_created(root: Path, drop: DropFolder) -> None:
    assert sorted(p.name for p in root.iterdir()) == sorted(SOURCES)


def test_a_dropped_file_is_taken_once_and_moved_to_done(root: Path, drop: DropFolder, taker: Taker,
                                                        store: BronzeStore) -> None:
    taken = sample("pharmacy", "taken")
    (root / "pharmacy" / "fills.csv").write_bytes(CSV)
    assert drop.poll_once() == 0  # first sight: not known to be complete yet
    assert taker.calls == []
    assert drop.poll_once() == 1  # unchanged since the last scan: complete
    assert taker.calls == [("pharmacy", "fills.csv", CSV)]
    assert not (root / "pharmacy" / "fills.csv").exists()
    assert done(root, "pharmacy", "fills.csv").read_bytes() == CSV
    assert list(stored(store, "pharmacy").values()) == [CSV]
    for _ in range(3):
        assert drop.poll_once() == 0
    assert len(taker.calls) == 1
    assert sample("pharmacy", "taken") == taken + 1


def test_upload_names_are_ignored_until_renamed(root: Path, drop: DropFolder, taker: Taker) -> None:
    folder = root / "claims"
    for name in ("837.x12.part", "837.x12.PART", "upload.tmp", "big.filepart", ".837.x12.swp", ".hidden"):
        (folder / name).write_bytes(b"ISA*00*...")
    for _ in range(4):
        assert drop.poll_once() == 0
    assert taker.calls == []
    os.rename(folder / "837.x12.part", folder / "837.x12")  # the uploader finished
    drop.poll_once()
    drop.poll_once()
    assert [(s, n) for s, n, _ in taker.calls] == [("claims", "837.x12")]
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == sorted(
        ["837.x12.PART", "upload.tmp", "big.filepart", ".837.x12.swp", ".hidden"])


def test_a_growing_file_is_not_taken_until_it_stops_changing(root: Path, drop: DropFolder, taker: Taker) -> None:
    path = root / "lab" / "results.ndjson"
    lines = [json.dumps({"id": f"R{i}", "patient_id": f"SYN{i:04d}"}).encode() + b"\n" for i in range(4)]
    with open(path, "wb") as writer:
        for line in lines:
            writer.write(line)
            writer.flush()
            assert drop.poll_once() == 0  # it changed since the previous scan (or is seen for the first time)
    assert taker.calls == []
    assert drop.poll_once() == 1
    assert taker.calls == [("lab", "results.ndjson", b"".join(lines))]


def test_an_empty_file_waits_for_its_bytes(root: Path, drop: DropFolder, taker: Taker) -> None:
    path = root / "billing" / "charges.csv"
    path.touch()  # an uploader that creates the final name first and writes later
    for _ in range(3):
        assert drop.poll_once() == 0
    path.write_bytes(CSV)
    drop.poll_once()
    assert drop.poll_once() == 1
    assert taker.calls == [("billing", "charges.csv", CSV)]


def test_a_refused_file_is_rejected_with_its_reason_and_moving_it_back_offers_it_again(
        root: Path, drop: DropFolder, taker: Taker, store: BronzeStore) -> None:
    rejected = sample("pharmacy", "rejected")
    folder = root / "pharmacy"
    (folder / "fills.csv").write_bytes(b"BROKEN\r\n" + CSV)
    drop.poll_once()
    assert drop.poll_once() == 1
    moved = folder / ".rejected" / "fills.csv"
    assert moved.read_bytes() == b"BROKEN\r\n" + CSV and not (folder / "fills.csv").exists()
    reason = json.loads((folder / ".rejected" / "fills.csv.reason.json").read_text())
    assert reason["error"] == "bad_csv_header" and "line 1 is not a CSV header" in reason["detail"]
    assert datetime.fromisoformat(reason["time"]).tzinfo is not None
    assert "/quarantine/" in reason["key"] and stored(store, "pharmacy") == {reason["key"]: b"BROKEN\r\n" + CSV}
    assert sample("pharmacy", "rejected") == rejected + 1
    for _ in range(3):
        drop.poll_once()
    assert len(taker.calls) == 1  # a rejected file stays rejected

    moved.write_bytes(CSV)  # the operator fixes it and moves it back
    os.rename(moved, folder / "fills.csv")
    drop.poll_once()
    drop.poll_once()
    assert [(n, d) for _, n, d in taker.calls] == [("fills.csv", b"BROKEN\r\n" + CSV), ("fills.csv", CSV)]
    assert done(root, "pharmacy", "fills.csv").read_bytes() == CSV
    assert sorted(stored(store, "pharmacy").values()) == sorted([b"BROKEN\r\n" + CSV, CSV])


def test_files_left_by_a_crash_are_taken_on_start(root: Path, taker: Taker, store: BronzeStore) -> None:
    (root / "billing").mkdir(parents=True)
    (root / "billing" / "dft.csv").write_bytes(CSV)
    taker(source="billing", path=root / "billing" / "dft.csv", name="dft.csv")  # stored before the crash...
    taker.calls.clear()
    drop = DropFolder(root, taker, poll_s=0.01)  # ...but never moved: the restarted gateway offers it again
    drop.poll_once()
    assert drop.poll_once() == 1
    assert [(s, n) for s, n, _ in taker.calls] == [("billing", "dft.csv")]
    assert done(root, "billing", "dft.csv").read_bytes() == CSV
    assert len(stored(store, "billing")) == 1  # content-addressed: stored once


def test_a_name_already_done_today_gets_a_numeric_suffix(root: Path, drop: DropFolder, taker: Taker) -> None:
    folder = root / "scheduling"
    second = CSV + b"RX2,2026-01-16,SYN0002,00087606005\r\n"
    for data in (CSV, second):
        (folder / "appts.v1.csv").write_bytes(data)
        drop.poll_once()
        assert drop.poll_once() == 1
    day = done(root, "scheduling", "appts.v1.csv").parent
    assert (day / "appts.v1.csv").read_bytes() == CSV
    assert (day / "appts-1.v1.csv").read_bytes() == second


def test_a_transient_failure_leaves_the_file_for_a_retry(root: Path, taker: Taker) -> None:
    drop = DropFolder(root, taker, poll_s=1e-6)  # a backoff of microseconds: the next scan retries
    retries = sample("ehr", "retry")
    (root / "ehr" / "adt.hl7").write_bytes(b"MSH|^~\\&|EPIC|...")
    taker.fail_next = StoreUnavailableError("Bronze store unreachable")
    drop.poll_once()
    assert drop.poll_once() == 0
    assert (root / "ehr" / "adt.hl7").exists() and not (root / "ehr" / ".rejected").exists()
    assert sample("ehr", "retry") == retries + 1
    time.sleep(0.001)  # past the microsecond backoff (not a timing assertion)
    assert drop.poll_once() == 1
    assert len(taker.calls) == 2 and done(root, "ehr", "adt.hl7").exists()


def test_symlinks_and_folders_are_not_taken(root: Path, drop: DropFolder, taker: Taker, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"not for the gateway")
    (root / "lab" / "link.csv").symlink_to(outside)
    (root / "lab" / "subdir").mkdir()
    for _ in range(3):
        assert drop.poll_once() == 0
    assert taker.calls == []


def test_run_and_stop_in_a_thread(root: Path, taker: Taker) -> None:
    drop = DropFolder(root, taker, poll_s=0.02)
    thread = threading.Thread(target=drop.run, name="drop-test", daemon=True)
    thread.start()
    try:
        (root / "wearables" / "readings.ndjson").write_bytes(b'{"reading_id": "W1", "user_id": "SYN1"}\n')
        deadline = time.monotonic() + 10
        while not list((root / "wearables" / ".done").glob("*/readings.ndjson")):
            assert time.monotonic() < deadline, "the running drop folder never took the file"
            time.sleep(0.02)
    finally:
        drop.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert [(s, n) for s, n, _ in taker.calls] == [("wearables", "readings.ndjson")]


@pytest.mark.parametrize("poll_s", [0, -1, float("nan")])
def test_poll_interval_must_be_positive(root: Path, taker: Callable, poll_s: float) -> None:
    with pytest.raises(ConfigError, match="CARELAKE_DROP_POLL_S"):
        DropFolder(root, taker, poll_s=poll_s)
