"""Pure parsing of the read-API's request parameters (no I/O): text filters, numbers, dates,
POST bodies, and the parameter sets of the trips map, the INC dashboard and the fuel log.

Every function raises `ParamError` with one sentence a dashboard developer can act on; the
app turns it into `{"detail": "<sentence>"}` with the error's `status_code` (422; 413 for a
body that is too large).

Hostile input costs only a 4xx, never a 500:
- text is refused when it holds a control character (NUL included: PostgreSQL cannot store
  it) or a lone surrogate (not encodable as UTF-8), or is longer than `MAX_TEXT_LEN`;
- whole numbers are read from at most `MAX_NUMBER_DIGITS` ASCII digits (no 400-digit `int()`,
  no `1e999`, no `NaN`);
- dates must lie between `MIN_DAY` and `MAX_DAY`, so `end + 1 day` and time-zone arithmetic
  never overflow, and a range spans at most `MAX_RANGE_DAYS` days;
- bodies are at most `MAX_BODY_BYTES`, must be UTF-8, and JSON is depth-checked without
  recursion (`check_json_depth`) before `json.loads` sees it.

Times: a naive date or datetime is read in East Africa Time (UTC+3, no daylight saving), the
time zone of the fleet and of the dashboards' users; `Z` or an explicit offset wins.
A date-only `end` / `to` means the end of that day (the day is included). The text the
caller gave is kept (`*_text`) so answers can echo it unchanged.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from urllib.parse import parse_qs

from ts_shared import json_too_deep

EAT = timezone(timedelta(hours=3), "EAT")
MAX_TRIP_FEATURES = 50_000  # a browser map with more lines than this is unusable anyway
MAX_TRACK_HOURS = 168
MAX_RANGE_DAYS = 366  # every date range of the read-API (analytics, trips map, tickets, fuel)
MAX_TEXT_LEN = 200  # a filter value (cost centre, driver, city, plate, cluster)
MAX_VEHICLES = 10_000  # the fleet size the stack is sized for
MAX_NUMBER_DIGITS = 12
MAX_BODY_BYTES = 1_048_576
MAX_JSON_DEPTH = 16  # a valid trips-map body is 2 deep ({"vehicles": [...]})
MAX_FIELDS = 1_000
MIN_DAY = date(2000, 1, 1)
MAX_DAY = date(2099, 12, 31)
FUEL_DEFAULT_DAYS = 30
FUEL_MAX_LIMIT = 5_000
EXPIRING_DEFAULT_DAYS = 30  # subscriptions ending within this many days

ACC_STATUSES = ("on", "off", "moving", "idle", "parked", "offline")
_ACC_ALIASES = {"1": "on", "true": "on", "0": "off", "false": "off"}
TICKET_WINDOWS: dict[str, timedelta | None] = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
    "custom": None,
}
TICKET_STATUSES = (
    "all", "open", "pending", "actionable", "breached", "new", "assigned", "in_progress", "other",
)  # fmt: skip

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)
_WHOLE_NUMBER = re.compile(r"^[+-]?[0-9]+$")
# C0 and C1 controls (NUL, newlines, escapes ...) and lone surrogates.
_BAD_CHAR = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NOT_PLATE = re.compile(r"[^0-9A-Za-z]")
_NO_FILTER = {"", "all", "*"}
_MAX_DATE_TEXT = 64

# Accepted spellings of the trips-map fields (the SPAs were written against older versions).
_ALIASES: dict[str, tuple[str, ...]] = {
    "vehicles": ("vehicles", "vehicle", "vehicle_number", "vehicle_numbers", "vehicleNumbers"),
    "driver": ("driver", "driver_name", "driverName"),
    "cost_centre": ("cost_centre", "cost_center", "costCentre", "costCenter"),
    "city": ("city",),
    "start": ("start", "start_date", "startDate", "from", "date_from"),
    "end": ("end", "end_date", "endDate", "to", "date_to"),
    "limit": ("limit", "max_features"),
    "cursor": ("cursor",),
}


class ParamError(ValueError):
    """A request parameter is missing, malformed or out of range (HTTP 422)."""

    status_code = 422


class BodyTooLargeError(ParamError):
    """The request body is larger than MAX_BODY_BYTES (HTTP 413)."""

    status_code = 413


@dataclass(frozen=True)
class TripQuery:
    """The filters of POST /webhook/fleet-dashboard, parsed and checked."""

    vehicles: list[str] | None
    driver: str | None
    cost_centre: str | None
    city: str | None
    start: datetime | None
    end: datetime | None  # exclusive: a date-only end is the next midnight
    limit: int
    start_text: str | None = None  # as given, echoed in the answer
    end_text: str | None = None
    after: Cursor | None = None  # the page after this keyset position (issue #19)


@dataclass(frozen=True)
class IncQuery:
    """The parameters of GET /analytics/inc-dashboard, parsed and checked."""

    cluster: str | None
    status: str
    window: str
    start: datetime | None
    end: datetime | None
    start_text: str | None
    end_text: str | None


@dataclass(frozen=True)
class FuelQuery:
    """The parameters of GET /analytics/fuel and /analytics/fuel-fills, parsed and checked."""

    start: date
    end: date
    cost_centre: str | None
    city: str | None
    vehicle_number: str | None
    plate: str | None
    limit: int


# ── Text ───────────────────────────────────────────────────────────────────────────────────


def shown(text: str, width: int = 40) -> str:
    """`text` quoted for a message: shortened, control characters escaped by repr()."""
    return repr(text if len(text) <= width else text[:width] + "…")


def check_chars(name: str, text: str) -> str:
    """`text` unchanged; ParamError when it holds a control character or a lone surrogate."""
    bad = _BAD_CHAR.search(text)
    if bad is not None:
        raise ParamError(
            f"{name} contains a control character or an invalid code point"
            f" (U+{ord(bad.group()):04X} at position {bad.start()})"
        )
    return text


def check_text(name: str, value: str, *, max_len: int = MAX_TEXT_LEN) -> str:
    """`value` stripped; ParamError when it is longer than `max_len` characters or holds a
    control character or a lone surrogate."""
    text = value.strip()
    if len(text) > max_len:
        raise ParamError(f"{name} is too long (at most {max_len} characters, got {len(text)})")
    return check_chars(name, text)


def filter_value(value: str | None, name: str = "filter") -> str | None:
    """A checked text filter, or None for absent / empty / "all" / "*"."""
    if value is None:
        return None
    text = check_text(name, value)
    return None if text.lower() in _NO_FILTER else text


def parse_acc_status(value: str | None) -> str | None:
    """The live map's `acc_status`: on / off (ignition) or a status word; None = all."""
    text = filter_value(value, "acc_status")
    if text is None:
        return None
    word = _ACC_ALIASES.get(text.lower(), text.lower())
    if word not in ACC_STATUSES:
        raise ParamError(
            "acc_status must be one of on, off, moving, idle, parked, offline or all"
            f" (got {shown(text)})"
        )
    return word


