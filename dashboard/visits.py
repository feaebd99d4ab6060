"""Read-API for ticket visits: `GET /analytics/ticket-visits` and
`GET /analytics/tickets/{ticket_id}/nearest-vehicles` (issue #16, docs/visits.md).

Both payloads are built in SQL (`reporting.fn_ticket_visits`,
`reporting.fn_ticket_nearest_vehicles`, SECURITY DEFINER, readable by `dashboard_ro`) and
returned unchanged. Parameters are text checked by dashboard/params.py; a bad one is 422
`{"detail": "<sentence>"}`, an unknown ticket 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from psycopg_pool import ConnectionPool

from dashboard.deps import require_api_key, ro_pool
from dashboard.params import check_text, filter_value, parse_day_range, parse_int

router = APIRouter(tags=["tickets"], dependencies=[Depends(require_api_key)])

MAX_LIST = 5_000
MAX_NEAREST = 100
TICKET_ID_LEN = 64

_VISITS_SQL = "SELECT reporting.fn_ticket_visits(%s, %s, %s, %s, %s, %s, %s)::text"
_NEAREST_SQL = "SELECT reporting.fn_ticket_nearest_vehicles(%s, %s, %s)::text"


def _json(pool: ConnectionPool, query: str, params: tuple[object, ...]) -> str | None:
    with pool.connection() as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


@router.get("/analytics/ticket-visits")
def ticket_visits(
    pool: Annotated[ConnectionPool, Depends(ro_pool)],
    from_: Annotated[
        str | None, Query(alias="from", description="first EAT day (YYYY-MM-DD) of ticket creation")
    ] = None,
    to: Annotated[str | None, Query(description="last EAT day (inclusive); default today")] = None,
    cluster: Annotated[str | None, Query(description="one cluster (case-insensitive)")] = None,
    region: Annotated[str | None, Query(description="one region (case-insensitive)")] = None,
    ticket_id: Annotated[str | None, Query(description="one ticket")] = None,
    vehicle: Annotated[str | None, Query(description="plate, device name or IMEI")] = None,
    limit: Annotated[str | None, Query(description=f"rows per list, 1-{MAX_LIST}")] = None,
) -> Response:
    """Visits, KPIs per day/cluster/region, closed tickets without a visit, open tickets not
    yet visited — for tickets created in [from, to] (default: the last 7 days)."""
    start, end = parse_day_range(from_, to, names=("from", "to"))
    rows = parse_int("limit", limit, default=500, low=1, high=MAX_LIST, clamp_high=True)
    params = (
        start,
        end,
        filter_value(cluster, "cluster"),
        filter_value(region, "region"),
        filter_value(ticket_id, "ticket_id"),
        filter_value(vehicle, "vehicle"),
        rows,
    )
    return Response(
        content=_json(pool, _VISITS_SQL, params) or "null", media_type="application/json"
    )


@router.get("/analytics/tickets/{ticket_id}/nearest-vehicles")
def nearest_vehicles(
    pool: Annotated[ConnectionPool, Depends(ro_pool)],
    ticket_id: Annotated[str, Path(description="the ticket (INC number)")],
    limit: Annotated[
        str | None, Query(description=f"vehicles, 1-{MAX_NEAREST} (default 10)")
    ] = None,
    max_age_h: Annotated[
        str | None, Query(description="ignore vehicles whose last fix is older (hours, 1-720)")
    ] = None,
) -> Response:
    """The vehicles nearest to the ticket now (live positions), with distance and status."""
    ticket = check_text("ticket_id", ticket_id, max_len=TICKET_ID_LEN).strip()
    count = parse_int("limit", limit, default=10, low=1, high=MAX_NEAREST, clamp_high=True)
    hours = parse_int("max_age_h", max_age_h, default=24, low=1, high=720)
    text = _json(pool, _NEAREST_SQL, (ticket, count, hours))
    if text is None:
        raise HTTPException(404, f"there is no ticket {ticket[:TICKET_ID_LEN]!r}")
    return Response(content=text, media_type="application/json")
