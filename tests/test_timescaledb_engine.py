"""The production engine as production runs it: compression, retention and the continuous
aggregate on a real TimescaleDB + PostGIS server (background workers on).

- every chunk of every hypertable compressed: the read-API answers exactly as before;
- a re-poll of an old window and a late push land in compressed chunks, no error, no duplicate;
- the retention policy drops only hypertable chunks past TIMESCALE_RETENTION, nothing else,
  and the daily roll-up of the dropped days survives;
- daily mileage reads give the same numbers on TimescaleDB and plain PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from dashboard_api import create_app
from ingest.jobs import refresh_daily_rollup
from ingest.parse import PositionRow
from ingest.quality import QualityRules
from ingest.writers import write_positions
from run_migrations import MigrationError, migrate
from tests import push_factories as pf
from tests.conftest import PLAIN, TIMESCALEDB, test_settings
from tests.factories import CLOCK_KEYS, TODAY_KEYS, Fleet, seed_fleet, without_clock
from webhook_receiver import create_app as create_receiver

pytestmark = pytest.mark.timescaledb_only

HYPERTABLES = ("position_history", "heartbeats", "fuel_readings", "temperature_readings")
RULES = QualityRules()
TOKEN = "engine-test-token"


# ── helpers ─────────────────────────────────────────────────────────────────────────────────


def hold_background_jobs(conn: psycopg.Connection[Any]) -> None:
    """Stop this database's TimescaleDB scheduler (the server's workers stay on). A test that
    compresses or runs a policy itself must not race the scheduler running the same policy:
    the two can deadlock, which in production only costs a retry of the job."""
    conn.execute("SELECT _timescaledb_functions.stop_background_workers()")


def compress_everything(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """compress_chunk() on every chunk of every hypertable; returns compressed chunks per
    table (all of them, checked)."""
    hold_background_jobs(conn)
    done: dict[str, int] = {}
    for table in HYPERTABLES:
        conn.execute(
            "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks(%s::regclass) c",
            (f"tracksolid.{table}",),
        )
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE is_compressed), count(*)"
            " FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = 'tracksolid' AND hypertable_name = %s",
            (table,),
        ).fetchone()
        assert row is not None and row[0] == row[1], f"{table}: {row}"
        done[table] = int(row[0])
    return done


def add_sensor_rows(conn: psycopg.Connection[Any], imei: str, start: datetime) -> None:
    """Heartbeats, fuel and temperature readings over two days (the seed has none)."""
    for hours in range(0, 48, 6):
        at = start + timedelta(hours=hours)
        conn.execute(
            "INSERT INTO tracksolid.heartbeats (imei, gate_time, power_level, gsm_signal, acc_on)"
            " VALUES (%s, %s, 5, 4, true)",
            (imei, at),
        )
        conn.execute(
            "INSERT INTO tracksolid.fuel_readings (imei, reading_time, fuel_level, unit)"
            " VALUES (%s, %s, %s, 'L')",
            (imei, at, 60 - hours / 2),
        )
        conn.execute(
            "INSERT INTO tracksolid.temperature_readings (imei, reading_time, sensor,"
            " temperature_c) VALUES (%s, %s, 'T1', %s)",
            (imei, at, 20 + hours / 10),
        )


def read_api_answers(client: TestClient, fleet: Fleet) -> dict[str, Any]:
    """Live positions, a vehicle's track, the trips map, the summaries and the analytics."""
    window = {
        "start": (fleet.today_start - timedelta(days=5)).isoformat(),
        "end": (fleet.now + timedelta(minutes=1)).isoformat(),
    }
    asks: dict[str, tuple[str, str, dict[str, Any]]] = {
        "live": ("GET", "/webhook/live-positions", {}),
        "track": ("GET", "/webhook/live-positions/track", {"vehicle_number": "KCA 542Q"}),
        "track_5d": (
            "GET",
            "/webhook/live-positions/track",
            {"vehicle_number": "KCA 542Q", "hours": "120"},
        ),
        "trips_map": ("POST", "/webhook/fleet-dashboard", window),
        "fleet_summary": ("GET", "/analytics/fleet-summary", {}),
        "utilisation": ("GET", "/analytics/utilisation", {}),
        "driver_behaviour": ("GET", "/analytics/driver-behaviour", {}),
        "filters": ("GET", "/analytics/filters", {}),
    }
    answers: dict[str, Any] = {}
    for name, (method, path, params) in asks.items():
        if method == "GET":
            response = client.get(path, params=params)
        else:
            response = client.post(path, json=params)
        assert response.status_code == 200, (name, response.text)
        keys = CLOCK_KEYS | TODAY_KEYS if name == "utilisation" else CLOCK_KEYS
        answer = without_clock(response.json(), keys)
        if name == "fleet_summary":  # "idle for N s so far" moves with the clock
            for vehicle in answer["currently_idle"]:
                vehicle.pop("idle_s")
        if name.startswith("track"):  # "the last N hours" moves with the clock between calls
            answer["summary"].pop("start")
            answer["summary"].pop("end")
        answers[name] = answer
    return answers


