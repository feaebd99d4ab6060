"""Growth table of the read-API: 100 / 1,000 / 10,000 vehicles (issue #19).

    .venv/bin/python -m bench.bench_growth                          # 100, 1,000, 10,000 vehicles
    .venv/bin/python -m bench.bench_growth --sizes 100,1000 --repeat 5   # quick

For each size, a fresh database in one throwaway cluster (TimescaleDB preloaded, every
migration, chunks older than TIMESCALE_COMPRESS_AFTER compressed as in production) gets
bench/bench_dashboard.py's generator with only what the measured calls read: every vehicle's
live position, ONE day of GPS fixes (500 per vehicle; the 24 h track and the track tiles read
no more) and 8 days of trips (7 per vehicle and day; the trips map reads `reporting.v_trips`,
refreshed after generation; each trip's ends `--trip-spread` degrees around its depot, so a
tile does not merge a cost centre's trips into one line), plus their stops and alarms. The
generation time is printed.

The read-API then runs as its own process (`uvicorn dashboard_api:app` on 127.0.0.1, as in
bench/bench_compression.py) and is called with `Accept-Encoding: br`; a latency is the time
to the last byte, `--repeat` calls after one warm-up. Calls: live positions (all), the 24 h
track of one vehicle, the trips map for one day and for one week (all vehicles); when an
answer is capped (50,000 trips) the whole window is also fetched page by page with the cursor
(pages, bytes, and the summed time of the pages). Vector tiles (`/tiles/{layer}/{z}/{x}/{y}.mvt`:
live, trips of the week, the vehicle's 24 h track) at z 6 over Kenya and z 12 over central
Nairobi, when the read-API has them. One table at the end: the machine, and per size its
contents, generation time and load average at the start and end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_compression import decode, load, read_api  # noqa: E402
from bench.bench_dashboard import compress_old_chunks, generate, log  # noqa: E402
from run_migrations import migrate  # noqa: E402
from tests.pgcluster import LocalCluster, timescaledb_installed  # noqa: E402
from ts_shared import Settings  # noqa: E402

TRIP_DAYS = 7  # the week of trips; generate() adds the current day
POSITION_DAYS = 1  # the 24 h track reads no older fix
TRIP_CAP = 50_000  # the trips map's limit (docs/api.md "Limits")
TILES_MODULE = ROOT / "dashboard" / "tiles.py"
# z 6 tile of Nairobi (33.75-39.375 E, 0-5.6 S: Nairobi, Nakuru, Kisumu — 6 of the 10 cost
# centres; Mombasa and Kampala fall in the neighbouring tiles) and z 12 over central Nairobi.
TILE_PLACES = (("z6 Kenya", 6, -1.2864, 36.8172), ("z12 Nairobi", 12, -1.2864, 36.8172))
TRACK_COST_CENTRE = "Nairobi-North"  # the tracked vehicle is drawn in both tiles


class BenchError(RuntimeError):
    """A call answered something other than 200 (the table would be meaningless)."""


@dataclass
class Row:
    """One measured call at one size."""

    call: str
    vehicles: int
    p50: float
    p95: float
    raw: int
    wire: int
    note: str = ""


@dataclass
class SizeRun:
    """What one size contained and the load around its measurement."""

    vehicles: int
    database: str = ""
    contents: str = ""
    generate_s: float = 0.0
    load_start: str = ""
    load_end: str = ""
    rows: list[Row] = field(default_factory=list)


def tile_of(lat: float, lng: float, zoom: int) -> tuple[int, int, int]:
    """The Web-Mercator (XYZ, y from the north) tile holding a point."""
    n = 2**zoom
    x = int((lng + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return zoom, x, y


def load_short() -> str:
    """1/5/15-min load average, as `uptime` prints it."""
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def machine() -> str:
    """CPU, cores and RAM, for the table's header."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or platform.machine(),
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return f"{cpu}, nproc {len(os.sched_getaffinity(0))}, {mem_kb / 1024**2:.1f} GiB RAM"


def database_versions(url: str) -> str:
    """PostgreSQL and the extensions' versions as installed in a migrated database."""
    with psycopg.connect(url) as conn:
        versions: dict[str, str] = dict(
            conn.execute(
                "SELECT 'PostgreSQL', current_setting('server_version') UNION ALL"
                " SELECT CASE extname WHEN 'timescaledb' THEN 'TimescaleDB' ELSE 'PostGIS' END,"
                " extversion FROM pg_extension WHERE extname IN ('timescaledb', 'postgis')"
            ).fetchall()
        )
    names = ("PostgreSQL", "TimescaleDB", "PostGIS")
    return ", ".join(f"{k} {versions[k]}" for k in names if k in versions)


