"""Find a service by name and run it: what `carelake run <service>` (and its container) does.

Services register a builder under the ``carelake.services`` entry-point group in pyproject.toml:
``normalizer = "carelake_normalizer.service:build"``, where ``build(settings) -> StreamService``.
A ``module:attr`` path runs an unregistered builder (tests, experiments).
"""

from __future__ import annotations

import importlib
import logging
import signal
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Protocol

from carelake.config import Settings
from carelake.errors import ConfigError
from carelake.logs import configure_logging
from carelake.stream.admin import check_topics
from carelake.stream.health import serve_health
from carelake.stream.runtime import Runner, RunnerConfig, StreamService
from carelake.topics import load_catalog

# One well-known metrics port per service so Prometheus and the k8s manifests agree.
DEFAULT_METRICS_PORTS = {
    "ingest-gateway": 9101, "normalizer": 9102, "dedup-mpi": 9103, "quality-monitor": 9104,
    "feature-store": 9105, "scorer": 9106, "lake-writer": 9107,
}
PLANNED = tuple(DEFAULT_METRICS_PORTS)

class Runnable(Protocol):
    """A service that is more than one stream loop (e.g. the gateway's listeners plus its consumers)."""

    name: str

    def run(self) -> None: ...  # blocks until stop()
    def stop(self, *_: object) -> None: ...
    def health(self) -> tuple[bool, dict]: ...


Builder = Callable[[Settings], "StreamService | Runnable"]


def registered() -> dict[str, str]:
    """Built services: name -> entry point value."""
    return {ep.name: ep.value for ep in entry_points(group="carelake.services")}


def load_builder(name: str) -> Builder:
    if ":" in name:
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    for ep in entry_points(group="carelake.services"):
        if ep.name == name:
            return ep.load()
    built = sorted(registered())
    if name in PLANNED:
        raise ConfigError(f"service {name!r} is planned but not built yet; built: {built or 'none'}")
    raise ConfigError(f"unknown service {name!r}; built: {built or 'none'}; planned: {list(PLANNED)}")


def runner_for(service: StreamService, settings: Settings) -> Runner:
    """A Runner for ``service`` after checking its topics exist with their registered contracts."""
    catalog = load_catalog(settings.topic_catalog, settings.topic_prefix)
    check_topics(catalog, settings.bootstrap, [*service.inputs, *service.outputs, service.dlq_topic])
    consumer: dict[str, object] = {"session.timeout.ms": settings.session_timeout_ms}
    if settings.instance_id:
        consumer["group.instance.id"] = f"{settings.instance_id}-{service.name}"
    config = RunnerConfig(bootstrap=settings.bootstrap, batch_size=settings.batch_size_of(service.name),
                          consumer=consumer)
    return Runner(service, catalog, config)


def run(name: str, settings: Settings) -> None:
    """Build the service, check its topics, serve /metrics + /healthz, and run until SIGTERM."""
    # Logging first: what a service says while it builds (maps loaded, settings read) is its
    # start-up record. A module:attr builder is tagged with its attribute's module.
    configure_logging(settings.log_level, name if ":" not in name else name.partition(":")[0])
    built = load_builder(name)(settings)
    running: Runner | Runnable = runner_for(built, settings) if isinstance(built, StreamService) else built
    signal.signal(signal.SIGTERM, running.stop)
    signal.signal(signal.SIGINT, running.stop)
    port = settings.metrics_port or DEFAULT_METRICS_PORTS.get(built.name, 0)
    server = serve_health(port, running.health)
    logging.getLogger("carelake").info("serving /metrics and /healthz", extra={"port": server.server_port})
    try:
        running.run()
    finally:
        server.shutdown()
