"""Geofence events benchmark: 1,000 vehicles x 1 day (~500 fixes each) x 500 geofences.

    .venv/bin/python bench/bench_geofences.py                    # full size (docs/performance.md)
    .venv/bin/python bench/bench_geofences.py --vehicles 100     # quick

Per engine (`timescaledb`: position_history is a hypertable; `plain`), in one throwaway
durable cluster and the same run:

1. Data: per vehicle one UTC day of 500 fixes, a random walk (≈150 m per fix, one fix every
   ~170 s) around Nairobi, by binary COPY; 500 octagonal fences (radius 300-1,500 m) spread
   over the same area, so vehicles enter and leave many of them.
   Storing the fences builds their grid cells (tracksolid.geofence_cells, by trigger): timed
   and printed apart, as it happens once per fence, not per pass. Then VACUUM ANALYZE, as
   autovacuum would do after such a load.
2. `geofences.events.run_pass` (the `geofence_events` job) from scratch — target < 5 s.
3. The same pass after late fixes arrive for 10 vehicles (the incremental case).
4. The naive way in the same run: fetch the fixes and the fence rings, and in plain Python
   test every fix against every fence (bounding box, then ray casting — no shapely), then
   the same hysteresis, for the first `--naive-vehicles` vehicles (default 50: the full
   500,000 x 500 loop takes tens of minutes); its time is also given scaled linearly to the
   whole fleet. The visit counts of those vehicles are checked equal to the SQL pass's.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geofences.events import FenceParams, connect, run_pass  # noqa: E402
from run_migrations import migrate  # noqa: E402
from tests.pgcluster import LocalCluster, timescaledb_installed  # noqa: E402
from ts_shared import Settings  # noqa: E402

DAY = datetime(2026, 11, 20, tzinfo=UTC)
NOW = DAY + timedelta(days=1, hours=1)
PARAMS = FenceParams()
FIXES_PER_VEHICLE = 500
FENCES = 500
CENTRE = (-1.29, 36.82)
SPREAD = 0.15  # degrees around the centre (~17 km)
Ring = list[tuple[float, float]]  # (lng, lat)


def imei_of(v: int) -> str:
    return f"86{v:013d}"


def vehicle_fixes(v: int, rng: random.Random) -> list[tuple[Any, ...]]:
    """One vehicle's day: a random walk that stays within the area."""
    lat = CENTRE[0] + rng.uniform(-SPREAD, SPREAD)
    lng = CENTRE[1] + rng.uniform(-SPREAD, SPREAD)
    heading = rng.uniform(0, 2 * math.pi)
    rows = []
    t = DAY + timedelta(seconds=rng.randrange(60))
    for _ in range(FIXES_PER_VEHICLE):
        heading += rng.uniform(-0.5, 0.5)
        step = rng.uniform(0, 300) / 111_320
        lat = min(max(lat + step * math.sin(heading), CENTRE[0] - SPREAD), CENTRE[0] + SPREAD)
        lng = min(max(lng + step * math.cos(heading), CENTRE[1] - SPREAD), CENTRE[1] + SPREAD)
        rows.append((imei_of(v), t, lat, lng, 30.0, True, "track_list"))
        t += timedelta(seconds=170)
    return rows


def octagon(rng: random.Random) -> Ring:
    lat = CENTRE[0] + rng.uniform(-SPREAD, SPREAD)
    lng = CENTRE[1] + rng.uniform(-SPREAD, SPREAD)
    r = rng.uniform(300, 1500) / 111_320
    ring = [(lng + r * math.cos(k * math.pi / 4), lat + r * math.sin(k * math.pi / 4))
            for k in range(8)]  # fmt: skip
    return [*ring, ring[0]]


