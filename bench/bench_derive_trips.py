"""Derived-trips benchmark: trip speeds and trips derived from positions, 1,000 vehicles, 1 day.

    .venv/bin/python bench/bench_derive_trips.py                  # full size (docs/performance.md)
    .venv/bin/python bench/bench_derive_trips.py --vehicles 100   # quick

Per engine (`timescaledb`: position_history is a hypertable; `plain`), in one throwaway
durable cluster and the same run:

1. Data: per vehicle one UTC day of ~500 fixes (5 trips of 90 moving fixes 30 s apart, the
   idle and rest fixes around them, a parked fix every 10 min between trips), written by
   binary COPY; API trips (max speed NULL, as the Jimi API sends them) for every other vehicle.
2. `trips.derive.run_pass` (the `derive_trips` job) from scratch: dirty windows, derivation
   of every vehicle-day, stops, gap fills, speeds of every trip — target < 10 s.
3. The same pass after late fixes arrive for 10 vehicles (the incremental case).
4. The naive way in the same run: fetch every plausible fix ordered by vehicle and time, loop
   in Python (same algorithm and parameters), insert the derived trips, then compute every
   trip's speeds in Python and UPDATE them one statement per trip (executemany).
The derived trip counts of 2 and 4 are checked to be equal.
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from run_migrations import migrate  # noqa: E402
from tests.pgcluster import LocalCluster, timescaledb_installed  # noqa: E402
from trips.derive import EARTH_RADIUS_M, SPEED_HOLD_CAP_S, TripParams, run_pass  # noqa: E402
from ts_shared import Settings  # noqa: E402

DAY = datetime(2026, 11, 20, tzinfo=UTC)
NOW = DAY + timedelta(days=2)
PARAMS = TripParams()
FIX_COLUMNS = ("imei", "gps_time", "lat", "lng", "speed_kmh", "acc_on", "source")
FIX_TYPES = ("text", "timestamptz", "float8", "float8", "float4", "bool", "text")
TRIP_COLUMNS = ("imei", "start_time", "end_time", "distance_km", "driving_time_s", "source")
TRIP_TYPES = ("text", "timestamptz", "timestamptz", "numeric", "int4", "text")

Fix = tuple[datetime, float, float, float, bool]  # time, lat, lng, speed, acc_on


def vehicle_day(v: int, rng: random.Random) -> tuple[list[Fix], list[tuple[datetime, datetime]]]:
    """One vehicle's fixes of the day and its trips' [first moving fix, rest fix]."""
    lat, lng = -1.29 + rng.uniform(-0.1, 0.1), 36.82 + rng.uniform(-0.1, 0.1)
    fixes: list[Fix] = []
    trips = []
    t = DAY + timedelta(hours=4, minutes=rng.randrange(60))
    for _ in range(5):
        fixes.append((t - timedelta(seconds=60), lat, lng, 0.0, True))  # engine on, idling
        heading = rng.uniform(0, 2 * math.pi)
        start = t
        for _ in range(90):
            speed = rng.uniform(20, 100)
            heading += rng.uniform(-0.3, 0.3)
            step = speed / 3.6 * 30 / 111_320
            lat, lng = lat + step * math.sin(heading), lng + step * math.cos(heading)
            fixes.append((t, lat, lng, speed, True))
            t += timedelta(seconds=30)
        fixes.append((t, lat, lng, 0.0, False))  # at rest, engine off
        trips.append((start, t))
        parked_until = t + timedelta(minutes=100 + rng.randrange(20))
        while t + timedelta(minutes=12) < parked_until:
            t += timedelta(minutes=10)
            fixes.append((t, lat, lng, 0.0, False))
        t = parked_until
    return fixes, trips


def load(url: str, vehicles: int) -> int:
    """Write the day's fixes (COPY) and the API trips of every other vehicle; return fixes."""
    rng = random.Random(7)
    total = 0
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        api = []
        with cur.copy(f"COPY tracksolid.position_history ({', '.join(FIX_COLUMNS)})"
                      " FROM STDIN (FORMAT BINARY)") as copy:  # fmt: skip
            copy.set_types(list(FIX_TYPES))
            for v in range(vehicles):
                imei = f"86279805{v:07d}"
                fixes, trips = vehicle_day(v, rng)
                total += len(fixes)
                for f in fixes:
                    copy.write_row((imei, *f, "track_list"))
                if v % 2 == 0:
                    api += [(imei, s, e, Decimal("30.000"), int((e - s).total_seconds()), "mileage")
                            for s, e in trips]  # fmt: skip
        with cur.copy(f"COPY tracksolid.trips ({', '.join(TRIP_COLUMNS)})"
                      " FROM STDIN (FORMAT BINARY)") as copy:  # fmt: skip
            copy.set_types(list(TRIP_TYPES))
            for row in api:
                copy.write_row(row)
        conn.commit()
        conn.execute("ANALYZE tracksolid.position_history")
        conn.execute("ANALYZE tracksolid.trips")
        conn.commit()
    return total


