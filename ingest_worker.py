"""The ingest worker: one process polling the Tracksolid Open API into PostgreSQL.

    python ingest_worker.py                      run forever (catch-up, then the schedule)
    python ingest_worker.py --once               what a start does, once: device sync,
                                                 catch-up, then every job once; then exit
    python ingest_worker.py --job live_positions one job once (names: see JOB_NAMES)
    python ingest_worker.py --catchup-only       fill the gap since the last stored data, exit
    python ingest_worker.py import-devices FILE.csv [--apply]   operator registry import
    python ingest_worker.py audit-registry [--json] [--live]    registry gap report

Jobs and their schedules are in docs/ingestion.md. SIGTERM / Ctrl-C finish the batch in hand
and exit cleanly. Exit codes: 0 ok, 1 a job crashed, 2 bad configuration / arguments.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from ingest import audit
from ingest.jobs import Ingestor, JobStats
from ingest.registry import import_registry
from ingest.vtrips import vtrips_refresh
from ts_shared import (
    DatabaseUnavailableError,
    JimiClient,
    Settings,
    make_pool,
    record_ingestion,
    setup_logging,
    utcnow,
)

log = logging.getLogger("ingest_worker")

JOB_NAMES = (
    "device_sync", "live_positions", "track_list", "trips", "parking", "alarms", "mileage_rollup",
    "housekeeping", "unregistered_pushes", "derive_trips", "ticket_visits",
    "geofence_events", "alerts", "vtrips_refresh",
)  # fmt: skip


def job_table(ingestor: Ingestor) -> dict[str, tuple[Callable[[], JobStats], int]]:
    """Job name → (callable, interval in seconds)."""
    s = ingestor.settings
    return {
        "device_sync": (ingestor.sync_devices, s.ingest_device_sync_interval_s),
        "live_positions": (ingestor.poll_live, s.ingest_live_interval_s),
        "track_list": (ingestor.poll_track, s.ingest_track_interval_s),
        "trips": (ingestor.poll_trips, s.ingest_trips_interval_s),
        "parking": (ingestor.poll_parking, s.ingest_parking_interval_s),
        "alarms": (ingestor.poll_alarms, s.ingest_alarms_interval_s),
        "mileage_rollup": (ingestor.refresh_rollups, s.ingest_trips_interval_s),
        "housekeeping": (ingestor.housekeeping, 24 * 3600),
        "unregistered_pushes": (ingestor.check_unregistered_pushes, 3600),
        "derive_trips": (ingestor.derive_trips, s.trip_derive_interval_s),
        "ticket_visits": (ingestor.ticket_visits, s.visit_interval_s),
        "geofence_events": (ingestor.geofence_events, s.geofence_events_interval_s),
        "alerts": (ingestor.alerts, s.alerts_interval_s),
        # reporting.v_trips on the primary, so the read-API can run on a replica (issue #19)
        "vtrips_refresh": (partial(vtrips_refresh, ingestor), s.vtrips_refresh_interval_s),
    }


def guarded(name: str, func: Callable[[], Any], ingestor: Ingestor) -> Callable[[], bool]:
    """Wrap a job so that an unexpected exception is logged and recorded, never fatal."""

    def run() -> bool:
        try:
            func()
        except Exception as exc:
            log.exception("job %s crashed", name)
            record_ingestion(
                ingestor.pool, source="job", method=name, ok=False, error=f"crashed: {exc!r}"
            )
            return False
        return True

    return run


def run_forever(ingestor: Ingestor) -> int:
    """The schedule. At start, the live sweep begins at once while a `startup` job does the
    device sync and then the catch-up; the windowed jobs start a minute later (their work
    overlaps the catch-up harmlessly: writes are idempotent, watermarks only move forward)."""
    jobs = job_table(ingestor)
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=4)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 120},
        timezone="UTC",
    )

    def startup() -> None:
        ingestor.sync_devices()
        ingestor.catchup()

    now = utcnow()
    for name, (func, interval) in jobs.items():
        if interval <= 0:  # VTRIPS_REFRESH_INTERVAL_S=0: that job is off
            log.info("job %s is off (interval 0)", name)
            continue
        delay = {"live_positions": 0, "device_sync": interval}.get(name, min(interval, 60))
        scheduler.add_job(guarded(name, func, ingestor), "interval", seconds=interval, id=name,
                          name=name, next_run_time=now + timedelta(seconds=delay))  # fmt: skip
    scheduler.add_job(guarded("startup", startup, ingestor), id="startup", name="startup",
                      next_run_time=now)  # fmt: skip
    scheduler.start()
    log.info("scheduler started: %s", ", ".join(f"{n} every {i}s" for n, (_, i) in jobs.items()))
    ingestor.stop.wait()
    log.info("stopping: finishing the batches in hand")
    scheduler.shutdown(wait=True)
    return 0


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM / SIGINT set the stop flag; the jobs finish their current unit of work."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s received", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# `--once`: the device sync and catch-up a start would do, then every job once.
ONCE = ("device_sync", "catchup", *JOB_NAMES[1:])


def run_once(ingestor: Ingestor, names: Sequence[str]) -> int:
    """Run the named jobs once, in order (`catchup` included); 1 if one crashed."""
    jobs: dict[str, tuple[Callable[[], Any], int]] = {
        **job_table(ingestor),
        "catchup": (ingestor.catchup, 0),
    }
    ok = True
    for name in names:
        if ingestor.stop.is_set():
            break
        ok &= guarded(name, jobs[name][0], ingestor)()
    return 0 if ok else 1


def import_devices_main(argv: Sequence[str]) -> int:
    """`import-devices FILE.csv [--apply]`."""
    parser = argparse.ArgumentParser(prog="ingest_worker.py import-devices")
    parser.add_argument("csv", type=Path, help="registry CSV (IMEI, plate, driver, ...)")
    parser.add_argument("--apply", action="store_true", help="write (default: dry run)")
    args = parser.parse_args(argv)
    settings = Settings()
    setup_logging(settings.log_level)
    if not args.csv.exists():
        log.error("no such file: %s", args.csv)
        return 2
    try:
        pool = make_pool(settings.dsn(), min_size=1, max_size=2, name="import-devices")
    except DatabaseUnavailableError as exc:
        log.error("%s", exc)
        return 1
    try:
        report = import_registry(pool, args.csv, apply=args.apply)
    finally:
        pool.close()
    for line, reason in report.bad:
        log.warning("%s line %d: %s (skipped)", args.csv, line, reason)
    for line, what in report.duplicates:
        log.warning("%s line %d: duplicate IMEI %s (skipped)", args.csv, line, what)
    for line, what in report.ignored:
        log.warning("%s line %d: %s", args.csv, line, what)
    if report.unknown:
        log.info("IMEIs not yet seen from the API (added as new devices): %s",
                 ", ".join(report.unknown))  # fmt: skip
    sys.stdout.write(report.summary() + "\n")
    return 0


def audit_registry_main(argv: Sequence[str]) -> int:
    """`audit-registry [--json] [--live] [--silent-hours N]`: the gap report on stdout."""
    parser = argparse.ArgumentParser(prog="ingest_worker.py audit-registry")
    parser.add_argument("--json", action="store_true", help="JSON instead of aligned text")
    parser.add_argument(
        "--live",
        action="store_true",
        help="fetch the accounts' device lists now (default: last device sync)",
    )
    parser.add_argument(
        "--silent-hours",
        type=int,
        default=24,
        choices=range(1, 24 * 90 + 1),
        metavar="N",
        help="silent = no fix / heartbeat for N hours (24)",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    setup_logging(settings.log_level)
    if args.live and not settings.jimi_configured and settings.jimi_sim_url:
        settings = settings.with_simulator()
    if args.live and not settings.jimi_configured:
        log.error("--live needs Tracksolid credentials (or JIMI_SIM_URL for the simulator)")
        return 2
    try:
        pool = make_pool(settings.dsn(), min_size=1, max_size=2, name="audit-registry")
    except DatabaseUnavailableError as exc:
        log.error("%s", exc)
        return 1
    try:
        listed: set[str] | None = None
        failed: list[str] = []
        if args.live:
            client = JimiClient(settings, pool)
            try:
                listed, failed = audit.fetch_listed(client)
            finally:
                client.close()
        with pool.connection() as conn:
            report = audit.gather(conn, silent_hours=args.silent_hours, listed=listed,
                                  failed_accounts=failed)  # fmt: skip
    finally:
        pool.close()
    sys.stdout.write(audit.format_json(report) + "\n" if args.json else audit.format_text(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "import-devices":
        return import_devices_main(argv[1:])
    if argv and argv[0] == "audit-registry":
        return audit_registry_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true",
                      help="device sync, catch-up, every job once, then exit")  # fmt: skip
    mode.add_argument("--job", choices=JOB_NAMES, action="append", help="run this job once")
    mode.add_argument("--catchup-only", action="store_true", help="catch up, then exit")
    args = parser.parse_args(argv)

    settings = Settings()
    setup_logging(settings.log_level)
    if not settings.jimi_configured and settings.jimi_sim_url:
        log.warning(
            "DEMO MODE: no Tracksolid credentials set; polling the simulator at %s",
            settings.jimi_sim_url,
        )
        settings = settings.with_simulator()
    if not settings.jimi_configured:
        log.error(
            "Tracksolid credentials are not set (TRACKSOLID_APP_KEY, TRACKSOLID_APP_SECRET, "
            "TRACKSOLID_USER_ID, TRACKSOLID_USER_PWD[_MD5]). For a demo without credentials "
            "run `make demo`, or set JIMI_SIM_URL to a running jimi_sim.py."
        )
        return 2
    try:
        pool = make_pool(
            settings.dsn(),
            min_size=settings.db_pool_min_size,
            max_size=max(settings.db_pool_max_size, 4 + 2 * settings.ingest_api_concurrency),
            name="ingest_worker",
        )
    except DatabaseUnavailableError as exc:
        log.error("%s", exc)
        return 1
    stop = threading.Event()
    install_signal_handlers(stop)
    client = JimiClient(settings, pool)
    ingestor = Ingestor(settings, pool, client, stop=stop)
    try:
        if args.once:
            return run_once(ingestor, ONCE)
        if args.job:
            return run_once(ingestor, args.job)
        if args.catchup_only:
            return 0 if guarded("catchup", ingestor.catchup, ingestor)() else 1
        return run_forever(ingestor)
    finally:
        client.close()
        pool.close()


if __name__ == "__main__":
    raise SystemExit(main())
