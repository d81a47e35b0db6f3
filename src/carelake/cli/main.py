"""The `carelake` command: stack, topics, services, demo."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from carelake.cli.gold import gold_app, lake_app, patient
from carelake.config import settings
from carelake.errors import CarelakeError
from carelake_dedup_mpi.cli import app as mpi_app

app = typer.Typer(help="carelake: a streaming healthcare data lake.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
stack_app = typer.Typer(help="The local stack: Kafka, PostgreSQL, Redis, Gold (chDB), Bronze dir.",
                        no_args_is_help=True)
topics_app = typer.Typer(help="The topic catalog on the broker.", no_args_is_help=True)
simulate_app = typer.Typer(help="The source simulator: a realistic day from eight systems, with ground truth.",
                           invoke_without_command=True)
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
app.add_typer(simulate_app, name="simulate")
app.add_typer(gold_app, name="gold")
app.add_typer(lake_app, name="lake")
app.add_typer(mpi_app, name="mpi")
app.command("patient")(patient)
out = Console()
err = Console(stderr=True)

Parts = Annotated[list[str] | None, typer.Argument(help="Parts (default: all): kafka postgres redis gold bronze")]


def _fail(exc: CarelakeError) -> None:
    err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1)


def _report(part: str, what: str) -> None:
    out.print(f"  {part:<9} {what}")


def _status_table() -> Table:
    from carelake.stack import manager

    table = Table("part", "state", "pid", "address", "log")
    for col in table.columns[3:]:
        col.overflow = "fold"
    for st in manager.status(settings()):
        state = "[green]ready[/green]" if st.ready else ("[yellow]running[/yellow]" if st.running else "[red]down[/red]")
        table.add_row(st.name, state, str(st.pid or "-"), st.address, str(st.log))
    return table


@stack_app.command("up")
def stack_up(parts: Parts = None) -> None:
    """Start the stack (idempotent); waits until every part answers."""
    from carelake.stack import manager

    try:
        manager.up(settings(), parts, report=_report)
    except CarelakeError as exc:
        _fail(exc)
    out.print(_status_table())


@stack_app.command("install")
def stack_install() -> None:
    """Install what the stack needs (apt packages when missing, Kafka jars via Maven); starts nothing."""
    from carelake.stack import manager

    try:
        manager.install(settings(), report=_report)
    except CarelakeError as exc:
        _fail(exc)


@stack_app.command("down")
def stack_down(parts: Parts = None) -> None:
    """Stop the stack; data stays under CARELAKE_HOME until `make clean`."""
    from carelake.stack import manager

    manager.down(settings(), parts, report=_report)


@stack_app.command("status")
def stack_status() -> None:
    """What runs where."""
    out.print(_status_table())


@stack_app.command("logs")
def stack_logs(part: str, follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
               lines: int = 50) -> None:
    """Print (or follow) one part's log."""
    from carelake.stack import manager

    try:
        path = manager.log_path(settings(), part)
    except CarelakeError as exc:
        _fail(exc)
    os.execvp("tail", ["tail", f"-n{lines}", *(["-F"] if follow else []), str(path)])


@topics_app.command("create")
def topics_create() -> None:
    """Create every catalog topic (idempotent) and register each topic's value contract."""
    from carelake.stream.admin import create_topics
    from carelake.topics import load_catalog

    s = settings()
    try:
        results = create_topics(load_catalog(s.topic_catalog, s.topic_prefix), s.bootstrap)
    except CarelakeError as exc:
        _fail(exc)
    for r in results:
        out.print(f"  {r.action:<10} {r.name}")


@topics_app.command("list")
def topics_list() -> None:
    """The catalog: name, partitions, cleanup, key and value contract of every topic."""
    from carelake.topics import load_catalog

    s = settings()
    table = Table("topic", "partitions", "cleanup", "value", "key")
    for t in load_catalog(s.topic_catalog, s.topic_prefix).topics.values():
        table.add_row(t.physical, str(t.partitions), t.cleanup, t.value_schema, t.key)
    out.print(table)


