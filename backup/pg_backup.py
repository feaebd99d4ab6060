"""Database backups: `pg_dump -Fc` streamed to S3, retention, listing, restore, nightly loop.

Usage (`python -m backup.pg_backup COMMAND ...`, settings from the environment / `.env`):
    dump    [--no-prune]                 dump DATABASE_URL to s3://BACKUP_BUCKET/
                                         BACKUP_PREFIX<db>/<YYYY-MM-DD>T<HHMMSS>Z.dump, then prune
    prune   [--dry-run]                  keep BACKUP_KEEP_DAILY daily + BACKUP_KEEP_WEEKLY weekly
    list    [--all]                      dumps with their times and sizes
    restore KEY|latest --target-url URL [--create] [--force] [--jobs N]
                                         download a dump and pg_restore it into URL
    run     [--at HH:MM]                 long-running: dump + prune every day at HH:MM UTC
                                         (default 22:30 UTC = 01:30 EAT); SIGTERM exits cleanly

The dump is streamed from pg_dump's stdout into a multipart upload; a pg_dump failure (non-zero
exit status, also mid-stream) aborts the upload, so no partial dump is ever left in the bucket.
pg_dump / pg_restore come from `$PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else PATH.
Each dump, prune and restore is recorded in `tracksolid.ingestion_log` (source 'job', method
'db_backup') when the database is reachable. Passwords are passed to the tools in PGPASSWORD,
never on their command line, and never logged.

Parts: `retention.py` (keys, retention rules, listing and pruning on S3), `restore.py`,
`pgtools.py` (client tools, connection strings), `errors.py`; this module dumps, schedules and
holds the CLI.

Exit status: 0 ok, 1 the operation failed (reason in the log), 2 bad usage, 3 restore refused
(the target already has tables in schema `tracksolid`; use --force). See backup/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from datetime import time as dtime
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, cast

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from psycopg_pool import ConnectionPool

from backup.errors import BackupError, DumpError, TargetNotEmptyError, ToolError
from backup.pgtools import (
    check_tool_version,
    database_name,
    describe,
    find_pg_tool,
    pg_env,
    redact,
    split_password,
    stderr_tail,
)
from backup.restore import restore
from backup.retention import (
    DumpInfo,
    dump_folder,
    dump_key,
    list_dumps,
    next_run_time,
    parse_at,
    prune,
)
from ts_shared import (
    DatabaseUnavailableError,
    Settings,
    make_pool,
    make_s3_client,
    record_ingestion,
    setup_logging,
    utcnow,
)

if TYPE_CHECKING:
    from boto3.s3.transfer import TransferConfig
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

DEFAULT_AT = "22:30"  # UTC = 01:30 EAT, after the evening traffic, before the early shift
PART_SIZE = 32 * 1024 * 1024  # 10,000 parts x 32 MiB: dumps up to ~320 GiB
IN_MEMORY_PARTS = 4  # a pipe is not seekable: parts are buffered in memory (~4 x 32 MiB)
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 3


# ─────────────────────────────────────────────────────────────────────────────
# Stopping (SIGTERM) and auditing
# ─────────────────────────────────────────────────────────────────────────────


class Stopper:
    """Set by SIGTERM/SIGINT: ends the `run` loop and terminates a pg_dump in progress (its
    upload is then aborted, so a stopped container leaves no partial dump behind)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None

    def attach(self, proc: subprocess.Popen[bytes]) -> None:
        """Remember the running child process."""
        with self._lock:
            self._child = proc
            stopped = self.event.is_set()
        if stopped:
            _terminate(proc)

    def detach(self) -> None:
        """Forget the child (it has ended)."""
        with self._lock:
            self._child = None

    def stop(self) -> None:
        """Ask everything to stop."""
        self.event.set()
        with self._lock:
            child = self._child
        if child is not None:
            _terminate(child)

    def handle_signal(self, signum: int, _frame: FrameType | None) -> None:
        """Signal handler."""
        log.info("signal %s received: stopping", signal.Signals(signum).name)
        self.stop()


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.terminate()


