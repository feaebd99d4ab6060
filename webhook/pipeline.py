"""Where an accepted delivery goes: straight to PostgreSQL, or to the spool and replayed later.

Two modes:
- **direct** — the delivery is written in one statement on a pooled connection before the
  reply. If that raises `psycopg.OperationalError` (server down, connection lost, pool
  timeout), nothing was written: the delivery is spooled and the pipeline switches to
- **spooling** — every delivery goes to the spool (so arrival order is kept), and the
  replayer thread writes the spool to the database oldest first on its own connection,
  deleting each file after its commit. When the spool is empty and the pool answers again,
  the pipeline switches back to direct. A spool left by a previous run starts in spooling.

Failure modes: `SpoolError` from `accept` when a delivery can be neither written nor spooled
(the HTTP layer answers 503 so the sender retries). A spool file that keeps failing while the
database is reachable is stored raw (`status='stored'`) after `POISON_ATTEMPTS` tries.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg_pool import ConnectionPool

from ts_shared import Settings, utcnow
from webhook.parse import ParseContext
from webhook.spool import Spool, SpoolError
from webhook.store import Delivery, store_raw, write_delivery

log = logging.getLogger(__name__)

Outcome = Literal["stored", "spooled"]

DIRECT_TIMEOUT_S = 2.0  # how long a request waits for a pooled connection before spooling
POISON_ATTEMPTS = 5
_BACKOFF_MIN_S = 0.2
_BACKOFF_MAX_S = 5.0


class PushPipeline:
    """The receiver's write path: pool, spool, mode and the replayer thread."""

    def __init__(
        self,
        settings: Settings,
        pool: ConnectionPool,
        spool: Spool,
        *,
        direct_timeout_s: float = DIRECT_TIMEOUT_S,
    ) -> None:
        self._settings = settings
        self._pool = pool
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

    def context(self) -> ParseContext:
        """Parse context for a delivery written now."""
        return ParseContext(utcnow(), self._settings.gps_filter_max_future_s)

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
        """Probe the database through the pool."""
        try:
            with self._pool.connection(timeout=timeout) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            self._db_up = False
            return False
        self._db_up = True
        return True

    def health(self) -> dict[str, Any]:
        """What /health reports."""
        db_up = self.database_up()
        return {
            "status": "ok" if db_up and not self._spooling else "degraded",
            "database": "up" if db_up else "down",
            "spooling": self._spooling,
            "spool_depth": self.spool.depth,
        }

    # ── the replayer ────────────────────────────────────────────────────────

    def _replay_loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        backoff = _BACKOFF_MIN_S
        while not self._stop.is_set():
            if not self._spooling:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(
                        self._settings.dsn(),
                        autocommit=True,
                        connect_timeout=3,
                        application_name="webhook_spool_replay",
                    )
                self._drain(conn)
                backoff = _BACKOFF_MIN_S
                if self._try_direct():
                    conn.close()
                    conn = None
                else:
                    self._wake.wait(0.2)
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
        """Replay every spooled delivery, oldest first, until the spool is empty."""
        replayed = 0
        started = time.monotonic()
        while not self._stop.is_set():
            pending = self.spool.pending()
            if not pending:
                break
            for _seq, path in pending:
                if self._stop.is_set():
                    return
                self._replay_one(conn, path)
                replayed += 1
        if replayed:
            log.info(
                "replayed %d spooled deliveries in %.1fs (depth now %d)",
                replayed,
                time.monotonic() - started,
                self.spool.depth,
            )

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

    def _try_direct(self) -> bool:
        """Switch back to direct mode when the spool is empty and the pool answers."""
        if self.spool.pending() or not self.database_up(timeout=0.5):
            return False
        with self._lock:
            if self.spool.pending():
                return False
            self._spooling = False
        log.info("spool drained: writing deliveries directly again")
        return True


def _alive(conn: psycopg.Connection[Any]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True
