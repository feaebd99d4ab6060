"""Geofence CLI.

    python -m geofences load FILE.geojson [--replace]   add the file's fences (all or none)
    python -m geofences list [--json]                   id, name, kind, cost centre, city
    python -m geofences delete ID                       remove one fence and its events
    python -m geofences recompute                       forget all events; the next run redoes them
    python -m geofences run                             one pass of the geofence_events job now

`load` refuses a name that exists unless `--replace` (which updates that fence in place; a
reshaped fence has its events recomputed by the next job run). docs/geofences.md.
Exit status: 0 ok · 1 database failure · 2 usage or an invalid file · 3 no such fence (delete).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from psycopg_pool import ConnectionPool

from geofences import events, store
from geofences.geojson import GeofenceError, parse_body
from ts_shared import Settings, setup_logging, utcnow, with_cli_pool

log = logging.getLogger("geofences")
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_MISSING = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments (no database needed for --help and usage errors)."""
    parser = argparse.ArgumentParser(
        prog="python -m geofences",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="load a GeoJSON Feature or FeatureCollection")
    load.add_argument("file", type=Path)
    load.add_argument("--replace", action="store_true", help="update fences of the same name")
    listing = sub.add_parser("list", help="list the fences")
    listing.add_argument("--json", action="store_true")
    delete = sub.add_parser("delete", help="delete one fence (and its events)")
    delete.add_argument("id", type=int)
    sub.add_parser("recompute", help="forget every event; the next job run recomputes them")
    sub.add_parser("run", help="run one pass of the geofence_events job now")
    return parser


def run(argv: Sequence[str] | None, settings: Settings, pool: ConnectionPool,
        out: TextIO | None = None) -> int:  # fmt: skip
    """Run the CLI with an open pool; returns the exit status."""
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    with pool.connection() as conn:
        if args.command == "load":
            return _load(conn, args.file, args.replace, settings, out)
        if args.command == "list":
            return _list(conn, args.json, out)
        if args.command == "delete":
            name = store.delete(conn, args.id)
            if name is None:
                print(f"no geofence with id {args.id}", file=out)
                return EXIT_MISSING
            print(f"deleted geofence {args.id} ({name})", file=out)
            return EXIT_OK
        if args.command == "recompute":
            events.recompute_all(conn)
            print("events forgotten; the next geofence_events run recomputes them", file=out)
            return EXIT_OK
        result = events.run_pass(conn, events.FenceParams.from_settings(settings), utcnow())
        print(json.dumps(result.__dict__), file=out)
        return EXIT_OK


def _load(conn: store.Conn, path: Path, replace: bool, settings: Settings, out: TextIO) -> int:
    try:
        body = path.read_bytes()
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror}", file=out)
        return EXIT_USAGE
    try:
        rows = parse_body(body, max_vertices=settings.geofence_max_vertices)
        written = store.load(conn, rows, replace=replace)
    except GeofenceError as exc:
        print(f"{path}: {exc}", file=out)
        return EXIT_USAGE
    for item in written:
        print(f"{item['status']:8} {item['id']:>6}  {item['name']}", file=out)
    print(f"{len(written)} geofences loaded from {path}", file=out)
    return EXIT_OK


def _list(conn: store.Conn, as_json: bool, out: TextIO) -> int:
    rows = store.listing(conn)
    if as_json:
        keys = ("id", "name", "kind", "cost_centre", "city", "vertices", "radius_m")
        print(json.dumps([dict(zip(keys, r, strict=True)) for r in rows]), file=out)
        return EXIT_OK
    for gid, name, kind, cc, city, vertices, radius in rows:
        shape = f"circle {radius:.0f} m" if radius else f"{vertices} vertices"
        print(f"{gid:>6}  {kind:13} {name}  [{cc or '-'} / {city or '-'}] {shape}", file=out)
    print(f"{len(rows)} geofences", file=out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: settings from the environment, one small pool for the run."""
    build_parser().parse_args(argv)
    settings = Settings()
    setup_logging(settings.log_level)
    return with_cli_pool(settings, "geofences", lambda pool: run(argv, settings, pool))


if __name__ == "__main__":
    sys.exit(main())