def bench_sql(url: str) -> dict[str, float]:
    """The job's pass from scratch, then incrementally after late fixes for 10 vehicles."""
    with psycopg.connect(url) as conn:
        t0 = time.perf_counter()
        first = run_pass(conn, PARAMS, NOW)
        first_s = time.perf_counter() - t0
        # Age the loaded rows past the watermark's margin, then upload late fixes.
        conn.execute("UPDATE tracksolid.position_history"
                     " SET received_at = received_at - interval '1 hour'")  # fmt: skip
        conn.execute(
            "INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh,"
            " acc_on, source) SELECT imei, gps_time + interval '15 seconds', lat, lng, 130,"
            " true, 'track_list' FROM tracksolid.position_history"
            " WHERE imei < '862798050000010' AND speed_kmh > 90"
        )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE tracksolid.position_history")  # as autovacuum would
        t0 = time.perf_counter()
        again = run_pass(conn, PARAMS, NOW)
        again_s = time.perf_counter() - t0
    print(f"    steps (s): first {first.seconds}, incremental {again.seconds}")
    return {"seconds": first_s, "derived": first.derived_trips, "fills": first.fills_written,
            "speeds": first.speeds, "stops": first.derived_stops, "incr_seconds": again_s,
            "incr_vehicle_days": again.dirty_vehicle_days, "incr_speeds": again.speeds}  # fmt: skip


# ── the naive way ────────────────────────────────────────────────────────────


def metres(a_lat: float, a_lng: float, b_lat: float, b_lng: float) -> float:
    x = math.radians(b_lng - a_lng) * math.cos(math.radians((a_lat + b_lat) / 2))
    return EARTH_RADIUS_M * math.hypot(x, math.radians(b_lat - a_lat))


@dataclass
class Trip:
    imei: str
    start: datetime
    end: datetime
    lat: float
    lng: float
    dist: float = 0.0
    arrival: tuple[datetime, float, float] | None = None
    fixes: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def close(self) -> tuple[datetime, float]:
        if self.arrival is None:
            return self.end, self.dist
        return self.arrival[0], self.dist + metres(self.lat, self.lng, *self.arrival[1:])


def derive_naive(imei: str, rows: list[Fix], p: TripParams) -> list[tuple[Any, ...]]:
    """The derivation of trips/derive.py, one fix at a time."""
    out: list[tuple[Any, ...]] = []
    gap, min_stop = timedelta(seconds=p.stop_gap_s), timedelta(seconds=p.min_stop_s)
    cur: Trip | None = None
    still = 0
    last_still = 0
    prev_moving = False

    def finish(trip: Trip) -> None:
        end, dist = trip.close()
        if end - trip.start >= timedelta(seconds=p.min_duration_s) and dist >= p.min_distance_m:
            out.append((imei, trip.start, end, round(dist / 1000, 3), trip.fixes))

    for t, lat, lng, speed, acc in rows:
        moving = speed >= p.moving_speed_kmh and acc is not False
        if not moving:
            if prev_moving and cur is not None and t - cur.end < gap:
                cur.arrival = (t, lat, lng)
            still += 1
            prev_moving = False
            continue
        if cur is None or t - cur.end >= gap or (still > last_still and t - cur.end >= min_stop):
            if cur is not None:
                finish(cur)
            cur = Trip(imei, t, t, lat, lng)
        else:
            cur.dist += metres(cur.lat, cur.lng, lat, lng)
            cur.end, cur.lat, cur.lng, cur.arrival = t, lat, lng, None
            cur.fixes += 1
        last_still = still
        prev_moving = True
    if cur is not None:
        finish(cur)
    return out


