"""Database writes of the fuel importer: records, rejects, the file ledger, the watermark.

One file = one transaction: `apply_parsed` opens it and the other writers run in it (they
take a borrowed connection). Failure modes: psycopg errors propagate unchanged (the
transaction rolls back and the caller reports).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from fuel_import.parse import BadRecord, FuelRecord, ParsedFile

log = logging.getLogger(__name__)

MAX_MISSING_FRACTION = 0.5  # a snapshot hiding more live rows than this is not trusted


@dataclass
class FileReport:
    """What applying (or dry-running) one file did."""

    key: str
    records: int = 0
    bad: list[BadRecord] = field(default_factory=list)
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    missing_marked: int = 0
    error: str | None = None


def file_summary(report: FileReport) -> dict[str, Any]:
    """The counters of one file, as logged, audited and kept in `fuel.ingest_state.detail`."""
    return {
        "records": report.records,
        "bad": len(report.bad),
        "inserted": report.inserted,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "stale": report.stale,
        "missing_marked": report.missing_marked,
    }


# ─────────────────────────────────────────────────────────────────────────────
# Database writes (one file = one transaction, in the caller's transaction)
# ─────────────────────────────────────────────────────────────────────────────

_UPSERT = """
WITH incoming AS (
    SELECT x.id, x.raw FROM jsonb_to_recordset(%(rows)s::jsonb) AS x(id text, raw jsonb)
),
stale AS (
    SELECT count(*) AS n
    FROM incoming AS i JOIN fuel.records AS r ON r.id = i.id
    WHERE fuel.to_ts(fuel.raw_text(i.raw, ARRAY['updated_at', 'updatedAt', 'modified_at']))
          < r.src_updated_at
),
ups AS (
    INSERT INTO fuel.records AS r (id, raw, source_key)
    SELECT id, raw, %(key)s FROM incoming
    ON CONFLICT (id) DO UPDATE
        SET raw = CASE WHEN %(merge)s THEN r.raw || EXCLUDED.raw ELSE EXCLUDED.raw END,
            source_key = EXCLUDED.source_key,
            missing_since = NULL
        WHERE (r.src_updated_at IS NULL OR EXCLUDED.src_updated_at IS NULL
               OR EXCLUDED.src_updated_at >= r.src_updated_at)
          AND (r.missing_since IS NOT NULL
               OR r.raw IS DISTINCT FROM
                  CASE WHEN %(merge)s THEN r.raw || EXCLUDED.raw ELSE EXCLUDED.raw END)
    RETURNING (xmax = 0) AS inserted
)
SELECT (SELECT count(*) FROM ups WHERE inserted),
       (SELECT count(*) FROM ups WHERE NOT inserted),
       (SELECT n FROM stale)
"""

_MARK_MISSING = """
UPDATE fuel.records AS r SET missing_since = now()
WHERE r.missing_since IS NULL
  AND r.deleted_at IS NULL
  AND NOT (r.id = ANY(%(ids)s))
  AND (r.src_updated_at IS NULL OR r.src_updated_at <= %(as_of)s)
"""

_COUNT_MISSING = """
SELECT count(*) FILTER (WHERE NOT (r.id = ANY(%(ids)s))
                          AND (r.src_updated_at IS NULL OR r.src_updated_at <= %(as_of)s)),
       count(*)
FROM fuel.records AS r
WHERE r.missing_since IS NULL AND r.deleted_at IS NULL
"""

_REJECT = """
INSERT INTO fuel.rejects (source_key, record_index, record_id, reason, raw)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (source_key, record_index) DO UPDATE
    SET record_id = EXCLUDED.record_id, reason = EXCLUDED.reason, raw = EXCLUDED.raw,
        seen_at = now()
"""

_LEDGER = """
INSERT INTO fuel.ingest_files (object_key, etag, kind, records, bad, inserted, updated)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (object_key) DO UPDATE
    SET etag = EXCLUDED.etag, kind = EXCLUDED.kind, records = EXCLUDED.records,
        bad = EXCLUDED.bad, inserted = EXCLUDED.inserted, updated = EXCLUDED.updated,
        processed_at = now()
"""

_STATE = """
INSERT INTO fuel.ingest_state (feed, watermark_key, last_etag, last_run_at, detail, updated_at)
VALUES (%(feed)s, %(key)s, %(etag)s, now(), %(detail)s, now())
ON CONFLICT (feed) DO UPDATE
    SET watermark_key = CASE WHEN %(advance)s THEN EXCLUDED.watermark_key
                             ELSE fuel.ingest_state.watermark_key END,
        last_etag = EXCLUDED.last_etag, last_run_at = now(), detail = EXCLUDED.detail,
        updated_at = now()
