"""The geofence_events pass's own machinery (geofences/events.py): its per-fix work table is
an UNLOGGED table (so parallel workers can read it) that exists only inside the pass's
transaction, and passes run one at a time (an advisory lock) — two passes at once, or a pass
killed half-way, leave the right visits and no work table behind."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from geofences.events import FIX_TABLE, PASS_LOCK, FenceParams, PassResult, connect, run_pass
from tests.factories import add_device, add_track, db_now
from tests.test_geofences import INSIDE, OUTSIDE, events, load_square

pytestmark = pytest.mark.both_engines

IMEIS = ("861000000000101", "861000000000102")


def seed(conn: psycopg.Connection[Any]) -> None:
    """One fence, two vehicles that each visit it once (entered at the 4th fix)."""
    load_square(conn)
    start = db_now(conn) - timedelta(hours=3)
    for i, imei in enumerate(IMEIS):
        add_device(conn, imei, f"KDP 10{i}A")
        add_track(conn, imei, start, [OUTSIDE] * 3 + [INSIDE] * 5 + [OUTSIDE] * 4)


def work_table_exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (FIX_TABLE,)).fetchone()
    return bool(row and row[0])


def in_thread(db_url: str, results: list[Any]) -> threading.Thread:
    """A pass on its own connection in a thread; its PassResult or exception lands in
    `results`."""

    def target() -> None:
        try:
            with connect(db_url) as conn:
                results.append(run_pass(conn, FenceParams(), db_now(conn)))
        except Exception as exc:  # the test inspects it
            results.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def wait_for(conn: psycopg.Connection[Any], sql: str, expected: int) -> None:
    """Poll `sql` (a count) until it reaches `expected` (10 s at most)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = conn.execute(sql).fetchone()
        if row and row[0] >= expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"never reached {expected}: {sql}")


def test_two_passes_at_once_take_turns(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        seed(conn)
        results: list[Any] = []
        with psycopg.connect(db_url, autocommit=True) as gate:
            gate.execute("SELECT pg_advisory_lock(%s)", (PASS_LOCK,))  # both passes queue
            threads = [in_thread(db_url, results) for _ in range(2)]
            wait_for(
                conn,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                2,
            )
            gate.execute("SELECT pg_advisory_unlock(%s)", (PASS_LOCK,))
        for thread in threads:
            thread.join(60)
        assert all(isinstance(r, PassResult) for r in results), results
        got = events(conn)
        assert [(e[0], e[4]) for e in got] == [(imei, 5) for imei in IMEIS]
        assert not work_table_exists(conn)
        # the same as one pass from scratch on its own
        conn.execute("DELETE FROM tracksolid.geofence_events")
        conn.execute("DELETE FROM tracksolid.geofence_event_state")
        with connect(db_url) as alone:
            run_pass(alone, FenceParams(), db_now(alone))
        assert events(conn) == got


def test_a_pass_killed_half_way_leaves_nothing(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        seed(conn)
        results: list[Any] = []
        waiting = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'geofence_events' AND wait_event_type = 'Lock'"
        )
        with psycopg.connect(db_url, autocommit=True) as holder, holder.transaction():
            # The pass marks the new fence computed after its events are written (its work
            # table then exists): a row lock held here stops it there.
            holder.execute("SELECT 1 FROM tracksolid.geofences FOR NO KEY UPDATE")
            thread = in_thread(db_url, results)
            wait_for(conn, waiting, 1)
            assert not work_table_exists(conn)  # not even visible while the pass runs
            conn.execute(waiting.replace("count(*)", "pg_terminate_backend(pid)"))
        thread.join(60)
        assert len(results) == 1 and isinstance(results[0], psycopg.Error), results
        assert events(conn) == [] and not work_table_exists(conn)
        # the next pass does it all, as if the killed one never ran
        with connect(db_url) as again:
            result = run_pass(again, FenceParams(), db_now(again))
        assert result.events == 2 and len(events(conn)) == 2
        assert not work_table_exists(conn)
