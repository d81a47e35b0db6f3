"""The demo's pipeline step: a simulated day through every built service as a real process.

Fresh topics (a timestamped prefix), a fresh MPI database in PostgreSQL and a fresh Gold database,
the ingest-gateway, normalizer, dedup-mpi and lake-writer started as `carelake run` processes, the
day delivered the way each source sends it (HL7 over MLLP, wearables over Kafka, files over HTTP),
then a wait until every layer has caught up (Bronze, Silver, the MPI, Gold), and a summary read
from the processes' own metrics, the topics and Gold.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from carelake.bronze.store import open_store
from carelake.config import Settings
from carelake.launch import ServiceProcess
from carelake.stack.parts import free_port
from carelake.stream.admin import create_topics
from carelake.stream.selftest import count
from carelake.topics import Catalog, load_catalog

LAKE_INPUTS = ("silver.linked.v1", "mpi.links.v1", "bronze.raw.v1", "dlq.normalizer.v1", "dlq.ingest-gateway.v1",
               "dlq.dedup-mpi.v1")


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
    # With the MPI and Gold (full=True):
    mpi_database: str = ""
    gold_url: str = ""
    linked: int = 0  # silver.linked.v1 envelopes
    mpi_decisions: Counter[str] = field(default_factory=Counter)  # "LINK/auto_link" -> events
    stage_seconds: dict[str, float] = field(default_factory=dict)  # layer -> seconds from start to caught up
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds used during the run


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def _pg_database(dsn: str, name: str) -> str:
    """Create database ``name`` on the server of ``dsn``; its DSN."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return make_conninfo(dsn, dbname=name)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process (and its waited-for children) has used so far; 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (OSError, TypeError):
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks  # utime stime cutime cstime


def _stack_pids(s: Settings) -> dict[str, int]:
    from carelake.stack import manager

    return {f"stack:{p.name}": p.pid for p in manager.status(s) if p.pid}


def _count(s: Settings, catalog: Catalog, topic: str) -> int:
    return count(s.bootstrap, catalog.physical(topic))


def run_day(s: Settings, day_dir: Path, workdir: Path, timeout_s: float = 900, *, prefix: str | None = None,
            inspect: Callable[[DaySummary, ServiceProcess, ServiceProcess], None] | None = None,
            full: bool = False, on_progress: Callable[[str], None] | None = None) -> DaySummary:
    """``prefix``: the topics' prefix (default ``demo<utc time>.``); the topics are left in place.
    ``inspect(summary, gateway, normalizer)``: called once caught up, before the processes stop
    (their /metrics still answer). ``full``: also run dedup-mpi and the lake-writer (a fresh MPI
    database and Gold database named after the run, left in place for queries) and wait for Gold.
    ``on_progress``: told what is being waited for, now and then."""
    from carelake_ingest_gateway.launch import GatewayProcess
    from carelake_simulator.deliver import deliver_day

    say = on_progress or (lambda _: None)
    stamp = f"{datetime.now(UTC):%Y%m%d%H%M%S}"
    prefix = prefix or f"demo{stamp}."
    shutil.rmtree(workdir, ignore_errors=True)  # the demo's own folder: the last run's Bronze and logs only
    catalog = load_catalog(s.topic_catalog, prefix)
    create_topics(catalog, s.bootstrap)
    summary = DaySummary(prefix, workdir)
    gateway = GatewayProcess(prefix, workdir / "gateway")
    normalizer = ServiceProcess("normalizer", workdir / "normalizer.log",
                                {"CARELAKE_TOPIC_PREFIX": prefix, "CARELAKE_BRONZE_DIR": str(gateway.bronze)})
    downstream: list[ServiceProcess] = []
    if full:
        run_name = "run_" + prefix.strip(".").replace("-", "_").replace(".", "_")
        summary.mpi_database = run_name
        summary.gold_url = _with_database(s.gold, run_name)
        mpi_dsn = _pg_database(s.postgres_dsn, run_name)
        downstream = [
            ServiceProcess("dedup-mpi", workdir / "dedup-mpi.log",
                           {"CARELAKE_TOPIC_PREFIX": prefix, "CARELAKE_PG_DSN": mpi_dsn,
                            "CARELAKE_MPI_API_PORT": str(free_port())}),
            ServiceProcess("lake-writer", workdir / "lake-writer.log",  # Silver Parquet beside the run's Bronze
                           {"CARELAKE_TOPIC_PREFIX": prefix, "CARELAKE_GOLD_URL": summary.gold_url,
                            "CARELAKE_BRONZE_DIR": str(gateway.bronze)}),
        ]
    t0 = time.monotonic()
    stack_cpu = {name: cpu_seconds(pid) for name, pid in _stack_pids(s).items()}
    try:
        gateway.start()
        normalizer.start()
        for proc in downstream:
            proc.start()
        say("delivering the day through MLLP, HTTP and Kafka")
        delivery = deliver_day(day_dir, mllp_ports=gateway.ports, http_url=gateway.http_url,
                               api_keys=gateway.api_keys, bootstrap=s.bootstrap, catalog=catalog)
        if delivery.errors:
            raise RuntimeError(f"delivery lanes failed: {delivery.errors}")
        for name, stats in sorted(delivery.lanes.items()):
            if stats.sent or stats.failed:
                summary.delivered[name], summary.refused[name] = stats.sent, stats.failed
        summary.caught_up = _wait(s, catalog, summary, gateway, normalizer, downstream, t0, timeout_s, say)
        summary.raw_envelopes = _count(s, catalog, "bronze.raw.v1")
        summary.gateway_dlq = _count(s, catalog, "dlq.ingest-gateway.v1")
        summary.bronze_objects = sum(1 for _ in open_store(Settings(bronze_dir=gateway.bronze)).list(""))
        for labels, value in normalizer.samples("carelake_normalizer_resources_total"):
            summary.silver_by_type[labels.get("resource_type", "?")] += int(value)
        for labels, value in normalizer.samples("carelake_normalizer_rejected_total"):
            summary.rejected_by_reason[labels.get("reason", "?")] += int(value)
        for labels, value in normalizer.samples("carelake_normalizer_unmapped_total"):
            summary.unmapped_by_format[labels.get("format", "?")] += int(value)
        if full:
            summary.linked = _count(s, catalog, "silver.linked.v1")
            for labels, value in downstream[0].samples("carelake_mpi_decisions_total"):
                summary.mpi_decisions[f"{labels.get('event_type')}/{labels.get('outcome') or '-'}"] += int(value)
        for proc in (gateway, normalizer, *downstream):
            summary.cpu_seconds[proc.name] = round(cpu_seconds(proc.proc.pid if proc.proc else None), 1)
        for name, pid in _stack_pids(s).items():
            summary.cpu_seconds[name] = round(cpu_seconds(pid) - stack_cpu.get(name, 0.0), 1)
        if inspect is not None:
            inspect(summary, gateway, normalizer)
    finally:
        summary.seconds = time.monotonic() - t0
        for proc in reversed(downstream):
            proc.stop()
        normalizer.stop()
        gateway.stop()
    return summary


