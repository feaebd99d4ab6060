"""Fuel importer: WhatsApp fuel records from S3 (snapshot, hourly deltas) or a file → `fuel`.

Usage:
    python import_fuel.py --snapshot [--apply]     # full reconcile from fuel_records/latest.json
    python import_fuel.py --changes  [--apply]     # deltas fuel_records/changes/<ISO-ts>.json
    python import_fuel.py --file PATH [--apply]    # one local file (upsert only, no reconcile)
    python import_fuel.py --list-rejects           # the dead letters and quarantined files
    python import_fuel.py --retry-rejects [--apply]  # re-parse the dead letters, import the fixed
    python import_fuel.py --retry-quarantine KEY [--apply]  # a fixed quarantined delta file

Without `--apply` it is a dry run: files are read and parsed and the counts reported, and
nothing is written (not even the audit log). Each file is one transaction: its records,
its rejects, the file ledger and the watermark commit together. Records are upserted on the
source `id`; a record whose `updated_at` is older than the stored one never overwrites it
(out-of-order deltas), and an unchanged record is not rewritten (a rerun is a no-op).

A record that cannot be stored goes to the dead letters (`fuel.rejects`) with its reason and
the rest of its file goes in; a delta file that cannot be read at all (not UTF-8, not JSON,
too deep, wrong shape) is moved to `quarantine/<key>` in its bucket with a reason object and
`--changes` goes on. The watermark never passes a file that was neither imported nor
quarantined.

Exit status: 0 when the feed moved (dead letters and quarantined files are warnings, counted
in the summary line), 1 when a file was neither imported nor quarantined (S3 read error, a
failed move, an unreadable snapshot or --file), or on a database/S3 listing failure, 2 on
bad usage. See docs/fuel.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import psycopg
from psycopg_pool import ConnectionPool

from fuel_import import feed, parse, store
from fuel_import.feed import CHANGES_DIR, DEFAULT_LOOKBACK_HOURS, SNAPSHOT_NAME
from fuel_import.parse import (
    DELETE_OPS,
    DELETED_KEYS,
    EAT,
    ENVELOPE_KEYS,
    LITRES_KEYS,
    MAX_LITRES,
    OP_KEYS,
    PLATE_KEYS,
    TIME_KEYS,
    UPDATED_KEYS,
    BadRecord,
    FileContentError,
    FileParseError,
    FuelImportError,
    FuelRecord,
    ParsedFile,
    first_value,
    parse_file,
    parse_number,
    parse_record,
    parse_time,
    record_id,
)
from fuel_import.store import (
    MAX_MISSING_FRACTION,
    FileReport,
    apply_parsed,
    file_summary,
    mark_missing,
    save_rejects,
    upsert_records,
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

# The parts live in fuel_import/; these names stay importable from here (tests, scripts).
__all__ = [
    "CHANGES_DIR",
    "DEFAULT_LOOKBACK_HOURS",
    "DELETED_KEYS",
    "DELETE_OPS",
    "EAT",
    "ENVELOPE_KEYS",
    "LITRES_KEYS",
    "MAX_BAD_IN_LOG",
    "MAX_LITRES",
    "MAX_MISSING_FRACTION",
    "OP_KEYS",
    "PLATE_KEYS",
    "SNAPSHOT_NAME",
    "TIME_KEYS",
    "UPDATED_KEYS",
    "BadRecord",
    "FileContentError",
    "FileParseError",
    "FileReport",
    "FuelImportError",
    "FuelRecord",
    "Importer",
    "ParsedFile",
    "RetryReport",
    "RunReport",
    "apply_parsed",
    "build_parser",
    "first_value",
    "list_rejects",
    "main",
    "mark_missing",
    "parse_file",
    "parse_number",
    "parse_record",
    "parse_time",
    "record_id",
    "retry_rejects",
    "run",
    "save_rejects",
    "upsert_records",
]

log = logging.getLogger(__name__)

MAX_BAD_IN_LOG = 100


# ─────────────────────────────────────────────────────────────────────────────
# Run report
# ─────────────────────────────────────────────────────────────────────────────


@dataclass
class RunReport:
    """Every file of one run."""

    mode: str
    dry_run: bool
    files: list[FileReport] = field(default_factory=list)

    @property
    def failed(self) -> list[FileReport]:
        """Files neither imported nor quarantined (they hold the watermark)."""
        return [f for f in self.files if f.error is not None]

    @property
    def quarantined(self) -> list[FileReport]:
        """Files moved to quarantine/ (or, in a dry run, that would be)."""
        return [f for f in self.files if f.quarantined is not None]

    def total(self, name: str) -> int:
        """Sum of a counter over the files (`bad` counts the bad records)."""
        if name == "bad":
            return sum(len(f.bad) for f in self.files)
        return sum(int(getattr(f, name)) for f in self.files)


# ─────────────────────────────────────────────────────────────────────────────
# Modes
# ─────────────────────────────────────────────────────────────────────────────


@dataclass
class Importer:
    """Wires S3 / files → parse → write for one run."""

    settings: Settings
    apply: bool
    pool: ConnectionPool | None = None
    s3: S3Client | None = None

    @property
    def prefix(self) -> str:
        """The feed's prefix in the fuel bucket, with a trailing slash."""
        prefix = self.settings.fuel_prefix
        return prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def _pool(self) -> ConnectionPool:
        if self.pool is None:
            self.pool = make_pool(
                self.settings.dsn(), min_size=1, max_size=2, name="import_fuel", durable=True
            )
        return self.pool

    def _s3(self) -> S3Client:
        if self.s3 is None:
            self.s3 = make_s3_client(self.settings)
        return self.s3

    def _get(self, key: str) -> tuple[bytes, str | None, datetime | None]:
        return feed.read_object(self._s3, self.settings.fuel_bucket, key)

    def _process(
        self,
        report: RunReport,
        key: str,
        load: Callable[[], tuple[bytes, str | None, datetime | None]],
        *,
        kind: str,
        reconcile: bool = False,
        state_feed: str | None = None,
        advance_watermark: bool = False,
        quarantine: bool = False,
    ) -> FileReport:
        file_report = FileReport(key)
        report.files.append(file_report)
        try:
            data, etag, modified = load()
        except FileParseError as exc:
            file_report.error = str(exc)
            log.error("fuel file %s could not be read: %s", key, exc)
            return file_report
        try:
            parsed = parse_file(data, key)
        except FileContentError as exc:
            if quarantine:
                self._quarantine(file_report, exc, kind=kind, etag=etag, size=len(data))
            else:
                file_report.error = str(exc)
                log.error("fuel file %s could not be read: %s", key, exc)
            return file_report
        file_report.records = len(parsed.records)
        file_report.bad = parsed.bad
        for good in parsed.records:
            if good.cleaned:
                log.warning(
                    "fuel %s record #%d id=%s: set to null: %s",
                    key,
                    good.index,
                    good.id,
                    "; ".join(good.cleaned),
                )
        if self.apply:
            as_of = (parsed.generated_at or modified or None) if reconcile else None
            apply_parsed(
                self._pool(),
                parsed,
                kind=kind,
                etag=etag,
                report=file_report,
                reconcile_as_of=as_of,
                state_feed=state_feed,
                advance_watermark=advance_watermark,
            )
        else:
            file_report.cleaned = sum(1 for r in parsed.records if r.cleaned)
        for bad in file_report.bad:
            log.warning(
                "fuel %s record #%d id=%s skipped: %s (dead letter)",
                key,
                bad.index,
                bad.id,
                bad.reason,
            )
        log.info("fuel %s %s", key, json.dumps(file_summary(file_report)))
        return file_report

    def _quarantine(
        self,
        file_report: FileReport,
        exc: FileContentError,
        *,
        kind: str,
        etag: str | None,
        size: int,
    ) -> None:
        """Move an unreadable feed file to quarantine/<key> (copy, reason object, DB record,
        delete); when the move fails the file is an error and holds the watermark."""
        key, bucket = file_report.key, self.settings.fuel_bucket
        target = quarantine_key(key)
        if not self.apply:
            file_report.quarantined = str(exc)
            log.warning("fuel file %s unreadable, would be moved to %s: %s", key, target, exc)
            return
        reason = {
            "object_key": key,
            "bucket": bucket,
            "quarantine_key": target,
            "reason": str(exc),
            "etag": etag,
            "size_bytes": size,
            "quarantined_at": datetime.now(UTC).isoformat(),
            "by": "import_fuel.py",
            "to_restore": (
                f"fix the file, upload it to {key}, delete {target} and this object; "
                "the next --changes run imports it (see docs/fuel.md)"
            ),
        }
        try:
            feed.quarantine_copy(self._s3, bucket, key, reason)
        except FileParseError as move_error:
            file_report.error = f"{exc}; {move_error}"
            log.error("fuel file %s unreadable and not quarantined: %s", key, file_report.error)
            return
        store.record_quarantine(
            self._pool(),
            key=key,
            bucket=bucket,
            quarantine_key=target,
            reason=str(exc),
            etag=etag,
            size=size,
            kind=kind,
        )
        feed.delete_object(self._s3, bucket, key)
        file_report.quarantined = str(exc)
        log.warning("fuel file %s unreadable, moved to %s: %s", key, target, exc)

    def snapshot(self) -> RunReport:
        """Full reconcile from `<prefix>latest.json`."""
        report = RunReport("snapshot", not self.apply)
        key = self.prefix + SNAPSHOT_NAME
        self._process(
            report,
            key,
            functools.partial(self._get, key),
            kind="snapshot",
            reconcile=True,
            state_feed="snapshot",
            advance_watermark=True,
        )
        return report

    def file(self, path: Path) -> RunReport:
        """Upsert one local file (snapshot or delta format); no reconcile, no watermark."""
        report = RunReport("file", not self.apply)

        def load() -> tuple[bytes, str | None, datetime | None]:
            try:
                return path.read_bytes(), None, None
            except OSError as exc:
                raise FileParseError(f"{path}: cannot read: {exc}") from exc

        self._process(report, f"file:{path.resolve()}", load, kind="file")
        return report

    def changes(self, lookback_hours: int = DEFAULT_LOOKBACK_HOURS) -> RunReport:
        """Apply every delta after the watermark, in key order; late files (a key below the
        watermark, within the look-back window, never applied) are applied too. A file that
        cannot be read at all is quarantined and the watermark goes on; one that is neither
        imported nor quarantined (an S3 error) stops the watermark there: later files are
        applied and re-checked on the next run (idempotent), the bad one is retried."""
        report = RunReport("changes", not self.apply)
        pool = self._pool()
        with pool.connection() as conn:
            watermark = store.read_watermark(conn)
        prefix = self.prefix + CHANGES_DIR
        etags = dict(self._list(prefix, feed.listing_start(prefix, watermark, lookback_hours)))
        keys = sorted(etags)
        with pool.connection() as conn:
            done = store.applied_etags(conn, keys)
        stored = watermark
        blocked = False
        for key in keys:
            advance = not blocked and (watermark is None or key > watermark)
            if key in done and done[key] == etags[key]:
                if advance:  # applied on an earlier run while an older file was blocked
                    watermark = key
                continue
            file_report = self._process(
                report,
                key,
                functools.partial(self._get, key),
                kind="changes",
                state_feed="changes",
                advance_watermark=advance,
                quarantine=True,
            )
            if file_report.error is not None:
                blocked = True
            elif advance:
                watermark = key
        if self.apply and watermark != stored:
            with pool.connection() as conn:
                store.set_watermark(conn, watermark)
        log.info(
            "fuel changes: %d new file(s), watermark now %s%s",
            len(report.files),
            watermark,
            " (dry run)" if not self.apply else "",
        )
        return report

    def retry_quarantine(self, key: str) -> RunReport:
        """Import a quarantined delta after it was fixed in place (`quarantine/<key>`
        overwritten with the fixed file): applied under its original key (the watermark does
        not move: it is a late file), then the quarantine copy and reason object are deleted.
        Still unreadable → an error (exit 1), and it stays in quarantine."""
        report = RunReport("retry-quarantine", not self.apply)
        original = key.removeprefix(QUARANTINE_PREFIX)
        source = quarantine_key(original)
        file_report = self._process(
            report, original, functools.partial(self._get, source), kind="changes"
        )
        if file_report.error is None and self.apply:
            bucket = self.settings.fuel_bucket
            feed.delete_object(self._s3, bucket, source)
            feed.delete_object(self._s3, bucket, source + ".reason.json")
            log.info("fuel %s imported from %s; quarantine copy removed", original, source)
        return report

    def _list(self, prefix: str, start_after: str | None) -> Iterator[tuple[str, str | None]]:
        return feed.list_json(self._s3, self.settings.fuel_bucket, prefix, start_after)


