"""Bulk, idempotent writes of the ingest worker.

Positions newer than anything stored for their device are binary-COPYed straight into
`position_history`; the rest go through a session temp table and one
`INSERT ... SELECT ... ON CONFLICT` per batch (see `write_positions`; measured in
bench/bench_ingest.py). Smaller tables (trips, stops, alarms, devices) use pipelined
`executemany` with `RETURNING (xmax = 0)` so the caller learns how many rows were new.
Every function writes inside the caller's transaction: the caller commits rows and the
job's watermark together.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingest.parse import (
    DEVICE_API_COLUMNS,
    AlarmRow,
    LiveRow,
    PositionRow,
    StopRow,
    TripRow,
)
from ingest.quality import QualityRules, flag_jumps

Conn = psycopg.Connection[Any]

POSITION_COLUMNS = (
    "imei", "gps_time", "lat", "lng", "speed_kmh", "direction_deg", "acc_on", "pos_type",
    "satellites", "gps_mode", "altitude_m", "mileage_km", "source", "quality_flag",
    "implied_speed_kmh",
)  # fmt: skip
POSITION_TYPES = (
    "text", "timestamptz", "float8", "float8", "float4", "int2", "bool", "text", "int2",
    "int2", "float4", "float8", "text", "text", "float4",
)  # fmt: skip

_position_values = attrgetter(*POSITION_COLUMNS)
_imei_time = attrgetter("imei", "gps_time")

LIVE_COLUMNS = (
    "imei", "gps_time", "lat", "lng", "speed_kmh", "direction_deg", "acc_on", "online",
    "pos_type", "loc_desc", "hb_time", "battery_pct", "power_v", "gps_signal", "satellites",
    "current_mileage_km", "source", "account",
)  # fmt: skip
LIVE_TYPES = (
    "text", "timestamptz", "float8", "float8", "float4", "int2", "bool", "bool", "text",
    "text", "timestamptz", "float4", "float4", "int2", "int2", "float8", "text", "text",
)  # fmt: skip


def _stage(conn: Conn, name: str, columns: Sequence[str], types: Sequence[str]) -> None:
    """Create (once per session) an empty temp staging table with these columns."""
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t))
        for c, t in zip(columns, types, strict=True)
    )
    conn.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
            sql.Identifier(name), cols
        )
    )
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(name)))


def _copy(
    conn: Conn,
    table: str,
    columns: Sequence[str],
    types: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    schema: str | None = None,
) -> None:
    target = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        target, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur, cur.copy(query) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


def stored_context(
    conn: Conn, firsts: dict[str, datetime]
) -> tuple[dict[str, tuple[datetime, float, float]], dict[str, datetime]]:
    """Per IMEI: the last stored plausible fix before the given time (for jump detection),
    and the newest stored fix time (rows after it cannot conflict). Two index probes each."""
    if not firsts:
        return {}, {}
    rows = conn.execute(
        """
        SELECT b.imei, p.gps_time, p.lat, p.lng, m.gps_time
        FROM unnest(%s::text[], %s::timestamptz[]) AS b(imei, t)
        LEFT JOIN LATERAL (
            SELECT gps_time, lat, lng FROM tracksolid.position_history p
            WHERE p.imei = b.imei AND p.gps_time < b.t AND p.quality_flag IS NULL
            ORDER BY p.gps_time DESC LIMIT 1
        ) p ON true
        LEFT JOIN LATERAL (
            SELECT gps_time FROM tracksolid.position_history m
            WHERE m.imei = b.imei ORDER BY m.gps_time DESC LIMIT 1
        ) m ON true
        """,
        (list(firsts), list(firsts.values())),
    ).fetchall()
    previous = {r[0]: (r[1], r[2], r[3]) for r in rows if r[1] is not None}
    newest = {r[0]: r[4] for r in rows if r[4] is not None}
    return previous, newest


def write_positions(conn: Conn, rows: list[PositionRow], rules: QualityRules) -> tuple[int, int]:
    """Insert fixes into `position_history` (existing (imei, gps_time) are left alone).

    Flags implausible jumps first. Fixes newer than everything stored for their device (the
    usual case) are binary-COPYed straight into the table inside a savepoint; the others (and
    all of them, should a concurrent writer make that COPY conflict) go through a temp table
    and `INSERT ... ON CONFLICT DO NOTHING`. Returns (rows inserted, rows flagged).
    """
    if not rows:
        return 0, 0
    rows.sort(key=_imei_time)
    unique: list[PositionRow] = []
    firsts: dict[str, datetime] = {}
    last_key: tuple[str, datetime] | None = None
    for row in rows:  # one fix per (imei, gps_time) inside the batch
        key = (row.imei, row.gps_time)
        if key != last_key:
            unique.append(row)
            firsts.setdefault(row.imei, row.gps_time)
            last_key = key
    previous, newest = stored_context(conn, firsts)
    flagged = flag_jumps(unique, previous, rules)
    surely_new: list[PositionRow] = []
    maybe_stored: list[PositionRow] = []
    for row in unique:
        latest = newest.get(row.imei)
        (surely_new if latest is None or row.gps_time > latest else maybe_stored).append(row)
    inserted = 0
    if surely_new:
        try:
            with conn.transaction():  # a savepoint inside the caller's transaction
                _copy(conn, "position_history", POSITION_COLUMNS, POSITION_TYPES,
                      list(map(_position_values, surely_new)), schema="tracksolid")  # fmt: skip
            inserted += len(surely_new)
        except psycopg.errors.UniqueViolation:
            maybe_stored = unique  # someone wrote some of them meanwhile: take the safe path
            inserted = 0
    if maybe_stored:
        _stage(conn, "_stage_positions", POSITION_COLUMNS, POSITION_TYPES)
        _copy(conn, "_stage_positions", POSITION_COLUMNS, POSITION_TYPES,
              list(map(_position_values, maybe_stored)))  # fmt: skip
        cols = sql.SQL(", ").join(map(sql.Identifier, POSITION_COLUMNS))
        cur = conn.execute(
            sql.SQL(
                "INSERT INTO tracksolid.position_history ({cols})"
                " SELECT {cols} FROM _stage_positions ON CONFLICT (imei, gps_time) DO NOTHING"
            ).format(cols=cols)
        )
        inserted += cur.rowcount
    return inserted, flagged


def upsert_live(conn: Conn, rows: list[LiveRow]) -> int:
    """Upsert `live_positions`, only ever moving a vehicle forward in time.

    A row with the same gps_time may still refresh the status fields (online, heartbeat).
    Returns the number of rows inserted or changed.
    """
    if not rows:
        return 0
    latest: dict[str, LiveRow] = {}
    for row in rows:
        seen = latest.get(row.position.imei)
        if seen is None or seen.position.gps_time < row.position.gps_time:
            latest[row.position.imei] = row
    data = []
    for row in latest.values():
        p = row.position
        data.append((
            p.imei, p.gps_time, p.lat, p.lng, p.speed_kmh, p.direction_deg, p.acc_on, row.online,
            p.pos_type, row.loc_desc, row.hb_time, row.battery_pct, row.power_v, row.gps_signal,
            p.satellites, p.mileage_km, p.source, row.account,
        ))  # fmt: skip
    _stage(conn, "_stage_live", LIVE_COLUMNS, LIVE_TYPES)
    _copy(conn, "_stage_live", LIVE_COLUMNS, LIVE_TYPES, data)
    cols = sql.SQL(", ").join(map(sql.Identifier, LIVE_COLUMNS))
    updates = sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in LIVE_COLUMNS[1:]
    )
    cur = conn.execute(
        sql.SQL(
            "INSERT INTO tracksolid.live_positions AS l ({cols}) SELECT {cols} FROM _stage_live"
            " ON CONFLICT (imei) DO UPDATE SET {updates}, updated_at = now()"
            " WHERE l.gps_time < EXCLUDED.gps_time"
            "    OR (l.gps_time = EXCLUDED.gps_time"
            "        AND (l.online, l.hb_time, l.acc_on, l.battery_pct, l.account)"
            "            IS DISTINCT FROM"
            "            (EXCLUDED.online, EXCLUDED.hb_time, EXCLUDED.acc_on,"
            "             EXCLUDED.battery_pct, EXCLUDED.account))"
        ).format(cols=cols, updates=updates)
    )
    return cur.rowcount


def count_new_and_updated(cur: psycopg.Cursor[Any]) -> tuple[int, int]:
    """(inserted, updated) from an `executemany(..., returning=True)` whose statement ends
    in `RETURNING (xmax = 0)` (true for a new row, false for an updated one)."""
    inserted = updated = 0
    while True:
        for (is_new,) in cur.fetchall():
            if is_new:
                inserted += 1
            else:
                updated += 1
        if not cur.nextset():
            return inserted, updated


def _upsert(
    conn: Conn,
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    rows: Sequence[Sequence[Any]],
    update: Sequence[str] = (),
) -> tuple[int, int]:
    """Pipelined INSERT ... ON CONFLICT; returns (inserted, updated). Updates only rows
    whose `update` columns actually changed, so a re-poll reports (0, 0)."""
    if not rows:
        return 0, 0
    schema, name = table.split(".")
    target = sql.Identifier(schema, name)
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    marks = sql.SQL(", ").join(sql.Placeholder() * len(columns))
    keys = sql.SQL(", ").join(map(sql.Identifier, key))
    if update:
        sets = sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in update
        )
        old = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in update)
        new = sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in update)
        action: sql.Composable = sql.SQL(
            "DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new})"
        ).format(sets=sets, old=old, new=new)
    else:
        action = sql.SQL("DO NOTHING")
    query = sql.SQL(
        "INSERT INTO {target} AS t ({cols}) VALUES ({marks}) ON CONFLICT ({keys}) {action}"
        " RETURNING (xmax = 0)"
    ).format(target=target, cols=cols, marks=marks, keys=keys, action=action)
    with conn.cursor() as cur:
        cur.executemany(query, rows, returning=True)
        return count_new_and_updated(cur)


def upsert_trips(conn: Conn, rows: list[TripRow]) -> tuple[int, int]:
    """Upsert trips on (imei, start_time); a trip seen again with new end/distance is updated."""
    columns = (
        "imei", "start_time", "end_time", "start_lat", "start_lng", "end_lat", "end_lng",
        "distance_km", "driving_time_s", "avg_speed_kmh", "max_speed_kmh", "start_mileage_km",
        "end_mileage_km", "source", "raw",
    )  # fmt: skip
    data = [
        (r.imei, r.start_time, r.end_time, r.start_lat, r.start_lng, r.end_lat, r.end_lng,
         r.distance_km, r.driving_time_s, r.avg_speed_kmh, r.max_speed_kmh, r.start_mileage_km,
         r.end_mileage_km, r.source, Jsonb(r.raw))
        for r in rows
    ]  # fmt: skip
    return _upsert(
        conn, "tracksolid.trips", columns, ("imei", "start_time"), data,
        update=("end_time", "end_lat", "end_lng", "distance_km", "driving_time_s",
                "avg_speed_kmh", "max_speed_kmh", "end_mileage_km"),
    )  # fmt: skip


def upsert_stops(conn: Conn, rows: list[StopRow]) -> tuple[int, int]:
    """Upsert parking / idling periods on (imei, start_time, acc_on)."""
    columns = (
        "imei", "start_time", "end_time", "duration_s", "acc_on", "lat", "lng", "address",
        "account", "raw",
    )  # fmt: skip
    data = [
        (r.imei, r.start_time, r.end_time, r.duration_s, r.acc_on, r.lat, r.lng, r.address,
         r.account, Jsonb(r.raw))
        for r in rows
    ]  # fmt: skip
    return _upsert(
        conn, "tracksolid.parking_events", columns, ("imei", "start_time", "acc_on"), data,
        update=("end_time", "duration_s", "address"),
    )  # fmt: skip


def insert_alarms(conn: Conn, rows: list[AlarmRow]) -> int:
    """Insert alarms; (imei, alarm_time, alarm_type) already stored are skipped."""
    columns = (
        "imei", "alarm_time", "alarm_type", "alarm_name", "lat", "lng", "speed_kmh", "source",
        "account", "raw",
    )  # fmt: skip
    data = [
        (r.imei, r.alarm_time, r.alarm_type, r.alarm_name, r.lat, r.lng, r.speed_kmh, r.source,
         r.account, Jsonb(r.raw))
        for r in rows
    ]  # fmt: skip
    return _upsert(conn, "tracksolid.alarms", columns, ("imei", "alarm_time", "alarm_type"), data)[
        0
    ]


def upsert_devices(
    conn: Conn, devices: list[dict[str, Any]], *, seen_at: datetime | None = None
) -> tuple[int, int]:
    """Upsert API device data (FIX-M17: every API field). A null from the API never erases a
    value already stored (e.g. a driver name imported from the registry CSV); registry-only
    fields (cost_centre, city, vehicle_type) are never touched here. Every row counts as
    listed by an account now (`api_listed_at`, the registry life cycle's clock). A changed
    driver is recorded in the driver history from `seen_at` (the worker's clock; default now)
    by the devices trigger of migration 0105."""
    if not devices:
        return 0, 0
    set_assignment_context(conn, "api", seen_at)
    columns = ("imei", *DEVICE_API_COLUMNS, "raw")
    data = [(*(d[c] for c in ("imei", *DEVICE_API_COLUMNS)), Jsonb(d.get("raw"))) for d in devices]
    target = sql.Identifier("tracksolid", "devices")
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    marks = sql.SQL(", ").join(sql.Placeholder() * len(columns))
    sets = sql.SQL(", ").join(
        sql.SQL("{c} = COALESCE(EXCLUDED.{c}, t.{c})").format(c=sql.Identifier(c))
        for c in (*DEVICE_API_COLUMNS, "raw")
    )
    query = sql.SQL(
        "INSERT INTO {target} AS t ({cols}, api_synced_at, api_listed_at)"
        " VALUES ({marks}, now(), now())"
        " ON CONFLICT (imei) DO UPDATE SET {sets}, api_synced_at = now(), api_listed_at = now(),"
        " updated_at = now()"
        " RETURNING (xmax = 0)"
    ).format(target=target, cols=cols, marks=marks, sets=sets)
    with conn.cursor() as cur:
        cur.executemany(query, data, returning=True)
        return count_new_and_updated(cur)


def set_assignment_context(conn: Conn, source: str, at: datetime | None = None) -> None:
    """Tell the devices trigger (0105) who records driver changes in this transaction, and
    from when (None: the transaction's now())."""
    conn.execute(
        "SELECT set_config('tracksolid.assignment_source', %s, true),"
        " set_config('tracksolid.assigned_at', %s, true)",
        (source, at.isoformat() if at else ""),
    )


def relist_devices(conn: Conn, imeis: Sequence[str]) -> int:
    """Devices deactivated because no account listed them (`not_listed`) and listed again
    become active again; a device the registry switched off stays off. Returns how many."""
    if not imeis:
        return 0
    return conn.execute(
        "UPDATE tracksolid.devices SET is_active = true, deactivated_at = NULL,"
        " deactivation_reason = NULL, updated_at = now()"
        " WHERE imei = ANY(%s) AND NOT is_active AND deactivation_reason = 'not_listed'",
        (list(imeis),),
    ).rowcount


def deactivate_unlisted(conn: Conn, days: int) -> int:
    """Deactivate (never delete) active devices that an account listed once but none has
    listed for `days` days (`not_listed`). Devices never listed (registry or push only) are
    left alone: the audit reports them. Returns how many."""
    return conn.execute(
        "UPDATE tracksolid.devices SET is_active = false, deactivated_at = now(),"
        " deactivation_reason = 'not_listed', updated_at = now()"
        " WHERE is_active AND api_listed_at < now() - make_interval(days => %s)",
        (days,),
    ).rowcount


# Driver history (tracksolid.driver_assignments, migration 0105). `_drv_change` gets one row
# per device whose registry driver (devices.driver_name) must be recorded from `eff_from`:
# given (the CSV's assigned_from), else the time of the sync / import — or -infinity for a
# vehicle without any history yet (its first known driver drove all its stored trips).
# `c_*` describe the period containing eff_from; `later` = periods starting after it.
_DRIVER_CHANGES_SQL = """
INSERT INTO _drv_change
SELECT s.imei, btrim(d.driver_name), nullif(btrim(d.driver_phone), ''), f.eff_from,
       c.assignment_id, c.valid_from, lower(c.driver_name) = lower(btrim(d.driver_name)),
       EXISTS (SELECT 1 FROM tracksolid.driver_assignments a
               WHERE a.imei = s.imei AND a.valid_from > f.eff_from)
FROM _stage_drivers s
JOIN tracksolid.devices d ON d.imei = s.imei AND nullif(btrim(d.driver_name), '') IS NOT NULL
LEFT JOIN LATERAL (
    SELECT a.valid_from FROM tracksolid.driver_assignments a
    WHERE a.imei = s.imei ORDER BY a.valid_from DESC LIMIT 1
) latest ON true
CROSS JOIN LATERAL (
    SELECT coalesce(s.given_from, CASE
        WHEN latest.valid_from IS NULL THEN '-infinity'::timestamptz
        ELSE greatest(coalesce(%(at)s::timestamptz, now()),
                      latest.valid_from + interval '1 second') END)
        AS eff_from
) f
LEFT JOIN LATERAL (
    SELECT a.assignment_id, a.valid_from, a.driver_name FROM tracksolid.driver_assignments a
    WHERE a.imei = s.imei AND a.valid_from <= f.eff_from
      AND (a.valid_to IS NULL OR a.valid_to > f.eff_from)
) c ON true
"""
_DRIVER_APPLY_SQL = (
    # unchanged driver: only a new phone number of the current period is taken
    "UPDATE tracksolid.driver_assignments a SET driver_phone = x.driver_phone"
    " FROM _drv_change x WHERE a.assignment_id = x.c_id AND x.c_same AND NOT x.later"
    " AND a.valid_to IS NULL AND x.driver_phone IS NOT NULL"
    " AND a.driver_phone IS DISTINCT FROM x.driver_phone",
    "DELETE FROM _drv_change WHERE c_same AND NOT later",
    # an explicit start overrides what was recorded after it
    "DELETE FROM tracksolid.driver_assignments a USING _drv_change x"
    " WHERE a.imei = x.imei AND a.valid_from > x.eff_from",
    "UPDATE tracksolid.driver_assignments a SET valid_to = NULL,"
    " driver_phone = coalesce(x.driver_phone, a.driver_phone)"
    " FROM _drv_change x WHERE a.assignment_id = x.c_id AND x.c_same",
    "DELETE FROM tracksolid.driver_assignments a USING _drv_change x"
    " WHERE a.assignment_id = x.c_id AND NOT x.c_same AND x.c_from = x.eff_from",
    "UPDATE tracksolid.driver_assignments a SET valid_to = x.eff_from"
    " FROM _drv_change x WHERE a.assignment_id = x.c_id AND NOT x.c_same"
    " AND x.c_from < x.eff_from",
)


def record_driver_changes(
    conn: Conn,
    imeis: Sequence[str],
    *,
    source: str,
    at: datetime | None = None,
    starts: dict[str, datetime] | None = None,
) -> int:
    """Bring the driver history of `imeis` in line with their registry driver, set-based.

    A changed driver closes the period that contains its start and opens a new one (from
    `starts[imei]` when given, else `at` / now); an unchanged driver does nothing (a new
    phone number is stored on the current period). An explicit start earlier than recorded
    changes replaces the periods after it. Devices without a driver are left alone.
    Returns the number of periods opened or re-opened.
    """
    if not imeis:
        return 0
    given = starts or {}
    _stage(conn, "_stage_drivers", ("imei", "given_from"), ("text", "timestamptz"))
    _copy(conn, "_stage_drivers", ("imei", "given_from"), ("text", "timestamptz"),
          [(i, given.get(i)) for i in dict.fromkeys(imeis)])  # fmt: skip
    _stage(
        conn, "_drv_change",
        ("imei", "driver_name", "driver_phone", "eff_from", "c_id", "c_from", "c_same", "later"),
        ("text", "text", "text", "timestamptz", "int8", "timestamptz", "bool", "bool"),
    )  # fmt: skip
    conn.execute(_DRIVER_CHANGES_SQL, {"at": at})
    for statement in _DRIVER_APPLY_SQL:
        conn.execute(statement)
    opened = conn.execute(
        "INSERT INTO tracksolid.driver_assignments"
        " (imei, driver_name, driver_phone, valid_from, source)"
        " SELECT x.imei, x.driver_name, x.driver_phone, x.eff_from, %s FROM _drv_change x"
        " WHERE NOT coalesce(x.c_same, false)",
        (source,),
    ).rowcount
    reopened = conn.execute("SELECT count(*) FROM _drv_change WHERE c_same").fetchone()
    return opened + (int(reopened[0]) if reopened else 0)


def reactivate_devices(conn: Conn, imeis: Sequence[str]) -> int:
    """Devices the API lists / answers again go back to `poll_state = 'active'`; returns how
    many were marked `unknown_to_api` before."""
    if not imeis:
        return 0
    return conn.execute(
        "UPDATE tracksolid.devices SET poll_state = 'active', poll_state_since = now(),"
        " poll_checked_at = NULL, updated_at = now()"
        " WHERE imei = ANY(%s) AND poll_state <> 'active'",
        (list(imeis),),
    ).rowcount


def set_watermarks(conn: Conn, job: str, imeis: Sequence[str], until: datetime) -> None:
    """Record that `job` has read `imeis` up to `until` (never moves a watermark back)."""
    if not imeis:
        return
    conn.execute(
        """
        INSERT INTO tracksolid.ingest_watermarks (job, imei, covered_until)
        SELECT %s, imei, %s FROM unnest(%s::text[]) AS imei
        ON CONFLICT (job, imei) DO UPDATE
            SET covered_until = GREATEST(tracksolid.ingest_watermarks.covered_until,
                                         EXCLUDED.covered_until),
                updated_at = now()
        """,
        (job, until, list(imeis)),
    )


def get_watermarks(conn: Conn, job: str) -> dict[str, datetime]:
    """Per IMEI, up to when `job` has read it."""
    rows = conn.execute(
        "SELECT imei, covered_until FROM tracksolid.ingest_watermarks WHERE job = %s", (job,)
    ).fetchall()
    return {r[0]: r[1] for r in rows}
