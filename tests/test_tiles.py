"""Vector tiles (dashboard/tiles.py, migrations/R__reporting_tiles.sql) on the real database.

Tiles are decoded (mapbox-vector-tile) and compared with the JSON endpoints for the same
filters: the same vehicles / trips / fixes with the same properties, at the positions the
JSON gives (to one tile unit). Also: 204 for an empty tile, 4xx for bad tiles and filters
(hostile input included), 401 without a key, TileJSON, cache headers, ETag → 304, br / gzip.
"""

from __future__ import annotations

import gzip
import logging
import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import brotli
import mapbox_vector_tile  # type: ignore[import-untyped]
import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.params import EAT
from dashboard_api import create_app
from tests.conftest import test_settings
from tests.factories import Fleet, seed_fleet

pytestmark = pytest.mark.both_engines

MVT = "application/vnd.mapbox-vector-tile"
EXTENT = 4096


@pytest.fixture
def fleet(db_url: str) -> Fleet:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return seed_fleet(conn)


@pytest.fixture
def client(db_url: str, fleet: Fleet) -> Iterator[TestClient]:
    settings = test_settings(db_url, vtrips_refresh_interval_s=0, dashboard_compress_min_bytes=1)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


# ── Tile arithmetic (XYZ, Web Mercator) ────────────────────────────────────────────────────


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 1 << z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def to_lonlat(z: int, x: int, y: int, px: float, py: float) -> tuple[float, float]:
    """A tile-local position (y down, extent 4096) in lon / lat."""
    n = 1 << z
    lon = (x + px / EXTENT) / n * 360 - 180
    lat = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * (y + py / EXTENT) / n))))
    return lon, lat


def unit_deg(z: int) -> float:
    """One tile unit in degrees of longitude (an upper bound for latitude near the equator)."""
    return 360 / (1 << z) / EXTENT * 1.01


def decode(body: bytes) -> dict[str, Any]:
    return dict(mapbox_vector_tile.decode(body, default_options={"y_coord_down": True}))


def get_tile(
    client: TestClient, layer: str, z: int, lon: float, lat: float, **params: Any
) -> tuple[tuple[int, int, int], list[dict[str, Any]]]:
    """The decoded features of `layer` in the z-tile containing lon/lat ([] for a 204)."""
    x, y = tile_of(lon, lat, z)
    response = client.get(f"/tiles/{layer}/{z}/{x}/{y}.mvt", params=params)
    assert response.status_code in (200, 204), response.text
    if response.status_code == 204:
        assert response.content == b""
        return (z, x, y), []
    assert response.headers["content-type"] == MVT
    layers = decode(response.content)
    assert list(layers) == [layer]  # one layer, named like the path's
    assert layers[layer]["extent"] == EXTENT
    return (z, x, y), list(layers[layer]["features"])


def near(a: tuple[float, float], b: tuple[float, float], z: int) -> bool:
    return abs(a[0] - b[0]) <= unit_deg(z) and abs(a[1] - b[1]) <= unit_deg(z)


# ── live ───────────────────────────────────────────────────────────────────────────────────


def live_json(client: TestClient, **params: str) -> list[dict[str, Any]]:
    response = client.get("/webhook/live-positions", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["features"])


@pytest.mark.parametrize("z", [4, 10, 16])
def test_live_tile_holds_each_vehicle_where_the_json_puts_it(client: TestClient, z: int) -> None:
    features = live_json(client)
    assert len(features) == 4
    for feature in features:
        lon, lat = feature["geometry"]["coordinates"]
        tile, decoded = get_tile(client, "live", z, lon, lat)
        found = [f for f in decoded if f["properties"]["imei"] == feature["properties"]["imei"]]
        assert len(found) == 1, decoded
        props, want = found[0]["properties"], feature["properties"]
        assert props["name"] == want["vehicle_number"]
        for key in ("vehicle_number", "status", "speed_kmh", "gps_time", "cost_centre"):
            assert props[key] == want[key], key
        assert props["course"] == want["direction_deg"]
        assert found[0]["geometry"]["type"] == "Point"
        px, py = found[0]["geometry"]["coordinates"]
        assert near(to_lonlat(*tile, px, py), (lon, lat), z)


