"""Benchmark of the read-API: live positions, 24 h track, one week of trips (all / one cost
centre), through the real FastAPI app and as bare SQL calls, plus a naive baseline for the
trips endpoint (rows fetched into Python and serialised there).

    .venv/bin/python -m bench.bench_dashboard                      # 1,000 vehicles x 14 days
    .venv/bin/python -m bench.bench_dashboard --vehicles 100 --days 2 --repeat 10   # quick

It starts a throwaway PostgreSQL cluster (tests.pgcluster; TimescaleDB preloaded when
installed) with one database per engine — TimescaleDB (hypertables; chunks older than
TIMESCALE_COMPRESS_AFTER compressed, as the policy leaves them in production) and plain
PostgreSQL — applies every migration, generates the same dataset in each with SQL
(generate_series; ~500 fixes and ~7 trips per vehicle per day), then prints p50/p95 per call
and engine side by side. Paste the output into docs/performance.md ("Read-API").
`--engines plain` (or `timescaledb`) measures one engine only.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from dashboard_api import create_app  # noqa: E402
from run_migrations import migrate  # noqa: E402
from tests.pgcluster import LocalCluster, timescaledb_installed  # noqa: E402
from ts_shared import Settings  # noqa: E402

CITIES = [
    ("Nairobi-North", "Nairobi", -1.25, 36.82),
    ("Nairobi-South", "Nairobi", -1.32, 36.83),
    ("Nairobi-East", "Nairobi", -1.28, 36.90),
    ("Nairobi-West", "Nairobi", -1.27, 36.75),
    ("Mombasa-Field", "Mombasa", -4.04, 39.67),
    ("Mombasa-Port", "Mombasa", -4.06, 39.64),
    ("Kampala", "Kampala", 0.35, 32.58),
    ("Kampala-East", "Kampala", 0.33, 32.63),
    ("Kisumu", "Kisumu", -0.09, 34.77),
    ("Nakuru", "Nakuru", -0.30, 36.07),
]

GENERATE = """
CREATE TEMP TABLE cities (n int, cost_centre text, city text, lat float8, lng float8);
INSERT INTO cities VALUES {cities};

INSERT INTO tracksolid.devices (imei, vehicle_number, driver_name, cost_centre, city,
    vehicle_type, account, source)
SELECT '86' || lpad(i::text, 13, '0'),
       format('K%%s%%s %%s%%s', chr(65 + i %% 26), chr(65 + (i / 26) %% 26),
              lpad((i %% 1000)::text, 3, '0'), chr(65 + (i / 1000) %% 26)),
       'Driver ' || i, c.cost_centre, c.city,
       (ARRAY['Van', 'Pickup', 'Motorbike', 'Truck'])[1 + i %% 4], 'fireside', 'csv'
FROM generate_series(1, %(vehicles)s) i
JOIN cities c ON c.n = i %% 10;

CREATE TEMP TABLE veh AS
SELECT d.imei, row_number() OVER (ORDER BY d.imei) AS i, c.lat, c.lng
FROM tracksolid.devices d JOIN cities c ON c.city = d.city AND c.cost_centre = d.cost_centre;
"""

POSITIONS_ONE_DAY = """
INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh, acc_on, source)
SELECT v.imei, t,
       v.lat + 0.05 * sin(extract(epoch FROM t) / 3600.0 + v.i),
       v.lng + 0.05 * cos(extract(epoch FROM t) / 3600.0 + v.i),
       (30 + 30 * sin(extract(epoch FROM t) / 600.0 + v.i))::real, true, 'track_list'
FROM generate_series(%(t0)s::timestamptz, %(t1)s::timestamptz - interval '1 second',
                     make_interval(secs => 86400.0 / %(fixes)s)) t
CROSS JOIN veh v
"""

EVENTS = """
INSERT INTO tracksolid.live_positions (imei, gps_time, lat, lng, speed_kmh, direction_deg,
    acc_on, online, source)
SELECT v.imei, now() - make_interval(secs => (v.i %% 600)::float8), v.lat + 0.01 * sin(v.i),
       v.lng + 0.01 * cos(v.i), (v.i %% 3) * 25, (v.i * 37) %% 360, v.i %% 3 <> 0,
       v.i %% 17 <> 0, 'poll'
FROM veh v;

INSERT INTO tracksolid.trips (imei, start_time, end_time, start_lat, start_lng, end_lat,
    end_lng, distance_km, driving_time_s, avg_speed_kmh, max_speed_kmh, source)
SELECT v.imei, s, s + interval '40 minutes',
       v.lat + %(spread)s * sin(v.i + 3 * d + 7 * k), v.lng + %(spread)s * cos(v.i + 5 * d + k),
       v.lat + 0.05 + %(spread)s * sin(2 * v.i + d + 3 * k),
       v.lng + 0.05 + %(spread)s * cos(3 * v.i + d + 2 * k),
       round((5 + 35 * random())::numeric, 3), 2400, 30, (60 + 60 * random())::real, 'mileage'
