"""Push: the fleet's pushes as the JIMI push service sends them, and `PushSender`."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx

from sim.config import FIX_INTERVAL_S, PUSH_BATCH, SimConfig
from sim.model import Fleet, _dt, _epoch
from sim.protocol import _num, _obd_item, fmt_time
from sim.records import SimFix
from sim.roads import _CITY_ALTITUDE_M, haversine_m

log = logging.getLogger(__name__)


def _chunks(items: list[dict[str, Any]], size: int = PUSH_BATCH) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def build_push_deliveries(
    fleet: Fleet,
    since: datetime,
    until: datetime,
    *,
    token: str | None = None,
    openapi_path: str | None = None,
) -> list[tuple[str, dict[str, str]]]:
    """Push deliveries (path, form fields) for everything that happened in [since, until)."""
    token = fleet.config.push_token if token is None else token
    token = token or ""
    openapi_path = openapi_path or fleet.config.push_openapi_path
    b, e = _epoch(since), _epoch(until)
    gps: list[dict[str, Any]] = []
    hbs: list[dict[str, Any]] = []
    alarms: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    obds: list[dict[str, Any]] = []
    openapi: list[tuple[str, dict[str, str]]] = []
    for dev in fleet.devices():
        alt = _CITY_ALTITUDE_M[dev.city]
        fixes = fleet.track(dev.imei, _dt(b - FIX_INTERVAL_S), until)
        prev: SimFix | None = None
        for fix in fixes:
            ts = fix.gps_time.timestamp()
            if ts >= b:
                dist = haversine_m(prev.lat, prev.lng, fix.lat, fix.lng) if prev else 0.0
                gps.append(
                    {
                        "deviceImei": dev.imei,
                        "gpsTime": fmt_time(ts),
                        "gateTime": fmt_time(ts + 1 + dev.index % 3),
                        "satelliteNum": str(fix.satellites),
                        "lng": _num(fix.lng),
                        "lat": _num(fix.lat),
                        "gpsMode": "0",
                        "gpsSpeed": str(fix.speed_kmh),
                        "direction": str(fix.direction),
                        "acc": "1" if fix.acc_on else "0",
                        "postType": "1",
                        "altitude": str(alt + (dev.index % 20)),
                        "status": "1",
                        "distance": str(round(dist)),
                    }
                )
            prev = fix
        now_fix = fleet.position_at(dev.imei, _dt(e - 1))
        if not now_fix.acc_on:
            hbs.append(
                {
                    "deviceImei": dev.imei,
                    "gateTime": fmt_time(e - 1),
                    "powerLevel": "6",
                    "gsmSign": "4",
                    "acc": "0",
                    "oilEle": "1",
                    "gpsPos": "1",
                    "powerStatus": "1",
                    "fortify": "0",
                }
            )
        for alarm in fleet.alarms(dev.imei, since, until):
            at = fmt_time(alarm.alarm_time.timestamp())
            alarms.append(
                {
                    "imei": dev.imei,
                    "type": alarm.type_id,
                    "msgClass": "PLATFORM" if not alarm.type_id.isdigit() else "DEVICE",
                    "msg": {
                        "alertType": alarm.type_id,
                        "alarmName": alarm.type_name,
                        "alarmTime": at,
                        "lat": _num(alarm.lat),
                        "lng": _num(alarm.lng),
                        "gpsSpeed": str(alarm.speed),
                        "alertValue": str(alarm.speed) if alarm.type_id == "6" else "",
                    },
                }
            )
            data = {
                "imei": dev.imei,
                "deviceName": dev.device_name,
                "alarmType": alarm.type_id,
                "alarmName": alarm.type_name,
                "lat": _num(alarm.lat),
                "lng": _num(alarm.lng),
                "alarmTime": at,
            }
            openapi.append(
                (
                    openapi_path,
                    {
                        "msgType": "jimi.push.device.alarm",
                        "data": json.dumps(data, separators=(",", ":")),
                    },
                )
            )
        events.extend(
            {
                "deviceImei": dev.imei,
                "type": ev.type,
                "gateTime": fmt_time(ev.event_time.timestamp()),
                "timezone": "+03:00",
            }
            for ev in fleet.events(dev.imei, since, until)
        )
        obds.extend(
            {
                "deviceImei": dev.imei,
                "gateTime": fmt_time(r.report_time.timestamp()),
                **_obd_item(r),
            }
            for r in fleet.obd(dev.imei, since, until)
        )
    gps.sort(key=lambda item: (item["gpsTime"], item["deviceImei"]))
    out: list[tuple[str, dict[str, str]]] = []
    for path, items in (
        ("/pushgps", gps),
        ("/pushhb", hbs),
        ("/pushalarm", alarms),
        ("/pushevent", events),
        ("/pushobd", obds),
    ):
        out.extend(
            (path, {"token": token, "data_list": json.dumps(chunk, separators=(",", ":"))})
            for chunk in _chunks(items)
        )
    out.extend(openapi)
    return out


class PushSender:
    """Posts the fleet's pushes to a receiver; unsent deliveries are kept and retried."""

    MAX_PENDING = 20_000

    def __init__(
        self, config: SimConfig, fleet: Fleet | None = None, client: httpx.Client | None = None
    ) -> None:
        if not config.push_url:
            raise ValueError("PushSender needs config.push_url")
        self.config = config
        self.fleet = fleet or Fleet(config)
        self.base_url = config.push_url.rstrip("/")
        self._client = client or httpx.Client(timeout=10.0)
        self._since: float | None = None
        self._pending: deque[tuple[str, dict[str, str]]] = deque()

    @property
    def pending(self) -> int:
        """Deliveries built but not yet accepted by the receiver."""
        return len(self._pending)

    def send_once(self, now: datetime | None = None) -> int:
        """Build the deliveries since the previous round and send all pending; returns sent."""
        end = math.floor(_epoch(now or datetime.now(UTC)))
        since = self._since if self._since is not None else end - self.config.push_interval_s
        if end > since:
            self._pending.extend(build_push_deliveries(self.fleet, _dt(since), _dt(end)))
            self._since = end
        while len(self._pending) > self.MAX_PENDING:
            self._pending.popleft()
            log.warning("push backlog over %d deliveries: dropped the oldest", self.MAX_PENDING)
        sent = 0
        while self._pending:
            path, form = self._pending[0]
            try:
                resp = self._client.post(self.base_url + path, data=form)
            except httpx.HTTPError as exc:
                log.warning("push %s failed (%s); %d pending", path, exc, len(self._pending))
                break
            if resp.status_code >= 300:
                log.warning(
                    "push %s answered HTTP %d; %d pending",
                    path,
                    resp.status_code,
                    len(self._pending),
                )
                break
            self._pending.popleft()
            sent += 1
        return sent

    def run(self, stop_event: threading.Event) -> None:
        """Send a round every `push_interval_s` until `stop_event` is set."""
        while not stop_event.is_set():
            try:
                sent = self.send_once()
                log.debug("push round: %d deliveries sent, %d pending", sent, self.pending)
            except Exception:
                log.exception("push round failed")
            stop_event.wait(self.config.push_interval_s)

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()
