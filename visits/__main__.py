"""`python -m visits refresh [--days N]`: recompute ticket visits once (see visits/__init__)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from ts_shared import Settings, describe_dsn, setup_logging
from visits.refresh import recent_window, refresh_visits


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visits", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("refresh", help="recompute the visits of recently active tickets")
    run.add_argument(
        "--days", type=int, default=None, help="tickets active this many days back "
        "(default VISIT_RECOMPUTE_DAYS)"
    )  # fmt: skip
    send = sub.add_parser(
        "dispatch", help="demo: make the simulator drive a vehicle to a ticket's site"
    )
    send.add_argument("ticket_id")
    send.add_argument("--sim", default="http://127.0.0.1:8088", help="jimi_sim base URL")
    send.add_argument("--imei", help="the vehicle (default: the nearest live one)")
    send.add_argument("--dwell-min", type=int, default=15, help="minutes on site (default 15)")
    args = parser.parse_args(argv)
    settings = settings or Settings()
    setup_logging(settings.log_level)
    if args.command == "dispatch":
        return dispatch(settings, args.sim, args.ticket_id, args.imei, args.dwell_min)
    now = datetime.now(UTC)
    since, until = recent_window(now, settings)
    if args.days is not None:
        if not 1 <= args.days <= 3660:
            parser.error("--days must be between 1 and 3660")
        since = now - timedelta(days=args.days)
    try:
        with psycopg.connect(settings.dsn()) as conn:
            result = refresh_visits(conn, settings, since, until)
    except psycopg.Error as exc:
        sys.stderr.write(f"visits: {describe_dsn(settings.dsn())}: {exc}\n")
        return 1
    sys.stdout.write(
        f"recomputed {result.tickets} tickets active since {since:%Y-%m-%d %H:%M} UTC:"
        f" {result.visits} visits\n"
    )
    return 0


def dispatch(settings: Settings, sim: str, ticket_id: str, imei: str | None, dwell: int) -> int:
    """Ask the simulator (`POST /_sim/dispatch`) to send a vehicle to the ticket's point; the
    worker then polls the errand like any drive, and the next `ticket_visits` run shows it."""
    with psycopg.connect(settings.dsn()) as conn:
        row = conn.execute(
            "SELECT latitude, longitude FROM tickets.inc WHERE ticket_id = %s", (ticket_id,)
        ).fetchone()
        if row is None or row[0] is None:
            sys.stderr.write(f"visits: ticket {ticket_id!r} not found or not located\n")
            return 1
        if imei is None:
            near = conn.execute(
                "SELECT imei FROM tracksolid.live_positions"
                " ORDER BY geom <-> ST_SetSRID(ST_MakePoint(%s, %s), 4326) LIMIT 1",
                (row[1], row[0]),
            ).fetchone()
            if near is None:
                sys.stderr.write("visits: no live position yet (is the worker polling?)\n")
                return 1
            imei = str(near[0])
    body = {"imei": imei, "lat": row[0], "lng": row[1], "dwell_s": dwell * 60}
    answer = httpx.post(f"{sim.rstrip('/')}/_sim/dispatch", json=body, timeout=10)
    if answer.status_code != 200:
        sys.stderr.write(f"visits: simulator answered {answer.status_code}: {answer.text}\n")
        return 1
    when = answer.json()
    arrive = datetime.fromtimestamp(when["arrive"], UTC)
    leave = datetime.fromtimestamp(when["leave"], UTC)
    sys.stdout.write(
        f"{imei} drives to {ticket_id}: arrives {arrive:%H:%M:%S} UTC,"
        f" leaves {leave:%H:%M:%S} UTC\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
