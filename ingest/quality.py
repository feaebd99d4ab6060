"""The GPS quality filter (the idea of Traccar's `filter.*` settings), as pure functions.

Dropped (never stored, counted per reason in `tracksolid.ingestion_log.detail`):
- `zero_fix`       lat = 0 and lng = 0 (a device without a fix reports 0,0);
- `out_of_range`   |lat| > 90 or |lng| > 180;
- `future_time`    gps_time more than GPS_FILTER_MAX_FUTURE_S (24 h) after now.
Parse failures (`missing_coordinates`, `bad_time`, `missing_imei`) are counted the same way.

Flagged (stored, `quality_flag = 'implausible_jump'`, `implied_speed_kmh` set):
- the distance from the device's previous fix, divided by the time between them, exceeds
  GPS_FILTER_MAX_SPEED_KMH (250 km/h) and the jump is longer than MIN_JUMP_M (so GPS jitter
  between two fixes a second apart is not flagged).
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


@dataclass(frozen=True)
class QualityRules:
    """The filter's settings."""

    max_speed_kmh: float = 250.0
    max_future_s: int = 86_400


def drop_reason(row: PositionRow, now: datetime, rules: QualityRules) -> str | None:
    """Why this fix must be dropped, or None when it may be stored."""
    if row.lat == 0 and row.lng == 0:
        return "zero_fix"
    if not (-90 <= row.lat <= 90 and -180 <= row.lng <= 180):
        return "out_of_range"
    if row.gps_time > now + timedelta(seconds=rules.max_future_s):
        return "future_time"
    return None


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
                    row.quality_flag = "implausible_jump"
                    flagged += 1
                    # Judge the next fix against the last plausible one, not the glitch.
                    continue
        last_t, last_lat, last_lng = row.gps_time, row.lat, row.lng
    return flagged
