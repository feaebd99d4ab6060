"""`make demo`: the whole stack on this machine, without Docker and without credentials.

Starts, in order: a throwaway PostgreSQL + PostGIS cluster, the migrations, an S3 protocol
server on loopback (moto), the Jimi simulator (60 vehicles over Nairobi, Mombasa and Kampala
working round the clock, pushing to the receiver, and writing INC tickets and fuel fills to
S3 as the upstream exports do), a registry import (cost centres and cities), the ingest
worker, the webhook receiver, the dashboard API and the S3 importers (scripts/run_importers.py).
Prints the URLs. Ctrl-C (or SIGTERM/SIGINT to `make`) stops everything and removes the cluster.

    python scripts/demo.py [--devices 60] [--api-port 8890] [--webhook-port 8081]
                           [--sim-port 8088] [--s3-port 8089] [--db-port 0]
                           [--feed-every 45] [--importers-every 60]
                           [--lock-file PATH] [--ready-file PATH]

Only the demo is accelerated: the worker's poll/job intervals are passed as environment
settings (`DEMO_INTERVALS`) and the importers run every `--importers-every` seconds instead
of their cron schedule; production defaults (ts_shared.Settings) are unchanged.

The demo refuses to start (exit 1, with the reason) when one of its fixed ports is taken or
another demo holds the lock file; ports 0 pick free ones (and, all of them 0, take no lock:
the tests run such demos side by side). `--ready-file` writes the URLs as JSON once positions
are on the map (used by the browser tests).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jimi_sim import Fleet, SimConfig  # noqa: E402
from run_migrations import migrate  # noqa: E402
from tests.pgcluster import LocalCluster, free_port  # noqa: E402
from ts_shared import Settings, setup_logging  # noqa: E402

log = logging.getLogger("demo")
COST_CENTRES = {"Nairobi": "Nairobi-Field", "Mombasa": "Mombasa-Field", "Kampala": "Kampala-Field"}
DEFAULT_LOCK = Path(tempfile.gettempdir()) / f"tracksolid-fleet-demo-{os.getuid()}.lock"
# The demo's worker intervals: minutes instead of the production half-hours, so trips, stops,
# alarms, visits and alerts change while someone watches. Demo only (environment of its
# children); production defaults stay in ts_shared.Settings.
DEMO_INTERVALS = {
    "INGEST_CATCHUP_DAYS": "1",
    "INGEST_LIVE_INTERVAL_S": "20",
    "INGEST_TRACK_INTERVAL_S": "60",
    "INGEST_TRIPS_INTERVAL_S": "60",
    "INGEST_PARKING_INTERVAL_S": "60",
    "INGEST_ALARMS_INTERVAL_S": "30",
    "VTRIPS_REFRESH_INTERVAL_S": "30",
    "TRIP_DERIVE_INTERVAL_S": "60",
    "TRIP_FILL_DELAY_S": "600",
    "VISIT_INTERVAL_S": "60",
    "GEOFENCE_EVENTS_INTERVAL_S": "30",
    "ALERTS_INTERVAL_S": "30",
}
PORT_FLAGS = {"api": "read-API", "webhook": "webhook receiver", "sim": "Jimi simulator",
              "s3": "S3 server", "db": "PostgreSQL"}  # fmt: skip
STOP_GRACE_S = 30.0


class DemoRefusedError(Exception):
    """The demo cannot start here (a port is taken, another demo runs); the message says why."""


class StopRequestedError(Exception):
    """A signal (or make going away) asked the demo to stop while it was starting."""


# ── start-up checks ──────────────────────────────────────────────────────────


def port_in_use(port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port` (bound as the servers bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def check_ports(ports: dict[str, int]) -> None:
    """Refuse fixed ports that are taken or given twice (0 = pick a free one later)."""
    fixed = {name: port for name, port in ports.items() if port}
    seen: dict[int, str] = {}
    for name, port in fixed.items():
        if port in seen:
            raise DemoRefusedError(f"--{name}-port and --{seen[port]}-port are both {port}")
        seen[port] = name
        if port_in_use(port):
            raise DemoRefusedError(
                f"port {port} ({PORT_FLAGS[name]}) is already in use: stop what listens there"
                f" or choose another with --{name}-port (0 = any free port)"
            )


class DemoLock:
    """One demo on fixed ports per user and machine: an flock on a small JSON file that
    names the running demo. The kernel drops the lock when the process dies, so a crashed
    demo never blocks the next one; the file itself is left in place (no unlink race)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise `DemoRefusedError` naming the demo that holds it."""
        fh = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read()
            fh.close()
            raise DemoRefusedError(self._refusal(holder)) from None
        self._fh = fh
        self.describe({"pid": os.getpid(), "state": "starting"})

    def _refusal(self, holder: str) -> str:
        try:
            info = json.loads(holder)
        except ValueError:
            info = {}
        pid = info.get("pid", "?") if isinstance(info, dict) else "?"
        where = f"; its operator page is {info['api']}/" if isinstance(info, dict) and info.get(
            "api") else ""  # fmt: skip
        return (f"another demo is already running (pid {pid}{where}). Stop it first (Ctrl-C in"
                f" its terminal, or kill {pid}); lock file {self.path}")  # fmt: skip

    def describe(self, info: dict[str, Any]) -> None:
        """Write what the running demo is (pid, URLs) for a refused second one to quote."""
        if self._fh is None:
            return
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(json.dumps(info))
        self._fh.flush()

    def release(self) -> None:
        """Empty the file and drop the lock."""
        if self._fh is None:
            return
        with contextlib.suppress(OSError):
            self._fh.seek(0)
            self._fh.truncate()
        self._fh.close()  # closing the only descriptor releases the flock
        self._fh = None


# ── stopping ─────────────────────────────────────────────────────────────────


class ParentWatch:
    """Why the demo should stop because of its parent, if it should.

    make forwards SIGTERM to its child but, on SIGINT (a `kill -INT` to make alone, not a
    terminal Ctrl-C, which reaches the whole process group), it only waits for the child to
    end, so the demo would never stop. make resets a fatal signal's handler to the default
    while it waits; that shows in /proc/<make>/status (SigCgt loses the signal). The demo
    watches for it, and for its parent going away (reparenting), on Linux."""

    WATCHED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

    def __init__(self) -> None:
        self.ppid = os.getppid()
        self.is_make = self._comm(self.ppid) in {"make", "gmake"}
        self.caught = self._caught(self.ppid) if self.is_make else None

    @staticmethod
    def _comm(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return ""

    @staticmethod
    def _caught(pid: int) -> int | None:
        """The mask of signals `pid` has handlers for (None: unknown)."""
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("SigCgt:"):
                    return int(line.split()[1], 16)
        except (OSError, ValueError):
            return None
        return None

    def reason(self) -> str | None:
        """A reason to stop, or None."""
        if os.getppid() != self.ppid:
            return "the parent process went away"
        if self.caught is None:
            return None
        now = self._caught(self.ppid)
        if now is None:
            return None
        for sig in self.WATCHED:
            bit = 1 << (sig - 1)
            if self.caught & bit and not now & bit:
                return f"make received {sig.name}"
        return None


def _libc_prctl() -> Callable[..., int] | None:
    """prctl(2) from libc (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In a child between fork and exec: SIGTERM it when the demo dies, even by SIGKILL, so
    that no child outlives the demo; and its own session (Ctrl-C reaches the demo, which
    stops the children in order, not every process at once)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


class Children:
    """The demo's processes: started with their logs, stopped with everything they started."""

    def __init__(self, logs: Path) -> None:
        self.env: dict[str, str] = dict(os.environ)
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str]) -> None:
        """Start `cmd` in its own session, output to logs/<name>.log."""
        with (self.logs / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_die_with_parent)  # fmt: skip  # noqa: PLW1509
        self.procs.append((name, proc))

    def exited(self) -> list[tuple[str, int]]:
        """(name, exit code) of every child that has ended."""
        return [(name, code) for name, proc in self.procs if (code := proc.poll()) is not None]

    def stop(self) -> None:
        """SIGTERM the importers first and wait for them (a run in hand finishes while S3 and
        the database are still up), then the rest at once; within STOP_GRACE_S in all, then
        SIGKILL whatever is left in each child's process group (an import run, a worker)."""
        deadline = time.monotonic() + STOP_GRACE_S
        first = [item for item in self.procs if item[0] == "importers"]
        rest = [item for item in reversed(self.procs) if item[0] != "importers"]
        for batch in (first, rest):
            for _, proc in batch:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for name, proc in batch:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop within %.0f s: killed", name, STOP_GRACE_S)
        for _, proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # its group: the child and its children
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


