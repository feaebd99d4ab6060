"""JIMI push receiver: `uvicorn webhook_receiver:app` (or `python webhook_receiver.py`).

Accepts both push families of `docs/jimi-open-api.md` §4 and never loses a delivery
it acknowledged:
- IoT-hub paths (`/pushgps`, `/pushhb`, `/pushalarm`, ... `/pushIothubEvent`): form fields
  `token` + `data_list` (JSON array); reply `{"code":0,"msg":"success"}`;
- the Open-API push on `POST /push`: form fields `msgType` + `data` (JSON object), or the
  same fields as a JSON body.
Each delivery is stored raw in `tracksolid.push_inbox` and, in the same statement, parsed
into the typed tables and logged in `tracksolid.ingestion_log` (webhook/store.py). While
PostgreSQL is unreachable deliveries go to a durable local spool and are replayed in order
(webhook/pipeline.py, webhook/spool.py). See docs/webhooks.md.

Checks, cheapest first: size (413) → structure, before the token is even looked at (400:
not UTF-8, a NUL character, JSON nested deeper than 32 levels, a body that is not a form or
a JSON object) → token (401, constant time) → the push fields and their JSON (400, recorded
in the inbox as `rejected` with the token blanked). Replies are `{"code": n, "msg": "<one
sentence>"}`: 200 stored or spooled · 404 unknown path · 503 only when even the spool cannot
be written. No input gives a 500. Without `JIMI_PUSH_TOKEN` the receiver refuses to start
unless `JIMI_PUSH_OPEN=1`.
"""

from __future__ import annotations

import argparse
import copy
import hmac
import json
import logging
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request, Response
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser

from ts_shared import RedactSecretsFilter, Settings, make_pool, setup_logging, utcnow
from webhook.parse import (
    IOTHUB_PARSERS,
    MAX_JSON_DEPTH,
    MalformedDeliveryError,
    decode_json,
    items_of,
    json_too_deep,
    loads_json,
    sanitize,
)
from webhook.pipeline import PushPipeline
from webhook.redact import redact_body, scrub_secret
from webhook.spool import Spool, SpoolError
from webhook.store import OPENAPI_PATH, Delivery, configure_autoregister

log = logging.getLogger("webhook_receiver")

IOTHUB_PATHS: tuple[str, ...] = tuple(IOTHUB_PARSERS)
SUCCESS = b'{"code":0,"msg":"success"}'
JSON = "application/json"


DATA_FIELDS = ("data_list", "data")
_REFUSAL_HINT = "set JIMI_PUSH_TOKEN (the push token registered with JIMI) or JIMI_PUSH_OPEN=1"
_MIN_TOKEN_LENGTH = 16


class PushTokenMissingError(RuntimeError):
    """Neither JIMI_PUSH_TOKEN nor JIMI_PUSH_OPEN=1 is set: the receiver refuses to start."""


def expected_token(settings: Settings) -> bytes | None:
    """The push token as bytes, or None when pushes are deliberately open (JIMI_PUSH_OPEN=1).

    `PushTokenMissingError` when neither is set (an empty or blank token counts as unset).
    """
    token = settings.jimi_push_token.get_secret_value() if settings.jimi_push_token else ""
    if token.strip():
        return token.encode("utf-8")
    if settings.jimi_push_open:
        return None
    raise PushTokenMissingError(f"JIMI_PUSH_TOKEN is not set: {_REFUSAL_HINT}")


def install_log_redaction() -> None:
    """Attach `RedactSecretsFilter` to uvicorn's loggers (once), however uvicorn was started:
    its access log prints the request line, `?token=...` included."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecretsFilter) for f in logger.filters):
            logger.addFilter(RedactSecretsFilter())


def _reply(status: int, message: str) -> Response:
    """`{"code": status, "msg": message}`, the message as one line of at most 300 characters."""
    line = " ".join(message.split())[:300] or "error"
    body = json.dumps({"code": status, "msg": line}, separators=(",", ":"))
    return Response(content=body, status_code=status, media_type=JSON)


def _authentic(expected: bytes | None, given: Any) -> bool:
    """Constant-time token check (any value that is not a string or bytes is wrong)."""
    if expected is None:
        return True
    if isinstance(given, str):
        presented = given.encode("utf-8", "surrogatepass")
    elif isinstance(given, bytes):
        presented = given
    else:
        presented = b""
    return hmac.compare_digest(presented, expected)


def _raw_form_token(body: bytes) -> bytes | None:
    """The `token` field of a urlencoded body, read without decoding the rest as text (for a
    body refused as malformed: is it from the real sender, so worth recording?)."""
    for part in body.split(b"&"):
        name, _, value = part.partition(b"=")
        if unquote_to_bytes(name.replace(b"+", b" ")).strip() == b"token":
            return unquote_to_bytes(value.replace(b"+", b" "))
    return None


class _TooLargeError(Exception):
    """The body is over WEBHOOK_MAX_BODY_BYTES."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (before reading it all) anything over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLargeError
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLargeError
        parts.append(chunk)
    return b"".join(parts)


