"""Constants shared by the simulator's parts, and `SimConfig`."""

from __future__ import annotations

from dataclasses import dataclass

DAY_S = 86_400
FIX_INTERVAL_S = 30
OBD_INTERVAL_S = 600
HB_INTERVAL_S = 180
WORK_START_S = 5 * 3600  # 08:00 EAT
WORK_END_S = 17 * 3600  # 20:00 EAT
ODO_EPOCH_DAY = 19_723  # 2024-01-01: the day each vehicle's base odometer refers to
TIME_FMT = "%Y-%m-%d %H:%M:%S"
ISO_FMT = "%Y-%m-%dT%H:%M:%SZ"
PUSH_BATCH = 50
MAX_IMEIS = 100
SHIFTS = 4  # round-the-clock mode: shifts, each starting DAY_S // SHIFTS after the previous


@dataclass
class SimConfig:
    """Everything the simulator is built from: fleet size, credentials, faults, push target."""

    devices: int = 50
    accounts: int = 3
    seed: int = 1
    app_key: str = "demo-app-key"
    app_secret: str = "demo-app-secret"  # noqa: S105 - demo credential of a simulator
    user_id: str = "fireside"
    user_pwd: str = "demo-password"  # noqa: S105 - demo credential of a simulator
    token_ttl_max: int = 7200
    fail_1006: float = 0.0
    fail_5xx: float = 0.0
    slow_share: float = 0.0
    slow_ms: int = 1500
    malformed: float = 0.0
    push_url: str | None = None
    push_token: str | None = None
    push_interval_s: float = 10.0
    push_openapi_path: str = "/push"
    # IMEIs whose `jimi.device.track.mileage` answers no trips (their positions are normal):
    # the "empty trip report" scenario that derived trips fill (issue #15).
    empty_trip_report: frozenset[str] = frozenset()
    # Demo mode (`--round-the-clock`): the fleet works four staggered 12-hour shifts (device
    # i's day starts (i % 4) * 6 h later) with twice the trips, so vehicles drive, stop and
    # raise alarms at any hour of a demo. Off by default: the plans stay those of the seeds.
    round_the_clock: bool = False
