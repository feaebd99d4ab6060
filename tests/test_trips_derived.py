"""Trip speeds and trips derived from positions (trips/derive.py, migration 0104, issue #15).

Against a real PostgreSQL (both engines) and, for the end-to-end scenario, the Jimi simulator
on loopback with one device whose trip report is always empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from ingest import writers
from ingest.jobs import Ingestor
from ingest.parse import TripRow
from ingest_worker import ONCE, run_once
from jimi_sim import SimConfig, SimServer
from tests.conftest import test_settings
from trips.derive import TripParams, run_pass
from ts_shared import JimiClient

pytestmark = pytest.mark.both_engines

T = datetime(2026, 11, 24, 13, 0, 0, tzinfo=UTC)  # mid-working-day in EAT
DAY = timedelta(days=1)
IMEI = "860000000000001"
PARAMS = TripParams()

# ── helpers ──────────────────────────────────────────────────────────────────


def add_fixes(
    conn: psycopg.Connection[Any],
    imei: str,
    fixes: list[tuple[datetime, float]],
    *,
    lat0: float = -1.28,
    lng0: float = 36.8,
    acc_on: bool = True,
) -> None:
    """Fixes heading east, each at its own time and speed; positions follow the speeds."""
    lng = lng0
    last: datetime | None = None
    for at, speed in fixes:
        if last is not None:
            lng += speed / 3.6 * (at - last).total_seconds() / 111_320
        last = at
        conn.execute(
            "INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh,"
            " acc_on, source) VALUES (%s, %s, %s, %s, %s, %s, 'track_list')",
            (imei, at, lat0, lng, speed, acc_on),
        )  # fmt: skip


def drive(
    start: datetime, minutes: int, speed: float, step_s: int = 30
) -> list[tuple[datetime, float]]:
    """A steady drive: one fix every `step_s` for `minutes` minutes."""
    return [(start + timedelta(seconds=s), speed) for s in range(0, minutes * 60 + 1, step_s)]


def add_api_trip(
    conn: psycopg.Connection[Any],
    imei: str,
    start: datetime,
    end: datetime,
    *,
    max_speed: float | None = None,
) -> None:
    """An API trip through the worker's own writer."""
    writers.upsert_trips(conn, [TripRow(
        imei=imei, start_time=start, end_time=end, start_lat=None, start_lng=None,
        end_lat=None, end_lng=None, distance_km=10.0, driving_time_s=1200,
        avg_speed_kmh=45.0, max_speed_kmh=max_speed, start_mileage_km=None, end_mileage_km=None,
        source="mileage", raw={},
    )])  # fmt: skip


def trip(conn: psycopg.Connection[Any], start: datetime) -> dict[str, Any]:
    cur = conn.execute(
        "SELECT source, max_speed_kmh, max_speed_source, avg_speed_kmh, avg_speed_source,"
        " gps_max_speed_kmh, gps_avg_speed_kmh, overspeed_share, speed_fixes, speed_note"
        " FROM tracksolid.trips WHERE imei = %s AND start_time = %s", (IMEI, start))  # fmt: skip
    row = cur.fetchone()
    assert row is not None and cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def derive(pool: ConnectionPool, now: datetime = T) -> None:
    with pool.connection() as conn:
        run_pass(conn, PARAMS, now)


@pytest.fixture
def conn(pool: ConnectionPool) -> Iterator[psycopg.Connection[Any]]:
    with pool.connection() as c:
        c.autocommit = True
        yield c


# ── speeds ───────────────────────────────────────────────────────────────────


def test_speeds_from_fixes_and_late_fixes_change_max_speed(
    pool: ConnectionPool, conn: psycopg.Connection[Any]
) -> None:
    start = T - timedelta(hours=3)
    end = start + timedelta(minutes=20)
    fast = start + timedelta(minutes=10, seconds=30)
    add_fixes(conn, IMEI, [*drive(start, 10, 60), *drive(fast, 9, 90)])
    add_api_trip(conn, IMEI, start, end)
    derive(pool)
    got = trip(conn, start)
    assert got["gps_max_speed_kmh"] == 90 and got["max_speed_kmh"] == 90
    assert got["max_speed_source"] == "gps" and got["speed_note"] == "ok"
    assert got["avg_speed_kmh"] == 45 and got["avg_speed_source"] == "api"  # the API's own
    assert 60 < got["gps_avg_speed_kmh"] < 90
    assert got["overspeed_share"] == pytest.approx(0.45, abs=0.05)  # ~9 of 20 min above 80
    fixes_before = got["speed_fixes"]

    # A buffered fix uploaded late, inside the trip's window: the next pass picks it up.
    add_fixes(conn, IMEI, [(start + timedelta(minutes=19, seconds=45), 118)])
    derive(pool)
    got = trip(conn, start)
    assert got["max_speed_kmh"] == 118 and got["speed_fixes"] == fixes_before + 1

    # The API re-reports the trip without a max speed: the GPS figure stays.
    add_api_trip(conn, IMEI, start, end)
    assert trip(conn, start)["max_speed_kmh"] == 118
    # The API reports a max speed: it takes precedence over ours, which is kept beside it.
    add_api_trip(conn, IMEI, start, end, max_speed=101)
    derive(pool)
    got = trip(conn, start)
    assert (got["max_speed_kmh"], got["max_speed_source"], got["gps_max_speed_kmh"]) == (
        101, "api", 118)  # fmt: skip


