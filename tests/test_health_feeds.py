"""Health that covers every feed (issue #18): GET /health/ingest lists every API method, push
path, both importers, ticket geocoding, the backup, the v_trips refresher and every worker
job, each with its last success, last failure and reason, rows in 24 h and a stale
threshold. The rows come from the real components writing their runs (worker jobs against a
dead and a live Jimi simulator, the importers on local files, the geocoder on a loopback HTTP
server, pg_dump to a loopback S3 server, the refresher); the INC freshness moves right after
an --inc-csv import; the importers' schedule in the code is the documented one; the scheduler
geocodes new tickets after each successful tickets import (real child processes).
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from apscheduler.triggers.base import BaseTrigger
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool
from pydantic import SecretStr

import dashboard_api
import import_fuel
import import_tickets
from backup import pg_backup
from dashboard.refresher import VTripsRefresher
from ingest.jobs import Ingestor
from ingest_worker import JOB_NAMES, ONCE, guarded, run_once
from jimi_sim import SimConfig, SimServer
from scripts import run_importers
from tests.conftest import ROOT, read_only_url, test_settings
from tests.pgcluster import free_port
from tests.sim_support import SIM_CREDENTIALS
from tests.test_tickets_geocode import FakeGeocoder
from tickets_import.sample import ticket, to_csv
from ts_shared import JimiClient, Settings
from webhook.parse import IOTHUB_PARSERS

EAT = ZoneInfo("Africa/Nairobi")
OTHER_FEEDS = ("import:tickets", "import:fuel", "geocode:tickets", "backup", "refresh:v_trips")


def health(pool: ConnectionPool) -> dict[str, Any]:
    """The document GET /health/ingest serves."""
    with pool.connection() as conn:
        row = conn.execute("SELECT reporting.fn_ingest_health()::text").fetchone()
    assert row is not None
    doc: dict[str, Any] = json.loads(row[0])
    return doc


def feed(pool: ConnectionPool, key: str) -> dict[str, Any]:
    """One feed row of /health/ingest."""
    rows: list[dict[str, Any]] = [f for f in health(pool)["feeds"] if f["feed"] == key]
    assert len(rows) == 1, f"{key}: {rows}"
    return rows[0]


def scalar(pool: ConnectionPool, query: str, *params: Any) -> Any:
    with pool.connection() as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def age_s(stamp: str | None) -> float:
    assert stamp is not None
    return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()


def inc_csv(tmp_path: Path, *ids: str) -> Path:
    path = tmp_path / f"inc-{'-'.join(ids)}.csv"
    path.write_bytes(
        to_csv([ticket(i, cluster="Kilimani", location_name="Valley Arcade") for i in ids])
    )
    return path


# ── the catalogue ──────────────────────────────────────────────────────────────────────────


def test_every_job_push_path_and_feed_is_listed_before_it_ever_ran(pool: ConnectionPool) -> None:
    doc = health(pool)
    feeds = {f["feed"]: f for f in doc["feeds"]}
    expected = {f"job:{name}" for name in JOB_NAMES} | {f"push:{p}" for p in IOTHUB_PARSERS}
    assert expected | set(OTHER_FEEDS) <= set(feeds)
    for key, row in feeds.items():
        assert row["status"] == "never", row
        assert row["label"] and row["label"] != key and "_" not in row["label"], row
        assert (row["last_success"], row["last_failure"], row["last_error"]) == (None,) * 3
        assert row["rows_24h"] == 0 and row["calls_24h"] == 0
        # the old fields the page and the older tests read are still there
        assert {"source", "method", "last_success_at", "failures_24h"} <= set(row)
    assert feeds["job:live_positions"]["label"] == "Live positions (job)"
    assert feeds["api:jimi.user.device.location.list"]["label"] == "Live positions (API poll)"
    assert feeds["job:live_positions"]["stale_after_s"] == 600
    assert feeds["backup"]["stale_after_s"] == 30 * 3600
    assert doc["status"] == "no_data", "nothing ran: not red, not green"


# ── worker jobs ────────────────────────────────────────────────────────────────────────────


@pytest.fixture
def sim() -> Iterator[SimServer]:
    server = SimServer(SimConfig(devices=3, accounts=1, seed=7))
    server.start()
    yield server
    server.stop()


def ingestor_at(db_url: str, pool: ConnectionPool, api_url: str) -> Ingestor:
    settings = test_settings(
        db_url,
        tracksolid_api_url=api_url,
        **SIM_CREDENTIALS,
        tracksolid_targets="fireside",
        jimi_max_attempts=1,
        ingest_catchup_days=1,
    )
    return Ingestor(settings, pool, JimiClient(settings, pool, sleep=lambda s: None))


def test_a_failing_job_is_failing_with_its_reason_until_it_succeeds_again(
    db_url: str, pool: ConnectionPool, sim: SimServer
) -> None:
    dead = ingestor_at(db_url, pool, f"http://127.0.0.1:{free_port()}/route")
    run_once(dead, ["device_sync"])
    row = feed(pool, "job:device_sync")
    assert row["status"] == "failing" and row["source"] == "job"
    assert row["last_success"] is None and age_s(row["last_failure"]) < 60
    assert row["last_error"], row
    for secret in SIM_CREDENTIALS.values():
        if "secret" in secret or "password" in secret:
            assert secret not in row["last_error"]
    assert health(pool)["status"] == "failing"

    live = ingestor_at(db_url, pool, sim.url)
    assert run_once(live, ["device_sync"]) == 0
    row = feed(pool, "job:device_sync")
    assert row["status"] == "ok", row
    assert age_s(row["last_success"]) < 60 and row["last_failure"] is not None
    assert row["last_error"], "the reason of the last failure stays visible"
    api = feed(pool, "api:jimi.user.device.list")
    assert api["source"] == "api" and api["last_success"] is not None
    assert api["failures_24h"] == 1, "an API method counts calls: one of two failed in 24 h"


def test_one_worker_cycle_brings_every_job_and_api_feed_to_ok(
    db_url: str, pool: ConnectionPool, sim: SimServer
) -> None:
    assert run_once(ingestor_at(db_url, pool, sim.url), ONCE) == 0
    feeds = {f["feed"]: f for f in health(pool)["feeds"]}
    for name in JOB_NAMES:
        row = feeds[f"job:{name}"]
        assert row["status"] == "ok" and age_s(row["last_success"]) < 120, row
    polled = [f for f in feeds.values() if f["source"] == "api" and f["status"] != "never"]
    assert polled and all(f["status"] == "ok" for f in polled), polled
    assert feeds["job:track_list"]["rows_24h"] > 0, "rows written by the job (its catch-up too)"


def test_a_crashed_job_is_recorded_as_failing_with_the_exception(
    db_url: str, pool: ConnectionPool
) -> None:
    ingestor = ingestor_at(db_url, pool, f"http://127.0.0.1:{free_port()}/route")

    def crash() -> None:
        raise RuntimeError("rules table unreadable")

    assert guarded("alerts", crash, ingestor)() is False
    row = feed(pool, "job:alerts")
    assert row["status"] == "failing"
    assert row["last_error"] == "crashed: RuntimeError('rules table unreadable')"


# ── importers, INC freshness, geocoding ────────────────────────────────────────────────────


def test_tickets_import_health_and_inc_freshness_right_after_an_inc_csv_import(
    settings: Settings, pool: ConnectionPool, tmp_path: Path
) -> None:
    fresh = "SELECT tickets.freshness('inc')::text"
    assert json.loads(scalar(pool, fresh))["last_import_at"] is None
    out = io.StringIO()
    path = inc_csv(tmp_path, "INC1", "INC2")
    assert import_tickets.run(["--inc-csv", str(path), "--apply"], settings, pool, out=out) == 0
    freshness = json.loads(scalar(pool, fresh))
    assert freshness["last_import_at"] is not None and freshness["minutes_since_import"] == 0
    dashboard = json.loads(scalar(pool, "SELECT reporting.fn_inc_dashboard()::text"))
    assert dashboard["freshness"]["last_import_at"] is not None
    assert health(pool)["imports"]["tickets"]["minutes_since_import"] == 0
    row = feed(pool, "import:tickets")
    assert row["status"] == "ok" and row["source"] == "import" and row["rows_24h"] == 2
    assert age_s(row["last_success"]) < 60 and row["label"] == "Tickets import (INC)"

    missing = tmp_path / "no-such-export.csv"
    code = import_tickets.run(["--inc-csv", str(missing), "--apply"], settings, pool, out=out)
    assert code == 3
    row = feed(pool, "import:tickets")
    assert row["status"] == "failing" and "no-such-export.csv" in row["last_error"]
    assert age_s(row["last_failure"]) < 60

    path = inc_csv(tmp_path, "INC3")
    assert import_tickets.run(["--inc-csv", str(path), "--apply"], settings, pool, out=out) == 0
    row = feed(pool, "import:tickets")
    assert row["status"] == "ok" and row["rows_24h"] == 3
    assert "no-such-export.csv" in row["last_error"] and row["last_failure"] is not None


def test_an_unlistable_bucket_is_a_failing_tickets_import_with_the_reason(
    s3_settings: Settings, pool: ConnectionPool
) -> None:
    gone = s3_settings.model_copy(update={"tickets_bucket": "no-such-bucket-h18"})
    args = ["--from-bucket", "--apply"]
    assert import_tickets.run(args, gone, pool, out=io.StringIO()) == 1
    row = feed(pool, "import:tickets")
    assert row["status"] == "failing" and "cannot list s3://no-such-bucket-h18" in row["last_error"]
    assert "test-secret" not in row["last_error"]
    assert import_tickets.run(args, s3_settings, pool, out=io.StringIO()) == 0
    assert feed(pool, "import:tickets")["status"] == "ok", "an empty bucket is a good run"


def test_fuel_import_health_right_after_each_run(
    settings: Settings, pool: ConnectionPool, tmp_path: Path
) -> None:
    path = tmp_path / "fills.json"
    fill = {"id": 1, "car": "KCA 542Q", "litres": "40", "date": "2026-06-10 08:00:00"}
    path.write_text(json.dumps([fill]))
    assert import_fuel.main(["--file", str(path), "--apply"], settings=settings) == 0
    row = feed(pool, "import:fuel")
    assert row["status"] == "ok" and row["rows_24h"] == 1 and age_s(row["last_success"]) < 60
    freshness = health(pool)["imports"]["fuel"]
    assert age_s(freshness["last_import_at"]) < 60 and freshness["minutes_since_import"] == 0
    assert import_fuel.main(["--file", str(tmp_path / "gone.json"), "--apply"], settings=settings)
    row = feed(pool, "import:fuel")
    assert row["status"] == "failing" and "gone.json" in row["last_error"]


@pytest.fixture
def geocoder() -> Iterator[FakeGeocoder]:
    fake = FakeGeocoder()
    yield fake
    fake.close()


def geo(settings: Settings, fake: FakeGeocoder, key: str) -> Settings:
    update = {"geocoder_url": fake.url, "geocoder_key": SecretStr(key), "geocoder_rate_per_s": 500}
    return settings.model_copy(update=update)


def test_geocoding_runs_are_a_feed_with_the_refusal_reason_and_never_the_key(
    settings: Settings, pool: ConnectionPool, tmp_path: Path, geocoder: FakeGeocoder
) -> None:
    geocoder.places["Kilimani, Nairobi"] = (-1.29, 36.78, "Kilimani, Nairobi, Kenya")
    out = io.StringIO()
    path = inc_csv(tmp_path, "INC1")
    assert import_tickets.run(["--inc-csv", str(path), "--apply"], settings, pool, out=out) == 0
    args = ["--geocode-clusters", "--geocode-locations", "--apply"]
    wrong = geo(settings, geocoder, "wrong-key-4711")
    assert import_tickets.run(args, wrong, pool, out=out) == 1
    row = feed(pool, "geocode:tickets")
    assert row["status"] == "failing" and row["source"] == "geocode"
    assert "refused the key (HTTP 401)" in row["last_error"]
    assert "wrong-key-4711" not in json.dumps(health(pool))

    assert import_tickets.run(args, geo(settings, geocoder, "test-key"), pool, out=out) == 0
    row = feed(pool, "geocode:tickets")
    assert row["status"] == "ok" and row["rows_24h"] >= 1, row


def test_scheduler_geocodes_new_tickets_after_each_successful_import(
    db_url: str,
    pool: ConnectionPool,
    tmp_path: Path,
    geocoder: FakeGeocoder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    geocoder.places["Kilimani, Nairobi"] = (-1.29, 36.78, "Kilimani, Nairobi, Kenya")
    settings = test_settings(db_url, geocoder_url=geocoder.url, geocoder_key="test-key")
    env = {
        "DATABASE_URL": db_url,
        "USE_TIMESCALEDB": "on" if settings.use_timescaledb else "off",
        "GEOCODER_URL": geocoder.url,
        "GEOCODER_KEY": "test-key",
        "GEOCODER_RATE_PER_S": "50",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    then = run_importers.follow_ups("tickets", settings)
    assert then == [run_importers.GEOCODE]
    assert run_importers.follow_ups("fuel", settings) == []
    assert run_importers.follow_ups("tickets", test_settings(db_url, geocoder_key="")) == [], (
        "no key, no geocoding"
    )

    importer = [sys.executable, str(ROOT / "import_tickets.py"), "--apply", "--inc-csv"]
    assert run_importers.run("tickets", [*importer, str(tmp_path / "missing.csv")], then) == 3
    assert feed(pool, "geocode:tickets")["status"] == "never", "a failed import geocodes nothing"

    csv_file = str(inc_csv(tmp_path, "INC7"))
    assert run_importers.run("tickets", [*importer, csv_file], then) == 0
    with pool.connection() as conn:
        order = conn.execute(
            "SELECT source, target FROM tracksolid.ingestion_log"
            " WHERE source IN ('import', 'geocode') AND ok ORDER BY log_id"
        ).fetchall()
    assert ("import", csv_file) in order and ("geocode", "clusters,locations") in order, order
    assert order.index(("geocode", "clusters,locations")) > order.index(("import", csv_file))
    assert feed(pool, "geocode:tickets")["status"] == "ok"
    assert scalar(pool, "SELECT geo_source FROM tickets.inc WHERE ticket_id = 'INC7'")


# ── backup and the v_trips refresher ───────────────────────────────────────────────────────


def test_backup_runs_are_a_feed(db_url: str, s3_settings: Settings, pool: ConnectionPool) -> None:
    assert pg_backup.main(["dump", "--no-prune"], s3_settings) == 0
    row = feed(pool, "backup")
    assert row["status"] == "ok" and row["source"] == "backup" and row["rows_24h"] == 1
    assert age_s(row["last_success"]) < 120

    values = s3_settings.model_dump()
    values.update(backup_bucket="missing-bucket-h18", dashboard_database_url=None)
    assert pg_backup.main(["dump", "--no-prune"], Settings(_env_file=None, **values)) == 1
    row = feed(pool, "backup")
    assert row["status"] == "failing" and "missing-bucket-h18" in row["last_error"]
    assert "test-secret" not in row["last_error"]


def test_refresher_runs_are_a_feed_that_goes_stale(pool: ConnectionPool) -> None:
    assert VTripsRefresher(pool, 300, instance="health-test").run_once().outcome == "refreshed"
    row = feed(pool, "refresh:v_trips")
    assert row["status"] == "ok" and row["source"] == "refresh" and row["rows_24h"] == 1
    with pool.connection() as conn:
        conn.execute("UPDATE reporting.refresh_log SET finished_at = now() - interval '2 hours'")
    row = feed(pool, "refresh:v_trips")
    assert row["status"] == "stale" and row["rows_24h"] == 1
    assert health(pool)["status"] == "stale"


def test_health_endpoint_serves_labels_and_keeps_old_fields(
    db_url: str, pool: ConnectionPool
) -> None:
    with TestClient(
        dashboard_api.create_app(test_settings(db_url, vtrips_refresh_interval_s=0))
    ) as api:
        resp = api.get("/health/ingest")
    assert resp.status_code == 200
    rows = resp.json()["feeds"]
    assert {"feed", "label", "status", "last_success", "last_failure", "last_error", "rows_24h",
            "stale_after_s", "method", "source", "calls_24h"} <= set(rows[0])  # fmt: skip


# ── schedules ──────────────────────────────────────────────────────────────────────────────


def tickets_due(pool: ConnectionPool, local: datetime) -> datetime:
    value: datetime = scalar(pool, "SELECT reporting.health_tickets_due(%s)", local)
    return value.astimezone(EAT).replace(tzinfo=None)


@pytest.mark.parametrize(
    ("at", "due"),
    [
        ("2026-12-03 05:59", "2026-12-02 20:40"),
        ("2026-12-03 06:00", "2026-12-03 06:00"),
        ("2026-12-03 06:19", "2026-12-03 06:00"),
        ("2026-12-03 13:45", "2026-12-03 13:40"),
        ("2026-12-03 20:59", "2026-12-03 20:40"),
        ("2026-12-03 23:30", "2026-12-03 20:40"),
    ],
)
def test_tickets_staleness_follows_the_import_window(
    pool: ConnectionPool, at: str, due: str
) -> None:
    local = datetime.fromisoformat(at).replace(tzinfo=EAT)
    assert tickets_due(pool, local) == datetime.fromisoformat(due)


def test_reasons_are_shown_without_credentials(pool: ConnectionPool) -> None:
    raw = (
        "cannot connect to postgresql://fleet:hunter2@db:5432/x;"
        " GET /api?access_token=tok123&app_key=k9 failed, password=pw7 key: s3cr3t"
    )
    shown = scalar(pool, "SELECT reporting.health_redact(%s)", raw)
    for secret in ("hunter2", "tok123", "k9", "pw7", "s3cr3t"):
        assert secret not in shown, shown
    assert shown.startswith("cannot connect to postgresql://fleet:***@db:5432/x")
    assert len(scalar(pool, "SELECT reporting.health_redact(repeat('x', 900))")) == 500


def fires_on(trigger: BaseTrigger, day: date) -> list[str]:
    """The fire times of `trigger` on the EAT day `day`, as HH:MM."""
    start = datetime.combine(day, time(0), EAT)
    end = start + timedelta(days=1)
    out: list[str] = []
    previous: datetime | None = None
    now = start - timedelta(microseconds=1)
    while (nxt := trigger.get_next_fire_time(previous, now)) is not None and nxt < end:
        out.append(nxt.astimezone(EAT).strftime("%H:%M"))
        previous, now = nxt, nxt
    return out


def expand(field: str, low: int, high: int) -> list[int]:
    """A cron field (`*`, `*/N`, `A-B`, `A-B/N`, `N`, comma lists) as its values."""
    values: list[int] = []
    for part in field.split(","):
        rng, _, step = part.partition("/")
        first, last = (
            (low, high) if rng == "*" else (int(rng.split("-")[0]), int(rng.split("-")[-1]))
        )
        values.extend(range(first, last + 1, int(step or 1)))
    return sorted(values)


def documented_cron(doc: str, pattern: str) -> str:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    match = re.search(pattern, text)
    assert match, f"{doc}: no schedule found"
    return match.group(1)


def test_importer_schedule_in_the_code_is_the_documented_one() -> None:
    cron = documented_cron("tickets.md", r"cron `([^`]+)` with `TZ=Africa/Nairobi`")
    minute, hour, *_ = cron.split()
    documented = [f"{h:02d}:{m:02d}" for h in expand(hour, 0, 23) for m in expand(minute, 0, 59)]
    tickets_trigger = run_importers.SCHEDULE["tickets"][1]
    for day in (date(2026, 12, 3), date(2026, 12, 6)):  # a Thursday and a Sunday
        assert fires_on(tickets_trigger, day) == documented
    assert documented[0] == "06:00" and documented[-1] == "20:40" and len(documented) == 45
    text = (ROOT / "docs" / "tickets.md").read_text(encoding="utf-8")
    assert "Every 20 minutes from 06:00 to 20:59 EAT" in text
    fuel = fires_on(run_importers.SCHEDULE["fuel"][1], date(2026, 12, 3))
    assert fuel == [f"{h:02d}:05" for h in range(24)], "hourly a few minutes past the hour"
    for path in ("docker-compose.yaml", "docs/operations.md"):
        lines = [x for x in (ROOT / path).read_text().splitlines() if "Tickets every 20" in x
                 or "tickets every 20" in x]  # fmt: skip
        assert lines and all("20:59" in x for x in lines), (path, lines)


def test_readonly_role_can_read_health(db_url: str) -> None:
    with psycopg.connect(read_only_url(db_url)) as conn:
        row = conn.execute("SELECT reporting.fn_ingest_health()::text").fetchone()
    assert row is not None and json.loads(row[0])["feeds"]