def check_body(body: bytes) -> str:
    """The body as text; `MalformedDeliveryError` when it is not UTF-8 or holds a NUL byte
    (the first, cheapest checks: before the token, before any parsing)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedDeliveryError(f"body is not valid UTF-8 (byte {exc.start})") from exc
    if "\x00" in text:
        raise MalformedDeliveryError("body contains a NUL byte")
    return text


def check_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """`MalformedDeliveryError` for a field value PostgreSQL could never store (a NUL, an
    unpaired surrogate) or a JSON field nested deeper than MAX_JSON_DEPTH; else `fields`."""
    for name, value in fields.items():
        if not isinstance(value, str):
            continue
        label = f"field {name}" if name in (*DATA_FIELDS, "msgType", "token") else "a field"
        if "\x00" in value:
            raise MalformedDeliveryError(f"{label} contains a NUL character")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise MalformedDeliveryError(f"{label} is not valid UTF-8 text") from exc
        if name in DATA_FIELDS and json_too_deep(value):
            raise MalformedDeliveryError(f"{name} nests deeper than {MAX_JSON_DEPTH} levels")
    return fields


async def decode_fields(body: bytes, headers: Headers) -> dict[str, Any]:
    """Form fields of a push: urlencoded (what JIMI sends), multipart, or a JSON object.

    Structural checks come first and cost no recursion: UTF-8, NUL, nesting depth
    (`check_body`, `check_fields`). `MalformedDeliveryError` when the body fails them or
    cannot be read as any of the three.
    """
    text = check_body(body)
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == JSON or (ctype == "" and text.lstrip()[:1] == "{"):
        if json_too_deep(body):
            raise MalformedDeliveryError(f"JSON body nests deeper than {MAX_JSON_DEPTH} levels")
        value, _ = loads_json(text, "body")
        if not isinstance(value, dict):
            raise MalformedDeliveryError("JSON body must be an object with the push fields")
        return check_fields(value)
    if ctype == "multipart/form-data":

        async def stream() -> AsyncGenerator[bytes, None]:
            yield body

        try:
            form = await MultiPartParser(headers, stream()).parse()
        except (MultiPartException, ValueError, KeyError) as exc:
            raise MalformedDeliveryError("malformed multipart form") from exc
        fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
        await form.close()  # file parts are ignored; close their temporary files
        return check_fields(fields)
    try:
        fields = _fast_urlencoded(body)
    except ValueError:  # an odd escape somewhere: let the standard parser have its say
        try:
            fields = dict(parse_qsl(text, keep_blank_values=True, errors="strict"))
        except UnicodeDecodeError as exc:
            raise MalformedDeliveryError("a form field is not valid UTF-8 once decoded") from exc
    return check_fields(fields)


def _unquote(raw: bytes) -> str:
    raw = raw.replace(b"+", b" ")
    if b"%" not in raw:
        return raw.decode("utf-8")
    # %XX -> \xXX, decoded by the C codec: ~8x faster than urllib's per-escape loop on a
    # data_list where every quote, colon and comma is escaped. Backslashes are escaped first.
    escaped = raw.replace(b"\\", b"\\x5c").replace(b"%", b"\\x")
    return escaped.decode("unicode_escape").encode("latin-1").decode("utf-8")


def _fast_urlencoded(body: bytes) -> dict[str, str]:
    """application/x-www-form-urlencoded → fields; `ValueError`/`UnicodeDecodeError` on
    anything unusual (the caller then falls back to `urllib.parse.parse_qsl`)."""
    fields: dict[str, str] = {}
    for part in body.split(b"&"):
        if part:
            key, _, value = part.partition(b"=")
            fields[_unquote(key)] = _unquote(value)
    return fields


def _json_text(fields: dict[str, Any], name: str) -> tuple[Any, str]:
    """A JSON field (string in a form; already a value in a JSON body) → (value, text)."""
    if name not in fields or fields[name] is None or fields[name] == "":
        raise MalformedDeliveryError(f"missing form field {name}")
    value = fields[name]
    if isinstance(value, str):
        return decode_json(value, name, depth_checked=True)
    # Already decoded with the body (depth-bounded, odd numbers kept as text): clean it of
    # what jsonb refuses and serialise it once.
    value = sanitize(value)
    return value, json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def build_delivery(
    path: str, fields: dict[str, Any], received_at: Any, secret: str | None = None
) -> Delivery:
    """Validate the fields of a push and build the Delivery, the token (`secret`) blanked
    wherever it occurs in the data; `MalformedDeliveryError` → 400."""
    if path == OPENAPI_PATH:
        msg_type = fields.get("msgType")
        if not isinstance(msg_type, str) or not msg_type.strip():
            raise MalformedDeliveryError("missing form field msgType")
        value, text = _json_text(fields, "data")
        items_of(value, "data")
        value, text = scrub_secret(value, text, secret)
        return Delivery(path, msg_type.strip()[:200], text, received_at, decoded=value)
    value, text = _json_text(fields, "data_list")
    items_of(value, "data_list")
    value, text = scrub_secret(value, text, secret)
    return Delivery(path, None, text, received_at, decoded=value)


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _make_handler(path: str) -> Callable[[Request], Awaitable[Response]]:
    async def refuse(
        request: Request,
        body: bytes,
        reason: str,
        received_at: Any,
        *,
        record: bool,
        msg_type: Any = None,
    ) -> Response:
        """400 with the reason; an authenticated sender's body is kept in the inbox as
        `rejected` (token blanked), an unauthenticated one's only logged."""
        state = request.app.state
        reason = " ".join(reason.split())[:500]
        if not record:
            log.warning(
                "%s: malformed body from %s refused before authentication (400): %s",
                path,
                _client(request),
                reason,
            )
            return _reply(400, reason)
        secret = state.token.decode("utf-8") if state.token else None
        rejected = Delivery(
            path,
            msg_type.strip()[:200] if isinstance(msg_type, str) and msg_type.strip() else None,
            redact_body(body, secret),
            received_at,
            reject_reason=reason,
        )
        log.warning("%s: rejected (400): %s", path, reason)
        try:
            await run_in_threadpool(state.pipeline.accept, rejected)
        except SpoolError as spool_exc:  # recording a rejection is best effort
            log.error("%s: could not record a rejected body: %s", path, spool_exc)
        return _reply(400, reason)

    async def handler(request: Request) -> Response:
        state = request.app.state
        settings: Settings = state.settings
        pipeline: PushPipeline = state.pipeline
        expected: bytes | None = state.token
        received_at = utcnow()
        try:
            body = await read_body(request, settings.webhook_max_body_bytes)
        except _TooLargeError:
            log.warning("%s: body over %d bytes refused", path, settings.webhook_max_body_bytes)
            return _reply(413, f"body larger than {settings.webhook_max_body_bytes} bytes")
        query_token = request.query_params.get("token")
        try:
            fields = await decode_fields(body, request.headers)
        except MalformedDeliveryError as exc:
            # Refused before the token is read from the body. Kept in the inbox only when the
            # sender proved the token without parsing: on the URL or as a raw form field.
            raw_token = query_token if query_token is not None else _raw_form_token(body)
            authentic = raw_token is not None and _authentic(expected, raw_token)
            return await refuse(
                request, body, str(exc), received_at, record=authentic or expected is None
            )
        given = fields.get("token")
        if given is None or given == "":
            given = query_token
        if not _authentic(expected, given):
            log.warning("%s: missing or wrong token from %s: refused", path, _client(request))
            return _reply(401, "missing or invalid token")
        secret = expected.decode("utf-8") if expected else None
        try:
            delivery = build_delivery(path, fields, received_at, secret)
        except MalformedDeliveryError as exc:
            msg_type = fields.get("msgType") if path == OPENAPI_PATH else None
            return await refuse(
                request, body, str(exc), received_at, record=True, msg_type=msg_type
            )
        try:
            # At most pool-size threads write at once: more would only queue on the pool and
            # fight over the GIL.
            await anyio.to_thread.run_sync(pipeline.accept, delivery, limiter=state.limiter)
        except SpoolError as exc:
            log.error("%s: delivery neither stored nor spooled: %s", path, exc)
            return _reply(503, "temporarily unable to store the delivery")
        return Response(content=SUCCESS, media_type=JSON)

    handler.__name__ = f"push_{path.strip('/').replace(':', '_')}"
    return handler


