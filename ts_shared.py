"""Shared library of every process: settings, logging, DB pool, signed Jimi client, S3, cleaners.

Nothing else in the project talks to the Tracksolid/JIMI Open API, to S3 or opens database
connections by hand: entry points build a `Settings`, open a pool with `make_pool`, and pass
both down. See docs/configuration.md for every setting and docs/architecture notes in README.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

import httpx
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://eu-open.tracksolidpro.com/route/rest"
IMEI_BATCH = 50  # the seeds' proven batch size (the API documents 100 for some methods)


# ─────────────────────────────────────────────────────────────────────────────
# Settings
# ─────────────────────────────────────────────────────────────────────────────


class Settings(BaseSettings):
    """Every configurable value of the stack, read from the environment (and `.env`).

    Build one in each entry point (`Settings()`) and pass it down; never at import time.
    Secrets are `SecretStr`: their repr is `'**********'`, so logging a Settings is safe.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # Database
    database_url: SecretStr = SecretStr("postgresql://postgres@localhost:5432/tracksolid_db")
    dashboard_database_url: SecretStr | None = None
    db_pool_min_size: int = 1
    db_pool_max_size: int = 10
    tracksolid_owner_password: SecretStr | None = None
    dashboard_ro_password: SecretStr | None = None
    use_timescaledb: Literal["auto", "on", "off"] = "auto"
    timescale_chunk_interval: str = "1 day"
    timescale_compress_after: str = "7 days"
    timescale_retention: str = "off"  # e.g. "730 days"; "off" keeps history forever

    # Tracksolid / JIMI Open API
    tracksolid_api_url: str = DEFAULT_API_URL
    tracksolid_app_key: str = ""
    tracksolid_app_secret: SecretStr = SecretStr("")
    tracksolid_user_id: str = ""
    tracksolid_user_pwd_md5: SecretStr = SecretStr("")
    tracksolid_user_pwd: SecretStr | None = None
    tracksolid_targets: str = ""
    tracksolid_token_ttl_s: int = Field(default=7200, ge=60, le=7200)
    tracksolid_token_refresh_margin_s: int = 600
    jimi_http_timeout_s: float = 30.0
    jimi_max_attempts: int = Field(default=5, ge=1)
    jimi_backoff_base_s: float = 1.0
    jimi_backoff_cap_s: float = 60.0
    # Demo only: with no Tracksolid credentials, poll this simulator (jimi_sim.py) instead.
    jimi_sim_url: str = ""

    # Ingest worker (issue: ingest worker) — intervals in seconds, defaults from the seeds
    ingest_device_sync_interval_s: int = 6 * 3600
    ingest_live_interval_s: int = 60
    ingest_track_interval_s: int = 1800
    ingest_trips_interval_s: int = 1800
    ingest_parking_interval_s: int = 1800
    ingest_alarms_interval_s: int = 120
    # Ticket visits (issue #16, docs/visits.md)
    visit_interval_s: int = Field(default=600, ge=60, le=86_400)
    visit_radius_m: float = Field(default=150.0, ge=10, le=5_000)
    visit_stop_kmh: float = Field(default=5.0, ge=0.5, le=30)  # slower = stopped
    visit_min_dwell_s: int = Field(default=120, ge=0, le=86_400)
    visit_merge_gap_s: int = Field(default=600, ge=30, le=86_400)
    visit_before_min: int = Field(default=60, ge=0, le=7 * 1440)  # evidence before creation
    visit_after_min: int = Field(default=120, ge=0, le=7 * 1440)  # evidence after closure
    visit_recompute_days: int = Field(default=3, ge=1, le=92)  # tickets active this far back
    ingest_catchup_days: int = Field(default=90, ge=0, le=92)  # the API keeps ~3 months
    ingest_api_concurrency: int = Field(default=4, ge=1, le=32)  # per-device calls in flight
    gps_filter_max_speed_kmh: float = 250.0  # implied speed above this flags a jump
    gps_filter_max_future_s: int = 24 * 3600  # fixes further in the future are dropped
    push_inbox_retention_days: int = Field(default=30, ge=0)  # parsed deliveries; 0 = keep
    ingestion_log_retention_days: int = Field(default=90, ge=0)  # 0 = keep
    # IMEIs the receiver may auto-register from pushes per hour (above: data kept, not polled)
    push_autoregister_per_hour: int = Field(default=200, ge=0)
    # A device no account has listed for this many days is deactivated (0 = never)
    registry_deactivate_after_days: int = Field(default=14, ge=0, le=3650)
    # Trip speeds and derived trips (trips/derive.py; docs/ingestion.md)
    trip_derive_interval_s: int = Field(default=900, ge=60, le=86_400)
    trip_derive_horizon_days: int = Field(default=7, ge=1, le=92)  # how far back late fixes count
    trip_overspeed_kmh: float = Field(default=80.0, ge=1, le=300)
    trip_speed_min_fixes: int = Field(default=3, ge=1, le=1000)  # fewer: speeds stay NULL
    trip_moving_speed_kmh: float = Field(default=5.0, ge=0, le=50)
    trip_min_distance_m: float = Field(default=200.0, ge=0, le=100_000)
    trip_min_duration_s: int = Field(default=180, ge=0, le=86_400)
    trip_min_stop_s: int = Field(default=300, ge=0, le=86_400)  # shorter standstills: same trip
    trip_stop_gap_s: int = Field(default=3600, ge=60, le=86_400)  # no fix this long ends a trip
    trip_fill_delay_s: int = Field(default=3600, ge=0, le=7 * 86_400)  # API's turn first
    geofence_events_interval_s: int = Field(default=300, ge=30, le=86_400)
    geofence_min_fixes: int = Field(default=3, ge=1, le=100)  # consecutive fixes to change state
    geofence_min_seconds: int = Field(default=60, ge=0, le=86_400)  # ... spanning at least this
    geofence_horizon_days: int = Field(default=7, ge=1, le=92)  # how far back late fixes count
    geofence_max_vertices: int = Field(default=10_000, ge=4, le=1_000_000)  # per fence
    geofence_admin_keys: SecretStr | None = None  # POST/DELETE /geofences; none set = refused
    # Alerts (issue #17, docs/alerts.md): the worker's `alerts` job and its channels
    alerts_interval_s: int = Field(default=60, ge=10, le=86_400)
    alerts_admin_keys: SecretStr | None = None  # POST /alerts/rules, ack; none set = refused
    alert_webhook_url: str = ""
    alert_webhook_secret: SecretStr | None = None  # HMAC-SHA256 key of X-Alert-Signature
    alert_email_to: str = ""  # default recipients of rules that name none (comma-separated)
    alert_send_timeout_s: float = Field(default=10.0, ge=1, le=120)
    alert_retry_base_s: float = Field(default=30.0, ge=0, le=3600)
    alert_retry_cap_s: float = Field(default=3600.0, ge=1, le=86_400)
    alert_max_attempts: int = Field(default=20, ge=1, le=1000)
    alert_digest_hour_utc: int = Field(default=5, ge=0, le=23)  # 08:00 EAT
    alert_event_lag_s: float = Field(default=15.0, ge=0, le=600)  # late commits' margin
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65_535)
    smtp_user: str = ""
    smtp_password: SecretStr | None = None
    smtp_from: str = ""
    smtp_starttls: bool = True
    smtp_ca_file: str = ""  # extra CA bundle for a relay with a private CA (empty: system)

    # Webhook receiver
    jimi_push_token: SecretStr | None = None
    jimi_push_open: bool = False  # deliberately accept pushes without a token (no JIMI_PUSH_TOKEN)
    webhook_spool_dir: str = "var/spool"
    webhook_max_body_bytes: int = 1_048_576

    # Dashboard read-API
    dashboard_cors_origins: str = (
        "https://liveposition.rahamafresh.com,https://fleetintelligence.rahamafresh.com,"
        "https://fleetnow.rahamafresh.com,https://fleetops.rahamafresh.com"
    )
    vtrips_refresh_interval_s: int = Field(default=300, ge=0)
    # auto: the read-API refreshes v_trips when its database is writable; off: never (the
    # ingest worker's vtrips_refresh job does). docs/operations.md "Scaling reads out".
    dashboard_vtrips_refresher: Literal["auto", "off"] = "auto"
    dashboard_api_keys: SecretStr | None = None
    dashboard_statement_timeout_s: int = Field(default=15, ge=1, le=3600)  # read-API queries
    # Answers at least this long are sent br / gzip when the client accepts it (issue #19).
    dashboard_compress_min_bytes: int = Field(default=1024, ge=0)
    # SSE clients of GET /webhook/live-positions/stream per read-API process (then 503).
    live_stream_max_clients: int = Field(default=1000, ge=1, le=100_000)
    # Rendered trips tiles kept per read-API process, MB (dashboard/tile_cache.py; 0 = off).
    dashboard_tile_cache_mb: int = Field(default=64, ge=0, le=4096)
    # Operator page map tiles ({z}/{x}/{y} template; "" = offline basemap only). docs/operations.md
    dashboard_tile_url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"

    # S3 (rustfs or any S3-compatible store)
    rustfs_endpoint: str = "http://localhost:9000"
    rustfs_access_key: SecretStr = SecretStr("")
    rustfs_secret_key: SecretStr = SecretStr("")
    rustfs_region: str = "us-east-1"
    tickets_bucket: str = "fleet-tickets"
    tickets_prefix: str = "changes/"
    tickets_processed_prefix: str = "processed/"
    fuel_bucket: str = "fleet-fuel"
    fuel_prefix: str = "fuel_records/"
    backup_bucket: str = "fleet-db"
    backup_prefix: str = "pg_dump/"
    backup_keep_daily: int = 7
    backup_keep_weekly: int = 4

    # Geocoder (LocationIQ-compatible)
    geocoder_url: str = "https://us1.locationiq.com/v1"
    geocoder_key: SecretStr = SecretStr("")
    geocoder_rate_per_s: float = 1.0  # LocationIQ free tier: 2/s; stay under it

    log_level: str = "INFO"

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        """Hash a plain password once; default the read-only DB URL to the main one."""
        plain = self.tracksolid_user_pwd.get_secret_value() if self.tracksolid_user_pwd else ""
        if not self.tracksolid_user_pwd_md5.get_secret_value() and plain:
            self.tracksolid_user_pwd_md5 = SecretStr(md5_hex(plain))
        if not self.tracksolid_api_url:
            self.tracksolid_api_url = DEFAULT_API_URL  # an empty line in .env means "default"
        if self.dashboard_database_url is None:
            self.dashboard_database_url = self.database_url
        return self

    @property
    def targets(self) -> list[str]:
        """Accounts to poll (FIX-M19); defaults to the API user itself."""
        items = split_csv(self.tracksolid_targets)
        if not items and self.tracksolid_user_id:
            items = [self.tracksolid_user_id]
        return items

    @property
    def cors_origins(self) -> list[str]:
        """Allowed browser origins of the read-API (FIX-D03)."""
        return split_csv(self.dashboard_cors_origins)

    @property
    def api_keys(self) -> list[str]:
        """Accepted read-API keys; empty means the API is open."""
        if self.dashboard_api_keys is None:
            return []
        return split_csv(self.dashboard_api_keys.get_secret_value())

    @property
    def geofence_admin_key_list(self) -> list[str]:
        """Keys accepted by the geofence write endpoints; empty means writes are refused."""
        if self.geofence_admin_keys is None:
            return []
        return split_csv(self.geofence_admin_keys.get_secret_value())

    @property
    def alerts_admin_key_list(self) -> list[str]:
        """Keys accepted by the alert write endpoints; empty means writes are refused."""
        if self.alerts_admin_keys is None:
            return []
        return split_csv(self.alerts_admin_keys.get_secret_value())

    @property
    def jimi_configured(self) -> bool:
        """True when real API credentials are present."""
        return bool(
            self.tracksolid_app_key
            and self.tracksolid_app_secret.get_secret_value()
            and self.tracksolid_user_id
            and self.tracksolid_user_pwd_md5.get_secret_value()
        )

    def with_simulator(self) -> Settings:
        """These settings pointed at the simulator at `jimi_sim_url` with its demo account
        (jimi_sim.SimConfig defaults), for the demo when no real credentials are set."""
        return self.model_copy(
            update={
                "tracksolid_api_url": self.jimi_sim_url,
                "tracksolid_app_key": "demo-app-key",
                "tracksolid_app_secret": SecretStr("demo-app-secret"),
                "tracksolid_user_id": "fireside",
                "tracksolid_user_pwd_md5": SecretStr(md5_hex("demo-password")),
                "tracksolid_targets": "fireside,Fireside@HQ,Fireside_MSA",
            }
        )

    def dsn(self) -> str:
        """The main (read-write) connection string."""
        return self.database_url.get_secret_value()

    def dashboard_dsn(self) -> str:
        """The read-only connection string for the dashboard API."""
        assert self.dashboard_database_url is not None  # set by _derive
        return self.dashboard_database_url.get_secret_value()


