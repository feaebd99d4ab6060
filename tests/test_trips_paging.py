"""Cursor pages of the trips map (issue #19: no silent truncation), over real HTTP.

POST /webhook/fleet-dashboard with `limit` as the page size: `next_cursor` until null, every
trip of the window exactly once (also when page boundaries cut through trips that share a
start time, and when new trips arrive between pages), the summary of the whole window on
every page, the old answer unchanged for callers without a cursor, hostile cursors → 422.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from dashboard_api import create_app
from tests.conftest import test_settings
from tests.factories import Fleet, refresh_reporting, seed_fleet
from tests.pgcluster import free_port
from tests.servers import serve_in_thread
from tests.test_compression import add_bulk_trips

BULK_TRIPS = 600
# Per page: the page size, count and flag; per call: the clock.
PAGE_KEYS = {"returned", "capped", "cap", "generated_at"}


@pytest.fixture
def fleet(db_url: str) -> Fleet:
    with psycopg.connect(db_url, autocommit=True) as conn:
        fleet = seed_fleet(conn)
        add_bulk_trips(conn, BULK_TRIPS)
        return fleet


@pytest.fixture
def api(db_url: str, fleet: Fleet) -> Iterator[httpx.Client]:
    app = create_app(test_settings(db_url, vtrips_refresh_interval_s=0))
    server, thread = serve_in_thread(app, free_port())
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=30) as c:
            yield c
    finally:
        server.should_exit = True
        thread.join()


def window(fleet: Fleet) -> dict[str, str]:
    return {
        "start": (fleet.now - timedelta(days=4)).isoformat(),
        "end": (fleet.now + timedelta(minutes=1)).isoformat(),
    }


def trips_in(db_url: str, fields: dict[str, str], cost_centre: str | None = None) -> set[int]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT trip_id FROM reporting.v_trips WHERE start_time >= %s AND start_time < %s"
            " AND (%s::text IS NULL OR cost_centre = %s)",
            (fields["start"], fields["end"], cost_centre, cost_centre),
        ).fetchall()
    return {int(r[0]) for r in rows}


def newest_in(db_url: str, fields: dict[str, str], count: int) -> set[int]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT trip_id FROM reporting.v_trips WHERE start_time >= %s AND start_time < %s"
            " ORDER BY start_time DESC, trip_id DESC LIMIT %s",
            (fields["start"], fields["end"], count),
        ).fetchall()
    return {int(r[0]) for r in rows}


def post(api: httpx.Client, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    response = api.post("/webhook/fleet-dashboard", data=body, **kw)
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def key(feature: dict[str, Any]) -> tuple[datetime, int]:
    return datetime.fromisoformat(feature["properties"]["start_time"]), int(feature["id"])


def all_pages(
    api: httpx.Client, body: dict[str, str], *, in_query: bool = False
) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        if in_query:
            doc = post(api, body, params={"cursor": cursor} if cursor else None)
        else:
            doc = post(api, {**body, **({"cursor": cursor} if cursor else {})})
        pages.append(doc)
        cursor = doc["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 1000, "paging does not end"


def whole_window(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in PAGE_KEYS}


@pytest.mark.parametrize("limit", [7, 250])
def test_pages_return_every_trip_exactly_once(
    api: httpx.Client, db_url: str, fleet: Fleet, limit: int
) -> None:
    fields = window(fleet)
    expected = trips_in(db_url, fields)
    assert len(expected) > BULK_TRIPS
    uncapped = post(api, fields)
    assert uncapped["next_cursor"] is None and uncapped["summary"]["capped"] is False
    assert {f["id"] for f in uncapped["features"]} == expected

    pages = all_pages(api, {**fields, "limit": str(limit)})
    seen = [f["id"] for page in pages for f in page["features"]]
    assert len(seen) == len(set(seen)) == len(expected)  # exactly once
    assert set(seen) == expected
    assert len(pages) == -(-len(expected) // limit)
    previous_oldest: tuple[datetime, int] | None = None
    for n, page in enumerate(pages):
        features = page["features"]
        last = n == len(pages) - 1
        assert len(features) == (len(expected) - limit * n if last else limit)
        keys = [key(f) for f in features]
        assert keys == sorted(keys)  # ascending within a page, like the first answer
        if previous_oldest is not None:
            assert keys[-1] < previous_oldest  # pages go back in time
        previous_oldest = keys[0]
        summary = page["summary"]
        assert whole_window(summary) == whole_window(uncapped["summary"])  # exact, every page
        assert summary["returned"] == len(features)
        assert summary["capped"] is (not last) and (page["next_cursor"] is None) is last
        assert summary["trips"] == len(expected) and summary["cap"] == limit
        assert set(page["filters"]) >= {"vehicles", "cost_centres"}


def test_old_callers_see_the_old_answer_and_can_continue(
    api: httpx.Client, db_url: str, fleet: Fleet
) -> None:
    fields = window(fleet)
    expected = trips_in(db_url, fields)
    capped = post(api, {**fields, "limit": "100"})
    assert set(capped) == {"type", "features", "summary", "next_cursor", "filters"}
    summary = capped["summary"]
    assert summary["capped"] is True and summary["returned"] == 100 == len(capped["features"])
    assert {f["id"] for f in capped["features"]} == newest_in(db_url, fields, 100)
    assert isinstance(capped["next_cursor"], str)
    rest = all_pages(api, {**fields, "limit": "50000", "cursor": capped["next_cursor"]})
    assert len(rest) == 1
    ids = [f["id"] for f in capped["features"]] + [f["id"] for f in rest[0]["features"]]
    assert sorted(ids) == sorted(expected)


def test_pages_with_filters_and_the_cursor_in_the_query_string(
    api: httpx.Client, db_url: str, fleet: Fleet
) -> None:
    fields = {**window(fleet), "cost_centre": "Nairobi-North", "limit": "33"}
    expected = trips_in(db_url, fields, "Nairobi-North")
    assert 100 < len(expected) < BULK_TRIPS
    pages = all_pages(api, fields, in_query=True)
    seen = [f["id"] for page in pages for f in page["features"]]
    assert sorted(seen) == sorted(expected)
    assert {p["summary"]["trips"] for p in pages} == {len(expected)}
    # a JSON body with the cursor works the same way
    as_json = api.post(
        "/webhook/fleet-dashboard", json={**fields, "cursor": pages[0]["next_cursor"]}
    ).json()
    assert [f["id"] for f in as_json["features"]] == [f["id"] for f in pages[1]["features"]]


def test_trips_arriving_between_pages_do_not_shift_the_pages(
    api: httpx.Client, db_url: str, fleet: Fleet
) -> None:
    fields = window(fleet)
    expected = trips_in(db_url, fields)
    first = post(api, {**fields, "limit": "200"})
    with psycopg.connect(db_url, autocommit=True) as conn:  # a newer trip, refreshed in
        conn.execute(
            "INSERT INTO tracksolid.trips (imei, start_time, source) VALUES (%s, %s, 'push')",
            (fleet.imeis["KCA 542Q"], fleet.now - timedelta(seconds=5)),
        )
        refresh_reporting(conn)
    rest = all_pages(api, {**fields, "limit": "200", "cursor": first["next_cursor"]})
    seen = [f["id"] for f in first["features"]] + [f["id"] for p in rest for f in p["features"]]
    assert sorted(seen) == sorted(expected)
    assert rest[0]["summary"]["trips"] == len(expected) + 1  # the summary is of now


def test_limit_zero_is_a_summary(api: httpx.Client, db_url: str, fleet: Fleet) -> None:
    fields = window(fleet)
    doc = post(api, {**fields, "limit": "0"})
    assert doc["features"] == [] and doc["next_cursor"] is None
    assert doc["summary"]["trips"] == len(trips_in(db_url, fields))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor(*items: Any) -> str:
    return _b64(json.dumps(list(items)).encode())


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        "%%%",
        _b64(b"\xff\xfe"),
        _b64(b"[1, 2"),
        _cursor("m", "2026-12-01T10:00:00+00:00"),
        _cursor("t", "2026-12-01T10:00:00+00:00", 5),  # a cursor of GET /analytics/trips
        _cursor("m", "2026-12-01T10:00:00", 5),  # no time zone
        _cursor("m", "9999-12-01T10:00:00+00:00", 5),
        _cursor("m", "yesterday", 5),
        _cursor("m", "2026-12-01T10:00:00+00:00", 2**70),
        _cursor("m", "2026-12-01T10:00:00+00:00", 5.5),
        _cursor("m", "2026-12-01T10:00:00+00:00", True),
        _cursor("m", "2026-12-01T10:00:00+00:00", None),
        _b64(b"[" * 100),  # nested too deeply
        "A" * 600,
        "abc\x00def",
    ],
)
def test_hostile_cursors_are_refused(api: httpx.Client, fleet: Fleet, cursor: str) -> None:
    for response in (
        api.post("/webhook/fleet-dashboard", data={**window(fleet), "cursor": cursor}),
        api.post("/webhook/fleet-dashboard", json={"cursor": cursor}),
    ):
        assert response.status_code == 422, response.text
        body = response.json()
        assert set(body) == {"detail"} and "cursor" in body["detail"]


def test_a_real_list_cursor_is_not_a_map_cursor(api: httpx.Client, fleet: Fleet) -> None:
    page = api.get("/analytics/trips", params={**window(fleet), "limit": "1"}).json()
    assert page["next_cursor"]
    response = api.post("/webhook/fleet-dashboard", data={"cursor": page["next_cursor"]})
    assert response.status_code == 422
    assert "next_cursor of the previous page" in response.json()["detail"]


def test_a_cursor_outside_the_window_gives_an_empty_last_page(
    api: httpx.Client, fleet: Fleet
) -> None:
    old = _cursor("m", "2001-01-01T00:00:00+00:00", 1)
    doc = post(api, {**window(fleet), "cursor": old})
    assert doc["features"] == [] and doc["next_cursor"] is None
    assert doc["summary"]["returned"] == 0 and doc["summary"]["trips"] > BULK_TRIPS
