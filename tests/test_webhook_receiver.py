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
from webhook_receiver import PushTokenMissingError, create_app

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


@pytest.mark.parametrize("token", [None, "", "   "])
def test_without_token_setting_the_receiver_refuses_to_start(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, token: str | None
) -> None:
    settings = test_settings(
        db_url, jimi_push_token=token, webhook_spool_dir=str(tmp_path / "spool")
    )
    refused = pytest.raises(PushTokenMissingError, match=r"JIMI_PUSH_TOKEN .* or JIMI_PUSH_OPEN=1")
    with refused, TestClient(create_app(settings)):
        pass  # pragma: no cover - the lifespan refuses before
    assert "refuses to start" in caplog.text
    assert count(db_url, "push_inbox") == 0


def test_without_token_setting_but_jimi_push_open_everything_is_accepted_with_a_warning(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = test_settings(db_url, jimi_push_open=True, webhook_spool_dir=str(tmp_path / "spool"))
    caplog.set_level(logging.WARNING)
    with TestClient(create_app(settings)) as c:
        assert c.post("/pushgps", data=f.iothub_form([f.gps()])).status_code == 200
        assert c.post("/pushgps", data=f.iothub_form([f.gps()], "any")).status_code == 200
    assert "accepted without a token" in caplog.text
    assert count(db_url, "position_history") == 1


def test_jimi_push_open_is_ignored_when_a_token_is_set(recv_settings: Settings) -> None:
    settings = recv_settings.model_copy(update={"jimi_push_open": True})
    with TestClient(create_app(settings)) as c:
        assert c.post("/pushgps", data=f.iothub_form([f.gps()])).status_code == 401
        assert c.post("/pushgps", data=f.iothub_form([f.gps()], TOKEN)).status_code == 200


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


FORM = {"content-type": "application/x-www-form-urlencoded"}
JSON_CT = {"content-type": "application/json"}
DEEP = b"[" * 5000 + b"]" * 5000


@pytest.mark.parametrize(
    ("url", "body", "headers", "reason"),
    [
        # Structure is checked before the token: malformed bodies are 400 with or without one.
        ("/pushgps", b"\xff\xfe\x00garbage", FORM, "body is not valid UTF-8 (byte 0)"),
        (
            "/pushgps",
            b"token=" + TOKEN.encode() + b"&data_list=%5B\xff%5D",
            FORM,
            "not valid UTF-8",
        ),
        ("/pushgps", b"token=" + TOKEN.encode() + b"&data_list=%FF", FORM, "not valid UTF-8"),
        ("/pushgps", b"data_list=[]\x00", FORM, "NUL byte"),
        ("/push", b"msgType=a%00b&data=%7B%7D", FORM, "field msgType contains a NUL"),
        ("/pushgps", b"data_list=" + DEEP, FORM, "data_list nests deeper than 32 levels"),
        ("/push", b'{"msgType":"x","data":' + DEEP + b"}", JSON_CT, "JSON body nests deeper"),
        ("/push", DEEP, JSON_CT, "JSON body nests deeper"),
        ("/push", b"{broken", JSON_CT, "body is not valid JSON"),
        ("/push", b"[1,2]", JSON_CT, "JSON body must be an object"),
        ("/push", b'{"msgType":"\\ud800","data":{}}', JSON_CT, "field msgType is not valid UTF-8"),
        ("/push", b"--x\r\n", {"content-type": "multipart/form-data"}, "malformed multipart"),
    ],
)
@pytest.mark.parametrize("authenticated", [False, True])
def test_malformed_input_is_refused_before_the_token_and_never_500(
    client: TestClient,
    db_url: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    reason: str,
    authenticated: bool,
) -> None:
    """400 and a one-sentence reason whether or not a token came with it; only a body whose
    sender proved the token (on the URL here) is kept in the inbox, token blanked."""
    if authenticated:
        url += f"?token={TOKEN}"
    resp = client.post(url, content=body, headers=headers)
    assert resp.status_code == 400
    assert resp.json()["code"] == 400
    assert reason in resp.json()["msg"]
    assert "\n" not in resp.json()["msg"]
    recorded = q(db_url, "SELECT status, raw_body FROM tracksolid.push_inbox")
    form_token = body.startswith(b"token=")
    if authenticated or form_token:
        assert len(recorded) == 1
        assert recorded[0][0] == "rejected"
        assert TOKEN not in recorded[0][1]
    else:
        assert recorded == []
    assert count(db_url, "position_history") == 0


def test_token_is_blanked_in_what_is_stored_and_spooled(
    client: TestClient, recv_settings: Settings, db_url: str
) -> None:
    """A rejected body keeps everything but the token (form field, JSON member, or the value
    wherever it appears); an accepted delivery's payload and raw rows never hold it."""
    bad_form = {"token": TOKEN, "data_list": "[{oops", "note": f"echo {TOKEN}"}
    assert client.post("/pushgps", data=bad_form).status_code == 400
    bad_json = {"msgType": "jimi.push.device.alarm", "token": TOKEN, "data": "oops"}
    assert client.post("/push", json=bad_json).status_code == 400
    item = f.obd()
    item["comment"] = f"token {TOKEN} in a field"
    assert client.post("/pushobd", data=f.iothub_form([item], TOKEN)).status_code == 200
    assert (
        client.post(f"/push?token={TOKEN}", data=f.openapi_form(f.openapi_alarm())).status_code
        == 200
    )
    raw = q(
        db_url, "SELECT raw_body FROM tracksolid.push_inbox WHERE status = 'rejected' ORDER BY 1"
    )
    assert len(raw) == 2
    assert all(TOKEN not in r[0] for r in raw)
    assert any("token=***&data_list=" in r[0] and "note=echo+***" in r[0] for r in raw)
    assert any('"token": "***"' in r[0] or '"token":"***"' in r[0] for r in raw)
    everything = q(
        db_url,
        "SELECT concat_ws(' ', p.payload::text, p.raw_body, p.errors::text)"
        " FROM tracksolid.push_inbox p"
        " UNION ALL SELECT raw::text FROM tracksolid.obd_readings"
        " UNION ALL SELECT raw::text FROM tracksolid.alarms"
        " UNION ALL SELECT concat_ws(' ', method, error, detail::text)"
        " FROM tracksolid.ingestion_log",
    )
    assert len(everything) >= 6
    assert not [row for row in everything if TOKEN in (row[0] or "")]
    assert q(db_url, "SELECT raw->>'comment' FROM tracksolid.obd_readings") == [
        ("token *** in a field",)
    ]
    # While the database is down the same deliveries go to the spool: it holds no token either.
    pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    pipeline._spooling = True  # what a connection failure switches on
    pipeline.stop()  # no replay: keep the files on disk to look at
    assert client.post("/pushgps", data=bad_form).status_code == 400
    assert client.post("/pushobd", data=f.iothub_form([item], TOKEN)).status_code == 200
    files = list(Path(recv_settings.webhook_spool_dir).glob("*.json"))
    assert len(files) == 2
    assert all(TOKEN not in p.read_text() for p in files)


def test_only_the_exact_token_is_accepted(client: TestClient, db_url: str) -> None:
    """Constant-time comparison on bytes; any non-string token is simply wrong (never a 500)."""
    alarm = f.openapi_alarm()
    for wrong in [
        TOKEN.upper(),
        TOKEN + " ",
        TOKEN[:-1],
        12345,
        None,
        [TOKEN],
        {"t": TOKEN},
        "\ud800",
    ]:
        body = {"msgType": "jimi.push.device.alarm", "data": alarm, "token": wrong}
        resp = client.post("/push", content=json.dumps(body), headers=JSON_CT)
        assert resp.status_code in (400, 401), wrong
    assert (
        client.post("/push", json={"msgType": "x", "data": alarm, "token": TOKEN}).status_code
        == 200
    )
    assert count(db_url, "push_inbox") == 1


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
    # The shared test cluster runs with synchronous_commit = off in postgresql.conf: the
    # receiver's connections set it on themselves, and the server says so.
    assert resp.json() == {
        "status": "ok",
        "database": "up",
        "synchronous_commit": "on",
        "spooling": False,
        "spool_depth": 0,
    }


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
        assert health["synchronous_commit"] is None
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


def test_autoregistration_cap_comes_from_the_settings(recv_settings: Settings, db_url: str) -> None:
    """PUSH_AUTOREGISTER_PER_HOUR reaches the receiver: over the cap, pushed IMEIs are kept
    out of the polled registry (their data is stored all the same)."""
    capped = recv_settings.model_copy(update={"push_autoregister_per_hour": 1})
    try:
        with TestClient(create_app(capped)) as c:
            items = [f.gps(imei) for imei in f.IMEIS[:3]]
            assert c.post("/pushgps", data=f.iothub_form(items, TOKEN)).status_code == 200
        assert count(db_url, "devices") == 1
        assert count(db_url, "push_unregistered") == 2
        assert count(db_url, "position_history") == 3
    finally:  # the cap is process-wide: put the default back for the tests after this one
        with TestClient(create_app(recv_settings)):
            pass
