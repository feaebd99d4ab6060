"""Compressed answers and ETags of the read-API (issue #19, dashboard/compression.py).

Over real HTTP (uvicorn on loopback, httpx reading the raw bytes off the wire): br / gzip /
identity by Accept-Encoding with q-values, decoded bodies equal to the identity body, the
size threshold, `Vary`, streamed CSV, static files, never an event stream or an already
encoded answer, ETag → 304 on the live map and on other GET JSON answers.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import brotli
import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from dashboard.compression import CompressionMiddleware, negotiate
from dashboard_api import create_app
from tests.conftest import test_settings
from tests.factories import Fleet, refresh_reporting, seed_fleet
from tests.pgcluster import free_port
from tests.servers import serve_in_thread

BULK_TRIPS = 1500
_CLOCK = re.compile(rb'"generated_at"\s*:\s*"[^"]*"')


def add_bulk_trips(conn: psycopg.Connection[Any], count: int) -> None:
    """`count` trips of the seeded vehicles over the last ~3 days (5 share each start)."""
    conn.execute(
        """
        INSERT INTO tracksolid.trips (imei, start_time, end_time, start_lat, start_lng,
            end_lat, end_lng, distance_km, driving_time_s, avg_speed_kmh, max_speed_kmh, source)
        SELECT d.imei, x.s, x.s + interval '25 minutes', -1.29 + g * 1e-4, 36.82 + g * 1e-4,
               -1.30 + g * 1e-4, 36.84 + g * 1e-4, round((3 + g %% 40 * 0.7)::numeric, 3),
               1500, 30, 60 + g %% 50, 'mileage'
        FROM generate_series(0, %(n)s - 1) g
        CROSS JOIN LATERAL (SELECT date_trunc('minute', now()) - interval '3 days'
                                   + make_interval(mins => (g / 5) * 14) AS s) x
        JOIN (SELECT imei, row_number() OVER (ORDER BY imei) - 1 AS k
              FROM tracksolid.devices) d ON d.k = g %% 5
        ON CONFLICT (imei, start_time) DO NOTHING
        """,
        {"n": count},
    )
    refresh_reporting(conn)


@pytest.fixture
def fleet(db_url: str) -> Fleet:
    with psycopg.connect(db_url, autocommit=True) as conn:
        fleet = seed_fleet(conn)
        add_bulk_trips(conn, BULK_TRIPS)
        return fleet


@pytest.fixture
def api(db_url: str, fleet: Fleet) -> Iterator[httpx.Client]:
    """The read-API on a real port; the client sends no Accept-Encoding of its own."""
    app = create_app(test_settings(db_url, vtrips_refresh_interval_s=0))
    server, thread = serve_in_thread(app, free_port())
    port = server.config.port
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            client.headers.pop("accept-encoding", None)
            yield client
    finally:
        server.should_exit = True
        thread.join()


def wire(
    client: httpx.Client, method: str, path: str, encoding: str | None, **kw: Any
) -> tuple[httpx.Response, bytes]:
    """The response and its body exactly as sent (not decoded)."""
    headers = dict(kw.pop("headers", {}))
    if encoding is not None:
        headers["Accept-Encoding"] = encoding
    with client.stream(method, path, headers=headers, **kw) as response:
        raw = b"".join(response.iter_raw())
    return response, raw


def decode(raw: bytes, coding: str | None) -> bytes:
    if coding == "br":
        return bytes(brotli.decompress(raw))
    if coding == "gzip":
        return gzip.decompress(raw)
    assert coding is None, coding
    return raw


def week(fleet: Fleet) -> dict[str, str]:
    return {
        "start": (fleet.now - timedelta(days=4)).isoformat(),
        "end": (fleet.now + timedelta(minutes=1)).isoformat(),
    }


# ── Negotiation ────────────────────────────────────────────────────────────────────────────


def test_trips_map_decodes_to_the_same_json_in_every_coding(
    api: httpx.Client, fleet: Fleet
) -> None:
    bodies: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    for accept, coding in (("identity", None), ("gzip", "gzip"), ("br", "br")):
        response, raw = wire(api, "POST", "/webhook/fleet-dashboard", accept, data=week(fleet))
        assert response.status_code == 200
        assert response.headers.get("content-encoding") == coding
        assert response.headers["content-type"] == "application/json"
        assert response.headers["content-length"] == str(len(raw))
        assert "accept-encoding" in response.headers["vary"].lower()
        bodies[accept] = _CLOCK.sub(b'"generated_at": ""', decode(raw, coding))
        sizes[accept] = len(raw)
    assert bodies["gzip"] == bodies["identity"] == bodies["br"]
    doc = json.loads(bodies["identity"])
    assert doc["summary"]["trips"] == len(doc["features"]) > BULK_TRIPS * 0.9
    assert sizes["identity"] > 500_000
    for coding in ("gzip", "br"):  # the target: at most 15 % on the wire
        assert sizes[coding] <= 0.15 * sizes["identity"], (coding, sizes)


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("gzip, deflate, br", "br"),
        ("gzip, deflate", "gzip"),
        ("br;q=0, gzip", "gzip"),
        ("gzip;q=0.8, br;q=0.5", "gzip"),
        ("gzip;q=0, br;q=0", None),
        ("*", "br"),
        ("*;q=0", None),  # nothing acceptable: identity anyway, never 406
        ("*;q=0.5, br;q=0", "gzip"),
        ("identity", None),
        ("identity;q=1, gzip;q=0.5", None),
        ("deflate, compress", None),
        ("br;q=lots, gzip", "gzip"),  # a malformed q: that entry is ignored
        ("BR", "br"),
        ("x-gzip", "gzip"),
        ("", None),
        (None, None),
        ("a," * 2000 + "br", None),  # only the first 1000 characters are read
    ],
)
def test_accept_encoding_with_q_values(
    api: httpx.Client, fleet: Fleet, accept: str | None, coding: str | None
) -> None:
    assert negotiate(accept) == (coding or "identity")
    response, raw = wire(api, "POST", "/webhook/fleet-dashboard", accept, data=week(fleet))
    assert response.status_code == 200
    assert response.headers.get("content-encoding") == coding
    assert json.loads(decode(raw, coding))["type"] == "FeatureCollection"


def test_small_answers_and_errors_go_as_they_are(api: httpx.Client) -> None:
    for method, path, kw in (
        ("GET", "/health", {}),
        ("GET", "/webhook/live-positions", {"params": {"acc_status": "sideways"}}),  # 422
        ("POST", "/webhook/fleet-dashboard", {"data": {"limit": "lots"}}),  # 422
    ):
        response, raw = wire(api, method, path, "br, gzip", **kw)
        assert len(raw) < 1024, path
        assert "content-encoding" not in response.headers, path
        json.loads(raw)


def test_the_threshold_is_a_setting(db_url: str, fleet: Fleet) -> None:
    for min_bytes, compressed in ((10**9, False), (0, True)):
        settings = test_settings(
            db_url, vtrips_refresh_interval_s=0, dashboard_compress_min_bytes=min_bytes
        )
        server, thread = serve_in_thread(create_app(settings), free_port())
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}") as client:
                big, _ = wire(client, "POST", "/webhook/fleet-dashboard", "gzip", data=week(fleet))
                small, _ = wire(client, "GET", "/health", "gzip")
        finally:
            server.should_exit = True
            thread.join()
        assert ("content-encoding" in big.headers) is compressed
        assert ("content-encoding" in small.headers) is compressed


def test_csv_export_is_compressed_as_a_stream(api: httpx.Client, fleet: Fleet) -> None:
    params = {"format": "csv", **week(fleet)}
    plain, plain_raw = wire(api, "GET", "/analytics/trips", "identity", params=params)
    packed, packed_raw = wire(api, "GET", "/analytics/trips", "gzip;q=1, br;q=0.9", params=params)
    assert plain.status_code == packed.status_code == 200
    assert packed.headers["content-encoding"] == "gzip"
    assert "content-length" not in packed.headers  # streamed: chunked
    assert packed.headers["content-disposition"] == plain.headers["content-disposition"]
    assert gzip.decompress(packed_raw) == plain_raw
    assert plain_raw.count(b"\r\n") > BULK_TRIPS * 0.9
    assert len(packed_raw) < len(plain_raw) / 4


def test_static_files_are_compressed_and_still_revalidate(api: httpx.Client) -> None:
    plain, plain_raw = wire(api, "GET", "/static/app/app.js", None)
    packed, packed_raw = wire(api, "GET", "/static/app/app.js", "br")
    assert packed.headers["content-encoding"] == "br"
    assert decode(packed_raw, "br") == plain_raw
    # another representation: the file's strong tag is weak once compressed
    assert packed.headers["etag"] == "W/" + plain.headers["etag"]
    again, body = wire(
        api, "GET", "/static/app/app.js", "br", headers={"If-None-Match": packed.headers["etag"]}
    )
    assert again.status_code == 304 and body == b""


# ── What is never compressed (a bare app with the middleware, on a real server) ───────────


async def _events(request: Request) -> StreamingResponse:
    async def stream() -> AsyncIterator[str]:
        for n in range(3):
            yield f"id: {n}\ndata: {'x' * 2000}\n\n"
            await asyncio.sleep(0.01)

    return StreamingResponse(stream(), media_type="text/event-stream")


async def _encoded(request: Request) -> Response:
    body = gzip.compress(b'{"pre": "' + b"z" * 5000 + b'"}')
    return Response(body, media_type="application/json", headers={"Content-Encoding": "gzip"})


async def _png(request: Request) -> Response:
    return Response(b"\x89PNG" + bytes(5000), media_type="image/png")


@pytest.fixture
def bare() -> Iterator[httpx.Client]:
    routes = [Route("/events", _events), Route("/encoded", _encoded), Route("/png", _png)]
    app = CompressionMiddleware(Starlette(routes=routes), min_bytes=100)
    server, thread = serve_in_thread(app, free_port())
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}") as client:
            yield client
    finally:
        server.should_exit = True
        thread.join()


def test_event_streams_and_encoded_answers_are_left_alone(bare: httpx.Client) -> None:
    events, raw = wire(bare, "GET", "/events", "br, gzip")
    assert "content-encoding" not in events.headers
    assert raw.count(b"data: ") == 3
    encoded, raw = wire(bare, "GET", "/encoded", "br")
    assert encoded.headers["content-encoding"] == "gzip"  # the app's own, not br over it
    assert json.loads(gzip.decompress(raw))["pre"].startswith("zzz")
    png, raw = wire(bare, "GET", "/png", "br, gzip")
    assert "content-encoding" not in png.headers and len(raw) == 5004
    assert "vary" not in png.headers


# ── ETag / If-None-Match ───────────────────────────────────────────────────────────────────


def test_live_positions_answer_304_until_a_vehicle_moves(
    api: httpx.Client, db_url: str, fleet: Fleet
) -> None:
    first, raw = wire(api, "GET", "/webhook/live-positions", "br")
    tag = first.headers["etag"]
    # fix_age_s and generated_at change every second: the tag hashes the rest (weak)
    assert re.fullmatch(r'W/"[0-9a-f]{32}"', tag), tag
    assert first.headers["cache-control"] == "private, no-cache"
    assert len(json.loads(decode(raw, "br"))["features"]) == 4

    same, body = wire(api, "GET", "/webhook/live-positions", "br", headers={"If-None-Match": tag})
    assert same.status_code == 304 and body == b""
    assert same.headers["etag"] == tag
    assert "accept-encoding" in same.headers["vary"].lower()
    assert "content-encoding" not in same.headers
    # weak comparison, lists and *: the same answer
    for header in (tag.removeprefix("W/"), f'"nope", {tag}', "*"):
        again, _ = wire(
            api, "GET", "/webhook/live-positions", None, headers={"If-None-Match": header}
        )
        assert again.status_code == 304, header
    # a filter is another answer, another tag
    moving, _ = wire(
        api, "GET", "/webhook/live-positions", None,
        headers={"If-None-Match": tag}, params={"acc_status": "moving"},
    )  # fmt: skip
    assert moving.status_code == 200 and moving.headers["etag"] != tag

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE tracksolid.live_positions SET lat = lat + 0.001 WHERE imei = %s",
            (fleet.imeis["KCA 542Q"],),
        )
    changed, raw = wire(api, "GET", "/webhook/live-positions", "br", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert len(json.loads(decode(raw, "br"))["features"]) == 4


def test_answers_without_clocks_get_a_strong_tag(api: httpx.Client) -> None:
    plain, raw = wire(api, "GET", "/analytics/filters", "identity")
    tag = plain.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', tag) and json.loads(raw)["vehicles"]
    packed, _ = wire(api, "GET", "/analytics/filters", "gzip")
    if "content-encoding" in packed.headers:  # the answer is above the threshold
        assert packed.headers["etag"] == "W/" + tag
    for accept in ("identity", "gzip"):
        cached, body = wire(
            api, "GET", "/analytics/filters", accept, headers={"If-None-Match": tag}
        )
        assert cached.status_code == 304 and body == b""
    # POST answers and errors carry no tag
    posted, _ = wire(api, "POST", "/webhook/fleet-dashboard", None, data={"limit": "1"})
    assert posted.status_code == 200 and "etag" not in posted.headers
    bad, _ = wire(api, "GET", "/webhook/live-positions", None, params={"acc_status": "x"})
    assert bad.status_code == 422 and "etag" not in bad.headers
