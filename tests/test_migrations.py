"""run_migrations: fresh apply, no-op re-run, changed file refused, concurrent runners, roles,
the engine choice (TimescaleDB / plain, installed-but-not-preloaded) — on both engines."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from ingest.jobs import refresh_daily_rollup
from run_migrations import (
    MIGRATIONS_DIR,
    ChangedMigrationError,
    load_migrations,
    migrate,
    split_statements,
)
from tests.conftest import ROOT, TIMESCALEDB, engine_of, test_settings
from tests.pgcluster import LocalCluster, timescaledb_installed

pytestmark = pytest.mark.both_engines

CORE_TABLES = {
    "devices",
    "live_positions",
    "position_history",
    "trips",
    "parking_events",
    "alarms",
    "obd_readings",
    "device_events",
    "heartbeats",
    "fuel_readings",
    "temperature_readings",
    "fault_codes",
    "lbs_readings",
    "geofences",
    "ingestion_log",
    "api_token_cache",
    "push_inbox",
    "schema_migrations",
}


def _tables(url: str, schema: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {r[0] for r in rows}


def _ledger(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT filename, status FROM tracksolid.schema_migrations").fetchall()
    return {r[0]: r[1] for r in rows}


def _copy_migrations(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, target)
    return target


TIMESCALE_FILES = {
    "0003_timescale_hypertables.sql",
    "0004_timescale_mileage_cagg.sql",
    "0005_timescale_cagg_realtime_compress_all.sql",
    "R__timescale_policies.sql",
}
PLAIN_FILES = {"0003_plain_indexes.sql", "0004_plain_mileage_daily.sql"}


def test_fresh_apply_builds_core_schema_then_rerun_is_noop(empty_db: str, engine: str) -> None:
    settings = test_settings(empty_db)
    first = migrate(empty_db, settings)
    assert first.applied, "a fresh database gets every applicable file"
    assert _tables(empty_db, "tracksolid") >= CORE_TABLES
    # One variant ran, its twin was skipped and stays so.
    ledger = _ledger(empty_db)
    used, unused = (
        (TIMESCALE_FILES, PLAIN_FILES) if engine == TIMESCALEDB else (PLAIN_FILES, TIMESCALE_FILES)
    )
    assert {name: ledger[name] for name in used} == dict.fromkeys(used, "applied")
    assert {name: ledger[name] for name in unused} == dict.fromkeys(unused, "skipped")
    with psycopg.connect(empty_db) as conn:
        hypertables = conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
    assert hypertables == ((1,) if engine == TIMESCALEDB else (0,))

    second = migrate(empty_db, settings)
    assert second.applied == [] and second.skipped == []
    assert second.unchanged == len(load_migrations())


def _env(url: str, **extra: str) -> dict[str, str]:
    """Environment of a runner subprocess for this test's database and engine."""
    use = "on" if engine_of(url) == TIMESCALEDB else "off"
    return {"DATABASE_URL": url, "PATH": "/usr/bin:/bin", "USE_TIMESCALEDB": use, **extra}


