"""backup.pg_backup: retention rules, dump → moto S3 → restore round trip, failure paths, loop."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from backup import pg_backup, retention
from backup.pg_backup import Auditor, Stopper
from backup.pgtools import database_name, describe, split_password
from backup.restore import restore_list
from backup.retention import (
    dump_key,
    next_run_time,
    parse_at,
    parse_dump_time,
    select_to_keep,
)
from dashboard_api import create_app
from ingest.jobs import refresh_daily_rollup
from run_migrations import migrate
from tests.conftest import (
    ROOT,
    TIMESCALEDB,
    create_database,
    drop_database,
    engine_of,
    test_settings,
    url_for,
    with_password,
)
from tests.factories import without_clock
from ts_shared import Settings, make_s3_client

APP_SCHEMAS = ("tracksolid", "reporting", "tickets", "fuel")
PREFIX = "pg_dump/"


def ts(text: str) -> datetime:
    """`2026-03-02 22:30` (UTC) → aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# ─────────────────────────────────────────────────────────────────────────────
# Pure functions
# ─────────────────────────────────────────────────────────────────────────────

# 2026-03-02 is a Monday (ISO week 10); 2026-03-01 a Sunday (week 9).
RETENTION_CASES: list[tuple[str, list[str], int, int, str, set[str]]] = [
    ("nothing to keep", [], 7, 4, "2026-03-10 00:00", set()),
    (
        "one per day: newest of each day",
        ["2026-03-05 22:30", "2026-03-05 10:00", "2026-03-04 22:30", "2026-03-03 22:30"],
        2,
        0,
        "2026-03-06 00:00",
        {"2026-03-05 22:30", "2026-03-04 22:30"},
    ),
    (
        "days without a dump do not use a slot",
        ["2026-03-20 22:30", "2026-03-10 22:30", "2026-03-01 22:30"],
        2,
        0,
        "2026-03-21 00:00",
        {"2026-03-20 22:30", "2026-03-10 22:30"},
    ),
    (
        "weekly reaches beyond the daily ones (newest of each ISO week)",
        [
            "2026-03-11 22:30",  # Wed wk 11 (daily)
            "2026-03-10 22:30",  # Tue wk 11 (daily)
            "2026-03-09 22:30",  # Mon wk 11
            "2026-03-08 22:30",  # Sun wk 10 → weekly
            "2026-03-04 22:30",  # Wed wk 10
            "2026-03-01 22:30",  # Sun wk 9 → weekly
            "2026-02-27 22:30",  # Fri wk 9
            "2026-02-22 22:30",  # Sun wk 8 (beyond 2 weekly)
        ],
        2,
        2,
        "2026-03-12 00:00",
        {"2026-03-11 22:30", "2026-03-10 22:30", "2026-03-08 22:30", "2026-03-01 22:30"},
    ),
    (
        "a week whose newest dump is a daily one does not count as weekly",
        ["2026-03-09 22:30", "2026-03-08 22:30", "2026-03-07 22:30", "2026-03-01 22:30"],
        1,
        1,
        "2026-03-10 00:00",
        # wk 11: 03-09 (daily). wk 10: newest 03-08 → weekly. wk 9 is beyond.
        {"2026-03-09 22:30", "2026-03-08 22:30"},
    ),
    (
        "daily and weekly zero still keep the newest dump",
        ["2026-03-09 22:30", "2026-03-08 22:30"],
        0,
        0,
        "2026-03-10 00:00",
        {"2026-03-09 22:30"},
    ),
    (
        "dumps dated in the future (clock skew) are never deleted",
        ["2026-04-01 22:30", "2026-03-09 22:30", "2026-03-08 22:30"],
        1,
        0,
        "2026-03-10 00:00",
        {"2026-04-01 22:30", "2026-03-09 22:30"},
    ),
    (
        "UTC day boundary: 23:59 and 00:01 are different days",
        ["2026-03-09 00:01", "2026-03-08 23:59", "2026-03-08 00:00"],
        2,
        0,
        "2026-03-10 00:00",
        {"2026-03-09 00:01", "2026-03-08 23:59"},
    ),
    (
        "ISO week 1 of 2027 starts on Monday 2027-01-04",
        ["2027-01-04 22:30", "2027-01-03 22:30", "2026-12-30 22:30", "2026-12-27 22:30"],
        1,
        2,
        "2027-01-05 00:00",
        # daily: 01-04 (wk 2027-1). weekly: wk 2026-53 newest 01-03, wk 2026-52 newest 12-27.
        {"2027-01-04 22:30", "2027-01-03 22:30", "2026-12-27 22:30"},
    ),
]


