"""The read-API's error answers: every 4xx and 5xx is `{"detail": "<one sentence>"}`.

`install_error_handlers(app)` maps, in one place:

| Raised | Status | Sentence |
|---|---|---|
| `ParamError` (dashboard/params.py) | its `status_code` (422, 413) | the error's own |
| SQLSTATE 22023 from a `reporting.fn_*` | 422 | PostgreSQL's primary message |
| any other SQLSTATE 22 (data exception) | 422 | "a parameter is out of range ..." |
| `RequestValidationError` (FastAPI) | 422 | "<parameter> is invalid: <why>" |
| `HTTPException` (401, 404, 405, 400 ...) | its own | its detail, or one per status |
| SQLSTATE 57014 (`statement_timeout`) | 503 | "... took longer than N s ... narrow the request" |
| `PoolTimeout`, `OperationalError` | 503 + `Retry-After: 5` | "the database is unavailable ..." |
| anything else | 500 | "internal error ..." (Starlette still logs the traceback) |

Handled errors log one line without a traceback; request values are never logged.
"""

from __future__ import annotations

import http
import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from dashboard.params import ParamError

log = logging.getLogger("dashboard_api")

_SENTENCES = {
    400: "the request is malformed",
    401: "missing or invalid API key (send X-API-Key or Authorization: Bearer)",
    403: "this request is not allowed",
    404: "there is no such endpoint or file (the endpoints are listed at /docs)",
    413: "the request body is too large",
}


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on `app` (the read-API, or a test app with one router)."""
    app.add_exception_handler(ParamError, _param_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(psycopg.errors.InvalidParameterValue, _sql_param_error)
    app.add_exception_handler(psycopg.DataError, _sql_data_error)
    app.add_exception_handler(psycopg.errors.QueryCanceled, _query_cancelled)
    app.add_exception_handler(PoolTimeout, _db_unavailable)
    app.add_exception_handler(psycopg.OperationalError, _db_unavailable)
    app.add_exception_handler(Exception, _internal_error)


def detail(message: str, status_code: int, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape of the read-API."""
    return JSONResponse({"detail": message}, status_code=status_code, headers=headers)


async def _param_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 422)
    return detail(str(exc), status)


async def _sql_param_error(request: Request, exc: Exception) -> Response:
    # The reporting functions raise SQLSTATE 22023 with a sentence meant for the caller.
    diag = getattr(exc, "diag", None)
    message = getattr(diag, "message_primary", None) or str(exc)
    return detail(message, 422)


async def _sql_data_error(request: Request, exc: Exception) -> Response:
    # Defence in depth: params.py refuses what PostgreSQL cannot take (NUL, surrogates, dates
    # out of range); if a value still trips a data exception, it is the caller's, not a 500.
    sqlstate = getattr(exc, "sqlstate", None)
    log.warning("data exception on %s: %s %s", request.url.path, type(exc).__name__, sqlstate)
    return detail("a parameter is out of range or malformed for the database", 422)


async def _query_cancelled(request: Request, exc: Exception) -> Response:
    settings = getattr(request.app.state, "settings", None)
    limit = getattr(settings, "dashboard_statement_timeout_s", None)
    took = f"longer than {limit} s" if limit else "too long"
    log.warning("statement timeout on %s", request.url.path)
    return detail(
        f"the query took {took} and was cancelled: narrow the request"
        " (a shorter date range or a filter)",
        503,
    )


async def _db_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("database unavailable for %s: %s", request.url.path, type(exc).__name__)
    return detail("the database is unavailable, retry shortly", 503, {"Retry-After": "5"})


async def _validation_error(request: Request, exc: Exception) -> Response:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    if not errors:
        return detail("the request is invalid", 422)
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part not in ("query", "body")]
    name = ".".join(loc) or "the body"
    why = str(first.get("msg", "invalid value")).rstrip(".")
    return detail(f"{name} is invalid: {why}", 422)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    phrase = http.HTTPStatus(exc.status_code).phrase if exc.status_code in _STATUSES else ""
    message = exc.detail if isinstance(exc.detail, str) else ""
    if not message or message == phrase:  # Starlette's default ("Not Found"): say more
        message = _SENTENCES.get(exc.status_code, "")
        if exc.status_code == 405:
            allowed = (headers or {}).get("Allow") or (headers or {}).get("allow")
            message = f"method {request.method} is not allowed here" + (
                f" (allowed: {allowed})" if allowed else ""
            )
        message = message or (phrase.lower() if phrase else f"HTTP {exc.status_code}")
    return detail(message, exc.status_code, headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return detail("internal error; the server log has the details", 500)


_STATUSES = {status.value for status in http.HTTPStatus}
