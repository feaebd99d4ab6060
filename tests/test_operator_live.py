"""The operator console's live positions (issue #19) in headless Chromium, and its MVT decoder.

- With the stream open, a fix committed to `tracksolid.live_positions` (the table whose
  triggers feed the stream: migrations 0315 / R__reporting_live_stream.sql) moves the
  vehicle's marker within seconds, and the page never GETs /webhook/live-positions (counted
  with Playwright's request events over a full refresh period).
- With the stream refused (the worker's LIVE_STREAM_MAX_CLIENTS slots taken: 503) the page says
  "polling" and the same fix still reaches the map through GET /webhook/live-positions.
- web/mvt.js (with pbf's browser build, loaded as the page loads them) decodes tiles made by
  PostGIS ST_AsMVT: layers, points, lines, polygons and every property type.

The read-API runs on a seeded test database (tests/factories.seed_fleet) with an API key, so
the key form, the token POST and the header-only key are exercised too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, Page, Request

from dashboard import live_stream
from tests.conftest import ROOT
from tests.factories import Fleet, seed_fleet
from tests.test_live_stream import live_settings, serving
from tests.test_operator_page import ON_MAP, OUTPUT, _wait, browser  # noqa: F401  (browser: a fixture)

KEY = "console-live-key-8c2f"
PLATE = "KDA 777M"  # parked in Mombasa: alone on the map, its marker easy to follow
VEHICLES = 4  # seed_fleet's active vehicles
REFRESH_S = 15  # web/app.js REFRESH_MS
LIVE_POSITIONS = "/webhook/live-positions"


@dataclass
class Api:
    base: str
    fleet: Fleet
    owner: psycopg.Connection[Any]
    app: Any

    def move(self, plate: str, dlat: float, speed: float) -> None:
        """Commit a new fix as the ingest worker would (the stream's triggers see it)."""
        self.owner.execute(
            "UPDATE tracksolid.live_positions SET gps_time = now(), lat = lat + %s,"
            " speed_kmh = %s, acc_on = true, online = true WHERE imei = %s",
            (dlat, speed, self.fleet.imeis[plate]),
        )


def _serve(db_url: str, max_clients: int) -> Iterator[Api]:
    owner = psycopg.connect(db_url, autocommit=True)
    fleet = seed_fleet(owner)
    settings = live_settings(
        db_url, KEY, live_stream_max_clients=max_clients, dashboard_tile_url="off"
    )
    try:
        with serving(settings, hub_timeout=15) as (base, app):
            yield Api(base, fleet, owner, app)
    finally:
        owner.close()


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    yield from _serve(db_url, max_clients=5)


@pytest.fixture
def full_api(db_url: str) -> Iterator[Api]:
    """A read-API that streams to one client at most (the test takes that slot)."""
    yield from _serve(db_url, max_clients=1)


@dataclass
class Seen:
    """The page's requests: (time, method, path, query, X-API-Key header)."""

    requests: list[tuple[float, str, str, str, str | None]]

    def record(self, request: Request) -> None:
        url = urllib.parse.urlsplit(request.url)
        self.requests.append(
            (
                time.monotonic(),
                request.method,
                url.path,
                url.query,
                request.headers.get("x-api-key"),
            )
        )

    def count(self, method: str, path: str, since: float = 0.0) -> int:
        return sum(1 for t, m, p, _, _ in self.requests if m == method and p == path and t >= since)


def _new_page(browser: Browser) -> tuple[Page, Seen, list[str]]:  # noqa: F811
    """A desktop-sized page whose requests are recorded and whose script errors are kept."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    seen = Seen([])
    errors: list[str] = []
    page.on("request", seen.record)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, seen, errors


def _enter_key(page: Page) -> None:
    """Type the key into the form the console shows (as an operator does)."""
    _wait(page, 'document.body.dataset.needsKey === "1"')
    page.locator("#key-input").fill(KEY)
    page.locator("#key-input").press("Enter")


def _open_console(browser: Browser, api: Api) -> tuple[Page, Seen, list[str]]:  # noqa: F811
    """The console with the key entered in its form."""
    page, seen, errors = _new_page(browser)
    page.goto(api.base + "/?tiles=off")
    _enter_key(page)
    _wait(page, f'document.body.dataset.vehicles === "{VEHICLES}"')
    return page, seen, errors


def _select(page: Page, api: Api, plate: str) -> str:
    """Click the vehicle's row (the map zooms in to its unclustered marker); the marker's
    SVG path data."""
    imei = api.fleet.imeis[plate]
    page.locator(f'#vehicle-list li[data-imei="{imei}"]').click()
    marker = f'path.vehicle-marker[data-imei="{imei}"]'
    _wait(page, f"document.querySelector({json.dumps(marker)}) !== null")
    page.wait_for_timeout(500)  # the track may still set the view
    return str(page.locator(marker).get_attribute("d"))


def _moved(marker: str, before: str) -> str:
    """A JS expression: the marker is drawn with other path data than `before`."""
    return (
        f"((m) => m !== null && m.getAttribute('d') !== {json.dumps(before)})"
        f"(document.querySelector({json.dumps(marker)}))"
    )


def _row_says(api: Api, plate: str, text: str) -> str:
    row = f'#vehicle-list li[data-imei="{api.fleet.imeis[plate]}"]'
    return (
        f"((r) => r !== null && r.textContent.includes({json.dumps(text)}))"
        f"(document.querySelector({json.dumps(row)}))"
    )


def _row_text(page: Page, api: Api, plate: str) -> str:
    return page.locator(f'#vehicle-list li[data-imei="{api.fleet.imeis[plate]}"]').inner_text()


def test_a_new_fix_moves_the_marker_through_the_stream_without_polling(
    api: Api,
    browser: Browser,  # noqa: F811
) -> None:
    page, seen, errors = _open_console(browser, api)
    try:
        _wait(page, 'document.body.dataset.live === "live"')
        live_since = time.monotonic()
        assert page.locator("#live-status").inner_text() == "live"
        imei = api.fleet.imeis[PLATE]
        before = _select(page, api, PLATE)
        ring_before = page.locator("path.selected-ring").get_attribute("d")
        assert "55 km/h" not in _row_text(page, api, PLATE)

        marker = f'path.vehicle-marker[data-imei="{imei}"]'
        box_before = page.locator(marker).bounding_box()
        committed = time.monotonic()
        api.move(PLATE, 0.01, 55.0)
        _wait(page, _moved(marker, before), timeout=5)
        took = time.monotonic() - committed
        assert took < 4.0, f"the marker moved {took:.1f} s after the commit"
        _wait(page, _row_says(api, PLATE, "55 km/h"), timeout=3)  # the list: within RENDER_MS
        assert page.locator("path.selected-ring").get_attribute("d") != ring_before
        # Moved 0.01° north: higher on the screen (the map did not pan).
        box_after = page.locator(marker).bounding_box()
        assert box_before is not None and box_after is not None
        assert box_after["y"] < box_before["y"] - 5, (box_before, box_after)

        # A full refresh period later (the health table is fetched each tick): the KPIs and the
        # health still refresh, the positions are never polled while the stream is open.
        start_ticks = seen.count("GET", "/health/ingest")
        deadline = time.monotonic() + REFRESH_S + 10
        while seen.count("GET", "/health/ingest") < start_ticks + 1:
            assert time.monotonic() < deadline, "no refresh tick"
            page.wait_for_timeout(250)
        assert seen.count("GET", LIVE_POSITIONS, since=live_since) == 0
        assert seen.count("GET", LIVE_POSITIONS) == 0, "the stream's snapshot is the first load"
        streams = [r for r in seen.requests if r[2] == LIVE_POSITIONS + "/stream"]
        assert len(streams) == 1 and "token=" in streams[0][3]
        tokens = [r for r in seen.requests if r[2] == LIVE_POSITIONS + "/stream/token"]
        # The first POST, before the key was entered, got the 401 that showed the key form.
        assert all(r[1] == "POST" and r[4] in (None, KEY) for r in tokens)
        assert tokens[-1][4] == KEY
        assert not any(KEY in r[3] for r in seen.requests), "the key never goes in a URL"
        assert page.evaluate("document.body.dataset.live") == "live"
        assert errors == [], errors
    finally:
        page.close()


def test_a_refused_stream_falls_back_to_polling_and_still_updates(
    full_api: Api,
    browser: Browser,  # noqa: F811
) -> None:
    api = full_api
    with (
        httpx.Client(base_url=api.base, timeout=httpx.Timeout(10.0, read=30.0)) as client,
        client.stream("GET", LIVE_POSITIONS + "/stream", headers={"X-API-Key": KEY}) as taken,
    ):
        assert taken.status_code == 200  # the worker's only slot: the page's stream gets 503
        refused = client.get(LIVE_POSITIONS + "/stream", headers={"X-API-Key": KEY}, timeout=5.0)
        assert refused.status_code == 503
        page, seen, errors = _open_console(browser, api)
        try:
            _wait(page, 'document.body.dataset.live === "polling"')
            assert page.locator("#live-status").inner_text() == "polling"
            assert seen.count("GET", LIVE_POSITIONS) >= 1
            before = _select(page, api, PLATE)
            polls = seen.count("GET", LIVE_POSITIONS)
            api.move(PLATE, 0.01, 61.0)
            marker = f'path.vehicle-marker[data-imei="{api.fleet.imeis[PLATE]}"]'
            _wait(page, _moved(marker, before), timeout=REFRESH_S + 10)
            _wait(page, _row_says(api, PLATE, "61 km/h"), timeout=3)
            assert seen.count("GET", LIVE_POSITIONS) > polls, "updated by polling"
            assert page.locator("#live-status").inner_text() == "polling"
            assert errors == [], errors
        finally:
            page.close()


def test_the_page_renews_its_token_with_a_resumed_stream_before_it_expires(
    api: Api,
    browser: Browser,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The token endpoint announces a 61 s lifetime (the page renews a minute before expiry,
    after at least 60 s): the page opens a new stream with a new token that resumes after the
    last event id, keeps its vehicles (no snapshot, no poll) and follows fixes on it."""
    monkeypatch.setattr(live_stream, "TOKEN_TTL_S", 61)  # what the POST answers as expires_in
    page, seen, errors = _open_console(browser, api)
    try:
        _wait(page, 'document.body.dataset.live === "live"')
        api.move(PLATE, 0.001, 12.0)  # an event: the page then knows an event id
        _wait(page, _row_says(api, PLATE, "12 km/h"), timeout=5)
        streams = LIVE_POSITIONS + "/stream"
        deadline = time.monotonic() + 90
        while seen.count("GET", streams) < 2:
            assert time.monotonic() < deadline, "the stream was not renewed"
            page.wait_for_timeout(500)
        renewed = [r for r in seen.requests if r[2] == streams][-1]
        query = urllib.parse.parse_qs(renewed[3])
        assert query["token"] and int(query["last_event_id"][0]) > 0
        _wait(page, 'document.body.dataset.live === "live"')
        api.move(PLATE, 0.01, 77.0)
        _wait(page, _row_says(api, PLATE, "77 km/h"), timeout=5)
        assert page.evaluate("document.body.dataset.vehicles") == str(VEHICLES)
        assert seen.count("GET", LIVE_POSITIONS) == 0
        assert errors == [], errors
    finally:
        page.close()


def test_a_401_answered_after_the_key_was_entered_neither_drops_the_key_nor_asks_again(
    api: Api,
    browser: Browser,  # noqa: F811
) -> None:
    """The page's first token POST goes out before the operator has a key. Its 401 can come
    back after the operator entered the key and the stream opened on it (CI saw this: the late
    401 dropped the key, and the token renewal a minute later had none, so the stream was never
    renewed), and so can the 401 of its first TileJSON GET (CI saw this too: the live tiles
    were never enabled). Held here until then: the key stays, the form stays hidden, the stream
    stays live, the live tiles are enabled and the next requests carry the key."""
    page, seen, errors = _new_page(browser)
    held: list[Any] = []

    def hold_keyless(route: Any) -> None:
        if route.request.headers.get("x-api-key"):
            route.continue_()
        else:
            held.append(route)

    page.route("**" + LIVE_POSITIONS + "/stream/token", hold_keyless)
    page.route("**/tiles/live.json", hold_keyless)  # the page's check for the live tiles
    try:
        page.goto(api.base + "/?tiles=off")
        deadline = time.monotonic() + 10
        while len(held) < 2:  # the page asks for a token and the TileJSON as it loads
            assert time.monotonic() < deadline, "no token POST and TileJSON GET without a key"
            page.wait_for_timeout(100)
        _enter_key(page)
        _wait(page, 'document.body.dataset.live === "live"')
        since = time.monotonic()
        for route in held:
            route.continue_()  # the server answers these 401: after the key was entered
        deadline = time.monotonic() + REFRESH_S + 10  # the next refresh tick
        while not any(
            t >= since and p == "/health/ingest" and k == KEY for t, _, p, _, k in seen.requests
        ):
            assert time.monotonic() < deadline, "no request with the key after the late 401"
            page.wait_for_timeout(250)
        page.wait_for_timeout(500)
        assert page.evaluate("sessionStorage.getItem('dashboardApiKey')") == KEY
        assert page.evaluate("document.body.dataset.needsKey") == "0"
        assert page.locator("#key-form").is_hidden()
        # the TileJSON check ran again with the key (the submit found the first one loading)
        _wait(page, 'document.body.dataset.fleetLayer === "tiles"', timeout=10)
        api.move(PLATE, 0.002, 23.0)
        _wait(page, _row_says(api, PLATE, "23 km/h"), timeout=5)
        assert page.evaluate("document.body.dataset.live") == "live"
        assert errors == [], errors
    finally:
        page.close()


TILE_PATH = re.compile(r"^/tiles/live/(\d+)/(\d+)/(\d+)\.mvt$")
CANVAS_PAINTED = """[...document.querySelectorAll("canvas.fleet-tile")].filter((c) => {
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) return true;
  return false;
}).length"""


def test_at_low_zoom_the_fleet_is_drawn_from_vector_tiles(
    api: Api,
    browser: Browser,  # noqa: F811
) -> None:
    """The fitted view of the seeded fleet (Nairobi, Mombasa, Kampala) is below z 9: the page
    draws the vehicles from GET /tiles/live/... (key in the header) on canvas, no markers;
    the status filter applies to the tiles; after a fix the tiles are fetched again; zoomed
    in (a vehicle selected) the markers are back."""
    page, seen, errors = _open_console(browser, api)
    try:
        _wait(page, 'document.body.dataset.fleetLayer === "tiles"')
        _wait(page, f'document.body.dataset.tilePoints === "{VEHICLES}"')
        assert page.evaluate(CANVAS_PAINTED) >= 1, "the tiles' canvases are painted"
        assert (
            f"{VEHICLES} vehicles drawn from vector tiles"
            in page.locator("#fleet-tiles-note").inner_text()
        )
        assert page.locator("path.vehicle-marker").count() == 0
        assert page.locator(".vehicle-cluster").count() == 0
        tiles = [r for r in seen.requests if TILE_PATH.match(r[2])]
        assert tiles and all(r[1] == "GET" and r[4] == KEY for r in tiles)
        assert all(int(TILE_PATH.match(r[2]).group(1)) <= 8 for r in tiles)  # type: ignore[union-attr]
        assert page.locator("#vehicle-list li").count() == VEHICLES
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "console-low-zoom.png"))

        # The status filter hides the parked vehicle on the tiles too (no new request).
        fetched = len(tiles)
        page.locator('#status-filters input[value="parked"]').uncheck()
        _wait(page, f'document.body.dataset.tilePoints === "{VEHICLES - 1}"')
        page.locator('#status-filters input[value="parked"]').check()
        _wait(page, f'document.body.dataset.tilePoints === "{VEHICLES}"')

        # A new fix: the tiles in view are fetched again on the next refresh tick.
        api.move(PLATE, 0.01, 40.0)
        deadline = time.monotonic() + REFRESH_S + 10
        while sum(1 for r in seen.requests if TILE_PATH.match(r[2])) <= fetched:
            assert time.monotonic() < deadline, "the tiles were not fetched again"
            page.wait_for_timeout(250)

        # Zoomed in on a vehicle: markers again.
        _select(page, api, PLATE)
        _wait(page, 'document.body.dataset.fleetLayer === "markers"')
        assert page.locator("path.vehicle-marker").count() >= 1
        assert errors == [], errors
    finally:
        page.close()