def speeds_naive(times: list[datetime], rows: list[Fix], start: datetime, end: datetime,
                 p: TripParams) -> tuple[Any, ...]:  # fmt: skip
    """max, time-weighted mean, share over the threshold, fixes (as trips/derive.py)."""
    lo, hi = bisect.bisect_left(times, start), bisect.bisect_right(times, end)
    window = rows[lo:hi]
    if len(window) < p.speed_min_fixes:
        return None, None, None, len(window), "too_few_fixes"
    total = weighted = over = 0.0
    for i, (t, _, _, v, _) in enumerate(window):
        nxt = window[i + 1][0] if i + 1 < len(window) else end
        hold = min((nxt - t).total_seconds(), SPEED_HOLD_CAP_S)
        total += hold
        weighted += v * hold
        over += hold if v > p.overspeed_kmh else 0.0
    vmax = max(f[3] for f in window)
    return vmax, weighted / total, over / total, len(window), "ok"


def bench_naive(url: str) -> dict[str, float]:
    """Fetch, loop, write back: derivation then the speeds of every trip."""
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE bench_naive_trips (imei text, start_time timestamptz,"
                     " end_time timestamptz, distance_km numeric, fixes int)")  # fmt: skip
        conn.commit()
        t0 = time.perf_counter()
        by_imei: dict[str, list[Fix]] = {}
        for imei, *fix in conn.execute(
            "SELECT imei, gps_time, lat, lng, coalesce(speed_kmh, implied_speed_kmh, 0), acc_on"
            " FROM tracksolid.position_history WHERE quality_flag IS NULL"
            " ORDER BY imei, gps_time"
        ):
            by_imei.setdefault(imei, []).append(tuple(fix))
        derived = [t for imei, rows in by_imei.items() for t in derive_naive(imei, rows, PARAMS)]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bench_naive_trips VALUES (%s, %s, %s, %s, %s)", derived)
        trips = conn.execute("SELECT trip_id, imei, start_time, end_time FROM tracksolid.trips"
                             " WHERE end_time IS NOT NULL").fetchall()  # fmt: skip
        times = {imei: [f[0] for f in rows] for imei, rows in by_imei.items()}
        updates = [
            (*speeds_naive(times[imei], by_imei[imei], s, e, PARAMS), trip_id)
            for trip_id, imei, s, e in trips
        ]
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE tracksolid.trips SET gps_max_speed_kmh = %s, gps_avg_speed_kmh = %s,"
                " overspeed_share = %s, speed_fixes = %s, speed_note = %s WHERE trip_id = %s",
                updates,
            )
        conn.commit()
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "derived": len(derived), "speeds": len(updates)}


def engine_settings(url: str, engine: str) -> Settings:
    """Settings that build `engine`'s variant of the schema."""
    use = "on" if engine == "timescaledb" else "off"
    return Settings(_env_file=None, database_url=url, use_timescaledb=use)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument(
        "--engines",
        default="timescaledb,plain" if timescaledb_installed() else "plain",
        help="comma-separated: timescaledb, plain (default: both when TimescaleDB is installed)",
    )
    args = parser.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    results = {}
    with LocalCluster(durable=True, timescaledb="timescaledb" in engines) as cluster:
        for engine in engines:
            with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE bench_trips_{engine}")
            url = cluster.url(f"bench_trips_{engine}")
            migrate(url, engine_settings(url, engine))
            fixes = load(url, args.vehicles)
            sql = bench_sql(url)
            naive = bench_naive(url)
            results[engine] = (fixes, sql, naive)
    print(f"derive trips: {args.vehicles:,} vehicles x 1 day (API trips for every other one)")
    print(f"  {'engine':<12} {'fixes':>8} {'way':<6} {'seconds':>8} {'derived':>8}"
          f" {'fills':>6} {'speeds':>7}")  # fmt: skip
    for engine, (fixes, sql, naive) in results.items():
        print(f"  {engine:<12} {fixes:>8,} {'SQL':<6} {sql['seconds']:>8.2f}"
              f" {sql['derived']:>8.0f} {sql['fills']:>6.0f} {sql['speeds']:>7.0f}")  # fmt: skip
        print(f"  {'':<12} {'':>8} {'naive':<6} {naive['seconds']:>8.2f}"
              f" {naive['derived']:>8.0f} {'-':>6} {naive['speeds']:>7.0f}")  # fmt: skip
        print(f"  {'':<12} incremental pass, late fixes for {sql['incr_vehicle_days']:.0f}"
              f" vehicle-days: {sql['incr_seconds']:.2f} s, {sql['incr_speeds']:.0f} trips"
              " re-speeded")  # fmt: skip
        assert sql["derived"] == naive["derived"], (sql["derived"], naive["derived"])
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    print(f"  cpu count {os.cpu_count()}; uptime: {uptime.strip()}")


if __name__ == "__main__":
    main()
