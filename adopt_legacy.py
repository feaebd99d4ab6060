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
import sys
from collections.abc import Sequence
from datetime import timedelta

import psycopg
from pydantic import SecretStr

from ingest.jobs import refresh_daily_rollup
from legacy.copy import BatchHook, CopyError, copy_table, open_old
from legacy.inspect import SCHEMA, Inspection, inspect, read_catalog, render_report
from legacy.verify import render, verify
from run_migrations import MigrationError, migrate
from ts_shared import Settings, describe_dsn, setup_logging

log = logging.getLogger("adopt_legacy")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _inspect(old_url: str, new_url: str) -> Inspection:
    """Introspect both sides and plan; the new side is only read."""
    with open_old(old_url) as old, psycopg.connect(new_url, autocommit=True) as new:
        return inspect(old, read_catalog(new))


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
    with open_old(old_url) as old, psycopg.connect(new_url, autocommit=True) as new:
        for plan in ins.plans:
            rows = copy_table(old, new, plan, step=step, rewind=rewind, on_batch=on_batch)
            _out(f"copied {SCHEMA}.{plan.name}: {rows} new rows")
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
            ins = _inspect(args.old_url, args.new_url)
            _out(render_report(ins))
            if not any(t.schema == SCHEMA for t in ins.new.values()):
                _out("Target has no tracksolid schema yet: --apply builds it, then copies.")
            _out("Dry run: nothing was written. Add --apply to copy.")
            return 0
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
