"""Vector tiles of the maps (issue #19): `GET /tiles/{layer}/{z}/{x}/{y}.mvt` and TileJSON.

Why: a week of trips for 1,000 vehicles is 25 MB of GeoJSON; a map only needs what lies in
the tiles it shows, as Mapbox Vector Tiles built by PostGIS (`ST_AsMVT`,
migrations/R__reporting_tiles.sql). Three layers, each with the filters of its JSON endpoint,
checked by the same dashboard/params.py helpers (422 with one sentence):

- `live`  — GET /webhook/live-positions: `cost_centre`, `acc_status`;
- `trips` — POST /webhook/fleet-dashboard as query parameters: `vehicles` (repeated or
  comma-separated), `driver`, `cost_centre`, `city`, `start`, `end` (default: the 7 days up
  to now);
- `track` — GET /webhook/live-positions/track: `imei` (or `vehicle_number`: plate in any
  spelling or IMEI; required), `hours` (1-168, default 24) or `start` / `end` (≤ 7 days).

The MVT layer is named like the path's layer. z is 0-22 and x / y 0..2^z-1 (else 422). A tile
without features is **204 No Content** (no body to send, cache or decode; MapLibre, OpenLayers
and Leaflet.VectorGrid draw it as an empty tile). Cache headers: live `private, max-age=5`
(the fixes change every few seconds); trips / track `private, max-age=15` while the window
reaches now, `private, max-age=600` for a window wholly in the past (late fixes and the v_trips
refresh can still add to it, so not longer); every 200 has a strong ETag of the tile bytes
and `If-None-Match` → 304. Compression (br / gzip by Accept-Encoding) is the app's
dashboard/compression.py, which covers `application/vnd.mapbox-vector-tile`. Built trips
tiles are kept in memory until the next v_trips refresh (dashboard/tile_cache.py).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request, Response
from psycopg_pool import ConnectionPool

from dashboard.compression import etag_matches
from dashboard.deps import require_api_key, ro_pool
from dashboard.params import (
    EAT,
    ParamError,
    filter_value,
    merge_fields,
    parse_acc_status,
    parse_hours,
    parse_int,
    parse_track_window,
    parse_trip_query,
)
from dashboard.tile_cache import Every, TileCache
from ts_shared import Settings

router = APIRouter(tags=["maps"], dependencies=[Depends(require_api_key)])

Pool = Annotated[ConnectionPool, Depends(ro_pool)]
MVT = "application/vnd.mapbox-vector-tile"
LAYERS = ("live", "trips", "track")
MAX_ZOOM = 22
# Cache-Control max-age of the tiles, s: live, a window reaching now, a window in the past.
LIVE_MAX_AGE_S = 5
CURRENT_MAX_AGE_S = 15
PAST_MAX_AGE_S = 600
# The read-API keeps a built trips tile whose window reaches now this long (dashboard/
# tile_cache.py): its content changes only with a v_trips refresh (which retires it at once)
# and at the window's start edge, which may lag by up to this long.
TRIPS_KEEP_S = 300
WORLD = (-180.0, -85.0511, 180.0, 85.0511)  # TileJSON bounds when nothing matches

# Up to this zoom a trips feature carries trip_id and trips only: a low-zoom tile of a busy
# area holds up to ~15,000 lines (reporting.tile_trips_light_zoom() in R__reporting_tiles.sql).
TRIPS_LIGHT_ZOOM = 11

# TileJSON vector_layers[].fields: the properties of each layer (R__reporting_tiles.sql).
FIELDS: dict[str, dict[str, str]] = {
    "live": {
        "imei": "String", "name": "String (the label the map shows: plate or IMEI)",
        "vehicle_number": "String", "vehicle_name": "String", "driver_name": "String",
        "cost_centre": "String", "status": "String (moving | idle | parked | offline)",
        "speed_kmh": "Number", "course": "Number (degrees)", "acc_on": "Boolean",
        "online": "Boolean", "gps_time": "String (ISO-8601, UTC)",
    },
    "trips": {
        "trip_id": "Number (also the feature id)",
        "trips": "Number (trips drawn on this line; the feature is the last recorded)",
        # the rest from zoom 12 only (TRIPS_LIGHT_ZOOM)
        "imei": "String (z >= 12)",
        "vehicle_number": "String (z >= 12)", "vehicle_name": "String (z >= 12)",
        "driver_name": "String (z >= 12)", "cost_centre": "String (z >= 12)",
        "start_time": "String (ISO-8601, UTC; z >= 12)",
        "end_time": "String (ISO-8601, UTC; z >= 12)", "distance_km": "Number (z >= 12)",
        "driving_time_s": "Number (z >= 12)", "avg_speed_kmh": "Number (z >= 12)",
        "max_speed_kmh": "Number (z >= 12)",
    },
    "track": {
        "imei": "String", "vehicle_number": "String", "seq": "Number (first fix, 1-based)",
        "start_time": "String (ISO-8601, UTC)", "end_time": "String (ISO-8601, UTC)",
        "speed_kmh": "Number (at start_time)", "end_speed_kmh": "Number (at end_time)",
    },
}  # fmt: skip
DESCRIPTIONS = {
    "live": "Current position of every active vehicle (GET /webhook/live-positions)",
    "trips": (
        "Trips as lines start → end (POST /webhook/fleet-dashboard); up to zoom"
        f" {TRIPS_LIGHT_ZOOM} only trip_id and trips, all fields from zoom {TRIPS_LIGHT_ZOOM + 1}"
    ),
    "track": "One line per segment between two fixes (GET /webhook/live-positions/track)",
}

ZQ = Annotated[str, Path(description="zoom 0-22")]
XQ = Annotated[str, Path(description="column 0..2^z-1")]
YQ = Annotated[str, Path(description="row 0..2^z-1 (XYZ: 0 = north)")]
LayerQ = Annotated[str, Path(description="live | trips | track")]
INM = Annotated[str | None, Header(description="ETag of a tile held: 304 when unchanged")]


@dataclass(frozen=True)
class LayerQuery:
    """One layer's checked filters: the SQL call's arguments, the canonical query string
    (TileJSON's `tiles` template) and how long a browser may keep its tiles."""

    sql: str
    args: tuple[Any, ...]
    query: dict[str, str]
    max_age_s: int
    bounds_args: tuple[Any, ...]

    @property
    def cache(self) -> str:
        """The tiles' Cache-Control header."""
        return f"private, max-age={self.max_age_s}"


def check_layer(layer: str) -> str:
    """404 unless the path names one of LAYERS (text from the path is never echoed raw)."""
    if layer not in LAYERS:
        raise HTTPException(404, "no such tile layer: the layers are live, trips and track")
    return layer


def parse_tile(z: str, x: str, y: str) -> tuple[int, int, int]:
    """z 0-22 and x / y within 0..2^z-1 (ParamError → 422 otherwise)."""
    zoom = parse_int("z", z, default=-1, low=0, high=MAX_ZOOM)
    if zoom < 0:
        raise ParamError("z is required (0-22)")
    last = (1 << zoom) - 1
    col = parse_int("x", x, default=-1, low=0, high=last)
    row = parse_int("y", y, default=-1, low=0, high=last)
    if col < 0 or row < 0:
        raise ParamError(f"x and y are required (0-{last} at zoom {zoom})")
    return zoom, col, row


def _window_max_age(end: datetime | None) -> int:
    """Longer caching for a window that ended in the past."""
    return PAST_MAX_AGE_S if end is not None and end <= datetime.now(EAT) else CURRENT_MAX_AGE_S


def _given(**values: str | None) -> dict[str, str]:
    return {k: v for k, v in values.items() if v}


def live_query(request: Request) -> LayerQuery:
    params = request.query_params
    cc = filter_value(params.get("cost_centre"), "cost_centre")
    acc = parse_acc_status(params.get("acc_status"))
    return LayerQuery(
        sql="SELECT reporting.fn_tile_live(%s, %s, %s, %s, %s)",
        args=(cc, acc),
        query=_given(cost_centre=cc, acc_status=acc),
        max_age_s=LIVE_MAX_AGE_S,
        bounds_args=(cc, acc, None, None, None, None, None, None),
    )


def trips_query(request: Request) -> LayerQuery:
    """The trips map's filters (parse_trip_query, also its field aliases) from the query
    string; `limit` and `cursor` have no meaning for a tile and are ignored once checked."""
    query = parse_trip_query(merge_fields(request.query_params.multi_items()))
    return LayerQuery(
        sql="SELECT reporting.fn_tile_trips(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        args=(
            query.vehicles,
            query.driver,
            query.cost_centre,
            query.city,
            query.start,
            query.end,
        ),
        query=_given(
            vehicles=",".join(query.vehicles or []),
            driver=query.driver,
            cost_centre=query.cost_centre,
            city=query.city,
            start=query.start_text,
            end=query.end_text,
        ),
        max_age_s=_window_max_age(query.end),
        bounds_args=(
            query.cost_centre,
            None,
            query.vehicles,
            query.driver,
            query.city,
            query.start,
            query.end,
            None,
        ),
    )