class Auditor:
    """Best-effort rows in `tracksolid.ingestion_log` of one database (pool opened lazily,
    only after a quick reachability probe, so an unreachable database costs seconds, not a
    pool timeout)."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._pool: ConnectionPool | None = None

    def record(self, **values: Any) -> None:
        """`record_ingestion(pool, source='job', method='db_backup', **values)`; never raises."""
        try:
            if self._pool is None:
                with psycopg.connect(self._conninfo, connect_timeout=5):
                    pass
                self._pool = make_pool(
                    self._conninfo, min_size=1, max_size=1, name="db_backup", timeout=10
                )
            record_ingestion(self._pool, source="job", method="db_backup", **values)
        except (psycopg.Error, DatabaseUnavailableError) as exc:
            log.warning(
                "db_backup not recorded in %s: %s",
                describe(self._conninfo),
                redact(str(exc), None),
            )

    def close(self) -> None:
        """Close the pool if one was opened."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


# ─────────────────────────────────────────────────────────────────────────────
# Dump
# ─────────────────────────────────────────────────────────────────────────────


class _DumpPipe:
    """pg_dump's stdout as the file object `upload_fileobj` reads.

    A short read means end of stream: then pg_dump's exit status is checked, and a failure
    raises DumpError inside the transfer, which aborts the upload (multipart: the upload is
    aborted; small dump: the single PUT is never sent). So a partial dump is never completed.
    """

    def __init__(self, proc: subprocess.Popen[bytes], on_failure: Callable[[int], str]) -> None:
        self._proc = proc
        self._on_failure = on_failure
        self.bytes = 0
        self.error: DumpError | None = None

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (fewer only at the end of the stream)."""
        assert self._proc.stdout is not None
        # A blocking BufferedReader returns `size` bytes unless the stream ends first.
        data = self._proc.stdout.read(size)
        self.bytes += len(data)
        if size < 0 or len(data) < size:
            self._check_exit()
        return data

    def _check_exit(self) -> None:
        code = self._proc.wait()
        if code != 0:
            self.error = DumpError(self._on_failure(code))
            raise self.error


def _transfer_config() -> TransferConfig:
    from boto3.s3.transfer import TransferConfig  # noqa: PLC0415 - boto3 is imported lazily

    config = TransferConfig(
        multipart_threshold=PART_SIZE,
        multipart_chunksize=PART_SIZE,
        max_concurrency=2,
        preferred_transfer_client="classic",  # the CRT client cannot stream a pipe
    )
    config.max_in_memory_upload_chunks = IN_MEMORY_PARTS
    return config


def _discard_upload(s3: S3Client, bucket: str, key: str) -> None:
    """Remove whatever a failed upload may have left: the object and unfinished multipart
    uploads of the key."""
    with contextlib.suppress(ClientError, BotoCoreError):
        s3.delete_object(Bucket=bucket, Key=key)
    with contextlib.suppress(ClientError, BotoCoreError):
        uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
        for upload in uploads:
            if upload.get("Key") == key and "UploadId" in upload:
                s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])


def dump(
    settings: Settings,
    s3: S3Client,
    *,
    now: datetime | None = None,
    stopper: Stopper | None = None,
) -> DumpInfo:
    """`pg_dump -Fc` of DATABASE_URL streamed to S3; returns the new dump.

    Raises ToolError (no pg_dump, or older than the server) and DumpError (pg_dump failed or
    the upload failed); in both cases nothing is left in the bucket.
    """
    conninfo = settings.dsn()
    pg_dump = find_pg_tool("pg_dump")
    check_tool_version(pg_dump, conninfo)
    started = now or utcnow()
    key = dump_key(settings.backup_prefix, database_name(conninfo), started)
    bucket = settings.backup_bucket
    dsn, password = split_password(conninfo)
    log.info("pg_dump %s → s3://%s/%s", describe(conninfo), bucket, key)
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(
                [str(pg_dump), "--format=custom", "--no-password", f"--dbname={dsn}"],
                stdout=subprocess.PIPE,
                stderr=errors,
                env=pg_env(password),
            )
        except OSError as exc:
            raise ToolError(f"cannot run {pg_dump}: {exc}") from exc

        def failure(code: int) -> str:
            how = f"signal {-code}" if code < 0 else f"status {code}"
            return f"pg_dump exited with {how}: {stderr_tail(errors, password) or '-'}"

        pipe = _DumpPipe(proc, failure)
        if stopper is not None:
            stopper.attach(proc)
        try:
            s3.upload_fileobj(
                cast("IO[bytes]", pipe),
                bucket,
                key,
                ExtraArgs={"ContentType": "application/octet-stream"},
                Config=_transfer_config(),
            )
            if (code := proc.wait()) != 0:  # the pipe checked it already; be sure
                raise DumpError(failure(code))
        except BaseException as exc:
            _terminate(proc)
            proc.wait()
            _discard_upload(s3, bucket, key)
            if not isinstance(exc, Exception) or exc is pipe.error:
                raise
            if pipe.error is not None:  # the transfer wrapped our error
                raise pipe.error from exc
            if isinstance(exc, BackupError):
                raise
            raise DumpError(f"upload to s3://{bucket}/{key} failed: {exc}") from exc
        finally:
            if stopper is not None:
                stopper.detach()
            if proc.stdout is not None:
                proc.stdout.close()
        if warnings := stderr_tail(errors, password):
            log.info("pg_dump said: %s", warnings)
    log.info("dumped %s: %d bytes", key, pipe.bytes)
    return DumpInfo(key, started.astimezone(UTC).replace(microsecond=0), pipe.bytes)


# ─────────────────────────────────────────────────────────────────────────────
# Jobs (dump + prune with auditing) and the long-running loop
# ─────────────────────────────────────────────────────────────────────────────


def backup_job(
    settings: Settings,
    s3: S3Client,
    auditor: Auditor,
    *,
    keep_daily: int,
    keep_weekly: int,
    do_prune: bool = True,
    stopper: Stopper | None = None,
) -> bool:
    """Dump, then prune (only after a successful dump); audited; False on failure (logged)."""
    started = time.monotonic()
    try:
        info = dump(settings, s3, stopper=stopper)
    except BackupError as exc:
        log.error("backup failed: %s", exc)
        auditor.record(
            ok=False,
            error=str(exc),
            duration_ms=int((time.monotonic() - started) * 1000),
            detail={"action": "dump"},
        )
        return False
    auditor.record(
        ok=True,
        target=info.key,
        duration_ms=int((time.monotonic() - started) * 1000),
        detail={"action": "dump", "bytes": info.size, "bucket": settings.backup_bucket},
    )
    if not do_prune:
        return True
    return prune_job(settings, s3, auditor, keep_daily=keep_daily, keep_weekly=keep_weekly)


def prune_job(
    settings: Settings,
    s3: S3Client,
    auditor: Auditor | None,
    *,
    keep_daily: int,
    keep_weekly: int,
    dry_run: bool = False,
    db_name: str | None = None,
) -> bool:
    """Apply retention to one database's folder; audited unless a dry run; False on failure."""
    folder = dump_folder(settings.backup_prefix, db_name or database_name(settings.dsn()))
    started = time.monotonic()
    try:
        report = prune(s3, settings.backup_bucket, folder, keep_daily, keep_weekly, dry_run=dry_run)
    except (BackupError, ClientError, BotoCoreError) as exc:
        log.error("prune of s3://%s/%s failed: %s", settings.backup_bucket, folder, exc)
        if auditor is not None and not dry_run:
            auditor.record(ok=False, error=str(exc), detail={"action": "prune"})
        return False
    verb = "would delete" if dry_run else "deleted"
    log.info(
        "retention (%d daily, %d weekly): kept %d, %s %d",
        keep_daily,
        keep_weekly,
        len(report.kept),
        verb,
        len(report.deleted),
    )
    if auditor is not None and not dry_run:
        auditor.record(
            ok=True,
            target=folder,
            rows=len(report.deleted),
            duration_ms=int((time.monotonic() - started) * 1000),
            detail={
                "action": "prune",
                "kept": len(report.kept),
                "deleted": [d.key for d in report.deleted],
            },
        )
    if dry_run:
        for dump_info in report.deleted:
            sys.stdout.write(f"would delete {dump_info.key}\n")
    return True


