"""Start `carelake run ingest-gateway` as a real process on free ports (tests, benches, the demo).

The process gets its own topic prefix, Bronze folder, MLLP ports per source, HTTP port, metrics
port and API keys; :meth:`GatewayProcess.start` returns once ``/healthz`` says ok.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from carelake.config import repo_root
from carelake.stack.parts import free_port
from carelake_ingest_gateway.http_api import hash_key

HL7_SOURCES = ("ehr", "lab", "public_health", "scheduling", "billing")


class GatewayProcess:
    def __init__(self, prefix: str, workdir: Path, *, mllp_sources: tuple[str, ...] = HL7_SOURCES,
                 extra_env: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.workdir = prefix, workdir
        self.ports = {s: free_port() for s in mllp_sources}
        self.http, self.metrics = free_port(), free_port()
        self.api_keys = {s: secrets.token_urlsafe(16) for s in
                         ("ehr", "lab", "pharmacy", "claims", "wearables", "public_health", "scheduling", "billing")}
        self.bronze, self.drop, self.log = workdir / "bronze", workdir / "drop", workdir / "gateway.log"
        self.env = {**os.environ, "CARELAKE_TOPIC_PREFIX": prefix, "CARELAKE_BRONZE_DIR": str(self.bronze),
                    "CARELAKE_DROP_DIR": str(self.drop),
                    "CARELAKE_MLLP_PORTS": ",".join(f"{s}={p}" for s, p in self.ports.items()),
                    "CARELAKE_HTTP_PORT": str(self.http), "CARELAKE_METRICS_PORT": str(self.metrics),
                    "CARELAKE_API_KEY_HASHES": ",".join(f"{s}={hash_key(k)}" for s, k in self.api_keys.items()),
                    "CARELAKE_INSTANCE_ID": f"gw-{prefix.rstrip('.')}", **(extra_env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def start(self, timeout_s: float = 90) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "carelake.cli", "run", "ingest-gateway"],
                                         env=self.env, cwd=repo_root(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}: {self.tail()}")
            if self.healthy():
                return
            time.sleep(0.3)
        raise RuntimeError(f"gateway did not become healthy in {timeout_s:g} s: {self.tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/healthz", timeout=2) as r:
                return json.loads(r.read())["status"] == "ok"
        except OSError:
            return False

    def metric(self, name: str, port_offset: int = 0, **labels: str) -> float:
        """Sum of a Prometheus sample whose labels include ``labels``, from the gateway's /metrics
        (``port_offset`` 1 + i: MLLP worker i's)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics + port_offset}/metrics", timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 90) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
