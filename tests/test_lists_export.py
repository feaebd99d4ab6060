"""Read-API lists and CSV exports (issue #18): GET /analytics/trips, /analytics/stops,
/analytics/alarms with keyset paging, the range track, and CSV (format=csv or
Accept: text/csv) of the lists, fuel fills, utilisation and driver behaviour.

Everything goes through the routers on a dashboard_ro connection, like production. The
fixture fleet has rows that share a start time (across vehicles, and a parked and an idling
stop of one vehicle), so paging must break ties to return every row exactly once.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import ConnectionPool

from dashboard import export, fuel, lists
from dashboard.params import parse_format
from dashboard.routes import data_router
from tests.conftest import router_client, test_settings
from tests.factories import add_alarm, add_device, add_parking, add_track, add_trip, db_now
from tests.test_dashboard_hostile import hostile_text, query_string
from ts_shared import Settings

pytestmark = pytest.mark.both_engines

V1, V2 = "860000000018001", "860000000018002"
T0 = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)  # 09:00 EAT
DAY = {"start": "2026-11-20", "end": "2026-11-20"}  # the EAT day of T0
HOSTILE_DRIVER = '=HYPERLINK("http://evil","x")'

TRIP_KEYS = {
    "trip_id", "imei", "vehicle_number", "driver", "start_time", "end_time", "duration_s",
    "distance_km", "avg_speed_kmh", "max_speed_kmh", "source", "start_lat", "start_lng",
    "end_lat", "end_lng",
}  # fmt: skip
STOP_KEYS = {
    "stop_id", "imei", "vehicle_number", "start_time", "end_time", "duration_s", "lat", "lng",
    "address",
}  # fmt: skip
ALARM_KEYS = {
    "alarm_id", "imei", "vehicle_number", "driver", "alarm_type", "alarm_name", "severity",
    "alarm_time", "lat", "lng", "address",
}  # fmt: skip


@pytest.fixture
def fleet(pool: ConnectionPool) -> dict[str, Any]:
    """Two vehicles on 2026-11-20 (EAT): trips, stops and a track; alarms of the last 24 h."""
    with pool.connection() as conn:
        add_device(conn, V1, "KCA 542Q", driver_name=HOSTILE_DRIVER, cost_centre="CC-NBO")
        add_device(conn, V2, "KDB 100B", driver_name="Amina Otieno", cost_centre="CC-MSA")
        for i in range(23):  # every 30 min from 09:00 EAT
            add_trip(conn, V1, T0 + timedelta(minutes=30 * i), duration_s=1200, distance_km=9)
        for i in range(0, 23, 4):  # same start times as V1's: ties on start_time
            add_trip(conn, V2, T0 + timedelta(minutes=30 * i), duration_s=600, distance_km=4)
        add_trip(conn, V1, T0 - timedelta(days=2), duration_s=600, distance_km=3)  # outside
        for i in range(9):
            start = T0 + timedelta(minutes=45 * i)
            add_parking(conn, V1, start, duration_s=900, acc_on=False, lat=-1.29, lng=36.82)
            add_parking(conn, V1, start, duration_s=300, acc_on=True)  # same start: a tie
        add_parking(conn, V2, T0 + timedelta(hours=1), duration_s=None, acc_on=False)
        fixes = add_track(
            conn, V1, T0 - timedelta(hours=2), [(-1.29 + 0.001 * i, 36.82) for i in range(60)],
            step_s=600,
        )  # fmt: skip
        now = db_now(conn)
        kinds = ["6", "1", "ACC_ON", "ACC_OFF", "overSpeed", "197"]
        for i in range(30):
            add_alarm(conn, V1 if i % 3 else V2, now - timedelta(minutes=20 * i + 1),
                      kinds[i % len(kinds)])  # fmt: skip
        add_alarm(conn, V1, now - timedelta(hours=30), "6")  # older than the default 24 h
    return {"fixes": fixes, "now": now}


@pytest.fixture
def clients(settings: Settings, ro_pool: ConnectionPool) -> Iterator[dict[str, TestClient]]:
    """One client per router: the lists, the maps/analytics routes and fuel."""
    with (
        router_client(lists.router, settings, ro_pool) as lc,
        router_client(data_router, settings, ro_pool) as dc,
        router_client(fuel.router, settings, ro_pool) as fc,
    ):
        yield {"lists": lc, "data": dc, "fuel": fc}


def all_pages(client: TestClient, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Follow next_cursor to the end; every page's count is its number of items."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        answer = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["count"] == len(body["items"]) <= int(params.get("limit", 200))
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("paging did not end")


def b64url(text: str) -> str:
    """A cursor-shaped string (base64url, no padding) of `text`."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def csv_rows(answer: Any) -> list[dict[str, str]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(answer.text)))