def track_query(request: Request) -> LayerQuery:
    """The track's vehicle (`imei`, or `vehicle_number` as on the JSON endpoint) and window:
    `start` / `end` as GET /webhook/live-positions/track, else the `hours` up to now."""
    params = request.query_params
    name = "imei" if "imei" in params else "vehicle_number"
    vehicle = filter_value(params.get(name), name)
    if vehicle is None:
        raise ParamError("imei is required (an IMEI, or vehicle_number: a plate or an IMEI)")
    hours_text = params.get("hours")
    hours = parse_hours(hours_text)
    start, end = params.get("start"), params.get("end")
    if (start or "").strip() or (end or "").strip():
        window = parse_track_window(start, end, hours)
        t0, t1, max_age = window.start, window.end, _window_max_age(window.end)
        query = _given(start=(start or "").strip(), end=(end or "").strip())
        if not (start or "").strip():
            query["hours"] = str(hours)
    else:
        t1 = datetime.now(EAT) + timedelta(microseconds=1)  # a fix stamped now is included
        t0, max_age = t1 - timedelta(hours=hours, microseconds=1), CURRENT_MAX_AGE_S
        query = {"hours": str(hours)} if (hours_text or "").strip() else {}
    return LayerQuery(
        sql="SELECT reporting.fn_tile_track(%s, %s, %s, %s, %s, %s)",
        args=(vehicle, t0, t1),
        query={name: vehicle, **query},
        max_age_s=max_age,
        bounds_args=(None, None, None, None, None, t0, t1, vehicle),
    )


