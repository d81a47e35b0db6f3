"""MLLP listeners in several processes sharing each port (SO_REUSEPORT), for one host's cores.

One Python process answers about 3,800 HL7 messages/s with acks=all (framing, ACKs and the asyncio
loop are CPU in one interpreter); ``CARELAKE_MLLP_WORKERS=N`` starts N worker processes, each with
its own intake (producer) and listeners bound to every MLLP port with SO_REUSEPORT, and the kernel
spreads connections across them. A connection stays with one worker, so a sender's order is kept.
In Kubernetes, scale with replicas instead (workers = 1).

Each worker builds its settings from the same environment as the gateway, serves its own
``/metrics`` on the gateway's metrics port + 1 + its index (Prometheus counters live per process),
and stops gracefully (answering the message in hand) when the gateway sets the stop event.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import signal
from multiprocessing.synchronize import Event as MpEvent

log = logging.getLogger("carelake.ingest.mllp")


def worker_main(index: int, metrics_port: int, ready: MpEvent, stop: MpEvent) -> None:
    """Entry point of one worker process (spawned: it imports everything itself)."""
    from prometheus_client import start_http_server

    from carelake.bronze.store import open_store
    from carelake.config import settings
    from carelake.logs import configure_logging
    from carelake.topics import load_catalog
    from carelake_ingest_gateway.intake import Intake
    from carelake_ingest_gateway.mllp import MllpServer, run_loop
    from carelake_ingest_gateway.service import parse_pairs, tls_from

    s = settings()
    configure_logging(s.log_level, f"ingest-gateway-mllp-{index}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway decides when workers stop
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if metrics_port:
        start_http_server(metrics_port, addr=s.mllp_host)
    ssl_context, _ = tls_from(s)
    store = open_store(s)
    intake = Intake(s.bootstrap, load_catalog(s.topic_catalog, s.topic_prefix), s.redis)
    ports = {source: int(port) for source, port in parse_pairs(s.mllp_ports, "CARELAKE_MLLP_PORTS").items()}

    async def main() -> None:
        servers = [MllpServer(intake, source, s.mllp_host, port, ssl_context=ssl_context, store=store,
                              reuse_port=True) for source, port in ports.items()]
        for server in servers:
            await server.start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.2)
        for server in servers:
            await server.stop()

    try:
        run_loop(main())
    finally:
        intake.close()


class MllpWorkers:
    """Start N workers, wait until each listens, stop them all."""

    def __init__(self, count: int, metrics_port: int) -> None:
        ctx = mp.get_context("spawn")
        self.stop_event = ctx.Event()
        self.ready = [ctx.Event() for _ in range(count)]
        self.procs = [ctx.Process(target=worker_main, name=f"mllp-worker-{i}",
                                  args=(i, metrics_port + 1 + i if metrics_port else 0, self.ready[i],
                                        self.stop_event), daemon=False)
                      for i in range(count)]

    def start(self, timeout_s: float = 60) -> None:
        for proc in self.procs:
            proc.start()
        for proc, ready in zip(self.procs, self.ready):
            if not ready.wait(timeout_s):
                self.stop()
                raise RuntimeError(f"{proc.name} did not start listening in {timeout_s:g} s "
                                   f"(exit code {proc.exitcode})")

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs)

    def stop(self, grace_s: float = 35) -> None:
        self.stop_event.set()
        for proc in self.procs:
            proc.join(grace_s)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
