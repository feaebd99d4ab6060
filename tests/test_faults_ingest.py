"""Fault injection: IMEIs that arrive by push but that the polled accounts do not know.

The receiver auto-registers every unknown pushed IMEI; the API answers 1002 ("illegal
device") for each one the worker then asks about. These tests run the real receiver
(TestClient), the Jimi simulator on loopback and the worker on one fixed clock, and check:
one cycle marks such devices `unknown_to_api`, the next asks the API nothing about them,
/health/ingest does not turn red because of them, a device the simulator puts back under an
account comes back at the next device sync (re-checked at most daily otherwise), and the
receiver registers at most PUSH_AUTOREGISTER_PER_HOUR new IMEIs per hour.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

import dashboard_api
import webhook_receiver
from ingest_worker import ONCE, run_once
from jimi_sim import SimConfig, SimServer
from tests import push_factories as f
from tests.conftest import test_settings
from tests.sim_support import Clock
from tests.test_ingest_worker import T, make_ingestor, worker_settings
from ts_shared import Settings
from webhook import store

TOKEN = "fault-push-token"
GHOSTS = ("862798050123456", "353549090654321", "865135060777888", "860000000000001")
FEEDS = ("jimi.device.track.list", "jimi.device.track.mileage", "jimi.device.alarm.list")


@pytest.fixture
def clock() -> Clock:
    return Clock(T)


@pytest.fixture
def sim(clock: Clock) -> Iterator[SimServer]:
    server = SimServer(SimConfig(devices=6, accounts=3, seed=11))
    server.api.clock = clock.epoch
    server.start()
    yield server
    server.stop()


@pytest.fixture
def receiver(db_url: str, tmp_path: Any) -> Iterator[TestClient]:
    settings = test_settings(
        db_url, jimi_push_token=TOKEN, webhook_spool_dir=str(tmp_path / "spool")
    )
    with TestClient(webhook_receiver.create_app(settings)) as client:
        yield client


@pytest.fixture
def cap() -> Iterator[None]:
    """Restore the receiver's auto-registration cap after a test that changes it."""
    yield
    store.configure_autoregister(Settings.model_fields["push_autoregister_per_hour"].default)


def push_gps(
    receiver: TestClient, imeis: tuple[str, ...] | list[str], minutes_ago: int = 60
) -> None:
    start = T - timedelta(minutes=minutes_ago)
    items = [item for imei in imeis for item in f.gps_track(imei, 3, start=start)]
    resp = receiver.post("/pushgps", data=f.iothub_form(items, TOKEN))
    assert resp.status_code == 200, resp.text


def states(pool: ConnectionPool) -> dict[str, str]:
    with pool.connection() as conn:
        return dict(conn.execute("SELECT imei, poll_state FROM tracksolid.devices").fetchall())


def health(pool: ConnectionPool) -> dict[str, Any]:
    with pool.connection() as conn:
        row = conn.execute("SELECT reporting.fn_ingest_health()::text").fetchone()
    assert row is not None
    doc: dict[str, Any] = json.loads(row[0])
    return doc


