"""Geofence enter/exit events and out-of-region episodes, set-based in PostGIS.

One incremental pass (`run_pass`), every step one statement over all vehicles at once:

1. **Dirty vehicles** — per IMEI, the earliest `gps_time` of the plausible fixes received
   since the watermark (`received_at`, database time, minus `WATERMARK_MARGIN`), within
   GEOFENCE_HORIZON_DAYS; that time minus `RESTART_PAD` is the IMEI's restart point `t0`.
2. **Undo** — the IMEI's events that were still open or ended after `t0` are deleted; each
   (IMEI, fence) is recomputed from the entry of its deleted event (else from `t0`), so a
   visit is always rebuilt whole and late fixes inside an old visit reshape it.
3. **Membership** — the plausible fixes from there on (`quality_flag IS NULL`), numbered in
   time order per IMEI, are tested against every fence (`ST_Intersects`, boundary counts as
   inside, GiST index) and grouped at once into runs of consecutive fixes inside each
   (IMEI, fence) — one row per run, so the work grows with the fixes, not fences x fixes. For the
   vehicle's *home* (fences of kind region/city_zone whose city or cost centre is the
   vehicle's), a fix is *away* when it is in none of them — the virtual fence 0.
4. **Hysteresis** — consecutive fixes with the same flag form a run; a run *counts* when it
   has GEOFENCE_MIN_FIXES fixes spanning GEOFENCE_MIN_SECONDS. The state (inside/outside,
   starting outside) changes only at a run that counts, so jitter across the boundary (runs
   that do not count) never opens or closes a visit. A visit starts at the first fix of the
   run that made the state inside, and ends at the first fix of the run that made it outside
   (NULL while inside); `fixes` counts the fixes inside during it.
5. New or reshaped fences (`events_computed_at IS NULL`) are computed over the whole horizon
   for every vehicle (and every home, when a region/city zone changed).
6. The watermark moves to the pass's start, in the same transaction.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from ts_shared import DURABLE_OPTIONS, Settings, connect_options

Conn = psycopg.Connection[Any]
log = logging.getLogger(__name__)

WATERMARK_MARGIN = timedelta(minutes=10)  # a transaction open at the last run is not missed
RESTART_PAD = timedelta(hours=6)  # context re-read before a vehicle's earliest new fix
HOME_KINDS = ("region", "city_zone")
WORK_MEM = "256MB"  # for this transaction only: ~500,000 fixes and their hits sort in memory


@dataclass(frozen=True)
class FenceParams:
    """The hysteresis and horizon (Settings `GEOFENCE_*`, docs/configuration.md)."""

    min_fixes: int = 3
    min_seconds: int = 60
    horizon_days: int = 7

    @classmethod
    def from_settings(cls, s: Settings) -> FenceParams:
        """The parameters a deployment configured."""
        return cls(s.geofence_min_fixes, s.geofence_min_seconds, s.geofence_horizon_days)


@dataclass
class PassResult:
    """What one pass did (the job's ingestion_log detail)."""

    dirty_vehicles: int = 0
    fences_backfilled: int = 0
    events: int = 0
    out_of_region: int = 0


# IMEIs in the "C" collation: the sorts and joins on them compare bytes, not locale rules.
# Each dirty vehicle gets a small integer `vid` for the pass: the per-fix tables carry it
# instead of the IMEI text, so their sorts and window partitions compare integers (IMEIs share
# long prefixes, which makes text comparisons slow), and the IMEI comes back at the writes.
_TEMP_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS gf_dirty (imei text COLLATE "C" PRIMARY KEY,
    t0 timestamptz NOT NULL, vid integer NOT NULL) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS gf_start (imei text COLLATE "C", fid bigint, start timestamptz)
    ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS gf_fix (vid integer, rn bigint, t timestamptz,
    lat double precision, lng double precision, prev_t timestamptz, next_t timestamptz)
    ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS gf_hit (vid integer, rn bigint, t timestamptz, fid bigint)
    ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS gf_in (vid integer, fid bigint, rn bigint, t timestamptz,
    prev_t timestamptz, next_t timestamptz) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS gf_run (vid integer, fid bigint, r0 bigint, r1 bigint,
    first_t timestamptz, last_t timestamptz, n bigint, before_t timestamptz, after_t timestamptz)
    ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS gf_result (vid integer, fid bigint, start_t timestamptz,
    end_t timestamptz, last_in timestamptz, n_in bigint) ON COMMIT DROP;
TRUNCATE gf_dirty, gf_start, gf_fix, gf_hit, gf_in, gf_run, gf_result
"""

DIRTY_SQL = """
INSERT INTO gf_dirty (imei, t0, vid)
SELECT p.imei, min(p.gps_time) - %(pad)s, row_number() OVER (ORDER BY p.imei)
FROM tracksolid.position_history p
WHERE p.received_at > %(since)s AND p.gps_time >= %(horizon)s AND p.quality_flag IS NULL
GROUP BY p.imei
"""

ALL_SQL = """
INSERT INTO gf_dirty (imei, t0, vid)
SELECT imei, %(horizon)s::timestamptz, row_number() OVER (ORDER BY imei)
FROM (SELECT DISTINCT p.imei FROM tracksolid.position_history p
      WHERE p.gps_time >= %(horizon)s AND p.quality_flag IS NULL) x
"""

UNDO_EVENTS_SQL = """
WITH del AS (
    DELETE FROM tracksolid.geofence_events e USING gf_dirty d
    WHERE e.imei = d.imei AND (%(fids)s::bigint[] IS NULL OR e.geofence_id = ANY(%(fids)s))
      AND (e.exited_at IS NULL OR e.exited_at > d.t0)
    RETURNING e.imei, e.geofence_id, least(e.entered_at, d.t0) AS start
)
INSERT INTO gf_start SELECT imei, geofence_id, start FROM del
"""

UNDO_HOME_SQL = """
WITH del AS (
    DELETE FROM tracksolid.out_of_region_events e USING gf_dirty d
    WHERE e.imei = d.imei AND (e.returned_at IS NULL OR e.returned_at > d.t0)
    RETURNING e.imei, least(e.left_at, d.t0) AS start
)
INSERT INTO gf_start SELECT imei, 0, start FROM del
"""

# Each vehicle's plausible fixes from its earliest restart point, numbered in time order, each
# with the times of the fixes before and after it (NULL after the vehicle's last fix) — so the
# outside runs between inside runs are known from the runs alone (VISITS_SQL).
FIXES_SQL = """
INSERT INTO gf_fix (vid, rn, t, lat, lng, prev_t, next_t)
SELECT d.vid, row_number() OVER w, p.gps_time, p.lat, p.lng,
       lag(p.gps_time) OVER w, lead(p.gps_time) OVER w
FROM (SELECT d.imei, d.vid, least(d.t0, min(s.start)) AS lo
      FROM gf_dirty d LEFT JOIN gf_start s USING (imei) GROUP BY d.imei, d.vid, d.t0) d
JOIN tracksolid.position_history p ON p.imei = d.imei AND p.gps_time >= d.lo
WHERE p.quality_flag IS NULL
WINDOW w AS (PARTITION BY d.vid ORDER BY p.gps_time)
"""

# Membership through the fences' grid index (tracksolid.geofence_cells, 0602): each fix's cell
# key at a cell level in use is joined to that level's cells by equality (a hash join: no
# spatial index on the fixes, no fence-by-fence probing); a fix in an `inside` cell is in the
# fence, one in a boundary cell is tested exactly against that cell's small `part` of the
# fence. One such join per level in use (`hits_sql`), the level a literal so that the key's
# cell size is folded into a constant. Same answer as ST_Intersects(fence, fix) (boundary
# counts as inside): tests/test_geofence_cells.py.
_CELL_HITS = """
    SELECT f.vid, c.geofence_id AS fid, f.rn, f.t, f.prev_t, f.next_t
    FROM gf_fix f
    JOIN tracksolid.geofence_cells c
      ON c.level = {level} AND c.cell = tracksolid.geofence_cell_key(f.lat, f.lng, {level})
    WHERE {fence_filter}
      AND (c.inside OR ST_Intersects(c.part, ST_SetSRID(ST_MakePoint(f.lng, f.lat), 4326)))
"""


_FENCES = "(%(fids)s::bigint[] IS NULL OR geofence_id = ANY(%(fids)s))"
_HOMES = "geofence_id IN (SELECT fid FROM home)"


def hits_sql(levels: list[int], fence_filter: str) -> str:
    """The membership rows for the cell `levels` in use (module comment above); an empty
    list gives no rows."""
    parts = [_CELL_HITS.format(level=int(lv), fence_filter=fence_filter) for lv in levels]
    return " UNION ALL ".join(parts or [_CELL_HITS.format(level=-1, fence_filter="false")])


# Inside runs straight from the membership join: the fixes inside each (IMEI, fence) from the
# pair's restart point on, grouped into runs of consecutive fix numbers (rn minus its rank
# within the pair is constant along a run) — one row per run, not per fix.
# Each pair's fixes from its restart point on (the entry of its undone visit, else the
# vehicle's t0). With no visit undone every fix read is at or after its vehicle's t0 (gf_fix
# starts there), so the filter — a join per fix — is left out (a from-scratch pass).
_RESTART_FILTER = """
    JOIN gf_dirty d ON d.vid = h.vid
    LEFT JOIN starts s ON s.imei = d.imei AND s.fid = h.fid
    WHERE h.t >= coalesce(s.start, d.t0)
"""
RUNS_FENCES_SQL = (
    """
WITH starts AS (SELECT imei, fid, min(start) AS start FROM gf_start GROUP BY imei, fid),
hit AS (
    SELECT h.*
    FROM ("""
    + "{hits}"
    + """) h
    {restart}
)
INSERT INTO gf_run (vid, fid, r0, r1, first_t, last_t, n, before_t, after_t)
SELECT vid, fid, min(rn), max(rn), min(t), max(t), count(*), min(prev_t), max(next_t)
FROM (SELECT *, rn - row_number() OVER (PARTITION BY vid, fid ORDER BY rn) AS g FROM hit) x
GROUP BY vid, fid, g
"""
)

# The fixes in some vehicle's home fence (region/city_zone matching a dirty vehicle's city or
# cost centre) — needed only for the out-of-region episodes.
HOME_HITS_SQL = (
    """
WITH home AS (
    SELECT DISTINCT x.vid, g.geofence_id AS fid
    FROM gf_dirty x
    JOIN tracksolid.devices d ON d.imei = x.imei
    JOIN tracksolid.geofences g ON g.kind IN ('region', 'city_zone')
         AND (lower(g.city) = lower(d.city) OR lower(g.cost_centre) = lower(d.cost_centre))
)
INSERT INTO gf_hit (vid, rn, t, fid)
SELECT h.vid, h.rn, h.t, h.fid
FROM ("""
    + "{hits}"
    + """) h
WHERE EXISTS (SELECT 1 FROM home WHERE home.vid = h.vid AND home.fid = h.fid)
"""
)

# Home: the region/city_zone fences matching the vehicle's city or cost centre; a fix in
# none of them is *away* (inside the virtual fence 0). Vehicles without a home are skipped.
IN_HOME_SQL = """
WITH home AS (
    SELECT x.vid, g.geofence_id AS fid
    FROM gf_dirty x
    JOIN tracksolid.devices d ON d.imei = x.imei
    JOIN tracksolid.geofences g ON g.kind IN ('region', 'city_zone')
         AND (lower(g.city) = lower(d.city) OR lower(g.cost_centre) = lower(d.cost_centre))
), starts AS (
    SELECT x.vid, coalesce(s.start, x.t0) AS start
    FROM gf_dirty x
    LEFT JOIN (SELECT imei, min(start) AS start FROM gf_start WHERE fid = 0 GROUP BY imei) s
           ON s.imei = x.imei
    WHERE x.vid IN (SELECT vid FROM home)
)
INSERT INTO gf_in (vid, fid, rn, t, prev_t, next_t)
SELECT f.vid, 0, f.rn, f.t, f.prev_t, f.next_t
FROM starts st JOIN gf_fix f ON f.vid = st.vid AND f.t >= st.start
WHERE NOT EXISTS (SELECT 1 FROM gf_hit h JOIN home USING (vid, fid)
                  WHERE h.vid = f.vid AND h.rn = f.rn)
"""

RUNS_HOME_SQL = """
INSERT INTO gf_run (vid, fid, r0, r1, first_t, last_t, n, before_t, after_t)
SELECT vid, fid, min(rn), max(rn), min(t), max(t), count(*), min(prev_t), max(next_t)
FROM (SELECT *, rn - row_number() OVER (PARTITION BY vid, fid ORDER BY rn) AS g FROM gf_in) x
GROUP BY vid, fid, g
"""

# Inside runs are consecutive fix numbers (gf_run); the outside runs are the gaps between
# them (and after the last): a gap runs from the fix after one inside run (`after_t` of its
# last fix) to the fix before the next (`before_t` of its first fix) or the vehicle's last fix,
# so the work grows with the runs, not with the fixes (`last`: each vehicle's last fix, the
# only one with no next time). The state after each run is the flag of
# the last run that counts (outside before any: the leading outside run changes nothing and is
# skipped); islands of equal state are visits when inside. (`after_t` is only read where a
# gap follows, i.e. the run's last fix is not the vehicle's last, whose next time is NULL.)
VISITS_SQL = """
WITH last AS (
    SELECT vid, rn AS n, t FROM gf_fix WHERE next_t IS NULL
), gaps AS (
    SELECT r.vid, r.fid, r.r1 + 1 AS g0,
           coalesce(lead(r.r0) OVER w - 1, l.n) AS g1,
           r.after_t AS first_t,
           coalesce(lead(r.before_t) OVER w, l.t) AS last_t
    FROM gf_run r JOIN last l USING (vid)
    WINDOW w AS (PARTITION BY r.vid, r.fid ORDER BY r.r0)
), runs AS (
    SELECT vid, fid, true AS inside, first_t, last_t, n FROM gf_run
    UNION ALL
    SELECT vid, fid, false, first_t, last_t, g1 - g0 + 1 FROM gaps WHERE g1 >= g0
), q AS (
    -- A run counts when it has min_fixes fixes spanning min_span; the state after each run is
    -- the flag of the last run that counts so far (outside before any): the running max of
    -- (start time, flag) over the runs that count, packed in one bigint, carries that flag.
    SELECT *, max(CASE WHEN n >= %(min_fixes)s AND last_t - first_t >= %(min_span)s
                       THEN (extract(epoch FROM first_t) * 1000000)::bigint * 2 + inside::int
                  END) OVER w AS last_counting
    FROM runs
    WINDOW w AS (PARTITION BY vid, fid ORDER BY first_t)
), st AS (
    SELECT *, coalesce(last_counting %% 2 = 1, false) AS state FROM q
), fl AS (
    SELECT *, (state <> lag(state, 1, false) OVER w)::int AS flip
    FROM st
    WINDOW w AS (PARTITION BY vid, fid ORDER BY first_t)
), isl AS (
    SELECT *, sum(flip) OVER w AS island
    FROM fl
    WINDOW w AS (PARTITION BY vid, fid ORDER BY first_t)
), islands AS (
    SELECT vid, fid, island, bool_or(state) AS state, min(first_t) AS start_t,
           max(last_t) FILTER (WHERE inside) AS last_in, sum(n) FILTER (WHERE inside) AS n_in
    FROM isl GROUP BY vid, fid, island
), ev AS (
    SELECT *, lead(start_t) OVER (PARTITION BY vid, fid ORDER BY island) AS end_t FROM islands
)
INSERT INTO gf_result (vid, fid, start_t, end_t, last_in, n_in)
SELECT vid, fid, start_t, end_t, last_in, n_in FROM ev WHERE state
"""

WRITE_EVENTS_SQL = """
INSERT INTO tracksolid.geofence_events AS e
    (imei, geofence_id, entered_at, exited_at, last_inside_at, dwell_s, fixes)
SELECT d.imei, r.fid, r.start_t, r.end_t, r.last_in,
       round(extract(epoch FROM coalesce(r.end_t, r.last_in) - r.start_t))::int, r.n_in
FROM gf_result r JOIN gf_dirty d USING (vid) WHERE r.fid > 0
ON CONFLICT (imei, geofence_id, entered_at) DO UPDATE SET
    exited_at = EXCLUDED.exited_at, last_inside_at = EXCLUDED.last_inside_at,
    dwell_s = EXCLUDED.dwell_s, fixes = EXCLUDED.fixes, computed_at = now()
"""

WRITE_HOME_SQL = """
INSERT INTO tracksolid.out_of_region_events AS e
    (imei, left_at, returned_at, last_seen_at, away_s, fixes)
SELECT d.imei, r.start_t, r.end_t, r.last_in,
       round(extract(epoch FROM coalesce(r.end_t, r.last_in) - r.start_t))::int, r.n_in
FROM gf_result r JOIN gf_dirty d USING (vid) WHERE r.fid = 0
ON CONFLICT (imei, left_at) DO UPDATE SET
    returned_at = EXCLUDED.returned_at, last_seen_at = EXCLUDED.last_seen_at,
    away_s = EXCLUDED.away_s, fixes = EXCLUDED.fixes, computed_at = now()
"""

# Temporary tables have no statistics until analysed (the plans of the joins need them).
_ANALYZE_FIXES = "ANALYZE gf_dirty, gf_start, gf_fix"


def compute(conn: Conn, p: FenceParams, fids: list[int] | None, home: bool) -> tuple[int, int]:
    """Recompute the events of the vehicles in `gf_dirty` from their `t0` (module doc,
    steps 2-4): for the fences `fids` (None: every fence) and, with `home`, their
    out-of-region episodes. Returns (events written, episodes written)."""
    args: dict[str, Any] = {"fids": fids, "min_fixes": p.min_fixes,
                            "min_span": timedelta(seconds=p.min_seconds)}  # fmt: skip
    conn.execute("TRUNCATE gf_start, gf_fix, gf_hit, gf_in, gf_run, gf_result")
    conn.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")  # the window sorts stay in memory
    # JIT compiles these one-off statements for longer than they run; and the runs' GROUP BY
    # is cheaper hashed than re-sorted (incremental sort) after the window's sort.
    conn.execute("SET LOCAL jit = off")
    conn.execute("SET LOCAL enable_incremental_sort = off")
    # What a foreign key would do once per visit, once per fence (migration 0603): a fence
    # deleted meanwhile waits for this pass and then takes its visits along.
    conn.execute("SELECT 1 FROM tracksolid.geofences FOR KEY SHARE")
    levels = [int(r[0]) for r in conn.execute(
        "SELECT DISTINCT level FROM tracksolid.geofence_cells ORDER BY 1").fetchall()]  # fmt: skip
    steps: list[tuple[str, str, dict[str, Any] | None]] = [
        ("undo events", UNDO_EVENTS_SQL, args),
        ("undo home", UNDO_HOME_SQL if home else "", None),
        ("fixes", FIXES_SQL, None),
        ("analyze fixes", _ANALYZE_FIXES, None),  # temp tables have no statistics otherwise
        (
            "inside runs",
            RUNS_FENCES_SQL.format(hits=hits_sql(levels, _FENCES), restart="{restart}"),
            args,
        ),
        ("home hits", HOME_HITS_SQL.format(hits=hits_sql(levels, _HOMES)) if home else "", None),
        ("away from home", IN_HOME_SQL if home else "", None),
        ("away runs", RUNS_HOME_SQL if home else "", None),
        ("analyze", "ANALYZE gf_run", None),
        ("visits", VISITS_SQL, args),
        ("write events", WRITE_EVENTS_SQL, None),
        ("write out-of-region", WRITE_HOME_SQL if home else "", None),
    ]
    counts: dict[str, int] = {}
    for name, template, params in steps:
        query = template
        if "{restart}" in template:  # known once the undo steps ran (RUNS_FENCES_SQL)
            undone = conn.execute("SELECT EXISTS (SELECT 1 FROM gf_start)").fetchone()
            query = template.format(restart=_RESTART_FILTER if undone and undone[0] else "")
        if query:
            started = time.perf_counter()
            counts[name] = conn.execute(query, params).rowcount
            log.debug("%s: %d rows in %.3f s", name, counts[name], time.perf_counter() - started)
    events, episodes = counts["write events"], counts.get("write out-of-region", 0)
    return events, episodes


# Temporary-table memory of the pass's own connection: ~500,000 fixes (~60 MB) stay in memory
# instead of spilling through the 8 MB default. PostgreSQL takes it only before a session's
# first temporary table, hence a connection of its own (`connect`), opened per pass.
TEMP_MEMORY_OPTIONS = "-c temp_buffers=256MB"


def connect(dsn: str) -> Conn:
    """A fresh connection for one pass (the worker's job and bench/bench_geofences.py)."""
    options = connect_options(dsn, TEMP_MEMORY_OPTIONS, DURABLE_OPTIONS)
    return psycopg.connect(dsn, options=options, application_name="geofence_events")


def read_watermark(conn: Conn) -> datetime | None:
    """Up to when (received_at) the previous pass read positions; None: never ran."""
    row = conn.execute("SELECT received_until FROM tracksolid.geofence_event_state").fetchone()
    return row[0] if row else None


def write_watermark(conn: Conn, until: datetime) -> None:
    """Move the watermark (in the caller's transaction)."""
    conn.execute(
        "INSERT INTO tracksolid.geofence_event_state (singleton, received_until)"
        " VALUES (true, %s) ON CONFLICT (singleton) DO UPDATE"
        " SET received_until = EXCLUDED.received_until, updated_at = now()",
        (until,),
    )


def run_pass(conn: Conn, p: FenceParams, now: datetime) -> PassResult:
    """One incremental pass (module doc) in one transaction; `now` is the worker's clock
    (horizon). A failed pass leaves the watermark, so the next one redoes it."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        with conn.transaction():
            return _run_pass(conn, p, now)
    finally:
        conn.autocommit = autocommit


def _run_pass(conn: Conn, p: FenceParams, now: datetime) -> PassResult:
    result = PassResult()
    horizon = now - timedelta(days=p.horizon_days)
    started = conn.execute("SELECT now()").fetchone()
    assert started is not None
    since = read_watermark(conn)
    conn.execute(_TEMP_TABLES)
    fresh = [r[0] for r in conn.execute(
        "SELECT geofence_id FROM tracksolid.geofences WHERE events_computed_at IS NULL"
        " ORDER BY 1").fetchall()]  # fmt: skip
    if since is None:  # first run: everything within the horizon, every fence and home
        result.dirty_vehicles = conn.execute(ALL_SQL, {"horizon": horizon}).rowcount
        fresh_home = True
        fresh_ids: list[int] | None = None
    else:
        args = {"since": since - WATERMARK_MARGIN, "horizon": horizon, "pad": RESTART_PAD}
        result.dirty_vehicles = conn.execute(DIRTY_SQL, args).rowcount
        _add(result, compute(conn, p, None, True) if result.dirty_vehicles else (0, 0))
        fresh_ids = fresh
        fresh_home = bool(fresh) and _touches_home(conn, fresh)
        if fresh:
            conn.execute("TRUNCATE gf_dirty")
            conn.execute(ALL_SQL, {"horizon": horizon})
    if fresh_ids is None or fresh_ids:
        if fresh_ids:  # reshaped fences: their older events are stale too
            conn.execute(
                "DELETE FROM tracksolid.geofence_events WHERE geofence_id = ANY(%s)", (fresh_ids,)
            )
        _add(result, compute(conn, p, fresh_ids, fresh_home))
    conn.execute(
        "UPDATE tracksolid.geofences SET events_computed_at = %s WHERE geofence_id = ANY(%s)",
        (started[0], fresh),
    )
    result.fences_backfilled = len(fresh)
    write_watermark(conn, started[0])
    return result


def _touches_home(conn: Conn, fids: list[int]) -> bool:
    """Whether any of `fids` is a region or city zone (so homes must be recomputed too).
    A deleted or re-kinded home fence is caught by `recompute_all` (docs/geofences.md)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM tracksolid.geofences"
        " WHERE geofence_id = ANY(%s) AND kind = ANY(%s))",
        (fids, list(HOME_KINDS)),
    ).fetchone()
    return bool(row and row[0])


def _add(result: PassResult, counts: tuple[int, int]) -> None:
    result.events += counts[0]
    result.out_of_region += counts[1]


def recompute_all(conn: Conn) -> None:
    """Forget every event and the watermark: the next pass recomputes the whole horizon
    (after a registry change of cities / cost centres, or a deleted home fence)."""
    with conn.transaction():
        conn.execute("DELETE FROM tracksolid.geofence_events")
        conn.execute("DELETE FROM tracksolid.out_of_region_events")
        conn.execute("DELETE FROM tracksolid.geofence_event_state")
        conn.execute("UPDATE tracksolid.geofences SET events_computed_at = NULL")