@pytest.mark.parametrize(
    ("path", "key", "time_key", "keys", "expected"),
    [
        ("/analytics/trips", "trip_id", "start_time", TRIP_KEYS, 23 + 6),
        ("/analytics/stops", "stop_id", "start_time", STOP_KEYS, 18 + 1),
    ],
)
def test_paging_returns_every_row_exactly_once(
    clients: dict[str, TestClient],
    fleet: dict[str, Any],
    path: str,
    key: str,
    time_key: str,
    keys: set[str],
    expected: int,
) -> None:
    whole = clients["lists"].get(path, params={**DAY, "limit": 5000}).json()
    assert whole["next_cursor"] is None and whole["count"] == expected
    for limit in (1, 4, 7):
        items = all_pages(clients["lists"], path, {**DAY, "limit": limit})
        ids = [item[key] for item in items]
        assert len(ids) == len(set(ids)) == expected
        assert items == whole["items"]  # same rows, same order, whatever the page size
    assert keys <= set(whole["items"][0])
    times = [datetime.fromisoformat(i[time_key]) for i in whole["items"]]
    assert times == sorted(times, reverse=True)


def test_trip_and_stop_filters(clients: dict[str, TestClient], fleet: dict[str, Any]) -> None:
    lc = clients["lists"]
    v2 = lc.get("/analytics/trips", params={**DAY, "vehicle_number": "kdb-100b"}).json()
    assert v2["count"] == 6 and {i["imei"] for i in v2["items"]} == {V2}
    assert v2["items"][0]["driver"] == "Amina Otieno"
    cc = lc.get("/analytics/trips", params={**DAY, "cost_centre": "cc-nbo"}).json()
    assert cc["count"] == 23 and {i["vehicle_number"] for i in cc["items"]} == {"KCA 542Q"}
    by_imei = lc.get("/analytics/stops", params={**DAY, "vehicle_number": V2}).json()
    assert [(i["kind"], i["end_time"], i["duration_s"]) for i in by_imei["items"]] == [
        ("parked", None, None)
    ]
    week = lc.get("/analytics/trips", params={"end": "2026-11-20"}).json()  # 7 days up to end
    assert week["count"] == 23 + 6 + 1


def test_alarms_exclude_ignition_by_default(
    clients: dict[str, TestClient], fleet: dict[str, Any]
) -> None:
    lc = clients["lists"]
    items = all_pages(lc, "/analytics/alarms", {"limit": 4})  # default window: last 24 h
    types = [i["alarm_type"] for i in items]
    assert len(types) == 15 and not {"ACC_ON", "ACC_OFF", "197"} & set(types)
    assert set(items[0]) >= ALARM_KEYS
    sos = next(i for i in items if i["alarm_type"] == "1")
    assert (sos["severity"], sos["alarm_name"]) == ("critical", "SOS")
    with_ignition = lc.get("/analytics/alarms", params={"include_ignition": "true"}).json()
    assert with_ignition["count"] == 30  # the 30-hour-old alarm is outside the default window
    week = lc.get(
        "/analytics/alarms", params={"start": (fleet["now"] - timedelta(days=2)).isoformat()}
    ).json()
    assert week["count"] == 16
    high = lc.get("/analytics/alarms", params={"severity": "high,critical"}).json()
    assert {i["alarm_type"] for i in high["items"]} == {"6", "1", "overSpeed"}
    typed = lc.get(
        "/analytics/alarms", params={"alarm_type": "overSpeed", "vehicle_number": "KCA542Q"}
    ).json()
    assert typed["count"] > 0 and {(i["alarm_type"], i["imei"]) for i in typed["items"]} == {
        ("overSpeed", V1)
    }


