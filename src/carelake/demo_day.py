"""The demo's pipeline step: a simulated day through the real gateway and normalizer processes.

Fresh topics (a timestamped prefix), the ingest-gateway and the normalizer started as
`carelake run` processes, the day delivered the way each source sends it (HL7 over MLLP,
wearables over Kafka, files over HTTP), then a wait until Bronze and Silver have caught up, and a
summary read from the processes' own metrics and the topics.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from carelake.bronze.store import open_store
from carelake.config import Settings
from carelake.launch import ServiceProcess
from carelake.stream.admin import create_topics
from carelake.stream.selftest import count
from carelake.topics import load_catalog


@dataclass
class DaySummary:
    prefix: str
    workdir: Path
    delivered: dict[str, int] = field(default_factory=dict)  # lane -> items accepted
    refused: dict[str, int] = field(default_factory=dict)  # lane -> items refused (AR, 4xx)
    raw_envelopes: int = 0
    gateway_dlq: int = 0
    bronze_objects: int = 0
    silver_by_type: Counter[str] = field(default_factory=Counter)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    unmapped_by_format: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    caught_up: bool = False


def run_day(s: Settings, day_dir: Path, workdir: Path, timeout_s: float = 900, *, prefix: str | None = None,
            inspect: Callable[[DaySummary, ServiceProcess, ServiceProcess], None] | None = None) -> DaySummary:
    """``prefix``: the topics' prefix (default ``demo<utc time>.``); the topics are left in place.
    ``inspect(summary, gateway, normalizer)``: called once caught up, before the processes stop
    (their /metrics still answer)."""
    from carelake_ingest_gateway.launch import GatewayProcess
    from carelake_simulator.deliver import deliver_day

    prefix = prefix or f"demo{datetime.now(UTC):%Y%m%d%H%M%S}."
    shutil.rmtree(workdir, ignore_errors=True)  # the demo's own folder: the last run's Bronze and logs only
    catalog = load_catalog(s.topic_catalog, prefix)
    create_topics(catalog, s.bootstrap)
    summary = DaySummary(prefix, workdir)
    gateway = GatewayProcess(prefix, workdir / "gateway")
    normalizer = ServiceProcess("normalizer", workdir / "normalizer.log",
                                {"CARELAKE_TOPIC_PREFIX": prefix, "CARELAKE_BRONZE_DIR": str(gateway.bronze)})
    t0 = time.monotonic()
    try:
        gateway.start()
        normalizer.start()
        delivery = deliver_day(day_dir, mllp_ports=gateway.ports, http_url=gateway.http_url,
                               api_keys=gateway.api_keys, bootstrap=s.bootstrap, catalog=catalog)
        if delivery.errors:
            raise RuntimeError(f"delivery lanes failed: {delivery.errors}")
        for name, stats in sorted(delivery.lanes.items()):
            if stats.sent or stats.failed:
                summary.delivered[name], summary.refused[name] = stats.sent, stats.failed
        raw = catalog.physical("bronze.raw.v1")
        deadline, last, steady = time.monotonic() + timeout_s, -1, 0
        while time.monotonic() < deadline:
            on_topic = count(s.bootstrap, raw)
            consumed = normalizer.metric("carelake_consumed_total", service="normalizer")
            archived = gateway.metric("carelake_consumed_total", service="ingest-archiver")
            steady = steady + 1 if on_topic == last else 0
            last = on_topic
            if steady >= 3 and consumed >= on_topic and archived >= on_topic:
                summary.caught_up = True
                break
            time.sleep(1)
        summary.raw_envelopes = last
        summary.gateway_dlq = count(s.bootstrap, catalog.physical("dlq.ingest-gateway.v1"))
        summary.bronze_objects = sum(1 for _ in open_store(Settings(bronze_dir=gateway.bronze)).list(""))
        for labels, value in normalizer.samples("carelake_normalizer_resources_total"):
            summary.silver_by_type[labels.get("resource_type", "?")] += int(value)
        for labels, value in normalizer.samples("carelake_normalizer_rejected_total"):
            summary.rejected_by_reason[labels.get("reason", "?")] += int(value)
        for labels, value in normalizer.samples("carelake_normalizer_unmapped_total"):
            summary.unmapped_by_format[labels.get("format", "?")] += int(value)
        if inspect is not None:
            inspect(summary, gateway, normalizer)
    finally:
        summary.seconds = time.monotonic() - t0
        normalizer.stop()
        gateway.stop()
    return summary
