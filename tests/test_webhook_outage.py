"""PostgreSQL stopped and restarted mid-stream: every acknowledged item is stored exactly once.

A real uvicorn serves the receiver on loopback; two sender threads post /pushgps deliveries
while the test's own PostgreSQL cluster is killed (`pg_ctl -m immediate`, a crash) and
restarted on the same port.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from run_migrations import migrate
from tests import push_factories as f
from tests.conftest import test_settings
from tests.pgcluster import LocalCluster, free_port
from tests.servers import serve_in_thread
from webhook.spool import Spool, SpoolError
from webhook_receiver import create_app

TOKEN = "outage-token"


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster()
    c.init()
    # Commits must reach the WAL before they are acknowledged, so a crash loses nothing
    # (the shared test cluster turns this off for speed).
    with (c.data / "postgresql.conf").open("a") as fh:
        fh.write("synchronous_commit = on\n")
    c.start()
    try:
        yield c
    finally:
        c.stop(remove=True)


def test_database_crash_and_restart_loses_nothing_acknowledged(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE outage")
    url = cluster.url("outage")
    migrate(url, test_settings(url))
    settings = test_settings(
        url,
        jimi_push_token=TOKEN,
        webhook_spool_dir=str(tmp_path / "spool"),
        db_pool_max_size=4,
        log_level="INFO",
    )
    port = free_port()
    server, thread = serve_in_thread(create_app(settings), port)

    acked: list[tuple[str, str]] = []  # (imei, gpsTime) of acknowledged items
    acked_deliveries = 0
    refused = 0
    lock = threading.Lock()
    stop = threading.Event()

    # Live pushes carry live times: a fixed date months back would sit in a chunk that
    # TimescaleDB's compression policy (started again with the cluster) compresses while the
    # test writes into it — never the case for a live feed.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)

    def sender(worker: int) -> None:
        nonlocal acked_deliveries, refused
        imei = f"86279805{worker:07d}"
        n = 0
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            while not stop.is_set():
                items = [
                    f.gps(imei, start + timedelta(seconds=n * 5 + k), lat=f"-1.{n:06d}")
                    for k in range(5)
                ]
                n += 1
                try:
                    resp = http.post("/pushgps", data=f.iothub_form(items, TOKEN))
                except httpx.HTTPError:
                    continue
                with lock:
                    if resp.status_code == 200:
                        acked.extend((i["deviceImei"], i["gpsTime"]) for i in items)
                        acked_deliveries += 1
                    else:
                        refused += 1
                time.sleep(0.005)

    senders = [threading.Thread(target=sender, args=(w,)) for w in range(2)]
    try:
        for t in senders:
            t.start()
        time.sleep(1.0)
        cluster.stop(mode="immediate")
        time.sleep(2.0)
        with lock:
            during = acked_deliveries
        spooled = list(Path(settings.webhook_spool_dir).glob("*.json"))
        assert spooled, "deliveries acknowledged during the outage are in the spool"
        cluster.start()
        time.sleep(1.5)
        stop.set()
        for t in senders:
            t.join(10)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                health = http.get("/health").json()
                if health["spool_depth"] == 0 and health["database"] == "up":
                    break
                time.sleep(0.1)
            assert health == {
                "status": "ok",
                "database": "up",
                "synchronous_commit": "on",
                "spooling": False,
                "spool_depth": 0,
            }
    finally:
        stop.set()
        server.should_exit = True
        thread.join(10)

    assert refused == 0
    assert acked_deliveries > during > 0
    with psycopg.connect(url) as conn:
        stored = conn.execute(
            "SELECT imei, to_char(gps_time, 'YYYY-MM-DD HH24:MI:SS')"
            " FROM tracksolid.position_history"
        ).fetchall()
        inbox = conn.execute(
            "SELECT count(*), count(DISTINCT delivery_key), count(*) FILTER (WHERE spooled)"
            " FROM tracksolid.push_inbox"
        ).fetchone()
        logged = conn.execute(
            "SELECT count(*) FROM tracksolid.ingestion_log WHERE method = '/pushgps'"
        ).fetchone()
    assert sorted(stored) == sorted(acked), "every acknowledged item exactly once"
    assert inbox is not None
    assert inbox[0] == inbox[1] == acked_deliveries
    assert inbox[2] > 0
    assert logged == (acked_deliveries,)


def test_spool_survives_restart_keeps_order_and_has_one_owner(tmp_path: Path) -> None:
    with Spool(tmp_path / "s") as spool:
        seqs = [spool.append(f"{i}".encode()) for i in range(3)]
        with pytest.raises(SpoolError, match="in use by another process"):
            Spool(tmp_path / "s")
    (tmp_path / "s" / ".tmp-000000000099").write_bytes(b"half")  # an interrupted write
    again = Spool(tmp_path / "s")
    assert again.depth == 3
    assert [s for s, _ in again.pending()] == seqs
    assert not list((tmp_path / "s").glob(".tmp-*"))
    assert again.append(b"x") == seqs[-1] + 1
    _, first = again.pending()[0]
    again.remove(first)
    again.quarantine(again.pending()[0][1], "test")
    assert again.depth == 2
    assert (tmp_path / "s" / "bad").is_dir()