# ── helpers ──────────────────────────────────────────────────────────────────


def write_registry(path: Path, devices: int) -> None:
    """The operator's registry CSV for the simulated fleet (cost centre, city, type)."""
    fleet = Fleet(SimConfig(devices=devices, accounts=3, seed=1))
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["IMEI", "Vehicle Number", "Driver Name", "Driver Phone", "Cost Centre",
                         "City", "Vehicle Type"])  # fmt: skip
        for i, dev in enumerate(fleet.devices()):
            kind = ("Pickup", "Van", "Motorbike")[i % 3]
            writer.writerow([dev.imei, dev.vehicle_number, dev.driver_name, dev.driver_phone,
                             COST_CENTRES.get(dev.city, "Field"), dev.city, kind])  # fmt: skip


def wait_http(url: str, timeout: float, stopping: Callable[[], str | None] | None = None) -> None:
    """Wait until `url` answers 2xx (StopRequestedError when asked to stop meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stopping is not None and (why := stopping()):
            raise StopRequestedError(why)
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status < 300:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def wait_s3_object(
    env: dict[str, str], bucket: str, key: str, timeout: float,
    stopping: Callable[[], str | None],
) -> None:  # fmt: skip
    """Wait until `key` exists in `bucket` of the demo's S3 server (signed requests, with
    the settings the importers use)."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    from ts_shared import make_s3_client  # noqa: PLC0415

    s3 = make_s3_client(Settings(_env_file=None, rustfs_endpoint=env["RUSTFS_ENDPOINT"],
                                 rustfs_access_key=env["RUSTFS_ACCESS_KEY"],
                                 rustfs_secret_key=env["RUSTFS_SECRET_KEY"]))  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if why := stopping():
            raise StopRequestedError(why)
        try:
            s3.head_object(Bucket=bucket, Key=key)
            return
        except (BotoCoreError, ClientError):
            time.sleep(0.5)
    raise TimeoutError(f"s3://{bucket}/{key} did not appear within {timeout:.0f} s")