@pytest.mark.parametrize(
    ("times", "daily", "weekly", "now", "expected"),
    [case[1:] for case in RETENTION_CASES],
    ids=[case[0] for case in RETENTION_CASES],
)
def test_select_to_keep(
    times: list[str], daily: int, weekly: int, now: str, expected: set[str]
) -> None:
    items = [(f"k/{t}", ts(t)) for t in times]
    kept = select_to_keep(items, daily, weekly, ts(now))
    assert kept == {f"k/{t}" for t in expected}


def test_default_retention_over_90_nightly_dumps() -> None:
    now = ts("2026-06-01 23:00")
    items = [(f"d{i}", ts("2026-06-01 22:30") - timedelta(days=i)) for i in range(90)]
    kept = select_to_keep(items, 7, 4, now)
    assert len(kept) == 11
    assert {f"d{i}" for i in range(7)} <= kept  # the last 7 nights


@pytest.mark.parametrize(
    ("now", "at", "expected"),
    [
        ("2026-03-09 10:00", "22:30", "2026-03-09 22:30"),
        ("2026-03-09 22:30", "22:30", "2026-03-10 22:30"),  # exactly now → tomorrow
        ("2026-03-09 23:00", "22:30", "2026-03-10 22:30"),
        ("2026-12-31 23:00", "01:30", "2027-01-01 01:30"),
    ],
)
def test_next_run_time(now: str, at: str, expected: str) -> None:
    assert next_run_time(ts(now), parse_at(at)) == ts(expected)


def test_next_run_time_reads_aware_times_in_utc() -> None:
    eat = datetime.fromisoformat("2026-03-10T01:00:00+03:00")  # 22:00 UTC on the 9th
    assert next_run_time(eat, parse_at("22:30")) == ts("2026-03-09 22:30")


@pytest.mark.parametrize("bad", ["2230", "25:00", "22:61", "", "x:30"])
def test_parse_at_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_at(bad)


def test_dump_key_round_trip() -> None:
    when = datetime.fromisoformat("2026-03-10T01:30:07.5+03:00")
    key = dump_key("pg_dump/", "tracksolid_db", when)
    assert key == "pg_dump/tracksolid_db/2026-03-09T223007Z.dump"
    assert parse_dump_time(key) == ts("2026-03-09 22:30:07")
    for other in ("pg_dump/x/notes.txt", "pg_dump/x/2026-13-01T000000Z.dump", "a/2026-03-09.dump"):
        assert parse_dump_time(other) is None


def test_split_password_and_describe() -> None:
    dsn, password = split_password("postgresql://app:p%40ss@db.internal:6543/fleet?sslmode=require")
    assert password == "p@ss"
    assert "p@ss" not in dsn
    assert "sslmode=require" in dsn
    assert describe("postgresql://app:secret@db:6543/fleet") == "app@db:6543/fleet"
    assert split_password("host=h dbname=d")[1] is None


