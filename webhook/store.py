"""Write one push delivery to PostgreSQL: inbox row, typed rows and ingestion_log together.

A delivery is one SQL statement (data-modifying CTEs over `unnest` arrays) run in autocommit,
so it is one atomic unit of work and one round trip whatever its size. The inbox row is
inserted `ON CONFLICT (delivery_key) DO NOTHING` and every typed insert is conditioned on the
inbox row being new: replaying or re-delivering the same delivery changes nothing.

Failure modes of `write_delivery`:
- `psycopg.OperationalError` (server down, connection lost, deadlock, timeout) is raised
  unchanged: nothing was written, the caller spools the delivery and retries later;
- any other error (a value PostgreSQL refuses, a bug) falls back to storing the delivery raw
  (`status='stored'`, the reason in `errors`), so an accepted delivery is never dropped.

`write_batch` (the spool replay) runs the same statements for many deliveries in one
pipelined transaction, all or nothing, and raises whatever fails (no raw fallback): the
replayer then goes back to `write_delivery`, one delivery at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingest.quality import JUMP_FLAG, jump_sql
from ts_shared import Settings, utcnow
from webhook.parse import (
    AlarmRow,
    EventRow,
    FaultRow,
    FuelRow,
    HeartbeatRow,
    LbsRow,
    MalformedDeliveryError,
    ObdRow,
    ParseContext,
    ParsedDelivery,
    PositionRow,
    TemperatureRow,
    TripRow,
    decode_json,
    items_of,
    parse_delivery,
    parser_for,
)

log = logging.getLogger(__name__)

OPENAPI_PATH = "/push"


# ─────────────────────────────────────────────────────────────────────────────
# The delivery (what the HTTP layer accepted; also the spool record)
# ─────────────────────────────────────────────────────────────────────────────


@dataclass
class Delivery:
    """One accepted (or rejected) push delivery, as received.

    `data` is the JSON text of `data_list` (IoT-hub) or `data` (Open-API); for a rejected
    delivery it is the raw body and `reject_reason` says why.
    """

    path: str
    msg_type: str | None
    data: str
    received_at: datetime
    reject_reason: str | None = None
    spooled: bool = False
    # The decoded `data`, when the HTTP layer already decoded it (saves a second json.loads).
    decoded: Any = field(default=None, repr=False, compare=False)

    @property
    def method(self) -> str:
        """What ingestion_log.method records: the path, or `/push:<msgType>`."""
        if self.msg_type is not None:
            return f"{self.path}:{self.msg_type}"
        return self.path

    @property
    def key(self) -> bytes:
        """Idempotency key: SHA-256 of path, msgType and data."""
        digest = hashlib.sha256(self.path.encode())
        digest.update(b"\x00" + (self.msg_type or "").encode() + b"\x00")
        digest.update(self.data.encode("utf-8", "replace"))
        return digest.digest()

    def to_json(self) -> bytes:
        """The spool record (ASCII JSON: any string round-trips, even an unpaired surrogate).

        Holds no token: the HTTP layer blanked it in `data` before building the Delivery."""
        record = {
            "v": 1,
            "path": self.path,
            "msg_type": self.msg_type,
            "data": self.data,
            "received_at": self.received_at.isoformat(),
            "reject_reason": self.reject_reason,
        }
        return json.dumps(record, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_json(cls, raw: bytes) -> Delivery:
        """Read a spool record back (`ValueError`/`KeyError` when it is not one)."""
        record = json.loads(raw)
        return cls(
            path=str(record["path"]),
            msg_type=record.get("msg_type"),
            data=str(record["data"]),
            received_at=datetime.fromisoformat(record["received_at"]),
            reject_reason=record.get("reject_reason"),
            spooled=True,
        )


@dataclass(frozen=True)
class StoreResult:
    """What `write_delivery` did."""

    inbox_id: int | None  # None: a duplicate (already stored)
    items: int
    items_ok: int
    items_failed: int
    status: str


# ─────────────────────────────────────────────────────────────────────────────
# Table specs and the statement builder
# ─────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class _Table:
    name: str
    row: type[Any]
    types: tuple[str, ...]
    conflict: str


_POSITION_TYPES = (
    *("text", "timestamptz", "float8", "float8", "float4", "int2", "bool", "text"),
    *("int2", "int2", "float4", "text"),
)
_OBD_TYPES = (
    *("text", "timestamptz", "float8", "float8", "float4", "float4", "float4", "float4"),
    *("float4", "float4", "text", "text", "jsonb"),
)
_TRIP_TYPES = (
    *("text", "timestamptz", "timestamptz", "float8", "float8", "float8", "float8"),
    *("numeric", "int4", "float4", "float4", "float8", "float8", "float4", "text", "jsonb"),
)

_TABLES: tuple[_Table, ...] = (
    _Table(
        "position_history",
        PositionRow,
        (*_POSITION_TYPES,),
        "ON CONFLICT (imei, gps_time) DO NOTHING",
    ),
    _Table(
        "heartbeats",
        HeartbeatRow,
        ("text", "timestamptz", "int2", "int2", "bool", "text", "bool", "text", "bool", "jsonb"),
        "ON CONFLICT (imei, gate_time) DO NOTHING",
    ),
    _Table(
        "alarms",
        AlarmRow,
        ("text", "timestamptz", "text", "text", "float8", "float8", "float4", "text", "jsonb"),
        "ON CONFLICT (imei, alarm_time, alarm_type) DO NOTHING",
    ),
    _Table(
        "device_events",
        EventRow,
        ("text", "timestamptz", "text", "text", "text", "text", "jsonb"),
        "ON CONFLICT (imei, event_time, event_type) DO NOTHING",
    ),
    _Table(
        "lbs_readings",
        LbsRow,
        ("text", "timestamptz", "text", "text", "jsonb", "int2", "jsonb"),
        "ON CONFLICT (imei, gate_time) DO NOTHING",
    ),
    _Table(
        "obd_readings",
        ObdRow,
        (*_OBD_TYPES,),
        "ON CONFLICT (imei, reading_time) DO NOTHING",
    ),
    _Table(
        "fault_codes",
        FaultRow,
        ("text", "timestamptz", "text", "text", "jsonb"),
        "ON CONFLICT (imei, reported_at, code) DO NOTHING",
    ),
    _Table(
        "trips",
        TripRow,
        (*_TRIP_TYPES,),
        "ON CONFLICT (imei, start_time) DO NOTHING",
    ),
    _Table(
        "fuel_readings",
        FuelRow,
        ("text", "timestamptz", "float4", "text", "jsonb"),
        "ON CONFLICT (imei, reading_time) DO NOTHING",
    ),
    _Table(
        "temperature_readings",
        TemperatureRow,
        ("text", "timestamptz", "text", "float4", "jsonb"),
        "ON CONFLICT (imei, reading_time, sensor) DO NOTHING",
    ),
)
_BY_NAME = {t.name: t for t in _TABLES}


def _rows_from_json(param: str, columns: tuple[str, ...], types: tuple[str, ...]) -> sql.Composed:
    """`(SELECT (e->>0)::type AS col0, ... FROM jsonb_array_elements(%(param)s::jsonb) e) AS u`.

    Rows travel as one JSON array of arrays per table: json.dumps (C) is far cheaper than
    psycopg dumping one Python list per column, and the server casts each field.
    """
    fields = sql.SQL(", ").join(
        sql.SQL("nullif(e->{}, 'null'::jsonb) AS {}").format(sql.Literal(i), sql.Identifier(c))
        if pg_type == "jsonb"
        else sql.SQL("(e->>{})::{} AS {}").format(
            sql.Literal(i),
            sql.SQL(pg_type),  # a type name from the constant table specs
            sql.Identifier(c),
        )
        for i, (c, pg_type) in enumerate(zip(columns, types, strict=True))
    )
    return sql.SQL("(SELECT {} FROM jsonb_array_elements({}::jsonb) AS e) AS u").format(
        fields, sql.Placeholder(param)
    )


_INBOX_CTE = """
inbox AS (
    INSERT INTO tracksolid.push_inbox
        (received_at, path, msg_type, item_count, items_ok, items_failed, payload, errors,
         status, delivery_key, spooled)
    VALUES (%(received_at)s, %(path)s, %(msg_type)s, %(item_count)s, %(items_ok)s,
            %(items_failed)s, %(payload)s::jsonb, %(errors)s, %(status)s, %(key)s, %(spooled)s)
    ON CONFLICT (delivery_key) DO NOTHING
    RETURNING inbox_id
)"""

_LOG_TAIL = """
INSERT INTO tracksolid.ingestion_log
    (source, method, ok, result_code, rows, duration_ms, error, detail)