def load(url: str, vehicles: int) -> tuple[int, float]:
    """Devices, fixes (COPY) and fences; returns the number of fixes and the seconds it took
    to store the fences (their grid cells are built then, by trigger)."""
    rng = random.Random(16)
    fixes = 0
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO tracksolid.devices (imei, vehicle_number, city, source)"
            " VALUES (%s, %s, 'Nairobi', 'csv')",
            [(imei_of(v), f"KBN {v:03d}X") for v in range(vehicles)],
        )
        with cur.copy(
            "COPY tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh, acc_on,"
            " source, received_at) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["text", "timestamptz", "float8", "float8", "float4", "bool", "text",
                            "timestamptz"])  # fmt: skip
            for v in range(vehicles):
                for row in vehicle_fixes(v, rng):  # received a minute after the fix, long ago
                    copy.write_row((*row, row[1] + timedelta(minutes=1)))
                    fixes += 1
        started = time.perf_counter()
        cur.executemany(
            "INSERT INTO tracksolid.geofences (name, kind, geom)"
            " VALUES (%s, %s, ST_Multi(ST_GeomFromText(%s, 4326)))",
            [(f"site {i}", "customer_site", "POLYGON((" + ", ".join(
                f"{x} {y}" for x, y in octagon(rng)) + "))") for i in range(FENCES)],
        )  # fmt: skip
        fence_seconds = time.perf_counter() - started
        # What autovacuum does within a minute of a load: statistics, and the rows' commit
        # status recorded on their pages (else the first reader of 500,000 just-copied rows
        # pays for that, which no pass of a running system does).
        conn.execute("VACUUM ANALYZE")
    return fixes, fence_seconds


def bench_sql(url: str) -> dict[str, float]:
    with connect(url) as conn:  # as the worker's job connects (temp_buffers)
        t = time.perf_counter()
        result = run_pass(conn, PARAMS, NOW)
        seconds = time.perf_counter() - t
        # late fixes for 10 vehicles: 20 fixes each, an hour back
        with conn.transaction():
            conn.execute(
                "INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, source)"
                " SELECT p.imei, p.gps_time + interval '1 second', p.lat, p.lng, 'push'"
                " FROM tracksolid.position_history p"
                " WHERE p.imei IN (SELECT imei FROM tracksolid.devices ORDER BY imei LIMIT 10)"
                "   AND p.gps_time >= %s AND p.gps_time < %s + interval '1 hour'",
                (DAY + timedelta(hours=20), DAY + timedelta(hours=20)),
            )
        t = time.perf_counter()
        incremental = run_pass(conn, PARAMS, NOW)
        incr_seconds = time.perf_counter() - t
    return {"seconds": seconds, "events": result.events, "incr_seconds": incr_seconds,
            "incr_vehicles": incremental.dirty_vehicles}  # fmt: skip


def inside(lng: float, lat: float, ring: Ring) -> bool:
    """Ray casting: a horizontal ray from the point crosses the ring an odd number of times."""
    hit = False
    j = len(ring) - 1
    for i in range(len(ring)):
        xi, yi = ring[i]
        xj, yj = ring[j]
        if (yi > lat) != (yj > lat) and lng < (xj - xi) * (lat - yi) / (yj - yi) + xi:
            hit = not hit
        j = i
    return hit


def visits(flags: list[tuple[datetime, bool]], p: FenceParams) -> int:
    """The hysteresis of geofences/events.py in a loop: runs that count change the state."""
    count, state, k = 0, False, 0
    span = timedelta(seconds=p.min_seconds)
    while k < len(flags):
        j = k
        while j + 1 < len(flags) and flags[j + 1][1] == flags[k][1]:
            j += 1
        counts = j - k + 1 >= p.min_fixes and flags[j][0] - flags[k][0] >= span
        if counts and flags[k][1] != state:
            state = flags[k][1]
            count += state
        k = j + 1
    return count


