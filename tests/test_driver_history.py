"""Driver assignment history (issue #15): a vehicle that changes hands keeps its old trips'
driver in reporting.v_trips, the driver-behaviour view and the driver-clock views; the device
sync (against the simulator) and the registry import keep the history; the migration seeds
it and keeps the views that read v_trips; the seed-002 views v_fleet_trace and
v_driver_clock_attnd.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from ingest.jobs import Ingestor
from ingest.registry import import_registry
from jimi_sim import SimConfig, SimServer
from run_migrations import migrate
from tests.conftest import test_settings
from tests.factories import (
    EAT,
    add_alarm,
    add_device,
    add_parking,
    add_track,
    add_trip,
    refresh_reporting,
)
from tests.sim_support import Clock
from ts_shared import JimiClient

IMEI = "862798050000101"
OTHER = "862798050000102"
D1 = date(2026, 11, 10)  # Alice drives
D2 = date(2026, 11, 12)  # Bob drives (assigned from 2026-11-11)


def at_eat(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=EAT).astimezone(UTC)


def periods(conn: psycopg.Connection[Any], imei: str = IMEI) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT driver_name, driver_phone, nullif(valid_from, '-infinity'), valid_to, source"
        " FROM tracksolid.driver_assignments WHERE imei = %s ORDER BY valid_from",
        (imei,),
    ).fetchall()


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.csv"
    path.write_text(text)
    return path


@pytest.fixture
def reassigned(pool: ConnectionPool, tmp_path: Path) -> dict[str, int]:
    """KDA 101A: Alice until 2026-11-11 00:00 EAT (registry import), Bob from then on; a trip,
    an idling stop and a harsh-braking alarm on D1 (Alice) and a trip on D2 (Bob)."""
    with pool.connection() as conn:
        add_device(conn, IMEI, "KDA 101A", driver_name="Alice Achieng", driver_phone="0700000001",
                   cost_centre="Nairobi-North", city="Nairobi")  # fmt: skip
        trip_a = add_trip(conn, IMEI, at_eat(D1, 8), duration_s=3600, distance_km=40.0)
        add_parking(conn, IMEI, at_eat(D1, 7, 45), duration_s=600, acc_on=True)
        add_alarm(conn, IMEI, at_eat(D1, 8, 20), "harshBraking", "Harsh braking")
        trip_b = add_trip(conn, IMEI, at_eat(D2, 9), duration_s=1800, distance_km=20.0)
    csv = f"IMEI,Driver,Phone,Assigned From\n{IMEI},Bob Otieno,0700000002,2026-11-11\n"
    report = import_registry(pool, write_csv(tmp_path, csv), apply=True)
    assert report.driver_changes == 1 and not report.ignored
    with pool.connection() as conn:
        refresh_reporting(conn)
    return {"a": trip_a, "b": trip_b}


@pytest.mark.both_engines  # position_history / v_trips differ per engine
def test_old_trips_keep_their_driver_in_v_trips(
    pool: ConnectionPool, reassigned: dict[str, int]
) -> None:
    with pool.connection() as conn:
        assert periods(conn) == [
            ("Alice Achieng", "0700000001", None, at_eat(date(2026, 11, 11), 0), "sql"),
            ("Bob Otieno", "0700000002", at_eat(date(2026, 11, 11), 0), None, "csv"),
        ]  # fmt: skip
        trips: dict[int, str] = dict(conn.execute(
            "SELECT trip_id, driver_name FROM reporting.v_trips WHERE imei = %s", (IMEI,)
        ).fetchall())  # fmt: skip
        assert trips == {reassigned["a"]: "Alice Achieng", reassigned["b"]: "Bob Otieno"}
        phones = conn.execute(
            "SELECT driver_phone FROM reporting.v_trips WHERE imei = %s ORDER BY start_time",
            (IMEI,),
        ).fetchall()
        assert phones == [("0700000001",), ("0700000002",)]
        # the registry shows the current driver
        assert conn.execute(
            "SELECT driver_name FROM tracksolid.devices WHERE imei = %s", (IMEI,)
        ).fetchone() == ("Bob Otieno",)
        # the daily summary counts one driver a day, the old one on D1
        assert conn.execute(
            "SELECT day, drivers FROM reporting.v_daily_summary WHERE day IN (%s, %s) ORDER BY day",
            (D1, D2),
        ).fetchall() == [(D1, 1), (D2, 1)]


def test_old_trips_keep_their_driver_in_driver_behaviour_and_clock(
    pool: ConnectionPool, reassigned: dict[str, int]
) -> None:
    with pool.connection() as conn:
        behaviour = conn.execute(
            "SELECT day, driver_name, trips, distance_km, harsh_braking"
            " FROM reporting.v_driver_aggregates_daily WHERE imei = %s ORDER BY day",
            (IMEI,),
        ).fetchall()
        assert behaviour == [(D1, "Alice Achieng", 1, 40, 1), (D2, "Bob Otieno", 1, 20, 0)]
        clock = conn.execute(
            "SELECT day, driver_name, driver_phone, first_ignition_on, trips"
            " FROM reporting.v_driver_clock_daily WHERE imei = %s ORDER BY day",
            (IMEI,),
        ).fetchall()
        assert clock == [
            (D1, "Alice Achieng", "0700000001", at_eat(D1, 7, 45), 1),
            (D2, "Bob Otieno", "0700000002", at_eat(D2, 9), 1),
        ]
        answer = conn.execute(
            "SELECT reporting.fn_driver_behaviour(%s, %s, NULL)", (D1, D2)
        ).fetchone()
        assert answer is not None
        drivers = {d["driver_name"]: d["trips"] for d in answer[0]["drivers"]}
        assert drivers == {"Alice Achieng": 1, "Bob Otieno": 1}


def test_driver_clock_attendance_lists_the_assigned_driver_each_day(
    pool: ConnectionPool, reassigned: dict[str, int]
) -> None:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT day, driver_name, attended, clock_in_eat::text, trips"
            " FROM reporting.v_driver_clock_attnd WHERE imei = %s AND day <= %s ORDER BY day",
            (IMEI, D2),
        ).fetchall()
        assert rows == [
            (D1, "Alice Achieng", True, "07:45:00", 1),
            (date(2026, 11, 11), "Bob Otieno", False, None, 0),
            (D2, "Bob Otieno", True, "09:00:00", 1),
        ]
        comment = conn.execute(
            "SELECT obj_description('tracksolid.v_driver_clock_attnd'::regclass, 'pg_class')"
        ).fetchone()
        assert comment is not None and comment[0].startswith("seed 002")


def test_trips_map_filters_by_a_former_driver(
    pool: ConnectionPool, reassigned: dict[str, int]
) -> None:
    with pool.connection() as conn:
        doc = conn.execute(
            "SELECT reporting.fn_trips_for_map(NULL, 'alice achieng', NULL, NULL, %s, %s)",
            (at_eat(D1, 0), at_eat(D2, 23)),
        ).fetchone()
    assert doc is not None
    assert [f["properties"]["trip_id"] for f in doc[0]["features"]] == [reassigned["a"]]


def test_unchanged_driver_and_api_nulls_change_nothing(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    with pool.connection() as conn:
        add_device(conn, IMEI, "KDA 101A", driver_name="Alice Achieng")
        before = periods(conn)
        # the API sends nulls (never erase) and the same driver in other spelling
        conn.execute("UPDATE tracksolid.devices SET driver_name = NULL WHERE imei = %s", (IMEI,))
        conn.execute(
            "UPDATE tracksolid.devices SET driver_name = ' alice ACHIENG ' WHERE imei = %s",
            (IMEI,),
        )
        assert periods(conn) == before
        # a new phone number is stored on the current period, no new period
        conn.execute(
            "UPDATE tracksolid.devices SET driver_phone = '0711111111' WHERE imei = %s", (IMEI,)
        )
        assert [p[:2] for p in periods(conn)] == [("Alice Achieng", "0711111111")]
    csv = f"IMEI,Driver\n{IMEI},Alice Achieng\n"
    again = import_registry(pool, write_csv(tmp_path, csv), apply=True)
    assert again.driver_changes == 0
    with pool.connection() as conn:
        assert len(periods(conn)) == 1


def test_explicit_assigned_from_replaces_later_records(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    """The sync saw Bob on 2026-11-20; the registry says he took over on the 15th."""
    with pool.connection() as conn:
        add_device(conn, IMEI, "KDA 101A", driver_name="Alice Achieng")
        conn.execute("SELECT set_config('tracksolid.assigned_at', %s, true)",
                     (at_eat(date(2026, 11, 20), 10).isoformat(),))  # fmt: skip
        conn.execute("UPDATE tracksolid.devices SET driver_name = 'Bob Otieno' WHERE imei = %s",
                     (IMEI,))  # fmt: skip
        conn.commit()
        assert [(p[0], p[2]) for p in periods(conn)][1] == (
            "Bob Otieno", at_eat(date(2026, 11, 20), 10))  # fmt: skip
    csv = f"IMEI,Driver,Assigned From\n{IMEI},Bob Otieno,2026-11-15 06:30\n"
    import_registry(pool, write_csv(tmp_path, csv), apply=True)
    with pool.connection() as conn:
        got = [(p[0], p[3]) for p in periods(conn)]
        assert got == [
            ("Alice Achieng", at_eat(date(2026, 11, 15), 6, 30)),
            ("Bob Otieno", None),
        ]


def test_periods_never_overlap(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        add_device(conn, IMEI, "KDA 101A", driver_name="Alice Achieng")
        with pytest.raises(psycopg.errors.ExclusionViolation):
            conn.execute(
                "INSERT INTO tracksolid.driver_assignments"
                " (imei, driver_name, valid_from, source) VALUES (%s, 'Eve', now(), 'sql')",
                (IMEI,),
            )


# ── the device sync against the simulator ──────────────────────────────────────────────────

T = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(T)


@pytest.fixture
def sim(clock: Clock) -> Iterator[SimServer]:
    server = SimServer(SimConfig(devices=3, accounts=1, seed=5))
    server.api.clock = clock.epoch
    server.start()
    yield server
    server.stop()


def sim_ingestor(db_url: str, pool: ConnectionPool, sim: SimServer, clock: Clock) -> Ingestor:
    settings = test_settings(
        db_url,
        tracksolid_api_url=sim.url,
        tracksolid_app_key="demo-app-key",
        tracksolid_app_secret="demo-app-secret",
        tracksolid_user_id="fireside",
        tracksolid_user_pwd="demo-password",
        tracksolid_targets="fireside",
        ingest_api_concurrency=1,
    )
    client = JimiClient(settings, pool, sleep=lambda s: None, now=clock.now)
    return Ingestor(settings, pool, client, now=clock.now)


def hand_over(sim: SimServer, imei: str, driver: str, phone: str) -> None:
    """The vehicle changes hands in Tracksolid (the simulator's model of it)."""
    fleet = sim.fleet
    new = dataclasses.replace(fleet.device(imei), driver_name=driver, driver_phone=phone)
    fleet._devices[new.index] = new
    fleet._by_imei[imei] = new


def test_device_sync_records_a_handover_from_the_sync_time(
    db_url: str, pool: ConnectionPool, sim: SimServer, clock: Clock
) -> None:
    ingestor = sim_ingestor(db_url, pool, sim, clock)
    dev = sim.fleet.devices()[0]
    assert ingestor.sync_devices().ok
    with pool.connection() as conn:
        first = periods(conn, dev.imei)
        assert [(p[0], p[3]) for p in first] == [(dev.driver_name, None)]
        add_trip(conn, dev.imei, T - timedelta(hours=3), duration_s=1200, distance_km=9.0)
    clock.moment = T + timedelta(hours=6)
    hand_over(sim, dev.imei, "Zawadi Njeri", "0799000000")
    assert ingestor.sync_devices().ok
    assert ingestor.sync_devices().ok  # unchanged now: no new period
    with pool.connection() as conn:
        add_trip(conn, dev.imei, T + timedelta(hours=7), duration_s=1200, distance_km=9.0)
        got = [(p[0], p[2], p[3], p[4]) for p in periods(conn, dev.imei)]
        assert got[1:] == [("Zawadi Njeri", T + timedelta(hours=6), None, "api")]
        assert got[0][0] == dev.driver_name and got[0][2] == T + timedelta(hours=6)
        others = [d.imei for d in sim.fleet.devices()[1:]]
        assert all(len(periods(conn, i)) == 1 for i in others)
        refresh_reporting(conn)
        assert conn.execute(
            "SELECT driver_name FROM reporting.v_trips WHERE imei = %s ORDER BY start_time",
            (dev.imei,),
        ).fetchall() == [(dev.driver_name,), ("Zawadi Njeri",)]


# ── the migration: seed and the views that read v_trips ────────────────────────────────────


OLD_REPORTING = ("0301_reporting_refresh_log.sql", "0302_reporting_v_trips.sql")


def test_migration_seeds_history_and_keeps_dependants_of_v_trips(empty_db: str) -> None:
    settings = test_settings(empty_db)
    migrate(empty_db, settings, select=lambda name: name < "0105" or name in OLD_REPORTING)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        add_device(conn, IMEI, "KDA 101A", driver_name="Alice Achieng")
        add_device(conn, OTHER, "KDA 102A")
        add_trip(conn, IMEI, at_eat(D1, 8), duration_s=600, distance_km=5.0)
        refresh_reporting(conn)
        conn.execute("CREATE VIEW reporting.x_drivers AS SELECT trip_id, driver_name"
                     " FROM reporting.v_trips")  # fmt: skip
        conn.execute("COMMENT ON VIEW reporting.x_drivers IS 'an operator''s view'")
    migrate(empty_db, settings)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        seeded = conn.execute(
            "SELECT imei, driver_name, valid_from = '-infinity', valid_to, source"
            " FROM tracksolid.driver_assignments"
        ).fetchall()
        assert seeded == [(IMEI, "Alice Achieng", True, None, "seed")]
        assert conn.execute("SELECT driver_name FROM reporting.x_drivers").fetchall() == [
            ("Alice Achieng",)
        ]
        assert conn.execute(
            "SELECT obj_description('reporting.x_drivers'::regclass, 'pg_class')"
        ).fetchone() == ("an operator's view",)


# ── seed 002: v_fleet_trace ────────────────────────────────────────────────────────────────


@pytest.mark.both_engines  # position_history / v_trips differ per engine
def test_fleet_trace_is_the_plausible_trail_with_the_driver_at_each_fix(
    pool: ConnectionPool,
) -> None:
    with pool.connection() as conn:
        add_device(conn, IMEI, "KDA 101A", driver_name="Alice Achieng")
        start = conn.execute("SELECT date_trunc('second', now()) - interval '2 hours'").fetchone()
        assert start is not None
        t0: datetime = start[0]
        conn.execute("SELECT set_config('tracksolid.assigned_at', %s, true)",
                     ((t0 + timedelta(minutes=2, seconds=30)).isoformat(),))  # fmt: skip
        conn.execute("UPDATE tracksolid.devices SET driver_name = 'Bob Otieno' WHERE imei = %s",
                     (IMEI,))  # fmt: skip
        trail = [(-1.29, 36.82), (-1.28, 36.82), (5.0, 5.0), (-1.27, 36.82), (-1.26, 36.82)]
        times = add_track(conn, IMEI, t0, trail, flagged=(2,))
        add_track(conn, IMEI, t0 - timedelta(days=2), [(-1.0, 36.0)])  # older than 24 h
        rows = conn.execute(
            "SELECT seq, gps_time, driver_name, gap_s FROM reporting.v_fleet_trace"
            " WHERE imei = %s ORDER BY seq",
            (IMEI,),
        ).fetchall()
        assert rows == [
            (1, times[0], "Alice Achieng", None),
            (2, times[1], "Alice Achieng", 60),
            (3, times[3], "Bob Otieno", 120),
            (4, times[4], "Bob Otieno", 60),
        ]
        comment = conn.execute(
            "SELECT obj_description('tracksolid.v_fleet_trace'::regclass, 'pg_class')"
        ).fetchone()
        assert comment is not None and comment[0].startswith("seed 002")
