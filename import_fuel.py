"""Fuel importer: WhatsApp fuel records from S3 (snapshot, hourly deltas) or a file → `fuel`.

Usage:
    python import_fuel.py --snapshot [--apply]     # full reconcile from fuel_records/latest.json
    python import_fuel.py --changes  [--apply]     # deltas fuel_records/changes/<ISO-ts>.json
    python import_fuel.py --file PATH [--apply]    # one local file (upsert only, no reconcile)

Without `--apply` it is a dry run: files are read and parsed and the counts reported, and
nothing is written (not even the audit log). Each file is one transaction: its records,
its rejects, the file ledger and the watermark commit together. Records are upserted on the
source `id`; a record whose `updated_at` is older than the stored one never overwrites it
(out-of-order deltas), and an unchanged record is not rewritten (a rerun is a no-op).

Exit status: 0 when every file was read (bad records are skipped and reported with their
index, id and reason), 1 when a file could not be read or parsed as a whole (named in the
log), 2 on bad usage. See docs/fuel.md.
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
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg_pool import ConnectionPool

from fuel_import import feed, store
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
    DatabaseUnavailableError,
    Settings,
    make_pool,
    make_s3_client,
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
    "FileParseError",
    "FileReport",
    "FuelImportError",
    "FuelRecord",
    "Importer",
    "ParsedFile",
    "RunReport",
    "apply_parsed",
    "build_parser",
    "first_value",
    "main",
    "mark_missing",
    "parse_file",
    "parse_number",
    "parse_record",
    "parse_time",
    "record_id",
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
        """Files that could not be read or parsed as a whole."""
        return [f for f in self.files if f.error is not None]

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
            self.pool = make_pool(self.settings.dsn(), min_size=1, max_size=2, name="import_fuel")
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
    ) -> FileReport:
        file_report = FileReport(key)
        report.files.append(file_report)
        try:
            data, etag, modified = load()
            parsed = parse_file(data, key)
        except FileParseError as exc:
            file_report.error = str(exc)
            log.error("fuel file %s could not be read: %s", key, exc)
            return file_report
        file_report.records = len(parsed.records)
        file_report.bad = parsed.bad
        for bad in parsed.bad:
            log.warning("fuel %s record #%d id=%s skipped: %s", key, bad.index, bad.id, bad.reason)
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
        log.info("fuel %s %s", key, json.dumps(file_summary(file_report)))
        return file_report

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
        cannot be read stops the watermark there: later files are applied and re-checked
        on the next run (idempotent), the bad one is retried until fixed."""
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
        },
    )


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
    mode = "snapshot" if args.snapshot else "changes" if args.changes else "file"
    importer = Importer(settings, apply=bool(args.apply), pool=pool, s3=s3)
    own_pool = pool is None
    try:
        if args.snapshot:
            report = importer.snapshot()
        elif args.changes:
            report = importer.changes(args.lookback_hours)
        else:
            report = importer.file(args.file)
    except FuelImportError as exc:
        if importer.apply:
            failed = RunReport(mode, dry_run=False, files=[FileReport("-", error=str(exc))])
            _audit(importer._pool(), failed, started)
        raise
    else:
        totals = {name: report.total(name) for name in file_summary(FileReport("-"))}
        log.info(
            "import_fuel %s%s: files=%d failed=%d %s",
            report.mode,
            " (dry run, nothing written)" if report.dry_run else "",
            len(report.files),
            len(report.failed),
            json.dumps(totals),
        )
        if importer.apply:
            _audit(importer._pool(), report, started)
        return report
    finally:
        if own_pool and importer.pool is not None:
            importer.pool.close()


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 a file failed, 2 usage)."""
    args = build_parser().parse_args(argv)
    if settings is None:
        settings = Settings()
        setup_logging(settings.log_level)
    try:
        report = run(args, settings)
    except (psycopg.Error, FuelImportError, DatabaseUnavailableError) as exc:
        log.error("import_fuel failed: %s", exc)
        return 1
    for failed in report.failed:
        log.error("import_fuel: file %s not imported: %s", failed.key, failed.error)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
