"""The signed Jimi client: signing, token cache shared through the DB, retries, audit log.

The API side is an `httpx.MockTransport` that verifies every request's signature itself
(computed here by hand, independently of ts_shared) and answers from a script.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tests.conftest import test_settings
from ts_shared import (
    JimiAuthError,
    JimiClient,
    JimiFatalError,
    JimiRetryError,
    Settings,
    batched,
    sign_params,
)

APP_KEY = "8FB345B8693CCD00"
SECRET = "a4ad4b8f3c3a4a3fb2e1"


# ── signing vectors, built by hand ─────────────────────────────────────────────


def _by_hand(pairs: str) -> str:
    return hashlib.md5((SECRET + pairs + SECRET).encode()).hexdigest().upper()


def test_sign_matches_hand_built_string() -> None:
    params = {
        "method": "jimi.user.device.location.list",
        "timestamp": "2026-11-25 10:00:00",
        "app_key": APP_KEY,
        "sign_method": "md5",
        "v": "1.0",
        "format": "json",
        "access_token": "tok123",
        "target": "fireside",
    }
    expected = _by_hand(
        "access_tokentok123"
        f"app_key{APP_KEY}"
        "formatjson"
        "methodjimi.user.device.location.list"
        "sign_methodmd5"
        "targetfireside"
        "timestamp2026-11-25 10:00:00"
        "v1.0"
    )
    assert sign_params(params, SECRET) == expected
    assert len(expected) == 32 and expected.isupper()


def test_sign_skips_empty_values_and_sign_itself_and_handles_utf8() -> None:
    params = {"b": "2", "a": "1", "empty": "", "none": None, "sign": "XXX", "name": "Ngong Rd é"}
    expected = _by_hand("a1b2nameNgong Rd é")
    assert sign_params(params, SECRET) == expected


def test_batched_by_fifty() -> None:
    imeis = [f"{i:015d}" for i in range(120)]
    batches = list(batched(imeis))
    assert [len(b) for b in batches] == [50, 50, 20]
    assert [i for b in batches for i in b] == imeis


# ── a scripted fake API ────────────────────────────────────────────────────────


class FakeApi:
    """Checks signature + timestamp of each request, then answers from `script[method]`."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.script: dict[str, list[Callable[[dict[str, str]], httpx.Response]]] = {}
        self.tokens_issued = 0
        self.valid_tokens: set[str] = set()

    def handler(self, request: httpx.Request) -> httpx.Response:
        form = dict(urllib.parse.parse_qsl(request.content.decode()))
        self.calls.append(form)
        pairs = "".join(f"{k}{v}" for k, v in sorted(form.items()) if k != "sign" and v != "")
        assert form["sign"] == _by_hand(pairs), "client signature must verify"
        stamp = datetime.strptime(form["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        assert abs((stamp - datetime.now(UTC)).total_seconds()) < 120, "UTC timestamp"
        method = form["method"]
        if method in ("jimi.oauth.token.get", "jimi.oauth.token.refresh"):
            queue = self.script.get(method)
            if queue:
                return queue.pop(0)(form)
            return self.issue_token(form)
        if form.get("access_token") not in self.valid_tokens:
            return httpx.Response(200, json={"code": 1004, "message": "token invalid"})
        queue = self.script.get(method)
        if queue:
            return queue.pop(0)(form)
        return ok([{"imei": "1"}])(form)

    def issue_token(self, form: dict[str, str], expires_in: int = 7200) -> httpx.Response:
        self.tokens_issued += 1
        token = f"tok{self.tokens_issued}"
        self.valid_tokens.add(token)
        return httpx.Response(
            200,
            json={
                "code": 0,
                "message": "success",
                "result": {
                    "appKey": APP_KEY,
                    "account": "fireside",
                    "accessToken": token,
                    "expiresIn": str(expires_in),
                    "refreshToken": f"ref{self.tokens_issued}",
                    "time": "2026-11-25 10:00:00",
                },
            },
        )


def ok(result: Any, data: Any = None) -> Callable[[dict[str, str]], httpx.Response]:
    return lambda form: httpx.Response(
        200, json={"code": 0, "message": "success", "result": result, "data": data}
    )


def code(value: Any, message: str = "err") -> Callable[[dict[str, str]], httpx.Response]:
    return lambda form: httpx.Response(200, json={"code": value, "message": message})


def status(http_status: int) -> Callable[[dict[str, str]], httpx.Response]:
    return lambda form: httpx.Response(http_status, text="upstream trouble")


def timeout() -> Callable[[dict[str, str]], httpx.Response]:
    def raise_timeout(form: dict[str, str]) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    return raise_timeout


def make_client(
    settings: Settings, pool: ConnectionPool, api: FakeApi, sleeps: list[float] | None = None
) -> JimiClient:
    http = httpx.Client(transport=httpx.MockTransport(api.handler))
    return JimiClient(
        settings, pool, http=http, sleep=(sleeps.append if sleeps is not None else lambda s: None)
    )


@pytest.fixture
def api_settings(db_url: str) -> Settings:
    return test_settings(
        db_url,
        tracksolid_api_url="http://jimi.test/route/rest",
        tracksolid_app_key=APP_KEY,
        tracksolid_app_secret=SECRET,
        tracksolid_user_id="fireside",
        tracksolid_user_pwd="s3cret",
        tracksolid_targets="fireside, Fireside@HQ ,Fireside_MSA",
        jimi_max_attempts=4,
    )


def _log(pool: ConnectionPool) -> list[tuple[Any, ...]]:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT method, target, ok, result_code, rows, attempts, error"
            " FROM tracksolid.ingestion_log ORDER BY log_id"
        ).fetchall()


# ── token handling ─────────────────────────────────────────────────────────────


def test_token_fetched_once_and_shared_by_two_clients(
    api_settings: Settings, pool: ConnectionPool
) -> None:
    api = FakeApi()
    first, second = make_client(api_settings, pool, api), make_client(api_settings, pool, api)
    first.call("jimi.user.device.list", {"target": "fireside"})
    second.call("jimi.user.device.list", {"target": "fireside"})
    first.call("jimi.user.device.list", {"target": "fireside"})
    assert api.tokens_issued == 1
    token_calls = [c for c in api.calls if c["method"] == "jimi.oauth.token.get"]
    assert token_calls[0]["user_id"] == "fireside"
    assert token_calls[0]["user_pwd_md5"] == hashlib.md5(b"s3cret").hexdigest()  # lower hex
    assert "access_token" not in token_calls[0]
    with pool.connection() as conn:
        row = conn.execute("SELECT access_token FROM tracksolid.api_token_cache").fetchone()
    assert row == ("tok1",)


def test_token_refreshed_before_expiry(api_settings: Settings, pool: ConnectionPool) -> None:
    api = FakeApi()
    client = make_client(api_settings, pool, api)
    client.call("jimi.user.device.list", {"target": "fireside"})
    # Age the shared token so that it is inside the refresh margin (10 min) but still valid.
    with pool.connection() as conn:
        conn.execute("UPDATE tracksolid.api_token_cache SET expires_at = now() + interval '5 min'")
    other = make_client(api_settings, pool, api)
    other.call("jimi.user.device.list", {"target": "fireside"})
    methods = [c["method"] for c in api.calls]
    assert methods.count("jimi.oauth.token.refresh") == 1
    refresh = next(c for c in api.calls if c["method"] == "jimi.oauth.token.refresh")
    assert refresh["access_token"] == "tok1" and refresh["refresh_token"] == "ref1"
    assert api.calls[-1]["access_token"] == "tok2"
    with pool.connection() as conn:
        expires = conn.execute("SELECT expires_at FROM tracksolid.api_token_cache").fetchone()
    assert expires is not None and expires[0] > datetime.now(UTC) + timedelta(hours=1)


def test_1004_refetches_token_once_and_retries(
    api_settings: Settings, pool: ConnectionPool
) -> None:
    api = FakeApi()
    client = make_client(api_settings, pool, api)
    client.call("jimi.user.device.list", {"target": "fireside"})
    api.valid_tokens.clear()  # the server forgot every token (expiry mid-run)
    reply = client.call("jimi.user.device.list", {"target": "fireside"})
    assert reply.items() == [{"imei": "1"}]
    assert api.tokens_issued == 2


def test_repeated_1004_raises_auth_error(api_settings: Settings, pool: ConnectionPool) -> None:
    api = FakeApi()
    api.script["jimi.user.device.list"] = [code(1004), code(1004)]
    client = make_client(api_settings, pool, api)
    with pytest.raises(JimiAuthError):
        client.call("jimi.user.device.list", {"target": "fireside"})


# ── retries ────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "failure",
    [
        code("1006", "Illegal access, request frequency is too high"),
        code(-1, "system busy"),
        code(1005),
        status(502),
        status(503),
        timeout(),
    ],
    ids=["1006-string", "-1", "1005", "502", "503", "timeout"],
)
def test_retriable_failures_are_retried_with_fresh_signature(
    api_settings: Settings,
    pool: ConnectionPool,
    failure: Callable[[dict[str, str]], httpx.Response],
) -> None:
    api = FakeApi()
    api.script["jimi.device.location.get"] = [failure, failure, ok([{"imei": "9"}])]
    sleeps: list[float] = []
    client = make_client(api_settings, pool, api, sleeps)
    reply = client.call("jimi.device.location.get", {"imeis": "9"}, target="fireside")
    assert reply.items() == [{"imei": "9"}]
    assert reply.attempts == 3
    attempts = [c for c in api.calls if c["method"] == "jimi.device.location.get"]
    assert len(attempts) == 3
    # every attempt was signed anew (the fake verified each signature)
    assert len(sleeps) == 2 and sleeps[1] >= sleeps[0] * 0.5 > 0
    assert _log(pool)[-1][:6] == ("jimi.device.location.get", "fireside", True, 0, 1, 3)