def _audit(pool: ConnectionPool, report: RunReport, started: float) -> None:
    bad = [
        {"file": f.key, "index": b.index, "id": b.id, "reason": b.reason}
        for f in report.files
        for b in f.bad
    ]
    record_ingestion(
        pool,
        source="import",
        method="import_fuel",
        target=report.mode,
        ok=not report.failed,
        rows=report.total("inserted") + report.total("updated"),
        duration_ms=int((time.monotonic() - started) * 1000),
        error="; ".join(f.error for f in report.failed if f.error) or None,
        detail={
            "files": {f.key: file_summary(f) for f in report.files},
            "bad": bad[:MAX_BAD_IN_LOG],
            "bad_total": len(bad),
            "quarantined": {f.key: f.quarantined for f in report.quarantined},
        },
    )


# ─────────────────────────────────────────────────────────────────────────────
# Dead letters: list, retry
# ─────────────────────────────────────────────────────────────────────────────


@dataclass
class RetryReport:
    """What `--retry-rejects` did (or, in a dry run, would do)."""

    dry_run: bool
    imported: list[str] = field(default_factory=list)  # "<source_key>#<index>"
    still_bad: dict[str, str] = field(default_factory=dict)  # "<source_key>#<index>" → reason


def _reparse(letter: store.DeadLetter) -> FuelRecord | BadRecord:
    """The dead letter's stored text parsed again with the current code."""
    text = letter.raw_text
    if text is None and letter.raw is not None:
        text = json.dumps(letter.raw)
    if text is None:
        return BadRecord(letter.index, letter.id, "no stored record text to retry", None)
    if text.endswith(parse.TRUNCATED_MARK):
        note = f" (stored text truncated at {parse.MAX_RECORD_BYTES} bytes: cannot be retried)"
        reason = letter.reason if letter.reason.endswith(note) else letter.reason + note
        return BadRecord(letter.index, letter.id, reason, None)
    try:
        item = parse.load_json(text.encode("utf-8", "replace"), letter.source_key)
    except FileContentError as exc:
        return BadRecord(letter.index, letter.id, f"stored text unreadable: {exc}", None)
    return parse_record(item, letter.index)


