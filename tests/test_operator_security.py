"""The operator page and the API docs pages, attacked and offline, in real headless Chromium.

The read-API runs under uvicorn on loopback against a migrated database; Debian's Chromium is
driven over the DevTools protocol (`Browser` / `Tab` below) so a test can see what a person
would not: every request the page makes (URL and headers), every dialog, every CSP violation.
Requests to any host other than the app are failed by the browser and recorded, so the pages
run as on a machine without internet.

- registry values that are hostile HTML show as literal text, with the CSP bypassed (the DOM
  code alone is safe) and enforced (the page runs under its policy without a violation);
- the security headers on the page, its files and the API; package.json & co. are 404;
- the API key is asked for by the page, kept in sessionStorage, sent only in X-API-Key;
- /docs and /redoc render from npm assets with no request to another host.
"""

from __future__ import annotations

import contextlib
import html
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from base64 import b64decode
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from websockets.sync.client import ClientConnection, connect

from dashboard_api import create_app
from tests.conftest import (
    ROOT,
    available_engines,
    create_database,
    drop_database,
    template_for,
    test_settings,
)
from tests.factories import (
    add_alarm,
    add_device,
    add_ingestion_log,
    add_live_position,
    db_now,
)
from tests.pgcluster import free_port
from tests.servers import serve_in_thread

OUTPUT = ROOT / "test-output"
API_KEY = "op-key-7f3a91c2d4"

# Registry values an attacker (or a careless CSV) could put in the device registry.
HOSTILE_PLATE = '"><svg onload=alert(1)>'
HOSTILE = {
    "vehicle_number": HOSTILE_PLATE,
    "driver_name": "<img src=x onerror=\"document.title='PWNED'\">",
    "vehicle_name": "<script>document.title='PWNED-script'</script>",
    "cost_centre": "\"><img src=x onerror=alert('cc')><b>bold</b>",
}
HOSTILE_FEED = "<img src=x onerror=alert('feed')>"
HOSTILE_ALARM = "<img src=x onerror=alert('alarm')>"
PAGE_TITLE = "Fleet operator — live map and ingest health"
# The page's own progress marks (web/app.js sets them on <body>).
BOTH_SHOWN = 'document.body.dataset.ready === "1" && document.body.dataset.vehicles === "2"'
PANEL_DONE = (
    '(t => !t.startsWith("Click") && !t.includes("loading"))'
    '(document.getElementById("vehicle").textContent)'
)

# Flags of the existing page test (tests/test_operator_page.py), DevTools on a free port, and
# no name resolution for any host but loopback (belt and braces: the Tab also fails them).
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,900", "--remote-debugging-port=0",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]  # fmt: skip
# Installed before any script of the page: records CSP violations (devtools-injected scripts
# are not subject to the page's CSP).
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


# ── Chromium over the DevTools protocol ─────────────────────────────────────────────────────


