"""One quality filter for every source (issue #15): pushed GPS fixes go through the poller's
rules (ingest/quality.py) — jump flag, 0,0, future time — and the same rule for moving the
live marker. Pushes go through the real receiver (webhook_receiver.create_app)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from ingest import writers
from ingest.jobs import Ingestor, JobStats
from ingest.parse import PositionRow as PolledFix
from ingest.quality import JUMP_FLAG, QualityRules, filter_rows, flag_jumps, jump_sql
from jimi_sim import SimConfig
from sim.model import Fleet
from sim.push import build_push_deliveries
from tests import push_factories as f
from tests.conftest import test_settings
from tests.factories import MOMBASA, NAIROBI
from ts_shared import JimiClient, Settings, utcnow
from webhook_receiver import create_app

pytestmark = pytest.mark.both_engines

TOKEN = "push-quality-token"
IMEI = f.IMEIS[0]
T0 = f.T0


@pytest.fixture
def recv_settings(db_url: str, tmp_path: Path) -> Settings:
    return test_settings(db_url, jimi_push_token=TOKEN, webhook_spool_dir=str(tmp_path / "spool"))


@pytest.fixture
def client(recv_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(recv_settings)) as c:
        yield c


def q(db_url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(query, params).fetchall()


def fix(at: datetime, where: tuple[float, float], imei: str = IMEI) -> dict[str, Any]:
    return f.gps(imei, at, lat=f"{where[0]:.6f}", lng=f"{where[1]:.6f}")


def polled(at: datetime, lat: float, lng: float, imei: str = IMEI) -> PolledFix:
    """A fix as the poller parses it."""
    return PolledFix(imei, at, lat, lng, None, None, None, None, None, None, None, None, "poll")


def push(client: TestClient, *items: dict[str, Any]) -> None:
    response = client.post("/pushgps", data=f.iothub_form(list(items), TOKEN))
    assert response.status_code == 200, response.text


def history(db_url: str) -> list[tuple[Any, ...]]:
    return q(
        db_url,
        "SELECT gps_time, quality_flag, implied_speed_kmh IS NOT NULL"
        " FROM tracksolid.position_history ORDER BY gps_time",
    )


def live(db_url: str) -> list[tuple[Any, ...]]:
    return q(db_url, "SELECT gps_time, lat, lng FROM tracksolid.live_positions")


NEAR_NAIROBI = (NAIROBI[0] + 0.004, NAIROBI[1] + 0.004)  # ~630 m on, 70 s later: plausible


def test_pushed_jump_is_stored_flagged_and_does_not_move_the_live_marker(
    client: TestClient, db_url: str
) -> None:
    push(client, fix(T0, NAIROBI))
    push(client, fix(T0 + timedelta(seconds=60), MOMBASA))  # ~440 km in 60 s
    assert history(db_url) == [(T0, None, False), (T0 + timedelta(seconds=60), JUMP_FLAG, True)]
    speed = q(db_url, "SELECT implied_speed_kmh FROM tracksolid.position_history"
                      " WHERE quality_flag IS NOT NULL")[0][0]  # fmt: skip
    assert speed > 20_000
    assert live(db_url) == [(T0, *NAIROBI)]
    # The next fix is judged against the last plausible one (Nairobi), not the glitch.
    back = T0 + timedelta(seconds=130)
    push(client, fix(back, NEAR_NAIROBI))
    assert history(db_url)[-1] == (back, None, True)
    assert live(db_url) == [(back, *NEAR_NAIROBI)]
    detail = q(db_url, "SELECT detail->>'flagged' FROM tracksolid.ingestion_log"
                       " WHERE source = 'push' ORDER BY log_id")  # fmt: skip
    assert [d[0] for d in detail] == ["0", "1", "0"]


def test_jump_inside_one_delivery_and_against_a_polled_track(
    client: TestClient, db_url: str, recv_settings: Settings
) -> None:
    # The stored track comes from the poller (the same table, the same reference rule).
    track = polled(T0, *NAIROBI)
    with psycopg.connect(db_url) as conn:
        writers.write_positions(conn, [track], QualityRules())
    other = f.IMEIS[1]
    push(
        client,
        fix(T0 + timedelta(seconds=60), MOMBASA),  # jump from the polled fix
        fix(T0 + timedelta(seconds=130), NEAR_NAIROBI),  # plausible from the polled fix
        fix(T0, MOMBASA, other),  # first fix ever of a device: nothing to compare with
        fix(T0 + timedelta(seconds=60), NAIROBI, other),  # jump within the delivery
    )
    flags = q(db_url, "SELECT imei, gps_time, quality_flag FROM tracksolid.position_history"
                      " ORDER BY imei, gps_time")  # fmt: skip
    assert flags == sorted([
        (IMEI, T0, None),
        (IMEI, T0 + timedelta(seconds=60), JUMP_FLAG),
        (IMEI, T0 + timedelta(seconds=130), None),
        (other, T0, None),
        (other, T0 + timedelta(seconds=60), JUMP_FLAG),
    ])  # fmt: skip
    # Each vehicle's marker sits on its newest plausible fix.
    markers = q(db_url, "SELECT imei, gps_time FROM tracksolid.live_positions ORDER BY imei")
    assert markers == sorted([(IMEI, T0 + timedelta(seconds=130)), (other, T0)])


def test_zero_fix_and_future_time_are_dropped_as_the_poller_drops_them(
    client: TestClient, db_url: str, recv_settings: Settings
) -> None:
    now = utcnow()
    future = now + timedelta(seconds=recv_settings.gps_filter_max_future_s + 3600)
    zero = f.gps(IMEI, T0, lat="0", lng="0")
    ahead = f.gps(IMEI, future, gateTime=f.ts(future))
    good = f.gps(IMEI, T0 + timedelta(seconds=10))
    push(client, zero, ahead, good)

    # What the poller's filter says of the same fixes.
    same = [
        polled(T0, 0.0, 0.0),
        polled(future.replace(microsecond=0), -1.29, 36.82),
    ]
    drops: Counter[str] = Counter()
    rules = QualityRules(recv_settings.gps_filter_max_speed_kmh,
                         recv_settings.gps_filter_max_future_s)  # fmt: skip
    assert filter_rows(same, now, rules, drops) == []
    assert sorted(drops) == ["future_time", "zero_fix"]

    # Pushed: neither stored nor on the map; each kept in the inbox with the same reason code.
    assert history(db_url) == [(T0 + timedelta(seconds=10), None, False)]
    assert live(db_url) == [(T0 + timedelta(seconds=10), -1.292066, 36.821946)]
    errors = q(db_url, "SELECT errors FROM tracksolid.push_inbox")[0][0]
    reasons = {e["index"]: e["reason"] for e in errors}
    assert "zero_fix" in reasons[0] and "no usable fix" in reasons[0]
    assert reasons[1].startswith("future_time")


def test_poll_and_push_move_the_live_marker_by_the_same_rule(
    client: TestClient, db_url: str, settings: Settings, pool: ConnectionPool
) -> None:
    """A polled live fix that jumps is flagged and leaves the marker, as a pushed one does."""
    push(client, fix(T0, NAIROBI))
    ingestor = Ingestor(settings, pool, JimiClient(settings, pool))
    stats = JobStats("live_positions")
    item = {"imei": IMEI, "gpsTime": f.ts(T0 + timedelta(seconds=60)), "status": "1",
            "lat": str(MOMBASA[0]), "lng": str(MOMBASA[1])}  # fmt: skip
    ingestor._store_live([item], "fireside", utcnow(), stats)  # the live sweep's write step
    assert stats.flagged == 1
    assert history(db_url)[-1] == (T0 + timedelta(seconds=60), JUMP_FLAG, True)
    assert live(db_url) == [(T0, *NAIROBI)]


def test_the_speed_limit_setting_applies_to_pushes(db_url: str, tmp_path: Path) -> None:
    relaxed = test_settings(
        db_url,
        jimi_push_token=TOKEN,
        webhook_spool_dir=str(tmp_path / "spool"),
        gps_filter_max_speed_kmh=50_000.0,
    )
    with TestClient(create_app(relaxed)) as c:
        push(c, fix(T0, NAIROBI), fix(T0 + timedelta(seconds=60), MOMBASA))
    assert [r[1] for r in history(db_url)] == [None, None]
    assert live(db_url) == [(T0 + timedelta(seconds=60), *MOMBASA)]


def test_sql_jump_test_matches_the_python_one(db_url: str) -> None:
    """The receiver's SQL (`jump_sql`) and the poller's `flag_jumps` agree fix by fix."""
    rng = random.Random(15)
    pairs = []
    for _ in range(300):
        lat0, lng0 = rng.uniform(-5, 5), rng.uniform(30, 42)
        step = rng.choice((0.0005, 0.003, 0.02, 0.3, 3.0))
        lat1, lng1 = lat0 + rng.uniform(-step, step), lng0 + rng.uniform(-step, step)
        pairs.append((lat0, lng0, lat1, lng1, rng.choice((0, 1, 5, 30, 60, 600))))
    speed, jump = jump_sql("b", "a", "250.0")
    query = (
        f"SELECT {speed}, {jump} FROM unnest(%s::float8[], %s::float8[], %s::float8[],"
        " %s::float8[], %s::int[]) AS v(lat0, lng0, lat1, lng1, s),"
        " LATERAL (SELECT timestamptz '2026-03-02 08:00Z' AS gps_time, v.lat0 AS lat,"
        "          v.lng0 AS lng) a,"
        " LATERAL (SELECT a.gps_time + v.s * interval '1 second' AS gps_time, v.lat1 AS lat,"
        "          v.lng1 AS lng) b"
    )
    columns = [list(c) for c in zip(*pairs, strict=True)]
    got = q(db_url, query, tuple(columns))
    flags = 0
    for (lat0, lng0, lat1, lng1, s), (sql_speed, sql_jump) in zip(pairs, got, strict=True):
        t0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
        row = polled(t0 + timedelta(seconds=s), lat1, lng1)
        flag_jumps([row], {IMEI: (t0, lat0, lng0)}, QualityRules())
        assert sql_jump == (row.quality_flag == JUMP_FLAG)
        assert (sql_speed is None) == (row.implied_speed_kmh is None)
        if sql_speed is not None:
            assert sql_speed == pytest.approx(row.implied_speed_kmh, rel=1e-9)
        flags += sql_jump
    assert 0 < flags < len(pairs)  # both outcomes were exercised


def test_the_simulator_pushing_a_jump_is_flagged_and_keeps_the_live_marker(
    db_url: str, recv_settings: Settings
) -> None:
    """The scenario end to end with the simulator's own push sender: a vehicle "teleports"
    from Nairobi to Mombasa (~440 km in under a minute); every pushed fix over there is stored
    flagged and the live marker stays on its last plausible fix."""
    fleet = Fleet(SimConfig(devices=2, accounts=1, seed=4))
    dev = fleet.devices()[0]
    t = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # 12:00 EAT: on the road in Nairobi
    fleet.dispatch(dev.imei, MOMBASA[0], MOMBASA[1], t, dwell_s=600, speed_kmh=30_000)
    deliveries = build_push_deliveries(fleet, t - timedelta(minutes=10), t + timedelta(minutes=5),
                                       token=TOKEN)  # fmt: skip
    with TestClient(create_app(recv_settings)) as c:
        for path, form in deliveries:
            assert c.post(path, data=form).status_code == 200
    rows = q(
        db_url,
        "SELECT lat, quality_flag FROM tracksolid.position_history WHERE imei = %s"
        " ORDER BY gps_time",
        (dev.imei,),
    )
    far = [flag for lat, flag in rows if lat < NAIROBI[0] - 0.5]
    near = [flag for lat, flag in rows if lat >= NAIROBI[0] - 0.5]
    assert far and all(flag == JUMP_FLAG for flag in far), rows
    assert near and all(flag is None for flag in near)
    ((lat,),) = q(db_url, "SELECT lat FROM tracksolid.live_positions WHERE imei = %s", (dev.imei,))
    assert lat >= NAIROBI[0] - 0.5
