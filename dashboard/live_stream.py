"""Live positions without polling (issue #19): `GET /webhook/live-positions/stream`, a
server-sent-events stream of position changes with the filters of `GET /webhook/live-positions`.

How a change reaches a browser:
1. A write to `tracksolid.live_positions` (ingest worker, webhook receiver, anything) appends
   one row per vehicle to `reporting.live_position_changes` and sends `NOTIFY live_positions`
   (statement-level triggers, migration 0315).
2. Each read-API process runs one `LiveHub`: ONE database connection LISTENs (one per
   process, however many clients), a NOTIFY wakes a fetch of the new change rows with the
   vehicles' current state (`reporting.fn_live_position_changes`, through the read-only pool),
   and the batch is offered to every subscriber's bounded queue.
3. Each SSE client filters the batch (cost centre, acc_status) and gets `position` events
   (a GeoJSON Feature as in the JSON endpoint) and `remove` events (a vehicle left its filter or
   the map). Comments (`: keep-alive`) every `HEARTBEAT_S` keep proxies from closing the line.

Event ids are change ids of the database, so a client may reconnect to ANY worker with
`Last-Event-ID` (or `?last_event_id=`, for a new EventSource) and get the current state of
exactly the vehicles changed since; an id that was pruned (> 1 h), unknown, or too far behind
gets a full `snapshot` instead. An id is a *watermark*: every change up to it is included.
Transactions commit out of id order, so ids skipped by a fetch are watched for
`LATE_COMMIT_S` (ChangeCursor) and the watermark stays below them meanwhile.

Auth: the API key in a header, like every endpoint. EventSource cannot send headers, so a
client POSTs `/webhook/live-positions/stream/token` with its key and opens
`/stream?token=...`: an HMAC-signed expiry, valid `TOKEN_TTL_S` to (re)connect, derived from
DASHBOARD_API_KEYS (any worker verifies it; rotating the keys revokes it). The key itself is
never accepted in the URL. On a hot standby LISTEN is refused: the hub then polls the change
table every `POLL_S` (still one connection per process).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from psycopg_pool import ConnectionPool
from starlette.types import Receive, Scope, Send

from dashboard.deps import app_settings, key_matches, require_api_key
from dashboard.params import ParamError, check_text, filter_value, parse_acc_status, shown
from ts_shared import Settings

log = logging.getLogger(__name__)

CHANNEL = "live_positions"  # the NOTIFY channel of migration 0315
HEARTBEAT_S = 15.0  # below the 30-60 s idle timeouts of common proxies
RETRY_MS = 3000  # EventSource's reconnection delay
LATE_COMMIT_S = 60.0  # how long an id skipped by a fetch may still commit
MAX_GAPS = 10_000  # a larger jump (sequence reset, crash) is not watched id by id
FETCH_LIMIT = 10_000  # change rows per fetch (more: fetched again at once)
MAX_RESUME_CHANGES = 50_000  # a reconnect further behind gets a snapshot
QUEUE_BATCHES = 256  # a client further behind is disconnected (it resumes)
SAFETY_POLL_S = 5.0  # a fetch at least this often, even without NOTIFY
POLL_S = 0.25  # fetch period on a hot standby (no LISTEN there)
TOKEN_TTL_S = 300
MAX_EVENT_ID = 2**63 - 1
_EVENT_ID = re.compile(r"^[0-9]{1,19}$", re.ASCII)
_TOKEN = re.compile(r"^([0-9]{1,12})\.([A-Za-z0-9_-]{24})$", re.ASCII)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # SSE's line breaks (not str.splitlines' U+2028)
# A key in a URL ends up in access logs: refused like everywhere (deps.require_api_key);
# `token` is this endpoint's signed token, not a key.
_KEY_QUERY_NAMES = ("key", "api_key", "apikey", "access_token")
STREAM_HEADERS = {
    "Cache-Control": "no-cache, no-transform",  # no-transform: no proxy compression/buffering
    "X-Accel-Buffering": "no",  # nginx: pass each event at once
}

router = APIRouter(tags=["maps"])


class HubUnavailableError(Exception):
    """The stream cannot take a client now (full, starting, database down): HTTP 503."""


# ── Pure parts ─────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Change:
    """One row of reporting.fn_live_position_changes."""

    change_id: int
    imei: str
    latest: bool
    cost_centre: str | None
    acc_on: bool | None
    status: str | None
    feature: str | None  # the GeoJSON Feature text; None = the vehicle is gone

    def position_event(self) -> bytes:
        return sse("position", self.feature or "null")

    def remove_event(self) -> bytes:
        return sse("remove", json.dumps({"id": self.imei}))


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """The filters of the JSON endpoint, applied in Python to each change (as in SQL:
    cost centre case-insensitive; acc_status on/off = ignition, else the status word)."""

    cost_centre: str | None = None
    acc_status: str | None = None

    def matches(self, change: Change) -> bool:
        if change.feature is None:
            return False
        if self.cost_centre is not None and (
            (change.cost_centre or "").lower() != self.cost_centre.lower()
        ):
            return False
        if self.acc_status is None:
            return True
        if self.acc_status == "on":
            return change.acc_on is True
        if self.acc_status == "off":
            return change.acc_on is False
        return change.status == self.acc_status


@dataclass(slots=True)
class Share:
    """What one filter takes from one batch, computed once for all its clients."""

    positions: list[bytes]  # the matching vehicles' position events
    matched: list[str]
    others: list[tuple[str, bytes]]  # (imei, remove event) of the changes that do not match
    joined: bytes | None = None  # the positions with the batch id: what most clients get


@dataclass(slots=True)
class Batch:
    """The changes of one fetch (newest per vehicle), pre-rendered once for every client."""

    event_id: int
    changes: list[tuple[Change, bytes, bytes]]  # change, position event, remove event
    shares: dict[StreamFilter, Share] = field(default_factory=dict)

    @classmethod
    def of(cls, event_id: int, changes: Iterable[Change]) -> Batch:
        return cls(event_id, [(c, c.position_event(), c.remove_event()) for c in changes])

    def share(self, filt: StreamFilter) -> Share:
        """The batch seen through `filt` (memoised: 500 clients with the same filters cost
        one pass over the changes, not 500)."""
        found = self.shares.get(filt)
        if found is None:
            found = Share([], [], [])
            for change, position, remove in self.changes:
                if filt.matches(change):
                    found.positions.append(position)
                    found.matched.append(change.imei)
                else:
                    found.others.append((change.imei, remove))
            self.shares[filt] = found
        return found


def sse(event: str, data: str, event_id: int | None = None) -> bytes:
    """One SSE event; `data` split on SSE line breaks (the client joins them with \\n)."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {part}" for part in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode()


