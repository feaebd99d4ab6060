"""Dead letters of the tickets feed: list them, replay them after a fix, and the upsert that
turns a value the database refuses into a dead letter instead of a failed file.

Failure modes: psycopg errors other than a refused value propagate (the caller reports them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import psycopg

from tickets_import import store
from tickets_import.parse import RowIssue, TicketRow, redact_secrets, reparse_record

log = logging.getLogger(__name__)

# SQLSTATEs that mean "this value", not "this database": class 22 (data exception, e.g. a
# NUL in jsonb) and 54 (program limit exceeded, e.g. a too-large index row).
_ROW_REFUSALS: tuple[type[Exception], ...] = (
    psycopg.errors.DataError,
    psycopg.errors.ProgramLimitExceeded,
    UnicodeEncodeError,
)


def upsert_or_reject(
    conn: psycopg.Connection[Any], rows: Sequence[TicketRow], source: str
) -> tuple[store.UpsertCounts, list[RowIssue]]:
    """Upsert `rows` in one batch; when the database refuses a value the parser let through,
    retry row by row (one savepoint each) and return the refused rows as dead letters, so one
    value costs only its row. Other database errors propagate. Inside a transaction."""
    try:
        with conn.transaction():
            return store.upsert_rows(conn, rows, source_key=source), []
    except _ROW_REFUSALS as exc:
        log.warning("%s: the database refused the batch (%s); retrying row by row", source, exc)
    counts = store.UpsertCounts()
    refused: list[RowIssue] = []
    for row in rows:
        try:
            with conn.transaction():
                one = store.upsert_rows(conn, [row], source_key=source)
        except _ROW_REFUSALS as exc:
            reason = f"database refused the row: {str(exc).splitlines()[0][:300]}"
            raw = redact_secrets(row.source_text)
            refused.append(RowIssue(source, row.line, reason, raw, row.ticket_id))
            continue
        counts.inserted += one.inserted
        counts.updated += one.updated
        counts.unchanged += one.unchanged
    return counts, refused


def list_dead_letters(conn: psycopg.Connection[Any], out: TextIO, *, limit: int = 200) -> int:
    """Print the dead letters (oldest file first) and the quarantined files; returns the
    number of dead letters."""
    rejects = store.list_rejects(conn)
    out.write(f"dead letters (tickets.rejects): {len(rejects)}\n")
    for item in rejects[:limit]:
        raw = item.raw_text.replace("\r", "").replace("\n", "\\n")
        out.write(
            f"  #{item.reject_id} {item.source_key}:{item.line} ticket={item.ticket_id or '-'}"
            f" first={item.first_seen_at:%Y-%m-%d %H:%M} last={item.last_seen_at:%Y-%m-%d %H:%M}"
            f" retries={item.retry_count}{' TRUNCATED' if item.raw_truncated else ''}\n"
            f"      reason: {item.reason}\n      raw: {raw[:200]}\n"
        )
    if len(rejects) > limit:
        out.write(f"  ... {len(rejects) - limit} more (SELECT * FROM tickets.rejects)\n")
    files = store.list_quarantined(conn)
    out.write(f"quarantined files (tickets.quarantined_files): {len(files)}\n")
    for qf in files:
        out.write(
            f"  {qf.source_key} -> {qf.quarantine_key} since {qf.first_seen_at:%Y-%m-%d %H:%M}"
            f"\n      reason: {qf.reason}\n"
        )
    out.flush()
    return len(rejects)


@dataclass
class RetryResult:
    """What one --retry-rejects pass did (or, in a dry run, would do)."""

    retried: int = 0
    resolved: int = 0  # imported, superseded by a later dead letter of the ticket, or dropped
    still_rejected: int = 0
    dropped_alarm: int = 0
    dropped_sentinel: int = 0
    warnings: int = 0
    counts: store.UpsertCounts = field(default_factory=store.UpsertCounts)


def retry_rejects(conn: psycopg.Connection[Any], *, apply: bool) -> RetryResult:
    """Re-parse every dead letter with the current code and bounds. With `apply`, rows that
    now parse are upserted under their original file key (a row never goes back in time)
    and removed, alarm/sentinel rows are removed, the rest keep the new reason, in one
    transaction."""
    rejects = store.list_rejects(conn)
    result = RetryResult(retried=len(rejects))
    good: dict[str, tuple[store.Reject, TicketRow]] = {}
    resolved: list[store.Reject] = []  # superseded or dropped by design
    failing: list[tuple[store.Reject, str]] = []
    for item in rejects:
        if item.raw_truncated:
            failing.append((item, "stored row was truncated; re-deliver the file"))
            continue
        outcome = reparse_record(item.header, item.raw_row, item.source_key, item.line)
        if isinstance(outcome, RowIssue):
            failing.append((item, outcome.reason))
        elif isinstance(outcome, str):
            resolved.append(item)
            result.dropped_alarm += outcome == "alarm"
            result.dropped_sentinel += outcome == "sentinel"
        else:
            row = outcome[0]
            result.warnings += len(outcome[1])
            if row.ticket_id in good:  # the later file/line wins, as within a file
                resolved.append(good[row.ticket_id][0])
            good[row.ticket_id] = (item, row)
    if not apply:
        for item, reason in failing:
            log.warning("dead letter #%d %s:%d still fails: %s", *_where(item), reason)
        result.still_rejected = len(failing)
        result.resolved = len(rejects) - len(failing)
        log.info("dry run: %d dead letter(s) would be imported", len(good))
        return result
    by_file: dict[str, list[TicketRow]] = {}
    for item, row in good.values():
        by_file.setdefault(item.source_key, []).append(row)
    by_line = {(item.source_key, row.line): item for item, row in good.values()}
    with conn.transaction():
        refused_ids = set()
        for source_key, file_rows in by_file.items():  # tickets.inc.source_key = the file
            done, refused = upsert_or_reject(conn, file_rows, source_key)
            result.counts.inserted += done.inserted
            result.counts.updated += done.updated
            result.counts.unchanged += done.unchanged
            for issue in refused:
                item = by_line[(source_key, issue.line)]
                refused_ids.add(item.reject_id)
                failing.append((item, issue.reason))
        for item, _row in good.values():
            if item.reject_id not in refused_ids:
                store.resolve_reject(conn, item.reject_id)
        for item in resolved:
            store.resolve_reject(conn, item.reject_id)
        for item, reason in failing:
            store.keep_reject(conn, item.reject_id, reason)
    for item, reason in failing:
        log.warning("dead letter #%d %s:%d still fails: %s", *_where(item), reason)
    result.still_rejected = len(failing)
    result.resolved = len(rejects) - len(failing)
    log.info(
        "retried %d dead letter(s): %d resolved, %d still rejected",
        result.retried,
        result.resolved,
        result.still_rejected,
    )
    return result


def _where(item: store.Reject) -> tuple[int, str, int]:
    return item.reject_id, item.source_key, item.line
