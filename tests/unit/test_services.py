"""`carelake run <service>` finds builders and explains what it cannot run."""

from __future__ import annotations

import pytest

from carelake.errors import ConfigError
from carelake.services import DEFAULT_METRICS_PORTS, load_builder


def test_a_planned_service_that_is_not_built_says_so() -> None:
    with pytest.raises(ConfigError, match="'scorer' is planned but not built yet"):
        load_builder("scorer")


def test_an_unknown_service_lists_what_exists() -> None:
    with pytest.raises(ConfigError, match=r"unknown service 'normaliser'.*planned: \['ingest-gateway'"):
        load_builder("normaliser")


def test_module_path_builders_load() -> None:
    builder = load_builder("tests.integration.killable_service:build")
    assert callable(builder)


def test_every_service_has_its_own_metrics_port() -> None:
    assert len(set(DEFAULT_METRICS_PORTS.values())) == len(DEFAULT_METRICS_PORTS) == 7
