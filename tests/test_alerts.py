"""Alerts (issue #17): rules → alerts → outbox → webhook / e-mail, with real peers on loopback.

The webhook receiver is a real uvicorn server (tests/servers.py), the mail server a real
aiosmtpd with STARTTLS on a certificate made here; the database is the test PostgreSQL.
Time is passed in explicitly (`now`) so retries and windows are stepped, not waited for.
"""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AioSMTP
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool
from pydantic import SecretStr

import alerts.__main__ as cli
from alerts import rules
from alerts.channels import verify
from alerts.outbox import deliver_due
from alerts.run import run_once
from dashboard import alerts as alerts_api
from dashboard_api import create_app
from ingest.jobs import Ingestor
from ingest_worker import job_table
from tests.conftest import router_client, test_settings
from tests.factories import add_device, add_ingestion_log, add_live_position, add_track, db_now
from tests.pgcluster import free_port
from tests.servers import serve_in_thread
from ts_shared import JimiClient, Settings, make_pool

SECRET = "test-webhook-secret-0123456789"
IMEIS = [f"86000000000000{i}" for i in range(5)]
HOUR = timedelta(hours=1)


# ── peers ───────────────────────────────────────────────────────────────────────────────


@dataclass
class Receiver:
    """A webhook receiver that answers 500 to the first `fail_first` requests."""

    fail_first: int = 0
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            body = await request.body()
            item = {"headers": dict(request.headers), "body": body}
            if self.delay_s:
                import asyncio  # noqa: PLC0415

                await asyncio.sleep(self.delay_s)
            with self.lock:
                self.requests.append(item)
                if len(self.requests) <= self.fail_first:
                    return Response(status_code=500)
                self.accepted.append(item)
            return Response(status_code=204)

        return app


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver(fail_first=3)
    port = free_port()
    server, thread = serve_in_thread(rec.app(), port)
    yield rec, f"http://127.0.0.1:{port}/hook"
    server.should_exit = True
    thread.join()


def settings_for(db_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "alert_webhook_secret": SecretStr(SECRET),
        "alert_retry_base_s": 1.0,
        "alert_retry_cap_s": 60.0,
        "alert_send_timeout_s": 5.0,
        "alert_event_lag_s": 0.0,
    }
    values.update(extra)
    return test_settings(db_url, **values)


def add_rule(pool: ConnectionPool, **data: Any) -> dict[str, Any]:
    with pool.connection() as conn:
        return rules.insert_rule(conn, rules.validate_rule(data))


def add_alarms(conn: psycopg.Connection[Any], n: int, alarm_type: str = "1") -> None:
    """`n` alarms spread over one minute and the five test vehicles, in one COPY."""
    start = db_now(conn) - timedelta(minutes=1)
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY tracksolid.alarms (imei, alarm_time, alarm_type, source) FROM STDIN"
        ) as copy,
    ):
        for i in range(n):
            copy.write_row(
                (IMEIS[i % 5], start + timedelta(milliseconds=60 * i), alarm_type, "push")
            )


