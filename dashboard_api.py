"""The dashboard read-API (FastAPI): live map, vehicle tracks, trips map, fleet analytics.

Run it with `uvicorn dashboard_api:app` (or `python dashboard_api.py`). Endpoints are in
`dashboard/routes.py` (docs/api.md lists them with example answers; OpenAPI at `/docs`).

- GeoJSON / JSON is built in PostgreSQL by `reporting.fn_*` and passed through as text.
- Reads go through the read-only role (`DASHBOARD_DATABASE_URL`, which may be a hot standby);
  only the `v_trips` refresher (FIX-D02, `dashboard/refresher.py`) uses the read-write
  `DATABASE_URL`, and runs here only when the database is writable (else the worker's job).
- CORS origins come from `DASHBOARD_CORS_ORIGINS` (FIX-D03); with `DASHBOARD_API_KEYS` set,
  every data endpoint needs `X-API-Key` or `Authorization: Bearer` (else 401); a key in the
  URL (`?key=`) is always refused, and the access log redacts `key=` / `token=` values.
- Every error is `{"detail": "<one sentence>"}` (dashboard/errors.py): bad parameters and
  unknown filter values → 422, a body over 1 MiB → 413, database unavailable → 503, a query
  cancelled by `DASHBOARD_STATEMENT_TIMEOUT_S` → 503.
- Optional routers `dashboard/tickets.py` and `dashboard/fuel.py` (`router = APIRouter()`)
  are mounted when present, behind the same API-key check.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware import Middleware
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from dashboard import apidocs, geofences, live_stream, operator
from dashboard.compression import CompressionMiddleware
from dashboard.deps import require_api_key
from dashboard.errors import install_error_handlers
from dashboard.refresher import RefresherHost
from dashboard.routes import data_router, health_router
from ts_shared import RedactSecretsFilter, Settings, make_pool, setup_logging

log = logging.getLogger(__name__)

OPTIONAL_ROUTERS = (
    "dashboard.tickets",
    "dashboard.fuel",
    "dashboard.visits",
    "dashboard.alerts",
    "dashboard.lists",  # trips / stops / alarms lists and their CSV (issue #18)
    "dashboard.tiles",  # vector tiles of live positions, trips, tracks (issue #19)
)


def redact_access_log() -> None:
    """Make uvicorn's access log print `key=***` / `token=***` instead of query values
    (once per process, however many apps start)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecretsFilter) for f in access.filters):
        access.addFilter(RedactSecretsFilter())


class SettingsCORSMiddleware:
    """CORS with the origins of the app's Settings.

    Settings are built in the lifespan (never at import time), after Starlette has fixed its
    middleware list, so the real CORSMiddleware is created on the first HTTP request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._cors: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._cors is None:
            settings: Settings = scope["app"].state.settings
            self._cors = CORSMiddleware(
                self.app,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["Content-Type", "X-API-Key", "Authorization"],
                max_age=600,
            )
        await self._cors(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the read-API. `settings=None` reads the environment when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        current = settings
        if current is None:  # the production path: `uvicorn dashboard_api:app`
            current = Settings()
            setup_logging(current.log_level)
        redact_access_log()  # after uvicorn (and setup_logging) configured logging
        app.state.settings = current
        app.state.ro_pool = make_pool(
            current.dashboard_dsn(),
            min_size=current.db_pool_min_size,
            max_size=current.db_pool_max_size,
            name="dashboard_api",
            open_wait=False,  # start (and answer /health with 503) while the DB is down
            timeout=10.0,
            # A runaway read is cancelled by the server and answered 503 (dashboard/errors.py).
            statement_timeout_s=current.dashboard_statement_timeout_s,
        )
        # Where reporting.v_trips is refreshed: here only when this API can write (issue
        # #19: on a hot standby the ingest worker's job does it); /health says which.
        host = RefresherHost(current)
        app.state.refresher_host = host
        await host.start()
        if host.refresher is not None:
            app.state.refresher = host.refresher
        live_hub = await live_stream.start_hub(app, current)  # SSE fan-out (issue #19)
        try:
            yield
        finally:
            await live_hub.stop()
            await host.stop()
            app.state.ro_pool.close()

    app = FastAPI(
        title="Tracksolid fleet read-API",
        version="1.0",
        description=(
            "Live positions, vehicle tracks and trips as GeoJSON, and fleet analytics, built "
            "in PostgreSQL (`reporting.fn_*`). Times are UTC ISO-8601 in answers; naive times "
            "and dates in requests are East Africa Time (UTC+3). See docs/api.md."
        ),
        lifespan=lifespan,
        # /docs and /redoc are dashboard/apidocs.py (assets from npm, no CDN, a strict CSP).
        docs_url=None,
        redoc_url=None,
        middleware=[Middleware(operator.SecurityHeadersMiddleware)],
    )
    app.add_middleware(SettingsCORSMiddleware)
    # Outermost: br / gzip and ETag → 304 on the finished answer, CORS headers included
    # (dashboard/compression.py, issue #19).
    app.add_middleware(CompressionMiddleware)
    install_error_handlers(app)  # every 4xx/5xx is {"detail": "<one sentence>"}
    app.include_router(health_router)
    app.include_router(data_router)
    app.include_router(live_stream.router)  # its own auth: key header or stream token
    # The operator page (static; its data calls go through the routes above).
    app.include_router(operator.router)
    app.include_router(apidocs.router)
    # Geofences carry their own key checks: reads DASHBOARD_API_KEYS, writes GEOFENCE_ADMIN_KEYS.
    app.include_router(geofences.router)
    for module_name in OPTIONAL_ROUTERS:
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        app.include_router(module.router, dependencies=[Depends(require_api_key)])
    return app


app = create_app()


def main() -> None:
    """Entry point: `python dashboard_api.py` (same as `uvicorn dashboard_api:app`)."""
    import uvicorn  # noqa: PLC0415 - only the script path needs it

    uvicorn.run("dashboard_api:app", host="0.0.0.0", port=8890, proxy_headers=True)


if __name__ == "__main__":
    main()