def test_without_the_tiles_endpoint_the_page_keeps_markers_at_low_zoom(
    api: Api,
    browser: Browser,  # noqa: F811
) -> None:
    """An API without vector tiles (its TileJSON answers 404, as before issue #19): markers and
    clusters at every zoom, no tile requests."""
    page, seen, _ = _new_page(browser)
    page.route("**/tiles/live.json", lambda route: route.fulfill(status=404, body="{}"))
    try:
        page.goto(api.base + "/?tiles=off")
        _enter_key(page)
        _wait(page, 'document.body.dataset.live === "live"')
        _wait(page, 'document.body.dataset.fleetLayer === "markers"')
        _wait(page, f"({ON_MAP}) === {VEHICLES}")
        assert page.locator("path.vehicle-marker").count() >= 1
        assert not any(TILE_PATH.match(r[2]) for r in seen.requests)
    finally:
        page.close()


# ── web/mvt.js on tiles made by PostGIS ───────────────────────────────────────────────────

DECODE_JS = """
const fs = require("fs"), vm = require("vm");
const ctx = vm.createContext({ TextDecoder, Uint8Array, console });
for (const file of process.argv.slice(1, 3)) {
  vm.runInContext(fs.readFileSync(file, "utf8"), ctx, { filename: file });
}
const bytes = new Uint8Array(fs.readFileSync(0));
process.stdout.write(JSON.stringify(ctx.FleetMvt.decode(bytes)));
"""

