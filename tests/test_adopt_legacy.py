"""adopt_legacy.py: take over a previous-generation database (issue #14).

A synthetic old database in the shape seeds 000/002 describe (old-style ledger
`schema_migrations(version, applied_at)` with 02-19, `position_history` a hypertable, an
`infrastructure` schema, an odd `devices.sim_iccid_legacy` column) is adopted into a migrated
target: dry run, copy, row-for-row equality, the side table, the old database untouched
(checksums, and a write through the tool's own old-side connection refused), a killed run
resumed without duplicates or gaps, a catch-up pass, and the read-API answering on the result.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from psycopg_pool import ConnectionPool
from pydantic import SecretStr

import adopt_legacy
from dashboard_api import create_app
from jimi_sim import SimConfig, SimServer
from legacy.copy import open_old
from legacy.inspect import Column, Table, TablePlan, compatible, plan_table, read_catalog
from legacy.progress import Progress, render
from tests.conftest import (
    TIMESCALEDB,
    available_engines,
    create_database,
    drop_database,
    read_only_url,
    test_settings,
)
from ts_shared import JimiClient

NOW = datetime.now(UTC).replace(microsecond=0)
DAYS = 4
DEVICES = [
    # imei, plate, driver, cost centre, city, sim_iccid_legacy
    ("359857080000001", "KCA 542Q", "Jane Wanjiru", "Nairobi-North", "Nairobi", "8925401000001"),
    ("359857080000002", "KBZ 101A", "Omar Said", "Mombasa-Field", "Mombasa", None),
    ("359857080000003", "UAX 123B", None, "Kampala", "Kampala", "8925602000003"),
]

OLD_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE SCHEMA tracksolid;
CREATE SCHEMA infrastructure;
CREATE TABLE tracksolid.schema_migrations (version text PRIMARY KEY, applied_at timestamptz);
INSERT INTO tracksolid.schema_migrations
    SELECT lpad(v::text, 2, '0'), now() - (20 - v) * interval '1 day' FROM generate_series(2, 19) v;
CREATE TABLE tracksolid.devices (
    imei text PRIMARY KEY, device_name text, vehicle_number text, driver_name text,
    driver_phone text, cost_centre text, city text, vehicle_type text, is_active boolean,
    sim_iccid_legacy text, updated_at timestamptz DEFAULT now());
CREATE TABLE tracksolid.position_history (
    imei text NOT NULL, gps_time timestamptz NOT NULL, lat double precision NOT NULL,
    lng double precision NOT NULL, speed_kmh real, direction_deg smallint, acc_on boolean,
    source text NOT NULL, PRIMARY KEY (imei, gps_time));
CREATE TABLE tracksolid.trips (
    trip_id bigserial PRIMARY KEY, imei text NOT NULL, start_time timestamptz NOT NULL,
    end_time timestamptz, start_lat double precision, start_lng double precision,
    end_lat double precision, end_lng double precision, distance_km numeric(10,3),
    driving_time_s integer, avg_speed_kmh real, max_speed_kmh real, source text NOT NULL,
    UNIQUE (imei, start_time));
CREATE TABLE tracksolid.parking_events (
    imei text NOT NULL, start_time timestamptz NOT NULL, end_time timestamptz,
    "durSecond" integer, acc_on boolean NOT NULL, lat double precision, lng double precision,
    address text, PRIMARY KEY (imei, start_time, acc_on));
CREATE TABLE tracksolid.alarms (
    alarm_id serial PRIMARY KEY, imei text NOT NULL, alert_time timestamptz NOT NULL,
    alarm_type text NOT NULL, alarm_type_name text, lat double precision, lng double precision,
    source text NOT NULL, UNIQUE (imei, alert_time, alarm_type));
CREATE TABLE tracksolid.api_token_cache (
    cache_key text PRIMARY KEY, access_token text NOT NULL, refresh_token text,
    expires_at timestamptz NOT NULL, obtained_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE infrastructure.sites (
    site_id integer PRIMARY KEY, name text, geom geometry(Point, 4326));
INSERT INTO infrastructure.sites
    VALUES (1, 'Nairobi depot', ST_SetSRID(ST_MakePoint(36.8, -1.3), 4326));
INSERT INTO tracksolid.api_token_cache VALUES
    ('appkey:fireside', 'tok-123', 'ref-456', now() + interval '1 hour', now());
"""


