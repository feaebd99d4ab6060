"""GET /webhook/live-positions/stream (issue #19): server-sent events of live-position changes.

Real PostgreSQL (the change-log triggers of migration 0315, LISTEN/NOTIFY as dashboard_ro),
two real read-API processes' worth of apps on uvicorn (tests/servers.py) and a real httpx
streaming client: a fix committed in the database reaches the client within 1 s; filters;
Last-Event-ID resume on another worker gets exactly the missed vehicles; a pruned or unknown
id gets a snapshot; heartbeats; the client bound (503); the EventSource token; hostile
parameters (4xx, never a 500).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from dashboard import live_stream
from dashboard.live_stream import (
    Batch,
    Change,
    ChangeCursor,
    StreamFilter,
    mint_token,
    parse_last_event_id,
    render_batch,
    sse,
    token_valid,
)
from dashboard.params import ParamError
from dashboard_api import create_app
from ingest.parse import LiveRow, PositionRow
from ingest.writers import upsert_live
from run_migrations import migrate
from tests import push_factories
from tests.conftest import read_only_url, test_settings
from tests.factories import Fleet, add_device, add_live_position, db_now, seed_fleet
from tests.pgcluster import LocalCluster, free_port
from tests.servers import serve_in_thread
from ts_shared import Settings
from webhook.parse import ParseContext
from webhook.store import Delivery, write_delivery

KEY = "stream-test-key"
AUTH = {"X-API-Key": KEY}
STREAM = "/webhook/live-positions/stream"


# ── An SSE reader over httpx ──────────────────────────────────────────────────────────────


@dataclass
class Event:
    event: str  # "comment" for a `:` line
    data: str = ""
    id: str | None = None
    at: float = 0.0

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SSEStream:
    """One streaming GET, parsed into events (the EventSource rules: data lines joined by
    \\n, `id:` kept until the next event)."""

    response: httpx.Response
    lines: Iterator[str] = field(init=False)

    def __post_init__(self) -> None:
        self.lines = self.response.iter_lines()

    def next(self) -> Event:
        event, ident = "message", None
        data: list[str] = []
        for line in self.lines:
            if line == "":
                if data or ident is not None:
                    return Event(event, "\n".join(data), ident, time.monotonic())
                continue
            if line.startswith(":"):
                return Event("comment", line[1:].strip(), None, time.monotonic())
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                ident = value
        raise EOFError("the stream ended")

    def until(self, predicate: Any, timeout: float = 5.0) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self.next()
            if predicate(event):
                return event
        raise AssertionError("no matching event in time")

    def events_until_id(self) -> list[Event]:
        """Events up to and including the next one carrying an id (the end of a batch)."""
        got = []
        while True:
            event = self.next()
            if event.event == "comment":
                continue
            got.append(event)
            if event.id is not None:
                return got


class Streams:
    """Opens SSE streams against one server and closes them all at the end."""

    def __init__(self, base: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=httpx.Timeout(10.0, read=8.0))
        self._open: list[Any] = []

    def open(
        self, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> SSEStream:
        cm = self.client.stream("GET", STREAM, params=params, headers={**AUTH, **(headers or {})})
        response = cm.__enter__()
        self._open.append(cm)
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return SSEStream(response)

    def close(self) -> None:
        for cm in self._open:
            cm.__exit__(None, None, None)
        self._open.clear()


@dataclass
class Env:
    fleet: Fleet
    owner: psycopg.Connection[Any]
    bases: list[str]
    apps: list[Any]
    streams: list[Streams]

    def move(self, plate: str, *, speed: float = 40.0, acc_on: bool = True) -> float:
        """Commit a new fix for `plate` (as the ingest worker would); the time just before
        the statement was sent (so a latency measured from it includes the commit)."""
        started = time.monotonic()
        self.owner.execute(
            "UPDATE tracksolid.live_positions SET gps_time = now(), lat = lat + 0.0001,"
            " speed_kmh = %s, acc_on = %s, online = true WHERE imei = %s",
            (speed, acc_on, self.fleet.imeis[plate]),
        )
        return started


def live_settings(db_url: str, key: str, **overrides: Any) -> Settings:
    """A read-API of the stream tests: the read-only role, one API key, no v_trips refresher."""
    return test_settings(
        db_url,
        dashboard_database_url=SecretStr(read_only_url(db_url)),
        dashboard_api_keys=SecretStr(key),
        vtrips_refresh_interval_s=0,
        **overrides,
    )


@contextmanager
def serving(settings: Settings, hub_timeout: float = 10.0) -> Iterator[tuple[str, Any]]:
    """A read-API on a free loopback port, once its live hub listens: (base URL, app)."""
    app = create_app(settings)
    port = free_port()
    server, thread = serve_in_thread(app, port)
    server.config.timeout_graceful_shutdown = 2  # open streams must not hold the shutdown
    try:
        wait_until(
            lambda: getattr(getattr(app.state, "live_hub", None), "mode", "") == "listen",
            timeout=hub_timeout,
        )
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def env(db_url: str) -> Iterator[Env]:
    owner = psycopg.connect(db_url, autocommit=True)
    fleet = seed_fleet(owner)
    settings = live_settings(db_url, KEY, live_stream_max_clients=5)
    bases, apps, streams = [], [], []
    try:
        with ExitStack() as servers:
            for _ in range(2):  # two read-API processes on the same database
                base, app = servers.enter_context(serving(settings))
                bases.append(base)
                apps.append(app)
                streams.append(Streams(base))
            try:
                yield Env(fleet, owner, bases, apps, streams)
            finally:
                for s in streams:
                    s.close()
                    s.client.close()
    finally:
        owner.close()


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def features_of(event: Event) -> dict[str, dict[str, Any]]:
    doc = event.json()
    assert doc["type"] == "FeatureCollection"
    return {f["id"]: f for f in doc["features"]}


# ── Through the real server ───────────────────────────────────────────────────────────────


def test_a_new_fix_reaches_every_client_within_a_second(env: Env) -> None:
    clients = [env.streams[0].open(), env.streams[0].open(), env.streams[1].open()]
    for client in clients:
        snapshot = client.next()
        assert snapshot.event == "snapshot" and snapshot.id is not None
        # the snapshot is the JSON endpoint's answer (active vehicles only)
        assert set(features_of(snapshot)) == {
            env.fleet.imeis[p] for p in ("KCA 542Q", "KBZ 101A", "KDA 777M", "UAX 123B")
        }
    imei = env.fleet.imeis["KDA 777M"]
    committed = env.move("KDA 777M", speed=55.0)
    for client in clients:
        event = client.until(lambda e: e.event == "position")
        assert event.at - committed < 1.0, f"{event.at - committed:.3f} s"
        feature = event.json()
        assert feature["type"] == "Feature" and feature["id"] == imei
        assert feature["properties"]["speed_kmh"] == 55.0
        assert feature["properties"]["status"] == "moving"
        lon, lat = feature["geometry"]["coordinates"]
        assert 29 < lon < 42 and -5 < lat < 2  # [lon, lat]
        assert event.id is not None and int(event.id) > 0
    # the same Feature as the JSON endpoint's (fix_age_s aside: it counts seconds)
    answer = env.streams[0].client.get("/webhook/live-positions", headers=AUTH).json()
    polled = next(f for f in answer["features"] if f["id"] == imei)
    for doc in (polled, feature):
        doc["properties"].pop("fix_age_s")
    assert polled == feature


def test_the_ingest_batch_upsert_is_one_batch_with_one_event_per_vehicle(env: Env) -> None:
    client = env.streams[0].open()
    first = client.next()
    now = datetime.now(UTC)
    rows = [
        LiveRow(
            position=PositionRow(
                imei=imei,
                gps_time=now + timedelta(seconds=k),
                lat=-1.2 + k / 100,
                lng=36.8,
                speed_kmh=12.0,
                direction_deg=90,
                acc_on=True,
                pos_type="GPS",
                satellites=9,
                gps_mode=0,
                altitude_m=None,
                mileage_km=None,
                source="poll",
            ),
            online=True,
            loc_desc=None,
            hb_time=now,
            battery_pct=None,
            power_v=None,
            gps_signal=None,
            account="acct",
        )
        for k, imei in enumerate(sorted(env.fleet.imeis.values()))
    ]
    with env.owner.transaction():  # the worker's COPY + INSERT ... ON CONFLICT path
        upsert_live(env.owner, rows)
    batch = client.events_until_id()
    ids = [e.json()["id"] for e in batch if e.event == "position"]
    active = {env.fleet.imeis[p] for p in ("KCA 542Q", "KBZ 101A", "KDA 777M", "UAX 123B")}
    assert set(ids) == active and len(ids) == len(active)  # the inactive one never shows
    assert int(batch[-1].id or 0) > int(first.id or 0)


def test_a_webhook_push_is_streamed_too(env: Env) -> None:
    """The receiver writes live_positions inside one data-modifying CTE (webhook/store.py):
    the statement triggers see its rows as well."""
    stream = env.streams[0].open()
    stream.next()
    imei = "862798050999001"  # a device first seen in this push (registered by it)
    now = datetime.now(UTC)
    data = json.dumps(push_factories.gps_track(imei, 3, start=now - timedelta(seconds=30)))
    result = write_delivery(env.owner, Delivery("/pushgps", None, data, now), ParseContext(now))
    assert result.status == "parsed"
    event = stream.until(lambda e: e.event == "position")
    feature = event.json()
    assert feature["id"] == imei and feature["properties"]["gps_time"] is not None


def test_filters_send_matching_vehicles_and_a_remove_when_one_leaves(env: Env) -> None:
    moving = env.streams[0].open({"acc_status": "moving"})
    mombasa = env.streams[0].open({"cost_centre": "mombasa-field"})  # case-insensitive
    assert set(features_of(moving.next())) == {env.fleet.imeis["KCA 542Q"]}
    assert set(features_of(mombasa.next())) == {env.fleet.imeis["KDA 777M"]}
    kda, kba = env.fleet.imeis["KDA 777M"], env.fleet.imeis["KBZ 101A"]

    env.move("KBZ 101A", speed=30.0)  # Nairobi: moving now, not Mombasa
    event = moving.until(lambda e: e.event == "position")
    assert event.json()["id"] == kba
    env.move("KDA 777M", speed=20.0)  # Mombasa, moving
    assert moving.until(lambda e: e.event == "position").json()["id"] == kda
    event = mombasa.until(lambda e: e.event == "position")
    assert event.json()["id"] == kda  # KBZ's change was not sent to the Mombasa client

    env.move("KDA 777M", speed=0.0, acc_on=False)  # parked: leaves the moving filter
    removed = moving.until(lambda e: e.event in ("remove", "position"))
    assert removed.event == "remove" and removed.json() == {"id": kda} and removed.id
    still = mombasa.until(lambda e: e.event == "position")
    assert still.json()["properties"]["status"] == "parked"


def test_resume_on_another_worker_gets_exactly_the_missed_vehicles(env: Env) -> None:
    first = env.streams[0].open()
    last_id = first.next().id
    assert last_id is not None
    env.streams[0].close()
    for plate in ("KCA 542Q", "KDA 777M", "KCA 542Q"):  # KCA twice: sent once, current state
        env.move(plate, speed=33.0)
    wait_until(lambda: env.apps[1].state.live_hub.cursor.watermark > int(last_id) + 2)

    resumed = env.streams[1].open(headers={"Last-Event-ID": last_id})
    events = resumed.events_until_id()
    assert [e.event for e in events] == ["position", "position", "resumed"]
    assert {e.json()["id"] for e in events[:2]} == {
        env.fleet.imeis["KCA 542Q"], env.fleet.imeis["KDA 777M"],
    }  # fmt: skip
    assert events[-1].json() == {"since": int(last_id), "vehicles": 2}
    assert int(events[-1].id or 0) >= int(last_id) + 3

    # The same by query parameter (a new EventSource cannot set the header), up to date: empty.
    again = env.streams[0].open({"last_event_id": events[-1].id or ""})
    assert [e.event for e in again.events_until_id()] == ["resumed"]


def test_a_pruned_or_unknown_event_id_gets_a_snapshot(env: Env) -> None:
    stream = env.streams[0].open()
    last_id = int(stream.next().id or 0)
    env.streams[0].close()
    env.move("KCA 542Q")
    env.move("KBZ 101A")
    wait_until(lambda: env.apps[0].state.live_hub.cursor.watermark >= last_id + 2)
    env.owner.execute(  # what the trigger's retention does after an hour
        "DELETE FROM reporting.live_position_changes WHERE change_id <= %s", (last_id + 1,)
    )
    pruned = env.streams[0].open(headers={"Last-Event-ID": str(last_id)})
    assert pruned.next().event == "snapshot"
    unknown = env.streams[0].open(headers={"Last-Event-ID": "999999999999"})
    snapshot = unknown.next()
    assert snapshot.event == "snapshot" and int(snapshot.id or 0) >= last_id + 2


def test_heartbeat_comments_keep_an_idle_stream_open(env: Env) -> None:
    env.apps[0].state.live_hub.heartbeat_s = 0.2
    stream = env.streams[0].open()
    assert stream.next().event == "snapshot"
    beats = [stream.next() for _ in range(3)]
    assert [b.event for b in beats] == ["comment"] * 3 and beats[0].data == "keep-alive"


def test_each_worker_bounds_its_clients_with_a_clear_503(env: Env) -> None:
    opened = [env.streams[0].open() for _ in range(5)]  # held: a dropped one is closed
    for stream in opened:
        assert stream.next().event == "snapshot"
    assert env.apps[0].state.live_hub.clients == 5
    full = env.streams[0].client.get(STREAM, headers=AUTH)
    assert full.status_code == 503 and full.headers["retry-after"] == "30"
    assert "5 clients" in full.json()["detail"]
    other = env.streams[1].open()  # the other worker has its own bound
    assert other.next().event == "snapshot"
    env.streams[0].close()
    wait_until(lambda: env.apps[0].state.live_hub.clients == 0)
    assert env.streams[0].open().next().event == "snapshot"


def test_eventsource_token_instead_of_the_key_in_the_url(env: Env) -> None:
    client = env.streams[0].client
    assert client.post(f"{STREAM}/token").status_code == 401
    answer = client.post(f"{STREAM}/token", headers=AUTH)
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    token = answer.json()["token"]
    assert KEY not in token
    with client.stream("GET", STREAM, params={"token": token}) as response:
        assert response.status_code == 200
        assert SSEStream(response).next().event == "snapshot"
    expired, _ = mint_token([KEY], time.time() - 3600)
    for params, headers in (
        ({}, {}),  # nothing
        ({"token": expired}, {}),
        ({"token": token[:-2] + "AA"}, {}),  # forged signature
        ({"token": KEY}, {}),  # the key where the token goes
        ({"key": KEY}, {}),  # the key in the URL: refused even with a header
        ({"api_key": KEY}, AUTH),
    ):
        refused = client.get(STREAM, params=params, headers=headers)
        assert refused.status_code == 401, (params, refused.text)
        assert KEY not in refused.text


@pytest.mark.parametrize(
    ("params", "headers", "status", "says"),
    [
        ({"acc_status": "flying"}, {}, 422, "acc_status"),
        ({"cost_centre": "Atlantis"}, {}, 422, "Atlantis"),
        ({"cost_centre": "Nairobi\x00North"}, {}, 422, "control character"),
        ({"cost_centre": "x" * 500}, {}, 422, "too long"),
        ({"last_event_id": "-5"}, {}, 422, "Last-Event-ID"),
        ({"last_event_id": "9" * 30}, {}, 422, "Last-Event-ID"),
        ({}, {"Last-Event-ID": "12abc"}, 422, "Last-Event-ID"),
        ({}, {"Last-Event-ID": "99999999999999999999"}, 422, "Last-Event-ID"),
        ({"token": "x" * 5000}, {}, 401, "token"),
    ],
)
def test_hostile_parameters_get_a_4xx_sentence(
    env: Env, params: dict[str, str], headers: dict[str, str], status: int, says: str
) -> None:
    answer = env.streams[0].client.get(STREAM, params=params, headers={**AUTH, **headers})
    assert answer.status_code == status, answer.text
    assert says in answer.json()["detail"]
    assert env.apps[0].state.live_hub.clients == 0  # a refused request holds no slot


def test_the_known_cost_centre_check_also_guards_a_resume(env: Env) -> None:
    answer = env.streams[0].client.get(
        STREAM, params={"cost_centre": "Atlantis"}, headers={**AUTH, "Last-Event-ID": "1"}
    )
    assert answer.status_code == 422 and "Atlantis" in answer.json()["detail"]


# ── The database side ─────────────────────────────────────────────────────────────────────


def test_dashboard_ro_can_listen_and_read_the_change_log(env: Env, db_url: str) -> None:
    with psycopg.connect(read_only_url(db_url), autocommit=True) as ro:
        ro.execute("LISTEN live_positions")
        got: list[str] = []

        def later() -> None:
            time.sleep(0.2)
            env.move("UAX 123B")

        writer = threading.Thread(target=later)
        writer.start()
        for note in ro.notifies(timeout=5.0, stop_after=1):
            got.append(note.channel)
        writer.join()
        assert got == ["live_positions"]
        row = ro.execute(
            "SELECT imei FROM reporting.live_position_changes ORDER BY change_id DESC LIMIT 1"
        ).fetchone()
        assert row == (env.fleet.imeis["UAX 123B"],)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            ro.execute("DELETE FROM reporting.live_position_changes")


def test_device_changes_and_deletes_are_changes_too(env: Env) -> None:
    stream = env.streams[0].open({"cost_centre": "Kampala"})
    assert set(features_of(stream.next())) == {env.fleet.imeis["UAX 123B"]}
    kda = env.fleet.imeis["KDA 777M"]
    env.owner.execute("UPDATE tracksolid.devices SET cost_centre = 'Kampala' WHERE imei = %s",
                      (kda,))  # fmt: skip
    assert stream.until(lambda e: e.event == "position").json()["id"] == kda
    # a rewrite that changes nothing the map shows is no change
    env.owner.execute("UPDATE tracksolid.devices SET first_seen_at = first_seen_at")
    env.owner.execute("DELETE FROM tracksolid.live_positions WHERE imei = %s", (kda,))
    gone = stream.until(lambda e: e.event != "comment")
    assert gone.event == "remove" and gone.json() == {"id": kda}


def test_the_trigger_prunes_changes_older_than_an_hour(env: Env) -> None:
    def counts() -> tuple[int, int, int]:
        row = env.owner.execute(
            "SELECT count(*) FILTER (WHERE changed_at < now() - interval '1 hour'), count(*),"
            " max(change_id) FROM reporting.live_position_changes"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    # an hour passes: the seeding's changes are old, and more old ones pile up until the next
    # write crosses a multiple of 1,000 change ids
    env.owner.execute(
        "UPDATE reporting.live_position_changes SET changed_at = now() - interval '2 hours'"
    )
    _, seeded, last = counts()
    filler = 999 - last % 1000 + 1000
    env.owner.execute(
        "INSERT INTO reporting.live_position_changes (imei, changed_at)"
        " SELECT 'gone', now() - interval '2 hours' FROM generate_series(1, %s)",
        (filler,),
    )
    assert counts() == (seeded + filler, seeded + filler, last + filler)
    env.move("KCA 542Q")
    assert counts() == (0, 1, last + filler + 1)  # only the new change is left
    env.move("KBZ 101A")  # no boundary crossed: nothing to prune, one probe
    assert counts() == (0, 2, last + filler + 2)


def test_a_read_api_on_a_hot_standby_streams_by_polling_the_change_log() -> None:
    """LISTEN is refused on a standby; the hub polls the replicated change table instead."""
    primary, replica = LocalCluster(timescaledb=False), LocalCluster(timescaledb=False)
    imei = "861000000000777"
    try:
        primary.init()
        primary.start()
        with psycopg.connect(primary.admin_url, autocommit=True) as admin:
            admin.execute("CREATE DATABASE fleet")
        url = primary.url("fleet")
        migrate(url, Settings(_env_file=None, database_url=url, use_timescaledb="off"))
        owner = psycopg.connect(url, autocommit=True)
        add_device(owner, imei, "KDD 777S", cost_centre="Nairobi-North", city="Nairobi")
        add_live_position(owner, imei, -1.29, 36.82, gps_time=db_now(owner))
        replica.init_replica_of(primary)
        replica.start()
        settings = Settings(
            _env_file=None, database_url=url, use_timescaledb="off", vtrips_refresh_interval_s=0,
            dashboard_database_url=SecretStr(read_only_url(replica.url("fleet"))),
        )  # fmt: skip
        app = create_app(settings)
        server, thread = serve_in_thread(app, port := free_port())
        server.config.timeout_graceful_shutdown = 2
        try:
            wait_until(lambda: app.state.live_hub.mode == "poll" and app.state.live_hub.cursor)
            streams = Streams(f"http://127.0.0.1:{port}")
            stream = streams.open()
            assert set(features_of(stream.next())) == {imei}
            started = time.monotonic()
            owner.execute(
                "UPDATE tracksolid.live_positions SET gps_time = now(), speed_kmh = 61"
                " WHERE imei = %s",
                (imei,),
            )
            event = stream.until(lambda e: e.event == "position")
            assert event.json()["properties"]["speed_kmh"] == 61
            assert event.at - started < 2.0  # replay + a 250 ms poll
            streams.close()
            streams.client.close()
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            owner.close()
    finally:
        replica.stop(remove=True)
        primary.stop(remove=True)


# ── Pure parts ────────────────────────────────────────────────────────────────────────────


def test_cursor_watches_ids_that_commit_late_then_gives_up() -> None:
    cursor = ChangeCursor(10)
    cursor.observe([11, 12, 14, 15], now=0.0)  # 13's transaction has not committed yet
    assert cursor.max_seen == 15 and cursor.gaps.keys() == {13} and cursor.watermark == 12
    cursor.observe([13, 16], now=1.0)
    assert cursor.watermark == 16 and not cursor.gaps
    cursor.observe([18], now=2.0)  # 17 rolled back: given up after LATE_COMMIT_S
    assert cursor.watermark == 16
    cursor.observe([], now=2.0 + live_stream.LATE_COMMIT_S + 1)
    assert cursor.watermark == 18
    start = ChangeCursor.at_start(newest=20, last_issued=23, now=0.0)
    assert start.watermark == 20 and start.max_seen == 23
    assert ChangeCursor.at_start(None, 7, 0.0).watermark == 7


def test_events_are_valid_sse_even_for_odd_text() -> None:
    assert sse("remove", '{"id": "1"}', 7) == b'event: remove\nid: 7\ndata: {"id": "1"}\n\n'
    # U+2028 is no SSE line break (str.splitlines would split it and corrupt the JSON)
    text = json.dumps({"loc": "a\u2028b"}, ensure_ascii=False)
    assert sse("position", text) == f"event: position\ndata: {text}\n\n".encode()
    assert sse("x", "a\r\nb\nc") == b"event: x\ndata: a\ndata: b\ndata: c\n\n"


def test_render_batch_sends_matches_removes_and_one_id() -> None:
    def change(imei: str, cc: str | None, status: str | None) -> Change:
        feature = None if status is None else json.dumps({"id": imei})
        return Change(1, imei, True, cc, status != "parked", status, feature)

    batch = Batch.of(42, [change("a", "X", "moving"), change("b", "Y", "moving"),
                          change("c", "X", "parked"), change("d", "X", None)])  # fmt: skip
    visible = {"c", "d"}
    out = render_batch(batch, StreamFilter("x", "moving"), visible).decode()
    assert out.count("event: position") == 1 and out.count("event: remove") == 2
    assert out.count("id: 42") == 1 and out.index("id: 42") > out.rindex("event: position")
    assert visible == {"a"}
    assert render_batch(batch, StreamFilter("Z", None), set()) == b""
    unknown = render_batch(batch, StreamFilter("Z", None), None).decode()
    assert unknown.count("event: remove") == 4  # after a resume: unknown what is shown


def test_tokens_expire_and_are_bound_to_the_keys() -> None:
    token, expires = mint_token(["k1", "k2"], 1_000_000)
    assert expires == 1_000_000 + live_stream.TOKEN_TTL_S
    assert token_valid(["k2", "k1"], token, 1_000_100)
    assert not token_valid(["k1", "k2"], token, expires)  # expired
    assert not token_valid(["k1"], token, 1_000_100)  # keys rotated
    assert not token_valid(["k1", "k2"], token, 900_000)  # minted in the "future"
    assert not token_valid(["k1", "k2"], "1.abc", 1_000_100)


def test_last_event_id_parsing() -> None:
    assert parse_last_event_id(None, None) is None
    assert parse_last_event_id(" ", "12") == 12
    assert parse_last_event_id("7", "12") == 7
    for bad in ("abc", "-1", "1.5", "9" * 20, "1\n2"):
        with pytest.raises(ParamError):
            parse_last_event_id(bad, None)
