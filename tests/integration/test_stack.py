"""The local stack: every part real, answering, idempotent to start, and loud when it cannot start."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest
import redis

from carelake.config import Settings
from carelake.errors import StackError
from carelake.stack import manager
from carelake.stack.parts import Kafka, Redis

pytestmark = pytest.mark.integration


def test_every_part_is_running_and_answering(stack: Settings) -> None:
    states = {p.name: p for p in manager.status(stack)}
    assert set(states) == {"kafka", "postgres", "redis", "gold", "bronze"}
    assert all(p.ready for p in states.values()), states


def test_kafka_is_a_4x_kraft_broker_from_maven_jars(stack: Settings) -> None:
    kafka = Kafka(stack)
    jars = [p.name for p in kafka.libs.glob("kafka_2.13-*.jar")]
    assert jars and jars[0].startswith("kafka_2.13-4.")
    props = (kafka.dir / "server.properties").read_text()
    assert "process.roles=broker,controller" in props  # KRaft, no ZooKeeper


def test_postgres_redis_and_gold_take_real_work(stack: Settings, unique: str) -> None:
    with psycopg.connect(stack.postgres_dsn) as conn:
        assert conn.execute("SELECT 40 + 2").fetchone()[0] == 42
    r = redis.Redis.from_url(stack.redis)
    r.set(unique, "v", ex=60)
    assert r.get(unique) == b"v"
    from carelake.gold.client import gold_client

    client = gold_client(stack.gold)
    assert client.command("SELECT 1 + 1") == 2


def test_stack_up_is_idempotent(stack: Settings) -> None:
    said: dict[str, str] = {}
    manager.up(stack, report=lambda part, what: said.__setitem__(part, what))
    assert {said[p] for p in ("kafka", "postgres", "redis", "gold")} == {"already running"}


def test_a_taken_port_names_the_part_and_the_setting_to_change(stack: Settings, tmp_path: Path) -> None:
    s = Settings(home=tmp_path, redis_port=stack.kafka_port)
    with pytest.raises(StackError, match=r"redis: port \d+ is taken .* set CARELAKE_REDIS_PORT"):
        Redis(s).start()


class _MisconfiguredRedis(Redis):
    def command(self) -> list[str]:
        return [*super().command(), "--maxmemory", "not-a-size"]


def test_a_part_that_dies_on_start_says_why_and_where_its_log_is(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    part = _MisconfiguredRedis(Settings(home=tmp_path, redis_port=port, stack_timeout_s=15))
    with pytest.raises(StackError) as info:
        part.start()
    message = str(info.value)
    assert message.startswith("redis: exited during start")
    assert "maxmemory" in message  # the last lines of its own log say why
    assert str(tmp_path / "logs" / "redis.log") in message
    assert part.pid() is None
