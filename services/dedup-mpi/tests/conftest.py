"""Fixtures of the MPI's tests: a throwaway PostgreSQL database per test, a store on it, records."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from carelake.config import Settings
from carelake_dedup_mpi.model import default_model
from carelake_dedup_mpi.person import PersonRecord
from carelake_dedup_mpi.store.mpi import MpiStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def mpi_dsn(stack: Settings) -> Iterator[str]:
    """A fresh database ``mpi_<uuid hex>`` on the stack's PostgreSQL, dropped afterwards."""
    name = f"mpi_{uuid.uuid4().hex}"
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(stack.postgres_dsn, dbname=name)
    finally:
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def store(mpi_dsn: str) -> Iterator[MpiStore]:
    """An MpiStore (migrated) with the real blocking keys, model and decision."""
    s = MpiStore.open(mpi_dsn, default_model(), max_size=4)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def sql(mpi_dsn: str) -> Iterator[Callable[..., list[tuple]]]:
    """Run one SQL statement on the test database (autocommit) and return its rows."""
    conn = psycopg.connect(mpi_dsn, autocommit=True)

    def run(query: str, *params: object) -> list[tuple]:
        cur = conn.execute(query, params or None)
        return cur.fetchall() if cur.description else []

    yield run
    conn.close()


def make_record(key: str, **fields: object) -> PersonRecord:
    dob = fields.pop("dob", None)
    if dob is not None:
        fields["birth_date"] = date.fromisoformat(str(dob))
    return PersonRecord(key, key.split("|", 1)[0], **fields)  # type: ignore[arg-type]


@pytest.fixture
def rec() -> Callable[..., PersonRecord]:
    """rec("lab|1", given=..., dob="1965-03-04", ...): a PersonRecord keyed "<source>|<id>"."""
    return make_record


@pytest.fixture
def ann() -> dict[str, str]:
    """One person's full demographics (as the EHR registers her)."""
    return dict(given="ANN", family="SMITH", dob="1965-03-04", sex="F", phone="3125550188",
                address_line="363 BANKS ST", city="CHICAGO", state="IL", postal_code="60601")