def test_live_vehicle_absent_from_a_far_tile_and_filters_apply(client: TestClient) -> None:
    # The Gulf of Guinea at zoom 10: no vehicle there → 204, an empty tile.
    assert get_tile(client, "live", 10, 0.0, 0.0)[1] == []
    # Zoom 3 holds East Africa: the tile's vehicles are the JSON's for every filter.
    lon, lat = 36.8, -1.3
    for params in (
        {},
        {"cost_centre": "nairobi-north"},
        {"acc_status": "off"},
        {"acc_status": "idle"},
        {"cost_centre": "Mombasa-Field", "acc_status": "on"},
    ):
        want = {f["properties"]["imei"] for f in live_json(client, **params)}
        got = {f["properties"]["imei"] for f in get_tile(client, "live", 3, lon, lat, **params)[1]}
        assert got == want, params
    statuses = {f["properties"]["status"] for f in get_tile(client, "live", 3, lon, lat)[1]}
    assert statuses == {"moving", "idle", "parked", "offline"}


def test_live_tile_buffer_is_a_symbol_radius(client: TestClient, db_url: str) -> None:
    """A vehicle just outside a tile is drawn in it too (its symbol may reach in) up to 128
    units (1/32 of the tile, 16 px at 512 px) beyond the edge, not farther."""
    feature = live_json(client)[0]
    imei = feature["properties"]["imei"]
    lon0, lat0 = feature["geometry"]["coordinates"]
    z, (x, y) = 10, tile_of(lon0, lat0, 10)
    for units, inside in ((100, True), (160, False)):
        lon, lat = to_lonlat(z, x, y, EXTENT + units, EXTENT / 2)  # east of the tile
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE tracksolid.live_positions SET lng = %s, lat = %s WHERE imei = %s",
                (lon, lat, imei),
            )
        response = client.get(f"/tiles/live/{z}/{x}/{y}.mvt")
        layers = decode(response.content) if response.status_code == 200 else {}
        drawn = {f["properties"]["imei"]: f for f in layers.get("live", {}).get("features", [])}
        assert (imei in drawn) is inside, units
        if inside:
            assert drawn[imei]["geometry"]["coordinates"][0] == EXTENT + units


# ── track ──────────────────────────────────────────────────────────────────────────────────


def test_track_tile_segments_join_the_fixes_of_the_json_track(
    client: TestClient, fleet: Fleet
) -> None:
    response = client.get(
        "/webhook/live-positions/track", params={"vehicle_number": "KCA 542Q", "hours": "24"}
    )
    line = response.json()["features"][0]
    coords, times = line["geometry"]["coordinates"], line["properties"]["times"]
    assert len(coords) == fleet.track_points
    z = 12
    tiles = {tile_of(lon, lat, z) for lon, lat in coords}
    segments: dict[int, dict[str, Any]] = {}
    for x, y in tiles:
        lon, lat = to_lonlat(z, x, y, EXTENT / 2, EXTENT / 2)
        for params in ({"imei": fleet.imeis["KCA 542Q"]}, {"vehicle_number": "kca-542q"}):
            tile, decoded = get_tile(client, "track", z, lon, lat, hours="24", **params)
            for feature in decoded:
                props = feature["properties"]
                assert feature["geometry"]["type"] == "LineString"
                start, end = (
                    feature["geometry"]["coordinates"][0],
                    feature["geometry"]["coordinates"][-1],
                )
                segments.setdefault(props["seq"], {**props, "ends": []})["ends"].append(
                    (to_lonlat(*tile, *start), to_lonlat(*tile, *end))
                )
    # one segment per pair of consecutive fixes (the flagged fix is skipped, as in the JSON)
    assert sorted(segments) == list(range(1, len(coords)))
    for seq, segment in segments.items():
        assert segment["imei"] == fleet.imeis["KCA 542Q"]
        assert segment["start_time"] == times[seq - 1]
        assert segment["end_time"] == times[seq]
        assert segment["speed_kmh"] == line["properties"]["speeds_kmh"][seq - 1]
        # a segment cut by a tile edge ends on the edge: compare the unclipped ends only
        starts = [a for a, _ in segment["ends"] if near(a, tuple(coords[seq - 1]), z)]
        ends = [b for _, b in segment["ends"] if near(b, tuple(coords[seq]), z)]
        assert starts and ends, (seq, segment["ends"], coords[seq - 1 : seq + 1])


