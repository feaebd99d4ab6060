"""The fences' grid index (migrations 0602 / R__geofence_cells.sql) that the geofence_events
pass joins fixes to: membership through the cells must be exactly PostGIS's
`ST_Intersects(fence, point)` (boundary counts as inside) — for small sites and whole regions
(coarser cell levels), points anywhere, on a fence's vertices and on the cells' own edges, at
the precision of real data (fixes with 6 decimals, fences with 7; a point within ~1e-30° of a
slanted edge can fall either way, as PostGIS's own rounding there does) —
and the cells follow the fence when it is inserted, reshaped or deleted."""

from __future__ import annotations

import json
import math
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

pytestmark = pytest.mark.both_engines

# Membership of one point in one fence through the cells, beside the plain spatial predicate.
COMPARE_SQL = """
WITH pt AS (SELECT ST_SetSRID(ST_MakePoint(%(lng)s, %(lat)s), 4326) AS p)
SELECT coalesce((
           SELECT c.inside OR ST_Intersects(c.part, pt.p)
           FROM tracksolid.geofence_cells c
           WHERE c.geofence_id = %(fid)s
             AND c.cell = tracksolid.geofence_cell_key(%(lat)s, %(lng)s, c.level)), false),
       ST_Intersects(g.geom, pt.p)
FROM tracksolid.geofences g, pt
WHERE g.geofence_id = %(fid)s
"""


def star(lat: float, lng: float, radius: float, radii: list[float]) -> list[list[float]]:
    """A star-shaped (so valid, simple) polygon ring around (lat, lng), in degrees with 7
    decimals (1 cm) as a drawn or exported fence has them."""
    n = len(radii)
    ring = [
        [round(lng + radius * r * math.cos(2 * math.pi * k / n), 7),
         round(lat + radius * r * math.sin(2 * math.pi * k / n), 7)]
        for k, r in enumerate(radii)
    ]  # fmt: skip
    return [*ring, ring[0]]


def insert_fence(conn: psycopg.Connection[Any], name: str, ring: list[list[float]]) -> int:
    row = conn.execute(
        "INSERT INTO tracksolid.geofences (name, kind, geom) VALUES"
        " (%s, 'customer_site', ST_Multi(ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)))"
        " RETURNING geofence_id",
        (name, json.dumps({"type": "Polygon", "coordinates": [ring]})),
    ).fetchone()
    assert row is not None
    return int(row[0])


def cell_edge_points(lat: float, lng: float, level: int) -> list[tuple[float, float]]:
    """Points exactly on the grid lines of `level` next to (lat, lng): where a key's rounding
    and a cell box's edge could disagree."""
    size = 0.001 * 4**level
    y = math.floor((lat + 90) / size) * size - 90
    x = math.floor((lng + 180) / size) * size - 180
    return [
        (round(a, 7), round(b, 7)) for a, b in [(y, lng), (lat, x), (y, x), (y + size, x + size)]
    ]


GPS = 6  # decimals of a fix (~0.1 m): what the trackers send


@given(
    lat=st.floats(-60, 60).map(lambda v: round(v, GPS)),
    lng=st.floats(-170, 170).map(lambda v: round(v, GPS)),
    radius=st.sampled_from([0.0004, 0.003, 0.02, 0.3, 2.5]),  # a site ... a country
    radii=st.lists(st.floats(0.3, 1.0), min_size=3, max_size=24),
    probes=st.lists(st.tuples(st.floats(-1.3, 1.3), st.floats(-1.3, 1.3)), max_size=25),
)
@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_membership_through_cells_equals_st_intersects(
    db_url: str, lat: float, lng: float, radius: float, radii: list[float],
    probes: list[tuple[float, float]],
) -> None:  # fmt: skip
    ring = star(lat, lng, radius, radii)
    with psycopg.connect(db_url) as conn:
        try:
            fid = insert_fence(conn, "probe", ring)
        except psycopg.errors.CheckViolation:  # a degenerate star: not a valid fence anyway
            return
        level_row = conn.execute(
            "SELECT min(level), count(*) FROM tracksolid.geofence_cells WHERE geofence_id = %s",
            (fid,),
        ).fetchone()
        assert level_row is not None and level_row[1] > 0
        level = int(level_row[0])
        points = [(round(lat + dy * radius, GPS), round(lng + dx * radius, GPS))
                  for dy, dx in probes]  # fmt: skip
        points += [(y, x) for x, y in ring]  # the vertices: on the boundary
        points += cell_edge_points(lat, lng, level)
        points += cell_edge_points(ring[0][1], ring[0][0], level)
        for p_lat, p_lng in points:
            got = conn.execute(COMPARE_SQL, {"lat": p_lat, "lng": p_lng, "fid": fid}).fetchone()
            assert got is not None
            assert got[0] == got[1], (p_lat, p_lng, "cells say", got[0], "ST_Intersects", got[1])
        conn.rollback()


