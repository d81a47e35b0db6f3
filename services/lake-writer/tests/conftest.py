"""Fixtures of the lake-writer's tests: a simulated day as Silver envelopes, and a uuid Gold database.

This folder is put on sys.path for the helper modules ``silver_day`` and ``streams``.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from silver_day import SilverDay, build_day


@pytest.fixture(scope="session")
def silver_day(tmp_path_factory: pytest.TempPathFactory) -> SilverDay:
    """A simulated day (1,500 people, seed 7; wearables cut to 300 readings) as lake-writer inputs."""
    return build_day(tmp_path_factory.mktemp("silver-day"), patients=1500, seed=7, wearable_lines=300)


@pytest.fixture
def gold_db(stack) -> Iterator[tuple]:
    """(client, database): a Gold database of the test's own (t_<uuid hex>), dropped afterwards."""
    from carelake.gold.client import gold_client

    client = gold_client(stack.gold, database=None)
    database = f"t_{uuid.uuid4().hex}"
    try:
        yield client, database
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{database}`")