def live_vehicles(api: str) -> int:
    """How many vehicles the read-API shows on the live map."""
    with urllib.request.urlopen(f"{api}/webhook/live-positions", timeout=5) as response:  # noqa: S310
        return len(json.load(response).get("features") or [])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=int(os.environ.get("DEMO_DEVICES", "60")))
    parser.add_argument("--api-port", type=int, default=8890)
    parser.add_argument("--webhook-port", type=int, default=8081)
    parser.add_argument("--sim-port", type=int, default=8088)
    parser.add_argument(
        "--s3-port",
        type=int,
        default=None,
        help="default 8089, or any free port when the other ports are 0",
    )
    parser.add_argument("--db-port", type=int, default=0)
    parser.add_argument(
        "--feed-every",
        type=float,
        default=45.0,
        metavar="SECONDS",
        help="how often the simulator writes tickets and fuel fills to S3",
    )
    parser.add_argument(
        "--importers-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how often the importers run (production: cron schedules)",
    )
    parser.add_argument("--lock-file", type=Path, default=DEFAULT_LOCK)
    parser.add_argument("--ready-file", type=Path)
    return parser.parse_args(argv)  # fmt: skip


def refuse_or_lock(args: argparse.Namespace, requested: dict[str, int]) -> DemoLock | None:
    """The start-up checks: the lock (when any service port is fixed), then the ports."""
    lock = None
    if any(requested[name] for name in ("api", "webhook", "sim", "s3")):
        lock = DemoLock(args.lock_file)
        lock.acquire()
    try:
        check_ports(requested)
    except DemoRefusedError:
        if lock is not None:
            lock.release()
        raise
    return lock


# ── the demo ─────────────────────────────────────────────────────────────────


