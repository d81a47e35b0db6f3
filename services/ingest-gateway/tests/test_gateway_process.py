"""`carelake run ingest-gateway` as a real process: MLLP in, Bronze segments out, restarts lose nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from carelake.bronze.store import open_store
from carelake.config import Settings, repo_root
from carelake.stack.parts import free_port
from carelake.stream.admin import create_topics
from carelake.topics import Catalog
from carelake_ingest_gateway.replay import bronze_envelopes
from carelake_simulator.replay import replay_mllp
from carelake_simulator.simulate import SimConfig, simulate

pytestmark = pytest.mark.integration


class GatewayProcess:
    def __init__(self, catalog: Catalog, tmp: Path) -> None:
        self.ports = {"ehr": free_port(), "lab": free_port()}
        self.http, self.metrics = free_port(), free_port()
        self.log = tmp / "gateway.log"
        self.env = {**os.environ, "CARELAKE_TOPIC_PREFIX": catalog.prefix,
                    "CARELAKE_BRONZE_DIR": str(tmp / "bronze"), "CARELAKE_MLLP_PORTS": ",".join(f"{s}={p}" for s, p in self.ports.items()),
                    "CARELAKE_HTTP_PORT": str(self.http), "CARELAKE_METRICS_PORT": str(self.metrics),
                    "CARELAKE_INSTANCE_ID": f"gw-{catalog.prefix.rstrip('.')}", "CARELAKE_BATCH_SIZE": "200"}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "carelake.cli", "run", "ingest-gateway"],
                                     env=self.env, cwd=repo_root(), stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/healthz", timeout=2) as r:
                    if json.loads(r.read())["status"] == "ok":
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"gateway did not become healthy: {self.log.read_text()[-3000:]}")

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(60)


def _hl7_messages(n: int) -> list:
    """The simulator's EHR and lab HL7, minus the messages it planted as malformed."""
    sim = simulate(SimConfig(patients=4000, seed=21, device_share=0.0))  # no wearables: HL7 only
    hl7 = [r for r in sim.records if r.source in ("ehr", "lab")
           and not any(d.startswith("malformed") for d in r.defects)]
    assert len(hl7) >= n
    return hl7[:n]


def _send(gateway: "GatewayProcess", messages: list) -> tuple[int, int]:
    """Each source's messages to its own MLLP port; returns (acknowledged, failed)."""
    sent = failed = 0
    for source, port in gateway.ports.items():
        stats = replay_mllp([m for m in messages if m.source == source], "127.0.0.1", port, progress=False)
        sent, failed = sent + stats.sent, failed + stats.failed
    return sent, failed


def _archived(tmp: Path) -> list[dict]:
    store = open_store(Settings(bronze_dir=tmp / "bronze"))
    today = datetime.now(UTC).date()
    return [e for source in ("ehr", "lab") for e in bronze_envelopes(store, source, today)[1]]


def _wait_archived(tmp: Path, n: int, timeout_s: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = _archived(tmp)
        if len(got) >= n:
            return got
        time.sleep(0.5)
    raise AssertionError(f"only {len(_archived(tmp))} of {n} archived")


def test_hl7_over_mllp_is_acknowledged_and_archived_byte_for_byte(stack: Settings, catalog: Catalog,
                                                                  tmp_path: Path) -> None:
    create_topics(catalog, stack.bootstrap)
    gateway = GatewayProcess(catalog, tmp_path)
    gateway.start()
    try:
        messages = _hl7_messages(150)
        assert _send(gateway, messages) == (len(messages), 0)
        archived = _wait_archived(tmp_path, len(messages))
        assert sorted(e["payload"] for e in archived) == sorted(m.payload for m in messages)
    finally:
        assert gateway.signal(signal.SIGTERM) == 0, gateway.log.read_text()[-3000:]


def test_a_killed_gateway_loses_no_acknowledged_message(stack: Settings, catalog: Catalog, tmp_path: Path) -> None:
    create_topics(catalog, stack.bootstrap)
    gateway = GatewayProcess(catalog, tmp_path)
    gateway.start()
    messages = _hl7_messages(240)
    assert _send(gateway, messages[:120]) == (120, 0)
    gateway.signal(signal.SIGKILL)  # acknowledged messages are on the raw topic; the archiver may lag
    gateway.start()
    try:
        # The sender re-sends everything it is unsure of; re-deliveries are recognised, not stored twice.
        assert _send(gateway, messages) == (len(messages), 0)
        archived = _wait_archived(tmp_path, len(messages))
        assert len(archived) == len(messages)  # deduplicated by raw id
        assert {e["payload"] for e in archived} == {m.payload for m in messages}
    finally:
        assert gateway.signal(signal.SIGTERM) == 0, gateway.log.read_text()[-3000:]
