"""Pure parse functions of the push receiver: decoded push items → typed rows.

Nothing here does I/O. Each `parse_*` takes one decoded item (a dict) and returns the rows
it maps to, or raises `ItemError` with a human reason; `parse_delivery` applies the right one
to every item of a delivery, so one bad item never stops the others.

Field names follow `docs/jimi-open-api.md` §4 (IoT-hub paths, Open-API push) and the
simulator's push shapes; for the unpublished payloads (`/pushobd` aside) the parsers accept
the likely spellings and keep the whole item in `raw`, so nothing is lost when we guess wrong.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache, cached_property
from typing import Any, NamedTuple

from ingest.quality import QualityRules, coordinate_drop_reason, fix_drop_reason
from ts_shared import clean, clean_bool, clean_int, clean_num, clean_ts

# ─────────────────────────────────────────────────────────────────────────────
# Rows (one NamedTuple per table; field order = column order in the INSERT)
# ─────────────────────────────────────────────────────────────────────────────


class PositionRow(NamedTuple):
    """tracksolid.position_history"""

    imei: str
    gps_time: datetime
    lat: float
    lng: float
    speed_kmh: float | None
    direction_deg: int | None
    acc_on: bool | None
    pos_type: str | None
    satellites: int | None
    gps_mode: int | None
    altitude_m: float | None
    source: str


class LiveRow(NamedTuple):
    """tracksolid.live_positions (the newest push fix per IMEI of a delivery)"""

    imei: str
    gps_time: datetime
    lat: float
    lng: float
    speed_kmh: float | None
    direction_deg: int | None
    acc_on: bool | None
    pos_type: str | None
    satellites: int | None
    source: str


class DeviceRow(NamedTuple):
    """tracksolid.devices (registration of IMEIs first seen by push)"""

    imei: str
    device_name: str | None


class HeartbeatRow(NamedTuple):
    """tracksolid.heartbeats"""

    imei: str
    gate_time: datetime
    power_level: int | None
    gsm_signal: int | None
    acc_on: bool | None
    oil_ele: str | None
    gps_pos: bool | None
    power_status: str | None
    fortify: bool | None
    raw: dict[str, Any]


class AlarmRow(NamedTuple):
    """tracksolid.alarms"""

    imei: str
    alarm_time: datetime
    alarm_type: str
    alarm_name: str | None
    lat: float | None
    lng: float | None
    speed_kmh: float | None
    source: str
    raw: dict[str, Any]


class EventRow(NamedTuple):
    """tracksolid.device_events"""

    imei: str
    event_time: datetime
    event_type: str
    event_content: str | None
    timezone: str | None
    source: str
    raw: dict[str, Any]


class LbsRow(NamedTuple):
    """tracksolid.lbs_readings"""

    imei: str
    gate_time: datetime
    mcc: str | None
    mnc: str | None
    cells: Any
    post_type: int | None
    raw: dict[str, Any]


class ObdRow(NamedTuple):
    """tracksolid.obd_readings"""

    imei: str
    reading_time: datetime
    odometer_km: float | None
    accumulated_mileage_km: float | None
    remaining_fuel_l: float | None
    remaining_fuel_pct: float | None
    coolant_temp_c: float | None
    battery_voltage_v: float | None
    rpm: float | None
    speed_kmh: float | None
    vin: str | None
    source: str
    raw: dict[str, Any]


class FaultRow(NamedTuple):
    """tracksolid.fault_codes"""

    imei: str
    reported_at: datetime
    code: str
    description: str | None
    raw: dict[str, Any]


class TripRow(NamedTuple):
    """tracksolid.trips"""

    imei: str
    start_time: datetime
    end_time: datetime | None
    start_lat: float | None
    start_lng: float | None
    end_lat: float | None
    end_lng: float | None
    distance_km: float | None
    driving_time_s: int | None
    avg_speed_kmh: float | None
    max_speed_kmh: float | None
    start_mileage_km: float | None
    end_mileage_km: float | None
    fuel_l: float | None
    source: str
    raw: dict[str, Any]


class FuelRow(NamedTuple):
    """tracksolid.fuel_readings"""

    imei: str
    reading_time: datetime
    fuel_level: float | None
    unit: str | None
    raw: dict[str, Any]


class TemperatureRow(NamedTuple):
    """tracksolid.temperature_readings"""

    imei: str
    reading_time: datetime
    sensor: str
    temperature_c: float | None
    raw: dict[str, Any]


Row = (
    PositionRow
    | HeartbeatRow
    | AlarmRow
    | EventRow
    | LbsRow
    | ObdRow
    | FaultRow
    | TripRow
    | FuelRow
    | TemperatureRow
    | DeviceRow
)

# ─────────────────────────────────────────────────────────────────────────────
# Context, errors, results
# ─────────────────────────────────────────────────────────────────────────────


class ItemError(ValueError):
    """One item cannot be mapped; the reason is stored with the item in the inbox."""


@dataclass(frozen=True)
class ParseContext:
    """What parsing needs from outside: the clock and the GPS quality filter's settings
    (GPS_FILTER_MAX_FUTURE_S, GPS_FILTER_MAX_SPEED_KMH: the poller's rules, ingest/quality.py)."""

    now: datetime
    max_future_s: int = 24 * 3600
    max_speed_kmh: float = 250.0

    @property
    def latest(self) -> datetime:
        """The latest acceptable device time."""
        return self.now + timedelta(seconds=self.max_future_s)

    @cached_property
    def rules(self) -> QualityRules:
        """The quality filter's rules (built once per context)."""
        return QualityRules(max_speed_kmh=self.max_speed_kmh, max_future_s=self.max_future_s)


@dataclass
class ParsedDelivery:
    """Rows of one delivery, grouped by table, plus the items that failed and why."""

    item_count: int = 0
    items_ok: int = 0
    rows: dict[type[Any], list[Any]] = field(default_factory=dict)
    devices: dict[str, str | None] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    # Implied speed above which a pushed fix is flagged (the store flags in SQL).
    max_speed_kmh: float = 250.0

    @property
    def live(self) -> list[LiveRow]:
        """The newest fix per IMEI, by IMEI: what may move the live marker if it is not a
        jump (the store decides that in SQL, against the stored track)."""
        newest: dict[str, PositionRow] = {}
        for pos in self.rows.get(PositionRow, []):
            seen = newest.get(pos.imei)
            if seen is None or pos.gps_time > seen.gps_time:
                newest[pos.imei] = pos
        return [LiveRow(*p[:9], source=p.source) for _, p in sorted(newest.items())]

    @property
    def items_failed(self) -> int:
        """Items that could not be mapped."""
        return len(self.errors)

    @property
    def status(self) -> str:
        """The push_inbox status: `parsed` when every item mapped, else `partial`."""
        return "partial" if self.errors else "parsed"

    def error_text(self, limit: int = 2000) -> str | None:
        """The reasons as one line (for ingestion_log.error), None when there are none."""
        if not self.errors:
            return None
        text = "; ".join(f"item {e['index']}: {e['reason']}" for e in self.errors)
        return text[:limit]


# ─────────────────────────────────────────────────────────────────────────────
# Field helpers
# ─────────────────────────────────────────────────────────────────────────────

_IMEI_RE = re.compile(r"[0-9A-Za-z._-]{4,40}")
_SMALLINT = 32767
_EPOCH_FLOOR = datetime.fromisoformat("2000-01-01T00:00:00+00:00")


def _first(item: Mapping[str, Any], keys: Sequence[str]) -> Any:
    """The first present, non-empty value among `keys` (None if none)."""
    for key in keys:
        value = item.get(key)
        if value is not None and value != "":
            return value
    return None


def text(value: Any, limit: int = 500) -> str | None:
    """`clean` plus: NUL bytes removed (PostgreSQL text refuses them), length capped."""
    out = clean(value)
    if out is None:
        return None
    if "\x00" in out:
        out = out.replace("\x00", "") or None
    return out[:limit] if out else None


def fast_num(value: Any) -> float | None:
    """`clean_num` with a fast path for the plain numeric strings most items carry."""
    if type(value) is str:
        try:
            number = float(value)
        except ValueError:
            return clean_num(value)
        return number if math.isfinite(number) else None
    return clean_num(value)


def small(value: Any, lo: int = -_SMALLINT, hi: int = _SMALLINT) -> int | None:
    """An int within [lo, hi] (smallint by default), else None."""
    as_float = fast_num(value)
    number = None if as_float is None else round(as_float)
    if number is None or number < lo or number > hi:
        return None
    return number


def num(value: Any, lo: float = -1e12, hi: float = 1e12) -> float | None:
    """A float within [lo, hi], else None."""
    number = fast_num(value)
    if number is None or number < lo or number > hi:
        return None
    return number


def parse_imei(item: Mapping[str, Any], keys: Sequence[str] = ("deviceImei", "imei")) -> str:
    """The device IMEI of an item; `ItemError` when missing or not IMEI-like."""
    raw = _first(item, keys)
    value = text(raw, 64)
    if value is None:
        raise ItemError(f"missing {keys[0]}")
    if not _IMEI_RE.fullmatch(value):
        raise ItemError(f"invalid {keys[0]} {value[:40]!r}")
    return value


def parse_time(
    item: Mapping[str, Any],
    keys: Sequence[str],
    ctx: ParseContext,
    *,
    required: bool = True,
    check_future: bool = True,
) -> datetime | None:
    """A UTC time from the first present key; `ItemError` when required and missing, or when
    present but unparsable, before 2000, or further in the future than the context allows
    (unless `check_future` is false: GPS fixes leave that to the quality filter)."""
    raw = _first(item, keys)
    if raw is None:
        if required:
            raise ItemError(f"missing {keys[0]}")
        return None
    try:
        moment = clean_ts(raw)
    except (OverflowError, ValueError, OSError):  # e.g. year 1 with an offset, pushed past 1 AD
        moment = None
    if moment is None:
        if required:
            raise ItemError(f"unparsable {keys[0]} {str(raw)[:40]!r}")
        return None
    if moment < _EPOCH_FLOOR:
        raise ItemError(f"{keys[0]} {str(raw)[:40]!r} is before 2000")
    if check_future and moment > ctx.latest:
        raise ItemError(f"{keys[0]} {str(raw)[:40]!r} is in the future")
    return moment


def valid_point(lat: float | None, lng: float | None) -> bool:
    """True for a real coordinate: both present, in range, and not the 0,0 "no fix" point
    (the GPS quality filter's coordinate rule, ingest/quality.py)."""
    if lat is None or lng is None:
        return False
    return coordinate_drop_reason(lat, lng) is None


def optional_point(lat_raw: Any, lng_raw: Any) -> tuple[float | None, float | None]:
    """A coordinate pair for tables where position is optional: invalid → (None, None)."""
    lat, lng = clean_num(lat_raw), clean_num(lng_raw)
    if valid_point(lat, lng):
        return lat, lng
    return None, None


def direction(value: Any) -> int | None:
    """Heading in degrees 0 to 360; the API's -1 (unknown) and junk become None."""
    return small(value, 0, 360)


_POS_TYPES = {"1": "GPS", "2": "LBS", "3": "WIFI", "4": "BEACON"}


def pos_type(value: Any) -> str | None:
    """`postType`/`posType` as the poller stores it: 1→GPS, 2→LBS, 3→WIFI; text upper-cased."""
    raw = text(value, 20)
    if raw is None:
        return None
    number = clean_int(raw)
    if number is not None and str(number) in _POS_TYPES:
        return _POS_TYPES[str(number)]
    return raw.upper()


def json_field(value: Any) -> Any:
    """A field that may be a JSON object/array or a JSON-encoded string of one (a string that
    is not JSON, or nests deeper than `MAX_JSON_DEPTH`, stays the string)."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in {"{", "["}:
            try:
                return sanitize(loads_json(stripped, "field")[0])
            except MalformedDeliveryError:
                return value
    return value


def km_from_m(value: Any) -> float | None:
    """Metres (what the API sends for distances and cumulative mileage) → km."""
    metres = num(value, 0, 1e10)
    return None if metres is None else metres / 1000.0


# ─────────────────────────────────────────────────────────────────────────────
# Per-path parsers (IoT-hub push family)
# ─────────────────────────────────────────────────────────────────────────────

_GPS_TIME_KEYS = ("gpsTime", "gateTime")


def parse_gps(item: Mapping[str, Any], ctx: ParseContext) -> list[Row]:
    """/pushgps item → position_history row.

    The poller's quality filter decides (ingest/quality.py): a fix it drops (0,0, out of
    range, too far in the future) is an item error whose reason starts with the same code.
    Implausible jumps are flagged by the store, against the device's stored track."""
    imei = parse_imei(item)
    gps_time = parse_time(item, _GPS_TIME_KEYS, ctx, check_future=False)
    assert gps_time is not None
    lat, lng = fast_num(item.get("lat")), fast_num(item.get("lng"))
    if lat is None or lng is None:
        raise ItemError("missing lat/lng")
    reason = fix_drop_reason(lat, lng, gps_time, ctx.now, ctx.rules)
    if reason == "future_time":
        raise ItemError(f"future_time: gpsTime {gps_time:%Y-%m-%d %H:%M:%S} is in the future")
    if reason is not None:
        raise ItemError(f"no usable fix ({reason}: lat={lat}, lng={lng})")
    return [
        PositionRow(
            imei=imei,
            gps_time=gps_time,
            lat=lat,
            lng=lng,
            speed_kmh=num(_first(item, ("gpsSpeed", "speed")), 0, 2000),
            direction_deg=direction(item.get("direction")),
            acc_on=clean_bool(item.get("acc")),
            pos_type=pos_type(_first(item, ("postType", "posType"))),
            satellites=small(_first(item, ("satelliteNum", "satellite")), 0, 255),
            gps_mode=small(item.get("gpsMode")),
            altitude_m=num(item.get("altitude"), -1000, 100000),
            source="push",
        )
    ]


