"""Benchmark of the live stream (issue #19): 500 SSE clients on ONE read-API worker, the time
from a fix committed in the database to every client having it, beside the polling baseline
(500 clients polling GET /webhook/live-positions every 15 s) and the write-path cost of the
change-log triggers (migration 0315) — all in one run, on this machine.

    .venv/bin/python -m bench.bench_sse                           # 500 clients, 1,000 vehicles
    .venv/bin/python -m bench.bench_sse --clients 100 --rounds 5  # quick

It starts a throwaway PostgreSQL (tests.pgcluster, fsync on), applies every migration, builds
the fleet with bench_dashboard's generator (live positions of `--vehicles`; one day of
history is enough here), runs the read-API as its own process (`uvicorn dashboard_api:app`,
one worker, reads as dashboard_ro), then:
1. triggers: the ingest worker's batch upsert (ingest.writers.upsert_live, every vehicle) and
   a one-row upsert (a push), p50 with the triggers enabled vs disabled;
2. SSE: `--clients` raw HTTP/1.1 clients open the stream (snapshot each), then `--rounds`
   single fixes and `--bursts` whole-fleet polls are committed; each client notes when it
   reads the event: latency = read time - time before the commit (p50 / p99 / max);
3. polling: the same number of clients each GET the JSON once during one 15 s period (what
   the SPAs do today): requests/s, bytes, latency, server CPU.
Bounded: about 1-2 minutes. Paste the output into docs/performance.md ("Live stream").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_dashboard import generate, log  # noqa: E402
from ingest.parse import LiveRow, PositionRow  # noqa: E402
from ingest.writers import upsert_live  # noqa: E402
from run_migrations import migrate  # noqa: E402
from tests.pgcluster import LocalCluster, free_port  # noqa: E402
from ts_shared import Settings  # noqa: E402

STREAM = "/webhook/live-positions/stream"
TRIGGERS = (
    "live_positions_changes_ins",
    "live_positions_changes_upd",
    "live_positions_changes_del",
)
_FEATURE_ID = re.compile(rb'"id" ?: ?"([^"]+)"')
ONE_ROW = """
INSERT INTO tracksolid.live_positions AS lp (imei, gps_time, lat, lng, speed_kmh, acc_on,
    online, source, updated_at)
VALUES (%s, now(), -1.28, 36.82, 35, true, true, 'push', now())
ON CONFLICT (imei) DO UPDATE SET gps_time = EXCLUDED.gps_time, lat = EXCLUDED.lat,
    lng = EXCLUDED.lng, speed_kmh = EXCLUDED.speed_kmh, online = true, updated_at = now()
