"""Ingest benchmarks: the position write path, and one live sweep of 10,000 devices.

    .venv/bin/python bench/bench_ingest.py                   # full size (as in docs/performance.md)
    .venv/bin/python bench/bench_ingest.py --rows 50000 --devices 2000   # quick

Each part runs once per engine in the same run and cluster (TimescaleDB preloaded when it
is installed): `timescaledb` (position_history is a hypertable) and `plain` (a plain table);
`--engines plain` measures one only.

1. Write path: the worker's writer (`ingest.writers.write_positions`: jump flagging, direct
   binary COPY of new fixes, INSERT ... ON CONFLICT for the others) in batches of 10,000,
   against a raw binary COPY of the same rows into an identical table — a hypertable with the
   same chunk interval on TimescaleDB — in the same run. The cluster is durable (fsync on,
   synchronous_commit on), as in production.
2. Live sweep: the simulator in its own process with --devices N over 3 accounts; the worker
   side (`Ingestor.poll_live`) in a child process, whose peak RSS is its own (VmHWM of the
   child, not `ru_maxrss`, which a child inherits from this parent). Then the same sweep
   through a naive row-by-row path (one INSERT per fix and per live row, autocommit).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.jobs import Ingestor  # noqa: E402
from ingest.parse import PositionRow, parse_location  # noqa: E402
from ingest.quality import QualityRules  # noqa: E402
from ingest.writers import POSITION_COLUMNS, POSITION_TYPES, write_positions  # noqa: E402
from run_migrations import migrate  # noqa: E402
from tests.pgcluster import LocalCluster, free_port, timescaledb_installed  # noqa: E402
from ts_shared import JimiClient, Settings, make_pool  # noqa: E402

SIM_ENV = {
    "TRACKSOLID_APP_KEY": "demo-app-key",
    "TRACKSOLID_APP_SECRET": "demo-app-secret",
    "TRACKSOLID_USER_ID": "fireside",
    "TRACKSOLID_USER_PWD": "demo-password",
    "TRACKSOLID_TARGETS": "fireside,Fireside@HQ,Fireside_MSA",
}


def make_rows(n: int, devices: int = 1000) -> list[PositionRow]:
    """n fixes, 30 s apart per device, around Nairobi."""
    rng = random.Random(1)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    per = max(1, n // devices)
    rows = []
    for d in range(devices):
        lat, lng = -1.29 + rng.uniform(-0.1, 0.1), 36.82 + rng.uniform(-0.1, 0.1)
        for i in range(per):
            lat += rng.uniform(-0.001, 0.001)
            lng += rng.uniform(-0.001, 0.001)
            rows.append(PositionRow(
                f"86279805{d:07d}", start + timedelta(seconds=30 * i), lat, lng,
                rng.uniform(0, 80), rng.randrange(360), True, "GPS", 9, 0, None, None, "poll",
            ))  # fmt: skip
    return rows[:n]


def peak_rss_mb() -> float:
    """This process's own peak resident set (VmHWM). `ru_maxrss` would not do: on Linux a
    child starts with its parent's maximum and keeps it across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def bench_write_path(url: str, n: int, engine: str) -> dict[str, float]:
    rows = make_rows(n)
    rules = QualityRules()
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE bench_raw (LIKE tracksolid.position_history INCLUDING ALL)")
        if engine == "timescaledb":  # the baseline writes into a hypertable as well
            conn.execute(
                "SELECT create_hypertable('bench_raw', 'gps_time', chunk_time_interval =>"
                " (SELECT d.time_interval FROM timescaledb_information.dimensions d"
                "  WHERE d.hypertable_name = 'position_history'))"
            )
        conn.commit()
        # Raw COPY of the same rows (the ceiling: no conflict handling, no flags).
        values = attrgetter(*POSITION_COLUMNS)
        t0 = time.perf_counter()
        for start in range(0, n, 10_000):
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY bench_raw ({}) FROM STDIN (FORMAT BINARY)".format(
                        ", ".join(POSITION_COLUMNS)
                    )
                ) as copy,
            ):
                copy.set_types(list(POSITION_TYPES))
                for row in rows[start : start + 10_000]:
                    copy.write_row(values(row))
            conn.commit()
        raw_s = time.perf_counter() - t0
        # The worker's writer.
        t0 = time.perf_counter()
        inserted = 0
        for start in range(0, n, 10_000):
            batch = list(rows[start : start + 10_000])
            got, _ = write_positions(conn, batch, rules)
            conn.commit()
            inserted += got
        writer_s = time.perf_counter() - t0
        # Re-polling the same rows (all conflicts) — what a repeated window costs.
        t0 = time.perf_counter()
        for start in range(0, n, 10_000):
            write_positions(conn, list(rows[start : start + 10_000]), rules)
            conn.commit()
        repoll_s = time.perf_counter() - t0
    assert inserted == n, (inserted, n)
    return {"rows": n, "raw_copy_rows_s": n / raw_s, "writer_rows_s": n / writer_s,
            "repoll_rows_s": n / repoll_s, "ratio": raw_s / writer_s}  # fmt: skip