def parse_heartbeat(item: Mapping[str, Any], ctx: ParseContext) -> list[Row]:
    """/pushhb item → heartbeats row."""
    imei = parse_imei(item)
    gate_time = parse_time(item, ("gateTime", "hbTime"), ctx)
    assert gate_time is not None
    return [
        HeartbeatRow(
            imei=imei,
            gate_time=gate_time,
            power_level=small(item.get("powerLevel")),
            gsm_signal=small(_first(item, ("gsmSign", "gsmSignal"))),
            acc_on=clean_bool(item.get("acc")),
            oil_ele=text(item.get("oilEle"), 50),
            gps_pos=clean_bool(item.get("gpsPos")),
            power_status=text(item.get("powerStatus"), 50),
            fortify=clean_bool(item.get("fortify")),
            raw=dict(item),
        )
    ]


# Names of the documented alarm type ids (used only when the push carries no name).
ALARM_NAMES: dict[str, str] = {
    "1": "SOS alarm",
    "2": "Power cut alarm",
    "3": "Vibration alarm",
    "4": "Enter geofence",
    "5": "Exit geofence",
    "6": "Overspeed alarm",
    "9": "Displacement alarm",
    "12": "Booting",
    "17": "Power off",
    "90": "Low battery",
    "147": "Collision",
    "197": "Engine on",
    "198": "Engine off",
}


