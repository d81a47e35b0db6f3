"""MLLP intake: HL7 messages/s acknowledged over N concurrent connections, and ACK latency at a set rate.

The gateway side (Intake + MllpServer, one asyncio loop per process; ``--workers N`` processes
share the port with SO_REUSEPORT, as CARELAKE_MLLP_WORKERS does) runs apart from the senders,
which run in this process, one asyncio task per connection, each in HL7 original mode (send a
frame, wait for its ACK, send the next). Messages are the simulator's HL7 v2 feeds (EHR, lab,
scheduling, billing; none planted as malformed), each sent with a fresh MSH-10. Every AA means
acks=all on a fresh uuid-named bronze.raw.v1, dropped afterwards. Latency is measured by the
sender: frame written -> ACK read.

    .venv/bin/python bench/mllp_intake.py [--workers 2] [--connections 20] [--seconds 10] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time

START, END = b"\x0b", b"\x1c\x0d"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- the gateway process -----------------------------------------------------------------------------


def serve(catalog_prefix: str, routes: dict[str, str], linger_ms: float, port: int, ports: mp.Queue,
          done: mp.Event, profile: str | None = None) -> None:
    from carelake.config import settings
    from carelake.logs import configure_logging
    from carelake.topics import load_catalog
    from carelake_ingest_gateway.intake import Intake
    from carelake_ingest_gateway.mllp import MllpServer, run_loop

    configure_logging("WARNING", "ingest-gateway")
    s = settings()
    catalog = load_catalog(s.topic_catalog, catalog_prefix)
    intake = Intake(s.bootstrap, catalog, s.redis, producer_config={"linger.ms": linger_ms})

    async def main() -> None:
        server = MllpServer(intake, lambda msh: routes.get(msh.sending_app), "127.0.0.1", port, reuse_port=True)
        await server.start()
        ports.put(server.port)
        while not done.is_set():
            await asyncio.sleep(0.1)
        await server.stop()

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile(time.thread_time)  # CPU of the loop thread, not wall time
        profiler.enable()
    cpu0 = time.process_time()
    try:
        run_loop(main())
    finally:
        intake.close()
        print(json.dumps({"gateway_cpu_s": round(time.process_time() - cpu0, 2)}), file=sys.stderr)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)


# ---- the senders ---------------------------------------------------------------------------------------


def templates() -> tuple[list[tuple[bytes, bytes]], dict[str, str]]:
    """(bytes up to and including MSH-10, the rest) per simulator HL7 message; MSH-3 -> source."""
    from carelake_simulator.simulate import SimConfig, simulate

    sim = simulate(SimConfig(patients=5000, seed=5))
    out, routes = [], {}
    for r in sim.records:
        if r.content_type != "x-application/hl7-v2+er7" or any("malformed" in d for d in r.defects):
            continue
        head, sep, rest = r.payload.partition(b"\r")
        fields = head.split(b"|")
        routes[fields[2].decode()] = r.source
        out.append((b"|".join(fields[:10]), b"|" + b"|".join(fields[10:]) + sep + rest))
    return out, routes


class Sender:
    def __init__(self, index: int, stride: int, port: int, msgs: list[tuple[bytes, bytes]], run: str) -> None:
        self.index, self.stride, self.port, self.msgs, self.run = index, stride, port, msgs, run
        self.sent = self.acked = self.rejected = 0
        self.latencies: list[float] = []

    async def go(self, until: float, interval: float | None, record_after: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        buffer = b""
        due = time.perf_counter() + (interval or 0) * (self.index / self.stride)  # spread the senders
        try:
            n = 0
            while time.perf_counter() < until:
                if interval:
                    wait = due - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    due += interval
                head, rest = self.msgs[(n * self.stride + self.index) % len(self.msgs)]
                payload = head + f".{self.run}.{self.index}.{n}".encode() + rest
                n += 1
                t0 = time.perf_counter()
                writer.write(START + payload + END)
                while END not in buffer:
                    chunk = await reader.read(65536)
                    if not chunk:
                        raise ConnectionError("listener closed the connection")
                    buffer += chunk
                answer, _, buffer = buffer.partition(END)
                t1 = time.perf_counter()
                self.sent += 1
                if b"\rMSA|AA|" in answer:
                    if t0 >= record_after:
                        self.acked += 1
                        self.latencies.append(t1 - t0)
                else:
                    self.rejected += 1
        finally:
            writer.close()


async def phase(port: int, msgs: list, connections: int, seconds: float, rate: float | None,
                warmup: float, run: str, pids: dict[str, int]) -> dict:
    start = time.perf_counter()
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    senders = [Sender(i, connections, port, msgs, f"{run}{'r' if rate else 't'}") for i in range(connections)]
    interval = connections / rate if rate else None
    await asyncio.gather(*(s.go(start + warmup + seconds, interval, start + warmup) for s in senders))
    wall = time.perf_counter() - start
    cpu = {name: round((cpu_seconds(pid) - cpu0[name]) / wall, 2) for name, pid in pids.items()}
    lat = sorted(x for s in senders for x in s.latencies)
    acked = sum(s.acked for s in senders)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else float("nan")

    return {"connections": connections, "target_rate": rate, "seconds": seconds, "acked": acked,
            "rate": round(acked / seconds), "rejected": sum(s.rejected for s in senders),
            "sent_total": sum(s.sent for s in senders),
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0),
            "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else None,
            "cores_used": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each phase")
    parser.add_argument("--rate", type=float, default=1000.0, help="total msg/s of the latency phase")
    parser.add_argument("--linger-ms", type=float, default=0.0, help="the intake producer's linger.ms")
    parser.add_argument("--workers", type=int, default=1, help="gateway processes sharing the port")
    parser.add_argument("--profile", help="write a cProfile of the (first) gateway process here")
    args = parser.parse_args()

    from carelake.config import settings
    from carelake.stack import manager
    from carelake.stream.admin import create_topics
    from carelake.stream.selftest import count, drop
    from carelake.topics import load_catalog, scratch_prefix

    s = settings()
    parts = manager.up(s, ["kafka", "redis"])
    prefix = scratch_prefix()
    catalog = load_catalog(s.topic_catalog, prefix)
    create_topics(catalog, s.bootstrap, [catalog.get("bronze.raw.v1")])
    msgs, routes = templates()
    ctx = mp.get_context("spawn")
    ports, done = ctx.Queue(), ctx.Event()
    gateways = [ctx.Process(target=serve, args=(prefix, routes, args.linger_ms, 0, ports, done, args.profile),
                            name="gateway-0")]
    gateways[0].start()
    try:
        port = ports.get(timeout=60)
        for i in range(1, args.workers):
            gateways.append(ctx.Process(target=serve, args=(prefix, routes, args.linger_ms, port, ports, done),
                                        name=f"gateway-{i}"))
            gateways[-1].start()
            ports.get(timeout=60)
        run = prefix.rstrip(".")
        pids = {p.name: p.pid for p in parts if p.pid} | {g.name: g.pid for g in gateways} | {"senders": os.getpid()}
        throughput = asyncio.run(phase(port, msgs, args.connections, args.seconds, None, args.warmup, run, pids))
        print(json.dumps({"phase": "throughput", **throughput}), file=sys.stderr)
        latency = asyncio.run(phase(port, msgs, args.connections, args.seconds, args.rate, args.warmup, run,
                                    pids))
        print(json.dumps({"phase": "latency", **latency}), file=sys.stderr)
        on_topic = count(s.bootstrap, catalog.physical("bronze.raw.v1"))
        sent = throughput["sent_total"] + latency["sent_total"]
        if on_topic != sent - throughput["rejected"] - latency["rejected"]:
            raise SystemExit(f"topic holds {on_topic} envelopes, senders got {sent} AAs")
    finally:
        done.set()
        for gateway in gateways:
            gateway.join(60)
        drop(s.bootstrap, catalog)
    print(json.dumps({
        "bench": "mllp_intake", "connections": args.connections, "linger_ms": args.linger_ms,
        "workers": args.workers,
        "messages": len(msgs), "throughput_msg_s": throughput["rate"], "throughput_p99_ms": throughput["p99_ms"],
        "latency_target_rate": args.rate, "latency_achieved_rate": latency["rate"],
        "latency_p50_ms": latency["p50_ms"], "latency_p99_ms": latency["p99_ms"], "on_topic": on_topic,
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
