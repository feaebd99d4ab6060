"""The reporting.v_trips refresher (FIX-D02): advisory lock 920145, refresh_log, and several
app instances refreshing once per interval between them."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from dashboard.refresher import REFRESH_LOCK_KEY, VTripsRefresher
from dashboard_api import create_app
from tests.conftest import test_settings
from tests.factories import add_device, add_trip, db_now


@pytest.fixture
def rw_pool(db_url: str) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(db_url, min_size=1, max_size=2, open=True)
    yield pool
    pool.close()


def _trips_in_view(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute("SELECT count(*) FROM reporting.v_trips").fetchone()
    assert row is not None
    return int(str(row[0]))


def test_refresh_once_then_skip_recent_and_locked(db_url: str, rw_pool: ConnectionPool) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        add_device(conn, "A1", "KCA 542Q", cost_centre="Nairobi-North")
        add_trip(conn, "A1", db_now(conn) - timedelta(hours=1), duration_s=600, distance_km=5)
        assert _trips_in_view(conn) == 0  # the matview is stale until refreshed

        first = VTripsRefresher(rw_pool, 300, instance="one")
        second = VTripsRefresher(rw_pool, 300, instance="two")
        assert first.run_once().outcome == "refreshed"
        assert _trips_in_view(conn) == 1
        assert second.run_once().outcome == "recent"  # < 0.9 x 300 s ago
        log = conn.execute(
            "SELECT object_name, source, instance, ok, row_count, duration_ms >= 0,"
            " finished_at >= started_at FROM reporting.refresh_log"
        ).fetchall()
        assert log == [("reporting.v_trips", "dashboard_api", "one", True, 1, True, True)]

        # Someone else holds the lock (another worker mid-refresh): skip without waiting.
        with psycopg.connect(db_url, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (REFRESH_LOCK_KEY,))
            eager = VTripsRefresher(rw_pool, 0.001, instance="eager")
            assert eager.run_once().outcome == "locked"
            other.execute("SELECT pg_advisory_unlock(%s)", (REFRESH_LOCK_KEY,))
        assert eager.run_once().outcome == "refreshed"  # lock free again, interval tiny
        count = conn.execute("SELECT count(*) FROM reporting.refresh_log").fetchone()
        assert count == (2,)


def test_a_failed_refresh_is_logged(db_url: str, rw_pool: ConnectionPool) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        # Without its unique index the view cannot be refreshed CONCURRENTLY.
        conn.execute("DROP INDEX reporting.ix_v_trips_trip_id")
        result = VTripsRefresher(rw_pool, 300, instance="x").run_once()
        assert result.outcome == "failed"
        assert result.error and "concurrently" in result.error.lower()
        row = conn.execute("SELECT ok, error IS NOT NULL FROM reporting.refresh_log").fetchone()
        assert row == (False, True)
        # A failure does not count as "recent": the next attempt tries again.
        assert VTripsRefresher(rw_pool, 300).run_once().outcome == "failed"


def test_two_app_instances_refresh_once_per_interval(db_url: str) -> None:
    interval = 1
    settings = test_settings(db_url, vtrips_refresh_interval_s=interval)
    with psycopg.connect(db_url, autocommit=True) as conn:
        add_device(conn, "A1", "KCA 542Q")
        with TestClient(create_app(settings)), TestClient(create_app(settings)):
            time.sleep(0.5)
            add_trip(conn, "A1", db_now(conn), duration_s=60, distance_km=1)
            time.sleep(3.2)
        rows = conn.execute(
            "SELECT started_at, finished_at, instance FROM reporting.refresh_log"
            " WHERE ok ORDER BY started_at"
        ).fetchall()
        assert _trips_in_view(conn) == 1, "the trip added while running was refreshed in"
    # Each instance attempted about 4 times (8 attempts); about 4 refreshes happened.
    assert 2 <= len(rows) <= 5, rows
    for previous, current in itertools.pairwise(rows):
        gap = (current[0] - previous[1]).total_seconds()
        assert gap >= interval * 0.9 - 0.05, f"refreshed twice within one interval: {rows}"


def test_refresher_disabled_with_zero_interval(db_url: str) -> None:
    app = create_app(test_settings(db_url, vtrips_refresh_interval_s=0))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert not hasattr(app.state, "refresher")
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM reporting.refresh_log").fetchone() == (0,)
