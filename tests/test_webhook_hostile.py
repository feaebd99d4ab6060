"""Hostile pushes: generated deliveries (Hypothesis), the token kept out of logs, start-up refusal.

Property (both push families; IoT-hub form, Open-API form, Open-API JSON body): whatever a
delivery holds — text with NUL and unpaired surrogates, `NaN`/`1e999`/400-digit numbers,
deep nesting, wrong types, invalid UTF-8 bytes, extreme dates — and with or without a valid
token, the receiver answers below 500 with `{"code": n, "msg": "<one sentence>"}`, logs no
error or traceback, and a structurally sound, authenticated delivery is stored: its valid
items land in their table whatever their siblings hold. The expected reply is predicted
independently: 400 for broken structure (checked before the token), else 401 for a bad
token, else 200.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests import push_factories as f
from tests.conftest import ROOT, test_settings
from tests.pgcluster import free_port
from ts_shared import RedactSecretsFilter
from webhook_receiver import create_app

# psycopg_pool's background threads draw jitter from `random` while Hypothesis generates an
# example; Hypothesis then suspects the strategies. They do not use `random`.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")

TOKEN = "hostile-test-token-0123456789"
MAX_DEPTH = 32
EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def receiver(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings_ = test_settings(
        db_url,
        jimi_push_token=TOKEN,
        webhook_spool_dir=str(tmp_path / "spool"),
        db_pool_max_size=2,
        log_level="INFO",
    )
    with TestClient(create_app(settings_)) as client:
        yield client
    # Nothing was so broken it had to be parked for a human.
    assert not list((tmp_path / "spool").glob("**/*.json"))


# ─────────────────────────────────────────────────────────────────────────────
# Building hostile JSON text (raw literals Python's json would not write)
# ─────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Raw:
    """A JSON literal written as is: `NaN`, `1e999`, a 400-digit integer, `[[[...]]]`."""

    text: str


def to_json(value: Any, ascii_only: bool) -> str:
    """JSON text of `value` with `Raw` leaves verbatim; `ascii_only=False` writes characters
    (unpaired surrogates too) as themselves instead of `\\u` escapes."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        members = (
            f"{to_json(str(k), ascii_only)}:{to_json(v, ascii_only)}" for k, v in value.items()
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def max_depth(text: str) -> int:
    """Reference nesting depth of a JSON text (a plain character loop, test-only)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


# ─────────────────────────────────────────────────────────────────────────────
# Strategies
# ─────────────────────────────────────────────────────────────────────────────

NASTY_CHARS = ["\x00", "\ud800", "\udfff", "a", "中", '"', "\\", "[", "{", "%", "&", "=", "\n"]
EXTREME_DATES = [
    "0000-00-00 00:00:00",
    "0000-01-01 00:00:00",
    "0001-01-01 00:00:00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31 23:59:59",
    "9999-12-31T23:59:59-14:00",
    "2026-02-30 25:61:61",
    "99999-01-01",
    "1e20",
    "253402300800",
    "-62135596800",
    "99999999999999",
    "1772438400000000",
]
ODD_NUMBERS = [
    "1e999",
    "-1e999",
    "1e-999",
    "NaN",
    "Infinity",
    "-Infinity",
    "0e-5000",
    "1" + "0" * 400,
    "-" + "9" * 400,
    "1.5e308",
    "4.9e-324",
    "-0",
    "1" * 5000,
]

texts = st.one_of(
    st.text(st.sampled_from(NASTY_CHARS), max_size=12),
    st.text(st.characters(exclude_categories=()), max_size=12),
    st.sampled_from(["", " ", "null", "NULL", "\x00", "\ud800x", "0,0", "-1", "💥"]),
)
dates = st.one_of(
    st.sampled_from(EXTREME_DATES),
    st.sampled_from(EXTREME_DATES).map(Raw).filter(lambda r: r.text.lstrip("-").isdigit()),
)
numbers = st.one_of(
    st.sampled_from(ODD_NUMBERS).map(Raw),
    st.integers(min_value=-(10**400), max_value=10**400).map(lambda n: Raw(str(n))),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda x: Raw(json.dumps(x))),
)
nesting = st.integers(min_value=1, max_value=45).flatmap(
    lambda n: st.sampled_from([Raw("[" * n + "]" * n), Raw('{"a":' * n + "1" + "}" * n)])
)
wrong_types = st.one_of(
    st.booleans(),
    st.none(),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
)
hostile_value = st.one_of(texts, dates, numbers, nesting, wrong_types)


@st.composite
def hostile_item(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """`base` with a few fields replaced by hostile values (also inside an alarm's `msg`),
    or something that is not an item at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(hostile_value, st.lists(hostile_value, max_size=2)))
    item = json.loads(json.dumps(base))
    target = item["msg"] if isinstance(item.get("msg"), dict) and draw(st.booleans()) else item
    keys = draw(st.lists(st.sampled_from([*target, "extra"]), min_size=1, max_size=4))
    for key in keys:
        target[key] = draw(hostile_value)
    return item


