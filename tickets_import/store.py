"""Database writes of the tickets importer; every function takes a borrowed connection.

The caller owns the transaction: `upsert_rows` + `advance_watermark` run in one transaction
per change file, so a file is either fully committed (rows and watermark) or not at all.
Failure modes: psycopg errors propagate unchanged (the caller rolls back and reports).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tickets_import.parse import TicketRow

FEED = "inc"
IMPORT_LOCK = "tickets.import_tickets"

_STAGE = """
CREATE TEMP TABLE _inc_stage (ticket_id text NOT NULL, raw jsonb NOT NULL) ON COMMIT DROP
"""
# Only new and changed rows reach the INSERT (an unchanged row is neither locked nor
# rewritten, so a rerun costs no dead tuples and keeps updated_at), and a row never goes back
# in time: an older export of a ticket (a re-imported old file, a reseed) does not overwrite a
# newer source_updated_at. geom is resolved here with joins, exactly as the trigger
# tickets.inc_resolve_geom() does per row (feed point → location → cluster); the SET LOCAL
# tells the trigger to stand aside for this transaction.
_UPSERT = """
WITH src AS (
    SELECT s.ticket_id, s.raw,
           nullif(btrim(s.raw ->> 'cluster'), '') AS cluster,
           nullif(btrim(s.raw ->> 'location_name'), '') AS location_name
      FROM _inc_stage s
      LEFT JOIN tickets.inc t ON t.ticket_id = s.ticket_id
     WHERE t.ticket_id IS NULL
        OR (t.raw IS DISTINCT FROM s.raw
            AND (t.source_updated_at IS NULL
                 OR tickets.eat_ts(s.raw ->> 'source_updated_at') IS NULL
                 OR tickets.eat_ts(s.raw ->> 'source_updated_at') >= t.source_updated_at))
), resolved AS (
    SELECT src.ticket_id, src.raw, f.point, gl.geom AS loc_geom, gc.geom AS cl_geom
      FROM src
      CROSS JOIN LATERAL (SELECT tickets.feed_point(src.raw) AS point) f
      LEFT JOIN tickets.geo_locations gl
             ON gl.location_name = src.location_name
            AND gl.cluster = coalesce(src.cluster, '') AND gl.status = 'ok'
      LEFT JOIN tickets.geo_clusters gc ON gc.cluster = src.cluster AND gc.status = 'ok'
), up AS (
    INSERT INTO tickets.inc AS t (ticket_id, raw, source_key, geom, geo_source)
    SELECT r.ticket_id, r.raw, %(key)s,
           coalesce(r.point, r.loc_geom, r.cl_geom),
           CASE WHEN r.point IS NOT NULL THEN 'feed'
                WHEN r.loc_geom IS NOT NULL THEN 'location'
                WHEN r.cl_geom IS NOT NULL THEN 'cluster' END
      FROM resolved r
    ON CONFLICT (ticket_id) DO UPDATE
       SET raw = EXCLUDED.raw, source_key = EXCLUDED.source_key, geom = EXCLUDED.geom,
           geo_source = EXCLUDED.geo_source, updated_at = now()
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up
"""


@dataclass
class UpsertCounts:
    """What one upsert did: new rows, changed rows, and rows left as they were."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def upserted(self) -> int:
        """Rows written (inserted + updated)."""
        return self.inserted + self.updated


def upsert_rows(
    conn: psycopg.Connection[Any], rows: Sequence[TicketRow], *, source_key: str
) -> UpsertCounts:
    """Stage `rows` with COPY and upsert them into tickets.inc on ticket_id (never deletes).

    Must run inside a transaction (the stage table is dropped at commit). `rows` must have
    unique ticket_ids (the parser de-duplicates).
    """
    if not rows:
        return UpsertCounts()
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    with conn.cursor() as cur:
        cur.execute(_STAGE)
        cur.execute("SELECT set_config('tickets.geom_resolved', 'on', true)")
        with cur.copy("COPY _inc_stage (ticket_id, raw) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((row.ticket_id, dumps(row.raw)))
        cur.execute("ANALYZE _inc_stage")  # the join plan needs the real row count
        result = cur.execute(_UPSERT, {"key": source_key}).fetchone()
        cur.execute("SELECT set_config('tickets.geom_resolved', 'off', true)")
    assert result is not None
    inserted, updated = int(result[0]), int(result[1])
    return UpsertCounts(inserted, updated, len(rows) - inserted - updated)


def read_watermark(conn: psycopg.Connection[Any]) -> str | None:
    """The newest committed change-file key (`source_max_key`), or None before the first."""
    row = conn.execute(
        "SELECT source_max_key FROM tickets.import_meta WHERE feed = %s", (FEED,)
    ).fetchone()
    return None if row is None else row[0]


def advance_watermark(
    conn: psycopg.Connection[Any], key: str, rows: int, *, reset: bool = False
) -> None:
    """Record `key` as committed; the watermark only moves forward unless `reset` (--reseed:
    a new bucket's keys may sort below the old one's)."""
    conn.execute(
        """
        INSERT INTO tickets.import_meta AS m
            (feed, source_max_key, last_import_at, last_file_rows, metadata, updated_at)
        VALUES (%(feed)s, %(key)s, now(), %(rows)s,
                jsonb_build_object('source_max_key', %(key)s::text), now())
        ON CONFLICT (feed) DO UPDATE SET
            source_max_key = CASE WHEN %(reset)s OR m.source_max_key IS NULL
                                  THEN EXCLUDED.source_max_key
                                  ELSE greatest(m.source_max_key, EXCLUDED.source_max_key) END,
            last_import_at = now(),
            last_file_rows = EXCLUDED.last_file_rows,
            updated_at = now()
        """,
        {"feed": FEED, "key": key, "rows": rows, "reset": reset},
    )
    # Keep the seed's location of the watermark (metadata.source_max_key) in step.
    conn.execute(
        """
        UPDATE tickets.import_meta
           SET metadata = metadata || jsonb_build_object('source_max_key', source_max_key)
         WHERE feed = %s
        """,
        (FEED,),
    )


def mark_run(conn: psycopg.Connection[Any], summary: dict[str, Any]) -> None:
    """Record the end of an --apply run (freshness: last_run_at, last summary)."""
    conn.execute(
        """
        INSERT INTO tickets.import_meta AS m (feed, last_run_at, metadata, updated_at)
        VALUES (%(feed)s, now(), jsonb_build_object('last_run', %(summary)s::jsonb), now())
        ON CONFLICT (feed) DO UPDATE SET
            last_run_at = now(),
            metadata = m.metadata || jsonb_build_object('last_run', %(summary)s::jsonb),
            updated_at = now()
        """,
        {"feed": FEED, "summary": Jsonb(summary)},
    )


def capture_history(conn: psycopg.Connection[Any], at: datetime | None = None) -> dict[str, Any]:
    """Run tickets.capture_history(): new closures + today's (EAT) backlog snapshot."""
    row = conn.execute(
        "SELECT tickets.capture_history(coalesce(%s::timestamptz, now()))", (at,)
    ).fetchone()
    assert row is not None
    result: dict[str, Any] = row[0]
    return result


def try_lock(conn: psycopg.Connection[Any]) -> bool:
    """Take the session lock that keeps two importers from running at once."""
    row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (IMPORT_LOCK,)).fetchone()
    return bool(row and row[0])


def unlock(conn: psycopg.Connection[Any]) -> None:
    """Release the importer's session lock."""
    conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (IMPORT_LOCK,))