# ── Numbers ────────────────────────────────────────────────────────────────────────────────


def parse_int(
    name: str,
    value: str | None,
    *,
    default: int,
    low: int,
    high: int,
    clamp_high: bool = False,
) -> int:
    """A whole number in [low, high] from at most MAX_NUMBER_DIGITS digits; `default` when
    absent. `clamp_high` lowers a larger number to `high` instead of refusing it."""
    text = check_chars(name, (value or "").strip())
    if not text:
        return default
    wanted = f"{low} or more" if clamp_high else f"between {low} and {high}"
    if not _WHOLE_NUMBER.match(text):
        raise ParamError(f"{name} must be a whole number {wanted} (got {shown(text)})")
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) > MAX_NUMBER_DIGITS:  # int() of it is costly and it is out of range anyway
        if clamp_high and not text.startswith("-"):
            return high
        raise ParamError(f"{name} must be {wanted} (got a {len(digits)}-digit number)")
    number = int(text)
    if number < low or (number > high and not clamp_high):
        raise ParamError(f"{name} must be {wanted} (got {number})")
    return min(number, high)


def parse_hours(value: str | None, default: int = 24) -> int:
    """Track length in whole hours, 1-168."""
    return parse_int("hours", value, default=default, low=1, high=MAX_TRACK_HOURS)


