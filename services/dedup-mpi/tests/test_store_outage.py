"""A database that cannot be reached is a TransientError (the runtime retries), never a crash."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime

import pytest
from psycopg_pool import ConnectionPool

from carelake.errors import TransientError
from carelake_dedup_mpi.model import default_model
from carelake_dedup_mpi.store.mpi import MpiStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _dead_port() -> int:
    with socket.socket() as s:  # bound and closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_database_is_transient(rec, ann):
    dsn = f"postgresql://carelake@127.0.0.1:{_dead_port()}/carelake"
    started = time.monotonic()
    with pytest.raises(TransientError):
        MpiStore.open(dsn, default_model(), timeout=1.0)
    pool = ConnectionPool(dsn, min_size=0, max_size=1, timeout=1.0, open=True,
                          kwargs={"autocommit": True, "connect_timeout": 1})
    store = MpiStore(pool, default_model())
    try:
        for call in (lambda: store.link([rec("ehr|A", **ann)], NOW), lambda: store.euids(["ehr|A"]),
                     lambda: store.ensure(["wearables|u"], NOW), lambda: store.person("E1", "steward1")):
            with pytest.raises(TransientError):
                call()
    finally:
        store.close()
    assert time.monotonic() - started < 30


@pytest.mark.integration
def test_a_closed_pool_is_transient(store, rec, ann):
    store.close()
    with pytest.raises(TransientError):
        store.link([rec("ehr|A", **ann)], NOW)