class Browser:
    """One headless Chromium; tabs are DevTools sessions on one websocket."""

    def __init__(self) -> None:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        assert chromium, "Debian chromium is required (make test installs it)"
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-cdp-"))
        self.proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail("chromium did not open its DevTools port")
            time.sleep(0.1)
        port, path = port_file.read_text().split()[:2]
        self._closing = contextlib.ExitStack()
        self.ws: ClientConnection = self._closing.enter_context(
            connect(f"ws://127.0.0.1:{port}{path}", max_size=None)
        )
        self._next_id = 0
        self.tabs: dict[str, Tab] = {}

    def send(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        return self._next_id

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str = ""
    ) -> dict[str, Any]:
        """Send a command and return its result, dispatching the events that arrive first."""
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + 60
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._dispatch(message)

    def pump(self, seconds: float) -> None:
        """Dispatch events for a while (intercepted requests must be answered to go on)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                return
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        tab = self.tabs.get(message.get("sessionId", ""))
        if tab is not None and "method" in message:
            tab.on_event(message["method"], message.get("params", {}))

    def new_tab(self, app_origin: str, *, bypass_csp: bool = False) -> Tab:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        tab = Tab(self, target, session["sessionId"], app_origin)
        self.tabs[tab.session] = tab
        for method, params in (
            ("Page.enable", {}),
            ("Network.enable", {}),
            ("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}),
            ("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_RECORDER}),
            ("Page.setBypassCSP", {"enabled": bypass_csp}),
        ):
            tab.call(method, params)
        return tab

    def close(self) -> None:
        if hasattr(self, "_closing"):
            self._closing.close()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


class Tab:
    """A page: navigation, evaluation, and what it did (requests, dialogs, blocked hosts)."""

    def __init__(self, browser: Browser, target: str, session: str, app_origin: str) -> None:
        self.browser, self.target, self.session, self.app_origin = (
            browser,
            target,
            session,
            app_origin,
        )
        # Every request: {"id", "url", "headers", "blocked" (why the browser refused it)}.
        self.requests: list[dict[str, Any]] = []
        self.other_hosts: list[str] = []  # requests to anything but the app (failed)
        self.dialogs: list[str] = []

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, self.session)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Network.requestWillBeSent":
            request = params["request"]
            self.requests.append(
                {
                    "id": params["requestId"],
                    "url": request["url"],
                    "headers": request.get("headers", {}),
                    "blocked": None,
                }
            )
        elif method == "Network.loadingFailed" and params.get("blockedReason"):
            for request in self.requests:
                if request["id"] == params["requestId"]:
                    request["blocked"] = params["blockedReason"]  # e.g. "csp": never sent
        elif method == "Fetch.requestPaused":
            url = params["request"]["url"]
            if url == self.app_origin or url.startswith(self.app_origin + "/"):
                self.browser.send(
                    "Fetch.continueRequest", {"requestId": params["requestId"]}, self.session
                )
            else:
                self.other_hosts.append(url)
                self.browser.send(
                    "Fetch.failRequest",
                    {"requestId": params["requestId"], "errorReason": "InternetDisconnected"},
                    self.session,
                )
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(f"{params.get('type')}: {params.get('message')}")
            self.browser.send("Page.handleJavaScriptDialog", {"accept": False}, self.session)

    def goto(self, path: str) -> None:
        self.call("Page.navigate", {"url": self.app_origin + path})

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 45) -> Any:
        """The value of `expression` once truthy (fails after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except AssertionError:
                value = None  # e.g. the document is being replaced by a navigation
            if value:
                return value
            if time.monotonic() > deadline:
                body = self.evaluate("document.body ? document.body.innerText.slice(0, 2000) : ''")
                pytest.fail(f"timed out waiting for {expression!r}; page text:\n{body}")
            self.browser.pump(0.15)

    def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call(
                "Input.dispatchKeyEvent",
                {
                    "type": kind,
                    "key": "Enter",
                    "code": "Enter",
                    "windowsVirtualKeyCode": 13,
                    **({"text": "\r"} if kind == "keyDown" else {}),
                },
            )

    def screenshot(self, path: Path) -> None:
        OUTPUT.mkdir(exist_ok=True)
        path.write_bytes(b64decode(self.call("Page.captureScreenshot")["data"]))

    def csp_violations(self) -> list[str]:
        return list(self.evaluate("window.__cspViolations || []"))

    def close(self) -> None:
        self.browser.tabs.pop(self.session, None)
        self.browser.call("Target.closeTarget", {"targetId": self.target})


# ── Fixtures: one database, the read-API open and with keys, one browser ─────────────────────


@pytest.fixture(scope="module")
def database(pg_admin_url: str, engine_templates: dict[str, str]) -> Iterator[str]:
    """A migrated database with two vehicles, one of them registered with hostile HTML."""
    template = template_for(pg_admin_url, engine_templates, available_engines()[0])
    name = f"opsec_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_admin_url, name, template=template)
    with psycopg.connect(url, autocommit=True) as conn:
        now = db_now(conn)
        add_device(
            conn, "862798000000901", HOSTILE["vehicle_number"], driver_name=HOSTILE["driver_name"],
            vehicle_name=HOSTILE["vehicle_name"], cost_centre=HOSTILE["cost_centre"],
            city="Nairobi", vehicle_type="Van",
        )  # fmt: skip
        add_live_position(
            conn, "862798000000901", -1.2800, 36.8100, gps_time=now - timedelta(seconds=30),
            speed_kmh=42, acc_on=True,
        )  # fmt: skip
        add_device(conn, "862798000000902", "KDA 310M", driver_name="Grace Njeri",
                   cost_centre="Mombasa-Field", city="Mombasa")  # fmt: skip
        add_live_position(
            conn, "862798000000902", -4.0435, 39.6682, gps_time=now - timedelta(minutes=5),
        )  # fmt: skip
        add_ingestion_log(conn, "api", HOSTILE_FEED, ok=True, logged_at=now, rows=3)
        # An alarm of the hostile vehicle, with a hostile name: the console's alarms panel.
        add_alarm(conn, "862798000000901", now - timedelta(minutes=10), "6", HOSTILE_ALARM)
    yield url
    drop_database(pg_admin_url, name)


def _serve(database: str, **overrides: Any) -> Iterator[str]:
    settings = test_settings(database, vtrips_refresh_interval_s=0, **overrides)
    port = free_port()
    server, thread = serve_in_thread(create_app(settings), port)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(20)


@pytest.fixture(scope="module")
def api(database: str) -> Iterator[str]:
    """Origin of the read-API without keys."""
    yield from _serve(database)


@pytest.fixture(scope="module")
def keyed_api(database: str) -> Iterator[str]:
    """Origin of the read-API with DASHBOARD_API_KEYS set."""
    yield from _serve(database, dashboard_api_keys=f"{API_KEY},another-key")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chrome = Browser()
    yield chrome
    chrome.close()


def _fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def _csp(headers: dict[str, str]) -> dict[str, list[str]]:
    policy = {k.lower(): v for k, v in headers.items()}["content-security-policy"]
    directives = (part.split() for part in policy.split(";") if part.strip())
    return {d[0]: d[1:] for d in directives}


# ── Hostile registry values are text ────────────────────────────────────────────────────────


@pytest.mark.parametrize("csp", ["bypassed", "enforced"])
def test_hostile_registry_values_render_as_text(browser: Browser, api: str, csp: str) -> None:
    """With the CSP bypassed the DOM code alone must keep the markup inert; with it enforced
    the page must also run without a single violation."""
    tab = browser.new_tab(api, bypass_csp=csp == "bypassed")
    try:
        tab.goto("/?tiles=off&select=" + urllib.parse.quote(HOSTILE_PLATE, safe=""))
        tab.wait_for(BOTH_SHOWN)
        tab.wait_for(PANEL_DONE)
        panel = tab.evaluate('document.getElementById("vehicle").textContent')
        for field, value in HOSTILE.items():
            assert value in panel, f"{field} is not shown as literal text: {panel!r}"
        assert tab.evaluate('document.querySelectorAll("#vehicle *").length') > 0
        assert tab.evaluate('document.querySelector("#vehicle :is(img, svg, script)")') is None
        health = tab.evaluate('document.querySelector("#health tbody").textContent')
        assert HOSTILE_FEED in health
        # The alarms panel (GET /analytics/alarms) lists the hostile vehicle's alarm as text.
        alarms = tab.wait_for('(t => t.includes("Overspeed") || t.includes("<img") ? t : "")'
                              '(document.getElementById("alarms").textContent)')  # fmt: skip
        assert HOSTILE_PLATE in alarms, alarms

        # The tooltips: hover every marker as a mouse would and read what opens.
        centres = tab.evaluate(
            """[...document.querySelectorAll("path.vehicle-marker")].map((p) => {
                 const r = p.getBoundingClientRect();
                 return [r.left + r.width / 2, r.top + r.height / 2];
               })"""
        )  # fmt: skip
        # The selected (hostile) vehicle is always a marker; the other one is a marker or,
        # when the page's zoom is ≤ 8, a dot on the vehicle-tile canvas (no DOM, no tooltip).
        assert len(centres) in (1, 2)
        tooltips = []
        for x, y in centres:
            tab.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
            tooltips.append(tab.wait_for(
                '(document.querySelector(".leaflet-tooltip") || {}).textContent'
            ))  # fmt: skip
            tab.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 5, "y": 300})
            tab.wait_for('document.querySelector(".leaflet-tooltip") === null')
        assert any(text.startswith(HOSTILE_PLATE + " · ") for text in tooltips), tooltips
        if len(centres) == 2:
            assert any(text.startswith("KDA 310M · ") for text in tooltips), tooltips

        browser.pump(0.5)  # a late onerror/onload would have fired by now
        assert tab.evaluate("document.title") == PAGE_TITLE
        assert tab.evaluate('document.querySelector("img[src=x], svg[onload], [onerror]")') is None
        # Leaflet, Leaflet.markercluster, pbf, mvt.js (low-zoom vehicle tiles), app.js
        assert tab.evaluate('document.querySelectorAll("script").length') == 5
        assert tab.dialogs == []
        assert not any(r["url"].endswith("/x") for r in tab.requests), "an <img src=x> loaded"
        assert tab.other_hosts == []
        if csp == "enforced":
            assert tab.csp_violations() == []
            tab.screenshot(OUTPUT / "operator-page-hostile.png")
    finally:
        tab.close()