QUERIES = {"live": live_query, "trips": trips_query, "track": track_query}


def layer_query(layer: str, request: Request) -> LayerQuery:
    return QUERIES[check_layer(layer)](request)


def tile_etag(body: bytes) -> str:
    """A strong tag of the tile's bytes (128-bit BLAKE2b)."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _fetch_tile(pool: ConnectionPool, query: LayerQuery, tile: tuple[int, int, int]) -> bytes:
    with pool.connection() as conn:
        row = conn.execute(query.sql, (*tile, *query.args), binary=True).fetchone()
    return bytes(row[0]) if row and row[0] is not None else b""


def trips_generation(pool: ConnectionPool) -> Hashable:
    """When reporting.v_trips was last refreshed with success (None: never logged): part of
    a cached trips tile's key, so a refresh retires every cached trips tile."""
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT finished_at FROM reporting.refresh_log"
            " WHERE object_name = 'reporting.v_trips' AND ok"
            " ORDER BY finished_at DESC LIMIT 1"
        ).fetchone()
    return row[0] if row else None


# After a v_trips refresh retired the kept tiles, the tiles asked for at least twice since the
# refresh before are built again in the background, most asked first, at most this many.
WARM_TILES = 32
ASKED_KEPT = 2000  # distinct trips tiles counted per refresh (then new ones are not counted)