WHERE lp.gps_time < EXCLUDED.gps_time
"""


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ── 1. The write path ──────────────────────────────────────────────────────────────────────


def trigger_cost(url: str, imeis: list[str], reps: int) -> list[tuple[str, float, float]]:
    """p50 ms of the batch upsert and of the one-row upsert, triggers on and off."""
    samples: dict[tuple[str, bool], list[float]] = {}
    with psycopg.connect(url, autocommit=True) as conn:

        def batch() -> None:
            at = datetime.now(UTC)  # real time, like the writes of the later phases
            rows = [
                LiveRow(
                    position=PositionRow(
                        imei=imei,
                        gps_time=at,
                        lat=-1.28 + i / 1e5,
                        lng=36.82,
                        speed_kmh=30.0,
                        direction_deg=90,
                        acc_on=True,
                        pos_type="GPS",
                        satellites=9,
                        gps_mode=0,
                        altitude_m=None,
                        mileage_km=None,
                        source="poll",
                    ),
                    online=True,
                    loc_desc=None,
                    hb_time=at,
                    battery_pct=None,
                    power_v=None,
                    gps_signal=None,
                    account="bench",
                )
                for i, imei in enumerate(imeis)
            ]
            with conn.transaction():
                upsert_live(conn, rows)

        def one_row() -> None:
            conn.execute(ONE_ROW, (random.choice(imeis),))

        calls: list[tuple[str, Callable[[], None], int]] = [
            (f"batch upsert_live, {len(imeis)} vehicles (ms)", batch, max(1, reps // 4)),
            ("one-row upsert, autocommit (ms)", one_row, max(1, reps * 10 // 4)),
        ]
        for block in range(8):  # alternate on/off in short blocks: drift hits both alike
            enabled = block % 2 == 0
            verb = "ENABLE" if enabled else "DISABLE"
            for name in TRIGGERS:
                conn.execute(f"ALTER TABLE tracksolid.live_positions {verb} TRIGGER {name}")
            for label, fn, n in calls:
                fn()  # warm-up
                for _ in range(n):
                    t0 = time.perf_counter()
                    fn()
                    samples.setdefault((label, enabled), []).append(
                        (time.perf_counter() - t0) * 1000
                    )
        for name in TRIGGERS:
            conn.execute(f"ALTER TABLE tracksolid.live_positions ENABLE TRIGGER {name}")
    return [
        (
            label,
            statistics.median(samples[(label, True)]),
            statistics.median(samples[(label, False)]),
        )
        for label, _fn, _n in calls
    ]


# ── 2. SSE clients ─────────────────────────────────────────────────────────────────────────


class SSEClient:
    """A raw HTTP/1.1 SSE client: notes when each vehicle's position event arrives."""

    def __init__(self) -> None:
        self.buf = b""
        self.snapshot = asyncio.Event()
        self.seen: dict[bytes, float] = {}
        self.positions = 0
        self.bytes = 0
        self.writer: asyncio.StreamWriter | None = None

    async def run(self, port: int) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", port, limit=2**22)
        request = f"GET {STREAM} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        self.writer.write(request.encode())
        await self.writer.drain()
        while data := await reader.read(262_144):
            now = time.perf_counter()
            self.bytes += len(data)
            self.buf += data
            *events, self.buf = self.buf.split(b"\n\n")
            for event in events:
                if b"event: position" in event:
                    self.positions += 1
                    match = _FEATURE_ID.search(event)
                    if match and match.group(1) not in self.seen:
                        self.seen[match.group(1)] = now
                elif b"event: snapshot" in event:
                    self.snapshot.set()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def all_saw(clients: list[SSEClient], key: bytes) -> bool:
    return all(key in c.seen for c in clients)


def all_saw_n(clients: list[SSEClient], n: int) -> bool:
    return all(len(c.seen) >= n for c in clients)


async def wait_all(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.002)
    return True


async def sse_phase(
    url: str, port: int, pid: int, imeis: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    clients = [SSEClient() for _ in range(args.clients)]
    tasks = [asyncio.create_task(c.run(port)) for c in clients]
    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(c.snapshot.wait() for c in clients)), 120)
    connect_s = time.perf_counter() - t0
    snapshot_bytes = sum(c.bytes for c in clients) // len(clients)
    log(f"{args.clients} clients connected with a snapshot in {connect_s:.1f} s")
    for c in clients:
        c.bytes = 0
    writer: psycopg.Connection[Any] = psycopg.connect(url, autocommit=True)
    singles: list[float] = []
    cpu0, wall0 = cpu_s(pid), time.perf_counter()
    missed = 0
    for r in range(args.rounds):
        imei = imeis[(r * 37) % len(imeis)]
        for c in clients:
            c.seen.clear()

        def commit_one(imei: str = imei) -> float:
            started = time.perf_counter()
            writer.execute(ONE_ROW, (imei,))
            return started

        started = await asyncio.to_thread(commit_one)
        key = imei.encode()
        if not await wait_all(partial(all_saw, clients, key), 10):
            missed += sum(1 for c in clients if key not in c.seen)
        singles.extend(c.seen[key] - started for c in clients if key in c.seen)
        await asyncio.sleep(args.gap)
    rounds_wall = time.perf_counter() - wall0
    rounds_cpu = cpu_s(pid) - cpu0
    rounds_bytes = sum(c.bytes for c in clients)
    bursts: list[float] = []
    for _ in range(args.bursts):
        for c in clients:
            c.seen.clear()

        def commit_all() -> float:
            started = time.perf_counter()
            writer.execute(
                "UPDATE tracksolid.live_positions SET gps_time = now(), lat = lat + 0.0001"
            )
            return started

        started = await asyncio.to_thread(commit_all)
        n = len(imeis)
        await wait_all(partial(all_saw_n, clients, n), 30)
        bursts.extend(max(c.seen.values()) - started for c in clients if len(c.seen) >= n)
        await asyncio.sleep(args.gap)
    rss = rss_mb(pid)
    writer.close()
    for c in clients:
        c.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "connect_s": connect_s,
        "snapshot_bytes": snapshot_bytes,
        "singles": singles,
        "missed": missed,
        "bursts": bursts,
        "rounds_cpu": rounds_cpu,
        "rounds_wall": rounds_wall,
        "rounds_bytes": rounds_bytes,
        "rss": rss,
    }