def parse_alarm(item: Mapping[str, Any], ctx: ParseContext) -> list[Row]:
    """/pushalarm item (top `imei, type, msgClass`; `msg` object or JSON string) → alarms row."""
    imei = parse_imei(item, ("imei", "deviceImei"))
    msg_raw = item.get("msg")
    msg: Mapping[str, Any]
    if msg_raw is None or msg_raw == "":
        msg = item  # some senders flatten the message into the item
    else:
        decoded = json_field(msg_raw)
        if not isinstance(decoded, dict):
            raise ItemError("msg is not a JSON object")
        msg = decoded
    alarm_type = text(_first(msg, ("alertType", "alarmType", "type")), 100) or text(
        item.get("type"), 100
    )
    if alarm_type is None:
        raise ItemError("missing alertType")
    alarm_time = parse_time(msg, ("alarmTime", "alertTime", "gpsTime", "gateTime"), ctx)
    assert alarm_time is not None
    lat, lng = optional_point(msg.get("lat"), msg.get("lng"))
    name = text(_first(msg, ("alarmName", "alertName", "alarmTypeName", "alertTypeName")), 200)
    raw = dict(item)
    if msg is not item:
        raw["msg"] = msg  # store the decoded message, not the JSON string
    return [
        AlarmRow(
            imei=imei,
            alarm_time=alarm_time,
            alarm_type=alarm_type,
            alarm_name=name or ALARM_NAMES.get(alarm_type),
            lat=lat,
            lng=lng,
            speed_kmh=num(_first(msg, ("gpsSpeed", "speed")), 0, 2000),
            source="push",
            raw=raw,
        )
    ]


