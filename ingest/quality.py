"""The GPS quality filter (the idea of Traccar's `filter.*` settings), as pure functions.

One filter for every source: the poller (ingest/jobs.py, ingest/writers.py) and the push
receiver (webhook/parse.py for the drops, webhook/store.py for the jump flag, which runs inside
its one-statement delivery as SQL built by `jump_sql` from the same constants) apply these
rules, and the same rule for the live marker (`moves_live_marker`).

Dropped (never stored; counted per reason in `tracksolid.ingestion_log.detail` by the poller,
kept as the item's error reason, prefixed with the same code, in `push_inbox` by the receiver):
- `zero_fix`       lat and lng both within 1e-6 degrees of 0 (a device without a fix reports 0,0);
- `out_of_range`   |lat| > 90 or |lng| > 180;
- `future_time`    gps_time more than GPS_FILTER_MAX_FUTURE_S (24 h) after now.
Parse failures (`missing_coordinates`, `bad_time`, `missing_imei`) are counted the same way.

Flagged (stored, `quality_flag = 'implausible_jump'`, `implied_speed_kmh` set):
- the distance from the device's previous fix, divided by the time between them, exceeds
  GPS_FILTER_MAX_SPEED_KMH (250 km/h) and the jump is longer than MIN_JUMP_M (so GPS jitter
  between two fixes a second apart is not flagged).

A flagged fix never moves the live marker (`tracksolid.live_positions`): the map keeps the
last plausible position until a plausible fix arrives.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from ingest.parse import PositionRow

MIN_JUMP_M = 500.0
EARTH_RADIUS_M = 6_371_008.8
ZERO_FIX_DEG = 1e-6  # |lat| and |lng| below this: the 0,0 "no fix" point (0.1 m of it)
JUMP_FLAG = "implausible_jump"


@dataclass(frozen=True)
class QualityRules:
    """The filter's settings."""

    max_speed_kmh: float = 250.0
    max_future_s: int = 86_400


def coordinate_drop_reason(lat: float, lng: float) -> str | None:
    """Why this coordinate is not a usable fix (`zero_fix`, `out_of_range`), or None."""
    if -ZERO_FIX_DEG < lat < ZERO_FIX_DEG and -ZERO_FIX_DEG < lng < ZERO_FIX_DEG:
        return "zero_fix"
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        return "out_of_range"
    return None


def fix_drop_reason(
    lat: float, lng: float, gps_time: datetime, now: datetime, rules: QualityRules
) -> str | None:
    """Why a fix must be dropped (`zero_fix`, `out_of_range`, `future_time`), or None."""
    reason = coordinate_drop_reason(lat, lng)
    if reason is None and gps_time > now + timedelta(seconds=rules.max_future_s):
        return "future_time"
    return reason


def drop_reason(row: PositionRow, now: datetime, rules: QualityRules) -> str | None:
    """Why this fix must be dropped, or None when it may be stored."""
    return fix_drop_reason(row.lat, row.lng, row.gps_time, now, rules)


def moves_live_marker(quality_flag: str | None) -> bool:
    """Whether a (newer) fix may move the vehicle's live marker: only a plausible one."""
    return quality_flag is None


def filter_rows(
    rows: Iterable[PositionRow], now: datetime, rules: QualityRules, drops: Counter[str]
) -> list[PositionRow]:
    """Keep the fixes that pass; count the others in `drops` by reason."""
    kept = []
    for row in rows:
        reason = drop_reason(row, now, rules)
        if reason is None:
            kept.append(row)
        else:
            drops[reason] += 1
    return kept


def flag_jumps(
    rows: list[PositionRow],
    previous: Mapping[str, tuple[datetime, float, float]],
    rules: QualityRules,
) -> int:
    """Set `implied_speed_kmh` / `quality_flag` on each fix against the fix before it.

    `rows` must be sorted by (imei, gps_time); `previous` gives, per IMEI, the stored fix
    just before the first row of that IMEI. Returns how many fixes were flagged.
    This runs for every stored fix, so it is written for speed: the distance is the
    equirectangular approximation (within 0.5 % of the great circle below ~500 km, plenty
    to tell a 250 km/h jump), computed inline.
    """
    flagged = 0
    to_rad = math.pi / 180.0
    limit = rules.max_speed_kmh
    imei: str | None = None
    last_t: datetime | None = None
    last_lat = last_lng = 0.0
    for row in rows:
        if row.imei != imei:
            imei = row.imei
            before = previous.get(imei)
            last_t = None
            if before is not None:
                last_t, last_lat, last_lng = before
        if last_t is not None:
            seconds = (row.gps_time - last_t).total_seconds()
            if seconds > 0:
                x = (row.lng - last_lng) * to_rad * math.cos((row.lat + last_lat) * 0.5 * to_rad)
                y = (row.lat - last_lat) * to_rad
                metres = EARTH_RADIUS_M * math.sqrt(x * x + y * y)
                speed = metres / seconds * 3.6
                row.implied_speed_kmh = speed
                if speed > limit and metres > MIN_JUMP_M:
                    row.quality_flag = JUMP_FLAG
                    flagged += 1
                    # Judge the next fix against the last plausible one, not the glitch.
                    continue
        last_t, last_lat, last_lng = row.gps_time, row.lat, row.lng
    return flagged


def jump_sql(fix: str, ref: str, max_speed: str) -> tuple[str, str]:
    """`flag_jumps`' test as SQL, for writers that flag inside their INSERT statement.

    `fix` and `ref` are table aliases with `gps_time`, `lat`, `lng` columns (the fix and the
    last plausible fix before it), `max_speed` a placeholder or literal (km/h). Returns the
    expressions (implied speed in km/h or NULL, "is a jump" boolean, never NULL). Same
    equirectangular distance and thresholds as the Python version
    (tests/test_push_quality.py compares the two).
    """
    seconds = f"extract(epoch FROM {fix}.gps_time - {ref}.gps_time)::float8"
    metres = (
        f"{EARTH_RADIUS_M!r} * sqrt(power(radians({fix}.lng - {ref}.lng)"
        f" * cos(radians(({fix}.lat + {ref}.lat) * 0.5)), 2)"
        f" + power(radians({fix}.lat - {ref}.lat), 2))"
    )
    speed = f"CASE WHEN {seconds} > 0 THEN {metres} / {seconds} * 3.6 END"
    is_jump = f"coalesce({speed} > {max_speed} AND {metres} > {MIN_JUMP_M!r}, false)"
    return speed, is_jump
