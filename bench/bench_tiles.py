"""Benchmark of the vector tiles (issue #19): the read-API's `/tiles/...` against tipg.

    .venv/bin/python -m bench.bench_tiles                          # 1,000 vehicles x 14 days
    .venv/bin/python -m bench.bench_tiles --vehicles 100 --days 2 --repeat 10   # quick
    .venv/bin/python -m bench.bench_tiles --fixes 24 --trip-spread 0.02   # trips not all alike

Data: bench/bench_dashboard.py's generator (vehicles in ten Kenyan / Ugandan cost centres,
~500 fixes and ~7 trips per vehicle per day, live positions) in a throwaway plain PostgreSQL
+ PostGIS cluster (tests.pgcluster). By default every trip of a cost centre is the same line
(depot → depot + 0.05°), which a trips tile draws once; `--trip-spread D` scatters the ends
over ±D degrees so that tiles hold many distinct lines, as a real fleet's would.

Servers, each its own process on 127.0.0.1 against the same database, settings from the
environment as in production:
- the read-API (`uvicorn dashboard_api:app`, bench/bench_compression.py's `read_api`):
  `/tiles/live/...`, `/tiles/trips/...` (the default window: the 7 days up to now) and
  `/tiles/track/...?imei=...&hours=24`;
- tipg (PyPI `tipg`, an OGC API Tiles server for PostGIS), installed at bench time into a
  throwaway venv (`--tipg-venv`, default /tmp/tipg-venv: `uv venv` + `uv pip install tipg`),
  never a project dependency. It serves views of the same rows from schema `bench_tipg` —
  `live` (the live positions with the tile's properties), `trips_week` (the trips starting in
  the last 7 days, lines start → end) and `track_24h` (the segments between the fixes of the
  last 24 h of one vehicle) — at `/collections/bench_tipg.<view>/tiles/WebMercatorQuad/z/x/y`,
  with TIPG_MAX_FEATURES_PER_TILE raised so that it, too, sends every feature.

Tiles: z 6 over Kenya (Nairobi, Mombasa, Kisumu, Nakuru), z 10 over Nairobi, z 14 on a
street of Nairobi (the cost centre Nairobi-North's depot: each of its trips starts there;
for the track: the street of the vehicle's last fix).
The read-API's trips features carry trip_id and trips only up to zoom 11 (the full
properties from zoom 12), tipg's view every property at every zoom: compare bytes at z 14.
Per tile and server: features, bytes (identity), p50 / p95 (ms to the last byte) of
`--repeat` calls, the servers' calls interleaved; then the servers' resident memory and the
machine load before and after. The read-API is timed twice: as served (a trips tile comes
from its cache after the first call: dashboard/tile_cache.py) and "built" (each call sends
`Cache-Control: no-cache`, so the tile is built in PostGIS every time, as a cold tile is).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_compression import load, read_api, wait_until_up  # noqa: E402
from bench.bench_dashboard import add_dataset_args, log, plain_dataset  # noqa: E402
from tests.pgcluster import free_port  # noqa: E402

TIPG_VERSION = "1.6.1"
# (name, lon, lat, zoom): Kenya, Nairobi, a street at Nairobi-North's depot (-1.25, 36.82).
TILES = [
    ("z6 Kenya", 36.82, -1.28, 6),
    ("z10 Nairobi", 36.82, -1.28, 10),
    ("z14 Nairobi street", 36.8201, -1.2501, 14),
]

# The same rows and properties as the read-API's tiles (migrations/R__reporting_tiles.sql).
TIPG_VIEWS = """
CREATE SCHEMA bench_tipg;
CREATE VIEW bench_tipg.live AS
SELECT lp.imei, lp.vehicle_number AS name, lp.vehicle_number, lp.vehicle_name, lp.driver_name,
       lp.cost_centre, lp.status, lp.speed_kmh::float8 AS speed_kmh,
       lp.direction_deg::integer AS course, lp.acc_on, lp.online,
       to_json(lp.gps_time) #>> '{}' AS gps_time, g.geom
FROM tracksolid.live_positions g JOIN reporting.v_live_positions lp ON lp.imei = g.imei;
CREATE VIEW bench_tipg.trips_week AS
SELECT t.trip_id, t.imei, t.vehicle_number, t.vehicle_name, t.driver_name, t.cost_centre,
       to_json(t.start_time) #>> '{}' AS start_time, to_json(t.end_time) #>> '{}' AS end_time,
       t.distance_km::float8 AS distance_km, t.driving_time_s,
       t.avg_speed_kmh::float8 AS avg_speed_kmh, t.max_speed_kmh::float8 AS max_speed_kmh,
       ST_SetSRID(ST_MakeLine(ST_MakePoint(t.start_lng, t.start_lat),
                              ST_MakePoint(t.end_lng, t.end_lat)), 4326)::geometry(LineString, 4326)
           AS geom
