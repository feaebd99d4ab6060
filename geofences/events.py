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
   inside, through the fences' grid index) and grouped at once into runs of consecutive
   fixes inside each (IMEI, fence) — one row per run, so the work grows with the fixes, not
   fences x fixes. For the vehicle's *home* (fences of kind region/city_zone whose city or
   cost centre is the vehicle's), a fix is *away* when it is in none of them — the virtual
   fence 0.
4. **Hysteresis** — consecutive fixes with the same flag form a run; a run *counts* when it
   has GEOFENCE_MIN_FIXES fixes spanning GEOFENCE_MIN_SECONDS. The state (inside/outside,
   starting outside) changes only at a run that counts, so jitter across the boundary (runs
   that do not count) never opens or closes a visit. A visit starts at the first fix of the
   run that made the state inside, and ends at the first fix of the run that made it outside
   (NULL while inside); `fixes` counts the fixes inside during it.
5. New or reshaped fences (`events_computed_at IS NULL`) are computed over the whole horizon
   for every vehicle (and every home, when a region/city zone changed).
6. The watermark moves to the pass's start, in the same transaction.

One pass at a time (advisory lock `PASS_LOCK`). The per-fix work table is UNLOGGED, not
temporary, so that parallel workers can read it (`FIXES_SQL`); it lives only inside the
pass's transaction. The rest of the pass's work tables are temporary (`gf_*`).
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
PASS_LOCK = 1_607_160_416  # advisory lock key held by a pass for its transaction
WORK_MEM = "256MB"  # for this transaction only: ~500,000 fixes and their hits sort in memory
PARALLEL_SETTINGS = {  # for the pass's transaction only (`compute`)
    "max_parallel_workers_per_gather": 2,
    "parallel_setup_cost": 100,
    "parallel_tuple_cost": 0.01,
}


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
    t0 timestamptz NOT NULL, vid integer NOT NULL, lo timestamptz) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS gf_start (imei text COLLATE "C", fid bigint, start timestamptz)
    ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS gf_hit (vid integer, rn bigint, t timestamptz, fid bigint)
    ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS gf_in (vid integer, fid bigint, rn bigint, t timestamptz,
    prev_t timestamptz, next_t timestamptz) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS gf_result (vid integer, fid bigint, start_t timestamptz,
    end_t timestamptz, last_in timestamptz, n_in bigint) ON COMMIT DROP;
TRUNCATE gf_dirty, gf_start, gf_hit, gf_in, gf_result
"""

DIRTY_SQL = """
INSERT INTO gf_dirty (imei, t0, vid, lo)
SELECT p.imei, min(p.gps_time) - %(pad)s, row_number() OVER (ORDER BY p.imei),
       min(p.gps_time) - %(pad)s
FROM tracksolid.position_history p
WHERE p.received_at > %(since)s AND p.gps_time >= %(horizon)s AND p.quality_flag IS NULL
GROUP BY p.imei
"""

ALL_SQL = """
INSERT INTO gf_dirty (imei, t0, vid, lo)
SELECT imei, %(horizon)s::timestamptz, row_number() OVER (ORDER BY imei), %(horizon)s
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
# They go to an UNLOGGED table, not a temporary one: parallel workers cannot read another
# session's temporary tables, and the membership join over these fixes is the pass's
# heaviest step (RUNS_FENCES_SQL, parallel). The table exists only inside the pass's
# transaction: created here (CREATE TABLE AS, which writes its rows in bulk), dropped by
# `compute` before the next one and at the pass's end; a failed or killed pass rolls its
# creation back, and PASS_LOCK keeps a second pass from creating it meanwhile. No WAL.
# A vehicle's fixes are read from `lo`, its earliest restart point (FIRST_FIX_SQL); the
# earliest of all bounds the scan as a constant (chunk exclusion / BRIN: the history before the
# horizon is never read, where the previous version read it all).
FIX_TABLE = "tracksolid.geofence_pass_fixes"
FIXES_SQL = """
CREATE UNLOGGED TABLE tracksolid.geofence_pass_fixes AS
SELECT d.vid, row_number() OVER w AS rn, p.gps_time AS t, p.lat, p.lng,
       lag(p.gps_time) OVER w AS prev_t, lead(p.gps_time) OVER w AS next_t
FROM gf_dirty d
JOIN tracksolid.position_history p ON p.imei = d.imei AND p.gps_time >= d.lo
WHERE p.quality_flag IS NULL AND p.gps_time >= %(lo)s
WINDOW w AS (PARTITION BY d.vid ORDER BY p.gps_time)
"""

