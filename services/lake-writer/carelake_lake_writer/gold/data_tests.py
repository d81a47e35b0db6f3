"""Data tests over Gold: ``sql/tests/<name>.sql``, each one query returning the offending rows."""

from __future__ import annotations

from pathlib import Path

from clickhouse_connect.driver import Client

from carelake_lake_writer.gold.migrate import SQL_DIR, quote_db

TESTS_DIR = SQL_DIR / "tests"


def run_data_tests(client: Client, database: str, tests_dir: Path = TESTS_DIR,
                   limit: int = 100) -> dict[str, list[tuple]]:
    """Run every data test; returns test name -> offending rows (at most ``limit``; empty = passed)."""
    results: dict[str, list[tuple]] = {}
    for path in sorted(tests_dir.glob("*.sql")):
        body = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("--"))
        sql = body.replace("{db}", quote_db(database)).strip().rstrip(";")
        results[path.stem] = [tuple(r) for r in client.query(f"SELECT * FROM ({sql}) LIMIT {int(limit)}").result_rows]
    return results
