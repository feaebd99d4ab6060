"""The operator page at `/`: live fleet map, a vehicle's track on click, ingest health.

Static files only (web/index.html, app.js, app.css) plus Leaflet from web/node_modules
(installed from npm by `make deps` / the Dockerfile's web stage — no CDN at run time). The
page calls the read-API's own endpoints, so it needs no database access of its own.

Security: only the files listed in `STATIC_FILES` are served (never web/package.json, the
lockfile or a node_modules listing), and every response carries a Content-Security-Policy
without `unsafe-inline`, `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`
(`SecurityHeadersMiddleware`); the HTML pages send their own, page-specific policy.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WEB = Path(__file__).resolve().parent.parent / "web"
NODE_MODULES = WEB / "node_modules"
LEAFLET = NODE_MODULES / "leaflet" / "dist"
SWAGGER_UI = NODE_MODULES / "swagger-ui-dist"
REDOC = NODE_MODULES / "redoc" / "bundles"

# The map's optional background (web/app.js, `?tiles=off` skips it): the only other host the
# operator page may load anything from.
TILE_ORIGIN = "https://tile.openstreetmap.org"

# The operator page: its scripts and styles are files of this origin; Leaflet positions its
# panes through the CSSOM (element.style), which CSP does not restrict.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    f"img-src 'self' {TILE_ORIGIN}; connect-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
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


@router.get("/", include_in_schema=False)
def operator_page() -> FileResponse:
    """The operator page."""
    return FileResponse(
        WEB / "index.html",
        media_type="text/html",
        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
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
    response = FileResponse(file, stat_result=stat, headers={"Cache-Control": "no-cache"})
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
