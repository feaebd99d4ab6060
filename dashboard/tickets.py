"""Read-API for tickets: `GET /analytics/inc-dashboard` and `GET /analytics/tickets-map`.

The payloads are built in SQL by `reporting.fn_inc_dashboard` / `reporting.fn_tickets_for_map`
(SECURITY DEFINER, readable by `dashboard_ro`) and returned unchanged. Mounted by
dashboard_api.py with `app.include_router(tickets.router)`; the pool and settings come from
`app.state` (see dashboard/deps.py). Parameters are text checked by
`dashboard.params.parse_inc_query`; bad ones and an unknown cluster give 422
`{"detail": "<sentence>"}` (dashboard/errors.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from psycopg_pool import ConnectionPool

from dashboard.deps import json_from_sql, require_api_key, ro_pool
from dashboard.params import TICKET_STATUSES, TICKET_WINDOWS, parse_inc_query

router = APIRouter(tags=["tickets"], dependencies=[Depends(require_api_key)])

# `params.from` / `params.to` echo the caller's text when given (the computed bounds else).
_DASHBOARD_SQL = """
SELECT (d || jsonb_build_object('params', (d -> 'params')
        || jsonb_strip_nulls(jsonb_build_object('from', %s::text, 'to', %s::text))))::text
FROM reporting.fn_inc_dashboard(%s, %s, %s, %s, %s) AS d
"""
_MAP_SQL = "SELECT reporting.fn_tickets_for_map()::text"


@router.get("/analytics/inc-dashboard")
def inc_dashboard(
    pool: Annotated[ConnectionPool, Depends(ro_pool)],
    cluster: Annotated[
        str | None, Query(description="one cluster (case-insensitive); empty/all = every")
    ] = None,
    status: Annotated[
        str | None, Query(description="filter of the open layer: " + " | ".join(TICKET_STATUSES))
    ] = None,
    window: Annotated[
        str | None,
        Query(description="closed overlay and flow window: " + " | ".join(TICKET_WINDOWS)),
    ] = None,
    from_: Annotated[
        str | None, Query(alias="from", description="window start (ISO-8601; naive = EAT)")
    ] = None,
    to: Annotated[
        str | None,
        Query(description="window end (ISO-8601; naive = EAT; a date-only `to` includes it)"),
    ] = None,
) -> Response:
    """The FleetOps live INC map: open GeoJSON + windowed closed GeoJSON + metrics + freshness."""
    q = parse_inc_query(cluster, status, window, from_, to)
    return json_from_sql(
        pool,
        _DASHBOARD_SQL,
        (q.start_text, q.end_text, q.cluster, q.status, q.window, q.start, q.end),
    )


@router.get("/analytics/tickets-map")
def tickets_map(pool: Annotated[ConnectionPool, Depends(ro_pool)]) -> Response:
    """Every open ticket with a location as GeoJSON, with counts and feed freshness."""
    return json_from_sql(pool, _MAP_SQL)