# ── 3. The polling baseline ────────────────────────────────────────────────────────────────


async def poll_phase(port: int, pid: int, clients: int, period: float) -> dict[str, Any]:
    """Each client GETs the JSON once at a random moment of one period (15 s polling)."""
    latencies: list[float] = []
    sizes: list[int] = []
    wire: list[int] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60
    ) as http:
        await http.get("/webhook/live-positions")  # warm-up

        async def one(offset: float) -> None:
            await asyncio.sleep(offset)
            t0 = time.perf_counter()
            answer = await http.get("/webhook/live-positions")
            latencies.append((time.perf_counter() - t0) * 1000)
            sizes.append(len(answer.content))
            wire.append(answer.num_bytes_downloaded)  # compressed when the API compresses

        rng = random.Random(19)
        cpu0, t0 = cpu_s(pid), time.perf_counter()
        await asyncio.gather(*(one(rng.uniform(0, period)) for _ in range(clients)))
        wall = time.perf_counter() - t0
        cpu = cpu_s(pid) - cpu0
    return {
        "latencies": latencies,
        "bytes": sum(sizes),
        "wire": sum(wire),
        "wall": wall,
        "cpu": cpu,
    }


# ── Driver ─────────────────────────────────────────────────────────────────────────────────


def start_api(url: str, port: int) -> subprocess.Popen[bytes]:
    ro_url = psycopg.conninfo.make_conninfo(url, options="-c role=dashboard_ro")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DASHBOARD_DATABASE_URL": ro_url,
        "DASHBOARD_API_KEYS": "",
        "VTRIPS_REFRESH_INTERVAL_S": "0",
        "LIVE_STREAM_MAX_CLIENTS": "2000",
        "LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "uvicorn", "dashboard_api:app", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", "--no-access-log",
           "--timeout-graceful-shutdown", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the read-API did not start")


