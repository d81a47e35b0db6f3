"""Deliver a simulated day the way each source system really sends it, all at once.

* HL7 v2 message feeds (EHR, lab, public health VXU, scheduling, billing) over MLLP, each source to
  its own listener port, one ACK at a time per connection;
* the wearables device gateway's JSON readings to its Kafka topic ``source.wearables.v1``;
* batch files (837/835, pharmacy and SDOH CSV exports) over HTTP, or into a watched drop folder.

Every source runs in its own thread, so the gateway sees the mix it would see in production.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from carelake_simulator import store
from carelake_simulator.model import FeedRecord
from carelake_simulator.replay import (
    HL7_CONTENT_TYPE,
    ReplayStats,
    replay_http,
    replay_kafka,
    replay_mllp,
)

if TYPE_CHECKING:
    from carelake.topics import Catalog


@dataclass
class Delivery:
    """What went where: replay stats per lane ("mllp:ehr", "kafka:wearables", "http:files", "drop:files")."""

    lanes: dict[str, ReplayStats] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return sum(s.sent for s in self.lanes.values())

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.lanes.values())

    def outcomes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for stats in self.lanes.values():
            total.update(stats.by_outcome)
        return total


def _drop(out: Path, folder: Path) -> ReplayStats:
    """Write each batch file into ``folder/<source>/`` the SFTP way: a .part file renamed when complete."""
    stats = ReplayStats()
    for f in store.iter_files(out):
        target = folder / f.source
        target.mkdir(parents=True, exist_ok=True)
        part = target / f"{f.name}.part"
        part.write_bytes(f.payload)
        shutil.move(part, target / f.name)
        stats.sent += 1
        stats.bytes += len(f.payload)
        stats.by_source[f.source] = stats.by_source.get(f.source, 0) + 1
        stats.by_outcome["dropped"] = stats.by_outcome.get("dropped", 0) + 1
    return stats


def deliver_day(out: Path, *, mllp_ports: Mapping[str, int], http_url: str | None = None,
                api_keys: Mapping[str, str] | None = None, bootstrap: str | None = None,
                catalog: Catalog | None = None, drop_folder: Path | None = None, host: str = "127.0.0.1",
                connections: int = 4, progress: bool = False) -> Delivery:
    """Send the day in ``out`` (written by ``carelake simulate --out``) through each source's protocol.

    HL7 messages of a source without an MLLP port, and JSON messages when no broker is given, go
    over HTTP ``/v1/messages``; files go to ``drop_folder`` when given, else over HTTP.
    """
    sources = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("_"))
    jobs: dict[str, object] = {}

    def messages(source: str, content_type: str | None = None) -> list[FeedRecord]:
        return [r for r in store.iter_records(out, source) if content_type is None or r.content_type == content_type]

    for source in sources:
        if source in mllp_ports:
            jobs[f"mllp:{source}"] = lambda s=source: replay_mllp(
                messages(s, HL7_CONTENT_TYPE), host, mllp_ports[s], progress=progress, connections=connections)
        elif source == "wearables" and bootstrap and catalog is not None:
            jobs["kafka:wearables"] = lambda: replay_kafka(messages("wearables"), bootstrap, catalog,
                                                           progress=progress)
        elif http_url:
            jobs[f"http:{source}"] = lambda s=source: replay_http(messages(s), http_url, progress=progress,
                                                                  api_keys=dict(api_keys or {}))
    if drop_folder is not None:
        jobs["drop:files"] = lambda: _drop(out, drop_folder)
    elif http_url:
        jobs["http:files"] = lambda: replay_http(store.iter_files(out), http_url, progress=progress,
                                                 api_keys=dict(api_keys or {}))
    result = Delivery()

    def run(name: str, job) -> None:  # type: ignore[no-untyped-def]
        try:
            result.lanes[name] = job()
        except Exception as exc:  # noqa: BLE001 - reported per lane; the other lanes go on
            result.errors[name] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=run, args=item, name=item[0]) for item in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result
