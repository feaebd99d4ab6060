"""dashboard_api: every endpoint against a real PostgreSQL + PostGIS seeded by tests/factories.

GeoJSON validity ([lon, lat], numbers), filters, form vs JSON bodies (FIX-D01), CORS
(FIX-D03), API keys, 422s, the byte-for-byte pass-through of PostgreSQL's JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi import Request, Response
from fastapi.testclient import TestClient

from dashboard.deps import json_from_sql, ro_pool
from dashboard_api import create_app
from tests.conftest import test_settings
from tests.factories import Fleet, seed_fleet

# The seeded fleet is in Kenya / Uganda: longitudes 29 to 42 E, latitudes 5 S to 2 N. Checking
# both ranges proves the [lon, lat] order (the two ranges do not overlap).
LON_RANGE = (29.0, 42.0)
LAT_RANGE = (-5.0, 2.0)

# Production runs TimescaleDB; plain PostgreSQL + PostGIS stays supported: both, every test.
pytestmark = pytest.mark.both_engines


def assert_position(coords: Any) -> None:
    assert isinstance(coords, list) and len(coords) == 2, coords
    lon, lat = coords
    for value in coords:
        assert isinstance(value, int | float) and not isinstance(value, bool), coords
    assert LON_RANGE[0] <= lon <= LON_RANGE[1], f"not [lon, lat]: {coords}"
    assert LAT_RANGE[0] <= lat <= LAT_RANGE[1], f"not [lon, lat]: {coords}"


def assert_feature_collection(doc: Any) -> list[dict[str, Any]]:
    """RFC 7946 shape checks; returns the features."""
    assert doc["type"] == "FeatureCollection"
    assert isinstance(doc["features"], list)
    for feature in doc["features"]:
        assert feature["type"] == "Feature"
        assert isinstance(feature["properties"], dict)
        geometry = feature["geometry"]
        if geometry is None:
            continue
        if geometry["type"] == "Point":
            assert_position(geometry["coordinates"])
        elif geometry["type"] == "LineString":
            assert len(geometry["coordinates"]) >= 2
            for position in geometry["coordinates"]:
                assert_position(position)
        else:
            raise AssertionError(f"unexpected geometry {geometry['type']}")
    return list(doc["features"])


@pytest.fixture
def fleet(db_url: str) -> Fleet:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return seed_fleet(conn)


@pytest.fixture
def client(db_url: str, fleet: Fleet) -> Iterator[TestClient]:
    settings = test_settings(db_url, vtrips_refresh_interval_s=0)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def plates(features: list[dict[str, Any]]) -> set[str]:
    return {f["properties"]["vehicle_number"] for f in features}


# ── Live positions ─────────────────────────────────────────────────────────────────────────


def test_live_positions_geojson_and_filters(client: TestClient) -> None:
    response = client.get("/webhook/live-positions")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    features = assert_feature_collection(doc)
    assert plates(features) == {"KCA 542Q", "KBZ 101A", "KDA 777M", "UAX 123B"}  # not inactive
    status = {f["properties"]["vehicle_number"]: f["properties"]["status"] for f in features}
    assert status == {
        "KCA 542Q": "moving",
        "KBZ 101A": "idle",
        "KDA 777M": "parked",
        "UAX 123B": "offline",
    }
    assert doc["summary"]["vehicles"] == 4 and doc["summary"]["moving"] == 1
    assert isinstance(features[0]["properties"]["speed_kmh"], int | float)

    def only(**params: str) -> set[str]:
        r = client.get("/webhook/live-positions", params=params)
        assert r.status_code == 200, r.text
        return plates(assert_feature_collection(r.json()))

    assert only(cost_centre="Nairobi-North") == {"KCA 542Q", "KBZ 101A"}
    assert only(cost_centre="nairobi-north") == {"KCA 542Q", "KBZ 101A"}
    assert only(cost_centre="all") == only()
    assert only(acc_status="on") == {"KCA 542Q", "KBZ 101A"}
    assert only(acc_status="off") == {"KDA 777M", "UAX 123B"}
    assert only(acc_status="idle") == {"KBZ 101A"}
    assert only(cost_centre="Mombasa-Field", acc_status="on") == set()

    bad = client.get("/webhook/live-positions", params={"acc_status": "sideways"})
    assert bad.status_code == 422
    assert "acc_status must be one of on, off" in bad.json()["detail"]


def test_geojson_is_passed_through_unchanged(client: TestClient, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("SET TimeZone = 'Africa/Nairobi'")  # the functions pin UTC themselves
        row = conn.execute("SELECT reporting.fn_filter_options()::text").fetchone()
    assert row is not None
    assert client.get("/analytics/filters").text == row[0]


# ── Track ──────────────────────────────────────────────────────────────────────────────────


def test_vehicle_track(client: TestClient, fleet: Fleet) -> None:
    response = client.get(
        "/webhook/live-positions/track", params={"vehicle_number": "kca-542q", "hours": "24"}
    )
    assert response.status_code == 200, response.text
    doc = response.json()
    features = assert_feature_collection(doc)
    roles = [f["properties"]["role"] for f in features]
    assert roles == ["track", "start", "end"]
    line = features[0]
    assert len(line["geometry"]["coordinates"]) == fleet.track_points  # flagged fix left out
    assert len(line["properties"]["times"]) == fleet.track_points
    assert line["geometry"]["coordinates"][0] == features[1]["geometry"]["coordinates"]
    summary = doc["summary"]
    assert summary["vehicle_number"] == "KCA 542Q"
    assert summary["points_total"] == fleet.track_points
    assert summary["points_excluded_flagged"] == fleet.track_flagged
    assert summary["capped"] is False
    assert 2.0 < summary["distance_km"] < 6.0  # ~3.6 km of 0.001° steps, not the jump

    by_imei = client.get(
        "/webhook/live-positions/track",
        params={"vehicle_number": fleet.imeis["KCA 542Q"], "hours": "1"},
    ).json()
    # Fixes every 5 min from 150 min before seeding: 55, 50 ... 5 min ago are within 1 h.
    assert by_imei["summary"]["points_total"] == 11

    # A vehicle without fixes in the window: an empty collection, not an error.
    empty = client.get("/webhook/live-positions/track", params={"vehicle_number": "KDA 777M"})
    assert empty.status_code == 200
    assert empty.json()["features"] == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"vehicle_number": "KCA 542Q", "hours": "0"}, "hours must be between 1 and 168"),
        ({"vehicle_number": "KCA 542Q", "hours": "169"}, "hours must be between 1 and 168"),
        ({"vehicle_number": "KCA 542Q", "hours": "two"}, "hours must be a whole number"),
        ({"vehicle_number": "ZZZ 000Z"}, 'unknown vehicle_number "ZZZ 000Z"'),
        ({}, "vehicle_number is required"),
    ],
)
def test_vehicle_track_422(client: TestClient, params: dict[str, str], message: str) -> None:
    response = client.get("/webhook/live-positions/track", params=params)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_track_is_thinned_above_the_cap(db_url: str, fleet: Fleet) -> None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT reporting.fn_vehicle_track('KCA 542Q', 24, 10)::text").fetchone()
    assert row is not None
    doc = json.loads(row[0])
    summary = doc["summary"]
    assert summary["capped"] is True and summary["cap"] == 10
    assert summary["points_total"] == fleet.track_points
    coords = doc["features"][0]["geometry"]["coordinates"]
    assert 2 <= len(coords) <= 11 and summary["points_returned"] == len(coords)
    assert coords[-1] == doc["features"][2]["geometry"]["coordinates"]  # last fix kept


# ── Trips map ──────────────────────────────────────────────────────────────────────────────


def _window(fleet: Fleet) -> dict[str, str]:
    return {
        "start": (fleet.today_start - timedelta(days=5)).isoformat(),
        "end": (fleet.now + timedelta(minutes=1)).isoformat(),
    }


def _stable(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    doc["summary"] = {k: v for k, v in doc["summary"].items() if k != "generated_at"}
    return doc


def test_fleet_dashboard_form_and_json_give_the_same_answer(
    client: TestClient, fleet: Fleet
) -> None:
    fields = {"cost_centre": "Nairobi-North", **_window(fleet)}
    form = client.post("/webhook/fleet-dashboard", data=fields)
    as_json = client.post("/webhook/fleet-dashboard", json=fields)
    assert form.status_code == as_json.status_code == 200, form.text
    assert _stable(form.json()) == _stable(as_json.json())
    doc = form.json()
    features = assert_feature_collection(doc)
    assert {f["id"] for f in features} == {
        *fleet.trips_today["KCA 542Q"],
        *fleet.trips_today["KBZ 101A"],
    }
    assert doc["summary"]["trips"] == 3
    assert doc["summary"]["distance_km"] == pytest.approx(24.0)
    assert doc["summary"]["capped"] is False
    assert set(doc["filters"]) == {"vehicles", "drivers", "cost_centres", "cities", "clusters"}
    assert doc["filters"]["cost_centres"] == ["Kampala", "Mombasa-Field", "Nairobi-North"]
    # A trip without an end point is a Point at its start.
    kbz = next(f for f in features if f["properties"]["vehicle_number"] == "KBZ 101A")
    assert kbz["geometry"]["type"] == "Point"


def test_fleet_dashboard_filters_narrow(client: TestClient, fleet: Fleet) -> None:
    window = _window(fleet)

    def trips(**fields: Any) -> set[int]:
        r = client.post("/webhook/fleet-dashboard", json={**window, **fields})
        assert r.status_code == 200, r.text
        return {f["id"] for f in assert_feature_collection(r.json())}

    everything = trips()
    assert everything == set(fleet.trip_ids)  # inactive vehicles' history included
    kca = set(fleet.trips_today["KCA 542Q"])
    assert trips(vehicles=["KCA 542Q"]) == kca
    assert trips(vehicles="kca542q") == kca  # any spelling of the plate
    assert trips(vehicles=[fleet.imeis["KCA 542Q"]]) == kca
    assert trips(vehicles="KCA 542Q,KBZ 101A") == kca | set(fleet.trips_today["KBZ 101A"])
    assert trips(driver="alice wanjiru") == kca
    assert trips(city="Mombasa") == {fleet.trip_ids[3]}
    assert trips(cost_centre="Kampala", city="Nairobi") == set()
    # Repeated form keys with brackets, as jQuery sends them.
    form = client.post(
        "/webhook/fleet-dashboard",
        content=f"vehicles[]=KCA+542Q&vehicles[]=KDA+777M&start={window['start'][:10]}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert {f["id"] for f in form.json()["features"]} == kca | {fleet.trip_ids[3]}


def test_fleet_dashboard_cap_is_reported(client: TestClient, fleet: Fleet) -> None:
    doc = client.post("/webhook/fleet-dashboard", json={**_window(fleet), "limit": 2}).json()
    assert len(doc["features"]) == 2
    summary = doc["summary"]
    assert summary["trips"] == 6 and summary["returned"] == 2
    assert summary["capped"] is True and summary["cap"] == 2
    # The newest trips are kept: KCA's second trip (40 % of today) and KBZ's (30 %).
    assert {f["id"] for f in doc["features"]} == {fleet.trip_ids[1], fleet.trip_ids[2]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"start": "2026-11-20", "end": "2026-11-10"}, "is before start"),
        ({"start": "2026-02-30"}, "start: '2026-02-30' is not a valid date"),
        ({"end": "next tuesday"}, "end: 'next tuesday' is not a date or time"),
        ({"vehicles": ["KCA 542Q", "NOPE 1"]}, 'unknown vehicles "NOPE 1"'),
        ({"limit": "lots"}, "limit must be a whole number"),
    ],
)
def test_fleet_dashboard_422(client: TestClient, body: dict[str, Any], message: str) -> None:
    response = client.post("/webhook/fleet-dashboard", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_fleet_dashboard_rejects_broken_json(client: TestClient) -> None:
    response = client.post(
        "/webhook/fleet-dashboard",
        content=b"{broken",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["detail"]


# ── Analytics ──────────────────────────────────────────────────────────────────────────────


def test_fleet_summary(client: TestClient) -> None:
    doc = client.get("/analytics/fleet-summary").json()
    assert doc["status"] == {
        "vehicles": 4,
        "moving": 1,
        "idle": 1,
        "parked": 1,
        "offline": 1,
        "no_fix": 0,
    }
    assert doc["today"]["trips"] == 3
    assert doc["today"]["distance_km"] == pytest.approx(24.0)
    assert doc["today"]["vehicles_not_moved"] == 2
    assert {v["vehicle_number"] for v in doc["not_moved_today"]} == {"KDA 777M", "UAX 123B"}
    assert [v["vehicle_number"] for v in doc["currently_idle"]] == ["KBZ 101A"]
    assert {a["category"] for a in doc["alarms_today"]} == {
        "harsh_acceleration",
        "overspeed",
        "sos",
    }
    narrowed = client.get("/analytics/fleet-summary", params={"cost_centre": "Kampala"}).json()
    assert narrowed["status"]["vehicles"] == 1 and narrowed["today"]["trips"] == 0


def test_utilisation(client: TestClient, fleet: Fleet) -> None:
    doc = client.get("/analytics/utilisation", params={"vehicle_number": "KCA 542Q"}).json()
    (vehicle,) = doc["vehicles"]
    assert vehicle["vehicle_number"] == "KCA 542Q"
    assert vehicle["driving_s"] == fleet.driving_s_today["KCA 542Q"]
    assert vehicle["idle_s"] == fleet.idle_s_today["KCA 542Q"]
    assert vehicle["driving_s"] + vehicle["idle_s"] + vehicle["parked_s"] == vehicle["period_s"]
    everyone = client.get("/analytics/utilisation").json()
    assert {v["vehicle_number"] for v in everyone["vehicles"]} == {
        "KCA 542Q",
        "KBZ 101A",
        "KDA 777M",
        "UAX 123B",
    }
    mombasa = client.get("/analytics/utilisation", params={"cost_centre": "Mombasa-Field"})
    assert {v["vehicle_number"] for v in mombasa.json()["vehicles"]} == {"KDA 777M"}
    bad = client.get("/analytics/utilisation", params={"start": "2026-11-20", "end": "2026-11-01"})
    assert bad.status_code == 422 and "is before start" in bad.json()["detail"]
    unknown = client.get("/analytics/utilisation", params={"vehicle_number": "XYZ"})
    assert unknown.json() == {"detail": 'unknown vehicle_number "XYZ" — see /analytics/filters'}


def test_driver_behaviour(client: TestClient, fleet: Fleet) -> None:
    doc = client.get("/analytics/driver-behaviour").json()
    worst = doc["drivers"][0]
    assert worst["vehicle_number"] == "KCA 542Q"
    assert (worst["harsh_acceleration"], worst["harsh_braking"], worst["overspeed"]) == (2, 0, 1)
    assert worst["aggression_index"] == pytest.approx(15.0)  # 3 alarms per 20 km → 15 / 100 km
    clock = {c["vehicle_number"]: c for c in doc["clock"]}
    assert set(clock) >= {"KCA 542Q", "KBZ 101A"}
    assert clock["KCA 542Q"]["trips"] == 2
    only_mombasa = client.get(
        "/analytics/driver-behaviour", params={"cost_centre": "Mombasa-Field"}
    ).json()
    assert [d["vehicle_number"] for d in only_mombasa["drivers"]] == ["KDA 777M"]
    assert only_mombasa["drivers"][0]["aggression_index"] == 0  # the SOS does not count


def test_filters(client: TestClient) -> None:
    doc = client.get("/analytics/filters").json()
    assert [v["vehicle_number"] for v in doc["vehicles"]] == [
        "KBZ 101A",
        "KCA 542Q",
        "KDA 777M",
        "UAX 123B",
    ]
    assert doc["drivers"] == ["Alice Wanjiru", "Brian Otieno", "Chebet Mwangi", "David Okello"]
    assert doc["cities"] == ["Kampala", "Mombasa", "Nairobi"]


def test_health_and_ingest_health(client: TestClient) -> None:
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    doc = client.get("/health/ingest").json()
    assert doc["status"] == "failing"
    feeds = {(f["source"], f["method"]): f for f in doc["feeds"]}
    # every feed, jobs included (issue #18; tests/test_health_feeds.py covers the rest)
    assert feeds[("job", "refresh_cagg")]["feed"] == "job:refresh_cagg"
    assert feeds[("api", "jimi.user.device.location.list")]["status"] == "ok"
    assert feeds[("api", "jimi.device.alarm.list")]["status"] == "stale"
    track = feeds[("api", "jimi.device.track.list")]
    assert track["status"] == "failing"
    assert (track["calls_24h"], track["failures_24h"]) == (4, 3)
    assert track["error_share_24h"] == pytest.approx(0.75)
    assert track["rows_24h"] == 100 and track["last_error"] == "1006 rate limited"
    push = feeds[("push", "/pushgps")]
    assert push["status"] == "ok" and push["rows_24h"] == 12
    assert 170 <= push["last_success_age_s"] <= 400


# ── CORS, API keys, docs ───────────────────────────────────────────────────────────────────


def test_cors_from_settings(db_url: str, fleet: Fleet) -> None:
    settings = test_settings(
        db_url,
        vtrips_refresh_interval_s=0,
        dashboard_cors_origins="https://fleetnow.example, https://fleetops.example",
    )
    with TestClient(create_app(settings)) as client:
        preflight = client.options(
            "/webhook/fleet-dashboard",
            headers={
                "Origin": "https://fleetops.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-api-key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://fleetops.example"
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        simple = client.get(
            "/webhook/live-positions", headers={"Origin": "https://fleetnow.example"}
        )
        assert simple.headers["access-control-allow-origin"] == "https://fleetnow.example"
        other = client.get("/webhook/live-positions", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_default_cors_origins_include_the_four_spas(db_url: str, fleet: Fleet) -> None:
    with TestClient(create_app(test_settings(db_url, vtrips_refresh_interval_s=0))) as client:
        for origin in (
            "https://fleetnow.rahamafresh.com",
            "https://fleetops.rahamafresh.com",
            "https://liveposition.rahamafresh.com",
            "https://fleetintelligence.rahamafresh.com",
        ):
            r = client.get("/analytics/filters", headers={"Origin": origin})
            assert r.headers["access-control-allow-origin"] == origin


def test_api_keys(db_url: str, fleet: Fleet) -> None:
    settings = test_settings(db_url, vtrips_refresh_interval_s=0, dashboard_api_keys="k-one,k-two")
    data_calls = [
        ("GET", "/webhook/live-positions"),
        ("GET", "/webhook/live-positions/track?vehicle_number=KCA%20542Q"),
        ("POST", "/webhook/fleet-dashboard"),
        ("GET", "/analytics/fleet-summary"),
        ("GET", "/analytics/utilisation"),
        ("GET", "/analytics/driver-behaviour"),
        ("GET", "/analytics/filters"),
        ("GET", "/health/ingest"),
    ]
    with TestClient(create_app(settings)) as client:
        for method, path in data_calls:
            assert client.request(method, path).status_code == 401, path
            assert client.request(method, path, headers={"X-API-Key": "wrong"}).status_code == 401
            assert client.request(method, path, headers={"X-API-Key": "k-two"}).status_code == 200
            bearer = {"Authorization": "Bearer k-one"}
            assert client.request(method, path, headers=bearer).status_code == 200, path
        unauthorised = client.get("/analytics/filters")
        assert unauthorised.headers["www-authenticate"] == "Bearer"
        assert "API key" in unauthorised.json()["detail"]
        assert client.get("/health").status_code == 200  # probes need no key
        assert client.get("/docs").status_code == 200


def test_openapi_documents_every_endpoint(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/webhook/live-positions",
        "/webhook/live-positions/track",
        "/webhook/fleet-dashboard",
        "/analytics/fleet-summary",
        "/analytics/utilisation",
        "/analytics/driver-behaviour",
        "/analytics/filters",
        "/health",
        "/health/ingest",
    } <= set(paths)
    body = paths["/webhook/fleet-dashboard"]["post"]["requestBody"]["content"]
    assert {"application/x-www-form-urlencoded", "application/json"} <= set(body)


def test_database_down_gives_503(db_url: str) -> None:
    settings = test_settings("postgresql://nobody@127.0.0.1:1/none", vtrips_refresh_interval_s=0)
    app = create_app(settings)
    with TestClient(app) as client:
        app.state.ro_pool.timeout = 0.5
        assert client.get("/health").status_code == 503
        response = client.get("/analytics/filters")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"


# ── One error shape, hostile input, unknown filters, echoed dates, timeout, keys ─────────────


def assert_detail(response: Any, status: int | None = None) -> str:
    """A 4xx whose body is exactly {"detail": "<one non-empty sentence>"}; returns it."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str), body
    sentence = body["detail"]
    assert sentence.strip() and "\n" not in sentence and "Traceback" not in sentence, sentence
    return sentence


