"""Trip speeds and trips/stops derived from positions, in set-based SQL.

One incremental pass (`run_pass`), each step one statement over every vehicle at once:

1. **Dirty windows** — positions received since the watermark (`received_at`, database
   time, minus `WATERMARK_MARGIN` so a transaction still open at the last run is not
   missed), grouped per (IMEI, UTC day): their [first, last] fix time. Only fixes within
   TRIP_DERIVE_HORIZON_DAYS count (older chunks are not scanned).
2. **Derivation** of each dirty (IMEI, day), one transaction per day: the day's trips are
   recomputed from the plausible fixes (`quality_flag IS NULL`) of [day - 12 h, day + 36 h):
   a fix is *moving* when its speed is at least TRIP_MOVING_SPEED_KMH and the ignition is not
   reported off; consecutive moving fixes form one trip unless, between them, the vehicle
   stood still (non-moving fixes) for TRIP_MIN_STOP_S or no fix came for TRIP_STOP_GAP_S;
   a trip shorter than TRIP_MIN_DURATION_S or TRIP_MIN_DISTANCE_M is dropped. A trip belongs
   to the UTC day of its first moving fix. Stops are the gaps between consecutive derived
   trips of at least TRIP_MIN_STOP_S.
3. **Gap fills** — a derived trip goes into `tracksolid.trips` as `source = 'derived'` when no
   API trip overlaps it, its start was observed (a fix precedes it: not the edge of the data)
   and it ended TRIP_FILL_DELAY_S ago (the API's report comes first); fills an API trip now
   overlaps, or the derivation no longer finds, are removed. (An API trip written between two
   passes removes the fills it overlaps at once: trigger of migration 0104.)
4. **Speeds** of every trip (API and derived) whose window changed or overlaps a dirty
   window: max, time-weighted mean and the share of time above TRIP_OVERSPEED_KMH from the
   plausible fixes in [start_time, end_time]; fewer than TRIP_SPEED_MIN_FIXES fixes → NULL
   and `speed_note = 'too_few_fixes'`. The API's own max/avg take precedence (trigger).
5. The watermark moves to the pass's start, in the transaction of the last step.
"""

from __future__ import annotations

import time as time_module
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg

from ts_shared import Settings

Conn = psycopg.Connection[Any]

WATERMARK_MARGIN = timedelta(minutes=10)  # re-read this much before the watermark
DAY_PAD_BEFORE = timedelta(hours=12)  # context read before a derived day
DAY_PAD_AFTER = timedelta(hours=12)  # a trip may run this far past midnight
SPEED_HOLD_CAP_S = 300.0  # a fix's speed stands for at most 5 min (then: a data gap)
# Sorts of a day's fixes (~500 k rows at 1,000 vehicles) stay in memory instead of spilling.
DERIVE_WORK_MEM = "64MB"
EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class TripParams:
    """The algorithm's parameters (Settings `TRIP_*`, docs/configuration.md)."""

    overspeed_kmh: float = 80.0
    speed_min_fixes: int = 3
    moving_speed_kmh: float = 5.0
    min_distance_m: float = 200.0
    min_duration_s: int = 180
    min_stop_s: int = 300
    stop_gap_s: int = 3600
    fill_delay_s: int = 3600
    horizon_days: int = 7

    @classmethod
    def from_settings(cls, s: Settings) -> TripParams:
        """The parameters a deployment configured."""
        return cls(
            overspeed_kmh=s.trip_overspeed_kmh,
            speed_min_fixes=s.trip_speed_min_fixes,
            moving_speed_kmh=s.trip_moving_speed_kmh,
            min_distance_m=s.trip_min_distance_m,
            min_duration_s=s.trip_min_duration_s,
            min_stop_s=s.trip_min_stop_s,
            stop_gap_s=s.trip_stop_gap_s,
            fill_delay_s=s.trip_fill_delay_s,
            horizon_days=s.trip_derive_horizon_days,
        )


@dataclass
class PassResult:
    """What one pass did (the job's ingestion_log detail)."""

    dirty_vehicle_days: int = 0
    days: list[date] = field(default_factory=list)
    derived_trips: int = 0
    derived_stops: int = 0
    fills_written: int = 0
    fills_removed: int = 0
    speeds: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # per step: dirty, derive, ...


