"""Realistic JIMI push items and deliveries for the webhook tests and the benchmark.

Shapes follow docs/jimi-open-api.md §4 and the simulator's push sender: numbers as
strings, `yyyy-MM-dd HH:mm:ss` UTC times, `deviceImei` on IoT-hub items (`imei` on alarms).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC)
IMEIS = ("862798050123456", "353549090654321", "865135060777888")


def ts(moment: datetime) -> str:
    """The API's time format."""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def gps(imei: str = IMEIS[0], at: datetime = T0, **over: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "deviceImei": imei,
        "gpsTime": ts(at),
        "gateTime": ts(at + timedelta(seconds=2)),
        "satelliteNum": "11",
        "lng": "36.821946",
        "lat": "-1.292066",
        "gpsMode": "0",
        "gpsSpeed": "42",
        "direction": "187",
        "acc": "1",
        "postType": "1",
        "altitude": "1661",
        "status": "1",
        "distance": "118",
    }
    item.update(over)
    return item


def gps_track(imei: str, n: int, start: datetime = T0, step_s: int = 10) -> list[dict[str, Any]]:
    """n consecutive fixes of one device, moving slowly north-east."""
    return [
        gps(
            imei,
            start + timedelta(seconds=i * step_s),
            lat=f"{-1.292066 + i * 0.0003:.6f}",
            lng=f"{36.821946 + i * 0.0003:.6f}",
        )
        for i in range(n)
    ]


def heartbeat(imei: str = IMEIS[0], at: datetime = T0, **over: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "deviceImei": imei,
        "gateTime": ts(at),
        "powerLevel": "6",
        "gsmSign": "4",
        "acc": "0",
        "oilEle": "1",
        "gpsPos": "1",
        "powerStatus": "1",
        "fortify": "0",
    }
    item.update(over)
    return item


def alarm(
    imei: str = IMEIS[0], at: datetime = T0, *, as_string: bool = False, **over: Any
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "alertType": "6",
        "alarmName": "Overspeed alarm",
        "alarmTime": ts(at),
        "lat": "-1.300112",
        "lng": "36.790345",
        "gpsSpeed": "97",
        "alertValue": "97",
    }
    msg.update(over)
    return {
        "imei": imei,
        "type": msg.get("alertType"),
        "msgClass": "DEVICE",
        "msg": json.dumps(msg) if as_string else msg,
    }


def event(imei: str = IMEIS[0], at: datetime = T0, kind: str = "LOGIN") -> dict[str, Any]:
    return {"deviceImei": imei, "type": kind, "gateTime": ts(at), "timezone": "+03:00"}


def lbs(imei: str = IMEIS[0], at: datetime = T0) -> dict[str, Any]:
    return {
        "deviceImei": imei,
        "gateTime": ts(at),
        "postType": "2",
        "lbsJson": json.dumps(
            {
                "mcc": "639",
                "mnc": "02",
                "cellList": [
                    {"lac": "20123", "ci": "40112", "rssi": "-71"},
                    {"lac": "20123", "ci": "40113", "rssi": "-83"},
                ],
            }
        ),
    }


def obd(imei: str = IMEIS[0], at: datetime = T0) -> dict[str, Any]:
    return {
        "deviceImei": imei,
        "gateTime": ts(at + timedelta(seconds=1)),
        "imei": imei,
        "dataReportTime": ts(at),
        "odometerReading": "84211.4",
        "deviceAccumulatedMileage": "12093.2",
        "remainingFuel": "41.5",
        "remainingFuelPercentage": "55",
        "coolantTemperature": "88",
        "vehicleBatterVoltage": "13.9",
        "currentRPM": "2100",
        "currentSpeed": "54",
        "vin": "JTFSS22P300123456",
        "engineLoad": "37",  # a field we do not map: stays in raw
    }


def fault(imei: str = IMEIS[0], at: datetime = T0) -> dict[str, Any]:
    return {
        "deviceImei": imei,
        "gateTime": ts(at),
        "faultCode": "P0301,P0420",
        "faultDesc": "Cylinder 1 misfire detected",
    }


def trip(imei: str = IMEIS[0], at: datetime = T0) -> dict[str, Any]:
    return {
        "deviceImei": imei,
        "startTime": ts(at),
        "endTime": ts(at + timedelta(minutes=25)),
        "startLat": "-1.292066",
        "startLng": "36.821946",
        "endLat": "-1.263050",
        "endLng": "36.802860",
        "distance": "12450",
        "runTimeSecond": "1500",
        "avgSpeed": "29.9",
        "maxSpeed": "71",
        "startMileage": "84199000",
        "endMileage": "84211450",
        "fuel": "1.6",
    }


def oil(imei: str = IMEIS[0], at: datetime = T0) -> dict[str, Any]:
    return {"deviceImei": imei, "gateTime": ts(at), "oil": "52.3", "unit": "L"}


def temperature(imei: str = IMEIS[0], at: datetime = T0) -> dict[str, Any]:
    return {"deviceImei": imei, "gateTime": ts(at), "tem1": "4.5", "tem2": "-18.2"}


def iothub_event(imei: str = IMEIS[0], at: datetime = T0) -> dict[str, Any]:
    return {
        "deviceImei": imei,
        "gateTime": int(at.timestamp()),
        "eventType": "POWER_OFF",
        "eventContent": {"reason": "tamper", "voltage": "0.0"},
    }


def openapi_alarm(imei: str = IMEIS[0], at: datetime = T0) -> dict[str, Any]:
    return {
        "imei": imei,
        "deviceName": "KCA 542Q Probox",
        "alarmType": "1",
        "alarmName": "SOS alarm",
        "lat": "-4.043477",
        "lng": "39.668206",
        "alarmTime": ts(at),
    }


def iothub_form(items: list[dict[str, Any]] | Any, token: str | None = None) -> dict[str, str]:
    """Form fields of an IoT-hub delivery."""
    fields = {"data_list": json.dumps(items, separators=(",", ":"))}
    if token is not None:
        fields["token"] = token
    return fields


def openapi_form(
    data: dict[str, Any], msg_type: str = "jimi.push.device.alarm", token: str | None = None
) -> dict[str, str]:
    """Form fields of an Open-API push."""
    fields = {"msgType": msg_type, "data": json.dumps(data, separators=(",", ":"))}
    if token is not None:
        fields["token"] = token
    return fields


# One realistic delivery per IoT-hub path: (path, items, table, rows expected in that table).
EVERY_PATH: list[tuple[str, list[dict[str, Any]], str, int]] = [
    ("/pushgps", gps_track(IMEIS[0], 3), "position_history", 3),
    ("/pushhb", [heartbeat(IMEIS[0]), heartbeat(IMEIS[1])], "heartbeats", 2),
    ("/pushalarm", [alarm(), alarm(IMEIS[1], as_string=True)], "alarms", 2),
    ("/pushevent", [event(), event(at=T0 + timedelta(hours=1), kind="LOGOUT")], "device_events", 2),
    ("/pushlbs", [lbs()], "lbs_readings", 1),
    ("/pushobd", [obd(), obd(IMEIS[2])], "obd_readings", 2),
    ("/pushfaultinfo", [fault()], "fault_codes", 2),
    ("/pushtripreport", [trip()], "trips", 1),
    ("/pushoil", [oil()], "fuel_readings", 1),
    ("/pushtem", [temperature()], "temperature_readings", 2),
    ("/pushIothubEvent", [iothub_event()], "device_events", 1),
]
