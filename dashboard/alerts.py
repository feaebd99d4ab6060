"""Read-API for alerts (docs/alerts.md).

    GET  /alerts/rules              every rule
    POST /alerts/rules              a rule (JSON) → 201; 409 when the name exists
    GET  /alerts                    history, newest first (state, rule_id, subject, from, to,
                                    limit, offset), with each alert's messages and deliveries
    POST /alerts/{id}/ack           acknowledge an open alert → 200; 404 none; 409 not open

Mounted through `dashboard_api.OPTIONAL_ROUTERS`, so every route is behind the read-API key
(DASHBOARD_API_KEYS). The writes also need a key of ALERTS_ADMIN_KEYS (`X-API-Key` or
`Authorization: Bearer`): with none configured they answer 403, a wrong or missing key 401.
Reads go through `reporting.fn_alert*` on the read-only pool; writes use the read-write
DATABASE_URL through a one-connection pool per request (rare, operator-driven — the same
pattern as dashboard/geofences.py). Errors are `{"detail": "<sentence>"}`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from alerts.rules import RuleError, insert_rule, validate_rule
from dashboard.deps import (
    app_settings,
    json_from_sql,
    require_admin,
    ro_pool,
    with_owner_connection,
)
from dashboard.params import ParamError, check_json_depth, filter_value, parse_int, parse_when
from ts_shared import Settings

router = APIRouter(tags=["alerts"])

MAX_BODY_BYTES = 64 * 1024
MAX_ID = 2**62
STATES = ("open", "acked", "resolved")


def require_alerts_admin(request: Request) -> None:
    """403 when ALERTS_ADMIN_KEYS is empty (writes disabled); 401 unless the request carries
    one of its keys in `X-API-Key` or `Authorization: Bearer` (dashboard.deps.require_admin)."""
    require_admin(request, app_settings(request).alerts_admin_key_list, "alert",
                  "ALERTS_ADMIN_KEYS")  # fmt: skip


def _small_int(text: str) -> int:
    if len(text.lstrip("-")) > 12:
        raise ParamError("a number in the body has too many digits")
    return int(text)


def _bad_constant(text: str) -> Any:
    raise ParamError(f"{text} is not allowed in the body")


async def _json_body(request: Request) -> Any:
    """The JSON body (empty = None): 415 unless JSON, 413 past MAX_BODY_BYTES, 422 if bad."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype != "application/json":
        raise HTTPException(415, "send the body as JSON (Content-Type: application/json)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParamError("the body is not UTF-8") from None
    check_json_depth(text)
    try:
        return json.loads(text, parse_int=_small_int, parse_constant=_bad_constant)
    except json.JSONDecodeError as exc:
        raise ParamError(f"the body is not valid JSON: {exc.msg} at {exc.pos}") from None


def _write(settings: Settings, action: Any) -> Any:
    """Run `action(conn)` on the read-write database (one short-lived connection)."""
    return with_owner_connection(settings, "alerts_admin", action)


@router.get("/alerts/rules")
def list_rules(pool: Annotated[ConnectionPool, Depends(ro_pool)]) -> Response:
    """Every alert rule, oldest first."""
    return json_from_sql(pool, "SELECT reporting.fn_alert_rules()::text")


@router.post("/alerts/rules", status_code=201, dependencies=[Depends(require_alerts_admin)])
async def create_rule(request: Request) -> JSONResponse:
    """Add a rule (docs/alerts.md lists the kinds and their params)."""
    try:
        rule = validate_rule(await _json_body(request))
    except RuleError as exc:
        raise ParamError(str(exc)) from None

    def action(conn: psycopg.Connection[Any]) -> dict[str, Any]:
        return insert_rule(conn, rule)

    try:
        row = await run_in_threadpool(_write, app_settings(request), action)
    except RuleError as exc:
        raise HTTPException(409, str(exc)) from None
    return JSONResponse({"rule": json.loads(json.dumps(row, default=str))}, status_code=201)


@router.get("/alerts")
def list_alerts(
    pool: Annotated[ConnectionPool, Depends(ro_pool)],
    state: Annotated[str | None, Query(description=" | ".join(STATES))] = None,
    rule_id: Annotated[str | None, Query(description="one rule")] = None,
    subject: Annotated[str | None, Query(description="IMEI, feed name ...")] = None,
    from_: Annotated[str | None, Query(alias="from", description="ISO-8601; naive = EAT")] = None,
    to: Annotated[str | None, Query(description="ISO-8601; a date-only `to` includes it")] = None,
    limit: Annotated[str | None, Query(description="1-1000, default 100")] = None,
    offset: Annotated[str | None, Query(description="default 0")] = None,
) -> Response:
    """Alert history, newest first, with the messages that carried each alert."""
    wanted = filter_value(state, "state")
    if wanted is not None and wanted not in STATES:
        raise ParamError(f"state must be one of {', '.join(STATES)}")
    rid = parse_int("rule_id", rule_id, default=0, low=1, high=MAX_ID) or None
    return json_from_sql(
        pool,
        "SELECT reporting.fn_alerts(%s, %s, %s, %s, %s, %s, %s)::text",
        (wanted, rid, filter_value(subject, "subject"), parse_when("from", from_),
         parse_when("to", to, is_end=True),
         parse_int("limit", limit, default=100, low=1, high=1000),
         parse_int("offset", offset, default=0, low=0, high=10**9)),
    )  # fmt: skip


ACK_SQL = """
UPDATE tracksolid.alerts SET state = 'acked', acked_at = now(), acked_by = %s
WHERE alert_id = %s AND state = 'open'
RETURNING alert_id, state, acked_at, acked_by
"""


@router.post("/alerts/{alert_id}/ack", dependencies=[Depends(require_alerts_admin)])
async def ack_alert(request: Request, alert_id: str) -> JSONResponse:
    """Acknowledge an open alert; body `{"by": "<who>"}` (optional)."""
    aid = parse_int("alert id", alert_id, default=0, low=1, high=MAX_ID)
    body = await _json_body(request)
    if body is not None and (not isinstance(body, dict) or set(body) - {"by"}):
        raise ParamError('the body must be {"by": "<who acknowledges>"} or empty')
    by = (body or {}).get("by", "api")
    if not isinstance(by, str) or not by.strip() or len(by) > 200:
        raise ParamError("by must be a non-empty text of at most 200 characters")

    def action(conn: psycopg.Connection[Any]) -> tuple[dict[str, Any] | None, str | None]:
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(ACK_SQL, (by.strip(), aid)).fetchone()
            if row is not None:
                return row, None
            found = cur.execute(
                "SELECT state FROM tracksolid.alerts WHERE alert_id = %s", (aid,)
            ).fetchone()
        return None, found["state"] if found else None

    row, state = await run_in_threadpool(_write, app_settings(request), action)
    if row is None and state is None:
        raise HTTPException(404, f"there is no alert with id {aid}")
    if row is None:
        raise HTTPException(409, f"alert {aid} is {state}, not open")
    return JSONResponse({"alert": json.loads(json.dumps(row, default=str))})
