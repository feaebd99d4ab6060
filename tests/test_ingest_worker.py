"""The ingest worker against the Jimi simulator on loopback and a real PostgreSQL.

Both the simulator and the worker run on one fixed test clock (`T`), so every assertion
compares the database with the simulator's own model for an exact window.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from ingest.jobs import Ingestor
from ingest_worker import JOB_NAMES, ONCE, run_once
from jimi_sim import SimConfig, SimServer
from tests.conftest import ROOT, test_settings
from tests.sim_support import SIM_CREDENTIALS, Clock
from ts_shared import JimiClient, Settings

# Production runs TimescaleDB; plain PostgreSQL + PostGIS stays supported: both, every test.
pytestmark = pytest.mark.both_engines

T = datetime(2026, 11, 24, 13, 0, 0, tzinfo=UTC)  # mid-working-day in EAT
DAY = timedelta(days=1)


@pytest.fixture
def clock() -> Clock:
    return Clock(T)


@pytest.fixture
def sim(clock: Clock) -> Iterator[SimServer]:
    server = SimServer(SimConfig(devices=9, accounts=3, seed=3))
    server.api.clock = clock.epoch
    server.start()
    yield server
    server.stop()


def worker_settings(db_url: str, sim: SimServer, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "tracksolid_api_url": sim.url,
        **SIM_CREDENTIALS,
        "tracksolid_targets": "fireside,Fireside@HQ,Fireside_MSA",
        "ingest_catchup_days": 1,
        "jimi_max_attempts": 8,
    }
    values.update(extra)
    return test_settings(db_url, **values)


def make_ingestor(settings: Settings, pool: ConnectionPool, clock: Clock) -> Ingestor:
    client = JimiClient(settings, pool, sleep=lambda s: None, now=clock.now)
    return Ingestor(settings, pool, client, now=clock.now)


def counts(pool: ConnectionPool) -> dict[str, int]:
    tables = ("devices", "live_positions", "position_history", "trips", "parking_events",
              "alarms")  # fmt: skip
    with pool.connection() as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM tracksolid.{t}").fetchone()[0]  # type: ignore[index]
            for t in tables
        }


def full_cycle(ingestor: Ingestor) -> None:
    """One `--once` cycle: device sync, catch-up, then every job once."""
    assert run_once(ingestor, ONCE) == 0


# ── one cycle: every table, the expected rows, units and fields ───────────────


def test_cycle_fills_every_table_exactly_as_the_model(
    db_url: str, pool: ConnectionPool, sim: SimServer, clock: Clock
) -> None:
    settings = worker_settings(db_url, sim)
    full_cycle(make_ingestor(settings, pool, clock))
    fleet = sim.fleet
    begin = T - DAY

    with pool.connection() as conn:
        devices = {r[0]: r[1:] for r in conn.execute(
            "SELECT imei, vehicle_number, driver_name, driver_phone, account, sim"
            " FROM tracksolid.devices").fetchall()}  # fmt: skip
        assert len(devices) == 9
        for dev in fleet.devices():
            # FIX-M18: vehicle and driver come from the detail call; FIX-M19: the owner.
            assert devices[dev.imei] == (
                dev.vehicle_number,
                dev.driver_name,
                dev.driver_phone,
                dev.account,
                dev.sim,
            )

        for dev in fleet.devices():
            imei = dev.imei
            fix = fleet.position_at(imei, T)
            live = conn.execute(
                "SELECT gps_time, lat, lng, acc_on, source, account FROM tracksolid.live_positions"
                " WHERE imei = %s", (imei,)).fetchone()  # fmt: skip
            assert live is not None
            assert live[0] == fix.gps_time and live[1:3] == pytest.approx((fix.lat, fix.lng))
            assert live[3] == fix.acc_on and live[4] == "poll" and live[5] == dev.account

            track = {
                r[0] for r in conn.execute(
                    "SELECT gps_time FROM tracksolid.position_history WHERE imei = %s"
                    " AND gps_time BETWEEN %s AND %s", (imei, begin, T)).fetchall()
            }  # fmt: skip
            expected = {f.gps_time for f in fleet.track(imei, begin, T)}
            assert expected <= track, "every model fix of the day is stored"
            assert track - expected <= {fix.gps_time}, "nothing else (the live fix at most)"

            trips = conn.execute(
                "SELECT start_time, end_time, distance_km, driving_time_s FROM tracksolid.trips"
                " WHERE imei = %s ORDER BY start_time", (imei,)).fetchall()  # fmt: skip
            model_trips = fleet.trips(imei, begin, T)
            assert [t[0] for t in trips] == [m.start_time for m in model_trips]
            for got, want in zip(trips, model_trips, strict=True):
                # FIX-M11/M16: the API's metres are stored as km, once.
                assert float(got[2]) == pytest.approx(want.distance_m / 1000, abs=0.001)
                assert got[1] == want.end_time

            for acc_on in (False, True):
                stops = conn.execute(
                    "SELECT start_time, duration_s FROM tracksolid.parking_events"
                    " WHERE imei = %s AND acc_on = %s ORDER BY start_time", (imei, acc_on)
                ).fetchall()  # fmt: skip
                model_stops = fleet.stops(imei, begin, T, acc_on)
                assert [s[0] for s in stops] == [m.start_time for m in model_stops]
                assert [s[1] for s in stops] == [m.duration_s for m in model_stops]  # durSecond

            alarms = conn.execute(
                "SELECT alarm_time, alarm_type, alarm_name FROM tracksolid.alarms"
                " WHERE imei = %s ORDER BY alarm_time, alarm_type", (imei,)).fetchall()  # fmt: skip
            model_alarms = sorted(
                (a.alarm_time, a.type_id, a.type_name) for a in fleet.alarms(imei, begin, T)
            )
            assert alarms == model_alarms  # FIX-E06: alertTypeId + alarmTypeName

    totals = counts(pool)
    assert all(v > 0 for v in totals.values()), totals
    with pool.connection() as conn:
        rollup = conn.execute(
            "SELECT sum(fixes) FROM tracksolid.v_mileage_daily_cagg").fetchone()  # fmt: skip
    assert rollup is not None and rollup[0] == totals["position_history"], "daily roll-up refreshed"
    with pool.connection() as conn:
        sources: dict[str, int] = dict(conn.execute(
            "SELECT source, count(*) FROM tracksolid.position_history GROUP BY source"
        ).fetchall())  # fmt: skip
        assert sources.get("track_list", 0) > 0
        logged = {
            r[0]
            for r in conn.execute(
                "SELECT method FROM tracksolid.ingestion_log WHERE source = 'api' AND ok"
            ).fetchall()
        }
    assert {"jimi.user.device.list", "jimi.track.device.detail",
            "jimi.user.device.location.list", "jimi.device.track.list",
            "jimi.device.track.mileage", "jimi.open.platform.report.parking",
            "jimi.device.alarm.list"} <= logged  # fmt: skip


def test_second_cycle_adds_nothing_and_live_never_goes_back(
    db_url: str, pool: ConnectionPool, sim: SimServer, clock: Clock
) -> None:
    ingestor = make_ingestor(worker_settings(db_url, sim), pool, clock)
    full_cycle(ingestor)
    before = counts(pool)
    with pool.connection() as conn:
        mark = conn.execute("SELECT max(log_id) FROM tracksolid.ingestion_log").fetchone()
    full_cycle(ingestor)
    assert counts(pool) == before
    with pool.connection() as conn:
        second = conn.execute(
            "SELECT method, rows FROM tracksolid.ingestion_log WHERE source = 'job'"
            " AND log_id > %s ORDER BY log_id", (mark[0] if mark else 0,)).fetchall()  # fmt: skip
    assert len(second) == len(ONCE) + 3, "catch-up logs one row per windowed job"
    assert all(r[1] == 0 for r in second), second

    # A live poll answering an older fix than the stored one never moves the vehicle back.
    imei = sim.fleet.devices()[0].imei
    future = T + timedelta(hours=1)
    with pool.connection() as conn:
        conn.execute("UPDATE tracksolid.live_positions SET gps_time = %s, lat = 1, lng = 2"
                     " WHERE imei = %s", (future, imei))  # fmt: skip
    ingestor.poll_live()
    with pool.connection() as conn:
        row = conn.execute("SELECT gps_time, lat, lng FROM tracksolid.live_positions"
                           " WHERE imei = %s", (imei,)).fetchone()  # fmt: skip
    assert row == (future, 1.0, 2.0)


def test_parking_is_asked_of_each_imeis_own_account(
    db_url: str, pool: ConnectionPool, sim: SimServer, clock: Clock
) -> None:
    ingestor = make_ingestor(worker_settings(db_url, sim), pool, clock)
    ingestor.sync_devices()
    sim.clear_requests()
    ingestor.poll_parking(catchup=True)
    parking = [r for r in sim.requests if r.method == "jimi.open.platform.report.parking"]
    assert parking, "parking was polled"
    for request in parking:
        owners = {sim.fleet.device(i).account for i in request.imeis}
        assert owners == {request.params["account"]}
        assert request.code == 0
    assert {r.params["acc_type"] for r in parking} == {"off", "on"}
    assert len({r.params["account"] for r in parking}) == 3


# ── failures: storms, token expiry, 5xx, slow and malformed replies ───────────


def test_cycle_completes_through_faults_and_records_them(
    db_url: str, pool: ConnectionPool, sim: SimServer, clock: Clock
) -> None:
    settings = worker_settings(db_url, sim, jimi_max_attempts=3, jimi_http_timeout_s=0.25)
    sim.faults.update({"fail_1006": 0.25, "fail_5xx": 0.1, "malformed": 0.05,
                       "slow_share": 0.03, "slow_ms": 400})  # fmt: skip
    ingestor = make_ingestor(settings, pool, clock)
    ingestor.sync_devices()
    sim.expire_all_tokens()  # token expiry mid-run
    ingestor.catchup()
    sim.expire_all_tokens()
    assert run_once(ingestor, JOB_NAMES) == 0, "the cycle completes"

    totals = counts(pool)
    assert totals["devices"] == 9 and totals["position_history"] > 100 and totals["trips"] > 0
    with pool.connection() as conn:
        retried = conn.execute(
            "SELECT count(*) FROM tracksolid.ingestion_log WHERE source = 'api' AND attempts > 1"
        ).fetchone()[0]  # type: ignore[index]
        codes = conn.execute(
            "SELECT string_agg(detail::text, ' ') FROM tracksolid.ingestion_log"
            " WHERE source = 'api' AND detail IS NOT NULL"
        ).fetchone()[0]  # type: ignore[index]
        drops = conn.execute(
            "SELECT sum((value)::int) FROM tracksolid.ingestion_log,"
            " jsonb_each_text(detail->'dropped') WHERE source = 'job'"
        ).fetchone()[0]  # type: ignore[index]
        tokens = conn.execute(
            "SELECT count(*) FROM tracksolid.ingestion_log WHERE method LIKE 'jimi.oauth.token%%'"
        ).fetchone()[0]  # type: ignore[index]
        failed = conn.execute(
            "SELECT count(*) FROM tracksolid.ingestion_log WHERE source = 'api' AND NOT ok"
        ).fetchone()[0]  # type: ignore[index]
        job_failures = conn.execute(
            "SELECT coalesce(sum((detail->>'failures')::int), 0) FROM tracksolid.ingestion_log"
            " WHERE source = 'job'"
        ).fetchone()[0]  # type: ignore[index]
    assert retried > 0 and "1006" in codes and ("http50" in codes or "timeout" in codes)
    assert drops > 0, "malformed items were dropped and counted"
    assert tokens >= 3, "a new token was fetched after each expiry"
    assert failed == job_failures or failed <= job_failures + 5
    # Whatever failed for good is in the log as a failed call, and the data that came is good.
    with pool.connection() as conn:
        bad = conn.execute(
            "SELECT count(*) FROM tracksolid.position_history WHERE (lat = 0 AND lng = 0)"
            " OR gps_time > %s",
            (T + DAY,),
        ).fetchone()[0]  # type: ignore[index]
    assert bad == 0


# ── catch-up: exact gap, resumable ───────────────────────────────────────────


def _track_times(pool: ConnectionPool, imei: str, begin: datetime, end: datetime) -> list[Any]:
    with pool.connection() as conn:
        return [r[0] for r in conn.execute(
            "SELECT gps_time FROM tracksolid.position_history WHERE imei = %s"
            " AND gps_time >= %s AND gps_time < %s ORDER BY gps_time",
            (imei, begin, end)).fetchall()]  # fmt: skip


def test_catchup_after_two_hour_outage_fills_exactly_the_gap(
    db_url: str, pool: ConnectionPool, sim: SimServer, clock: Clock
) -> None:
    settings = worker_settings(db_url, sim)
    clock.moment = T - timedelta(hours=2)
    ingestor = make_ingestor(settings, pool, clock)
    full_cycle(ingestor)
    before_outage = counts(pool)
    clock.moment = T  # two hours of downtime later
    ingestor.catchup()
    fleet = sim.fleet
    for dev in fleet.devices():
        # Every fix of the model, none twice, nothing else (a fix first seen by the live
        # poll keeps source 'poll'; the track list then adds nothing for that instant).
        expected = [f.gps_time for f in fleet.track(dev.imei, T - DAY, T)]
        assert _track_times(pool, dev.imei, T - DAY, T) == expected
        with pool.connection() as conn:
            trips = [r[0] for r in conn.execute(
                "SELECT start_time FROM tracksolid.trips WHERE imei = %s ORDER BY 1",
                (dev.imei,)).fetchall()]  # fmt: skip
        first_start = T - timedelta(hours=2) - DAY  # the first run's catch-up horizon
        assert trips == [t.start_time for t in fleet.trips(dev.imei, first_start, T)]
    assert counts(pool)["position_history"] > before_outage["position_history"]


def test_killed_catchup_resumes_without_duplicates(
    db_url: str, pool: ConnectionPool, sim: SimServer, clock: Clock
) -> None:
    settings = worker_settings(db_url, sim, ingest_catchup_days=3)
    ingestor = make_ingestor(settings, pool, clock)
    ingestor.sync_devices()
    calls = {"n": 0}
    original = ingestor.client.call

    def call_then_die(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 12:
            ingestor.stop.set()  # SIGTERM arrives in the middle of the catch-up
        return original(*args, **kwargs)

    ingestor.client.call = call_then_die  # type: ignore[method-assign]
    ingestor.catchup()
    partial = counts(pool)["position_history"]
    assert partial > 0
    ingestor.client.call = original  # type: ignore[method-assign]
    ingestor.stop.clear()
    ingestor.catchup()
    fleet = sim.fleet
    total_expected = sum(len(fleet.track(d.imei, T - 3 * DAY, T)) for d in fleet.devices())
    with pool.connection() as conn:
        stored = conn.execute(
            "SELECT count(*), count(DISTINCT (imei, gps_time)) FROM tracksolid.position_history"
            " WHERE source = 'track_list'").fetchone()  # fmt: skip
    assert stored == (total_expected, total_expected)
    assert partial < total_expected


# ── process behaviour ─────────────────────────────────────────────────────────


def test_sigterm_finishes_cleanly(db_url: str) -> None:
    sim = SimServer(SimConfig(devices=5, accounts=2, seed=5)).start()
    try:
        env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
            "DATABASE_URL": db_url, "TRACKSOLID_API_URL": sim.url,
            "TRACKSOLID_APP_KEY": "demo-app-key", "TRACKSOLID_APP_SECRET": "demo-app-secret",
            "TRACKSOLID_USER_ID": "fireside", "TRACKSOLID_USER_PWD": "demo-password",
            "TRACKSOLID_TARGETS": "fireside,Fireside@HQ", "INGEST_CATCHUP_DAYS": "1",
        }  # fmt: skip
        proc = subprocess.Popen([sys.executable, str(ROOT / "ingest_worker.py")], env=env,
                                cwd=ROOT, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 60
        with psycopg.connect(db_url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                n = conn.execute("SELECT count(*) FROM tracksolid.live_positions").fetchone()
                if n and n[0] > 0:
                    break
                time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        assert "signal SIGTERM received" in stderr and "Traceback" not in stderr
    finally:
        sim.stop()


def test_missing_credentials_exit_2_with_a_clear_message(db_url: str) -> None:
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": db_url}
    result = subprocess.run([sys.executable, str(ROOT / "ingest_worker.py"), "--once"], env=env,
                            cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 2
    assert "TRACKSOLID_APP_KEY" in result.stderr and "make demo" in result.stderr


def test_jobs_do_not_overlap_themselves(
    db_url: str, pool: ConnectionPool, sim: SimServer, clock: Clock
) -> None:
    """Two overlapping runs of one job stay correct (idempotent) — the scheduler also
    forbids them (max_instances=1); this checks the data side."""
    ingestor = make_ingestor(worker_settings(db_url, sim), pool, clock)
    ingestor.sync_devices()
    threads = [threading.Thread(target=ingestor.poll_track, kwargs={"catchup": True})
               for _ in range(2)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    fleet = sim.fleet
    expected = sum(len(fleet.track(d.imei, T - DAY, T)) for d in fleet.devices())
    assert counts(pool)["position_history"] == expected


def test_housekeeping_deletes_only_what_retention_allows(db_url: str, pool: ConnectionPool) -> None:
    settings = test_settings(db_url, push_inbox_retention_days=30, ingestion_log_retention_days=90)
    ingestor = Ingestor(settings, pool, JimiClient(settings, pool))
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO tracksolid.push_inbox (received_at, path, status)"
            " SELECT now() - make_interval(days => d) + interval '12 hours', '/pushgps', s"
            " FROM generate_series(1, 60) AS d, unnest(ARRAY['parsed', 'partial']) AS s"
        )
        conn.execute(
            "INSERT INTO tracksolid.ingestion_log (logged_at, source, method, ok)"
            " SELECT now() - make_interval(days => d) + interval '12 hours', 'api', 'x', true"
            " FROM generate_series(1, 120) AS d"
        )
    stats = ingestor.housekeeping(batch=7)  # several batches
    assert stats.updated["push_inbox_deleted"] == 30  # parsed, older than 30 days
    assert stats.updated["ingestion_log_deleted"] == 30  # older than 90 days
    with pool.connection() as conn:
        grouped = "SELECT status, count(*) FROM tracksolid.push_inbox GROUP BY status"
        left: dict[str, int] = dict(conn.execute(grouped).fetchall())
        oldest_log = conn.execute(
            "SELECT max(now() - logged_at) < interval '91 days' FROM tracksolid.ingestion_log"
            " WHERE source = 'api'").fetchone()  # fmt: skip
    assert left == {"parsed": 30, "partial": 60}, "deliveries with failures are kept"
    assert oldest_log == (True,)


def test_one_unknown_device_does_not_hold_back_its_batch(
    db_url: str, pool: ConnectionPool, sim: SimServer, clock: Clock
) -> None:
    """The API answers 1002 for a whole 50-IMEI call when one IMEI is not the account's: the
    worker retries that batch device by device, stores everyone else, and marks the device it
    refused `unknown_to_api`. A device no account ever listed (push / CSV) is asked alone
    from the start, so it never makes a batch of known devices fail."""
    ingestor = make_ingestor(worker_settings(db_url, sim), pool, clock)
    ingestor.sync_devices()
    ghost = "862798000000000"  # registered by push / CSV, unknown to the API
    moved = sim.fleet.devices()[0].imei  # listed by the last sync, then taken off its account
    sim.fleet.detach(moved)
    with pool.connection() as conn:
        conn.execute("INSERT INTO tracksolid.devices (imei, account, source)"
                     " VALUES (%s, 'fireside', 'push')", (ghost,))  # fmt: skip
    sim.clear_requests()
    stats = ingestor.poll_trips(catchup=True)
    fleet = sim.fleet
    known = [d for d in fleet.devices() if d.imei != moved]
    with pool.connection() as conn:
        for dev in known:
            stored = [r[0] for r in conn.execute(
                "SELECT start_time FROM tracksolid.trips WHERE imei = %s ORDER BY 1",
                (dev.imei,)).fetchall()]  # fmt: skip
            assert stored == [t.start_time for t in fleet.trips(dev.imei, T - DAY, T)]
        marks = writers_marks(conn)
        states: dict[str, str] = dict(conn.execute(
            "SELECT imei, poll_state FROM tracksolid.devices").fetchall())  # fmt: skip
    assert ghost not in marks and moved not in marks and all(d.imei in marks for d in known)
    assert states[ghost] == states[moved] == "unknown_to_api"
    assert {i for i, s in states.items() if s == "active"} == {d.imei for d in known}
    assert stats.updated["unknown_to_api"] == 2 and stats.failures == 0, stats.errors
    ghost_calls = [r for r in sim.requests if ghost in r.imeis]
    assert ghost_calls and all(r.imeis == [ghost] for r in ghost_calls), "asked alone"
    with pool.connection() as conn:
        refused = conn.execute(
            "SELECT target FROM tracksolid.ingestion_log WHERE method ="
            " 'jimi.device.track.mileage' AND result_code = 1002").fetchall()  # fmt: skip
    # the batch holding `moved`, then each one's own call (the audit names the device)
    assert sorted(r[0] or "" for r in refused) == sorted(["", ghost, moved])
    # The next run asks nothing about either.
    sim.clear_requests()
    assert ingestor.poll_trips().failures == 0
    asked = {i for r in sim.requests for i in r.imeis}
    assert asked and not asked & {ghost, moved}


def writers_marks(conn: Any) -> set[str]:
    rows = conn.execute(
        "SELECT imei FROM tracksolid.ingest_watermarks WHERE job = 'trips'").fetchall()  # fmt: skip
    return {r[0] for r in rows}
