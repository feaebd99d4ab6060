"""The polling jobs: fetch from the Jimi API → parse → write, one unit of work at a time.

Rules every job follows (docs/ingestion.md explains them for operators):
- one failing target, batch or device is recorded and skipped; the job goes on;
- rows and the job's watermark for those devices are committed in one transaction, so a
  killed run resumes exactly after its last committed window and never duplicates;
- each run writes one `source='job'` row into `tracksolid.ingestion_log` with what it
  inserted, what the quality filter dropped (per reason) and flagged, and what failed;
- `stop` (SIGTERM) is checked between units of work: the unit in hand is finished.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import psycopg
from psycopg_pool import ConnectionPool

from ingest import writers
from ingest.parse import (
    AlarmRow,
    LiveRow,
    ParseError,
    PositionRow,
    StopRow,
    TripRow,
    parse_alarm,
    parse_device,
    parse_location,
    parse_mileage_trip,
    parse_stop,
    parse_track_point,
)
from ingest.quality import QualityRules, drop_reason, filter_rows, moves_live_marker
from ts_shared import (
    IMEI_BATCH,
    ApiReply,
    JimiClient,
    JimiError,
    JimiFatalError,
    Settings,
    batched,
    clean,
    fmt_api_time,
    record_ingestion,
    utcnow,
)

log = logging.getLogger(__name__)

API_HORIZON = timedelta(days=90)  # the API answers history queries for ~3 months
TRACK_CHUNK = timedelta(days=1)  # ≤ 7 days per track.list call; a day keeps replies small
REPORT_CHUNK = timedelta(days=1)  # trips / parking per call
ALARM_CHUNK = timedelta(days=7)  # ≤ 1 month per alarm.list call
PAGE_SIZE = 100
UNKNOWN_DEVICE = 1002  # "illegal user/device": the IMEI is not found / not under the account
RECHECK_UNKNOWN = timedelta(days=1)  # a device unknown to the API is re-tried once a day

# Re-read this much before a job's watermark: trips and stops are reported only once they
# have ended (a trip that started before the last run may end after it), and devices upload
# buffered fixes late. Upserts make the overlap free of duplicates.
LOOKBACK = {
    "track_list": timedelta(minutes=10),
    "trips": timedelta(hours=6),
    "parking_off": timedelta(hours=24),
    "parking_on": timedelta(hours=6),
    "alarms": timedelta(minutes=10),
}

# Where a device's data ends when it has no watermark yet (resuming from an older system).
LAST_DATA_SQL = {
    "track_list": "SELECT imei, max(gps_time) FROM tracksolid.position_history"
    " WHERE source = 'track_list' AND imei = ANY(%s) GROUP BY imei",
    "trips": "SELECT imei, max(start_time) FROM tracksolid.trips"
    " WHERE imei = ANY(%s) GROUP BY imei",
    "parking_off": "SELECT imei, max(start_time) FROM tracksolid.parking_events"
    " WHERE NOT acc_on AND imei = ANY(%s) GROUP BY imei",
    "parking_on": "SELECT imei, max(start_time) FROM tracksolid.parking_events"
    " WHERE acc_on AND imei = ANY(%s) GROUP BY imei",
    "alarms": "SELECT imei, max(alarm_time) FROM tracksolid.alarms"
    " WHERE source = 'poll' AND imei = ANY(%s) GROUP BY imei",
}


@dataclass
class JobStats:
    """What one run of a job did (written to ingestion_log and returned to callers)."""

    job: str
    started: float = field(default_factory=time.monotonic)
    calls: int = 0
    failures: int = 0
    inserted: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    drops: Counter[str] = field(default_factory=Counter)
    flagged: int = 0
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False

    def fail(self, where: str, exc: Exception) -> None:
        """Record one failed unit of work."""
        self.failures += 1
        if len(self.errors) < 20:
            self.errors.append(f"{where}: {exc}")
        log.warning("%s: %s failed: %s", self.job, where, exc)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return self.failures == 0

    def merge(self, part: JobStats) -> None:
        """Add the counts of a part of this run (done in another thread)."""
        self.calls += part.calls
        self.failures += part.failures
        self.inserted.update(part.inserted)
        self.updated.update(part.updated)
        self.drops.update(part.drops)
        self.flagged += part.flagged
        self.errors.extend(part.errors[: max(0, 20 - len(self.errors))])
        self.interrupted |= part.interrupted


class Ingestor:
    """All polling jobs over one settings / pool / client, with an injectable clock."""

    def __init__(
        self,
        settings: Settings,
        pool: ConnectionPool,
        client: JimiClient,
        *,
        now: Callable[[], datetime] = utcnow,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.client = client
        self.now = now
        self.stop = stop or threading.Event()
        self.rules = QualityRules(
            max_speed_kmh=settings.gps_filter_max_speed_kmh,
            max_future_s=settings.gps_filter_max_future_s,
        )

    # ── bookkeeping ─────────────────────────────────────────────────────────

    def _finish(self, stats: JobStats) -> JobStats:
        duration_ms = int((time.monotonic() - stats.started) * 1000)
        detail: dict[str, Any] = {
            "calls": stats.calls,
            "inserted": dict(stats.inserted),
            "updated": dict(stats.updated),
            "dropped": dict(stats.drops),
            "flagged": stats.flagged,
            "failures": stats.failures,
        }
        if stats.interrupted:
            detail["interrupted"] = True
        record_ingestion(
            self.pool,
            source="job",
            method=stats.job,
            ok=stats.ok,
            rows=sum(stats.inserted.values()),
            duration_ms=duration_ms,
            error="; ".join(stats.errors) or None,
            detail=detail,
        )
        log.info(
            "job %s: inserted=%s updated=%s dropped=%s flagged=%d failures=%d in %d ms",
            stats.job, dict(stats.inserted), dict(stats.updated), dict(stats.drops),
            stats.flagged, stats.failures, duration_ms,
        )  # fmt: skip
        return stats

    def _stopping(self, stats: JobStats) -> bool:
        if self.stop.is_set():
            stats.interrupted = True
            return True
        return False

    def _devices(self, *, active_since_job: str | None = None) -> list[Device]:
        """Enabled devices the API knows (`poll_state = 'active'`; those it answered 1002
        for are left out, see `_mark_unknown`); with `active_since_job`, only those whose
        live fix is newer than that job's watermark (something new to fetch)."""
        with self.pool.connection() as conn:
            if active_since_job is None:
                rows = conn.execute(
                    "SELECT imei, account, api_synced_at IS NOT NULL FROM tracksolid.devices"
                    " WHERE is_active AND enabled_flag IS DISTINCT FROM false"
                    " AND poll_state = 'active' ORDER BY imei"
                ).fetchall()
            else:
                rows = conn.execute(
                    """
                    SELECT d.imei, d.account, d.api_synced_at IS NOT NULL
                    FROM tracksolid.devices d
                    JOIN tracksolid.live_positions l USING (imei)
                    LEFT JOIN tracksolid.ingest_watermarks w
                           ON w.job = %s AND w.imei = d.imei
                    WHERE d.is_active AND d.enabled_flag IS DISTINCT FROM false
                      AND d.poll_state = 'active'
                      AND (w.covered_until IS NULL OR l.gps_time > w.covered_until)
                    ORDER BY d.imei
                    """,
                    (active_since_job,),
                ).fetchall()
        return [Device(r[0], r[1], bool(r[2])) for r in rows]

    def _mark_unknown(self, imei: str, stats: JobStats, exc: JimiError) -> None:
        """The API answered 1002 for this one device: mark it `unknown_to_api`, so the
        per-device jobs leave it out until a device sync sees it again (expected, not a
        failure: /health/ingest does not count these answers either)."""
        with self.pool.connection() as conn:
            changed = conn.execute(
                "UPDATE tracksolid.devices SET poll_state = 'unknown_to_api',"
                " poll_state_since = now(), poll_checked_at = %s, updated_at = now()"
                " WHERE imei = %s AND poll_state = 'active'",
                (self.now(), imei),
            ).rowcount
        if changed:
            stats.updated["unknown_to_api"] += 1
            log.info("%s: device %s is unknown to the API (%s); not polled until a device"
                     " sync lists it", stats.job, imei, exc)  # fmt: skip

    def _starts(
        self, job: str, imeis: list[str], default_back: timedelta, catchup: bool
    ) -> dict[str, datetime]:
        """Per IMEI, where the next window of `job` begins (watermark - lookback, else the
        last stored data, else `default_back` ago — or the catch-up horizon)."""
        now = self.now()
        horizon = now - min(API_HORIZON, timedelta(days=self.settings.ingest_catchup_days))
        with self.pool.connection() as conn:
            marks = writers.get_watermarks(conn, job)
            missing = [i for i in imeis if i not in marks]
            last_data = (
                {r[0]: r[1] for r in conn.execute(LAST_DATA_SQL[job], (missing,)).fetchall()}
                if missing
                else {}
            )
        starts = {}
        for imei in imeis:
            if imei in marks:
                begin = marks[imei] - LOOKBACK[job]
            elif imei in last_data:
                begin = last_data[imei]
            else:
                begin = horizon if catchup else now - default_back
            starts[imei] = max(begin, horizon, now - API_HORIZON + timedelta(hours=1))
        return starts

    # ── device sync ─────────────────────────────────────────────────────────

    def sync_devices(self) -> JobStats:
        """List every target's devices, add each one's detail (FIX-M17/M18/M19), upsert."""
        stats = JobStats("device_sync")
        every_list_answered = True
        for target, reply in self.client.call_each_target("jimi.user.device.list"):
            stats.calls += 1
            if isinstance(reply, JimiError):
                stats.fail(f"device list of {target}", reply)
                stats.updated["account_lists_failed"] += 1  # the audit reads it (ingest/audit.py)
                every_list_answered = False
                continue
            items = []
            for item in reply.items():
                if clean(item.get("imei")):
                    items.append(item)
                else:
                    stats.drops["missing_imei"] += 1
            devices = []
            for item, detail, part in self._parallel(self._detail_of, items, target):
                stats.merge(part)
                row = parse_device(item, detail, target)
                row["raw"] = {"list": item, "detail": detail}
                devices.append(row)
            listed = [d["imei"] for d in devices]
            with self.pool.connection() as conn:
                # a changed driver enters the driver history from now (trigger, 0105)
                inserted, updated = writers.upsert_devices(conn, devices, seen_at=self.now())
                stats.updated["reactivated"] += writers.reactivate_devices(conn, listed)
                stats.updated["relisted"] += writers.relist_devices(conn, listed)
            stats.inserted["devices"] += inserted
            stats.updated["devices"] += updated
            if stats.interrupted:
                break
        if not stats.interrupted:
            self._recheck_unknown(stats)
        days = self.settings.registry_deactivate_after_days
        if every_list_answered and not stats.interrupted and days > 0:
            # Only after every account answered: a failing account is not "stopped listing".
            with self.pool.connection() as conn:
                stats.updated["deactivated"] += writers.deactivate_unlisted(conn, days)
        return self._finish(stats)

    def _recheck_unknown(self, stats: JobStats) -> None:
        """Devices marked `unknown_to_api` that no account listed: ask the API about each
        once a day at most (`jimi.track.device.detail`); an answer makes it active again."""
        due = self.now() - RECHECK_UNKNOWN
        with self.pool.connection() as conn:
            imeis = [r[0] for r in conn.execute(
                "SELECT imei FROM tracksolid.devices WHERE poll_state = 'unknown_to_api'"
                " AND is_active AND (poll_checked_at IS NULL OR poll_checked_at <= %s)"
                " ORDER BY imei",
                (due,)).fetchall()]  # fmt: skip
        for imei in imeis:
            if self._stopping(stats):
                return
            stats.calls += 1
            try:
                self.client.call("jimi.track.device.detail", {"imei": imei}, target=imei)
            except JimiFatalError as exc:
                if exc.code != UNKNOWN_DEVICE:
                    stats.fail(f"re-check of {imei}", exc)
                with self.pool.connection() as conn:
                    conn.execute("UPDATE tracksolid.devices SET poll_checked_at = %s"
                                 " WHERE imei = %s", (self.now(), imei))  # fmt: skip
                stats.updated["still_unknown_to_api"] += 1
                continue
            except JimiError as exc:  # transient: try again at the next sync
                stats.fail(f"re-check of {imei}", exc)
                continue
            with self.pool.connection() as conn:
                stats.updated["reactivated"] += writers.reactivate_devices(conn, [imei])

    def _detail_of(
        self, item: dict[str, Any], target: str
    ) -> tuple[dict[str, Any], dict[str, Any] | None, JobStats]:
        part = JobStats("device_sync")
        imei = str(clean(item.get("imei")))
        detail: dict[str, Any] | None = None
        if self._stopping(part):
            return item, None, part
        part.calls += 1
        try:
            got = self.client.call("jimi.track.device.detail", {"imei": imei}, target=target)
            detail = got.result if isinstance(got.result, dict) else None
        except JimiError as exc:
            part.fail(f"detail of {imei}", exc)  # keep the list data anyway
        return item, detail, part

    def _parallel(
        self, func: Callable[[Any, Any], tuple[Any, Any, JobStats]], items: list[Any], arg: Any
    ) -> Iterator[tuple[Any, Any, JobStats]]:
        """Run per-device work on INGEST_API_CONCURRENCY threads, results in input order.
        Each call returns its own JobStats part, merged by the caller in this thread."""
        workers = max(1, self.settings.ingest_api_concurrency)
        if workers == 1 or len(items) < 2:
            for item in items:
                yield func(item, arg)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jimi") as pool:
            yield from pool.map(lambda item: func(item, arg), items)

    # ── live positions ──────────────────────────────────────────────────────

    def poll_live(self) -> JobStats:
        """Current fix of every device of every target → live_positions + position_history."""
        stats = JobStats("live_positions")
        now = self.now()
        for target, reply in self.client.call_each_target("jimi.user.device.location.list"):
            stats.calls += 1
            if isinstance(reply, JimiError):
                stats.fail(f"location list of {target}", reply)
                items = self._locations_by_imei(target, stats)
            else:
                items = reply.items()
            self._store_live(items, target, now, stats)
            if self._stopping(stats):
                break
        return self._finish(stats)

    def _locations_by_imei(self, target: str, stats: JobStats) -> list[dict[str, Any]]:
        """Fallback when a target's list fails: `jimi.device.location.get` by 50 IMEIs."""
        with self.pool.connection() as conn:
            imeis = [
                r[0]
                for r in conn.execute(
                    "SELECT imei FROM tracksolid.devices WHERE account = %s"
                    " AND poll_state = 'active' ORDER BY imei",
                    (target,),
                ).fetchall()
            ]
        return self.refresh_locations(imeis, stats)

    def refresh_locations(self, imeis: list[str], stats: JobStats) -> list[dict[str, Any]]:
        """On-demand precise positions of given devices (FIX-M15), batches of 50."""
        items: list[dict[str, Any]] = []
        for batch in batched(imeis, IMEI_BATCH):
            stats.calls += 1
            try:
                reply = self.client.call("jimi.device.location.get", {"imeis": ",".join(batch)})
            except JimiError as exc:
                stats.fail(f"location.get of {len(batch)} devices", exc)
                continue
            items.extend(reply.items())
        return items

    def _store_live(
        self, items: list[dict[str, Any]], target: str, now: datetime, stats: JobStats
    ) -> None:
        live: list[LiveRow] = _parse_each(
            items, lambda item: parse_location(item, target), stats, ""
        )
        kept = []
        for row in live:
            reason = drop_reason(row.position, now, self.rules)
            if reason is None:
                kept.append(row)
            else:
                stats.drops[reason] += 1
        live = kept
        with self.pool.connection() as conn, conn.transaction():
            inserted, flagged = writers.write_positions(
                conn, [r.position for r in live], self.rules
            )
            # A flagged jump never moves the live marker (the push receiver's rule too).
            changed = writers.upsert_live(
                conn, [r for r in live if moves_live_marker(r.position.quality_flag)]
            )
        stats.inserted["position_history"] += inserted
        stats.updated["live_positions"] += changed
        stats.flagged += flagged

    # ── high-resolution track (FIX-M14) ────────────────────────────────────

    def poll_track(self, *, catchup: bool = False) -> JobStats:
        """Per device with something new: track.list from its watermark to now, by day."""
        stats = JobStats("track_list_catchup" if catchup else "track_list")
        devices = self._devices(active_since_job=None if catchup else "track_list")
        imeis = [d.imei for d in devices]
        starts = self._starts("track_list", imeis, timedelta(minutes=30), catchup)
        end = self.now()
        work = [(imei, starts[imei]) for imei in imeis]
        for _, _, part in self._parallel(self._track_device, work, end):
            stats.merge(part)
        return self._finish(stats)

    def _track_device(
        self, work: tuple[str, datetime], end: datetime
    ) -> tuple[str, None, JobStats]:
        """One device's track windows, oldest first; each window commits with its watermark."""
        imei, start = work
        part = JobStats("track_list")
        for begin, until in _windows(start, end, TRACK_CHUNK):
            if self._stopping(part):
                break
            part.calls += 1
            try:
                reply = self.client.call(
                    "jimi.device.track.list",
                    {"imei": imei, "begin_time": fmt_api_time(begin),
                     "end_time": fmt_api_time(until)},
                    target=imei,
                )  # fmt: skip
            except JimiFatalError as exc:
                if exc.code == UNKNOWN_DEVICE:
                    self._mark_unknown(imei, part, exc)
                else:
                    part.fail(f"track of {imei} {begin:%Y-%m-%d %H:%M}", exc)
                break  # keep the watermark; the next run retries from here
            except JimiError as exc:
                part.fail(f"track of {imei} {begin:%Y-%m-%d %H:%M}", exc)
                break
            rows: list[PositionRow] = _parse_each(
                reply.items(), lambda item: parse_track_point(item, imei), part, ""
            )
            rows = filter_rows(rows, self.now(), self.rules, part.drops)
            with self.pool.connection() as conn, conn.transaction():
                inserted, flagged = writers.write_positions(conn, rows, self.rules)
                writers.set_watermarks(conn, "track_list", [imei], until)
            part.inserted["position_history"] += inserted
            part.flagged += flagged
        return imei, None, part

    # ── trips / mileage (FIX-M11/M16) ──────────────────────────────────────

    def poll_trips(self, *, catchup: bool = False) -> JobStats:
        """track.mileage per 50 devices from their watermark to now, by day, paged."""
        stats = JobStats("trips_catchup" if catchup else "trips")
        self._batched_windows(
            stats, "trips", self._devices(), catchup, timedelta(minutes=30), REPORT_CHUNK,
            fetch=self._fetch_trips,
        )  # fmt: skip
        return self._finish(stats)

    def _fetch_trips(
        self, batch: list[str], begin: datetime, until: datetime, stats: JobStats
    ) -> Callable[[Any], None]:
        params = {"imeis": ",".join(batch), "begin_time": fmt_api_time(begin),
                  "end_time": fmt_api_time(until)}  # fmt: skip
        # `result` holds the trips; `data` holds per-device totals, which are not trips.
        pages = self._paged("jimi.device.track.mileage", params, stats, by_row=True,
                            target=_solo(batch), select=_result_list)  # fmt: skip
        rows: list[TripRow] = _parse_each(pages, parse_mileage_trip, stats, "trip_")

        def write(conn: Any) -> None:
            inserted, updated = writers.upsert_trips(conn, rows)
            stats.inserted["trips"] += inserted
            stats.updated["trips"] += updated

        return write

    # ── parking and idling (FIX-M13, scoped per account FIX-M19) ─────────────

    def poll_parking(self, *, catchup: bool = False) -> JobStats:
        """Parking (acc off) and idling (acc on) reports, asked of each IMEI's own account."""
        stats = JobStats("parking_catchup" if catchup else "parking")
        by_account: dict[str, list[Device]] = defaultdict(list)
        for device in self._devices():
            if device.account:
                by_account[device.account].append(device)
            else:  # not listed by any target yet (CSV / push only): no account to ask
                stats.drops["parking_no_account"] += 1
        for acc_type, job in (("off", "parking_off"), ("on", "parking_on")):
            for account, devices in sorted(by_account.items()):
                fetch = self._parking_fetcher(account, acc_type)
                self._batched_windows(
                    stats, job, devices, catchup, timedelta(minutes=30), REPORT_CHUNK, fetch=fetch
                )
                if stats.interrupted:
                    return self._finish(stats)
        return self._finish(stats)

    def _parking_fetcher(
        self, account: str, acc_type: str
    ) -> Callable[[list[str], datetime, datetime, JobStats], Callable[[Any], None]]:
        def fetch(
            batch: list[str], begin: datetime, until: datetime, stats: JobStats
        ) -> Callable[[Any], None]:
            params = {"account": account, "imeis": ",".join(batch),
                      "start_time": fmt_api_time(begin), "end_time": fmt_api_time(until),
                      "acc_type": acc_type}  # fmt: skip
            pages = self._paged("jimi.open.platform.report.parking", params, stats,
                                by_row=True, target=_solo(batch) or account)  # fmt: skip
            rows: list[StopRow] = _parse_each(
                pages, lambda item: parse_stop(item, acc_type == "on", account), stats, "stop_"
            )

            def write(conn: Any) -> None:
                inserted, updated = writers.upsert_stops(conn, rows)
                stats.inserted["parking_events"] += inserted
                stats.updated["parking_events"] += updated

            return write

        return fetch

    # ── alarms (FIX-E06) ────────────────────────────────────────────────────

    def poll_alarms(self, *, catchup: bool = False) -> JobStats:
        """alarm.list per 50 devices from their watermark to now, paged by page_no."""
        stats = JobStats("alarms_catchup" if catchup else "alarms")
        self._batched_windows(
            stats, "alarms", self._devices(), catchup, timedelta(minutes=10), ALARM_CHUNK,
            fetch=self._fetch_alarms,
        )  # fmt: skip
        return self._finish(stats)

    def _fetch_alarms(
        self, batch: list[str], begin: datetime, until: datetime, stats: JobStats
    ) -> Callable[[Any], None]:
        params = {"imeis": ",".join(batch), "begin_time": fmt_api_time(begin),
                  "end_time": fmt_api_time(until)}  # fmt: skip
        pages = self._paged(
            "jimi.device.alarm.list", params, stats, by_row=False, target=_solo(batch)
        )
        rows: list[AlarmRow] = _parse_each(pages, parse_alarm, stats, "alarm_")

        def write(conn: Any) -> None:
            stats.inserted["alarms"] += writers.insert_alarms(conn, rows)

        return write

    # ── shared helpers ──────────────────────────────────────────────────────

    def _paged(
        self,
        method: str,
        params: dict[str, Any],
        stats: JobStats,
        *,
        by_row: bool,
        target: str | None = None,
        select: Callable[[ApiReply], list[dict[str, Any]]] = ApiReply.items,
    ) -> Iterator[dict[str, Any]]:
        """Every item of a paged method, page after page until a short page. Paging is
        `start_row` (from 0, step PAGE_SIZE) when `by_row`, else `page_no` (from 1, step 1).
        A JimiError of any page propagates to the caller (the window is then retried)."""
        cursor = 0 if by_row else 1
        while True:
            stats.calls += 1
            paging = {"start_row" if by_row else "page_no": cursor, "page_size": PAGE_SIZE}
            page = select(self.client.call(method, {**params, **paging}, target=target))
            yield from page
            if len(page) < PAGE_SIZE:
                return
            cursor += PAGE_SIZE if by_row else 1

    # ── shared window walker ────────────────────────────────────────────────

    def _batched_windows(
        self,
        stats: JobStats,
        job: str,
        devices: list[Device],
        catchup: bool,
        default_back: timedelta,
        chunk: timedelta,
        *,
        fetch: Callable[[list[str], datetime, datetime, JobStats], Callable[[Any], None]],
    ) -> None:
        """For each batch of 50 IMEIs: from the earliest start in the batch to now, in
        chunks; rows and watermarks of each chunk are committed together. Devices no
        account has listed yet (from a push or the CSV) are asked alone: if the API does not
        know one, its 1002 marks only that device and refuses no batch of known ones."""
        imeis = [d.imei for d in devices]
        starts = self._starts(job, imeis, default_back, catchup)
        end = self.now()
        # Devices with similar starts share a batch, so one laggard doesn't widen every call.
        listed = sorted((d.imei for d in devices if d.listed), key=lambda i: starts[i])
        alone = [[d.imei] for d in devices if not d.listed]
        for batch in [*batched(listed, IMEI_BATCH), *alone]:
            begin = min(starts[i] for i in batch)
            self._walk(stats, job, batch, begin, end, chunk, fetch)
            if stats.interrupted:
                return

    def _walk(
        self,
        stats: JobStats,
        job: str,
        batch: list[str],
        begin: datetime,
        end: datetime,
        chunk: timedelta,
        fetch: Callable[[list[str], datetime, datetime, JobStats], Callable[[Any], None]],
    ) -> None:
        """Walk one batch's windows. If the API refuses a multi-device call for good (e.g.
        1002 for one IMEI it does not know), retry the devices one by one from that window,
        so one bad device never holds back the other 49."""
        for window_begin, until in _windows(begin, end, chunk):
            if self._stopping(stats):
                return
            who = batch[0] if len(batch) == 1 else f"{len(batch)} devices"
            where = f"{job} of {who} {window_begin:%Y-%m-%d %H:%M}"
            try:
                write = fetch(batch, window_begin, until, stats)
            except JimiFatalError as exc:
                if len(batch) == 1 and exc.code == UNKNOWN_DEVICE:
                    self._mark_unknown(batch[0], stats, exc)
                    return
                if len(batch) == 1:
                    stats.fail(where, exc)
                    return  # keep the watermark; the next run retries from here
                log.info("%s: refused (%s); retrying the devices one by one", job, exc)
                marked = stats.updated["unknown_to_api"]
                for imei in batch:
                    self._walk(stats, job, [imei], window_begin, end, chunk, fetch)
                if exc.code != UNKNOWN_DEVICE or stats.updated["unknown_to_api"] == marked:
                    stats.fail(where, exc)  # not explained by a device the API does not know
                return
            except JimiError as exc:
                stats.fail(where, exc)
                return
            with self.pool.connection() as conn, conn.transaction():
                write(conn)
                writers.set_watermarks(conn, job, batch, until)

    # ── trip speeds and derived trips (trips/) ─────────────────────────────

    def derive_trips(self) -> JobStats:
        """Trip speeds + trips derived from positions, incrementally (trips/derive.py)."""
        from trips.job import derive_trips  # noqa: PLC0415 - trips.job imports this module

        return derive_trips(self)

    def geofence_events(self) -> JobStats:
        """Geofence enter/exit events and out-of-region episodes (geofences/events.py)."""
        from geofences.job import geofence_events  # noqa: PLC0415 - it imports this module

        return geofence_events(self)

    def alerts(self) -> JobStats:
        """Evaluate alert rules, compose and deliver alert messages (alerts/, docs/alerts.md)."""
        from alerts.job import alerts_job  # noqa: PLC0415 - alerts.job imports this module

        return alerts_job(self)

    # ── ticket visits (visits/) ─────────────────────────────────────────────

    def ticket_visits(self) -> JobStats:
        """Recompute the visits of tickets active in the last VISIT_RECOMPUTE_DAYS
        (visits/refresh.py); late positions inside that window are picked up by the rerun."""
        from visits.refresh import recent_window, refresh_visits  # noqa: PLC0415

        stats = JobStats("ticket_visits")
        since, until = recent_window(self.now(), self.settings)
        with self.pool.connection() as conn:
            try:
                run = refresh_visits(conn, self.settings, since, until)
                stats.updated["ticket_visits"] += run.visits
            except psycopg.Error as exc:  # recorded; the next run retries
                stats.fail("refresh ticket_visits", exc)
        return self._finish(stats)

    # ── daily roll-up ───────────────────────────────────────────────────────

    def refresh_rollups(self) -> JobStats:
        """Bring `tracksolid.v_mileage_daily_cagg` up to date on either engine (see
        `refresh_daily_rollup`)."""
        stats = JobStats("mileage_rollup")
        with self.pool.connection() as conn:
            try:
                if refresh_daily_rollup(conn) != "absent":
                    stats.updated["v_mileage_daily_cagg"] += 1
            except psycopg.Error as exc:  # recorded; the next run retries
                stats.fail("refresh v_mileage_daily_cagg", exc)
        return self._finish(stats)

    # ── housekeeping ────────────────────────────────────────────────────────

    def housekeeping(self, batch: int = 10_000) -> JobStats:
        """Delete fully parsed push deliveries and old audit rows past their retention, in
        small batches (each its own commit) so the tables stay available meanwhile."""
        stats = JobStats("housekeeping")
        targets = (
            ("push_inbox", self.settings.push_inbox_retention_days,
             "DELETE FROM tracksolid.push_inbox WHERE inbox_id IN (SELECT inbox_id"
             " FROM tracksolid.push_inbox WHERE status = 'parsed'"
             " AND received_at < now() - make_interval(days => %s) LIMIT %s)"),
            ("ingestion_log", self.settings.ingestion_log_retention_days,
             "DELETE FROM tracksolid.ingestion_log WHERE log_id IN (SELECT log_id"
             " FROM tracksolid.ingestion_log"
             " WHERE logged_at < now() - make_interval(days => %s) LIMIT %s)"),
        )  # fmt: skip
        for table, days, query in targets:
            if days <= 0:
                continue
            while not self._stopping(stats):
                with self.pool.connection() as conn:
                    deleted = conn.execute(query, (days, batch)).rowcount
                stats.updated[f"{table}_deleted"] += deleted
                if deleted < batch:
                    break
        return self._finish(stats)

    # ── the receiver's auto-registration cap ───────────────────────────────

    def check_unregistered_pushes(self) -> JobStats:
        """Hourly: warn (once, with the count) when pushed IMEIs were left unregistered in
        the last hour because PUSH_AUTOREGISTER_PER_HOUR was reached; forget those that have
        been registered since or not pushed for 30 days."""
        stats = JobStats("unregistered_pushes")
        with self.pool.connection() as conn:
            stats.updated["push_unregistered_deleted"] += conn.execute(
                "DELETE FROM tracksolid.push_unregistered p WHERE EXISTS"
                " (SELECT 1 FROM tracksolid.devices d WHERE d.imei = p.imei)"
                " OR p.last_seen_at < now() - interval '30 days'"
            ).rowcount
            row = conn.execute(
                "SELECT count(*), coalesce(sum(deliveries), 0),"
                " (array_agg(imei ORDER BY last_seen_at DESC))[1:5]"
                " FROM tracksolid.push_unregistered WHERE last_seen_at > now() - interval '1 hour'"
            ).fetchone()
        count, deliveries, sample = (row[0], row[1], row[2]) if row else (0, 0, None)
        stats.updated["push_unregistered"] = count
        if count:
            log.warning(
                "push auto-registration cap reached (PUSH_AUTOREGISTER_PER_HOUR=%d): %d pushed"
                " IMEIs (%d deliveries) in the last hour were stored but not registered for"
                " polling, e.g. %s; see tracksolid.push_unregistered",
                self.settings.push_autoregister_per_hour, count, deliveries,
                ", ".join(sample or []),
            )  # fmt: skip
        return self._finish(stats)

    # ── catch-up ────────────────────────────────────────────────────────────

    def catchup(self) -> list[JobStats]:
        """Fill every device's gap since its last stored data (≤ INGEST_CATCHUP_DAYS back):
        track list, trips, parking, alarms. Resumable: watermarks advance per chunk."""
        results = []
        for run in (self.poll_track, self.poll_trips, self.poll_parking, self.poll_alarms):
            if self.stop.is_set():
                break
            results.append(run(catchup=True))
        return results


