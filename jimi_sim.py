"""Simulator of the Tracksolid Pro / JIMI Open Platform API (polled methods and pushes).

Serves `POST /route/rest` as the vendor contract (jimi-open-api.md) describes
(signed form requests, OAuth tokens, string numbers, the vendor's quirks) over a
deterministic fleet model: vehicles in Nairobi, Mombasa and Kampala drive along real-ish
road polylines on a schedule derived from hash(seed, imei, day). Any instant of the last
months is computable in O(trips per day), so 10,000 devices are cheap.

This file is the entry point (CLI) and the public API; the parts live in the `sim/`
package: model (roads, devices, day plans) · protocol (signing, methods, faults) ·
HTTP server · push sender.

    python jimi_sim.py --port 8088 --devices 50 --accounts 3 --seed 1
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from sim.config import SimConfig
from sim.model import Fleet
from sim.protocol import Faults, JimiApi, SimRequest, sign_params
from sim.push import PushSender, build_push_deliveries
from sim.records import SimAlarm, SimDevice, SimEvent, SimFix, SimObd, SimStop, SimTrip
from sim.server import SimServer

log = logging.getLogger(__name__)

__all__ = [
    "Faults",
    "Fleet",
    "JimiApi",
    "PushSender",
    "SimAlarm",
    "SimConfig",
    "SimDevice",
    "SimEvent",
    "SimFix",
    "SimObd",
    "SimRequest",
    "SimServer",
    "SimStop",
    "SimTrip",
    "build_push_deliveries",
    "main",
    "sign_params",
]


# ═════════════════════════════════════════════════════════════════════════════
# CLI
# ═════════════════════════════════════════════════════════════════════════════


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    d = SimConfig()
    p = argparse.ArgumentParser(description="Tracksolid Pro / JIMI Open Platform API simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8088)
    p.add_argument("--devices", type=int, default=d.devices)
    p.add_argument("--accounts", type=int, default=d.accounts)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--app-key", default=d.app_key)
    p.add_argument("--app-secret", default=d.app_secret)
    p.add_argument("--user-id", default=d.user_id)
    p.add_argument("--user-pwd", default=d.user_pwd)
    p.add_argument("--token-ttl-max", type=int, default=d.token_ttl_max)
    p.add_argument("--fail-1006", type=float, default=d.fail_1006)
    p.add_argument("--fail-5xx", type=float, default=d.fail_5xx)
    p.add_argument("--slow-share", type=float, default=d.slow_share)
    p.add_argument("--slow-ms", type=int, default=d.slow_ms)
    p.add_argument("--malformed", type=float, default=d.malformed)
    p.add_argument("--push-url", default=None)
    p.add_argument("--push-token", default=None)
    p.add_argument("--push-interval", type=float, default=d.push_interval_s)
    p.add_argument("--push-openapi-path", default=d.push_openapi_path)
    p.add_argument("--empty-trip-report", default="", metavar="IMEI,...",
                   help="devices whose trip report (track.mileage) is always empty")  # fmt: skip
    p.add_argument("--round-the-clock", action="store_true",
                   help="demo: staggered shifts, twice the trips: driving at any hour")  # fmt: skip
    p.add_argument("--s3-feed", type=float, default=0.0, metavar="SECONDS",
                   help="also write INC tickets and fuel fills to S3 every SECONDS (endpoint,"
                        " keys and buckets from the importers' settings: RUSTFS_ENDPOINT,"
                        " TICKETS_BUCKET, FUEL_BUCKET, ...)")  # fmt: skip
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def _start_s3_feed(fleet: Fleet, interval_s: float, stop: threading.Event) -> threading.Thread:
    """Run `sim.s3feed.S3Feed` in a thread, configured as the importers are (same settings,
    so both ends of the feed agree on endpoint, keys and buckets)."""
    from sim.s3feed import S3Feed  # noqa: PLC0415 - only with --s3-feed (boto3, settings)
    from ts_shared import Settings, make_s3_client  # noqa: PLC0415

    settings = Settings()
    feed = S3Feed(
        fleet,
        make_s3_client(settings),
        tickets_bucket=settings.tickets_bucket,
        tickets_prefix=settings.tickets_prefix,
        fuel_bucket=settings.fuel_bucket,
        fuel_prefix=settings.fuel_prefix,
    )
    log.info("s3 feed to %s every %.0f s", settings.rustfs_endpoint, interval_s)
    thread = threading.Thread(
        target=feed.run, args=(stop, max(1.0, interval_s)), name="s3-feed", daemon=True
    )
    thread.start()
    return thread


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until Ctrl-C / SIGTERM."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request URL at INFO, and the push URL may carry `?token=`.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = SimConfig(
        devices=args.devices,
        accounts=args.accounts,
        seed=args.seed,
        app_key=args.app_key,
        app_secret=args.app_secret,
        user_id=args.user_id,
        user_pwd=args.user_pwd,
        token_ttl_max=args.token_ttl_max,
        fail_1006=args.fail_1006,
        fail_5xx=args.fail_5xx,
        slow_share=args.slow_share,
        slow_ms=args.slow_ms,
        malformed=args.malformed,
        push_url=args.push_url,
        push_token=args.push_token,
        push_interval_s=args.push_interval,
        push_openapi_path=args.push_openapi_path,
        empty_trip_report=frozenset(filter(None, args.empty_trip_report.split(","))),
        round_the_clock=args.round_the_clock,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = SimServer(config, host=args.host, port=args.port).start()
    sys.stdout.write(f"jimi_sim listening on {server.url}\n")
    sys.stdout.flush()
    pusher: PushSender | None = None
    push_thread: threading.Thread | None = None
    if config.push_url:
        pusher = PushSender(config, server.fleet)
        push_thread = threading.Thread(
            target=pusher.run, args=(stop,), name="jimi-push", daemon=True
        )
        push_thread.start()
    feed_thread = _start_s3_feed(server.fleet, args.s3_feed, stop) if args.s3_feed > 0 else None
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        if feed_thread is not None:
            feed_thread.join(timeout=15)
        if push_thread is not None and pusher is not None:
            push_thread.join(timeout=15)
            pusher.close()
        log.info("jimi_sim stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
