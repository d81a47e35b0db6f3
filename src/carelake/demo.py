"""`carelake demo`, step 3: stream synthetic envelopes through the real runtime and show the outcome.

Until the pipeline services exist this is what runs end to end; it says so.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from carelake.config import settings
from carelake.stream.selftest import relay_once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--corrupt", type=int, default=5)
    args = parser.parse_args()
    s = settings()
    console = Console()
    with console.status(f"relaying {args.messages:,} envelopes + {args.corrupt} corrupt messages"):
        result = relay_once(s.bootstrap, s.topic_catalog, args.messages, args.corrupt)
    table = Table("what", "count", title="runtime relay on the local broker (scratch topics, dropped after)")
    table.add_row("envelopes sent (1 KiB payloads)", f"{result.sent:,}")
    table.add_row("corrupt messages planted", f"{result.corrupt:,}")
    table.add_row("relayed to the output topic", f"{result.relayed:,}")
    table.add_row("sent to the DLQ with a reason", f"{result.dead_lettered:,}")
    table.add_row("messages/s (consume→decode→process→encode→produce→commit)", f"{result.rate:,.0f}")
    console.print(table)
    lost = result.sent + result.corrupt - result.relayed - result.dead_lettered
    if lost:
        console.print(f"[red]{lost} messages unaccounted for[/red]")
        raise SystemExit(1)
    console.print("[green]every message accounted for: relayed or dead-lettered[/green]")


if __name__ == "__main__":
    main()