# `lo`: the vehicle's t0, or the entry of an undone visit when earlier. Kept in gf_dirty
# (analysed next): joined to a table whose IMEIs the planner knows are unique, the positions
# are probed against a hash of the vehicles; joined to a grouped sub-select, as before, the
# planner hashed the 500,000 positions instead (1.5 s more on TimescaleDB).
FIRST_FIX_SQL = """
UPDATE gf_dirty d SET lo = least(d.t0, s.start)
FROM (SELECT imei, min(start) AS start FROM gf_start GROUP BY imei) s
WHERE s.imei = d.imei
"""


def first_fix(conn: Conn) -> dict[str, Any]:
    """FIXES_SQL's parameter: the earliest restart point of all dirty vehicles."""
    row = conn.execute("SELECT min(lo) FROM gf_dirty").fetchone()
    return {"lo": row[0] if row else None}


# Membership through the fences' grid index (tracksolid.geofence_cells, 0602): each fix's cell
# key at a cell level in use is joined to that level's cells by equality (a hash join: no
# spatial index on the fixes, no fence-by-fence probing); a fix in an `inside` cell is in the
# fence, one in a boundary cell is tested exactly against that cell's small `part` of the
# fence. One such join per level in use (`hits_sql`), the level a literal so that the key's
# cell size is folded into a constant. Same answer as ST_Intersects(fence, fix) (boundary
# counts as inside): tests/test_geofence_cells.py.
_CELL_HITS = """
    SELECT f.vid, c.geofence_id AS fid, f.rn, f.t, f.prev_t, f.next_t
    FROM tracksolid.geofence_pass_fixes f
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


# A run of consecutive fix numbers is known from its two ends: a hit starts a run when the
# pair's previous hit is not the fix before (lag), ends one when its next hit is not the fix
# after (lead). Only those edge rows (a few per visit, not one per fix) are kept and paired
# with the next edge in the same order — one sort of the hits, no grouping re-sort.
# `n` is r1 - r0 + 1 (the fixes are consecutive); `before_t` is the time of the fix before
# the run's first, `after_t` of the fix after its last (NULL at the vehicle's last fix: no
# gap follows, VISITS_SQL never reads it).
_RUNS = """
, edge AS (
    SELECT vid, fid, rn, t, prev_t, next_t,
           coalesce(lag(rn) OVER w <> rn - 1, true) AS starts,
           coalesce(lead(rn) OVER w <> rn + 1, true) AS ends
    FROM {source}
    WINDOW w AS (PARTITION BY vid, fid ORDER BY rn)
), pair AS (
    SELECT vid, fid, rn AS r0, t AS first_t, prev_t AS before_t, starts,
           CASE WHEN ends THEN rn ELSE lead(rn) OVER w END AS r1,
           CASE WHEN ends THEN t ELSE lead(t) OVER w END AS last_t,
           CASE WHEN ends THEN next_t ELSE lead(next_t) OVER w END AS after_t
    FROM edge WHERE starts OR ends
    WINDOW w AS (PARTITION BY vid, fid ORDER BY rn)
)
SELECT vid, fid, r0, r1, first_t, last_t, r1 - r0 + 1 AS n, before_t, after_t
FROM pair WHERE starts
"""

# Inside runs straight from the membership join: the fixes inside each (IMEI, fence) from the
# pair's restart point on, grouped into runs of consecutive fix numbers (_RUNS).
# Each pair's fixes from its restart point on (the entry of its undone visit, else the
# vehicle's t0). With no visit undone every fix read is at or after its vehicle's t0 (the
# pass's fixes start there), so the filter — a join per fix — is left out (from scratch).
_RESTART_FILTER = """
    JOIN gf_dirty d ON d.vid = h.vid
    LEFT JOIN starts s ON s.imei = d.imei AND s.fid = h.fid
    WHERE h.t >= coalesce(s.start, d.t0)
"""
RUNS_FENCES_SQL = (
    """
CREATE TEMP TABLE gf_run ON COMMIT DROP AS
WITH starts AS (SELECT imei, fid, min(start) AS start FROM gf_start GROUP BY imei, fid),
hit AS (
    SELECT h.*
    FROM ("""
    + "{hits}"
    + """) h
    {restart}
)"""
    + _RUNS.format(source="hit")
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
FROM starts st JOIN tracksolid.geofence_pass_fixes f ON f.vid = st.vid AND f.t >= st.start
WHERE NOT EXISTS (SELECT 1 FROM gf_hit h JOIN home USING (vid, fid)
                  WHERE h.vid = f.vid AND h.rn = f.rn)
"""

