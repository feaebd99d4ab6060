"""Benchmark of compressed answers, ETags and trip-map paging (issue #19).

    .venv/bin/python -m bench.bench_compression                    # 1,000 vehicles x 7 days
    .venv/bin/python -m bench.bench_compression --vehicles 100 --days 2 --repeat 5   # quick

Data: bench/bench_dashboard.py's generator (same vehicles, trips, stops, alarms, live
positions) in a throwaway plain PostgreSQL cluster — the trips map reads the `v_trips`
matview, the same on both engines — with few GPS fixes per day (`--fixes`, default 24: no
endpoint measured here reads them), so setting up 1,000 vehicles takes about a minute.

The read-API runs as its own process (`uvicorn dashboard_api:app` on 127.0.0.1, settings
from the environment as in production), so client and server do not share a GIL. The client
(httpx) reads the bytes off the socket without decoding them; a latency is the time to the
last byte. In one run it prints, for the week of trips of every vehicle
(POST /webhook/fleet-dashboard): raw, gzip and br bytes on the wire with their share of the
raw JSON and p50 / p95 latency of each; the size and CPU time of other levels on the same
body (why GZIP_LEVEL / BROTLI_QUALITY); the live positions with and without If-None-Match
(304); and the whole week fetched page by page with the cursor.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import brotli
import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_dashboard import add_dataset_args, plain_dataset  # noqa: E402
from dashboard import compression  # noqa: E402
from tests.pgcluster import free_port  # noqa: E402

CODINGS = ("identity", "gzip", "br")
P50_P95 = f"{'p50 ms':>9} {'p95 ms':>9}"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return (
        f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min), {os.cpu_count()} CPUs"
    )


@contextmanager
def read_api(url: str) -> Iterator[str]:
    """`uvicorn dashboard_api:app` in its own process against `url`; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DASHBOARD_DATABASE_URL": url,
        "VTRIPS_REFRESH_INTERVAL_S": "0",
        "USE_TIMESCALEDB": "off",
        "DASHBOARD_API_KEYS": "",
        "LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "uvicorn", "dashboard_api:app", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    process = subprocess.Popen(cmd, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, base + "/health", "the read-API", timeout_s=60)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_until_up(process: subprocess.Popen[bytes], url: str, what: str, timeout_s: float) -> None:
    """Poll `url` until it answers 200; RuntimeError when `process` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.2)


def fetch(
    client: httpx.Client, method: str, path: str, coding: str, **kw: Any
) -> tuple[int, bytes]:
    """Status and the body as sent on the wire (not decoded)."""
    headers = {"Accept-Encoding": coding, **kw.pop("headers", {})}
    with client.stream(method, path, headers=headers, **kw) as response:
        raw = b"".join(response.iter_raw())
        encoding = response.headers.get("content-encoding", "identity")
    assert encoding == coding or response.status_code == 304 or len(raw) < 1024, encoding
    return response.status_code, raw


def timed[T](fn: Callable[[], T], repeat: int) -> tuple[float, float, T]:
    """p50 / p95 in ms over `repeat` calls after one warm-up, and the last result."""
    result = fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[round(0.95 * (len(samples) - 1))], result


def measure_week(client: httpx.Client, body: dict[str, str], repeat: int) -> bytes:
    print("\nweek of trips, every vehicle: POST /webhook/fleet-dashboard (time to last byte)")
    print(f"{'Accept-Encoding':<16} {'bytes on the wire':>18} {'of raw':>8} {P50_P95}")
    raw_size = 0
    identity = b""
    for coding in CODINGS:
        call = partial(fetch, client, "POST", "/webhook/fleet-dashboard", coding, data=body)
        p50, p95, (status, raw) = timed(call, repeat)
        assert status == 200
        if coding == "identity":
            raw_size, identity = len(raw), raw
        decoded = decode(raw, coding)
        assert len(decoded) == raw_size or abs(len(decoded) - raw_size) < 64  # generated_at
        share = 100 * len(raw) / raw_size
        print(f"{coding:<16} {len(raw):>18,} {share:>7.1f}% {p50:>9.1f} {p95:>9.1f}")
    return identity


def _gzip(body: bytes, level: int) -> bytes:
    return gzip.compress(body, level, mtime=0)


def _brotli(body: bytes, quality: int) -> bytes:
    return bytes(brotli.compress(body, mode=brotli.MODE_TEXT, quality=quality))


def decode_br(raw: bytes) -> bytes:
    return bytes(brotli.decompress(raw))


def decode(raw: bytes, coding: str) -> bytes:
    if coding == "br":
        return decode_br(raw)
    if coding == "gzip":
        return gzip.decompress(raw)
    return raw


def measure_levels(body: bytes) -> None:
    print(f"\nlevels on the same body ({len(body):,} bytes raw), one thread, best of 3:")
    print(f"{'coding':<12} {'bytes':>12} {'of raw':>8} {'compress ms':>12} {'decode ms':>10}")
    cases: list[tuple[str, Callable[[bytes], bytes], Callable[[bytes], bytes]]] = []
    for level in (1, 4, 5, 6, 9):
        cases.append((f"gzip -{level}", partial(_gzip, level=level), gzip.decompress))
    for quality in (1, 3, 4, 5, 6):
        cases.append((f"br q{quality}", partial(_brotli, quality=quality), decode_br))
    for name, pack, unpack in cases:
        times, packed = [], b""
        for _ in range(3):
            t0 = time.perf_counter()
            packed = pack(body)
            times.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        unpack(packed)
        decode_ms = (time.perf_counter() - t0) * 1000
        print(f"{name:<12} {len(packed):>12,} {100 * len(packed) / len(body):>7.1f}% "
              f"{min(times):>12.1f} {decode_ms:>10.1f}")  # fmt: skip
    c = compression
    print(
        f"(the read-API: gzip -{c.GZIP_LEVEL} / br q{c.BROTLI_QUALITY} up to {c.LARGE_BODY:,}"
        f" bytes, gzip -{c.GZIP_LEVEL_LARGE} / br q{c.BROTLI_QUALITY_LARGE} above)"
    )


def measure_live(client: httpx.Client, repeat: int) -> None:
    print("\nlive positions, every vehicle: GET /webhook/live-positions")
    print(f"{'request':<34} {'status':>6} {'bytes':>10} {P50_P95}")
    for coding in CODINGS:
        call = partial(fetch, client, "GET", "/webhook/live-positions", coding)
        p50, p95, (status, raw) = timed(call, repeat)
        label = "Accept-Encoding: " + coding
        print(f"{label:<34} {status:>6} {len(raw):>10,} {p50:>9.1f} {p95:>9.1f}")
    tag = client.get("/webhook/live-positions").headers["etag"]
    headers = {"If-None-Match": tag}
    call = partial(fetch, client, "GET", "/webhook/live-positions", "br", headers=headers)
    p50, p95, (status, raw) = timed(call, repeat)
    print(f"{'If-None-Match (unchanged)':<34} {status:>6} {len(raw):>10,} {p50:>9.1f} {p95:>9.1f}")


def measure_paging(client: httpx.Client, body: dict[str, str], page_size: int) -> None:
    """Every trip of the week page by page; checks each comes once and the summary agrees."""
    t0 = time.perf_counter()
    seen: set[int] = set()
    pages = wire = features = 0
    trips = None
    cursor: str | None = None
    while True:
        fields = {**body, "limit": str(page_size), **({"cursor": cursor} if cursor else {})}
        status, raw = fetch(client, "POST", "/webhook/fleet-dashboard", "br", data=fields)
        assert status == 200
        doc = json.loads(decode(raw, "br"))
        pages += 1
        wire += len(raw)
        features += len(doc["features"])
        seen.update(f["id"] for f in doc["features"])
        assert trips in (None, doc["summary"]["trips"])
        trips = doc["summary"]["trips"]
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    total = (time.perf_counter() - t0) * 1000
    assert features == len(seen) == trips, (features, len(seen), trips)
    print(f"pages of {page_size:>6,}: {pages:>3} pages, {features:,} trips (each once, = summary), "
          f"{wire:,} bytes br, {total:,.0f} ms in all")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    print("command:", shlex.join([Path(sys.executable).name, "-m", "bench.bench_compression",
                                  *sys.argv[1:]]))  # fmt: skip
    print(f"machine: {platform.node()} {platform.machine()}, {load()}")
    with plain_dataset("bench_compression", args) as url:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT (now() - interval '7 days')::text").fetchone()
            assert row is not None
            week = {"start": str(row[0]).replace(" ", "T")}
        with read_api(url) as base, httpx.Client(base_url=base, timeout=120) as client:
            print(f"before: {load()}")
            identity = measure_week(client, week, args.repeat)
            measure_levels(identity)
            measure_live(client, args.repeat * 3)
            print("\nthe whole week with the cursor (br), client decoding included:")
            for size in (5000, 20000):
                measure_paging(client, week, size)
            print(f"after: {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dataset_args(parser, days=7, fixes=24, repeat=10)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
