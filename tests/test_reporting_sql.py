"""The reporting layer in SQL: views and functions, the read-only role — on both engines
(TimescaleDB + PostGIS and plain PostgreSQL + PostGIS), which must answer the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from dashboard_api import create_app
from tests.conftest import PLAIN, TIMESCALEDB, test_settings
from tests.factories import Fleet, seed_fleet

pytestmark = pytest.mark.both_engines


@pytest.fixture
def fleet_conn(db_url: str) -> Iterator[tuple[psycopg.Connection[Any], Fleet]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn, seed_fleet(conn)


def scalar(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def test_normalize_plate_matches_the_python_helper(db_url: str) -> None:
    from ts_shared import normalize_plate  # noqa: PLC0415

    with psycopg.connect(db_url) as conn:
        for raw in ("KCA 542Q", "kca-542q", " K C A 5 4 2 Q ", "UAX/123B", "", None, "--"):
            assert scalar(conn, "SELECT reporting.normalize_plate(%s)", raw) == normalize_plate(raw)


def test_summary_and_filter_views(fleet_conn: tuple[psycopg.Connection[Any], Fleet]) -> None:
    conn, _ = fleet_conn
    today = scalar(conn, "SELECT reporting.local_day(now())")
    daily = conn.execute(
        "SELECT trips, vehicles, distance_km FROM reporting.v_daily_summary WHERE day = %s",
        (today,),
    ).fetchone()
    assert daily == (4, 3, 27)  # KCA twice, KBZ, and the inactive vehicle's trip
    per_cc = dict(
        conn.execute(
            "SELECT cost_centre, trips FROM reporting.v_daily_summary_cost_centre WHERE day = %s",
            (today,),
        ).fetchall()
    )
    assert per_cc == {"Nairobi-North": 3, "Kampala": 1}
    assert scalar(conn, "SELECT sum(trips) FROM reporting.v_weekly_summary") == 6
    assert scalar(conn, "SELECT sum(trips) FROM reporting.v_weekly_summary_cost_centre") == 6
    assert scalar(conn, "SELECT sum(trips) FROM reporting.v_monthly_summary") == 6
    assert scalar(conn, "SELECT sum(trips) FROM reporting.v_monthly_summary_cost_centre") == 6
    assert scalar(conn, "SELECT count(*) FROM reporting.v_trips_today") == 4
    assert scalar(conn, "SELECT count(*) FROM reporting.v_filter_vehicles") == 4
    assert scalar(conn, "SELECT count(*) FROM reporting.v_filter_drivers") == 4
    assert (
        scalar(
            conn,
            "SELECT vehicles FROM reporting.v_filter_cost_centres WHERE cost_centre = %s",
            "Nairobi-North",
        )
        == 2
    )
    assert scalar(conn, "SELECT count(*) FROM reporting.v_filter_cities") == 3
    live = dict(conn.execute("SELECT vehicle_number, status FROM reporting.v_live_positions"))
    assert live["KCA 542Q"] == "moving" and "KCB 900Z" not in live


def test_analytics_views(fleet_conn: tuple[psycopg.Connection[Any], Fleet]) -> None:
    conn, fleet = fleet_conn
    fleet_row = conn.execute(
        "SELECT vehicles, moving, idle, parked, offline FROM tracksolid.v_fleet_status"
        " WHERE scope = 'fleet'"
    ).fetchone()
    assert fleet_row == (4, 1, 1, 1, 1)
    today = dict(conn.execute("SELECT vehicle_number, trips_today FROM tracksolid.v_fleet_today"))
    assert today == {"KCA 542Q": 2, "KBZ 101A": 1, "KDA 777M": 0, "UAX 123B": 0}
    not_moved = {
        r[0]
        for r in conn.execute("SELECT vehicle_number FROM tracksolid.v_vehicles_not_moved_today")
    }
    assert not_moved == {"KDA 777M", "UAX 123B"}
    dispatch = {
        r[0] for r in conn.execute("SELECT vehicle_number FROM tracksolid.v_active_dispatch_map")
    }
    assert dispatch == {"KCA 542Q", "KBZ 101A", "KDA 777M"}
    idle = conn.execute("SELECT vehicle_number, idle_s FROM tracksolid.v_currently_idle").fetchall()
    assert [r[0] for r in idle] == ["KBZ 101A"]
    assert 1100 <= idle[0][1] <= 1500  # idling for 20 minutes
    agg = conn.execute(
        "SELECT trips, distance_km, harsh_acceleration, harsh_braking, overspeed,"
        " aggression_index FROM tracksolid.v_driver_aggregates_daily"
        " WHERE vehicle_number = 'KCA 542Q'"
    ).fetchone()
    assert agg == (2, 20, 2, 0, 1, 15)
    clock = conn.execute(
        "SELECT first_ignition_on, last_stop, trips FROM tracksolid.v_driver_clock_today"
        " WHERE vehicle_number = 'KCA 542Q'"
    ).fetchone()
    first_start, last_end = conn.execute(
        "SELECT min(start_time), max(end_time) FROM tracksolid.trips WHERE imei = %s",
        (fleet.imeis["KCA 542Q"],),
    ).fetchone() or (None, None)
    assert clock == (first_start, last_end, 2)
    util = conn.execute(
        "SELECT driving_s, idle_s, parked_s, period_s FROM tracksolid.v_utilisation_daily"
        " WHERE vehicle_number = 'KCA 542Q' AND day = reporting.local_day(now())"
    ).fetchone()
    assert util is not None
    assert util[:2] == (fleet.driving_s_today["KCA 542Q"], fleet.idle_s_today["KCA 542Q"])
    assert util[0] + util[1] + util[2] == util[3]
    km = conn.execute(
        "SELECT sum(distance_km) FROM tracksolid.v_fleet_km_daily"
        " WHERE day = reporting.local_day(now()) AND cost_centre = 'Nairobi-North'"
    ).fetchone()
    assert km == (24,)
    alarms = dict(
        conn.execute(
            "SELECT category, sum(alarms)::int FROM tracksolid.v_alarms_daily GROUP BY category"
        )
    )
    assert alarms == {"harsh_acceleration": 2, "overspeed": 1, "sos": 1}


def test_read_only_role_reads_reporting_and_cannot_write(
    pg_admin_url: str, db_url: str, fleet_conn: tuple[psycopg.Connection[Any], Fleet]
) -> None:
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute("ALTER ROLE dashboard_ro LOGIN PASSWORD 'x'")
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    info.update(user="dashboard_ro", password="x")
    ro_url = psycopg.conninfo.make_conninfo("", **{k: v for k, v in info.items() if v})

    with psycopg.connect(ro_url, autocommit=True) as ro:
        assert scalar(ro, "SELECT current_user") == "dashboard_ro"
        # Every reporting view and the API functions answer for the read-only role.
        views = [
            r[0]
            for r in ro.execute(
                "SELECT format('%I.%I', schemaname, viewname) FROM pg_views"
                " WHERE schemaname = 'reporting'"
                " UNION ALL SELECT format('%I.%I', schemaname, matviewname) FROM pg_matviews"
                " WHERE schemaname = 'reporting'"
            )
        ]
        assert "reporting.v_utilisation_daily" in views and "reporting.v_trips" in views
        for view in views:
            ro.execute(f"SELECT * FROM {view} LIMIT 1").fetchall()
        for call in (
            "reporting.fn_live_positions(NULL, NULL)",
            "reporting.fn_vehicle_track('KCA 542Q', 24)",
            "reporting.fn_trips_for_map()",
            "reporting.fn_filter_options()",
            "reporting.fn_fleet_summary()",
            "reporting.fn_utilisation(current_date - 6, current_date)",
            "reporting.fn_driver_behaviour(current_date - 6, current_date)",
            "reporting.fn_ingest_health()",
        ):
            assert json.loads(scalar(ro, f"SELECT {call}::text")) is not None, call
        # ...and can change nothing, nor read the base tables.
        for statement in (
            "SELECT * FROM tracksolid.devices",
            "INSERT INTO tracksolid.trips (imei, start_time, source) VALUES ('x', now(), 't')",
            "INSERT INTO reporting.refresh_log (object_name, source, started_at, ok)"
            " VALUES ('x', 'x', now(), true)",
            "DELETE FROM reporting.refresh_log",
            "REFRESH MATERIALIZED VIEW reporting.v_trips",
            "CREATE TABLE reporting.sneaky (id int)",
            "CREATE VIEW reporting.sneaky AS SELECT 1",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                ro.execute(statement)

    # The app reading through the read-only role answers.
    settings = test_settings(db_url, dashboard_database_url=ro_url, vtrips_refresh_interval_s=0)
    with TestClient(create_app(settings)) as client:
        for path in ("/webhook/live-positions", "/analytics/fleet-summary", "/health/ingest"):
            assert client.get(path).status_code == 200, path
        assert client.post("/webhook/fleet-dashboard", data={}).status_code == 200


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("reporting.fn_live_positions('Atlantis')", 'unknown cost_centre "Atlantis"'),
        ("reporting.fn_fleet_summary(' Atlantis ')", 'unknown cost_centre "Atlantis"'),
        (
            "reporting.fn_utilisation(current_date - 6, current_date, NULL, 'ZZ 1')",
            'unknown vehicle_number "ZZ 1"',
        ),
        (
            "reporting.fn_driver_behaviour(current_date - 6, current_date, 'Atlantis')",
            'unknown cost_centre "Atlantis"',
        ),
        ("reporting.fn_vehicle_track('ZZ 1', 24)", 'unknown vehicle_number "ZZ 1"'),
        ("reporting.fn_trips_for_map(p_driver => 'Nobody')", 'unknown driver "Nobody"'),
        ("reporting.fn_trips_for_map(p_city => 'Atlantis')", 'unknown city "Atlantis"'),
        (
            "reporting.fn_trips_for_map(ARRAY['kca-542q', 'ZZ 2', 'ZZ 1', 'ZZ 1'])",
            'unknown vehicles "ZZ 1", "ZZ 2"',
        ),
        ("reporting.fn_inc_dashboard('Atlantis')", 'unknown cluster "Atlantis"'),
        (
            "reporting.fn_trips_for_map(p_start => '2025-01-01', p_end => '2026-01-03')",
            "the date range is limited to 366 days (got 367 days)",
        ),
        (
            "reporting.fn_trips_for_map_text(p_start => '2026-11-20', p_end => '2026-11-11',"
            " p_start_given => '2026-11-20', p_end_given => '2026-11-10')",
            "end (2026-11-10) is before start (2026-11-20)",
        ),
    ],
)
def test_functions_refuse_unknown_filters_and_long_ranges(
    fleet_conn: tuple[psycopg.Connection[Any], Fleet], call: str, message: str
) -> None:
    """SQL refuses what the API refuses (SQLSTATE 22023, the sentence the API returns)."""
    conn, _ = fleet_conn
    conn.execute("SET ROLE dashboard_ro")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        conn.execute(f"SELECT {call}::text")
    assert caught.value.diag.message_primary is not None
    suffix = "" if "unknown" not in message else " — see /analytics/filters"
    assert caught.value.diag.message_primary.startswith(message + suffix)


def test_known_filters_pass_and_lookups_are_indexed(
    fleet_conn: tuple[psycopg.Connection[Any], Fleet],
) -> None:
    conn, _ = fleet_conn
    check = "SELECT reporting.check_filters(%s, %s, %s, %s, 'vehicles', %s)"
    assert scalar(conn, check, "NAIROBI-NORTH", "alice wanjiru", " kampala ", ["KCB 900Z"], False)
    assert scalar(conn, check, "all", "", None, ["*", "", "865135000000004"], False)
    conn.execute(
        "INSERT INTO fuel.records (id, raw) VALUES ('U', %s)",
        (json.dumps({"id": "U", "car": "KXX 001A", "litres": "10"}),),
    )
    assert scalar(conn, check, None, None, None, ["kxx-001a"], True)  # only in fuel fills
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        scalar(conn, check, None, None, None, ["kxx-001a"], False)
    # One index probe per value, whatever the table size.
    conn.execute("SET enable_seqscan = off")
    for column, index in (
        ("cost_centre", "devices_lower_cost_centre_idx"),
        ("driver_name", "devices_lower_driver_name_idx"),
        ("city", "devices_lower_city_idx"),
    ):
        plan = conn.execute(
            f"EXPLAIN SELECT 1 FROM tracksolid.devices d WHERE lower(d.{column}) = lower('x')"
        ).fetchall()
        assert index in " ".join(str(r[0]) for r in plan), plan
    plan = conn.execute(
        "EXPLAIN SELECT 1 FROM tickets.inc i WHERE lower(i.cluster) = lower('x')"
    ).fetchall()
    assert "inc_lower_cluster_idx" in " ".join(str(r[0]) for r in plan), plan


def test_trips_map_echoes_the_given_dates(
    fleet_conn: tuple[psycopg.Connection[Any], Fleet],
) -> None:
    conn, _ = fleet_conn
    doc = json.loads(
        scalar(
            conn,
            "SELECT reporting.fn_trips_for_map_text(p_start => '2026-11-01 00:00+03',"
            " p_end => '2026-11-11 00:00+03', p_start_given => '2026-11-01',"
            " p_end_given => '2026-11-10')",
        )
    )
    summary = doc["summary"]
    assert (summary["start"], summary["end"]) == ("2026-11-01", "2026-11-10")
    assert summary["window"] == {
        "start": "2026-10-31T21:00:00+00:00",
        "end": "2026-11-10T21:00:00+00:00",
    }
    old = json.loads(scalar(conn, "SELECT reporting.fn_trips_for_map()::text"))["summary"]
    assert old["start"] == old["window"]["start"] and old["end"] == old["window"]["end"]


# ── Both variants answer the same ──────────────────────────────────────────────────────────


def reporting_answers(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The essentials of every API function's answer, comparable across databases."""

    def call(query: str) -> Any:
        return json.loads(scalar(conn, query))

    live = call("SELECT reporting.fn_live_positions(NULL, 'on')::text")
    track = call("SELECT reporting.fn_vehicle_track('KCA 542Q', 24)::text")
    trips = call(
        "SELECT reporting.fn_trips_for_map(p_cost_centre => 'Nairobi-North',"
        " p_with_filters => true)::text"
    )
    summary = call("SELECT reporting.fn_fleet_summary()::text")
    util = call(
        "SELECT reporting.fn_utilisation(reporting.local_day(now()) - 6,"
        " reporting.local_day(now()))::text"
    )
    drivers = call(
        "SELECT reporting.fn_driver_behaviour(reporting.local_day(now()) - 6,"
        " reporting.local_day(now()))::text"
    )
    health = call("SELECT reporting.fn_ingest_health()::text")
    return {
        "live": sorted(
            (f["properties"]["vehicle_number"], tuple(f["geometry"]["coordinates"]))
            for f in live["features"]
        ),
        "track": (
            track["features"][0]["geometry"]["coordinates"],
            track["summary"]["points_total"],
            track["summary"]["distance_km"],
        ),
        "trips": (
            sorted(f["properties"]["vehicle_number"] for f in trips["features"]),
            trips["summary"]["distance_km"],
            trips["filters"]["cost_centres"],
        ),
        "status": summary["status"],
        "today": summary["today"]["trips"],
        "utilisation": util["totals"]["driving_s"],
        "aggression": [(d["vehicle_number"], d["aggression_index"]) for d in drivers["drivers"]],
        "health": sorted((f["method"], f["status"]) for f in health["feeds"]),
    }


@pytest.mark.timescaledb_only
def test_timescaledb_and_plain_answer_the_same(twin_dbs: dict[str, str]) -> None:
    answers = {}
    for engine, url in twin_dbs.items():
        with psycopg.connect(url, autocommit=True) as conn:
            extension = scalar(
                conn, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
            )
            assert extension == (1 if engine == TIMESCALEDB else 0), engine
            seed_fleet(conn)
            conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY reporting.v_trips")
            answers[engine] = reporting_answers(conn)
    # Driving time counts an ongoing drive up to the query's now(): each database is seeded
    # relative to its own now and queried a moment later, and that moment differs by the
    # seconds the machine took (2 s apart seen on a loaded CI run). Everything else is equal.
    util = {engine: answer.pop("utilisation") for engine, answer in answers.items()}
    assert abs(util[TIMESCALEDB] - util[PLAIN]) <= 30, util
    assert answers[TIMESCALEDB] == answers[PLAIN]
