"""HTTP file intake: MB/s for POSTing one large 837P file, the split after it, and the gateway's memory.

The gateway (Intake, file taker, splitter thread and the FastAPI app under uvicorn, a tmp-dir
Bronze store) runs in its own process; this one builds the file and POSTs it over a real socket,
streamed from disk, with ``Prefer: respond-async``. The file is the simulator's professional
claims rendered again and again under fresh claim ids (one interchange, 5,000 claims per ST..SE,
as the 837 guides recommend). Two clocks:

* intake: first byte sent -> 202, which comes once the file is whole in Bronze (X12 envelope
  checked) and its file envelope is acknowledged (acks=all) on bronze.files.v1 — the file is safe;
* split: -> the status board says done, every claim's envelope acknowledged on bronze.raw.v1.

Topics are fresh uuid-named ones, dropped afterwards.

    .venv/bin/python bench/http_file_intake.py [--mb 100]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

KEY = "bench-claims-key"


def memory_mb(pid: int) -> dict[str, float]:
    """Current and peak resident memory of a process (Linux /proc), MB."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
    return {k: round(int(v.split()[0]) / 1024, 1) for k, v in fields.items()}


# ---- the gateway process -----------------------------------------------------------------------


def serve(prefix: str, workdir: str, ports: mp.Queue, done: mp.Event) -> None:
    import threading

    from carelake.auth import hash_key
    from carelake.bronze.store import open_store
    from carelake.config import Settings, settings
    from carelake.topics import load_catalog
    from carelake_ingest_gateway.filesplit import FileBoard, FileTaker, Splitter
    from carelake_ingest_gateway.http_api import create_app, make_server
    from carelake_ingest_gateway.intake import RAW_TOPIC, Intake

    s = settings()
    catalog = load_catalog(s.topic_catalog, prefix)
    intake = Intake(s.bootstrap, catalog, s.redis)
    store = open_store(Settings(home=Path(workdir), bronze_dir=Path(workdir) / "bronze"))
    board = FileBoard(s.redis, catalog.physical(RAW_TOPIC))
    taker = FileTaker(store, s.bootstrap, catalog, board)
    splitter = Splitter(store, s.bootstrap, catalog, board)
    app = create_app(intake, store, taker, api_keys={"claims": hash_key(KEY)}, spool_dir=Path(workdir))
    server = make_server(app, "127.0.0.1", 0)
    threads = [threading.Thread(target=server.run, daemon=True), threading.Thread(target=splitter.run, daemon=True)]
    for thread in threads:
        thread.start()
    while not server.started:
        time.sleep(0.02)
    ports.put(server.servers[0].sockets[0].getsockname()[1])
    done.wait()
    server.should_exit = True
    splitter.stop()
    for thread in threads:
        thread.join(60)
    intake.close()
    taker.close()
    board.forget_scope()


# ---- the file ---------------------------------------------------------------------------------


def build_837(target: int, path: Path, run: str) -> int:
    """Write an 837P of about ``target`` bytes to ``path``; returns its claim count."""
    from carelake_simulator.formats import x12
    from carelake_simulator.simulate import SimConfig, simulate

    sim = simulate(SimConfig(patients=5000, seed=5))
    base = [c for c in sim.events.claims if c.kind == "837P"]
    per_claim = len(x12.claims_837p(base, sim.registry.primary["claims"], sim.population.by_id(),
                                    sender_id="CARELAKEHLTH", receiver_id="CLEARINGHSE", control=1,
                                    created=datetime(2026, 1, 15, 22, tzinfo=UTC))) / len(base)
    copies = max(1, round(target / per_claim / len(base)))
    for _ in range(2):  # repeated claims share subscriber loops, so a second pass corrects the estimate
        claims = [replace(c, claim_id=f"{run}{n:05d}{c.claim_id[-6:]}") for n in range(copies) for c in base]
        payload = x12.claims_837p(claims, sim.registry.primary["claims"], sim.population.by_id(),
                                  sender_id="CARELAKEHLTH", receiver_id="CLEARINGHSE", control=7,
                                  created=datetime(2026, 1, 15, 22, tzinfo=UTC))
        copies = max(1, round(copies * target / len(payload)))
    path.write_bytes(payload)
    return len(claims)