FROM reporting.v_trips t
WHERE t.start_time >= now() - interval '7 days' AND t.end_lat IS NOT NULL;
CREATE VIEW bench_tipg.track_24h AS
SELECT f.imei, f.seq::integer AS seq, to_json(f.gps_time) #>> '{}' AS start_time,
       to_json(f.t_next) #>> '{}' AS end_time, f.speed_kmh::float8 AS speed_kmh,
       f.speed_next::float8 AS end_speed_kmh,
       ST_SetSRID(ST_MakeLine(ST_MakePoint(f.lng, f.lat), ST_MakePoint(f.lng_next, f.lat_next)),
                  4326)::geometry(LineString, 4326) AS geom
FROM (SELECT ph.imei, ph.gps_time, ph.lat, ph.lng, ph.speed_kmh,
             row_number() OVER w AS seq, lead(ph.gps_time) OVER w AS t_next,
             lead(ph.lat) OVER w AS lat_next, lead(ph.lng) OVER w AS lng_next,
             lead(ph.speed_kmh) OVER w AS speed_next
      FROM tracksolid.position_history ph
      WHERE ph.imei = '{imei}' AND ph.gps_time >= now() - interval '24 hours'
        AND ph.quality_flag IS NULL
      WINDOW w AS (ORDER BY ph.gps_time)) f
WHERE f.t_next IS NOT NULL
"""


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    """The XYZ tile holding lon / lat at zoom z."""
    n = 1 << z
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return int((lon + 180) / 360 * n), int(y)


def tipg_python(venv: Path) -> Path:
    """tipg's interpreter, installing tipg into the throwaway venv when it is not there."""
    python = venv / "bin" / "python"
    if (
        python.exists()
        and subprocess.run([python, "-c", "import tipg"], check=False).returncode == 0
    ):
        return python
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is needed to install tipg into a throwaway venv")
    log(f"installing tipg {TIPG_VERSION} into {venv} ...")
    # the project's interpreter: uv must not download a Python of its own
    subprocess.run([uv, "venv", str(venv), "--python", sys.executable], check=True)
    subprocess.run(
        [uv, "pip", "install", "--python", str(python), f"tipg=={TIPG_VERSION}", "uvicorn"],
        check=True,
    )
    return python


