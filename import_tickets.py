"""Tickets importer: the INC change stream (S3 CSV files) → the `tickets` schema.

    python import_tickets.py --from-bucket --apply      # the scheduled job (every 20 min)
    python import_tickets.py --from-bucket              # dry run: parse and count, write nothing
    python import_tickets.py --inc-csv FILE --apply     # a local file (development)
    python import_tickets.py --geocode-clusters --geocode-locations --apply
    python import_tickets.py --list-rejects             # dead letters and quarantined files
    python import_tickets.py --retry-rejects [--apply]  # re-parse dead letters after a fix
    python import_tickets.py --retry-quarantine KEY [--apply]   # put a quarantined file back

See docs/tickets.md. Per change file: parse → one transaction (upsert rows + dead-letter the
rejected ones + advance the watermark) → commit → move the file to `processed/`. A crash
between commit and move leaves a file at or below the watermark in `changes/`; the next run
only archives it. A file that cannot be read at all is moved to `quarantine/<key>` (reason
object beside it), recorded, and the drain goes on.

Exit status: 0 ok (also when rows were dead-lettered or files quarantined: warnings in the log,
counts in the summary) · 1 failure (database, S3 listing/archive/quarantine, geocoder) ·
2 usage · 3 a file could not be fetched or set aside (the drain stopped before it; named in
the log and the summary line), or a local --inc-csv file could not be read.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import psycopg
from psycopg_pool import ConnectionPool

from tickets_import import feed, geocode, replay, store
from tickets_import.parse import (
    ParsedFile,
    UnreadableFileError,
    parse_csv_bytes,
)
from ts_shared import (
    QUARANTINE_PREFIX,
    DatabaseUnavailableError,
    Settings,
    make_pool,
    make_s3_client,
    quarantine_key,
    record_ingestion,
    setup_logging,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("import_tickets")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREADABLE = 3
MAX_LOGGED_ISSUES = 50  # per file; the rest are counted


@dataclass
class RunSummary:
    """Counters of one run, printed as the one-line summary."""

    mode: str
    apply: bool
    files_seen: int = 0
    files_imported: int = 0
    files_archived: int = 0
    files_recovered: int = 0  # committed earlier, archived now (crash between commit and move)
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rows_skipped: int = 0  # rejected rows: dead-lettered in tickets.rejects (with --apply)
    dropped_alarm: int = 0
    dropped_sentinel: int = 0
    warnings: int = 0
    rejects_retried: int = 0  # --retry-rejects: dead letters looked at
    rejects_resolved: int = 0  # ... imported (or dropped by design) and removed
    quarantined: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    locked_out: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def upserted(self) -> int:
        """Rows written (inserted + updated)."""
        return self.inserted + self.updated

    @property
    def exit_code(self) -> int:
        """0 ok (dead letters and quarantined files are not failures), 3 when a file could
        not be fetched or set aside, 1 on any other failure."""
        if self.unreadable:
            return EXIT_UNREADABLE
        return EXIT_FAILED if self.failed else EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        """The counters as JSON-able values (ingestion_log detail, import_meta)."""
        return {
            "mode": self.mode,
            "files": self.files_seen,
            "imported": self.files_imported,
            "archived": self.files_archived,
            "recovered": self.files_recovered,
            "rows_read": self.rows_read,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": self.rows_skipped,
            "rejected": self.rows_skipped,
            "dropped_alarm": self.dropped_alarm,
            "dropped_sentinel": self.dropped_sentinel,
            "warnings": self.warnings,
            "rejects_retried": self.rejects_retried,
            "rejects_resolved": self.rejects_resolved,
            "quarantined": self.quarantined,
            "unreadable": self.unreadable,
            "failed": self.failed,
        }

    def line(self) -> str:
        """The one-line summary of the run."""
        elapsed = time.monotonic() - self.started
        text = (
            f"import_tickets {self.mode}{'' if self.apply else ' DRY-RUN'}:"
            f" files={self.files_seen} imported={self.files_imported}"
            f" archived={self.files_archived + self.files_recovered}"
            f" rows read={self.rows_read} upserted={self.upserted}"
            f" (new={self.inserted} changed={self.updated} unchanged={self.unchanged})"
            f" rejected={self.rows_skipped} dropped(alarm={self.dropped_alarm}"
            f" sentinel={self.dropped_sentinel}) warnings={self.warnings}"
            f" quarantined={len(self.quarantined)}"
            f" errors={len(self.unreadable) + len(self.failed)}"
        )
        if self.rejects_retried:
            text += f" retried={self.rejects_retried} resolved={self.rejects_resolved}"
        if self.quarantined:
            text += f" quarantined-files={','.join(self.quarantined)}"
        if self.unreadable:
            text += f" unreadable={','.join(self.unreadable)}"
        if self.failed:
            text += f" failed={','.join(self.failed)}"
        if self.locked_out:
            text += " (another import holds the lock: nothing done)"
        return text + f" in {elapsed:.2f}s"


class Progress:
    """A one-line progress indicator on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, *, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty()
        self._total = total
        self._done = 0

    def update(self, name: str, rows: int) -> None:
        """Count one more file and redraw."""
        self._done += 1
        if not self._enabled or self._total <= 0:
            return
        width = 24
        filled = int(width * self._done / self._total)
        bar = "#" * filled + "." * (width - filled)
        self._stream.write(
            f"\r[{bar}] {self._done}/{self._total} files  {rows:,} rows  {name[-40:]:<40}"
        )
        self._stream.flush()

    def close(self) -> None:
        """End the progress line."""
        if self._enabled and self._done:
            self._stream.write("\n")
            self._stream.flush()