NUL = "Nairobi\x00North"
# Per endpoint, requests that must fail with one sentence: (method, path, query, json body).
BAD_REQUESTS: list[tuple[str, str, dict[str, str], Any]] = [
    ("GET", "/webhook/live-positions", {"acc_status": "sideways"}, None),
    ("GET", "/webhook/live-positions", {"cost_centre": NUL}, None),
    ("GET", "/webhook/live-positions", {"cost_centre": "x" * 201}, None),
    ("GET", "/webhook/live-positions/track", {"vehicle_number": "KCA", "hours": "9" * 400}, None),
    ("GET", "/webhook/live-positions/track", {"vehicle_number": "KCA", "hours": "1e999"}, None),
    ("GET", "/webhook/live-positions/track", {"vehicle_number": "KCA", "hours": "NaN"}, None),
    ("GET", "/webhook/live-positions/track", {"vehicle_number": "\x00"}, None),
    ("POST", "/webhook/fleet-dashboard", {}, {"end": "9999-12-31"}),
    ("POST", "/webhook/fleet-dashboard", {}, {"start": "0001-01-01"}),
    ("POST", "/webhook/fleet-dashboard", {}, {"cost_centre": NUL}),
    ("POST", "/webhook/fleet-dashboard", {}, {"driver": NUL}),
    ("POST", "/webhook/fleet-dashboard", {}, {"city": NUL}),
    ("POST", "/webhook/fleet-dashboard", {}, {"limit": "1e999"}),
    ("POST", "/webhook/fleet-dashboard", {}, {"limit": -1}),
    ("POST", "/webhook/fleet-dashboard", {}, {"cost_centre": {"nested": 1}}),
    ("POST", "/webhook/fleet-dashboard", {}, {"start": "2024-01-01", "end": "2026-01-01"}),
    ("GET", "/analytics/fleet-summary", {"cost_centre": NUL}, None),
    ("GET", "/analytics/utilisation", {"start": "0001-01-01"}, None),
    ("GET", "/analytics/utilisation", {"end": "9999-12-31"}, None),
    ("GET", "/analytics/utilisation", {"cost_centre": NUL}, None),
    ("GET", "/analytics/utilisation?vehicle_number=%ED%A0%80", {}, None),  # a UTF-8 surrogate
    ("GET", "/analytics/driver-behaviour", {"start": "2026-02-30"}, None),
    ("GET", "/analytics/driver-behaviour", {"cost_centre": NUL}, None),
    ("GET", "/analytics/inc-dashboard", {"window": "2y"}, None),
    ("GET", "/analytics/inc-dashboard", {"status": "bogus"}, None),
    ("GET", "/analytics/inc-dashboard", {"from": "2026-02-30", "to": "2026-03-02"}, None),
    ("GET", "/analytics/inc-dashboard", {"from": "0001-01-01T00:00:00"}, None),
    ("GET", "/analytics/inc-dashboard", {"cluster": NUL}, None),
    ("GET", "/analytics/fuel-fills", {"limit": "0"}, None),
    ("GET", "/analytics/fuel-fills", {"limit": "9" * 400}, None),
    ("GET", "/analytics/fuel-fills", {"from": "2026-02-30"}, None),
    ("GET", "/analytics/fuel-fills", {"cost_centre": NUL}, None),
    ("GET", "/analytics/fuel", {"to": "0001-01-05"}, None),
    ("GET", "/analytics/fuel", {"city": NUL}, None),
    ("GET", "/analytics/filters", {"key": "k-one"}, None),
    ("GET", "/health/ingest", {"token": "k-one"}, None),
    ("GET", "/analytics/tickets-map", {"key": "k-one"}, None),
    ("GET", "/analytics/no-such-endpoint", {}, None),
    ("DELETE", "/analytics/filters", {}, None),
    ("GET", "/webhook/fleet-dashboard", {}, None),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "query", "body"), BAD_REQUESTS)
