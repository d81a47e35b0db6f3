"""`carelake run ingest-gateway`: the MLLP listeners, the HTTP API, the Kafka capture and the archiver.

One process, so a sender's message and its Bronze copy have one owner: intake threads answer
senders once the raw topic has the bytes; the capture and the archiver are ordinary stream
runtimes (their own consumer groups) inside the same process.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import threading
from pathlib import Path
from typing import Any

from carelake.bronze.store import open_store
from carelake.config import Settings
from carelake.config import parse_pairs as config_pairs
from carelake.errors import ConfigError
from carelake.services import DEFAULT_METRICS_PORTS, runner_for
from carelake.topics import load_catalog
from carelake_ingest_gateway.archiver import build_archiver
from carelake_ingest_gateway.capture import build_capture
from carelake_ingest_gateway.dropfolder import DropFolder
from carelake_ingest_gateway.filesplit import FileBoard, FileTaker, Splitter
from carelake_ingest_gateway.http_api import create_app, make_server, safe_name
from carelake_ingest_gateway.intake import RAW_TOPIC, SOURCES, Intake
from carelake_ingest_gateway.ledger import Ledger
from carelake_ingest_gateway.mllp import MllpServer, run_loop
from carelake_ingest_gateway.mllp_workers import MllpWorkers

log = logging.getLogger("carelake.ingest")


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """``"ehr=2575,lab=2576"`` -> {"ehr": "2575", "lab": "2576"}, sources checked."""
    return config_pairs(text, what, allowed=SOURCES)


def parse_rate_limits(text: str) -> dict[str, float]:
    """``"lab=200,ehr=500"`` -> {"lab": 200.0, "ehr": 500.0} requests/s; each must be a positive number."""
    limits: dict[str, float] = {}
    for source, value in parse_pairs(text, "CARELAKE_RATE_LIMITS").items():
        try:
            rate = float(value)
        except ValueError:
            rate = math.nan
        if not math.isfinite(rate) or rate <= 0:
            raise ConfigError(f"CARELAKE_RATE_LIMITS: {source}={value!r} is not a positive number "
                              "of requests per second")
        limits[source] = rate
    return limits


def tls_from(settings: Settings) -> tuple[ssl.SSLContext | None, dict[str, Any]]:
    """(the MLLP listeners' SSL context, the HTTP server's uvicorn options); (None, {}) without TLS.

    The certificate is loaded here, so a wrong path or a key that does not match stops the gateway
    at start-up with the variables named, not at the first sender's handshake.
    """
    cert, key = settings.tls_certfile, settings.tls_keyfile
    if cert is None and key is None:
        return None, {}
    if cert is None or key is None:
        given = "CARELAKE_TLS_CERTFILE" if cert is not None else "CARELAKE_TLS_KEYFILE"
        raise ConfigError(f"CARELAKE_TLS_CERTFILE and CARELAKE_TLS_KEYFILE are set together or not at all; "
                          f"only {given} is set")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"CARELAKE_TLS_CERTFILE={cert} and CARELAKE_TLS_KEYFILE={key}: cannot load the "
                          f"certificate and its key: {exc}") from exc
    return context, {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


class Gateway:
    """The Runnable `carelake run` drives: start everything, stop everything on SIGTERM."""

    name = "ingest-gateway"

    def __init__(self, settings: Settings) -> None:
        catalog = load_catalog(settings.topic_catalog, settings.topic_prefix)
        # Settings first: a bad one stops start-up before any connection or thread exists.
        self.ssl_context, http_tls = tls_from(settings)
        rate_limits = parse_rate_limits(settings.rate_limits)
        self.settings = settings
        self.store = open_store(settings)
        self.capture = runner_for(build_capture(catalog), settings)
        ledger = Ledger(settings.redis, catalog.physical(RAW_TOPIC))
        self.archiver = runner_for(build_archiver(self.store, ledger), settings)
        self.intake = Intake(settings.bootstrap, catalog, settings.redis)
        board = FileBoard(settings.redis, catalog.physical(RAW_TOPIC))
        self.taker = FileTaker(self.store, settings.bootstrap, catalog, board)
        self.splitter = Splitter(self.store, settings.bootstrap, catalog, board)
        self.drop = DropFolder(settings.drop, self._take_dropped, settings.drop_poll_s)
        keys = parse_pairs(settings.api_key_hashes.get_secret_value(), "CARELAKE_API_KEY_HASHES")
        self.http = make_server(create_app(self.intake, self.store, self.taker, api_keys=keys,
                                           rate_limits=rate_limits),
                                settings.http_host, settings.http_port, **http_tls)
        self.mllp_ports = {s: int(p) for s, p in parse_pairs(settings.mllp_ports, "CARELAKE_MLLP_PORTS").items()}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._mllp_loop: asyncio.AbstractEventLoop | None = None
        self._mllp_stop: asyncio.Event | None = None
        self._mllp_ready = threading.Event()  # healthy only once every MLLP port accepts connections

    def run(self) -> None:
        targets = {"capture": self.capture.run, "archiver": self.archiver.run, "splitter": self.splitter.run,
                   "http": self.http.run, "mllp": self._run_mllp, "drop": self.drop.run}
        self._threads = [threading.Thread(target=t, name=n, daemon=True) for n, t in targets.items()]
        for thread in self._threads:
            thread.start()
        log.info("gateway started", extra={"mllp": self.mllp_ports, "http_port": self.settings.http_port,
                                           "tls": self.ssl_context is not None})
        while not self._stop.wait(1.0):
            dead = [t.name for t in self._threads if not t.is_alive()]
            if dead:
                log.error("gateway part stopped unexpectedly; shutting down", extra={"parts": dead})
                break
        self._shutdown()

    def _run_mllp(self) -> None:
        if self.settings.mllp_workers > 1:
            self._run_mllp_workers()
            return

        async def main() -> None:
            self._mllp_loop, self._mllp_stop = asyncio.get_running_loop(), asyncio.Event()
            servers = [MllpServer(self.intake, source, self.settings.mllp_host, port, ssl_context=self.ssl_context,
                                  store=self.store)
                       for source, port in self.mllp_ports.items()]
            for server in servers:
                await server.start()
            self._mllp_ready.set()
            await self._mllp_stop.wait()
            for server in servers:  # stop accepting, finish in-flight messages, close
                await server.stop()

        run_loop(main())

    def _run_mllp_workers(self) -> None:
        """The MLLP ports served by worker processes; this thread watches them until the gateway stops."""
        port = self.settings.metrics_port or DEFAULT_METRICS_PORTS.get(self.name, 0)
        workers = MllpWorkers(self.settings.mllp_workers, port)
        workers.start()
        self._mllp_ready.set()
        log.info("mllp workers listening", extra={"workers": self.settings.mllp_workers, "ports": self.mllp_ports})
        while not self._stop.wait(0.5):
            if not workers.alive():
                log.error("an MLLP worker process died; stopping the gateway")
                self._stop.set()
        workers.stop()

    def _shutdown(self) -> None:
        # Listeners first (no new input), then the intake (flush), then the consumers.
        self._stop.set()  # also when a dead part ended the run: the MLLP workers' watcher stops them
        if self._mllp_loop is not None and self._mllp_stop is not None:
            self._mllp_loop.call_soon_threadsafe(self._mllp_stop.set)
        self.http.should_exit = True
        self.drop.stop()
        for name in ("mllp", "http", "drop"):
            next(t for t in self._threads if t.name == name).join(35)
        self.intake.close()
        self.taker.close()
        self.splitter.stop()  # a file cut short resumes from its checkpoint after the restart
        self.capture.stop()
        self.archiver.stop()
        for thread in self._threads:
            thread.join(35)
        log.info("gateway stopped")

    def _take_dropped(self, source: str, path: Path, name: str) -> object:
        """A file complete in the drop folder: the same taking as an HTTP upload (safe name for the key)."""
        return self.taker.take(source, path, safe_name(name), None, transport="drop_folder")

    def stop(self, *_: object) -> None:
        self._stop.set()

    def health(self) -> tuple[bool, dict]:
        parts = {"capture": self.capture.health(), "archiver": self.archiver.health(),
                 "splitter": self.splitter.health()}
        alive = all(t.is_alive() for t in self._threads) if self._threads else False
        ok = alive and self._mllp_ready.is_set() and all(p[0] for p in parts.values())
        return ok, {"service": self.name, "threads_alive": alive, "mllp_listening": self._mllp_ready.is_set(),
                    **{name: details for name, (_, details) in parts.items()}}


def build(settings: Settings) -> Gateway:
    return Gateway(settings)
