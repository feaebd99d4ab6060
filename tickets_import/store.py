"""Database writes of the tickets importer; every function takes a borrowed connection.

The caller owns the transaction: `upsert_rows` + `record_rejects` + `advance_watermark` run
in one transaction per change file, so a file is either fully committed (rows, dead letters
and watermark) or not at all.
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

from tickets_import.parse import MAX_DEAD_LETTER_BYTES, RowIssue, TicketRow

FEED = "inc"
IMPORT_LOCK = "tickets.import_tickets"

# Dropped first: a file whose batch the database refused is retried row by row (savepoints)
# in the same transaction.
_DROP_STAGE = "DROP TABLE IF EXISTS _inc_stage"
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
        cur.execute(_DROP_STAGE)
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


def mark_imported(conn: psycopg.Connection[Any], rows: int) -> None:
    """Record that a local file (--inc-csv) was committed: the INC freshness
    (`last_import_at`) moves as for a bucket file, the watermark does not (a local file has
    no place in the bucket's key order)."""
    conn.execute(
        """
        INSERT INTO tickets.import_meta AS m (feed, last_import_at, last_file_rows, updated_at)
        VALUES (%(feed)s, now(), %(rows)s, now())
        ON CONFLICT (feed) DO UPDATE SET
            last_import_at = now(), last_file_rows = EXCLUDED.last_file_rows, updated_at = now()
        """,
        {"feed": FEED, "rows": rows},
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


# ── dead letters and quarantined files ───────────────────────────────────────


def dead_letter_raw(raw: str) -> tuple[bytes, str, bool]:
    """What a dead letter keeps of a rejected record: its bytes (what a retry re-parses), a
    readable copy (NUL shown as U+2400) and whether the bytes were cut at the storage bound."""
    data = raw.encode("utf-8", "surrogatepass")
    truncated = len(data) > MAX_DEAD_LETTER_BYTES
    if truncated:
        data = data[:MAX_DEAD_LETTER_BYTES]
    text = data.decode("utf-8", "replace").replace("\x00", "\u2400")
    return data, text, truncated


def record_rejects(
    conn: psycopg.Connection[Any],
    source_key: str,
    header: Sequence[str],
    issues: Sequence[RowIssue],
) -> int:
    """Upsert the rejected records of one file into tickets.rejects (natural key: feed, file,
    line); a record seen again keeps first_seen_at and gets the new reason. Returns the count."""
    count = 0
    for issue in issues:
        data, text, truncated = dead_letter_raw(issue.raw or "")
        conn.execute(
            """
            INSERT INTO tickets.rejects AS r
                (feed, source_key, line, ticket_id, reason, header, raw_row, raw_text,
                 raw_truncated)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (feed, source_key, line) DO UPDATE SET
                ticket_id = EXCLUDED.ticket_id, reason = EXCLUDED.reason,
                header = EXCLUDED.header, raw_row = EXCLUDED.raw_row,
                raw_text = EXCLUDED.raw_text, raw_truncated = EXCLUDED.raw_truncated,
                last_seen_at = now(), seen_count = r.seen_count + 1
            """,
            (
                FEED,
                source_key,
                issue.line,
                issue.ticket_id,
                issue.reason,
                list(header),
                data,
                text,
                truncated,
            ),
        )
        count += 1
    return count


@dataclass(frozen=True)
class Reject:
    """One dead letter of the feed."""

    reject_id: int
    source_key: str
    line: int
    ticket_id: str | None
    reason: str
    header: list[str]
    raw_row: bytes
    raw_text: str
    raw_truncated: bool
    first_seen_at: datetime
    last_seen_at: datetime
    retried_at: datetime | None
    retry_count: int


def list_rejects(conn: psycopg.Connection[Any], *, limit: int | None = None) -> list[Reject]:
    """The feed's dead letters, oldest first (by file, then line)."""
    rows = conn.execute(
        """
        SELECT reject_id, source_key, line, ticket_id, reason, header, raw_row, raw_text,
               raw_truncated, first_seen_at, last_seen_at, retried_at, retry_count
          FROM tickets.rejects
         WHERE feed = %s
         ORDER BY source_key, line
         LIMIT %s
        """,
        (FEED, limit),
    ).fetchall()
    return [Reject(r[0], r[1], r[2], r[3], r[4], list(r[5]), bytes(r[6]), *r[7:]) for r in rows]


def resolve_reject(conn: psycopg.Connection[Any], reject_id: int) -> None:
    """Remove a dead letter whose row is now imported (or dropped by design)."""
    conn.execute("DELETE FROM tickets.rejects WHERE reject_id = %s", (reject_id,))


def keep_reject(conn: psycopg.Connection[Any], reject_id: int, reason: str) -> None:
    """A retried dead letter that still fails: new reason, retry time and count."""
    conn.execute(
        """
        UPDATE tickets.rejects
           SET reason = %s, retried_at = now(), retry_count = retry_count + 1
         WHERE reject_id = %s
        """,
        (reason, reject_id),
    )


def record_quarantine(
    conn: psycopg.Connection[Any],
    *,
    source_key: str,
    bucket: str,
    quarantine_key: str,
    reason: str,
    size: int,
    sha256: str,
) -> None:
    """Record (or refresh) a quarantined change file."""
    conn.execute(
        """
        INSERT INTO tickets.quarantined_files AS q
            (feed, source_key, bucket, quarantine_key, reason, size_bytes, sha256)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (feed, source_key) DO UPDATE SET
            bucket = EXCLUDED.bucket, quarantine_key = EXCLUDED.quarantine_key,
            reason = EXCLUDED.reason, size_bytes = EXCLUDED.size_bytes,
            sha256 = EXCLUDED.sha256, status = 'quarantined', released_at = NULL,
            last_seen_at = now()
        """,
        (FEED, source_key, bucket, quarantine_key, reason, size, sha256),
    )


def is_quarantined(conn: psycopg.Connection[Any], source_key: str) -> bool:
    """True when `source_key` is recorded as quarantined (not yet released)."""
    row = conn.execute(
        """
        SELECT 1 FROM tickets.quarantined_files
         WHERE feed = %s AND source_key = %s AND status = 'quarantined'
        """,
        (FEED, source_key),
    ).fetchone()
    return row is not None


def release_quarantine(conn: psycopg.Connection[Any], source_key: str) -> None:
    """Mark a quarantined file as imported after a fix."""
    conn.execute(
        """
        UPDATE tickets.quarantined_files SET status = 'released', released_at = now()
         WHERE feed = %s AND source_key = %s
        """,
        (FEED, source_key),
    )


@dataclass(frozen=True)
class QuarantinedFile:
    """A change file moved to quarantine/."""

    source_key: str
    quarantine_key: str
    reason: str
    first_seen_at: datetime


def list_quarantined(conn: psycopg.Connection[Any]) -> list[QuarantinedFile]:
    """Files still in quarantine, oldest first."""
    rows = conn.execute(
        """
        SELECT source_key, quarantine_key, reason, first_seen_at FROM tickets.quarantined_files
         WHERE feed = %s AND status = 'quarantined' ORDER BY source_key
        """,
        (FEED,),
    ).fetchall()
    return [QuarantinedFile(*r) for r in rows]


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