RUNS_HOME_SQL = (
    "INSERT INTO gf_run (vid, fid, r0, r1, first_t, last_t, n, before_t, after_t)"
    " WITH away AS (SELECT * FROM gf_in)" + _RUNS.format(source="away")
)

# Inside runs are consecutive fix numbers (gf_run); the outside runs are the gaps between
# them (and after the last): a gap runs from the fix after one inside run (`after_t` of its
# last fix) to the fix before the next (`before_t` of its first fix) or the vehicle's last fix,
# so the work grows with the runs, not with the fixes (`last`: each vehicle's last fix, the
# only one with no next time). (`after_t` is only read where a gap follows, i.e. the run's
# last fix is not the vehicle's last, whose next time is NULL.)
# The runs of a pair in time order are in the order of their first fix number `r0`. A run
# counts when it has min_fixes fixes spanning min_span; the state after each run is the flag
# of the last run that counts so far (outside before any: the leading outside run changes
# nothing and is skipped): the running max of (r0, flag) over the runs that count, packed in
# one bigint, carries that flag. A visit starts at a run where the state turns inside and
# ends at the next where it turns outside: only those flips are kept (one window sort for
# all of it), and what a visit holds comes from running totals over the inside runs taken
# just before its two flips — `fixes` the difference of the running count, `last_inside_at`
# the latest inside time (the run that opened the visit is inside, so nothing earlier can
# be the latest); an open visit takes the pair's totals.
VISITS_SQL = """
WITH last AS (
    SELECT vid, rn AS n, t FROM tracksolid.geofence_pass_fixes WHERE next_t IS NULL
), gaps AS (
    SELECT r.vid, r.fid, r.r1 + 1 AS g0,
           coalesce(lead(r.r0) OVER w - 1, l.n) AS g1,
           r.after_t AS first_t,
           coalesce(lead(r.before_t) OVER w, l.t) AS last_t
    FROM gf_run r JOIN last l USING (vid)
    WINDOW w AS (PARTITION BY r.vid, r.fid ORDER BY r.r0)
), runs AS (
    SELECT vid, fid, true AS inside, r0, first_t, last_t, n::int AS n FROM gf_run
    UNION ALL
    SELECT vid, fid, false, g0, first_t, last_t, (g1 - g0 + 1)::int FROM gaps WHERE g1 >= g0
), q AS (
    SELECT vid, fid, r0, first_t,
           coalesce(max(CASE WHEN n >= %(min_fixes)s AND last_t - first_t >= %(min_span)s
                             THEN r0 * 2 + inside::int END) OVER w %% 2 = 1, false) AS state,
           sum(n) FILTER (WHERE inside) OVER w AS n_upto,
           max(last_t) FILTER (WHERE inside) OVER w AS in_upto,
           sum(n) FILTER (WHERE inside) OVER p AS n_all,
           max(last_t) FILTER (WHERE inside) OVER p AS in_all
    FROM runs
    WINDOW w AS (PARTITION BY vid, fid ORDER BY r0 ROWS UNBOUNDED PRECEDING),
           p AS (PARTITION BY vid, fid)
), fl AS (
    SELECT *, lag(state, 1, false) OVER w AS was, coalesce(lag(n_upto) OVER w, 0) AS n_before,
           lag(in_upto) OVER w AS in_before
    FROM q
    WINDOW w AS (PARTITION BY vid, fid ORDER BY r0)
), ev AS (
    SELECT vid, fid, state, first_t AS start_t, n_before, n_all, in_all,
           lead(first_t) OVER w AS end_t, lead(n_before) OVER w AS n_end,
           lead(in_before) OVER w AS in_end
    FROM fl WHERE state <> was
    WINDOW w AS (PARTITION BY vid, fid ORDER BY r0)
)
INSERT INTO gf_result (vid, fid, start_t, end_t, last_in, n_in)
SELECT vid, fid, start_t, end_t, CASE WHEN end_t IS NULL THEN in_all ELSE in_end END,
       CASE WHEN end_t IS NULL THEN n_all ELSE n_end END - n_before
FROM ev WHERE state
"""