def test_retries_are_bounded(api_settings: Settings, pool: ConnectionPool) -> None:
    api = FakeApi()
    api.script["jimi.device.alarm.list"] = [code(1006)] * 10
    sleeps: list[float] = []
    client = make_client(api_settings, pool, api, sleeps)
    with pytest.raises(JimiRetryError) as info:
        client.call("jimi.device.alarm.list", {"imeis": "1"})
    assert info.value.code == 1006
    assert len([c for c in api.calls if c["method"] == "jimi.device.alarm.list"]) == 4
    assert len(sleeps) == 3
    assert all(s <= api_settings.jimi_backoff_cap_s * 10 for s in sleeps)
    row = _log(pool)[-1]
    assert row[0] == "jimi.device.alarm.list" and row[2] is False and row[3] == 1006
    assert row[5] == 4 and "gave up" in row[6]


def test_backoff_grows_and_is_capped(db_url: str, pool: ConnectionPool) -> None:
    settings = test_settings(db_url, jimi_backoff_base_s=1.0, jimi_backoff_cap_s=8.0)
    client = JimiClient(settings, pool, http=httpx.Client(), sleep=lambda s: None)
    delays = [client._backoff(n) for n in range(1, 9)]
    assert 0.5 <= delays[0] <= 1.0
    assert 1.0 <= delays[1] <= 2.0
    assert all(4.0 <= d <= 8.0 for d in delays[3:]), "capped at 8 s, never below half the cap"
    assert 4.0 <= client._backoff(1, long=True) <= 8.0, "1005 (IP limit) starts 10x longer"