def test_restore_list_drops_extension_comments_and_detects_timescale() -> None:
    toc = (
        "; Archive created at ...\n"
        "5; 3079 16385 EXTENSION - postgis \n"
        "6; 0 0 COMMENT - EXTENSION postgis \n"
        "7; 3079 17000 EXTENSION - timescaledb \n"
        "250; 1259 17100 TABLE tracksolid devices postgres\n"
    )
    listing, timescale = restore_list(toc)
    assert "COMMENT - EXTENSION" not in listing
    assert "EXTENSION - postgis" in listing
    assert "TABLE tracksolid devices" in listing
    assert timescale
    assert restore_list("5; 3079 16385 EXTENSION - postgis \n")[1] is False


# ─────────────────────────────────────────────────────────────────────────────
# Against PostgreSQL and moto S3
# ─────────────────────────────────────────────────────────────────────────────


def seed(url: str) -> None:
    """A few rows in tables of every app schema (PostGIS columns, triggers, a matview)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(3):
            imei = f"86000000000000{i}"
            conn.execute(
                "INSERT INTO tracksolid.devices (imei, vehicle_number, device_name)"
                " VALUES (%s, %s, %s)",
                (imei, f"KCA {i}00Q", f"van {i}"),
            )
            conn.execute(
                "INSERT INTO tracksolid.live_positions (imei, gps_time, lat, lng, source)"
                " VALUES (%s, '2026-03-09 08:00Z', -1.28, 36.82, 'poll')",
                (imei,),
            )
            conn.execute(
                "INSERT INTO tracksolid.position_history"
                " (imei, gps_time, lat, lng, speed_kmh, mileage_km, source)"
                " SELECT %s, '2026-03-09 06:00Z'::timestamptz + make_interval(mins => g),"
                "        -1.28 + g * 0.001, 36.82, 30, 1000 + g, 'track_list'"
                " FROM generate_series(1, 40) AS g",
                (imei,),
            )
            conn.execute(
                "INSERT INTO tracksolid.trips (imei, start_time, end_time, distance_km, source)"
                " VALUES (%s, '2026-03-09 06:00Z', '2026-03-09 06:40Z', 4.2, 'mileage')",
                (imei,),
            )
            conn.execute(
                "INSERT INTO tracksolid.alarms (imei, alarm_time, alarm_type, lat, lng, source)"
                " VALUES (%s, '2026-03-09 06:10Z', 'overspeed', -1.28, 36.82, 'poll')",
                (imei,),
            )
            conn.execute(
                "INSERT INTO tracksolid.parking_events"
                " (imei, start_time, end_time, duration_s, acc_on, lat, lng)"
                " VALUES (%s, '2026-03-09 07:00Z', '2026-03-09 07:30Z', 1800, false, -1.3, 36.8)",
                (imei,),
            )
        conn.execute(
            "INSERT INTO tracksolid.geofences (name, kind, geom) VALUES ('depot', 'depot',"
            " ST_Multi(ST_GeomFromText('POLYGON((36.8 -1.3,36.9 -1.3,36.9 -1.2,36.8 -1.3))',"
            " 4326)))"
        )
        conn.execute(
            "INSERT INTO tickets.inc (ticket_id, raw) VALUES ('INC1', %s::jsonb)",
            (
                '{"raw_status": "Open", "cluster": "Westlands", "latitude": "-1.27",'
                ' "longitude": "36.81", "created_at_service": "2026-03-09 09:00:00"}',
            ),
        )
        conn.execute(
            "INSERT INTO fuel.records (id, raw) VALUES ('1', %s::jsonb)",
            ('{"id": 1, "car": "KCA 100Q", "litres": "40", "department": "Field Ops"}',),
        )
        # pg_restore refreshes materialized views: make the source's current as well (the
        # daily roll-up is a continuous aggregate on TimescaleDB, refreshed its own way).
        views = conn.execute(
            "SELECT schemaname, matviewname FROM pg_matviews WHERE schemaname = ANY(%s)"
            " AND matviewname <> 'v_mileage_daily_cagg'",
            (list(APP_SCHEMAS),),
        ).fetchall()
        for schema, name in views:
            conn.execute(
                sql.SQL("REFRESH MATERIALIZED VIEW {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(name)
                )
            )
        refresh_daily_rollup(conn)


def table_counts(url: str) -> dict[str, int]:
    """count(*) of every table and populated materialized view in the app schemas, the daily
    roll-up (a view over its materialization on TimescaleDB) included."""
    counts: dict[str, int] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        rels = conn.execute(
            "SELECT n.nspname, c.relname"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = ANY(%s) AND (c.relkind IN ('r', 'p', 'm') AND c.relispopulated"
            "  OR (n.nspname, c.relname) = ('tracksolid', 'v_mileage_daily_cagg'))"
            " ORDER BY 1, 2",
            (list(APP_SCHEMAS),),
        ).fetchall()
        for schema, name in rels:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(name)
                )
            ).fetchone()
            assert row is not None
            counts[f"{schema}.{name}"] = int(row[0])
    return counts


def backup_log(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT ok, target, detail->>'action', error FROM tracksolid.ingestion_log"
            " WHERE source = 'job' AND method = 'db_backup' ORDER BY log_id"
        ).fetchall()


def bucket_keys(settings: Settings) -> list[str]:
    s3 = make_s3_client(settings)
    reply = s3.list_objects_v2(Bucket=settings.backup_bucket)
    return sorted(obj["Key"] for obj in reply.get("Contents", []))


def open_uploads(settings: Settings) -> list[Any]:
    s3 = make_s3_client(settings)
    return list(s3.list_multipart_uploads(Bucket=settings.backup_bucket).get("Uploads", []))


def for_db(settings: Settings, url: str, **overrides: Any) -> Settings:
    values = settings.model_dump()
    values.update(database_url=url, dashboard_database_url=None, **overrides)
    return Settings(_env_file=None, **values)


def timescale_facts(url: str) -> dict[str, Any]:
    """What a TimescaleDB restore must bring back besides the rows: hypertables, compressed
    chunks, the continuous aggregate and its materialized rows, the policies."""
    with psycopg.connect(url, autocommit=True) as conn:
        hypertables = conn.execute(
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = 'tracksolid' ORDER BY 1"
        ).fetchall()
        compressed = conn.execute(
            "SELECT hypertable_name, count(*) FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = 'tracksolid' AND is_compressed GROUP BY 1 ORDER BY 1"
        ).fetchall()
        cagg = conn.execute(
            "SELECT format('%I.%I', materialization_hypertable_schema,"
            " materialization_hypertable_name), materialized_only"
            " FROM timescaledb_information.continuous_aggregates"
        ).fetchone()
        assert cagg is not None
        materialized = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(str(cagg[0])))
        ).fetchone()
        jobs = conn.execute(
            "SELECT proc_name, coalesce(hypertable_name, '') FROM timescaledb_information.jobs"
            " WHERE proc_name LIKE 'policy_%' ORDER BY 1, 2"
        ).fetchall()
    return {
        "hypertables": hypertables,
        "compressed": compressed,
        "realtime": cagg[1] is False,
        "materialized": materialized,
        "jobs": jobs,
    }


def read_api(url: str) -> dict[str, Any]:
    """The read-API's answers on a database (live map, a track, trips, summary, filters)."""
    settings = test_settings(url, vtrips_refresh_interval_s=0)
    window = {"start": "2026-03-09T00:00:00Z", "end": "2026-03-10T00:00:00Z"}
    days = {"start": "2026-03-09", "end": "2026-03-10"}
    answers: dict[str, Any] = {}
    with TestClient(create_app(settings)) as client:
        for name, response in (
            ("live", client.get("/webhook/live-positions")),
            ("trips", client.post("/webhook/fleet-dashboard", json=window)),
            ("filters", client.get("/analytics/filters")),
            ("utilisation", client.get("/analytics/utilisation", params=days)),
        ):
            assert response.status_code == 200, (name, response.text)
            answers[name] = without_clock(response.json())
    assert answers["live"]["features"] and answers["trips"]["features"]
    return answers