log = logging.getLogger(__name__)

_NOTHING_SEEN = object()  # TripsTiles before its first request (None is a refresh: "never")
Base = tuple[tuple[int, int, int], tuple[tuple[str, str], ...]]  # a trips tile: coords, filters
Job = tuple[LayerQuery, tuple[int, int, int], float]  # how to build it, how long to keep it


class TripsTiles:
    """One app's trips tiles: the cache (dashboard/tile_cache.py), the v_trips refresh that
    keys it, and the warm-up — the first request after a refresh starts one background thread
    that builds again the WARM_TILES tiles most asked for (twice or more) before it, one at a
    time, so that the operators' usual views do not each pay a cold build."""

    def __init__(self, pool: ConnectionPool, settings: Settings) -> None:
        self.pool = pool
        self.cache = TileCache(settings.dashboard_tile_cache_mb * 2**20)
        self.generation = Every(lambda: trips_generation(pool), period_s=1.0)
        self._lock = threading.Lock()
        self._seen: Hashable = _NOTHING_SEEN  # the refresh of the last request
        self._asked: Counter[Base] = Counter()
        self._how: dict[Base, Job] = {}
        self.warmed = 0  # tiles a warm-up built or found built (the tests read it)

    def body(self, query: LayerQuery, coords: tuple[int, int, int], fresh: bool) -> bytes:
        """The tile's bytes, kept until the next refresh (TRIPS_KEEP_S / max-age at most)."""
        base = (coords, tuple(sorted(query.query.items())))
        keep = float(max(query.max_age_s, TRIPS_KEEP_S))
        generation = self.generation()
        jobs: list[tuple[Base, Job]] = []
        with self._lock:
            if generation != self._seen:
                if self._seen is not _NOTHING_SEEN:  # a refresh since the last request: warm
                    jobs = [
                        (k, self._how[k])
                        for k, n in self._asked.most_common(WARM_TILES)
                        if n >= 2 and k != base
                    ]
                self._asked.clear()
                self._how.clear()
                self._seen = generation
            if base in self._how or len(self._how) < ASKED_KEPT:
                self._asked[base] += 1
                self._how[base] = (query, coords, keep)
        if jobs:
            threading.Thread(
                target=self._warm, args=(generation, jobs), name="trips-tile-warm-up", daemon=True
            ).start()
        return self.cache.get_or_build(
            (*base, generation), keep, lambda: _fetch_tile(self.pool, query, coords), fresh=fresh
        )

    def _warm(
        self,
        generation: Hashable,
        jobs: list[tuple[Base, Job]],
    ) -> None:
        for base, (query, coords, keep) in jobs:
            if self.generation() != generation:
                return  # refreshed again meanwhile: the next request starts a new warm-up
            try:
                build = partial(_fetch_tile, self.pool, query, coords)
                self.cache.get_or_build((*base, generation), keep, build)
            except Exception as exc:  # a warm-up never fails a request
                log.debug("trips tile warm-up stopped: %s", exc)
                return
            with self._lock:
                self.warmed += 1


_TRIPS_INIT = threading.Lock()


def trips_tiles(request: Request) -> TripsTiles:
    """The app's TripsTiles (DASHBOARD_TILE_CACHE_MB), made on its first trips tile request."""
    state = request.app.state
    with _TRIPS_INIT:
        if getattr(state, "trips_tiles", None) is None:
            state.trips_tiles = TripsTiles(state.ro_pool, state.settings)
    found: TripsTiles = state.trips_tiles
    return found


def _wants_fresh(request: Request) -> bool:
    """`Cache-Control: no-cache` (a browser's reload): no answer from the server's cache."""
    directives = request.headers.get("cache-control", "").lower()
    return "no-cache" in directives or "no-store" in directives


