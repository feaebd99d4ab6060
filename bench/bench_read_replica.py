"""Headroom of one read-API worker, on the primary and on a streaming hot standby (issue #19).

    .venv/bin/python bench/bench_read_replica.py                    # 1,000 vehicles, 15 s runs
    .venv/bin/python bench/bench_read_replica.py --duration 5       # quick

Starts a throwaway primary (TimescaleDB preloaded when installed), applies every migration,
generates the fleet of bench/bench_dashboard.py (1,000 vehicles, one day of positions, live
positions and trips), makes a hot standby of it with `pg_basebackup -R` (tests/pgcluster.py),
then for each of primary and replica runs the production entry point
`uvicorn dashboard_api:app --workers 1` reading that database as `dashboard_ro`, and drives
it with `wrk` (`apt-get install wrk`; 2 threads, 16 connections, keep-alive, loopback only):
GET /webhook/live-positions (every vehicle, what every SPA polls) and GET /health (the
framework + one trivial query: the ceiling). Prints requests/s, p50/p99 and the answer size
beside each other from the same run, plus `uptime`. Each run is bounded by `--duration`.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_dashboard import generate, log  # noqa: E402
from run_migrations import migrate  # noqa: E402
from tests.pgcluster import LocalCluster, free_port, timescaledb_installed  # noqa: E402
from ts_shared import Settings  # noqa: E402

PATHS = (("live positions (all)", "/webhook/live-positions"), ("/health (ceiling)", "/health"))


def read_only(url: str) -> str:
    """`url` as the read-API's role dashboard_ro."""
    return psycopg.conninfo.make_conninfo(url, options="-c role=dashboard_ro")


def wait_replayed(primary: LocalCluster, replica: LocalCluster, timeout: float = 120.0) -> None:
    """Until the standby has replayed everything the primary has written so far."""
    with psycopg.connect(primary.admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    deadline = time.monotonic() + timeout
    with psycopg.connect(replica.admin_url, autocommit=True) as conn:
        while True:
            done = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s::pg_lsn) >= 0", (row[0],)
            ).fetchone()
            if done and done[0]:
                return
            if time.monotonic() > deadline:
                sys.exit("the standby did not catch up")
            time.sleep(0.1)


def run_wrk(url: str, duration: int, connections: int) -> dict[str, float]:
    """One wrk run: requests/s, p50/p99 ms, non-2xx and socket errors."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rps, out

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(rps.group(1)),
        "p50": pct("50"),
        "p99": pct("99"),
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "errors": 1.0 if errors else 0.0,
    }


def serve(primary_url: str, read_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The production entry point, one worker, reading `read_url`; waits for /health."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": primary_url,
        "DASHBOARD_DATABASE_URL": read_only(read_url),
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DASHBOARD_API_KEYS", None)
    server = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "dashboard_api:app", "--app-dir", str(ROOT),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-access-log",
            "--log-level", "warning",
        ],
        cwd=workdir,  # no .env here: the environment above is the whole configuration
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.terminate()
            sys.exit("the read-API did not start")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run (≤ 60)")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    duration = max(1, min(args.duration, 60))
    ts = timescaledb_installed()
    primary = LocalCluster(timescaledb=ts)
    replica = LocalCluster(timescaledb=ts)
    workdir = Path(tempfile.mkdtemp(prefix="bench-replica-"))
    results: list[tuple[str, str, dict[str, float], int, dict[str, object]]] = []
    try:
        primary.init()
        primary.start()
        with psycopg.connect(primary.admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = primary.url("bench")
        migrate(
            url, Settings(_env_file=None, database_url=url, use_timescaledb="on" if ts else "off")
        )
        log(f"generating {args.vehicles} vehicles x 1 day ...")
        counts = generate(url, args.vehicles, 1, 96, 7)
        log(f"generated: {counts}")
        replica.init_replica_of(primary)
        replica.start()
        wait_replayed(primary, replica)
        log("standby caught up")
        for role, cluster in (("primary", primary), ("replica", replica)):
            server, base = serve(url, cluster.url("bench"), workdir)
            try:
                health = httpx.get(f"{base}/health", timeout=10).json()
                for name, path in PATHS:
                    size = len(httpx.get(base + path, timeout=30).content)
                    run_wrk(base + path, 3, args.connections)  # warm-up: pool, caches
                    res = run_wrk(base + path, duration, args.connections)
                    results.append((role, name, res, size, health))
                    log(f"{role} {name}: {res['rps']:.0f} req/s, p50 {res['p50']:.1f} ms")
            finally:
                server.terminate()
                server.wait(15)
    finally:
        replica.stop(remove=True)
        primary.stop(remove=True)
    print()
    print(f"uvicorn dashboard_api:app --workers 1; wrk -t2 -c{args.connections} -d{duration}s")
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    print(f"load at the end: {uptime.strip()}")
    header = f"{'database':<9}{'call':<24}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'bytes':>10}"
    print(header + "  non-2xx")
    print("-" * (len(header) + 9))
    for role, name, r, size, _ in results:
        print(
            f"{role:<9}{name:<24}{r['rps']:>8.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}{size:>10,}"
            f"  {r['non2xx']:.0f}{' socket errors' if r['errors'] else ''}"
        )
    for role, *_rest, health in results[:: len(PATHS)]:
        keys = ("database_role", "refresher", "replica_lag_s", "replica_lag_bytes")
        print(f"{role} /health: " + ", ".join(f"{k}={health.get(k)}" for k in keys))


if __name__ == "__main__":
    main()
