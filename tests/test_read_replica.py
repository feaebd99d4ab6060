"""Read replicas (issue #19): the read-API served from a real streaming hot standby.

A primary and a hot standby made from it with `pg_basebackup -R` (tests/pgcluster.py) run on
loopback, both on the primary's engine. The read-API reads the standby as `dashboard_ro`
(`DASHBOARD_DATABASE_URL`); `/health` says `replica` with its replay lag and that the refresher
is the worker's; the API never tries to REFRESH on the standby; the ingest worker's
`vtrips_refresh` job refreshes `reporting.v_trips` on the primary and the standby's trips map
shows the new trip once replayed. The placement rules on a writable database are checked on
the usual per-test database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from dashboard_api import create_app
from ingest.jobs import Ingestor
from ingest_worker import run_once
from run_migrations import migrate
from tests.conftest import TIMESCALEDB, available_engines, read_only_url, test_settings
from tests.factories import add_device, add_live_position, add_track, add_trip, db_now
from tests.pgcluster import LocalCluster, free_port, timescaledb_installed
from tests.servers import serve_in_thread
from ts_shared import JimiClient, Settings, make_pool

PLATE, IMEI = "KCA 101R", "861000000000101"


def _settings(url: str, timescaledb: bool, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "use_timescaledb": "on" if timescaledb else "off",
        "log_level": "DEBUG",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[LocalCluster, LocalCluster]]:
    """A migrated primary (database `fleet`) and its streaming hot standby."""
    engine_ts = TIMESCALEDB in available_engines() and timescaledb_installed()
    primary = LocalCluster(timescaledb=engine_ts)
    replica = LocalCluster(timescaledb=engine_ts)  # same shared_preload_libraries
    try:
        primary.init()
        primary.start()
        with psycopg.connect(primary.admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE fleet")
        url = primary.url("fleet")
        migrate(url, _settings(url, engine_ts))
        replica.init_replica_of(primary)
        replica.start()
        yield primary, replica
    finally:
        replica.stop(remove=True)
        primary.stop(remove=True)


def wait_replayed(primary: LocalCluster, replica: LocalCluster, timeout: float = 30.0) -> None:
    """Until the standby has replayed everything the primary has written so far."""
    with psycopg.connect(primary.admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    deadline = time.monotonic() + timeout
    with psycopg.connect(replica.admin_url, autocommit=True) as conn:
        while True:
            done = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s::pg_lsn) >= 0", (row[0],)
            ).fetchone()
            if done and done[0]:
                return
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.05)


def worker_refresh(settings: Settings, pool: ConnectionPool) -> None:
    """One `python ingest_worker.py --job vtrips_refresh` on the primary."""
    client = JimiClient(settings, pool)
    try:
        assert run_once(Ingestor(settings, pool, client), ["vtrips_refresh"]) == 0
    finally:
        client.close()


def trips_on_map(http: httpx.Client) -> list[int]:
    response = http.post("/webhook/fleet-dashboard", json={})
    assert response.status_code == 200, response.text
    return sorted(f["properties"]["trip_id"] for f in response.json()["features"])


def test_read_api_on_a_hot_standby(
    clusters: tuple[LocalCluster, LocalCluster], caplog: pytest.LogCaptureFixture
) -> None:
    primary, replica = clusters
    url = primary.url("fleet")
    engine_ts = primary.timescaledb
    worker_settings = _settings(url, engine_ts, vtrips_refresh_interval_s=1)
    pool = make_pool(url, min_size=1, max_size=4, name="worker")
    with psycopg.connect(url, autocommit=True) as conn:
        add_device(conn, IMEI, PLATE, cost_centre="Nairobi-North", city="Nairobi")
        now = db_now(conn)
        add_live_position(conn, IMEI, -1.2921, 36.8219, gps_time=now - timedelta(minutes=1))
        add_track(
            conn, IMEI, now - timedelta(hours=2), [(-1.29 + i / 1000, 36.82) for i in range(10)]
        )
        first = add_trip(conn, IMEI, now - timedelta(hours=3), duration_s=900, distance_km=7)
    worker_refresh(worker_settings, pool)
    wait_replayed(primary, replica)

    # The read-API: reads from the standby as dashboard_ro; DATABASE_URL is the primary's, as
    # a compose file would give it, and a 1 s interval would show any refresh attempt at once.
    api_settings = _settings(
        url,
        engine_ts,
        dashboard_database_url=read_only_url(replica.url("fleet")),
        vtrips_refresh_interval_s=1,
    )
    app = create_app(api_settings)
    port = free_port()
    caplog.set_level(logging.INFO)
    server, thread = serve_in_thread(app, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            health = http.get("/health").json()
            assert health["database_role"] == "replica" and health["refresher"] == "worker"
            assert "hot standby" in health["refresher_reason"]
            assert health["replica_streaming"] is True
            assert isinstance(health["replica_lag_s"], int | float)
            assert 0 <= health["replica_lag_s"] < 60
            assert isinstance(health["replica_lag_bytes"], int | float)
            assert health["replica_lag_bytes"] >= 0
            assert health["v_trips_refreshed_at"] is not None, "the worker's refresh, replayed"
            assert not hasattr(app.state, "refresher")

            live = http.get("/webhook/live-positions").json()
            assert [f["properties"]["vehicle_number"] for f in live["features"]] == [PLATE]
            track = http.get(
                "/webhook/live-positions/track", params={"vehicle_number": PLATE, "hours": 24}
            ).json()
            lines = [f for f in track["features"] if f["geometry"]["type"] == "LineString"]
            assert len(lines) == 1 and len(lines[0]["geometry"]["coordinates"]) == 10
            assert trips_on_map(http) == [first]

            # A new trip on the primary: the worker's job refreshes the view there ...
            with psycopg.connect(url, autocommit=True) as conn:
                second = add_trip(
                    conn, IMEI, db_now(conn) - timedelta(hours=1), duration_s=600, distance_km=4
                )
            time.sleep(1.0)  # past 0.9 x the 1 s interval since the first refresh
            worker_refresh(worker_settings, pool)
            wait_replayed(primary, replica)
            # ... and the standby's trips map shows it.
            assert trips_on_map(http) == sorted([first, second])
            time.sleep(1.5)  # more than one refresher interval of the read-API
            assert http.get("/health").json()["refresher"] == "worker"
    finally:
        server.should_exit = True
        thread.join()
        pool.close()

    with psycopg.connect(url) as conn:
        sources = conn.execute(
            "SELECT source, ok, count(*) FROM reporting.refresh_log GROUP BY 1, 2"
        ).fetchall()
    assert sources == [("ingest_worker", True, 2)], "only the worker refreshed"
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]
    assert any("hot standby" in r.getMessage() for r in caplog.records)
    standby_log = replica.log_file.read_text(errors="replace")
    assert "REFRESH" not in standby_log and "read-only transaction" not in standby_log
    # The one statement error allowed: the SSE hub's LISTEN probe, after which it polls
    # (dashboard/live_stream.py); anything else the API sent the standby failed is a bug.
    errors = [line for line in standby_log.splitlines() if "ERROR:" in line]
    unexpected = [e for e in errors if "cannot execute LISTEN during recovery" not in e]
    assert unexpected == [], standby_log[-2000:]


# ── On a writable database: where the refresher runs ──────────────────────────────────────


def test_on_the_primary_the_read_api_refreshes_and_says_so(db_url: str) -> None:
    settings = test_settings(db_url, dashboard_database_url=read_only_url(db_url))
    app = create_app(settings)
    with TestClient(app) as client:
        health = client.get("/health").json()
        assert health["database_role"] == "primary" and health["refresher"] == "here"
        assert (health["replica_lag_s"], health["replica_lag_bytes"]) == (None, None)
        assert health["replica_streaming"] is None
        assert hasattr(app.state, "refresher")
        deadline = time.monotonic() + 10
        with psycopg.connect(db_url, autocommit=True) as conn:
            while not (rows := conn.execute("SELECT source FROM reporting.refresh_log").fetchall()):
                assert time.monotonic() < deadline, "the read-API did not refresh at start"
                time.sleep(0.05)
    assert rows == [("dashboard_api",)]


@pytest.mark.parametrize(
    ("overrides", "placement", "reason"),
    [
        ({"dashboard_vtrips_refresher": "off"}, "worker", "DASHBOARD_VTRIPS_REFRESHER=off"),
        ({"vtrips_refresh_interval_s": 0}, "off", "VTRIPS_REFRESH_INTERVAL_S=0"),
        ({"as_reader": True}, "worker", "does not own"),
    ],
)
def test_the_read_api_leaves_the_refresh_to_the_worker(
    db_url: str, overrides: dict[str, Any], placement: str, reason: str
) -> None:
    values = dict(overrides)
    as_reader = values.pop("as_reader", False)  # DATABASE_URL without the owner's rights
    app = create_app(test_settings(read_only_url(db_url) if as_reader else db_url, **values))
    with TestClient(app) as client:
        health = client.get("/health").json()
        assert (health["database_role"], health["refresher"]) == ("primary", placement)
        assert reason in health["refresher_reason"]
        assert not hasattr(app.state, "refresher")
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM reporting.refresh_log").fetchone() == (0,)


def test_the_api_starts_while_the_database_is_down() -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    app = create_app(test_settings(dead))
    started = time.monotonic()
    with TestClient(app) as client:
        assert time.monotonic() - started < 5
        app.state.ro_pool.timeout = 0.5
        assert client.get("/health").status_code == 503
        assert app.state.refresher_host.placement == "pending"


def test_the_worker_job_refreshes_and_is_a_feed(db_url: str, pool: ConnectionPool) -> None:
    settings = test_settings(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        add_device(conn, IMEI, PLATE)
        add_trip(conn, IMEI, db_now(conn) - timedelta(hours=1), duration_s=60, distance_km=1)
    worker_refresh(settings, pool)
    worker_refresh(settings, pool)  # within the interval: skipped, still a successful run
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM reporting.v_trips").fetchone() == (1,)
        log = conn.execute("SELECT source, ok, row_count FROM reporting.refresh_log").fetchall()
        runs = conn.execute(
            "SELECT ok FROM tracksolid.ingestion_log WHERE method = 'vtrips_refresh'"
        ).fetchall()
    assert log == [("ingest_worker", True, 1)]
    assert runs == [(True,), (True,)]
