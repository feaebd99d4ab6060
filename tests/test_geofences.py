"""Geofences: loading (CLI and POST), hostile bodies, enter/exit events with hysteresis, late
positions, out-of-region episodes, and the read-API as the read-only role."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from psycopg_pool import ConnectionPool
from pydantic import SecretStr

from dashboard import geofences as geofence_api
from geofences import __main__ as cli
from geofences.events import FenceParams, run_pass
from geofences.geojson import GeofenceError, parse_text
from tests.conftest import ROOT, router_client, test_settings
from tests.factories import add_device, add_track, db_now
from ts_shared import Settings

pytestmark = pytest.mark.both_engines

SAMPLE = ROOT / "geofences/samples/east_africa_zones.geojson"
ADMIN = "admin-key-1"
# A 0.01° square (~1.1 km) south-east of Nairobi's centre; fixes at lat -1.30 ± 0.0002 sit
# on its northern edge (lat -1.30).
SQUARE = [[36.80, -1.31], [36.81, -1.31], [36.81, -1.30], [36.80, -1.30], [36.80, -1.31]]
INSIDE = (-1.305, 36.805)
OUTSIDE = (-1.295, 36.805)
EDGE_IN = (-1.3002, 36.805)
EDGE_OUT = (-1.2998, 36.805)


def feature(name: str, kind: str = "depot", coords: Any = None, **props: Any) -> dict[str, Any]:
    geometry = {"type": "Polygon", "coordinates": [coords or SQUARE]}
    return {"type": "Feature", "properties": {"name": name, "kind": kind, **props},
            "geometry": geometry}  # fmt: skip


def load_square(conn: psycopg.Connection[Any], name: str = "Depot A") -> int:
    conn.execute(
        "INSERT INTO tracksolid.geofences (name, kind, geom) VALUES"
        " (%s, 'depot', ST_Multi(ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)))",
        (name, json.dumps({"type": "Polygon", "coordinates": [SQUARE]})),
    )
    row = conn.execute(
        "SELECT geofence_id FROM tracksolid.geofences WHERE name = %s", (name,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def events(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT imei, geofence_id, entered_at, exited_at, fixes FROM tracksolid.geofence_events"
        " ORDER BY imei, geofence_id, entered_at"
    ).fetchall()


def run(conn: psycopg.Connection[Any], **params: int) -> Any:
    return run_pass(conn, FenceParams(**params), db_now(conn))


def make_client(settings: Settings, ro_pool: ConnectionPool) -> TestClient:
    client: TestClient = router_client(geofence_api.router, settings, ro_pool)
    return client


@pytest.fixture
def client(db_url: str, ro_pool: ConnectionPool) -> TestClient:
    return make_client(test_settings(db_url, geofence_admin_keys=SecretStr(ADMIN)), ro_pool)


# ── loading ─────────────────────────────────────────────────────────────────────────────


def test_load_sample_via_cli(settings: Settings, pool: ConnectionPool) -> None:
    out = io.StringIO()
    assert cli.run(["load", str(SAMPLE)], settings, pool, out) == 0, out.getvalue()
    assert "6 geofences loaded" in out.getvalue()
    out = io.StringIO()
    assert cli.run(["list", "--json"], settings, pool, out) == 0
    listed = {f["name"]: f for f in json.loads(out.getvalue())}
    assert {f["kind"] for f in listed.values()} == {"city_zone", "region", "depot"}
    depot = listed["Nairobi Industrial Area depot"]
    assert depot["radius_m"] == 250 and depot["vertices"] == 33  # buffered circle
    with pool.connection() as conn:  # the circle's area is π r² within 2 %
        area = conn.execute(
            "SELECT ST_Area(geom::geography) FROM tracksolid.geofences WHERE radius_m = 250"
        ).fetchone()
    assert area is not None and abs(area[0] / (3.14159 * 250**2) - 1) < 0.02
    out = io.StringIO()  # the same names again: refused without --replace, all or nothing
    assert cli.run(["load", str(SAMPLE)], settings, pool, out) == 2
    assert "exists already" in out.getvalue()
    assert cli.run(["load", str(SAMPLE), "--replace"], settings, pool, io.StringIO()) == 0
    out = io.StringIO()
    assert cli.run(["run"], settings, pool, out) == 0 and '"fences_backfilled": 6' in out.getvalue()
    assert cli.run(["recompute"], settings, pool, io.StringIO()) == 0
    out = io.StringIO()
    assert cli.run(["delete", str(depot["id"])], settings, pool, out) == 0
    assert cli.run(["delete", str(depot["id"])], settings, pool, io.StringIO()) == 3


def test_post_list_delete_as_read_only_role(client: TestClient) -> None:
    body = SAMPLE.read_bytes()
    headers = {"X-API-Key": ADMIN, "Content-Type": "application/geo+json"}
    response = client.post("/geofences", content=body, headers=headers)
    assert response.status_code == 201, response.text
    assert [g["status"] for g in response.json()["geofences"]] == ["created"] * 6
    collection = client.get("/geofences").json()
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 6
    kampala = next(f for f in collection["features"] if f["properties"]["name"] == "Kampala metro")
    assert kampala["geometry"]["type"] == "MultiPolygon"
    assert kampala["properties"]["city"] == "Kampala" and "description" in kampala["properties"]
    regions = client.get("/geofences", params={"kind": "region"}).json()["features"]
    assert sorted(f["properties"]["name"] for f in regions) == ["Kenya", "Uganda"]
    assert client.get("/geofences", params={"kind": "moon"}).status_code == 422
    again = client.post("/geofences", content=body, headers=headers)
    assert again.status_code == 409 and "exists already" in again.json()["detail"]
    gid = kampala["id"]
    assert client.delete(f"/geofences/{gid}", headers=headers).status_code == 200
    missing = client.delete(f"/geofences/{gid}", headers=headers)
    assert missing.status_code == 404 and missing.json() == {
        "detail": f"there is no geofence with id {gid}"
    }


def test_writes_need_the_admin_key(db_url: str, ro_pool: ConnectionPool) -> None:
    body = json.dumps(feature("X"))
    closed = make_client(test_settings(db_url), ro_pool)  # no GEOFENCE_ADMIN_KEYS: refused
    response = closed.post("/geofences", content=body, headers={"X-API-Key": "anything"})
    assert response.status_code == 403 and "GEOFENCE_ADMIN_KEYS" in response.json()["detail"]
    assert closed.delete("/geofences/1").status_code == 403
    admin = make_client(test_settings(db_url, geofence_admin_keys=SecretStr(ADMIN)), ro_pool)
    assert admin.post("/geofences", content=body).status_code == 401
    wrong = admin.post("/geofences", content=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    in_url = admin.post("/geofences", params={"key": ADMIN}, content=body)
    assert in_url.status_code == 401
    ok = admin.post("/geofences", content=body, headers={"Authorization": f"Bearer {ADMIN}"})
    assert ok.status_code == 201, ok.text


BOW_TIE = [[36.80, -1.31], [36.81, -1.30], [36.81, -1.31], [36.80, -1.30], [36.80, -1.31]]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"not json", 422, "not valid JSON"),
        (b"\xff\xfe", 422, "not UTF-8"),
        (b"[]", 422, "Feature or FeatureCollection"),
        (json.dumps(feature("a", kind="moon")).encode(), 422, "kind must be one of"),
        (json.dumps(feature("a", coords=BOW_TIE)).encode(), 422, "Self-intersection"),
        (json.dumps(feature("a", coords=[[200, 1], [201, 1], [201, 2], [200, 1]])).encode(),
         422, "out of range"),
        (json.dumps(feature("a", coords=[[1, 1], [2, 1], [2, 2], [1, 2]])).encode(),
         422, "closed"),
        (json.dumps(feature("a", coords=[[1, 1], [2, 2], [1, 1]])).encode(), 422, "4 positions"),
        (b'{"type":"Feature","properties":{"name":"a","kind":"depot"},"geometry":'
         b'{"type":"Point","coordinates":[36.8,-1.3]}}', 422, "radius_m"),
        (b'{"type":"Feature","properties":{"name":"a","kind":"depot","radius_m":1e999},'
         b'"geometry":{"type":"Point","coordinates":[36.8,-1.3]}}', 422, "radius_m"),
        (b'{"type":"Feature","properties":{"name":"a","kind":"depot"},"geometry":'
         b'{"type":"Point","coordinates":[NaN,-1.3]}}', 422, "not a number"),
        (b"[" * 5000, 422, "nested too deeply"),
        (b" " * (4 * 1024 * 1024 + 1), 413, "larger than"),
        (json.dumps(feature("a" * 300)).encode(), 422, "longer than 200"),
        (json.dumps(feature("a\x00b")).encode(), 422, "control character"),
        (json.dumps({"type": "FeatureCollection", "features": [feature("a"), feature("A")]})
         .encode(), 422, "more than once"),
    ],
)  # fmt: skip
def test_hostile_bodies_get_a_4xx(
    client: TestClient, body: bytes, status: int, fragment: str
) -> None:
    response = client.post("/geofences", content=body, headers={"X-API-Key": ADMIN})
    assert response.status_code == status, response.text
    assert set(response.json()) == {"detail"} and fragment in response.json()["detail"]


def test_too_many_vertices_and_wrong_content_type(db_url: str, ro_pool: ConnectionPool) -> None:
    small = test_settings(db_url, geofence_admin_keys=SecretStr(ADMIN), geofence_max_vertices=4)
    c = make_client(small, ro_pool)
    body = json.dumps(feature("a"))  # 5 positions
    response = c.post("/geofences", content=body, headers={"X-API-Key": ADMIN})
    assert response.status_code == 422 and "vertices" in response.json()["detail"]
    response = c.post(
        "/geofences", content=body, headers={"X-API-Key": ADMIN, "Content-Type": "text/csv"}
    )
    assert response.status_code == 415


_json = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "features",
                    "geometry",
                    "properties",
                    "coordinates",
                    "name",
                    "kind",
                    "radius_m",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@given(doc=_json)
@hsettings(max_examples=300, deadline=None, database=None)
def test_parser_refuses_garbage_with_a_sentence(doc: Any) -> None:
    """Whatever the JSON, the pure parser answers rows or GeofenceError — nothing else."""
    try:
        parse_text(json.dumps(doc), max_vertices=100)
    except GeofenceError as exc:
        assert str(exc)


@given(
    coords=st.lists(
        st.tuples(st.floats(-200, 200), st.floats(-100, 100)), min_size=0, max_size=8
    ).map(lambda pts: [list(p) for p in pts] + ([list(pts[0])] if pts else []))
)
@hsettings(max_examples=25, deadline=None, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
def test_random_polygons_never_500(client: TestClient, coords: list[list[float]]) -> None:
    body = json.dumps(feature("random", coords=coords))
    response = client.post(
        "/geofences", params={"replace": "true"}, content=body, headers={"X-API-Key": ADMIN}
    )
    assert response.status_code in (201, 422), response.text


# ── events ──────────────────────────────────────────────────────────────────────────────


def test_jitter_at_the_boundary_makes_one_visit(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        fid = load_square(conn)
        add_device(conn, "861000000000001", "KDA 001A")
        start = db_now(conn) - timedelta(hours=3)
        jitter = [EDGE_IN, EDGE_OUT] * 5
        points = [OUTSIDE] * 5 + jitter + [INSIDE] * 10 + [EDGE_OUT, EDGE_IN] * 3 + [OUTSIDE] * 6
        times = add_track(conn, "861000000000001", start, points, flagged=(30,))
        result = run(conn)
        assert result.events == 1
        (ev,) = events(conn)
        assert ev[1] == fid
        assert ev[2] == times[15]  # the first of the 10 fixes inside
        # index 30 (inside) is quality-flagged: the outside run 29, 31-36 confirms the exit
        assert ev[3] == times[29]
        assert ev[4] == 10 + 2  # inside fixes during the visit (jitter fixes inside count)
        run(conn)  # a second pass with nothing new changes nothing
        assert events(conn) == [ev]
        # with no hysteresis, every jitter crossing is a visit
        conn.execute("DELETE FROM tracksolid.geofence_event_state")
        run(conn, min_fixes=1, min_seconds=0)
        assert len(events(conn)) == 5 + 1 + 2


def test_open_visit_then_late_positions_recompute(db_url: str) -> None:
    imei = "861000000000002"
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_square(conn)
        add_device(conn, imei, "KDA 002A")
        now = db_now(conn)
        t0 = now - timedelta(hours=10)
        add_track(conn, imei, t0, [OUTSIDE] * 3 + [INSIDE] * 5)
        run(conn)
        (ev,) = events(conn)
        assert ev[3] is None and ev[4] == 5  # still inside: open
        # newer fixes close it
        add_track(conn, imei, t0 + timedelta(minutes=8), [OUTSIDE] * 4)
        run(conn)
        (ev,) = events(conn)
        assert ev[3] == t0 + timedelta(minutes=8)
        # late fixes (received now, gps_time 2 h earlier) add an earlier visit
        late = t0 - timedelta(hours=2)
        add_track(conn, imei, late, [INSIDE] * 4 + [OUTSIDE] * 4)
        run(conn)
        got = events(conn)
        assert [(e[2], e[3]) for e in got] == [
            (late, late + timedelta(minutes=4)),
            (t0 + timedelta(minutes=3), t0 + timedelta(minutes=8)),
        ]
        # late fixes inside, every 10 s, after the first visit: its 4 outside fixes become
        # single-fix jitter, so the first visit now lasts until the 3 outside fixes at t0
        gap = late + timedelta(minutes=4, seconds=35)  # never on a whole minute
        add_track(conn, imei, gap, [INSIDE] * 600, step_s=10)  # 100 min inside
        run(conn)
        assert [(e[2], e[3]) for e in events(conn)] == [
            (late, t0),
            (t0 + timedelta(minutes=3), t0 + timedelta(minutes=8)),
        ]


def test_new_fence_is_computed_over_the_horizon(db_url: str) -> None:
    imei = "861000000000003"
    with psycopg.connect(db_url, autocommit=True) as conn:
        add_device(conn, imei, "KDA 003A")
        start = db_now(conn) - timedelta(days=2)
        add_track(conn, imei, start, [OUTSIDE] * 3 + [INSIDE] * 4 + [OUTSIDE] * 3)
        run(conn)
        assert events(conn) == []
        load_square(conn, "Late depot")  # loaded after the positions were processed
        result = run(conn)
        assert result.fences_backfilled == 1 and len(events(conn)) == 1


def seed_x3(conn: psycopg.Connection[Any], settings: Settings, pool: ConnectionPool) -> datetime:
    """The sample zones, X3-63282 (Nairobi) seen near Kampala, KDA 010A at home in Nairobi."""
    assert cli.run(["load", str(SAMPLE)], settings, pool, io.StringIO()) == 0
    add_device(conn, "862000000063282", "X3-63282", cost_centre="NBO-FIELD", city="Nairobi")
    add_device(conn, "862000000000010", "KDA 010A", cost_centre="NBO-FIELD", city="Nairobi")
    start = db_now(conn) - timedelta(hours=6)
    add_track(conn, "862000000063282", start, [(0.196 + i * 1e-4, 32.540) for i in range(8)])
    add_track(conn, "862000000000010", start, [(-1.29 + i * 1e-4, 36.82) for i in range(8)])
    return start


def test_out_of_region_vehicle_is_listed(
    settings: Settings, pool: ConnectionPool, ro_pool: ConnectionPool
) -> None:
    with pool.connection() as conn:
        conn.autocommit = True
        start = seed_x3(conn, settings, pool)
        run(conn)
    c = make_client(settings, ro_pool)
    body = c.get("/analytics/out-of-region").json()
    assert body["total"] == 1
    (ep,) = body["episodes"]
    assert ep["vehicle_number"] == "X3-63282" and ep["still_away"] is True
    assert ep["seen_in"] == ["Kampala metro", "Uganda"]
    assert datetime.fromisoformat(ep["first_seen_at"]) == start
    assert ep["fixes"] == 8
    assert ep["last_position"]["coordinates"] == [32.54, pytest.approx(0.1967)]
    assert c.get("/analytics/out-of-region", params={"vehicle": "x3 63282"}).json()["total"] == 1
    assert c.get("/analytics/out-of-region", params={"vehicle": "KDA010A"}).json()["total"] == 0
    # the Nairobi vehicle has visits of its own city and region; X3-63282 of Kampala/Uganda
    ev = c.get("/analytics/geofence-events", params={"vehicle": "X3-63282"}).json()
    assert sorted(e["geofence"] for e in ev["events"]) == ["Kampala metro", "Uganda"]
    home = c.get("/analytics/geofence-events", params={"kind": "city_zone"}).json()
    assert sorted(e["geofence"] for e in home["events"]) == ["Kampala metro", "Nairobi metro"]
    with pool.connection() as conn:  # back in Nairobi: the episode closes
        conn.autocommit = True
        back = start + timedelta(hours=3)
        add_track(conn, "862000000063282", back, [(-1.29, 36.82 + i * 1e-4) for i in range(4)])
        run(conn)
    (ep,) = c.get("/analytics/out-of-region").json()["episodes"]
    assert ep["still_away"] is False and datetime.fromisoformat(ep["returned_at"]) == back
    assert ep["seen_in"] == ["Kampala metro", "Uganda"] and ep["fixes"] == 8


def test_geofence_events_endpoint_filters_and_paging(
    settings: Settings, pool: ConnectionPool, ro_pool: ConnectionPool
) -> None:
    with pool.connection() as conn:
        conn.autocommit = True
        start = seed_x3(conn, settings, pool)
        run(conn)
    c = make_client(settings, ro_pool)
    first = c.get("/analytics/geofence-events", params={"limit": "3"}).json()
    assert first["total"] == 4 and len(first["events"]) == 3 and first["next_offset"] == 3
    rest = c.get("/analytics/geofence-events", params={"limit": "3", "offset": "3"}).json()
    assert len(rest["events"]) == 1 and rest["next_offset"] is None
    event = first["events"][0]
    assert set(event) >= {"imei", "geofence_id", "entered_at", "exited_at", "dwell_s", "fixes"}
    later = (start + timedelta(hours=1)).isoformat()
    assert (
        c.get("/analytics/geofence-events", params={"to": start.isoformat()}).json()["total"] == 0
    )
    assert c.get("/analytics/geofence-events", params={"from": later}).json()["total"] == 4
    by_cc = c.get("/analytics/geofence-events", params={"cost_centre": "nbo-field"}).json()
    assert by_cc["total"] == 4
    fid = event["geofence_id"]
    one = c.get("/analytics/geofence-events", params={"geofence_id": str(fid)}).json()
    assert {e["geofence_id"] for e in one["events"]} == {fid}


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"kind": "moon"}, "kind must be one of"),
        ({"limit": "0"}, "limit must be"),
        ({"limit": "99999999999999999999"}, "limit must be"),
        ({"offset": "-1"}, "offset must be"),
        ({"geofence_id": "abc"}, "geofence_id must be"),
        ({"geofence_id": "999999"}, "unknown geofence_id"),
        ({"vehicle": "NOPE 1"}, "unknown vehicle"),
        ({"cost_centre": "Atlantis"}, "unknown cost_centre"),
        ({"from": "yesterday"}, "not a date"),
        ({"from": "2026-01-02", "to": "2026-01-01"}, "to must be after from"),
        ({"vehicle": "a\x00"}, "control character"),
    ],
)
def test_analytics_parameters_are_validated(
    client: TestClient, params: dict[str, str], fragment: str
) -> None:
    response = client.get("/analytics/geofence-events", params=params)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]
    if "geofence_id" not in params and "kind" not in params:
        again = client.get("/analytics/out-of-region", params=params)
        assert again.status_code == 422 and fragment in again.json()["detail"]


def test_sample_file_is_valid_geojson() -> None:
    rows = parse_text(SAMPLE.read_text(), max_vertices=10_000)
    assert {r.name for r in rows} >= {"Nairobi metro", "Mombasa metro", "Kampala metro",
                                      "Kenya", "Uganda"}  # fmt: skip
    assert Path(SAMPLE).stat().st_size < 100_000


def test_mounted_in_the_read_api_with_both_key_lists(db_url: str) -> None:
    """dashboard_api mounts the router: reads need a read key, writes an admin key only."""
    from dashboard_api import create_app  # noqa: PLC0415 - the app module builds an app

    settings = test_settings(
        db_url, vtrips_refresh_interval_s=0, dashboard_api_keys="read-1",
        geofence_admin_keys=SecretStr(ADMIN),
    )  # fmt: skip
    with TestClient(create_app(settings)) as c:
        assert c.get("/geofences").status_code == 401
        listed = c.get("/geofences", headers={"X-API-Key": "read-1"})
        assert listed.status_code == 200 and listed.json()["features"] == []
        body = json.dumps(feature("Depot B"))
        assert (
            c.post("/geofences", content=body, headers={"X-API-Key": "read-1"}).status_code == 401
        )
        created = c.post("/geofences", content=body, headers={"X-API-Key": ADMIN})
        assert created.status_code == 201, created.text
        assert (
            c.get("/analytics/geofence-events", headers={"X-API-Key": "read-1"}).json()["total"]
            == 0
        )
        preflight = c.options(
            "/geofences/1",
            headers={"Origin": settings.cors_origins[0], "Access-Control-Request-Method": "DELETE"},
        )
        assert "DELETE" in preflight.headers.get("access-control-allow-methods", "")