def test_unknown_pushed_imeis_are_marked_then_never_polled_and_health_stays_green(
    db_url: str, pool: ConnectionPool, sim: SimServer, clock: Clock, receiver: TestClient
) -> None:
    push_gps(receiver, GHOSTS)
    assert set(GHOSTS) <= set(states(pool)), "auto-registered from the push"
    ingestor = make_ingestor(worker_settings(db_url, sim), pool, clock)

    # Cycle 1: the worker asks about them once, the API answers 1002, they are marked.
    sim.clear_requests()
    assert run_once(ingestor, ONCE) == 0
    refused = [r for r in sim.requests if set(r.imeis) & set(GHOSTS)]
    assert all(r.code == 1002 and len(r.imeis) == 1 for r in refused)
    assert sorted(i for r in refused for i in r.imeis) == sorted(GHOSTS), "one call each"
    assert not [r for r in sim.requests if r.code == 1002 and len(r.imeis) > 1], (
        "no batch of known devices was refused because of them"
    )
    after_one = states(pool)
    assert {after_one[g] for g in GHOSTS} == {"unknown_to_api"}
    assert {s for i, s in after_one.items() if i not in GHOSTS} == {"active"}

    # /health/ingest: the 1002 answers are expected, not failures; the feeds are not failing.
    doc = health(pool)
    feeds = {f["method"]: f for f in doc["feeds"] if f["source"] == "api"}
    for method in ("jimi.device.track.list", "jimi.device.track.mileage"):
        assert feeds[method]["status"] == "ok", feeds[method]
        assert feeds[method]["failures_24h"] == 0
    assert sum(x["expected_refusals_24h"] for x in feeds.values()) == len(GHOSTS)
    assert not [f for f in doc["feeds"] if f["status"] == "failing"], doc["feeds"]
    assert doc["status"] != "failing"
    assert doc["devices"]["push_only"] == len(GHOSTS)
    assert doc["devices"]["push_only_imeis"] == sorted(GHOSTS)

    # Cycle 2: not one API call about them (simulator and audit log agree).
    sim.clear_requests()
    with pool.connection() as conn:
        mark = conn.execute("SELECT max(log_id) FROM tracksolid.ingestion_log").fetchone()
    assert run_once(ingestor, ONCE) == 0
    assert sim.requests, "the cycle polled the known devices"
    assert not [r for r in sim.requests if set(r.imeis) & set(GHOSTS)]
    assert not [r for r in sim.requests if r.code == 1002]
    with pool.connection() as conn:
        logged = conn.execute(
            "SELECT count(*) FILTER (WHERE target = ANY(%s)), count(*) FILTER (WHERE NOT ok)"
            " FROM tracksolid.ingestion_log WHERE source = 'api' AND log_id > %s",
            (list(GHOSTS), mark[0] if mark else 0),
        ).fetchone()
    assert logged == (0, 0)
    # The pushed data stays, and the devices stay marked.
    with pool.connection() as conn:
        pushed = conn.execute(
            "SELECT count(DISTINCT imei) FROM tracksolid.position_history WHERE imei = ANY(%s)",
            (list(GHOSTS),),
        ).fetchone()
    assert pushed == (len(GHOSTS),)
    assert {states(pool)[g] for g in GHOSTS} == {"unknown_to_api"}


def test_filters_and_health_endpoints_show_push_only_devices(
    db_url: str, pool: ConnectionPool, sim: SimServer, clock: Clock, receiver: TestClient
) -> None:
    push_gps(receiver, GHOSTS[:2])
    ingestor = make_ingestor(worker_settings(db_url, sim), pool, clock)
    assert run_once(ingestor, ONCE) == 0
    settings = test_settings(db_url, vtrips_refresh_interval_s=0)
    with TestClient(dashboard_api.create_app(settings)) as api:
        vehicles = api.get("/analytics/filters").json()["vehicles"]
        ingest = api.get("/health/ingest").json()
    by_imei = {v["imei"]: v for v in vehicles}
    assert {by_imei[g]["poll_state"] for g in GHOSTS[:2]} == {"unknown_to_api"}
    assert all(by_imei[g]["push_only"] for g in GHOSTS[:2])
    known = [v for i, v in by_imei.items() if i not in GHOSTS]
    assert len(known) == 6 and not any(v["push_only"] for v in known)
    assert {v["poll_state"] for v in known} == {"active"}
    assert ingest["devices"]["push_only"] == 2 and ingest["devices"]["active"] == 6
    feeds = {(x["source"], x["method"]): x for x in ingest["feeds"]}
    for method in FEEDS:
        assert feeds[("api", method)]["status"] != "failing"


