"""`make demo` (scripts/demo.py): what it promises a new user.

- the simulator's demo mode keeps vehicles driving, stopping and raising alarms at any hour;
- the simulator's S3 feed writes tickets and fuel fills the real importers import;
- the whole demo through `make demo`: tickets and fuel fills arrive through the loopback S3
  server and the importers, the worker runs accelerated, a second demo refuses to start,
  SIGINT or SIGTERM to make stops every process;
- a taken port refuses the start; the sample files import with the real importers;
- the demo installs only the runtime dependencies and the `demo` group.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from jimi_sim import Fleet, SimConfig
from sim.s3feed import S3Feed
from tests.pgcluster import free_port
from ts_shared import Settings, make_s3_client

ROOT = Path(__file__).resolve().parent.parent
DAY = datetime(2026, 6, 24, tzinfo=UTC)


# ── the simulator's demo mode ────────────────────────────────────────────────


def test_round_the_clock_fleet_drives_and_raises_alarms_at_any_hour() -> None:
    """Every hour of the day some vehicles drive, trips end and alarms are raised (a demo
    at night used to show a parked fleet); the default fleet still rests at night."""
    fleet = Fleet(SimConfig(devices=60, seed=1, round_the_clock=True))
    for hour in range(24):
        begin = DAY + timedelta(hours=hour)
        end = begin + timedelta(hours=1)
        moving = sum(fleet.position_at(d.imei, begin + timedelta(minutes=30)).moving
                     for d in fleet.devices())  # fmt: skip
        ended = sum(len(fleet.trips(d.imei, begin - timedelta(hours=3), end))
                    - len(fleet.trips(d.imei, begin - timedelta(hours=3), begin))
                    for d in fleet.devices())  # fmt: skip
        alarms = sum(len(fleet.alarms(d.imei, begin, end)) for d in fleet.devices())
        assert moving >= 3, hour
        assert ended >= 3, hour
        assert alarms >= 5, hour
    resting = Fleet(SimConfig(devices=60, seed=1))
    night = DAY + timedelta(hours=23, minutes=30)  # 02:30 EAT
    assert not any(resting.position_at(d.imei, night).moving for d in resting.devices())


def test_round_the_clock_odometer_and_track_stay_consistent() -> None:
    """Shifted working days still give a monotonic odometer and a track whose fixes match
    the position answered at their time."""
    fleet = Fleet(SimConfig(devices=8, seed=3, round_the_clock=True))
    for dev in fleet.devices():
        readings = [fleet.odometer_km(dev.imei, DAY + timedelta(minutes=20 * i))
                    for i in range(3 * 72)]  # fmt: skip
        assert all(b >= a - 1e-6 for a, b in itertools.pairwise(readings))
        fixes = fleet.track(dev.imei, DAY, DAY + timedelta(days=1))
        assert fixes
        for fix in fixes[:: max(1, len(fixes) // 20)]:
            assert fleet.position_at(dev.imei, fix.gps_time) == fix


# ── the simulator's S3 feed and the real importers ───────────────────────────


def importer_env(settings: Settings) -> dict[str, str]:
    """Environment of an importer process for these settings."""
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "RUSTFS_ENDPOINT": settings.rustfs_endpoint,
        "RUSTFS_ACCESS_KEY": settings.rustfs_access_key.get_secret_value(),
        "RUSTFS_SECRET_KEY": settings.rustfs_secret_key.get_secret_value(),
        "TICKETS_BUCKET": settings.tickets_bucket,
        "FUEL_BUCKET": settings.fuel_bucket,
        "GEOCODER_KEY": "",
        "LOG_LEVEL": "WARNING",
    }


def run_importer(args: list[str], env: dict[str, str]) -> None:
    """Run one importer CLI to completion; it must succeed."""
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_s3_feed_writes_what_the_importers_import(s3_settings: Settings, db_url: str) -> None:
    """Two rounds of the feed: new tickets with points beside the fleet's roads and the
    next state of open ones; fills of the fleet's vehicles in a cumulative snapshot."""
    fleet = Fleet(SimConfig(devices=12, seed=1, round_the_clock=True))
    feed = S3Feed(fleet, make_s3_client(s3_settings), tickets_bucket=s3_settings.tickets_bucket,
                  fuel_bucket=s3_settings.fuel_bucket)  # fmt: skip
    now = datetime.now(UTC).replace(microsecond=0)
    feed.ensure_buckets()
    assert feed.publish(now, new_tickets=5, new_fills=3) == (5, 3)
    feed.publish(now + timedelta(minutes=1), new_tickets=2, new_fills=1)
    assert any(fleet.on_errand(d.imei, now + timedelta(seconds=30)) for d in fleet.devices())
    env = importer_env(s3_settings)
    run_importer(["import_tickets.py", "--from-bucket", "--apply"], env)
    run_importer(["import_fuel.py", "--snapshot", "--apply"], env)
    plates = {d.vehicle_number for d in fleet.devices()}
    with psycopg.connect(db_url) as conn:
        tickets = conn.execute(
            "SELECT ticket_id, normalized_status, geom IS NOT NULL, region FROM tickets.inc"
        ).fetchall()
        fills = conn.execute(
            "SELECT plate_raw, litres, odometer_km, filled_at, deleted_at, missing_since"
            " FROM fuel.records"
        ).fetchall()
    assert len(tickets) == 7
    assert all(has_point for _, _, has_point, _ in tickets)
    assert {region for *_, region in tickets} <= {"nairobi", "mombasa", "kampala"}
    assert len(fills) == 4
    for plate, litres, odometer, filled_at, deleted, missing in fills:
        assert plate in plates
        assert litres > 0 and odometer > 0
        assert now - timedelta(minutes=30) < filled_at <= now + timedelta(minutes=1)
        assert deleted is None and missing is None
    s3 = make_s3_client(s3_settings)
    left = s3.list_objects_v2(Bucket=s3_settings.tickets_bucket, Prefix="changes/")
    assert left.get("KeyCount", 0) == 0  # imported files were archived to processed/


