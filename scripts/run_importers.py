"""Scheduler of the `importers` container: runs the S3 importers on their schedules.

    python scripts/run_importers.py            # run forever (the compose `importers` service)
    python scripts/run_importers.py --list     # print the schedule and exit

- tickets: `import_tickets.py --from-bucket --apply` every 20 min from 06:00 to 20:00 EAT
  (docs/tickets.md);
- fuel:    `import_fuel.py --snapshot --apply` hourly at :05 (docs/fuel.md).
Each run is a child process (a crash or leak in one run cannot hurt the next); its exit code
is logged. Runs never overlap themselves. SIGTERM waits for a running import to finish.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ts_shared import Settings, setup_logging  # noqa: E402

log = logging.getLogger("run_importers")
EAT = "Africa/Nairobi"

SCHEDULE = {
    "tickets": (
        [sys.executable, str(ROOT / "import_tickets.py"), "--from-bucket", "--apply"],
        # every 20 min 06:00-19:40, plus 20:00 exactly
        OrTrigger(
            [
                CronTrigger(hour="6-19", minute="*/20", timezone=EAT),
                CronTrigger(hour=20, minute=0, timezone=EAT),
            ]
        ),
    ),
    "fuel": (
        [sys.executable, str(ROOT / "import_fuel.py"), "--snapshot", "--apply"],
        CronTrigger(minute=5, timezone=EAT),
    ),
}


def run(name: str, command: list[str]) -> None:
    """Run one importer as a child process and log its outcome."""
    log.info("%s: starting", name)
    result = subprocess.run(command, cwd=ROOT, check=False)
    if result.returncode == 0:
        log.info("%s: finished", name)
    else:
        log.error("%s: exited with code %d (see its log lines above)", name, result.returncode)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the schedule and exit")
    args = parser.parse_args(argv)
    setup_logging(Settings().log_level)
    scheduler = BackgroundScheduler(
        timezone="UTC", job_defaults={"max_instances": 1, "coalesce": True}
    )
    for name, (command, trigger) in SCHEDULE.items():
        scheduler.add_job(run, trigger, args=(name, command), id=name, name=name)
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