def sweep_child(url: str, api_url: str, naive: bool) -> None:
    """Runs in its own process: one warm-up token fetch, then one timed live sweep."""
    values: dict[str, Any] = {"database_url": url, "tracksolid_api_url": api_url,
                              "log_level": "WARNING", **SIM_ENV}  # fmt: skip
    settings = Settings(_env_file=None, **values)
    pool = make_pool(url, min_size=1, max_size=4, name="bench")
    client = JimiClient(settings, pool)
    client.access_token()
    ingestor = Ingestor(settings, pool, client)
    t0 = time.perf_counter()
    if naive:
        rows = 0
        with psycopg.connect(url, autocommit=True) as conn:
            for target in settings.targets:
                reply = client.call("jimi.user.device.location.list", {"target": target})
                for item in reply.items():
                    p = parse_location(item, target).position
                    conn.execute(
                        "INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng,"
                        " speed_kmh, acc_on, source) VALUES (%s,%s,%s,%s,%s,%s,'poll')"
                        " ON CONFLICT DO NOTHING",
                        (p.imei, p.gps_time, p.lat, p.lng, p.speed_kmh, p.acc_on),
                    )
                    conn.execute(
                        "INSERT INTO tracksolid.live_positions (imei, gps_time, lat, lng,"
                        " speed_kmh, acc_on, source) VALUES (%s,%s,%s,%s,%s,%s,'poll')"
                        " ON CONFLICT (imei) DO UPDATE SET gps_time = EXCLUDED.gps_time,"
                        " lat = EXCLUDED.lat, lng = EXCLUDED.lng"
                        " WHERE live_positions.gps_time < EXCLUDED.gps_time",
                        (p.imei, p.gps_time, p.lat, p.lng, p.speed_kmh, p.acc_on),
                    )
                    rows += 1
    else:
        stats = ingestor.poll_live()
        rows = stats.inserted["position_history"]
    wall = time.perf_counter() - t0
    result: dict[str, float] = {"wall_s": wall, "rows": rows}
    result["peak_rss_mb"] = peak_rss_mb()
    if not naive:
        # The 30-minute track-list sweep over every device that moved (one call per device,
        # INGEST_API_CONCURRENCY in flight). Devices are registered as a device sync would.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO tracksolid.devices (imei, account)"
                         " SELECT imei, account FROM tracksolid.live_positions")  # fmt: skip
        t1 = time.perf_counter()
        track = ingestor.poll_track()
        result["track_wall_s"] = time.perf_counter() - t1
        result["track_calls"] = track.calls
        result["track_rows"] = track.inserted["position_history"]
        result["concurrency"] = settings.ingest_api_concurrency
        result["track_peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))
    pool.close()


def bench_sweep(cluster: LocalCluster, devices: int, engine: str) -> dict[str, dict[str, float]]:
    port = free_port()
    sim = subprocess.Popen(
        [sys.executable, str(ROOT / "jimi_sim.py"), "--port", str(port), "--devices",
         str(devices), "--accounts", "3", "--seed", "1", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        sim.stdout.readline()  # "jimi_sim listening on ..."
        api_url = f"http://127.0.0.1:{port}/route/rest"
        results = {}
        for name, naive in (("worker", False), ("naive", True)):
            db = f"sweep_{name}_{engine}"
            with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {db}")
            url = cluster.url(db)
            migrate(url, engine_settings(url, engine))
            out = subprocess.run(
                [sys.executable, __file__, "--sweep-child", url, api_url]
                + (["--naive"] if naive else []),
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        return results
    finally:
        sim.terminate()
        sim.wait(10)


def engine_settings(url: str, engine: str) -> Settings:
    """Settings that build `engine`'s variant of the schema."""
    use = "on" if engine == "timescaledb" else "off"
    return Settings(_env_file=None, database_url=url, use_timescaledb=use)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument(
        "--engines",
        default="timescaledb,plain" if timescaledb_installed() else "plain",
        help="comma-separated: timescaledb, plain (default: both when TimescaleDB is installed)",
    )
    parser.add_argument("--sweep-child", nargs=2, metavar=("DB_URL", "API_URL"))
    parser.add_argument("--naive", action="store_true")
    args = parser.parse_args()
    if args.sweep_child:
        sweep_child(args.sweep_child[0], args.sweep_child[1], args.naive)
        return
    engines = [e for e in args.engines.split(",") if e]
    with LocalCluster(durable=True, timescaledb="timescaledb" in engines) as cluster:
        writes, sweeps = {}, {}
        for engine in engines:
            with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE bench_write_{engine}")
            url = cluster.url(f"bench_write_{engine}")
            migrate(url, engine_settings(url, engine))
            writes[engine] = bench_write_path(url, args.rows, engine)
        for engine in engines:
            sweeps[engine] = bench_sweep(cluster, args.devices, engine)
    print(f"position write path, {args.rows:,} rows in batches of 10,000 (rows/s):")
    print(f"  {'engine':<12} {'raw COPY':>10} {'writer':>10} {'ratio':>6} {'re-poll':>10}")
    for engine, w in writes.items():
        print(
            f"  {engine:<12} {w['raw_copy_rows_s']:>10,.0f} {w['writer_rows_s']:>10,.0f}"
            f" {w['ratio']:>5.2f}x {w['repoll_rows_s']:>10,.0f}"
        )
    print(f"live sweep of {args.devices:,} devices (3 accounts, simulator in its own process):")
    for engine, s in sweeps.items():
        for name in ("worker", "naive"):
            r = s[name]
            print(
                f"  {engine:<12} {name:<7} wall {r['wall_s']:6.2f} s   rows {r['rows']:>6.0f}"
                f"   peak RSS {r['peak_rss_mb']:6.1f} MB"
            )
    print("track-list sweep (last 30 min, every device that moved):")
    for engine, s in sweeps.items():
        w = s["worker"]
        print(
            f"  {engine:<12} wall {w['track_wall_s']:6.2f} s   calls {w['track_calls']:>6.0f}"
            f"   rows {w['track_rows']:>7.0f}   peak RSS {w['track_peak_rss_mb']:6.1f} MB"
            f"   ({w['concurrency']:.0f} calls in flight)"
        )
    print(f"  cpu count {os.cpu_count()}")


if __name__ == "__main__":
    main()