def run(args: argparse.Namespace) -> None:
    cluster = LocalCluster(durable=True, timescaledb=False)
    cluster.init()
    cluster.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        with psycopg.connect(cluster.admin_url, autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench_sse")
        url = cluster.url("bench_sse")
        settings = Settings(
            _env_file=None, database_url=url, vtrips_refresh_interval_s=0, use_timescaledb="off"
        )
        migrate(url, settings)
        log(f"generating {args.vehicles} vehicles ...")
        generate(url, args.vehicles, 1, 24, 1)
        with psycopg.connect(url) as conn:
            imeis = [str(r[0]) for r in conn.execute("SELECT imei FROM tracksolid.live_positions")]
        port = free_port()
        # the triggers alone (nobody LISTENs), then with the read-API listening and fetching
        triggers = trigger_cost(url, imeis, args.trigger_reps)
        proc = start_api(url, port)
        log(f"read-API pid {proc.pid} on port {port} (one uvicorn worker)")
        triggers_listened = trigger_cost(url, imeis, args.trigger_reps)
        sse = asyncio.run(sse_phase(url, port, proc.pid, imeis, args))
        poll = asyncio.run(poll_phase(port, proc.pid, args.clients, args.period))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
        cluster.stop(remove=True)
    report(args, triggers, triggers_listened, sse, poll)


def report(
    args: argparse.Namespace,
    triggers: list[tuple[str, float, float]],
    listened: list[tuple[str, float, float]],
    sse: dict[str, Any],
    poll: dict[str, Any],
) -> None:
    print()
    print(f"Write path: p50 with the change-log triggers vs without ({args.trigger_reps} /"
          f" {args.trigger_reps * 10} calls each, in 4 blocks each, interleaved)")  # fmt: skip
    for title, rows in (("nobody listening", triggers), ("read-API listening", listened)):
        print(f"  {title}:")
        for label, on, off in rows:
            print(f"    {label:<42} {on:8.2f} vs {off:8.2f}  ({(on / off - 1) * 100:+.0f} %)")
    singles = [s * 1000 for s in sse["singles"]]
    bursts = [s * 1000 for s in sse["bursts"]]
    print()
    print(f"SSE: {args.clients} clients on one worker, {args.vehicles} vehicles")
    print(f"  connect + snapshot, all clients           {sse['connect_s']:8.1f} s"
          f"  ({sse['snapshot_bytes']:,} bytes each)")  # fmt: skip
    if singles:
        print(f"  one fix -> every client (ms)              p50 {pct(singles, 0.5):7.1f}"
              f"  p99 {pct(singles, 0.99):7.1f}  max {max(singles):7.1f}"
              f"  ({len(singles)} deliveries, {sse['missed']} missed)")  # fmt: skip
    if bursts:
        print(f"  whole-fleet poll -> every client (ms)     p50 {pct(bursts, 0.5):7.1f}"
              f"  p99 {pct(bursts, 0.99):7.1f}  max {max(bursts):7.1f}"
              f"  ({args.bursts} x {args.vehicles} vehicles)")  # fmt: skip
    per_delivery = sse["rounds_bytes"] / max(1, len(sse["singles"]))
    print(f"  server CPU during the {args.rounds} single fixes     "
          f"{sse['rounds_cpu'] / sse['rounds_wall'] * 100:6.1f} % of a core;"
          f" {per_delivery:,.0f} bytes per client per fix; RSS {sse['rss']:.0f} MB")  # fmt: skip
    lat = poll["latencies"]
    print()
    print(f"Baseline: {args.clients} clients polling GET /webhook/live-positions every"
          f" {args.period:.0f} s (one period)")  # fmt: skip
    print(f"  requests/s {len(lat) / args.period:8.1f}"
          f"   bytes/s on the wire {poll['wire'] / args.period:,.0f}"
          f"   per answer {poll['bytes'] / max(1, len(lat)):,.0f} bytes"
          f" ({poll['wire'] / max(1, len(lat)):,.0f} on the wire)")  # fmt: skip
    print(f"  latency per request (ms)                  p50 {pct(lat, 0.5):7.1f}"
          f"  p99 {pct(lat, 0.99):7.1f}  max {max(lat):7.1f}")  # fmt: skip
    print(f"  server CPU                                {poll['cpu'] / poll['wall'] * 100:6.1f} %"
          f" of a core; a fix waits {args.period / 2:.1f} s on average before a client"
          " asks")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20, help="single fixes, one at a time")
    parser.add_argument("--bursts", type=int, default=3, help="whole-fleet updates")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between rounds")
    parser.add_argument("--period", type=float, default=15.0, help="polling period (s)")
    parser.add_argument("--trigger-reps", type=int, default=20, help="batch upserts per state")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
