"""Fixtures shared by every test folder (tests/, services/*/tests, simulator/tests).

Integration tests use the real local stack, started once per session by the project's own code.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from carelake.config import Settings, settings
from carelake.topics import Catalog, load_catalog, scratch_prefix


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """The real stack (Kafka, PostgreSQL, Redis, Gold), started by the project's own code.

    Started once per test session; stopped at the end only if this session started it, so a
    developer's running stack survives `make test`.
    """
    from carelake.stack import manager

    s = settings()
    was_running = any(p.running for p in manager.status(s))
    manager.up(s)
    yield s
    if not was_running and os.environ.get("CARELAKE_KEEP_STACK") != "1":
        manager.down(s)


@pytest.fixture
def catalog(stack: Settings) -> Iterator[Catalog]:
    """The topic catalog under a fresh uuid prefix; its topics are deleted after the test."""
    from carelake.stream.selftest import drop

    cat = load_catalog(stack.topic_catalog, scratch_prefix())
    yield cat
    drop(stack.bootstrap, cat)


@pytest.fixture
def unique() -> str:
    """A short unique name for a test's own consumer group, table or key prefix."""
    return f"t{uuid.uuid4().hex[:12]}"