# ── the committed sample files ───────────────────────────────────────────────


def test_samples_import_with_the_real_importers(settings: Settings, db_url: str) -> None:
    """samples/ holds files for `--inc-csv` and `--file` that import cleanly (the README's
    walk-through), and a rerun changes nothing."""
    env = importer_env(settings)
    for _ in range(2):
        run_importer(["import_tickets.py", "--inc-csv", "samples/inc-changes.csv", "--apply"],
                     env)  # fmt: skip
        run_importer(["import_fuel.py", "--file", "samples/fuel-records.json", "--apply"], env)
    with psycopg.connect(db_url) as conn:
        tickets: dict[str, str] = dict(conn.execute(
            "SELECT ticket_id, bucket FROM tickets.inc ORDER BY ticket_id").fetchall())  # fmt: skip
        fuel = {row[0]: row[1:] for row in conn.execute(
            "SELECT id, plate_norm, litres, fuel_type, department, filled_at, deleted_at"
            " FROM fuel.records").fetchall()}  # fmt: skip
    assert len(tickets) == 6  # the is_alarm row is dropped
    assert "INC000104217" not in tickets
    assert tickets["INC000104214"] == "closed"
    assert tickets["INC000104211"] == "open"
    assert len(fuel) == 6
    assert fuel["5002"][:4] == ("KDB318X", 30, "PETROL", "Field Operations")
    assert fuel["5003"][1:3] == (12, "DIESEL")
    assert fuel["5004"][2] == "DIESEL"
    assert fuel["5001"][4] == datetime(2026, 6, 24, 4, 42, tzinfo=UTC)  # naive EAT
    assert fuel["5006"][5] is not None  # soft-deleted
    assert sum(1 for row in fuel.values() if row[5] is None) == 5


# ── start-up refusals ────────────────────────────────────────────────────────


def demo_cmd(*flags: str) -> list[str]:
    """scripts/demo.py with the venv's interpreter."""
    return [sys.executable, str(ROOT / "scripts" / "demo.py"), *flags]