def _wait(s: Settings, catalog: Catalog, summary: DaySummary, gateway: ServiceProcess, normalizer: ServiceProcess,
          downstream: list[ServiceProcess], t0: float, timeout_s: float, say: Callable[[str], None]) -> bool:
    """Until every layer has consumed everything upstream of it, three checks in a row (or the timeout)."""
    deadline, last, steady = time.monotonic() + timeout_s, None, 0
    while time.monotonic() < deadline:
        raw = _count(s, catalog, "bronze.raw.v1")
        layers = {"bronze": (gateway.metric("carelake_consumed_total", service="ingest-archiver"), raw),
                  "silver": (normalizer.metric("carelake_consumed_total", service="normalizer"), raw)}
        if downstream:
            mpi, lake = downstream
            layers["mpi"] = (mpi.metric("carelake_consumed_total", service="dedup-mpi"),
                             _count(s, catalog, "silver.fhir.v1"))
            layers["gold"] = (lake.metric("carelake_consumed_total", service="lake-writer"),
                              sum(_count(s, catalog, t) for t in LAKE_INPUTS))
        for layer, (done, total) in layers.items():  # when each layer last caught up with its input
            if done < total:
                summary.stage_seconds.pop(layer, None)
            elif total:
                summary.stage_seconds.setdefault(layer, round(time.monotonic() - t0, 1))
        totals = tuple(total for _, total in layers.values())
        steady = steady + 1 if totals == last else 0
        last = totals
        behind = {layer: int(total - done) for layer, (done, total) in layers.items() if done < total}
        if steady >= 3 and not behind:
            return True
        say("waiting for " + ", ".join(f"{layer} ({n:,} behind)" for layer, n in behind.items())
            if behind else "waiting for the topics to settle")
        time.sleep(1)
    return False


def clean_runs(s: Settings, keep: str | None = None, before: str = "99999999999999") -> dict[str, list[str]]:
    """Drop what earlier runs left for querying: ``demo<time>.`` topics, and ``run_demo<time>`` MPI and
    Gold databases — those stamped before ``before`` (``YYYYmmddHHMMSS``; default: all), except the run
    whose prefix is ``keep``. Returns what was dropped, by store."""
    import re

    import psycopg
    from confluent_kafka.admin import AdminClient

    from carelake.gold.client import gold_client

    keep_stamp = re.sub(r"\D", "", keep or "") or None

    def old(stamp: str) -> bool:
        return stamp < before and stamp != keep_stamp

    dropped: dict[str, list[str]] = {"topics": [], "postgres": [], "gold": []}
    admin = AdminClient({"bootstrap.servers": s.bootstrap})
    topics = [t for t in admin.list_topics(timeout=10).topics
              if (m := re.match(r"demo(\d{14})\.", t)) and old(m.group(1))]
    if topics:
        for fut in admin.delete_topics(topics, operation_timeout=30).values():
            fut.result()
        dropped["topics"] = sorted(topics)
    with psycopg.connect(s.postgres_dsn, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datname ~ '^run_demo[0-9]{14}$'").fetchall():
            if old(name[len("run_demo"):]):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                dropped["postgres"].append(name)
    gold = gold_client(s.gold, database=None)
    for (name,) in gold.query("SELECT name FROM system.databases WHERE match(name, '^run_demo[0-9]{14}$')").result_rows:
        if old(name[len("run_demo"):]):
            gold.command(f"DROP DATABASE IF EXISTS `{name}`")
            dropped["gold"].append(name)
    return dropped