def test_every_error_is_one_sentence(
    client: TestClient,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    query: dict[str, str],
    body: Any,
) -> None:
    response = client.request(method, path, params=query or None, json=body)
    assert_detail(response)
    assert "Traceback" not in caplog.text


def test_the_reported_500s_are_4xx_with_a_sentence(client: TestClient) -> None:
    """The inputs of the security report, one by one, with the sentence each gets."""
    for path in (
        "/webhook/live-positions",
        "/analytics/fleet-summary",
        "/analytics/utilisation",
        "/analytics/driver-behaviour",
        "/analytics/fuel",
    ):
        got = assert_detail(client.get(path, params={"cost_centre": NUL}), 422)
        assert got.startswith("cost_centre contains a control character"), got
    got = assert_detail(client.post("/webhook/fleet-dashboard", data={"driver": NUL}), 422)
    assert got.startswith("driver contains a control character")
    got = assert_detail(client.get("/analytics/inc-dashboard", params={"cluster": NUL}), 422)
    assert got.startswith("cluster contains a control character")
    got = assert_detail(client.post("/webhook/fleet-dashboard", data={"end": "9999-12-31"}), 422)
    assert got == "end: '9999-12-31' is outside the supported dates 2000-01-01 to 2099-12-31"
    got = assert_detail(client.get("/analytics/fuel", params={"to": "0001-01-05"}), 422)
    assert got == "to: '0001-01-05' is outside the supported dates 2000-01-01 to 2099-12-31"
    got = assert_detail(
        client.get("/analytics/inc-dashboard", params={"from": "0001-01-01T00:00:00"}), 422
    )
    assert got.startswith("from: '0001-01-01T00:00:00' is outside the supported dates")
    got = assert_detail(
        client.get(
            "/webhook/live-positions/track",
            params={"vehicle_number": "KCA 542Q", "hours": "9" * 400},
        ),
        422,
    )
    assert got == "hours must be between 1 and 168 (got a 400-digit number)"
    got = assert_detail(client.get("/analytics/fuel-fills", params={"limit": "0"}), 422)
    assert got == "limit must be between 1 and 5000 (got 0)"
    got = assert_detail(client.get("/analytics/inc-dashboard", params={"window": "2y"}), 422)
    assert got == "window must be one of 24h, 7d, 30d, 90d, custom (got '2y')"
    got = assert_detail(client.get("/analytics/nope"), 404)
    assert "/docs" in got
    got = assert_detail(client.delete("/analytics/filters"), 405)
    assert got.startswith("method DELETE is not allowed here")


