"""The read-API's endpoints: maps (`/webhook/*`, paths the FleetNow SPAs already call),
analytics for FleetOps (`/analytics/*`) and health (`/health`, `/health/ingest`).

Every data endpoint runs one `SELECT reporting.fn_...(...)::text` through the read-only pool
and returns PostgreSQL's JSON text unchanged (`json_from_sql`). Parameter errors raise
`ParamError` here or SQLSTATE 22023 in SQL; the app maps both to HTTP 422.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg_pool import ConnectionPool, PoolTimeout

from dashboard.deps import json_from_sql, require_api_key, ro_pool
from dashboard.params import (
    merge_fields,
    parse_body,
    parse_day_range,
    parse_hours,
    parse_trip_query,
)

Pool = Annotated[ConnectionPool, Depends(ro_pool)]

data_router = APIRouter(dependencies=[Depends(require_api_key)])
health_router = APIRouter(tags=["health"])

_JSON: dict[str, Any] = {"content": {"application/json": {}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "DASHBOARD_API_KEYS is set and no valid key was sent"},
    422: {"description": "A parameter is malformed or out of range; `detail` says which"},
}


def _doc(example: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"description": f"JSON built in PostgreSQL. {example}", **_JSON},
        **_ERRORS,
    }


class _RawTextLoader(Loader):
    """Load `text` as the bytes PostgreSQL sent (no UTF-8 decode / re-encode)."""

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


def _json_bytes_from_sql(pool: ConnectionPool, query: str, params: Sequence[Any]) -> Response:
    """Like deps.json_from_sql, for answers of tens of MB (a week of trips): the JSON text
    goes from the socket to the response as bytes, saving a decode and an encode."""
    with pool.connection() as conn, conn.cursor() as cur:
        cur.adapters.register_loader("text", _RawTextLoader)
        row = cur.execute(query, params).fetchone()
    body = row[0] if row and row[0] is not None else b"null"
    return Response(content=body, media_type="application/json")


# ── Maps (FleetNow / liveposition / fleetintelligence) ────────────────────────────────────


@data_router.get(
    "/webhook/live-positions",
    tags=["maps"],
    response_class=Response,
    responses=_doc("GeoJSON FeatureCollection of Points, one per vehicle, plus `summary`."),
)
def live_positions(
    pool: Pool,
    cost_centre: Annotated[
        str | None, Query(description="exact cost centre; empty/all = every")
    ] = None,
    acc_status: Annotated[
        str | None, Query(description="on | off | moving | idle | parked | offline | all")
    ] = None,
) -> Response:
    """Current position of every active vehicle (`reporting.fn_live_positions`)."""
    return json_from_sql(
        pool, "SELECT reporting.fn_live_positions(%s, %s)::text", (cost_centre, acc_status)
    )


@data_router.get(
    "/webhook/live-positions/track",
    tags=["maps"],
    response_class=Response,
    responses=_doc("GeoJSON: a LineString of the fixes plus start/end Points, and `summary`."),
)
def vehicle_track(
    pool: Pool,
    vehicle_number: Annotated[
        str | None, Query(description="plate in any spelling ('KCA 542Q', 'kca542q') or IMEI")
    ] = None,
    hours: Annotated[str | None, Query(description="1-168, default 24")] = None,
) -> Response:
    """Track of one vehicle over the last `hours` (`reporting.fn_vehicle_track`)."""
    hours_n = parse_hours(hours)
    return json_from_sql(
        pool, "SELECT reporting.fn_vehicle_track(%s, %s)::text", (vehicle_number or "", hours_n)
    )


@data_router.post(
    "/webhook/fleet-dashboard",
    tags=["maps"],
    response_class=Response,
    responses=_doc(
        "GeoJSON FeatureCollection of trips (LineString start→end), `summary` over every"
        " matching trip (with the cap), and `filters` (the dropdown options)."
    ),
    openapi_extra={
        "requestBody": {
            "description": "Filters as application/x-www-form-urlencoded (what the SPA sends,"
            " FIX-D01) or JSON. Fields: vehicles (repeated, comma-separated or a list),"
            " driver, cost_centre, city, start, end (YYYY-MM-DD or ISO-8601; naive = EAT;"
            " a date-only end includes that day), limit (≤ 50000).",
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "additionalProperties": {"type": "string"}}
                },
                "application/json": {"schema": {"type": "object"}},
            },
        }
    },
)
async def fleet_dashboard(request: Request, pool: Pool) -> Response:
    """Trips for the map plus filter options (`reporting.fn_trips_for_map`)."""
    content_type = request.headers.get("content-type")
    if (content_type or "").lower().startswith("multipart/form-data"):
        form = await request.form()
        body_fields = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    else:
        parsed = parse_body(content_type, await request.body())
        body_fields = [(k, v) for k, values in parsed.items() for v in values]
    fields = merge_fields(request.query_params.multi_items(), body_fields)
    query = parse_trip_query(fields)
    return await run_in_threadpool(
        _json_bytes_from_sql,
        pool,
        "SELECT reporting.fn_trips_for_map_text(%s, %s, %s, %s, %s, %s, %s, true)",
        (
            query.vehicles,
            query.driver,
            query.cost_centre,
            query.city,
            query.start,
            query.end,
            query.limit,
        ),
    )


# ── Analytics (FleetOps) ──────────────────────────────────────────────────────────────────


@data_router.get(
    "/analytics/fleet-summary",
    tags=["analytics"],
    response_class=Response,
    responses=_doc("Live status counts, today's totals, per cost centre, 14-day km trend..."),
)
def fleet_summary(
    pool: Pool,
    cost_centre: Annotated[str | None, Query(description="empty/all = whole fleet")] = None,
) -> Response:
    """Fleet KPIs of today, East Africa Time (`reporting.fn_fleet_summary`)."""
    return json_from_sql(pool, "SELECT reporting.fn_fleet_summary(%s)::text", (cost_centre,))


@data_router.get(
    "/analytics/utilisation",
    tags=["analytics"],
    response_class=Response,
    responses=_doc("Driving / idle / parked seconds per vehicle and per day, with totals."),
)
def utilisation(
    pool: Pool,
    start: Annotated[
        str | None, Query(description="first day YYYY-MM-DD (EAT); default end-6")
    ] = None,
    end: Annotated[
        str | None, Query(description="last day YYYY-MM-DD (EAT); default today")
    ] = None,
    cost_centre: str | None = None,
    vehicle_number: str | None = None,
) -> Response:
    """Driving vs idle (ignition on, not moving) vs parked time (`reporting.fn_utilisation`)."""
    first, last = parse_day_range(start, end)
    return json_from_sql(
        pool,
        "SELECT reporting.fn_utilisation(%s, %s, %s, %s)::text",
        (first, last, cost_centre, vehicle_number),
    )


@data_router.get(
    "/analytics/driver-behaviour",
    tags=["analytics"],
    response_class=Response,
    responses=_doc("Per driver: trips, km, harsh events, aggression index; clock of `end`."),
)
def driver_behaviour(
    pool: Pool,
    start: Annotated[
        str | None, Query(description="first day YYYY-MM-DD (EAT); default end-6")
    ] = None,
    end: Annotated[
        str | None, Query(description="last day YYYY-MM-DD (EAT); default today")
    ] = None,
    cost_centre: str | None = None,
) -> Response:
    """Aggression index and driver clock (`reporting.fn_driver_behaviour`)."""
    first, last = parse_day_range(start, end)
    return json_from_sql(
        pool,
        "SELECT reporting.fn_driver_behaviour(%s, %s, %s)::text",
        (first, last, cost_centre),
    )


@data_router.get(
    "/analytics/filters",
    tags=["analytics"],
    response_class=Response,
    responses=_doc("vehicles (objects), drivers, cost_centres, cities."),
)
def filters(pool: Pool) -> Response:
    """Options of the dashboards' dropdowns (`reporting.fn_filter_options`)."""
    return json_from_sql(pool, "SELECT reporting.fn_filter_options()::text")