@topics_app.command("check")
def topics_check() -> None:
    """Check every catalog topic exists on the broker with its registered contract."""
    from carelake.stream.admin import check_topics
    from carelake.topics import load_catalog

    s = settings()
    catalog = load_catalog(s.topic_catalog, s.topic_prefix)
    try:
        check_topics(catalog, s.bootstrap, list(catalog.topics))
    except CarelakeError as exc:
        _fail(exc)
    out.print(f"[green]all {len(catalog.topics)} topics present with matching contracts[/green]")


@app.command("run")
def run(service: Annotated[str, typer.Argument(help="A built service's name, or module:builder")]) -> None:
    """Run one service in the foreground (what its container runs)."""
    from carelake import services

    try:
        services.run(service, settings())
    except CarelakeError as exc:
        _fail(exc)


def _service_pid_file(name: str):  # noqa: ANN202
    return settings().home / "run" / f"service-{name}.pid"


@app.command("up")
def up() -> None:
    """Start the stack, create the topics, and start every built service in the background."""
    from carelake import services
    from carelake.stack import process

    stack_up(None)
    topics_create()
    built = services.registered()
    if not built:
        out.print("No services are built yet (see `carelake run --help`); the stack and topics are up.")
    for name in built:
        pid_file = _service_pid_file(name)
        if process.read_pid(pid_file):
            out.print(f"  {name:<16} already running")
            continue
        log = settings().home / "logs" / f"service-{name}.log"
        pid = process.spawn([sys.executable, "-m", "carelake.cli", "run", name], log, pid_file)
        out.print(f"  {name:<16} started (pid {pid}, log {log})")


@app.command("down")
def down() -> None:
    """Stop every service started by `carelake up`, then the stack."""
    from carelake import services
    from carelake.stack import process

    for name in services.registered():
        if process.stop(_service_pid_file(name)):
            out.print(f"  {name:<16} stopped")
    stack_down(None)


def _print_day(day) -> None:  # noqa: ANN001 - carelake.demo_day.DaySummary, imported lazily
    from rich.table import Table

    lanes = Table("lane", "accepted", "refused", title="delivered")
    for lane, n in day.delivered.items():
        lanes.add_row(lane, f"{n:,}", f"{day.refused.get(lane, 0):,}")
    out.print(lanes)
    out.print(f"Bronze: {day.bronze_objects:,} objects (segments, indexes, whole files); bronze.raw.v1: "
              f"{day.raw_envelopes:,} envelopes; gateway DLQ (unreadable captured readings): {day.gateway_dlq:,}")
    silver = Table("resource type", "count", title="silver.fhir.v1")
    for rtype, n in day.silver_by_type.most_common():
        silver.add_row(rtype, f"{n:,}")
    out.print(silver)
    if day.rejected_by_reason:
        out.print("normalizer DLQ by reason: " + ", ".join(f"{r} {n:,}" for r, n in day.rejected_by_reason.most_common()))
    if day.unmapped_by_format:
        out.print("kept, not yet mapped: " + ", ".join(f"{f} {n:,}" for f, n in day.unmapped_by_format.most_common()))
    if day.mpi_decisions:
        out.print(f"silver.linked.v1: {day.linked:,} resources stamped with an EUID; MPI decisions: "
                  + ", ".join(f"{k} {n:,}" for k, n in day.mpi_decisions.most_common()))
    state = "caught up" if day.caught_up else "[red]did NOT catch up before the timeout[/red]"
    stages = ", ".join(f"{layer} {sec:.0f}s" for layer, sec in day.stage_seconds.items())
    out.print(f"pipeline {state} in {day.seconds:.1f}s (each layer caught up at: {stages})")


