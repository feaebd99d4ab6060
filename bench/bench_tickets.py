"""Benchmark: import of a generated INC change file, end to end (parse + upsert), next to a
raw COPY of the same CSV into a scratch table, in the same run on the same server.

    .venv/bin/python bench/bench_tickets.py [--rows 100000]

Starts a throwaway local cluster (tests.pgcluster.LocalCluster), applies every migration,
then prints rows/s for: first import (all inserts), re-import (all unchanged), an import in
which every row changed (all updates), tickets.capture_history(), and the raw COPY baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from run_migrations import migrate  # noqa: E402
from tests.pgcluster import LocalCluster  # noqa: E402
from tickets_import import sample, store  # noqa: E402
from tickets_import.parse import parse_csv_bytes  # noqa: E402
from ts_shared import Settings  # noqa: E402


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def import_once(url: str, data: bytes, key: str) -> tuple[int, float, float, store.UpsertCounts]:
    """Parse + upsert in one transaction, as import_tickets does per file."""
    parsed, parse_s = timed(lambda: parse_csv_bytes(data, key))
    with psycopg.connect(url) as conn:

        def write() -> store.UpsertCounts:
            with conn.transaction():
                return store.upsert_rows(conn, parsed.rows, source_key=key)

        counts, write_s = timed(write)
    return len(parsed.rows), parse_s, write_s, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()

    records = list(sample.generate(args.rows))
    data = sample.to_csv(records)
    changed = sample.to_csv(
        {**r, "raw_status": "CLOSED", "closed_at": "2026-06-28 10:00:00",
         "source_updated_at": "2026-06-28 10:00:00"} for r in records
    )  # fmt: skip
    print(f"generated {args.rows:,} records, {len(data) / 1e6:.1f} MB CSV")

    with LocalCluster(durable=True) as cluster:
        with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = cluster.url("bench")
        migrate(url, Settings(_env_file=None, database_url=url))
        with psycopg.connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        print(f"server: PostgreSQL {version[0] if version else '?'} (durable local cluster)")
        print(f"{'step':<34}{'rows':>9}{'parse s':>9}{'write s':>9}{'total s':>9}{'rows/s':>10}")

        def report(label: str, rows: int, parse_s: float, write_s: float) -> None:
            total = parse_s + write_s
            print(
                f"{label:<34}{rows:>9,}{parse_s:>9.2f}{write_s:>9.2f}{total:>9.2f}"
                f"{rows / total:>10,.0f}"
            )

        rows, p, w, counts = import_once(url, data, "changes/bench-1.csv")
        report(f"import, new rows ({counts.inserted:,} ins)", rows, p, w)
        rows, p, w, counts = import_once(url, data, "changes/bench-1.csv")
        report(f"re-import, unchanged ({counts.unchanged:,})", rows, p, w)
        rows, p, w, counts = import_once(url, changed, "changes/bench-2.csv")
        report(f"import, every row changed ({counts.updated:,})", rows, p, w)

        with psycopg.connect(url) as conn:
            _, hist_s = timed(lambda: store.capture_history(conn))
            conn.commit()
        print(f"{'tickets.capture_history()':<34}{'':>9}{'':>9}{hist_s:>9.2f}{hist_s:>9.2f}")

        # Baseline: the same CSV straight into a scratch table of text columns.
        columns = ", ".join(f"{name} text" for name in sample.FEED_COLUMNS)
        with psycopg.connect(url) as conn:
            conn.execute(f"CREATE UNLOGGED TABLE bench_raw ({columns})")
            conn.commit()

            def copy() -> None:
                with (
                    conn.cursor() as cur,
                    cur.copy("COPY bench_raw FROM STDIN WITH (FORMAT csv, HEADER true)") as cp,
                ):
                    cp.write(data)
                conn.commit()

            _, copy_s = timed(copy)
        report("raw COPY of the CSV (baseline)", args.rows, 0.0, copy_s)


if __name__ == "__main__":
    main()
