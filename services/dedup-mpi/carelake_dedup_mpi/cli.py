"""``carelake mpi``: deduplicate a CSV of people, or fit a matching model, without the stack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from carelake.errors import CarelakeError

app = typer.Typer(name="mpi", help="The master patient index's matcher on files: link-csv, estimate.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
err = Console(stderr=True)


def _fail(exc: CarelakeError) -> None:
    err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1)


@app.command("link-csv")
def link_csv_command(
    input: Annotated[Path, typer.Argument(help="CSV with a record_id column and any of given_name, family_name, "
                                               "birth_date, sex, address_line, city, state, postal_code, phone, ssn")],
    out: Annotated[Path, typer.Option("--out", help="Where to write record_id, euid, score")],
    model: Annotated[Path | None, typer.Option("--model", help="A model JSON (from `estimate`); "
                                                               "default: fit one on INPUT")] = None,
    no_estimate: Annotated[bool, typer.Option("--no-estimate", help="Use the built-in model instead of "
                                                                    "fitting one on INPUT")] = False,
) -> None:
    """Link every row of INPUT, in file order, exactly as the stream would; one EUID per person."""
    from carelake_dedup_mpi.linkcsv import link_csv

    try:
        stats = link_csv(input, out, model_path=model, estimate=not no_estimate, progress=True)
    except CarelakeError as exc:
        _fail(exc)
        return
    for line in stats.errors:
        err.print(f"[yellow]skipped[/yellow] {line}")
    if stats.error_count > len(stats.errors):
        err.print(f"[yellow]... and {stats.error_count - len(stats.errors)} more skipped rows[/yellow]")
    table = Table("records", "persons", "links", "reviews", "unlinkable", "merges", "skipped", "seconds")
    table.add_row(*(f"{v:,}" for v in (stats.records, stats.persons, stats.links, stats.reviews, stats.unlinkable,
                                        stats.merges, stats.error_count)), f"{stats.seconds:.1f}")
    err.print(table)
    err.print(f"wrote {out}")


@app.command("estimate")
def estimate_command(
    input: Annotated[Path, typer.Argument(help="CSV of people (the link-csv columns)")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the model JSON")],
) -> None:
    """Fit the matching model on INPUT (unsupervised EM) and write it as JSON."""
    from carelake_dedup_mpi.linkcsv import read_records
    from carelake_dedup_mpi.model import estimate

    try:
        rows, errors = read_records(input)
    except CarelakeError as exc:
        _fail(exc)
        return
    model = estimate([r for _, r in rows])
    model.save(out)
    err.print(f"fitted on {len(rows):,} records ({len(errors)} skipped rows): prior {model.prior:.3g}, "
              f"{model.meta.get('blocked_pairs', 0):,} candidate pairs -> {out}")