def test_track_window_and_unknown_vehicle(client: TestClient, fleet: Fleet) -> None:
    lon, lat = 36.8219, -1.2921
    imei = fleet.imeis["KCA 542Q"]
    # A window of yesterday (wholly past): the old fix only; cached longer.
    old = fleet.now - timedelta(hours=30)
    x, y = tile_of(lon, lat, 6)
    response = client.get(
        f"/tiles/track/6/{x}/{y}.mvt",
        params={
            "imei": imei,
            "start": (old - timedelta(minutes=1)).isoformat(),
            "end": (old + timedelta(minutes=1)).isoformat(),
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "private, max-age=600"
    features = decode(response.content)["track"]["features"]
    assert [f["geometry"]["type"] for f in features] == ["Point"]  # one fix: a point
    unknown = client.get(f"/tiles/track/6/{x}/{y}.mvt", params={"imei": "000"})
    assert unknown.status_code == 422 and "unknown vehicle" in unknown.json()["detail"]


# ── trips ──────────────────────────────────────────────────────────────────────────────────


def trips_json(client: TestClient, **fields: str) -> dict[int, dict[str, Any]]:
    response = client.post("/webhook/fleet-dashboard", data=fields)
    assert response.status_code == 200, response.text
    return {f["id"]: f for f in response.json()["features"] if f["geometry"]}


def trips_in_tiles(client: TestClient, z: int, **params: str) -> dict[int, dict[str, Any]]:
    """The trips of every z-tile holding a seeded vehicle's area (Nairobi, Mombasa, Kampala)."""
    found: dict[int, dict[str, Any]] = {}
    for lon, lat in ((36.82, -1.29), (39.67, -4.04), (32.58, 0.35)):
        _, features = get_tile(client, "trips", z, lon, lat, **params)
        for feature in features:
            found[feature["id"]] = feature
            assert feature["properties"]["trip_id"] == feature["id"]
    return found


def drawn_lines(want: dict[int, dict[str, Any]]) -> dict[int, int]:
    """What a tile shows of these JSON trips: one feature per distinct line (same
    coordinates), the last recorded trip of it (highest id) → how many trips it stands for."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for feature in want.values():
        groups.setdefault(repr(feature["geometry"]), []).append(feature)
    return {max(f["id"] for f in group): len(group) for group in groups.values()}


LIGHT_ZOOM = 11  # up to this zoom a trips feature carries trip_id and trips only
FULL_TRIP_PROPERTIES = (
    "imei",
    "vehicle_number",
    "driver_name",
    "cost_centre",
    "start_time",
    "end_time",
    "distance_km",
    "max_speed_kmh",
)


def test_trips_tiles_hold_the_trips_of_the_map(client: TestClient, fleet: Fleet) -> None:
    want = trips_json(client)
    assert len(want) == 6
    got = trips_in_tiles(client, 5)
    # KCA 542Q's two trips today and the inactive van's share one line: one feature, trips=3
    expected = drawn_lines(want)
    assert sorted(expected.values()) == [1, 1, 1, 3]
    assert {i: f["properties"]["trips"] for i, f in got.items()} == expected
    for trip_id, feature in got.items():
        # a low-zoom feature is light: what a map needs to draw it and to look the trip up
        assert set(feature["properties"]) == {"trip_id", "trips"}
        kind = want[trip_id]["geometry"]["type"]
        assert feature["geometry"]["type"] == kind  # a LineString, a Point without an end
        lon, lat = (
            want[trip_id]["geometry"]["coordinates"][0]
            if kind == "LineString"
            else (want[trip_id]["geometry"]["coordinates"])
        )
        tile = (5, *tile_of(lon, lat, 5))
        first = feature["geometry"]["coordinates"]
        first = first[0] if kind == "LineString" else first
        assert near(to_lonlat(*tile, *first), (lon, lat), 5)


@pytest.mark.parametrize("z", [LIGHT_ZOOM, LIGHT_ZOOM + 1, 16])
def test_trips_properties_by_zoom(client: TestClient, z: int) -> None:
    """Light properties up to zoom 11, the JSON map's properties from zoom 12 (docs/api.md)."""
    want = trips_json(client)
    for trip_id in drawn_lines(want):
        geometry = want[trip_id]["geometry"]
        lon, lat = (
            geometry["coordinates"][0]
            if geometry["type"] == "LineString"
            else (geometry["coordinates"])
        )
        _, features = get_tile(client, "trips", z, lon, lat)
        feature = next(f for f in features if f["id"] == trip_id)
        props, json_props = feature["properties"], want[trip_id]["properties"]
        if z <= LIGHT_ZOOM:
            assert set(props) == {"trip_id", "trips"}
            continue
        for key in FULL_TRIP_PROPERTIES:
            assert props.get(key) == json_props[key], key


# Random trips in and around three tiles (a tenth without an end, a fifth shorter than a
# tile unit), drawn by ST_AsMVTGeom(ST_Transform(...)) and by the arithmetic of
# reporting.tile_trip_geom from the ends rounded in tile units (what fn_tile_trips sends).
GEOMETRY_CASES = """
WITH e AS (
    SELECT v.z, v.x, v.y, box2d(ST_TileEnvelope(v.z, v.x, v.y)) AS env,
           box2d(ST_Transform(ST_TileEnvelope(v.z, v.x, v.y), 4326)) AS g
    FROM (VALUES (3, 4, 3), (10, 616, 515), (16, 39470, 32994)) v(z, x, y)
), r AS (
    SELECT e.*, random() AS k, random() AS dx, random() AS dy,
           ST_XMax(g) - ST_XMin(g) AS w, ST_YMax(g) - ST_YMin(g) AS h,
           ST_XMin(g) + (random() * 3 - 1) * (ST_XMax(g) - ST_XMin(g)) AS slng,
           ST_YMin(g) + (random() * 3 - 1) * (ST_YMax(g) - ST_YMin(g)) AS slat
    FROM e, generate_series(1, 1500)
), l AS (
    SELECT r.*,
           CASE WHEN k < 0.1 THEN NULL WHEN k < 0.3 THEN slng + dx * w / 40000
                ELSE slng + (dx * 2 - 1) * w END AS elng,
           CASE WHEN k < 0.1 THEN NULL WHEN k < 0.3 THEN slat + dy * h / 40000
                ELSE least(85, greatest(-85, slat + (dy * 2 - 1) * h)) END AS elat
    FROM r
), u AS (
    SELECT l.*, reporting.tile_px(slng, z, x) AS sx, reporting.tile_py(slat, z, y) AS sy,
           reporting.tile_px(elng, z, x) AS ex, reporting.tile_py(elat, z, y) AS ey
    FROM l
)
SELECT z, ex IS NULL AS point, abs(ex - sx) < 0.5 AND abs(ey - sy) < 0.5 AS tiny,
       ST_AsText(ST_AsMVTGeom(ST_Transform(ST_SetSRID(
           CASE WHEN elng IS NULL THEN ST_MakePoint(slng, slat)
                ELSE ST_MakeLine(ST_MakePoint(slng, slat), ST_MakePoint(elng, elat)) END,
           4326), 3857), env, 4096, 256, true)) AS postgis,
       ST_AsText(reporting.tile_trip_geom(round(sx), round(sy), round(ex), round(ey),
                                          abs(ex - sx) < 0.5 AND abs(ey - sy) < 0.5)) AS ours
FROM u
"""


def test_trip_geometry_by_arithmetic_equals_st_asmvtgeom(db_url: str) -> None:
    """The tile geometry built by formula is ST_AsMVTGeom's, collapsed and clipped lines
    included; the one difference: a line under half a unit both ways is always dropped
    (PostGIS keeps some at high zoom, where its float32 bounding box is coarser)."""
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT setseed(0.19)")
        rows = conn.execute(GEOMETRY_CASES).fetchall()
    assert len(rows) == 4500
    kinds = {"collapsed": 0, "clipped": 0, "point": 0}
    for z, point, tiny, postgis, ours in rows:
        if tiny and not point:
            assert ours is None, (z, postgis)
            continue
        assert ours == postgis, (z, postgis, ours)
        if point:
            kinds["point"] += postgis is not None
        elif postgis is None:
            kinds["collapsed"] += 1
        elif "4352" in postgis or "-256" in postgis:
            kinds["clipped"] += 1
    assert min(kinds.values()) > 20, kinds  # every kind of case was met


@pytest.mark.parametrize(
    "fields",
    [
        {"cost_centre": "Nairobi-North"},
        {"vehicles": "KDA 777M,uax123b"},
        {"city": "kampala"},
        {"driver": "Alice Wanjiru"},
    ],
)
def test_trips_tiles_filter_like_the_map(client: TestClient, fields: dict[str, str]) -> None:
    want = trips_json(client, **fields)
    assert want
    got = trips_in_tiles(client, 5, **fields)
    assert {i: f["properties"]["trips"] for i, f in got.items()} == drawn_lines(want)


def test_trips_window(client: TestClient, fleet: Fleet) -> None:
    day = fleet.today_start.astimezone(EAT).date()  # today in East Africa Time
    # Only the trip of 3 days ago: [day-3, day-3] (a date-only end includes the day).
    three = (day - timedelta(days=3)).isoformat()
    want = trips_json(client, start=three, end=three)
    got = trips_in_tiles(client, 5, start=three, end=three)
    assert set(got) == set(want) and len(want) == 1
    x, y = tile_of(32.58, 0.35, 5)
    response = client.get(f"/tiles/trips/5/{x}/{y}.mvt", params={"start": three, "end": three})
    assert response.headers["cache-control"] == "private, max-age=600"  # a past window
    assert client.get(f"/tiles/trips/5/{x}/{y}.mvt").headers["cache-control"] == (
        "private, max-age=15"
    )
    empty = client.get(
        f"/tiles/trips/5/{x}/{y}.mvt", params={"start": "2001-01-01", "end": "2001-01-02"}
    )
    assert empty.status_code == 204 and empty.content == b""


# ── Errors, keys, hostile input ────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/tiles/live/23/0/0.mvt", 422, "z must be between 0 and 22"),
        ("/tiles/live/-1/0/0.mvt", 422, "z must be between 0 and 22"),
        ("/tiles/live/2/4/0.mvt", 422, "x must be between 0 and 3"),
        ("/tiles/live/2/0/-1.mvt", 422, "y must be between 0 and 3"),
        ("/tiles/live/0/0/99999999999999999999999.mvt", 422, "y must be between 0 and 0"),
        ("/tiles/live/a/0/0.mvt", 422, "z must be a whole number"),
        ("/tiles/live/1.5/0/0.mvt", 422, "z must be a whole number"),
        ("/tiles/roads/0/0/0.mvt", 404, "no such tile layer"),
        ("/tiles/roads.json", 404, "no such tile layer"),
        ("/tiles/live/0/0/0.mvt?acc_status=sideways", 422, "acc_status must be one of"),
        ("/tiles/live/0/0/0.mvt?cost_centre=Atlantis", 422, 'unknown cost_centre "Atlantis"'),
        ("/tiles/trips/0/0/0.mvt?end=2026-01-01&start=2026-02-01", 422, "is before start"),
        ("/tiles/trips/0/0/0.mvt?start=2020-01-01&end=2022-01-01", 422, "366 days"),
        ("/tiles/trips/0/0/0.mvt?vehicles=NOPE1", 422, 'unknown vehicles "NOPE1"'),
        ("/tiles/trips/0/0/0.mvt?driver=%00", 422, "control character"),
        ("/tiles/track/0/0/0.mvt", 422, "imei is required"),
        ("/tiles/track/0/0/0.mvt?imei=KCA542Q&hours=0", 422, "hours must be between 1 and 168"),
        (
            "/tiles/track/0/0/0.mvt?imei=KCA542Q&start=2026-01-01&end=2026-02-01",
            422,
            "limited to 168 hours",
        ),
        ("/tiles/track.json", 422, "imei is required"),
        ("/tiles/live.json?acc_status=x", 422, "acc_status must be one of"),
    ],
)
def test_bad_tiles_and_filters_are_4xx_with_one_sentence(
    client: TestClient, path: str, status: int, words: str
) -> None:
    response = client.get(path)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_api_key_required_when_keys_are_set(db_url: str, fleet: Fleet) -> None:
    settings = test_settings(db_url, vtrips_refresh_interval_s=0, dashboard_api_keys="k-one")
    with TestClient(create_app(settings)) as client:
        for path in ("/tiles/live/0/0/0.mvt", "/tiles/live.json"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
            assert client.get(path, headers={"X-API-Key": "k-one"}).status_code == 200
        assert client.get("/tiles/live/0/0/0.mvt?key=k-one").status_code == 401


hostile = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=30),
    st.sampled_from(["", " ", "0x1", "1e3", "NaN", "٣", "+1", "00", "%00", "../0", "0.mvt"]),
)


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING)
    yield
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    layer=st.sampled_from(["live", "trips", "track", "x"]),
    zxy=st.tuples(hostile, hostile, hostile),
    params=st.dictionaries(
        st.sampled_from(
            [
                "cost_centre",
                "acc_status",
                "vehicles",
                "start",
                "end",
                "hours",
                "imei",
                "driver",
                "city",
                "limit",
            ]
        ),
        hostile,
        max_size=3,
    ),
)
def test_hostile_tiles_never_5xx(
    client: TestClient,
    no_tracebacks: None,
    layer: str,
    zxy: tuple[str, str, str],
    params: dict[str, str],
) -> None:
    z, x, y = (quote(part, safe="") or "0" for part in zxy)
    query = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params.items())
    for path in (f"/tiles/{layer}/{z}/{x}/{y}.mvt?{query}", f"/tiles/{layer}.json?{query}"):
        response = client.get(path)
        assert response.status_code in (200, 204, 404, 422), (path, response.text)
        if response.status_code >= 400:
            assert isinstance(response.json()["detail"], str)


