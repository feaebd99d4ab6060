"""The read-API's endpoints: maps (`/webhook/*`, paths the FleetNow SPAs already call),
analytics for FleetOps (`/analytics/*`) and health (`/health`, `/health/ingest`).

Every data endpoint runs one `SELECT reporting.fn_...(...)::text` through the read-only pool
and returns PostgreSQL's JSON text unchanged (`json_from_sql`). Every parameter is taken as
text and checked in `dashboard/params.py` (`ParamError`) before it reaches SQL; the
functions check again and refuse unknown filter values (SQLSTATE 22023). dashboard/errors.py
maps both to `{"detail": "<sentence>"}` (422; 413 for a body over MAX_BODY_BYTES).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.types import Message

from dashboard.deps import json_from_sql, require_api_key, ro_pool
from dashboard.export import csv_response, export_filename
from dashboard.params import (
    MAX_BODY_BYTES,
    MAX_FIELDS,
    BodyTooLargeError,
    ParamError,
    filter_value,
    merge_fields,
    parse_acc_status,
    parse_body,
    parse_day_range,
    parse_expiring_days,
    parse_format,
    parse_hours,
    parse_track_window,
    parse_trip_query,
)

Pool = Annotated[ConnectionPool, Depends(ro_pool)]
FormatQ = Annotated[
    str | None, Query(description="json (default) or csv (one row per day and vehicle/driver)")
]
AcceptH = Annotated[str | None, Header(description="text/csv asks for CSV like format=csv")]

data_router = APIRouter(dependencies=[Depends(require_api_key)])
health_router = APIRouter(tags=["health"])

_JSON: dict[str, Any] = {"content": {"application/json": {}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "DASHBOARD_API_KEYS is set and no valid key was sent in a header"},
    422: {
        "description": "A parameter is malformed, out of range or an unknown filter value;"
        " `detail` says which"
    },
    503: {"description": "The database is unavailable or the query hit the statement timeout"},
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


async def _read_body(request: Request) -> bytes:
    """The request body, refused (413) as soon as it grows past MAX_BODY_BYTES."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared[:20]) > MAX_BODY_BYTES:
        raise BodyTooLargeError(f"the body is larger than {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLargeError(f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _body_fields(request: Request) -> list[tuple[str, str]]:
    """The POST body as (field, value) pairs: multipart, urlencoded or JSON (FIX-D01)."""
    content_type = request.headers.get("content-type")
    body = await _read_body(request)
    if (content_type or "").lower().startswith("multipart/form-data"):
        sent = False

        async def replay() -> Message:  # the body already read, for Starlette's parser
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(
                max_files=0, max_fields=MAX_FIELDS, max_part_size=MAX_BODY_BYTES
            )
        except ValueError:  # python-multipart's parse errors
            raise ParamError("the multipart body could not be read") from None
        return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    parsed = parse_body(content_type, body)
    return [(k, v) for k, values in parsed.items() for v in values]


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
    cc = filter_value(cost_centre, "cost_centre")
    acc = parse_acc_status(acc_status)
    return json_from_sql(pool, "SELECT reporting.fn_live_positions(%s, %s)::text", (cc, acc))


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
    start: Annotated[
        str | None,
        Query(description="YYYY-MM-DD (EAT day) or ISO-8601 (naive = EAT); with end, ≤ 7 days"),
    ] = None,
    end: Annotated[
        str | None,
        Query(description="YYYY-MM-DD (that EAT day included) or ISO-8601; default now"),
    ] = None,
) -> Response:
    """Track of one vehicle over the last `hours`, or in the window [start, end)
    (`reporting.fn_vehicle_track` / `fn_vehicle_track_range`). With only `end`, the window is
    the `hours` before it."""
    vehicle = filter_value(vehicle_number, "vehicle_number")
    if vehicle is None:
        raise ParamError('vehicle_number is required (a plate such as "KCA 542Q" or an IMEI)')
    hours_n = parse_hours(hours)
    if (start or "").strip() or (end or "").strip():
        window = parse_track_window(start, end, hours_n)
        return json_from_sql(
            pool,
            "SELECT reporting.fn_vehicle_track_range(%s, %s, %s)::text",
            (vehicle, window.start, window.end),
        )
    return json_from_sql(
        pool, "SELECT reporting.fn_vehicle_track(%s, %s)::text", (vehicle, hours_n)
    )