def _seed(conn: psycopg.Connection[Any]) -> None:
    conn.execute(OLD_SCHEMA)
    # The previous generation's legacy read-only role (roles are per cluster: may exist).
    conn.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'grafana_ro') THEN"
        " CREATE ROLE grafana_ro LOGIN; END IF; END $$"
    )
    conn.execute("GRANT USAGE ON SCHEMA tracksolid TO grafana_ro")
    if TIMESCALEDB in available_engines():
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute(
            "SELECT create_hypertable('tracksolid.position_history', 'gps_time',"
            " chunk_time_interval => interval '1 day')"
        )
    for n, (imei, plate, driver, cc, city, iccid) in enumerate(DEVICES):
        conn.execute(
            "INSERT INTO tracksolid.devices (imei, device_name, vehicle_number, driver_name,"
            " driver_phone, cost_centre, city, vehicle_type, is_active, sim_iccid_legacy)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, 'truck', true, %s)",
            (imei, f"X3-{n}", plate, driver, f"+2547000000{n}", cc, city, iccid),
        )
        # One fix every 3 minutes over DAYS days, the newest 5 minutes ago.
        conn.execute(
            "INSERT INTO tracksolid.position_history"
            " SELECT %(imei)s, %(now)s - i * interval '3 min' - interval '5 min',"
            "  -1.28 + %(n)s + i * 1e-5, 36.82 + i * 1e-5, (i %% 80)::real,"
            "  (i %% 360)::smallint, i %% 5 <> 0,"
            "  CASE WHEN i %% 2 = 0 THEN 'poll' ELSE 'track_list' END"
            " FROM generate_series(0, %(count)s - 1) i",
            {"imei": imei, "now": NOW, "n": n * 0.1, "count": DAYS * 24 * 20},
        )
        for day in range(DAYS):
            start = NOW - timedelta(days=day, hours=3)
            conn.execute(
                "INSERT INTO tracksolid.trips (imei, start_time, end_time, start_lat, start_lng,"
                " end_lat, end_lng, distance_km, driving_time_s, avg_speed_kmh, max_speed_kmh,"
                " source) VALUES (%s, %s, %s, -1.28, 36.82, -1.30, 36.85, 12.345, 1800, 24.5,"
                " 61.0, 'mileage')",
                (imei, start, start + timedelta(minutes=40)),
            )
            conn.execute(
                "INSERT INTO tracksolid.alarms (imei, alert_time, alarm_type, alarm_type_name, lat,"
                " lng, source) VALUES (%s, %s, 'overspeed', 'Overspeed', -1.28, 36.82, 'poll')",
                (imei, start + timedelta(minutes=10)),
            )
            conn.execute(
                "INSERT INTO tracksolid.parking_events VALUES (%s, %s, %s, 600, false, -1.3,"
                " 36.85, 'Depot')",
                (imei, start + timedelta(minutes=41), start + timedelta(minutes=51)),
            )
    if TIMESCALEDB in available_engines():
        # Production compresses history: the copy must read compressed chunks as they are.
        conn.execute("SELECT _timescaledb_functions.stop_background_workers()")
        conn.execute(
            "ALTER TABLE tracksolid.position_history SET (timescaledb.compress,"
            " timescaledb.compress_segmentby = 'imei')"
        )
        conn.execute(
            "SELECT compress_chunk(c) FROM show_chunks('tracksolid.position_history',"
            " older_than => interval '2 days') c"
        )


@pytest.fixture
def old_url(pg_admin_url: str) -> Iterator[str]:
    """A previous-generation database, as the client runs it today."""
    name = f"old_{uuid.uuid4().hex[:10]}"
    url = create_database(pg_admin_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        _seed(conn)
    yield url
    drop_database(pg_admin_url, name)


def checksum(url: str) -> dict[str, str]:
    """md5 of every row of every old table (ledger included), by table."""
    out: dict[str, str] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema IN ('tracksolid', 'infrastructure')"
            " AND table_type = 'BASE TABLE'"
        ).fetchall()
        for schema, table in tables:
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|'"
                    " ORDER BY t::text)), '') FROM {} t"
                ).format(sql.Identifier(schema, table))
            ).fetchone()
            assert row is not None
            out[f"{schema}.{table}"] = str(row[0])
    return out