async def _noop(request: Request) -> Response:
    """The benchmark's ceiling: read the body, reply success, do nothing else."""
    await read_body(request, request.app.state.settings.webhook_max_body_bytes)
    return Response(content=SUCCESS, media_type=JSON)


async def _health(request: Request) -> Response:
    """Database state, `synchronous_commit` of the pool's connections as the server reports
    it, and spool depth (always 200: the receiver keeps accepting pushes)."""
    pipeline: PushPipeline = request.app.state.pipeline
    report = await run_in_threadpool(pipeline.health)
    return Response(content=json.dumps(report), media_type=JSON)


def _check_token(settings: Settings) -> bytes | None:
    """`expected_token` plus the start-up log lines; logs and re-raises the refusal."""
    try:
        token = expected_token(settings)
    except PushTokenMissingError as exc:
        log.error("webhook receiver refuses to start: %s", exc)
        raise
    if token is None:
        log.warning("JIMI_PUSH_OPEN=1 and no JIMI_PUSH_TOKEN: pushes are accepted without a token")
    else:
        if settings.jimi_push_open:
            log.info("JIMI_PUSH_OPEN is ignored: JIMI_PUSH_TOKEN is set")
        if len(token) < _MIN_TOKEN_LENGTH or token.startswith(b"change-me"):
            log.warning(
                "JIMI_PUSH_TOKEN is short or a placeholder: use a long random secret"
                " (at least %d characters)",
                _MIN_TOKEN_LENGTH,
            )
    return token