def main(argv: list[str] | None = None) -> int:
    """Run the demo until Ctrl-C / SIGINT / SIGTERM (or make going away)."""
    args = parse_args(argv)
    setup_logging("INFO")
    signalled: dict[str, str | None] = {"why": None}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signalled["why"] = f"received {signal.Signals(signum).name}"

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    parent = ParentWatch()

    def stopping() -> str | None:
        return signalled["why"] or parent.reason()

    requested = {"api": args.api_port, "webhook": args.webhook_port, "sim": args.sim_port,
                 "s3": args.s3_port, "db": args.db_port}  # fmt: skip
    if requested["s3"] is None:  # tests pass ports 0 for the older services: S3 follows
        requested["s3"] = 8089 if any((args.api_port, args.webhook_port, args.sim_port)) else 0
    try:
        lock = refuse_or_lock(args, requested)
    except DemoRefusedError as exc:
        sys.stderr.write(f"demo: not started: {exc}\n")
        return 1
    ports = {name: port or free_port() for name, port in requested.items()}
    work = Path(tempfile.mkdtemp(prefix="fleet-demo-"))
    logs = work / "logs"
    logs.mkdir()
    cluster = LocalCluster(port=ports["db"])
    children = Children(logs)
    try:
        run_stack(args, ports, work, cluster, children, lock, stopping)
        why = None
        while not (why := stopping()):
            for name, code in children.exited():
                why = f"{name} exited with {code}; see {logs / f'{name}.log'}"
                log.error("%s", why)
            if why:
                break
            time.sleep(0.5)
        log.info("stopping: %s", why)
        return 0
    except StopRequestedError as exc:
        log.info("stopping during start-up: %s", exc)
        return 0
    finally:
        children.stop()
        cluster.stop(remove=True)
        if lock is not None:
            lock.release()
        if args.ready_file:
            with contextlib.suppress(OSError):
                args.ready_file.unlink()
        log.info("stopped; database removed (logs kept in %s)", logs)