def _print_gold(day) -> None:  # noqa: ANN001 - carelake.demo_day.DaySummary
    from carelake.gold.client import gold_client
    from carelake_lake_writer.queries import patient_360
    from carelake_lake_writer.render import render_patient
    from carelake_lake_writer.summary import gold_summary

    client = gold_client(day.gold_url)
    g = gold_summary(client, client.database)
    table = Table("source", "bronze", "silver (raw msgs)", "linked resources (with EUID)", "dead letters",
                  title=f"Gold: records per source and layer (database {client.database})")
    for source in sorted(g.layers):
        layers = g.layers[source]
        b, si, li = (layers.get(k, (0, 0, 0)) for k in ("bronze", "silver", "linked"))
        table.add_row(source, f"{b[1]:,}", f"{si[1]:,}", f"{li[0]:,} ({li[1]:,})", f"{b[2] + si[2] + li[2]:,}")
    out.print(table)
    rate = f"{g.success_rate:.3%}" if g.success_rate is not None else "n/a"
    lag = (f"p50 {g.lag_p50_s:.1f}s, p99 {g.lag_p99_s:.1f}s" if g.lag_p50_s is not None else "n/a")
    out.print(f"success rate (arrived -> Silver): {rate}; end-to-end lag (gateway arrival -> Gold): {lag}")
    out.print(f"persons (one row per EUID in patient_360): {g.persons:,}; known to 2+ sources: "
              f"{g.persons_multi_source:,}")
    if g.dead_letters:
        out.print("dead letters by service/reason: " + ", ".join(f"{k} {n:,}" for k, n in g.dead_letters.items()))
    if g.showcase:
        person = patient_360(client, client.database, g.showcase)
        if person is not None:
            out.print(render_patient(person))


@app.command("demo")
def demo(patients: Annotated[int, typer.Option(help="Patients in the simulated day (45000 = the reference day)")] = 5_000,
         stop: Annotated[bool, typer.Option("--stop", help="Stop the local stack when done")] = False,
         clean: Annotated[bool, typer.Option("--clean", help="First drop the topics and MPI/Gold databases that "
                                                            "earlier demo runs left for querying")] = False) -> None:
    """The main job: a simulated day from the eight sources through Bronze, Silver, the MPI and Gold."""
    t0 = time.monotonic()
    if clean:
        from carelake.demo_day import clean_runs

        stack_up(None)
        dropped = clean_runs(settings())
        out.print("dropped earlier runs: " + ", ".join(f"{len(v)} {k}" for k, v in dropped.items()))
    day_dir = settings().home / "demo" / "day"
    out.rule("carelake demo")
    out.print("1. Starting the local stack (real Kafka, PostgreSQL, Redis, chDB Gold front)")
    stack_up(None)
    out.print("2. Creating the catalog's topics and registering their Avro contracts")
    topics_create()
    out.print(f"3. Simulating one day of the eight source systems for {patients:,} patients into {day_dir}")
    cli = [sys.executable, "-m", "carelake.cli", "simulate"]
    subprocess.run([*cli, "--patients", str(patients), "--out", str(day_dir)], check=True)
    out.print("4. Starting ingest-gateway, normalizer, dedup-mpi and lake-writer as real processes on fresh "
              "topics (a fresh MPI database and Gold database), and sending the day the way each source "
              "sends it: HL7 over MLLP, wearables over Kafka, files over HTTP")
    from carelake.demo_day import run_day

    with out.status("starting") as status:
        day = run_day(settings(), day_dir, settings().home / "demo" / "pipeline", full=True,
                      on_progress=lambda what: status.update(what))
    _print_day(day)
    out.print("5. What Gold holds")
    _print_gold(day)
    out.rule("next")
    out.print(
        f"Query this run's Gold: CARELAKE_GOLD_URL={day.gold_url} carelake gold query \"SELECT * FROM "
        f"patient_360 LIMIT 5\" (or carelake patient SOURCE:MRN). Its MPI: database {day.mpi_database!r} on "
        f"the stack's PostgreSQL. Topics: prefix {day.prefix!r}; Bronze and logs under {day.workdir}. "
        "`carelake demo --clean` drops earlier runs' topics and databases first. "
        "Not built yet: quality-monitor, feature-store, scorer (quality measures, features and scores).")
    if stop:
        stack_down(None)
        out.print("stack stopped")
    else:
        out.print("The stack keeps running: `make status` shows it, `make down` stops it.")
    out.print(f"done in {time.monotonic() - t0:.1f}s")
    if not day.caught_up:
        raise typer.Exit(1)