def create_app(settings: Settings | None = None, *, noop_route: bool = False) -> FastAPI:
    """The receiver app. Settings (when not given), the pool, the spool and the replayer
    are built in the lifespan, never at import time. `noop_route` adds `POST /bench/noop`.

    The lifespan raises `PushTokenMissingError` (uvicorn exits non-zero) when neither
    JIMI_PUSH_TOKEN nor JIMI_PUSH_OPEN=1 is set."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        active = settings if settings is not None else Settings()
        if settings is None:  # we are the entry point: configure logging
            setup_logging(active.log_level)
        install_log_redaction()
        token = _check_token(active)
        configure_autoregister(active.push_autoregister_per_hour)
        spool = Spool(active.webhook_spool_dir)

        def open_pool() -> ConnectionPool:
            return make_pool(
                active.dsn(),
                min_size=active.db_pool_min_size,
                max_size=active.db_pool_max_size,
                name="webhook_receiver",
                open_wait=False,
                # No per-borrow check: a stale connection raises OperationalError, which the
                # pipeline already answers by spooling the delivery (measured: ~+20% /s).
                check=False,
                # A 200 means committed: synchronous_commit=on on every connection, whatever
                # the role or database says (/health reads it back from the server).
                durable=True,
            )

        pipeline = PushPipeline(active, open_pool(), spool, pool_factory=open_pool)
        pipeline.start()
        app.state.settings = active
        app.state.token = token
        app.state.pipeline = pipeline
        app.state.limiter = anyio.CapacityLimiter(active.db_pool_max_size)
        log.info(
            "webhook receiver ready: %d push paths, spool %s (%d pending)",
            len(IOTHUB_PATHS) + 1,
            spool.dir,
            spool.depth,
        )
        try:
            yield
        finally:
            pipeline.stop()
            pipeline.pool.close()
            spool.close()

    app = FastAPI(
        title="JIMI push receiver",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    for path in (*IOTHUB_PATHS, OPENAPI_PATH):
        app.add_api_route(path, _make_handler(path), methods=["POST"], include_in_schema=False)
    app.add_api_route("/health", _health, methods=["GET"])
    if noop_route:
        app.add_api_route("/bench/noop", _noop, methods=["POST"], include_in_schema=False)
    return app


app = create_app()


def main(argv: list[str] | None = None) -> None:
    """Run the receiver with uvicorn (one worker; scale with more containers).

    Exits with status 2 and one line when neither JIMI_PUSH_TOKEN nor JIMI_PUSH_OPEN=1 is set.
    """
    import uvicorn  # noqa: PLC0415 - only the CLI needs it
    from uvicorn.config import LOGGING_CONFIG  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        expected_token(Settings())
    except PushTokenMissingError as exc:
        sys.exit(f"webhook_receiver: {exc}")
    # The lifespan attaches the redaction filter too; on the handler as well, so the access
    # log is redacted from its very first line whatever else reconfigures the loggers.
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config.setdefault("filters", {})["redact_secrets"] = {"()": RedactSecretsFilter}
    for handler in log_config["handlers"].values():
        handler.setdefault("filters", []).append("redact_secrets")
    uvicorn.run(
        "webhook_receiver:app", host=args.host, port=args.port, workers=1, log_config=log_config
    )


if __name__ == "__main__":
    main()