IMEI_COUNTER = itertools.count(1)


def new_imei() -> str:
    return f"86{os.getpid() % 1000:03d}{next(IMEI_COUNTER):010d}"


# path → (valid item for an IMEI, its table)
PATHS: dict[str, tuple[Callable[[str], dict[str, Any]], str]] = {
    "/pushgps": (f.gps, "position_history"),
    "/pushhb": (f.heartbeat, "heartbeats"),
    "/pushalarm": (f.alarm, "alarms"),
    "/pushevent": (f.event, "device_events"),
    "/pushlbs": (f.lbs, "lbs_readings"),
    "/pushobd": (f.obd, "obd_readings"),
    "/pushfaultinfo": (f.fault, "fault_codes"),
    "/pushtripreport": (f.trip, "trips"),
    "/pushoil": (f.oil, "fuel_readings"),
    "/pushtem": (f.temperature, "temperature_readings"),
    "/pushIothubEvent": (f.iothub_event, "device_events"),
}


@dataclass
class Push:
    """One generated delivery and what the receiver must answer."""

    path: str
    body: bytes
    headers: dict[str, str]
    query: str
    sibling_imei: str
    table: str
    expected: int


TOKEN_WAYS = ["field", "query", "wrong", "missing"]
DAMAGE = ["none", "none", "none", "raw-invalid-utf8", "raw-nul", "escaped-invalid-utf8"]


def _form_body(fields: dict[str, str]) -> bytes:
    return "&".join(
        f"{quote_plus(k)}={quote_plus(v.encode('utf-8', 'surrogatepass'))}"
        for k, v in fields.items()
    ).encode()


@st.composite
def pushes(draw: st.DrawFn, family: str) -> Push:
    """A delivery of `family` ("iothub", "openapi-form", "openapi-json"): one valid item and
    one hostile sibling, a token given well or badly, maybe bytes damaged on the wire."""
    if family == "iothub":
        path = draw(st.sampled_from(sorted(PATHS)))
        make, table = PATHS[path]
    else:
        path, make, table = "/push", f.openapi_alarm, "alarms"
    imei = new_imei()
    sibling = make(imei)
    hostile = draw(hostile_item(make(new_imei())))
    items = [sibling, hostile] if draw(st.booleans()) else [hostile, sibling]
    ascii_only = draw(st.booleans())
    data = to_json(items, ascii_only)
    token_way = draw(st.sampled_from(TOKEN_WAYS))
    extra = draw(st.one_of(st.none(), texts))
    damage = draw(st.sampled_from(DAMAGE))

    broken = False
    query = f"?token={TOKEN}" if token_way == "query" else ""
    token_value = TOKEN if token_way == "field" else "not-the-token"
    if family == "openapi-json":
        members = {"msgType": "jimi.push.device.alarm", "data": Raw(data)}
        if token_way in ("field", "wrong"):
            members["token"] = token_value
        if extra is not None:
            members["note"] = extra
        text = to_json(members, ascii_only)
        body = text.encode("utf-8", "surrogatepass")
        headers = {"content-type": "application/json"}
        odd_note = extra is not None and ("\x00" in extra or has_surrogate(extra))
        broken = max_depth(text) > MAX_DEPTH or has_surrogate(text) or odd_note
    else:
        fields = (
            {"data_list": data}
            if family == "iothub"
            else {"msgType": "jimi.push.device.alarm", "data": data}
        )
        if token_way in ("field", "wrong"):
            fields["token"] = token_value
        if extra is not None:
            fields["note"] = extra
        if damage == "escaped-invalid-utf8":
            key = "data_list" if family == "iothub" else "data"
            fields[key] = fields[key][:-1] + "\udcff" + fields[key][-1:]  # → %ED%B3%BF
        body = _form_body(fields)
        headers = {"content-type": "application/x-www-form-urlencoded"}
        broken = max_depth(data) > MAX_DEPTH or any(
            has_surrogate(v) or "\x00" in v for v in fields.values()
        )
    if damage == "raw-invalid-utf8":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + body[at:]
        broken = True
    elif damage == "raw-nul":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + b"\x00" + body[at:]
        broken = True
    if broken:
        expected = 400
    elif token_way in ("wrong", "missing"):
        expected = 401
    else:
        expected = 200
    return Push(path, body, headers, query, imei, table, expected)


