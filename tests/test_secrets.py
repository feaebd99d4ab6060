"""Secrets never reach a log, a table or a file the stack writes (docs/security.md).

Both web apps run as production runs them (`uvicorn webhook_receiver:app`,
`uvicorn dashboard_api:app`, access log on) with every secret configured: the push token, a
read-API key, the database password, the Tracksolid app secret and password. Then deliveries
arrive the ways JIMI sends them (token in the form, token in the query string, rejected
bodies, a wrong token) and the read-API is asked with the key in its header and, wrongly, in
the URL. Every log line both processes printed, every row of every table of the database and
every file in the spool directory are searched for each secret.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from tests import push_factories as pf
from tests.conftest import ROOT, engine_of, with_password
from tests.pgcluster import free_port


class App:
    """One app under uvicorn in its own process, output in a file."""

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", f"{module}:app", "--host", "127.0.0.1",
             "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{module} exited: {log.read_text(errors='replace')}")
            try:
                httpx.get(f"{self.url}/health", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"{module} did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._out.close()


@pytest.fixture
def secrets() -> dict[str, str]:
    tag = uuid.uuid4().hex
    return {
        "push token": f"pushtok{tag[:20]}",
        "api key": f"apikey{tag[:20]}",
        "db password": f"dbpw{tag[:20]}",
        "app secret": f"appsec{tag[:20]}",
        "user password": f"userpw{tag[:20]}",
    }


@pytest.fixture
def apps(db_url: str, secrets: dict[str, str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    spool = tmp_path / "spool"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": with_password(db_url, secrets["db password"]),
        "USE_TIMESCALEDB": "on" if engine_of(db_url) == "timescaledb" else "off",
        "JIMI_PUSH_TOKEN": secrets["push token"],
        "DASHBOARD_API_KEYS": secrets["api key"],
        "TRACKSOLID_APP_KEY": "app-key-not-secret",
        "TRACKSOLID_APP_SECRET": secrets["app secret"],
        "TRACKSOLID_USER_ID": "fireside",
        "TRACKSOLID_USER_PWD": secrets["user password"],
        "WEBHOOK_SPOOL_DIR": str(spool),
        "VTRIPS_REFRESH_INTERVAL_S": "0",
        "LOG_LEVEL": "DEBUG",
    }
    receiver = App("webhook_receiver", env, tmp_path / "receiver.log")
    try:
        dashboard = App("dashboard_api", env, tmp_path / "dashboard.log")
    except BaseException:
        receiver.stop()
        raise
    try:
        yield {"receiver": receiver, "dashboard": dashboard, "spool": spool}
    finally:
        dashboard.stop()
        receiver.stop()


def rows_containing(db_url: str, needle: str) -> list[str]:
    """`schema.table` of every table holding `needle` anywhere in a row's text."""
    found = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE' AND table_schema NOT IN"
            " ('pg_catalog', 'information_schema') AND table_schema NOT LIKE '\\_timescaledb%'"
        ).fetchall()
        for schema, table in tables:
            hit = conn.execute(
                sql.SQL("SELECT count(*) FROM {} t WHERE strpos(t::text, %s) > 0").format(
                    sql.Identifier(schema, table)
                ),
                (needle,),
            ).fetchone()
            if hit and hit[0]:
                found.append(f"{schema}.{table}")
    return found


def test_no_secret_in_any_log_table_or_file(
    apps: dict[str, Any], db_url: str, secrets: dict[str, str]
) -> None:
    token, key = secrets["push token"], secrets["api key"]
    recv, dash = apps["receiver"].url, apps["dashboard"].url
    item = pf.gps(pf.IMEIS[0])
    with httpx.Client(timeout=10) as http:
        answers = [
            # token in the form, in the query string (the documented form for /push)
            http.post(f"{recv}/pushgps", data=pf.iothub_form([item], token)),
            http.post(f"{recv}/pushgps?token={token}", data=pf.iothub_form([item])),
            http.post(f"{recv}/push?token={token}", data=pf.openapi_form({"deviceImei": "1"})),
            # rejected deliveries, whose raw body is kept for inspection
            http.post(f"{recv}/pushgps", data={"token": token, "data_list": "[{not json"}),
            http.post(f"{recv}/pushalarm?token={token}", content=b"\xff\xfe garbage"),
            # a wrong token
            http.post(f"{recv}/pushgps", data=pf.iothub_form([item], "wrong-token-0000")),
            # the read-API: key in the header (right), in the URL (refused)
            http.get(f"{dash}/webhook/live-positions", headers={"X-API-Key": key}),
            http.get(f"{dash}/webhook/live-positions?key={key}"),
            http.get(f"{dash}/analytics/filters?api_key={key}"),
            http.get(f"{dash}/webhook/live-positions", headers={"X-API-Key": "wrong"}),
        ]
    statuses = [a.status_code for a in answers]
    assert statuses == [200, 200, 200, 400, 400, 401, 200, 401, 401, 401], statuses
    for answer in answers:
        for name, secret in secrets.items():
            assert secret not in answer.text, f"{name} echoed in a reply"
    apps["dashboard"].stop()
    apps["receiver"].stop()

    logs = {name: apps[name].log.read_text(errors="replace") for name in ("receiver", "dashboard")}
    assert "token=***" in logs["receiver"], "the access log was written, redacted"
    assert "key=***" in logs["dashboard"]
    assert "/pushgps" in logs["receiver"] and "/webhook/live-positions" in logs["dashboard"]
    files = [p for p in apps["spool"].rglob("*") if p.is_file()]
    with psycopg.connect(db_url) as conn:
        inbox = conn.execute(
            "SELECT status, count(*) FROM tracksolid.push_inbox GROUP BY 1 ORDER BY 1"
        ).fetchall()
        audited = conn.execute("SELECT count(*) FROM tracksolid.ingestion_log").fetchone()
    by_status: dict[str, int] = {str(r[0]): int(r[1]) for r in inbox}
    assert by_status.get("rejected") == 2 and sum(by_status.values()) >= 4, by_status
    assert audited is not None and audited[0] >= 3

    leaks = {}
    for name, secret in secrets.items():
        where = [log for log, text in logs.items() if secret in text]
        where += [str(p) for p in files if secret.encode() in p.read_bytes()]
        where += rows_containing(db_url, secret)
        if where:
            leaks[name] = where
    assert leaks == {}, json.dumps(leaks, indent=1)