SELECT 'push', %(method)s, %(ok)s, 200,
       CASE WHEN i.id IS NULL THEN 0 ELSE %(rows)s END, %(duration_ms)s, %(error)s,
       jsonb_build_object('inbox_id', i.id, 'items', %(item_count)s::int,
                          'failed', %(items_failed)s::int, 'duplicate', i.id IS NULL,
                          'spooled', %(spooled)s::bool{flagged})
FROM (SELECT (SELECT inbox_id FROM inbox) AS id) AS i
WHERE i.id IS NOT NULL OR %(log_duplicate)s
RETURNING (detail->>'inbox_id')::bigint, true
"""


# Unknown IMEIs auto-registered from pushes per hour (PUSH_AUTOREGISTER_PER_HOUR); above it
# the data is stored but the IMEI goes to `tracksolid.push_unregistered`, not `devices`.
_autoregister = {"per_hour": int(Settings.model_fields["push_autoregister_per_hour"].default)}


def configure_autoregister(per_hour: int) -> None:
    """Set the per-hour auto-registration cap (the receiver passes its Settings value)."""
    _autoregister["per_hour"] = max(0, int(per_hour))
    _statement.cache_clear()


# Pushed GPS fixes go through the poller's quality filter (ingest/quality.py): the parser
# dropped 0,0 / out-of-range / future fixes; here each fix is judged against the last
# plausible fix before it (the device's stored track, then the delivery's own earlier fixes,
# a flagged one never becoming the reference: the recursion walks each device's fixes in
# time order, as `flag_jumps` does), stored with `quality_flag`/`implied_speed_kmh`, and only
# a plausible fix may move the live marker. All inside the delivery's one statement.
_JUMP_FROM_STORED = jump_sql("f", "r", "%(max_speed)s::float8")
_JUMP_FROM_PREVIOUS = jump_sql("f", "c", "%(max_speed)s::float8")
_POSITION_CTES = """
pin AS (
    SELECT u.*, row_number() OVER (PARTITION BY u.imei ORDER BY u.gps_time) AS n FROM {rows}
),
pchk (imei, n, implied, jump, gps_time, lat, lng) AS (
    SELECT f.imei, f.n, j.implied, j.jump,
           CASE WHEN j.jump THEN r.gps_time ELSE f.gps_time END,
           CASE WHEN j.jump THEN r.lat ELSE f.lat END,
           CASE WHEN j.jump THEN r.lng ELSE f.lng END
    FROM pin f
    -- one index probe per device and delivery: its last plausible stored fix before (0106)
    LEFT JOIN LATERAL tracksolid.last_plausible_fix(f.imei, f.gps_time) r ON true
    CROSS JOIN LATERAL (SELECT {stored_speed} AS implied, {stored_jump} AS jump) j
    WHERE f.n = 1
    UNION ALL
    SELECT f.imei, f.n, j.implied, j.jump,
           CASE WHEN j.jump THEN c.gps_time ELSE f.gps_time END,
           CASE WHEN j.jump THEN c.lat ELSE f.lat END,
           CASE WHEN j.jump THEN c.lng ELSE f.lng END
    FROM pchk c JOIN pin f ON f.imei = c.imei AND f.n = c.n + 1
    CROSS JOIN LATERAL (SELECT {prev_speed} AS implied, {prev_jump} AS jump) j
),
{cte} AS (
    INSERT INTO tracksolid.position_history ({cols}, implied_speed_kmh, quality_flag)
    SELECT {fcols}, c.implied::real, CASE WHEN c.jump THEN {flag} END
    FROM pin f JOIN pchk c ON c.imei = f.imei AND c.n = f.n
    WHERE EXISTS (SELECT 1 FROM inbox)
    ON CONFLICT (imei, gps_time) DO NOTHING
),
live AS (
    INSERT INTO tracksolid.live_positions AS lp
        (imei, gps_time, lat, lng, speed_kmh, direction_deg, acc_on, pos_type, satellites,
         source, online, updated_at)
    SELECT DISTINCT ON (f.imei) f.imei, f.gps_time, f.lat, f.lng, f.speed_kmh,
           f.direction_deg, f.acc_on, f.pos_type, f.satellites, f.source, true, now()
    FROM pin f JOIN pchk c ON c.imei = f.imei AND c.n = f.n
    WHERE NOT c.jump AND EXISTS (SELECT 1 FROM inbox)
    ORDER BY f.imei, f.gps_time DESC
    ON CONFLICT (imei) DO UPDATE SET
        gps_time = EXCLUDED.gps_time, lat = EXCLUDED.lat, lng = EXCLUDED.lng,
        speed_kmh = EXCLUDED.speed_kmh, direction_deg = EXCLUDED.direction_deg,
        acc_on = EXCLUDED.acc_on, pos_type = EXCLUDED.pos_type,
        satellites = EXCLUDED.satellites, source = EXCLUDED.source, online = true,
        updated_at = now()
    WHERE lp.gps_time < EXCLUDED.gps_time
)"""
_FLAGGED_DETAIL = (
    ", 'flagged', CASE WHEN i.id IS NULL THEN 0 ELSE (SELECT count(*) FROM pchk WHERE jump) END"
)


def _position_ctes(index: int) -> sql.Composed:
    """CTEs that flag, store and map the pushed fixes (parameter `t<index>`)."""
    table = _BY_NAME["position_history"]
    columns: tuple[str, ...] = table.row._fields
    return sql.SQL(_POSITION_CTES).format(
        rows=_rows_from_json(f"t{index}", columns, table.types),
        stored_speed=sql.SQL(_JUMP_FROM_STORED[0]),
        stored_jump=sql.SQL(_JUMP_FROM_STORED[1]),
        prev_speed=sql.SQL(_JUMP_FROM_PREVIOUS[0]),
        prev_jump=sql.SQL(_JUMP_FROM_PREVIOUS[1]),
        cte=sql.Identifier(f"t{index}"),
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        fcols=sql.SQL(", ").join(sql.Identifier("f", c) for c in columns),
        flag=sql.Literal(JUMP_FLAG),
    )


@cache
def _statement(tables: tuple[str, ...]) -> str:
    """The one statement that stores a delivery touching `tables` (rendered once per shape)."""
    ctes: list[sql.Composable] = [sql.SQL(_INBOX_CTE)]
    ctes.append(
        sql.SQL(
            """
