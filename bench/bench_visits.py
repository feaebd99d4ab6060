"""Ticket visits benchmark (issue #16): visits for 20,000 tickets x 1,000 vehicles x 7 days,
and the nearest vehicles to one ticket, each beside a naive version on the same data.

    .venv/bin/python bench/bench_visits.py                    # as in docs/performance.md
    .venv/bin/python bench/bench_visits.py --vehicles 200 --tickets 4000   # quick

A durable throwaway cluster (TimescaleDB preloaded when installed; `--engine plain` without)
gets a migrated database with synthetic data: vehicles in Nairobi, Mombasa and Kampala report
500 fixes a day each (5 drives of 80 one-minute fixes, each followed by a 60-minute stop
with a fix every 3 minutes); half the tickets are placed at a stop of some vehicle and
created 30 minutes before it (so they have visits), half anywhere in the same city.

- visits: `tracksolid.refresh_ticket_visits` over the 7 days (what the job and
  `python -m visits refresh --days 7` run), against a naive Python loop (for each ticket,
  fetch its window's fixes and test the distance in Python) timed on `--naive-sample`
  tickets and extrapolated to all of them (labelled as such);
- nearest: `reporting.fn_ticket_nearest_vehicles` for random open tickets (p50 / p95 of
  `--repeat` calls) against fetching every live position and sorting in Python.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from run_migrations import migrate  # noqa: E402
from tests.pgcluster import LocalCluster, timescaledb_installed  # noqa: E402
from ts_shared import Settings  # noqa: E402

RADIUS_M = 150.0
DAY0 = "2026-11-02 03:00:00+00"  # 06:00 EAT on the first day


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Cities the vehicles and tickets are spread over (v % 3): Nairobi, Mombasa, Kampala.
CITIES = "(VALUES (0, -1.29, 36.82), (1, -4.04, 39.67), (2, 0.35, 32.58)) AS c(city, lat, lng)"
# Stop point c of vehicle v on day d: within +-0.12 deg (~13 km) of its city's centre.
STOP = """
    c.lat + 0.12 * sin(({v}) * 12.9898 + ({c}) * 78.233 + ({d}) * 3.7),
    c.lng + 0.12 * cos(({v}) * 4.1414 + ({c}) * 39.346 + ({d}) * 1.3)