@pytest.mark.parametrize(
    ("path", "params", "key"),
    [
        ("/analytics/trips", DAY, "trip_id"),
        ("/analytics/stops", DAY, "stop_id"),
        ("/analytics/alarms", {"include_ignition": "true"}, "alarm_id"),
    ],
)
def test_csv_has_every_row_of_the_json_pages(
    clients: dict[str, TestClient],
    fleet: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    params: dict[str, str],
    key: str,
) -> None:
    monkeypatch.setattr(export, "CSV_BATCH_ROWS", 4)  # several FETCHes from the cursor
    items = all_pages(clients["lists"], path, {**params, "limit": 3})
    answer = clients["lists"].get(path, params={**params, "format": "csv", "limit": 2})
    rows = csv_rows(answer)
    assert len(rows) == len(items)  # limit / cursor do not apply to a CSV
    assert [r[key] for r in rows] == [str(i[key]) for i in items]
    assert list(rows[0]) == list(items[0])  # the JSON items' columns, in order
    kind = path.rsplit("/", 1)[1]
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith(f'attachment; filename="{kind}-') and disposition.endswith(
        '.csv"'
    )
    by_accept = clients["lists"].get(path, params=params, headers={"Accept": "text/csv"})
    assert csv_rows(by_accept) == rows


def test_csv_escapes_formulas_and_names_the_days(
    clients: dict[str, TestClient], fleet: dict[str, Any]
) -> None:
    answer = clients["lists"].get("/analytics/trips", params={**DAY, "format": "csv"})
    assert answer.headers["content-disposition"] == (
        'attachment; filename="trips-2026-11-20_2026-11-20.csv"'
    )
    rows = csv_rows(answer)
    v1 = next(r for r in rows if r["imei"] == V1)
    assert v1["driver"] == "'" + HOSTILE_DRIVER  # shown as text, never run as a formula
    assert v1["start_lat"] == "-1.2921"  # numbers are not prefixed
    assert v1["start_time"].endswith("+03:00")  # East Africa Time
    assert not any(cell.startswith(("=", "+", "@")) for r in rows for cell in r.values())


