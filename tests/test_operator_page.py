"""`make demo` end to end, and the operator console in headless Chromium (Playwright).

Starts scripts/demo.py (throwaway cluster, migrations, simulator pushing to the receiver,
worker, read-API) on free ports, waits until positions are on the map, then drives Debian's
Chromium through the `playwright` package with internet tiles off (`?tiles=off`: the offline
basemap must show instead) along the console's main paths:

- search with a spelling variant of a plate → select → the playback slider moves the marker;
  `?select=` in another spelling opens the vehicle, an unknown one says so;
- the alarms panel lists the demo's alarms, newest first, and pages on with next_cursor;
- at 360 and 390 px wide the map has a real size and the side panel collapses;
- the CSV exports (trips, stops, alarms) download the same rows as the JSON endpoints.

Screenshots: test-output/console-desktop.png (1400 x 900) and console-phone.png (390 x 844).
Finally Ctrl-C (SIGINT) must stop everything and remove the database cluster.

The page's CSP forbids eval, so waits poll `page.evaluate` (DevTools, outside the CSP)
instead of Playwright's `wait_for_function`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from dashboard_api import create_app
from tests.conftest import ROOT
from tests.factories import add_alarm, db_now
from tests.pgcluster import find_pg_bin, free_port
from tests.servers import serve_in_thread
from ts_shared import Settings

DEVICES = 12
OUTPUT = ROOT / "test-output"
ALARM_PAGE = 50  # web/app.js ALARM_PAGE
API_KEY = "console-key-5e1d27"
# Vehicles on the map: markers, cluster counts and, at low zoom, the vector-tile points.
ON_MAP = """document.querySelectorAll("path.vehicle-marker").length +
  [...document.querySelectorAll(".vehicle-cluster .cluster-count")]
    .reduce((n, c) => n + Number(c.textContent), 0) +
  (document.body.dataset.fleetLayer === "tiles"
     ? Number(document.body.dataset.tilePoints || 0) : 0)"""
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def demo() -> Iterator[dict[str, Any]]:
    ready = Path(tempfile.mkdtemp()) / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "scripts/demo.py", "--devices", str(DEVICES), "--api-port", "0",
         "--webhook-port", "0", "--sim-port", "0", "--ready-file", str(ready)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"demo did not come up within 3 minutes:\n{out[-4000:]}")
        time.sleep(0.5)
    info = json.loads(ready.read_text())
    info["_proc"] = proc
    yield info
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=20) as response:
        return json.load(response)


def _open(browser: Browser, url: str, width: int, height: int) -> Page:
    page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    _wait(
        page,
        f'document.body.dataset.ready === "1" && document.body.dataset.vehicles === "{DEVICES}"',
    )
    assert errors == [], errors
    return page


def _wait(page: Page, expression: str, timeout: float = 45) -> Any:
    """The value of `expression` once truthy (fails after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            text = page.evaluate("document.body.innerText.slice(0, 3000)")
            pytest.fail(f"timed out waiting for {expression!r}; page text:\n{text}")
        page.wait_for_timeout(150)


def _rect(page: Page, selector: str) -> dict[str, float]:
    rect: dict[str, float] = page.evaluate(
        f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
        ".getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height}; })()"
    )
    return rect


def _vehicle_with_track(api: str) -> tuple[str, dict[str, Any]]:
    """A demo vehicle whose last 24 h track has fixes away from its start (for playback)."""
    fc = _get(api + "/webhook/live-positions")
    for plate in sorted(f["properties"]["vehicle_number"] for f in fc["features"]):
        track = _get(
            api
            + "/webhook/live-positions/track?hours=24&vehicle_number="
            + urllib.parse.quote(plate)
        )
        lines = [f for f in track["features"] if f["geometry"]["type"] == "LineString"]
        if lines and len(set(map(tuple, lines[0]["geometry"]["coordinates"]))) > 5:
            return plate, lines[0]
    pytest.fail("no demo vehicle has a track with several distinct fixes")


def _variant(plate: str) -> str:
    """Another spelling of a plate, as people type it: 'KCD 530L' → 'kcd530l'."""
    return re.sub(r"[^0-9A-Za-z]", "", plate).lower()


# ── The demo itself ─────────────────────────────────────────────────────────────────────────


def test_the_offline_basemap_file_is_generated_from_the_simulator_roads() -> None:
    """web/basemap.geojson is what scripts/make_basemap.py writes (sim/roads.py + outlines)."""
    check = subprocess.run(
        [sys.executable, "scripts/make_basemap.py", "--check"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    basemap = json.loads((ROOT / "web" / "basemap.geojson").read_text())
    kinds = [f["properties"]["kind"] for f in basemap["features"]]
    assert kinds.count("city") == 3 and kinds.count("road") >= 10 and "water" in kinds


def test_demo_positions_flow_into_the_map_and_pushes_arrive(demo: dict[str, Any]) -> None:
    fc = _get(demo["api"] + "/webhook/live-positions")
    assert isinstance(fc, dict) and fc["type"] == "FeatureCollection"
    assert len(fc["features"]) == DEVICES
    # The simulator's pushes reach the receiver and the database (push rows appear).
    deadline = time.monotonic() + 60
    feeds: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        health = _get(demo["api"] + "/health/ingest")
        assert isinstance(health, dict)
        feeds = list(health.get("feeds") or [])
        if any(f.get("source") == "push" for f in feeds):
            break
        time.sleep(2)
    assert any(f.get("source") == "push" for f in feeds), feeds
    assert any(f.get("source") == "api" for f in feeds), feeds


# ── The console ─────────────────────────────────────────────────────────────────────────────


def test_search_select_and_playback_move_the_marker(demo: dict[str, Any], browser: Browser) -> None:
    api = demo["api"]
    plate, line = _vehicle_with_track(api)
    page = _open(browser, api + "/?tiles=off", 1400, 900)
    try:
        # Every vehicle is in the list and on the map: single markers plus the cluster counts,
        # or at low zoom (z <= 8) the points drawn from the vector tiles (/tiles/live/...).
        assert page.locator("#vehicle-list li").count() == DEVICES
        _wait(page, f"({ON_MAP}) === {DEVICES}")
        # No tiles: the offline basemap (web/basemap.geojson) and the note are there.
        assert int(page.evaluate("document.body.dataset.basemap")) > 10
        assert "basemap tiles off" in page.locator("#tiles-note").inner_text()
        assert page.locator("img.leaflet-tile").count() == 0  # (canvas: the vehicle tiles)

        # Search in another spelling: exactly that vehicle is left in the list (and on the map).
        page.locator("#search").fill(_variant(plate))
        rows = page.locator("#vehicle-list li")
        assert rows.count() == 1 and plate in rows.first.inner_text()
        _wait(page, f"({ON_MAP}) === 1")
        # The track the page draws is the one it fetched: the demo's simulator keeps adding
        # fixes and the oldest leave the 24 h window, so a fetch of the test's own may differ
        # by a fix (CI saw 322 drawn against 323 fetched a moment earlier).
        with page.expect_response(
            lambda r: urllib.parse.urlsplit(r.url).path == "/webhook/live-positions/track"
        ) as fetched:
            rows.first.click()
        track = fetched.value.json()
        line = next(f for f in track["features"] if f["geometry"]["type"] == "LineString")
        _wait(page, "Number(document.body.dataset.trackPoints) > 1")
        assert plate in page.locator("#vehicle").inner_text()
        assert page.locator("path.selected-ring").count() == 1, "the selected vehicle is marked"
        assert page.locator("path.vehicle-track").count() >= 1
        assert page.locator("path.track-start").count() == 1
        assert page.locator("path.track-end").count() == 1
        assert page.locator(".track-arrow").count() >= 3, "direction arrows along the track"
        points = len(line["geometry"]["coordinates"])
        assert page.evaluate("document.body.dataset.trackPoints") == str(points)
        assert " EAT" in page.locator("#track-info").inner_text()

        # Playback: the marker starts on the first fix; dragging the slider moves it along
        # the track to the fix of that position, its time shown in EAT.
        assert page.evaluate("document.body.dataset.playbackIndex") == "0"
        before = _rect(page, "path.playback-marker")
        slider = page.locator("#playback-slider")
        box = slider.bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
        index = int(
            _wait(
                page,
                '(i => i !== "0" && i)(document.body.dataset.playbackIndex)',
            )
        )
        assert 0 < index < points
        lng, lat = line["geometry"]["coordinates"][index]
        at = [float(x) for x in page.evaluate("document.body.dataset.playbackAt").split(",")]
        assert at == pytest.approx([lat, lng], abs=1e-6)
        after = _rect(page, "path.playback-marker")
        moved = abs(after["x"] - before["x"]) + abs(after["y"] - before["y"])
        if [lng, lat] != line["geometry"]["coordinates"][0]:
            assert moved > 2, (before, after)
        assert page.locator("#playback-time").inner_text().count("EAT") == 1

        # The desktop screenshot: vehicle selected, its speed-coloured track, lists and alarms.
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "console-desktop.png"))

        # Trips: a click draws the trip along the track's own fixes (or a dashed chord).
        trips = page.locator("#trips li.trip-row")
        if trips.count():
            trips.first.click()
            _wait(page, "document.body.dataset.tripDrawn")
            assert page.locator("path.trip-path, path.trip-chord").count() == 1
    finally:
        page.close()


def test_select_link_accepts_any_spelling_and_says_when_nothing_matches(
    demo: dict[str, Any], browser: Browser
) -> None:
    api = demo["api"]
    plate, _ = _vehicle_with_track(api)
    spelled = plate.lower().replace(" ", "-")  # 'KCD 530L' → 'kcd-530l'
    page = _open(browser, f"{api}/?tiles=off&select={urllib.parse.quote(spelled)}", 1400, 900)
    try:
        _wait(page, "Number(document.body.dataset.trackPoints) > 1")
        assert page.locator("#vehicle .vehicle-label").inner_text() == plate
        assert page.locator("#select-message").is_hidden()
    finally:
        page.close()
    page = _open(browser, f"{api}/?tiles=off&select=NOPE-000X", 1400, 900)
    try:
        _wait(page, 'document.body.dataset.selectMissing === "1"')
        message = page.locator("#select-message")
        assert message.is_visible() and "No vehicle matches “NOPE-000X”" in message.inner_text()
    finally:
        page.close()


def test_alarms_panel_lists_the_alarms_newest_first_and_pages(
    demo: dict[str, Any], browser: Browser
) -> None:
    """The panel shows /analytics/alarms. The simulator raises a few alarms; so that the
    panel has more than one page, the test INSERTS alarms into the demo's database directly
    (tracksolid.alarms via the "db" URL of the ready file) when the demo has too few."""
    api = demo["api"]
    have = _get(api + "/analytics/alarms?limit=5000")["items"]
    if len(have) <= ALARM_PAGE:
        fc = _get(api + "/webhook/live-positions")
        imeis = [f["properties"]["imei"] for f in fc["features"]]
        with psycopg.connect(demo["db"], autocommit=True) as conn:
            now = db_now(conn)
            for i in range(ALARM_PAGE + 10 - len(have)):
                add_alarm(
                    conn,
                    imeis[i % len(imeis)],
                    now - timedelta(minutes=30 + i),
                    "6",
                    "Overspeed alarm",
                )
    page = _open(browser, api + "/?tiles=off", 1400, 900)
    try:
        _wait(page, f'document.body.dataset.alarms === "{ALARM_PAGE}"')
        shown = page.evaluate(
            '[...document.querySelectorAll("#alarms li.alarm-row")].map((li) => li.dataset.alarmId)'
        )
        items = _get(api + "/analytics/alarms?limit=5000")["items"]
        by_id = {str(a["alarm_id"]): a for a in items}
        assert set(shown) <= set(by_id), "every row is an alarm of the endpoint"
        times = [by_id[i]["alarm_time"] for i in shown]
        assert times == sorted(times, reverse=True), "newest first"
        first = page.locator("#alarms li.alarm-row").first.inner_text()
        assert by_id[shown[0]]["vehicle_number"] in first and "EAT" in first
        # Paging with next_cursor: "More alarms" appends the next page, no duplicates.
        page.locator("#alarms-more").click()
        _wait(page, f"Number(document.body.dataset.alarms) > {ALARM_PAGE}")
        more = page.evaluate(
            '[...document.querySelectorAll("#alarms li.alarm-row")].map((li) => li.dataset.alarmId)'
        )
        assert len(more) == len(set(more)) and more[:ALARM_PAGE] == shown
        # A click on an alarm with a position marks it on the map.
        page.locator("#alarms li.alarm-row").first.click()
        assert page.locator("path.alarm-focus").count() == 1
    finally:
        page.close()


def test_kpis_health_and_the_ticket_and_fuel_layers(demo: dict[str, Any], browser: Browser) -> None:
    """The KPI tiles are /analytics/fleet-summary's; health rows carry readable names; the
    layers show the open tickets with a place and today's (EAT) fuel fills. The counts of
    tickets and fills depend on what the demo has imported so far (possibly none)."""
    api = demo["api"]
    page = _open(browser, api + "/?tiles=off", 1400, 900)
    try:
        _wait(page, 'document.body.dataset.kpis === "1"')
        summary = _get(api + "/analytics/fleet-summary")
        first = page.locator("#kpis .kpi").first.inner_text()
        assert first.split()[0] == str(summary["status"]["vehicles"]) and "vehicles" in first
        feeds = _get(api + "/health/ingest")["feeds"]
        names = page.evaluate(
            '[...document.querySelectorAll("#health .feed-label")].map((e) => e.textContent)'
        )
        assert names == [f.get("label") or f"{f['source']} {f['method']}" for f in feeds]
        page.locator("#layer-tickets").check()
        page.locator("#layer-fuel").check()
        _wait(page, "document.body.dataset.tickets !== undefined")
        _wait(page, "document.body.dataset.fuel !== undefined")
        tickets = _get(api + "/analytics/tickets-map")["features"]
        open_mapped = [
            t for t in tickets
            if t["geometry"] and t["geometry"]["type"] == "Point"
            and t["properties"].get("bucket") != "closed"
        ]  # fmt: skip
        assert page.evaluate("Number(document.body.dataset.tickets)") == len(open_mapped)
        assert page.locator("path.ticket-marker").count() == len(open_mapped)
        today = page.evaluate(
            'new Intl.DateTimeFormat("en-CA", {timeZone: "Africa/Nairobi"}).format(new Date())'
        )
        fills = _get(api + f"/analytics/fuel-fills?from={today}&to={today}")["fills"]
        assert page.evaluate("Number(document.body.dataset.fuel)") == len(fills)
        assert page.locator("#fuel-info").inner_text().startswith(f"{len(fills)} today")
    finally:
        page.close()


@pytest.mark.parametrize("width,height", [(360, 740), (390, 844)])
def test_phone_width_shows_the_map_and_the_panel_collapses(
    demo: dict[str, Any], browser: Browser, width: int, height: int
) -> None:
    api = demo["api"]
    plate, _ = _vehicle_with_track(api)
    page = _open(
        browser, f"{api}/?tiles=off&select={urllib.parse.quote(_variant(plate))}", width, height
    )
    try:
        _wait(page, "Number(document.body.dataset.trackPoints) > 1")
        page.evaluate("window.scrollTo(0, 0)")
        rect = _rect(page, "#map")
        assert rect["width"] >= width - 2 and rect["height"] >= 250, rect
        assert page.evaluate("document.documentElement.scrollWidth") <= width, (
            "no sideways scrolling"
        )
        if width == 390:
            page.screenshot(path=str(OUTPUT / "console-phone.png"))
        # The panel (below the map) can be hidden: the map then takes the screen.
        page.locator("#sidebar-toggle").click()
        assert page.locator("#sidebar").is_hidden()
        taller = _rect(page, "#map")
        assert taller["height"] > rect["height"] and taller["width"] >= width - 2
        page.locator("#sidebar-toggle").click()
        assert page.locator("#sidebar").is_visible()
    finally:
        page.close()


def _csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


@pytest.mark.parametrize(
    "link,endpoint,key",
    [("#trips-csv", "/analytics/trips", "trip_id"), ("#stops-csv", "/analytics/stops", "stop_id"),
     ("#alarms-csv", "/analytics/alarms", "alarm_id")],
)  # fmt: skip
def test_export_downloads_a_csv_with_the_rows_of_the_json_endpoint(
    demo: dict[str, Any], browser: Browser, link: str, endpoint: str, key: str
) -> None:
    """A click on the panel's CSV link downloads (Content-Disposition) the same rows the JSON
    endpoint lists for the same window. The demo keeps producing data, so the JSON is read
    before and after the download: the file holds every row of the first and none beyond the
    second."""
    api = demo["api"]
    plate, _ = _vehicle_with_track(api)
    page = _open(
        browser, f"{api}/?tiles=off&select={urllib.parse.quote(_variant(plate))}", 1400, 900
    )
    try:
        _wait(page, "Number(document.body.dataset.trackPoints) > 1")
        _wait(page, f'!document.querySelector("{link}").hidden')
        href = page.evaluate(f'document.querySelector("{link}").href')
        assert "format=csv" in href
        json_url = href.replace("format=csv", "limit=5000")
        before = {str(r[key]) for r in _get(json_url)["items"]}
        with page.expect_download() as info:
            page.locator(link).click()
        download = info.value
        assert re.fullmatch(r"[a-z_-]+-[0-9_-]+\.csv", download.suggested_filename), (
            download.suggested_filename
        )
        target = OUTPUT / f"export-{key}.csv"
        download.save_as(target)
        after = {str(r[key]) for r in _get(json_url)["items"]}
        rows = _csv_rows(target)
        got = {r[key] for r in rows}
        assert len(got) == len(rows), "one row per item"
        assert before <= got <= after, (sorted(before ^ got), sorted(got - after))
        if endpoint != "/analytics/alarms":
            assert rows, f"the selected vehicle has {endpoint} rows in its last 24 h"
    finally:
        page.close()


def test_export_with_an_api_key_sends_the_key_in_the_header_never_in_the_url(
    demo: dict[str, Any], browser: Browser
) -> None:
    """With DASHBOARD_API_KEYS set a plain link would get 401: the page fetches the CSV with
    the X-API-Key header and saves it (a second read-API on the demo's database, with keys)."""
    settings = Settings(
        _env_file=None, database_url=demo["db"], dashboard_api_keys=API_KEY,
        vtrips_refresh_interval_s=0,
    )  # fmt: skip
    port = free_port()
    server, thread = serve_in_thread(create_app(settings), port)
    api = f"http://127.0.0.1:{port}"
    page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    requests: list[tuple[str, str | None]] = []
    page.on("request", lambda r: requests.append((r.url, r.headers.get("x-api-key"))))
    try:
        page.goto(api + "/?tiles=off")
        _wait(page, 'document.body.dataset.needsKey === "1"')
        page.locator("#key-input").fill(API_KEY)
        page.locator("#key-input").press("Enter")
        _wait(
            page, f'document.body.dataset.vehicles === "{DEVICES}" && document.body.dataset.alarms'
        )
        with page.expect_download() as info:
            page.locator("#alarms-csv").click()
        target = OUTPUT / "export-alarms-keyed.csv"
        info.value.save_as(target)
        assert info.value.suggested_filename.startswith("alarms")
        header = target.read_text(encoding="utf-8").splitlines()[0]
        assert "alarm_id" in header and "vehicle_number" in header
        csv_calls = [key for url, key in requests if "format=csv" in url]
        assert csv_calls and all(key == API_KEY for key in csv_calls)
        assert not any(API_KEY in url for url, _ in requests), "the key never goes in a URL"
    finally:
        page.close()
        server.should_exit = True
        thread.join(20)


def test_ctrl_c_stops_everything_and_removes_the_cluster(demo: dict[str, Any]) -> None:
    proc: subprocess.Popen[str] = demo["_proc"]
    db_port = re.search(r":(\d+)/", demo["db"])
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    out = proc.stdout.read() if proc.stdout else ""
    assert "database removed" in out
    assert db_port is not None
    probe = subprocess.run([str(find_pg_bin() / "pg_isready"), "-h", "127.0.0.1", "-p",
                            db_port.group(1)],
                           capture_output=True, check=False)  # fmt: skip
    assert probe.returncode != 0, "the demo's PostgreSQL is gone"