def run_forever(
    settings: Settings,
    s3: S3Client,
    auditor: Auditor,
    stopper: Stopper,
    *,
    at: dtime,
    keep_daily: int,
    keep_weekly: int,
    retries: int = 2,
    retry_delay_s: float = 900.0,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Dump + prune every day at `at` (UTC) until `stopper` is set; a failed run is retried
    `retries` times, `retry_delay_s` apart, then waits for the next day."""
    while not stopper.event.is_set():
        when = next_run_time(clock(), at)
        log.info("next backup at %s", when.strftime("%Y-%m-%dT%H:%M:%SZ"))
        # Short waits, re-reading the clock: robust to clock steps and suspended hosts.
        while (remaining := (when - clock()).total_seconds()) > 0:
            if stopper.event.wait(min(remaining, 300.0)):
                return
        for attempt in range(retries + 1):
            ok = backup_job(
                settings,
                s3,
                auditor,
                keep_daily=keep_daily,
                keep_weekly=keep_weekly,
                stopper=stopper,
            )
            if ok or stopper.event.is_set() or attempt == retries:
                break
            log.info("retrying the backup in %.0f s (%d/%d)", retry_delay_s, attempt + 1, retries)
            if stopper.event.wait(retry_delay_s):
                return


# ─────────────────────────────────────────────────────────────────────────────
# CLI
# ─────────────────────────────────────────────────────────────────────────────


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _at(text: str) -> dtime:
    try:
        return parse_at(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m backup.pg_backup",
        description="pg_dump to S3, retention, listing and restore (see backup/README.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def retention_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--keep-daily", type=_non_negative, help="daily dumps kept (BACKUP_KEEP_DAILY)"
        )
        p.add_argument(
            "--keep-weekly", type=_non_negative, help="weekly dumps kept (BACKUP_KEEP_WEEKLY)"
        )

    db_help = "folder under BACKUP_PREFIX (default: DATABASE_URL's database name)"

    p_dump = sub.add_parser("dump", help="pg_dump DATABASE_URL to S3, then prune")
    p_dump.add_argument("--no-prune", action="store_true", help="skip retention after the dump")
    retention_options(p_dump)

    p_prune = sub.add_parser("prune", help="delete dumps retention does not keep")
    p_prune.add_argument("--dry-run", action="store_true", help="only print what would go")
    p_prune.add_argument("--db-name", help=db_help)
    retention_options(p_prune)

    p_list = sub.add_parser("list", help="list dumps with times and sizes")
    p_list.add_argument("--db-name", help=db_help)
    p_list.add_argument("--all", action="store_true", help="every database under the prefix")

    p_restore = sub.add_parser("restore", help="restore a dump into a database")
    p_restore.add_argument("key", help="`latest`, a dump file name, or a full S3 key")
    p_restore.add_argument("--target-url", required=True, help="database to restore into")
    p_restore.add_argument("--db-name", help=db_help)
    p_restore.add_argument(
        "--force",
        action="store_true",
        help="restore even if the target has tables in tracksolid (drops the dumped objects)",
    )
    p_restore.add_argument(
        "--create", action="store_true", help="create the target database if it does not exist"
    )
    p_restore.add_argument("--jobs", type=int, default=1, help="parallel pg_restore jobs")
    p_restore.add_argument("--work-dir", help="where to download the dump (default: TMPDIR)")

    p_run = sub.add_parser("run", help="long-running: dump + prune daily at --at (UTC)")
    p_run.add_argument(
        "--at", type=_at, default=parse_at(DEFAULT_AT), help="time of day, UTC (default 22:30)"
    )
    p_run.add_argument("--retries", type=_non_negative, default=2, help="retries of a failure")
    p_run.add_argument("--retry-delay-s", type=float, default=900.0, help="seconds between retries")
    retention_options(p_run)
    return parser


@contextlib.contextmanager
def _signals_to(stopper: Stopper) -> Any:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, stopper.handle_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _cmd_list(args: argparse.Namespace, settings: Settings, s3: S3Client) -> int:
    if args.all:
        folder = settings.backup_prefix
    else:
        folder = dump_folder(settings.backup_prefix, args.db_name or database_name(settings.dsn()))
    dumps = list_dumps(s3, settings.backup_bucket, folder, recursive=args.all)
    for d in dumps:
        taken = d.taken_at.strftime("%Y-%m-%d %H:%M:%SZ")
        sys.stdout.write(f"{taken}  {d.size / 1048576:>10.1f} MiB  {d.key}\n")
    total = sum(d.size for d in dumps) / 1048576
    sys.stdout.write(
        f"{len(dumps)} dump(s), {total:.1f} MiB in s3://{settings.backup_bucket}/{folder}\n"
    )
    return EXIT_OK


def _cmd_restore(args: argparse.Namespace, settings: Settings, s3: S3Client) -> int:
    started = time.monotonic()
    auditor = Auditor(args.target_url)
    try:
        key = restore(
            settings,
            s3,
            args.key,
            args.target_url,
            db_name=args.db_name,
            force=args.force,
            create=args.create,
            jobs=args.jobs,
            work_dir=args.work_dir,
        )
    except TargetNotEmptyError:
        raise
    except BackupError as exc:
        auditor.record(ok=False, error=str(exc), detail={"action": "restore", "ref": args.key})
        auditor.close()
        raise
    auditor.record(
        ok=True,
        target=key,
        duration_ms=int((time.monotonic() - started) * 1000),
        detail={"action": "restore", "bucket": settings.backup_bucket, "force": args.force},
    )
    auditor.close()
    sys.stdout.write(
        f"restored s3://{settings.backup_bucket}/{key} into {describe(args.target_url)}\n"
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 failed, 2 usage, 3 restore refused)."""
    args = build_parser().parse_args(argv)
    if settings is None:
        settings = Settings()
        setup_logging(settings.log_level)
    keep_daily = getattr(args, "keep_daily", None)
    keep_weekly = getattr(args, "keep_weekly", None)
    keep_daily = settings.backup_keep_daily if keep_daily is None else keep_daily
    keep_weekly = settings.backup_keep_weekly if keep_weekly is None else keep_weekly
    s3 = make_s3_client(settings)
    try:
        if args.command == "list":
            return _cmd_list(args, settings, s3)
        if args.command == "restore":
            return _cmd_restore(args, settings, s3)
        if args.command == "prune":
            auditor = Auditor(settings.dsn())
            try:
                ok = prune_job(
                    settings,
                    s3,
                    auditor,
                    keep_daily=keep_daily,
                    keep_weekly=keep_weekly,
                    dry_run=args.dry_run,
                    db_name=args.db_name,
                )
            finally:
                auditor.close()
            return EXIT_OK if ok else EXIT_FAILED
        stopper = Stopper()
        auditor = Auditor(settings.dsn())
        try:
            with _signals_to(stopper):
                if args.command == "dump":
                    ok = backup_job(
                        settings,
                        s3,
                        auditor,
                        keep_daily=keep_daily,
                        keep_weekly=keep_weekly,
                        do_prune=not args.no_prune,
                        stopper=stopper,
                    )
                    return EXIT_OK if ok else EXIT_FAILED
                log.info(
                    "db_backup scheduler: daily at %s UTC, keep %d daily + %d weekly, "
                    "database %s, bucket %s",
                    args.at.strftime("%H:%M"),
                    keep_daily,
                    keep_weekly,
                    describe(settings.dsn()),
                    settings.backup_bucket,
                )
                run_forever(
                    settings,
                    s3,
                    auditor,
                    stopper,
                    at=args.at,
                    keep_daily=keep_daily,
                    keep_weekly=keep_weekly,
                    retries=args.retries,
                    retry_delay_s=args.retry_delay_s,
                )
                log.info("db_backup scheduler stopped")
                return EXIT_OK
        finally:
            auditor.close()
    except TargetNotEmptyError as exc:
        log.error("%s", exc)
        return EXIT_REFUSED
    except (BackupError, psycopg.Error, ClientError, BotoCoreError) as exc:
        log.error("%s failed: %s", args.command, redact(str(exc), None))
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