class Device(NamedTuple):
    """A device to poll: its IMEI, owning account, and whether an account has listed it."""

    imei: str
    account: str | None
    listed: bool


def _solo(batch: list[str]) -> str | None:
    """The audit-log target of a per-device call (its IMEI); None for a batch."""
    return batch[0] if len(batch) == 1 else None


def _result_list(reply: ApiReply) -> list[dict[str, Any]]:
    """The `result` list only (for methods whose `data` holds something else)."""
    result = reply.result if isinstance(reply.result, list) else []
    return [item for item in result if isinstance(item, dict)]


def _parse_each[R](
    items: Iterable[dict[str, Any]],
    parse: Callable[[dict[str, Any]], R],
    stats: JobStats,
    prefix: str,
) -> list[R]:
    """Parse every item; an item that fails is counted in `stats.drops` by reason."""
    rows = []
    for item in items:
        try:
            rows.append(parse(item))
        except ParseError as exc:
            stats.drops[f"{prefix}{exc.reason}"] += 1
    return rows


def _windows(
    begin: datetime, end: datetime, chunk: timedelta
) -> Iterator[tuple[datetime, datetime]]:
    """Consecutive [begin, until] windows of at most `chunk` covering begin → end."""
    cursor = begin.replace(microsecond=0)
    end = end.replace(microsecond=0)
    while cursor < end:
        until = min(cursor + chunk, end)
        yield cursor, until
        cursor = until