# A plain INSERT (no ON CONFLICT: its speculative insertion cost ~30 % of this statement):
# no visit written here can meet a stored one. The undo deleted every visit of these
# (vehicle, fence) pairs that ended after the pair's restart point, and a visit kept ends
# at or before it, so it entered strictly before any visit recomputed from there (a visit
# ends at a fix after its entry); the fences recomputed in a second `compute` of the pass
# had all their visits deleted first. Two passes never run at once (PASS_LOCK).
WRITE_EVENTS_SQL = """
INSERT INTO tracksolid.geofence_events
    (imei, geofence_id, entered_at, exited_at, last_inside_at, dwell_s, fixes)
SELECT d.imei, r.fid, r.start_t, r.end_t, r.last_in,
       round(extract(epoch FROM coalesce(r.end_t, r.last_in) - r.start_t))::int, r.n_in
FROM gf_result r JOIN gf_dirty d USING (vid) WHERE r.fid > 0
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

# Temporary tables have no statistics until analysed: the vehicles are, before their fixes
# are read (the join's estimates need them). The fixes and the runs are not (0.3 s of the
# from-scratch pass): their tables are new, so the planner sizes them from their pages, which
# is all the hash joins over them need (their plans are the same either way).
_ANALYZE_DIRTY = "ANALYZE gf_dirty, gf_start"


def compute(conn: Conn, p: FenceParams, fids: list[int] | None, home: bool) -> tuple[int, int]:
    """Recompute the events of the vehicles in `gf_dirty` from their `t0` (module doc,
    steps 2-4): for the fences `fids` (None: every fence) and, with `home`, their
    out-of-region episodes. Returns (events written, episodes written)."""
    args: dict[str, Any] = {"fids": fids, "min_fixes": p.min_fixes,
                            "min_span": timedelta(seconds=p.min_seconds)}  # fmt: skip
    conn.execute("TRUNCATE gf_start, gf_hit, gf_in, gf_result")
    # FIXES_SQL and RUNS_FENCES_SQL create these (a previous `compute` of this pass left them)
    conn.execute(f"DROP TABLE IF EXISTS {FIX_TABLE}, pg_temp.gf_run")
    conn.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")  # the window sorts stay in memory
    # JIT compiles these one-off statements for longer than they run; incremental sorts are
    # off since the runs were grouped by a GROUP BY (cheaper hashed), harmless now.
    conn.execute("SET LOCAL jit = off")
    conn.execute("SET LOCAL enable_incremental_sort = off")
    # The membership join and its sort run in parallel workers (their results reach this
    # session through a Gather Merge); the defaults price a worker for queries much larger
    # than these, so the planner would rarely use one. For this transaction only.
    for setting, value in PARALLEL_SETTINGS.items():
        conn.execute(f"SET LOCAL {setting} = {value}")
    # What a foreign key would do once per visit, once per fence (migration 0603): a fence
    # deleted meanwhile waits for this pass and then takes its visits along.
    conn.execute("SELECT 1 FROM tracksolid.geofences FOR KEY SHARE")
    levels = [int(r[0]) for r in conn.execute(
        "SELECT DISTINCT level FROM tracksolid.geofence_cells ORDER BY 1").fetchall()]  # fmt: skip
    steps: list[tuple[str, str, dict[str, Any] | None]] = [
        ("undo events", UNDO_EVENTS_SQL, args),
        ("undo home", UNDO_HOME_SQL if home else "", None),
        ("restart points", FIRST_FIX_SQL, None),
        ("analyze vehicles", _ANALYZE_DIRTY, None),
        ("fixes", FIXES_SQL, None),
        (
            "inside runs",
            RUNS_FENCES_SQL.format(hits=hits_sql(levels, _FENCES), restart="{restart}"),
            args,
        ),
        ("home hits", HOME_HITS_SQL.format(hits=hits_sql(levels, _HOMES)) if home else "", None),
        ("away from home", IN_HOME_SQL if home else "", None),
        ("away runs", RUNS_HOME_SQL if home else "", None),
        ("visits", VISITS_SQL, args),
        ("write events", WRITE_EVENTS_SQL, None),
        ("write out-of-region", WRITE_HOME_SQL if home else "", None),
    ]
    counts: dict[str, int] = {}
    for name, template, step_params in steps:
        query, params = template, step_params
        if template is FIXES_SQL:  # known once the undo steps ran
            params = first_fix(conn)
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
    # One pass at a time (the worker's job, `python -m geofences run`): a second one waits,
    # then reads the first one's watermark and does only what is left.
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (PASS_LOCK,))
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
    conn.execute(f"DROP TABLE IF EXISTS {FIX_TABLE}")  # the pass's fixes (FIXES_SQL)
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