@pytest.mark.both_engines
def test_dump_restore_round_trip(
    db_url: str, empty_db: str, s3_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    seed(db_url)
    timescale = engine_of(db_url) == TIMESCALEDB
    if timescale:  # production's state: old chunks compressed, the roll-up materialized
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("SELECT _timescaledb_functions.stop_background_workers()")
            conn.execute(
                "SELECT compress_chunk(c) FROM show_chunks('tracksolid.position_history') c"
            )
        source_facts = timescale_facts(db_url)
        assert source_facts["compressed"] == [("position_history", 1)]
        assert source_facts["materialized"] == (3,) and source_facts["realtime"]
    source_answers = read_api(db_url)
    source_counts = table_counts(db_url)
    assert source_counts["tracksolid.position_history"] == 120
    assert source_counts["tracksolid.v_mileage_daily_cagg"] == 3
    secret = f"pw-{uuid.uuid4().hex}"
    settings = for_db(s3_settings, with_password(db_url, secret))
    caplog.set_level(logging.DEBUG, logger="backup")

    assert pg_backup.main(["dump"], settings) == 0

    keys = bucket_keys(settings)
    dbname = database_name(db_url)
    assert len(keys) == 1
    assert keys[0].startswith(f"{PREFIX}{dbname}/")
    assert parse_dump_time(keys[0]) is not None
    assert open_uploads(settings) == []
    actions = [(ok, action) for ok, _target, action, _err in backup_log(db_url)]
    assert actions == [(True, "dump"), (True, "prune")]

    target = with_password(empty_db, secret)
    assert pg_backup.main(["restore", "latest", "--target-url", target], settings) == 0

    restored = table_counts(empty_db)
    expected = dict(source_counts)
    # The dump's own audit rows are written after pg_dump; the restore adds its row.
    expected["tracksolid.ingestion_log"] += 1
    assert restored == expected
    assert backup_log(empty_db)[-1][:3] == (True, keys[0], "restore")
    with psycopg.connect(empty_db) as conn:
        row = conn.execute(
            "SELECT ST_AsText(geom),"
            " (SELECT count(*) FROM tracksolid.alarms WHERE geom IS NOT NULL)"
            " FROM tracksolid.live_positions LIMIT 1"
        ).fetchone()
    assert row == ("POINT(36.82 -1.28)", 3)
    assert secret not in caplog.text
    # Runbook step: the migration runner on a restored database only re-applies the grants.
    report = migrate(empty_db, test_settings(empty_db))
    assert (report.applied, report.skipped) == ([], [])
    if timescale:
        assert timescale_facts(empty_db) == source_facts
    # The restored database answers the read-API exactly as the source did.
    assert read_api(empty_db) == source_answers


def test_restore_creates_the_target_database(
    pg_admin_url: str, db_url: str, s3_settings: Settings
) -> None:
    seed(db_url)
    assert pg_backup.main(["dump", "--no-prune"], s3_settings) == 0
    name = f"r_{uuid.uuid4().hex[:8]}"
    target = url_for(pg_admin_url, name)
    try:
        assert pg_backup.main(["restore", "latest", "--target-url", target], s3_settings) == 1
        argv = ["restore", "latest", "--target-url", target, "--create", "--jobs", "2"]
        assert pg_backup.main(argv, s3_settings) == 0
        assert table_counts(target)["tracksolid.trips"] == 3
    finally:
        drop_database(pg_admin_url, name)


def test_restore_refuses_non_empty_target_without_force(
    db_url: str, s3_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(db_url)
    assert pg_backup.main(["dump", "--no-prune"], s3_settings) == 0
    key = bucket_keys(s3_settings)[0]
    before = table_counts(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM tracksolid.alarms")

    # The migrated database has tables in `tracksolid`: refused, untouched.
    code = pg_backup.main(["restore", key, "--target-url", db_url], s3_settings)
    assert code == pg_backup.EXIT_REFUSED
    assert table_counts(db_url)["tracksolid.alarms"] == 0

    # --force replaces the dumped objects: the deleted alarms are back.
    name = key.rsplit("/", 1)[-1]  # a bare file name works too
    assert pg_backup.main(["restore", name, "--target-url", db_url, "--force"], s3_settings) == 0
    after = table_counts(db_url)
    assert after["tracksolid.alarms"] == 3
    # `before` has the dump's audit row (written after pg_dump, so not in the dump); the
    # restored log lacks it but gains the restore row.
    assert after == before
    assert "restored s3://" in capsys.readouterr().out


def test_restore_of_missing_dump_fails(s3_settings: Settings, empty_db: str) -> None:
    assert pg_backup.main(["restore", "latest", "--target-url", empty_db], s3_settings) == 1
    missing = "2020-01-01T000000Z.dump"
    assert pg_backup.main(["restore", missing, "--target-url", empty_db], s3_settings) == 1


def test_failed_pg_dump_uploads_nothing(
    pg_admin_url: str, s3_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    bad = with_password(url_for(pg_admin_url, f"no_such_db_{uuid.uuid4().hex[:6]}"), secret)
    settings = for_db(s3_settings, bad)
    assert pg_backup.main(["dump"], settings) == 1
    assert bucket_keys(settings) == []
    assert open_uploads(settings) == []
    assert "does not exist" in caplog.text
    assert secret not in caplog.text


def test_upload_failure_fails_the_dump(
    db_url: str, s3_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = for_db(s3_settings, db_url, backup_bucket=f"missing-{uuid.uuid4().hex[:8]}")
    assert pg_backup.main(["dump"], settings) == 1
    assert "upload to s3://missing-" in caplog.text
    assert backup_log(db_url)[-1][0] is False


@pytest.fixture
def fake_pg_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PG_BIN with a pg_dump that writes 12 MB, then fails (a crash in the middle of a dump)."""
    script = tmp_path / "pg_dump"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 99.0"; exit 0; fi\n'
        "head -c 12000000 /dev/zero\n"
        'echo "pg_dump: error: simulated crash" >&2\n'
        "exit 1\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PG_BIN", str(tmp_path))
    monkeypatch.setattr(pg_backup, "PART_SIZE", 5 * 1024 * 1024)  # force a multipart upload
    return tmp_path


def test_pg_dump_failing_mid_stream_aborts_the_multipart_upload(
    fake_pg_bin: Path, s3_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    assert pg_backup.main(["dump"], s3_settings) == 1
    assert "simulated crash" in caplog.text
    assert bucket_keys(s3_settings) == []
    assert open_uploads(s3_settings) == []
    rows = backup_log(s3_settings.dsn())
    assert rows[-1][0] is False
    assert "simulated crash" in rows[-1][3]


def put_dump(settings: Settings, key: str) -> None:
    make_s3_client(settings).put_object(Bucket=settings.backup_bucket, Key=key, Body=b"PGDMP")


def test_prune_deletes_the_right_keys_on_s3(
    s3_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = f"{PREFIX}fleet/"
    stamps = [
        "2026-03-11T223000Z",  # daily
        "2026-03-11T120000Z",  # same day, older: deleted
        "2026-03-10T223000Z",  # daily
        "2026-03-09T223000Z",  # Mon wk 11: deleted
        "2026-03-08T223000Z",  # Sun wk 10: weekly
        "2026-03-02T223000Z",  # Mon wk 10: deleted
        "2026-02-27T223000Z",  # Fri wk 9: deleted (only one weekly)
    ]
    for stamp in stamps:
        put_dump(s3_settings, f"{folder}{stamp}.dump")
    foreign = [f"{folder}README.txt", f"{PREFIX}other/2020-01-01T000000Z.dump"]
    for key in foreign:
        put_dump(s3_settings, key)
    s3 = make_s3_client(s3_settings)
    now = ts("2026-03-12 00:00")

    dry = retention.prune(s3, s3_settings.backup_bucket, folder, 2, 1, now=now, dry_run=True)
    assert len(dry.deleted) == 4
    assert len(bucket_keys(s3_settings)) == len(stamps) + len(foreign)

    report = retention.prune(s3, s3_settings.backup_bucket, folder, 2, 1, now=now)
    kept = ["2026-03-11T223000Z", "2026-03-10T223000Z", "2026-03-08T223000Z"]
    assert sorted(d.key for d in report.deleted) == sorted(
        f"{folder}{s}.dump" for s in stamps if s not in kept
    )
    assert bucket_keys(s3_settings) == sorted([f"{folder}{s}.dump" for s in kept] + foreign)

    # The CLI dry run prints and deletes nothing.
    argv = ["prune", "--db-name", "fleet", "--keep-daily", "1", "--keep-weekly", "0", "--dry-run"]
    assert pg_backup.main(argv, s3_settings) == 0
    out = capsys.readouterr().out
    assert out.count("would delete") == 2
    assert len(bucket_keys(s3_settings)) == len(kept) + len(foreign)

    assert pg_backup.main(["list", "--db-name", "fleet"], s3_settings) == 0
    listing = capsys.readouterr().out
    assert "3 dump(s)" in listing
    assert "2026-03-11 22:30:00Z" in listing


def test_run_loop_dumps_at_the_scheduled_time_and_stops(db_url: str, s3_settings: Settings) -> None:
    # A clock that says it is 22:29:59 UTC now: the first run is due in a second.
    real_start = datetime.now(UTC)
    offset = real_start.replace(hour=22, minute=29, second=59, microsecond=0) - real_start

    def clock() -> datetime:
        return datetime.now(UTC) + offset

    stopper = Stopper()
    auditor = Auditor(db_url)
    thread = threading.Thread(
        target=pg_backup.run_forever,
        args=(s3_settings, make_s3_client(s3_settings), auditor, stopper),
        kwargs={"at": parse_at("22:30"), "keep_daily": 7, "keep_weekly": 4, "clock": clock},
        daemon=True,
    )
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not bucket_keys(s3_settings) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(bucket_keys(s3_settings)) == 1
        assert parse_dump_time(bucket_keys(s3_settings)[0]) is not None
    finally:
        stopper.stop()
        thread.join(timeout=10)
        auditor.close()
    assert not thread.is_alive()


@pytest.fixture
def run_env(pg_admin_url: str, s3_endpoint: str) -> Iterator[dict[str, str]]:
    name = f"b_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_admin_url, name)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": url,
        "RUSTFS_ENDPOINT": s3_endpoint,
        "RUSTFS_ACCESS_KEY": "test-access",
        "RUSTFS_SECRET_KEY": "test-secret",
        "LOG_LEVEL": "INFO",
    }
    yield env
    drop_database(pg_admin_url, name)


def test_run_command_exits_cleanly_on_sigterm(run_env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "backup.pg_backup", "run", "--at", "03:00"],
        cwd=tmp_path,  # no .env here
        env=run_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if "next backup at" in line:
                break
        assert any("T03:00:00Z" in line for line in lines), lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        rest = proc.stderr.read()
        proc.stderr.close()
    assert "scheduler stopped" in rest


def test_for_db_keeps_the_other_settings() -> None:
    # for_db keeps every other setting (bucket, prefix, retention) of the fixture's settings.
    base = test_settings("postgresql://u@h/one", backup_bucket="b1", backup_keep_daily=3)
    derived = for_db(base, "postgresql://u@h/two")
    assert derived.backup_bucket == "b1"
    assert derived.backup_keep_daily == 3
    assert database_name(derived.dsn()) == "two"