def test_range_track_returns_only_the_window(
    clients: dict[str, TestClient], fleet: dict[str, Any]
) -> None:
    fixes: list[datetime] = fleet["fixes"]
    start, end = T0 + timedelta(minutes=5), T0 + timedelta(hours=2, minutes=30)
    answer = clients["data"].get(
        "/webhook/live-positions/track",
        params={"vehicle_number": "kca 542q", "start": start.isoformat(), "end": end.isoformat()},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    track = next(f for f in body["features"] if f["id"] == "track")
    times = [datetime.fromisoformat(t) for t in track["properties"]["times"]]
    assert times == [t for t in fixes if start <= t < end] and len(times) == 14
    assert len(track["geometry"]["coordinates"]) == len(track["properties"]["speeds_kmh"]) == 14
    summary = body["summary"]
    assert summary["points_total"] == 14 and summary["hours"] == 2.42
    assert datetime.fromisoformat(summary["start"]) == start
    # a date-only end includes that EAT day; naive times are EAT
    day = (
        clients["data"]
        .get(
            "/webhook/live-positions/track",
            params={"vehicle_number": V1, "start": "2026-11-20T08:00", "end": "2026-11-20"},
        )
        .json()
    )
    assert day["summary"]["points_total"] == sum(
        1 for t in fixes if T0 - timedelta(hours=1) <= t < T0 + timedelta(hours=15)
    )
    old = clients["data"].get(
        "/webhook/live-positions/track", params={"vehicle_number": V1, "hours": "3"}
    )
    assert old.status_code == 200 and old.json()["summary"]["hours"] == 3


def test_summary_csv_exports(clients: dict[str, TestClient], fleet: dict[str, Any]) -> None:
    util = csv_rows(clients["data"].get("/analytics/utilisation", params={**DAY, "format": "csv"}))
    assert {(r["day"], r["imei"]) for r in util} == {("2026-11-20", V1), ("2026-11-20", V2)}
    assert {"driving_s", "idle_s", "parked_s", "utilisation_pct"} <= set(util[0])
    behaviour = clients["data"].get(
        "/analytics/driver-behaviour", params=DAY, headers={"Accept": "text/csv"}
    )
    assert behaviour.headers["content-disposition"] == (
        'attachment; filename="driver-behaviour-2026-11-20_2026-11-20.csv"'
    )
    rows = csv_rows(behaviour)
    by_imei = {r["imei"]: r for r in rows}
    assert by_imei[V1]["trips"] == "23" and by_imei[V2]["trips"] == "6"
    assert by_imei[V1]["driver_name"] == "'" + HOSTILE_DRIVER
    json_answer = clients["data"].get("/analytics/utilisation", params=DAY)
    assert json_answer.headers["content-type"] == "application/json"


def test_fuel_fills_csv(clients: dict[str, TestClient], pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        add_device(conn, V1, "KCA 542Q", cost_centre="CC-NBO")
        for n in range(7):
            raw = {
                "id": f"F{n}", "car": "KCA 542Q", "litres": "40.00", "amount": "7200",
                "odometer": str(10_000 + 300 * n), "fuel_type": "Diesel",
                "driver": "@1+1" if n == 3 else "Jane", "department": "Field Ops",
                "fill_time": f"2026-06-0{n + 1} 10:00:00",
                "updated_at": f"2026-06-0{n + 1} 10:00:00",
            }  # fmt: skip
            conn.execute(
                "INSERT INTO fuel.records (id, raw) VALUES (%s, %s)", (raw["id"], json.dumps(raw))
            )
    june = {"from": "2026-06-01", "to": "2026-06-30"}
    body = clients["fuel"].get("/analytics/fuel-fills", params={**june, "limit": 2}).json()
    answer = clients["fuel"].get(
        "/analytics/fuel-fills", params={**june, "format": "CSV", "limit": 2}
    )
    rows = csv_rows(answer)
    assert len(rows) == body["count"] == 7  # every fill, not the JSON page's 2
    assert [r["id"] for r in rows[:2]] == [f["id"] for f in body["fills"]]
    assert next(r for r in rows if r["id"] == "F3")["driver"] == "'@1+1"
    assert answer.headers["content-disposition"] == (
        'attachment; filename="fuel-fills-2026-06-01_2026-06-30.csv"'
    )
    unknown = clients["fuel"].get(
        "/analytics/fuel-fills", params={"vehicle_number": "ZZZ 999Z", "format": "csv"}
    )
    assert unknown.status_code == 422 and "unknown vehicle_number" in unknown.json()["detail"]


@pytest.mark.parametrize(
    ("fmt", "accept", "expected"),
    [
        (None, None, "json"),
        (None, "text/csv", "csv"),
        (None, "application/json, text/csv;q=0.5", "csv"),
        (None, "text/csv;q=0", "json"),
        (None, "*/*", "json"),
        ("json", "text/csv", "json"),
        ("CSV", None, "csv"),
    ],
)
def test_format_from_parameter_or_accept(
    fmt: str | None, accept: str | None, expected: str
) -> None:
    assert parse_format(fmt, accept) == expected


def _other_cursor(client: TestClient) -> str:
    page = client.get("/analytics/trips", params={**DAY, "limit": 1}).json()
    cursor: str = page["next_cursor"]
    return cursor


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/analytics/trips", {"cursor": "not a cursor!"}, "cursor is not a cursor of this list"),
        ("/analytics/trips", {"cursor": "WyJ0IiwgMV0"}, "cursor is not a cursor of this list"),
        ("/analytics/stops", {"cursor": "<trips>"}, "cursor is not a cursor of this list"),
        (  # an id beyond bigint
            "/analytics/trips",
            {"cursor": b64url('["t", "2026-11-20T16:00:00+00:00", 99999999999999999999]')},
            "cursor is not a cursor of this list",
        ),
        (  # a time without offset
            "/analytics/trips",
            {"cursor": b64url('["t", "2026-11-20T16:00:00", 5]')},
            "cursor is not a cursor of this list",
        ),
        ("/analytics/alarms", {"cursor": "x" * 600}, "cursor is too long"),
        ("/analytics/trips", {"limit": "5001"}, "limit must be between 1 and 5000 (got 5001)"),
        ("/analytics/trips", {"limit": "9" * 40}, "limit must be between 1 and 5000"),
        ("/analytics/stops", {"limit": "0"}, "limit must be between 1 and 5000 (got 0)"),
        ("/analytics/stops", {"limit": "ten"}, "limit must be a whole number"),
        ("/analytics/trips", {"start": "2026-13-01"}, "start: '2026-13-01' is not a valid date"),
        ("/analytics/alarms", {"end": "yesterday"}, "end: 'yesterday' is not a date or time"),
        ("/analytics/trips", {"start": "2026-11-21", "end": "2026-11-20"}, "must be after start"),
        ("/analytics/stops", {"start": "2024-01-01", "end": "2026-01-01"}, "limited to 366 days"),
        ("/analytics/trips", {"format": "xml"}, "format must be json or csv (got 'xml')"),
        ("/analytics/alarms", {"severity": "urgent"}, "severity must be one of critical"),
        ("/analytics/alarms", {"include_ignition": "maybe"}, "include_ignition must be true"),
        ("/analytics/trips", {"vehicle_number": "ZZZ 999Z"}, 'unknown vehicle_number "ZZZ 999Z"'),
        ("/analytics/alarms", {"cost_centre": "CC-XXX", "format": "csv"}, "unknown cost_centre"),
        ("/analytics/stops", {"vehicle_number": "KCA\x00542Q"}, "control character"),
    ],
)
def test_hostile_list_parameters_are_422(
    clients: dict[str, TestClient],
    fleet: dict[str, Any],
    path: str,
    params: dict[str, str],
    message: str,
) -> None:
    if params.get("cursor") == "<trips>":
        params = {"cursor": _other_cursor(clients["lists"])}
    answer = clients["lists"].get(path, params=params)
    assert answer.status_code == 422, answer.text
    assert message in answer.json()["detail"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "2026-11-01", "end": "2026-11-20"}, "limited to 168 hours"),
        ({"start": "2026-11-20T10:00", "end": "2026-11-20T09:00"}, "must be after start"),
        ({"start": "2026-02-30"}, "not a valid date"),
        ({"end": "2026-11-20T25:00"}, "is not a date or time"),
        ({"start": "2026-11-20", "hours": "500"}, "hours must be between 1 and 168"),
    ],
)
def test_hostile_track_window_is_422(
    clients: dict[str, TestClient], fleet: dict[str, Any], params: dict[str, str], message: str
) -> None:
    answer = clients["data"].get(
        "/webhook/live-positions/track", params={"vehicle_number": V1, **params}
    )
    assert answer.status_code == 422, answer.text
    assert message in answer.json()["detail"]