# ── one file ─────────────────────────────────────────────────────────────────


def _report_issues(parsed: ParsedFile) -> None:
    for issue in parsed.errors[:MAX_LOGGED_ISSUES]:
        log.warning("rejected row %s (dead letter)", issue)
    if len(parsed.errors) > MAX_LOGGED_ISSUES:
        log.warning(
            "%s: %d more rejected rows", parsed.source, len(parsed.errors) - MAX_LOGGED_ISSUES
        )
    for issue in parsed.warnings[:MAX_LOGGED_ISSUES]:
        log.info("kept row %s", issue)
    if len(parsed.warnings) > MAX_LOGGED_ISSUES:
        log.info(
            "%s: %d more field warnings", parsed.source, len(parsed.warnings) - MAX_LOGGED_ISSUES
        )


def _count_parsed(summary: RunSummary, parsed: ParsedFile) -> None:
    summary.rows_read += parsed.records
    summary.rows_skipped += len(parsed.errors)
    summary.dropped_alarm += parsed.dropped_alarm
    summary.dropped_sentinel += parsed.dropped_sentinel
    summary.warnings += len(parsed.warnings)


def import_file(
    conn: psycopg.Connection[Any],
    pool: ConnectionPool,
    summary: RunSummary,
    source: str,
    data: bytes,
    *,
    watermark: bool,
    reset_watermark: bool = False,
    release: bool = False,
) -> ParsedFile:
    """Parse one file and, with --apply, commit its rows, its dead letters (rejected rows)
    and the watermark in one transaction; `release` also marks the file released from
    quarantine. Raises `UnreadableFileError` (nothing written) or a psycopg error."""
    started = time.monotonic()
    parsed = parse_csv_bytes(data, source)
    _report_issues(parsed)
    _count_parsed(summary, parsed)
    if not summary.apply:
        summary.files_imported += 1
        log.info(
            "dry run %s: %d records, %d rows to upsert, %d rejected, %d alarm, %d sentinel",
            source,
            parsed.records,
            len(parsed.rows),
            len(parsed.errors),
            parsed.dropped_alarm,
            parsed.dropped_sentinel,
        )
        return parsed
    with conn.transaction():
        counts, refused = replay.upsert_or_reject(conn, parsed.rows, source)
        rejected = parsed.errors + refused
        store.record_rejects(conn, source, parsed.header, rejected)
        if watermark:
            store.advance_watermark(conn, source, len(parsed.rows), reset=reset_watermark)
        else:
            store.mark_imported(conn, len(parsed.rows))
        if release:
            store.release_quarantine(conn, source)
    summary.rows_skipped += len(refused)
    summary.files_imported += 1
    summary.inserted += counts.inserted
    summary.updated += counts.updated
    summary.unchanged += counts.unchanged
    duration_ms = int((time.monotonic() - started) * 1000)
    log.info(
        "imported %s: %d rows (new=%d changed=%d unchanged=%d) rejected=%d in %dms",
        source,
        len(parsed.rows) - len(refused),
        counts.inserted,
        counts.updated,
        counts.unchanged,
        len(rejected),
        duration_ms,
    )
    if rejected:
        log.warning("%s: %d row(s) dead-lettered in tickets.rejects", source, len(rejected))
    record_ingestion(
        pool,
        source="import",
        method="import_tickets",
        target=source,
        ok=True,
        rows=counts.upserted,
        duration_ms=duration_ms,
        detail={
            "records": parsed.records,
            "inserted": counts.inserted,
            "updated": counts.updated,
            "unchanged": counts.unchanged,
            "skipped": len(rejected),
            "rejected": len(rejected),
            "dropped_alarm": parsed.dropped_alarm,
            "dropped_sentinel": parsed.dropped_sentinel,
            "errors": [str(issue) for issue in rejected[:20]],
        },
    )
    return parsed


