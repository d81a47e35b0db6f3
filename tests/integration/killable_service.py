"""A service for the fault tests, run in a real subprocess by `carelake run <this module>:build`.

It relays raw envelopes to the relay topic and upserts each envelope id into a PostgreSQL table
(an idempotent sink), slowly enough that a test can SIGKILL it mid-stream. Test wiring comes from
environment variables because this is test code, not a service: SELFTEST_GROUP, SELFTEST_TABLE,
SELFTEST_SINK_DELAY_S.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import psycopg

from carelake.config import Settings
from carelake.stream.runtime import StreamService
from carelake.stream.selftest import DLQ_TOPIC, INPUT_TOPIC, RELAY_TOPIC, relay


class PostgresIdSink:
    """Upserts ids; writing the same ids twice leaves one row each (the idempotence under test)."""

    def __init__(self, dsn: str, table: str, delay_s: float) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.table, self.delay_s = table, delay_s

    def write(self, items: Sequence[str]) -> None:
        time.sleep(self.delay_s)
        with self.conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {self.table} (id) VALUES (%s) "  # table name is the test's own uuid
                f"ON CONFLICT (id) DO UPDATE SET writes = {self.table}.writes + 1",
                [(i,) for i in items],
            )


def build(settings: Settings) -> StreamService:
    from carelake.stream.types import Write

    sink = PostgresIdSink(settings.postgres_dsn, os.environ["SELFTEST_TABLE"],
                          float(os.environ.get("SELFTEST_SINK_DELAY_S", "0.05")))

    def process(batch):  # noqa: ANN001, ANN202
        return [*relay(batch), *(Write(r.value["id"]) for r in batch)]

    return StreamService(name=os.environ["SELFTEST_GROUP"], inputs=[INPUT_TOPIC], outputs=[RELAY_TOPIC],
                         process=process, sink=sink, dlq=DLQ_TOPIC)
