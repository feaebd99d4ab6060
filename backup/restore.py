"""Restore a dump from S3 into a database (`pg_restore`), with the safety checks.

Refuses a target that already has tables in schema `tracksolid` (unless forced), drops the
`COMMENT ON EXTENSION` entries a non-superuser cannot restore, and wraps a TimescaleDB dump in
`timescaledb_pre_restore()` / `timescaledb_post_restore()`. The runbook is in backup/README.md.
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from psycopg import sql

from backup.errors import RestoreError, TargetNotEmptyError
from backup.pgtools import (
    database_name,
    describe,
    find_pg_tool,
    parse_conninfo,
    pg_env,
    split_password,
    stderr_tail,
)
from backup.retention import dump_folder, list_dumps
from ts_shared import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


def resolve_key(s3: S3Client, bucket: str, folder: str, ref: str) -> str:
    """`latest` → the newest dump under `folder`; a bare file name → `folder` + name; a full
    key unchanged. RestoreError when there is no such dump."""
    if ref == "latest":
        dumps = list_dumps(s3, bucket, folder)
        if not dumps:
            raise RestoreError(f"no dumps under s3://{bucket}/{folder}")
        return dumps[0].key
    key = ref if "/" in ref else folder + ref
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        raise RestoreError(f"no dump s3://{bucket}/{key}: {exc}") from exc
    return key


def create_database_if_missing(conninfo: str) -> bool:
    """CREATE DATABASE for the database `conninfo` names, through the `postgres` database of
    the same server, when it does not exist; True when it was created."""
    info = {k: v for k, v in parse_conninfo(conninfo).items() if v is not None}
    name = database_name(conninfo)
    info["dbname"] = "postgres"
    with psycopg.connect(
        psycopg.conninfo.make_conninfo("", **info), autocommit=True, connect_timeout=10
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    log.info("created database %s", describe(conninfo))
    return True


def count_app_tables(conninfo: str) -> int:
    """Number of tables in schema `tracksolid` of a database (0 for a fresh one)."""
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'tracksolid'"
        ).fetchone()
    return int(row[0]) if row else 0


def restore_list(toc: str) -> tuple[str, bool]:
    """(the `pg_restore -L` list to use, whether the dump holds TimescaleDB).

    `COMMENT ON EXTENSION` entries are dropped: they need ownership of the extension, which
    a non-superuser restoring with --no-owner lacks, and with --exit-on-error that would abort
    the whole restore for a stock comment.
    """
    kept = [line for line in toc.splitlines() if not re.search(r"\bCOMMENT - EXTENSION\b", line)]
    timescale = any(re.search(r"\bEXTENSION - timescaledb\b", line) for line in kept)
    return "\n".join(kept) + "\n", timescale


def _run_tool(args: list[str], password: str | None, what: str) -> str:
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.run(
            args,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=pg_env(password),
            check=False,
        )
        if proc.returncode != 0:
            tail = stderr_tail(errors, password) or "-"
            raise RestoreError(f"{what} exited with status {proc.returncode}: {tail}")
        if warnings := stderr_tail(errors, password):
            log.info("%s said: %s", what, warnings)
    return proc.stdout.decode("utf-8", errors="replace")


def restore(
    settings: Settings,
    s3: S3Client,
    ref: str,
    target_url: str,
    *,
    db_name: str | None = None,
    force: bool = False,
    create: bool = False,
    jobs: int = 1,
    work_dir: str | None = None,
) -> str:
    """Download a dump and pg_restore it into `target_url`; returns the key restored.

    `ref` is `latest`, a file name under `<BACKUP_PREFIX><db_name>/` (db_name defaults to
    DATABASE_URL's database) or a full key; `create` creates the target database when it does
    not exist. Raises TargetNotEmptyError when the target has tables in `tracksolid` and not
    `force` (with `force`, pg_restore --clean --if-exists drops the dumped objects first),
    RestoreError / ToolError otherwise.
    """
    bucket = settings.backup_bucket
    folder = dump_folder(settings.backup_prefix, db_name or database_name(settings.dsn()))
    key = resolve_key(s3, bucket, folder, ref)
    target = describe(target_url)
    try:
        if create:
            create_database_if_missing(target_url)
        existing = count_app_tables(target_url)
    except psycopg.Error as exc:
        raise RestoreError(f"cannot connect to the target {target}: {exc}") from exc
    if existing and not force:
        raise TargetNotEmptyError(
            f"refusing to restore into {target}: it already has {existing} table(s) in schema "
            "tracksolid. Restore into a new empty database (CREATE DATABASE ...), or pass "
            "--force to drop and replace the dumped objects in this one."
        )
    pg_restore = find_pg_tool("pg_restore")
    dsn, password = split_password(target_url)
    with tempfile.TemporaryDirectory(prefix="pg_restore-", dir=work_dir) as tmp:
        archive = Path(tmp) / "db.dump"
        log.info("downloading s3://%s/%s", bucket, key)
        try:
            s3.download_file(bucket, key, str(archive))
        except (ClientError, BotoCoreError) as exc:
            raise RestoreError(f"download of s3://{bucket}/{key} failed: {exc}") from exc
        toc = _run_tool([str(pg_restore), "--list", str(archive)], None, "pg_restore --list")
        listing, timescale = restore_list(toc)
        list_file = Path(tmp) / "restore.list"
        list_file.write_text(listing, encoding="utf-8")
        if timescale and jobs > 1:
            log.info("TimescaleDB dump: restoring with one job (parallel restore is unsafe)")
            jobs = 1
        args = [
            str(pg_restore),
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--no-password",
            f"--use-list={list_file}",
            f"--jobs={max(1, jobs)}",
            f"--dbname={dsn}",
        ]
        if force and existing:
            args[1:1] = ["--clean", "--if-exists"]
        args.append(str(archive))
        log.info("pg_restore %s into %s (%d job(s))", key, target, max(1, jobs))
        if timescale:
            _timescale_restore_mode(target_url, on=True)
        try:
            _run_tool(args, password, "pg_restore")
        finally:
            if timescale:
                _timescale_restore_mode(target_url, on=False)
    with psycopg.connect(target_url, autocommit=True) as conn:
        conn.execute("ANALYZE")  # pg_restore leaves the planner without statistics
    log.info("restored s3://%s/%s into %s", bucket, key, target)
    return key


def _timescale_restore_mode(conninfo: str, *, on: bool) -> None:
    """TimescaleDB's documented restore procedure: pre_restore before, post_restore after."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if on:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            conn.execute("SELECT timescaledb_pre_restore()")
        else:
            conn.execute("SELECT timescaledb_post_restore()")
