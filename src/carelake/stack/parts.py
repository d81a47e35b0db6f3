"""The parts of the local stack: each knows how to install, prepare, start and probe itself.

Every part runs as a plain process of the project's own, with its data under
``<home>/<part>/``, its log at ``<home>/logs/<part>.log`` and its pid at ``<home>/run/<part>.pid``,
on its own port, so it never collides with a system service.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from carelake.config import Settings, repo_root
from carelake.errors import StackError
from carelake.stack import process

PG_BIN_DIRS = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15")]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for tests and side-by-side processes)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def apt_install(packages: list[str], part: str) -> None:
    """Install Debian packages (the setup step on a fresh machine); root only."""
    if os.geteuid() != 0:
        raise StackError(part, f"missing {packages}; install them with apt-get (needs root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if run.returncode != 0:
            raise StackError(part, f"`{' '.join(cmd)}` failed: {run.stderr.strip()[-500:]}")


@dataclass
class Part:
    """One process of the stack. Subclasses fill in install/prepare/command/ready."""

    name: str
    settings: Settings
    stop_signal: int = signal.SIGTERM

    @property
    def dir(self) -> Path:
        return self.settings.home / self.name

    @property
    def log(self) -> Path:
        return self.settings.home / "logs" / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.settings.home / "run" / f"{self.name}.pid"

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def port_var(self) -> str:
        """The setting that moves this part's port."""
        return f"CARELAKE_{self.name.upper()}_PORT"

    @property
    def address(self) -> str:
        raise NotImplementedError

    def install(self) -> None:
        """Make sure the binaries exist (idempotent)."""

    def prepare(self) -> None:
        """Create the data directory on first start (idempotent)."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def spawn_kwargs(self) -> dict:
        return {}

    def pid(self) -> int | None:
        return process.read_pid(self.pid_file)

    def start(self) -> str:
        """Start if not running and wait until it answers. Returns what happened."""
        if self.pid() is not None:
            if process.wait_until(self.ready, self.settings.stack_timeout_s, lambda: self.pid() is not None):
                return "already running"
            raise StackError(self.name, "running but not answering", str(self.log))
        if port_open(self.port):
            raise StackError(
                self.name, f"port {self.port} is taken by another process; set {self.port_var} to move it"
            )
        self.install()
        self.prepare()
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._spawn()
        if not process.wait_until(self.ready, self.settings.stack_timeout_s, lambda: self.pid() is not None):
            alive = self.pid() is not None
            self.stop()
            why = "did not answer in time" if alive else "exited during start"
            raise StackError(self.name, f"{why}; last log lines:\n{process.tail(self.log)}", str(self.log))
        return "started"

    def _spawn(self) -> None:
        process.spawn(self.command(), self.log, self.pid_file, **self.spawn_kwargs())

    def stop(self) -> bool:
        return process.stop(self.pid_file, sig=self.stop_signal)


class Kafka(Part):
    """Apache Kafka in KRaft mode, one combined broker+controller, jars from Maven Central."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("kafka", settings)

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    @property
    def address(self) -> str:
        return self.settings.bootstrap

    @property
    def libs(self) -> Path:
        return self.settings.home / "cache" / "kafka" / "libs"

    def install(self) -> None:
        if self.libs.is_dir() and any(self.libs.glob("kafka_2.13-*.jar")):
            return
        missing = [pkg for tool, pkg in (("java", "openjdk-17-jre-headless"), ("mvn", "maven"))
                   if shutil.which(tool) is None]
        if missing:
            apt_install(missing, self.name)
        pom = repo_root() / "deploy" / "local" / "kafka" / "pom.xml"
        run = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
             f"-DoutputDirectory={self.libs}", "-DincludeScope=runtime"],
            capture_output=True, text=True,
        )
        if run.returncode != 0:
            shutil.rmtree(self.libs, ignore_errors=True)
            raise StackError(self.name, f"fetching Kafka jars with Maven failed:\n{run.stdout[-1500:]}")

    def properties(self) -> str:
        s = self.settings
        return "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self.dir / 'data'}",
            "num.partitions=3",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=12",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "group.initial.rebalance.delay.ms=0",
            # Topics come from the catalog (`carelake topics create`); a typo must fail, not create.
            "auto.create.topics.enable=false",
            "log.retention.hours=168",
            "",
        ])

    def _java(self, main: str, *args: str) -> list[str]:
        log4j = repo_root() / "deploy" / "local" / "kafka" / "log4j2.properties"
        return [
            "java", f"-Xmx{self.settings.kafka_heap}", "-Xms256m", "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={self.dir / 'logs'}",
            "-cp", f"{self.libs}/*", main, *args,
        ]

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        props = self.dir / "server.properties"
        props.write_text(self.properties())
        if (self.dir / "data" / "meta.properties").exists():
            return
        cluster_id = _kafka_cluster_id()
        run = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
            capture_output=True, text=True,
        )
        if run.returncode != 0:
            raise StackError(self.name, f"formatting KRaft storage failed: {run.stdout[-800:]}{run.stderr[-800:]}")

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.dir / "server.properties"))

    def ready(self) -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.address, "socket.timeout.ms": 2000})
        return bool(admin.list_topics(timeout=2).brokers)