TILE_SQL = """
WITH live AS (
  SELECT * FROM (VALUES
    ('862798000000001', 'KCA 542Q', 'moving', 55.5::float8, 270, -3, true,
     'POINT(100 200)'),
    ('353549000000003', 'Mtu wa "Mombasa" <b>', 'parked', 0.0::float8, 0, 7000000000, false,
     'MULTIPOINT(10 10, 4000 4000)')
  ) AS t(imei, name, status, speed_kmh, course, big, acc, wkt)
), trips AS (
  SELECT 7 AS trip_id, 'LINESTRING(0 0, 10 0, 10 10)' AS wkt
  UNION ALL SELECT 8, 'POLYGON((0 0, 100 0, 100 100, 0 100, 0 0))'
)
SELECT (SELECT ST_AsMVT(q, 'live', 4096, 'geom') FROM (
          SELECT imei, name, status, speed_kmh, course, big, acc,
                 ST_AsMVTGeom(ST_GeomFromText(wkt), ST_MakeEnvelope(0, 0, 4096, 4096), 4096, 0,
                              false) AS geom FROM live) q)
    || (SELECT ST_AsMVT(q, 'trips', 4096, 'geom') FROM (
          SELECT trip_id, ST_AsMVTGeom(ST_GeomFromText(wkt), ST_MakeEnvelope(0, 0, 4096, 4096),
                                       4096, 0, false) AS geom FROM trips) q)
"""