def test_hostile_bodies_are_refused_with_a_sentence(client: TestClient) -> None:
    def post(content: bytes, ctype: str) -> Any:
        return client.post(
            "/webhook/fleet-dashboard", content=content, headers={"Content-Type": ctype}
        )

    deep = b'{"vehicles": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    got = assert_detail(post(deep, "application/json"), 422)
    assert got == "the JSON is nested too deeply (more than 16 levels)"
    got = assert_detail(post(b'{"city": "\xff\xfe"}', "application/json"), 422)
    assert got.startswith("the body is not UTF-8 text")
    got = assert_detail(post(b"city=%FF%FE", "application/x-www-form-urlencoded"), 422)
    assert got == "the form body is not UTF-8 text once percent-decoded"
    got = assert_detail(post(b"city=Nairobi%00", "application/x-www-form-urlencoded"), 422)
    assert got.startswith("city contains a control character")
    got = assert_detail(post(b'{"city": "\\ud800"}', "application/json"), 422)
    assert got.startswith("city contains a control character or an invalid code point (U+D800")
    big = b"city=" + b"a" * (1_048_576 + 1)
    assert_detail(post(big, "application/x-www-form-urlencoded"), 413)
    # A 5,000-digit limit is never int()-ed: it is clamped to the cap like any large limit.
    huge = post(b'{"limit": ' + b"9" * 5000 + b"}", "application/json")
    assert huge.status_code == 200 and huge.json()["summary"]["cap"] == 50_000
    upload = client.post("/webhook/fleet-dashboard", files={"city": ("c.txt", b"Nairobi")})
    assert assert_detail(upload, 400).startswith("Too many files")  # form fields only


