"""Tests of the JIMI Open Platform simulator: protocol, fleet model, faults, push."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from jimi_sim import (  # noqa: E402
    Fleet,
    PushSender,
    SimConfig,
    SimServer,
    build_push_deliveries,
)

APP_KEY = "test-app-key"
APP_SECRET = "test-app-secret"
USER = "fireside"
PWD = "pw-1234"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
ISO_Z_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def make_config(**overrides: Any) -> SimConfig:
    values: dict[str, Any] = {
        "devices": 12,
        "accounts": 3,
        "seed": 7,
        "app_key": APP_KEY,
        "app_secret": APP_SECRET,
        "user_id": USER,
        "user_pwd": PWD,
    }
    values.update(overrides)
    return SimConfig(**values)


def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def sign(params: dict[str, str], secret: str = APP_SECRET) -> str:
    """Independent signature: secret + k1v1k2v2... (sorted, sign/empty skipped) + secret."""
    concat = ""
    for key in sorted(params):
        if key == "sign" or params[key] == "":
            continue
        concat += key + params[key]
    return md5(secret + concat + secret).upper()


def api_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def haversine(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    r = 6_371_008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


class Api:
    """A tiny hand-rolled JIMI client for the tests."""

    def __init__(self, url: str, http: httpx.Client) -> None:
        self.url = url
        self.http = http

    def post(
        self,
        method: str,
        token: str | None = None,
        *,
        timestamp: datetime | None = None,
        bad_sign: bool = False,
        **params: Any,
    ) -> httpx.Response:
        form = {
            "method": method,
            "timestamp": api_time(timestamp or datetime.now(UTC)),
            "app_key": APP_KEY,
            "sign_method": "md5",
            "v": "1.0",
            "format": "json",
        }
        if token is not None:
            form["access_token"] = token
        form.update({k: str(v) for k, v in params.items()})
        form["sign"] = sign(form, "wrong-secret" if bad_sign else APP_SECRET)
        return self.http.post(self.url, data=form)

    def call(self, method: str, token: str | None = None, **params: Any) -> dict[str, Any]:
        response = self.post(method, token, **params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def ok(self, method: str, token: str | None = None, **params: Any) -> dict[str, Any]:
        body = self.call(method, token, **params)
        assert int(body["code"]) == 0, body
        return body

    def new_token(self, expires_in: int = 7200) -> str:
        body = self.ok(
            "jimi.oauth.token.get", user_id=USER, user_pwd_md5=md5(PWD), expires_in=expires_in
        )
        return str(body["result"]["accessToken"])


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(make_config()) as server:
        yield server


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


@pytest.fixture
def api(sim: SimServer, http: httpx.Client) -> Iterator[Api]:
    yield Api(sim.url, http)
    sim.faults.update(
        {"fail_1006": 0, "fail_5xx": 0, "slow_share": 0, "slow_ms": 1500, "malformed": 0}
    )


@pytest.fixture
def token(api: Api) -> str:
    return api.new_token()


def yesterday() -> tuple[datetime, datetime]:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=1), today


# ── OAuth and signing ───────────────────────────────────────────────────────


def test_token_get_and_refresh(api: Api) -> None:
    body = api.ok("jimi.oauth.token.get", user_id=USER, user_pwd_md5=md5(PWD), expires_in=3600)
    result = body["result"]
    assert set(result) >= {"appKey", "account", "accessToken", "expiresIn", "refreshToken", "time"}
    assert result["expiresIn"] == "3600"
    assert result["account"] == USER
    assert result["appKey"] == APP_KEY
    assert TIME_RE.match(result["time"])
    old = result["accessToken"]

    refreshed = api.ok(
        "jimi.oauth.token.refresh",
        access_token=old,
        refresh_token=result["refreshToken"],
        expires_in=600,
    )["result"]
    assert refreshed["accessToken"] != old
    assert refreshed["expiresIn"] == "600"
    # Both the old (until its expiry) and the new token work.
    for tok in (old, refreshed["accessToken"]):
        api.ok("jimi.user.device.list", tok, target=USER)
    # A refresh token is single-use.
    again = api.call(
        "jimi.oauth.token.refresh", access_token=old, refresh_token=result["refreshToken"]
    )
    assert int(again["code"]) == 1004


def test_wrong_password_is_1002(api: Api) -> None:
    body = api.call("jimi.oauth.token.get", user_id=USER, user_pwd_md5=md5("nope"))
    assert body["code"] == 1002
    assert body["result"] is None


def test_bad_sign_and_timestamp_rejected(api: Api, token: str) -> None:
    response = api.post("jimi.user.device.list", token, bad_sign=True, target=USER)
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 1001
    assert "sign" in body["message"].lower()

    skewed = datetime.now(UTC) - timedelta(minutes=11)
    body = api.post("jimi.user.device.list", token, timestamp=skewed, target=USER).json()
    assert body["code"] == 1001
    assert "timestamp" in body["message"]

    assert api.call("jimi.no.such.method", token)["code"] == 1001


def test_missing_and_expired_token_is_1004(sim: SimServer, api: Api) -> None:
    assert api.call("jimi.user.device.list", target=USER)["code"] == 1004
    assert api.call("jimi.user.device.list", "deadbeef", target=USER)["code"] == 1004
    tok = api.new_token()
    api.ok("jimi.user.device.list", tok, target=USER)
    sim.expire_all_tokens()
    assert api.call("jimi.user.device.list", tok, target=USER)["code"] == 1004
    api.ok("jimi.user.device.list", api.new_token(), target=USER)


# ── devices and live positions ──────────────────────────────────────────────


def test_device_list_has_null_vehicle_fields_but_detail_has_them(
    sim: SimServer, api: Api, token: str
) -> None:
    seen: dict[str, str] = {}
    for account in sim.fleet.accounts:
        items = api.ok("jimi.user.device.list", token, target=account)["result"]
        assert items
        for item in items:
            assert item["vehicleName"] is None
            assert item["vehicleNumber"] is None
            assert item["driverName"] is None
            assert item["driverPhone"] is None
            assert len(item["imei"]) == 15
            seen[item["imei"]] = account
    assert seen == {d.imei: d.account for d in sim.fleet.devices()}
    assert sim.fleet.accounts[:3] == ["fireside", "Fireside@HQ", "Fireside_MSA"]

    dev = sim.fleet.devices()[1]
    detail = api.ok("jimi.track.device.detail", token, imei=dev.imei)["result"]
    assert detail["vehicleNumber"] == dev.vehicle_number
    assert detail["vehicleName"] == dev.vehicle_name
    assert detail["driverName"] == dev.driver_name
    assert detail["driverPhone"] == dev.driver_phone
    assert detail["account"] == dev.account
    assert float(detail["currentMileage"]) > 1000
    assert re.match(r"^(K[A-Z]{2}|U[A-Z]{2}) \d{3}[A-Z]$", dev.vehicle_number)

    assert api.call("jimi.track.device.detail", token, imei="000000000000000")["code"] == 1002


def test_location_get_limits_and_shape(sim: SimServer, api: Api, token: str) -> None:
    imeis = [d.imei for d in sim.fleet.devices()]
    too_many = ",".join(imeis + [f"86000000000{i:04d}" for i in range(101 - len(imeis))])
    assert api.call("jimi.device.location.get", token, imeis=too_many)["code"] == 1001

    items = api.ok("jimi.device.location.get", token, imeis=",".join(imeis))["result"]
    assert [i["imei"] for i in items] == imeis
    for item in items:
        assert isinstance(item["lat"], str)
        assert isinstance(item["speed"], str)
        assert item["accStatus"] in ("0", "1")
        assert TIME_RE.match(item["gpsTime"])
        assert parse_time(item["gpsTime"]) <= datetime.now(UTC)

    by_target = api.ok("jimi.user.device.location.list", token, target="Fireside@HQ")["result"]
    assert {i["imei"] for i in by_target} == {d.imei for d in sim.fleet.devices_of("Fireside@HQ")}


# ── tracks, trips, parking ──────────────────────────────────────────────────


def test_track_list_limits(sim: SimServer, api: Api, token: str) -> None:
    imei = sim.fleet.devices()[0].imei
    now = datetime.now(UTC)
    cases = [
        (now - timedelta(days=8), now - timedelta(minutes=1)),  # > 7 days
        (now - timedelta(days=95), now - timedelta(days=94)),  # older than 3 months
        (now - timedelta(hours=1), now + timedelta(hours=1)),  # end in the future
    ]
    for begin, end in cases:
        body = api.call(
            "jimi.device.track.list",
            token,
            imei=imei,
            begin_time=api_time(begin),
            end_time=api_time(end),
        )
        assert body["code"] == 1001, (begin, end, body)


def test_track_list_and_later_live_poll_agree(sim: SimServer, api: Api, token: str) -> None:
    for dev in sim.fleet.devices()[:4]:
        live = api.ok("jimi.device.location.get", token, imeis=dev.imei)["result"][0]
        gps_time = parse_time(live["gpsTime"])
        fixes = api.ok(
            "jimi.device.track.list",
            token,
            imei=dev.imei,
            begin_time=api_time(gps_time - timedelta(days=2)),
            end_time=api_time(gps_time + timedelta(seconds=1)),
        )["result"]
        last = fixes[-1]
        assert (last["gpsTime"], last["lat"], last["lng"]) == (
            live["gpsTime"],
            live["lat"],
            live["lng"],
        )
        assert last["accStatus"] == live["accStatus"]
        for key in ("lng", "lat", "gpsTime", "direction", "gpsSpeed", "posType", "satellite"):
            assert key in last
    # And in the model: every fix is what a poll at (or just after) its time shows.
    fleet = sim.fleet
    begin, end = yesterday()
    imei = fleet.devices()[2].imei
    track = fleet.track(imei, begin, end)
    assert track
    assert all(begin <= f.gps_time < end for f in track)
    for fix, nxt in itertools.pairwise(track):
        assert fleet.position_at(imei, fix.gps_time) == fix
        if (nxt.gps_time - fix.gps_time).total_seconds() > 5:
            assert fleet.position_at(imei, fix.gps_time + timedelta(seconds=5)) == fix
    moving = [f for f in track if f.moving]
    gaps = {
        (b.gps_time - a.gps_time).total_seconds()
        for a, b in itertools.pairwise(moving)
        if a.moving and b.moving
    }
    assert 30.0 in gaps


def test_mileage_distance_is_metres_and_equals_track_sum(
    sim: SimServer, api: Api, token: str
) -> None:
    begin, end = yesterday()
    dev = sim.fleet.devices()[3]
    body = api.ok(
        "jimi.device.track.mileage",
        token,
        imeis=dev.imei,
        begin_time=api_time(begin),
        end_time=api_time(end),
        start_row=0,
        page_size=100,
    )
    rows = body["result"]
    assert 3 <= len(rows) <= 6
    assert body["data"] == [
        {"imei": dev.imei, "totalMileage": str(sum(int(r["distance"]) for r in rows))}
    ]
    for row in rows:
        start, stop = parse_time(row["startTime"]), parse_time(row["endTime"])
        fixes = api.ok(
            "jimi.device.track.list",
            token,
            imei=dev.imei,
            begin_time=row["startTime"],
            end_time=api_time(stop + timedelta(seconds=1)),
        )["result"]
        assert parse_time(fixes[0]["gpsTime"]) == start
        along = sum(
            haversine(float(a["lat"]), float(a["lng"]), float(b["lat"]), float(b["lng"]))
            for a, b in itertools.pairwise(fixes)
        )
        distance = int(row["distance"])
        assert abs(distance - along) <= 2, (distance, along)
        assert distance > 1000  # metres, not km
        run = int(row["runTimeSecond"])
        assert run == (stop - start).total_seconds()
        assert float(row["avgSpeed"]) == pytest.approx(distance / run * 3.6, abs=0.1)
        assert int(row["endMileage"]) > int(row["startMileage"])
    model = sim.fleet.trips(dev.imei, begin, end)
    assert [t.distance_m for t in model] == [int(r["distance"]) for r in rows]


def test_parking_payload_in_data_with_iso_times(sim: SimServer, api: Api, token: str) -> None:
    begin, end = yesterday()
    dev = sim.fleet.devices()[4]
    params = {
        "account": dev.account,
        "imeis": dev.imei,
        "start_time": api_time(begin),
        "end_time": api_time(end),
        "start_row": 0,
        "page_size": 100,
    }
    body = api.ok("jimi.open.platform.report.parking", token, acc_type=0, **params)
    assert body["result"] is None
    data = body["data"]
    rows = data["rows"]
    assert rows
    assert data["dataTotalRows"] == str(len(rows))
    assert int(data["totalTime"]) == sum(int(r["durSecond"]) for r in rows)
    for row in rows:
        assert ISO_Z_RE.match(row["startTime"])
        assert ISO_Z_RE.match(row["endTime"])
        start = datetime.strptime(row["startTime"], "%Y-%m-%dT%H:%M:%SZ")
        stop = datetime.strptime(row["endTime"], "%Y-%m-%dT%H:%M:%SZ")
        assert int(row["durSecond"]) == (stop - start).total_seconds() > 0
        assert row["acc"] == "0"
        assert {"lng", "lat", "addr", "deviceName", "mcType", "stopSecond"} <= set(row)
    off = api.ok("jimi.open.platform.report.parking", token, acc_type="off", **params)
    assert off["data"]["rows"] == rows

    idle = api.ok("jimi.open.platform.report.parking", token, acc_type="on", **params)["data"]
    assert idle["rows"]
    assert all(60 <= int(r["durSecond"]) <= 300 for r in idle["rows"])


def test_parking_for_imei_of_another_account_is_1002(sim: SimServer, api: Api, token: str) -> None:
    begin, end = yesterday()
    dev = sim.fleet.devices()[0]
    other = next(a for a in sim.fleet.accounts if a != dev.account)
    sim.clear_requests()
    body = api.call(
        "jimi.open.platform.report.parking",
        token,
        account=other,
        imeis=dev.imei,
        start_time=api_time(begin),
        end_time=api_time(end),
        acc_type=0,
    )
    assert body["code"] == 1002
    record = next(r for r in sim.requests if r.method == "jimi.open.platform.report.parking")
    assert record.params["account"] == other
    assert record.imeis == [dev.imei]
    assert record.code == 1002
    assert record.http_status == 200


# ── alarms, OBD ─────────────────────────────────────────────────────────────


def test_alarm_list_fields_and_paging(sim: SimServer, api: Api, token: str) -> None:
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    begin = end - timedelta(days=7)
    imeis = ",".join(d.imei for d in sim.fleet.devices())
    window = {"begin_time": api_time(begin), "end_time": api_time(end)}
    full = api.ok("jimi.device.alarm.list", token, imeis=imeis, page_size=100, **window)
    items = full["result"]
    assert len(items) >= 10
    for item in items:
        assert item["alertTypeId"]
        assert item["alarmTypeName"]
        assert TIME_RE.match(item["alertTime"])
        assert {"deviceName", "model", "account", "positioningTime", "lng", "lat", "speed"} <= set(
            item
        )
    paged: list[dict[str, Any]] = []
    page_no = 1
    while True:
        page = api.ok(
            "jimi.device.alarm.list", token, imeis=imeis, page_no=page_no, page_size=7, **window
        )["result"]
        paged.extend(page)
        if len(page) < 7:
            break
        page_no += 1
    model = [a for d in sim.fleet.devices() for a in sim.fleet.alarms(d.imei, begin, end)]
    assert len(paged) == len(model)
    assert paged[: len(items)] == items
    assert len({(i["imei"], i["alertTime"], i["alertTypeId"]) for i in paged}) == len(paged)
    bad = api.call("jimi.device.alarm.list", token, imeis=imeis, page_size=101, **window)
    assert bad["code"] == 1001
    too_long = {"begin_time": api_time(end - timedelta(days=40)), "end_time": api_time(end)}
    assert api.call("jimi.device.alarm.list", token, imeis=imeis, **too_long)["code"] == 1001
    assert {"6", "ubiAcce", "ubiDece"} <= {a.type_id for a in model}


def test_obd_list_shape(sim: SimServer, api: Api, token: str) -> None:
    begin, end = yesterday()
    dev = sim.fleet.devices()[5]
    body = api.ok(
        "jimi.device.obd.list",
        token,
        account=dev.account,
        imeis=dev.imei,
        start_time=api_time(begin),
        end_time=api_time(end),
        page_no=1,
        page_size=100,
    )
    assert body["result"] is None
    rows = body["data"]["result"]
    assert rows
    for row in rows:
        assert row["imei"] == dev.imei
        assert float(row["odometerReading"]) > 1000
        assert 0 <= int(row["remainingFuelPercentage"]) <= 100
        assert {"coolantTemperature", "vehicleBatterVoltage", "currentRPM", "currentSpeed"} <= set(
            row
        )


# ── determinism ─────────────────────────────────────────────────────────────


def test_fleet_is_deterministic_and_query_order_independent() -> None:
    config = make_config(devices=30)
    a, b = Fleet(config), Fleet(config)
    assert a.devices() == b.devices()
    day = datetime(2026, 3, 2, tzinfo=UTC)
    imeis = [d.imei for d in a.devices()[::5]]
    # Ask b in a different order (later days first) than a.
    for imei in reversed(imeis):
        b.trips(imei, day + timedelta(days=1), day + timedelta(days=2))
        b.position_at(imei, day + timedelta(hours=30))
    for imei in imeis:
        for hours in (3, 7.5, 9.25, 12, 15, 30):
            t = day + timedelta(hours=hours)
            assert a.position_at(imei, t) == b.position_at(imei, t)
        window = (day, day + timedelta(days=2))
        assert a.trips(imei, *window) == b.trips(imei, *window)
        assert a.stops(imei, *window, acc_on=False) == b.stops(imei, *window, acc_on=False)
        assert a.stops(imei, *window, acc_on=True) == b.stops(imei, *window, acc_on=True)
        assert a.alarms(imei, *window) == b.alarms(imei, *window)
        assert a.obd(imei, *window) == b.obd(imei, *window)
        assert a.track(imei, *window) == b.track(imei, *window)
    other = Fleet(make_config(devices=30, seed=8))
    assert [d.imei for d in other.devices()] != [d.imei for d in a.devices()]
    cities = [d.city for d in Fleet(make_config(devices=100)).devices()]
    assert 50 <= cities.count("Nairobi") <= 70
    assert cities.count("Kampala") >= 10


def test_trips_stops_chain_without_gaps() -> None:
    fleet = Fleet(make_config(devices=6))
    day = datetime(2026, 2, 10, tzinfo=UTC)
    for dev in fleet.devices():
        trips = fleet.trips(dev.imei, day, day + timedelta(days=1))
        assert 3 <= len(trips) <= 6
        parks = fleet.stops(dev.imei, day, day + timedelta(days=2), acc_on=False)
        idles = fleet.stops(dev.imei, day, day + timedelta(days=1), acc_on=True)
        assert len(idles) == len(trips)
        for trip, idle, park in zip(trips, idles, parks, strict=False):
            assert idle.end_time == trip.start_time
            assert park.start_time == trip.end_time
            assert (park.lat, park.lng) == (trip.end_lat, trip.end_lng)
            assert 10 * 60 <= trip.run_time_s <= 75 * 60 or trip.distance_m < 4000
            assert 5 <= trip.avg_speed_kmh <= 90
            assert 5 <= trip.start_time.hour < 18


# ── faults and admin ────────────────────────────────────────────────────────


def test_fault_switches(sim: SimServer, api: Api, token: str) -> None:
    sim.faults.fail_1006 = 1.0
    body = api.call("jimi.user.device.list", token, target=USER)
    assert body["code"] == "1006"
    assert body["message"] == "Illegal access, request frequency is too high"
    api.ok("jimi.oauth.token.get", user_id=USER, user_pwd_md5=md5(PWD))  # token methods spared
    sim.faults.fail_1006 = 0.0

    sim.faults.fail_5xx = 1.0
    response = api.post("jimi.user.device.list", token, target=USER)
    assert response.status_code in (502, 503)
    sim.faults.fail_5xx = 0.0

    sim.faults.slow_share, sim.faults.slow_ms = 1.0, 200
    started = time.monotonic()
    api.ok("jimi.user.device.list", token, target=USER)
    assert time.monotonic() - started >= 0.2
    sim.faults.slow_share = 0.0

    sim.faults.malformed = 1.0
    imeis = ",".join(d.imei for d in sim.fleet.devices())
    items = api.ok("jimi.device.location.get", token, imeis=imeis)["result"]
    now = datetime.now(UTC)
    for item in items:
        broken = (
            "gpsTime" not in item
            or "lat" not in item
            or "" in (item.get("gpsTime"), item.get("lat"), item.get("lng"), item.get("speed"))
            or (item["lat"], item["lng"]) == ("0", "0")
            or parse_time(item["gpsTime"]) > now + timedelta(days=2)
        )
        assert broken, item
    sim.faults.malformed = 0.0
    clean = api.ok("jimi.device.location.get", token, imeis=imeis)["result"]
    assert all(float(i["lat"]) != 0 for i in clean)


def test_admin_endpoints(sim: SimServer, api: Api, http: httpx.Client) -> None:
    health = http.get(f"{sim.base_url}/_sim/health").json()
    assert health == {"ok": True, "devices": 12}
    reply = http.post(f"{sim.base_url}/_sim/faults", json={"fail_1006": 1.0}).json()
    assert reply["fail_1006"] == 1.0
    assert sim.faults.fail_1006 == 1.0
    http.post(f"{sim.base_url}/_sim/faults", json={"fail_1006": 0})
    assert http.post(f"{sim.base_url}/_sim/faults", json={"bogus": 1}).status_code == 400
    tok = api.new_token()
    http.post(f"{sim.base_url}/_sim/expire-tokens")
    assert api.call("jimi.user.device.list", tok, target=USER)["code"] == 1004


# ── push ────────────────────────────────────────────────────────────────────


def test_build_push_deliveries_shapes() -> None:
    fleet = Fleet(make_config(devices=40, push_token="tok"))
    since = datetime(2026, 2, 10, 6, 0, tzinfo=UTC)
    deliveries = build_push_deliveries(fleet, since, since + timedelta(hours=3))
    paths = {path for path, _ in deliveries}
    assert {"/pushgps", "/pushhb", "/pushalarm", "/pushobd", "/push"} <= paths
    gps_items: list[dict[str, Any]] = []
    for path, form in deliveries:
        if path == "/push":
            assert form["msgType"] == "jimi.push.device.alarm"
            data = json.loads(form["data"])
            assert set(data) >= {"imei", "deviceName", "alarmType", "alarmName", "lat", "lng"}
            assert TIME_RE.match(data["alarmTime"])
            continue
        assert form["token"] == "tok"
        items = json.loads(form["data_list"])
        assert isinstance(items, list)
        assert 1 <= len(items) <= 50
        if path == "/pushgps":
            gps_items.extend(items)
            assert set(items[0]) >= {
                "deviceImei", "gpsTime", "gateTime", "satelliteNum", "lng", "lat", "gpsMode",
                "gpsSpeed", "direction", "acc", "postType", "altitude", "status", "distance",
            }  # fmt: skip
        elif path == "/pushhb":
            assert set(items[0]) >= {
                "deviceImei", "gateTime", "powerLevel", "gsmSign", "acc", "oilEle", "gpsPos",
                "powerStatus", "fortify",
            }  # fmt: skip
        elif path == "/pushalarm":
            item = items[0]
            assert {"imei", "type", "msgClass", "msg"} <= set(item)
            assert {"alertType", "alarmTime", "lat", "lng", "gpsSpeed", "alertValue"} <= set(
                item["msg"]
            )
        elif path == "/pushobd":
            assert "deviceImei" in items[0]
    expected = sum(
        len(fleet.track(d.imei, since, since + timedelta(hours=3))) for d in fleet.devices()
    )
    assert len(gps_items) == expected
    events = build_push_deliveries(fleet, since + timedelta(hours=13), since + timedelta(days=3))
    event_items = [i for p, f in events if p == "/pushevent" for i in json.loads(f["data_list"])]
    assert {i["type"] for i in event_items} == {"LOGIN", "LOGOUT"}


class _Receiver(BaseHTTPRequestHandler):
    fail_left = 0
    received: list[tuple[str, dict[str, str]]] = []  # noqa: RUF012
    lock = threading.Lock()

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"])).decode()
        form = {k: v[-1] for k, v in parse_qs(raw).items()}
        with self.lock:
            failing = _Receiver.fail_left > 0
            if failing:
                _Receiver.fail_left -= 1
            else:
                _Receiver.received.append((self.path, form))
        body = b'{"code":0,"msg":"success"}'
        self.send_response(500 if failing else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_push_sender_retries_without_losing_fixes() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        config = make_config(devices=8, push_url=url, push_interval_s=60)
        sender = PushSender(config)
        t0 = datetime(2026, 2, 10, 6, 0, tzinfo=UTC)
        _Receiver.received = []
        _Receiver.fail_left = 1
        assert sender.send_once(t0 + timedelta(minutes=1)) == 0  # first POST fails: kept
        assert sender.pending > 0
        sender.send_once(t0 + timedelta(minutes=90))
        assert sender.pending == 0
        sender.close()
        got = [
            item
            for path, form in _Receiver.received
            if path == "/hook/pushgps"
            for item in json.loads(form["data_list"])
        ]
        fleet = Fleet(config)
        want = sum(
            len(fleet.track(d.imei, t0, t0 + timedelta(minutes=90))) for d in fleet.devices()
        )
        assert len(got) == want
        assert len({(i["deviceImei"], i["gpsTime"]) for i in got}) == want
    finally:
        server.shutdown()
        server.server_close()


# ── CLI ─────────────────────────────────────────────────────────────────────


def test_cli_prints_ready_line_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "jimi_sim.py"), "--port", "0", "--devices", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = re.match(r"^jimi_sim listening on (http://127\.0\.0\.1:\d+/route/rest)$", line)
        assert match, line
        base = match.group(1).removesuffix("/route/rest")
        assert httpx.get(f"{base}/_sim/health").json() == {"ok": True, "devices": 5}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
