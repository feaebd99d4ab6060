"""The operator page at `/`: live fleet map, a vehicle's track on click, ingest health.

Static files only (web/index.html, app.js, app.css) plus Leaflet from web/node_modules
(installed from npm by `make deps` / the Dockerfile's web stage — no CDN at run time). The
page calls the read-API's own endpoints, so it needs no database access of its own.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB = Path(__file__).resolve().parent.parent / "web"
LEAFLET = WEB / "node_modules" / "leaflet" / "dist"

router = APIRouter()


@router.get("/", include_in_schema=False)
def operator_page() -> FileResponse:
    """The operator page."""
    return FileResponse(WEB / "index.html", media_type="text/html")


def mount_static(app: FastAPI) -> None:
    """Serve the page's own files and the vendored map library."""
    app.mount("/static/app", StaticFiles(directory=WEB, check_dir=False), name="operator-app")
    app.mount(
        "/static/vendor/leaflet", StaticFiles(directory=LEAFLET, check_dir=False), name="leaflet"
    )