def table_plan(old_url: str, new_url: str, table: str) -> TablePlan:
    with psycopg.connect(old_url) as old, psycopg.connect(new_url) as new:
        return plan_table(
            read_catalog(old)[f"tracksolid.{table}"], read_catalog(new)[f"tracksolid.{table}"]
        )


def same_rows(old_url: str, new_url: str, table: str) -> tuple[list[Any], list[Any]]:
    """The mapped columns of every row, old side (renames and units applied) and new side."""
    plan = table_plan(old_url, new_url, table)
    old_cols = [
        sql.SQL("({})::{}").format(plan.old_expr(c.name), sql.SQL(c.sql_type)) for c in plan.copy
    ]
    new_cols = [sql.Identifier(c.name) for c in plan.copy]
    out = []
    for url, cols in ((old_url, old_cols), (new_url, new_cols)):
        order = sql.SQL(", ").join(sql.Literal(i + 1) for i in range(len(cols)))
        query = sql.SQL("SELECT {c} FROM {t} ORDER BY {o}").format(
            c=sql.SQL(", ").join(cols), t=sql.Identifier("tracksolid", table), o=order
        )
        with psycopg.connect(url) as conn:
            out.append(conn.execute(query).fetchall())
    assert out[0], f"{table}: no rows to compare"
    return out[0], out[1]


def mapped_columns(old_url: str, new_url: str, table: str) -> list[str]:
    return [c.name for c in table_plan(old_url, new_url, table).copy]


# ── Pure parts ────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        ("text", "text", True),
        ("character varying", "text", True),
        ("integer", "bigint", True),
        ("integer", "double precision", True),
        ("bigint", "smallint", False),
        ("real", "double precision", True),
        ("double precision", "real", False),
        ("timestamp without time zone", "timestamp with time zone", True),
        ("jsonb", "text", False),
    ],
)
def test_type_compatibility(old: str, new: str, ok: bool) -> None:
    assert compatible(old, new) is ok


def test_plan_table_matches_by_name_and_reports_the_rest() -> None:
    ts = "timestamp with time zone"
    old = Table(
        "tracksolid",
        "trips",
        (
            Column("trip_id", "bigint", "bigint"),
            Column("imei", "text", "text"),
            Column("start_time", ts, ts),
            Column("odd", "text", "text"),
            Column("distance_km", "jsonb", "jsonb"),
        ),
    )
    new = Table(
        "tracksolid",
        "trips",
        (
            Column("trip_id", "bigint", "bigint", generated=True),
            Column("imei", "text", "text", required=True),
            Column("start_time", ts, ts, required=True),
            Column("distance_km", "numeric", "numeric(10,3)"),
            Column("source", "text", "text", required=True),
        ),
        key=("imei", "start_time"),
    )
    plan = plan_table(old, new)
    assert [c.name for c in plan.copy] == ["imei", "start_time"]
    assert [name for name, _ in plan.extra] == ["trip_id", "odd", "distance_km"]
    assert plan.fill == ("source",)
    assert plan.time_column == "start_time"
    assert plan.problem is None
    assert plan_table(old, None).problem == "no such table in the new schema"


def test_known_renames_and_units_apply_only_where_needed() -> None:
    ts = "timestamp with time zone"
    new = Table(
        "tracksolid",
        "trips",
        (
            Column("imei", "text", "text", required=True),
            Column("start_time", ts, ts, required=True),
            Column("distance_km", "numeric", "numeric(10,3)"),
            Column("driving_time_s", "integer", "integer"),
            Column("source", "text", "text", required=True),
        ),
        key=("imei", "start_time"),
    )
    metres = Table(
        "tracksolid",
        "trips",
        (
            Column("IMEI", "text", "text"),  # spelling only
            Column("startTime", ts, ts),
            Column("distance", "integer", "integer"),  # FIX-M16: metres
            Column("runTimeSecond", "integer", "integer"),
        ),
    )
    plan = plan_table(metres, new)
    assert plan.problem is None and plan.extra == ()
    assert {(n, o, e) for n, o, e, _ in plan.sources} == {
        ("imei", "IMEI", "{}"),
        ("start_time", "startTime", "{}"),
        ("distance_km", "distance", "{}::numeric / 1000"),
        ("driving_time_s", "runTimeSecond", "{}"),
    }
    assert plan.time_column == "start_time"
    # Already in km under the new name: the metres column is not divided into it twice.
    both = Table("tracksolid", "trips", (*metres.columns, Column("distance_km", "numeric", "n")))
    plan = plan_table(both, new)
    assert [n for n, *_ in plan.sources if n == "distance_km"] == []
    assert [name for name, _ in plan.extra] == ["distance"]
    # A text "distance" is no number of metres: reported, not guessed.
    text = Table("tracksolid", "trips", (metres.columns[0], metres.columns[1],
                                         Column("distance", "text", "text")))  # fmt: skip
    assert "needs a number" in plan_table(text, new).extra[0][1]


