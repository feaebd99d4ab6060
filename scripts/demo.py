"""`make demo`: the whole stack on this machine, without Docker and without credentials.

Starts, in order: a throwaway PostgreSQL + PostGIS cluster, the migrations, the Jimi simulator
(60 vehicles over Nairobi, Mombasa and Kampala, pushing to the receiver), a registry import
(cost centres and cities for the simulated vehicles), the ingest worker, the webhook receiver
and the dashboard API. Prints the URLs. Ctrl-C stops everything and removes the cluster.

    python scripts/demo.py [--devices 60] [--api-port 8890] [--webhook-port 8081]
                           [--sim-port 8088] [--db-port 0] [--ready-file PATH]

`--ready-file` writes the URLs as JSON once positions are on the map (used by the browser
test). Ports 0 = pick free ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jimi_sim import Fleet, SimConfig  # noqa: E402
from run_migrations import migrate  # noqa: E402
from tests.pgcluster import LocalCluster, free_port  # noqa: E402
from ts_shared import Settings, setup_logging  # noqa: E402

log = logging.getLogger("demo")
COST_CENTRES = {"Nairobi": "Nairobi-Field", "Mombasa": "Mombasa-Field", "Kampala": "Kampala-Field"}


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


def wait_http(url: str, timeout: float) -> None:
    """Wait until `url` answers 2xx."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status < 300:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def live_vehicles(api: str) -> int:
    """How many vehicles the read-API shows on the live map."""
    with urllib.request.urlopen(f"{api}/webhook/live-positions", timeout=5) as response:  # noqa: S310
        return len(json.load(response).get("features") or [])


def main(argv: list[str] | None = None) -> int:
    """Run the demo until Ctrl-C / SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=int(os.environ.get("DEMO_DEVICES", "60")))
    parser.add_argument("--api-port", type=int, default=8890)
    parser.add_argument("--webhook-port", type=int, default=8081)
    parser.add_argument("--sim-port", type=int, default=8088)
    parser.add_argument("--db-port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args(argv)
    setup_logging("INFO")
    ports = {k: (v or free_port()) for k, v in (("api", args.api_port), ("webhook",
             args.webhook_port), ("sim", args.sim_port), ("db", args.db_port))}  # fmt: skip

    stop = {"flag": False}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    work = Path(tempfile.mkdtemp(prefix="fleet-demo-"))
    cluster = LocalCluster(port=ports["db"])
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        log.info("starting PostgreSQL + PostGIS on port %d", cluster.port)
        cluster.init()
        cluster.start()
        createdb = [str(cluster.bin / "createdb"), "-h", "127.0.0.1", "-p", str(cluster.port)]
        subprocess.run([*createdb, "-U", "postgres", "tracksolid_db"], check=True)
        db = cluster.url("tracksolid_db")
        migrate(db, Settings(_env_file=None, database_url=db))
        log.info("schema ready")

        sim_url = f"http://127.0.0.1:{ports['sim']}/route/rest"
        api = f"http://127.0.0.1:{ports['api']}"
        webhook = f"http://127.0.0.1:{ports['webhook']}"
        push_token = secrets.token_urlsafe(24)  # a fresh secret per demo run
        env = {
            **os.environ, "DATABASE_URL": db, "JIMI_SIM_URL": sim_url, "LOG_LEVEL": "INFO",
            "TRACKSOLID_APP_KEY": "", "TRACKSOLID_APP_SECRET": "", "TRACKSOLID_USER_ID": "",
            "TRACKSOLID_USER_PWD": "", "TRACKSOLID_USER_PWD_MD5": "",
            "INGEST_CATCHUP_DAYS": "1", "INGEST_LIVE_INTERVAL_S": "20",
            "INGEST_ALARMS_INTERVAL_S": "60", "VTRIPS_REFRESH_INTERVAL_S": "60",
            "WEBHOOK_SPOOL_DIR": str(work / "spool"), "DASHBOARD_API_KEYS": "",
            # The receiver refuses to start without a token: the simulator pushes with this
            # one (form field, and `?token=` on the Open-API push URL, as JIMI is told to).
            "JIMI_PUSH_TOKEN": push_token, "JIMI_PUSH_OPEN": "0", "DASHBOARD_CORS_ORIGINS": "*",
        }  # fmt: skip
        logs = work / "logs"
        logs.mkdir()

        def start(name: str, cmd: list[str]) -> None:
            out = (logs / f"{name}.log").open("wb")
            procs.append((name, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out,
                                                 stderr=subprocess.STDOUT)))  # fmt: skip

        py = sys.executable
        start("jimi_sim", [py, "jimi_sim.py", "--port", str(ports["sim"]), "--devices",
                           str(args.devices), "--accounts", "3", "--seed", "1",
                           "--push-url", webhook, "--push-interval", "10",
                           # `=` form: a token may start with "-" (token_urlsafe)
                           f"--push-token={push_token}",
                           f"--push-openapi-path=/push?token={push_token}"])  # fmt: skip
        wait_http(f"http://127.0.0.1:{ports['sim']}/_sim/health", 30)
        registry = work / "registry.csv"
        write_registry(registry, args.devices)
        subprocess.run([py, "ingest_worker.py", "import-devices", str(registry), "--apply"],
                       cwd=ROOT, env={**env, "LOG_LEVEL": "WARNING"}, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        start("webhook_receiver", [py, "-m", "uvicorn", "webhook_receiver:app", "--host",
                                   "127.0.0.1", "--port", str(ports["webhook"])])  # fmt: skip
        start("ingest_worker", [py, "ingest_worker.py"])
        start("dashboard_api", [py, "-m", "uvicorn", "dashboard_api:app", "--host",
                                "127.0.0.1", "--port", str(ports["api"])])  # fmt: skip
        wait_http(f"{api}/health", 60)
        wait_http(f"{webhook}/health", 60)

        deadline = time.monotonic() + 120
        while not stop["flag"] and time.monotonic() < deadline and live_vehicles(api) == 0:
            time.sleep(1)
        sys.stdout.write(
            "\n  Fleet demo is running (Ctrl-C stops everything and removes the database)\n\n"
            f"  Operator page (map + ingest health)  {api}/\n"
            f"  Read-API docs                         {api}/docs\n"
            f"  Live positions GeoJSON                {api}/webhook/live-positions\n"
            f"  Webhook receiver                      {webhook}/health\n"
            f"  Jimi simulator                        {sim_url}\n"
            f"  PostgreSQL                            {db}\n"
            f"  Logs                                  {logs}\n\n"
        )
        sys.stdout.flush()
        if args.ready_file:
            args.ready_file.write_text(
                json.dumps(
                    {"api": api, "webhook": webhook, "db": db, "sim": sim_url, "work": str(work)}
                )
            )
        while not stop["flag"]:
            for name, proc in procs:
                if proc.poll() is not None:
                    log.error("%s exited with %s; see %s", name, proc.returncode,
                              logs / f"{name}.log")  # fmt: skip
                    stop["flag"] = True
            time.sleep(0.5)
        return 0
    finally:
        log.info("stopping")
        for _, proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        cluster.stop(remove=True)
        log.info("stopped; database removed (logs kept in %s)", logs if procs else work)


if __name__ == "__main__":
    raise SystemExit(main())