def run_stack(
    args: argparse.Namespace,
    ports: dict[str, int],
    work: Path,
    cluster: LocalCluster,
    children: Children,
    lock: DemoLock | None,
    stopping: Callable[[], str | None],
) -> None:
    """Start everything, print the URLs, write the ready file (the caller stops it all)."""
    log.info("starting PostgreSQL + PostGIS on port %d", cluster.port)
    cluster.init()
    cluster.start()
    createdb = [str(cluster.bin / "createdb"), "-h", "127.0.0.1", "-p", str(cluster.port)]
    subprocess.run([*createdb, "-U", "postgres", "tracksolid_db"], check=True)
    db = cluster.url("tracksolid_db")
    migrate(db, Settings(_env_file=None, database_url=db))
    log.info("schema ready")
    if why := stopping():
        raise StopRequestedError(why)

    sim_url = f"http://127.0.0.1:{ports['sim']}/route/rest"
    api = f"http://127.0.0.1:{ports['api']}"
    webhook = f"http://127.0.0.1:{ports['webhook']}"
    s3 = f"http://127.0.0.1:{ports['s3']}"
    push_token = secrets.token_urlsafe(24)  # a fresh secret per demo run
    env = {
        **os.environ, "DATABASE_URL": db, "JIMI_SIM_URL": sim_url, "LOG_LEVEL": "INFO",
        "TRACKSOLID_APP_KEY": "", "TRACKSOLID_APP_SECRET": "", "TRACKSOLID_USER_ID": "",
        "TRACKSOLID_USER_PWD": "", "TRACKSOLID_USER_PWD_MD5": "",
        **DEMO_INTERVALS,
        "WEBHOOK_SPOOL_DIR": str(work / "spool"), "DASHBOARD_API_KEYS": "",
        # The receiver refuses to start without a token: the simulator pushes with this
        # one (form field, and `?token=` on the Open-API push URL, as JIMI is told to).
        "JIMI_PUSH_TOKEN": push_token, "JIMI_PUSH_OPEN": "0", "DASHBOARD_CORS_ORIGINS": "*",
        # The S3 exports (written by the simulator) and the importers meet on the loopback
        # S3 server; any keys do, fresh ones per run. No geocoder: the tickets carry points.
        "RUSTFS_ENDPOINT": s3, "RUSTFS_ACCESS_KEY": "demo", "RUSTFS_REGION": "us-east-1",
        "RUSTFS_SECRET_KEY": secrets.token_urlsafe(16), "TICKETS_BUCKET": "fleet-tickets",
        "TICKETS_PREFIX": "changes/", "TICKETS_PROCESSED_PREFIX": "processed/",
        "FUEL_BUCKET": "fleet-fuel", "FUEL_PREFIX": "fuel_records/", "GEOCODER_KEY": "",
    }  # fmt: skip
    children.env = env
    start_services(children, args, ports, work, push_token, stopping)

    deadline = time.monotonic() + 120
    while not stopping() and time.monotonic() < deadline and live_vehicles(api) == 0:
        time.sleep(1)
    if why := stopping():
        raise StopRequestedError(why)
    sys.stdout.write(
        "\n  Fleet demo is running (Ctrl-C stops everything and removes the database)\n\n"
        f"  Operator page (map + ingest health)  {api}/\n"
        f"  Read-API docs                         {api}/docs\n"
        f"  Live positions GeoJSON                {api}/webhook/live-positions\n"
        f"  Alarms                                {api}/analytics/alarms\n"
        f"  Tickets on the map (GeoJSON)          {api}/analytics/tickets-map\n"
        f"  Fuel fills                            {api}/analytics/fuel-fills\n"
        f"  Ingest health                         {api}/health/ingest\n"
        f"  Webhook receiver                      {webhook}/health\n"
        f"  Jimi simulator                        {sim_url}\n"
        f"  S3 server (tickets, fuel buckets)     {s3}\n"
        f"  PostgreSQL                            {db}\n"
        f"  Logs                                  {work / 'logs'}\n\n"
        f"  Trips, stops and alarms are polled every minute; the simulator writes tickets and\n"
        f"  fuel fills to S3 every {args.feed_every:.0f} s and the importers run every"
        f" {args.importers_every:.0f} s.\n\n"
    )
    sys.stdout.flush()
    info = {"api": api, "webhook": webhook, "db": db, "sim": sim_url, "s3": s3,
            "work": str(work), "logs": str(work / "logs"), "pid": os.getpid(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "tickets_bucket": env["TICKETS_BUCKET"], "fuel_bucket": env["FUEL_BUCKET"]}  # fmt: skip
    if lock is not None:
        lock.describe({**info, "state": "running"})
    if args.ready_file:
        args.ready_file.write_text(json.dumps(info))


def start_services(
    children: Children,
    args: argparse.Namespace,
    ports: dict[str, int],
    work: Path,
    push_token: str,
    stopping: Callable[[], str | None],
) -> None:
    """S3 server, simulator (+ its S3 feed), registry, receiver, worker, API, importers."""
    py = sys.executable
    env = children.env
    s3 = env["RUSTFS_ENDPOINT"]
    children.start("s3_server", [py, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(ports["s3"])])  # fmt: skip
    wait_http(f"{s3}/", 60, stopping)
    webhook = f"http://127.0.0.1:{ports['webhook']}"
    children.start("jimi_sim", [py, "jimi_sim.py", "--port", str(ports["sim"]), "--devices",
                                str(args.devices), "--accounts", "3", "--seed", "1",
                                "--push-url", webhook, "--push-interval", "10",
                                # `=` form: a token may start with "-" (token_urlsafe)
                                f"--push-token={push_token}",
                                f"--push-openapi-path=/push?token={push_token}",
                                "--round-the-clock",
                                "--s3-feed", str(args.feed_every)])  # fmt: skip
    wait_http(f"http://127.0.0.1:{ports['sim']}/_sim/health", 30, stopping)
    registry = work / "registry.csv"
    write_registry(registry, args.devices)
    subprocess.run([py, "ingest_worker.py", "import-devices", str(registry), "--apply"],
                   cwd=ROOT, env={**env, "LOG_LEVEL": "WARNING"}, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    children.start("webhook_receiver", [py, "-m", "uvicorn", "webhook_receiver:app", "--host",
                                        "127.0.0.1", "--port", str(ports["webhook"])])  # fmt: skip
    children.start("ingest_worker", [py, "ingest_worker.py"])
    children.start("dashboard_api", [py, "-m", "uvicorn", "dashboard_api:app", "--host",
                                     "127.0.0.1", "--port", str(ports["api"])])  # fmt: skip
    wait_http(f"http://127.0.0.1:{ports['api']}/health", 60, stopping)
    wait_http(f"{webhook}/health", 60, stopping)
    # The importers' first run goes at once: wait for the simulator's first files.
    wait_s3_object(env, env["FUEL_BUCKET"], env["FUEL_PREFIX"] + "latest.json", 60, stopping)
    children.start("importers", [py, "scripts/run_importers.py", "--every",
                                 str(args.importers_every)])  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
