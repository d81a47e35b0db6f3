"""Settings come from CARELAKE_* variables with local defaults."""

from __future__ import annotations

import pytest

from carelake.config import Settings


def test_defaults_point_at_the_local_stack() -> None:
    s = Settings()
    assert s.bootstrap == "127.0.0.1:19092"
    assert s.postgres_dsn == "postgresql://carelake@127.0.0.1:15432/carelake"
    assert s.gold == "http://127.0.0.1:18123"
    assert s.bronze == s.home / "bronze"


def test_environment_overrides_and_secrets_stay_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELAKE_KAFKA_BOOTSTRAP", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv("CARELAKE_PG_DSN", "postgresql://svc:hunter2@db/carelake")
    monkeypatch.setenv("CARELAKE_GOLD_PORT", "28123")
    s = Settings()
    assert s.bootstrap == "kafka-0:9092,kafka-1:9092"
    assert s.postgres_dsn.endswith("@db/carelake")
    assert "hunter2" not in repr(s)
    assert s.gold == "http://127.0.0.1:28123"


def test_settings_are_frozen() -> None:
    with pytest.raises(Exception):
        Settings().kafka_port = 1  # type: ignore[misc]


def test_bad_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELAKE_KAFKA_PORT", "not-a-port")
    with pytest.raises(Exception, match="kafka_port"):
        Settings()


def test_a_pairs_setting_refuses_a_malformed_item_instead_of_dropping_it() -> None:
    from carelake.config import parse_pairs
    from carelake.errors import ConfigError

    assert parse_pairs(" ops=ab12 , steward=cd34,", "CARELAKE_MPI_API_KEY_HASHES") == {"ops": "ab12", "steward": "cd34"}
    with pytest.raises(ConfigError, match="CARELAKE_MPI_API_KEY_HASHES: 'ops'"):
        parse_pairs("ops", "CARELAKE_MPI_API_KEY_HASHES")  # a key left out silently could disable auth
    with pytest.raises(ConfigError, match="among"):
        parse_pairs("mars=1", "CARELAKE_MLLP_PORTS", allowed=("ehr", "lab"))


def test_a_service_batch_size_overrides_the_default_for_that_service_only() -> None:
    from carelake.config import Settings
    from carelake.errors import ConfigError

    s = Settings(batch_size=300, service_batch_sizes="lake-writer=4000")
    assert s.batch_size_of("lake-writer") == 4000
    assert s.batch_size_of("normalizer") == 300
    assert Settings().batch_size_of("lake-writer") == 5000  # the shipped default: Gold pays per insert
    with pytest.raises(ConfigError, match="lake-writer='0'"):
        Settings(service_batch_sizes="lake-writer=0").batch_size_of("lake-writer")