@pytest.mark.parametrize("fatal", [1001, 1002, 1100, "1001"])
def test_fatal_codes_are_not_retried(
    api_settings: Settings, pool: ConnectionPool, fatal: Any
) -> None:
    api = FakeApi()
    api.script["jimi.device.track.list"] = [code(fatal, "parameter error")]
    sleeps: list[float] = []
    client = make_client(api_settings, pool, api, sleeps)
    with pytest.raises(JimiFatalError) as info:
        client.call("jimi.device.track.list", {"imei": "1"})
    assert info.value.code == int(fatal)
    assert len([c for c in api.calls if c["method"] == "jimi.device.track.list"]) == 1
    assert sleeps == []


def test_http_4xx_is_fatal(api_settings: Settings, pool: ConnectionPool) -> None:
    api = FakeApi()
    api.script["jimi.device.track.list"] = [status(403)]
    client = make_client(api_settings, pool, api)
    with pytest.raises(JimiFatalError, match="HTTP 403"):
        client.call("jimi.device.track.list", {"imei": "1"})


# ── audit log and payload access ───────────────────────────────────────────────


def test_every_call_is_in_ingestion_log(api_settings: Settings, pool: ConnectionPool) -> None:
    api = FakeApi()
    api.script["jimi.user.device.location.list"] = [
        ok([{"imei": "1"}, {"imei": "2"}]),
        code(1002, "illegal user"),
        ok([{"imei": "3"}]),
    ]
    client = make_client(api_settings, pool, api)
    results = dict(client.call_each_target("jimi.user.device.location.list"))
    assert set(results) == {"fireside", "Fireside@HQ", "Fireside_MSA"}
    assert isinstance(results["Fireside@HQ"], JimiFatalError)
    rows = _log(pool)
    assert rows[0][:5] == ("jimi.oauth.token.get", None, True, 0, 1)
    assert [r[:5] for r in rows[1:]] == [
        ("jimi.user.device.location.list", "fireside", True, 0, 2),
        ("jimi.user.device.location.list", "Fireside@HQ", False, 1002, None),
        ("jimi.user.device.location.list", "Fireside_MSA", True, 0, 1),
    ]
    assert "illegal user" in rows[2][6]
    with pool.connection() as conn:
        durations = conn.execute(
            "SELECT bool_and(duration_ms >= 0) FROM tracksolid.ingestion_log"
        ).fetchone()
    assert durations == (True,)


