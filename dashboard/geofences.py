"""Read-API for geofences: the fences (GeoJSON), their enter/exit events, out-of-region.

    GET    /geofences                     FeatureCollection (kind, cost_centre filters)
    POST   /geofences[?replace=true]      a GeoJSON Feature or FeatureCollection → 201
    DELETE /geofences/{id}                → 200, 404 when there is none
    GET    /analytics/geofence-events     visits, paged (limit/offset)
    GET    /analytics/out-of-region       vehicles seen outside their home region, paged

Reads go through the read-only pool and `reporting.fn_*` like every other endpoint, behind
the read-API key (DASHBOARD_API_KEYS). Writes need a key of GEOFENCE_ADMIN_KEYS (header
`X-API-Key` or `Authorization: Bearer`), a separate list: with none configured they answer
403 — geofence writes are never open, even on an API whose reads are. They use the
read-write DATABASE_URL through a one-connection pool per request (rare, operator-driven).
Errors are `{"detail": "<sentence>"}` (dashboard/errors.py): invalid GeoJSON or geometry 422,
a name that exists 409, a body over 4 MiB 413, not JSON 415.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool

from dashboard.deps import (
    app_settings,
    json_from_sql,
    require_admin,
    require_api_key,
    ro_pool,
    with_owner_connection,
)
from dashboard.params import ParamError, filter_value, parse_int, parse_when
from geofences import store
from geofences.geojson import KINDS, MAX_BODY_BYTES, GeofenceError, parse_body
from ts_shared import Settings

router = APIRouter(tags=["geofences"])

_JSON_TYPES = ("application/json", "application/geo+json", "application/vnd.geo+json")
MAX_LIMIT = 5_000
MAX_ID = 2**62


def require_admin_key(request: Request) -> None:
    """403 when GEOFENCE_ADMIN_KEYS is empty (writes disabled); 401 unless the request
    carries one of its keys in `X-API-Key` or `Authorization: Bearer` (never in the URL)."""
    require_admin(request, app_settings(request).geofence_admin_key_list, "geofence",
                  "GEOFENCE_ADMIN_KEYS")  # fmt: skip


def _param_error(exc: GeofenceError) -> ParamError:
    err = ParamError(str(exc))
    err.status_code = exc.status_code
    return err


async def _read_body(request: Request) -> bytes:
    """The body, refused (413) as soon as it grows past MAX_BODY_BYTES; 415 unless JSON."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype not in _JSON_TYPES:
        raise HTTPException(415, "send the geofences as GeoJSON (Content-Type:"
                            " application/geo+json or application/json)")  # fmt: skip
    declared = request.headers.get("content-length", "")
    too_large = f"the body is larger than {MAX_BODY_BYTES} bytes"
    if declared.isdigit() and int(declared[:20]) > MAX_BODY_BYTES:
        raise HTTPException(413, too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def _write(settings: Settings, action: Any) -> Any:
    """Run `action(conn)` on the read-write database (one short-lived connection)."""
    return with_owner_connection(settings, "geofence_admin", action)


@router.get("/geofences", dependencies=[Depends(require_api_key)])
def list_geofences(
    pool: Annotated[ConnectionPool, Depends(ro_pool)],
    kind: Annotated[str | None, Query(description=" | ".join(KINDS))] = None,
    cost_centre: Annotated[str | None, Query(description="exact, case-insensitive")] = None,
) -> Response:
    """Every geofence as a GeoJSON FeatureCollection (polygons; circles carry radius_m)."""
    return json_from_sql(
        pool,
        "SELECT reporting.fn_geofences(%s, %s)::text",
        (filter_value(kind, "kind"), filter_value(cost_centre, "cost_centre")),
    )


@router.post("/geofences", status_code=201, dependencies=[Depends(require_admin_key)])
async def create_geofences(
    request: Request,
    replace: Annotated[bool, Query(description="update fences of the same name")] = False,
) -> JSONResponse:
    """Add (or with replace=true update) the fences of a GeoJSON Feature/FeatureCollection."""
    settings = app_settings(request)
    body = await _read_body(request)
    try:
        rows = parse_body(body, max_vertices=settings.geofence_max_vertices)
    except GeofenceError as exc:
        raise _param_error(exc) from None

    def action(conn: store.Conn) -> list[dict[str, Any]]:
        return store.load(conn, rows, replace=replace)

    try:
        written = await run_in_threadpool(_write, settings, action)
    except GeofenceError as exc:
        raise _param_error(exc) from None
    return JSONResponse({"geofences": written}, status_code=201)


@router.delete("/geofences/{geofence_id}", dependencies=[Depends(require_admin_key)])
def delete_geofence(request: Request, geofence_id: str) -> JSONResponse:
    """Delete one geofence and its events; 404 when there is none."""
    gid = parse_int("geofence id", geofence_id, default=0, low=1, high=MAX_ID)
    name = _write(app_settings(request), lambda conn: store.delete(conn, gid))
    if name is None:
        raise HTTPException(404, f"there is no geofence with id {gid}")
    return JSONResponse({"deleted": {"id": gid, "name": name}})


def _paging(limit: str | None, offset: str | None) -> tuple[int, int]:
    return (
        parse_int("limit", limit, default=500, low=1, high=MAX_LIMIT),
        parse_int("offset", offset, default=0, low=0, high=10**9),
    )


@router.get("/analytics/geofence-events", dependencies=[Depends(require_api_key)])
def geofence_events(
    pool: Annotated[ConnectionPool, Depends(ro_pool)],
    vehicle: Annotated[str | None, Query(description="plate (any spelling) or IMEI")] = None,
    geofence_id: Annotated[str | None, Query(description="one geofence")] = None,
    kind: Annotated[str | None, Query(description=" | ".join(KINDS))] = None,
    from_: Annotated[str | None, Query(alias="from", description="ISO-8601; naive = EAT")] = None,
    to: Annotated[str | None, Query(description="ISO-8601; a date-only `to` includes it")] = None,
    cost_centre: Annotated[str | None, Query(description="the vehicle's cost centre")] = None,
    limit: Annotated[str | None, Query(description=f"1-{MAX_LIMIT}, default 500")] = None,
    offset: Annotated[str | None, Query(description="default 0")] = None,
) -> Response:
    """Visits (enter/exit events) overlapping [from, to), newest entry first."""
    fid = parse_int("geofence_id", geofence_id, default=0, low=1, high=MAX_ID) or None
    page = _paging(limit, offset)
    return json_from_sql(
        pool,
        "SELECT reporting.fn_geofence_events(%s, %s, %s, %s, %s, %s, %s, %s)::text",
        (filter_value(vehicle, "vehicle"), fid, filter_value(kind, "kind"),
         parse_when("from", from_), parse_when("to", to, is_end=True),
         filter_value(cost_centre, "cost_centre"), *page),
    )  # fmt: skip


@router.get("/analytics/out-of-region", dependencies=[Depends(require_api_key)])
def out_of_region(
    pool: Annotated[ConnectionPool, Depends(ro_pool)],
    vehicle: Annotated[str | None, Query(description="plate (any spelling) or IMEI")] = None,
    from_: Annotated[str | None, Query(alias="from", description="ISO-8601; naive = EAT")] = None,
    to: Annotated[str | None, Query(description="ISO-8601; a date-only `to` includes it")] = None,
    cost_centre: Annotated[str | None, Query(description="the vehicle's cost centre")] = None,
    limit: Annotated[str | None, Query(description=f"1-{MAX_LIMIT}, default 500")] = None,
    offset: Annotated[str | None, Query(description="default 0")] = None,
) -> Response:
    """Episodes of vehicles outside every region/city zone of their city or cost centre."""
    page = _paging(limit, offset)
    return json_from_sql(
        pool,
        "SELECT reporting.fn_out_of_region(%s, %s, %s, %s, %s, %s)::text",
        (filter_value(vehicle, "vehicle"), parse_when("from", from_),
         parse_when("to", to, is_end=True), filter_value(cost_centre, "cost_centre"), *page),
    )  # fmt: skip