def test_too_few_fixes_keeps_null_and_says_so(
    pool: ConnectionPool, conn: psycopg.Connection[Any]
) -> None:
    start = T - timedelta(hours=3)
    add_fixes(conn, IMEI, [(start + timedelta(minutes=1), 50), (start + timedelta(minutes=9), 70)])
    add_api_trip(conn, IMEI, start, start + timedelta(minutes=10))
    derive(pool)
    got = trip(conn, start)
    assert got["speed_fixes"] == 2 and got["speed_note"] == "too_few_fixes"
    assert got["max_speed_kmh"] is None and got["max_speed_source"] is None
    assert got["gps_avg_speed_kmh"] is None and got["overspeed_share"] is None


def test_a_restored_row_keeps_its_speed_source(conn: psycopg.Connection[Any]) -> None:
    """pg_restore fires triggers: a row that names its source keeps it."""
    start = T - timedelta(hours=3)
    conn.execute(
        "INSERT INTO tracksolid.trips (imei, start_time, end_time, source, max_speed_kmh,"
        " max_speed_source, gps_max_speed_kmh) VALUES (%s, %s, %s, 'mileage', 88, 'gps', 88)",
        (IMEI, start, start + timedelta(minutes=10)),
    )  # fmt: skip
    assert trip(conn, start)["max_speed_source"] == "gps"


# ── derivation ───────────────────────────────────────────────────────────────


def test_derived_trips_fill_gaps_never_duplicate_and_follow_late_data(
    pool: ConnectionPool, conn: psycopg.Connection[Any]
) -> None:
    base = T - timedelta(hours=8)
    parked = [(base + timedelta(minutes=m), 0.0) for m in range(0, 30, 5)]
    a = base + timedelta(minutes=30)  # API reports this one
    b = base + timedelta(minutes=90)  # the API has nothing here
    add_fixes(conn, IMEI, parked + drive(a, 20, 50) + [(a + timedelta(minutes=30), 0.0)]
              + drive(b, 15, 40) + [(b + timedelta(minutes=20), 0.0)])  # fmt: skip
    add_api_trip(conn, IMEI, a - timedelta(minutes=1), a + timedelta(minutes=21))
    derive(pool)
    rows = conn.execute(
        "SELECT source, start_time, end_time FROM tracksolid.trips WHERE imei = %s"
        " ORDER BY start_time", (IMEI,)).fetchall()  # fmt: skip
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("mileage", a - timedelta(minutes=1), a + timedelta(minutes=21)),
        ("derived", b, b + timedelta(minutes=20)),  # ends where it came to rest
    ]
    derived = conn.execute(
        "SELECT start_time, distance_km FROM tracksolid.derived_trips WHERE imei = %s"
        " ORDER BY 1", (IMEI,)).fetchall()  # fmt: skip
    assert [r[0] for r in derived] == [a, b]  # both segments, for the reconciliation
    assert float(derived[1][1]) == pytest.approx(10.0, rel=0.02)  # 15 min at 40 km/h
    stops = conn.execute("SELECT start_time, end_time FROM tracksolid.derived_stops"
                         " WHERE imei = %s", (IMEI,)).fetchall()  # fmt: skip
    assert stops == [(a + timedelta(minutes=30), b)]
    assert trip(conn, b)["speed_note"] == "ok" and trip(conn, b)["max_speed_kmh"] == 40

    # Backfilled fixes of a stretch the device had buffered: the window is re-derived and
    # the fill follows (same row, same trip_id, longer).
    before = conn.execute("SELECT trip_id, distance_km FROM tracksolid.trips"
                          " WHERE source = 'derived'").fetchone()  # fmt: skip
    add_fixes(conn, IMEI, drive(b + timedelta(minutes=15, seconds=30), 4, 40),
              lng0=36.8 + 0.1)  # fmt: skip
    derive(pool)
    after = conn.execute("SELECT trip_id, distance_km FROM tracksolid.trips"
                         " WHERE source = 'derived'").fetchone()  # fmt: skip
    assert before is not None and after is not None
    assert after[0] == before[0] and after[1] > before[1] + 1

    # The API's report arrives late after all: it replaces the fill at once.
    add_api_trip(conn, IMEI, b, b + timedelta(minutes=18))
    assert conn.execute("SELECT count(*) FROM tracksolid.trips WHERE source = 'derived'"
                        ).fetchone() == (0,)  # fmt: skip
    derive(pool)
    assert conn.execute("SELECT source, count(*) FROM tracksolid.trips GROUP BY 1"
                        ).fetchall() == [("mileage", 2)]  # fmt: skip