@contextmanager
def tipg_server(python: Path, url: str) -> Iterator[tuple[str, int]]:
    """tipg under uvicorn on loopback against `url`; yields its base URL and pid."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": url,
        "TIPG_DB_SCHEMAS": '["bench_tipg"]',
        "TIPG_MAX_FEATURES_PER_TILE": "1000000",
        "TIPG_DB_SPATIAL_EXTENT": "false",
        "TIPG_DB_DATETIME_EXTENT": "false",
    }
    cmd = [
        str(python),
        "-m",
        "uvicorn",
        "tipg.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    process = subprocess.Popen(cmd, cwd="/tmp", env=env)  # cwd: no project .env for tipg
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, base + "/collections", "tipg", timeout_s=120)
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def features_in(body: bytes) -> int:
    """The number of features in a tile (decoded with mapbox-vector-tile, a test dependency)."""
    if not body:
        return 0
    import mapbox_vector_tile  # type: ignore[import-untyped]  # noqa: PLC0415

    return sum(len(layer["features"]) for layer in mapbox_vector_tile.decode(body).values())


def get(client: httpx.Client, url: str, *, built: bool = False) -> tuple[float, bytes]:
    """ms to the last byte and the body; `built`: `Cache-Control: no-cache`, so that the
    read-API builds the tile instead of answering from its trips tile cache."""
    headers = {"Accept-Encoding": "identity"}
    if built:
        headers["Cache-Control"] = "no-cache"
    t0 = time.perf_counter()
    response = client.get(url, headers=headers)
    body = response.content
    elapsed = (time.perf_counter() - t0) * 1000
    if response.status_code not in (200, 204):
        raise RuntimeError(f"{url}: HTTP {response.status_code} {response.text[:200]}")
    return elapsed, body


def compare(client: httpx.Client, ours: str, theirs: str, repeat: int) -> dict[str, Any]:
    """p50 / p95 / bytes / features of both URLs, calls interleaved (one warm-up each); ours
    twice: as served (trips tiles from the read-API's cache after the first call) and
    "built" (every call builds the tile: `Cache-Control: no-cache`)."""
    samples: dict[str, list[float]] = {"ours": [], "built": [], "tipg": []}
    bodies = {"ours": get(client, ours)[1], "tipg": get(client, theirs)[1]}
    bodies["built"] = bodies["ours"]
    for _ in range(repeat):
        for key, url in (("built", ours), ("ours", ours), ("tipg", theirs)):
            samples[key].append(get(client, url, built=key == "built")[0])
    out: dict[str, Any] = {}
    for key, values in samples.items():
        values.sort()
        out[key] = (
            statistics.median(values),
            values[round(0.95 * (len(values) - 1))],
            len(bodies[key]),
            features_in(bodies[key]),
        )
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of a server process and its children, MB."""
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def run(args: argparse.Namespace) -> None:
    print(
        "command:",
        shlex.join([Path(sys.executable).name, "-m", "bench.bench_tiles", *sys.argv[1:]]),
    )
    print(f"machine: {platform.node()} {platform.machine()}, {load()}")
    python = tipg_python(Path(args.tipg_venv))
    # --trip-spread (bench_dashboard.generate's trip_spread): trips leave around the depot
    # instead of all from it, so low-zoom tiles merge fewer of them (closer to a real fleet)
    extra = {"trip_spread": args.trip_spread} if args.trip_spread else {}
    with plain_dataset("bench_tiles", args, **extra) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT d.imei, p.lng, p.lat FROM tracksolid.devices d"
                " CROSS JOIN LATERAL (SELECT h.lng, h.lat FROM tracksolid.position_history h"
                "   WHERE h.imei = d.imei ORDER BY h.gps_time DESC LIMIT 1) p"
                " WHERE d.cost_centre = 'Nairobi-North' ORDER BY d.imei LIMIT 1"
            ).fetchone()
            assert row is not None
            imei, last_fix = str(row[0]), (float(row[1]), float(row[2]))
            for statement in TIPG_VIEWS.replace("{imei}", imei).split(";"):
                conn.execute(statement.encode())
        with (
            read_api(url) as ours,
            tipg_server(python, url) as (theirs, tipg_pid),
            httpx.Client(timeout=120) as client,
        ):
            print(f"before: {load()}")
            layers = [
                ("live", "", "live"),
                ("trips", "", "trips_week"),
                ("track", f"?imei={imei}&hours=24", "track_24h"),
            ]
            print(
                f"\n{'tile':<28} {'read-API p50':>12} {'p95':>7} {'bytes':>9} {'feat':>6}"
                f"  {'built p50':>9} {'p95':>7}"
                f"   {'tipg p50':>9} {'p95':>7} {'bytes':>9} {'feat':>6}  p50 ratio  built ratio"
            )
            for layer, query, view in layers:
                tiles = TILES
                if layer == "track":  # the street where the vehicle's last fix is
                    tiles = [*TILES[:2], ("z14 its street", *last_fix, 14)]
                for name, lon, lat, z in tiles:
                    x, y = tile_of(lon, lat, z)
                    r = compare(
                        client,
                        f"{ours}/tiles/{layer}/{z}/{x}/{y}.mvt{query}",
                        f"{theirs}/collections/bench_tipg.{view}/tiles/WebMercatorQuad/{z}/{x}/{y}",
                        args.repeat,
                    )
                    o, b, t = r["ours"], r["built"], r["tipg"]
                    print(
                        f"{layer + ' ' + name:<28} {o[0]:>12.1f} {o[1]:>7.1f} {o[2]:>9,}"
                        f" {o[3]:>6}  {b[0]:>9.1f} {b[1]:>7.1f}"
                        f"   {t[0]:>9.1f} {t[1]:>7.1f} {t[2]:>9,} {t[3]:>6}"
                        f"  {o[0] / t[0]:>9.2f}  {b[0] / t[0]:>11.2f}",
                        flush=True,
                    )
            port = ours.rsplit(":", 1)[1]
            api_pid = next(
                p.pid
                for p in psutil.process_iter(["cmdline"])
                if {"dashboard_api:app", port} <= set(p.info["cmdline"] or [])
            )
            print(
                f"\nresident memory: read-API {rss_mb(api_pid):.0f} MB,"
                f" tipg {rss_mb(tipg_pid):.0f} MB"
            )
            print(f"after: {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dataset_args(
        parser, days=14, fixes=500, repeat=20, repeat_help="timed calls per tile and server"
    )
    parser.add_argument(
        "--trip-spread", type=float, default=0.0, help="degrees around the depot trips end at"
    )
    parser.add_argument("--tipg-venv", default="/tmp/tipg-venv", help="throwaway venv of tipg")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