def test_cli_reports_noop_on_second_run(empty_db: str) -> None:
    env = _env(empty_db, LOG_LEVEL="INFO")
    cmd = [sys.executable, str(ROOT / "run_migrations.py")]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stderr
    status = subprocess.run(
        [*cmd, "--status"], env=env, capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert status.returncode == 0
    assert "pending" not in status.stdout
    assert "applied    0001_core_schema.sql" in status.stdout


def test_changed_applied_file_is_refused_and_named(empty_db: str, tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    settings = test_settings(empty_db)
    migrate(empty_db, settings, directory=directory)
    victim = directory / "0001_core_schema.sql"
    victim.write_text(victim.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(ChangedMigrationError, match=r"0001_core_schema\.sql"):
        migrate(empty_db, settings, directory=directory)
    # The CLI exits non-zero and names the file.
    env = _env(empty_db)
    result = subprocess.run(
        [sys.executable, str(ROOT / "run_migrations.py"), "--dir", str(directory)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert "0001_core_schema.sql" in result.stderr


def test_new_file_is_applied_and_repeatable_reapplied_on_change(
    empty_db: str, tmp_path: Path
) -> None:
    directory = _copy_migrations(tmp_path)
    settings = test_settings(empty_db)
    migrate(empty_db, settings, directory=directory)
    (directory / "9001_extra.sql").write_text("CREATE TABLE tracksolid.extra (id int);\n")
    (directory / "R__extra_view.sql").write_text(
        "CREATE OR REPLACE VIEW reporting.v_extra AS SELECT 1 AS one;\n"
    )
    report = migrate(empty_db, settings, directory=directory)
    assert report.applied == ["9001_extra.sql", "R__extra_view.sql"]
    (directory / "R__extra_view.sql").write_text(
        "CREATE OR REPLACE VIEW reporting.v_extra AS SELECT 1 AS one, 2 AS two;\n"
    )
    report = migrate(empty_db, settings, directory=directory)
    assert report.applied == ["R__extra_view.sql"]
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT two FROM reporting.v_extra").fetchone() == (2,)


def test_failing_file_rolls_back_and_is_not_recorded(empty_db: str, tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    (directory / "9002_broken.sql").write_text(
        "CREATE TABLE tracksolid.half_done (id int);\nSELECT * FROM no_such_table;\n"
    )
    settings = test_settings(empty_db)
    with pytest.raises(Exception, match=r"9002_broken\.sql"):
        migrate(empty_db, settings, directory=directory)
    assert "half_done" not in _tables(empty_db, "tracksolid")
    assert "9002_broken.sql" not in _ledger(empty_db)


def test_two_concurrent_runners_apply_each_file_once(empty_db: str, tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    # A file whose second application would fail loudly (duplicate table).
    (directory / "9003_once.sql").write_text(
        "CREATE TABLE tracksolid.once_only (id int);\n"
        "INSERT INTO tracksolid.once_only VALUES (1);\n"
    )
    settings = test_settings(empty_db)
    reports: list[object] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            reports.append(migrate(empty_db, settings, directory=directory))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    applied = [name for r in reports for name in r.applied]  # type: ignore[attr-defined]
    assert applied.count("9003_once.sql") == 1
    assert applied.count("0001_core_schema.sql") == 1
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT count(*) FROM tracksolid.once_only").fetchone() == (1,)


def test_roles_created_with_password_and_readonly_cannot_write(
    empty_db: str, pg_admin_url: str
) -> None:
    settings = test_settings(
        empty_db, dashboard_ro_password="ro-secret", tracksolid_owner_password="owner-secret"
    )
    migrate(empty_db, settings)
    migrate(empty_db, settings)  # idempotent
    with psycopg.connect(empty_db, autocommit=True) as conn:
        roles = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN "
                "('tracksolid_owner', 'dashboard_ro')"
            ).fetchall()
        }
        assert roles == {"tracksolid_owner": True, "dashboard_ro": True}
        conn.execute("CREATE VIEW reporting.v_probe AS SELECT 1 AS x")
        conn.execute("SET ROLE dashboard_ro")
        # New reporting views are readable by default privileges ...
        assert conn.execute("SELECT x FROM reporting.v_probe").fetchone() == (1,)
        # ... but nothing can be written, and the raw tables are off limits.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO tracksolid.devices (imei) VALUES ('1')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM tracksolid.api_token_cache")
        conn.execute("RESET ROLE")
        conn.execute("SET ROLE tracksolid_owner")
        conn.execute("INSERT INTO tracksolid.devices (imei) VALUES ('1')")
        # The app role owns the materialized views, so its refreshers may refresh them.
        conn.execute("REFRESH MATERIALIZED VIEW reporting.v_trips")
        conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY reporting.v_trips")
        # ... and the daily roll-up (continuous aggregate or materialized view) as well.
        assert refresh_daily_rollup(conn) in ("continuous", "plain")


def test_postgis_points_are_generated(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO tracksolid.live_positions (imei, gps_time, lat, lng, source)"
            " VALUES ('862798050000001', now(), -1.2921, 36.8219, 'poll')"
        )
        row = conn.execute(
            "SELECT ST_X(geom), ST_Y(geom), ST_SRID(geom),"
            " ST_DWithin(geom::geography, ST_MakePoint(36.8219, -1.2921)::geography, 1)"
            " FROM tracksolid.live_positions"
        ).fetchone()
    assert row == (36.8219, -1.2921, 4326, True)


def test_daily_rollup_refreshes(db_url: str, engine: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh,"
            " mileage_km, source) VALUES"
            " ('1', '2026-11-01 08:00Z', -1.3, 36.8, 0, 1000, 'poll'),"
            " ('1', '2026-11-01 09:00Z', -1.3, 36.9, 40, 1012.5, 'poll'),"
            " ('1', '2026-11-02 09:00Z', -1.3, 36.9, 10, 1013, 'poll')"
        )
        expected_kind = "continuous" if engine == TIMESCALEDB else "plain"
        assert refresh_daily_rollup(conn) == expected_kind
        assert refresh_daily_rollup(conn) == expected_kind  # again: nothing to redo
        rows = conn.execute(
            "SELECT day::date::text, fixes, moving_fixes, max_mileage_km - min_mileage_km"
            " FROM tracksolid.v_mileage_daily_cagg ORDER BY day"
        ).fetchall()
    assert rows == [("2026-11-01", 2, 1, 12.5), ("2026-11-02", 1, 1, 0.0)]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
        ("SELECT ';'; -- c; x\nSELECT 2", ["SELECT ';'", "-- c; x\nSELECT 2"]),
        ("DO $$ BEGIN PERFORM 1; END $$; SELECT 3", ["DO $$ BEGIN PERFORM 1; END $$", "SELECT 3"]),
        ("SELECT $f$a;b$f$;", ["SELECT $f$a;b$f$"]),
        ("/* a; b */ SELECT 1;\n-- only a comment;\n", ["/* a; b */ SELECT 1"]),
        ("SELECT 'it''s;ok'", ["SELECT 'it''s;ok'"]),
    ],
)
def test_split_statements(script: str, expected: list[str]) -> None:
    assert split_statements(script) == expected


def test_every_file_has_a_valid_name_and_header() -> None:
    names = [m.name for m in load_migrations()]
    assert names[0] == "0001_core_schema.sql"
    assert all(
        n.startswith("R__")
        for n in names[names.index(next(n for n in names if n.startswith("R__"))) :]
    ), "repeatables run last"


@pytest.mark.timescaledb_only
def test_installed_but_not_preloaded_says_what_to_do() -> None:
    """Right after installing the package, before `shared_preload_libraries` is set: a clear
    error naming both ways out, exit 1 — never 'the connection is closed'."""
    if not timescaledb_installed():  # only with TEST_DATABASE_URL on a machine without it
        pytest.skip("needs TimescaleDB installed for the local PostgreSQL binaries")
    with LocalCluster(timescaledb=False) as cluster:
        with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE fresh")
        url = cluster.url("fresh")
        cmd = [sys.executable, str(ROOT / "run_migrations.py"), "--no-roles"]
        base = {"DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
        for use in ("auto", "on"):
            run = subprocess.run(
                cmd, env={**base, "USE_TIMESCALEDB": use},
                capture_output=True, text=True, cwd=ROOT, check=False,
            )  # fmt: skip
            assert run.returncode == 1, run.stderr
            assert "shared_preload_libraries = 'timescaledb'" in run.stderr
            assert "USE_TIMESCALEDB=off" in run.stderr
            assert "connection is closed" not in run.stderr
            assert _ledger(url).get("0003_timescale_hypertables.sql") is None, "nothing pinned"
        # The way out the message names: the plain variant builds and is pinned.
        run = subprocess.run(
            cmd, env={**base, "USE_TIMESCALEDB": "off"},
            capture_output=True, text=True, cwd=ROOT, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert _ledger(url)["0003_timescale_hypertables.sql"] == "skipped"
        # Once pinned, the server's TimescaleDB state no longer matters for this database.
        again = subprocess.run(
            cmd, env={**base, "USE_TIMESCALEDB": "auto"},
            capture_output=True, text=True, cwd=ROOT, check=False,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert "nothing to do" in again.stderr
