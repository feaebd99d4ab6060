"""Table-driven tests of the clean* helpers, normalize_plate and Settings."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ts_shared import (
    DatabaseUnavailableError,
    Settings,
    clean,
    clean_bool,
    clean_int,
    clean_num,
    clean_ts,
    fmt_api_time,
    make_pool,
    normalize_plate,
)

EAT = timezone(timedelta(hours=3))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("null", None),
        ("NULL", None),
        ("None", None),
        ("undefined", None),
        (" KDA 123B ", "KDA 123B"),
        (0, "0"),
        (12.5, "12.5"),
        ("0", "0"),
    ],
)
def test_clean(raw: Any, expected: str | None) -> None:
    assert clean(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("45", 45.0),
        ("-1.2921", -1.2921),
        (" 36.82 ", 36.82),
        (7, 7.0),
        (0.0, 0.0),
        ("0", 0.0),
        ("", None),
        ("null", None),
        (None, None),
        ("abc", None),
        ("NaN", None),
        ("inf", None),
        (float("nan"), None),
        (True, None),
        ("1e3", 1000.0),
        ("-0", 0.0),
    ],
)
def test_clean_num(raw: Any, expected: float | None) -> None:
    assert clean_num(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12", 12),
        ("12.0", 12),
        ("12.6", 13),
        (3, 3),
        ("-1", -1),
        ("", None),
        ("x", None),
        (None, None),
        ("null", None),
    ],
)
def test_clean_int(raw: Any, expected: int | None) -> None:
    assert clean_int(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("0", False),
        (1, True),
        (0, False),
        ("true", True),
        ("FALSE", False),
        ("on", True),
        ("off", False),
        (True, True),
        ("", None),
        ("maybe", None),
        (None, None),
    ],
)
def test_clean_bool(raw: Any, expected: bool | None) -> None:
    assert clean_bool(raw) is expected


T = datetime(2026, 11, 25, 7, 30, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-25 07:30:05", T),  # Jimi yyyy-MM-dd HH:mm:ss (UTC)
        ("2026-11-25T07:30:05Z", T),  # ISO-Z (parking report)
        ("2026-11-25T07:30:05.000Z", T),
        ("2026-11-25T10:30:05+03:00", T),  # offset honoured
        ("1795591805", T),  # unix seconds as a string
        (1795591805000, T),  # unix milliseconds
        ("", None),
        ("null", None),
        (None, None),
        ("not a time", None),
        ("0000-00-00", None),
        (datetime(2026, 11, 25, 7, 30, 5), T),
    ],
)
def test_clean_ts(raw: Any, expected: datetime | None) -> None:
    assert clean_ts(raw) == expected


def test_clean_ts_reads_naive_local_time_in_given_zone() -> None:
    assert clean_ts("2026-11-25 10:30:05", tz=EAT) == T


def test_fmt_api_time_is_utc_and_rejects_naive() -> None:
    assert fmt_api_time(T.astimezone(EAT)) == "2026-11-25 07:30:05"
    with pytest.raises(ValueError, match="naive"):
        fmt_api_time(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("KCA 542Q", "KCA542Q"),
        ("kca542q", "KCA542Q"),
        (" KCA-542 Q ", "KCA542Q"),
        ("UBA 123C", "UBA123C"),
        ("", None),
        (None, None),
        ("--", None),
    ],
)
def test_normalize_plate(raw: Any, expected: str | None) -> None:
    assert normalize_plate(raw) == expected


def test_settings_defaults_and_derivations() -> None:
    s = Settings(
        _env_file=None,
        database_url="postgresql://u:pw@db/x",
        tracksolid_user_id="fireside",
        tracksolid_user_pwd="plain-pw",
    )
    assert s.tracksolid_api_url == "https://eu-open.tracksolidpro.com/route/rest"
    assert s.targets == ["fireside"], "targets default to the user id"
    assert s.tracksolid_user_pwd_md5.get_secret_value() == hashlib.md5(b"plain-pw").hexdigest()
    assert s.dashboard_dsn() == "postgresql://u:pw@db/x", "read-only URL defaults to main"
    assert s.vtrips_refresh_interval_s == 300
    assert "https://fleetnow.rahamafresh.com" in s.cors_origins  # FIX-D03
    assert s.api_keys == []


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKSOLID_TARGETS", "fireside, Fireside@HQ,,Fireside_MSA ")
    monkeypatch.setenv("TRACKSOLID_USER_PWD_MD5", "0123456789abcdef0123456789abcdef")
    monkeypatch.setenv("TRACKSOLID_USER_PWD", "ignored-when-md5-given")
    monkeypatch.setenv("DASHBOARD_API_KEYS", "k1,k2")
    monkeypatch.setenv("DASHBOARD_DATABASE_URL", "postgresql://dashboard_ro:ro@db/x")
    monkeypatch.setenv("VTRIPS_REFRESH_INTERVAL_S", "0")
    s = Settings(_env_file=None)
    assert s.targets == ["fireside", "Fireside@HQ", "Fireside_MSA"]
    assert s.tracksolid_user_pwd_md5.get_secret_value() == "0123456789abcdef0123456789abcdef"
    assert s.api_keys == ["k1", "k2"]
    assert s.dashboard_dsn() == "postgresql://dashboard_ro:ro@db/x"
    assert s.vtrips_refresh_interval_s == 0


def test_settings_repr_hides_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "DATABASE_URL": "postgresql://app:db-pass-1@db/x",
        "TRACKSOLID_APP_SECRET": "app-secret-2",
        "TRACKSOLID_USER_PWD": "user-pass-3",
        "JIMI_PUSH_TOKEN": "push-token-4",
        "DASHBOARD_API_KEYS": "api-key-5",
        "RUSTFS_SECRET_KEY": "s3-secret-6",
        "GEOCODER_KEY": "geo-key-7",
        "DASHBOARD_RO_PASSWORD": "ro-pass-8",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    s = Settings(_env_file=None)
    shown = repr(s) + str(s) + str(s.model_dump())
    for value in secrets.values():
        assert value not in shown
    assert hashlib.md5(b"user-pass-3").hexdigest() not in shown


def test_unreachable_database_gives_a_clear_error_without_the_password() -> None:
    from tests.pgcluster import free_port  # noqa: PLC0415

    port = free_port()
    url = f"postgresql://app:s3cret-pw@127.0.0.1:{port}/tracksolid_db"
    with pytest.raises(DatabaseUnavailableError) as info:
        make_pool(url, timeout=1)
    message = str(info.value)
    assert message.startswith(f"database 127.0.0.1:{port}/tracksolid_db did not accept")
    assert "s3cret-pw" not in message and "app:" not in message