# ── 1. dirty windows ─────────────────────────────────────────────────────────

DIRTY_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS trip_dirty (
    imei text NOT NULL, day date NOT NULL, lo timestamptz NOT NULL, hi timestamptz NOT NULL
)"""

DIRTY_SQL = """
INSERT INTO trip_dirty (imei, day, lo, hi)
SELECT p.imei, (p.gps_time AT TIME ZONE 'UTC')::date, min(p.gps_time), max(p.gps_time)
FROM tracksolid.position_history p
WHERE p.received_at > %(since)s AND p.gps_time >= %(horizon)s
GROUP BY 1, 2
"""


def mark_dirty(conn: Conn, since: datetime | None, horizon: datetime) -> int:
    """Fill the session's `trip_dirty` with the (IMEI, day) windows of fixes received after
    `since` (everything within the horizon when None); returns how many."""
    conn.execute(DIRTY_TABLE)
    conn.execute("TRUNCATE trip_dirty")
    args = {"since": since or datetime.min.replace(tzinfo=UTC), "horizon": horizon}
    dirty = conn.execute(DIRTY_SQL, args).rowcount
    conn.execute("ANALYZE trip_dirty")  # row estimates for the joins below (a temp table has none)
    return dirty


# ── 2. derivation ────────────────────────────────────────────────────────────


def _step(lat1: str, lng1: str, lat2: str, lng2: str) -> str:
    """SQL for the metres between two fixes (equirectangular, as ingest/quality.py)."""
    return (
        f"{EARTH_RADIUS_M} * sqrt(power(radians({lng2} - {lng1})"
        f" * cos(radians(({lat2} + {lat1}) / 2)), 2) + power(radians({lat2} - {lat1}), 2))"
    )


# Fixes → trips, with two window passes over each IMEI's fixes in time order:
# 1. per fix: the previous fix, and the last moving fix before it (a running max). A moving
#    fix *starts* a trip when there was no moving fix before, or none for stop_gap, or the
#    vehicle stood still (the fix before it is not moving) since one min_stop ago. A
#    non-moving fix right after a moving one, within stop_gap, is an *arrival* (the vehicle
#    came to rest there). A fix's step is the distance from the fix before it, counted for a
#    moving fix that does not start a trip and for an arrival.
# 2. trip_no = running count of starts; each trip is one group: from its first moving fix to
#    its last arrival or moving fix, whichever is later.
DERIVE_TRIPS_SQL = f"""
WITH w AS (
    SELECT k.imei,
           EXISTS (SELECT 1 FROM tracksolid.position_history b
                   WHERE b.imei = k.imei AND b.gps_time < %(lo)s) AS has_before
    FROM (SELECT DISTINCT imei FROM trip_dirty WHERE day = %(day)s) k
),
f AS (
    SELECT p.imei, p.gps_time, p.lat, p.lng,
           coalesce(p.speed_kmh, p.implied_speed_kmh, 0) >= %(moving)s
               AND p.acc_on IS DISTINCT FROM false AS moving
    FROM w JOIN tracksolid.position_history p
      ON p.imei = w.imei AND p.gps_time >= %(lo)s AND p.gps_time < %(hi)s
    WHERE p.quality_flag IS NULL
),
c AS (
    SELECT f.*,
           lag(f.gps_time) OVER o AS prev_t, lag(f.moving) OVER o AS prev_moving,
           lag(f.lat) OVER o AS plat, lag(f.lng) OVER o AS plng,
           max(f.gps_time) FILTER (WHERE f.moving)
               OVER (o ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS last_moving
    FROM f WINDOW o AS (PARTITION BY f.imei ORDER BY f.gps_time)
),
s AS (
    SELECT c.imei, c.gps_time, c.lat, c.lng, c.moving, c.prev_t, c.plat, c.plng,
           c.moving AND (c.last_moving IS NULL OR c.gps_time - c.last_moving >= %(gap)s
                         OR (NOT c.prev_moving AND c.gps_time - c.last_moving >= %(min_stop)s))
               AS starts,
           NOT c.moving AND c.prev_moving AND c.gps_time - c.prev_t < %(gap)s AS arrives
    FROM c
),
g AS (
    SELECT s.*, sum(s.starts::int) OVER o AS trip_no,
           CASE WHEN (s.moving AND NOT s.starts) OR s.arrives
                THEN {_step("s.plat", "s.plng", "s.lat", "s.lng")} END AS step_m
    FROM s WINDOW o AS (PARTITION BY s.imei ORDER BY s.gps_time)
),
t AS (
    SELECT g.imei, g.trip_no,
           min(g.gps_time) FILTER (WHERE g.starts) AS start_time,
           max(g.gps_time) FILTER (WHERE g.moving OR g.arrives) AS end_time,
           max(g.lat) FILTER (WHERE g.starts) AS start_lat,
           max(g.lng) FILTER (WHERE g.starts) AS start_lng,
           max(ARRAY[extract(epoch FROM g.gps_time)::float8, g.lat, g.lng])
               FILTER (WHERE g.moving OR g.arrives) AS last_fix,
           coalesce(sum(g.step_m), 0) AS dist_m,
           count(*) FILTER (WHERE g.moving) AS fixes,
           bool_or(g.starts AND g.prev_t IS NOT NULL) AS prev_seen
    FROM g WHERE g.trip_no > 0
    GROUP BY g.imei, g.trip_no
)
INSERT INTO trip_new
    (imei, start_time, end_time, start_lat, start_lng, end_lat, end_lng, distance_km,
     driving_time_s, fixes, start_observed)
SELECT t.imei, t.start_time, t.end_time, t.start_lat, t.start_lng, t.last_fix[2],
       t.last_fix[3], round((t.dist_m / 1000)::numeric, 3),
       extract(epoch FROM t.end_time - t.start_time)::integer, t.fixes,
       t.prev_seen OR w.has_before
FROM t JOIN w USING (imei)
WHERE t.start_time >= %(d0)s AND t.start_time < %(d1)s
  AND t.end_time - t.start_time >= %(min_duration)s
  AND t.dist_m >= %(min_distance)s
"""

# The day's new results are staged (trip_new / stop_new, dropped at commit, so always with
# the tables' current columns), then merged: rows that vanished are deleted, new or changed
# ones upserted, unchanged ones left alone (a pass over unchanged data writes nothing).
STAGE_SQL = """
CREATE TEMP TABLE trip_new (LIKE tracksolid.derived_trips INCLUDING DEFAULTS) ON COMMIT DROP;
CREATE TEMP TABLE stop_new (LIKE tracksolid.derived_stops INCLUDING DEFAULTS) ON COMMIT DROP
"""

MERGE_TRIPS_SQL = (
    """
DELETE FROM tracksolid.derived_trips d
WHERE d.start_time >= %(d0)s AND d.start_time < %(d1)s
  AND d.imei IN (SELECT imei FROM trip_dirty WHERE day = %(day)s)
  AND NOT EXISTS (SELECT 1 FROM trip_new n WHERE n.imei = d.imei AND n.start_time = d.start_time)
""",
    """
INSERT INTO tracksolid.derived_trips AS d SELECT * FROM trip_new
ON CONFLICT (imei, start_time) DO UPDATE
    SET end_time = EXCLUDED.end_time, start_lat = EXCLUDED.start_lat,
        start_lng = EXCLUDED.start_lng, end_lat = EXCLUDED.end_lat, end_lng = EXCLUDED.end_lng,
        distance_km = EXCLUDED.distance_km, driving_time_s = EXCLUDED.driving_time_s,
        fixes = EXCLUDED.fixes, start_observed = EXCLUDED.start_observed, derived_at = now()
    WHERE (d.end_time, d.distance_km, d.fixes, d.start_observed, d.end_lat, d.end_lng)
          IS DISTINCT FROM (EXCLUDED.end_time, EXCLUDED.distance_km, EXCLUDED.fixes,
                            EXCLUDED.start_observed, EXCLUDED.end_lat, EXCLUDED.end_lng)
""",
)

# A stop belongs to the day of its end (the start of the trip after it), so it is derived
# with that trip; the day after is redone too, its first stop may start in this day.
DERIVE_STOPS_SQL = """
INSERT INTO stop_new (imei, start_time, end_time, duration_s, acc_on, lat, lng)
SELECT n.imei, p.end_time, n.start_time,
       extract(epoch FROM n.start_time - p.end_time)::integer, a.acc_on, p.end_lat, p.end_lng
FROM tracksolid.derived_trips n
CROSS JOIN LATERAL (
    SELECT b.end_time, b.end_lat, b.end_lng FROM tracksolid.derived_trips b
    WHERE b.imei = n.imei AND b.start_time < n.start_time
    ORDER BY b.start_time DESC LIMIT 1
) p
LEFT JOIN LATERAL (
    SELECT bool_and(x.acc_on) AS acc_on FROM tracksolid.position_history x
    WHERE x.imei = n.imei AND x.gps_time > p.end_time AND x.gps_time < n.start_time
      AND x.quality_flag IS NULL
) a ON true
WHERE n.start_time >= %(d0)s AND n.start_time < %(d1)s + interval '1 day'
  AND n.imei IN (SELECT imei FROM trip_dirty WHERE day = %(day)s)
  AND n.start_time - p.end_time >= %(min_stop)s
"""

MERGE_STOPS_SQL = (
    """
DELETE FROM tracksolid.derived_stops s
WHERE s.end_time >= %(d0)s AND s.end_time < %(d1)s + interval '1 day'
  AND s.imei IN (SELECT imei FROM trip_dirty WHERE day = %(day)s)
  AND NOT EXISTS (SELECT 1 FROM stop_new n WHERE n.imei = s.imei AND n.start_time = s.start_time)
""",
    """
INSERT INTO tracksolid.derived_stops AS s SELECT * FROM stop_new
ON CONFLICT (imei, start_time) DO UPDATE
    SET end_time = EXCLUDED.end_time, duration_s = EXCLUDED.duration_s,
        acc_on = EXCLUDED.acc_on, lat = EXCLUDED.lat, lng = EXCLUDED.lng, derived_at = now()
    WHERE (s.end_time, s.acc_on, s.lat, s.lng)
          IS DISTINCT FROM (EXCLUDED.end_time, EXCLUDED.acc_on, EXCLUDED.lat, EXCLUDED.lng)
""",
)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[00:00, 24:00) UTC of a day."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def derive_day(conn: Conn, day: date, p: TripParams) -> tuple[int, int]:
    """Re-derive the trips and stops of one UTC day for every IMEI `trip_dirty` names for
    it (inside the caller's transaction); returns (trips, stops) added, changed or removed."""
    d0, d1 = day_bounds(day)
    args = {
        "day": day, "d0": d0, "d1": d1,
        "lo": d0 - DAY_PAD_BEFORE, "hi": d1 + DAY_PAD_AFTER,
        "moving": p.moving_speed_kmh, "gap": timedelta(seconds=p.stop_gap_s),
        "min_stop": timedelta(seconds=p.min_stop_s),
        "min_duration": timedelta(seconds=p.min_duration_s), "min_distance": p.min_distance_m,
    }  # fmt: skip
    conn.execute(STAGE_SQL)
    conn.execute(DERIVE_TRIPS_SQL, args)
    trips = _merge(conn, MERGE_TRIPS_SQL, args)
    conn.execute(DERIVE_STOPS_SQL, args)
    stops = _merge(conn, MERGE_STOPS_SQL, args)
    return trips, stops


def _merge(conn: Conn, statements: tuple[str, str], args: dict[str, Any]) -> int:
    """Delete the vanished rows, upsert the new/changed ones; returns how many changed."""
    removed = conn.execute(statements[0], args).rowcount
    return removed + conn.execute(statements[1], args).rowcount


# ── 3. gap fills ─────────────────────────────────────────────────────────────

# Overlap with an API trip: [start, end] ranges intersect (an API trip without an end counts
# as its start instant). API trips are assumed shorter than 2 days (index range bound).
API_OVERLAP = """
EXISTS (SELECT 1 FROM tracksolid.trips a
        WHERE a.imei = {d}.imei AND a.source <> 'derived'
          AND a.start_time > {d}.start_time - interval '2 days'
          AND a.start_time <= {d}.end_time
          AND coalesce(a.end_time, a.start_time) >= {d}.start_time)
"""

REMOVE_FILLS_SQL = f"""
DELETE FROM tracksolid.trips t
WHERE t.source = 'derived' AND t.start_time >= %(horizon)s
  AND (NOT EXISTS (SELECT 1 FROM tracksolid.derived_trips d
                   WHERE d.imei = t.imei AND d.start_time = t.start_time AND d.start_observed)
       OR {API_OVERLAP.format(d="t")})
"""

WRITE_FILLS_SQL = f"""
INSERT INTO tracksolid.trips AS t
    (imei, start_time, end_time, start_lat, start_lng, end_lat, end_lng, distance_km,
     driving_time_s, source, raw)
SELECT d.imei, d.start_time, d.end_time, d.start_lat, d.start_lng, d.end_lat, d.end_lng,
       d.distance_km, d.driving_time_s, 'derived',
       jsonb_build_object('derived_from', 'position_history', 'fixes', d.fixes)
FROM tracksolid.derived_trips d
WHERE d.start_time >= %(horizon)s AND d.start_observed
  AND d.end_time <= %(settled)s
  AND NOT {API_OVERLAP.format(d="d")}
ON CONFLICT (imei, start_time) DO UPDATE
    SET end_time = EXCLUDED.end_time, end_lat = EXCLUDED.end_lat, end_lng = EXCLUDED.end_lng,
        distance_km = EXCLUDED.distance_km, driving_time_s = EXCLUDED.driving_time_s,
        raw = EXCLUDED.raw, updated_at = now()
    WHERE t.source = 'derived'
      AND (t.end_time, t.distance_km) IS DISTINCT FROM (EXCLUDED.end_time, EXCLUDED.distance_km)
"""


def sync_fills(conn: Conn, p: TripParams, now: datetime) -> tuple[int, int]:
    """Make the `source = 'derived'` rows of `trips` within the horizon match the derived
    trips the API lacks; returns (written, removed)."""
    args = {"horizon": now - timedelta(days=p.horizon_days),
            "settled": now - timedelta(seconds=p.fill_delay_s)}  # fmt: skip
    removed = conn.execute(REMOVE_FILLS_SQL, args).rowcount
    written = conn.execute(WRITE_FILLS_SQL, args).rowcount
    return written, removed


# ── 4. speeds ────────────────────────────────────────────────────────────────

# Each fix's speed stands until the next fix or the trip's end (at most SPEED_HOLD_CAP_S):
# the mean and the over-threshold share are time-weighted, so a burst of fixes at a red
# light weighs no more than the minutes of cruising between two sparse fixes.
SPEEDS_SQL = f"""
WITH todo AS (
    SELECT t.trip_id, t.imei, t.start_time, t.end_time
    FROM tracksolid.trips t
    WHERE t.start_time >= %(horizon)s
      AND (t.speed_window IS DISTINCT FROM tstzrange(t.start_time, t.end_time, '[]')
           OR EXISTS (SELECT 1 FROM trip_dirty d
                      WHERE d.imei = t.imei AND d.lo <= coalesce(t.end_time, 'infinity')
                        AND d.hi >= t.start_time))
),
fx AS (
    SELECT todo.trip_id, p.speed_kmh::float8 AS v,
           least(extract(epoch FROM coalesce(lead(p.gps_time) OVER o, todo.end_time)
                                    - p.gps_time)::float8, {SPEED_HOLD_CAP_S}) AS hold_s
    FROM todo JOIN tracksolid.position_history p
      ON p.imei = todo.imei AND p.gps_time >= todo.start_time AND p.gps_time <= todo.end_time
    WHERE p.quality_flag IS NULL AND p.speed_kmh IS NOT NULL
    WINDOW o AS (PARTITION BY todo.trip_id ORDER BY p.gps_time)
),
agg AS (
    SELECT fx.trip_id, count(*) AS n, max(fx.v) AS vmax,
           CASE WHEN sum(fx.hold_s) > 0 THEN sum(fx.v * fx.hold_s) / sum(fx.hold_s)
                ELSE avg(fx.v) END AS vavg,
           CASE WHEN sum(fx.hold_s) > 0
                THEN coalesce(sum(fx.hold_s) FILTER (WHERE fx.v > %(over)s), 0)
                     / sum(fx.hold_s) END AS share
    FROM fx GROUP BY fx.trip_id
),
res AS (
    SELECT todo.trip_id, coalesce(agg.n, 0) AS n, agg.vmax, agg.vavg, agg.share,
           CASE WHEN todo.end_time IS NULL THEN 'no_end_time'
                WHEN coalesce(agg.n, 0) < %(min_fixes)s THEN 'too_few_fixes'
                ELSE 'ok' END AS note
    FROM todo LEFT JOIN agg USING (trip_id)
)
UPDATE tracksolid.trips t
SET speed_fixes = res.n,
    speed_note = res.note,
    gps_max_speed_kmh = CASE WHEN res.note = 'ok' THEN round(res.vmax::numeric, 1) END,
    gps_avg_speed_kmh = CASE WHEN res.note = 'ok' THEN round(res.vavg::numeric, 1) END,
    overspeed_share = CASE WHEN res.note = 'ok' THEN round(res.share::numeric, 4) END,
    speed_window = tstzrange(t.start_time, t.end_time, '[]'),
    speeds_at = now()
FROM res
WHERE t.trip_id = res.trip_id
"""


def compute_speeds(conn: Conn, p: TripParams, now: datetime) -> int:
    """Recompute the speeds of trips (within the horizon) whose window changed or overlaps a
    dirty window of this pass; returns how many trips were recomputed."""
    args = {"horizon": now - timedelta(days=p.horizon_days), "over": p.overspeed_kmh,
            "min_fixes": p.speed_min_fixes}  # fmt: skip
    return conn.execute(SPEEDS_SQL, args).rowcount


# ── the pass ─────────────────────────────────────────────────────────────────


def read_watermark(conn: Conn) -> datetime | None:
    """Up to when (received_at) the previous pass read positions; None: never ran."""
    row = conn.execute("SELECT received_until FROM tracksolid.trip_derive_state").fetchone()
    return row[0] if row else None


def write_watermark(conn: Conn, until: datetime) -> None:
    """Move the watermark (in the caller's transaction)."""
    conn.execute(
        "INSERT INTO tracksolid.trip_derive_state (singleton, received_until) VALUES (true, %s)"
        " ON CONFLICT (singleton) DO UPDATE SET received_until = EXCLUDED.received_until,"
        " updated_at = now()",
        (until,),
    )


def run_pass(conn: Conn, p: TripParams, now: datetime) -> PassResult:
    """One incremental pass (module doc). `now` is the worker's clock (horizon, fill delay);
    the watermark is database time, as `received_at` is. One transaction per day and one
    for the rest; a pass that fails midway leaves the watermark, so the next redoes it."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        return _run_pass(conn, p, now)
    finally:
        conn.autocommit = autocommit


def _run_pass(conn: Conn, p: TripParams, now: datetime) -> PassResult:
    result = PassResult()
    clock = _Stopwatch(result.seconds)
    since = read_watermark(conn)
    horizon = now - timedelta(days=p.horizon_days)
    with conn.transaction():
        _tune(conn)
        started = conn.execute("SELECT now()").fetchone()
        assert started is not None
        result.dirty_vehicle_days = mark_dirty(
            conn, since - WATERMARK_MARGIN if since else None, horizon
        )
    result.days = [r[0] for r in conn.execute(
        "SELECT DISTINCT day FROM trip_dirty ORDER BY day").fetchall()]  # fmt: skip
    clock.lap("dirty")
    for day in result.days:
        with conn.transaction():
            _tune(conn)
            trips, stops = derive_day(conn, day, p)
        result.derived_trips += trips
        result.derived_stops += stops
    clock.lap("derive")
    with conn.transaction():
        _tune(conn)
        result.fills_written, result.fills_removed = sync_fills(conn, p, now)
        clock.lap("fills")
        result.speeds = compute_speeds(conn, p, now)
        write_watermark(conn, started[0])
    clock.lap("speeds")
    return result


class _Stopwatch:
    """Seconds per step, into a dict."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into = into
        self.last = time_module.perf_counter()

    def lap(self, name: str) -> None:
        now = time_module.perf_counter()
        self.into[name] = round(now - self.last, 3)
        self.last = now


def _tune(conn: Conn) -> None:
    """For the current transaction only (SET LOCAL): more work_mem, and no JIT — the
    planner's row estimates for these CTEs are high, and compiling the plan cost more than
    running it (1.1 s of 1.2 s for an incremental pass, measured)."""
    conn.execute("SELECT set_config('work_mem', %s, true), set_config('jit', 'off', true)",
                 (DERIVE_WORK_MEM,))  # fmt: skip