"""


def generate(conn: psycopg.Connection[Any], vehicles: int, days: int, tickets: int) -> int:
    """Devices, positions, live positions and tickets; returns the number of fixes.

    A vehicle's day is 5 cycles of 100 fixes: 80 fixes driving (one a minute, ~35 km/h)
    from its previous stop to the next, then a 60-minute stop (20 fixes, one every 3 min).
    """
    conn.execute(
        "INSERT INTO tracksolid.devices (imei, device_name, vehicle_number, driver_name)"
        " SELECT (860000000000000 + v)::text, 'X3-' || v, 'KC' || v, 'Driver ' || v"
        " FROM generate_series(1, %s) v",
        (vehicles,),
    )
    here = STOP.format(v="v", c="i / 100", d="%(day)s")
    prev = STOP.format(v="v", c="i / 100 - 1", d="%(day)s")
    for day in range(days):  # one statement per day: bounded memory
        conn.execute(
            f"""
            INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh, source)
            SELECT (860000000000000 + v)::text,
                   %(day0)s::timestamptz + %(day)s * interval '1 day'
                     + (i / 100) * interval '140 min'
                     + CASE WHEN i %% 100 < 80 THEN (i %% 100) * interval '1 min'
                            ELSE interval '80 min' + (i %% 100 - 80) * interval '3 min' END,
                   CASE WHEN i %% 100 < 80
                        THEN a.plat + (a.hlat - a.plat) * (i %% 100) / 80.0 ELSE a.hlat END,
                   CASE WHEN i %% 100 < 80
                        THEN a.plng + (a.hlng - a.plng) * (i %% 100) / 80.0 ELSE a.hlng END,
                   CASE WHEN i %% 100 < 80 THEN 35 ELSE 0 END, 'poll'
              FROM generate_series(1, %(vehicles)s) v, generate_series(0, 499) i,
                   {CITIES}
                   CROSS JOIN LATERAL (SELECT {here}, {prev}) a(hlat, hlng, plat, plng)
             WHERE c.city = v %% 3
            """,
            {"day0": DAY0, "day": day, "vehicles": vehicles},
        )
    conn.execute(
        "INSERT INTO tracksolid.live_positions (imei, gps_time, lat, lng, speed_kmh, acc_on,"
        " source) SELECT DISTINCT ON (imei) imei, now(), lat, lng, speed_kmh, true, 'poll'"
        " FROM tracksolid.position_history ORDER BY imei, gps_time DESC"
    )
    # Half the tickets at a stop of some vehicle (created 30 min before it starts), half
    # anywhere in the same city; one in five still open, the others closed 3 h later.
    stop = STOP.format(v="v.v", c="v.cycle", d="v.day")
    conn.execute(
        f"""
        INSERT INTO tickets.inc (ticket_id, raw)
        SELECT 'INC' || n, jsonb_build_object(
                   'raw_status', CASE WHEN n %% 5 = 0 THEN 'Assigned' ELSE 'Closed' END,
                   'cluster', 'C' || (n %% 40), 'region', 'r' || c.city,
                   'created_at_service', to_char((s.at - interval '30 min')
                        AT TIME ZONE 'Africa/Nairobi', 'YYYY-MM-DD HH24:MI:SS'),
                   'closed_at', CASE WHEN n %% 5 = 0 THEN NULL ELSE to_char((s.at
                        + interval '3 hours') AT TIME ZONE 'Africa/Nairobi',
                        'YYYY-MM-DD HH24:MI:SS') END,
                   'latitude', CASE WHEN n %% 2 = 0 THEN s.lat
                                    ELSE c.lat + 0.12 * sin(n * 7.77) END,
                   'longitude', CASE WHEN n %% 2 = 0 THEN s.lng
                                     ELSE c.lng + 0.12 * cos(n * 3.33) END)
          FROM generate_series(1, %(tickets)s) n
          CROSS JOIN LATERAL (SELECT 1 + n %% %(vehicles)s AS v, (n / 7) %% %(days)s AS day,
                                     n %% 5 AS cycle) v
          JOIN {CITIES} ON c.city = v.v %% 3
          CROSS JOIN LATERAL (SELECT %(day0)s::timestamptz + v.day * interval '1 day'
                                     + v.cycle * interval '140 min' + interval '80 min',
                                     {stop}) s(at, lat, lng)
        """,
        {"tickets": tickets, "vehicles": vehicles, "days": days, "day0": DAY0},
    )
    conn.execute("VACUUM (ANALYZE)")  # hint bits set, as on data autovacuum has seen
    row = conn.execute("SELECT count(*) FROM tracksolid.position_history").fetchone()
    return int(row[0]) if row else 0


def sql_visits(conn: psycopg.Connection[Any], days: int) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    with conn.transaction():
        row = conn.execute(
            "SELECT * FROM tracksolid.refresh_ticket_visits(%s::timestamptz - interval '1 day',"
            " %s::timestamptz + %s * interval '1 day', %s)",
            (DAY0, DAY0, days + 1, RADIUS_M),
        ).fetchone()
    assert row is not None
    return time.perf_counter() - t0, int(row[0]), int(row[1])


def _metres(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2
    )
    return 6_371_008.8 * 2 * math.asin(math.sqrt(a))


def naive_visits(conn: psycopg.Connection[Any], sample: int) -> tuple[float, int]:
    """Per ticket: fetch the fixes of its window, keep those within the radius in Python."""
    tickets = conn.execute(
        "SELECT latitude, longitude, coalesce(created_at_service, first_seen_at)"
        " - interval '1 hour', coalesce(closed_at + interval '2 hours', now())"
        " FROM tickets.inc WHERE geom IS NOT NULL ORDER BY ticket_id LIMIT %s",
        (sample,),
    ).fetchall()
    t0 = time.perf_counter()
    near = 0
    for lat, lng, w0, w1 in tickets:
        fixes = conn.execute(
            "SELECT imei, gps_time, lat, lng FROM tracksolid.position_history"
            " WHERE gps_time >= %s AND gps_time < %s",
            (w0, w1),
        ).fetchall()
        near += sum(1 for _, _, la, ln in fixes if _metres(lat, lng, la, ln) <= RADIUS_M)
    return (time.perf_counter() - t0) / max(1, len(tickets)), near


def nearest(conn: psycopg.Connection[Any], repeat: int) -> tuple[list[float], list[float]]:
    open_ids = [
        r[0]
        for r in conn.execute(
            "SELECT ticket_id FROM tickets.inc WHERE closed_at IS NULL AND geom IS NOT NULL"
        )
    ]
    rng = random.Random(7)
    fast, naive = [], []
    for _ in range(repeat):
        ticket = rng.choice(open_ids)
        t0 = time.perf_counter()
        conn.execute(
            "SELECT reporting.fn_ticket_nearest_vehicles(%s, 10, 720)::text", (ticket,)
        ).fetchone()
        fast.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        row = conn.execute(
            "SELECT latitude, longitude FROM tickets.inc WHERE ticket_id = %s", (ticket,)
        ).fetchone()
        assert row is not None
        every = conn.execute("SELECT imei, lat, lng FROM tracksolid.live_positions").fetchall()
        sorted(every, key=lambda r: _metres(row[0], row[1], r[1], r[2]))[:10]
        naive.append((time.perf_counter() - t0) * 1000)
    return fast, naive


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--tickets", type=int, default=20_000)
    parser.add_argument("--naive-sample", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument(
        "--engine", default="timescaledb" if timescaledb_installed() else "plain",
        choices=("timescaledb", "plain"),
    )  # fmt: skip
    args = parser.parse_args()
    ts = args.engine == "timescaledb"
    with LocalCluster(durable=True, timescaledb=ts) as cluster:
        with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_visits")
        url = cluster.url("bench_visits")
        migrate(url, Settings(database_url=SecretStr(url), use_timescaledb="on" if ts else "off"))
        with psycopg.connect(url, autocommit=True) as conn:
            if ts:  # no policy compresses chunks behind the measurement's back
                conn.execute("SELECT _timescaledb_functions.stop_background_workers()")
            log("generating ...")
            fixes = generate(conn, args.vehicles, args.days, args.tickets)
            log(f"{fixes:,} fixes, {args.tickets:,} tickets; SQL visits ...")
            took, tickets, visits = sql_visits(conn, args.days)
            took_compressed = None
            if ts:  # a recompute over old, compressed history (`python -m visits refresh --days N`)
                conn.execute(
                    "SELECT count(compress_chunk(c, true))"
                    " FROM show_chunks('tracksolid.position_history') c"
                )
                took_compressed, _, again = sql_visits(conn, args.days)
                assert again == visits, "compressed chunks changed the answer"
            log("naive visits (sample) ...")
            per_ticket, _ = naive_visits(conn, args.naive_sample)
            log("nearest ...")
            fast, slow = nearest(conn, args.repeat)
    print(
        f"ticket visits ({args.engine}): {args.vehicles:,} vehicles x {args.days} days"
        f" ({fixes:,} fixes), {args.tickets:,} tickets, radius {RADIUS_M:.0f} m"
    )
    print(f"  SQL (refresh_ticket_visits)  {took:8.2f} s   {tickets:,} tickets, {visits:,} visits")
    if took_compressed is not None:
        print(f"  same, every chunk compressed {took_compressed:7.2f} s")
    print(
        f"  naive Python loop            {per_ticket * tickets:8.1f} s   (extrapolated from"
        f" {args.naive_sample} tickets at {per_ticket * 1000:.0f} ms each)"
    )
    print(f"nearest 10 vehicles to an open ticket ({args.repeat} calls, ms):")
    print(f"  SQL KNN     p50 {statistics.median(fast):7.2f}   max {max(fast):7.2f}")
    print(f"  naive sort  p50 {statistics.median(slow):7.2f}   max {max(slow):7.2f}")
    one, five, _ = os.getloadavg()
    print(f"  load average {one:.2f} (1 min) {five:.2f} (5 min), {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