def _tile_body(
    request: Request,
    pool: ConnectionPool,
    layer: str,
    query: LayerQuery,
    coords: tuple[int, int, int],
) -> bytes:
    """The tile's bytes: trips tiles through the app's cache (when it has one)."""
    if layer != "trips":
        return _fetch_tile(pool, query, coords)
    trips = trips_tiles(request)
    if not trips.cache.enabled:
        return _fetch_tile(pool, query, coords)
    return trips.body(query, coords, fresh=_wants_fresh(request))


@router.get(
    "/tiles/{layer}/{z}/{x}/{y}.mvt",
    response_class=Response,
    responses={
        200: {"description": "A Mapbox Vector Tile with one layer named like `layer`",
              "content": {MVT: {}}},
        204: {"description": "No feature in this tile (an empty tile)"},
        304: {"description": "If-None-Match names the tile's current ETag"},
        401: {"description": "DASHBOARD_API_KEYS is set and no valid key was sent"},
        404: {"description": "`layer` is not live, trips or track"},
        422: {"description": "z / x / y or a filter is malformed, out of range or unknown"},
    },
)  # fmt: skip
def tile(
    request: Request, pool: Pool, layer: LayerQ, z: ZQ, x: XQ, y: YQ, if_none_match: INM = None
) -> Response:
    """One vector tile of `layer` (module docstring: filters, empty tiles, caching)."""
    query = layer_query(layer, request)
    body = _tile_body(request, pool, layer, query, parse_tile(z, x, y))
    headers = {"Cache-Control": query.cache}
    if not body:
        return Response(status_code=204, headers=headers)
    headers["ETag"] = tile_etag(body)
    if etag_matches(if_none_match, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return Response(content=body, media_type=MVT, headers=headers)


def _bounds(pool: ConnectionPool, layer: str, args: tuple[Any, ...]) -> tuple[float, ...]:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT reporting.fn_tile_bounds(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (layer, *args),
        ).fetchone()
    found = row[0] if row else None
    return tuple(float(v) for v in found) if found else WORLD


def tilejson(
    request: Request, layer: str, query: LayerQuery, bounds: tuple[float, ...]
) -> dict[str, Any]:
    """The TileJSON 3.0.0 document of one layer for the checked filters."""
    base = str(request.base_url).rstrip("/")
    template = f"{base}/tiles/{layer}/{{z}}/{{x}}/{{y}}.mvt"
    if query.query:
        template += "?" + urlencode(query.query)
    west, south, east, north = bounds
    span = max(east - west, north - south, 1e-6)
    zoom = max(0, min(16, math.floor(math.log2(360 / span))))  # the data fills ~1 tile
    return {
        "tilejson": "3.0.0",
        "name": f"fleet {layer}",
        "description": DESCRIPTIONS[layer],
        "scheme": "xyz",
        "tiles": [template],
        "minzoom": 0,
        "maxzoom": MAX_ZOOM,
        "bounds": [west, south, east, north],
        "center": [round((west + east) / 2, 6), round((south + north) / 2, 6), zoom],
        "vector_layers": [
            {
                "id": layer,
                "description": DESCRIPTIONS[layer],
                "minzoom": 0,
                "maxzoom": MAX_ZOOM,
                "fields": FIELDS[layer],
            }
        ],
    }


@router.get(
    "/tiles/{layer}.json",
    responses={
        200: {"description": "TileJSON 3.0.0: `tiles` carries the request's checked filters"},
        404: {"description": "`layer` is not live, trips or track"},
        422: {"description": "a filter is malformed, out of range or unknown"},
    },
)
def tilejson_document(request: Request, pool: Pool, layer: LayerQ) -> dict[str, Any]:
    """TileJSON of `layer`: the tile URL template with the same filters (checked, in their
    canonical spelling), bounds / center of the matching data (the world when none)."""
    query = layer_query(layer, request)
    return tilejson(request, layer, query, _bounds(pool, layer, query.bounds_args))
