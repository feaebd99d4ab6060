"""Database writes of the fuel importer: records, rejects, the file ledger, the watermark.

One file = one transaction: `apply_parsed` opens it and the other writers run in it (they
take a borrowed connection). A record PostgreSQL refuses (a value error, a rule of the
trigger's SQL functions the Python parser did not see) is retried alone in a savepoint and,
if refused again, becomes a dead letter; the other records of the file still go in.
Failure modes: other psycopg errors propagate unchanged (the transaction rolls back and the
caller reports).
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

from fuel_import.parse import (
    LITRES_KEYS,
    MAX_LITRES,
    PLATE_KEYS,
    TIME_KEYS,
    BadRecord,
    FuelRecord,
    ParsedFile,
    dead_letter_text,
    storable,
)

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
    cleaned: int = 0  # records stored with optional values PostgreSQL cannot hold set to null
    error: str | None = None  # neither imported nor quarantined: holds the watermark
    quarantined: str | None = None  # the reason, when the file was moved to quarantine/


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
        "cleaned": report.cleaned,
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
INSERT INTO fuel.rejects (source_key, record_index, record_id, reason, raw, raw_text)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (source_key, record_index) DO UPDATE
    SET record_id = EXCLUDED.record_id, reason = EXCLUDED.reason, raw = EXCLUDED.raw,
        raw_text = EXCLUDED.raw_text, seen_at = now()
"""

# The trigger's own rules for a live fill, in SQL: what the Python parser accepted but
# fuel.records_derive would store without a fill time, litres or plate is a dead letter.
_SQL_RULES = f"""
SELECT x.id,
       CASE
         WHEN fuel.norm_plate(fuel.raw_text(x.raw, %(plate)s)) IS NULL THEN 'car (plate) missing'
         WHEN fuel.to_num(fuel.raw_text(x.raw, %(litres)s)) IS NULL
           OR fuel.to_num(fuel.raw_text(x.raw, %(litres)s)) <= 0
           OR fuel.to_num(fuel.raw_text(x.raw, %(litres)s)) > {MAX_LITRES}
           THEN 'litres missing or out of range (0, {MAX_LITRES}] by the database rules'
         ELSE 'fill time missing or unparsable by the database rules: '
              || coalesce(left(fuel.raw_text(x.raw, %(time)s), 80), 'none')
       END
FROM jsonb_to_recordset(%(rows)s::jsonb) AS x(id text, raw jsonb)
WHERE fuel.norm_plate(fuel.raw_text(x.raw, %(plate)s)) IS NULL
   OR fuel.to_num(fuel.raw_text(x.raw, %(litres)s)) IS NULL
   OR fuel.to_num(fuel.raw_text(x.raw, %(litres)s)) <= 0
   OR fuel.to_num(fuel.raw_text(x.raw, %(litres)s)) > {MAX_LITRES}
   OR fuel.to_ts(fuel.raw_text(x.raw, %(time)s)) IS NULL
"""

# What PostgreSQL may refuse about one record's values (not the connection or the schema).
_RECORD_ERRORS = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgramLimitExceeded)