def render_batch(
    batch: Batch, filt: StreamFilter, visible: set[str] | None, *, with_id: bool = True
) -> bytes:
    """The events of `batch` for one client; the last carries the batch's id (so a client cut
    off mid-batch resumes before it). `visible` = vehicles the client shows (updated here);
    None = unknown (after a resume): every non-matching change is sent as a remove."""
    share = batch.share(filt)
    if visible is not None:
        visible.update(share.matched)
    removes = [remove for imei, remove in share.others if visible is None or imei in visible]
    if visible is not None:
        visible.difference_update(imei for imei, _ in share.others)
    if not removes and with_id:  # the common case: one bytes object shared by the clients
        if share.joined is None:
            share.joined = _with_id(share.positions, batch.event_id)
        return share.joined
    parts = share.positions + removes
    return _with_id(parts, batch.event_id) if with_id else b"".join(parts)


def _with_id(parts: list[bytes], event_id: int) -> bytes:
    """The events joined, the id on the last one; nothing for no events."""
    if not parts:
        return b""
    return b"".join(parts[:-1]) + b"id: %d\n" % event_id + parts[-1]


def parse_last_event_id(header: str | None, query: str | None) -> int | None:
    """The resume point: `Last-Event-ID` (EventSource's reconnect) or `?last_event_id=` (a new
    EventSource); None when absent or empty. ParamError unless it is a change id."""
    value = header if header is not None and header.strip() else query
    if value is None:
        return None
    text = check_text("Last-Event-ID", value, max_len=40)
    if not text:
        return None
    if not _EVENT_ID.match(text) or int(text) > MAX_EVENT_ID:
        raise ParamError(
            f"Last-Event-ID must be an event id sent by this stream (digits), got {shown(text)}"
        )
    return int(text)


