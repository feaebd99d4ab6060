"""Read-API for tickets: `GET /analytics/inc-dashboard` and `GET /analytics/tickets-map`.

The payloads are built in SQL by `reporting.fn_inc_dashboard` / `reporting.fn_tickets_for_map`
(SECURITY DEFINER, readable by `dashboard_ro`) and returned unchanged. Mounted by
dashboard_api.py with `app.include_router(tickets.router)`; the pool and settings come from
`app.state` (see dashboard/deps.py). Bad parameters give 422 with a message saying why.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from psycopg_pool import ConnectionPool

from dashboard.deps import json_from_sql, require_api_key, ro_pool

router = APIRouter(tags=["tickets"], dependencies=[Depends(require_api_key)])

MAX_RANGE_DAYS = 366
Window = Literal["24h", "7d", "30d", "90d", "custom"]
Status = Literal[
    "all", "open", "pending", "actionable", "breached", "new", "assigned", "in_progress", "other"
]

_DASHBOARD_SQL = "SELECT reporting.fn_inc_dashboard(%s, %s, %s, %s, %s)::text"
_MAP_SQL = "SELECT reporting.fn_tickets_for_map()::text"


def _aware(moment: datetime | None) -> datetime | None:
    """Times without an offset are read as EAT, like everything else the tickets feed sends."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC) - timedelta(hours=3)
    return moment


@router.get("/analytics/inc-dashboard")
def inc_dashboard(
    pool: Annotated[ConnectionPool, Depends(ro_pool)],
    cluster: Annotated[str | None, Query(max_length=100, description="one cluster")] = None,
    status: Annotated[Status, Query(description="filter of the open layer")] = "all",
    window: Annotated[Window | None, Query(description="closed overlay and flow window")] = None,
    from_: Annotated[
        datetime | None, Query(alias="from", description="window start (ISO-8601; naive = EAT)")
    ] = None,
    to: Annotated[datetime | None, Query(description="window end (ISO-8601; naive = EAT)")] = None,
) -> Response:
    """The FleetOps live INC map: open GeoJSON + windowed closed GeoJSON + metrics + freshness."""
    start, end = _aware(from_), _aware(to)
    if window is None:
        window = "custom" if (start is not None and end is not None) else "7d"
    if window == "custom" and (start is None or end is None):
        raise HTTPException(status_code=422, detail="window=custom needs both 'from' and 'to'")
    if start is not None and end is not None:
        if start >= end:
            raise HTTPException(status_code=422, detail="'from' must be before 'to'")
        if end - start > timedelta(days=MAX_RANGE_DAYS):
            raise HTTPException(
                status_code=422, detail=f"the range may span at most {MAX_RANGE_DAYS} days"
            )
    cluster_value = cluster.strip() if cluster and cluster.strip() else None
    return json_from_sql(pool, _DASHBOARD_SQL, (cluster_value, status, window, start, end))


@router.get("/analytics/tickets-map")
def tickets_map(pool: Annotated[ConnectionPool, Depends(ro_pool)]) -> Response:
    """Every open ticket with a location as GeoJSON, with counts and feed freshness."""
    return json_from_sql(pool, _MAP_SQL)