def _record_unreadable(pool: ConnectionPool, summary: RunSummary, source: str, reason: str) -> None:
    log.error("cannot read %s: %s (left in place)", source, reason)
    summary.unreadable.append(source)
    if summary.apply:
        record_ingestion(
            pool, source="import", method="import_tickets", target=source, ok=False, error=reason
        )


# ── the two sources ──────────────────────────────────────────────────────────


def drain_bucket(
    conn: psycopg.Connection[Any],
    pool: ConnectionPool,
    settings: Settings,
    summary: RunSummary,
    *,
    s3: S3Client,
    reseed: bool = False,
) -> None:
    """Import every change file newer than the watermark, oldest first, archiving each after
    its commit. A file that cannot be read at all is quarantined and the drain goes on; it
    stops only at a file it can neither fetch nor set aside (the watermark never passes a
    file that was neither imported nor quarantined). A quarantined file put back under its
    key is imported even below the watermark."""
    bucket, prefix = settings.tickets_bucket, settings.tickets_prefix
    files = feed.list_change_files(s3, bucket, prefix)
    mark = None if reseed else store.read_watermark(conn)
    summary.files_seen = len(files)
    log.info("watermark %s; %d file(s) in s3://%s/%s", mark or "(none)", len(files), bucket, prefix)
    progress = Progress(len(files))
    try:
        for number, change in enumerate(files, start=1):
            returned = store.is_quarantined(conn, change.key)
            if mark is not None and change.key <= mark and not returned:
                # Committed by an earlier run that died before archiving it.
                if summary.apply:
                    _archive(s3, settings, summary, change.key, recovered=True)
                progress.update(change.key, summary.rows_read)
                continue
            try:
                data = feed.read_file(s3, bucket, change.key)
            except feed.FeedReadError as exc:
                _stop_at(pool, summary, change.key, str(exc), later=len(files) - number)
                break
            try:
                import_file(
                    conn,
                    pool,
                    summary,
                    change.key,
                    data,
                    watermark=True,
                    reset_watermark=reseed,
                    release=returned,
                )
            except UnreadableFileError as exc:
                if not _quarantine(conn, pool, s3, summary, bucket, change.key, data, str(exc)):
                    _stop_at(pool, summary, change.key, str(exc), later=len(files) - number)
                    break
                progress.update(change.key, summary.rows_read)
                continue
            if summary.apply:
                _archive(s3, settings, summary, change.key, recovered=False)
                if returned:
                    _drop_quarantine_copy(s3, bucket, change.key)
            progress.update(change.key, summary.rows_read)
    finally:
        progress.close()


