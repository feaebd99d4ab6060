"""Where an accepted delivery goes: straight to PostgreSQL, or to the spool and replayed later.

Two modes:
- **direct** — the delivery is written in one statement on a pooled connection before the
  reply. If that raises `psycopg.OperationalError` (server down, connection lost, pool
  timeout), nothing was written: the delivery is spooled and the pipeline switches to
- **spooling** — every delivery goes to the spool (so arrival order is kept), and the
  replayer thread writes the spool to the database oldest first on its own connection, in
  batches of up to `REPLAY_BATCH` deliveries per transaction (one commit, one directory fsync
  for the deletes), deleting the files after the commit. Once the backlog is down to one
  batch and the pool answers (a pool still in its reconnect backoff is replaced by a fresh
  one), it takes the mode lock — new deliveries wait for it instead of being spooled —
  replays the rest and switches back to direct: no delivery written directly overtakes a
  spooled one. A spool left by a previous run starts in spooling.

Durability: every connection (pool and replayer) is opened with `synchronous_commit=on`
(`ts_shared.DURABLE_OPTIONS`, which outranks a role or database setting), so a commit — and
therefore a 200 — means the WAL is flushed. `health()` reads the value back from the server.

Failure modes: `SpoolError` from `accept` when a delivery can be neither written nor spooled
(the HTTP layer answers 503 so the sender retries). A batch that fails for any reason but a
lost connection is replayed one delivery at a time (`write_delivery`, raw fallback); a spool
file that keeps failing while the database is reachable is stored raw (`status='stored'`)
after `POISON_ATTEMPTS` tries.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg_pool import ConnectionPool

from ts_shared import DURABLE_OPTIONS, Settings, connect_options, utcnow
from webhook.parse import ParseContext
from webhook.spool import Spool, SpoolError
from webhook.store import Delivery, store_raw, write_batch, write_delivery

log = logging.getLogger(__name__)

Outcome = Literal["stored", "spooled"]

DIRECT_TIMEOUT_S = 2.0  # how long a request waits for a pooled connection before spooling
POISON_ATTEMPTS = 5
REPLAY_BATCH = 500  # spooled deliveries per replay transaction
REPLAY_BATCH_BYTES = 8 * 1024 * 1024  # ... or fewer, when their files hold more than this
DURABLE_VALUES = frozenset({"on", "remote_apply", "remote_write", "local"})  # local WAL flush
_BACKOFF_MIN_S = 0.2
_BACKOFF_MAX_S = 1.0  # connecting to a stopped server is cheap; notice its return fast


class PushPipeline:
    """The receiver's write path: pool, spool, mode and the replayer thread."""

    def __init__(
        self,
        settings: Settings,
        pool: ConnectionPool,
        spool: Spool,
        *,
        direct_timeout_s: float = DIRECT_TIMEOUT_S,
        pool_factory: Callable[[], ConnectionPool] | None = None,
        batch_size: int = REPLAY_BATCH,
    ) -> None:
        self._settings = settings
        self._pool = pool
        # Builds a replacement pool when the current one is still in its reconnect backoff
        # (psycopg_pool doubles the delay per failed attempt) although the database is back.
        self._pool_factory = pool_factory
        self._batch_size = max(1, batch_size)
        self._sync_commit: str | None = None
        self.spool = spool
        self._direct_timeout_s = direct_timeout_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._spooling = spool.depth > 0
        self._db_up: bool | None = None
        self._failures: dict[Path, int] = {}
        if self._spooling:
            log.warning("spool %s holds %d deliveries: replaying", spool.dir, spool.depth)

    # ── state ───────────────────────────────────────────────────────────────

    @property
    def spooling(self) -> bool:
        """True while deliveries go to the spool."""
        return self._spooling

    @property
    def pool(self) -> ConnectionPool:
        """The pool in use (replaced after an outage when it is slow to reconnect)."""
        return self._pool

    def context(self) -> ParseContext:
        """Parse context for a delivery written now."""
        return ParseContext(
            utcnow(),
            self._settings.gps_filter_max_future_s,
            self._settings.gps_filter_max_speed_kmh,
        )

    def start(self) -> None:
        """Start the replayer thread."""
        self._thread = threading.Thread(target=self._replay_loop, name="spool-replay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the replayer (the spool stays on disk for the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # ── the request path ────────────────────────────────────────────────────

    def accept(self, delivery: Delivery) -> Outcome:
        """Write a delivery now or spool it durably; see the module doc."""
        if self._spooling:
            with self._lock:
                if self._spooling:
                    self._append(delivery)
                    return "spooled"
        try:
            with self._pool.connection(timeout=self._direct_timeout_s) as conn:
                write_delivery(conn, delivery, self.context())
        except psycopg.OperationalError as exc:
            if self._db_up is not False:
                log.warning("database unavailable (%s): spooling deliveries", exc)
            self._db_up = False
            with self._lock:
                self._spooling = True
                self._append(delivery)
            return "spooled"
        except Exception:  # even the raw fallback failed: keep it on disk for a human
            log.exception("%s: could not be stored at all; kept in %s", delivery.method, "bad/")
            self.spool.append(delivery.to_json(), dead=True)
            return "spooled"
        self._db_up = True
        return "stored"

    def _append(self, delivery: Delivery) -> None:
        seq = self.spool.append(delivery.to_json())
        log.debug("spooled %s as %d (depth %d)", delivery.method, seq, self.spool.depth)
        self._wake.set()

    def database_up(self, timeout: float = 1.0) -> bool:
        """Probe the database through the pool, reading back `synchronous_commit`."""
        try:
            with self._pool.connection(timeout=timeout) as conn:
                row = conn.execute("SHOW synchronous_commit").fetchone()
        except psycopg.OperationalError:
            self._db_up = False
            return False
        self._db_up = True
        self._note_sync_commit(str(row[0]) if row else "unknown", "pool")
        return True

    def _note_sync_commit(self, value: str, where: str) -> None:
        if value != self._sync_commit:
            if value in DURABLE_VALUES:
                log.info("synchronous_commit=%s on the receiver's %s connections", value, where)
            else:
                log.error(
                    "synchronous_commit=%s on the receiver's %s connections: a database crash"
                    " can lose acknowledged deliveries",
                    value,
                    where,
                )
            self._sync_commit = value

    def health(self) -> dict[str, Any]:
        """What /health reports (`synchronous_commit` as the server reports it for a pool
        connection; None while the database is down)."""
        db_up = self.database_up()
        sync = self._sync_commit if db_up else None
        durable = sync in DURABLE_VALUES
        return {
            "status": "ok" if db_up and durable and not self._spooling else "degraded",
            "database": "up" if db_up else "down",
            "synchronous_commit": sync,
            "spooling": self._spooling,
            "spool_depth": self.spool.depth,
        }

    # ── the replayer ────────────────────────────────────────────────────────

    def _connect(self) -> psycopg.Connection[Any]:
        dsn = self._settings.dsn()
        conn = psycopg.connect(
            dsn,
            autocommit=True,
            connect_timeout=3,
            application_name="webhook_spool_replay",
            options=connect_options(dsn, DURABLE_OPTIONS),
        )
        row = conn.execute("SHOW synchronous_commit").fetchone()
        if not row or str(row[0]) not in DURABLE_VALUES:
            log.error("synchronous_commit=%s on the spool replay connection", row)
        return conn

    def _replay_loop(self) -> None:
        if not self._spooling:  # the start-up check of durability (non-blocking for start)
            self.database_up(timeout=2.0)
        conn: psycopg.Connection[Any] | None = None
        backoff = _BACKOFF_MIN_S
        while not self._stop.is_set():
            if not self._spooling:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                self._drain(conn)
                backoff = _BACKOFF_MIN_S
                if self._finish(conn):
                    conn.close()
                    conn = None
                else:
                    self._wake.wait(0.05)
                    self._wake.clear()
            except psycopg.OperationalError as exc:
                log.info("spool replay waiting for the database (%s); retry in %.1fs", exc, backoff)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            except Exception:  # never let the replayer die silently
                log.exception("spool replay failed; retrying")
                self._stop.wait(_BACKOFF_MAX_S)
        if conn is not None:
            conn.close()

    def _drain(self, conn: psycopg.Connection[Any]) -> None:
        """Replay full batches, oldest first, until at most one batch is left."""
        replayed = 0
        started = time.monotonic()
        while not self._stop.is_set():
            pending = self.spool.pending()
            if len(pending) <= self._batch_size:
                break
            replayed += self._replay_batch(conn, pending[: self._batch_size])
        if replayed:
            elapsed = time.monotonic() - started
            log.info(
                "replayed %d spooled deliveries in %.1fs (%.0f/s; depth now %d)",
                replayed,
                elapsed,
                replayed / max(elapsed, 1e-6),
                self.spool.depth,
            )

    def _finish(self, conn: psycopg.Connection[Any]) -> bool:
        """Replay what is left and switch to direct mode once the pool answers; under the mode
        lock, so no new delivery is spooled meanwhile (they wait, then go direct). False when
        the pool does not answer yet (what is left is replayed anyway)."""
        if not self._pool_ready():
            pending = self.spool.pending()
            if pending:
                self._replay_batch(conn, pending[: self._batch_size])
            return False
        with self._lock:
            replayed = 0
            while not self._stop.is_set() and (pending := self.spool.pending()):
                replayed += self._replay_batch(conn, pending[: self._batch_size])
            if self._stop.is_set():
                return False
            self._spooling = False
        log.info("spool drained (last %d replayed): writing deliveries directly again", replayed)
        return True

    def _pool_ready(self) -> bool:
        """The pool gives a working connection; else, when the replayer just proved the
        database answers, a fresh pool replaces one stuck in its reconnect backoff."""
        if self.database_up(timeout=0.5):
            return True
        if self._pool_factory is None:
            return False
        try:
            fresh = self._pool_factory()
        except Exception as exc:  # any failure: keep the old pool, retry later
            log.warning("could not open a fresh pool (%s)", exc)
            return False
        old, self._pool = self._pool, fresh
        log.info("pool %s replaced by a fresh one after the outage", old.name)
        threading.Thread(target=_close_quietly, args=(old,), daemon=True).start()
        return self.database_up(timeout=2.0)

    def _replay_batch(self, conn: psycopg.Connection[Any], entries: list[tuple[int, Path]]) -> int:
        """Replay spooled files (oldest first) in one transaction and delete them after its
        commit; returns how many were replayed. A failed batch is replayed one by one."""
        deliveries: list[Delivery] = []
        paths: list[Path] = []
        size = 0
        for _seq, path in entries:
            try:
                raw = self.spool.read(path)
                delivery = Delivery.from_json(raw)
            except (ValueError, KeyError, TypeError, SpoolError) as exc:
                self.spool.quarantine(path, str(exc))
                continue
            deliveries.append(delivery)
            paths.append(path)
            size += len(raw)
            if size >= REPLAY_BATCH_BYTES:
                break
        if not deliveries:
            return 0
        try:
            write_batch(conn, deliveries, self.context())
        except psycopg.OperationalError as exc:
            if conn.closed or not _alive(conn):
                raise
            log.warning("spool batch of %d failed (%s): one by one", len(paths), exc)
            return self._replay_each(conn, paths)
        except Exception as exc:
            log.warning("spool batch of %d failed (%s): one by one", len(paths), exc)
            return self._replay_each(conn, paths)
        self.spool.remove_many(paths)
        for path in paths:
            self._failures.pop(path, None)
        return len(paths)

    def _replay_each(self, conn: psycopg.Connection[Any], paths: list[Path]) -> int:
        for path in paths:
            if self._stop.is_set():
                break
            self._replay_one(conn, path)
        return len(paths)

    def _replay_one(self, conn: psycopg.Connection[Any], path: Path) -> None:
        try:
            delivery = Delivery.from_json(self.spool.read(path))
        except (ValueError, KeyError, TypeError, SpoolError) as exc:
            self.spool.quarantine(path, str(exc))
            return
        try:
            write_delivery(conn, delivery, self.context(), log_duplicate=False)
        except psycopg.OperationalError as exc:
            if conn.closed or not _alive(conn):
                raise
            # The server answers, yet this delivery keeps failing (e.g. a statement timeout):
            # after a few tries keep it raw rather than block the spool forever.
            count = self._failures.get(path, 0) + 1
            self._failures[path] = count
            if count < POISON_ATTEMPTS:
                raise
            log.error("spool file %s failed %d times (%s): storing it raw", path, count, exc)
            store_raw(conn, delivery, f"replay failed: {exc}"[:1000], status="stored", payload=None)
        except Exception as exc:  # not even storable raw: out of the queue, kept for a human
            self._failures.pop(path, None)
            self.spool.quarantine(path, f"{type(exc).__name__}: {exc}")
            return
        self._failures.pop(path, None)
        self.spool.remove(path)


def _close_quietly(pool: ConnectionPool) -> None:
    with contextlib.suppress(Exception):
        pool.close(timeout=5.0)


def _alive(conn: psycopg.Connection[Any]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True