@pytest.fixture
def fleet(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        for i, imei in enumerate(IMEIS):
            add_device(conn, imei, f"KDA {i}00A", cost_centre="North" if i < 3 else "South")


def outbox(pool: ConnectionPool) -> list[dict[str, Any]]:
    with pool.connection() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM tracksolid.alert_outbox ORDER BY outbox_id").fetchall()


def later(pool: ConnectionPool, seconds: float) -> dt.datetime:
    with pool.connection() as conn:
        return db_now(conn) + timedelta(seconds=seconds)


# ── burst, grouping, dedup ──────────────────────────────────────────────────────────────


@pytest.mark.both_engines
def test_burst_of_1000_alarms_is_one_message_per_rule(
    db_url: str, pool: ConnectionPool, fleet: None, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    rec.fail_first = 0
    settings = settings_for(db_url, alert_webhook_url=url)
    add_rule(pool, name="SOS", kind="alarm", params={"types": ["1"]})
    add_rule(pool, name="critical", kind="alarm", params={"min_severity": "critical"})
    add_rule(pool, name="south only", kind="alarm", params={"types": ["1"]}, cost_centre="south")
    add_rule(pool, name="engine on", kind="alarm", params={"types": ["197"]})
    with pool.connection() as conn:
        add_alarms(conn, 1000)
    now = later(pool, 20)  # past the evaluation lag
    result = run_once(pool, settings, now)
    assert not result.errors, result.errors
    assert result.delivery.delivered == 3  # one message per matching rule, not 1000
    bodies = {b["rule"]["name"]: b for b in (json.loads(r["body"]) for r in rec.accepted)}
    assert set(bodies) == {"SOS", "critical", "south only"}
    assert bodies["SOS"]["alert_count"] == 5 and bodies["SOS"]["event_count"] == 1000
    assert bodies["south only"]["alert_count"] == 2  # 2 of the 5 vehicles are South
    assert bodies["south only"]["event_count"] == 400
    for item in rec.accepted:  # every message is signed and verifiable
        h = item["headers"]
        assert verify(SECRET, h["x-alert-timestamp"], item["body"], h["x-alert-signature"])
        assert h["x-alert-id"] == json.loads(item["body"])["id"]
    # 300 more within the group window and the cooldown: counted on the open alerts, no message
    with pool.connection() as conn:
        add_alarms(conn, 300)
    result = run_once(pool, settings, later(pool, 20))
    assert result.messages == 0 and len(rec.accepted) == 3
    with pool.connection() as conn:
        counts = conn.execute(
            "SELECT r.name, count(*), sum(a.count) FROM tracksolid.alerts a"
            " JOIN tracksolid.alert_rules r USING (rule_id) WHERE a.state = 'open'"
            " GROUP BY r.name ORDER BY r.name"
        ).fetchall()
    assert counts == [("SOS", 5, 1300), ("critical", 5, 1300), ("south only", 2, 520)]


def test_cooldown_and_group_window(
    db_url: str, pool: ConnectionPool, fleet: None, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    rec.fail_first = 0
    settings = settings_for(db_url, alert_webhook_url=url)
    add_rule(
        pool, name="SOS", kind="alarm", params={"types": ["1"]}, cooldown_s=600, group_window_s=60
    )
    with pool.connection() as conn:
        add_alarms(conn, 5)
    run_once(pool, settings, later(pool, 20))
    assert len(rec.accepted) == 1
    with pool.connection() as conn:
        add_alarms(conn, 5)
    run_once(pool, settings, later(pool, 120))  # window passed, cooldown not: quiet
    assert len(rec.accepted) == 1
    run_once(pool, settings, later(pool, 700))  # cooldown passed: the repeats are told once
    assert len(rec.accepted) == 2
    assert json.loads(rec.accepted[1]["body"])["event_count"] == 10
    run_once(pool, settings, later(pool, 1400))
    assert len(rec.accepted) == 2


# ── webhook delivery: retries, exactly once, restart ───────────────────────────────────


def test_webhook_fails_three_times_then_delivered_exactly_once(
    db_url: str, pool: ConnectionPool, fleet: None, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    settings = settings_for(db_url, alert_webhook_url=url)
    add_rule(pool, name="SOS", kind="alarm", params={"types": ["1"]})
    with pool.connection() as conn:
        add_alarms(conn, 1)
    now = later(pool, 20)
    for step in range(8):  # each pass is 2 minutes later: past any backoff of <= 4 x 1.2 s
        run_once(pool, settings, now + timedelta(minutes=2 * step))
    assert len(rec.requests) == 4 and len(rec.accepted) == 1
    ids = {r["headers"]["x-alert-id"] for r in rec.requests}
    assert len(ids) == 1  # the same message every attempt: the receiver can deduplicate
    item = rec.accepted[0]
    h = item["headers"]
    assert verify(SECRET, h["x-alert-timestamp"], item["body"], h["x-alert-signature"])
    assert not verify("wrong", h["x-alert-timestamp"], item["body"], h["x-alert-signature"])
    [row] = outbox(pool)
    assert row["attempts"] == 4 and row["delivered_at"] is not None
    with pool.connection() as conn:
        attempts = conn.execute(
            "SELECT ok, status_code FROM tracksolid.alert_deliveries ORDER BY delivery_id"
        ).fetchall()
    assert attempts == [(False, 500)] * 3 + [(True, 204)]


def test_backoff_waits_between_attempts(
    db_url: str, pool: ConnectionPool, fleet: None, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    settings = settings_for(
        db_url, alert_webhook_url=url, alert_retry_base_s=100.0, alert_retry_cap_s=600.0
    )
    add_rule(pool, name="SOS", kind="alarm", params={"types": ["1"]})
    with pool.connection() as conn:
        add_alarms(conn, 1)
    now = later(pool, 20)
    run_once(pool, settings, now)
    run_once(pool, settings, now + timedelta(seconds=30))  # before the first retry (≥ 80 s)
    assert len(rec.requests) == 1
    [row] = outbox(pool)
    assert timedelta(seconds=80) <= row["next_attempt_at"] - now <= timedelta(seconds=120)
    run_once(pool, settings, now + timedelta(seconds=130))
    assert len(rec.requests) == 2


def test_restart_in_the_middle_of_retries_still_delivers_once(
    db_url: str, pool: ConnectionPool, fleet: None, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    add_rule(pool, name="SOS", kind="alarm", params={"types": ["1"]})
    with pool.connection() as conn:
        add_alarms(conn, 3)
    now = later(pool, 20)
    for step in range(2):  # "process" one: two failed attempts, then it goes away
        first = make_pool(db_url, min_size=1, max_size=2, name="alerts-1")
        run_once(first, settings_for(db_url, alert_webhook_url=url), now + timedelta(minutes=step))
        first.close()
    assert len(rec.requests) == 2 and not rec.accepted
    # "process" two and three, started together on the same database: SKIP LOCKED
    rec.delay_s = 0.3
    pools = [make_pool(db_url, min_size=1, max_size=2, name=f"alerts-{i}") for i in (2, 3)]
    later_now = now + timedelta(minutes=10)
    threads = [
        threading.Thread(
            target=deliver_due, args=(p, settings_for(db_url, alert_webhook_url=url), later_now)
        )
        for p in pools
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in pools:
        p.close()
    assert len(rec.requests) == 3  # only one of the two sent it (the third failure)
    run_once(pool, settings_for(db_url, alert_webhook_url=url), now + timedelta(minutes=30))
    run_once(pool, settings_for(db_url, alert_webhook_url=url), now + timedelta(minutes=60))
    assert len(rec.accepted) == 1 and len(rec.requests) == 4
    [row] = outbox(pool)
    assert row["delivered_at"] is not None and row["attempts"] == 4


def test_unconfigured_webhook_is_given_up_not_retried(
    db_url: str, pool: ConnectionPool, fleet: None
) -> None:
    settings = settings_for(db_url, alert_webhook_secret=None, alert_webhook_url="")
    add_rule(pool, name="SOS", kind="alarm", params={"types": ["1"]})
    with pool.connection() as conn:
        add_alarms(conn, 1)
    result = run_once(pool, settings, later(pool, 20))
    assert result.delivery.given_up == 1
    [row] = outbox(pool)
    assert row["given_up_at"] is not None and "ALERT_WEBHOOK_SECRET" in row["last_error"]
    assert SECRET not in json.dumps(row, default=str)


# ── e-mail over STARTTLS ────────────────────────────────────────────────────────────────


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class MailSink:
    """aiosmtpd handler: keeps each message and whether the session was TLS."""

    def __init__(self) -> None:
        self.messages: list[tuple[bool, Envelope]] = []

    async def handle_DATA(self, server: AioSMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append((session.ssl is not None, envelope))
        return "250 OK"


SMTP_LOGIN = (b"alerts", b"smtp-pass-0123")


def check_login(
    server: AioSMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    """Accept only the test account (aiosmtpd passes LoginPassword for PLAIN / LOGIN)."""
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == SMTP_LOGIN
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[tuple[MailSink, int, Path]]:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink = MailSink()
    port = free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=check_login,
        auth_required=True,  # and only after STARTTLS (aiosmtpd's auth_require_tls default)
    )
    controller.start()
    yield sink, port, cert
    controller.stop()


def test_email_over_starttls(
    db_url: str, pool: ConnectionPool, fleet: None, smtp_server: tuple[MailSink, int, Path]
) -> None:
    sink, port, cert = smtp_server
    settings = settings_for(
        db_url,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_from="alerts@fleet.example",
        smtp_ca_file=str(cert),
        smtp_user="alerts",
        smtp_password=SecretStr("smtp-pass-0123"),
    )
    add_rule(
        pool,
        name="SOS by mail",
        kind="alarm",
        params={"types": ["1"]},
        channels=["email"],
        recipients=["ops@fleet.example"],
    )
    with pool.connection() as conn:
        add_alarms(conn, 50)
    result = run_once(pool, settings, later(pool, 20))
    assert result.delivery.delivered == 1, outbox(pool)
    [(tls, envelope)] = sink.messages
    assert tls and envelope.rcpt_tos == ["ops@fleet.example"]
    assert isinstance(envelope.content, bytes)
    mail = message_from_bytes(envelope.content)
    assert mail["Subject"] == "SOS by mail: 5 alerts"
    assert mail["X-Alert-Id"] == str(outbox(pool)[0]["message_id"])
    text = mail.get_payload(decode=True)
    assert isinstance(text, bytes) and "KDA 000A" in text.decode()
    # the CLI's test message goes the same way
    out = io.StringIO()
    assert cli.run(["test-channel", "email", "--to", "a@b.example"], settings, None, out) == 0
    assert "delivered" in out.getvalue() and len(sink.messages) == 2


def test_email_refuses_an_untrusted_certificate(
    db_url: str, smtp_server: tuple[MailSink, int, Path]
) -> None:
    sink, port, cert = smtp_server  # no SMTP_CA_FILE: the self-signed cert is not trusted
    settings = settings_for(
        db_url, smtp_host="127.0.0.1", smtp_port=port, smtp_from="alerts@fleet.example"
    )
    out = io.StringIO()
    assert cli.run(["test-channel", "email", "--to", "a@b.example"], settings, None, out) == 1
    assert "CERTIFICATE_VERIFY_FAILED" in out.getvalue() and not sink.messages
    wrong = settings_for(
        db_url,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_from="alerts@fleet.example",
        smtp_ca_file=str(cert),
        smtp_user="alerts",
        smtp_password=SecretStr("not-the-password"),
    )
    out = io.StringIO()  # trusted, but a wrong password: refused, and the password not shown
    assert cli.run(["test-channel", "email", "--to", "a@b.example"], wrong, None, out) == 1
    assert "SMTP 535" in out.getvalue() and "not-the-password" not in out.getvalue()
    assert not sink.messages


# ── other kinds ─────────────────────────────────────────────────────────────────────────


def open_alerts(pool: ConnectionPool) -> list[tuple[str, str, int]]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT r.name, a.subject, a.count FROM tracksolid.alerts a"
            " JOIN tracksolid.alert_rules r USING (rule_id) WHERE a.state = 'open'"
            " ORDER BY 1, 2"
        ).fetchall()
    return [(str(a), str(b), int(c)) for a, b, c in rows]


@pytest.mark.both_engines
def test_state_kinds_open_dedup_and_resolve(
    db_url: str, pool: ConnectionPool, fleet: None, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    settings = settings_for(db_url, webhook_spool_dir=str(spool))
    with pool.connection() as conn:
        now = db_now(conn)
        add_live_position(conn, IMEIS[0], -1.29, 36.82, gps_time=now - timedelta(hours=3))
        add_live_position(conn, IMEIS[1], -1.29, 36.82, gps_time=now - timedelta(minutes=5))
        add_ingestion_log(conn, "job", "db_backup", ok=False, logged_at=now, error="S3 denied")
        conn.execute(
            'UPDATE tracksolid.ingestion_log SET detail = \'{"action": "dump"}\''
            " WHERE method = 'db_backup'"
        )
        add_ingestion_log(conn, "import", "import_fuel", ok=False, logged_at=now, error="bad")
    add_rule(pool, name="silent", kind="device_silent", params={"minutes": 60})
    add_rule(
        pool,
        name="live feed",
        kind="feed_stale",
        params={"source": "job", "method": "live_positions", "minutes": 10},
    )
    add_rule(pool, name="backup", kind="backup_failed")
    add_rule(pool, name="fuel", kind="importer_stale", params={"feed": "fuel", "minutes": 1440})
    add_rule(pool, name="spool", kind="spool_depth", params={"max_files": 2})
    for i in range(3):
        (spool / f"{i:012d}.json").write_text("{}")
    run_once(pool, settings, now)
    assert open_alerts(pool) == [
        ("backup", "backup", 1), ("fuel", "importer:fuel", 1),
        ("silent", IMEIS[0], 1), ("spool", str(spool), 1),
    ]  # fmt: skip  # the feed has 10 minutes from the rule's creation
    run_once(pool, settings, now + timedelta(minutes=11))
    assert ("live feed", "job:live_positions", 1) in open_alerts(pool)
    assert len(open_alerts(pool)) == 5  # still one alert each: refreshed, not duplicated
    # conditions clear: a fix, a good dump, a good import, an empty spool, the feed runs
    with pool.connection() as conn:
        conn.execute("UPDATE tracksolid.live_positions SET gps_time = %s", (now,))
        conn.execute(
            "INSERT INTO tracksolid.ingestion_log (logged_at, source, method, ok, detail) VALUES"
            " (%s, 'job', 'db_backup', true, '{\"action\": \"dump\"}'),"
            " (%s, 'import', 'import_fuel', true, NULL),"
            " (%s, 'job', 'live_positions', true, NULL)",
            (now + timedelta(minutes=11),) * 3,
        )
        conn.execute("UPDATE fuel.ingest_state SET last_run_at = %s", (now,))
        conn.execute(
            "INSERT INTO fuel.ingest_state (feed, last_run_at) VALUES ('fuel', %s)"
            " ON CONFLICT DO NOTHING",
            (now,),
        )
    for path in spool.iterdir():
        path.unlink()
    result = run_once(pool, settings, now + timedelta(minutes=12))
    assert open_alerts(pool) == [] and result.alerts_resolved == 5


@pytest.mark.both_engines
def test_overspeed_alerts_once_per_episode(db_url: str, pool: ConnectionPool, fleet: None) -> None:
    settings = settings_for(db_url)
    add_rule(
        pool, name="speeding", kind="overspeed", params={"speed_kmh": 80, "min_duration_s": 120}
    )
    with pool.connection() as conn:
        start = db_now(conn) - timedelta(minutes=30)
        # IMEI 0: 5 min at 100 km/h (one episode); IMEI 1: 100 km/h for 1 min only
        add_track(conn, IMEIS[0], start, [(-1.29, 36.82)] * 6, speed_kmh=100)
        add_track(conn, IMEIS[1], start, [(-1.29, 36.82)] * 2, speed_kmh=100)
        add_track(conn, IMEIS[1], start + timedelta(minutes=2), [(-1.29, 36.82)] * 3, speed_kmh=30)
    run_once(pool, settings, later(pool, 20))
    assert open_alerts(pool) == [("speeding", IMEIS[0], 1)]
    with pool.connection() as conn:  # the episode goes on: still the same single event
        add_track(conn, IMEIS[0], start + timedelta(minutes=6), [(-1.29, 36.82)] * 3, speed_kmh=110)
    run_once(pool, settings, later(pool, 40))
    assert open_alerts(pool) == [("speeding", IMEIS[0], 1)]


def test_daily_digest_is_one_message_a_day(
    db_url: str, pool: ConnectionPool, fleet: None, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    rec.fail_first = 0
    settings = settings_for(db_url, alert_webhook_url=url, alert_digest_hour_utc=5)
    add_rule(pool, name="engine on", kind="alarm", params={"types": ["197"]}, digest=True)
    with pool.connection() as conn:
        add_alarms(conn, 40, alarm_type="197")
        base = db_now(conn)
    day = (base + timedelta(days=1)).replace(hour=4, minute=0, second=0, microsecond=0)
    run_once(pool, settings, day)  # before the digest hour: nothing
    assert not rec.accepted
    run_once(pool, settings, day + timedelta(hours=2))
    run_once(pool, settings, day + timedelta(hours=3))
    assert len(rec.accepted) == 1
    body = json.loads(rec.accepted[0]["body"])
    assert body["digest"] and body["event_count"] == 40 and body["alert_count"] == 5


# ── rules: validation and CLI ───────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"name": "x", "kind": "nope"}, "unknown rule kind"),
        ({"name": "x", "kind": "alarm"}, "types"),
        ({"name": "x", "kind": "alarm", "params": {"min_severity": "huge"}}, "min_severity"),
        ({"name": "x", "kind": "overspeed", "params": {"speed_kmh": 80}}, "min_duration_s"),
        (
            {"name": "x", "kind": "overspeed", "params": {"speed_kmh": True, "min_duration_s": 1}},
            "wrong type",
        ),
        ({"name": "x", "kind": "device_silent", "params": {"minutes": 0}}, "between"),
        ({"name": "x", "kind": "device_silent", "params": {"minutes": 5, "x": 1}}, "unknown"),
        ({"name": "x", "kind": "importer_stale", "params": {"feed": "s3", "minutes": 5}}, "feed"),
        (
            {"name": "x", "kind": "alarm", "params": {"types": ["1"]}, "channels": ["sms"]},
            "channels",
        ),
        (
            {"name": "x", "kind": "alarm", "params": {"types": ["1"]}, "recipients": ["no"]},
            "recipients",
        ),
        (
            {"name": "x", "kind": "alarm", "params": {"types": ["1"]}, "cooldown_s": -1},
            "cooldown_s",
        ),
        ({"name": "\x00", "kind": "alarm", "params": {"types": ["1"]}}, "control"),
        ([], "JSON object"),
    ],
)
def test_rule_validation(data: Any, fragment: str) -> None:
    with pytest.raises(rules.RuleError, match=fragment):
        rules.validate_rule(data)


def test_cli_rules(settings: Settings, pool: ConnectionPool) -> None:
    out = io.StringIO()
    args = [
        "rules",
        "add",
        "--name",
        "silent 2h",
        "--kind",
        "device_silent",
        "--params",
        '{"minutes": 120}',
        "--channels",
        "webhook,email",
        "--recipients",
        "ops@fleet.example",
    ]
    assert cli.run(args, settings, pool, out) == 0, out.getvalue()
    assert cli.run(args, settings, pool, out) == 2 and "exists already" in out.getvalue()
    bad = ["rules", "add", "--name", "b", "--kind", "overspeed", "--params", "{"]
    assert cli.run(bad, settings, pool, out) == 2
    assert cli.run(["rules", "disable", "silent 2h"], settings, pool, out) == 0
    assert cli.run(["rules", "disable", "nope"], settings, pool, out) == 3
    out = io.StringIO()
    assert cli.run(["rules", "list", "--json"], settings, pool, out) == 0
    [rule] = json.loads(out.getvalue())
    assert rule["enabled"] is False and rule["channels"] == ["email", "webhook"]
    out = io.StringIO()
    assert cli.run(["run-once"], settings, pool, out) == 0
    assert json.loads(out.getvalue())["rules"] == 0  # disabled rules are not evaluated


# ── read-API ────────────────────────────────────────────────────────────────────────────

ADMIN = "alerts-admin-key-0123456789"


def make_client(settings: Settings, ro_pool: ConnectionPool) -> TestClient:
    client: TestClient = router_client(alerts_api.router, settings, ro_pool)
    return client


def test_api_rules_history_and_ack(
    db_url: str, pool: ConnectionPool, ro_pool: ConnectionPool, fleet: None
) -> None:
    settings = settings_for(db_url, alerts_admin_keys=SecretStr(ADMIN))
    client = make_client(settings, ro_pool)
    rule = {"name": "SOS", "kind": "alarm", "params": {"types": ["1"]}, "channels": ["webhook"]}
    assert client.post("/alerts/rules", json=rule).status_code == 401
    bad_key = client.post("/alerts/rules", json=rule, headers={"X-API-Key": "nope"})
    assert bad_key.status_code == 401 and "detail" in bad_key.json()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    created = client.post("/alerts/rules", json=rule, headers=auth)
    assert created.status_code == 201, created.text
    assert created.json()["rule"]["name"] == "SOS"
    assert client.post("/alerts/rules", json=rule, headers=auth).status_code == 409
    bad = client.post("/alerts/rules", json={**rule, "name": "x", "params": {}}, headers=auth)
    assert bad.status_code == 422 and "types" in bad.json()["detail"]
    [listed] = client.get("/alerts/rules").json()["rules"]
    assert listed["params"] == {"types": ["1"]} and listed["enabled"] is True
    with pool.connection() as conn:
        add_alarms(conn, 10)
    run_once(pool, settings, later(pool, 20))  # no webhook configured: given up, in history
    page = client.get("/alerts", params={"state": "open", "limit": "2"}).json()
    assert page["total"] == 5 and len(page["alerts"]) == 2
    first = page["alerts"][0]
    assert first["rule"]["name"] == "SOS" and first["count"] == 2
    assert first["messages"][0]["channel"] == "webhook"
    assert first["messages"][0]["given_up_at"] is not None
    [attempt] = first["messages"][0]["deliveries"]
    assert attempt["ok"] is False and "ALERT_WEBHOOK_URL" in attempt["error"]
    alert_id = first["id"]
    ack = client.post(f"/alerts/{alert_id}/ack", json={"by": "duty officer"}, headers=auth)
    assert ack.status_code == 200 and ack.json()["alert"]["acked_by"] == "duty officer"
    again = client.post(f"/alerts/{alert_id}/ack", headers=auth)
    assert again.status_code == 409 and "acked" in again.json()["detail"]
    assert client.post("/alerts/999999/ack", headers=auth).status_code == 404
    assert client.get("/alerts", params={"state": "acked"}).json()["total"] == 1


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("get", "/alerts", {"params": {"state": "closed"}}, 422),
        ("get", "/alerts", {"params": {"limit": "0"}}, 422),
        ("get", "/alerts", {"params": {"rule_id": "x"}}, 422),
        ("get", "/alerts", {"params": {"from": "2026-13-01"}}, 422),
        (
            "post",
            "/alerts/rules",
            {"content": b"{", "headers": {"Content-Type": "application/json"}},
            422,
        ),
        ("post", "/alerts/rules", {"content": b"[" * 200 + b"]" * 200}, 422),
        ("post", "/alerts/rules", {"content": b"x" * 70_000}, 413),
        (
            "post",
            "/alerts/rules",
            {"content": b"a=1", "headers": {"Content-Type": "text/plain"}},
            415,
        ),
        (
            "post",
            "/alerts/rules",
            {
                "content": b'{"name": "n", "kind": "overspeed",'
                b' "params": {"speed_kmh": 1e999, "min_duration_s": 1}}'
            },
            422,
        ),
        ("post", "/alerts/rules", {"content": b'{"name": NaN}'}, 422),
        ("post", "/alerts/x/ack", {}, 422),
        ("post", "/alerts/1/ack", {"json": {"who": "me"}}, 422),
    ],
)
def test_api_refuses_bad_input(
    db_url: str, ro_pool: ConnectionPool, method: str, path: str, kwargs: Any, status: int
) -> None:
    client = make_client(settings_for(db_url, alerts_admin_keys=SecretStr(ADMIN)), ro_pool)
    headers = {"X-API-Key": ADMIN, **kwargs.pop("headers", {})}
    reply = getattr(client, method)(path, headers=headers, **kwargs)
    assert reply.status_code == status, reply.text
    assert isinstance(reply.json()["detail"], str)


def test_api_writes_refused_without_admin_keys(db_url: str, ro_pool: ConnectionPool) -> None:
    client = make_client(settings_for(db_url), ro_pool)
    reply = client.post("/alerts/rules", json={}, headers={"X-API-Key": "anything"})
    assert reply.status_code == 403 and "ALERTS_ADMIN_KEYS" in reply.json()["detail"]
    assert client.post("/alerts/1/ack").status_code == 403
    assert client.get("/alerts").json()["alerts"] == []


# ── geofence kinds and the worker job ───────────────────────────────────────────────────


def insert_events(conn: psycopg.Connection[Any], visit: Any, away: Any) -> None:
    conn.execute(
        "INSERT INTO tracksolid.geofence_events (imei, geofence_id, entered_at, exited_at,"
        " last_inside_at, dwell_s, fixes) SELECT %s, geofence_id, %s, %s, %s, 60, 3"
        " FROM tracksolid.geofences",
        visit,
    )
    conn.execute(
        "INSERT INTO tracksolid.out_of_region_events (imei, left_at, last_seen_at, away_s,"
        " fixes) VALUES (%s, %s, %s, 60, 3), (%s, %s, %s, 60, 3)",
        away,
    )


@pytest.mark.both_engines
def test_geofence_and_out_of_region_alert_once_even_when_recomputed(
    db_url: str, pool: ConnectionPool, fleet: None
) -> None:
    settings = settings_for(db_url)
    add_rule(pool, name="depot exits", kind="geofence", params={"direction": "exit"})
    add_rule(pool, name="away", kind="out_of_region", cost_centre="North")
    with pool.connection() as conn:
        now = db_now(conn)
        conn.execute(
            "INSERT INTO tracksolid.geofences (name, kind, geom) VALUES ('Depot', 'depot',"
            " ST_Multi(ST_MakeEnvelope(36.80, -1.31, 36.81, -1.30, 4326)))"
        )
        # rules see events from their creation on: these rules are an hour old
        conn.execute("UPDATE tracksolid.alert_rules SET created_at = %s", (now - HOUR,))
        t = now - timedelta(minutes=5)
        visit = (IMEIS[0], t, t + timedelta(seconds=5), t)
        away = (IMEIS[0], t, t, IMEIS[4], t, t)
        insert_events(conn, visit, away)
    run_once(pool, settings, later(pool, 20))
    assert [(n, s.split(":")[0]) for n, s, _ in open_alerts(pool)] == [
        ("away", IMEIS[0]),  # IMEI 4 is South: out of the rule's scope
        ("depot exits", IMEIS[0]),
    ]
    with pool.connection() as conn:  # the job recomputes: rows deleted and written again
        conn.execute("UPDATE tracksolid.alerts SET state = 'acked'")
        conn.execute("DELETE FROM tracksolid.geofence_events")
        conn.execute("DELETE FROM tracksolid.out_of_region_events")
        insert_events(conn, visit, away)
    run_once(pool, settings, later(pool, 40))
    assert open_alerts(pool) == []  # the same events: no new alert after the ack


def test_worker_job_records_its_run(db_url: str, pool: ConnectionPool, fleet: None) -> None:
    settings = settings_for(db_url)
    ingestor = Ingestor(settings, pool, JimiClient(settings, pool))
    func, interval = job_table(ingestor)["alerts"]
    assert interval == settings.alerts_interval_s == 60
    add_rule(pool, name="SOS", kind="alarm", params={"types": ["1"]})
    with pool.connection() as conn:
        add_alarms(conn, 1000)
    stats = func()
    assert stats.updated["alerts"] == 5 and stats.inserted["alert_outbox"] == 1
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT ok, detail FROM tracksolid.ingestion_log WHERE method = 'alerts'"
        ).fetchone()
    assert row is not None and row[1]["updated"]["given_up"] == 1  # no webhook configured


def test_mounted_in_the_read_api_behind_its_key(db_url: str) -> None:
    settings = settings_for(db_url, vtrips_refresh_interval_s=0, dashboard_api_keys="k-one")
    with TestClient(create_app(settings)) as client:
        assert client.get("/alerts").status_code == 401
        assert client.get("/alerts", params={"key": "k-one"}).status_code == 401
        reply = client.get("/alerts/rules", headers={"X-API-Key": "k-one"})
        assert reply.status_code == 200 and reply.json() == {"rules": []}
        assert "/alerts/{alert_id}/ack" in client.get("/openapi.json").json()["paths"]


def test_cli_test_channel_webhook(db_url: str, receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    rec.fail_first = 0
    out = io.StringIO()
    settings = settings_for(db_url, alert_webhook_url=url)
    assert cli.run(["test-channel", "webhook"], settings, None, out) == 0, out.getvalue()
    [item] = rec.accepted
    h = item["headers"]
    assert verify(SECRET, h["x-alert-timestamp"], item["body"], h["x-alert-signature"])
    assert json.loads(item["body"])["test"] is True
    rec.fail_first = 99
    out = io.StringIO()
    assert cli.run(["test-channel", "webhook"], settings, None, out) == 1
    assert "HTTP 500" in out.getvalue() and SECRET not in out.getvalue()


def test_receiver_down_is_retried_and_the_url_is_not_stored(
    db_url: str, pool: ConnectionPool, fleet: None
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook?token=sekrit-in-url"
    settings = settings_for(db_url, alert_webhook_url=url)
    add_rule(pool, name="SOS", kind="alarm", params={"types": ["1"]})
    with pool.connection() as conn:
        add_alarms(conn, 1)
    result = run_once(pool, settings, later(pool, 20))
    assert result.delivery.failed == 1
    [row] = outbox(pool)
    assert row["attempts"] == 1 and row["delivered_at"] is None and row["given_up_at"] is None
    assert "ConnectError" in row["last_error"] and "sekrit" not in row["last_error"]