def _stop_at(pool: ConnectionPool, summary: RunSummary, key: str, reason: str, later: int) -> None:
    _record_unreadable(pool, summary, key, reason)
    if later:
        log.error("stopping the drain: %d newer file(s) wait behind it", later)


def _quarantine(
    conn: psycopg.Connection[Any],
    pool: ConnectionPool,
    s3: S3Client,
    summary: RunSummary,
    bucket: str,
    key: str,
    data: bytes,
    reason: str,
) -> bool:
    """Move an unreadable file to quarantine/ (copy + reason object), record it and let the
    watermark pass it, then delete the original. False when it could not be set aside (the
    caller stops the drain). The order makes every crash point safe: before the record the
    file is still new and is quarantined again; after it, a leftover original at/below the
    watermark is still recorded as quarantined, so the next run handles it the same way."""
    if not summary.apply:
        log.warning("dry run: %s cannot be read (%s); --apply would quarantine it", key, reason)
        summary.quarantined.append(key)
        return True
    digest = hashlib.sha256(data).hexdigest()
    detail: dict[str, object] = {
        "source_key": key,
        "bucket": bucket,
        "reason": reason,
        "size_bytes": len(data),
        "sha256": digest,
        "quarantined_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "importer": "import_tickets",
        "replay": f"python import_tickets.py --retry-quarantine {key} --apply",
    }
    try:
        dest = feed.quarantine(s3, bucket, key, detail)
    except feed.FeedArchiveError as exc:
        log.error("%s", exc)
        return False
    with conn.transaction():
        store.record_quarantine(
            conn,
            source_key=key,
            bucket=bucket,
            quarantine_key=dest,
            reason=reason,
            size=len(data),
            sha256=digest,
        )
        store.advance_watermark(conn, key, 0)
    try:
        feed.delete(s3, bucket, key)
    except feed.FeedArchiveError as exc:
        log.error("%s (the next run finishes the move)", exc)
        summary.failed.append(key)
    summary.quarantined.append(key)
    log.warning("quarantined %s -> %s: %s", key, dest, reason)
    record_ingestion(
        pool,
        source="import",
        method="import_tickets",
        target=key,
        ok=False,
        error=f"quarantined: {reason}",
        detail={"quarantined_to": dest, "size_bytes": len(data), "sha256": digest},
    )
    return True


def _drop_quarantine_copy(s3: S3Client, bucket: str, key: str) -> None:
    """After a quarantined file was imported: remove its quarantine copy and reason object."""
    for leftover in (quarantine_key(key), quarantine_key(key) + ".reason.json"):
        try:
            feed.delete(s3, bucket, leftover)
        except feed.FeedArchiveError as exc:
            log.warning("%s", exc)


def _archive(
    s3: S3Client, settings: Settings, summary: RunSummary, key: str, *, recovered: bool
) -> None:
    try:
        feed.archive(
            s3,
            settings.tickets_bucket,
            key,
            settings.tickets_prefix,
            settings.tickets_processed_prefix,
        )
    except feed.FeedArchiveError as exc:
        # Harmless for the data (committed, at/below the watermark): the next run retries.
        log.error("%s", exc)
        summary.failed.append(key)
        return
    if recovered:
        summary.files_recovered += 1
        log.info("archived %s (committed by an earlier run)", key)
    else:
        summary.files_archived += 1


def import_local(
    conn: psycopg.Connection[Any],
    pool: ConnectionPool,
    summary: RunSummary,
    paths: Sequence[Path],
) -> None:
    """Import local CSV files in the given order (no watermark, nothing archived)."""
    summary.files_seen = len(paths)
    progress = Progress(len(paths))
    try:
        for path in paths:
            try:
                data = path.read_bytes()
                import_file(conn, pool, summary, str(path), data, watermark=False)
            except (OSError, UnreadableFileError) as exc:
                _record_unreadable(pool, summary, str(path), str(exc))
            progress.update(str(path), summary.rows_read)
    finally:
        progress.close()


