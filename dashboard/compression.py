"""Compressed answers and ETags for the read-API (issue #19): one ASGI middleware.

Why: a week of trips for 1,000 vehicles is ~25 MB of JSON and the SPAs run on phones; JSON
this repetitive shrinks to a few per cent of its size. The app builds its answers in
PostgreSQL and hands them over as bytes, so the middleware compresses the finished body.

What `CompressionMiddleware` does, per HTTP response:

- **Negotiation** (`negotiate`): `br` or `gzip` by the request's `Accept-Encoding`, with
  q-values (`gzip;q=0` refuses gzip, `*` stands for the codings not named, a named
  `identity;q=...` competes too); on equal q the server prefers br (smaller at the same
  speed). No header, an unreadable one or nothing acceptable → `identity` (the body as is),
  never a 406.
- **Which answers**: media types in `COMPRESSIBLE` (JSON / GeoJSON / any `+json`, CSV, HTML,
  CSS, JavaScript, vector tiles) at least `DASHBOARD_COMPRESS_MIN_BYTES` long (default 1024:
  below ~1 KB the codings' framing eats the gain). Never `text/event-stream` (a live stream
  must not wait in a compressor's buffer), never an answer that already has a
  `Content-Encoding`, never a 206 / 204 / 304 or a HEAD. `Vary: Accept-Encoding` on every
  answer of a compressible type, compressed or not, so caches keep the variants apart.
- **Whole vs streamed bodies**: an answer sent in one piece (every JSON answer) is
  compressed in one call and gets its new `Content-Length`; a streamed one (CSV exports,
  static files) is compressed chunk by chunk without a length. Levels: br quality 4 / gzip 5,
  and br 1 / gzip 1 for whole bodies above `LARGE_BODY` (1 MiB), where the compression time
  would show in the answer's latency (measured: GZIP_LEVEL below). Bodies above `INLINE_MAX`
  are compressed in a worker thread so the event loop (and every other request on it) does
  not stall for the ~100 ms a week of trips takes.
- **ETag / If-None-Match** (GET, status 200, JSON up to `ETAG_MAX_BYTES`): the tag is a hash
  of the body. Answers carry clocks that change on every call (`generated_at`, the live
  map's `fix_age_s`); those values are left out of the hash and the tag is then *weak*
  (`W/"..."`): the answer is the same data, not the same bytes (RFC 9110 §8.8.1). A request
  whose `If-None-Match` names the tag gets **304** with no body. Such answers get
  `Cache-Control: private, no-cache` unless the endpoint set one, so a browser revalidates
  on every poll and shared caches keep out of keyed data.
- **Strong tags and codings**: a compressed answer is another representation, so a strong
  `ETag` set by an endpoint (static files) is made weak when the body is compressed (what
  nginx does). `If-None-Match` is compared weakly (RFC 9110 §13.1.2): the middleware strips
  `W/` from the request's tags before the endpoint sees them, so an endpoint that compares
  its strong tag exactly (dashboard/operator.py static files) still answers 304.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from collections.abc import Callable
from functools import lru_cache
from typing import Protocol, cast

import anyio.to_thread
import brotli
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MIN_BYTES = 1024
# Levels measured on the week of trips (bench/bench_compression.py, docs/performance.md).
# Up to LARGE_BODY: br q4 / gzip 5, a few ms for the live map (573 KB → 44 KB). Above it the
# CPU time is what the caller waits for (a 24 MB week: br q4 261 ms, q1 49 ms): the fastest
# levels, whose output (br 7.0 %, gzip 7.9 % of the week) is still half the 15 % target.
GZIP_LEVEL = 5
BROTLI_QUALITY = 4
LARGE_BODY = 1024 * 1024
GZIP_LEVEL_LARGE = 1
BROTLI_QUALITY_LARGE = 1
INLINE_MAX = 64 * 1024  # larger bodies / chunks are compressed or hashed in a worker thread
ETAG_MAX_BYTES = 16 * 1024 * 1024  # "small" GET answers: live positions of 10,000 vehicles
MAX_ACCEPT_ENCODING = 1000  # characters of Accept-Encoding read (a hostile header is cut)

COMPRESSIBLE = frozenset(
    {
        "application/json",
        "application/geo+json",
        "text/csv",
        "text/html",
        "text/css",
        "text/plain",
        "text/javascript",
        "application/javascript",
        "application/vnd.mapbox-vector-tile",
        "application/x-protobuf",
    }
)
CODINGS = ("br", "gzip")  # in the server's order of preference
_NO_BODY_STATUS = frozenset({204, 206, 304})
_QVALUE = re.compile(r"^(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)$")
# Values that change on every call without the data changing: left out of the ETag's hash.
_VOLATILE = re.compile(rb'"(?:generated_at|fix_age_s)"\s*:\s*(?:"[^"\\]*"|-?[0-9.eE+-]+|null)')


class _Stream(Protocol):
    """An incremental compressor: zlib's compressobj or brotli's Compressor."""

    def compress(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class _GzipStream:
    def __init__(self) -> None:
        self._z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: gzip framing

    def compress(self, data: bytes) -> bytes:
        return self._z.compress(data)

    def finish(self) -> bytes:
        return self._z.flush()


class _BrotliStream:
    def __init__(self) -> None:
        self._b = brotli.Compressor(mode=brotli.MODE_TEXT, quality=BROTLI_QUALITY)

    def compress(self, data: bytes) -> bytes:
        return cast(bytes, self._b.process(data))

    def finish(self) -> bytes:
        return cast(bytes, self._b.finish())


# ── Pure helpers ───────────────────────────────────────────────────────────────────────────


def _qvalue(params: str) -> float | None:
    """The q of one Accept-Encoding entry's parameters (1 when absent); None when the q is
    malformed (the entry is then ignored, as if not sent)."""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            text = value.strip()
            return float(text) if _QVALUE.match(text) else None
    return 1.0


@lru_cache(maxsize=256)
def negotiate(accept_encoding: str | None) -> str:
    """ "br", "gzip" or "identity" for an `Accept-Encoding` header (see the module docstring).

    >>> negotiate("gzip, deflate, br"), negotiate("br;q=0, gzip"), negotiate("*;q=0")
    ('br', 'gzip', 'identity')
    """
    weights: dict[str, float] = {}
    for entry in (accept_encoding or "")[:MAX_ACCEPT_ENCODING].split(","):
        coding, _, params = entry.partition(";")
        name = coding.strip().lower()
        weight = _qvalue(params)
        if not name or weight is None:
            continue
        name = "gzip" if name == "x-gzip" else name  # RFC 9110 §8.4.1.3
        weights[name] = min(weight, weights.get(name, weight))  # named twice: the lower q
    star = weights.get("*")
    best, best_q = "identity", 0.0
    for coding in CODINGS:
        q = weights.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    # identity is always acceptable as the fallback, but competes only when named (or by *):
    # "gzip;q=0.8" asks for gzip. A coding wins a tie with identity (it saves bytes).
    identity_q = weights.get("identity", star if star is not None else 0.0)
    return best if best_q > 0 and best_q >= identity_q else "identity"


def compress(body: bytes, coding: str) -> bytes:
    """`body` encoded with `coding` ("br" or "gzip") at the module's levels (faster ones
    above LARGE_BODY)."""
    large = len(body) > LARGE_BODY
    if coding == "br":
        quality = BROTLI_QUALITY_LARGE if large else BROTLI_QUALITY
        return cast(bytes, brotli.compress(body, mode=brotli.MODE_TEXT, quality=quality))
    level = GZIP_LEVEL_LARGE if large else GZIP_LEVEL
    return gzip.compress(body, compresslevel=level, mtime=0)  # mtime 0: the same bytes


def _stream(coding: str) -> _Stream:
    return _BrotliStream() if coding == "br" else _GzipStream()


def entity_tag(body: bytes) -> str:
    """The ETag of a JSON body: a 128-bit BLAKE2b of the bytes — strong; or, when the body
    holds per-call clocks (`generated_at`, `fix_age_s`), of the body without them — weak."""
    masked, clocks = _VOLATILE.subn(b"", body)
    digest = hashlib.blake2b(masked, digest_size=16).hexdigest()
    return f'W/"{digest}"' if clocks else f'"{digest}"'


def _opaque(tag: str) -> str:
    """An entity tag without its weakness mark (the weak comparison of RFC 9110 §8.8.3.2)."""
    tag = tag.strip()
    return tag[2:] if tag[:2] in ("W/", "w/") else tag


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """True when `If-None-Match` (a list of tags, or `*`) names `etag` (weak comparison)."""
    if not if_none_match:
        return False
    wanted = _opaque(etag)
    return any(t.strip() == "*" or _opaque(t) == wanted for t in if_none_match.split(","))


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def compressible(content_type: str | None) -> bool:
    """Whether answers of this media type are worth compressing (text-like, not a stream)."""
    media = media_type(content_type)
    return media in COMPRESSIBLE or media.endswith("+json")


def _is_json(content_type: str | None) -> bool:
    media = media_type(content_type)
    return media in ("application/json", "application/geo+json") or media.endswith("+json")


def _weaken(headers: MutableHeaders) -> None:
    etag = headers.get("etag")
    if etag and not etag.startswith(("W/", "w/")):
        headers["etag"] = "W/" + etag


def _add_vary(headers: MutableHeaders) -> None:
    present = [v.strip().lower() for v in headers.get("vary", "").split(",")]
    if "accept-encoding" not in present and "*" not in present:
        headers.add_vary_header("Accept-Encoding")


async def _run[T](fn: Callable[..., T], *args: object, size: int) -> T:
    """`fn(*args)` inline for small inputs, in a worker thread for large ones."""
    if size <= INLINE_MAX:
        return fn(*args)
    return await anyio.to_thread.run_sync(fn, *args)


def _strip_weak_marks(scope: Scope) -> Scope:
    """The scope with `If-None-Match` tags stripped of `W/` (weak comparison for endpoints
    that compare their own strong tag exactly)."""
    raw = [(k, v) for k, v in scope["headers"]]
    if not any(k == b"if-none-match" and b"/" in v for k, v in raw):
        return scope
    headers = [
        (k, re.sub(rb"(^|,)\s*[Ww]/", rb"\1", v) if k == b"if-none-match" else v) for k, v in raw
    ]
    return {**scope, "headers": headers}


# ── The middleware ─────────────────────────────────────────────────────────────────────────


class CompressionMiddleware:
    """Negotiated br / gzip compression and ETag → 304 (see the module docstring).

    `min_bytes=None` reads `dashboard_compress_min_bytes` from the app's Settings on each
    request (set in the lifespan, after the middleware stack is built)."""

    def __init__(self, app: ASGIApp, min_bytes: int | None = None) -> None:
        self.app = app
        self.min_bytes = min_bytes

    def _min_bytes(self, scope: Scope) -> int:
        if self.min_bytes is not None:
            return self.min_bytes
        app = scope.get("app")
        settings = getattr(getattr(app, "state", None), "settings", None)
        value = getattr(settings, "dashboard_compress_min_bytes", DEFAULT_MIN_BYTES)
        return value if isinstance(value, int) else DEFAULT_MIN_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        responder = _Responder(
            send,
            coding=negotiate(headers.get("accept-encoding")),
            method=scope["method"],
            if_none_match=headers.get("if-none-match"),
            min_bytes=self._min_bytes(scope),
        )
        await self.app(_strip_weak_marks(scope), receive, responder.send)


class _Responder:
    """One response's state: the held `http.response.start`, then whole or streamed mode."""

    def __init__(
        self, send: Send, *, coding: str, method: str, if_none_match: str | None, min_bytes: int
    ) -> None:
        self._send = send
        self.coding = coding
        self.method = method
        self.if_none_match = if_none_match
        self.min_bytes = min_bytes
        self.start: Message | None = None
        self.mode = "first"  # first body message pending | pass | stream | done
        self.stream: _Stream | None = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start" and self.start is None:
            self.start = message
            headers = MutableHeaders(scope=message)
            if not compressible(headers.get("content-type")) or "content-encoding" in headers:
                # nothing to do (an event stream, an image ...): headers out at once, so a
                # stream's client sees them before the first event
                self.mode = "pass"
                await self._send(message)
            return  # else held until the first body message decides the headers
        if self.mode == "pass" or self.start is None:
            await self._send(message)
        elif kind != "http.response.body":  # e.g. http.response.pathsend: hands off
            self.mode = "pass"
            await self._send(self.start)
            await self._send(message)
        elif self.mode == "stream":
            await self._stream_chunk(message)
        elif self.mode == "first":
            body: bytes = message.get("body", b"")
            if message.get("more_body", False):
                await self._start_stream(message)
            else:
                self.mode = "done"
                await self._whole(body)
        else:  # done: nothing should follow; let the server judge whatever does
            await self._send(message)

    def _may_compress(self, status: int, headers: MutableHeaders) -> bool:
        return (
            self.coding != "identity"
            and self.method != "HEAD"
            and status >= 200
            and status not in _NO_BODY_STATUS
            and "content-encoding" not in headers
            and compressible(headers.get("content-type"))
        )

    async def _whole(self, body: bytes) -> None:
        """A body sent in one piece: ETag / 304 for GET JSON, then compression."""
        assert self.start is not None
        status: int = self.start["status"]
        headers = MutableHeaders(scope=self.start)
        if compressible(headers.get("content-type")) and "content-encoding" not in headers:
            _add_vary(headers)
        if (
            self.method == "GET"
            and status == 200
            and _is_json(headers.get("content-type"))
            and len(body) <= ETAG_MAX_BYTES
        ):
            if "etag" not in headers:
                headers["etag"] = await _run(entity_tag, body, size=len(body))
                headers.setdefault("cache-control", "private, no-cache")
            if etag_matches(self.if_none_match, headers["etag"]):
                await self._not_modified(headers, compressed=len(body) >= self.min_bytes)
                return
        if self._may_compress(status, headers) and len(body) >= self.min_bytes:
            body = await _run(compress, body, self.coding, size=len(body))
            headers["content-encoding"] = self.coding
            headers["content-length"] = str(len(body))
            _weaken(headers)
        await self._send(self.start)
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def _not_modified(self, headers: MutableHeaders, *, compressed: bool) -> None:
        """304 with the validators and caching headers of the 200, and no body."""
        if compressed and self._may_compress(200, headers):
            _weaken(headers)  # the tag the compressed 200 would have carried
        kept = [
            (k, v)
            for k, v in headers.raw
            if k not in (b"content-length", b"content-type", b"content-encoding")
        ]
        await self._send({"type": "http.response.start", "status": 304, "headers": kept})
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _start_stream(self, message: Message) -> None:
        """The first chunk of a streamed body: compress the stream, or pass it through."""
        assert self.start is not None
        headers = MutableHeaders(scope=self.start)
        length = headers.get("content-length", "")
        small = length.isdigit() and int(length[:20]) < self.min_bytes
        if compressible(headers.get("content-type")) and "content-encoding" not in headers:
            _add_vary(headers)
        if self.start["status"] != 200 or small or not self._may_compress(200, headers):
            self.mode = "pass"
            await self._send(self.start)
            await self._send(message)
            return
        self.mode = "stream"
        self.stream = _stream(self.coding)
        del headers["content-length"]
        headers["content-encoding"] = self.coding
        _weaken(headers)
        await self._send(self.start)
        await self._stream_chunk(message)

    async def _stream_chunk(self, message: Message) -> None:
        assert self.stream is not None
        chunk: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        data = await _run(self.stream.compress, chunk, size=len(chunk)) if chunk else b""
        if not more:
            data += self.stream.finish()
            self.mode = "done"
        if data or not more:
            await self._send({"type": "http.response.body", "body": data, "more_body": more})