@data_router.get(
    "/health/ingest",
    tags=["health"],
    response_class=Response,
    responses=_doc("Worst status and one row per API method / push path."),
)
def ingest_health(pool: Pool) -> Response:
    """Freshness of every ingest feed (`reporting.v_ingest_health`)."""
    return json_from_sql(pool, "SELECT reporting.fn_ingest_health()::text")


# ── Liveness ──────────────────────────────────────────────────────────────────────────────


@health_router.get("/health", response_class=Response)
def health(pool: Pool) -> Response:
    """200 when the read-only database connection answers within 5 s, else 503.

    No API key needed (load balancers and uptime probes call it).
    """
    sql = (
        "SELECT json_build_object('status', 'ok', 'database', 'ok',"
        " 'v_trips_refreshed_at', (SELECT max(finished_at) FROM reporting.refresh_log"
        "  WHERE object_name = 'reporting.v_trips' AND ok))::text"
    )
    try:
        with pool.connection(timeout=min(5.0, pool.timeout)) as conn:
            row = conn.execute(sql).fetchone()
    except (PoolTimeout, psycopg.Error) as exc:
        body = json.dumps({"status": "degraded", "database": type(exc).__name__})
        return Response(body, status_code=503, media_type="application/json")
    return Response(row[0] if row else "null", media_type="application/json")