@data_router.post(
    "/webhook/fleet-dashboard",
    tags=["maps"],
    response_class=Response,
    responses=_doc(
        "GeoJSON FeatureCollection of trips (LineString start→end), `summary` over every"
        " matching trip (with the cap), `next_cursor` (null when every trip was returned)"
        " and `filters` (the dropdown options)."
    ),
    openapi_extra={
        "requestBody": {
            "description": "Filters as application/x-www-form-urlencoded (what the SPA sends,"
            " FIX-D01) or JSON. Fields: vehicles (repeated, comma-separated or a list),"
            " driver, cost_centre, city, start, end (YYYY-MM-DD or ISO-8601; naive = EAT;"
            " a date-only end includes that day; at most 366 days), limit (≤ 50000; the"
            " page size), cursor (`next_cursor` of the previous answer: the next, older page)."
            " At most 1 MiB, UTF-8.",
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
    """Trips for the map plus filter options (`reporting.fn_trips_for_map_text`). When more
    trips match than `limit`, the answer holds the newest and `next_cursor`; sent back as
    `cursor`, it gives the next older page (issue #19: nothing is cut off silently)."""
    body_fields = await _body_fields(request)
    fields = merge_fields(request.query_params.multi_items(), body_fields)
    query = parse_trip_query(fields)
    return await run_in_threadpool(
        _json_bytes_from_sql,
        pool,
        "SELECT reporting.fn_trips_for_map_text(%s, %s, %s, %s, %s, %s, %s, true, %s, %s, %s, %s)",
        (
            query.vehicles,
            query.driver,
            query.cost_centre,
            query.city,
            query.start,
            query.end,
            query.limit,
            query.start_text,
            query.end_text,
            query.after.time if query.after else None,
            query.after.id if query.after else None,
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
    cc = filter_value(cost_centre, "cost_centre")
    return json_from_sql(pool, "SELECT reporting.fn_fleet_summary(%s)::text", (cc,))


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
    format: FormatQ = None,
    accept: AcceptH = None,
) -> Response:
    """Driving vs idle (ignition on, not moving) vs parked time (`reporting.fn_utilisation`);
    CSV: one row per vehicle and day (`reporting.fn_utilisation_rows`)."""
    first, last = parse_day_range(start, end)
    cc = filter_value(cost_centre, "cost_centre")
    vehicle = filter_value(vehicle_number, "vehicle_number")
    if parse_format(format, accept) == "csv":
        return csv_response(
            pool,
            "SELECT * FROM reporting.fn_utilisation_rows(%s, %s, %s, %s)",
            (first, last, cc, vehicle),
            export_filename("utilisation", first, last),
        )
    return json_from_sql(
        pool,
        "SELECT reporting.fn_utilisation(%s, %s, %s, %s)::text",
        (first, last, cc, vehicle),
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
    format: FormatQ = None,
    accept: AcceptH = None,
) -> Response:
    """Aggression index and driver clock (`reporting.fn_driver_behaviour`); CSV: one row per
    day, vehicle and driver (`reporting.fn_driver_behaviour_rows`)."""
    first, last = parse_day_range(start, end)
    cc = filter_value(cost_centre, "cost_centre")
    if parse_format(format, accept) == "csv":
        return csv_response(
            pool,
            "SELECT * FROM reporting.fn_driver_behaviour_rows(%s, %s, %s)",
            (first, last, cc),
            export_filename("driver-behaviour", first, last),
        )
    return json_from_sql(
        pool,
        "SELECT reporting.fn_driver_behaviour(%s, %s, %s)::text",
        (first, last, cc),
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
    "/analytics/devices/expiring",
    tags=["analytics"],
    response_class=Response,
    responses=_doc("Active devices whose subscription ends within `days` (or has ended)."),
)
def devices_expiring(
    pool: Pool,
    days: Annotated[str | None, Query(description="1-366, default 30")] = None,
) -> Response:
    """SIM / platform subscriptions ending soon (`reporting.fn_devices_expiring`)."""
    return json_from_sql(
        pool, "SELECT reporting.fn_devices_expiring(%s)::text", (parse_expiring_days(days),)
    )


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


# On a hot standby: how far replay is behind — 0 s when everything received is replayed, else
# the age of the last replayed commit; the bytes received but not replayed; whether a WAL
# receiver is running (pg_stat_wal_receiver shows its row, without details, to any role).
_HEALTH_SQL = """
SELECT json_build_object('status', 'ok', 'database', 'ok',
    'database_role', CASE WHEN r.standby THEN 'replica' ELSE 'primary' END,
    'refresher', %s::text, 'refresher_reason', %s::text,
    'v_trips_refreshed_at', (SELECT max(finished_at) FROM reporting.refresh_log
        WHERE object_name = 'reporting.v_trips' AND ok),
    'replica_lag_s', CASE WHEN r.standby THEN CASE
        WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
        ELSE round(extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()), 3)
        END END,
    'replica_lag_bytes', CASE WHEN r.standby
        THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) END,
    'replica_replayed_at', CASE WHEN r.standby THEN pg_last_xact_replay_timestamp() END,
    'replica_streaming', CASE WHEN r.standby
        THEN EXISTS (SELECT 1 FROM pg_stat_wal_receiver) END)::text
FROM (SELECT pg_is_in_recovery() AS standby) r
"""


@health_router.get("/health", response_class=Response)
def health(request: Request, pool: Pool) -> Response:
    """200 when the read-only database connection answers within 5 s, else 503. Says whether
    that database is the primary or a replica (with its replay lag) and where the `v_trips`
    refresher runs (`here`, `worker`, `off`, `pending`; dashboard/refresher.py).

    No API key needed (load balancers and uptime probes call it).
    """
    host = getattr(request.app.state, "refresher_host", None)
    placement = str(getattr(host, "placement", "off"))
    reason = str(getattr(host, "reason", "no refresher in this app"))
    try:
        with pool.connection(timeout=min(5.0, pool.timeout)) as conn:
            row = conn.execute(_HEALTH_SQL, (placement, reason)).fetchone()
    except (PoolTimeout, psycopg.Error) as exc:
        body = json.dumps({"status": "degraded", "database": type(exc).__name__})
        return Response(body, status_code=503, media_type="application/json")
    return Response(row[0] if row else "null", media_type="application/json")
