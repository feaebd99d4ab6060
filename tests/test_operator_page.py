"""`make demo` end to end, and the operator page in headless Chromium.

Starts scripts/demo.py (throwaway cluster, migrations, simulator pushing to the receiver,
worker, read-API) on free ports, waits until positions are on the map, loads `/` in Debian's
headless Chromium with internet tiles off, and checks that every simulated vehicle has a
marker and the ingest-health table is filled. A screenshot is written to
test-output/operator-page.png. Finally Ctrl-C (SIGINT) must stop everything and remove the
database cluster.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.pgcluster import find_pg_bin

DEVICES = 12
OUTPUT = ROOT / "test-output"


@pytest.fixture(scope="module")
def demo() -> Iterator[dict[str, Any]]:
    ready = Path(tempfile.mkdtemp()) / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "scripts/demo.py", "--devices", str(DEVICES), "--api-port", "0",
         "--webhook-port", "0", "--sim-port", "0", "--ready-file", str(ready)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"demo did not come up within 3 minutes:\n{out[-4000:]}")
        time.sleep(0.5)
    info = json.loads(ready.read_text())
    info["_proc"] = proc
    yield info
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_demo_positions_flow_into_the_map_and_pushes_arrive(demo: dict[str, Any]) -> None:
    fc = _get(demo["api"] + "/webhook/live-positions")
    assert isinstance(fc, dict) and fc["type"] == "FeatureCollection"
    assert len(fc["features"]) == DEVICES
    # The simulator's pushes reach the receiver and the database (push rows appear).
    deadline = time.monotonic() + 60
    feeds: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        health = _get(demo["api"] + "/health/ingest")
        assert isinstance(health, dict)
        feeds = list(health.get("feeds") or [])
        if any(f.get("source") == "push" for f in feeds):
            break
        time.sleep(2)
    assert any(f.get("source") == "push" for f in feeds), feeds
    assert any(f.get("source") == "api" for f in feeds), feeds


def test_operator_page_shows_every_vehicle_in_headless_chromium(demo: dict[str, Any]) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian chromium is required (make test installs it)"
    OUTPUT.mkdir(exist_ok=True)
    profile = tempfile.mkdtemp(prefix="chromium-")
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1400,900",
        "--virtual-time-budget=15000", "--run-all-compositor-stages-before-draw",
    ]  # fmt: skip
    url = demo["api"] + "/?tiles=off"
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=False).stdout  # fmt: skip
    (OUTPUT / "operator-page.html").write_text(dom)
    assert 'data-ready="1"' in dom, "the page finished its first refresh"
    assert f'data-vehicles="{DEVICES}"' in dom
    assert len(re.findall(r'class="[^"]*vehicle-marker', dom)) == DEVICES
    rows = re.search(r'data-feeds="(\d+)"', dom)
    assert rows and int(rows.group(1)) > 0, "the ingest health table has rows"
    # A vehicle's track on click: `?select=` opens the same panel as a click on its marker.
    fc = _get(demo["api"] + "/webhook/live-positions")
    assert isinstance(fc, dict)
    moving = sorted(f["properties"]["vehicle_number"] for f in fc["features"])
    selected = subprocess.run(
        [chromium, *flags, "--dump-dom", f"{url}&select={moving[0]}"],
        capture_output=True, text=True, timeout=120, check=False,
    ).stdout  # fmt: skip
    points = re.search(r'data-track-points="(\d+)"', selected)
    assert points and int(points.group(1)) > 1, "the selected vehicle's 24 h track is drawn"
    assert "vehicle-track" in selected
    shot = OUTPUT / "operator-page.png"
    shot.unlink(missing_ok=True)
    subprocess.run([chromium, *flags, f"--screenshot={shot}", f"{url}&select={moving[0]}"],
                   capture_output=True,
                   timeout=120, check=False)  # fmt: skip
    assert shot.exists() and shot.stat().st_size > 10_000
    shutil.rmtree(profile, ignore_errors=True)


def test_ctrl_c_stops_everything_and_removes_the_cluster(demo: dict[str, Any]) -> None:
    proc: subprocess.Popen[str] = demo["_proc"]
    db_port = re.search(r":(\d+)/", demo["db"])
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    out = proc.stdout.read() if proc.stdout else ""
    assert "database removed" in out
    assert db_port is not None
    probe = subprocess.run([str(find_pg_bin() / "pg_isready"), "-h", "127.0.0.1", "-p",
                            db_port.group(1)],
                           capture_output=True, check=False)  # fmt: skip
    assert probe.returncode != 0, "the demo's PostgreSQL is gone"
