"""Take over the client's previous-generation database without losing its history.

    python adopt_legacy.py --from OLD_URL --to NEW_URL            # dry run: inspect and plan
    python adopt_legacy.py --from OLD_URL --to NEW_URL --apply    # migrate NEW, copy, verify

The old database is opened read-only (every transaction `default_transaction_read_only=on`)
and never modified. `--apply` builds the current schema in the target
(`run_migrations.migrate`), copies the registry (`devices`) first, then every other table
present on both sides — history in time-ordered batches that resume where a killed run
stopped — keeps the old columns with no home in `tracksolid.legacy_extra`, and verifies row
counts and time ranges per table. Running it again is a catch-up pass.

Exit codes: 0 done (and verified with --apply), 1 verification mismatch or copy failure,
2 a database could not be reached or the schema could not be built.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta

import psycopg
from psycopg import sql
from pydantic import SecretStr

from ingest.jobs import refresh_daily_rollup
from legacy.copy import BatchHook, CopyError, copy_table, open_old
from legacy.inspect import SCHEMA, Inspection, Table, inspect, read_catalog, render_report
from legacy.progress import Progress
from legacy.verify import render, verify
from run_migrations import MigrationError, migrate
from ts_shared import Settings, describe_dsn, setup_logging

log = logging.getLogger("adopt_legacy")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _inspect(old_url: str, new_url: str, catalog: dict[str, Table] | None = None) -> Inspection:
    """Introspect both sides and plan; the new side is only read."""
    with open_old(old_url) as old, psycopg.connect(new_url, autocommit=True) as new:
        return inspect(old, catalog if catalog is not None else read_catalog(new))


def _has_schema(new_url: str) -> bool:
    with psycopg.connect(new_url, autocommit=True) as new:
        row = new.execute("SELECT to_regnamespace(%s) IS NOT NULL", (SCHEMA,)).fetchone()
        return bool(row and row[0])


def scratch_catalog(new_url: str, settings: Settings) -> dict[str, Table] | None:
    """The current schema's catalog, built in a scratch database beside the (empty) target and
    dropped at once, so a dry run can plan column by column before anything is created.

    None when this role may not create databases (the report then says how to plan)."""
    name = f"adopt_plan_{secrets.token_hex(4)}"
    scratch = psycopg.conninfo.make_conninfo(new_url, dbname=name)
    with psycopg.connect(new_url, autocommit=True) as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            return None
        try:
            migrate(scratch, settings.model_copy(update={"database_url": SecretStr(scratch)}))
            with psycopg.connect(scratch, autocommit=True) as conn:
                return read_catalog(conn)
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def apply(
    old_url: str,
    new_url: str,
    settings: Settings,
    *,
    step: timedelta = timedelta(days=1),
    rewind: timedelta = timedelta(0),
    on_batch: BatchHook | None = None,
) -> int:
    """Migrate the target, copy every planned table, verify; returns the exit code.

    Raises `CopyError` when a batch fails (earlier batches stay committed) and whatever
    `on_batch` raises (the tests' way of killing a run).
    """
    report = migrate(new_url, settings)
    log.info("target schema: %d applied, %d up to date", len(report.applied), report.unchanged)
    ins = _inspect(old_url, new_url)
    _out(render_report(ins))
    progress = Progress(
        {
            p.name: (st.tmin, st.tmax)
            for p in ins.plans
            if (st := ins.stats.get(f"{SCHEMA}.{p.name}")) and st.tmin and st.tmax
        }
    )

    def each_batch(table: str, until: datetime | None, rows: int) -> None:
        progress(table, until, rows)
        if on_batch:
            on_batch(table, until, rows)

    with open_old(old_url) as old, psycopg.connect(new_url, autocommit=True) as new:
        for plan in ins.plans:
            rows = copy_table(old, new, plan, step=step, rewind=rewind, on_batch=each_batch)
            _out(f"copied {SCHEMA}.{plan.name}: {rows} new rows")
        # Catch-up: what the old pollers wrote while the first pass ran (the runbook stops
        # them first; this pass makes a copy taken while they still run complete up to now).
        for plan in ins.plans:
            if plan.time_column is not None:
                rows = copy_table(old, new, plan, step=step, on_batch=on_batch)
                if rows:
                    _out(f"catch-up {SCHEMA}.{plan.name}: {rows} new rows")
        checks = verify(old, new, ins.plans)
        # The read side: the trips matview and the daily roll-up do not see a bulk copy
        # until refreshed (the app's refresher would, minutes later).
        new.execute("REFRESH MATERIALIZED VIEW reporting.v_trips")
        _out(f"refreshed reporting.v_trips and the daily roll-up ({refresh_daily_rollup(new)})")
    _out(render(checks))
    bad = [c.table for c in checks if not c.ok]
    if bad:
        _out(f"MISMATCH in {', '.join(bad)}: the target is not a faithful copy")
        return 1
    _out("All tables verified.")
    return 0


def dry_run(old_url: str, new_url: str, settings: Settings) -> int:
    """Inspect, plan and report; writes nothing to either database (a scratch database on the
    target's server may come and go, see `scratch_catalog`)."""
    catalog = None
    if not _has_schema(new_url):
        catalog = scratch_catalog(new_url, settings)
        if catalog is None:
            _out(
                "Target is empty and this role may not create a scratch database to plan"
                " against: the plan below lists tables only. Run run_migrations.py on the"
                " target first (or --apply, which builds the schema) for column-level detail."
            )
        else:
            _out("Target is empty: planned against the current schema (built in a scratch"
                 " database, dropped again); --apply builds it in the target.")  # fmt: skip
    _out(render_report(_inspect(old_url, new_url, catalog)))
    _out("Dry run: nothing was written. Add --apply to copy.")
    return 0


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--from", dest="old_url", required=True, help="previous database URL")
    parser.add_argument("--to", dest="new_url", required=True, help="target database URL")
    parser.add_argument("--apply", action="store_true", help="migrate the target and copy")
    parser.add_argument(
        "--batch-hours", type=float, default=24.0, help="history window per batch (default 24)"
    )
    parser.add_argument(
        "--rewind-hours",
        type=float,
        default=0.0,
        help="re-read this much before the recorded progress (late rows; default 0)",
    )
    args = parser.parse_args(argv)
    if settings is None:
        settings = Settings(database_url=SecretStr(args.new_url))
    setup_logging(settings.log_level)
    log.info("old %s -> new %s", describe_dsn(args.old_url), describe_dsn(args.new_url))
    if describe_dsn(args.old_url) == describe_dsn(args.new_url):
        log.error("--from and --to name the same database: the target must be a new one")
        return 2
    try:
        if not args.apply:
            return dry_run(args.old_url, args.new_url, settings)
        return apply(
            args.old_url,
            args.new_url,
            settings,
            step=timedelta(hours=args.batch_hours),
            rewind=timedelta(hours=args.rewind_hours),
        )
    except CopyError as exc:
        log.error("copy failed (rerun resumes): %s", exc)
        return 1
    except (MigrationError, psycopg.Error) as exc:
        log.error("adoption failed: %s", exc)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
