"""`carelake run ingest-gateway`: the MLLP listeners, the HTTP API, the Kafka capture and the archiver.

One process, so a sender's message and its Bronze copy have one owner: intake threads answer
senders once the raw topic has the bytes; the capture and the archiver are ordinary stream
runtimes (their own consumer groups) inside the same process.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from carelake.bronze.store import open_store
from carelake.config import Settings
from carelake.errors import ConfigError
from carelake.services import runner_for
from carelake.topics import load_catalog
from carelake_ingest_gateway.archiver import build_archiver
from carelake_ingest_gateway.capture import build_capture
from carelake_ingest_gateway.http_api import create_app, make_server
from carelake_ingest_gateway.intake import SOURCES, Intake
from carelake_ingest_gateway.mllp import MllpServer

log = logging.getLogger("carelake.ingest")


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """``"ehr=2575,lab=2576"`` -> {"ehr": "2575", "lab": "2576"}, sources checked."""
    pairs: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        source, sep, value = item.partition("=")
        if not sep or source not in SOURCES or not value:
            raise ConfigError(f"{what}: {item!r} is not <source>=<value> with a source among {SOURCES}")
        pairs[source] = value
    return pairs


class Gateway:
    """The Runnable `carelake run` drives: start everything, stop everything on SIGTERM."""

    name = "ingest-gateway"

    def __init__(self, settings: Settings) -> None:
        catalog = load_catalog(settings.topic_catalog, settings.topic_prefix)
        self.settings = settings
        self.store = open_store(settings)
        self.capture = runner_for(build_capture(catalog), settings)
        self.archiver = runner_for(build_archiver(self.store), settings)
        self.intake = Intake(settings.bootstrap, catalog, settings.redis)
        keys = parse_pairs(settings.api_key_hashes.get_secret_value(), "CARELAKE_API_KEY_HASHES")
        self.http = make_server(create_app(self.intake, self.store, api_keys=keys), settings.http_host,
                                settings.http_port)
        self.mllp_ports = {s: int(p) for s, p in parse_pairs(settings.mllp_ports, "CARELAKE_MLLP_PORTS").items()}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._mllp_loop: asyncio.AbstractEventLoop | None = None
        self._mllp_stop: asyncio.Event | None = None

    def run(self) -> None:
        targets = {"capture": self.capture.run, "archiver": self.archiver.run, "http": self.http.run,
                   "mllp": self._run_mllp}
        self._threads = [threading.Thread(target=t, name=n, daemon=True) for n, t in targets.items()]
        for thread in self._threads:
            thread.start()
        log.info("gateway started", extra={"mllp": self.mllp_ports, "http_port": self.settings.http_port})
        while not self._stop.wait(1.0):
            dead = [t.name for t in self._threads if not t.is_alive()]
            if dead:
                log.error("gateway part stopped unexpectedly; shutting down", extra={"parts": dead})
                break
        self._shutdown()

    def _run_mllp(self) -> None:
        async def main() -> None:
            self._mllp_loop, self._mllp_stop = asyncio.get_running_loop(), asyncio.Event()
            servers = [MllpServer(self.intake, source, self.settings.mllp_host, port)
                       for source, port in self.mllp_ports.items()]
            for server in servers:
                await server.start()
            await self._mllp_stop.wait()
            for server in servers:  # stop accepting, finish in-flight messages, close
                await server.stop()

        asyncio.run(main())

    def _shutdown(self) -> None:
        # Listeners first (no new input), then the intake (flush), then the consumers.
        if self._mllp_loop is not None and self._mllp_stop is not None:
            self._mllp_loop.call_soon_threadsafe(self._mllp_stop.set)
        self.http.should_exit = True
        for name in ("mllp", "http"):
            next(t for t in self._threads if t.name == name).join(35)
        self.intake.close()
        self.capture.stop()
        self.archiver.stop()
        for thread in self._threads:
            thread.join(35)
        log.info("gateway stopped")

    def stop(self, *_: object) -> None:
        self._stop.set()

    def health(self) -> tuple[bool, dict]:
        parts = {"capture": self.capture.health(), "archiver": self.archiver.health()}
        alive = all(t.is_alive() for t in self._threads) if self._threads else False
        ok = alive and all(p[0] for p in parts.values())
        return ok, {"service": self.name, "threads_alive": alive,
                    **{name: details for name, (_, details) in parts.items()}}


def build(settings: Settings) -> Gateway:
    return Gateway(settings)