def post(port: int, path: Path) -> tuple[int, dict, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600, blocksize=1 << 20)
    size = path.stat().st_size
    with open(path, "rb") as f:
        t0 = time.perf_counter()
        conn.request("POST", "/v1/files/claims", body=f,
                     headers={"Authorization": f"Bearer {KEY}", "X-File-Name": path.name, "Prefer": "respond-async",
                              "Content-Type": "application/edi-x12", "Content-Length": str(size)})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        seconds = time.perf_counter() - t0
    conn.close()
    return resp.status, body, seconds


def follow(port: int, url: str, timeout_s: float = 3600) -> dict:
    """Poll the file's status until its split is done (or failed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", url, headers={"Authorization": f"Bearer {KEY}"})
        state = json.loads(conn.getresponse().read())
        conn.close()
        if state.get("state") in ("done", "failed"):
            return state
        time.sleep(0.1)
    raise SystemExit(f"split not done after {timeout_s} s: {state}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0, help="file size, MB (10^6 bytes)")
    args = parser.parse_args()

    from carelake.config import settings
    from carelake.stack import manager
    from carelake.stream.admin import create_topics
    from carelake.stream.selftest import count, drop
    from carelake.topics import load_catalog, scratch_prefix

    s = settings()
    manager.up(s, ["kafka", "redis"])
    prefix = scratch_prefix()
    catalog = load_catalog(s.topic_catalog, prefix)
    create_topics(catalog, s.bootstrap, [catalog.get("bronze.raw.v1"), catalog.get("bronze.files.v1")])
    workdir = tempfile.mkdtemp(prefix="carelake-bench-http-")
    ctx = mp.get_context("spawn")
    ports, done = ctx.Queue(), ctx.Event()
    gateway = ctx.Process(target=serve, args=(prefix, workdir, ports, done), name="gateway")
    try:
        path = Path(workdir) / "837P_bench.x12"
        claims = build_837(int(args.mb * 1e6), path, prefix[1:9].upper())
        size = path.stat().st_size
        gateway.start()
        port = ports.get(timeout=120)
        before = memory_mb(gateway.pid)
        status, body, seconds = post(port, path)
        if status != 202:
            raise SystemExit(f"HTTP {status}: {json.dumps(body)[:500]}")
        t_taken = time.perf_counter()
        state = follow(port, body["status_url"])
        split_s = time.perf_counter() - t_taken
        after = memory_mb(gateway.pid)
        if state["state"] != "done" or state["records"] != claims or state["emitted"] != claims:
            raise SystemExit(f"incomplete: {json.dumps(state)[:500]}, expected {claims} claims")
        on_topic = count(s.bootstrap, catalog.physical("bronze.raw.v1"))
        if on_topic != claims:
            raise SystemExit(f"{on_topic} envelopes on the topic, expected {claims}")
        print(json.dumps({"bench": "http_file_intake", "file_mb": round(size / 1e6, 1), "claims": claims,
                          "intake_s": round(seconds, 2), "intake_mb_per_s": round(size / 1e6 / seconds, 2),
                          "split_s": round(split_s, 2), "split_claims_per_s": round(claims / split_s),
                          "end_to_end_mb_per_s": round(size / 1e6 / (seconds + split_s), 2),
                          "gateway_rss_mb": {"before": before["VmRSS"], "peak_before": before["VmHWM"],
                                             "peak_after": after["VmHWM"]},
                          "python": platform.python_version(), "cpus": os.cpu_count()}))
    finally:
        done.set()
        if gateway.pid is not None:
            gateway.join(120)
        drop(s.bootstrap, catalog)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