def retry_rejects(pool: ConnectionPool, *, apply: bool) -> RetryReport:
    """Re-parse every dead letter with the current code: those that now parse are upserted
    (to their original source key) and removed; the rest keep an updated reason and retry
    time. A dry run only reports."""
    report = RetryReport(dry_run=not apply)
    with pool.connection() as conn:
        letters = store.list_dead_letters(conn)
    for letter in letters:
        name = f"{letter.source_key}#{letter.index}"
        parsed = _reparse(letter)
        if isinstance(parsed, FuelRecord) and apply:
            with pool.connection() as conn, conn.transaction():
                refused = upsert_records(
                    conn, [parsed], letter.source_key, FileReport(letter.source_key)
                )
                if refused:
                    parsed = refused[0]
                else:
                    store.resolve_dead_letter(conn, letter)
        if isinstance(parsed, FuelRecord):
            report.imported.append(name)
            log.info("fuel dead letter %s id=%s imported", name, parsed.id)
            continue
        report.still_bad[name] = parsed.reason
        if apply:
            with pool.connection() as conn:
                store.keep_dead_letter(conn, letter, parsed.reason)
        log.warning("fuel dead letter %s id=%s still bad: %s", name, letter.id, parsed.reason)
    log.info(
        "import_fuel retry-rejects%s: dead_letters=%d imported=%d still_bad=%d",
        " (dry run, nothing written)" if not apply else "",
        len(letters),
        len(report.imported),
        len(report.still_bad),
    )
    return report