UNKNOWN = " — see /analytics/filters"


@pytest.mark.parametrize(
    ("method", "path", "params", "expected"),
    [
        ("GET", "/webhook/live-positions", {"cost_centre": "Atlantis"}, 'cost_centre "Atlantis"'),
        ("GET", "/analytics/fleet-summary", {"cost_centre": "Atlantis"}, 'cost_centre "Atlantis"'),
        ("GET", "/analytics/utilisation", {"cost_centre": "Atlantis"}, 'cost_centre "Atlantis"'),
        ("GET", "/analytics/utilisation", {"vehicle_number": "ZZ 1"}, 'vehicle_number "ZZ 1"'),
        ("GET", "/analytics/driver-behaviour", {"cost_centre": "Mars"}, 'cost_centre "Mars"'),
        ("GET", "/webhook/live-positions/track", {"vehicle_number": "Z9"}, 'vehicle_number "Z9"'),
        ("POST", "/webhook/fleet-dashboard", {"cost_centre": "Atlantis"}, 'cost_centre "Atlantis"'),
        ("POST", "/webhook/fleet-dashboard", {"driver": "Nobody"}, 'driver "Nobody"'),
        ("POST", "/webhook/fleet-dashboard", {"city": "Atlantis"}, 'city "Atlantis"'),
        ("POST", "/webhook/fleet-dashboard", {"vehicles": "ZZ 1"}, 'vehicles "ZZ 1"'),
        ("GET", "/analytics/fuel", {"cost_centre": "Atlantis"}, 'cost_centre "Atlantis"'),
        ("GET", "/analytics/fuel", {"city": "Atlantis"}, 'city "Atlantis"'),
        ("GET", "/analytics/fuel-fills", {"vehicle_number": "ZZ 1"}, 'vehicle_number "ZZ 1"'),
        ("GET", "/analytics/inc-dashboard", {"cluster": "Atlantis"}, 'cluster "Atlantis"'),
    ],
)  # fmt: skip
def test_unknown_filter_values_are_refused_everywhere(
    client: TestClient, method: str, path: str, params: dict[str, str], expected: str
) -> None:
    if method == "POST":
        response = client.post(path, data=params)
    else:
        response = client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": f"unknown {expected}{UNKNOWN}"}