def parse_event(item: Mapping[str, Any], ctx: ParseContext) -> list[Row]:
    """/pushevent item (LOGIN/LOGOUT) → device_events row."""
    imei = parse_imei(item)
    event_time = parse_time(item, ("gateTime", "eventTime", "time"), ctx)
    assert event_time is not None
    event_type = text(_first(item, ("type", "eventType")), 100)
    if event_type is None:
        raise ItemError("missing type")
    return [
        EventRow(
            imei=imei,
            event_time=event_time,
            event_type=event_type.upper(),
            event_content=None,
            timezone=text(item.get("timezone"), 50),
            source="push",
            raw=dict(item),
        )
    ]


def parse_iothub_event(item: Mapping[str, Any], ctx: ParseContext) -> list[Row]:
    """/pushIothubEvent item (`gateTime` unix seconds) → device_events row."""
    imei = parse_imei(item)
    event_time = parse_time(item, ("gateTime", "eventTime", "time"), ctx)
    assert event_time is not None
    event_type = text(_first(item, ("eventType", "type")), 100)
    if event_type is None:
        raise ItemError("missing eventType")
    content = item.get("eventContent")
    content_text: str | None
    if isinstance(content, dict | list):
        content_text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    else:
        content_text = text(content, 10000)
    return [
        EventRow(
            imei=imei,
            event_time=event_time,
            event_type=event_type,
            event_content=content_text,
            timezone=text(item.get("timezone"), 50),
            source="push_iothub",
            raw=dict(item),
        )
    ]