def parse_expiring_days(value: str | None) -> int:
    """Horizon of GET /analytics/devices/expiring in whole days, 1-366 (default 30)."""
    return parse_int("days", value, default=EXPIRING_DEFAULT_DAYS, low=1, high=MAX_RANGE_DAYS)


# ── Dates ──────────────────────────────────────────────────────────────────────────────────


def _date_text(name: str, value: str | None) -> str:
    return check_text(name, value or "", max_len=_MAX_DATE_TEXT)


def _check_day(name: str, day: date, text: str) -> None:
    if not MIN_DAY <= day <= MAX_DAY:
        raise ParamError(
            f"{name}: {shown(text)} is outside the supported dates {MIN_DAY} to {MAX_DAY}"
        )


def parse_when(name: str, value: str | None, *, is_end: bool = False) -> datetime | None:
    """Parse `YYYY-MM-DD` or ISO-8601 into an aware datetime (naive = EAT).

    A date-only end is the start of the next day, so `end=2026-11-20` includes the 20th.
    """
    text = _date_text(name, value)
    if not text:
        return None
    if _DATE_ONLY.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ParamError(
                f"{name}: {shown(text)} is not a valid date (use YYYY-MM-DD)"
            ) from None
        _check_day(name, day, text)
        moment = datetime.combine(day, time.min, EAT)
        return moment + timedelta(days=1) if is_end else moment
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ParamError(
            f"{name}: {shown(text)} is not a date or time "
            "(use YYYY-MM-DD or ISO-8601 such as 2026-11-20T08:00:00+03:00)"
        ) from None
    _check_day(name, moment.date(), text)
    return moment if moment.tzinfo else moment.replace(tzinfo=EAT)


def parse_day(name: str, value: str | None, default: date) -> date:
    """Parse an analytics day `YYYY-MM-DD` (EAT calendar day); `default` when absent."""
    text = _date_text(name, value)
    if not text:
        return default
    if _DATE_ONLY.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            pass
        else:
            _check_day(name, day, text)
            return day
    raise ParamError(f"{name}: {shown(text)} is not a valid date (use YYYY-MM-DD)")


def today_eat(now: datetime | None = None) -> date:
    """Today's date in East Africa Time."""
    return (now or datetime.now(EAT)).astimezone(EAT).date()


def parse_day_range(
    start: str | None,
    end: str | None,
    *,
    default_days: int = 7,
    names: tuple[str, str] = ("start", "end"),
    today: date | None = None,
) -> tuple[date, date]:
    """Inclusive EAT day range of the analytics endpoints; default: the last `default_days`
    up to `end` (default today). At most MAX_RANGE_DAYS days."""
    end_day = parse_day(names[1], end, today or today_eat())
    start_day = parse_day(names[0], start, end_day - timedelta(days=default_days - 1))
    if end_day < start_day:
        raise ParamError(f"{names[1]} ({end_day}) is before {names[0]} ({start_day})")
    days = (end_day - start_day).days + 1
    if days > MAX_RANGE_DAYS:
        raise ParamError(f"the date range is limited to {MAX_RANGE_DAYS} days (got {days} days)")
    return start_day, end_day


def _check_window(t0: datetime, t1: datetime) -> None:
    """The half-open window [t0, t1) spans at most MAX_RANGE_DAYS days."""
    if t1 - t0 > timedelta(days=MAX_RANGE_DAYS):
        days = math.ceil((t1 - t0) / timedelta(days=1))
        raise ParamError(f"the date range is limited to {MAX_RANGE_DAYS} days (got {days} days)")