def _token_key(keys: Sequence[str]) -> bytes:
    """The signing key: derived from every API key, so all workers agree and rotating the
    keys revokes the tokens."""
    return hashlib.sha256(
        b"tracksolid live-stream token v1\0" + "\0".join(sorted(keys)).encode()
    ).digest()


def _signature(keys: Sequence[str], expires: int) -> str:
    mac = hmac.new(_token_key(keys), f"live-stream:{expires}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:18]).decode()


def mint_token(keys: Sequence[str], now: float, ttl_s: int = TOKEN_TTL_S) -> tuple[str, int]:
    """A stream token valid until now + ttl_s: `<expiry epoch>.<signature>`, and its expiry."""
    expires = int(now) + ttl_s
    return f"{expires}.{_signature(keys, expires)}", expires


def token_valid(keys: Sequence[str], token: str, now: float, ttl_s: int = TOKEN_TTL_S) -> bool:
    """True for an unexpired token minted with these keys (constant-time comparison)."""
    match = _TOKEN.match(token[:64]) if len(token) <= 64 else None
    if match is None:
        return False
    expires = int(match.group(1))
    if not now < expires <= now + ttl_s + 5:
        return False
    return hmac.compare_digest(match.group(2), _signature(keys, expires))


class ChangeCursor:
    """How far the hub has read the change log, robust to out-of-order commits.

    `max_seen` is the highest change id fetched; ids below it that were not there yet
    (their transaction had not committed, or rolled back) are `gaps`, fetched again by id
    until they appear or `LATE_COMMIT_S` passes. `watermark` = every change up to it was
    seen: the id the clients get."""

    def __init__(self, max_seen: int, pending: Iterable[int] = (), now: float = 0.0) -> None:
        self.max_seen = max_seen
        self.gaps: dict[int, float] = dict.fromkeys(pending, now)

    @classmethod
    def at_start(cls, newest: int | None, last_issued: int, now: float) -> ChangeCursor:
        """Start after everything committed; ids issued but not yet visible are gaps."""
        seen = newest if newest is not None else last_issued
        pending = range(seen + 1, last_issued + 1) if last_issued - seen <= MAX_GAPS else ()
        return cls(max(seen, last_issued), pending, now)

    def observe(self, ids: Iterable[int], now: float) -> None:
        for change_id in sorted(ids):
            if self.gaps.pop(change_id, None) is not None:
                continue
            if change_id > self.max_seen:
                if change_id - self.max_seen - 1 <= MAX_GAPS:
                    self.gaps.update(dict.fromkeys(range(self.max_seen + 1, change_id), now))
                self.max_seen = change_id
        self.expire(now)

    def expire(self, now: float) -> None:
        for change_id in [i for i, since in self.gaps.items() if now - since > LATE_COMMIT_S]:
            del self.gaps[change_id]

    @property
    def watermark(self) -> int:
        return min(self.gaps) - 1 if self.gaps else self.max_seen


# ── The hub: one per process ───────────────────────────────────────────────────────────────


@dataclass(eq=False)
class Subscriber:
    """One SSE client: a bounded queue of batches; None ends its stream."""

    queue: asyncio.Queue[Batch | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_BATCHES))
    closed: bool = False

    def offer(self, batch: Batch) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(batch)
        except asyncio.QueueFull:  # too slow: end the stream, the client resumes by id
            log.info("live stream: a client fell %d batches behind, disconnected", QUEUE_BATCHES)
            self.close()

    def close(self) -> None:
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


def _change(row: Sequence[Any]) -> Change:
    return Change(int(row[0]), str(row[1]), bool(row[2]), row[3], row[4], row[5], row[6])


