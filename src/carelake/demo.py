"""`carelake demo`, step 3: stream synthetic envelopes through the real runtime and show the outcome.

Until the pipeline services exist this is what runs end to end; `carelake demo` says so.
"""

from __future__ import annotations

import argparse
import logging
import uuid
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from carelake.config import Settings, settings
from carelake.gold.client import gold_client
from carelake.stream.selftest import RelayResult, relay_once

RUNS_TABLE = "carelake_ops.selftest_runs"


def record_in_gold(s: Settings, result: RelayResult) -> int:
    """Write the run to Gold (idempotent on run id) and return how many runs Gold now holds."""
    client = gold_client(s.gold)
    client.command("CREATE DATABASE IF NOT EXISTS carelake_ops")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (run_id String, finished_at DateTime64(3, 'UTC'), "
        "sent UInt64, corrupt UInt64, relayed UInt64, dead_lettered UInt64, rate Float64) "
        "ENGINE = ReplacingMergeTree ORDER BY run_id"
    )
    row = [str(uuid.uuid4()), datetime.now(UTC), result.sent, result.corrupt, result.relayed,
           result.dead_lettered, result.rate]
    client.insert(RUNS_TABLE, [row], column_names=["run_id", "finished_at", "sent", "corrupt", "relayed",
                                                   "dead_lettered", "rate"])
    return int(client.command(f"SELECT count() FROM {RUNS_TABLE} FINAL"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--corrupt", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the DLQ reasons are shown below, not logged line by line
    s = settings()
    console = Console()
    with console.status(f"relaying {args.messages:,} envelopes + {args.corrupt} corrupt messages"):
        result = relay_once(s.bootstrap, s.topic_catalog, args.messages, args.corrupt)
    table = Table("what", "count", title="runtime relay on the local broker (scratch topics, dropped after)")
    table.add_row("envelopes sent (1 KiB synthetic payloads, no PHI)", f"{result.sent:,}")
    table.add_row("corrupt messages planted", f"{result.corrupt:,}")
    table.add_row("relayed to the output topic", f"{result.relayed:,}")
    table.add_row("sent to the DLQ with a reason", f"{result.dead_lettered:,}")
    table.add_row("messages/s, including consumer start-up", f"{result.rate:,.0f}")
    console.print(table)
    for reason, n in result.dlq_reasons.items():
        console.print(f"  DLQ x{n}: {reason}")
    lost = result.sent + result.corrupt - result.relayed - result.dead_lettered
    if lost:
        console.print(f"[red]{lost} messages unaccounted for[/red]")
        raise SystemExit(1)
    console.print("[green]every message accounted for: relayed or dead-lettered[/green]")
    runs = record_in_gold(s, result)
    console.print(f"Gold: this run written to {RUNS_TABLE} through clickhouse-connect at {s.gold}; "
                  f"Gold holds {runs} self-test run(s).")


if __name__ == "__main__":
    main()