def split_csv(value: str) -> list[str]:
    """Split a comma-separated setting into trimmed, non-empty items."""
    return [part.strip() for part in value.split(",") if part.strip()]


# ─────────────────────────────────────────────────────────────────────────────
# Logging
# ─────────────────────────────────────────────────────────────────────────────


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes to whatever `sys.stderr` is when a record is emitted (as
    the standard library's last-resort handler does), not the stream of the moment it was
    made: a process that swaps stderr (pytest's capture, a daemonising wrapper) must not leave
    the root logger writing into a closed file."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        """StreamHandler.__init__ assigns the stream; the property always reads sys.stderr."""


def setup_logging(level: str = "INFO") -> None:
    """Configure root logging for an entry point: one line per record, UTC timestamps."""
    handler = _CurrentStderrHandler()
    formatter = logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO with the full URL; our client logs its own line.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # websockets logs every frame at DEBUG (the browser tests' CDP client, uvicorn's
    # websocket protocol): noise at LOG_LEVEL=DEBUG, never what a DEBUG run is for.
    logging.getLogger("websockets").setLevel(logging.INFO)


class RedactSecretsFilter(logging.Filter):
    """Logging filter: the values of `token` / `key` query parameters (also `api_key`,
    `access_token` ...) in a record's message and arguments become `***`.

    uvicorn's access log passes the request path, query string included, in `record.args`:
    attach it to the `uvicorn.access` logger (or its handler). The record is kept, never dropped.
    """

    # The names may come percent-encoded (`%74oken`): servers decode them, so must we.
    _PARAM = re.compile(
        r"(?i)(?<![\w%-])((?:[\w-]*[_-])?"
        r"(?:(?:t|%74)(?:o|%6f)(?:k|%6b)(?:e|%65)(?:n|%6e)|(?:k|%6b)(?:e|%65)(?:y|%79))=)"
        r"[^&\s\"'#]*"
    )

    @classmethod
    def redact(cls, text: str) -> str:
        """`text` with every `token=...` / `key=...` value replaced by `***`."""
        if "=" not in text:
            return text
        return cls._PARAM.sub(r"\1***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; always True (the line is still logged)."""
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {
                k: self.redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


# ─────────────────────────────────────────────────────────────────────────────
# Database
# ─────────────────────────────────────────────────────────────────────────────


class DatabaseUnavailableError(RuntimeError):
    """The database did not accept connections in time (message names host/port/db only)."""


_JSON_TOKEN = re.compile(r'[\[\]{}"\\]')


def json_too_deep(text: str, limit: int) -> bool:
    """True when `text` nests arrays/objects deeper than `limit` — a loop over the brackets
    outside strings, run before `json.loads`, so a hostile body cannot exhaust the stack.
    The read-API's bodies (dashboard/params.py) and geofence files (geofences/geojson.py)
    both check with it."""
    depth = 0
    in_string = False
    escaped_at = -1  # index of a character escaped by the backslash before it
    for token in _JSON_TOKEN.finditer(text):
        char, at = token.group(), token.start()
        if at == escaped_at:
            continue
        if char == "\\":
            escaped_at = at + 1
        elif char == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def describe_dsn(conninfo: str) -> str:
    """`host:port/dbname` of a connection string, without user or password (for messages)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "(unparsable connection string)"
    return f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname')}"


# libpq `options` that make every commit of a connection wait for its WAL flush, whatever
# the server, database or role default says (`ALTER ROLE ... SET synchronous_commit = off`
# would otherwise silently lose the last ~0.2-0.6 s of acknowledged commits in a crash).
# Startup-packet options outrank role and database settings.
DURABLE_OPTIONS = "-c synchronous_commit=on"


def connect_options(conninfo: str, *extra: str) -> str:
    """The libpq `options` of `conninfo` followed by `extra` (the later `-c` wins), e.g.
    `psycopg.connect(dsn, options=connect_options(dsn, DURABLE_OPTIONS))` for a durable
    connection opened by hand (importers' watermark commits)."""
    given = psycopg.conninfo.conninfo_to_dict(conninfo).get("options") or ""
    return " ".join(part for part in (str(given), *extra) if part).strip()


def with_cli_pool(settings: Settings, name: str, work: Callable[[ConnectionPool], int]) -> int:
    """A one-shot command's database run: one small durable pool, `work(pool)`'s exit code,
    and exit code 1 with one log line (the error's type, never its text, which may quote
    data) when the database is unreachable or a statement fails."""
    cli_log = logging.getLogger(name)
    try:
        pool = make_pool(settings.dsn(), min_size=1, max_size=1, name=name, durable=True)
    except DatabaseUnavailableError as exc:
        cli_log.error("%s: %s", name, exc)
        return 1
    try:
        return work(pool)
    except psycopg.Error as exc:
        cli_log.error("%s: database error: %s", name, type(exc).__name__)
        return 1
    finally:
        pool.close()


def make_pool(
    conninfo: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    name: str = "pool",
    open_wait: bool = True,
    timeout: float = 30.0,
    check: bool = True,
    statement_timeout_s: float | None = None,
    durable: bool = False,
) -> ConnectionPool:
    """Open a psycopg pool whose connections are checked before each use.

    `open_wait=False` returns at once even when the database is down (the pool keeps
    trying in the background), which the webhook receiver needs to start and spool.
    `check=False` skips the per-borrow round trip; only for callers that treat a
    `psycopg.OperationalError` on a stale connection as routine (the webhook spools it).
    `statement_timeout_s` makes the server cancel any statement of these connections that
    runs longer (`psycopg.errors.QueryCanceled`), set at connect time as
    `options=-c statement_timeout=<ms>` after any `options` already in `conninfo`.
    `durable=True` adds `DURABLE_OPTIONS` (`-c synchronous_commit=on`) the same way: every
    commit on these connections is flushed to the WAL before it returns, whatever the role's
    or database's setting.
    """
    kwargs: dict[str, Any] = {"application_name": name}
    extra: list[str] = []
    if statement_timeout_s is not None:
        timeout_ms = max(1, round(statement_timeout_s * 1000))
        extra.append(f"-c statement_timeout={timeout_ms}")
    if durable:
        extra.append(DURABLE_OPTIONS)
    if extra:
        kwargs["options"] = connect_options(conninfo, *extra)
    pool = ConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        check=ConnectionPool.check_connection if check else None,
        timeout=timeout,
        kwargs=kwargs,
    )
    try:
        pool.open(wait=open_wait, timeout=timeout)
    except PoolTimeout as exc:
        pool.close()
        raise DatabaseUnavailableError(
            f"database {describe_dsn(conninfo)} did not accept connections within {timeout:.0f} s"
            " (is it running, and are DATABASE_URL's host, port and password right?)"
        ) from exc
    return pool


# ─────────────────────────────────────────────────────────────────────────────
# Cleaning helpers — accept what the API really sends
# ─────────────────────────────────────────────────────────────────────────────

_NULLS = {"", "null", "none", "nan", "undefined", "n/a"}


def clean(value: Any) -> str | None:
    """Return a trimmed string, or None for None / empty / "null"-like values."""
    if value is None:
        return None
    text = str(value).strip()
    if text.lower() in _NULLS:
        return None
    return text


def clean_num(value: Any) -> float | None:
    """Return a float from a number or numeric string; None when absent or not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    text = clean(value)
    if text is None:
        return None
    try:
        number = float(Decimal(text))
    except (InvalidOperation, ValueError):
        return None
    if not math.isfinite(number):
        return None
    return number


def clean_int(value: Any) -> int | None:
    """Return an int from an int, an integral float or a numeric string; else None."""
    number = clean_num(value)
    if number is None:
        return None
    return round(number)


def clean_bool(value: Any) -> bool | None:
    """Return a bool from 1/0, "1"/"0", true/false, on/off, yes/no; else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    text = clean(value)
    if text is None:
        return None
    lowered = text.lower()
    if lowered in {"1", "true", "t", "on", "yes", "y"}:
        return True
    if lowered in {"0", "false", "f", "off", "no", "n"}:
        return False
    return None


_TS_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y-%m-%d")


def clean_ts(value: Any, *, tz: Any = UTC) -> datetime | None:
    """Return an aware datetime from ISO-8601 (with or without Z / offset), `yyyy-MM-dd
    HH:mm:ss`, or unix seconds/milliseconds. Naive inputs are read in `tz` (UTC by default:
    Jimi sends UTC; the tickets feed passes EAT). None when absent or unparsable.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=tz)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _from_epoch(float(value))
    text = clean(value)
    if text is None:
        return None
    if re.fullmatch(r"\d{9,13}(\.\d+)?", text):
        return _from_epoch(float(text))
    iso = text.replace("Z", "+00:00").replace("z", "+00:00")
    parsed: datetime | None
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        parsed = None
        for fmt in _TS_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)  # noqa: DTZ007 - tz attached below
                break
            except ValueError:
                continue
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


def _from_epoch(number: float) -> datetime | None:
    if number > 1e11:  # milliseconds
        number /= 1000.0
    try:
        return datetime.fromtimestamp(number, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def normalize_plate(value: Any) -> str | None:
    """Canonical plate for joins: upper case, letters and digits only (`KCA 542Q` → `KCA542Q`)."""
    text = clean(value)
    if text is None:
        return None
    plate = re.sub(r"[^0-9A-Za-z]", "", text).upper()
    return plate or None


def md5_hex(text: str) -> str:
    """Lower-case MD5 hex of a UTF-8 string (the API's `user_pwd_md5`)."""
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def batched(items: Iterable[str], size: int = IMEI_BATCH) -> Iterator[list[str]]:
    """Yield lists of at most `size` items (IMEI batches for multi-IMEI methods)."""
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def utcnow() -> datetime:
    """Aware current time in UTC."""
    return datetime.now(UTC)


def fmt_api_time(moment: datetime) -> str:
    """Format a datetime as the API expects: `yyyy-MM-dd HH:mm:ss` in UTC."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime passed to the API formatter")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


# ─────────────────────────────────────────────────────────────────────────────
# The signed Jimi client
# ─────────────────────────────────────────────────────────────────────────────

RETRIABLE_CODES = frozenset({-1, 1005, 1006})
TOKEN_INVALID = 1004
FATAL_CODES = frozenset({1001, 1002, 1100})


class JimiError(Exception):
    """Base of every failure raised by the Jimi client."""

    def __init__(self, message: str, *, method: str, code: int | None = None) -> None:
        super().__init__(message)
        self.method = method
        self.code = code


class JimiFatalError(JimiError):
    """The API refused the call for good (1001, 1002, 1100, HTTP 4xx): do not retry it."""


class JimiRetryError(JimiError):
    """A retriable failure (1006, -1, 1005, 5xx, timeout) persisted past the attempt limit."""


class JimiAuthError(JimiError):
    """No valid access token could be obtained (bad credentials or repeated 1004)."""


def sign_params(params: Mapping[str, Any], secret: str) -> str:
    """Jimi signature: MD5(secret + concat(sorted key+value, empty skipped) + secret), upper hex."""
    parts = [
        f"{key}{value}"
        for key, value in sorted(params.items())
        if key != "sign" and value is not None and str(value) != ""
    ]
    raw = secret + "".join(parts) + secret
    return hashlib.md5(raw.encode("utf-8"), usedforsecurity=False).hexdigest().upper()


@dataclass(frozen=True)
class ApiReply:
    """A successful reply: the envelope's `result` and `data` members."""

    method: str
    result: Any
    data: Any
    attempts: int
    duration_ms: int

    def items(self) -> list[dict[str, Any]]:
        """The list payload, wherever this method puts it (`result`, `data`, `data.rows` ...)."""
        for candidate in (self.result, self.data):
            found = _find_list(candidate)
            if found is not None:
                return found
        return []


def _find_list(payload: Any) -> list[dict[str, Any]] | None:
    if isinstance(payload, list):
        return [item for item in payload if isinstance(item, dict)]
    if isinstance(payload, dict):
        for key in ("rows", "result", "list", "data"):
            if key in payload:
                found = _find_list(payload[key])
                if found is not None:
                    return found
    return None


@dataclass
class _Token:
    access_token: str
    refresh_token: str | None
    expires_at: datetime


@dataclass
class CallStats:
    """What one logical call did, for the audit log."""

    attempts: int = 0
    codes: list[str] = field(default_factory=list)


class JimiClient:
    """Signed client of the Tracksolid/JIMI Open API.

    - signs every request (fresh timestamp per attempt), form POST;
    - keeps the access token in `tracksolid.api_token_cache`, shared by every process;
      refreshes it `tracksolid_token_refresh_margin_s` before expiry, re-fetches once on 1004;
    - retries 1006 / -1 / 1005 / HTTP 5xx / timeouts / connection errors with capped
      exponential backoff and full jitter, at most `jimi_max_attempts` attempts;
    - raises `JimiFatalError` at once for 1001 / 1002 / 1100 / other HTTP 4xx;
    - writes one row per call into `tracksolid.ingestion_log`.
    """

    def __init__(
        self,
        settings: Settings,
        pool: ConnectionPool,
        *,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._http = http or httpx.Client(timeout=settings.jimi_http_timeout_s)
        self._owns_http = http is None
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._now = now or utcnow  # request timestamps and token expiry (tests inject a clock)
        self._token: _Token | None = None
        self.url = settings.tracksolid_api_url
        self._cache_key = f"{settings.tracksolid_app_key}:{settings.tracksolid_user_id}"

    def close(self) -> None:
        """Close the HTTP client if this instance created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> JimiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ── public API ──────────────────────────────────────────────────────────

    def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        target: str | None = None,
        log_call: bool = True,
    ) -> ApiReply:
        """Call one API method and return its payload; see the class doc for failure modes.

        `target` is only recorded in the audit log (pass the account the call is about).
        """
        started = time.monotonic()
        stats = CallStats()
        try:
            reply = self._call_with_token(method, dict(params or {}), stats)
        except JimiError as exc:
            if log_call:
                self._audit(method, target, False, exc.code, None, started, stats, str(exc))
            raise
        if log_call:
            rows = len(reply.items()) or int(isinstance(reply.result, dict) and bool(reply.result))
            self._audit(method, target, True, 0, rows, started, stats, None)
        return reply

    def call_each_target(
        self, method: str, params: Mapping[str, Any] | None = None
    ) -> Iterator[tuple[str, ApiReply | JimiError]]:
        """Call `method` once per target account (`target=` param); errors are yielded, not raised,
        so one failing account never stops the others (FIX-M19)."""
        for target in self._settings.targets:
            try:
                yield target, self.call(method, {**(params or {}), "target": target}, target=target)
            except JimiError as exc:
                yield target, exc

    # ── token handling ──────────────────────────────────────────────────────

    def access_token(self, *, force_new: bool = False) -> str:
        """A valid access token: in-memory, else the shared DB cache, else refresh/fetch."""
        margin = timedelta(seconds=self._settings.tracksolid_token_refresh_margin_s)
        now = self._now()
        if not force_new and self._token and self._token.expires_at - margin > now:
            return self._token.access_token
        with self._pool.connection() as conn, conn.transaction():
            # One process at a time renews; the others wait and then read its token.
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('jimi-token'), hashtext(%s))",
                (self._cache_key,),
            )
            row = conn.execute(
                "SELECT access_token, refresh_token, expires_at FROM tracksolid.api_token_cache"
                " WHERE cache_key = %s",
                (self._cache_key,),
            ).fetchone()
            cached = _Token(row[0], row[1], row[2]) if row else None
            stale = self._token.access_token if (force_new and self._token) else None
            if cached and cached.access_token != stale and cached.expires_at - margin > now:
                self._token = cached
                return cached.access_token
            token: _Token | None = None
            if (
                cached
                and not force_new
                and cached.refresh_token
                and cached.expires_at > now + timedelta(seconds=30)
            ):
                token = self._try_refresh(cached)
            if token is None:
                token = self._fetch_token()
            conn.execute(
                """
                INSERT INTO tracksolid.api_token_cache
                    (cache_key, access_token, refresh_token, expires_at, obtained_at)
                VALUES (%s, %s, %s, %s, now())
                ON CONFLICT (cache_key) DO UPDATE SET
                    access_token = EXCLUDED.access_token,
                    refresh_token = EXCLUDED.refresh_token,
                    expires_at = EXCLUDED.expires_at,
                    obtained_at = now()
                """,
                (self._cache_key, token.access_token, token.refresh_token, token.expires_at),
            )
        self._token = token
        return token.access_token

    def _fetch_token(self) -> _Token:
        params = {
            "user_id": self._settings.tracksolid_user_id,
            "user_pwd_md5": self._settings.tracksolid_user_pwd_md5.get_secret_value(),
            "expires_in": str(self._settings.tracksolid_token_ttl_s),
        }
        reply = self._logged_token_call("jimi.oauth.token.get", params)
        return _parse_token(reply, "jimi.oauth.token.get", self._now())

    def _try_refresh(self, cached: _Token) -> _Token | None:
        params = {
            "access_token": cached.access_token,
            "refresh_token": cached.refresh_token or "",
            "expires_in": str(self._settings.tracksolid_token_ttl_s),
        }
        try:
            reply = self._logged_token_call("jimi.oauth.token.refresh", params)
            return _parse_token(reply, "jimi.oauth.token.refresh", self._now())
        except JimiError as exc:
            log.warning("token refresh failed (%s); fetching a new token", exc)
            return None

    def _logged_token_call(self, method: str, params: dict[str, Any]) -> ApiReply:
        started = time.monotonic()
        stats = CallStats()
        try:
            reply = self._request_with_retries(method, params, None, stats)
        except JimiError as exc:
            self._audit(method, None, False, exc.code, None, started, stats, str(exc))
            raise
        self._audit(method, None, True, 0, 1, started, stats, None)
        return reply

    # ── request machinery ───────────────────────────────────────────────────

    def _call_with_token(self, method: str, params: dict[str, Any], stats: CallStats) -> ApiReply:
        token = self.access_token()
        try:
            return self._request_with_retries(method, params, token, stats)
        except JimiError as exc:
            if exc.code != TOKEN_INVALID:
                raise
            log.info("%s: token rejected (1004); fetching a new token and retrying once", method)
            token = self.access_token(force_new=True)
            try:
                return self._request_with_retries(method, params, token, stats)
            except JimiError as again:
                if again.code == TOKEN_INVALID:
                    raise JimiAuthError(
                        "token rejected twice (1004)", method=method, code=TOKEN_INVALID
                    ) from again
                raise

    def _request_with_retries(
        self, method: str, params: dict[str, Any], token: str | None, stats: CallStats
    ) -> ApiReply:
        max_attempts = self._settings.jimi_max_attempts
        started = time.monotonic()
        last_error: JimiError | None = None
        for attempt in range(1, max_attempts + 1):
            stats.attempts += 1
            try:
                result, data = self._request_once(method, params, token, stats)
                return ApiReply(
                    method, result, data, attempt, int((time.monotonic() - started) * 1000)
                )
            except _RetriableError as exc:
                last_error = JimiRetryError(str(exc), method=method, code=exc.code)
                if attempt >= max_attempts:
                    break
                delay = self._backoff(attempt, long=exc.code == 1005)
                log.warning(
                    "%s: %s (attempt %d/%d), retrying in %.2fs",
                    method,
                    exc,
                    attempt,
                    max_attempts,
                    delay,
                )
                self._sleep(delay)
        assert last_error is not None
        raise JimiRetryError(
            f"gave up after {max_attempts} attempts: {last_error}",
            method=method,
            code=last_error.code,
        )

    def _backoff(self, attempt: int, *, long: bool = False) -> float:
        base = self._settings.jimi_backoff_base_s * (10 if long else 1)
        cap = self._settings.jimi_backoff_cap_s
        ceiling = min(cap, base * (2 ** (attempt - 1)))
        # "Equal jitter": never less than half the ceiling, so storms really do back off.
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    def _request_once(
        self, method: str, params: dict[str, Any], token: str | None, stats: CallStats
    ) -> tuple[Any, Any]:
        form: dict[str, str] = {
            "method": method,
            "timestamp": fmt_api_time(self._now()),
            "app_key": self._settings.tracksolid_app_key,
            "sign_method": "md5",
            "v": "1.0",
            "format": "json",
        }
        if token is not None:
            form["access_token"] = token
        for key, value in params.items():
            if value is not None:
                form[key] = str(value)
        form["sign"] = sign_params(form, self._settings.tracksolid_app_secret.get_secret_value())
        t0 = time.monotonic()
        try:
            response = self._http.post(self.url, data=form)
        except httpx.TimeoutException as exc:
            stats.codes.append("timeout")
            raise _RetriableError(f"timeout: {type(exc).__name__}", None) from exc
        except httpx.TransportError as exc:
            stats.codes.append("transport")
            raise _RetriableError(f"connection error: {type(exc).__name__}: {exc}", None) from exc
        elapsed = int((time.monotonic() - t0) * 1000)
        if response.status_code >= 500:
            stats.codes.append(f"http{response.status_code}")
            raise _RetriableError(f"HTTP {response.status_code}", None)
        if response.status_code >= 400:
            stats.codes.append(f"http{response.status_code}")
            raise JimiFatalError(f"HTTP {response.status_code}", method=method)
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            stats.codes.append("badjson")
            raise _RetriableError(f"reply is not JSON ({response.text[:80]!r})", None) from exc
        if not isinstance(body, dict):
            raise JimiFatalError("reply is not a JSON object", method=method)
        code = clean_int(body.get("code"))
        message = str(body.get("message") or body.get("msg") or "")
        log.debug("jimi %s -> code=%s in %dms", method, code, elapsed)
        if code == 0:
            stats.codes.append("0")
            return body.get("result"), body.get("data")
        stats.codes.append(str(code))
        if code in RETRIABLE_CODES:
            raise _RetriableError(f"code {code}: {message}", code)
        if code == TOKEN_INVALID:
            raise JimiError(f"code 1004: {message}", method=method, code=code)
        raise JimiFatalError(f"code {code}: {message}", method=method, code=code)

    # ── audit log ───────────────────────────────────────────────────────────

    def _audit(
        self,
        method: str,
        target: str | None,
        ok: bool,
        code: int | None,
        rows: int | None,
        started: float,
        stats: CallStats,
        error: str | None,
    ) -> None:
        duration_ms = int((time.monotonic() - started) * 1000)
        log.info(
            "jimi %s target=%s ok=%s code=%s rows=%s attempts=%d %dms",
            method,
            target,
            ok,
            code,
            rows,
            stats.attempts,
            duration_ms,
        )
        record_ingestion(
            self._pool,
            source="api",
            method=method,
            target=target,
            ok=ok,
            result_code=code,
            rows=rows,
            duration_ms=duration_ms,
            attempts=stats.attempts,
            error=error,
            detail={"codes": stats.codes} if len(stats.codes) > 1 else None,
        )


class _RetriableError(Exception):
    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


def _parse_token(reply: ApiReply, method: str, now: datetime) -> _Token:
    result = reply.result if isinstance(reply.result, dict) else {}
    access = clean(result.get("accessToken"))
    if not access:
        raise JimiAuthError("token reply has no accessToken", method=method)
    expires_in = clean_int(result.get("expiresIn")) or 7200
    return _Token(
        access_token=access,
        refresh_token=clean(result.get("refreshToken")),
        expires_at=now + timedelta(seconds=expires_in),
    )


def record_ingestion(
    pool: ConnectionPool,
    *,
    source: str,
    method: str,
    ok: bool,
    target: str | None = None,
    result_code: int | None = None,
    rows: int | None = None,
    duration_ms: int | None = None,
    attempts: int | None = None,
    error: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Append one row to `tracksolid.ingestion_log`; a database failure is logged, not raised,
    so auditing never breaks ingestion."""
    try:
        with pool.connection() as conn:
            conn.execute(
                """
                INSERT INTO tracksolid.ingestion_log
                    (source, method, target, ok, result_code, rows, duration_ms, attempts,
                     error, detail)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                """,
                (
                    source,
                    method,
                    target,
                    ok,
                    result_code,
                    rows,
                    duration_ms,
                    attempts,
                    (error or None) and error[:2000],
                    Jsonb(dict(detail)) if detail else None,
                ),
            )
    except psycopg.Error as exc:
        log.warning("could not write ingestion_log for %s: %s", method, exc)


# ─────────────────────────────────────────────────────────────────────────────
# S3
# ─────────────────────────────────────────────────────────────────────────────


def make_s3_client(settings: Settings) -> S3Client:
    """boto3 S3 client for rustfs / any S3-compatible store (custom endpoint, path-style)."""
    import boto3  # noqa: PLC0415 - only importers and backup need boto3
    from botocore.config import Config  # noqa: PLC0415

    return boto3.client(
        "s3",
        endpoint_url=settings.rustfs_endpoint,
        aws_access_key_id=settings.rustfs_access_key.get_secret_value() or None,
        aws_secret_access_key=settings.rustfs_secret_key.get_secret_value() or None,
        region_name=settings.rustfs_region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            signature_version="s3v4",
        ),
    )


# An unreadable importer file is moved under this prefix of its own bucket (issue #13).
QUARANTINE_PREFIX = "quarantine/"


def quarantine_key(key: str) -> str:
    """Where an unreadable file goes in its bucket: `quarantine/` + its full original key."""
    return QUARANTINE_PREFIX + key


def copy_to_quarantine(client: S3Client, bucket: str, key: str, reason: dict[str, Any]) -> str:
    """Copy `key` to `quarantine/<key>` and write `quarantine/<key>.reason.json` beside it;
    returns the quarantine key. The original stays: the caller deletes it once the database
    recorded the quarantine, so a run that dies half-way repeats this harmlessly. S3 errors
    (botocore's) are the caller's to translate."""
    dest = quarantine_key(key)
    client.copy_object(Bucket=bucket, Key=dest, CopySource={"Bucket": bucket, "Key": key})
    client.put_object(
        Bucket=bucket,
        Key=dest + ".reason.json",
        Body=json.dumps(reason, indent=2, sort_keys=True, default=str).encode(),
        ContentType="application/json",
    )
    return dest