FROM veh v
CROSS JOIN generate_series(0, %(days)s - 1) d
CROSS JOIN generate_series(0, %(trips)s - 1) k
CROSS JOIN LATERAL (
    SELECT date_trunc('day', now() - make_interval(days => d::int)) + interval '3 hours'
           + make_interval(mins => (90 * k + v.i %% 30)::int) AS s) x
WHERE s < now();

INSERT INTO tracksolid.parking_events (imei, start_time, end_time, duration_s, acc_on, lat, lng)
SELECT t.imei, t.end_time, t.end_time + interval '5 minutes', 300, true, t.end_lat, t.end_lng
FROM tracksolid.trips t;

INSERT INTO tracksolid.alarms (imei, alarm_time, alarm_type, alarm_name, lat, lng, source)
SELECT t.imei, t.start_time + interval '10 minutes',
       (ARRAY['ubiAcce', 'ubiDece', '6'])[1 + (t.trip_id %% 3)::int], NULL, t.start_lat,
       t.start_lng, 'poll'
FROM tracksolid.trips t WHERE t.trip_id %% 4 = 0;

INSERT INTO tracksolid.ingestion_log (logged_at, source, method, ok, rows, duration_ms)
SELECT now() - make_interval(mins => g), 'api', m, g %% 50 <> 0, 100, 200
FROM generate_series(1, 1440) g,
     unnest(ARRAY['jimi.user.device.location.list', 'jimi.device.alarm.list']) m;
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def generate(
    url: str,
    vehicles: int,
    days: int,
    fixes: int,
    trips: int,
    *,
    position_days: int | None = None,
    trip_spread: float = 0.0,
) -> dict[str, int]:
    """Generate the dataset; `position_days` (default `days`): GPS fixes for only the most
    recent days, trips for all of them (bench_growth: 10,000 vehicles without 70 M fixes).
    `trip_spread` (degrees, default 0: every trip of a cost centre is the same line) moves
    each trip's ends around the depot, so that tiles do not collapse them into one feature."""
    position_days = days if position_days is None else position_days
    cities = ", ".join(
        f"({n}, '{cc}', '{city}', {lat}, {lng})" for n, (cc, city, lat, lng) in enumerate(CITIES)
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        _script(conn, GENERATE.replace("{cities}", cities), {"vehicles": vehicles})
        now_row = conn.execute("SELECT date_trunc('hour', now()) + interval '1 hour'").fetchone()
        assert now_row is not None
        end: datetime = now_row[0]
        for day in range(position_days, 0, -1):
            t0 = conn.execute("SELECT %s::timestamptz - make_interval(days => %s)", (end, day))
            start = t0.fetchone()
            stop = conn.execute(
                "SELECT least(%s::timestamptz - make_interval(days => %s), now())", (end, day - 1)
            ).fetchone()
            assert start is not None and stop is not None
            conn.execute(POSITIONS_ONE_DAY, {"t0": start[0], "t1": stop[0], "fixes": fixes})
            log(f"  positions: day {position_days - day + 1}/{position_days}")
        _script(conn, EVENTS, {"days": days + 1, "trips": trips, "spread": trip_spread})
        log("  trips, stops, alarms, live positions, ingestion log")
        conn.execute("VACUUM ANALYZE")
        conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY reporting.v_trips")
        conn.execute("ANALYZE reporting.v_trips")
        counts = {}
        for table in ("devices", "position_history", "trips", "parking_events", "alarms"):
            row = conn.execute(f"SELECT count(*) FROM tracksolid.{table}").fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts


def _script(conn: psycopg.Connection[Any], script: str, params: dict[str, Any]) -> None:
    """Run `;`-separated statements one by one (parameters need one statement per call)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement.encode(), params)


def timed(fn: Callable[[], int], repeat: int) -> tuple[float, float, int]:
    """p50 / p95 in ms over `repeat` calls (after one warm-up) and the answer size."""
    size = fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        size = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return statistics.median(samples), p95, size


def naive_trips(conn: psycopg.Connection[Any], cost_centre: str | None) -> int:
    """The baseline: rows into Python, GeoJSON dicts built and serialised there."""
    rows = conn.execute(
        "SELECT trip_id, imei, vehicle_number, vehicle_name, driver_name, cost_centre, city,"
        " vehicle_type, start_time, end_time, start_lat, start_lng, end_lat, end_lng,"
        " distance_km, driving_time_s, duration_s, avg_speed_kmh, max_speed_kmh"
        " FROM reporting.v_trips WHERE start_time >= now() - interval '7 days'"
        " AND start_time < now() AND (%s::text IS NULL OR lower(cost_centre) = lower(%s))"
        " ORDER BY start_time DESC, trip_id DESC LIMIT 50000",
        (cost_centre, cost_centre),
    ).fetchall()
    features = []
    for r in reversed(rows):
        features.append(
            {
                "type": "Feature",
                "id": r[0],
                "geometry": {
                    "type": "LineString",
                    "coordinates": [[r[11], r[10]], [r[13], r[12]]],
                },
                "properties": {
                    "trip_id": r[0],
                    "imei": r[1],
                    "vehicle_number": r[2],
                    "vehicle_name": r[3],
                    "driver_name": r[4],
                    "cost_centre": r[5],
                    "city": r[6],
                    "vehicle_type": r[7],
                    "start_time": r[8].isoformat(),
                    "end_time": r[9].isoformat() if r[9] else None,
                    "distance_km": float(r[14]) if r[14] is not None else None,
                    "driving_time_s": r[15],
                    "duration_s": r[16],
                    "avg_speed_kmh": r[17],
                    "max_speed_kmh": r[18],
                },
            }
        )
    summary = {
        "trips": len(rows),
        "distance_km": sum(f["properties"]["distance_km"] or 0 for f in features),
    }
    body = json.dumps({"type": "FeatureCollection", "features": features, "summary": summary})
    return len(body)


def compress_old_chunks(url: str, compress_after: str) -> str:
    """What the compression policy does in production: compress every chunk of every
    hypertable older than TIMESCALE_COMPRESS_AFTER. Returns a one-line account."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT _timescaledb_functions.stop_background_workers()")  # no races
        for (table,) in conn.execute(
            "SELECT format('%I.%I', hypertable_schema, hypertable_name)"
            " FROM timescaledb_information.hypertables WHERE hypertable_schema = 'tracksolid'"
        ).fetchall():
            conn.execute(
                "SELECT compress_chunk(c, if_not_compressed => true)"
                " FROM show_chunks(%s::regclass, older_than => now() - %s::interval) c",
                (table, compress_after),
            )
        conn.execute("VACUUM ANALYZE")
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE is_compressed), count(*)"
            " FROM timescaledb_information.chunks WHERE hypertable_name = 'position_history'"
        ).fetchone()
        size = conn.execute(
            "SELECT pg_size_pretty(hypertable_size('tracksolid.position_history'))"
        ).fetchone()
    assert row is not None and size is not None
    return f"position_history: {row[0]} of {row[1]} chunks compressed, {size[0]} on disk"


