"""The push receiver over HTTP (TestClient, real lifespan) against a real PostgreSQL."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests import push_factories as f
from tests.conftest import test_settings
from ts_shared import Settings
from webhook.spool import Spool
from webhook_receiver import create_app

# Production runs TimescaleDB; plain PostgreSQL + PostGIS stays supported: both, every test.
pytestmark = pytest.mark.both_engines

TOKEN = "s3cret-push-token"


@pytest.fixture
def recv_settings(db_url: str, tmp_path: Path) -> Settings:
    return test_settings(
        db_url,
        jimi_push_token=TOKEN,
        webhook_spool_dir=str(tmp_path / "spool"),
        webhook_max_body_bytes=64 * 1024,
        db_pool_max_size=4,
    )


@pytest.fixture
def client(recv_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(recv_settings)) as c:
        yield c


def q(db_url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(query, params).fetchall()


def count(db_url: str, table: str) -> int:
    return int(q(db_url, f"SELECT count(*) FROM tracksolid.{table}")[0][0])


@pytest.mark.parametrize(("path", "items", "table", "expected"), f.EVERY_PATH)
def test_every_iothub_path_stores_inbox_typed_rows_and_log(
    client: TestClient,
    db_url: str,
    path: str,
    items: list[dict[str, Any]],
    table: str,
    expected: int,
) -> None:
    resp = client.post(path, data=f.iothub_form(items, TOKEN))
    assert resp.status_code == 200
    assert resp.json() == {"code": 0, "msg": "success"}
    assert count(db_url, table) == expected
    inbox = q(
        db_url, "SELECT path, item_count, items_ok, status, payload FROM tracksolid.push_inbox"
    )
    assert inbox == [(path, len(items), len(items), "parsed", json.loads(json.dumps(items)))]
    log = q(db_url, "SELECT source, method, ok, rows, error FROM tracksolid.ingestion_log")
    assert log == [("push", path, True, len(items), None)]
    imeis = {i.get("deviceImei") or i.get("imei") for i in items}
    registered = q(db_url, "SELECT imei, source FROM tracksolid.devices ORDER BY imei")
    assert registered == sorted((imei, "push") for imei in imeis)


def test_gps_values_and_live_position_only_when_newer(client: TestClient, db_url: str) -> None:
    imei = f.IMEIS[0]
    client.post("/pushgps", data=f.iothub_form(f.gps_track(imei, 3), TOKEN))
    rows = q(
        db_url,
        "SELECT gps_time, lat, lng, speed_kmh, direction_deg, acc_on, pos_type, satellites,"
        " gps_mode, altitude_m, source FROM tracksolid.position_history ORDER BY gps_time",
    )
    assert rows[0][1:] == (-1.292066, 36.821946, 42.0, 187, True, "GPS", 11, 0, 1661.0, "push")
    newest = f.T0 + timedelta(seconds=20)
    live = q(db_url, "SELECT gps_time, source, online FROM tracksolid.live_positions")
    assert live == [(newest, "push", True)]
    # An older fix arriving late goes to history but does not move the live position back.
    late = f.gps(imei, f.T0 - timedelta(minutes=5), lat="-1.1", lng="36.9")
    assert client.post("/pushgps", data=f.iothub_form([late], TOKEN)).status_code == 200
    assert count(db_url, "position_history") == 4
    assert q(db_url, "SELECT gps_time FROM tracksolid.live_positions") == [(newest,)]


def test_alarm_msg_object_and_json_string_and_open_api_push(
    client: TestClient, db_url: str
) -> None:
    items = [f.alarm(), f.alarm(f.IMEIS[1], as_string=True, alertType="ACC_ON", alarmName="")]
    assert client.post("/pushalarm", data=f.iothub_form(items, TOKEN)).status_code == 200
    resp = client.post("/push", data=f.openapi_form(f.openapi_alarm(f.IMEIS[2]), token=TOKEN))
    assert resp.status_code == 200
    assert resp.json() == {"code": 0, "msg": "success"}
    rows = q(
        db_url,
        "SELECT imei, alarm_type, alarm_name, lat, speed_kmh, source FROM tracksolid.alarms"
        " ORDER BY imei",
    )
    assert rows == [
        (f.IMEIS[1], "ACC_ON", None, -1.300112, 97.0, "push"),
        (f.IMEIS[0], "6", "Overspeed alarm", -1.300112, 97.0, "push"),
        (f.IMEIS[2], "1", "SOS alarm", -4.043477, None, "push_openapi"),
    ]
    # The decoded message (not its JSON string) is kept in raw.
    raw = q(
        db_url,
        "SELECT raw->'msg'->>'alertType' FROM tracksolid.alarms WHERE imei = %s",
        (f.IMEIS[1],),
    )
    assert raw == [("ACC_ON",)]
    dev = q(
        db_url, "SELECT device_name, source FROM tracksolid.devices WHERE imei = %s", (f.IMEIS[2],)
    )
    assert dev == [("KCA 542Q Probox", "push")]
    methods = q(db_url, "SELECT method FROM tracksolid.ingestion_log ORDER BY log_id")
    assert methods == [("/pushalarm",), ("/push:jimi.push.device.alarm",)]


def test_open_api_push_as_json_body_and_unknown_msg_type_kept_raw(
    client: TestClient, db_url: str
) -> None:
    body = {"msgType": "jimi.push.device.alarm", "data": f.openapi_alarm(), "token": TOKEN}
    assert client.post("/push", json=body).status_code == 200
    assert count(db_url, "alarms") == 1
    other = f.openapi_form(
        {"imei": f.IMEIS[0], "x": 1}, msg_type="jimi.push.device.other", token=TOKEN
    )
    assert client.post("/push", data=other).status_code == 200
    inbox = q(
        db_url,
        "SELECT msg_type, status, payload->>'x' FROM tracksolid.push_inbox ORDER BY inbox_id",
    )
    assert inbox == [
        ("jimi.push.device.alarm", "parsed", None),
        ("jimi.push.device.other", "parsed", "1"),
    ]


def test_token_wrong_or_missing_is_401_and_not_stored(client: TestClient, db_url: str) -> None:
    items = [f.gps()]
    assert client.post("/pushgps", data=f.iothub_form(items, "wrong")).status_code == 401
    assert client.post("/pushgps", data=f.iothub_form(items)).status_code == 401
    assert client.post("/push", data=f.openapi_form(f.openapi_alarm())).status_code == 401
    assert (
        client.post("/pushgps", data={"token": TOKEN[:-1], "data_list": "not json"}).status_code
        == 401
    )
    assert count(db_url, "push_inbox") == 0
    assert count(db_url, "position_history") == 0
    # The token may also come as a query parameter (for senders that cannot add a field).
    assert client.post(f"/pushgps?token={TOKEN}", data=f.iothub_form(items)).status_code == 200


def test_without_token_setting_everything_is_accepted_and_a_warning_logged(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = test_settings(db_url, webhook_spool_dir=str(tmp_path / "spool"))
    caplog.set_level(logging.WARNING)
    with TestClient(create_app(settings)) as c:
        assert c.post("/pushgps", data=f.iothub_form([f.gps()])).status_code == 200
    assert "JIMI_PUSH_TOKEN is not set" in caplog.text
    assert count(db_url, "position_history") == 1


@pytest.mark.parametrize(
    ("path", "data", "reason"),
    [
        ("/pushgps", {"data_list": "[{not json"}, "data_list is not valid JSON"),
        ("/pushgps", {"data_list": '"a string"'}, "data_list must be a JSON array"),
        ("/pushgps", {"other": "x"}, "missing form field data_list"),
        ("/push", {"data": "{}"}, "missing form field msgType"),
        ("/push", {"msgType": "jimi.push.device.alarm", "data": "{oops"}, "data is not valid JSON"),
    ],
)
def test_malformed_delivery_is_400_with_reason_and_recorded(
    client: TestClient, db_url: str, path: str, data: dict[str, str], reason: str
) -> None:
    resp = client.post(path, data={**data, "token": TOKEN})
    assert resp.status_code == 400
    assert reason in resp.json()["msg"]
    inbox = q(
        db_url,
        "SELECT path, status, raw_body IS NOT NULL, errors->0->>'reason'"
        " FROM tracksolid.push_inbox",
    )
    assert len(inbox) == 1
    assert inbox[0][:3] == (path, "rejected", True)
    assert reason in inbox[0][3]
    log = q(db_url, "SELECT ok, result_code, error FROM tracksolid.ingestion_log")
    assert log[0][:2] == (False, 400)
    assert reason in log[0][2]


def test_malformed_bodies_never_500(client: TestClient, db_url: str) -> None:
    hdr = {"content-type": "application/x-www-form-urlencoded"}
    assert client.post("/pushgps", content=b"\xff\xfe\x00garbage", headers=hdr).status_code == 401
    bad_json = {"content-type": "application/json"}
    assert client.post("/push", content=b"{broken", headers=bad_json).status_code == 401
    assert (
        client.post(f"/push?token={TOKEN}", content=b"{broken", headers=bad_json).status_code == 400
    )
    assert (
        client.post(f"/push?token={TOKEN}", content=b"[1,2]", headers=bad_json).status_code == 400
    )
    resp = client.post(f"/pushgps?token={TOKEN}", content=b"\xff\xfe\x00garbage", headers=hdr)
    assert resp.status_code == 400
    assert "not UTF-8" in resp.json()["msg"]
    assert q(db_url, "SELECT count(*) FROM tracksolid.push_inbox WHERE status = 'rejected'") == [
        (3,)
    ]


def test_oversized_body_is_413_and_unknown_path_404(client: TestClient, db_url: str) -> None:
    items = f.gps_track(f.IMEIS[0], 400)  # ~130 KiB > the 64 KiB limit of these tests
    resp = client.post("/pushgps", data=f.iothub_form(items, TOKEN))
    assert resp.status_code == 413
    assert client.post("/pushnothing", data=f.iothub_form([f.gps()], TOKEN)).status_code == 404
    assert client.get("/pushgps").status_code == 405
    assert count(db_url, "push_inbox") == 0


def test_duplicate_delivery_adds_no_rows(client: TestClient, db_url: str) -> None:
    form = f.iothub_form(f.gps_track(f.IMEIS[0], 5), TOKEN)
    for _ in range(3):
        assert client.post("/pushgps", data=form).status_code == 200
    assert count(db_url, "position_history") == 5
    assert count(db_url, "push_inbox") == 1
    log = q(
        db_url, "SELECT rows, detail->>'duplicate' FROM tracksolid.ingestion_log ORDER BY log_id"
    )
    assert log == [(5, "false"), (0, "true"), (0, "true")]
    # The same items batched differently: a new inbox row, still no duplicate typed rows.
    items = f.gps_track(f.IMEIS[0], 5)
    assert client.post("/pushgps", data=f.iothub_form(items[:2], TOKEN)).status_code == 200
    assert count(db_url, "position_history") == 5
    alarms = f.iothub_form([f.alarm()], TOKEN)
    client.post("/pushalarm", data=alarms)
    client.post(
        "/pushalarm", data=f.iothub_form([f.alarm(), f.alarm(at=f.T0 + timedelta(1))], TOKEN)
    )
    assert count(db_url, "alarms") == 2


def test_bad_items_are_kept_with_reasons_and_the_rest_stored(
    client: TestClient, db_url: str
) -> None:
    good = f.gps_track(f.IMEIS[0], 2)
    items: list[Any] = [
        good[0],
        f.gps(f.IMEIS[1], lat="0", lng="0"),  # no fix
        f.gps(f.IMEIS[1], lat="123.4"),  # out of range
        f.gps(f.IMEIS[2], gpsTime="not a time"),
        "not an object",
        f.gps(deviceImei=""),
        good[1],
    ]
    resp = client.post("/pushgps", data=f.iothub_form(items, TOKEN))
    assert resp.status_code == 200
    assert count(db_url, "position_history") == 2
    inbox = q(
        db_url,
        "SELECT item_count, items_ok, items_failed, status, errors FROM tracksolid.push_inbox",
    )
    total, ok, failed, status, errors = inbox[0]
    assert (total, ok, failed, status) == (7, 2, 5, "partial")
    assert [e["index"] for e in errors] == [1, 2, 3, 4, 5]
    assert "no usable fix" in errors[0]["reason"]
    assert errors[0]["item"]["deviceImei"] == f.IMEIS[1]
    assert "unparsable gpsTime" in errors[2]["reason"]
    log = q(db_url, "SELECT ok, rows, error FROM tracksolid.ingestion_log")
    assert log[0][:2] == (False, 2)
    assert "item 1: no usable fix" in log[0][2]
    # Only devices of stored items are registered.
    assert q(db_url, "SELECT imei FROM tracksolid.devices") == [(f.IMEIS[0],)]


def test_unmapped_fields_stay_in_raw_and_nul_bytes_are_cleaned(
    client: TestClient, db_url: str
) -> None:
    item = f.obd()
    item["note"] = "bad\u0000byte"
    assert client.post("/pushobd", data=f.iothub_form([item], TOKEN)).status_code == 200
    raw = q(db_url, "SELECT raw->>'engineLoad', raw->>'note', rpm FROM tracksolid.obd_readings")
    assert raw == [("37", "badbyte", 2100.0)]


def test_health_reports_database_and_spool(client: TestClient) -> None:
    resp = client.get("/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "database": "up", "spooling": False, "spool_depth": 0}


def test_database_down_at_start_spools_then_replays_on_restart(
    recv_settings: Settings, db_url: str, tmp_path: Path
) -> None:
    """A receiver pointed at a dead server spools; a later receiver replays that spool."""
    dead = recv_settings.model_copy(
        update={
            "database_url": recv_settings.database_url.__class__(
                "postgresql://postgres@127.0.0.1:1/x"
            )
        }
    )
    with TestClient(create_app(dead)) as c:
        c.app.state.pipeline._direct_timeout_s = 0.3  # type: ignore[attr-defined]
        for i in range(3):
            form = f.iothub_form([f.gps(at=f.T0 + timedelta(seconds=i))], TOKEN)
            assert c.post("/pushgps", data=form).status_code == 200
        health = c.get("/health").json()
        assert health["database"] == "down"
        assert health["spool_depth"] == 3
        assert health["status"] == "degraded"
    with Spool(recv_settings.webhook_spool_dir) as spool:
        assert spool.depth == 3
    assert count(db_url, "position_history") == 0
    with TestClient(create_app(recv_settings)) as c:
        _wait(lambda: c.get("/health").json()["spool_depth"] == 0)
        assert c.get("/health").json()["status"] == "ok"
    assert count(db_url, "position_history") == 3
    assert q(db_url, "SELECT bool_and(spooled), count(*) FROM tracksolid.push_inbox") == [(True, 3)]


def _wait(cond: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_delivery_that_cannot_be_stored_at_all_is_kept_on_disk_not_500(
    client: TestClient, recv_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("webhook.pipeline.write_delivery", broken)
    resp = client.post("/pushgps", data=f.iothub_form([f.gps()], TOKEN))
    assert resp.status_code == 200
    kept = list((Path(recv_settings.webhook_spool_dir) / "bad").glob("*.json"))
    assert len(kept) == 1
    assert f.IMEIS[0] in kept[0].read_text()
    assert client.get("/health").json()["spool_depth"] == 0