# ── TileJSON, caching, compression ─────────────────────────────────────────────────────────


def test_tilejson_carries_the_checked_filters(client: TestClient) -> None:
    response = client.get(
        "/tiles/live.json", params={"cost_centre": " Nairobi-North ", "acc_status": "1"}
    )
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["tilejson"] == "3.0.0"
    assert doc["tiles"] == [
        "http://testserver/tiles/live/{z}/{x}/{y}.mvt?cost_centre=Nairobi-North&acc_status=on"
    ]
    assert (doc["minzoom"], doc["maxzoom"]) == (0, 22)
    west, south, east, north = doc["bounds"]
    assert (west, south, east, north) == pytest.approx((36.81, -1.30, 36.83, -1.28))
    assert west <= doc["center"][0] <= east and south <= doc["center"][1] <= north
    assert 0 <= doc["center"][2] <= 16
    layer = doc["vector_layers"][0]
    assert layer["id"] == "live" and len(doc["vector_layers"]) == 1
    assert {"imei", "name", "status", "speed_kmh", "course", "gps_time"} <= set(layer["fields"])
    # the template, filled in, gives the filtered tile
    x, y = tile_of(36.82, -1.29, 8)
    url = doc["tiles"][0].replace("{z}", "8").replace("{x}", str(x)).replace("{y}", str(y))
    features = decode(client.get(url.removeprefix("http://testserver")).content)["live"]
    assert {f["properties"]["name"] for f in features["features"]} == {"KCA 542Q", "KBZ 101A"}

    trips = client.get(
        "/tiles/trips.json",
        params={"vehicle": "kca 542q", "from": "2026-01-01", "to": "2026-01-02"},
    ).json()
    assert trips["tiles"][0].endswith(
        "/tiles/trips/{z}/{x}/{y}.mvt?vehicles=kca+542q&start=2026-01-01&end=2026-01-02"
    )
    assert trips["bounds"] == [-180.0, -85.0511, 180.0, 85.0511]  # no trip in that window
    track = client.get("/tiles/track.json", params={"imei": "KCA 542Q", "hours": "5"}).json()
    assert track["tiles"][0].endswith("/tiles/track/{z}/{x}/{y}.mvt?imei=KCA+542Q&hours=5")
    assert track["vector_layers"][0]["id"] == "track"