def test_device_sync_rechecks_daily_and_brings_back_a_device_put_under_an_account(
    db_url: str, pool: ConnectionPool, sim: SimServer, clock: Clock, receiver: TestClient
) -> None:
    back = sim.fleet.devices()[2].imei
    sim.fleet.detach(back)  # pushing, but under no account yet
    push_gps(receiver, [back, GHOSTS[0]])
    ingestor = make_ingestor(worker_settings(db_url, sim), pool, clock)
    assert run_once(ingestor, ONCE) == 0
    assert states(pool)[back] == states(pool)[GHOSTS[0]] == "unknown_to_api"

    def detail_calls() -> list[str]:
        return [i for r in sim.requests if r.method == "jimi.track.device.detail" for i in r.imeis]

    # Another sync the same day: listed devices are synced, the marked ones are not asked.
    sim.clear_requests()
    ingestor.sync_devices()
    assert not set(detail_calls()) & {back, GHOSTS[0]}
    # A day later the sync asks about each marked device once; the API still refuses them.
    clock.moment = T + timedelta(days=1, minutes=1)
    sim.clear_requests()
    stats = ingestor.sync_devices()
    assert sorted(set(detail_calls()) & {back, GHOSTS[0]}) == sorted([back, GHOSTS[0]])
    assert len([i for i in detail_calls() if i in (back, GHOSTS[0])]) == 2
    assert stats.updated["still_unknown_to_api"] == 2 and stats.failures == 0
    sim.clear_requests()
    ingestor.sync_devices()  # same day again: not re-tried
    assert not set(detail_calls()) & {back, GHOSTS[0]}

    # The simulator puts the device under its account: the next sync lists it → active,
    # with its account, and the next poll asks about it again.
    sim.fleet.attach(back)
    stats = ingestor.sync_devices()
    assert stats.updated["reactivated"] == 1
    assert states(pool)[back] == "active" and states(pool)[GHOSTS[0]] == "unknown_to_api"
    with pool.connection() as conn:
        account = conn.execute(
            "SELECT account FROM tracksolid.devices WHERE imei = %s", (back,)
        ).fetchone()
    assert account == (sim.fleet.device(back).account,)
    sim.clear_requests()
    ingestor.poll_trips()
    asked = {i for r in sim.requests for i in r.imeis}
    assert back in asked and GHOSTS[0] not in asked


def test_autoregistration_is_capped_per_hour_and_warned(
    db_url: str,
    pool: ConnectionPool,
    sim: SimServer,
    clock: Clock,
    receiver: TestClient,
    cap: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = worker_settings(db_url, sim, push_autoregister_per_hour=3)
    store.configure_autoregister(settings.push_autoregister_per_hour)
    flood = [f"86{n:013d}" for n in range(1, 8)]  # 7 new IMEIs in two deliveries
    push_gps(receiver, flood[:5])
    push_gps(receiver, flood[5:])
    push_gps(receiver, flood[5:], minutes_ago=50)  # again, later: counted, not registered
    registered = {i for i in states(pool) if i in flood}
    assert registered == set(flood[:3]), "the first 3 of the hour (cap = 3)"
    with pool.connection() as conn:
        left: dict[str, int] = dict(conn.execute(
            "SELECT imei, deliveries FROM tracksolid.push_unregistered").fetchall())  # fmt: skip
        stored = conn.execute(
            "SELECT count(DISTINCT imei) FROM tracksolid.position_history WHERE imei = ANY(%s)",
            (flood,),
        ).fetchone()
    assert left == {flood[3]: 1, flood[4]: 1, flood[5]: 2, flood[6]: 2}
    assert stored == (7,), "the data of every pushed IMEI is stored"

    # The worker polls only the registered ones, and warns once per (hourly) run.
    ingestor = make_ingestor(settings, pool, clock)
    with caplog.at_level(logging.WARNING, logger="ingest.jobs"):
        stats = ingestor.check_unregistered_pushes()
    warnings = [r.getMessage() for r in caplog.records if "auto-registration cap" in r.message]
    assert len(warnings) == 1 and "4 pushed IMEIs" in warnings[0], warnings
    assert stats.updated["push_unregistered"] == 4
    with pool.connection() as conn:
        conn.execute("UPDATE tracksolid.devices SET first_seen_at = now() - interval '2 hours'")
    # An hour later there is room again: the next push of such an IMEI registers it, and the
    # hourly check forgets it.
    push_gps(receiver, flood[3:4])
    assert flood[3] in states(pool)
    ingestor.check_unregistered_pushes()
    with pool.connection() as conn:
        still = {r[0] for r in conn.execute("SELECT imei FROM tracksolid.push_unregistered")}
    assert still == set(flood[4:])
