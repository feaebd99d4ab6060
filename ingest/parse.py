"""Pure parse functions: one Jimi API item in, one typed row out (or `ParseError`).

No I/O here. Each function accepts what the real API sends — numbers as strings, `""` and
`"null"` for missing values, `-1` for an unknown direction, two time formats — and converts
units exactly once (the mileage report's `distance` is metres → `distance_km`, FIX-M11/M16).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ts_shared import clean, clean_bool, clean_int, clean_num, clean_ts


class ParseError(ValueError):
    """An item that cannot become a row; `reason` is a short machine-friendly word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(slots=True)
class PositionRow:
    """One GPS fix for `position_history` (and, for live polls, `live_positions`)."""

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
    mileage_km: float | None
    source: str
    quality_flag: str | None = None
    implied_speed_kmh: float | None = None


@dataclass(slots=True)
class LiveRow:
    """Extra fields of the live list that only `live_positions` keeps."""

    position: PositionRow
    online: bool | None
    loc_desc: str | None
    hb_time: datetime | None
    battery_pct: float | None
    power_v: float | None
    gps_signal: int | None
    account: str | None


@dataclass(slots=True)
class TripRow:
    """One trip of `jimi.device.track.mileage` (or a pushed trip report)."""

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
    source: str
    raw: dict[str, Any]


@dataclass(slots=True)
class StopRow:
    """One parking (ignition off) or idling (ignition on) period."""

    imei: str
    start_time: datetime
    end_time: datetime | None
    duration_s: int | None
    acc_on: bool
    lat: float | None
    lng: float | None
    address: str | None
    account: str | None
    raw: dict[str, Any]


@dataclass(slots=True)
class AlarmRow:
    """One alarm (polled: alertTypeId + alertTypeName/alarmTypeName, FIX-E06)."""

    imei: str
    alarm_time: datetime
    alarm_type: str
    alarm_name: str | None
    lat: float | None
    lng: float | None
    speed_kmh: float | None
    source: str
    account: str | None
    raw: dict[str, Any]


# Columns of tracksolid.devices that the API owns (FIX-M17: all of them are updated).
DEVICE_API_COLUMNS = (
    "device_name", "mc_type", "mc_type_use_scope", "sim", "iccid", "imsi", "expiration",
    "activation_time", "remark", "vehicle_name", "vehicle_icon", "vehicle_number",
    "vehicle_models", "vehicle_brand", "car_frame", "vin", "engine_number", "license_plate_no",
    "driver_name", "driver_phone", "enabled_flag", "device_group_id", "device_group", "account",
    "customer_name", "fuel_100km_l", "device_status", "current_mileage_km",
)  # fmt: skip


def _imei(item: dict[str, Any], *keys: str) -> str:
    for key in keys or ("imei",):
        value = clean(item.get(key))
        if value:
            return value
    raise ParseError("missing_imei")


def _time(item: dict[str, Any], *keys: str) -> datetime:
    for key in keys:
        if key in item:
            value = clean_ts(item.get(key))
            if value is not None:
                return value
            raise ParseError("bad_time", f"{key}={item.get(key)!r}")
    raise ParseError("bad_time", f"missing {'/'.join(keys)}")


def _direction(value: Any) -> int | None:
    number = clean_int(value)
    if number is None or number < 0 or number > 360:
        return None  # -1 = unknown
    return number % 360


def _coords(item: dict[str, Any]) -> tuple[float, float]:
    lat, lng = clean_num(item.get("lat")), clean_num(item.get("lng"))
    if lat is None or lng is None:
        raise ParseError("missing_coordinates")
    return lat, lng


def _pos_type(value: Any) -> str | None:
    text = clean(value)
    if text is None:
        return None
    return {"1": "GPS", "2": "LBS", "3": "WIFI", "4": "BEACON"}.get(text, text.upper())


def parse_location(item: dict[str, Any], account: str | None = None) -> LiveRow:
    """An item of `jimi.user.device.location.list` / `jimi.device.location.get`."""
    imei = _imei(item)
    lat, lng = _coords(item)
    position = PositionRow(
        imei=imei,
        gps_time=_time(item, "gpsTime"),
        lat=lat,
        lng=lng,
        speed_kmh=clean_num(item.get("speed")),
        direction_deg=_direction(item.get("direction")),
        acc_on=clean_bool(item.get("accStatus")),
        pos_type=_pos_type(item.get("posType")),
        satellites=clean_int(item.get("gpsNum")),
        gps_mode=None,
        altitude_m=None,
        mileage_km=clean_num(item.get("currentMileage")),
        source="poll",
    )
    return LiveRow(
        position=position,
        online=clean_bool(item.get("status")),
        loc_desc=clean(item.get("locDesc")),
        hb_time=clean_ts(item.get("hbTime")),
        battery_pct=clean_num(item.get("electQuantity")),
        power_v=clean_num(item.get("powerValue")),
        gps_signal=clean_int(item.get("gpsSignal")),
        account=account,
    )


def parse_track_point(item: dict[str, Any], imei: str) -> PositionRow:
    """An item of `jimi.device.track.list` (the IMEI is the request's, not in the item)."""
    lat, lng = _coords(item)
    acc = clean_bool(item.get("accStatus"))
    if acc is None:
        acc = clean_bool(item.get("ignition"))
    return PositionRow(
        imei=clean(item.get("imei")) or imei,
        gps_time=_time(item, "gpsTime"),
        lat=lat,
        lng=lng,
        speed_kmh=clean_num(item.get("gpsSpeed")),
        direction_deg=_direction(item.get("direction")),
        acc_on=acc,
        pos_type=_pos_type(item.get("posType")),
        satellites=clean_int(item.get("satellite")),
        gps_mode=clean_int(item.get("gpsMode")),
        altitude_m=None,
        mileage_km=None,
        source="track_list",
    )