ROLLUP = "tracksolid.v_mileage_daily_cagg"


def _retention_start(conn: psycopg.Connection[Any]) -> datetime | None:
    """Oldest time position_history still holds in full under its retention policy (None:
    no policy, everything is kept)."""
    row = conn.execute(
        "SELECT now() - (config->>'drop_after')::interval FROM timescaledb_information.jobs"
        " WHERE proc_name = 'policy_retention' AND hypertable_schema = 'tracksolid'"
        " AND hypertable_name = 'position_history'"
    ).fetchone()
    conn.rollback()
    return row[0] if row else None


def refresh_daily_rollup(conn: psycopg.Connection[Any]) -> str:
    """Refresh the daily per-vehicle roll-up; returns what it is: `continuous` | `plain` |
    `absent`. Leaves the connection as it found it (outside a transaction).

    - TimescaleDB (continuous aggregate): `refresh_continuous_aggregate` over the whole kept past
      up to the policy's end offset. Only ranges invalidated by writes are recomputed, so this
      is cheap when nothing changed, and it also covers backfills older than the policy's 7-day
      window (a catch-up after an outage, an imported history), which the policy never sees.
      With a retention policy the window starts at its cutoff: refreshing days whose raw
      chunks were dropped would empty their roll-up, which is meant to outlive them.
      Reads are real-time (migration 0005), so the newest hour is current even before this.
    - plain PostgreSQL (materialized view): `REFRESH MATERIALIZED VIEW CONCURRENTLY` (plain
      REFRESH the first time, while it is unpopulated).
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    kind = "absent"
    has_caggs = conn.execute(
        "SELECT to_regclass('timescaledb_information.continuous_aggregates') IS NOT NULL"
    ).fetchone()
    if (
        has_caggs
        and has_caggs[0]
        and conn.execute(
            "SELECT 1 FROM timescaledb_information.continuous_aggregates"
            " WHERE view_schema = 'tracksolid' AND view_name = 'v_mileage_daily_cagg'"
        ).fetchone()
    ):
        kind = "continuous"
    else:
        row = conn.execute(
            "SELECT c.relispopulated FROM pg_matviews m JOIN pg_class c"
            " ON c.oid = format('%I.%I', m.schemaname, m.matviewname)::regclass"
            " WHERE m.schemaname = 'tracksolid' AND m.matviewname = 'v_mileage_daily_cagg'"
        ).fetchone()
        if row is not None:
            kind = "plain" if row[0] else "unpopulated"
    conn.rollback()  # end the catalog read's transaction: CALL must run outside one
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        if kind == "continuous":
            conn.execute(
                "CALL refresh_continuous_aggregate(%s, %s::timestamptz, now() - interval '1 hour')",
                (ROLLUP, _retention_start(conn)),
            )
        elif kind == "plain":
            conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {ROLLUP}")
        elif kind == "unpopulated":
            conn.execute(f"REFRESH MATERIALIZED VIEW {ROLLUP}")
            kind = "plain"
    finally:
        conn.autocommit = autocommit
    return kind