# ── Headers and what is served ───────────────────────────────────────────────────────────


def test_security_headers_and_only_the_page_files_are_served(api: str) -> None:
    status, headers, _ = _fetch(api + "/")
    assert status == 200
    policy = _csp(headers)
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert "'unsafe-inline'" not in str(policy) and "'unsafe-eval'" not in str(policy)
    # data: for Leaflet's empty GIF that cancels pending tiles (dashboard/operator.py page_csp)
    assert policy["img-src"] == ["'self'", "data:", "https://tile.openstreetmap.org"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    # Every response: the page's files, the vendored libraries, the API's JSON and its errors.
    for path in (
        "/",
        "/static/app/app.js",
        "/static/app/app.css",
        "/static/vendor/leaflet/leaflet.js",
        "/static/vendor/leaflet/leaflet.css",
        "/static/vendor/leaflet/images/layers.png",
        "/static/vendor/markercluster/leaflet.markercluster.js",
        "/static/vendor/markercluster/MarkerCluster.Default.css",
        "/static/app/basemap.geojson",
        "/webhook/live-positions",
        "/health",
        "/openapi.json",
        "/static/app/package.json",
    ):
        status, headers, _ = _fetch(api + path)
        lower = {k.lower(): v for k, v in headers.items()}
        assert lower["x-content-type-options"] == "nosniff", path
        assert lower["referrer-policy"] == "no-referrer", path
        assert "unsafe-inline" not in lower["content-security-policy"], path
        assert "frame-ancestors 'none'" in lower["content-security-policy"], path
    assert _fetch(api + "/static/app/app.js")[1]["content-type"].startswith("text/javascript")
    # The console's clustering plugin and the offline basemap are served.
    for path in (
        "/static/vendor/markercluster/leaflet.markercluster.js",
        "/static/vendor/markercluster/MarkerCluster.css",
        "/static/vendor/markercluster/MarkerCluster.Default.css",
    ):
        assert _fetch(api + path)[0] == 200, path
    status, headers, body = _fetch(api + "/static/app/basemap.geojson")
    assert status == 200 and headers["content-type"] == "application/geo+json"
    assert json.loads(body)["type"] == "FeatureCollection"
    # Nothing but what the pages load: no manifests, lockfiles, sources or listings.
    for path in (
        "/static/app/package.json",
        "/static/app/package-lock.json",
        "/static/app/index.html",
        "/static/app/node_modules/leaflet/package.json",
        "/static/app/../package.json",
        "/static/app/%2e%2e/dashboard_api.py",
        "/static/vendor/leaflet/../package.json",
        "/static/vendor/leaflet/leaflet.js.map",
        "/static/vendor/markercluster/leaflet.markercluster-src.js.map",
        "/static/vendor/markercluster/../package.json",
        "/static/vendor/swagger-ui/package.json",
        "/static/vendor/swagger-ui/index.html",
        "/static/vendor/swagger-ui/swagger-initializer.js",
        "/static/vendor/redoc/../package.json",
        "/static/",
        "/static/app/",
    ):
        assert _fetch(api + path)[0] == 404, path
    # A browser's copy stays valid until the file changes.
    _, headers, _ = _fetch(api + "/static/app/app.js")
    request = urllib.request.Request(
        api + "/static/app/app.js", headers={"If-None-Match": headers["etag"]}
    )
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        urllib.request.urlopen(request, timeout=10)
    assert not_modified.value.code == 304


# ── The API key ──────────────────────────────────────────────────────────────────────────


def test_page_asks_for_the_key_and_keeps_it_in_this_tab_only(
    browser: Browser, keyed_api: str
) -> None:
    # The page, its files and the docs need no key; the data does.
    for path in ("/", "/static/app/app.js", "/docs", "/redoc", "/openapi.json"):
        assert _fetch(keyed_api + path)[0] == 200, path
    assert _fetch(keyed_api + "/webhook/live-positions")[0] == 401

    tab = browser.new_tab(keyed_api)
    try:
        # A key in the URL is ignored (and taken out of the address bar): the page still asks.
        tab.goto(f"/?tiles=off&key={API_KEY}")
        tab.wait_for('document.body.dataset.needsKey === "1"')
        assert tab.evaluate("location.search") == "?tiles=off"
        assert tab.evaluate('document.getElementById("key-form").hidden') is False
        assert tab.evaluate("sessionStorage.length + localStorage.length") == 0
        assert tab.evaluate("document.body.dataset.vehicles") == "0"

        # Typed once into the form (as a person would), then Enter.
        tab.evaluate('document.getElementById("key-input").focus()')
        tab.call("Input.insertText", {"text": API_KEY})
        tab.press_enter()
        tab.wait_for(BOTH_SHOWN + " && Number(document.body.dataset.feeds) > 0")
        assert tab.evaluate("document.body.dataset.needsKey") == "0"
        assert tab.evaluate('document.getElementById("key-form").hidden') is True
        assert tab.evaluate('sessionStorage.getItem("dashboardApiKey")') == API_KEY
        assert tab.evaluate("localStorage.length") == 0
        assert tab.evaluate('document.getElementById("key-input").value') == ""

        # Reloading the tab keeps the key: no second prompt.
        tab.call("Page.reload")
        tab.wait_for(BOTH_SHOWN)
        assert tab.evaluate("document.body.dataset.needsKey") is None

        data_calls = [r for r in tab.requests if "/webhook/" in r["url"] or "/health/" in r["url"]]
        assert data_calls
        with_key = [r for r in data_calls if r["headers"].get("X-API-Key") == API_KEY]
        assert len(with_key) >= 4, "the data calls after the form carry the key in X-API-Key"
        # Only the address typed by the test had the key; the page never put it in a URL.
        in_urls = [r["url"] for r in tab.requests if API_KEY in r["url"]]
        assert in_urls == [f"{keyed_api}/?tiles=off&key={API_KEY}"], in_urls
        assert tab.dialogs == [] and tab.other_hosts == []
        assert tab.csp_violations() == []
    finally:
        tab.close()

    # A new tab does not inherit it (sessionStorage), and a wrong key is refused, not kept.
    tab = browser.new_tab(keyed_api)
    try:
        tab.goto("/?tiles=off")
        tab.wait_for('document.body.dataset.needsKey === "1"')
        tab.evaluate('document.getElementById("key-input").focus()')
        tab.call("Input.insertText", {"text": "not-the-key"})
        tab.press_enter()
        tab.wait_for('document.getElementById("key-message").textContent.includes("refused")')
        assert tab.evaluate('document.getElementById("key-form").hidden') is False
        assert tab.evaluate("sessionStorage.length + localStorage.length") == 0
        assert tab.evaluate("document.body.dataset.vehicles") == "0"
    finally:
        tab.close()


# ── /docs and /redoc without internet ────────────────────────────────────────────────────


def test_docs_and_redoc_render_offline_with_a_strict_csp(browser: Browser, api: str) -> None:
    for path in ("/docs", "/redoc"):
        status, headers, _ = _fetch(api + path)
        assert status == 200, path
        policy = _csp(headers)
        assert policy["script-src"] == ["'self'"], path
        assert policy["img-src"] == ["'self'", "data:"], path
        assert policy["connect-src"] == ["'self'"], path
        assert policy["frame-ancestors"] == ["'none'"], path
    assert "'unsafe-inline'" not in str(_csp(_fetch(api + "/docs")[1]))
    # FastAPI's own CDN pages are off; so is their OAuth2 redirect page.
    assert _fetch(api + "/docs/oauth2-redirect")[0] == 404

    tab = browser.new_tab(api)
    try:
        tab.goto("/docs")
        # Swagger UI built the operations from /openapi.json.
        tab.wait_for('document.querySelectorAll(".opblock").length >= 9')
        paths = tab.evaluate(
            '[...document.querySelectorAll(".opblock-summary-path")].map((e) => e.textContent)'
        )
        assert any("/webhook/live-positions" in p for p in paths), paths
        assert "Tracksolid fleet read-API" in tab.evaluate(
            '(document.querySelector(".info .title") || {}).textContent'
        )
        assert tab.csp_violations() == []
        tab.screenshot(OUTPUT / "api-docs-swagger.png")

        tab.goto("/redoc")
        # ReDoc: the API title as its heading, and the operations in the menu.
        tab.wait_for(
            '[...document.querySelectorAll("h1")].some((h) =>'
            ' h.textContent.includes("Tracksolid fleet read-API"))'
        )
        tab.wait_for('document.body.innerText.includes("/webhook/live-positions/track")')
        assert tab.evaluate('document.querySelectorAll("[role=menuitem], li label").length') > 5
        # Its search runs (in a blob: worker the CSP allows) on the bundled index.
        tab.evaluate("document.querySelector(\"input[placeholder='Search...']\").focus()")
        tab.call("Input.insertText", {"text": "track"})
        tab.wait_for(
            '(document.querySelector("[data-role=\'search:results\']") || {innerText: ""})'
            '.innerText.includes("Vehicle Track")'
        )
        # The one thing the page would fetch from elsewhere, the Redocly logo, is refused by
        # the CSP before any request is made.
        assert tab.csp_violations() == ["img-src https://cdn.redoc.ly/redoc/logo-mini.svg"]
        tab.screenshot(OUTPUT / "api-docs-redoc.png")

        assert tab.other_hosts == [], "a docs page tried to reach the internet"
        # Every request went to the app, or was refused by the browser before it was sent.
        elsewhere = [
            (r["url"], r["blocked"])
            for r in tab.requests
            if r["url"].startswith(("http:", "https:")) and not r["url"].startswith(api + "/")
        ]
        assert elsewhere == [("https://cdn.redoc.ly/redoc/logo-mini.svg", "csp")], elsewhere
        assert tab.dialogs == []
    finally:
        tab.close()


# ── Map tiles: DASHBOARD_TILE_URL, and the offline basemap when they do not load ──────────

TILE_URL = "https://tiles.example.net:8443/osm/{z}/{x}/{y}.png"


@pytest.mark.parametrize(
    ("tile_url", "img_src", "meta"),
    [
        (TILE_URL, ["'self'", "data:", "https://tiles.example.net:8443"], TILE_URL),
        ("", ["'self'", "data:"], ""),  # tiles off: the offline basemap only
        ("javascript:alert(1)//{z}/{x}/{y}", ["'self'", "data:"], ""),
        ('https://t.example/{z}/{x}/{y}.png" onload="alert(1)', ["'self'", "data:"], ""),
        ("https://user:pw@t.example/{z}/{x}/{y}.png", ["'self'", "data:"], ""),
        ("https://t.example/tiles.png", ["'self'", "data:"], ""),  # no {z}/{x}/{y}
    ],
)
def test_the_tile_server_comes_from_the_settings_and_only_its_origin_is_allowed(
    database: str, tile_url: str, img_src: list[str], meta: str
) -> None:
    server = _serve(database, dashboard_tile_url=tile_url)
    api = next(server)
    try:
        status, headers, body = _fetch(api + "/")
        assert status == 200
        assert _csp(headers)["img-src"] == img_src
        page = body.decode()
        assert f'<meta name="tile-url" content="{html.escape(meta, quote=True)}">' in page
        assert "__TILE_URL__" not in page and "onload" not in page
    finally:
        next(server, None)


def test_without_internet_the_map_shows_the_offline_basemap_and_says_tiles_are_off(
    browser: Browser, database: str
) -> None:
    server = _serve(database, dashboard_tile_url=TILE_URL)
    api = next(server)
    tab = browser.new_tab(api)
    try:
        tab.goto("/")  # tiles on, but the tile server cannot be reached (the Tab fails it)
        tab.wait_for(BOTH_SHOWN)
        tab.wait_for('document.getElementById("tiles-note") !== null')
        assert "basemap tiles off" in tab.evaluate(
            'document.getElementById("tiles-note").textContent'
        )
        assert tab.evaluate("Number(document.body.dataset.basemap)") > 10
        # The basemap's cities and roads are drawn (SVG paths in their own pane).
        assert tab.evaluate('document.querySelectorAll(".leaflet-basemap-pane path").length') > 10
        assert tab.other_hosts and all(
            u.startswith("https://tiles.example.net:8443/osm/") for u in tab.other_hosts
        )
        assert tab.csp_violations() == []
    finally:
        tab.close()
        next(server, None)