def _metres_to_km(value: Any) -> float | None:
    metres = clean_num(value)
    return None if metres is None else round(metres / 1000.0, 3)


def parse_mileage_trip(item: dict[str, Any]) -> TripRow:
    """A trip of `jimi.device.track.mileage`: `distance` and start/end mileage are metres."""
    start = _time(item, "startTime")
    end = clean_ts(item.get("endTime"))
    run_s = clean_int(item.get("runTimeSecond"))
    if run_s is None and end is not None:
        run_s = int((end - start).total_seconds())
    return TripRow(
        imei=_imei(item),
        start_time=start,
        end_time=end,
        start_lat=clean_num(item.get("startLat")),
        start_lng=clean_num(item.get("startLng")),
        end_lat=clean_num(item.get("endLat")),
        end_lng=clean_num(item.get("endLng")),
        distance_km=_metres_to_km(item.get("distance")),
        driving_time_s=run_s,
        avg_speed_kmh=clean_num(item.get("avgSpeed")),
        max_speed_kmh=clean_num(item.get("maxSpeed")),
        start_mileage_km=_metres_to_km(item.get("startMileage")),
        end_mileage_km=_metres_to_km(item.get("endMileage")),
        source="mileage",
        raw=item,
    )


def parse_stop(item: dict[str, Any], acc_on: bool, account: str | None) -> StopRow:
    """A row of `jimi.open.platform.report.parking` (ISO-Z times, `durSecond`, FIX-M13)."""
    start = _time(item, "startTime")
    end = clean_ts(item.get("endTime"))
    duration = clean_int(item.get("durSecond"))
    if duration is None:
        duration = clean_int(item.get("stopSecond"))
    if duration is None and end is not None:
        duration = int((end - start).total_seconds())
    return StopRow(
        imei=_imei(item),
        start_time=start,
        end_time=end,
        duration_s=duration,
        acc_on=acc_on,
        lat=clean_num(item.get("lat")),
        lng=clean_num(item.get("lng")),
        address=clean(item.get("addr")),
        account=account,
        raw=item,
    )


def parse_alarm(item: dict[str, Any], account: str | None = None) -> AlarmRow:
    """A polled alarm: `alertTypeId` + `alertTypeName` or `alarmTypeName` (FIX-E06)."""
    alarm_type = clean(item.get("alertTypeId")) or clean(item.get("alarmType"))
    if alarm_type is None:
        raise ParseError("missing_alarm_type")
    name = (
        clean(item.get("alertTypeName"))
        or clean(item.get("alarmTypeName"))
        or clean(item.get("alarmName"))
    )
    return AlarmRow(
        imei=_imei(item),
        alarm_time=_time(item, "alertTime", "alarmTime"),
        alarm_type=alarm_type,
        alarm_name=name,
        lat=clean_num(item.get("lat")),
        lng=clean_num(item.get("lng")),
        speed_kmh=clean_num(item.get("speed")),
        source="poll",
        account=clean(item.get("account")) or account,
        raw=item,
    )


def parse_device(
    listed: dict[str, Any], detail: dict[str, Any] | None, account: str
) -> dict[str, Any]:
    """Merge a device-list item with its detail into `tracksolid.devices` API columns.

    The list returns null vehicle/driver fields even when they are set (FIX-M18): detail wins
    wherever it has a value. `account` is the target whose list contained the device (FIX-M19).
    """
    merged: dict[str, Any] = {**listed, **{k: v for k, v in (detail or {}).items() if clean(v)}}
    return {
        "imei": _imei(merged),
        "device_name": clean(merged.get("deviceName")),
        "mc_type": clean(merged.get("mcType")),
        "mc_type_use_scope": clean(merged.get("mcTypeUseScope")),
        "sim": clean(merged.get("sim")),
        "iccid": clean(merged.get("iccid")),
        "imsi": clean(merged.get("imsi")),
        "expiration": clean_ts(merged.get("expiration")),
        "activation_time": clean_ts(merged.get("activationTime")),
        "remark": clean(merged.get("reMark")),
        "vehicle_name": clean(merged.get("vehicleName")),
        "vehicle_icon": clean(merged.get("vehicleIcon")),
        "vehicle_number": clean(merged.get("vehicleNumber")) or clean(merged.get("licensePlatNo")),
        "vehicle_models": clean(merged.get("vehicleModels")),
        "vehicle_brand": clean(merged.get("vehicleBrand")),
        "car_frame": clean(merged.get("carFrame")),
        "vin": clean(merged.get("vin")) or clean(merged.get("VIN")),
        "engine_number": clean(merged.get("engineNumber")),
        "license_plate_no": clean(merged.get("licensePlatNo")),
        "driver_name": clean(merged.get("driverName")),
        "driver_phone": clean(merged.get("driverPhone")),
        "enabled_flag": clean_bool(merged.get("enabledFlag")),
        "device_group_id": clean(merged.get("deviceGroupId")),
        "device_group": clean(merged.get("deviceGroup")),
        "account": account,
        "customer_name": clean(merged.get("customerName")),
        "fuel_100km_l": clean_num(merged.get("fuel_100km")),
        "device_status": clean(merged.get("status")),
        "current_mileage_km": clean_num(merged.get("currentMileage")),
    }