def parse_lbs(item: Mapping[str, Any], ctx: ParseContext) -> list[Row]:
    """/pushlbs item (`lbsJson` = {mcc, mnc, cellList}, object or JSON string) → lbs_readings."""
    imei = parse_imei(item)
    gate_time = parse_time(item, ("gateTime", "gpsTime"), ctx)
    assert gate_time is not None
    lbs = json_field(item.get("lbsJson"))
    if not isinstance(lbs, dict):
        lbs = {}
    cells = lbs.get("cellList")
    if cells is None:
        cells = lbs.get("cells")
    raw = dict(item)
    if lbs:
        raw["lbsJson"] = lbs
    return [
        LbsRow(
            imei=imei,
            gate_time=gate_time,
            mcc=text(lbs.get("mcc"), 10),
            mnc=text(lbs.get("mnc"), 10),
            cells=cells if isinstance(cells, list | dict) else None,
            post_type=small(_first(item, ("postType", "posType"))),
            raw=raw,
        )
    ]


def parse_obd(item: Mapping[str, Any], ctx: ParseContext) -> list[Row]:
    """/pushobd item (the polling shape plus `deviceImei`/`gateTime`) → obd_readings row."""
    imei = parse_imei(item)
    reading_time = parse_time(
        item, ("dataReportTime", "reportTime", "gateTime", "gpsTime", "time"), ctx
    )
    assert reading_time is not None
    return [
        ObdRow(
            imei=imei,
            reading_time=reading_time,
            odometer_km=num(_first(item, ("odometerReading", "odometer")), 0, 1e8),
            accumulated_mileage_km=num(item.get("deviceAccumulatedMileage"), 0, 1e8),
            remaining_fuel_l=num(item.get("remainingFuel"), 0, 1e6),
            remaining_fuel_pct=num(item.get("remainingFuelPercentage"), 0, 1000),
            coolant_temp_c=num(_first(item, ("coolantTemperature", "coolantTemp")), -100, 1000),
            battery_voltage_v=num(
                _first(item, ("vehicleBatterVoltage", "vehicleBatteryVoltage")), 0, 1000
            ),
            rpm=num(_first(item, ("currentRPM", "rpm")), 0, 100000),
            speed_kmh=num(_first(item, ("currentSpeed", "speed")), 0, 2000),
            vin=text(_first(item, ("vin", "VIN")), 40),
            source="push",
            raw=dict(item),
        )
    ]


_FAULT_TIME_KEYS = ("faultTime", "reportTime", "gateTime", "gpsTime", "dataReportTime", "time")
_FAULT_CODE_KEYS = ("faultCode", "faultCodes", "dtc", "dtcCode", "dtcs", "code", "errorCode")
_FAULT_DESC_KEYS = ("faultDesc", "faultDescription", "description", "desc", "faultInfo")


def parse_fault(item: Mapping[str, Any], ctx: ParseContext) -> list[Row]:
    """/pushfaultinfo item → one fault_codes row per code (a list or comma list → several)."""
    imei = parse_imei(item)
    reported_at = parse_time(item, _FAULT_TIME_KEYS, ctx)
    assert reported_at is not None
    raw_codes = json_field(_first(item, _FAULT_CODE_KEYS))
    entries: list[tuple[str, str | None]] = []
    default_desc = text(_first(item, _FAULT_DESC_KEYS), 1000)
    values: Iterable[Any]
    if isinstance(raw_codes, list):
        values = raw_codes
    elif raw_codes is None:
        values = []
    else:
        values = str(raw_codes).split(",")
    for value in values:
        if isinstance(value, dict):
            code = text(_first(value, _FAULT_CODE_KEYS), 50)
            desc = text(_first(value, _FAULT_DESC_KEYS), 1000) or default_desc
        else:
            code, desc = text(value, 50), default_desc
        if code:
            entries.append((code, desc))
    if not entries:
        raise ItemError("no fault code field")
    raw = dict(item)
    return [FaultRow(imei, reported_at, code, desc, raw) for code, desc in dict(entries).items()]