def bench_naive(url: str, vehicles: int) -> dict[str, float]:
    t = time.perf_counter()
    with psycopg.connect(url) as conn:
        imeis = [imei_of(v) for v in range(vehicles)]
        fixes = conn.execute(
            "SELECT imei, gps_time, lat, lng FROM tracksolid.position_history"
            " WHERE imei = ANY(%s) AND quality_flag IS NULL ORDER BY imei, gps_time",
            (imeis,),
        ).fetchall()
        fences = conn.execute(
            "SELECT geofence_id, ST_AsText(ST_ExteriorRing(ST_GeometryN(geom, 1)))"
            " FROM tracksolid.geofences"
        ).fetchall()
        sql_events = conn.execute(
            "SELECT count(*) FROM tracksolid.geofence_events WHERE imei = ANY(%s)", (imeis,)
        ).fetchone()
    rings: list[tuple[int, Ring, tuple[float, float, float, float]]] = []
    for fid, wkt in fences:
        pts = [tuple(map(float, xy.split())) for xy in wkt[11:-1].split(",")]
        ring = [(x, y) for x, y in pts]
        xs, ys = [x for x, _ in ring], [y for _, y in ring]
        rings.append((fid, ring, (min(xs), max(xs), min(ys), max(ys))))
    by_pair: dict[tuple[str, int], list[tuple[datetime, bool]]] = {}
    per_vehicle: dict[str, list[tuple[datetime, float, float]]] = {}
    for imei, when, lat, lng in fixes:
        per_vehicle.setdefault(imei, []).append((when, lat, lng))
    events = 0
    for imei, track in per_vehicle.items():
        by_pair.clear()
        for fid, ring, (x0, x1, y0, y1) in rings:
            flags = [(w, x0 <= lng <= x1 and y0 <= lat <= y1 and inside(lng, lat, ring))
                     for w, lat, lng in track]  # fmt: skip
            if any(f for _, f in flags):
                by_pair[(imei, fid)] = flags
        events += sum(visits(flags, PARAMS) for flags in by_pair.values())
    seconds = time.perf_counter() - t
    assert sql_events is not None
    return {"seconds": seconds, "events": events, "sql_events": sql_events[0],
            "fixes": len(fixes)}  # fmt: skip


def engine_settings(url: str, engine: str) -> Settings:
    use = "on" if engine == "timescaledb" else "off"
    return Settings(_env_file=None, database_url=url, use_timescaledb=use)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--naive-vehicles", type=int, default=50)
    parser.add_argument(
        "--engines",
        default="timescaledb,plain" if timescaledb_installed() else "plain",
        help="comma-separated: timescaledb, plain (default: both when TimescaleDB is installed)",
    )
    parser.add_argument("--debug", action="store_true", help="log each SQL step's time")
    args = parser.parse_args()
    if args.debug:
        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("geofences.events").setLevel(logging.DEBUG)
    engines = [e for e in args.engines.split(",") if e]
    results = {}
    with LocalCluster(durable=True, timescaledb="timescaledb" in engines) as cluster:
        for engine in engines:
            with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE bench_geofences_{engine}")
            url = cluster.url(f"bench_geofences_{engine}")
            migrate(url, engine_settings(url, engine))
            fixes, fence_seconds = load(url, args.vehicles)
            sql = bench_sql(url)
            sql["fence_seconds"] = fence_seconds
            naive = bench_naive(url, min(args.naive_vehicles, args.vehicles))
            results[engine] = (fixes, sql, naive)
    n = min(args.naive_vehicles, args.vehicles)
    print(f"geofence events: {args.vehicles:,} vehicles x 1 day x {FENCES} geofences")
    for engine, (fixes, sql, naive) in results.items():
        scaled = naive["seconds"] * args.vehicles / n
        print(f"  {engine:<12} {fixes:>9,} fixes  SQL pass {sql['seconds']:6.2f} s,"
              f" {sql['events']:,.0f} visits")  # fmt: skip
        print(f"  {'':<12} storing the {FENCES} fences with their grid cells (once, at load):"
              f" {sql['fence_seconds']:.2f} s")  # fmt: skip
        print(f"  {'':<12} incremental pass, late fixes for {sql['incr_vehicles']:.0f}"
              f" vehicles: {sql['incr_seconds']:.2f} s")  # fmt: skip
        print(f"  {'':<12} naive Python, {n} vehicles ({naive['fixes']:,.0f} fixes):"
              f" {naive['seconds']:.2f} s, {naive['events']:.0f} visits"
              f" (SQL: {naive['sql_events']:.0f}); scaled to {args.vehicles:,}:"
              f" ~{scaled:.0f} s")  # fmt: skip
        assert naive["events"] == naive["sql_events"], (naive["events"], naive["sql_events"])
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    print(f"  cpu count {os.cpu_count()}; uptime: {uptime.strip()}")


if __name__ == "__main__":
    main()
