"""Webhook receiver benchmark: /pushgps deliveries against one uvicorn worker, with a ceiling.

    .venv/bin/python bench/bench_webhook.py                    # full size (docs/performance.md)
    .venv/bin/python bench/bench_webhook.py --duration 5       # quick
    .venv/bin/python bench/bench_webhook.py --replay-only      # only the spool replay part

Starts a throwaway durable cluster (fsync on, synchronous_commit on, as in production),
applies every migration, runs `uvicorn bench_webhook:bench_app --workers 1` (the real
receiver plus a `POST /bench/noop` route that reads the body and replies, doing no work) and
drives it with `wrk` (`apt-get install wrk`): 32 connections, every request a new delivery of
N GPS items (unique IMEI/time, spread over 5,000 devices per wrk thread, so live_positions
sees realistic, not artificial, row contention). For N = 10 and N = 50 it measures the no-op
endpoint (the ceiling) and /pushgps in the same run, then checks that the database holds
exactly one row per acknowledged item.

Then the spool replay (`--replay N`, default 5,000; 0 skips it), beside direct writes by the
same senders: 8 client threads post N deliveries of 10 GPS items with the database up
(direct), then crash PostgreSQL (`pg_ctl -m immediate`) and post N more (all spooled), start
it again and poll /health every 20 ms: replayed deliveries/s (N / time until the spool is
empty, reconnect included) and the time until spool mode ends, both counted from the moment
the server accepts connections again.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from datetime import timedelta  # noqa: E402

from run_migrations import migrate  # noqa: E402
from tests import push_factories as f  # noqa: E402
from tests.pgcluster import LocalCluster, free_port, timescaledb_installed  # noqa: E402
from ts_shared import Settings  # noqa: E402

TOKEN = "bench-token"

# wrk script: every request is a fresh delivery of ITEMS fixes. `id` is set per wrk thread.
LUA = r"""
local items = tonumber(os.getenv("BENCH_ITEMS") or "10")
local token = os.getenv("BENCH_TOKEN") or ""
local counter = 0
local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
  table.insert(threads, thread)
end