dev_new AS (
    SELECT u.imei, u.device_name FROM {rows}
    WHERE EXISTS (SELECT 1 FROM inbox)
      AND NOT EXISTS (SELECT 1 FROM tracksolid.devices d WHERE d.imei = u.imei)
),
dev_room AS (
    SELECT greatest(0, {cap} - (SELECT count(*) FROM tracksolid.devices d
                                WHERE d.source = 'push'
                                  AND d.first_seen_at > now() - interval '1 hour')) AS n
    WHERE EXISTS (SELECT 1 FROM dev_new)
),
dev_ranked AS (
    SELECT n.imei, n.device_name,
           row_number() OVER (ORDER BY n.imei) <= (SELECT r.n FROM dev_room r) AS fits
    FROM dev_new n
),
dev AS (
    INSERT INTO tracksolid.devices (imei, device_name, source)
    SELECT k.imei, k.device_name, 'push' FROM dev_ranked k WHERE k.fits
    ON CONFLICT (imei) DO NOTHING
),
dev_over AS (
    INSERT INTO tracksolid.push_unregistered AS p (imei, device_name)
    SELECT k.imei, k.device_name FROM dev_ranked k WHERE NOT k.fits
    ON CONFLICT (imei) DO UPDATE SET last_seen_at = now(), deliveries = p.deliveries + 1,
        device_name = coalesce(EXCLUDED.device_name, p.device_name)
)"""
        ).format(
            rows=_rows_from_json("dev", ("imei", "device_name"), ("text", "text")),
            cap=sql.Literal(_autoregister["per_hour"]),
        )
    )
    for index, name in enumerate(tables):
        if name == "position_history":
            ctes.append(_position_ctes(index))
            continue
        table = _BY_NAME[name]
        columns: tuple[str, ...] = table.row._fields
        ctes.append(
            sql.SQL(
                """
{cte} AS (
    INSERT INTO {table} ({cols})
    SELECT * FROM {unnest}
    WHERE EXISTS (SELECT 1 FROM inbox)
    {conflict}
)"""
            ).format(
                cte=sql.Identifier(f"t{index}"),
                table=sql.Identifier("tracksolid", name),
                cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                unnest=_rows_from_json(f"t{index}", columns, table.types),
                conflict=sql.SQL(table.conflict),
            )
        )
    positions = "position_history" in tables
    tail = sql.SQL(_LOG_TAIL).format(flagged=sql.SQL(_FLAGGED_DETAIL if positions else ""))
    return (
        sql.SQL("WITH {}{}{}")
        .format(sql.SQL("RECURSIVE " if positions else ""), sql.SQL(",").join(ctes), tail)
        .as_string()
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _rows_json(rows: list[Any]) -> str:
    """Rows (NamedTuples serialise as JSON arrays) as one JSON text."""
    return json.dumps(rows, default=_json_default, ensure_ascii=False, separators=(",", ":"))


# ─────────────────────────────────────────────────────────────────────────────
# Writers
# ─────────────────────────────────────────────────────────────────────────────


def parse(delivery: Delivery, ctx: ParseContext) -> tuple[ParsedDelivery, str]:
    """Decode and parse an accepted delivery; returns the rows and the payload text."""
    what = "data" if delivery.msg_type is not None else "data_list"
    if delivery.decoded is not None:
        value, payload = delivery.decoded, delivery.data
    else:
        value, payload = decode_json(delivery.data, what)
    items = items_of(value, what)
    return parse_delivery(parser_for(delivery.path, delivery.msg_type), items, ctx), payload


def _execute(conn: psycopg.Connection[Any], query: str | sql.SQL, params: dict[str, Any]) -> Any:
    if not conn.autocommit:
        conn.autocommit = True  # every write is one statement: atomic without BEGIN/COMMIT
    return conn.execute(query, params).fetchone()


def _prepared(
    delivery: Delivery, parsed: ParsedDelivery, payload: str, *, log_duplicate: bool
) -> tuple[str, dict[str, Any]]:
    """The statement (rendered once per shape) and parameters that store a parsed delivery."""
    tables = tuple(t.name for t in _TABLES if parsed.rows.get(t.row))
    params: dict[str, Any] = {
        "received_at": delivery.received_at,
        "path": delivery.path,
        "msg_type": delivery.msg_type,
        "item_count": parsed.item_count,
        "items_ok": parsed.items_ok,
        "items_failed": parsed.items_failed,
        "payload": payload,
        "errors": Jsonb(parsed.errors) if parsed.errors else None,
        "status": parsed.status,
        "key": delivery.key,
        "spooled": delivery.spooled,
        "method": delivery.method,
        "ok": not parsed.errors,
        "rows": parsed.items_ok,
        "error": parsed.error_text(),
        "log_duplicate": log_duplicate,
    }
    params["dev"] = _rows_json(sorted(parsed.devices.items()))
    for index, name in enumerate(tables):
        params[f"t{index}"] = _rows_json(parsed.rows[_BY_NAME[name].row])
    if "position_history" in tables:
        params["max_speed"] = parsed.max_speed_kmh
    params["duration_ms"] = _elapsed_ms(delivery)
    return _statement(tables), params


def store_parsed(
    conn: psycopg.Connection[Any],
    delivery: Delivery,
    parsed: ParsedDelivery,
    payload: str,
    *,
    log_duplicate: bool = True,
) -> StoreResult:
    """Store a parsed delivery in one statement; see the module doc for failure modes."""
    query, params = _prepared(delivery, parsed, payload, log_duplicate=log_duplicate)
    row = _execute(conn, query, params)
    inbox_id = int(row[0]) if row and row[0] is not None else None
    return StoreResult(
        inbox_id, parsed.item_count, parsed.items_ok, parsed.items_failed, parsed.status
    )


def _elapsed_ms(delivery: Delivery) -> int:
    return max(0, int((utcnow() - delivery.received_at).total_seconds() * 1000))


_RAW_ONLY = """
WITH inbox AS (
    INSERT INTO tracksolid.push_inbox
        (received_at, path, msg_type, item_count, payload, raw_body, errors, status,
         delivery_key, spooled)
    VALUES (%(received_at)s, %(path)s, %(msg_type)s, %(item_count)s, %(payload)s::jsonb,
            %(raw_body)s, %(errors)s, %(status)s, %(key)s, %(spooled)s)
    ON CONFLICT (delivery_key) DO NOTHING
    RETURNING inbox_id
)
INSERT INTO tracksolid.ingestion_log
    (source, method, ok, result_code, rows, duration_ms, error, detail)