# ── dead letters and quarantine ──────────────────────────────────────────────


def retry_rejects(conn: psycopg.Connection[Any], pool: ConnectionPool, summary: RunSummary) -> None:
    """--retry-rejects: `replay.retry_rejects` with the counts in the summary (and, with
    --apply, a row in tracksolid.ingestion_log)."""
    started = time.monotonic()
    result = replay.retry_rejects(conn, apply=summary.apply)
    summary.rows_read = summary.rejects_retried = result.retried
    summary.rejects_resolved = result.resolved
    summary.rows_skipped = result.still_rejected
    summary.inserted, summary.updated, summary.unchanged = (
        result.counts.inserted,
        result.counts.updated,
        result.counts.unchanged,
    )
    summary.dropped_alarm, summary.dropped_sentinel = result.dropped_alarm, result.dropped_sentinel
    summary.warnings += result.warnings
    if summary.apply:
        record_ingestion(
            pool,
            source="import",
            method="import_tickets",
            target="retry-rejects",
            ok=True,
            rows=result.counts.upserted,
            duration_ms=int((time.monotonic() - started) * 1000),
            detail={"retried": result.retried, "resolved": result.resolved},
        )


def retry_quarantine(
    conn: psycopg.Connection[Any],
    pool: ConnectionPool,
    settings: Settings,
    summary: RunSummary,
    key: str,
    *,
    s3: S3Client,
) -> None:
    """Put a quarantined file back under its original key and drain the bucket (which imports
    it even below the watermark; a file still unreadable is quarantined again). Without
    --apply, only say whether the quarantined file reads now."""
    key = key.removeprefix(QUARANTINE_PREFIX)
    bucket = settings.tickets_bucket
    if not summary.apply:
        try:
            data = feed.read_file(s3, bucket, quarantine_key(key))
            parsed = parse_csv_bytes(data, key)
        except (feed.FeedReadError, UnreadableFileError) as exc:
            log.warning("dry run: %s still cannot be imported: %s", key, exc)
            summary.unreadable.append(key)
            return
        _count_parsed(summary, parsed)
        summary.files_imported += 1
        log.info("dry run: %s reads now: %d rows to upsert", key, len(parsed.rows))
        return
    if not store.is_quarantined(conn, key):
        log.error("%s is not a quarantined file (see --list-rejects)", key)
        summary.failed.append(key)
        return
    try:
        feed.unquarantine(s3, bucket, key)
    except feed.FeedArchiveError as exc:
        log.error("%s", exc)
        summary.failed.append(key)
        return
    drain_bucket(conn, pool, settings, summary, s3=s3)


# ── CLI ──────────────────────────────────────────────────────────────────────


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="import_tickets.py",
        description="Import the INC tickets change stream into the tickets schema.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--from-bucket",
        action="store_true",
        help="drain every changes/ CSV newer than the watermark, oldest first",
    )
    source.add_argument(
        "--inc-csv",
        metavar="FILE",
        type=Path,
        action="append",
        help="import a local CSV file (repeatable; no watermark, no archiving)",
    )
    source.add_argument(
        "--list-rejects",
        action="store_true",
        help="list the dead letters (tickets.rejects) and quarantined files; writes nothing",
    )
    source.add_argument(
        "--retry-rejects",
        action="store_true",
        help="re-parse the dead letters with the current code; --apply imports those that pass",
    )
    source.add_argument(
        "--retry-quarantine",
        metavar="KEY",
        help="put quarantine/KEY back under KEY and drain the bucket (--apply; else a check)",
    )
    parser.add_argument(
        "--reseed",
        action="store_true",
        help="with --from-bucket: ignore the watermark (one-time bucket cutover)",
    )
    parser.add_argument("--apply", action="store_true", help="write (default: dry run)")
    parser.add_argument(
        "--geocode-clusters", action="store_true", help="geocode clusters without a cache row"
    )
    parser.add_argument(
        "--geocode-locations",
        action="store_true",
        help="geocode actionable ticket locations without a cache row",
    )
    parser.add_argument(
        "--capture-history",
        action="store_true",
        help="only run tickets.capture_history() (every --apply run does it anyway)",
    )
    return parser


