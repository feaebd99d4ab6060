"""Alerts benchmark: the `alerts` pass, and whether it slows a poll job's writes.

    .venv/bin/python bench/bench_alerts.py                  # 500 vehicles (docs/performance.md)
    .venv/bin/python bench/bench_alerts.py --vehicles 100   # quick

In one throwaway durable cluster (plain PostgreSQL by default, `--engine timescaledb`):

1. Data: per vehicle two hours of fixes (one a minute), a live position (a tenth of the fleet
   silent for 3 h), 40 alarms; one rule of every kind (spool directory of 5 files).
2. The first pass (every rule from its creation: a day back) and a steady pass after one
   more minute of data (one fix per vehicle, 100 alarms) — the worker's every-minute cost.
3. A poll job's write, the same as `live_positions` does each minute (upsert of every
   vehicle's live row + the fixes into position_history), timed 20 times alone and 20 times
   while alerts passes run back to back in another thread: the medians are compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerts.rules import insert_rule, validate_rule  # noqa: E402
from alerts.run import run_once  # noqa: E402
from run_migrations import migrate  # noqa: E402
from tests.pgcluster import LocalCluster  # noqa: E402
from ts_shared import Settings, make_pool  # noqa: E402

RULES: list[dict[str, Any]] = [
    {"name": "sos", "kind": "alarm", "params": {"types": ["1"]}},
    {"name": "high", "kind": "alarm", "params": {"min_severity": "high"}},
    {"name": "speed", "kind": "overspeed", "params": {"speed_kmh": 90, "min_duration_s": 120}},
    {"name": "silent", "kind": "device_silent", "params": {"minutes": 60}},
    {
        "name": "feed",
        "kind": "feed_stale",
        "params": {"source": "job", "method": "live_positions", "minutes": 10},
    },
    {"name": "tickets", "kind": "importer_stale", "params": {"feed": "tickets", "minutes": 60}},
    {"name": "backup", "kind": "backup_failed"},
    {"name": "spool", "kind": "spool_depth", "params": {"max_files": 2}},
    {"name": "fences", "kind": "geofence"},
    {"name": "away", "kind": "out_of_region"},
]


def imei_of(v: int) -> str:
    return f"86{v:013d}"


def load(conn: psycopg.Connection[Any], vehicles: int, now: datetime) -> None:
    """The fleet, two hours of fixes, live rows and alarms, by COPY."""
    with conn.cursor() as cur:
        with cur.copy(
            "COPY tracksolid.devices (imei, vehicle_number, cost_centre) FROM STDIN"
        ) as cp:
            for v in range(vehicles):
                cp.write_row((imei_of(v), f"KDA {v:03d}", f"CC{v % 7}"))
        with cur.copy(
            "COPY tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh, source,"
            " received_at) FROM STDIN"
        ) as cp:
            for v in range(vehicles):
                for m in range(120):
                    t = now - timedelta(minutes=120 - m)
                    speed = 100.0 if (v % 10 == 0 and 30 <= m < 40) else 40.0
                    cp.write_row((imei_of(v), t, -1.29, 36.82, speed, "track_list", t))
        with cur.copy(
            "COPY tracksolid.live_positions (imei, gps_time, lat, lng, source) FROM STDIN"
        ) as cp:
            for v in range(vehicles):
                late = timedelta(hours=3) if v % 10 == 1 else timedelta(minutes=1)
                cp.write_row((imei_of(v), now - late, -1.29, 36.82, "poll"))
        with cur.copy(
            "COPY tracksolid.alarms (imei, alarm_time, alarm_type, source, created_at) FROM STDIN"
        ) as cp:
            for v in range(vehicles):
                for k in range(40):
                    t = now - timedelta(minutes=100 - 2 * k)
                    cp.write_row((imei_of(v), t, ("1", "2", "197", "ACC_ON")[k % 4], "poll", t))


def poll_write(conn: psycopg.Connection[Any], vehicles: int, t: datetime) -> float:
    """What the live_positions job writes each minute; seconds taken."""
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        rows = [(imei_of(v), t, -1.29, 36.82, 40.0) for v in range(vehicles)]
        cur.executemany(
            "INSERT INTO tracksolid.live_positions (imei, gps_time, lat, lng, speed_kmh, source)"
            " VALUES (%s, %s, %s, %s, %s, 'poll') ON CONFLICT (imei) DO UPDATE SET"
            " gps_time = EXCLUDED.gps_time, speed_kmh = EXCLUDED.speed_kmh"
            " WHERE live_positions.gps_time < EXCLUDED.gps_time",
            rows,
        )
        cur.executemany(
            "INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh,"
            " source) VALUES (%s, %s, %s, %s, %s, 'poll') ON CONFLICT DO NOTHING",
            rows,
        )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vehicles", type=int, default=500)
    parser.add_argument("--engine", default="plain", choices=("plain", "timescaledb"))
    args = parser.parse_args()
    spool = Path(tempfile.mkdtemp(prefix="bench-alerts-spool-"))
    for i in range(5):
        (spool / f"{i:012d}.json").write_text("{}")
    ts = args.engine == "timescaledb"
    with LocalCluster(durable=True, timescaledb=ts) as cluster:
        with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_alerts")
        url = cluster.url("bench_alerts")
        settings = Settings(
            _env_file=None,
            database_url=url,
            use_timescaledb="on" if ts else "off",
            webhook_spool_dir=str(spool),
            alert_event_lag_s=0,
        )
        migrate(url, settings)
        pool = make_pool(url, min_size=2, max_size=4, name="bench")
        with pool.connection() as conn:
            now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
            for rule in RULES:
                insert_rule(conn, validate_rule(rule))
            conn.execute("UPDATE tracksolid.alert_rules SET created_at = now() - interval '1 day'")
            load(conn, args.vehicles, now)
            conn.execute("ANALYZE")
        first = run_once(pool, settings, now + timedelta(seconds=1))
        with pool.connection() as conn:
            poll_write(conn, args.vehicles, now + timedelta(seconds=30))
        steady = run_once(pool, settings, now + timedelta(seconds=61))
        with pool.connection() as conn:
            alone = [
                poll_write(conn, args.vehicles, now + timedelta(minutes=2 + i)) for i in range(20)
            ]
        stop = threading.Event()
        passes: list[float] = []

        def alerts_loop() -> None:
            k = 0
            while not stop.is_set():
                k += 1
                started = time.perf_counter()
                run_once(pool, settings, now + timedelta(minutes=30, seconds=k))
                passes.append(time.perf_counter() - started)

        thread = threading.Thread(target=alerts_loop)
        thread.start()
        with pool.connection() as conn:
            busy = [
                poll_write(conn, args.vehicles, now + timedelta(minutes=40 + i)) for i in range(20)
            ]
        stop.set()
        thread.join()
        pool.close()
    print(f"alerts: {args.vehicles:,} vehicles, {len(RULES)} rules ({args.engine})")
    print(
        f"  first pass (a day of history): {first.evaluate_ms} ms, "
        f"{first.alerts_touched} alerts, {first.messages} outbox rows"
    )
    print(f"  steady pass (one more minute): {steady.evaluate_ms} ms")
    print(
        f"  poll write ({args.vehicles} live rows + fixes), median of 20: alone "
        f"{statistics.median(alone) * 1000:.1f} ms, during back-to-back alerts passes "
        f"{statistics.median(busy) * 1000:.1f} ms ({len(passes)} passes, median "
        f"{statistics.median(passes) * 1000 if passes else 0:.0f} ms)"
    )


if __name__ == "__main__":
    main()
