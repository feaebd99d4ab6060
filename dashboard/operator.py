"""The operator console at `/`: fleet map, vehicle list, tracks with playback, trips, stops,
alarms, tickets and fuel layers, KPIs and ingest health.

Static files only (web/index.html, app.js, app.css, the offline basemap web/basemap.geojson
made by scripts/make_basemap.py) plus Leaflet and Leaflet.markercluster from web/node_modules
(installed from npm by `make deps` / the Dockerfile's web stage — no CDN at run time). The
page calls the read-API's own endpoints, so it needs no database access of its own.

Map tiles come from `DASHBOARD_TILE_URL` (default OpenStreetMap; empty = no tiles, the
offline basemap only): the page reads it from a <meta> tag and the page's CSP allows images
from that URL's origin only.

Security: only the files listed in `STATIC_FILES` are served (never web/package.json, the
lockfile or a node_modules listing), and every response carries a Content-Security-Policy
without `unsafe-inline`, `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`
(`SecurityHeadersMiddleware`); the HTML pages send their own, page-specific policy.
"""

from __future__ import annotations

import html
import logging
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WEB = Path(__file__).resolve().parent.parent / "web"
NODE_MODULES = WEB / "node_modules"
LEAFLET = NODE_MODULES / "leaflet" / "dist"
MARKERCLUSTER = NODE_MODULES / "leaflet.markercluster" / "dist"
SWAGGER_UI = NODE_MODULES / "swagger-ui-dist"
REDOC = NODE_MODULES / "redoc" / "bundles"
PBF = NODE_MODULES / "pbf" / "dist"

log = logging.getLogger(__name__)

# The map's optional background (web/app.js, `?tiles=off` skips it) when DASHBOARD_TILE_URL
# is not set: its origin is the only other host the operator page may load anything from.
DEFAULT_TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
TILE_PLACEHOLDER = "__TILE_URL__"


def page_csp(origin: str) -> str:
    """The operator page's policy: its scripts and styles are files of this origin; Leaflet
    positions its panes through the CSSOM (element.style), which CSP does not restrict.
    Images: this origin, `data:` (Leaflet cancels a pending tile by pointing it at an
    empty data: GIF — without it every zoom logs a CSP violation) and the tile server's
    origin (none when tiles are off)."""
    images = f"'self' data: {origin}".strip()
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        f"img-src {images}; connect-src 'self'; object-src 'none'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


def tile_origin(url: str) -> str | None:
    """The origin of a tile URL template (`https://tiles.example/{z}/{x}/{y}.png`), or None
    when it is not an http(s) URL with the {z}/{x}/{y} placeholders (then: no tiles)."""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or any(c in url for c in " ,;'\"<>")
        or not all(p in url for p in ("{z}", "{x}", "{y}"))
    ):
        return None
    return f"{parts.scheme}://{parts.netloc}"


# Everything that is not an HTML page (JSON, GeoJSON, scripts, styles, images): nothing may
# run or load in its context if a browser is ever made to render it.
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

SECURITY_HEADERS = {
    "content-security-policy": DEFAULT_CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}

# URL path under /static/ → file. Only what the pages load; anything else is a 404.
STATIC_FILES: dict[str, Path] = {
    "app/app.js": WEB / "app.js",
    "app/app.css": WEB / "app.css",
    "app/apidocs.js": WEB / "apidocs.js",
    "app/apidocs.css": WEB / "apidocs.css",
    "vendor/leaflet/leaflet.js": LEAFLET / "leaflet.js",
    "vendor/leaflet/leaflet.css": LEAFLET / "leaflet.css",
    "app/basemap.geojson": WEB / "basemap.geojson",
    # Low-zoom vehicle tiles: pbf's browser build reads protobuf, web/mvt.js decodes MVT.
    "app/mvt.js": WEB / "mvt.js",
    "vendor/pbf/pbf.js": PBF / "pbf.js",
    "vendor/markercluster/leaflet.markercluster.js": MARKERCLUSTER / "leaflet.markercluster.js",
    "vendor/markercluster/MarkerCluster.css": MARKERCLUSTER / "MarkerCluster.css",
    "vendor/markercluster/MarkerCluster.Default.css": MARKERCLUSTER / "MarkerCluster.Default.css",
    **{
        f"vendor/leaflet/images/{name}": LEAFLET / "images" / name
        for name in (
            "layers.png",
            "layers-2x.png",
            "marker-icon.png",
            "marker-icon-2x.png",
            "marker-shadow.png",
        )
    },
    "vendor/swagger-ui/swagger-ui-bundle.js": SWAGGER_UI / "swagger-ui-bundle.js",
    "vendor/swagger-ui/swagger-ui.css": SWAGGER_UI / "swagger-ui.css",
    "vendor/swagger-ui/favicon-32x32.png": SWAGGER_UI / "favicon-32x32.png",
    "vendor/redoc/redoc.standalone.js": REDOC / "redoc.standalone.js",
}

router = APIRouter()


@cache
def _page_template(mtime_ns: int) -> str:
    """web/index.html (re-read when the file changes)."""
    del mtime_ns  # only the cache key
    return (WEB / "index.html").read_text(encoding="utf-8")


def _tile_url(request: Request) -> str:
    """DASHBOARD_TILE_URL of the app's settings (default OpenStreetMap; "" or "off" = no
    internet tiles)."""
    settings = getattr(request.app.state, "settings", None)
    url = getattr(settings, "dashboard_tile_url", DEFAULT_TILE_URL)
    if not isinstance(url, str):
        return DEFAULT_TILE_URL
    return "" if url.strip().lower() == "off" else url.strip()


@router.get("/", include_in_schema=False)
def operator_page(request: Request) -> Response:
    """The operator console, with the tile URL in a <meta> tag and its origin in the CSP."""
    url = _tile_url(request)
    origin = tile_origin(url) if url else None
    if url and origin is None:
        log.warning("DASHBOARD_TILE_URL is not an http(s) URL with {z}/{x}/{y}: tiles are off")
    page = _page_template((WEB / "index.html").stat().st_mtime_ns).replace(
        TILE_PLACEHOLDER, html.escape(url if origin else "", quote=True)
    )
    return Response(
        page,
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": page_csp(origin or ""), "Cache-Control": "no-cache"},
    )


@router.get("/static/{path:path}", include_in_schema=False)
def static_file(path: str, request: Request) -> Response:
    """One file of the pages; 404 for anything not in STATIC_FILES (or not installed), 304
    when the browser's copy is current."""
    file = STATIC_FILES.get(path)
    try:
        stat = file.stat() if file is not None else None
    except OSError:
        stat = None
    if file is None or stat is None:
        raise HTTPException(status_code=404, detail="Not Found")
    # no-cache: revalidate each time (an upgrade of the page or a library shows at once).
    response = FileResponse(
        file,
        stat_result=stat,
        headers={"Cache-Control": "no-cache"},
        media_type="application/geo+json" if file.suffix == ".geojson" else None,
    )
    etag = response.headers["etag"]
    if etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": "no-cache"})
    return response


class SecurityHeadersMiddleware:
    """Add the security headers to every HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