def parse_trip(item: Mapping[str, Any], ctx: ParseContext) -> list[Row]:
    """/pushtripreport item → trips row (`distance`/`totalMileage`/`*Mileage` in metres)."""
    imei = parse_imei(item)
    start = parse_time(item, ("startTime", "beginTime"), ctx)
    assert start is not None
    end = parse_time(item, ("endTime",), ctx, required=False)
    if end is not None and end < start:
        raise ItemError("endTime before startTime")
    start_lat, start_lng = optional_point(item.get("startLat"), item.get("startLng"))
    end_lat, end_lng = optional_point(item.get("endLat"), item.get("endLng"))
    if (km := num(_first(item, ("distanceKm", "mileageKm")), 0, 1e6)) is not None:
        distance_km: float | None = km
    else:
        distance_km = km_from_m(_first(item, ("distance", "totalMileage", "mileage")))
    if distance_km is not None and distance_km >= 1e6:
        distance_km = None
    driving = clean_int(_first(item, ("runTimeSecond", "travelTime", "drivingTime", "duration")))
    if driving is None and end is not None:
        driving = int((end - start).total_seconds())
    if driving is not None and not 0 <= driving < 2**31:
        driving = None
    return [
        TripRow(
            imei=imei,
            start_time=start,
            end_time=end,
            start_lat=start_lat,
            start_lng=start_lng,
            end_lat=end_lat,
            end_lng=end_lng,
            distance_km=distance_km,
            driving_time_s=driving,
            avg_speed_kmh=num(_first(item, ("avgSpeed", "averageSpeed")), 0, 2000),
            max_speed_kmh=num(item.get("maxSpeed"), 0, 2000),
            start_mileage_km=km_from_m(item.get("startMileage")),
            end_mileage_km=km_from_m(item.get("endMileage")),
            fuel_l=num(_first(item, ("fuel", "fuelConsumption")), 0, 1e6),
            source="push",
            raw=dict(item),
        )
    ]


_READING_TIME_KEYS = ("gateTime", "gpsTime", "reportTime", "dataReportTime", "time")


def parse_oil(item: Mapping[str, Any], ctx: ParseContext) -> list[Row]:
    """/pushoil item → fuel_readings row (level as sent; unit when the item names one)."""
    imei = parse_imei(item)
    at = parse_time(item, _READING_TIME_KEYS, ctx)
    assert at is not None
    level = num(_first(item, ("oil", "oilValue", "oilLevel", "fuel", "fuelLevel", "value")))
    return [FuelRow(imei, at, level, text(_first(item, ("unit", "oilUnit")), 20), dict(item))]


_TEMP_KEYS = ("temperature", "tem", "temp", "temperatureValue", "value")
_TEMP_NUMBERED = re.compile(r"(?:tem|temp|temperature)_?(\d{1,2})", re.IGNORECASE)


def parse_temperature(item: Mapping[str, Any], ctx: ParseContext) -> list[Row]:
    """/pushtem item → temperature_readings rows: one per sensor (`tem1`, `tem2`... or one
    `temperature` value with an optional `sensor`/`sensorId`/`channel`)."""
    imei = parse_imei(item)
    at = parse_time(item, _READING_TIME_KEYS, ctx)
    assert at is not None
    raw = dict(item)
    rows: list[Row] = []
    for key, value in item.items():
        match = _TEMP_NUMBERED.fullmatch(key)
        if match:
            rows.append(TemperatureRow(imei, at, match.group(1), num(value, -300, 3000), raw))
    if not rows:
        sensor = text(_first(item, ("sensor", "sensorId", "sensorNo", "channel", "index")), 50)
        value = num(_first(item, _TEMP_KEYS), -300, 3000)
        rows.append(TemperatureRow(imei, at, sensor or "", value, raw))
    return rows


# ─────────────────────────────────────────────────────────────────────────────
# Open-API push family (msgType + data)
# ─────────────────────────────────────────────────────────────────────────────