def test_cell_levels_bound_the_cell_count(db_url: str) -> None:
    """A site gets the finest cells; a city zone and a country coarser ones, never more than
    4,096 cells in the bounding box."""
    with psycopg.connect(db_url) as conn:
        sizes = {"site": 0.002, "city": 0.15, "country": 3.0}
        levels = {}
        for name, radius in sizes.items():
            fid = insert_fence(conn, name, star(-1.29, 36.82, radius, [1.0] * 16))
            row = conn.execute(
                "SELECT min(level), max(level), count(*), count(*) FILTER (WHERE inside)"
                " FROM tracksolid.geofence_cells WHERE geofence_id = %s",
                (fid,),
            ).fetchone()
            assert row is not None and row[0] == row[1]
            assert 0 < row[2] <= 4096
            levels[name] = row[0]
        assert levels["site"] == 0
        assert levels["site"] < levels["city"] < levels["country"]
        # Most of a large fence's cells are wholly inside: no exact test for fixes there.
        inside = conn.execute(
            "SELECT count(*) FILTER (WHERE inside)::float / count(*)"
            " FROM tracksolid.geofence_cells c JOIN tracksolid.geofences g USING (geofence_id)"
            " WHERE g.name = 'country'"
        ).fetchone()
        assert inside is not None and inside[0] > 0.5


def test_cells_follow_reshape_and_delete(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        fid = insert_fence(conn, "moving", star(-1.29, 36.82, 0.002, [1.0] * 8))

        def covers(lat: float, lng: float) -> bool:
            row = conn.execute(COMPARE_SQL, {"lat": lat, "lng": lng, "fid": fid}).fetchone()
            assert row is not None and row[0] == row[1]
            return bool(row[0])

        assert covers(-1.29, 36.82) and not covers(-4.04, 39.67)
        conn.execute(  # the fence moves to Mombasa
            "UPDATE tracksolid.geofences SET geom = ST_Multi(ST_SetSRID(ST_GeomFromGeoJSON(%s),"
            " 4326)) WHERE geofence_id = %s",
            (json.dumps({"type": "Polygon",
                         "coordinates": [star(-4.04, 39.67, 0.002, [1.0] * 8)]}), fid),
        )  # fmt: skip
        assert covers(-4.04, 39.67) and not covers(-1.29, 36.82)
        conn.execute("DELETE FROM tracksolid.geofences WHERE geofence_id = %s", (fid,))
        left = conn.execute(
            "SELECT count(*) FROM tracksolid.geofence_cells WHERE geofence_id = %s", (fid,)
        ).fetchone()
        assert left == (0,)


def test_deleting_a_fence_takes_its_visits_along(db_url: str) -> None:
    """No foreign key on the visits (0603): a statement trigger does the cascade, for one
    fence or many, and leaves the other fences' visits alone."""
    with psycopg.connect(db_url) as conn:
        fids = [insert_fence(conn, f"f{k}", star(-1.29, 36.82 + k / 100, 0.002, [1.0] * 8))
                for k in range(3)]  # fmt: skip
        for fid in fids:
            conn.execute(
                "INSERT INTO tracksolid.geofence_events (imei, geofence_id, entered_at,"
                " last_inside_at, dwell_s, fixes) VALUES ('862798050000001', %s, now(), now(),"
                " 0, 3)",
                (fid,),
            )
        conn.execute("DELETE FROM tracksolid.geofences WHERE geofence_id = ANY(%s)", (fids[:2],))
        left = conn.execute("SELECT geofence_id FROM tracksolid.geofence_events").fetchall()
        assert left == [(fids[2],)]