@app.command("replay")
def bronze_replay(
    source: Annotated[str, typer.Option(help="The source whose Bronze messages to re-publish")],
    since: Annotated[str, typer.Option(help="First day, YYYY-MM-DD (UTC)")],
    until: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD (default: since)")] = None,
) -> None:
    """Re-publish a source's Bronze messages (and re-announce its stored files), marked replayed.

    Messages go straight to bronze.raw.v1 in arrival order; files go to bronze.files.v1, where the
    running gateway's splitter emits their records again.
    """
    from datetime import date as _date

    from carelake.bronze.store import open_store
    from carelake.topics import load_catalog
    from carelake_ingest_gateway.filesplit import FileBoard, FileTaker
    from carelake_ingest_gateway.intake import RAW_TOPIC
    from carelake_ingest_gateway.replay import replay, replay_files

    try:
        first, last = _date.fromisoformat(since), _date.fromisoformat(until) if until else None
    except ValueError:
        err.print("[red]error:[/red] --since/--until must be YYYY-MM-DD")
        raise typer.Exit(2) from None
    s = settings()
    try:
        store, catalog = open_store(s), load_catalog(s.topic_catalog, s.topic_prefix)
        result = replay(store, s.bootstrap, catalog, source, first, last)
        taker = FileTaker(store, s.bootstrap, catalog, FileBoard(s.redis, catalog.physical(RAW_TOPIC)))
        files = replay_files(store, taker, source, first, last)
        taker.close()
    except CarelakeError as exc:
        _fail(exc)
    out.print(f"replayed {result.envelopes:,} envelopes from {result.segments} segments "
              f"({result.duplicates_skipped:,} overlapping copies skipped); re-announced {files} files "
              "(the gateway's splitter emits their records)")


@simulate_app.callback()
def simulate(
    ctx: typer.Context,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder to write the feeds and the truth into")] = None,
    patients: Annotated[int, typer.Option(help="Population size")] = 45_000,
    day: Annotated[str, typer.Option(help="The simulated day, YYYY-MM-DD")] = "2026-01-15",
    seed: Annotated[int, typer.Option(help="Same seed, same bytes")] = 42,
    duplicate_rate: Annotated[float, typer.Option(help="People registered twice in one system")] = 0.02,
    variation_rate: Annotated[float, typer.Option(help="Registrations whose demographics differ")] = 0.12,
    malformed_rate: Annotated[float, typer.Option(help="Malformed messages")] = 0.002,
    missing_dob_rate: Annotated[float, typer.Option(help="Lab messages without a birth date")] = 0.032,
    late_rate: Annotated[float, typer.Option(help="Messages sent hours after the event")] = 0.02,
    invalid_code_rate: Annotated[float, typer.Option(help="Records with an invalid code")] = 0.005,
    local_code_rate: Annotated[float, typer.Option(help="Lab orders sent with the lab's own codes")] = 0.05,
) -> None:
    """Generate a population and one day of its eight source feeds plus the ground truth."""
    if ctx.invoked_subcommand is not None:
        return
    if out_dir is None:
        err.print("[red]error:[/red] --out DIR is required (or use `carelake simulate replay`)")
        raise typer.Exit(2)
    from datetime import date as _date

    from carelake_simulator.feeds import MessRates
    from carelake_simulator.identity import IdentityRates
    from carelake_simulator.simulate import SimConfig, run

    try:
        the_day = _date.fromisoformat(day)
    except ValueError:
        err.print(f"[red]error:[/red] --day must be YYYY-MM-DD, got {day!r}")
        raise typer.Exit(2) from None
    config = SimConfig(
        patients=patients, day=the_day, seed=seed,
        mess=MessRates(malformed=malformed_rate, missing_dob_lab=missing_dob_rate, late=late_rate,
                       invalid_code=invalid_code_rate, local_lab_code=local_code_rate),
        identity=IdentityRates(variation=variation_rate, duplicate=duplicate_rate),
    )
    with out.status("simulating") as status:
        manifest, seconds = run(config, out_dir, step=lambda what: status.update(f"simulating: {what}"))
    table = Table("source", "messages", "files")
    files_by_source: dict[str, int] = {}
    for f in manifest["files"]:
        files_by_source[f["source"]] = files_by_source.get(f["source"], 0) + f["records"]
    for source in sorted(set(manifest["messages_by_source"]) | set(files_by_source)):
        table.add_row(source, f"{manifest['messages_by_source'].get(source, 0):,}",
                      f"{files_by_source.get(source, 0):,} records" if source in files_by_source else "")
    out.print(table)
    out.print(f"{manifest['records']:,} records for {patients:,} patients on {the_day} in {seconds:.1f}s "
              f"-> {out_dir} (truth in {out_dir / '_truth'})")