def _kafka_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as Kafka's own tool makes)."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class Postgres(Part):
    """PostgreSQL from Debian's packages, as its own cluster on its own port and data dir."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("postgres", settings, stop_signal=signal.SIGINT)  # SIGINT = fast shutdown

    @property
    def port(self) -> int:
        return self.settings.pg_port

    @property
    def port_var(self) -> str:
        return "CARELAKE_PG_PORT"

    @property
    def address(self) -> str:
        return f"postgresql://carelake@127.0.0.1:{self.port}/carelake"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def bin(self, tool: str) -> str:
        for d in PG_BIN_DIRS:
            if (d / tool).exists():
                return str(d / tool)
        raise StackError(self.name, f"{tool} not found in {[str(d) for d in PG_BIN_DIRS]}")

    def install(self) -> None:
        if not any((d / "postgres").exists() for d in PG_BIN_DIRS):
            apt_install(["postgresql"], self.name)

    def spawn_kwargs(self) -> dict:
        # PostgreSQL refuses to run as root; run it as the package's own `postgres` user.
        return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, capture_output=True, text=True, **self.spawn_kwargs())

    def prepare(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            if self._run(["test", "-w", str(self.dir)]).returncode != 0:
                raise StackError(
                    self.name,
                    f"user `postgres` cannot reach {self.dir}; give its parent folders o+x "
                    "or set CARELAKE_HOME to a folder it can reach",
                )
        run = self._run([self.bin("initdb"), "-D", str(self.data), "-U", "carelake",
                         "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"])
        if run.returncode != 0:
            raise StackError(self.name, f"initdb failed: {run.stderr.strip()[-800:]}")

    def command(self) -> list[str]:
        return [
            self.bin("postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
            "-c", "max_connections=200", "-c", "shared_buffers=256MB",
            "-c", "fsync=on", "-c", "logging_collector=off",
        ]

    def ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.address, connect_timeout=2):
                return True
        except psycopg.OperationalError as exc:
            if "does not exist" not in str(exc):
                raise
        with psycopg.connect(self.address.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE carelake")
        return True


class Redis(Part):
    """Redis from Debian's packages, persisting to an append-only file in its own folder."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("redis", settings)

    @property
    def port(self) -> int:
        return self.settings.redis_port

    @property
    def address(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def install(self) -> None:
        if shutil.which("redis-server") is None:
            apt_install(["redis-server"], self.name)

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            shutil.which("redis-server") or "redis-server", "--port", str(self.port),
            "--bind", "127.0.0.1", "--dir", str(self.dir), "--appendonly", "yes",
            "--save", "", "--daemonize", "no", "--protected-mode", "yes",
        ]

    def ready(self) -> bool:
        import redis

        return bool(redis.Redis(port=self.port, socket_timeout=2).ping())


class Gold(Part):
    """chDB (the ClickHouse engine in-process) owned by one process that speaks ClickHouse HTTP."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("gold", settings)

    @property
    def port(self) -> int:
        return self.settings.gold_port

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "carelake.gold.server", "--path", str(self.dir / "data"),
                "--host", "127.0.0.1", "--port", str(self.port)]

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.address}/ping", timeout=2) as resp:
            return resp.status == 200


class BronzeDir(Part):
    """The local Bronze object store: a folder, nothing to run."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("bronze", settings)

    @property
    def port(self) -> int:
        return 0

    @property
    def address(self) -> str:
        return str(self.settings.bronze)

    def pid(self) -> int | None:
        return None

    def start(self) -> str:
        self.settings.bronze.mkdir(parents=True, exist_ok=True)
        return "ready"

    def ready(self) -> bool:
        return self.settings.bronze.is_dir()

    def stop(self) -> bool:
        return False


def all_parts(settings: Settings) -> list[Part]:
    """The stack in start order."""
    return [Kafka(settings), Postgres(settings), Redis(settings), Gold(settings), BronzeDir(settings)]