def fetch_any(client: httpx.Client, method: str, path: str, **kw: Any) -> tuple[int, bytes, str]:
    """Status, the body as sent on the wire (not decoded) and its Content-Encoding; asks for br
    (the server may leave small bodies uncompressed)."""
    with client.stream(method, path, headers={"Accept-Encoding": "br"}, **kw) as response:
        wire = b"".join(response.iter_raw())
        return response.status_code, wire, response.headers.get("content-encoding", "identity")


def sample[T](fn: Callable[[], T], repeat: int, budget_s: float) -> tuple[float, float, int, T]:
    """p50 / p95 in ms after one warm-up, the number of timed calls and the last result.
    `repeat` calls, fewer (at least 3) when they would take more than `budget_s` — the slow
    calls at 10,000 vehicles would otherwise take the run past its time budget."""
    t0 = time.perf_counter()
    result = fn()
    warm_ms = (time.perf_counter() - t0) * 1000
    n = max(3, min(repeat, int(budget_s * 1000 / max(warm_ms, 1.0))))
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[round(0.95 * (n - 1))], n, result


def measure(
    client: httpx.Client,
    call: str,
    vehicles: int,
    args: argparse.Namespace,
    method: str,
    path: str,
    **kw: Any,
) -> tuple[Row, bytes]:
    """p50/p95 of one call and the decoded body of the last one (empty for a 204 tile)."""
    fn = partial(fetch_any, client, method, path, **kw)
    p50, p95, n, (status, wire, coding) = sample(fn, args.repeat, args.budget)
    body = decode(wire, coding)
    if status not in (200, 204):
        raise BenchError(f"{call}: HTTP {status}: {body[:300]!r}")
    note = ("204 empty tile; " if status == 204 else "") + (f"n={n}; " if n < args.repeat else "")
    row = Row(call, vehicles, p50, p95, len(body), len(wire), note)
    log(f"{vehicles:,} vehicles, {call}: p50 {p50:.1f} ms, p95 {p95:.1f} ms (n={n}), "
        f"{len(body):,} bytes raw, {len(wire):,} on the wire")  # fmt: skip
    return row, body


def fetch_pages(client: httpx.Client, fields: dict[str, str]) -> tuple[float, int, int, int, int]:
    """Every trip of the window with the cursor: (summed time to last byte of the pages in ms,
    pages, raw bytes, wire bytes, trips). Checks each trip came once and the summary agrees."""
    spent = 0.0
    pages = raw_total = wire_total = 0
    seen: set[int] = set()
    trips: int | None = None
    cursor: str | None = None
    while True:
        body = {**fields, "limit": str(TRIP_CAP), **({"cursor": cursor} if cursor else {})}
        t0 = time.perf_counter()
        status, wire, coding = fetch_any(client, "POST", "/webhook/fleet-dashboard", data=body)
        spent += (time.perf_counter() - t0) * 1000
        raw = decode(wire, coding)
        if status != 200:
            raise BenchError(f"trips page {pages + 1}: HTTP {status}: {raw[:300]!r}")
        doc = json.loads(raw)
        pages, raw_total, wire_total = pages + 1, raw_total + len(raw), wire_total + len(wire)
        seen.update(f["id"] for f in doc["features"])
        if trips not in (None, doc["summary"]["trips"]):
            raise BenchError("the summary changed between pages")
        trips = doc["summary"]["trips"]
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    if len(seen) != trips:
        raise BenchError(f"paging returned {len(seen)} distinct trips, the summary says {trips}")
    return spent, pages, raw_total, wire_total, len(seen)


def trips_rows(
    client: httpx.Client,
    label: str,
    vehicles: int,
    fields: dict[str, str],
    args: argparse.Namespace,
) -> list[Row]:
    """The trips map for one window; if capped, also the whole window page by page."""
    call = f"trips {label} (all)"
    row, body = measure(client, call, vehicles, args, "POST", "/webhook/fleet-dashboard",
                        data=fields)  # fmt: skip
    summary = json.loads(body)["summary"]
    if not summary["capped"]:
        row.note += f"{summary['returned']:,} trips"
        return [row]
    row.note += f"CAPPED: {summary['returned']:,} of {summary['trips']:,} trips"
    totals = []
    pages = raw = wire = got = 0
    for _ in range(max(1, args.page_repeat)):
        spent, pages, raw, wire, got = fetch_pages(client, fields)
        totals.append(spent)
        log(f"{vehicles:,} vehicles, {call} by cursor: {pages} pages, {spent:,.0f} ms")
    totals.sort()
    p50 = statistics.median(totals)
    p95 = totals[round(0.95 * (len(totals) - 1))]
    note = f"{pages} pages of <= {TRIP_CAP:,}, {got:,} trips; ms = sum of pages, n={len(totals)}"
    return [row, Row(f"trips {label} (all), every page", vehicles, p50, p95, raw, wire, note)]


