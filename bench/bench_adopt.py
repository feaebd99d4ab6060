"""Go-live copy benchmark: adopt_legacy's history copy against a raw COPY of the same rows.

    .venv/bin/python bench/bench_adopt.py                        # as in docs/performance.md
    .venv/bin/python bench/bench_adopt.py --devices 200 --days 2  # quick

A durable throwaway cluster (fsync on, TimescaleDB preloaded when installed) holds an old
database in the previous generation's shape (devices, position_history as a hypertable with
1-day chunks, one fix every `--every` seconds per device) and two freshly migrated targets:

- raw COPY: one `COPY (SELECT ...) TO STDOUT (FORMAT BINARY)` from the old database straight
  into `COPY tracksolid.position_history FROM STDIN (FORMAT BINARY)` of a target, one
  transaction: the fastest way the same rows can reach the same table (indexes included);
- adopt: `legacy.copy.copy_table` as `adopt_legacy.py --apply` runs it (time-ordered 1-day
  batches, each with its progress row, resumable), into the other target.

Both sides are checked to hold the same number of rows. Printed: rows/s of each and the ratio
(the issue's targets: >= 100,000 positions/s and >= 0.3 x raw COPY).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from legacy.copy import copy_table, open_old  # noqa: E402
from legacy.inspect import inspect, read_catalog  # noqa: E402
from run_migrations import migrate  # noqa: E402
from tests.pgcluster import LocalCluster, timescaledb_installed  # noqa: E402
from ts_shared import Settings  # noqa: E402

OLD_SCHEMA = """
CREATE SCHEMA tracksolid;
CREATE TABLE tracksolid.devices (
    imei text PRIMARY KEY, vehicle_number text, driver_name text, cost_centre text);
CREATE TABLE tracksolid.position_history (
    imei text NOT NULL, gps_time timestamptz NOT NULL, lat double precision NOT NULL,
    lng double precision NOT NULL, speed_kmh real, direction_deg smallint, acc_on boolean,
    source text NOT NULL, PRIMARY KEY (imei, gps_time));
"""
COLUMNS = ("imei", "gps_time", "lat", "lng", "speed_kmh", "direction_deg", "acc_on", "source")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_old(url: str, devices: int, days: int, every_s: int, timescaledb: bool) -> int:
    """The previous generation's database; returns its position count."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(OLD_SCHEMA)
        if timescaledb:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            conn.execute(
                "SELECT create_hypertable('tracksolid.position_history', 'gps_time',"
                " chunk_time_interval => interval '1 day')"
            )
        conn.execute(
            "INSERT INTO tracksolid.devices SELECT 862798050000000 + d, 'KCA ' || d,"
            " 'Driver ' || d, 'CC-' || d %% 7 FROM generate_series(1, %s) d",
            (devices,),
        )
        per_day = 86_400 // every_s
        for day in range(days):  # one day per statement: bounded memory, time-ordered chunks
            conn.execute(
                "INSERT INTO tracksolid.position_history"
                " SELECT (862798050000000 + d)::text,"
                "  date_trunc('day', now()) - %(day)s * interval '1 day'"
                "   + i * %(every)s * interval '1 second' + d * interval '1 ms',"
                "  -1.29 + d * 1e-4 + i * 1e-6, 36.82 + i * 1e-6, (i %% 90)::real,"
                "  (i %% 360)::smallint, i %% 7 <> 0, 'poll'"
                " FROM generate_series(1, %(devices)s) d, generate_series(0, %(per)s - 1) i",
                {"day": day + 1, "every": every_s, "devices": devices, "per": per_day},
            )
        conn.execute("ANALYZE")
        row = conn.execute("SELECT count(*) FROM tracksolid.position_history").fetchone()
        return int(row[0]) if row else 0


def target(cluster: LocalCluster, name: str, engine: str) -> str:
    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = cluster.url(name)
    migrate(
        url,
        Settings(
            database_url=SecretStr(url), use_timescaledb="on" if engine == "timescaledb" else "off"
        ),
    )
    return url


def count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM tracksolid.position_history").fetchone()
        return int(row[0]) if row else 0


def raw_copy(old_url: str, new_url: str) -> float:
    """Seconds for one binary COPY of every old position into the target table."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
    out = sql.SQL("COPY (SELECT {} FROM tracksolid.position_history) TO STDOUT (FORMAT BINARY)")
    into = sql.SQL("COPY tracksolid.position_history ({}) FROM STDIN (FORMAT BINARY)")
    t0 = time.perf_counter()
    with psycopg.connect(old_url) as old, psycopg.connect(new_url) as new:
        with (
            old.cursor().copy(out.format(cols)) as src,
            new.cursor().copy(into.format(cols)) as dst,
        ):
            for data in src:
                dst.write(data)
        new.commit()
    return time.perf_counter() - t0


def adopt(old_url: str, new_url: str) -> float:
    """Seconds for adopt_legacy's copy of the registry and the history (1-day batches)."""
    t0 = time.perf_counter()
    with open_old(old_url) as old, psycopg.connect(new_url, autocommit=True) as new:
        ins = inspect(old, read_catalog(new))
        plans = {p.name: p for p in ins.plans}
        copy_table(old, new, plans["devices"])
        copy_table(old, new, plans["position_history"], step=timedelta(days=1))
    return time.perf_counter() - t0


def machine_load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min), {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--every", type=int, default=240, help="seconds between fixes")
    parser.add_argument(
        "--engines",
        default="timescaledb,plain" if timescaledb_installed() else "plain",
        help="comma-separated: timescaledb, plain (default: both when TimescaleDB is installed)",
    )
    args = parser.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    results: dict[str, dict[str, Any]] = {}
    with LocalCluster(durable=True, timescaledb="timescaledb" in engines) as cluster:
        for engine in engines:
            with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE old_{engine}")
            old_url = cluster.url(f"old_{engine}")
            log(f"[{engine}] building the old database ...")
            rows = build_old(old_url, args.devices, args.days, args.every, engine == "timescaledb")
            raw_url = target(cluster, f"raw_{engine}", engine)
            adopt_url = target(cluster, f"adopt_{engine}", engine)
            log(f"[{engine}] raw COPY of {rows:,} positions ...")
            raw_s = raw_copy(old_url, raw_url)
            log(f"[{engine}] adopt_legacy copy ...")
            adopt_s = adopt(old_url, adopt_url)
            assert count(raw_url) == count(adopt_url) == rows, "the two copies differ"
            results[engine] = {"rows": rows, "raw_s": raw_s, "adopt_s": adopt_s}
    print(
        f"go-live history copy: {args.devices:,} vehicles x {args.days} days,"
        f" one fix every {args.every} s (positions/s)"
    )
    print(f"  {'engine':<12} {'rows':>10} {'raw COPY':>10} {'adopt':>10} {'ratio':>6}")
    for engine, r in results.items():
        raw, ad = r["rows"] / r["raw_s"], r["rows"] / r["adopt_s"]
        print(f"  {engine:<12} {r['rows']:>10,} {raw:>10,.0f} {ad:>10,.0f} {ad / raw:>5.2f}x")
    print(f"  {machine_load()}")


if __name__ == "__main__":
    main()
