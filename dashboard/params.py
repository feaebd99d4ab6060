"""Pure parsing of the read-API's request parameters (no I/O): dates, vehicles, bodies.

Every function raises `ParamError` with a sentence a dashboard developer can act on; the app
turns it into HTTP 422 `{"detail": "<sentence>"}`.

Times: a naive date or datetime is read in East Africa Time (UTC+3, no daylight saving), the
time zone of the fleet and of the dashboards' users; `Z` or an explicit offset wins.
A date-only `end` means the end of that day (the day is included).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from urllib.parse import parse_qs

EAT = timezone(timedelta(hours=3), "EAT")
MAX_TRIP_FEATURES = 50_000  # a browser map with more lines than this is unusable anyway
MAX_TRACK_HOURS = 168

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NO_FILTER = {"", "all", "*"}

# Accepted spellings of the trips-map fields (the SPAs were written against older versions).
_ALIASES: dict[str, tuple[str, ...]] = {
    "vehicles": ("vehicles", "vehicle", "vehicle_number", "vehicle_numbers", "vehicleNumbers"),
    "driver": ("driver", "driver_name", "driverName"),
    "cost_centre": ("cost_centre", "cost_center", "costCentre", "costCenter"),
    "city": ("city",),
    "start": ("start", "start_date", "startDate", "from", "date_from"),
    "end": ("end", "end_date", "endDate", "to", "date_to"),
    "limit": ("limit", "max_features"),
}


class ParamError(ValueError):
    """A request parameter is missing, malformed or out of range (HTTP 422)."""


@dataclass(frozen=True)
class TripQuery:
    """The filters of POST /webhook/fleet-dashboard, parsed and checked."""

    vehicles: list[str] | None
    driver: str | None
    cost_centre: str | None
    city: str | None
    start: datetime | None
    end: datetime | None
    limit: int


def filter_value(value: str | None) -> str | None:
    """A text filter, or None for absent / empty / "all" / "*"."""
    if value is None:
        return None
    text = value.strip()
    return None if text.lower() in _NO_FILTER else text


def parse_when(name: str, value: str | None, *, is_end: bool = False) -> datetime | None:
    """Parse `YYYY-MM-DD` or ISO-8601 into an aware datetime (naive = EAT).

    A date-only end is the start of the next day, so `end=2026-11-20` includes the 20th.
    """
    text = (value or "").strip()
    if not text:
        return None
    if _DATE_ONLY.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ParamError(f"{name}: {text!r} is not a valid date (use YYYY-MM-DD)") from None
        moment = datetime.combine(day, time.min, EAT)
        return moment + timedelta(days=1) if is_end else moment
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ParamError(
            f"{name}: {text!r} is not a date or time "
            "(use YYYY-MM-DD or ISO-8601 such as 2026-11-20T08:00:00+03:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=EAT)


def parse_day(name: str, value: str | None, default: date) -> date:
    """Parse an analytics day `YYYY-MM-DD` (EAT calendar day); `default` when absent."""
    text = (value or "").strip()
    if not text:
        return default
    if _DATE_ONLY.match(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise ParamError(f"{name}: {text!r} is not a valid date (use YYYY-MM-DD)")


def today_eat(now: datetime | None = None) -> date:
    """Today's date in East Africa Time."""
    return (now or datetime.now(EAT)).astimezone(EAT).date()


def parse_day_range(
    start: str | None, end: str | None, *, default_days: int = 7
) -> tuple[date, date]:
    """Inclusive EAT day range of the analytics endpoints; default: the last `default_days`."""
    end_day = parse_day("end", end, today_eat())
    start_day = parse_day("start", start, end_day - timedelta(days=default_days - 1))
    if end_day < start_day:
        raise ParamError(f"end ({end_day}) is before start ({start_day})")
    if (end_day - start_day).days > 366:
        raise ParamError("the date range is limited to 366 days")
    return start_day, end_day


def parse_hours(value: str | None, default: int = 24) -> int:
    """Track length in whole hours, 1-168."""
    text = (value or "").strip()
    if not text:
        return default
    try:
        hours = int(text)
    except ValueError:
        raise ParamError(
            f"hours must be a whole number between 1 and {MAX_TRACK_HOURS} (got {text!r})"
        ) from None
    if not 1 <= hours <= MAX_TRACK_HOURS:
        raise ParamError(f"hours must be between 1 and {MAX_TRACK_HOURS} (got {hours})")
    return hours


def parse_body(content_type: str | None, body: bytes) -> dict[str, list[str]]:
    """Decode a POST body into field → values (FIX-D01: the SPA posts a urlencoded form,
    other clients JSON). Content-Type decides; without one, a body starting with `{` is JSON.
    """
    ctype = (content_type or "").split(";")[0].strip().lower()
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return {}
    if ctype == "application/json" or ctype.endswith("+json") or (not ctype and text[0] == "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ParamError(f"the body is not valid JSON: {exc.msg} at {exc.pos}") from None
        if not isinstance(data, dict):
            raise ParamError('the JSON body must be an object such as {"cost_centre": "..."}')
        return {str(k): _json_values(v) for k, v in data.items() if v is not None}
    if ctype in ("application/x-www-form-urlencoded", "text/plain", ""):
        return parse_qs(text, keep_blank_values=True)
    raise ParamError(
        f"unsupported Content-Type {ctype!r}: send application/x-www-form-urlencoded or "
        "application/json"
    )


def _json_values(value: object) -> list[str]:
    if isinstance(value, list):
        return [_scalar(v) for v in value if v is not None]
    return [_scalar(value)]


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


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


def parse_vehicles(values: Iterable[str]) -> list[str] | None:
    """Vehicle numbers from repeated fields, comma-separated text or a JSON list."""
    found: list[str] = []
    for value in values:
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                raise ParamError(f"vehicles: {text!r} is not a valid JSON list") from None
            if not isinstance(items, list):
                raise ParamError("vehicles: expected a list of vehicle numbers")
            parts = [str(item) for item in items]
        else:
            parts = text.split(",")
        found.extend(p.strip() for p in parts if filter_value(p) is not None)
    unique = list(dict.fromkeys(found))
    return unique or None


def parse_trip_query(fields: Mapping[str, list[str]]) -> TripQuery:
    """Check the trips-map filters; end before start and malformed values raise ParamError."""
    vehicle_values: list[str] = []
    for alias in _ALIASES["vehicles"]:
        vehicle_values.extend(fields.get(alias, []))
    start = parse_when("start", _first(fields, "start"))
    end = parse_when("end", _first(fields, "end"), is_end=True)
    if start and end and end < start:
        raise ParamError(f"end ({end.isoformat()}) is before start ({start.isoformat()})")
    limit_text = (_first(fields, "limit") or "").strip()
    limit = MAX_TRIP_FEATURES
    if limit_text:
        try:
            limit = int(limit_text)
        except ValueError:
            raise ParamError(f"limit must be a whole number (got {limit_text!r})") from None
        if limit < 0:
            raise ParamError("limit must be 0 or more")
        limit = min(limit, MAX_TRIP_FEATURES)
    return TripQuery(
        vehicles=parse_vehicles(vehicle_values),
        driver=filter_value(_first(fields, "driver")),
        cost_centre=filter_value(_first(fields, "cost_centre")),
        city=filter_value(_first(fields, "city")),
        start=start,
        end=end,
        limit=limit,
    )
