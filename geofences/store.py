"""Writing and listing geofences (the CLI and the read-API's write endpoints share it).

A load is one transaction: every feature is written, or none. Geometry is checked by PostGIS
before anything is written: `ST_IsValidReason` for self-intersections, wrong ring order and
the like — an invalid polygon is refused with PostGIS's reason, never repaired silently
(`ST_MakeValid` can turn a bow-tie into two triangles the author never drew). A circle (a
Point with `radius_m`) is buffered on the geography (metres, 8 segments per quarter circle)
and stored as that polygon, with its centre and radius kept.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from geofences.geojson import FenceRow, GeofenceError

Conn = psycopg.Connection[Any]


class GeofenceConflictError(GeofenceError):
    """A geofence of that name exists and the load did not ask to replace it (HTTP 409)."""

    status_code = 409


# The geometry each row would get, with its validity, computed once per row.
_GEOM_SQL = """
SELECT g, ST_IsValidReason(g), ST_NPoints(g)
FROM (SELECT ST_Multi(CASE
        WHEN %(geojson)s::text IS NOT NULL
        THEN ST_SetSRID(ST_Force2D(ST_GeomFromGeoJSON(%(geojson)s::text)), 4326)
        ELSE ST_Buffer(ST_SetSRID(ST_MakePoint(%(lng)s, %(lat)s), 4326)::geography,
                       %(radius)s, 'quad_segs=8')::geometry
      END)::geometry AS g) s
"""

_UPSERT_SQL = """
INSERT INTO tracksolid.geofences AS f (name, kind, cost_centre, city, geom, radius_m, center,
                                        properties, events_computed_at, updated_at)
VALUES (%(name)s, %(kind)s, %(cost_centre)s, %(city)s, %(geom)s::geometry, %(radius)s,
        CASE WHEN %(lng)s::float8 IS NOT NULL
             THEN ST_SetSRID(ST_MakePoint(%(lng)s, %(lat)s), 4326) END,
        %(properties)s, NULL, now())
ON CONFLICT (name) DO UPDATE SET
    kind = EXCLUDED.kind, cost_centre = EXCLUDED.cost_centre, city = EXCLUDED.city,
    geom = EXCLUDED.geom, radius_m = EXCLUDED.radius_m, center = EXCLUDED.center,
    properties = EXCLUDED.properties, updated_at = now(),
    -- a reshaped fence (or a changed kind/city/cost centre, which moves home regions) is
    -- recomputed over the horizon by the next job run; an identical re-load changes nothing
    events_computed_at = CASE
        WHEN ST_Equals(f.geom, EXCLUDED.geom) AND f.kind = EXCLUDED.kind
             AND f.city IS NOT DISTINCT FROM EXCLUDED.city
             AND f.cost_centre IS NOT DISTINCT FROM EXCLUDED.cost_centre
        THEN f.events_computed_at END
RETURNING geofence_id, (xmax = 0) AS inserted
"""


def _params(row: FenceRow) -> dict[str, Any]:
    lng, lat = row.center if row.center else (None, None)
    return {"geojson": row.geometry, "lng": lng, "lat": lat, "radius": row.radius_m}


def write_fences(conn: Conn, rows: list[FenceRow], *, replace: bool) -> list[dict[str, Any]]:
    """Write `rows` in the caller's transaction; returns [{id, name, status}] in order.

    GeofenceError (422) for an invalid or too-complex geometry, GeofenceConflictError (409)
    for an existing name without `replace`. The caller rolls back on error.
    """
    if not replace:
        names = [r.name for r in rows]
        taken = conn.execute(
            "SELECT name FROM tracksolid.geofences WHERE name = ANY(%s) ORDER BY name", (names,)
        ).fetchall()
        if taken:
            raise GeofenceConflictError(
                f"a geofence named {taken[0][0]!r} exists already (load with --replace,"
                " or POST with ?replace=true, to update it)"
            )
    out: list[dict[str, Any]] = []
    for row in rows:  # a handful of fences per load: per-row validity messages are the point
        geom_row = conn.execute(_GEOM_SQL, _params(row)).fetchone()
        assert geom_row is not None
        geom, reason, _npoints = geom_row
        if reason != "Valid Geometry":
            raise GeofenceError(f"geofence {row.name!r}: invalid geometry ({reason})")
        params = _params(row) | {
            "name": row.name, "kind": row.kind, "cost_centre": row.cost_centre,
            "city": row.city, "geom": geom, "properties": Jsonb(row.properties),
        }  # fmt: skip
        result = conn.execute(_UPSERT_SQL, params).fetchone()
        assert result is not None
        status = "created" if result[1] else "replaced"
        out.append({"id": result[0], "name": row.name, "status": status})
    return out


def load(conn: Conn, rows: list[FenceRow], *, replace: bool) -> list[dict[str, Any]]:
    """`write_fences` in one transaction of its own (all or nothing)."""
    try:
        with conn.transaction():
            return write_fences(conn, rows, replace=replace)
    except psycopg.errors.InvalidParameterValue as exc:  # ST_GeomFromGeoJSON's own refusals
        raise GeofenceError(f"invalid geometry: {exc.diag.message_primary}") from None
    except psycopg.errors.CheckViolation as exc:
        why = exc.diag.message_primary
        raise GeofenceError(f"geofence refused by the database: {why}") from None


def delete(conn: Conn, geofence_id: int) -> str | None:
    """Delete one geofence (and its events); returns its name, None when there was none."""
    with conn.transaction():
        row = conn.execute(
            "DELETE FROM tracksolid.geofences WHERE geofence_id = %s RETURNING name",
            (geofence_id,),
        ).fetchone()
    return str(row[0]) if row else None


def listing(conn: Conn) -> list[tuple[Any, ...]]:
    """(id, name, kind, cost_centre, city, vertices, radius_m) of every fence, by name."""
    return conn.execute(
        "SELECT geofence_id, name, kind, cost_centre, city, ST_NPoints(geom), radius_m"
        " FROM tracksolid.geofences ORDER BY name"
    ).fetchall()