def tile_rows(
    client: httpx.Client, vehicles: int, args: argparse.Namespace, week: dict[str, str], imei: str
) -> tuple[list[Row], str]:
    """Tiles of the three layers at both places; ([], reason) when the read-API has none."""
    if not TILES_MODULE.exists():
        return [], "tiles endpoint not present (dashboard/tiles.py missing)"
    layers: list[tuple[str, str, dict[str, str]]] = [
        ("live", "live", {}),
        ("trips-week", "trips", week),
        ("track 24 h", "track", {"imei": imei, "hours": "24"}),
    ]
    rows: list[Row] = []
    for place, zoom, lat, lng in TILE_PLACES:
        z, x, y = tile_of(lat, lng, zoom)
        for name, layer, params in layers:
            path = f"/tiles/{layer}/{z}/{x}/{y}.mvt"
            probe = client.get(path, params=params)
            if probe.status_code == 404 and not rows:
                return [], f"tiles endpoint not present (GET {path}: 404)"
            row, _ = measure(client, f"tile {name} {place} {z}/{x}/{y}", vehicles, args, "GET",
                             path, params=params)  # fmt: skip
            rows.append(row)
    return rows, ""


def contents(url: str) -> tuple[str, str]:
    """A line saying what the database holds, and one Nairobi-North IMEI to track."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM tracksolid.devices),"
            " (SELECT count(*) FROM tracksolid.live_positions),"
            " (SELECT count(*) FROM tracksolid.position_history),"
            " (SELECT count(*) FROM tracksolid.trips),"
            " (SELECT count(*) FROM reporting.v_trips"
            "  WHERE start_time >= now() - interval '7 days'),"
            " (SELECT count(*) FROM tracksolid.parking_events),"
            " (SELECT count(*) FROM tracksolid.alarms)"
        ).fetchone()
        imeis = [
            str(r[0])
            for r in conn.execute(
                "SELECT imei FROM tracksolid.devices WHERE cost_centre = %s ORDER BY imei",
                (TRACK_COST_CENTRE,),
            )
        ]
    assert row is not None
    devices, live, fixes, trips, week, stops, alarms = (int(v) for v in row)
    line = (f"{devices:,} vehicles, {live:,} live positions, {fixes:,} fixes ({POSITION_DAYS} day),"
            f" {trips:,} trips ({TRIP_DAYS + 1} days; {week:,} in the week), {stops:,} stops,"
            f" {alarms:,} alarms")  # fmt: skip
    return line, random.Random(7).choice(imeis)


def windows(url: str) -> tuple[dict[str, str], dict[str, str]]:
    """Form fields of the trips map: yesterday (a whole EAT day) and the last 7 days."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT ((now() AT TIME ZONE 'Africa/Nairobi')::date - 1)::text,"
            " replace((now() - interval '7 days')::text, ' ', 'T')"
        ).fetchone()
    assert row is not None
    return {"start": row[0], "end": row[0]}, {"start": row[1]}