def test_known_filter_values_in_any_spelling_still_answer(client: TestClient) -> None:
    for path, params in [
        ("/webhook/live-positions", {"cost_centre": "NAIROBI-NORTH"}),
        ("/analytics/fleet-summary", {"cost_centre": "nairobi-north"}),
        ("/analytics/utilisation", {"vehicle_number": "kca542q", "cost_centre": "All"}),
        ("/analytics/driver-behaviour", {"cost_centre": " Kampala "}),
        ("/analytics/fuel", {"city": "mombasa", "vehicle_number": "kda-777m"}),
    ]:
        assert client.get(path, params=params).status_code == 200, (path, params)
    fields = {"driver": "ALICE WANJIRU", "city": "nairobi", "vehicles": "kca-542q"}
    assert client.post("/webhook/fleet-dashboard", data=fields).status_code == 200


def test_trips_map_echoes_the_dates_as_given(client: TestClient, fleet: Fleet) -> None:
    today = (fleet.now + timedelta(hours=3)).date()
    start, end = (today - timedelta(days=5)).isoformat(), today.isoformat()
    summary = client.post("/webhook/fleet-dashboard", data={"start": start, "end": end}).json()[
        "summary"
    ]
    assert (summary["start"], summary["end"]) == (start, end)
    # The window actually used: [start 00:00 EAT, the day after end 00:00 EAT), in UTC.
    assert summary["window"]["start"] == f"{today - timedelta(days=6)}T21:00:00+00:00"
    assert summary["window"]["end"] == f"{end}T21:00:00+00:00"
    # An ISO time comes back exactly as sent, too; without dates, the computed window.
    iso = f"{start}T08:00:00+03:00"
    assert (
        client.post("/webhook/fleet-dashboard", json={"start": iso}).json()["summary"]["start"]
        == iso
    )
    default = client.post("/webhook/fleet-dashboard", data={}).json()["summary"]
    assert default["start"] == default["window"]["start"]
    # Errors quote the dates as given, not the exclusive bound computed from them.
    got = assert_detail(
        client.post("/webhook/fleet-dashboard", data={"start": "2026-11-20", "end": "2026-11-10"})
    )
    assert got == "end (2026-11-10) is before start (2026-11-20)"