_QUARANTINE = """
INSERT INTO fuel.quarantined_files (object_key, bucket, quarantine_key, reason, etag, size_bytes)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (object_key) DO UPDATE
    SET bucket = EXCLUDED.bucket, quarantine_key = EXCLUDED.quarantine_key,
        reason = EXCLUDED.reason, etag = EXCLUDED.etag, size_bytes = EXCLUDED.size_bytes,
        quarantined_at = now()
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


def _upsert_batch(
    conn: psycopg.Connection[Any],
    records: Sequence[FuelRecord],
    key: str,
    merge: bool,
    report: FileReport,
) -> None:
    batch = [{"id": r.id, "raw": r.raw} for r in records]
    row = conn.execute(_UPSERT, {"rows": Jsonb(batch), "key": key, "merge": merge}).fetchone()
    assert row is not None
    inserted, updated, stale = (int(v) for v in row)
    report.inserted += inserted
    report.updated += updated
    report.stale += stale
    report.unchanged += len(batch) - inserted - updated - stale
    report.cleaned += sum(1 for r in records if r.cleaned)


def _refusal(exc: psycopg.Error) -> str:
    message = exc.diag.message_primary or str(exc).splitlines()[0]
    return f"database refused the record: {message}"[:500]


def upsert_records(
    conn: psycopg.Connection[Any], records: Sequence[FuelRecord], key: str, report: FileReport
) -> list[BadRecord]:
    """Upsert on id: live records replace `raw`, deletions merge into it; older
    `updated_at` never wins; identical rows are left alone. Returns the records the database
    refused (its fill-time/litres/plate rules, or a value error), as dead letters; the rest
    are stored. Must run inside a transaction (savepoints isolate a refused record)."""
    refused: list[BadRecord] = []
    live = [r for r in records if not r.deletion]
    if live:
        params = {
            "rows": Jsonb([{"id": r.id, "raw": r.raw} for r in live]),
            "plate": list(PLATE_KEYS),
            "litres": list(LITRES_KEYS),
            "time": list(TIME_KEYS),
        }
        rules = dict(conn.execute(_SQL_RULES, params).fetchall())
        if rules:
            refused += [BadRecord(r.index, r.id, rules[r.id], r.raw) for r in live if r.id in rules]
            records = [r for r in records if r.deletion or r.id not in rules]
    for merge in (False, True):
        batch = [r for r in records if r.deletion is merge]
        if not batch:
            continue
        try:
            with conn.transaction():
                _upsert_batch(conn, batch, key, merge, report)
        except _RECORD_ERRORS:
            for record in batch:  # find the culprit(s): one savepoint per record
                try:
                    with conn.transaction():
                        _upsert_batch(conn, [record], key, merge, report)
                except _RECORD_ERRORS as exc:
                    refused.append(BadRecord(record.index, record.id, _refusal(exc), record.raw))
    refused.sort(key=lambda b: b.index)
    return refused


def save_rejects(conn: psycopg.Connection[Any], key: str, bad: Sequence[BadRecord]) -> None:
    """Keep every skipped record with its reason in fuel.rejects (the dead letters: cleaned
    `raw`, redacted `raw_text`); a re-read file (the daily snapshot) replaces its previous
    rejects."""
    conn.execute("DELETE FROM fuel.rejects WHERE source_key = %s", (key,))
    if bad:
        with conn.cursor() as cur:
            cur.executemany(
                _REJECT,
                [
                    (
                        key,
                        b.index,
                        b.id,
                        b.reason[:2000],
                        Jsonb(storable(b.raw)),
                        dead_letter_text(b.raw),
                    )
                    for b in bad
                ],
            )


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
        refused = upsert_records(conn, parsed.records, parsed.key, report)
        report.bad = sorted([*parsed.bad, *refused], key=lambda b: b.index)
        save_rejects(conn, parsed.key, report.bad)
        conn.execute("DELETE FROM fuel.quarantined_files WHERE object_key = %s", (parsed.key,))
        if reconcile_as_of is not None:
            mark_missing(conn, parsed, reconcile_as_of, report)
        conn.execute(
            _LEDGER,
            (
                parsed.key,
                etag,
                kind,
                parsed.total,
                len(report.bad),
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
        "INSERT INTO fuel.ingest_state (feed, watermark_key, last_run_at)"
        " VALUES ('changes', %s, now())"
        " ON CONFLICT (feed) DO UPDATE"
        " SET watermark_key = EXCLUDED.watermark_key, updated_at = now()"
        " WHERE fuel.ingest_state.watermark_key IS DISTINCT FROM EXCLUDED.watermark_key",
        (watermark,),
    )


def record_quarantine(
    pool: ConnectionPool,
    *,
    key: str,
    bucket: str,
    quarantine_key: str,
    reason: str,
    etag: str | None,
    size: int | None,
    kind: str,
) -> None:
    """Record a quarantined file (fuel.quarantined_files) and put it in the file ledger with
    its etag, so the same broken object is not read again if its deletion failed."""
    with pool.connection() as conn, conn.transaction():
        conn.execute(_QUARANTINE, (key, bucket, quarantine_key, reason[:2000], etag, size))
        conn.execute(_LEDGER, (key, etag, f"{kind}:quarantined", 0, 0, 0, 0))


# ─────────────────────────────────────────────────────────────────────────────
# Dead letters: list and retry
# ─────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class DeadLetter:
    """One row of fuel.rejects."""

    source_key: str
    index: int
    id: str | None
    reason: str
    raw_text: str | None
    raw: Any
    seen_at: datetime
    retried_at: datetime | None
    retries: int


def list_dead_letters(conn: psycopg.Connection[Any]) -> list[DeadLetter]:
    """Every dead letter, oldest first."""
    rows = conn.execute(
        "SELECT source_key, record_index, record_id, reason, raw_text, raw, seen_at,"
        " retried_at, retries FROM fuel.rejects ORDER BY seen_at, source_key, record_index"
    ).fetchall()
    return [DeadLetter(*row) for row in rows]


def list_quarantined(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """(object_key, bucket, quarantine_key, reason, quarantined_at) of every quarantined file."""
    return conn.execute(
        "SELECT object_key, bucket, quarantine_key, reason, quarantined_at"
        " FROM fuel.quarantined_files ORDER BY quarantined_at, object_key"
    ).fetchall()


def resolve_dead_letter(conn: psycopg.Connection[Any], letter: DeadLetter) -> None:
    """The record is in fuel.records now: drop its dead letter."""
    conn.execute(
        "DELETE FROM fuel.rejects WHERE source_key = %s AND record_index = %s",
        (letter.source_key, letter.index),
    )


def keep_dead_letter(conn: psycopg.Connection[Any], letter: DeadLetter, reason: str) -> None:
    """A retry failed again: the new reason and the retry time."""
    conn.execute(
        "UPDATE fuel.rejects SET reason = %s, retried_at = now(), retries = retries + 1"
        " WHERE source_key = %s AND record_index = %s",
        (reason[:2000], letter.source_key, letter.index),
    )