class LiveHub:
    """Listens once, fetches changes once, fans them out to every SSE client of the process."""

    def __init__(
        self,
        dsn: str,
        pool: ConnectionPool,
        *,
        max_clients: int,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self._dsn = dsn
        self._pool = pool
        self.max_clients = max_clients
        self.heartbeat_s = heartbeat_s
        self.mode = "starting"  # listen | poll (hot standby) | reconnecting
        self.cursor: ChangeCursor | None = None
        self._subscribers: set[Subscriber] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._snapshots: dict[tuple[str | None, str | None, int], asyncio.Task[Any]] = {}

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    async def start(self) -> None:
        """Start the listener and the fetch loop (they retry while the database is down)."""
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="live_stream_listen"),
            asyncio.create_task(self._fetch_forever(), name="live_stream_fetch"),
        ]

    async def stop(self) -> None:
        """End every stream and both tasks."""
        self._stopping.set()
        for sub in list(self._subscribers):
            sub.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # Subscribers

    def subscribe(self) -> Subscriber:
        """A new subscriber; HubUnavailableError when the process has `max_clients`."""
        if self.cursor is None:
            raise HubUnavailableError("the live stream is starting (or the database is down)")
        if len(self._subscribers) >= self.max_clients:
            raise HubUnavailableError(
                f"this server already streams to {self.max_clients} clients: retry later or"
                " poll GET /webhook/live-positions"
            )
        sub = Subscriber()
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    # Listening and fetching

    async def _listen_forever(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                await self._listen_once()
                return  # a hot standby: the fetch loop polls
            except psycopg.Error as exc:
                log.warning("live stream listener: %s; retrying in %.0f s", type(exc).__name__,
                            backoff)  # fmt: skip
            self.mode = "reconnecting"  # the fetch loop polls meanwhile
            self._wake.set()  # fetch what the listener may have missed
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _listen_once(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, application_name="dashboard_api_live_stream"
        ) as conn:
            try:
                await conn.execute(f"LISTEN {CHANNEL}")
            except (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.FeatureNotSupported):
                self.mode = "poll"
                log.info("live stream: no LISTEN on this database (hot standby): polling")
                return
            self.mode = "listen"
            self._wake.set()  # catch up with what happened before LISTEN
            log.info("live stream: listening on %s", CHANNEL)
            idle = 0.0
            while not self._stopping.is_set():
                async for _ in conn.notifies(timeout=1.0):
                    self._wake.set()
                idle += 1.0
                if idle >= self.heartbeat_s:  # notice a dead connection without traffic
                    await conn.execute("SELECT 1")
                    idle = 0.0

    async def _fetch_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                if self.cursor is None:
                    self.cursor = await asyncio.to_thread(self._start_cursor)
                    log.info("live stream: starting after change %d", self.cursor.watermark)
                timeout = SAFETY_POLL_S if self.mode == "listen" else POLL_S
                if self.cursor.gaps:
                    timeout = min(timeout, 1.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                self._wake.clear()
                await self._fetch_and_offer()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must survive a database outage
                log.warning("live stream fetch failed: %s", type(exc).__name__)
                await asyncio.sleep(1.0)

    def _start_cursor(self) -> ChangeCursor:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT * FROM reporting.fn_live_position_change_bounds()")
            _oldest, newest, last_issued = row.fetchone() or (None, None, 0)
        return ChangeCursor.at_start(newest, int(last_issued or 0), time.monotonic())

    async def _fetch_and_offer(self) -> None:
        cursor = self.cursor
        assert cursor is not None
        rows = await asyncio.to_thread(self._fetch, cursor.max_seen, sorted(cursor.gaps))
        cursor.observe((r.change_id for r in rows), time.monotonic())
        if len(rows) >= FETCH_LIMIT:
            self._wake.set()  # more to read: go again at once
        latest = [r for r in rows if r.latest]
        if not latest:
            return
        batch = Batch.of(cursor.watermark, latest)
        for sub in list(self._subscribers):
            sub.offer(batch)

    def _fetch(self, after: int, gaps: list[int]) -> list[Change]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM reporting.fn_live_position_changes(%s, NULL, %s, %s)",
                (after, gaps, FETCH_LIMIT),
            ).fetchall()
        return [_change(r) for r in rows]

    # What a new client gets first

    async def opening(
        self, filt: StreamFilter, resume: int | None
    ) -> tuple[bytes, set[str] | None]:
        """The first events of a stream (a snapshot, or the changes since `resume`) and the
        vehicles the client then shows (None = unknown). Call after subscribe(): the
        watermark read here is covered by the snapshot, and later batches by the queue."""
        cursor = self.cursor
        assert cursor is not None
        upto = cursor.watermark
        if resume is not None:
            diff = await asyncio.to_thread(self._diff, filt, resume, upto)
            if diff is not None:
                parts = [render_batch(Batch.of(upto, diff), filt, None, with_id=False)]
                upto = max(upto, resume)
                info = json.dumps({"since": resume, "vehicles": len(diff)})
                return b"".join([*parts, sse("resumed", info, upto)]), None
        event, ids = await self._snapshot(filt, upto)
        return event, set(ids)

    def _diff(self, filt: StreamFilter, after: int, upto: int) -> list[Change] | None:
        """The newest change per vehicle in (after, upto]; None when a snapshot is needed
        (the id was pruned, is unknown, or is too far behind)."""
        with self._pool.connection() as conn:
            if filt.cost_centre is not None:  # unknown cost centre: 422, as the JSON endpoint
                conn.execute("SELECT reporting.check_filters(%s)", (filt.cost_centre,))
            row = conn.execute("SELECT * FROM reporting.fn_live_position_change_bounds()")
            oldest, _newest, last_issued = row.fetchone() or (None, None, 0)
            if after > int(last_issued or 0):
                return None  # not an id of this database
            if after >= upto:
                return []  # up to date (or ahead of this worker's hub: the queue follows)
            pruned = oldest is None or after + 1 < oldest
            if pruned or upto - after > MAX_RESUME_CHANGES:
                return None
            rows = conn.execute(
                "SELECT * FROM reporting.fn_live_position_changes(%s, %s, '{}', %s)",
                (after, upto, MAX_RESUME_CHANGES),
            ).fetchall()
        return [c for c in map(_change, rows) if c.latest]

    async def _snapshot(self, filt: StreamFilter, upto: int) -> tuple[bytes, frozenset[str]]:
        """The `snapshot` event (the JSON endpoint's answer) and its vehicles, shared by the
        clients that connect at the same watermark with the same filters: a reconnect storm
        costs one query and one encoding per filter, and the clients share the bytes."""
        key = (filt.cost_centre, filt.acc_status, upto)
        task = self._snapshots.get(key)
        if task is None:
            for old in [k for k in self._snapshots if k[2] != upto]:
                del self._snapshots[old]
            task = asyncio.create_task(asyncio.to_thread(self._snapshot_sql, filt, upto))
            self._snapshots[key] = task
            task.add_done_callback(lambda done: self._forget_failed(key, done))
        result: tuple[bytes, frozenset[str]] = await asyncio.shield(task)
        return result

    def _forget_failed(
        self, key: tuple[str | None, str | None, int], task: asyncio.Task[Any]
    ) -> None:
        """A failed snapshot (unknown cost centre, database down) is not served again."""
        if task.cancelled() or task.exception() is not None:
            self._snapshots.pop(key, None)

    def _snapshot_sql(self, filt: StreamFilter, upto: int) -> tuple[bytes, frozenset[str]]:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT reporting.fn_live_positions(%s, %s)::text",
                (filt.cost_centre, filt.acc_status),
            ).fetchone()
        text = str(row[0]) if row and row[0] is not None else '{"features": []}'
        ids = frozenset(str(f.get("id")) for f in json.loads(text).get("features", []))
        return sse("snapshot", text, upto), ids

    async def events(
        self, sub: Subscriber, filt: StreamFilter, first: bytes, visible: set[str] | None
    ) -> AsyncIterator[bytes]:
        """The byte stream of one client: the opening, then its share of every batch, and a
        comment when nothing was sent for `heartbeat_s`."""
        yield b"retry: %d\n\n" % RETRY_MS
        yield first  # shared by the clients of one snapshot: not copied
        while True:
            try:
                batch = await asyncio.wait_for(sub.queue.get(), self.heartbeat_s)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            chunks: list[bytes] = []
            while batch is not None:
                chunks.append(render_batch(batch, filt, visible))
                if sub.queue.empty():
                    break
                batch = sub.queue.get_nowait()
            if any(chunks):
                yield b"".join(chunks)
            if batch is None:
                return


