"""TimescaleDB smoke test: the TimescaleDB-only migrations on a real TimescaleDB (WASM build).

`tests/timescale_wasm` (a copy of the workplace tool shared/tools/timescale-wasm) serves
PostgreSQL 17 + TimescaleDB over the wire protocol (no PostGIS, one connection at a time).
`make test` installs its node packages into `.cache/timescale-wasm`; this test fails (never
skips) with a clear message if they are missing. The core + TimescaleDB files are applied with
the real runner, then we check the hypertables, the continuous aggregate, compression settings
and the policies, and that the idempotent writes the ingest worker relies on work against a
hypertable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from run_migrations import migrate
from tests.conftest import ROOT, test_settings
from tests.pgcluster import free_port

WASM_DIR = Path(os.environ.get("TIMESCALE_WASM_DIR", ROOT / ".cache" / "timescale-wasm"))
# PostGIS-dependent files cannot run there; everything else up to the TimescaleDB layer does.
SMOKE_FILES = {
    "0001_core_schema.sql",
    "0003_timescale_hypertables.sql",
    "0003_plain_indexes.sql",
    "0004_timescale_mileage_cagg.sql",
    "0004_plain_mileage_daily.sql",
    "R__timescale_policies.sql",
}


@pytest.fixture(scope="module")
def timescale_url() -> Iterator[str]:
    node = shutil.which("node")
    server = WASM_DIR / "server.mjs"
    if node is None or not (WASM_DIR / "node_modules" / "@unni-craftsman").exists():
        pytest.fail(
            f"timescale-wasm is not installed in {WASM_DIR}: run `make timescale-wasm` "
            "(needs node + npm); `make test` does it for you"
        )
    port = free_port()
    proc = subprocess.Popen(
        [node, str(server), str(port)],
        cwd=WASM_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith(f"ready {port}"):
                break
            if proc.poll() is not None:
                pytest.fail(f"timescale-wasm exited: {line}")
        else:
            pytest.fail("timescale-wasm did not start in 120 s")
        yield f"host=127.0.0.1 port={port} user=postgres password=x dbname=postgres sslmode=disable"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_timescale_migrations_create_hypertables_cagg_and_policies(timescale_url: str) -> None:
    settings = test_settings(timescale_url, timescale_retention="400 days")
    report = migrate(timescale_url, settings, select=SMOKE_FILES.__contains__, manage_roles=False)
    assert "0003_timescale_hypertables.sql" in report.applied
    assert "0004_timescale_mileage_cagg.sql" in report.applied
    assert "0003_plain_indexes.sql" in report.skipped, "plain variant skipped when Timescale is on"
    assert "0004_plain_mileage_daily.sql" in report.skipped

    # PGlite's wire shim does not keep prepared statements apart: never prepare.
    with psycopg.connect(timescale_url, autocommit=True, prepare_threshold=None) as conn:
        hypertables = {
            r[0]
            for r in conn.execute(
                "SELECT hypertable_name FROM timescaledb_information.hypertables"
                " WHERE hypertable_schema = 'tracksolid'"
            ).fetchall()
        }
        assert hypertables == {
            "position_history",
            "heartbeats",
            "fuel_readings",
            "temperature_readings",
        }
        caggs = conn.execute(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates"
        ).fetchall()
        assert caggs == [("v_mileage_daily_cagg",)]
        jobs = {
            r[0]
            for r in conn.execute(
                "SELECT proc_name FROM timescaledb_information.jobs"
                " WHERE hypertable_schema = 'tracksolid' OR hypertable_name IS NOT NULL"
            ).fetchall()
        }
        expected_jobs = {
            "policy_compression",
            "policy_retention",
            "policy_refresh_continuous_aggregate",
        }
        assert expected_jobs <= jobs
        compressed = conn.execute(
            "SELECT compression_enabled FROM timescaledb_information.hypertables"
            " WHERE hypertable_name = 'position_history'"
        ).fetchone()
        assert compressed == (True,)

        # The worker's idempotent write path works on the hypertable.
        insert = (
            "INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh,"
            " mileage_km, source) VALUES (%s, %s, -1.29, 36.82, %s, %s, 'poll')"
            " ON CONFLICT (imei, gps_time) DO NOTHING"
        )
        rows = [
            ("A", "2026-11-20 08:00Z", 0, 100.0),
            ("A", "2026-11-20 09:00Z", 50, 130.5),
            ("B", "2026-11-21 09:00Z", 20, 10.0),
        ]
        with conn.cursor() as cur:
            cur.executemany(insert, rows)
            cur.executemany(insert, rows)  # re-poll: nothing new
        assert conn.execute("SELECT count(*) FROM tracksolid.position_history").fetchone() == (3,)
        conn.execute(
            "CALL refresh_continuous_aggregate('tracksolid.v_mileage_daily_cagg', NULL, NULL)"
        )
        daily = conn.execute(
            "SELECT imei, day::date::text, fixes, max_mileage_km - min_mileage_km"
            " FROM tracksolid.v_mileage_daily_cagg ORDER BY imei, day"
        ).fetchall()
        assert daily == [("A", "2026-11-20", 2, 30.5), ("B", "2026-11-21", 1, 0.0)]

    # A second run is a no-op; changing a setting re-applies only the policy file.
    again = migrate(timescale_url, settings, select=SMOKE_FILES.__contains__, manage_roles=False)
    assert again.applied == []
    changed = test_settings(timescale_url, timescale_retention="off")
    third = migrate(timescale_url, changed, select=SMOKE_FILES.__contains__, manage_roles=False)
    assert third.applied == ["R__timescale_policies.sql"]
    with psycopg.connect(timescale_url) as conn:
        retention = conn.execute(
            "SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
        ).fetchone()
    assert retention == (0,)