def test_progress_line_and_log_cadence() -> None:
    assert render("position_history", 0.5, 1_250_000, 12.0) == (
        "position_history   [##########----------]  50%  1,250,000 rows  104,167 rows/s"
        "  ETA 0:00:12"
    )
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ticks = iter([0.0, 1.0, 6.5, 7.0])
    log = io.StringIO()  # not a TTY: a line every 5 s and one when the table is done
    bar = Progress(
        {"position_history": (t0, t0 + timedelta(days=4))}, log, 5.0, lambda: next(ticks)
    )
    for day in (1, 2, 3, 4):
        bar("position_history", t0 + timedelta(days=day), 1000)
    lines = log.getvalue().splitlines()
    assert [line.split("]")[1].split()[0] for line in lines] == ["25%", "75%", "100%"]
    assert "4,000 rows" in lines[-1]


# ── Against real databases ────────────────────────────────────────────────────────────────


def test_dry_run_reports_and_writes_nothing(
    old_url: str, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = checksum(old_url)
    code = adopt_legacy.main(["--from", old_url, "--to", db_url], test_settings(db_url))
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "UNMAPPED devices.sim_iccid_legacy: no such column in the new schema" in out
    assert f"tracksolid.position_history: {len(DEVICES) * DAYS * 24 * 20} rows" in out
    assert f"tracksolid.trips: {len(DEVICES) * DAYS} rows" in out
    assert "infrastructure.sites: schema infrastructure is not part of the new stack" in out
    assert "tracksolid.schema_migrations: migration ledger" in out
    assert "Dry run: nothing was written" in out
    assert "spatial_ref_sys" not in out  # PostGIS's own table is no client data
    assert "RENAMED parking_events.durSecond -> duration_s" in out  # FIX-M13
    assert "RENAMED alarms.alert_time -> alarm_time" in out  # FIX-E06
    assert "RENAMED alarms.alarm_type_name -> alarm_name" in out
    assert "grafana_ro (login): legacy, unused by any service: not created" in out
    assert checksum(old_url) == before
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM tracksolid.devices").fetchone() == (0,)


def test_dry_run_against_an_empty_target_plans_on_a_scratch_schema(
    old_url: str, pg_admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"empty_{uuid.uuid4().hex[:10]}"
    empty = create_database(pg_admin_url, name)
    try:
        code = adopt_legacy.main(["--from", old_url, "--to", empty], test_settings(empty))
        out, err = capsys.readouterr()
        assert code == 0, out + err
        assert "Target is empty: planned against the current schema" in out
        assert "RENAMED parking_events.durSecond -> duration_s" in out
        assert "tracksolid.position_history -> tracksolid.position_history (batched" in out
        with psycopg.connect(pg_admin_url) as conn:
            left = conn.execute(
                "SELECT count(*) FROM pg_database WHERE datname LIKE 'adopt_plan_%'"
            ).fetchone()
        with psycopg.connect(empty) as conn:
            schema = conn.execute("SELECT to_regnamespace('tracksolid')").fetchone()
        assert left == (0,) and schema == (None,)  # scratch gone, target untouched
    finally:
        drop_database(pg_admin_url, name)


def test_same_database_on_both_sides_is_refused(old_url: str) -> None:
    argv = ["--from", old_url, "--to", old_url, "--apply"]
    assert adopt_legacy.main(argv, test_settings(old_url)) == 2


def test_apply_copies_verifies_and_leaves_the_old_database_untouched(
    old_url: str, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = checksum(old_url)
    code = adopt_legacy.main(["--from", old_url, "--to", db_url, "--apply"], test_settings(db_url))
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "All tables verified." in out and "MISMATCH" not in out
    for table in (
        "devices",
        "position_history",
        "trips",
        "alarms",
        "parking_events",
        "api_token_cache",
    ):
        old_rows, new_rows = same_rows(old_url, db_url, table)
        assert old_rows == new_rows, table
    assert "vehicle_number" in mapped_columns(old_url, db_url, "devices")
    with psycopg.connect(db_url) as conn:
        renamed = conn.execute(
            "SELECT (SELECT array_agg(DISTINCT duration_s) FROM tracksolid.parking_events),"
            " (SELECT array_agg(DISTINCT alarm_name) FROM tracksolid.alarms)"
        ).fetchone()
        assert renamed == ([600], ["Overspeed"])
    with psycopg.connect(db_url) as conn:
        extra: dict[str, Any] = dict(
            conn.execute(
                "SELECT key->>'imei', extra FROM tracksolid.legacy_extra"
                " WHERE table_name = 'devices'"
            ).fetchall()
        )
        assert extra == {
            DEVICES[0][0]: {"sim_iccid_legacy": DEVICES[0][5]},
            DEVICES[2][0]: {"sim_iccid_legacy": DEVICES[2][5]},
        }
        # The old trip ids are kept beside the renumbered ones.
        kept = conn.execute(
            "SELECT count(*) FROM tracksolid.legacy_extra WHERE table_name = 'trips'"
            " AND extra ? 'trip_id'"
        ).fetchone()
        assert kept == (len(DEVICES) * DAYS,)
    assert checksum(old_url) == before
    with open_old(old_url) as old, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        old.execute("INSERT INTO tracksolid.schema_migrations VALUES ('20', now())")

    # The read-API answers for a pre-cutover vehicle on the new database.
    settings = test_settings(db_url, vtrips_refresh_interval_s=0)
    with TestClient(create_app(settings)) as client:
        track = client.get(
            "/webhook/live-positions/track", params={"vehicle_number": "KCA 542Q", "hours": "24"}
        )
        assert track.status_code == 200, track.text
        doc = track.json()
        # Every pre-cutover fix of the answer's own window. The data end at NOW (module
        # import) and the window ends at the request's now(), so on a slow run the window has
        # slid past the last fixes by the minutes the suite took to get here: the window
        # holds one fix every 3 min of its overlap with the data (480 when nothing slid).
        with psycopg.connect(old_url) as old:
            in_window = old.execute(
                "SELECT count(*) FROM tracksolid.position_history p"
                " JOIN tracksolid.devices d USING (imei) WHERE d.vehicle_number = 'KCA 542Q'"
                " AND p.gps_time BETWEEN %s AND %s",
                (doc["summary"]["start"], doc["summary"]["end"]),
            ).fetchone()
        slid_min = (datetime.now(UTC) - NOW).total_seconds() / 60
        assert in_window is not None and in_window[0] >= 24 * 20 - 1 - int(slid_min / 3) - 1
        assert doc["summary"]["points_total"] == in_window[0]
        window = {"start": (NOW - timedelta(days=DAYS + 1)).isoformat(), "end": NOW.isoformat()}
        trips = client.post("/webhook/fleet-dashboard", json={**window, "vehicle": "KCA 542Q"})
        assert trips.status_code == 200, trips.text
        plates = {f["properties"]["vehicle_number"] for f in trips.json()["features"]}
        assert trips.json()["summary"]["trips"] == DAYS and plates == {"KCA 542Q"}

    # The staging bridge (compose profile staging-bridge): both URLs are dashboard_ro's, no
    # refresher; it serves the SPAs' three endpoints on the adopted data.
    ro = read_only_url(db_url)
    bridge = test_settings(
        db_url, dashboard_database_url=SecretStr(ro), vtrips_refresh_interval_s=0
    )
    bridge.database_url = SecretStr(ro)  # no owner credentials at all
    with TestClient(create_app(bridge)) as client:
        live = client.get("/webhook/live-positions")
        assert live.status_code == 200, live.text
        track = client.get(
            "/webhook/live-positions/track", params={"vehicle_number": "KCA 542Q", "hours": "24"}
        )
        assert track.status_code == 200 and track.json()["summary"]["points_total"] > 0
        trips = client.post("/webhook/fleet-dashboard", json={**window, "vehicle": "KBZ 101A"})
        assert trips.status_code == 200 and trips.json()["summary"]["trips"] == DAYS


class Killed(Exception):
    pass


def test_killed_run_resumes_without_gap_or_duplicate_and_catches_up(
    old_url: str, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = test_settings(db_url)
    batches: list[datetime | None] = []

    def kill_after_three(table: str, until: datetime | None, count: int) -> None:
        if table == "position_history":
            batches.append(until)
            if len(batches) == 3:
                raise Killed

    with pytest.raises(Killed):
        adopt_legacy.apply(
            old_url, db_url, settings, step=timedelta(hours=12), on_batch=kill_after_three
        )
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT copied_until FROM tracksolid.legacy_adoption"
            " WHERE table_name = 'position_history'"
        ).fetchone()
        assert row is not None and row[0] == batches[-1]
        partial = conn.execute("SELECT count(*) FROM tracksolid.position_history").fetchone()
    with psycopg.connect(old_url) as conn:
        expected = conn.execute(
            "SELECT count(*) FROM tracksolid.position_history WHERE gps_time < %s", (batches[-1],)
        ).fetchone()
    assert partial == expected and partial != (0,)

    assert adopt_legacy.apply(old_url, db_url, settings, step=timedelta(hours=12)) == 0
    old_rows, new_rows = same_rows(old_url, db_url, "position_history")
    assert old_rows == new_rows

    # The old pollers wrote on meanwhile: a second run is the catch-up pass.
    with psycopg.connect(old_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tracksolid.position_history VALUES (%s, %s, -1.2, 36.8, 10, 90, true,"
            " 'poll')",
            (DEVICES[1][0], NOW),
        )
    capsys.readouterr()
    assert adopt_legacy.apply(old_url, db_url, settings) == 0
    assert "copied tracksolid.position_history: 1 new rows" in capsys.readouterr().out
    old_rows, new_rows = same_rows(old_url, db_url, "position_history")
    assert old_rows == new_rows


def test_late_rows_are_caught_by_verification_and_by_a_rewound_pass(
    old_url: str, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = test_settings(db_url)
    assert adopt_legacy.apply(old_url, db_url, settings) == 0
    # A late track-list backfill lands in the old database, older than what was copied.
    with psycopg.connect(old_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tracksolid.position_history VALUES (%s, %s, -1.2, 36.8, 10, 90, true,"
            " 'track_list')",
            (DEVICES[0][0], NOW - timedelta(hours=30, seconds=7)),
        )
    capsys.readouterr()
    assert adopt_legacy.apply(old_url, db_url, settings) == 1
    assert "MISMATCH position_history: rows 5761 | 5760" in capsys.readouterr().out
    argv = ["--from", old_url, "--to", db_url, "--apply", "--rewind-hours", "48"]
    assert adopt_legacy.main(argv, settings) == 0
    old_rows, new_rows = same_rows(old_url, db_url, "position_history")
    assert old_rows == new_rows


def test_token_cache_carries_over_so_the_first_poll_needs_no_login(
    old_url: str, db_url: str
) -> None:
    """The old pollers' OAuth token moves with api_token_cache: the new worker's first call
    is accepted by the API without a `jimi.oauth.token.get` (seed: logins are rate-limited)."""
    sim = SimServer(SimConfig(devices=3, accounts=1, seed=5)).start()
    api = {
        "tracksolid_api_url": sim.url,
        "tracksolid_app_key": "demo-app-key",
        "tracksolid_app_secret": "demo-app-secret",
        "tracksolid_user_id": "fireside",
        "tracksolid_user_pwd": "demo-password",
        "tracksolid_targets": "fireside",
    }
    try:
        # The previous generation logged in and cached its token in the old database.
        with (
            ConnectionPool(old_url, min_size=1, max_size=2) as pool,
            JimiClient(test_settings(old_url, **api), pool) as client,
        ):
            token = client.access_token()
        assert adopt_legacy.apply(old_url, db_url, test_settings(db_url)) == 0
        sim.clear_requests()
        with (
            ConnectionPool(db_url, min_size=1, max_size=2) as pool,
            JimiClient(test_settings(db_url, **api), pool) as client,
        ):
            reply = client.call("jimi.user.device.list", {"target": "fireside"})
            assert client.access_token() == token
        assert reply.items(), "the API answered the carried-over token"
        assert [r.method for r in sim.requests] == ["jimi.user.device.list"]
    finally:
        sim.stop()