# ── HTTP ───────────────────────────────────────────────────────────────────────────────────


class EventStreamResponse(StreamingResponse):
    """text/event-stream whose subscriber is released however the response ends (even when
    the client is gone before the first byte)."""

    def __init__(self, content: AsyncIterator[bytes], hub: LiveHub, sub: Subscriber) -> None:
        super().__init__(content, media_type="text/event-stream", headers=STREAM_HEADERS)
        self._hub = hub
        self._sub = sub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._hub.unsubscribe(self._sub)


def authorize_stream(request: Request, settings: Settings, token: str | None) -> None:
    """401 unless the request carries an API key in a header or a valid stream token
    (`?token=`); an API key in the URL is refused as everywhere."""
    if any(name in request.query_params for name in _KEY_QUERY_NAMES):
        raise HTTPException(401, "API keys are accepted only in the X-API-Key header (or"
                            " Authorization: Bearer), never in the URL: for EventSource, POST"
                            " /webhook/live-positions/stream/token and use ?token=")  # fmt: skip
    keys = settings.api_keys
    if token is not None and keys:
        if not token_valid(keys, token, time.time()):
            raise HTTPException(401, "the stream token is invalid or expired: POST"
                                " /webhook/live-positions/stream/token for a new one",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return
    if keys and not key_matches(request, keys):
        raise HTTPException(401, "missing or invalid API key (send X-API-Key or Authorization:"
                            " Bearer, or ?token= from POST /webhook/live-positions/stream/token)",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip


def _hub(request: Request) -> LiveHub:
    hub: LiveHub | None = getattr(request.app.state, "live_hub", None)
    if hub is None:
        raise HTTPException(503, "the live stream is not running on this server",
                            headers={"Retry-After": "30"})  # fmt: skip
    return hub


@router.get(
    "/webhook/live-positions/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "text/event-stream: `snapshot` (the JSON endpoint's"
            " FeatureCollection) or `resumed`, then `position` (a Feature) and `remove`"
            ' ({"id": imei}) events; `: keep-alive` comments every 15 s. docs/api.md.',
            "content": {"text/event-stream": {}},
        },
        401: {"description": "no valid API key in a header and no valid ?token="},
        422: {"description": "a filter or Last-Event-ID is malformed or unknown"},
        503: {"description": "this worker streams to its maximum of clients, or is starting"},
    },
)
async def live_positions_stream(
    request: Request,
    cost_centre: Annotated[
        str | None, Query(description="exact cost centre; empty/all = every")
    ] = None,
    acc_status: Annotated[
        str | None, Query(description="on | off | moving | idle | parked | offline | all")
    ] = None,
    last_event_id: Annotated[
        str | None, Query(description="resume after this event id (for a new EventSource)")
    ] = None,
    token: Annotated[
        str | None, Query(description="from POST /webhook/live-positions/stream/token")
    ] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Position changes as server-sent events, filtered like GET /webhook/live-positions."""
    settings = app_settings(request)
    authorize_stream(request, settings, token)
    filt = StreamFilter(filter_value(cost_centre, "cost_centre"), parse_acc_status(acc_status))
    resume = parse_last_event_id(last_event_id_header, last_event_id)
    hub = _hub(request)
    try:
        sub = hub.subscribe()
    except HubUnavailableError as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "30"}) from None
    try:
        first, visible = await hub.opening(filt, resume)
    except BaseException:
        hub.unsubscribe(sub)
        raise
    return EventStreamResponse(hub.events(sub, filt, first, visible), hub, sub)


@router.post(
    "/webhook/live-positions/stream/token",
    dependencies=[Depends(require_api_key)],
    responses={401: {"description": "DASHBOARD_API_KEYS is set and no valid key was sent"}},
)
def live_positions_stream_token(request: Request) -> JSONResponse:
    """A short-lived token for EventSource (which cannot send headers): open
    `/webhook/live-positions/stream?token=...` within `expires_in` seconds."""
    token, expires = mint_token(app_settings(request).api_keys, time.time())
    return JSONResponse(
        {"token": token, "expires_at": expires, "expires_in": TOKEN_TTL_S},
        headers={"Cache-Control": "no-store"},
    )


# ── Lifespan ───────────────────────────────────────────────────────────────────────────────


async def start_hub(app: Any, settings: Settings) -> LiveHub:
    """Create and start the process's hub on `app.state.live_hub` (dashboard_api's lifespan,
    after `app.state.ro_pool`)."""
    hub = LiveHub(settings.dashboard_dsn(), app.state.ro_pool,
                  max_clients=settings.live_stream_max_clients)  # fmt: skip
    app.state.live_hub = hub
    await hub.start()
    return hub
