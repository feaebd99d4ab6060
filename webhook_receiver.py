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

Replies: 200 stored or spooled · 400 malformed form/JSON (recorded in the inbox as
`rejected`) · 401 wrong or missing token (`JIMI_PUSH_TOKEN`, not stored) · 413 body over
`WEBHOOK_MAX_BODY_BYTES` · 404 unknown path · 503 only when even the spool cannot be written.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser

from ts_shared import Settings, constant_time_equals, make_pool, setup_logging, utcnow
from webhook.parse import IOTHUB_PARSERS, MalformedDeliveryError, decode_json, items_of
from webhook.pipeline import PushPipeline
from webhook.spool import Spool, SpoolError
from webhook.store import OPENAPI_PATH, Delivery

log = logging.getLogger("webhook_receiver")

IOTHUB_PATHS: tuple[str, ...] = tuple(IOTHUB_PARSERS)
SUCCESS = b'{"code":0,"msg":"success"}'
JSON = "application/json"


def _reply(status: int, message: str) -> Response:
    body = json.dumps({"code": status, "msg": message}, separators=(",", ":"))
    return Response(content=body, status_code=status, media_type=JSON)


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


async def decode_fields(body: bytes, headers: Headers) -> dict[str, Any]:
    """Form fields of a push: urlencoded (what JIMI sends), multipart, or a JSON object.

    `MalformedDeliveryError` when the body cannot be read as any of them.
    """
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == JSON or (ctype == "" and body.lstrip()[:1] == b"{"):
        try:
            value = json.loads(body)
        except ValueError as exc:
            raise MalformedDeliveryError(f"body is not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise MalformedDeliveryError("JSON body must be an object with the push fields")
        return value
    if ctype == "multipart/form-data":

        async def stream() -> AsyncGenerator[bytes, None]:
            yield body

        try:
            form = await MultiPartParser(headers, stream()).parse()
        except (MultiPartException, ValueError) as exc:
            raise MalformedDeliveryError(f"malformed multipart form: {exc}") from exc
        return {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        return _fast_urlencoded(body)
    except (UnicodeDecodeError, ValueError):
        pass  # an odd escape somewhere: let the standard parser have its say
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedDeliveryError(f"form body is not UTF-8: {exc}") from exc
    return dict(parse_qsl(text, keep_blank_values=True))


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
        return decode_json(value, name)
    return decode_json(json.dumps(value, ensure_ascii=False, separators=(",", ":")), name)


def build_delivery(path: str, fields: dict[str, Any], received_at: Any) -> Delivery:
    """Validate the fields of a push and build the Delivery; `MalformedDeliveryError` → 400."""
    if path == OPENAPI_PATH:
        msg_type = fields.get("msgType")
        if not isinstance(msg_type, str) or not msg_type.strip():
            raise MalformedDeliveryError("missing form field msgType")
        value, text = _json_text(fields, "data")
        items_of(value, "data")
        return Delivery(path, msg_type.strip()[:200], text, received_at, decoded=value)
    value, text = _json_text(fields, "data_list")
    items_of(value, "data_list")
    return Delivery(path, None, text, received_at, decoded=value)


def _raw_text(body: bytes) -> str:
    return body.decode("utf-8", "replace").replace("\x00", "")


def _make_handler(path: str) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        state = request.app.state
        settings: Settings = state.settings
        pipeline: PushPipeline = state.pipeline
        received_at = utcnow()
        try:
            body = await read_body(request, settings.webhook_max_body_bytes)
        except _TooLargeError:
            log.warning("%s: body over %d bytes refused", path, settings.webhook_max_body_bytes)
            return _reply(413, f"body larger than {settings.webhook_max_body_bytes} bytes")
        fields: dict[str, Any] | None
        try:
            fields = await decode_fields(body, request.headers)
            problem = None
        except MalformedDeliveryError as exc:
            fields, problem = None, str(exc)
        if settings.jimi_push_token is not None:
            given = (fields or {}).get("token") or request.query_params.get("token")
            expected = settings.jimi_push_token.get_secret_value()
            if not constant_time_equals(str(given) if given is not None else None, expected):
                client = request.client.host if request.client else "?"
                log.warning("%s: missing or wrong token from %s: refused", path, client)
                return _reply(401, "missing or invalid token")
        try:
            if fields is None:
                raise MalformedDeliveryError(problem or "malformed body")
            delivery = build_delivery(path, fields, received_at)
        except MalformedDeliveryError as exc:
            reason = str(exc)[:500]
            msg_type = fields.get("msgType") if fields and path == OPENAPI_PATH else None
            rejected = Delivery(
                path,
                msg_type if isinstance(msg_type, str) else None,
                _raw_text(body),
                received_at,
                reject_reason=reason,
            )
            log.warning("%s: rejected (400): %s", path, reason)
            try:
                await run_in_threadpool(pipeline.accept, rejected)
            except SpoolError as spool_exc:  # recording a rejection is best effort
                log.error("%s: could not record a rejected body: %s", path, spool_exc)
            return _reply(400, reason)
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
    """Database state and spool depth (always 200: the receiver keeps accepting pushes)."""
    pipeline: PushPipeline = request.app.state.pipeline
    report = await run_in_threadpool(pipeline.health)
    return Response(content=json.dumps(report), media_type=JSON)


def create_app(settings: Settings | None = None, *, noop_route: bool = False) -> FastAPI:
    """The receiver app. Settings (when not given), the pool, the spool and the replayer
    are built in the lifespan, never at import time. `noop_route` adds `POST /bench/noop`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        active = settings if settings is not None else Settings()
        if settings is None:  # we are the entry point: configure logging
            setup_logging(active.log_level)
        if active.jimi_push_token is None:
            log.warning("JIMI_PUSH_TOKEN is not set: push deliveries are accepted without a token")
        spool = Spool(active.webhook_spool_dir)
        pool = make_pool(
            active.dsn(),
            min_size=active.db_pool_min_size,
            max_size=active.db_pool_max_size,
            name="webhook_receiver",
            open_wait=False,
            # No per-borrow check: a stale connection raises OperationalError, which the
            # pipeline already answers by spooling the delivery (measured: ~+20% deliveries/s).
            check=False,
        )
        pipeline = PushPipeline(active, pool, spool)
        pipeline.start()
        app.state.settings = active
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
            pool.close()
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
    """Run the receiver with uvicorn (one worker; scale with more containers)."""
    import uvicorn  # noqa: PLC0415 - only the CLI needs it

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    uvicorn.run("webhook_receiver:app", host=args.host, port=args.port, workers=1)


if __name__ == "__main__":
    main()