local function urlencode(s)
  return (s:gsub("[^%w%-_%.~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

-- 2026-03-02 08:00:00 UTC, plus ~11 days per run so no run repeats another's (imei, time)
local t0 = 1772438400 + tonumber(os.getenv("BENCH_RUN") or "0") * 1000000
local hdrs = {["Content-Type"] = "application/x-www-form-urlencoded"}

function request()
  local parts = {}
  for k = 1, items do
    local g = counter * items + k
    local dev = g % 5000
    local ts = t0 + math.floor(g / 5000) * 10
    parts[k] = string.format(
      '{"deviceImei":"86%02d%011d","gpsTime":"%s","gateTime":"%s","satelliteNum":"11",' ..
      '"lng":"%.6f","lat":"%.6f","gpsMode":"0","gpsSpeed":"42","direction":"187","acc":"1",' ..
      '"postType":"1","altitude":"1661","status":"1","distance":"118"}',
      id, dev, os.date("!%Y-%m-%d %H:%M:%S", ts), os.date("!%Y-%m-%d %H:%M:%S", ts + 2),
      36.8 + (dev % 100) * 0.001, -1.29 - (dev % 77) * 0.001)
  end
  counter = counter + 1
  local data = urlencode("[" .. table.concat(parts, ",") .. "]")
  local body = "token=" .. token .. "&data_list=" .. data
  return wrk.format("POST", nil, hdrs, body)
end
"""


def bench_app() -> object:
    """uvicorn --factory target: the receiver with the no-op route mounted."""
    from webhook_receiver import create_app  # noqa: PLC0415

    return create_app(noop_route=True)


_RUNS = iter(range(1000))


def run_wrk(url: str, items: int, duration: int, script: Path) -> dict[str, float]:
    """One wrk run; returns requests/s, p50/p99 ms and non-2xx/error counts."""
    env = {
        **os.environ,
        "BENCH_ITEMS": str(items),
        "BENCH_TOKEN": TOKEN,
        "BENCH_RUN": str(next(_RUNS)),
    }
    cmd = ["wrk", "-t2", "-c32", f"-d{duration}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {
        "rps": rps,
        "requests": total,
        "p50": pct("50"),
        "p99": pct("99"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": 1 if errors else 0,
    }


REPLAY_SENDERS = 8


def post_deliveries(base: str, first: int, count: int) -> float:
    """POST `count` /pushgps deliveries of 10 new items from REPLAY_SENDERS threads; every
    one must be acknowledged. Returns the wall time in seconds."""

    def send(worker: int) -> None:
        imei = f"87{worker:013d}"
        with httpx.Client(base_url=base, timeout=30) as http:
            for n in range(first + worker, first + count, REPLAY_SENDERS):
                at = f.T0 - timedelta(days=200) + timedelta(seconds=n * 10)  # not wrk's times
                items = [f.gps(imei, at + timedelta(seconds=k)) for k in range(10)]
                resp = http.post("/pushgps", data=f.iothub_form(items, TOKEN))
                assert resp.status_code == 200, resp.text

    started = time.monotonic()
    with ThreadPoolExecutor(REPLAY_SENDERS) as threads:
        list(threads.map(send, range(REPLAY_SENDERS)))
    return time.monotonic() - started


def measure_replay(cluster: LocalCluster, base: str, n: int) -> dict[str, float]:
    """Direct writes, then the same number spooled during a crash and replayed."""
    direct_s = post_deliveries(base, 0, n)
    cluster.stop(mode="immediate")
    spool_s = post_deliveries(base, n, n)
    depth = httpx.get(f"{base}/health", timeout=10).json()["spool_depth"]
    assert depth == n, f"spool holds {depth}, expected {n}"
    cluster.start()
    back = time.monotonic()
    first = drained = ended = 0.0
    left = n
    while time.monotonic() - back < 600:
        health = httpx.get(f"{base}/health", timeout=10).json()
        now = time.monotonic() - back
        if not first and health["spool_depth"] < n:
            first = now  # the replayer has reconnected and committed its first batch
            left = health["spool_depth"]
        if not drained and health["spool_depth"] == 0:
            drained = now
        if not health["spooling"]:
            ended = now
            break
        time.sleep(0.02)
    return {
        "n": n,
        "direct": n / direct_s,
        "spooled": n / spool_s,
        "replayed": n / drained if drained else 0.0,
        "first_s": first,
        "steady": left / (drained - first) if drained > first else 0.0,
        "drained_s": drained,
        "ended_s": ended,
        "sync": health.get("synchronous_commit"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=20, help="seconds per measurement")
    parser.add_argument(
        "--engine",
        choices=("timescaledb", "plain"),
        default="timescaledb" if timescaledb_installed() else "plain",
        help="position_history as a hypertable (production) or a plain table",
    )
    parser.add_argument(
        "--replay", type=int, default=5000, help="deliveries spooled and replayed (0: skip)"
    )
    parser.add_argument("--replay-only", action="store_true", help="skip the wrk measurements")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    script = work / "push.lua"
    script.write_text(LUA)
    with LocalCluster(durable=True, timescaledb=args.engine == "timescaledb") as cluster:
        with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = cluster.url("bench")
        use = "on" if args.engine == "timescaledb" else "off"
        migrate(url, Settings(_env_file=None, database_url=url, use_timescaledb=use))
        print(f"engine: {args.engine}")
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "WEBHOOK_SPOOL_DIR": str(work / "spool"),
            "JIMI_PUSH_TOKEN": TOKEN,
            "LOG_LEVEL": "WARNING",
            "DB_POOL_MAX_SIZE": "10",
        }
        server = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "--factory", "bench_webhook:bench_app",
                "--app-dir", str(ROOT / "bench"), "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--no-access-log", "--log-level", "warning",
            ],
            cwd=ROOT,
            env=env,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=2).json()["database"] == "up":
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit("receiver did not start")
                time.sleep(0.2)
            print(f"uvicorn --workers 1 on :{port}; wrk -t2 -c32 -d{args.duration}s; durable PG")
            results: list[tuple[str, int, dict[str, float]]] = []
            if not args.replay_only:
                run_wrk(f"{base}/pushgps", 10, 3, script)  # warm-up (prepared statements, pool)
                for items in (10, 50):
                    for label, path in (
                        ("no-op ceiling", "/bench/noop"),
                        ("/pushgps", "/pushgps"),
                    ):
                        res = run_wrk(base + path, items, args.duration, script)
                        results.append((label, items, res))
            replay = measure_replay(cluster, base, args.replay) if args.replay > 0 else None
            with psycopg.connect(url) as conn:
                inbox = conn.execute(  # one statement: one snapshot
                    "SELECT count(*), coalesce(sum(item_count), 0), coalesce(sum(items_failed), 0),"
                    " (SELECT count(*) FROM tracksolid.position_history)"
                    " FROM tracksolid.push_inbox"
                ).fetchone()
                reasons = conn.execute(
                    "SELECT e->>'reason', count(*) FROM tracksolid.push_inbox,"
                    " jsonb_array_elements(errors) e GROUP BY 1 ORDER BY 2 DESC LIMIT 3"
                ).fetchall()
            health = httpx.get(f"{base}/health").json()
        finally:
            server.terminate()
            server.wait(15)
    shutil.rmtree(work, ignore_errors=True)

    header = (
        f"{'endpoint':<15}{'items':>6}{'deliveries/s':>14}{'positions/s':>13}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}"
    )
    if results:
        print(header)
        print("-" * len(header))
    for label, items, r in results:
        print(
            f"{label:<15}{items:>6}{r['rps']:>14,.0f}{r['rps'] * items:>13,.0f}"
            f"{r['p50']:>9.1f}{r['p99']:>9.1f}{r['non2xx']:>9}"
        )
    assert inbox is not None
    print(
        f"\ndatabase: {inbox[3]:,} positions, {inbox[0]:,} inbox deliveries holding "
        f"{inbox[1]:,} items, {inbox[2]:,} failed (warm-up included); receiver health at the"
        f" end: {health}"
    )
    for reason, n in reasons:
        print(f"  item error: {reason} x{n}")
    if replay is not None:
        print(
            f"\nspool replay, {replay['n']:,.0f} deliveries of 10 items, {REPLAY_SENDERS}"
            f" sender threads (synchronous_commit {replay['sync']}):\n"
            f"  direct writes (database up)      {replay['direct']:>8,.0f} deliveries/s\n"
            f"  spooled (database crashed)       {replay['spooled']:>8,.0f} deliveries/s\n"
            f"  replayed after restart           {replay['replayed']:>8,.0f} deliveries/s"
            f"  (spool empty {replay['drained_s']:.2f} s after the restart; first batch"
            f" committed by {replay['first_s']:.2f} s)\n"
            f"  replayed, reconnect excluded     {replay['steady']:>8,.0f} deliveries/s\n"
            f"  spool mode ended                 {replay['ended_s']:>8.2f} s after the restart"
        )
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
