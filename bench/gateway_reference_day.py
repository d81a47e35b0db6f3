"""The simulator's day through the ingest gateway's real protocols, then a completeness audit.

A gateway process (`carelake run ingest-gateway`, fresh uuid-named topics, its own Bronze folder)
takes the day the way the sources send it: HL7 v2 over MLLP (one port per source, 4 connections
each), wearables JSON from the device gateway's Kafka topic (captured), batch files over HTTP.
Every lane runs at once. Then the audit, against the simulator's own files:

* every HL7 message not planted as malformed got AA, and its bytes are in a Bronze segment;
* every wearables reading not planted as malformed is in a Bronze segment;
* every batch file is stored whole (SHA-256 equal) and split to the topic, one envelope per record;
* bronze.raw.v1 holds one envelope per accepted message and file record.

    .venv/bin/python bench/gateway_reference_day.py [--patients 45000] [--day DIR]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=45_000)
    parser.add_argument("--day", type=Path, help="an existing `carelake simulate --out` folder to send")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and topics")
    args = parser.parse_args()

    from carelake.bronze.store import open_store
    from carelake.config import Settings, settings
    from carelake.stack import manager
    from carelake.stream.admin import create_topics
    from carelake.stream.selftest import count, drop
    from carelake.topics import load_catalog, scratch_prefix
    from carelake_ingest_gateway.launch import GatewayProcess
    from carelake_ingest_gateway.replay import archived_digests
    from carelake_simulator import store as feed_store
    from carelake_simulator.deliver import deliver_day
    from carelake_simulator.simulate import SimConfig
    from carelake_simulator.simulate import run as simulate_run

    s = settings()
    manager.up(s, ["kafka", "redis"])
    work = Path(tempfile.mkdtemp(prefix="carelake-bench-day-"))
    prefix = scratch_prefix()
    catalog = load_catalog(s.topic_catalog, prefix)
    create_topics(catalog, s.bootstrap)
    gateway = GatewayProcess(prefix, work / "gateway")
    try:
        day = args.day
        if day is None:
            day = work / "day"
            t0 = time.perf_counter()
            simulate_run(SimConfig(patients=args.patients), day)
            print(json.dumps({"simulated_s": round(time.perf_counter() - t0, 1)}), file=sys.stderr)
        gateway.start()
        t0 = time.perf_counter()
        delivery = deliver_day(day, mllp_ports=gateway.ports, http_url=gateway.http_url, api_keys=gateway.api_keys,
                               bootstrap=s.bootstrap, catalog=catalog, progress=sys.stderr.isatty())
        delivered_s = time.perf_counter() - t0
        if delivery.errors:
            raise SystemExit(f"lanes failed: {delivery.errors}")

        # What should be in Bronze and on the topic, from the simulator's own files and truth.
        with open(day / "_truth" / "records.csv", newline="") as fh:
            truth = list(csv.DictReader(fh))
        malformed_ids = {(t["source"], t["record_id"]) for t in truth if "malformed" in t["defects"]}
        file_records = sum(1 for t in truth if t["file"])
        expected: dict[str, set[str]] = {}
        messages = malformed = 0
        for source in sorted(p.name for p in day.iterdir() if p.is_dir() and not p.name.startswith("_")):
            for r in feed_store.iter_records(day, source):
                messages += 1
                if (source, r.message_id) in malformed_ids:
                    malformed += 1
                    continue
                expected.setdefault(source, set()).add(hashlib.sha256(r.payload).hexdigest())
        files = list(feed_store.iter_files(day))
        # On the topic: every acknowledged message (AA, 2xx), every captured reading that is not in
        # the capture's DLQ, and one envelope per file record.
        acked = sum(st.sent for name, st in delivery.lanes.items() if name.startswith(("mllp:", "http:"))
                    and name != "http:files")
        produced = sum(st.sent for name, st in delivery.lanes.items() if name.startswith("kafka:"))

        # Wait until the archiver and the splitter have caught up (Bronze complete, topic complete).
        bronze = open_store(Settings(bronze_dir=gateway.bronze))
        today = datetime.now(UTC).date()
        deadline = time.monotonic() + 1800
        while True:
            found = {src: archived_digests(bronze, src, today) for src in expected}
            missing = {src: len(expected[src] - found[src]) for src in expected}
            on_topic = count(s.bootstrap, catalog.physical("bronze.raw.v1"))
            dlq = count(s.bootstrap, catalog.physical("dlq.ingest-gateway.v1"))
            want = acked + produced - dlq + file_records
            if (not any(missing.values()) and on_topic >= want) or time.monotonic() > deadline:
                break
            print(json.dumps({"waiting": {"bronze_missing": missing, "on_topic": on_topic, "want": want}}),
                  file=sys.stderr)
            time.sleep(5)
        complete_s = time.perf_counter() - t0
        stored_files = {info.sha256 for src in {f.source for f in files}
                        for info in bronze.list(f"{src}/{today:%Y/%m/%d}/files/")}
        files_missing = [f.name for f in files if hashlib.sha256(f.payload).hexdigest() not in stored_files]
        report = {
            "bench": "gateway_reference_day", "patients": args.patients if args.day is None else None,
            "messages": messages, "planted_malformed": malformed, "files": len(files), "file_records": file_records,
            "delivered_s": round(delivered_s, 1), "bronze_complete_s": round(complete_s, 1),
            "records_per_s": round((messages + file_records) / complete_s),
            "lanes": {name: {"sent": st.sent, "failed": st.failed, "rate": round(st.rate), "outcomes": st.by_outcome}
                      for name, st in sorted(delivery.lanes.items()) if st.sent + st.failed},
            "bronze_missing_messages": missing, "bronze_missing_files": files_missing,
            "raw_topic_envelopes": on_topic, "expected_envelopes": want, "capture_dlq": dlq,
            "redeliveries": gateway.metric("carelake_bronze_redeliveries_total"),
            "python": platform.python_version(), "cpus": os.cpu_count(),
        }
        print(json.dumps(report))
        ok = not any(missing.values()) and not files_missing and on_topic == want
        if not ok:
            raise SystemExit("the audit failed: see the report above")
    finally:
        gateway.stop()
        if not args.keep:
            drop(s.bootstrap, catalog)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