# ── Bodies ─────────────────────────────────────────────────────────────────────────────────


def check_json_depth(text: str, limit: int = MAX_JSON_DEPTH) -> None:
    """ParamError when `text` nests arrays/objects deeper than `limit` (ts_shared.json_too_deep:
    checked before parsing, so a hostile body cannot exhaust the stack)."""
    if json_too_deep(text, limit):
        raise ParamError(f"the JSON is nested too deeply (more than {limit} levels)")


def _loads(text: str, what: str) -> object:
    """json.loads with numbers and NaN/Infinity kept as their text (no int() of 5,000
    digits, no float('1e999')), after the depth check."""
    check_json_depth(text)
    try:
        return json.loads(text, parse_int=str, parse_float=str, parse_constant=str)
    except json.JSONDecodeError as exc:
        raise ParamError(f"{what} is not valid JSON: {exc.msg} at {exc.pos}") from None
    except (ValueError, RecursionError):
        raise ParamError(f"{what} is not valid JSON") from None


def parse_body(content_type: str | None, body: bytes) -> dict[str, list[str]]:
    """Decode a POST body into field → values (FIX-D01: the SPA posts a urlencoded form,
    other clients JSON). Content-Type decides; without one, a body starting with `{` is JSON.
    Too large → BodyTooLargeError (413); not UTF-8, malformed, too deep or too many fields → 422.
    """
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLargeError(f"the body is larger than {MAX_BODY_BYTES} bytes")
    ctype = (content_type or "").split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ParamError(
            f"the body is not UTF-8 text (invalid byte at position {exc.start})"
        ) from None
    if not text:
        return {}
    if ctype == "application/json" or ctype.endswith("+json") or (not ctype and text[0] == "{"):
        data = _loads(text, "the body")
        if not isinstance(data, dict):
            raise ParamError('the JSON body must be an object such as {"cost_centre": "..."}')
        if len(data) > MAX_FIELDS:
            raise ParamError(f"the body has more than {MAX_FIELDS} fields")
        return {str(k): _json_values(str(k), v) for k, v in data.items() if v is not None}
    if ctype in ("application/x-www-form-urlencoded", "text/plain", ""):
        try:
            return parse_qs(
                text,
                keep_blank_values=True,
                max_num_fields=MAX_FIELDS,
                encoding="utf-8",
                errors="strict",
            )
        except UnicodeDecodeError:
            raise ParamError("the form body is not UTF-8 text once percent-decoded") from None
        except ValueError:
            raise ParamError(f"the form has more than {MAX_FIELDS} fields") from None
    raise ParamError(
        f"unsupported Content-Type {shown(ctype)}: send application/x-www-form-urlencoded or "
        "application/json"
    )


def _json_values(key: str, value: object) -> list[str]:
    if isinstance(value, list):
        return [_scalar(key, v) for v in value if v is not None]
    return [_scalar(key, value)]