def _decode(tile: bytes) -> Any:
    node = shutil.which("node")
    assert node, "node (the npm toolchain that installs web/) is needed"
    done = subprocess.run(
        [node, "-e", DECODE_JS, str(ROOT / "web/node_modules/pbf/dist/pbf.js"),
         str(ROOT / "web/mvt.js")],
        input=tile, capture_output=True, check=False, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def test_the_mvt_decoder_reads_postgis_tiles(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(TILE_SQL).fetchone()
    assert row is not None
    layers = _decode(bytes(row[0]))
    assert set(layers) == {"live", "trips"}
    live = layers["live"]
    assert live["extent"] == 4096
    first, second = live["features"]
    assert first["type"] == "Point" and first["geometry"] == [[[100, 4096 - 200]]]  # y down
    assert first["properties"] == {
        "imei": "862798000000001", "name": "KCA 542Q", "status": "moving",
        "speed_kmh": 55.5, "course": 270, "big": -3, "acc": True,
    }  # fmt: skip
    assert second["properties"]["name"] == 'Mtu wa "Mombasa" <b>'
    assert second["properties"]["big"] == 7000000000 and second["properties"]["acc"] is False
    assert second["type"] == "Point" and second["geometry"] == [[[10, 4086]], [[4000, 96]]]
    line, polygon = layers["trips"]["features"]
    assert line["properties"] == {"trip_id": 7}
    assert line["type"] == "LineString" and line["geometry"] == [
        [[0, 4096], [10, 4096], [10, 4086]]
    ]
    assert polygon["type"] == "Polygon"
    ring = polygon["geometry"][0]
    assert ring[0] == ring[-1] and len(ring) == 5  # closed by ClosePath
    assert {tuple(p) for p in ring} == {(0, 4096), (100, 4096), (100, 3996), (0, 3996)}


def test_the_mvt_decoder_survives_garbage() -> None:
    """Truncated or random bytes end the decoding with an error or nothing, never a hang."""
    for blob in (b"", b"\x1a", b"\x1a\x05\x0a\x03liv", bytes(range(256)) * 4):
        node = shutil.which("node")
        assert node
        done = subprocess.run(
            [node, "-e", DECODE_JS, str(ROOT / "web/node_modules/pbf/dist/pbf.js"),
             str(ROOT / "web/mvt.js")],
            input=blob, capture_output=True, check=False, timeout=30,
        )  # fmt: skip
        assert done.returncode in (0, 1), done.stderr