def parse_openapi_alarm(item: Mapping[str, Any], ctx: ParseContext) -> list[Row]:
    """`jimi.push.device.alarm` data → alarms row (push names: `alarmType`/`alarmName`)."""
    imei = parse_imei(item, ("imei", "deviceImei"))
    alarm_type = text(_first(item, ("alarmType", "alertTypeId", "alertType")), 100)
    if alarm_type is None:
        raise ItemError("missing alarmType")
    alarm_time = parse_time(item, ("alarmTime", "alertTime", "gpsTime"), ctx)
    assert alarm_time is not None
    lat, lng = optional_point(item.get("lat"), item.get("lng"))
    name = text(_first(item, ("alarmName", "alarmTypeName", "alertTypeName")), 200)
    rows: list[Row] = [
        AlarmRow(
            imei=imei,
            alarm_time=alarm_time,
            alarm_type=alarm_type,
            alarm_name=name or ALARM_NAMES.get(alarm_type),
            lat=lat,
            lng=lng,
            speed_kmh=num(_first(item, ("speed", "gpsSpeed")), 0, 2000),
            source="push_openapi",
            raw=dict(item),
        )
    ]
    device_name = text(item.get("deviceName"), 200)
    if device_name:
        rows.append(DeviceRow(imei, device_name))
    return rows


Parser = Callable[[Mapping[str, Any], ParseContext], list[Row]]

IOTHUB_PARSERS: dict[str, Parser] = {
    "/pushgps": parse_gps,
    "/pushhb": parse_heartbeat,
    "/pushalarm": parse_alarm,
    "/pushevent": parse_event,
    "/pushlbs": parse_lbs,
    "/pushobd": parse_obd,
    "/pushfaultinfo": parse_fault,
    "/pushtripreport": parse_trip,
    "/pushoil": parse_oil,
    "/pushtem": parse_temperature,
    "/pushIothubEvent": parse_iothub_event,
}

OPENAPI_PARSERS: dict[str, Parser] = {
    "jimi.push.device.alarm": parse_openapi_alarm,
}


def parser_for(path: str, msg_type: str | None) -> Parser | None:
    """The item parser of a push path (or of an Open-API msgType); None = store raw only."""
    if msg_type is not None:
        return OPENAPI_PARSERS.get(msg_type)
    return IOTHUB_PARSERS.get(path)


def parse_delivery(
    parser: Parser | None, items: Sequence[Any], ctx: ParseContext
) -> ParsedDelivery:
    """Apply `parser` to every item; failures become `errors` entries {index, reason, item}.

    With no parser (an Open-API msgType we do not map) the items are counted as stored raw.
    Rows come out sorted by key so concurrent deliveries lock rows in the same order.
    """
    out = ParsedDelivery(item_count=len(items), max_speed_kmh=ctx.max_speed_kmh)
    if parser is None:
        out.items_ok = len(items)
        return out
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            out.errors.append({"index": index, "reason": "item is not a JSON object", "item": item})
            continue
        try:
            rows = parser(item, ctx)
        except ItemError as exc:
            out.errors.append({"index": index, "reason": str(exc), "item": item})
            continue
        except Exception as exc:  # a parser bug must cost one item, not the delivery
            reason = f"internal parse error: {type(exc).__name__}: {exc}"
            out.errors.append({"index": index, "reason": reason[:300], "item": item})
            continue
        out.items_ok += 1
        for row in rows:
            if isinstance(row, DeviceRow):
                out.devices[row.imei] = row.device_name
                continue
            out.rows.setdefault(type(row), []).append(row)
            out.devices.setdefault(row.imei, None)
    for table_rows in out.rows.values():
        table_rows.sort(key=lambda r: (r[0], r[1]))
    return out


# ─────────────────────────────────────────────────────────────────────────────
# Decoding the delivery's JSON (before any item is looked at)
# ─────────────────────────────────────────────────────────────────────────────


class MalformedDeliveryError(ValueError):
    """The delivery itself cannot be read (bad form, bad JSON, wrong shape): HTTP 400."""