SELECT 'push', %(method)s, false, %(code)s, 0, %(duration_ms)s, %(error)s,
       jsonb_build_object('inbox_id', inbox_id, 'spooled', %(spooled)s::bool)
FROM inbox
RETURNING (detail->>'inbox_id')::bigint, true
"""


def store_raw(
    conn: psycopg.Connection[Any],
    delivery: Delivery,
    reason: str,
    *,
    status: str,
    payload: str | None,
    item_count: int = 0,
) -> int | None:
    """Keep a delivery without typed rows: a rejected body (`status='rejected'`, HTTP 400)
    or an accepted one whose typed write failed (`status='stored'`). Returns the inbox id."""
    params = _raw_params(delivery, reason, status=status, payload=payload, item_count=item_count)
    row = _execute(conn, sql.SQL(_RAW_ONLY), params)
    return int(row[0]) if row and row[0] is not None else None


def _raw_params(
    delivery: Delivery, reason: str, *, status: str, payload: str | None, item_count: int = 0
) -> dict[str, Any]:
    rejected = status == "rejected"
    return {
        "received_at": delivery.received_at,
        "path": delivery.path,
        "msg_type": delivery.msg_type,
        "item_count": item_count,
        "payload": payload,
        "raw_body": None if payload is not None else delivery.data.replace("\x00", ""),
        "errors": Jsonb([{"reason": reason}]),
        "status": status,
        "key": None if rejected else delivery.key,
        "spooled": delivery.spooled,
        "method": delivery.method,
        "code": 400 if rejected else 200,
        "duration_ms": _elapsed_ms(delivery),
        "error": reason[:2000],
    }


def write_delivery(
    conn: psycopg.Connection[Any],
    delivery: Delivery,
    ctx: ParseContext,
    *,
    log_duplicate: bool = True,
) -> StoreResult:
    """Store one delivery (accepted or rejected); raises only `psycopg.OperationalError`."""
    if delivery.reject_reason is not None:
        inbox_id = store_raw(
            conn, delivery, delivery.reject_reason, status="rejected", payload=None
        )
        return StoreResult(inbox_id, 0, 0, 0, "rejected")
    started = time.monotonic()
    try:
        parsed, payload = parse(delivery, ctx)
        return store_parsed(conn, delivery, parsed, payload, log_duplicate=log_duplicate)
    except psycopg.OperationalError:
        raise
    except MalformedDeliveryError as exc:  # only from a hand-edited spool file
        reason = str(exc)
    except Exception as exc:
        reason = f"typed write failed: {type(exc).__name__}: {exc}"
        log.error("%s: %s; keeping the delivery raw", delivery.method, reason)
    try:
        inbox_id = store_raw(
            conn, delivery, reason[:1000], status="stored", payload=_json_or_none(delivery.data)
        )
    except psycopg.OperationalError:
        raise
    except Exception as exc:  # e.g. the JSON is refused by jsonb: keep the text instead
        log.error("%s: raw jsonb refused (%s); keeping the body as text", delivery.method, exc)
        inbox_id = store_raw(conn, delivery, reason[:1000], status="stored", payload=None)
    log.debug("%s stored raw in %.1f ms", delivery.method, (time.monotonic() - started) * 1000)
    return StoreResult(inbox_id, 0, 0, 0, "stored")


def _json_or_none(text: str) -> str | None:
    try:
        json.loads(text)
    except ValueError:
        return None
    return text


def write_batch(
    conn: psycopg.Connection[Any], deliveries: list[Delivery], ctx: ParseContext
) -> None:
    """Store many (spooled) deliveries in one transaction, in list order: one commit and one
    WAL flush for all, statements pipelined (no round trip waited per delivery).

    Same statements as `write_delivery` (idempotent on `delivery_key`; a duplicate is not
    logged), but all or nothing and without the raw fallback: any error is raised after the
    transaction rolled back (`psycopg.OperationalError` when the server is gone, anything
    else for a delivery that needs `write_delivery`'s one-by-one handling)."""
    if not conn.autocommit:
        conn.autocommit = True  # `transaction()` then issues BEGIN/COMMIT itself
    with conn.pipeline(), conn.transaction():
        for delivery in deliveries:
            # Parsed one at a time inside the pipeline: the server runs the statements already
            # sent while Python parses the next delivery.
            query: str | sql.SQL
            if delivery.reject_reason is not None:
                query = sql.SQL(_RAW_ONLY)
                params = _raw_params(
                    delivery, delivery.reject_reason, status="rejected", payload=None
                )
            else:
                parsed, payload = parse(delivery, ctx)
                query, params = _prepared(delivery, parsed, payload, log_duplicate=False)
            conn.execute(query, params)
