"""Ticket visits end to end (issue #16): a ticket in tickets.inc, a simulated vehicle sent to
its site, the worker's track-list poll and `ticket_visits` job, and the read-API.

The simulator's clock is fixed mid-working-day; the dispatched vehicle drives straight to the
ticket, parks for 15 minutes and drives back to its day plan. The visit must show the right
vehicle, driver, arrival (within one fix interval) and time on site; a drive-by and a ticket
geocoded only to its cluster must not count; a closed ticket no one reached is on the
verification list.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from dashboard_api import create_app
from ingest.jobs import Ingestor
from jimi_sim import SimConfig, SimServer
from tests.conftest import test_settings
from tests.sim_support import SIM_CREDENTIALS, Clock
from ts_shared import JimiClient, Settings

pytestmark = pytest.mark.both_engines

T = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)  # 13:00 EAT, vehicles on the road
EAT = timedelta(hours=3)
DWELL_S = 900


@pytest.fixture
def clock() -> Clock:
    return Clock(T)


@pytest.fixture
def sim(clock: Clock) -> Iterator[SimServer]:
    server = SimServer(SimConfig(devices=4, accounts=1, seed=11))
    server.api.clock = clock.epoch
    server.start()
    yield server
    server.stop()


def worker_settings(db_url: str, sim: SimServer) -> Settings:
    return test_settings(
        db_url,
        tracksolid_api_url=sim.url,
        **SIM_CREDENTIALS,
        tracksolid_targets="fireside",
        ingest_catchup_days=1,
        vtrips_refresh_interval_s=0,
    )


def eat_text(moment: datetime) -> str:
    return (moment + EAT).strftime("%Y-%m-%d %H:%M:%S")


def add_ticket(conn: psycopg.Connection[Any], ticket_id: str, **raw: Any) -> None:
    conn.execute(
        "INSERT INTO tickets.inc (ticket_id, raw) VALUES (%s, %s)",
        (ticket_id, json.dumps({"ticket_id": ticket_id, **raw})),
    )


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2
    )
    return 6371.0088 * 2 * math.asin(math.sqrt(a))


def test_a_dispatched_vehicle_makes_a_visit_with_the_right_times(
    db_url: str, sim: SimServer, clock: Clock
) -> None:
    settings = worker_settings(db_url, sim)
    device = sim.fleet.devices()[0]
    here = sim.fleet.position_at(device.imei, T)
    site = (round(here.lat + 0.012, 6), round(here.lng + 0.004, 6))  # ~1.4 km off its road
    with psycopg.connect(db_url, autocommit=True) as conn:
        add_ticket(conn, "INC-VISITED", raw_status="Closed", cluster="Westlands",
                   region="Nairobi", created_at_service=eat_text(T - timedelta(minutes=40)),
                   closed_at=eat_text(T + timedelta(hours=1)),
                   latitude=site[0], longitude=site[1])  # fmt: skip
        add_ticket(conn, "INC-NOBODY", raw_status="Closed", cluster="Westlands",
                   region="Nairobi", created_at_service=eat_text(T - timedelta(hours=3)),
                   closed_at=eat_text(T - timedelta(hours=1)),
                   latitude=site[0] + 0.2, longitude=site[1] + 0.2)  # fmt: skip
        add_ticket(conn, "INC-OPEN", raw_status="Assigned", cluster="Westlands",
                   region="Nairobi", created_at_service=eat_text(T - timedelta(hours=2)),
                   latitude=site[0] - 0.2, longitude=site[1] - 0.2)  # fmt: skip
        # Geocoded to its cluster only: a point kilometres from the site proves nothing.
        conn.execute(
            "INSERT INTO tickets.geo_clusters (cluster, query, status, lat, lng)"
            " VALUES ('Kilimani', 'Kilimani', 'ok', %s, %s)",
            site,
        )
        add_ticket(conn, "INC-CLUSTER", raw_status="Closed", cluster="Kilimani",
                   region="Nairobi", created_at_service=eat_text(T - timedelta(minutes=30)),
                   closed_at=eat_text(T + timedelta(hours=1)))  # fmt: skip

    errand = sim.dispatch(device.imei, site[0], site[1], dwell_s=DWELL_S)
    clock.moment = datetime.fromtimestamp(errand.back, UTC) + timedelta(minutes=5)
    with ConnectionPool(db_url, min_size=1, max_size=4) as pool:
        client = JimiClient(settings, pool, sleep=lambda s: None, now=clock.now)
        ingestor = Ingestor(settings, pool, client, now=clock.now)
        ingestor.sync_devices()
        with pool.connection() as conn:
            # The vehicle changes hands right after the errand: the visit keeps its driver.
            handover = datetime.fromtimestamp(errand.back, UTC)
            row = conn.execute(
                "UPDATE tracksolid.driver_assignments SET valid_to = %s"
                " WHERE imei = %s AND valid_to IS NULL RETURNING driver_name",
                (handover, device.imei),
            ).fetchone()
            assert row is not None
            driver_then = row[0]
            conn.execute(
                "INSERT INTO tracksolid.driver_assignments (imei, driver_name, valid_from,"
                " source) VALUES (%s, 'Omar Said', %s, 'csv')",
                (device.imei, handover),
            )
        ingestor.poll_track(catchup=True)
        ingestor.poll_live()
        stats = ingestor.ticket_visits()
        assert stats.ok, stats
        again = ingestor.ticket_visits()  # a rerun replaces, never duplicates
        assert again.ok
        client.close()

    with psycopg.connect(db_url) as conn:
        visits = conn.execute(
            "SELECT ticket_id, imei, arrived_at, departed_at, on_site_s, stop_evidence,"
            " driver_name FROM tracksolid.ticket_visits ORDER BY ticket_id"
        ).fetchall()
    assert len(visits) == 1, visits
    ticket, imei, arrived, departed, on_site, _stop, driver = visits[0]
    assert (ticket, imei, driver) == ("INC-VISITED", device.imei, driver_then)
    expected_arrival = datetime.fromtimestamp(errand.arrive, UTC)
    # The approach enters the 150 m circle up to ~20 s before the parking point.
    assert timedelta(0) <= expected_arrival - arrived <= timedelta(seconds=60), arrived
    assert abs(on_site - DWELL_S) <= 90, on_site
    # The last stationary fix before it drives off (fixes every 30 s).
    left = datetime.fromtimestamp(errand.leave, UTC)
    assert timedelta(0) <= left - departed <= timedelta(seconds=30), departed

    app_settings = test_settings(db_url, vtrips_refresh_interval_s=0)
    day = (T + EAT).date().isoformat()
    with TestClient(create_app(app_settings)) as api:
        got = api.get("/analytics/ticket-visits", params={"from": day, "to": day})
        assert got.status_code == 200, got.text
        doc = got.json()
        assert doc["summary"]["visits"] == 1
        assert doc["summary"]["verifiable"] == 3  # INC-CLUSTER is not verifiable
        assert doc["visits"][0]["vehicle_number"] == device.vehicle_number
        assert [t["ticket_id"] for t in doc["closed_without_visit"]] == ["INC-NOBODY"]
        assert [t["ticket_id"] for t in doc["open_not_visited"]] == ["INC-OPEN"]
        kpi = next(k for k in doc["kpis"] if k["cluster"] == "Westlands")
        assert (kpi["closed"], kpi["closed_visited"], kpi["closed_without_visit"]) == (2, 1, 1)
        assert kpi["time_to_site_min_p50"] == pytest.approx(
            (expected_arrival - (T - timedelta(minutes=40))).total_seconds() / 60, abs=1.1
        )
        assert doc["summary"]["closed_with_visit_share"] == 0.5

        near = api.get(
            "/analytics/tickets/INC-OPEN/nearest-vehicles",
            params={"limit": "3", "max_age_h": "720"},
        )
        assert near.status_code == 200, near.text
        body = near.json()
        lat, lng = body["ticket"]["lat"], body["ticket"]["lng"]
        dists = [v["distance_km"] for v in body["vehicles"]]
        assert len(dists) == 3 and dists == sorted(dists)
        for v in body["vehicles"]:
            fix = sim.fleet.position_at(v["imei"], clock.moment)
            # PostGIS measures on the WGS84 spheroid, this on a sphere: within 0.5 %
            assert v["distance_km"] == pytest.approx(
                haversine_km(lat, lng, fix.lat, fix.lng), rel=0.005
            )
            assert v["status"] in {"moving", "idling", "parked"}

        assert api.get("/analytics/tickets/INC-NOPE/nearest-vehicles").status_code == 404
        for bad in ({"from": "2026-13-01"}, {"limit": "x"}, {"vehicle": "a\x00b"}):
            answer = api.get("/analytics/ticket-visits", params=bad)
            assert answer.status_code == 422 and answer.json()["detail"], bad
        too_long = api.get("/analytics/tickets/" + "X" * 100 + "/nearest-vehicles")
        assert too_long.status_code == 422


def test_a_drive_by_is_no_visit(db_url: str) -> None:
    """Fixes crossing the circle at speed for less than VISIT_MIN_DWELL_S make no visit; a
    stop (parking event) there does, even with a single fix."""
    settings = test_settings(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        add_ticket(conn, "INC-ROAD", raw_status="Closed", created_at_service=eat_text(T),
                   closed_at=eat_text(T + timedelta(hours=2)),
                   latitude=-1.3, longitude=36.8)  # fmt: skip
        for i in range(6):  # 40 km/h eastwards through the point, one fix every 10 s
            conn.execute(
                "INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh,"
                " source) VALUES ('860000000000001', %s, -1.3, %s, 40, 'push')",
                (T + timedelta(minutes=10, seconds=10 * i), 36.7995 + i * 0.001),
            )
        conn.execute(
            "INSERT INTO tracksolid.parking_events (imei, start_time, end_time, duration_s,"
            " acc_on, lat, lng) VALUES ('860000000000002', %s, %s, 1200, false, -1.3005, 36.8)",
            (T + timedelta(minutes=30), T + timedelta(minutes=50)),
        )
    from visits.refresh import refresh_visits  # noqa: PLC0415

    with psycopg.connect(db_url) as conn:
        run = refresh_visits(conn, settings, T - timedelta(days=1), T + timedelta(days=1))
        rows = conn.execute(
            "SELECT imei, on_site_s, stop_evidence FROM tracksolid.ticket_visits"
        ).fetchall()
    assert run.tickets == 1
    assert rows == [("860000000000002", 1200, True)]
    # A later run over a period after the stay keeps it (only the period is recomputed).
    with psycopg.connect(db_url) as conn:
        later = refresh_visits(conn, settings, T + timedelta(hours=1), T + timedelta(days=1))
        kept = conn.execute("SELECT count(*) FROM tracksolid.ticket_visits").fetchone()
    assert later.tickets == 1 and later.visits == 0 and kept == (1,)


def test_cli_dispatches_the_nearest_vehicle_and_refreshes(
    db_url: str, sim: SimServer, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m visits dispatch TICKET --sim URL` (the demo's way to make a visit) and
    `python -m visits refresh --days N`."""
    from visits.__main__ import main  # noqa: PLC0415

    settings = worker_settings(db_url, sim)
    with ConnectionPool(db_url, min_size=1, max_size=4) as pool:
        client = JimiClient(settings, pool, sleep=lambda s: None, now=clock.now)
        Ingestor(settings, pool, client, now=clock.now).poll_live()
        client.close()
    target = sim.fleet.devices()[2]
    fix = sim.fleet.position_at(target.imei, T)
    with psycopg.connect(db_url, autocommit=True) as conn:
        add_ticket(conn, "INC-DEMO", raw_status="Assigned", created_at_service=eat_text(T),
                   latitude=fix.lat + 0.0005, longitude=fix.lng)  # fmt: skip
    assert main(["dispatch", "INC-DEMO", "--sim", sim.base_url], settings) == 0
    assert f"{target.imei} drives to INC-DEMO" in capsys.readouterr().out
    assert main(["dispatch", "INC-NONE", "--sim", sim.base_url], settings) == 1
    assert main(["refresh", "--days", "30"], settings) == 0
    assert "recomputed 1 tickets" in capsys.readouterr().out