def _scalar(key: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # numbers arrive as their text (see _loads)
        return value
    raise ParamError(f"{shown(key)} must be text, a number or a list of them")


def merge_fields(*sources: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Merge (key, value) pairs; `key[]` counts as `key`; later sources win per key."""
    merged: dict[str, list[str]] = {}
    for source in sources:
        seen: dict[str, list[str]] = {}
        for key, value in source:
            seen.setdefault(key.removesuffix("[]"), []).append(value)
        merged.update(seen)
    return merged


def _first(fields: Mapping[str, list[str]], name: str) -> str | None:
    for alias in _ALIASES[name]:
        values = fields.get(alias)
        if values:
            return values[0]
    return None


# ── Parameter sets ─────────────────────────────────────────────────────────────────────────


def parse_vehicles(values: Iterable[str], name: str = "vehicles") -> list[str] | None:
    """Vehicle numbers from repeated fields, comma-separated text or a JSON list (each
    checked like a text filter, at most MAX_VEHICLES)."""
    found: list[str] = []
    for value in values:
        text = check_chars(name, value.strip())
        if text.startswith("["):
            items = _loads(text, name)
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ParamError(f"{name}: expected a list of vehicle numbers")
            parts: list[str] = [str(item) for item in items]
        else:
            parts = text.split(",")
        found.extend(v for p in parts if (v := filter_value(p, name)) is not None)
        if len(found) > MAX_VEHICLES:
            raise ParamError(f"{name}: at most {MAX_VEHICLES} vehicles per request")
    unique = list(dict.fromkeys(found))
    return unique or None


def parse_trip_query(fields: Mapping[str, list[str]], *, now: datetime | None = None) -> TripQuery:
    """Check the trips-map filters: malformed values, end before start and a window longer
    than MAX_RANGE_DAYS (the window defaults to the 7 days up to `now`) raise ParamError."""
    vehicle_values: list[str] = []
    for alias in _ALIASES["vehicles"]:
        vehicle_values.extend(fields.get(alias, []))
    start_text = _date_text("start", _first(fields, "start")) or None
    end_text = _date_text("end", _first(fields, "end")) or None
    start = parse_when("start", start_text)
    end = parse_when("end", end_text, is_end=True)
    if start and end and end < start:
        raise ParamError(f"end ({end_text}) is before start ({start_text})")
    t1 = end or now or datetime.now(EAT)
    t0 = start or t1 - timedelta(days=7)
    if t1 < t0:
        raise ParamError(f"start ({start_text}) is in the future: give an end as well")
    _check_window(t0, t1)
    limit = parse_int(
        "limit",
        _first(fields, "limit"),
        default=MAX_TRIP_FEATURES,
        low=0,
        high=MAX_TRIP_FEATURES,
        clamp_high=True,
    )
    return TripQuery(
        vehicles=parse_vehicles(vehicle_values),
        driver=filter_value(_first(fields, "driver"), "driver"),
        cost_centre=filter_value(_first(fields, "cost_centre"), "cost_centre"),
        city=filter_value(_first(fields, "city"), "city"),
        start=start,
        end=end,
        limit=limit,
        start_text=start_text,
        end_text=end_text,
        after=parse_cursor(_first(fields, "cursor"), "trips_map"),
    )


def parse_inc_query(
    cluster: str | None,
    status: str | None,
    window: str | None,
    start: str | None,
    end: str | None,
    *,
    now: datetime | None = None,
) -> IncQuery:
    """Check the INC dashboard's parameters (docs/tickets.md): status and window from their
    lists, `from` before `to`, window=custom with both, at most MAX_RANGE_DAYS days."""
    status_text = (filter_value(status, "status") or "all").lower()
    if status_text not in TICKET_STATUSES:
        raise ParamError(
            f"status must be one of {', '.join(TICKET_STATUSES)} (got {shown(status_text)})"
        )
    window_text = check_text("window", window or "").lower() or None
    if window_text is not None and window_text not in TICKET_WINDOWS:
        raise ParamError(
            f"window must be one of {', '.join(TICKET_WINDOWS)} (got {shown(window_text)})"
        )
    start_text = _date_text("from", start) or None
    end_text = _date_text("to", end) or None
    t0 = parse_when("from", start_text)
    t1 = parse_when("to", end_text, is_end=True)
    if window_text is None:
        window_text = "custom" if (t0 is not None and t1 is not None) else "7d"
    span = TICKET_WINDOWS[window_text]
    if span is None and (t0 is None or t1 is None):
        raise ParamError("window=custom needs both 'from' and 'to'")
    to = t1 or now or datetime.now(EAT)
    frm = t0 or to - (span or timedelta(0))
    if frm >= to:
        raise ParamError(f"'from' ({start_text}) must be before 'to' ({end_text or 'now'})")
    _check_window(frm, to)
    return IncQuery(
        cluster=filter_value(cluster, "cluster"),
        status=status_text,
        window=window_text,
        start=t0,
        end=t1,
        start_text=start_text,
        end_text=end_text,
    )


def parse_fuel_query(
    start: str | None,
    end: str | None,
    cost_centre: str | None,
    city: str | None,
    vehicle_number: str | None,
    limit: str | None = None,
    *,
    today: date | None = None,
) -> FuelQuery:
    """Check the fuel endpoints' parameters: an inclusive EAT day range (default the last
    30 days), text filters, a plate with letters or digits, limit 1-5000 (default 1000)."""
    first, last = parse_day_range(
        start, end, default_days=FUEL_DEFAULT_DAYS, names=("from", "to"), today=today
    )
    vehicle = filter_value(vehicle_number, "vehicle_number")
    plate = None
    if vehicle is not None:
        # The rule of reporting.normalize_plate / ts_shared.normalize_plate: 'kca-542q' → 'KCA542Q'.
        plate = _NOT_PLATE.sub("", vehicle).upper() or None
        if plate is None:
            raise ParamError(f"vehicle_number has no letters or digits (got {shown(vehicle)})")
    return FuelQuery(
        start=first,
        end=last,
        cost_centre=filter_value(cost_centre, "cost_centre"),
        city=filter_value(city, "city"),
        vehicle_number=vehicle,
        plate=plate,
        limit=parse_int("limit", limit, default=1000, low=1, high=FUEL_MAX_LIMIT),
    )


# ── Lists, exports and track windows (issue #18) ───────────────────────────────────────────

LIST_DEFAULT_LIMIT = 200
LIST_MAX_LIMIT = 5_000
LIST_DEFAULT_DAYS = 7  # trips / stops without start: the 7 days up to end
ALARMS_DEFAULT_HOURS = 24  # alarms without start: the 24 hours up to end
MAX_CURSOR_LEN = 512
LIST_KINDS = {"trips": "t", "stops": "s", "alarms": "a", "trips_map": "m"}
SEVERITIES = ("critical", "high", "medium", "low", "info")
FORMATS = ("json", "csv")
_CURSOR_TEXT = re.compile(r"^[A-Za-z0-9_-]+$", re.ASCII)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Cursor:
    """A decoded keyset cursor: the (time, id) of the previous page's last row."""

    time: datetime
    id: int | str


@dataclass(frozen=True)
class Window:
    """A half-open time window [start, end) and the EAT days it covers (for file names)."""

    start: datetime
    end: datetime

    @property
    def first_day(self) -> date:
        return self.start.astimezone(EAT).date()

    @property
    def last_day(self) -> date:
        return (self.end - timedelta(microseconds=1)).astimezone(EAT).date()


def parse_list_limit(value: str | None) -> int:
    """Page size of the list endpoints, 1-5000 (default 200); more is refused, not clamped,
    so a client never silently gets fewer rows per page than it asked for."""
    return parse_int("limit", value, default=LIST_DEFAULT_LIMIT, low=1, high=LIST_MAX_LIMIT)


def parse_cursor(value: str | None, kind: str) -> Cursor | None:
    """Decode the opaque `cursor` of a list (`next_cursor` of the previous page): base64url of
    the JSON [kind, time, id] built by reporting.list_cursor. Anything else, or the cursor
    of another list, is refused with one sentence."""
    text = check_text("cursor", value or "", max_len=MAX_CURSOR_LEN)
    if not text:
        return None
    bad = ParamError("cursor is not a cursor of this list: pass next_cursor of the previous page")
    if not _CURSOR_TEXT.match(text):
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")
        data = _loads(raw, "cursor")
    except (ValueError, ParamError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise bad from None
    if not (isinstance(data, list) and len(data) == 3 and data[0] == LIST_KINDS.get(kind)):
        raise bad
    _, when, key = data
    if not isinstance(when, str) or not isinstance(key, str):
        raise bad
    try:
        moment = datetime.fromisoformat(when)
    except ValueError:
        raise bad from None
    if moment.tzinfo is None or not MIN_DAY <= moment.date() <= MAX_DAY:
        raise bad
    if kind == "stops":  # a text id (imei:start_us:p|i), JSON string
        return Cursor(moment, check_text("cursor", key))
    if not _WHOLE_NUMBER.match(key) or len(key) > 20:  # a bigint (kept as text by _loads)
        raise bad
    number = int(key)
    if not -(2**63) <= number < 2**63:  # psycopg would send a numeric: no such function
        raise bad
    return Cursor(moment, number)


def parse_bool(name: str, value: str | None, *, default: bool = False) -> bool:
    """true / false (also 1/0, yes/no, on/off); `default` when absent or empty."""
    text = check_text(name, value or "", max_len=16).lower()
    if not text:
        return default
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ParamError(f"{name} must be true or false (got {shown(text)})")


def parse_list_values(name: str, value: str | None) -> list[str] | None:
    """A comma-separated filter (alarm_type=1,overSpeed): each value checked, None = all."""
    if value is None:
        return None
    found = [v for part in value.split(",") if (v := filter_value(part, name)) is not None]
    return list(dict.fromkeys(found)) or None


def parse_severities(value: str | None) -> list[str] | None:
    """Alarm severities, comma-separated, each one of SEVERITIES; None = all."""
    found = parse_list_values("severity", value)
    for item in found or ():
        if item.lower() not in SEVERITIES:
            raise ParamError(f"severity must be one of {', '.join(SEVERITIES)} (got {shown(item)})")
    return [item.lower() for item in found] if found else None


def parse_format(value: str | None, accept: str | None) -> str:
    """`json` or `csv`: the `format` parameter wins; without it, an Accept header that names
    text/csv (with a q above 0) asks for CSV. Anything else is JSON."""
    text = check_text("format", value or "", max_len=16).lower()
    if text:
        if text not in FORMATS:
            raise ParamError(f"format must be json or csv (got {shown(text)})")
        return text
    for part in (accept or "")[:1000].split(","):
        media, _, params = part.partition(";")
        if media.strip().lower() == "text/csv" and not re.search(
            r"(?:^|;)\s*q\s*=\s*0(?:\.0*)?\s*(?:;|$)", params
        ):
            return "csv"
    return "json"


def parse_window(
    start: str | None,
    end: str | None,
    *,
    default: timedelta,
    max_span: timedelta = timedelta(days=MAX_RANGE_DAYS),
    now: datetime | None = None,
) -> Window:
    """The window [start, end) of a list, an export or a track: YYYY-MM-DD (EAT day; a
    date-only end includes that day) or ISO-8601 (naive = EAT). Without end: now; without
    start: `default` before end. start must be before end; the span at most `max_span`."""
    start_text = _date_text("start", start) or None
    end_text = _date_text("end", end) or None
    t0 = parse_when("start", start_text)
    t1 = parse_when("end", end_text, is_end=True) or now or datetime.now(EAT)
    t0 = t0 or t1 - default
    if t1 <= t0:
        raise ParamError(
            f"end ({end_text or 'now'}) must be after start ({start_text or t0.isoformat()})"
        )
    if t1 - t0 > max_span:
        if max_span == timedelta(days=MAX_RANGE_DAYS):
            _check_window(t0, t1)
        hours = int(max_span / timedelta(hours=1))
        raise ParamError(f"the window is limited to {hours} hours ({max_span.days} days)")
    return Window(t0, t1)


def parse_track_window(
    start: str | None, end: str | None, hours: int, *, now: datetime | None = None
) -> Window:
    """The range track's window: start/end as parse_window, at most MAX_TRACK_HOURS; the
    `hours` before end when only end is given."""
    return parse_window(
        start,
        end,
        default=timedelta(hours=hours),
        max_span=timedelta(hours=MAX_TRACK_HOURS),
        now=now,
    )
