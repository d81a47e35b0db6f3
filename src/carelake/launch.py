"""Start a carelake service as a real process (`carelake run NAME`) and watch it: tests, benches, the demo.

:meth:`ServiceProcess.start` returns once its ``/healthz`` says ok; :meth:`metric` reads one of
its Prometheus samples; :meth:`stop` sends SIGTERM and waits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from carelake.config import repo_root
from carelake.stack.parts import free_port


class ServiceProcess:
    def __init__(self, name: str, log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.log = name, log
        self.metrics = free_port()
        self.env = {**os.environ, "CARELAKE_METRICS_PORT": str(self.metrics), **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "carelake.cli", "run", self.name],
                                         env=self.env, cwd=repo_root(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            if self.healthy():
                return
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} did not become healthy in {timeout_s:g} s: {self.tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/healthz", timeout=2) as r:
                return json.loads(r.read())["status"] == "ok"
        except OSError:
            return False

    def metric(self, name: str, port_offset: int = 0, **labels: str) -> float:
        """Sum of a Prometheus sample whose labels include ``labels``, from the process's /metrics
        (``port_offset``: a worker process's metrics port, if it has them)."""
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

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Every sample of a metric, with its labels (for summaries by label)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=5) as r:
            text = r.read().decode()
        found = []
        for line in text.splitlines():
            if line.startswith(name + "{"):
                head, _, value = line.rpartition(" ")
                labels = dict(part.split("=", 1) for part in head[len(name) + 1:-1].split('",') if "=" in part)
                found.append(({k: v.strip('"') for k, v in labels.items()}, float(value)))
        return found

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