def position_rows(conn: psycopg.Connection[Any], imei: str) -> list[PositionRow]:
    """The stored fixes of a device as the poller would parse them again."""
    rows = conn.execute(
        "SELECT imei, gps_time, lat, lng, speed_kmh, direction_deg, acc_on, pos_type,"
        " satellites, gps_mode, altitude_m, mileage_km, source FROM tracksolid.position_history"
        " WHERE imei = %s ORDER BY gps_time",
        (imei,),
    ).fetchall()
    return [PositionRow(*row) for row in rows]


def history_stats(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """(rows, distinct (imei, gps_time)) of position_history."""
    row = conn.execute(
        "SELECT count(*), count(DISTINCT (imei, gps_time)) FROM tracksolid.position_history"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# ── compression ─────────────────────────────────────────────────────────────────────────────


@pytest.fixture
def fleet(db_url: str) -> Fleet:
    with psycopg.connect(db_url, autocommit=True) as conn:
        fleet = seed_fleet(conn)
        add_sensor_rows(conn, fleet.imeis["KCA 542Q"], fleet.now - timedelta(days=3))
        # An ongoing stop grows with the wall clock between two calls (idle seconds so far):
        # end it, so that two answers a few seconds apart can be compared exactly.
        conn.execute(
            "UPDATE tracksolid.parking_events SET end_time = start_time + interval '10 min',"
            " duration_s = 600 WHERE end_time IS NULL"
        )
    return fleet


def test_compressed_chunks_answer_exactly_as_before(db_url: str, fleet: Fleet) -> None:
    settings = test_settings(db_url, vtrips_refresh_interval_s=0)
    with TestClient(create_app(settings)) as client:
        before = read_api_answers(client, fleet)
        assert before["track"]["features"], "the seed has a track to compare"
        assert before["trips_map"]["features"], "the seed has trips to compare"
        with psycopg.connect(db_url, autocommit=True) as conn:
            rollup_before = conn.execute(
                "SELECT * FROM tracksolid.v_mileage_daily_cagg ORDER BY imei, day"
            ).fetchall()
            compressed = compress_everything(conn)
            rollup_after = conn.execute(
                "SELECT * FROM tracksolid.v_mileage_daily_cagg ORDER BY imei, day"
            ).fetchall()
        assert all(n > 0 for n in compressed.values()), compressed
        after = read_api_answers(client, fleet)
    for name in before:
        assert after[name] == before[name], name
    assert rollup_after == rollup_before and rollup_before


def test_repoll_and_late_push_land_in_compressed_chunks(
    db_url: str, fleet: Fleet, tmp_path: Path
) -> None:
    imei = fleet.imeis["KCA 542Q"]  # with fixes 2.5 h and 30 h ago
    with psycopg.connect(db_url, autocommit=True) as conn:
        stored = position_rows(conn, imei)
        assert len(stored) > 10
        compress_everything(conn)
        rows_before, _ = history_stats(conn)

    # A re-poll of the whole old window: the same fixes again, plus three the first poll missed
    # (between stored fixes, before them all), through the worker's writer.
    old = stored[5].gps_time.replace(microsecond=0)  # pushes carry whole seconds
    missed = [
        dataclasses.replace(stored[0], gps_time=stored[0].gps_time + timedelta(seconds=7)),
        dataclasses.replace(stored[0], gps_time=stored[0].gps_time - timedelta(hours=1)),
        dataclasses.replace(stored[5], gps_time=old),
    ]
    with psycopg.connect(db_url) as conn:
        inserted, _flagged = write_positions(conn, [*stored, *missed], RULES)
        conn.commit()
    assert inserted == 3

    # A late push of fixes inside the compressed window: one already stored, one new.
    late = [
        pf.gps(imei, old, lat=f"{stored[5].lat:.6f}", lng=f"{stored[5].lng:.6f}"),
        pf.gps(imei, old + timedelta(seconds=3), lat="-1.270000", lng="36.810000"),
    ]
    settings = test_settings(
        db_url, jimi_push_token=TOKEN, webhook_spool_dir=str(tmp_path / "spool")
    )
    with TestClient(create_receiver(settings)) as receiver:
        for _ in range(2):  # JIMI retries a delivery it thinks failed
            response = receiver.post("/pushgps", data=pf.iothub_form(late, TOKEN))
            assert response.status_code == 200, response.text

    with psycopg.connect(db_url, autocommit=True) as conn:
        rows_after, distinct_after = history_stats(conn)
        assert rows_after == rows_before + 4, "three re-polled + one pushed fix are new"
        assert distinct_after == rows_after, "no duplicate (imei, gps_time)"
        # The new fixes really are in chunks that are (partially) compressed.
        where = conn.execute(
            "SELECT count(*) FROM tracksolid.position_history p"
            " JOIN timescaledb_information.chunks c ON c.hypertable_name = 'position_history'"
            "  AND p.gps_time >= c.range_start AND p.gps_time < c.range_end"
            " WHERE c.is_compressed AND p.imei = %s AND p.gps_time = ANY(%s)",
            (imei, [m.gps_time for m in missed] + [old + timedelta(seconds=3)]),
        ).fetchone()
        assert where == (4,)
        stored_push = conn.execute(
            "SELECT source FROM tracksolid.position_history WHERE imei = %s AND gps_time = %s",
            (imei, old),
        ).fetchall()
        assert stored_push == [(stored[5].source,)], "the stored fix is kept, not replaced"


# ── retention ──────────────────────────────────────────────────────────────────────────────


def test_retention_removes_only_old_hypertable_chunks(db_url: str) -> None:
    with pytest.raises(MigrationError, match="TIMESCALE_RETENTION=3 days is too short"):
        migrate(db_url, test_settings(db_url, timescale_retention="3 days"))
    settings = test_settings(db_url, timescale_retention="30 days")
    report = migrate(db_url, settings)
    assert "R__timescale_policies.sql" in report.applied, "the policy file re-applies"
    now = datetime.now(UTC).replace(microsecond=0)
    ages = (90, 45, 20, 1)  # days
    with psycopg.connect(db_url, autocommit=True) as conn:
        for days in ages:
            at = now - timedelta(days=days)
            conn.execute(
                "INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh,"
                " mileage_km, source) SELECT 'R1', %s + make_interval(mins => g), -1.29, 36.82,"
                " 30, 1000 + g, 'poll' FROM generate_series(0, 9) g",
                (at,),
            )
            add_sensor_rows(conn, "R1", at - timedelta(hours=1))
            conn.execute(
                "INSERT INTO tracksolid.trips (imei, start_time, end_time, distance_km, source)"
                " VALUES ('R1', %s, %s, 9, 'mileage')",
                (at, at + timedelta(minutes=9)),
            )
        assert refresh_daily_rollup(conn) == "continuous"
        rollup_before = conn.execute(
            "SELECT day, fixes FROM tracksolid.v_mileage_daily_cagg WHERE imei = 'R1' ORDER BY day"
        ).fetchall()
        jobs = conn.execute(
            "SELECT job_id, hypertable_name FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_retention' AND hypertable_schema = 'tracksolid'"
        ).fetchall()
        assert {j[1] for j in jobs} == set(HYPERTABLES)
        hold_background_jobs(conn)
        for job_id, _table in jobs:
            conn.execute("CALL run_job(%s)", (job_id,))

        cutoff = now - timedelta(days=30)
        oldest = {
            table: conn.execute(f"SELECT min({column}) FROM tracksolid.{table}").fetchone()
            for table, column in (
                ("position_history", "gps_time"),
                ("heartbeats", "gate_time"),
                ("fuel_readings", "reading_time"),
                ("temperature_readings", "reading_time"),
            )
        }
        for table, row in oldest.items():
            assert row is not None and row[0] is not None, table
            # Whole chunks go: nothing past the cutoff's chunk survives, recent data all does.
            assert row[0] >= cutoff - timedelta(days=7), (table, row[0])
        kept = conn.execute(
            "SELECT count(*) FROM tracksolid.position_history WHERE gps_time >= %s", (cutoff,)
        ).fetchone()
        assert kept == (20,), "the 20 and 1 day old fixes stay"
        gone = conn.execute(
            "SELECT count(*) FROM tracksolid.position_history WHERE gps_time < %s",
            (now - timedelta(days=40),),
        ).fetchone()
        assert gone == (0,)
        trips = conn.execute("SELECT count(*) FROM tracksolid.trips").fetchone()
        assert trips == (len(ages),), "retention touches hypertables only"
        rollup_after = conn.execute(
            "SELECT day, fixes FROM tracksolid.v_mileage_daily_cagg WHERE imei = 'R1' ORDER BY day"
        ).fetchall()
        assert refresh_daily_rollup(conn) == "continuous"
        rollup_refreshed = conn.execute(
            "SELECT day, fixes FROM tracksolid.v_mileage_daily_cagg WHERE imei = 'R1' ORDER BY day"
        ).fetchall()
    assert rollup_after == rollup_before == rollup_refreshed, "the daily roll-up keeps history"


# ── the two engines agree ─────────────────────────────────────────────────────────────────


def test_daily_mileage_is_the_same_on_both_engines(twin_dbs: dict[str, str]) -> None:
    # Two weeks of a small fleet, with fixes on both sides of UTC midnight and a gap day.
    start = datetime(2026, 11, 10, 21, 30, tzinfo=UTC)
    fixes = [
        (f"86{v:013d}", start + timedelta(minutes=7 * i), -1.3 + i * 1e-4, 36.8 + v * 0.01,
         float((i * 13 + v) % 90), 5000.0 * v + i * 0.35)
        for v in range(1, 6)
        for i in range(0, 14 * 24 * 60 // 7, 3 if v % 2 else 1)
        if not (v == 3 and 500 < i < 700)
    ]  # fmt: skip
    late = [
        (imei, t + timedelta(days=20), lat, lng, speed, km + 900)
        for imei, t, lat, lng, speed, km in fixes[:200]
    ]
    answers: dict[str, list[list[tuple[Any, ...]]]] = {}
    for engine, url in twin_dbs.items():
        reads = []
        with psycopg.connect(url, autocommit=True) as conn:
            for batch in (fixes, late):
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng,"
                        " speed_kmh, mileage_km, source) VALUES (%s, %s, %s, %s, %s, %s, 'poll')",
                        batch,
                    )
                refresh_daily_rollup(conn)
                reads.append(
                    conn.execute(
                        "SELECT imei, day, fixes, moving_fixes, max_speed_kmh,"
                        " round(avg_speed_kmh::numeric, 6), min_mileage_km, max_mileage_km,"
                        " first_fix, last_fix FROM tracksolid.v_mileage_daily_cagg"
                        " ORDER BY imei, day"
                    ).fetchall()
                )
        answers[engine] = reads
    assert len(answers[PLAIN][0]) > 50
    assert len(answers[PLAIN][1]) > len(answers[PLAIN][0])
    assert answers[TIMESCALEDB] == answers[PLAIN]
    # Real-time aggregation: rows newer than the last refresh count on TimescaleDB at once.
    with psycopg.connect(twin_dbs[TIMESCALEDB], autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh,"
            " mileage_km, source) VALUES ('8600000000009', now(), -1.3, 36.8, 10, 1, 'poll')"
        )
        today = conn.execute(
            "SELECT fixes FROM tracksolid.v_mileage_daily_cagg WHERE imei = '8600000000009'"
        ).fetchall()
    assert today == [(1,)]
    assert json.dumps(answers[PLAIN][0][0], default=str)  # readable rows, not just equal