def test_payload_in_data_is_found(api_settings: Settings, pool: ConnectionPool) -> None:
    api = FakeApi()
    rows = [{"imei": "1", "durSecond": "60"}]
    api.script["jimi.open.platform.report.parking"] = [
        ok(None, {"totalTime": "60", "dataTotalRows": "1", "rows": rows})
    ]
    client = make_client(api_settings, pool, api)
    reply = client.call("jimi.open.platform.report.parking", {"account": "fireside"})
    assert reply.result is None and reply.items() == rows


def test_secrets_never_logged(
    api_settings: Settings, pool: ConnectionPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    api = FakeApi()
    api.script["jimi.device.alarm.list"] = [code(1006), ok([])]
    make_client(api_settings, pool, api).call("jimi.device.alarm.list", {"imeis": "1"})
    text = caplog.text + repr(api_settings) + str(api_settings.model_dump())
    for secret in (SECRET, "s3cret", hashlib.md5(b"s3cret").hexdigest(), "tok1", "ref1"):
        assert secret not in text
    with pool.connection() as conn:
        row = conn.execute("SELECT json_agg(l) FROM tracksolid.ingestion_log l").fetchone()
    assert row is not None
    dumped = json.dumps(row[0])
    assert "tok1" not in dumped and SECRET not in dumped


def test_audit_failure_does_not_break_calls(api_settings: Settings, db_url: str) -> None:
    api = FakeApi()
    pool = ConnectionPool(db_url, min_size=1, max_size=2, open=True)
    try:
        client = make_client(api_settings, pool, api)
        client.call("jimi.user.device.list", {"target": "fireside"})
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE tracksolid.ingestion_log RENAME TO ingestion_log_gone")
        assert client.call("jimi.user.device.list", {"target": "fireside"}).items()
    finally:
        pool.close()
