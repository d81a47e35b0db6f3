"""`carelake gold ...` and `carelake patient ...`: the Gold store from the terminal.

Everything goes through clickhouse-connect at CARELAKE_GOLD_URL (the local chDB front by default,
a ClickHouse server in production); the database is the URL's path (default ``carelake``).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from carelake.config import settings

gold_app = typer.Typer(help="The Gold store (ClickHouse; chDB front locally): migrate, query, data tests.",
                       no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def _client_and_db():  # noqa: ANN202 - (clickhouse_connect Client, database name)
    from carelake.gold.client import gold_client
    from carelake_lake_writer.service import gold_database

    url = settings().gold
    try:
        return gold_client(url, database=None), gold_database(url)
    except Exception as exc:  # noqa: BLE001 - connection refused, bad URL: one clear line, exit 1
        err.print(f"[red]error:[/red] Gold at {escape(url)} does not answer: {escape(str(exc)[:300])}\n"
                  "  start the local stack with `carelake stack up`, or set CARELAKE_GOLD_URL", highlight=False)
        raise typer.Exit(1) from None


@gold_app.command("migrate")
def gold_migrate() -> None:
    """Apply the Gold DDL (versioned SQL files of the lake-writer) that is not applied yet."""
    from carelake_lake_writer.gold.migrate import migrate

    client, database = _client_and_db()
    applied = migrate(client, database)
    out.print(f"{database}: applied {', '.join(applied) if applied else 'nothing (up to date)'}")


@gold_app.command("query")
def gold_query(
    sql: Annotated[str, typer.Argument(help="One SQL statement (read-only unless --write)")],
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
    write: Annotated[bool, typer.Option("--write", help="Allow statements that change Gold")] = False,
) -> None:
    """Run ad-hoc SQL on Gold, e.g. `carelake gold query "SELECT count() FROM patient_360"`."""
    from carelake_lake_writer.queries import gold_query as run_query

    client, database = _client_and_db()
    client.database = database  # unqualified table names resolve in the Gold database
    try:
        columns, rows = run_query(client, sql, readonly=not write)
    except Exception as exc:  # noqa: BLE001 - ClickHouse's own message is the useful part
        err.print(f"[red]error:[/red] {escape(str(exc).strip()[:2000])}", highlight=False)
        raise typer.Exit(1) from None
    if fmt == "json":
        for row in rows:
            print(json.dumps(dict(zip(columns, row)), default=str))
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        table = Table(*columns, show_lines=False)
        for row in rows:
            table.add_row(*(escape(str(v)) for v in row))
        out.print(table)
        err.print(f"{len(rows)} row(s)")


@gold_app.command("test")
def gold_test() -> None:
    """Run Gold's data tests (not-null keys, unique ids, accepted values); exit 1 when any fails."""
    from carelake_lake_writer.gold.data_tests import run_data_tests

    client, database = _client_and_db()
    failures = run_data_tests(client, database)
    for name, rows in sorted(failures.items()):
        mark = "[red]FAIL[/red]" if rows else "[green]ok[/green]  "
        out.print(f"  {mark} {name}" + (f" ({len(rows)} offending rows, e.g. {escape(str(rows[0])[:200])})"
                                        if rows else ""))
    raise typer.Exit(1 if any(failures.values()) else 0)


def patient(who: Annotated[str, typer.Argument(help="An EUID, or a source record as SOURCE:MRN (e.g. lab:L889201)")],
            as_json: Annotated[bool, typer.Option("--json", help="The row as JSON instead of the layout")] = False,
            ) -> None:
    """Print one patient's 360 view from Gold, with the source of every fact."""
    from carelake_lake_writer.queries import patient_360
    from carelake_lake_writer.render import render_patient

    client, database = _client_and_db()
    person = patient_360(client, database, who)
    if person is None:
        err.print(f"[red]not found:[/red] no patient {escape(who)!r} in Gold database {database!r} "
                  "(an EUID like E0123456789ab, or SOURCE:MRN)", highlight=False)
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(person, default=str, indent=2))
    else:
        out.print(render_patient(person))


lake_app = typer.Typer(help="Silver at rest: the Parquet files the lake-writer writes.", no_args_is_help=True)


@lake_app.command("compact")
def lake_compact(day: Annotated[str | None, typer.Option(help="Only this event day (YYYY-MM-DD)")] = None,
                 target_mb: Annotated[float | None, typer.Option(
                     help="Target size of a rolled file (default CARELAKE_LAKE_COMPACT_TARGET_MB, 128)")] = None,
                 ) -> None:
    """Roll each day's small part files into large ones (deduplicated by id, newest version kept).

    Works on the lake CARELAKE_LAKE_URI names (a folder, or s3://bucket/prefix). On S3 there is no lock:
    run it only while the lake-writer's own scheduled compaction is off (CARELAKE_LAKE_COMPACT_INTERVAL_S=0)
    or the service is stopped.
    """
    from carelake.errors import CarelakeError
    from carelake_lake_writer.parquet import compact_all, open_lake

    config = settings()
    try:
        lake = open_lake(config)
        lake.check()
        done = compact_all(lake, day, target_mb=target_mb or config.lake_compact_target_mb)
    except CarelakeError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    for folder, stats in sorted(done.items()):
        out.print(f"  {folder}: {stats['inputs']} files / {stats['rows_in']:,} rows -> "
                  f"{stats['outputs']} files / {stats['rows_out']:,} rows")
    out.print(f"{lake.uri}: {len(done)} day folder(s) compacted")