def test_cache_headers_etag_and_304(client: TestClient) -> None:
    x, y = tile_of(36.82, -1.29, 10)
    path = f"/tiles/live/10/{x}/{y}.mvt"
    first = client.get(path, headers={"Accept-Encoding": "identity"})
    assert first.status_code == 200
    assert first.headers["cache-control"] == "private, max-age=5"
    etag = first.headers["etag"]
    assert etag.startswith('"')
    again = client.get(path, headers={"If-None-Match": etag, "Accept-Encoding": "identity"})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    # compressed answers carry the weak form; sent back, it still matches
    br = client.get(path, headers={"Accept-Encoding": "br"})
    assert br.headers["etag"] == "W/" + etag
    weak = client.get(path, headers={"If-None-Match": br.headers["etag"], "Accept-Encoding": "br"})
    assert weak.status_code == 304


@pytest.mark.parametrize("coding", ["br", "gzip"])
def test_tiles_are_compressed_when_accepted(client: TestClient, coding: str) -> None:
    x, y = tile_of(36.82, -1.29, 3)
    path = f"/tiles/live/3/{x}/{y}.mvt"
    plain = client.get(path, headers={"Accept-Encoding": "identity"})
    with client.stream("GET", path, headers={"Accept-Encoding": coding}) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == coding
    assert "accept-encoding" in response.headers["vary"].lower()
    body = brotli.decompress(raw) if coding == "br" else gzip.decompress(raw)
    assert body == plain.content
    assert len(raw) < len(plain.content)