def run_size(
    cluster: LocalCluster, engine: str, vehicles: int, args: argparse.Namespace
) -> tuple[SizeRun, str]:
    """Generate one size in its own database, measure it, drop the database."""
    result = SizeRun(vehicles)
    db = f"growth_{vehicles}"
    with psycopg.connect(cluster.admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.execute(f"CREATE DATABASE {db}")
    url = cluster.url(db)
    tiles_skipped = ""
    try:
        settings = Settings(_env_file=None, database_url=url, vtrips_refresh_interval_s=0,
                            use_timescaledb="on" if engine == "timescaledb" else "off")  # fmt: skip
        migrate(url, settings)
        result.database = database_versions(url)
        log(f"generating {vehicles:,} vehicles ...")
        t0 = time.perf_counter()
        generate(url, vehicles, TRIP_DAYS, args.fixes, args.trips, position_days=POSITION_DAYS,
                 trip_spread=args.trip_spread)  # fmt: skip
        if engine == "timescaledb":
            log(compress_old_chunks(url, settings.timescale_compress_after))
        result.generate_s = time.perf_counter() - t0
        result.contents, imei = contents(url)
        log(f"generated in {result.generate_s:.0f} s: {result.contents}")
        day, week = windows(url)
        with read_api(url) as base, httpx.Client(base_url=base, timeout=600) as client:
            result.load_start = load_short()
            rows = result.rows
            rows.append(measure(client, "live positions (all)", vehicles, args, "GET",
                                "/webhook/live-positions")[0])  # fmt: skip
            track = {"vehicle_number": imei, "hours": "24"}
            rows.append(measure(client, "track 24 h (one vehicle)", vehicles, args, "GET",
                                "/webhook/live-positions/track", params=track)[0])  # fmt: skip
            rows.extend(trips_rows(client, "day", vehicles, day, args))
            rows.extend(trips_rows(client, "week", vehicles, week, args))
            try:  # tiles are work in progress beside this bench: keep the JSON figures
                tiles, tiles_skipped = tile_rows(client, vehicles, args, week, imei)
            except (BenchError, httpx.HTTPError) as exc:
                tiles, tiles_skipped = [], f"tiles failed at {vehicles:,} vehicles: {exc}"
            rows.extend(tiles)
            result.load_end = load_short()
    finally:
        with psycopg.connect(cluster.admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    return result, tiles_skipped


def ratio(now: float, before: float | None) -> str:
    return f"{now / before:.1f}x" if before else ""


def print_table(header: list[str], runs: list[SizeRun], tiles_skipped: str) -> None:
    """The growth table: per call, one line per size, with the growth over the previous size."""
    print()
    for line in header:
        print(line)
    print(f"\n{'vehicles':>8}  {'generated':>9}  {'load 1/5/15 start':>18}  {'end':>16}  contents")
    for r in runs:
        print(f"{r.vehicles:>8,}  {r.generate_s:>7.0f} s  {r.load_start:>18}  {r.load_end:>16}"
              f"  {r.contents}")  # fmt: skip
    print(f"\n{'call':<44} {'vehicles':>8} {'p50 ms':>9} {'p95 ms':>9} {'raw bytes':>13}"
          f" {'br bytes':>11} {'x p50':>6} {'x raw':>6}  note")  # fmt: skip
    # The size with the most rows first: its order puts "every page" under its capped call.
    fullest = sorted(runs, key=lambda r: -len(r.rows))
    calls = list(dict.fromkeys(row.call for r in fullest for row in r.rows))
    for call in calls:
        previous: Row | None = None
        for r in runs:
            row = next((x for x in r.rows if x.call == call), None)
            if row is None:
                print(f"{call:<44} {r.vehicles:>8,} {'(not capped: one answer)':>33}")
                previous = None
                continue
            x_p50 = ratio(row.p50, previous.p50 if previous else None)
            x_raw = ratio(row.raw, previous.raw if previous else None)
            note = row.note.rstrip("; ")
            line = (f"{call:<44} {row.vehicles:>8,} {row.p50:>9.1f} {row.p95:>9.1f} {row.raw:>13,}"
                    f" {row.wire:>11,} {x_p50:>6} {x_raw:>6}  {note}")  # fmt: skip
            print(line.rstrip())
            previous = row
    if tiles_skipped:
        print(f"\ntiles: skipped — {tiles_skipped}")


def run(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    engine = args.engine
    command = shlex.join([Path(sys.executable).name, "-m", "bench.bench_growth", *sys.argv[1:]])
    cluster = LocalCluster(timescaledb=engine == "timescaledb")
    cluster.init()
    cluster.start()
    runs: list[SizeRun] = []
    tiles_skipped = ""
    started = time.perf_counter()
    try:
        host = machine()
        log(f"machine: {host}; {load()}")
        for vehicles in sizes:
            result, skipped = run_size(cluster, engine, vehicles, args)
            runs.append(result)
            tiles_skipped = tiles_skipped or skipped
    finally:
        cluster.stop(remove=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = [
        f"Growth of the read-API (issue #19), engine {engine}, run of"
        f" {when}, {time.perf_counter() - started:,.0f} s in all",
        f"command: {command}",
        f"machine: {host} ({platform.node()}); {runs[0].database if runs else '?'}",
        f"calls: Accept-Encoding br, time to last byte on loopback, {args.repeat} calls after one"
        f" warm-up (n= in the note: fewer, to stay within {args.budget:.0f} s per call);"
        f" 'every page' = {args.page_repeat} fetches of the whole window by cursor",
    ]
    print_table(header, runs, tiles_skipped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="100,1000,10000", help="vehicles per run, comma-separated"
    )
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per measurement")
    parser.add_argument(
        "--budget", type=float, default=20.0, help="seconds per call: fewer repeats (>= 3) beyond"
    )
    parser.add_argument("--page-repeat", type=int, default=3, help="whole-window fetches by cursor")
    parser.add_argument("--fixes", type=int, default=500, help="GPS fixes per vehicle per day")
    parser.add_argument("--trips", type=int, default=7, help="trips per vehicle per day")
    parser.add_argument(
        "--trip-spread",
        type=float,
        default=0.05,
        help="degrees around the depot for each trip's ends (0: one line per cost centre)",
    )
    parser.add_argument(
        "--engine",
        choices=("timescaledb", "plain"),
        default="timescaledb" if timescaledb_installed() else "plain",
        help="database engine (default: timescaledb when installed, as in production)",
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
