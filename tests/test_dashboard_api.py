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
from fastapi.testclient import TestClient

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
        ({"vehicle_number": "ZZZ 000Z"}, 'unknown vehicle "ZZZ 000Z"'),
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
    assert set(doc["filters"]) == {"vehicles", "drivers", "cost_centres", "cities"}
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
        ({"vehicles": ["KCA 542Q", "NOPE 1"]}, "unknown vehicle(s): NOPE 1"),
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
    assert unknown.status_code == 422 and 'unknown vehicle "XYZ"' in unknown.json()["detail"]


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
    assert ("job", "refresh_cagg") not in feeds  # only API methods and push paths
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