def test_trip_still_running_or_at_the_edge_of_the_data_is_not_filled(
    pool: ConnectionPool, conn: psycopg.Connection[Any]
) -> None:
    edge = T - timedelta(hours=6)  # the first fix stored is already moving
    rest = (edge + timedelta(minutes=40), 0.0)
    add_fixes(conn, IMEI, [*drive(edge, 10, 50), rest, *drive(T - timedelta(minutes=20), 19, 50)])
    derive(pool)
    assert conn.execute("SELECT count(*) FROM tracksolid.derived_trips").fetchone() == (2,)
    assert conn.execute("SELECT count(*) FROM tracksolid.trips").fetchone() == (0,)
    derive(pool, now=T + timedelta(hours=2))  # an hour after it ended, with no API report
    assert conn.execute("SELECT start_time FROM tracksolid.trips").fetchall() == [
        (T - timedelta(minutes=20),)
    ]


# ── end to end: the simulator, one device with an empty trip report ─────────


@pytest.fixture
def sim() -> Iterator[SimServer]:
    server = SimServer(SimConfig(devices=3, accounts=1, seed=3))
    server.api.clock = T.timestamp
    server.start()
    yield server
    server.stop()


def test_empty_trip_report_is_filled_by_derived_trips_without_duplicates(
    db_url: str, pool: ConnectionPool, sim: SimServer
) -> None:
    devices = sim.fleet.devices()
    empty = devices[0].imei
    sim.config.empty_trip_report = frozenset({empty})
    settings = test_settings(
        db_url, tracksolid_api_url=sim.url, tracksolid_app_key="demo-app-key",
        tracksolid_app_secret="demo-app-secret", tracksolid_user_id="fireside",
        tracksolid_user_pwd="demo-password", tracksolid_targets="fireside",
        ingest_catchup_days=1,
    )  # fmt: skip
    client = JimiClient(settings, pool, sleep=lambda s: None, now=lambda: T)
    assert run_once(Ingestor(settings, pool, client, now=lambda: T), ONCE) == 0

    settled = T - timedelta(seconds=settings.trip_fill_delay_s)
    with pool.connection() as conn:
        by_source: dict[str, int] = dict(conn.execute(
            "SELECT imei || '/' || source, count(*) FROM tracksolid.trips GROUP BY 1"
        ).fetchall())  # fmt: skip
        fills = conn.execute(
            "SELECT start_time, end_time, distance_km, max_speed_kmh FROM tracksolid.trips"
            " WHERE imei = %s ORDER BY 1", (empty,)).fetchall()  # fmt: skip
        recon = conn.execute(
            "SELECT imei, api_trips, derived_trips, disagrees, reason"
            " FROM reporting.v_trip_reconciliation").fetchall()  # fmt: skip
        job = conn.execute(
            "SELECT ok, detail FROM tracksolid.ingestion_log WHERE method = 'derive_trips'"
        ).fetchall()
    model = [t for t in sim.fleet.trips(empty, T - DAY, T) if t.end_time <= settled]
    # The silent device's days are filled: every model trip is covered by a derived one.
    assert f"{empty}/mileage" not in by_source and fills
    for want in model[1:]:  # the first may start before the catch-up (data edge)
        assert any((f[0], f[1]) == (want.start_time, want.end_time) for f in fills), want
    covered = [t for t in model if any(f[0] <= t.end_time and f[1] >= t.start_time for f in fills)]
    assert sum(float(f[2]) for f in fills) == pytest.approx(
        sum(t.distance_m for t in covered) / 1000, rel=0.05)  # fmt: skip
    assert all(f[3] is not None for f in fills)
    # The normal devices keep exactly their API trips, none derived on top.
    for dev in devices[1:]:
        assert by_source.get(f"{dev.imei}/mileage") == len(sim.fleet.trips(dev.imei, T - DAY, T))
        assert f"{dev.imei}/derived" not in by_source
    # The reconciliation shows the broken feed; the job ran and recorded itself.
    assert {r[4] for r in recon if r[0] == empty} == {"no_api_trips"}
    assert all(r[3] for r in recon if r[0] == empty)
    assert any(r[1] and r[2] for r in recon if r[0] != empty)
    assert len(job) == 1 and job[0][0] and job[0][1]["inserted"]["trip_fills"] == len(fills)


def test_dashboard_ro_reads_the_reconciliation_view(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("SET ROLE dashboard_ro")
        assert c.execute("SELECT count(*) FROM reporting.v_trip_reconciliation").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT 1 FROM tracksolid.derived_trips")