# ── geocoding ────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class ClusterTodo:
    """A cluster seen on tickets with no gazetteer entry yet."""

    cluster: str
    region: str | None
    tickets: int


@dataclass(frozen=True)
class LocationTodo:
    """An actionable ticket location with no gazetteer entry yet, and its reference point."""

    location_name: str
    cluster: str  # '' when the tickets have none
    region: str | None
    ref_lat: float | None  # the cluster's geocoded point, when known
    ref_lng: float | None
    tickets: int


def clusters_to_geocode(conn: psycopg.Connection[Any]) -> list[ClusterTodo]:
    """Clusters on tickets that have no tickets.geo_clusters row (hit or miss), busiest first."""
    rows = conn.execute(
        """
        SELECT i.cluster, mode() WITHIN GROUP (ORDER BY i.region), count(*)
          FROM tickets.inc i
         WHERE i.cluster IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM tickets.geo_clusters g WHERE g.cluster = i.cluster)
         GROUP BY i.cluster
         ORDER BY count(*) DESC, i.cluster
        """
    ).fetchall()
    return [ClusterTodo(r[0], r[1], int(r[2])) for r in rows]


def locations_to_geocode(conn: psycopg.Connection[Any]) -> list[LocationTodo]:
    """Locations of actionable tickets without a feed point and without a gazetteer row."""
    rows = conn.execute(
        """
        SELECT i.location_name, coalesce(i.cluster, ''), mode() WITHIN GROUP (ORDER BY i.region),
               c.lat, c.lng, count(*)
          FROM tickets.inc i
          LEFT JOIN tickets.geo_clusters c ON c.cluster = i.cluster AND c.status = 'ok'
         WHERE i.is_actionable
           AND i.location_name IS NOT NULL
           AND i.geo_source IS DISTINCT FROM 'feed'
           AND NOT EXISTS (SELECT 1 FROM tickets.geo_locations g
                            WHERE g.location_name = i.location_name
                              AND g.cluster = coalesce(i.cluster, ''))
         GROUP BY i.location_name, coalesce(i.cluster, ''), c.lat, c.lng
         ORDER BY count(*) DESC, i.location_name
        """
    ).fetchall()
    return [LocationTodo(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows]


def save_cluster(
    conn: psycopg.Connection[Any],
    cluster: str,
    query: str,
    status: str,
    lat: float | None,
    lng: float | None,
    display_name: str | None,
) -> None:
    """Cache one cluster lookup (an operator's 'manual' row is never overwritten)."""
    conn.execute(
        """
        INSERT INTO tickets.geo_clusters AS g (cluster, query, status, lat, lng, display_name)
        VALUES (%s, %s, %s, %s, %s, %s)
        ON CONFLICT (cluster) DO UPDATE SET
            query = EXCLUDED.query, status = EXCLUDED.status, lat = EXCLUDED.lat,
            lng = EXCLUDED.lng, display_name = EXCLUDED.display_name, geocoded_at = now()
         WHERE g.provider <> 'manual'
        """,
        (cluster, query, status, lat, lng, display_name),
    )


def save_location(
    conn: psycopg.Connection[Any],
    todo: LocationTodo,
    query: str,
    status: str,
    lat: float | None,
    lng: float | None,
    display_name: str | None,
    distance_km: float | None,
) -> None:
    """Cache one location lookup (an operator's 'manual' row is never overwritten)."""
    conn.execute(
        """
        INSERT INTO tickets.geo_locations AS g
            (location_name, cluster, query, status, lat, lng, display_name, distance_km)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (location_name, cluster) DO UPDATE SET
            query = EXCLUDED.query, status = EXCLUDED.status, lat = EXCLUDED.lat,
            lng = EXCLUDED.lng, display_name = EXCLUDED.display_name,
            distance_km = EXCLUDED.distance_km, geocoded_at = now()
         WHERE g.provider <> 'manual'
        """,
        (todo.location_name, todo.cluster, query, status, lat, lng, display_name, distance_km),
    )


def reresolve_geom(
    conn: psycopg.Connection[Any], clusters: Sequence[str], locations: Sequence[str]
) -> int:
    """Make the geom trigger look again at tickets of newly geocoded clusters/locations."""
    if not clusters and not locations:
        return 0
    cur = conn.execute(
        """
        UPDATE tickets.inc SET geom = NULL
         WHERE geo_source IS DISTINCT FROM 'feed'
           AND (cluster = ANY(%s) OR location_name = ANY(%s))
        """,
        (list(clusters), list(locations)),
    )
    return cur.rowcount
