"""Registry life cycle (issue #15): the CSV's `active` and `fuel_100km_l` columns, devices no
account lists for REGISTRY_DEACTIVATE_AFTER_DAYS (device sync against the simulator),
subscription expiry in the read-API, and `ingest_worker.py audit-registry`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from dashboard.params import ParamError, parse_expiring_days
from dashboard_api import create_app
from ingest import audit
from ingest.jobs import Ingestor
from ingest.registry import import_registry, parse_active, parse_assigned_from, parse_fuel
from jimi_sim import SimConfig, SimServer
from tests.conftest import ROOT, test_settings
from tests.factories import add_device, add_live_position
from tests.sim_support import Clock
from ts_shared import JimiClient

A, B, C = "862798050000201", "862798050000202", "862798050000203"
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def device_state(conn: psycopg.Connection[Any], imei: str) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT is_active, deactivation_reason, deactivated_at IS NOT NULL, fuel_100km_l"
        " FROM tracksolid.devices WHERE imei = %s",
        (imei,),
    ).fetchone()


# ── the CSV's new columns ──────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("text", "expected"),
    [("yes", True), ("NO", False), ("true", True), ("False", False), ("1", True), ("0", False),
     (None, None)],
)  # fmt: skip
def test_active_words(text: str | None, expected: bool | None) -> None:
    assert parse_active(text) is expected


@pytest.mark.parametrize("text", ["maybe", "2", "off-road"])
def test_active_refuses_other_words(text: str) -> None:
    with pytest.raises(ValueError, match="active"):
        parse_active(text)


def test_fuel_is_litres_per_100_km_from_1_to_100() -> None:
    assert parse_fuel("7.5") == 7.5
    assert parse_fuel("12,25") == 12.25
    assert parse_fuel(None) is None
    for bad in ("0.5", "101", "abc", "nan"):
        with pytest.raises(ValueError, match="fuel_100km_l"):
            parse_fuel(bad)


def test_assigned_from_is_eat_and_not_in_the_future() -> None:
    assert parse_assigned_from("2026-11-11", NOW) == datetime(2026, 11, 10, 21, 0, tzinfo=UTC)
    assert parse_assigned_from("2026-11-11 08:30", NOW) == datetime(2026, 11, 11, 5, 30, tzinfo=UTC)
    assert parse_assigned_from("2026-11-11T08:30:00Z", NOW) == datetime(
        2026, 11, 11, 8, 30, tzinfo=UTC
    )
    for bad in ("next week", "1700000000", "2026-12-30"):
        with pytest.raises(ValueError, match="assigned_from"):
            parse_assigned_from(bad, NOW)


def test_csv_sets_fuel_and_active_and_ignores_only_bad_values(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    with pool.connection() as conn:
        for imei in (A, B, C):
            add_device(conn, imei, f"KDA {imei[-3:]}X")
    path = tmp_path / "registry.csv"
    path.write_text(
        "IMEI,Plate,Fuel L/100km,Active\n"
        f"{A},KDA 201A,8.5,yes\n"
        f"{B},KDA 202B,250,no\n"  # fuel out of range: ignored, `active` still applied
        f"{C},KDA 203C,,perhaps\n"  # bad `active`: ignored, the plate still imported
    )
    report = import_registry(pool, path, apply=True)
    assert [line for line, _ in report.ignored] == [3, 4]
    assert (report.updated, report.deactivated, report.reactivated) == (3, 1, 0)
    with pool.connection() as conn:
        assert device_state(conn, A) == (True, None, False, 8.5)
        assert device_state(conn, B) == (False, "registry", True, None)
        assert device_state(conn, C) == (True, None, False, None)
        assert conn.execute(
            "SELECT vehicle_number FROM tracksolid.devices WHERE imei = %s", (C,)
        ).fetchone() == ("KDA 203C",)
        # deactivated, never deleted: its trips stay; it leaves the filters
        assert conn.execute(
            "SELECT count(*) FROM reporting.v_filter_vehicles WHERE imei = %s", (B,)
        ).fetchone() == (0,)
    path.write_text(f"IMEI,Active\n{B},1\n")
    again = import_registry(pool, path, apply=True)
    assert again.reactivated == 1
    with pool.connection() as conn:
        assert device_state(conn, B) == (True, None, False, None)


# ── not listed by any account for N days (simulator) ───────────────────────────────────────


@pytest.fixture
def sim() -> Iterator[SimServer]:
    server = SimServer(SimConfig(devices=3, accounts=1, seed=7))
    server.api.clock = Clock(NOW).epoch
    server.start()
    yield server
    server.stop()


def sim_ingestor(db_url: str, pool: ConnectionPool, sim: SimServer) -> Ingestor:
    settings = test_settings(
        db_url,
        tracksolid_api_url=sim.url,
        tracksolid_app_key="demo-app-key",
        tracksolid_app_secret="demo-app-secret",
        tracksolid_user_id="fireside",
        tracksolid_user_pwd="demo-password",
        tracksolid_targets="fireside",
        ingest_api_concurrency=1,
        registry_deactivate_after_days=14,
    )
    client = JimiClient(settings, pool, sleep=lambda s: None, now=Clock(NOW).now)
    return Ingestor(settings, pool, client, now=Clock(NOW).now)


def test_unlisted_for_n_days_is_deactivated_and_listed_again_reactivated(
    db_url: str, pool: ConnectionPool, sim: SimServer, tmp_path: Path
) -> None:
    ingestor = sim_ingestor(db_url, pool, sim)
    gone, kept, switched_off = (d.imei for d in sim.fleet.devices())
    assert ingestor.sync_devices().ok
    with pool.connection() as conn:
        expirations: dict[str, datetime] = dict(
            conn.execute("SELECT imei, expiration FROM tracksolid.devices").fetchall()
        )
        assert expirations == {d.imei: d.expiration for d in sim.fleet.devices()}
    path = tmp_path / "registry.csv"
    path.write_text(f"IMEI,Active\n{switched_off},no\n")
    import_registry(pool, path, apply=True)

    sim.fleet.detach(gone)
    with pool.connection() as conn:  # the last listing of `gone` was 13 days ago: not yet
        conn.execute("UPDATE tracksolid.devices SET api_listed_at = now() - interval '13 days'"
                     " WHERE imei = %s", (gone,))  # fmt: skip
    assert ingestor.sync_devices().updated["deactivated"] == 0
    with pool.connection() as conn:  # 15 days
        conn.execute("UPDATE tracksolid.devices SET api_listed_at = now() - interval '15 days'"
                     " WHERE imei = %s", (gone,))  # fmt: skip
    stats = ingestor.sync_devices()
    assert stats.updated["deactivated"] == 1
    with pool.connection() as conn:
        assert device_state(conn, gone)[:3] == (False, "not_listed", True)  # type: ignore[index]
        assert device_state(conn, kept)[:3] == (True, None, False)  # type: ignore[index]
        # the registry's "no" wins over the API still listing it
        assert device_state(conn, switched_off)[:3] == (False, "registry", True)  # type: ignore[index]

    sim.fleet.attach(gone)
    assert ingestor.sync_devices().updated["relisted"] == 1
    with pool.connection() as conn:
        assert device_state(conn, gone)[:3] == (True, None, False)  # type: ignore[index]
        assert device_state(conn, switched_off)[:2] == (False, "registry")  # type: ignore[index]


# ── subscription expiry in the read-API ────────────────────────────────────────────────────


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        add_device(conn, A, "KDA 201A", driver_name="Amina")
        add_device(conn, B, "KDA 202B", driver_name="Baraka")
        add_device(conn, C, "KDA 203C", driver_name="Chege", is_active=False)
        conn.execute(
            "UPDATE tracksolid.devices SET expiration = now() + CASE imei"
            " WHEN %s THEN interval '10 days' WHEN %s THEN interval '-2 days'"
            " ELSE interval '5 days' END",
            (A, B),
        )
        conn.execute(
            "INSERT INTO tracksolid.devices (imei, vehicle_number, expiration)"
            " VALUES ('862798050000204', 'KDA 204D', now() + interval '90 days')"
        )
    settings = test_settings(db_url, vtrips_refresh_interval_s=0)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_expiring_devices_endpoint(client: TestClient) -> None:
    answer = client.get("/analytics/devices/expiring")
    assert answer.status_code == 200
    doc = answer.json()
    assert (doc["days"], doc["devices"], doc["expired"]) == (30, 2, 1)
    items = [(i["vehicle_number"], i["expired"], i["days_left"]) for i in doc["items"]]
    assert items == [("KDA 202B", True, -2), ("KDA 201A", False, 9)]  # inactive C left out
    wider = client.get("/analytics/devices/expiring", params={"days": "120"}).json()
    assert [i["vehicle_number"] for i in wider["items"]][-1] == "KDA 204D"
    for bad in ("0", "367", "abc", "1e3"):
        refused = client.get("/analytics/devices/expiring", params={"days": bad})
        assert refused.status_code == 422 and "days" in refused.json()["detail"]


def test_filters_show_the_subscription_expiry(client: TestClient) -> None:
    doc = client.get("/analytics/filters").json()
    by_plate = {v["vehicle_number"]: v for v in doc["vehicles"]}
    assert by_plate["KDA 201A"]["expiration"] is not None
    assert by_plate["KDA 204D"]["expiration"] is not None and "KDA 203C" not in by_plate


def test_expiring_days_parameter() -> None:
    assert parse_expiring_days(None) == 30
    assert parse_expiring_days(" 7 ") == 7
    with pytest.raises(ParamError, match="days must be between 1 and 366"):
        parse_expiring_days("400")


# ── audit-registry ─────────────────────────────────────────────────────────────────────────


@pytest.fixture
def audited(db_url: str) -> str:
    """Registry A (listed, Amina, reporting), B (CSV only, never listed, no driver),
    C (listed, not in the CSV, Amina too, silent 2 days), D (registry, listed, never reported)."""
    d = "862798050000204"
    with psycopg.connect(db_url, autocommit=True) as conn:
        add_device(conn, A, "KDA 201A", driver_name="Amina")
        add_device(conn, B, "KDA 202B")
        add_device(conn, C, "KDA 203C", driver_name=" amina ")
        add_device(conn, d, "KDA 204D", driver_name="Daudi")
        conn.execute(
            "UPDATE tracksolid.devices SET registry_updated_at = now() WHERE imei IN (%s, %s, %s)",
            (A, B, d),
        )
        conn.execute(
            "UPDATE tracksolid.devices SET api_listed_at = now() - interval '5 minutes'"
            " WHERE imei IN (%s, %s, %s)",
            (A, C, d),
        )
        conn.execute(
            "INSERT INTO tracksolid.ingestion_log (logged_at, source, method, ok, duration_ms,"
            " detail) VALUES (now() - interval '290 seconds', 'job', 'device_sync', true, 20000,"
            " %s)",
            (Jsonb({"updated": {"devices": 3}}),),
        )
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        add_live_position(conn, A, -1.29, 36.82, gps_time=row[0] - timedelta(minutes=3))
        add_live_position(conn, C, -1.29, 36.82, gps_time=row[0] - timedelta(days=2))
    return db_url


def test_audit_finds_every_gap(audited: str) -> None:
    with psycopg.connect(audited) as conn:
        report = audit.gather(conn)
    assert [r["imei"] for r in report.without_driver] == [B]
    assert [(r["driver"], r["vehicles"]) for r in report.driver_on_several_vehicles] == [
        ("Amina", 2)
    ]
    assert [r["imei"] for r in report.registry_not_listed] == [B]
    assert [r["imei"] for r in report.listed_not_in_registry] == [C]
    silent = {r["imei"]: r["silent_since"] for r in report.silent}
    assert set(silent) == {B, C, "862798050000204"} and silent[B] is None
    assert silent[C] is not None
    text = audit.format_text(report)
    assert "Drivers on more than one active vehicle (1)" in text
    assert "KDA 201A, KDA 203C" in text and "SILENT SINCE" in text and "never (registered" in text


def test_audit_with_fresh_lists_uses_them(audited: str) -> None:
    with psycopg.connect(audited) as conn:
        report = audit.gather(conn, listed={A, B, "862798050009999"})
    assert [r["imei"] for r in report.registry_not_listed] == ["862798050000204"]
    assert [r["imei"] for r in report.listed_not_in_registry] == ["862798050009999"]


def test_audit_registry_command(audited: str) -> None:
    env = {"DATABASE_URL": audited, "PATH": "/usr/bin:/bin", "LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, str(ROOT / "ingest_worker.py"), "audit-registry"]
    text = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    header = next(line for line in lines if line.strip().startswith("IMEI") and "SILENT" in line)
    row = lines[lines.index(header) + 1]
    assert row.index(B) == header.index("IMEI")  # aligned columns
    as_json = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True,
                             cwd=ROOT, check=False)  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert [r["imei"] for r in doc["registry_not_listed"]] == [B]