@contextmanager
def plain_dataset(db: str, args: argparse.Namespace, **generate_kw: Any) -> Iterator[str]:
    """A throwaway plain PostgreSQL + PostGIS cluster with database `db` migrated and the
    dataset of `args` (add_dataset_args) generated; yields its URL, removes the cluster."""
    cluster = LocalCluster(timescaledb=False)
    cluster.init()
    cluster.start()
    try:
        with psycopg.connect(cluster.admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {db}")
        url = cluster.url(db)
        migrate(url, Settings(_env_file=None, database_url=url, use_timescaledb="off"))
        log(f"generating {args.vehicles} vehicles x {args.days} days ...")
        counts = generate(url, args.vehicles, args.days, args.fixes, args.trips, **generate_kw)
        log(f"generated: {counts}")
        yield url
    finally:
        cluster.stop(remove=True)


def run(args: argparse.Namespace) -> None:
    engines = [e for e in args.engines.split(",") if e]
    cluster = LocalCluster(timescaledb="timescaledb" in engines)
    cluster.init()
    cluster.start()
    results: dict[str, list[tuple[str, float, float, int, str]]] = {}
    try:
        for engine in engines:
            db = f"bench_{engine}"
            with psycopg.connect(cluster.admin_url, autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {db}")
            url = cluster.url(db)
            settings = Settings(
                _env_file=None,
                database_url=url,
                vtrips_refresh_interval_s=0,
                use_timescaledb="on" if engine == "timescaledb" else "off",
            )
            migrate(url, settings)
            log(f"[{engine}] generating {args.vehicles} vehicles x {args.days} days ...")
            t0 = time.perf_counter()
            counts = generate(url, args.vehicles, args.days, args.fixes, args.trips)
            log(f"[{engine}] generated in {time.perf_counter() - t0:.0f} s: {counts}")
            if engine == "timescaledb":
                log(f"[{engine}] {compress_old_chunks(url, settings.timescale_compress_after)}")
            results[engine] = measure(url, settings, args.repeat)
    finally:
        cluster.stop(remove=True)
    print()
    header = "".join(f" {e + ' p50':>16} {'p95':>8}" for e in engines)
    print(f"{'call':<50}{header} {'bytes':>12}  target")
    first = results[engines[0]]
    for i, (name, _p50, _p95, size, target) in enumerate(first):
        cells = "".join(f" {results[e][i][1]:>16.1f} {results[e][i][2]:>8.1f}" for e in engines)
        print(f"{name:<50}{cells} {size:>12,}  {target}")


def measure(url: str, settings: Settings, repeat: int) -> list[tuple[str, float, float, int, str]]:
    rng = random.Random(7)
    with psycopg.connect(url, autocommit=True) as conn:
        plates = [str(r[0]) for r in conn.execute("SELECT vehicle_number FROM tracksolid.devices")]
        week = conn.execute(
            "SELECT count(*) FILTER (WHERE start_time >= now() - interval '7 days'),"
            " count(*) FILTER (WHERE start_time >= now() - interval '7 days'"
            " AND cost_centre = 'Nairobi-North') FROM reporting.v_trips"
        ).fetchone()
        log(f"one week: {week[0] if week else '?'} trips, Nairobi-North {week[1] if week else '?'}")

        def sql(query: str, params: Callable[[], tuple[Any, ...]] = tuple) -> Callable[[], int]:
            def call() -> int:
                row = conn.execute(query, params()).fetchone()
                return len(row[0]) if row else 0

            return call

        week_sql = (
            "SELECT reporting.fn_trips_for_map_text(NULL, NULL, %s, NULL,"
            " now() - interval '7 days', now(), 50000, %s)"
        )
        results: list[tuple[str, float, float, int, str]] = []

        def record(name: str, fn: Callable[[], int], target: str) -> None:
            p50, p95, size = timed(fn, repeat)
            results.append((name, p50, p95, size, target))
            log(f"{name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, {size:,} bytes")

        record(
            "SQL fn_live_positions (all)",
            sql("SELECT reporting.fn_live_positions(NULL, NULL)::text"),
            "",
        )
        record(
            "SQL fn_vehicle_track (24 h)",
            sql("SELECT reporting.fn_vehicle_track(%s, 24)::text", lambda: (rng.choice(plates),)),
            "",
        )
        record("SQL fn_trips_for_map (week, all)", sql(week_sql, lambda: (None, False)), "")
        record(
            "SQL fn_trips_for_map (week, 1 cc)", sql(week_sql, lambda: ("Nairobi-North", False)), ""
        )

        with TestClient(create_app(settings)) as client:

            def http(method: str, path: str, **kw: Callable[[], Any]) -> Callable[[], int]:
                def call() -> int:
                    extra = {k: v() for k, v in kw.items()}
                    response = client.request(method, path, **extra)
                    assert response.status_code == 200, response.text[:300]
                    return len(response.content)

                return call

            record(
                "HTTP GET /webhook/live-positions",
                http("GET", "/webhook/live-positions"),
                "p50 < 25 ms",
            )
            record(
                "HTTP GET /webhook/live-positions/track (24 h)",
                http(
                    "GET",
                    "/webhook/live-positions/track",
                    params=lambda: {"vehicle_number": rng.choice(plates), "hours": "24"},
                ),
                "p50 < 50 ms",
            )
            record(
                "HTTP POST /webhook/fleet-dashboard (week, all)",
                http("POST", "/webhook/fleet-dashboard", data=lambda: {"start": _week_ago(conn)}),
                "p50 < 400 ms",
            )
            record(
                "HTTP POST /webhook/fleet-dashboard (week, 1 cc)",
                http(
                    "POST",
                    "/webhook/fleet-dashboard",
                    data=lambda: {"start": _week_ago(conn), "cost_centre": "Nairobi-North"},
                ),
                "p50 < 100 ms",
            )
        record("naive Python trips (week, all)", lambda: naive_trips(conn, None), "baseline")
        record(
            "naive Python trips (week, 1 cc)",
            lambda: naive_trips(conn, "Nairobi-North"),
            "baseline",
        )

    return results


def _week_ago(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT (now() - interval '7 days')::text").fetchone()
    assert row is not None
    return str(row[0]).replace(" ", "T")


def add_dataset_args(
    parser: argparse.ArgumentParser,
    *,
    days: int,
    fixes: int,
    repeat: int,
    repeat_help: str = "timed calls per measurement",
) -> None:
    """The generator's options (`generate`) and the repeat count, with one benchmark's defaults."""
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--days", type=int, default=days)
    parser.add_argument("--fixes", type=int, default=fixes, help="GPS fixes per vehicle per day")
    parser.add_argument("--trips", type=int, default=7, help="trips per vehicle per day")
    parser.add_argument("--repeat", type=int, default=repeat, help=repeat_help)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dataset_args(parser, days=14, fixes=500, repeat=30)
    parser.add_argument(
        "--engines",
        default="timescaledb,plain" if timescaledb_installed() else "plain",
        help="comma-separated: timescaledb, plain (default: both when TimescaleDB is installed)",
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