def sanitize(value: Any) -> Any:
    """Drop what PostgreSQL cannot store: NUL characters and unpaired surrogates."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, list):
        return [sanitize(v) for v in value]
    if isinstance(value, dict):
        return {sanitize(k): sanitize(v) for k, v in value.items()}
    return value


MAX_JSON_DEPTH = 32  # JIMI payloads nest 2-3 deep; the bound keeps every recursion shallow
_MAX_INT_DIGITS = 300  # larger integers do not fit a float (the typed columns) and stay text
_MAX_FLOAT_TEXT = 100
_MAX_EXPONENT = 300
_NOT_STRUCTURE = bytes(range(256)).translate(None, b'"[]{}')  # every byte but these five
_COLLAPSE = bytes.maketrans(b"[]{}", b"()()")


@cache
def _bounded(limit: int) -> re.Pattern[bytes]:
    """A regex matching `(`/`)` sequences whose depth never exceeds `limit`: `limit` nested
    possessive groups. The regex engine runs it on its own heap stack, in linear time."""
    pattern = ""
    for _ in range(limit):
        pattern = rf"(?:\({pattern}\))*+"
    return re.compile(pattern.encode())


def json_too_deep(doc: str | bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON text `doc` nests arrays/objects deeper than `limit`.

    No recursion and no per-character Python loop (a hostile 1 MiB body costs under 10 ms,
    less than parsing it): escaped backslashes and quotes are dropped, every byte but quotes
    and brackets deleted, the string contents (odd pieces between quotes) cut out, and what
    remains — the brackets outside strings — matched against a bounded-depth regex. Invalid
    JSON may be reported as too deep; a parser refuses it anyway.
    """
    raw = doc.encode("utf-8", "surrogatepass") if isinstance(doc, str) else doc
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = raw.translate(_COLLAPSE, _NOT_STRUCTURE)
    if b'"' in marks:
        # Adjacent quotes enclose no bracket (an empty string, or the gap between two strings):
        # dropping them keeps what is inside/outside strings; usually no quote is left.
        marks = marks.replace(b'""', b"")
    if b'"' in marks:
        marks = b"".join(marks.split(b'"')[0::2])
    if marks.count(b"(") <= limit:
        return False
    # Closers appended so an unclosed (truncated) text is judged by its depth alone: the
    # match then stops at a `(` only where the depth would pass `limit`.
    marks += b")" * (limit + 1)
    match = _bounded(limit).match(marks)
    end = match.end() if match else 0
    return marks[end : end + 1] == b"("


def loads_json(raw: str, what: str, *, depth_checked: bool = False) -> tuple[Any, bool]:
    """`json.loads` with the receiver's limits; returns (value, changed).

    Refuses (`MalformedDeliveryError`) text that is not JSON or nests deeper than
    `MAX_JSON_DEPTH`. Numbers that no column and no jsonb can hold — `NaN`, `Infinity`,
    `1e999`, a 400-digit integer, an exponent past ±300 — are kept as their text (a string),
    so the item still stores and the field maps to NULL; `changed` then says the value no
    longer matches `raw` exactly.
    """
    if not depth_checked and json_too_deep(raw):
        raise MalformedDeliveryError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    changed = False

    def as_float(text: str) -> float | str:
        nonlocal changed
        if len(text) <= _MAX_FLOAT_TEXT:
            exponent = text.lower().partition("e")[2]
            if not exponent or abs(int(exponent)) <= _MAX_EXPONENT:
                number = float(text)
                if math.isfinite(number):
                    return number
        changed = True
        return text

    def as_int(text: str) -> int | str:
        nonlocal changed
        if len(text) <= _MAX_INT_DIGITS:
            return int(text)
        changed = True
        return text

    def as_constant(text: str) -> str:
        nonlocal changed
        changed = True
        return text

    try:
        value = json.loads(raw, parse_float=as_float, parse_int=as_int, parse_constant=as_constant)
    except json.JSONDecodeError as exc:
        raise MalformedDeliveryError(
            f"{what} is not valid JSON ({exc.msg} at character {exc.pos})"
        ) from exc
    return value, changed


def decode_json(raw: str, what: str, *, depth_checked: bool = False) -> tuple[Any, str]:
    """Decode a JSON text; return (value, text to store as jsonb).

    The text is the input itself unless it had to be cleaned (`\\u0000`, lone surrogates,
    which jsonb refuses; numbers kept as text, see `loads_json`). `MalformedDeliveryError` when
    it is not JSON or nests too deep (`depth_checked`: the caller already ran `json_too_deep`).
    """
    value, changed = loads_json(raw, what, depth_checked=depth_checked)
    if changed or "\\u" in raw or "\x00" in raw:
        value = sanitize(value)
        raw = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value, raw


def items_of(value: Any, what: str) -> list[Any]:
    """The items of a decoded `data_list` (array; a lone object counts as one item) or Open-API
    `data` (object; an array of objects is accepted too). `MalformedDeliveryError` otherwise."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    raise MalformedDeliveryError(
        f"{what} must be a JSON array or object, got {type(value).__name__}"
    )
