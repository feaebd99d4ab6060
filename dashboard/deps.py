"""Shared FastAPI dependencies of the read-API: the read-only pool, API keys, SQL-built JSON.

Every router of the read-API (dashboard_api.py, dashboard/tickets.py, dashboard/fuel.py)
takes its pool and settings from `request.app.state` (`ro_pool`, `settings`), set by the
app's lifespan — so a test can mount a router on its own FastAPI app with its own pool.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import HTTPException, Request, Response
from psycopg import sql
from psycopg_pool import ConnectionPool

from ts_shared import DatabaseUnavailableError, Settings, make_pool


def ro_pool(request: Request) -> ConnectionPool:
    """The read-only pool (DASHBOARD_DATABASE_URL) of this app."""
    pool: ConnectionPool = request.app.state.ro_pool
    return pool


def app_settings(request: Request) -> Settings:
    """The Settings this app was built with."""
    settings: Settings = request.app.state.settings
    return settings


# Query-string names a client might put a key in; a key in a URL ends up in access logs,
# browser history and Referer headers, so these are refused even when the API is open.
_KEY_QUERY_NAMES = ("key", "api_key", "apikey", "token", "access_token")


def require_api_key(request: Request) -> None:
    """401 unless DASHBOARD_API_KEYS is empty or the request carries one of the keys in a
    header (`X-API-Key: <key>` or `Authorization: Bearer <key>`); 401 for a key in the URL."""
    if any(name in request.query_params for name in _KEY_QUERY_NAMES):
        raise HTTPException(
            status_code=401,
            detail="API keys are accepted only in the X-API-Key header (or Authorization:"
            " Bearer), never in the URL: remove ?key= and send the header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    keys = app_settings(request).api_keys
    if keys and not key_matches(request, keys):
        raise HTTPException(
            status_code=401,
            detail="missing or invalid API key (send X-API-Key or Authorization: Bearer)",
            headers={"WWW-Authenticate": "Bearer"},
        )


def key_matches(request: Request, keys: list[str]) -> bool:
    """True when the request carries one of `keys` in `X-API-Key` or `Authorization: Bearer`.

    Fixed-length digests are compared in constant time against every key, so timing reveals
    neither the key's length nor which key nearly matched."""
    presented = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if presented is None and auth.lower().startswith("bearer "):
        presented = auth[7:].strip()
    given = hashlib.sha256((presented or "").encode()).digest()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, hashlib.sha256(key.encode()).digest())
    return presented is not None and matched


def require_admin(request: Request, keys: list[str], what: str, setting: str) -> None:
    """The write endpoints' check: 401 for a key in the URL, 403 when `setting` holds no key
    (writes disabled on this server), 401 unless the request carries one of `keys`."""
    if any(name in request.query_params for name in _KEY_QUERY_NAMES):
        raise HTTPException(401, "API keys are accepted only in the X-API-Key header (or"
                            " Authorization: Bearer), never in the URL")  # fmt: skip
    if not keys:
        raise HTTPException(403, f"{what} writes are disabled on this server: set {setting}"
                            " to enable them")  # fmt: skip
    if not key_matches(request, keys):
        raise HTTPException(401, f"missing or invalid {what} admin key ({setting}; send"
                            " X-API-Key or Authorization: Bearer)",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip


def with_owner_connection[T](settings: Settings, name: str, action: Callable[[Any], T]) -> T:
    """Run `action(conn)` on the read-write database (the owner's URL, one short-lived
    connection): the write endpoints' way, since `dashboard_ro` may not write. 503 while the
    database is unavailable."""
    try:
        pool = make_pool(settings.dsn(), min_size=1, max_size=1, name=name,
                         timeout=10.0, durable=True)  # fmt: skip
    except DatabaseUnavailableError:
        raise HTTPException(503, "the database is unavailable, retry shortly",
                            headers={"Retry-After": "5"}) from None  # fmt: skip
    try:
        with pool.connection() as conn:
            return action(conn)
    finally:
        pool.close()


def json_from_sql(
    pool: ConnectionPool,
    query: sql.Composable | str,
    params: Sequence[Any] | dict[str, Any] | None = None,
) -> Response:
    """Run a query whose single value is JSON text and return it unchanged (no Python
    re-serialisation). The query must select one `...::text` value; NULL becomes `null`."""
    with pool.connection() as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    text = row[0] if row and row[0] is not None else "null"
    return Response(content=text, media_type="application/json")