@simulate_app.command("check")
def simulate_check(
    source_dir: Annotated[Path, typer.Argument(help="A folder written by `carelake simulate --out`")],
    hl7_limit: Annotated[int | None, typer.Option(help="Check only the first N HL7 messages per source")] = None,
) -> None:
    """Parse every message and file of an output folder with external parsers (hl7apy, pyx12, csv, json)."""
    from carelake_simulator.check import check_output

    with out.status("checking"):
        report = check_output(source_dir, hl7_limit)
    out.print(f"checked: {dict(report.checked)}; planted malformed rejected {report.malformed_rejected}, "
              f"accepted anyway {report.malformed_accepted}")
    for source, item, why in report.failures[:20]:
        err.print(f"[red]fails:[/red] {source} {item}: {why}")
    if not report.ok:
        err.print(f"[red]{len(report.failures)} records failed that were not planted as malformed[/red]")
        raise typer.Exit(1)
    out.print("[green]every record not planted as malformed parses[/green]")


@simulate_app.command("replay")
def simulate_replay(
    source_dir: Annotated[Path, typer.Option("--from", help="A folder written by `carelake simulate --out`")],
    to: Annotated[str, typer.Option(help="kafka | mllp | http")] = "kafka",
    target: Annotated[str | None, typer.Option(help="mllp: host:port; http: base URL")] = None,
    rate: Annotated[str | None, typer.Option(help="e.g. 2000/s")] = None,
    speed: Annotated[str | None, typer.Option(help="event time scaled, e.g. 3600x")] = None,
    sources: Annotated[list[str] | None, typer.Option("--source", help="Only these sources")] = None,
) -> None:
    """Replay a simulated day to Kafka (source.<source>.v1), an MLLP listener or the HTTP gateway."""
    from carelake.topics import load_catalog
    from carelake_simulator import replay, store

    if rate and speed:
        err.print("[red]error:[/red] give --rate or --speed, not both")
        raise typer.Exit(2)
    try:
        pace = replay.Pace(rate=replay.parse_rate(rate) if rate else None,
                           speed=replay.parse_speed(speed) if speed else None)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if not (source_dir / "manifest.json").exists():
        err.print(f"[red]error:[/red] {source_dir} has no manifest.json; write it with `carelake simulate --out`")
        raise typer.Exit(2)
    items = store.iter_feed(source_dir, sources)
    total = store.count_feed(source_dir, sources)
    s = settings()
    try:
        if to == "kafka":
            stats = replay.replay_kafka(items, s.bootstrap, load_catalog(s.topic_catalog, s.topic_prefix), pace, total)
        elif to == "mllp":
            host, _, port = (target or "127.0.0.1:2575").rpartition(":")
            stats = replay.replay_mllp(items, host, int(port), pace, total)
        elif to == "http":
            stats = replay.replay_http(items, target or "http://127.0.0.1:8080", pace, total)
        else:
            err.print(f"[red]error:[/red] --to must be kafka, mllp or http, not {to!r}")
            raise typer.Exit(2)
    except (CarelakeError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    out.print(f"sent {stats.sent:,}, failed {stats.failed:,} in {stats.seconds:.1f}s ({stats.rate:,.0f}/s)")
    out.print(f"by source: {stats.by_source}")
    out.print(f"by outcome: {stats.by_outcome}")
    if stats.failed:
        raise typer.Exit(1)


class _UsageErrorExitsOne(typer.core.TyperCommand):
    """`carelake convert` keeps exit status 2 for "some parts were rejected": its usage errors exit 1."""

    def parse_args(self, ctx, args):  # noqa: ANN001, ANN201
        try:
            return super().parse_args(ctx, args)
        except Exception as exc:
            # click's UsageError and BadParameter carry exit_code 2 (typer vendors click, so match
            # the attribute rather than a class)
            if getattr(exc, "exit_code", None) == 2:
                exc.exit_code = 1
            raise


@app.command("convert", cls=_UsageErrorExitsOne)
def convert(
    file: Annotated[Path, typer.Argument(help="One message, an HL7 batch (FHS/BHS), an MLLP capture or "
                                              "a file of messages")],
    fmt: Annotated[str | None, typer.Option("--format", help="hl7v2 | x12 | csv | json (default: "
                                                             "detected from the bytes)")] = None,
    source: Annotated[str, typer.Option(help="The source the feed comes from (ids, patient keys, local "
                                             "code maps)")] = "ehr",
    tz: Annotated[str | None, typer.Option(help="IANA zone for times sent without an offset (default: "
                                                "the normalizer's for the source)")] = None,
) -> None:
    """Map a file to FHIR R4 without the stack: resources as JSON lines on stdout, rejected parts on stderr.

    Exit 0 when everything converted, 2 when some parts were rejected (the rest still printed),
    1 on a usage error.
    """
    from rich.markup import escape

    from carelake_normalizer.convert import UsageError
    from carelake_normalizer.convert import run as convert_run

    try:
        code = convert_run(file, fmt=fmt, source=source, tz_name=tz, stdout=sys.stdout.buffer,
                           stderr=sys.stderr.buffer)
    except UsageError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


terminology_app = typer.Typer(help="The normalizer's code maps.", no_args_is_help=True)
app.add_typer(terminology_app, name="terminology")


@terminology_app.command("load")
def terminology_load(
    kind: Annotated[str, typer.Argument(help="rxnorm (RRF release) | loinc (Loinc.csv) | ndc (FDA package.txt)")],
    path: Annotated[Path, typer.Argument(help="The release file, or a folder holding it")],
    version: Annotated[str | None, typer.Option(help="The release's version (default: read from the files)")] = None,
) -> None:
    """Turn an official terminology release into the normalizer's maps under CARELAKE_HOME/terminology/.

    Processes started afterwards use them; running ones keep the maps they loaded.
    """
    import json

    from rich.markup import escape

    from carelake_normalizer.terminology.load import KINDS
    from carelake_normalizer.terminology.load import terminology_load as load

    if kind not in KINDS:
        err.print(f"[red]error:[/red] unknown kind {kind!r}; one of {', '.join(KINDS)}", highlight=False)
        raise typer.Exit(1)
    try:
        summary = load(kind, path, settings().home, version)
    except (OSError, ValueError) as exc:  # a missing file, a file that is not the release named
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    app()