def test_summary_csv_hostile_format_is_422(clients: dict[str, TestClient]) -> None:
    for path in ("/analytics/utilisation", "/analytics/driver-behaviour"):
        answer = clients["data"].get(path, params={"format": "pdf"})
        assert answer.status_code == 422 and "format must be json or csv" in answer.text


def test_read_api_serves_the_lists_behind_the_api_key(db_url: str, fleet: dict[str, Any]) -> None:
    from dashboard_api import create_app  # noqa: PLC0415

    settings = test_settings(db_url, vtrips_refresh_interval_s=0, dashboard_api_keys="k1")
    with TestClient(create_app(settings)) as client:
        assert client.get("/analytics/trips", params=DAY).status_code == 401
        answer = client.get("/analytics/trips", params=DAY, headers={"X-API-Key": "k1"})
        assert answer.status_code == 200 and answer.json()["count"] == 29
        export_answer = client.get(
            "/analytics/stops", params={**DAY, "format": "csv"}, headers={"X-API-Key": "k1"}
        )
        assert len(csv_rows(export_answer)) == 19


# ── Property-based: hostile values never give a 5xx (tests/test_dashboard_hostile.py) ───────

LIST_ENDPOINTS: dict[str, list[str]] = {
    "/analytics/trips": ["vehicle_number", "cost_centre", "start", "end", "limit", "cursor",
                         "format"],
    "/analytics/stops": ["vehicle_number", "cost_centre", "start", "end", "limit", "cursor",
                         "format"],
    "/analytics/alarms": ["vehicle_number", "cost_centre", "alarm_type", "severity",
                          "include_ignition", "start", "end", "limit", "cursor", "format"],
    "/webhook/live-positions/track": ["vehicle_number", "hours", "start", "end"],
    "/analytics/utilisation": ["start", "end", "cost_centre", "vehicle_number", "format"],
    "/analytics/driver-behaviour": ["start", "end", "cost_centre", "format"],
    "/analytics/fuel-fills": ["from", "to", "vehicle_number", "limit", "format"],
}  # fmt: skip
LIST_VALUES = [
    "csv", "json", "CSV", "true", "false", "critical,high", "1,overSpeed", "ACC_ON", "5000",
    "5001", "KCA 542Q", V1, "CC-NBO", "2026-11-20", "2026-11-21T08:00", b64url('["t"]'),
    b64url('["s", "2026-11-20T12:00:00+00:00", "x"]'),
    b64url('["a", "9999-12-31T23:59:59+00:00", 1]'),
]  # fmt: skip