# ─────────────────────────────────────────────────────────────────────────────
# The property
# ─────────────────────────────────────────────────────────────────────────────


def check(client: TestClient, db_url: str, push: Push, caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    event(f"expected {push.expected}")  # --hypothesis-show-statistics: the mix of outcomes
    resp = client.post(push.path + push.query, content=push.body, headers=push.headers)
    assert resp.status_code < 500
    reply = resp.json()
    assert set(reply) == {"code", "msg"}
    msg = reply["msg"]
    assert isinstance(msg, str) and msg.strip(), reply
    assert "\n" not in msg and ". " not in msg and len(msg) <= 300, msg  # one sentence
    if resp.status_code == 200:
        assert reply == {"code": 0, "msg": "success"}
    else:
        assert reply["code"] == resp.status_code
    assert resp.status_code == push.expected, (reply, push)
    with psycopg.connect(db_url) as conn:
        stored = conn.execute(
            f"SELECT count(*) FROM tracksolid.{push.table} WHERE imei = %s",
            (push.sibling_imei,),
        ).fetchone()
        inbox = conn.execute(
            "SELECT status, item_count, items_ok + items_failed FROM tracksolid.push_inbox"
            " WHERE strpos(payload::text, %s) > 0",
            (push.sibling_imei,),
        ).fetchall()
    if push.expected == 200:
        assert stored is not None and stored[0] >= 1, "the valid sibling item was stored"
        assert len(inbox) == 1 and inbox[0][0] in ("parsed", "partial"), inbox
        assert inbox[0][1] == inbox[0][2] == 2, inbox
    else:
        assert stored == (0,)
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not problems, [r.getMessage() for r in problems]


@EXAMPLES
@given(push=pushes("iothub"))
def test_hostile_iothub_pushes(
    receiver: TestClient, db_url: str, caplog: pytest.LogCaptureFixture, push: Push
) -> None:
    check(receiver, db_url, push, caplog)


@EXAMPLES
@given(push=st.one_of(pushes("openapi-form"), pushes("openapi-json")))
def test_hostile_open_api_pushes(
    receiver: TestClient, db_url: str, caplog: pytest.LogCaptureFixture, push: Push
) -> None:
    check(receiver, db_url, push, caplog)


@settings(max_examples=300, deadline=None, database=None)
@given(text=st.text(st.sampled_from(["[", "]", "{", "}", '"', "\\", "a", ",", ":"]), max_size=80))
def test_depth_scan_agrees_with_a_reference(text: str) -> None:
    """`json_too_deep` (no recursion, no per-character loop) says "too deep" whenever the
    text really nests deeper than the limit before a parser could stop it."""
    from webhook.parse import json_too_deep  # noqa: PLC0415

    for limit in (2, 3, 5):
        wrapped = "[" * limit + text
        # Without backslashes a parser reads strings as the scan does, and cannot go deeper
        # than the nesting before the first unmatched closer.
        if "\\" not in wrapped and _valid_prefix_depth(wrapped) > limit:
            assert json_too_deep(wrapped, limit)
        try:
            value = json.loads(text)
        except ValueError:
            continue
        assert json_too_deep(text, limit) == (max_depth(text) > limit), value


def _valid_prefix_depth(text: str) -> int:
    """Deepest nesting a parser reaches before the first closing bracket without an opener."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
            if depth < 0:
                break
    return deepest


# ─────────────────────────────────────────────────────────────────────────────
# The receiver as a process: redacted access log, refusal to start without a token
# ─────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        (f"/push?token={TOKEN}", "/push?token=***"),
        (f"/push?msgType=x&TOKEN={TOKEN}&b=2", "/push?msgType=x&TOKEN=***&b=2"),
        (f"/pushgps?%74oken={TOKEN}", "/pushgps?%74oken=***"),
        (f"/api?api_key={TOKEN}&access_token={TOKEN}", "/api?api_key=***&access_token=***"),
        ("/api?key=k1#frag", "/api?key=***#frag"),
        ("/api?monkey=1&tokens=2", "/api?monkey=1&tokens=2"),  # other names stay
    ],
)
def test_redact_secrets_filter_on_an_access_log_record(path: str, shown: str) -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("10.0.0.1:5000", "POST", path, "1.1", 200),
        None,
    )
    assert RedactSecretsFilter().filter(record) is True  # redacted, never dropped
    assert record.getMessage() == f'10.0.0.1:5000 - "POST {shown} HTTP/1.1" 200'
    mapping = logging.LogRecord("x", logging.INFO, __file__, 1, "%(p)s", None, None)
    mapping.args = {"p": path}
    RedactSecretsFilter().filter(mapping)
    assert mapping.getMessage() == shown


COMMANDS = {
    # docker-compose.yaml and scripts/demo.py
    "uvicorn": [sys.executable, "-m", "uvicorn", "webhook_receiver:app", "--host", "127.0.0.1"],
    # `python webhook_receiver.py` (main())
    "main": [sys.executable, "webhook_receiver.py", "--host", "127.0.0.1"],
}


def _env(db_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "WEBHOOK_SPOOL_DIR": str(tmp_path / "spool"),
        "LOG_LEVEL": "INFO",
        "JIMI_PUSH_TOKEN": "",
        "JIMI_PUSH_OPEN": "0",
        **extra,
    }


@pytest.mark.parametrize("how", sorted(COMMANDS))
def test_access_log_never_shows_the_token(db_url: str, tmp_path: Path, how: str) -> None:
    port = free_port()
    out = tmp_path / "receiver.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [*COMMANDS[how], "--port", str(port)],
            cwd=ROOT,
            env=_env(db_url, tmp_path, JIMI_PUSH_TOKEN=TOKEN),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
                time.sleep(0.1)
            form = f.openapi_form(f.openapi_alarm())
            assert httpx.post(f"{base}/push?token={TOKEN}", data=form).status_code == 200
            assert httpx.post(f"{base}/push?a=1&token={TOKEN}x", data=form).status_code == 401
            assert httpx.post(f"{base}/pushgps?%74oken={TOKEN}", data={}).status_code == 400
        finally:
            proc.terminate()
            proc.wait(15)
    log = out.read_text()
    assert "POST /push?token=*** HTTP/1.1" in log, log
    assert "POST /push?a=1&token=*** HTTP/1.1" in log, log
    assert TOKEN not in log


@pytest.mark.parametrize("how", sorted(COMMANDS))
def test_process_refuses_to_start_without_a_token(db_url: str, tmp_path: Path, how: str) -> None:
    port = str(free_port())
    done = subprocess.run(
        [*COMMANDS[how], "--port", port],
        cwd=ROOT,
        env=_env(db_url, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "set JIMI_PUSH_TOKEN (the push token registered with JIMI) or JIMI_PUSH_OPEN=1" in (
        done.stderr
    )
    if how == "main":  # the CLI says it in exactly one line
        assert done.stderr.strip().count("\n") == 0, done.stderr