def test_trips_map_range_is_capped_at_366_days(client: TestClient) -> None:
    ok = client.post("/webhook/fleet-dashboard", data={"start": "2025-01-01", "end": "2026-01-01"})
    assert ok.status_code == 200, ok.text  # 366 days, 2025-01-01 to 2026-01-01 inclusive
    got = assert_detail(
        client.post("/webhook/fleet-dashboard", data={"start": "2025-01-01", "end": "2026-01-02"}),
        422,
    )
    assert got == "the date range is limited to 366 days (got 367 days)"
    got = assert_detail(client.post("/webhook/fleet-dashboard", data={"start": "2020-01-01"}))
    assert got.startswith("the date range is limited to 366 days")


def test_statement_timeout_cancels_and_answers_503(db_url: str, fleet: Fleet) -> None:
    settings = test_settings(db_url, vtrips_refresh_interval_s=0, dashboard_statement_timeout_s=1)
    app = create_app(settings)

    def slow(request: Request) -> Response:  # a read that outlives the limit
        return json_from_sql(ro_pool(request), "SELECT pg_sleep(3)::text")

    app.add_api_route("/test/slow", slow)
    with TestClient(app) as client:
        with app.state.ro_pool.connection() as conn:
            row = conn.execute("SHOW statement_timeout").fetchone()
        assert row is not None and row[0] == "1s"
        response = client.get("/test/slow")
        assert response.status_code == 503
        assert response.json() == {
            "detail": "the query took longer than 1 s and was cancelled: narrow the request"
            " (a shorter date range or a filter)"
        }
        assert client.get("/analytics/filters").status_code == 200  # the pool carries on