@st.composite
def list_requests(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    path = draw(st.sampled_from(sorted(LIST_ENDPOINTS)))
    values = st.one_of(hostile_text, st.sampled_from(LIST_VALUES))
    params = draw(st.dictionaries(st.sampled_from(LIST_ENDPOINTS[path]), values))
    return path, params


@settings(
    deadline=None,
    database=None,  # no .hypothesis/ folder in the working tree
    max_examples=120,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=list_requests())
def test_list_endpoints_survive_hostile_parameters(
    clients: dict[str, TestClient], fleet: dict[str, Any], request: tuple[str, dict[str, str]]
) -> None:
    path, params = request
    if path in ("/analytics/trips", "/analytics/stops", "/analytics/alarms"):
        client = clients["lists"]
    else:
        client = clients["fuel" if "fuel" in path else "data"]
    answer = client.get(f"{path}?{query_string(params)}" if params else path)
    assert answer.status_code < 500, (answer.status_code, answer.text[:300])
    if answer.status_code >= 400:
        body = answer.json()
        assert set(body) == {"detail"} and body["detail"].strip(), body
        assert body["detail"] != "a parameter is out of range or malformed for the database"
    elif answer.headers["content-type"].startswith("text/csv"):
        assert answer.text.count("\n") >= 1  # at least the header row
    else:
        json.loads(answer.content)
