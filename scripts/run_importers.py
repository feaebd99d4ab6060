"""Scheduler of the `importers` container: runs the S3 importers on their schedules.

    python scripts/run_importers.py            # run forever (the compose `importers` service)
    python scripts/run_importers.py --list     # print the schedule and exit

- tickets: `import_tickets.py --from-bucket --apply` every 20 min from 06:00 to 20:40 EAT
  (cron `*/20 6-20 * * *`, docs/tickets.md), each successful run followed by the geocoding
  of new tickets (`--geocode-clusters --geocode-locations --apply`) when GEOCODER_KEY is set;
- fuel:    `import_fuel.py --snapshot --apply` hourly at :05 (docs/fuel.md).
Each run is a child process (a crash or leak in one run cannot hurt the next); its exit code
is logged. Runs never overlap themselves. SIGTERM waits for a running import to finish.
Every run is recorded by the importer itself in `tracksolid.ingestion_log` (/health/ingest).
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ts_shared import Settings, setup_logging  # noqa: E402

log = logging.getLogger("run_importers")
EAT = "Africa/Nairobi"

TICKETS_CRON = "*/20 6-20 * * *"  # docs/tickets.md: every 20 minutes, 06:00-20:59 EAT
FUEL_CRON = "5 * * * *"  # docs/operations.md: hourly, a few minutes past the hour

SCHEDULE = {
    "tickets": (
        [sys.executable, str(ROOT / "import_tickets.py"), "--from-bucket", "--apply"],
        CronTrigger.from_crontab(TICKETS_CRON, timezone=EAT),
    ),
    "fuel": (
        [sys.executable, str(ROOT / "import_fuel.py"), "--snapshot", "--apply"],
        CronTrigger.from_crontab(FUEL_CRON, timezone=EAT),
    ),
}

# Run after a successful import of the same job (never overlapping it): new tickets get their
# location geocoded within the same 20 minutes. Needs a geocoder key (settings.geocoder_key).
GEOCODE = [
    sys.executable,
    str(ROOT / "import_tickets.py"),
    "--geocode-clusters",
    "--geocode-locations",
    "--apply",
]


def follow_ups(name: str, settings: Settings) -> list[list[str]]:
    """The commands to run after a successful run of importer `name`."""
    if name != "tickets":
        return []
    if not settings.geocoder_key.get_secret_value():
        log.info("tickets: GEOCODER_KEY is not set; new tickets are not geocoded")
        return []
    return [GEOCODE]


def run(name: str, command: list[str], then: Sequence[list[str]] = ()) -> int:
    """Run one importer as a child process, log its outcome and, when it succeeded, run the
    `then` commands in turn (a failing one does not stop the next); the importer's code."""
    log.info("%s: starting", name)
    result = subprocess.run(command, cwd=ROOT, check=False)
    if result.returncode != 0:
        log.error("%s: exited with code %d (see its log lines above)", name, result.returncode)
        return result.returncode
    log.info("%s: finished", name)
    for follow in then:
        step = subprocess.run(follow, cwd=ROOT, check=False)
        if step.returncode != 0:
            log.error("%s: %s exited with code %d", name, " ".join(follow[2:]), step.returncode)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the schedule and exit")
    parser.add_argument("--every", type=float, metavar="SECONDS",
                        help="demo only (scripts/demo.py): run each importer now and every"
                             " SECONDS instead of on its schedule")  # fmt: skip
    args = parser.parse_args(argv)
    settings = Settings()
    setup_logging(settings.log_level)
    scheduler = BackgroundScheduler(
        timezone="UTC", job_defaults={"max_instances": 1, "coalesce": True}
    )
    for name, (command, trigger) in SCHEDULE.items():
        then = follow_ups(name, settings)
        extra: dict[str, Any] = {}
        if args.every:  # the demo's accelerated schedule: now, then every N seconds
            extra = {"trigger": IntervalTrigger(seconds=max(1.0, args.every)),
                     "next_run_time": datetime.now(UTC)}  # fmt: skip
        scheduler.add_job(run, **({"trigger": trigger} | extra), args=(name, command, then),
                          id=name, name=name)  # fmt: skip
    if args.list:
        scheduler.start(paused=True)
        for job in scheduler.get_jobs():
            sys.stdout.write(f"{job.name}: next run {job.next_run_time} ({job.trigger})\n")
        scheduler.shutdown(wait=False)
        return 0
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    scheduler.start()
    for job in scheduler.get_jobs():
        log.info("%s: next run %s", job.name, job.next_run_time)
    stop.wait()
    scheduler.shutdown(wait=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
