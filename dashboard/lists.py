"""Read-API lists (issue #18): `GET /analytics/trips`, `/analytics/stops`, `/analytics/alarms`.

JSON pages are built in SQL (`reporting.fn_*_page`, migrations/R__reporting_lists.sql) and
returned unchanged: `{"items": [...], "next_cursor": "..." | null, "count": n}`, newest
first. Paging is keyset: pass `next_cursor` back as `cursor` until it is null; every row of
the window comes exactly once, even while new rows arrive (they are newer than the first page).

`format=csv` or `Accept: text/csv` streams every row of the window instead (no paging;
dashboard/export.py) from the same row functions, so the CSV has the JSON items' columns.

Parameters are text checked in dashboard/params.py (422 with one sentence); an unknown
vehicle / cost centre is refused by reporting.check_filters (422). Mounted by dashboard_api.py
behind the API-key check.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from psycopg_pool import ConnectionPool

from dashboard.deps import json_from_sql, require_api_key, ro_pool
from dashboard.export import csv_response, export_filename
from dashboard.params import (
    ALARMS_DEFAULT_HOURS,
    LIST_DEFAULT_DAYS,
    Cursor,
    Window,
    filter_value,
    parse_bool,
    parse_cursor,
    parse_format,
    parse_list_limit,
    parse_list_values,
    parse_severities,
    parse_window,
)

router = APIRouter(tags=["lists"], dependencies=[Depends(require_api_key)])

Pool = Annotated[ConnectionPool, Depends(ro_pool)]
VehicleQ = Annotated[
    str | None, Query(description="plate in any spelling ('KCA 542Q', 'kca542q') or IMEI")
]
CostCentreQ = Annotated[str | None, Query(description="cost centre (case-insensitive)")]
StartQ = Annotated[
    str | None,
    Query(description="YYYY-MM-DD (EAT day) or ISO-8601 (naive = EAT); see the default below"),
]
EndQ = Annotated[
    str | None,
    Query(description="YYYY-MM-DD (that EAT day included) or ISO-8601; default now"),
]
LimitQ = Annotated[str | None, Query(description="rows per page, 1-5000, default 200")]
CursorQ = Annotated[str | None, Query(description="next_cursor of the previous page")]
FormatQ = Annotated[
    str | None, Query(description="json (default) or csv (every row of the window)")
]
AcceptH = Annotated[str | None, Header(description="text/csv asks for CSV like format=csv")]

_JSON_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON page {items, next_cursor, count}, or CSV with format=csv",
        "content": {"application/json": {}, "text/csv": {}},
    },
    422: {"description": "a parameter is malformed or out of range; `detail` says which"},
}


def _after(cursor: Cursor | None) -> tuple[Any, Any]:
    return (cursor.time, cursor.id) if cursor else (None, None)


def _filters(vehicle_number: str | None, cost_centre: str | None) -> tuple[str | None, ...]:
    return (
        filter_value(vehicle_number, "vehicle_number"),
        filter_value(cost_centre, "cost_centre"),
    )


def _csv(
    pool: ConnectionPool, kind: str, query: str, params: tuple[Any, ...], window: Window
) -> Response:
    # check_filters in WHERE is a one-time filter: an unknown value fails on the first FETCH
    return csv_response(
        pool, query, params, export_filename(kind, window.first_day, window.last_day)
    )


def _vehicle_list(
    pool: ConnectionPool,
    kind: str,
    rows_fn: str,
    filters: tuple[str | None, str | None, str | None, str | None],
    paging: tuple[str | None, str | None, str | None, str | None],
) -> Response:
    """Trips or stops of a window: a JSON page (`reporting.fn_<kind>_page`) or, asked for
    CSV, every row of the window (`rows_fn`). `filters` = (vehicle_number, cost_centre,
    start, end) as sent; `paging` = (limit, cursor, format, Accept) as sent."""
    vehicle, cc = _filters(filters[0], filters[1])
    window = parse_window(filters[2], filters[3], default=timedelta(days=LIST_DEFAULT_DAYS))
    limit, cursor, fmt, accept = paging
    if parse_format(fmt, accept) == "csv":
        return _csv(
            pool,
            kind,
            f"SELECT r.* FROM reporting.{rows_fn}(%s, %s, %s, %s) r"
            " WHERE reporting.check_filters(%s, p_vehicles => ARRAY[%s]::text[])",
            (vehicle, cc, window.start, window.end, cc, vehicle),
            window,
        )
    return json_from_sql(
        pool,
        f"SELECT reporting.fn_{kind}_page(%s, %s, %s, %s, %s, %s, %s)::text",
        (
            vehicle,
            cc,
            window.start,
            window.end,
            parse_list_limit(limit),
            *_after(parse_cursor(cursor, kind)),
        ),
    )


@router.get("/analytics/trips", response_class=Response, responses=_JSON_OK)
def trips(
    pool: Pool,
    vehicle_number: VehicleQ = None,
    cost_centre: CostCentreQ = None,
    start: StartQ = None,
    end: EndQ = None,
    limit: LimitQ = None,
    cursor: CursorQ = None,
    format: FormatQ = None,
    accept: AcceptH = None,
) -> Response:
    """Trips newest first (default window: the 7 days up to `end`), live from the trips table."""
    return _vehicle_list(pool, "trips", "fn_trip_rows",
                         (vehicle_number, cost_centre, start, end),
                         (limit, cursor, format, accept))  # fmt: skip


@router.get("/analytics/stops", response_class=Response, responses=_JSON_OK)
def stops(
    pool: Pool,
    vehicle_number: VehicleQ = None,
    cost_centre: CostCentreQ = None,
    start: StartQ = None,
    end: EndQ = None,
    limit: LimitQ = None,
    cursor: CursorQ = None,
    format: FormatQ = None,
    accept: AcceptH = None,
) -> Response:
    """Stops (parked: ignition off; idling: on) newest first (default: the last 7 days)."""
    return _vehicle_list(pool, "stops", "fn_stop_rows",
                         (vehicle_number, cost_centre, start, end),
                         (limit, cursor, format, accept))  # fmt: skip


@router.get("/analytics/alarms", response_class=Response, responses=_JSON_OK)
def alarms(
    pool: Pool,
    vehicle_number: VehicleQ = None,
    cost_centre: CostCentreQ = None,
    alarm_type: Annotated[
        str | None, Query(description="exact alarm_type values, comma-separated")
    ] = None,
    severity: Annotated[
        str | None, Query(description="critical, high, medium, low, info; comma-separated")
    ] = None,
    include_ignition: Annotated[
        str | None, Query(description="true = also ACC_ON / ACC_OFF (197/198); default false")
    ] = None,
    start: StartQ = None,
    end: EndQ = None,
    limit: LimitQ = None,
    cursor: CursorQ = None,
    format: FormatQ = None,
    accept: AcceptH = None,
) -> Response:
    """Alarms and events newest first (default: the last 24 h), ignition hidden by default."""
    vehicle, cc = _filters(vehicle_number, cost_centre)
    types = parse_list_values("alarm_type", alarm_type)
    severities = parse_severities(severity)
    ignition = parse_bool("include_ignition", include_ignition)
    window = parse_window(start, end, default=timedelta(hours=ALARMS_DEFAULT_HOURS))
    if parse_format(format, accept) == "csv":
        return _csv(
            pool,
            "alarms",
            "SELECT r.* FROM reporting.fn_alarm_rows(%s, %s, %s, %s, %s, %s, %s) r"
            " WHERE reporting.check_filters(%s, p_vehicles => ARRAY[%s]::text[])",
            (vehicle, cc, types, severities, ignition, window.start, window.end, cc, vehicle),
            window,
        )
    return json_from_sql(
        pool,
        "SELECT reporting.fn_alarms_page(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)::text",
        (
            vehicle,
            cc,
            types,
            severities,
            ignition,
            window.start,
            window.end,
            parse_list_limit(limit),
            *_after(parse_cursor(cursor, "alarms")),
        ),
    )