def test_statement_timeout_default_and_options_already_in_the_url(db_url: str) -> None:
    from ts_shared import Settings, make_pool  # noqa: PLC0415

    assert Settings(_env_file=None).dashboard_statement_timeout_s == 15
    url = psycopg.conninfo.make_conninfo(db_url, options="-c role=dashboard_ro")
    pool = make_pool(url, min_size=1, max_size=1, name="t", statement_timeout_s=15)
    try:
        with pool.connection() as conn:
            row = conn.execute("SELECT current_user, current_setting('statement_timeout')")
            assert row.fetchone() == ("dashboard_ro", "15s")
    finally:
        pool.close()


def test_keys_only_in_headers_and_not_in_the_access_log(db_url: str, fleet: Fleet) -> None:
    import logging  # noqa: PLC0415

    from ts_shared import RedactSecretsFilter  # noqa: PLC0415

    settings = test_settings(db_url, vtrips_refresh_interval_s=0, dashboard_api_keys="k-one")
    with TestClient(create_app(settings)) as client:
        for path in ("/analytics/filters", "/analytics/fuel", "/analytics/tickets-map"):
            in_url = client.get(path, params={"key": "k-one"}, headers={"X-API-Key": "k-one"})
            got = assert_detail(in_url, 401)
            assert "X-API-Key header" in got and "never in the URL" in got
            assert in_url.headers["www-authenticate"] == "Bearer"
            assert client.get(path, headers={"X-API-Key": "k-one"}).status_code == 200
            assert client.get(path, headers={"X-API-Key": "k-one "}).status_code == 401
        access = logging.getLogger("uvicorn.access")
        redactors = [f for f in access.filters if isinstance(f, RedactSecretsFilter)]
        assert len(redactors) == 1  # attached once, however many apps started
        record = logging.LogRecord(
            "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5", "GET", "/analytics/filters?key=k-one&x=1", "1.1", 401), None,
        )  # fmt: skip
        assert redactors[0].filter(record)
        assert "k-one" not in record.getMessage() and "key=***&x=1" in record.getMessage()


def test_validation_errors_and_crashes_keep_the_shape(db_url: str) -> None:
    """FastAPI's own validation (a typed parameter) and an unexpected exception answer in the
    same shape as everything else."""
    app = create_app(test_settings(db_url, vtrips_refresh_interval_s=0))

    def typed(n: int) -> dict[str, int]:
        return {"n": n}

    def crash() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/test/typed", typed)
    app.add_api_route("/test/crash", crash)
    with TestClient(app, raise_server_exceptions=False) as client:
        got = assert_detail(client.get("/test/typed", params={"n": "x"}), 422)
        assert got.startswith("n is invalid: Input should be a valid integer")
        assert assert_detail(client.get("/test/typed"), 422) == "n is invalid: Field required"
        crashed = client.get("/test/crash")
        assert crashed.status_code == 500
        assert crashed.json() == {"detail": "internal error; the server log has the details"}