def test_a_taken_port_refuses_the_start(tmp_path: Path) -> None:
    """Non-zero exit at once, naming the port, and nothing started (no URLs printed)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            demo_cmd("--api-port", str(port), "--webhook-port", "0", "--sim-port", "0",
                     "--s3-port", "0", "--lock-file", str(tmp_path / "demo.lock"),
                     "--ready-file", str(tmp_path / "ready.json")),
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"port {port} (read-API) is already in use" in result.stderr
    assert "--api-port" in result.stderr
    assert "Fleet demo is running" not in result.stdout
    assert not (tmp_path / "ready.json").exists()


def test_demo_dependencies_are_runtime_and_demo_group_only() -> None:
    """`make demo` syncs the runtime dependencies and the `demo` group: the S3 server, not
    the test toolchain (pytest, moto[server]'s cfn-lint, testcontainers, playwright)."""
    uv = shutil.which("uv")
    cmd = [uv] if uv else [sys.executable, "-m", "uv"]
    out = subprocess.run(
        [*cmd, "export", "--frozen", "--no-default-groups", "--group", "demo", "--no-hashes",
         "--no-header", "--no-emit-project"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    names = {line.split("==")[0].split("[")[0].lower() for line in out.splitlines()
             if line and not line.startswith((" ", "#"))}  # fmt: skip
    assert {"moto", "flask", "fastapi", "uvicorn", "psycopg", "boto3"} <= names
    assert not names & {"pytest", "cfn-lint", "testcontainers", "playwright", "mypy", "ruff"}
    makefile = (ROOT / "Makefile").read_text()
    assert "ensure_deps.sh demo" in makefile
    assert "@exec .venv/bin/python scripts/demo.py" in makefile


# ── the whole demo through make ──────────────────────────────────────────────


def wait_for(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[str]) -> None:
    """Poll `predicate` until true; fail early if the demo's make exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"make demo exited ({proc.returncode}) while waiting for {what}")
        if predicate():
            return
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}")


def counts(db: str) -> dict[str, int]:
    """Rows the demo has so far (0 while the database is not reachable)."""
    try:
        with psycopg.connect(db, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM tickets.inc WHERE geom IS NOT NULL),"
                " (SELECT count(*) FROM fuel.records),"
                " (SELECT count(*) FROM tracksolid.alarms),"
                " (SELECT count(*) FROM tracksolid.trips),"
                " (SELECT count(*) FROM fuel.ingest_files WHERE object_key LIKE '%latest.json'),"
                " (SELECT count(*) FROM tickets.import_meta"
                "   WHERE source_max_key LIKE 'changes/%')"
            ).fetchone()
    except psycopg.Error:
        return {}
    assert row is not None
    return dict(zip(("tickets", "fills", "alarms", "trips", "fuel_files", "ticket_files"),
                    row, strict=True))  # fmt: skip


def port_open(url: str) -> bool:
    """Whether something accepts connections at the URL's host:port."""
    host_port = url.split("//", 1)[1].split("/", 1)[0].rsplit("@", maxsplit=1)[-1]
    host, port = host_port.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


@pytest.fixture
def demo_ports() -> Iterator[dict[str, int]]:
    """Fixed free ports for one demo (a demo on fixed ports takes the lock)."""
    yield {name: free_port() for name in ("api", "webhook", "sim", "s3")}


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_make_demo_feeds_everything_refuses_a_second_and_stops_on_a_signal(
    tmp_path: Path, demo_ports: dict[str, int], stop_signal: signal.Signals
) -> None:
    """`make demo`: tickets and fuel fills arrive through the S3 server and the importers,
    the worker runs on the demo's intervals, a second `make demo` refuses (non-zero, naming
    the running one), and the signal to make alone stops every process the demo started."""
    lock, ready = tmp_path / "demo.lock", tmp_path / "ready.json"
    flags = (f"--devices 20 --api-port {demo_ports['api']} --webhook-port {demo_ports['webhook']}"
             f" --sim-port {demo_ports['sim']} --s3-port {demo_ports['s3']}"
             f" --feed-every 5 --importers-every 5 --lock-file {lock}")  # fmt: skip
    log = (tmp_path / "make.log").open("w")
    make = subprocess.Popen(["make", "-s", "demo", f"DEMO_ARGS={flags} --ready-file {ready}"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: ready.exists() and ready.stat().st_size > 0, 180, "the ready file", make)
        info = json.loads(ready.read_text())
        assert {"api", "db", "webhook", "sim", "s3", "logs"} <= info.keys()
        assert info["s3"] == f"http://127.0.0.1:{demo_ports['s3']}"
        descendants = psutil.Process(make.pid).children(recursive=True)
        assert len(descendants) >= 7  # demo.py, S3 server, simulator, receiver, worker, API...

        second = subprocess.run(
            ["make", "-s", "demo", f"DEMO_ARGS={flags} --ready-file {tmp_path / 'other.json'}"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert second.returncode != 0
        assert f"another demo is already running (pid {info['pid']}" in second.stderr
        assert "Fleet demo is running" not in second.stdout

        wait_for(lambda: (c := counts(info["db"])) and c["tickets"] > 0 and c["fills"] > 0
                 and c["fuel_files"] > 0 and c["ticket_files"] > 0, 120,
                 "tickets and fuel fills imported from S3", make)  # fmt: skip
        now = counts(info["db"])
        assert now["alarms"] > 0 and now["trips"] > 0
        worker_log = (Path(info["logs"]) / "ingest_worker.log").read_text()
        assert "trips every 60s" in worker_log and "alarms every 30s" in worker_log

        make.send_signal(stop_signal)
        make.wait(90)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)
        log.close()
    time.sleep(1)
    alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [p.cmdline() for p in alive]
    for url in (info["api"], info["webhook"], info["sim"], info["s3"], info["db"]):
        assert not port_open(url), url
    with lock.open("a+") as fh:  # released: the next demo may start
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert not ready.exists()
