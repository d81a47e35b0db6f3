"""The start-up check: every Gold table has exactly the columns and types the writer inserts."""

from __future__ import annotations

from collections.abc import Mapping

from clickhouse_connect.driver import Client

from carelake.errors import ConfigError
from carelake_lake_writer.tables import TABLES, Columns


def differences(expected: Mapping[str, Columns], actual: Mapping[str, dict[str, str]], database: str) -> list[str]:
    """What does not match, one line per table or column (empty when all is well). Pure.

    Extra columns in Gold are allowed (a newer migration may add columns with defaults); a
    missing table, a missing column or a different type is not.
    """
    problems = []
    for table, columns in expected.items():
        have = actual.get(table)
        if have is None:
            problems.append(f"table {database}.{table} is missing")
            continue
        for name, kind in columns:
            if name not in have:
                problems.append(f"table {database}.{table}: column {name} ({kind}) is missing")
            elif have[name] != kind:
                problems.append(f"table {database}.{table}: column {name} is {have[name]}, the writer inserts {kind}")
    return problems


def check_schema(client: Client, database: str, expected: Mapping[str, Columns] = TABLES) -> None:
    """Raise ConfigError naming each table and column whose Gold definition differs from the writer's."""
    rows = client.query("SELECT table, name, type FROM system.columns WHERE database = {db:String}",
                        parameters={"db": database}).result_rows
    actual: dict[str, dict[str, str]] = {}
    for table, name, kind in rows:
        actual.setdefault(table, {})[name] = kind
    problems = differences(expected, actual, database)
    if problems:
        raise ConfigError("Gold schema does not match the lake-writer: " + "; ".join(problems))