"""


def upsert_records(
    conn: psycopg.Connection[Any], records: Sequence[FuelRecord], key: str, report: FileReport
) -> None:
    """Upsert on id: live records replace `raw`, deletions merge into it; older
    `updated_at` never wins; identical rows are left alone."""
    for merge in (False, True):
        batch = [{"id": r.id, "raw": r.raw} for r in records if r.deletion is merge]
        if not batch:
            continue
        row = conn.execute(_UPSERT, {"rows": Jsonb(batch), "key": key, "merge": merge}).fetchone()
        assert row is not None
        inserted, updated, stale = (int(v) for v in row)
        report.inserted += inserted
        report.updated += updated
        report.stale += stale
        report.unchanged += len(batch) - inserted - updated - stale


def save_rejects(conn: psycopg.Connection[Any], key: str, bad: Sequence[BadRecord]) -> None:
    """Keep every skipped record with its reason in fuel.rejects (raw is never lost); a
    re-read file (the daily snapshot) replaces its previous rejects."""
    conn.execute("DELETE FROM fuel.rejects WHERE source_key = %s", (key,))
    if bad:
        with conn.cursor() as cur:
            cur.executemany(_REJECT, [(key, b.index, b.id, b.reason, Jsonb(b.raw)) for b in bad])


def mark_missing(
    conn: psycopg.Connection[Any], parsed: ParsedFile, as_of: datetime, report: FileReport
) -> None:
    """Full reconcile: live rows absent from the snapshot (and not updated after it was
    exported) get `missing_since`; refused when the snapshot would hide too many rows."""
    present = [r.id for r in parsed.records] + [b.id for b in parsed.bad if b.id is not None]
    if not present:
        log.warning("fuel %s: snapshot holds no records; reconcile skipped", parsed.key)
        return
    params = {"ids": present, "as_of": as_of}
    row = conn.execute(_COUNT_MISSING, params).fetchone()
    would, total = (int(row[0]), int(row[1])) if row else (0, 0)
    if would > 10 and would > MAX_MISSING_FRACTION * total:
        log.warning(
            "fuel %s: snapshot would hide %d of %d live records; reconcile skipped "
            "(a truncated export?)",
            parsed.key,
            would,
            total,
        )
        return
    cur = conn.execute(_MARK_MISSING, params)
    report.missing_marked = cur.rowcount


def apply_parsed(
    pool: ConnectionPool,
    parsed: ParsedFile,
    *,
    kind: str,
    etag: str | None,
    report: FileReport,
    reconcile_as_of: datetime | None = None,
    state_feed: str | None = None,
    advance_watermark: bool = False,
) -> None:
    """Write one parsed file in one transaction: records, rejects, ledger, watermark."""
    with pool.connection() as conn, conn.transaction():
        upsert_records(conn, parsed.records, parsed.key, report)
        save_rejects(conn, parsed.key, parsed.bad)
        if reconcile_as_of is not None:
            mark_missing(conn, parsed, reconcile_as_of, report)
        conn.execute(
            _LEDGER,
            (
                parsed.key,
                etag,
                kind,
                parsed.total,
                len(parsed.bad),
                report.inserted,
                report.updated,
            ),
        )
        if state_feed is not None:
            conn.execute(
                _STATE,
                {
                    "feed": state_feed,
                    "key": parsed.key,
                    "etag": etag,
                    "advance": advance_watermark,
                    "detail": Jsonb(file_summary(report)),
                },
            )


def read_watermark(conn: psycopg.Connection[Any]) -> str | None:
    """The last delta file applied in key order (`fuel.ingest_state`, feed `changes`)."""
    row = conn.execute(
        "SELECT watermark_key FROM fuel.ingest_state WHERE feed = 'changes'"
    ).fetchone()
    return str(row[0]) if row and row[0] else None


def applied_etags(conn: psycopg.Connection[Any], keys: Sequence[str]) -> dict[str, Any]:
    """The ledger's etag of each of `keys` already applied (`fuel.ingest_files`)."""
    return {
        str(r[0]): r[1]
        for r in conn.execute(
            "SELECT object_key, etag FROM fuel.ingest_files WHERE object_key = ANY(%s)",
            (keys,),
        ).fetchall()
    }


def set_watermark(conn: psycopg.Connection[Any], watermark: str | None) -> None:
    """Move the `changes` watermark to `watermark` (a no-op when it is there already)."""
    conn.execute(
        "UPDATE fuel.ingest_state SET watermark_key = %s, updated_at = now()"
        " WHERE feed = 'changes' AND watermark_key IS DISTINCT FROM %s",
        (watermark, watermark),
    )