def run(
    argv: Sequence[str] | None,
    settings: Settings,
    pool: ConnectionPool,
    *,
    s3: S3Client | None = None,
    geocoder: geocode.Geocoder | None = None,
    history_at: datetime | None = None,
    out: TextIO | None = None,
) -> int:
    """Run the CLI with an open pool; returns the exit status. `history_at` overrides the
    capture time of tickets.capture_history() (tests use it to simulate another day)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.reseed and not args.from_bucket:
        parser.error("--reseed needs --from-bucket")
    if args.list_rejects:
        with pool.connection() as conn:
            replay.list_dead_letters(conn, out or sys.stdout)
        return EXIT_OK
    if not (
        args.from_bucket
        or args.inc_csv
        or args.retry_rejects
        or args.retry_quarantine
        or args.geocode_clusters
        or args.geocode_locations
        or args.capture_history
    ):
        parser.error(
            "nothing to do: give --from-bucket, --inc-csv, --list-rejects, --retry-rejects,"
            " --retry-quarantine, --geocode-* or --capture-history"
        )
    if args.from_bucket:
        mode = "from-bucket"
    elif args.inc_csv:
        mode = "inc-csv"
    elif args.retry_rejects:
        mode = "retry-rejects"
    elif args.retry_quarantine:
        mode = "retry-quarantine"
    else:
        mode = "maintenance"
    if args.reseed:
        mode += " reseed"
    summary = RunSummary(mode=mode, apply=args.apply)
    with pool.connection() as conn:
        conn.autocommit = True
        locked = False
        try:
            if args.apply:
                locked = store.try_lock(conn)
                if not locked:
                    summary.locked_out = True
                    log.warning("another import_tickets run holds the lock; exiting")
                    _emit(summary, out)
                    return EXIT_OK
            _run_steps(args, conn, pool, settings, summary, s3, geocoder, history_at)
        except (psycopg.Error, feed.FeedListError, geocode.GeocoderFatalError) as exc:
            log.error("import_tickets failed: %s", exc)
            summary.failed.append(type(exc).__name__)
            if args.apply and not isinstance(exc, geocode.GeocoderFatalError):
                # the run row of _run_steps was not reached: /health/ingest gets the reason
                # (a refused geocoder key is the geocode:tickets feed's failure, not this one)
                record_ingestion(
                    pool,
                    source="import",
                    method="import_tickets",
                    target="run",
                    ok=False,
                    error=f"{type(exc).__name__}: {exc}",
                    detail=summary.as_dict(),
                )
        finally:
            with contextlib.suppress(psycopg.Error):
                if locked and not conn.closed:
                    store.unlock(conn)
                conn.autocommit = False
    _emit(summary, out)
    return summary.exit_code


def _run_steps(
    args: argparse.Namespace,
    conn: psycopg.Connection[Any],
    pool: ConnectionPool,
    settings: Settings,
    summary: RunSummary,
    s3: S3Client | None,
    geocoder: geocode.Geocoder | None,
    history_at: datetime | None,
) -> None:
    if args.from_bucket:
        drain_bucket(
            conn, pool, settings, summary, s3=s3 or make_s3_client(settings), reseed=args.reseed
        )
    elif args.inc_csv:
        import_local(conn, pool, summary, args.inc_csv)
    elif args.retry_rejects:
        retry_rejects(conn, pool, summary)
    elif args.retry_quarantine:
        retry_quarantine(
            conn,
            pool,
            settings,
            summary,
            args.retry_quarantine,
            s3=s3 or make_s3_client(settings),
        )
    if args.geocode_clusters or args.geocode_locations:
        _geocode(args, pool, settings, geocoder)
    if args.apply:
        # Every --apply run (files or none) records history and freshness (seed 003).
        with conn.transaction():
            captured = store.capture_history(conn, history_at)
            store.mark_run(conn, summary.as_dict())
        log.info("history captured: %s", captured)
        record_ingestion(
            pool,
            source="import",
            method="import_tickets",
            target="run",
            ok=not (summary.unreadable or summary.failed),
            rows=summary.upserted,
            duration_ms=int((time.monotonic() - summary.started) * 1000),
            error=", ".join(summary.unreadable + summary.failed) or None,
            detail=summary.as_dict(),
        )


def _geocode(
    args: argparse.Namespace,
    pool: ConnectionPool,
    settings: Settings,
    geocoder: geocode.Geocoder | None,
) -> None:
    """The --geocode-* passes. With --apply each pass set is one row in ingestion_log (source
    `geocode`, method `tickets`: the `geocode:tickets` feed of /health/ingest), also when the
    geocoder refuses the key (the reason is recorded, never the key; the error propagates)."""
    started = time.monotonic()
    own = geocoder is None
    coder = geocoder or geocode.Geocoder(
        settings.geocoder_url,
        settings.geocoder_key.get_secret_value(),
        rate_per_s=settings.geocoder_rate_per_s,
    )
    passes: dict[str, geocode.GeocodeStats] = {}
    try:
        if args.geocode_clusters:
            passes["clusters"] = geocode.geocode_clusters(pool, coder, apply=args.apply)
            log.info(
                "%s%s", passes["clusters"].line("clusters"), "" if args.apply else " (dry run)"
            )
        if args.geocode_locations:
            passes["locations"] = geocode.geocode_locations(pool, coder, apply=args.apply)
            log.info(
                "%s%s", passes["locations"].line("locations"), "" if args.apply else " (dry run)"
            )
    except (geocode.GeocoderFatalError, psycopg.Error) as exc:
        if args.apply:
            _record_geocode(pool, started, passes, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if own:
            coder.close()
    if args.apply:
        _record_geocode(pool, started, passes, error=None)


def _record_geocode(
    pool: ConnectionPool,
    started: float,
    passes: dict[str, geocode.GeocodeStats],
    *,
    error: str | None,
) -> None:
    """One `geocode`/`tickets` row: ok unless the run stopped or every request failed (the
    geocoder is down: each query was skipped); rows = places found."""
    failed = sum(p.failed for p in passes.values())
    answered = sum(p.ok + p.not_found + p.wrong_city for p in passes.values())
    if error is None and failed and not answered:
        error = f"all {failed} geocoder requests failed (see the importer log)"
    record_ingestion(
        pool,
        source="geocode",
        method="tickets",
        target=",".join(passes) or None,
        ok=error is None,
        rows=sum(p.ok for p in passes.values()),
        duration_ms=int((time.monotonic() - started) * 1000),
        error=error,
        detail={name: dataclasses.asdict(p) for name, p in passes.items()},
    )


def _emit(summary: RunSummary, out: TextIO | None) -> None:
    line = summary.line()
    log.info("%s", line)
    stream = out or sys.stdout
    stream.write(line + "\n")
    stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: settings from the environment, one pool for the run."""
    build_parser().parse_args(argv)  # --help and usage errors need no database
    settings = Settings()
    setup_logging(settings.log_level)
    try:
        pool = make_pool(
            settings.dsn(), min_size=1, max_size=3, name="import_tickets", durable=True
        )
    except DatabaseUnavailableError as exc:
        log.error("import_tickets: %s", exc)
        return 1
    try:
        return run(argv, settings, pool)
    finally:
        pool.close()


if __name__ == "__main__":
    sys.exit(main())