def list_rejects(pool: ConnectionPool, out: TextIO) -> int:
    """Print the dead letters and the quarantined files; returns how many there are."""
    with pool.connection() as conn:
        letters = store.list_dead_letters(conn)
        files = store.list_quarantined(conn)
    for letter in letters:
        retried = ""
        if letter.retried_at is not None:
            retried = f" retried {letter.retried_at:%Y-%m-%dT%H:%M:%SZ} x{letter.retries}"
        out.write(
            f"dead letter {letter.source_key} #{letter.index} id={letter.id}"
            f" seen {letter.seen_at:%Y-%m-%dT%H:%M:%SZ}{retried}: {letter.reason}\n"
        )
    for key, bucket, target, reason, when in files:
        out.write(f"quarantined {key} -> s3://{bucket}/{target} at {when:%Y-%m-%dT%H:%M:%SZ}:")
        out.write(f" {reason}\n")
    out.write(f"{len(letters)} dead letter(s), {len(files)} quarantined file(s)\n")
    return len(letters) + len(files)


# ─────────────────────────────────────────────────────────────────────────────
# Entry point
# ─────────────────────────────────────────────────────────────────────────────


def build_parser() -> argparse.ArgumentParser:
    """The CLI."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--snapshot", action="store_true", help="full reconcile from latest.json")
    mode.add_argument("--changes", action="store_true", help="hourly deltas since the watermark")
    mode.add_argument("--file", type=Path, metavar="PATH", help="import one local JSON file")
    mode.add_argument(
        "--list-rejects", action="store_true", help="print the dead letters and quarantined files"
    )
    mode.add_argument(
        "--retry-quarantine",
        metavar="KEY",
        help="import a quarantined delta fixed in place at quarantine/KEY, then remove it",
    )
    mode.add_argument(
        "--retry-rejects",
        action="store_true",
        help="re-parse the dead letters; import those that parse now (with --apply)",
    )
    parser.add_argument("--apply", action="store_true", help="write (default: dry run)")
    parser.add_argument(
        "--lookback-hours",
        type=int,
        default=DEFAULT_LOOKBACK_HOURS,
        help="--changes: also pick up late files this far below the watermark",
    )
    return parser


def run(
    args: argparse.Namespace,
    settings: Settings,
    *,
    pool: ConnectionPool | None = None,
    s3: S3Client | None = None,
) -> RunReport:
    """Run one mode; the audit row goes to tracksolid.ingestion_log when applying."""
    started = time.monotonic()
    quarantined_key = getattr(args, "retry_quarantine", None)
    mode = (
        "snapshot"
        if args.snapshot
        else "changes"
        if args.changes
        else "retry-quarantine"
        if quarantined_key
        else "file"
    )
    if args.file is None and not (args.snapshot or args.changes or quarantined_key):
        raise FuelImportError("run() takes --snapshot, --changes, --file or --retry-quarantine")
    importer = Importer(settings, apply=bool(args.apply), pool=pool, s3=s3)
    own_pool = pool is None
    try:
        if args.snapshot:
            report = importer.snapshot()
        elif args.changes:
            report = importer.changes(args.lookback_hours)
        elif quarantined_key:
            report = importer.retry_quarantine(quarantined_key)
        else:
            report = importer.file(args.file)
    except FuelImportError as exc:
        if importer.apply:
            failed = RunReport(mode, dry_run=False, files=[FileReport("-", error=str(exc))])
            _audit(importer._pool(), failed, started)
        raise
    else:
        totals = {name: report.total(name) for name in file_summary(FileReport("-"))}
        warn = bool(report.quarantined or totals["bad"] or totals["cleaned"])
        log.log(
            logging.WARNING if warn else logging.INFO,
            "import_fuel %s%s: files=%d failed=%d quarantined=%d dead_letters=%d%s %s",
            report.mode,
            " (dry run, nothing written)" if report.dry_run else "",
            len(report.files),
            len(report.failed),
            len(report.quarantined),
            totals["bad"],
            " (warnings: see import_fuel.py --list-rejects)" if warn else "",
            json.dumps(totals),
        )
        if importer.apply:
            _audit(importer._pool(), report, started)
        return report
    finally:
        if own_pool and importer.pool is not None:
            importer.pool.close()


def _dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    pool = make_pool(settings.dsn(), min_size=1, max_size=2, name="import_fuel", durable=True)
    started = time.monotonic()
    try:
        if args.list_rejects:
            list_rejects(pool, sys.stdout)
            return 0
        report = retry_rejects(pool, apply=bool(args.apply))
        if args.apply:
            record_ingestion(
                pool,
                source="import",
                method="import_fuel",
                target="retry-rejects",
                ok=True,
                rows=len(report.imported),
                duration_ms=int((time.monotonic() - started) * 1000),
                error=None,
                detail={"imported": report.imported, "still_bad": report.still_bad},
            )
        return 0
    finally:
        pool.close()


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """CLI entry point; returns the exit status: 0 the feed moved (dead letters and
    quarantined files are warnings), 1 a file was neither imported nor quarantined or the
    database/S3 failed, 2 usage."""
    args = build_parser().parse_args(argv)
    if settings is None:
        settings = Settings()
        setup_logging(settings.log_level)
    try:
        if args.list_rejects or args.retry_rejects:
            return _dead_letters(args, settings)
        report = run(args, settings)
    except (psycopg.Error, FuelImportError, DatabaseUnavailableError) as exc:
        log.error("import_fuel failed: %s", exc)
        return 1
    for failed in report.failed:
        log.error("import_fuel: file %s not imported: %s", failed.key, failed.error)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
