"""Protocol: signing, errors, faults, call records and `JimiApi` (the `/route/rest` methods)."""

from __future__ import annotations

import hashlib
import logging
import math
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sim.config import DAY_S, HB_INTERVAL_S, ISO_FMT, MAX_IMEIS, TIME_FMT, SimConfig
from sim.model import Fleet, _dt
from sim.records import SimDevice, SimObd

log = logging.getLogger(__name__)


def sign_params(params: Mapping[str, str], secret: str) -> str:
    """MD5(secret + sorted key+value pairs (sign and empty values skipped) + secret), upper hex."""
    raw = "".join(f"{k}{v}" for k, v in sorted(params.items()) if k != "sign" and v != "")
    text = secret + raw + secret
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest().upper()


def md5_lower(text: str) -> str:
    """Lower-case MD5 hex (the API's `user_pwd_md5`)."""
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def fmt_time(ts: float) -> str:
    """`yyyy-MM-dd HH:mm:ss` UTC."""
    return time.strftime(TIME_FMT, time.gmtime(ts))


def fmt_iso(ts: float) -> str:
    """ISO-8601 `yyyy-MM-ddTHH:mm:ssZ` (the parking report's format)."""
    return time.strftime(ISO_FMT, time.gmtime(ts))


def _num(value: float, places: int = 6) -> str:
    return f"{value:.{places}f}"


class ApiError(Exception):
    """A JIMI error reply: code, message, and whether `code` is sent as a string."""

    def __init__(self, code: int, message: str, *, code_as_string: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.code_as_string = code_as_string


@dataclass
class Faults:
    """Fault injection knobs, changeable at runtime (probabilities in [0, 1])."""

    fail_1006: float = 0.0
    fail_5xx: float = 0.0
    slow_share: float = 0.0
    slow_ms: int = 1500
    malformed: float = 0.0

    @classmethod
    def from_config(cls, config: SimConfig) -> Faults:
        """Faults initialised from the config."""
        return cls(
            config.fail_1006, config.fail_5xx, config.slow_share, config.slow_ms, config.malformed
        )

    def update(self, values: Mapping[str, Any]) -> None:
        """Set any of the fields from a mapping (unknown keys raise ValueError)."""
        names = {f.name for f in fields(self)}
        for key, value in values.items():
            if key not in names:
                raise ValueError(f"unknown fault {key!r}")
            setattr(self, key, int(value) if key == "slow_ms" else float(value))

    def as_dict(self) -> dict[str, float]:
        """The current values."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class SimRequest:
    """Record of one API call received: method, params, code returned, HTTP status."""

    method: str
    params: dict[str, str]
    code: int | None
    http_status: int
    account: str | None
    at: float

    @property
    def imeis(self) -> list[str]:
        """IMEIs named in `imeis` / `imei`."""
        raw = self.params.get("imeis") or self.params.get("imei") or ""
        return [x.strip() for x in raw.split(",") if x.strip()]


@dataclass
class _Token:
    access: str
    refresh: str
    account: str
    expires_at: float
    refresh_valid: bool = True


OAUTH_GET = "jimi.oauth.token.get"
OAUTH_REFRESH = "jimi.oauth.token.refresh"
MSG_1006 = "Illegal access, request frequency is too high"

Reply = tuple[int, dict[str, Any] | str]
_Handler = Callable[[dict[str, str], str], tuple[Any, Any]]


def _param(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise ApiError(1001, f"Missing parameter: {name}")
    return value


def _int_param(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(1001, f"Illegal parameter: {name}") from None
    if not lo <= value <= hi:
        raise ApiError(1001, f"Illegal parameter: {name} must be {lo}..{hi}")
    return value


def _time_param(params: Mapping[str, str], name: str) -> float:
    raw = _param(params, name)
    try:
        return datetime.strptime(raw, TIME_FMT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise ApiError(1001, f"Illegal parameter: {name} must be yyyy-MM-dd HH:mm:ss") from None


def _window(
    params: Mapping[str, str], b_name: str, e_name: str, max_days: float
) -> tuple[float, float]:
    begin, end = _time_param(params, b_name), _time_param(params, e_name)
    if end <= begin:
        raise ApiError(1001, f"{e_name} must be after {b_name}")
    if end - begin > max_days * DAY_S:
        raise ApiError(1001, f"Time range exceeds {max_days:g} days")
    return begin, end


def _page(items: list[Any], start: int, size: int) -> list[Any]:
    return items[start : start + size]


class JimiApi:
    """The `/route/rest` protocol: checks, auth, faults, dispatch, reply envelopes."""

    def __init__(
        self,
        config: SimConfig,
        fleet: Fleet,
        faults: Faults,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.fleet = fleet
        self.faults = faults
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}
        self._refresh: dict[str, _Token] = {}
        self._fault_rng = random.Random(f"faults|{config.seed}")
        self._requests: deque[SimRequest] = deque(maxlen=500_000)
        self._methods: dict[str, _Handler] = {
            "jimi.user.device.list": self._device_list,
            "jimi.track.device.detail": self._device_detail,
            "jimi.user.device.location.list": self._location_list,
            "jimi.device.location.get": self._location_get,
            "jimi.device.track.list": self._track_list,
            "jimi.device.track.mileage": self._track_mileage,
            "jimi.open.platform.report.parking": self._parking,
            "jimi.device.alarm.list": self._alarm_list,
            "jimi.device.obd.list": self._obd_list,
        }

    # ── records and tokens ─────────────────────────────────────────────────

    @property
    def requests(self) -> list[SimRequest]:
        """A snapshot of the calls received so far."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the recorded calls."""
        with self._lock:
            self._requests.clear()

    def expire_all_tokens(self) -> None:
        """Expire every access token and invalidate every refresh token."""
        with self._lock:
            for token in self._tokens.values():
                token.expires_at = 0.0
                token.refresh_valid = False

    def _chance(self, p: float) -> bool:
        return p > 0 and self._fault_rng.random() < p

    # ── entry point ────────────────────────────────────────────────────────

    def handle(self, params: dict[str, str]) -> Reply:
        """Answer one request: (HTTP status, JSON object or text body); records the call."""
        method = params.get("method", "")
        try:
            status, body, account = self._handle(method, params)
        except Exception:
            log.exception("jimi_sim: %s crashed", method)
            status, body, account = 500, "Internal Server Error", None
        code = int(body["code"]) if isinstance(body, dict) else None
        record = SimRequest(method, dict(params), code, status, account, self.clock())
        with self._lock:
            self._requests.append(record)
        return status, body

    def _handle(
        self, method: str, params: dict[str, str]
    ) -> tuple[int, dict[str, Any] | str, str | None]:
        token_method = method in (OAUTH_GET, OAUTH_REFRESH)
        if not token_method and self._chance(self.faults.slow_share):
            time.sleep(self.faults.slow_ms / 1000)
        if self._chance(self.faults.fail_5xx):
            status = 502 if self._fault_rng.random() < 0.5 else 503
            text = "Bad Gateway" if status == 502 else "Service Temporarily Unavailable"
            return status, f"<html><body><h1>{status} {text}</h1></body></html>", None
        account: str | None = None
        try:
            self._check_common(method, params)
            if token_method:
                result = (
                    self._token_get(params) if method == OAUTH_GET else self._token_refresh(params)
                )
                account = str(result["account"])
                return 200, {"code": 0, "message": "success", "result": result}, account
            if self._chance(self.faults.fail_1006):
                raise ApiError(1006, MSG_1006, code_as_string=True)
            account = self._auth(params.get("access_token", ""))
            result, data = self._methods[method](params, account)
            return 200, {"code": 0, "message": "success", "result": result, "data": data}, account
        except ApiError as exc:
            code: int | str = str(exc.code) if exc.code_as_string else exc.code
            return 200, {"code": code, "message": exc.message, "result": None}, account

    def _check_common(self, method: str, params: Mapping[str, str]) -> None:
        """Common parameters: method, app_key, sign_method, timestamp ±10 min, signature."""
        if not method:
            raise ApiError(1001, "Missing parameter: method")
        if params.get("app_key") != self.config.app_key:
            raise ApiError(1001, "Illegal app_key")
        if params.get("sign_method", "md5").lower() != "md5":
            raise ApiError(1001, "Illegal sign_method")
        raw_ts = params.get("timestamp", "")
        try:
            ts = datetime.strptime(raw_ts, TIME_FMT).replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise ApiError(1001, "timestamp error") from None
        if abs(ts - self.clock()) > 600:
            raise ApiError(1001, "timestamp error")
        if params.get("sign", "") != sign_params(params, self.config.app_secret):
            raise ApiError(1001, "Illegal sign")
        if method not in self._methods and method not in (OAUTH_GET, OAUTH_REFRESH):
            raise ApiError(1001, f"Illegal method: {method}")

    def _auth(self, access_token: str) -> str:
        with self._lock:
            token = self._tokens.get(access_token)
        if token is None or token.expires_at <= self.clock():
            raise ApiError(1004, "token invalid")
        return token.account

    def _issue(self, account: str, params: Mapping[str, str]) -> dict[str, Any]:
        ttl = _int_param(params, "expires_in", self.config.token_ttl_max, 1, 10**7)
        ttl = min(max(ttl, 60), self.config.token_ttl_max)
        now = self.clock()
        token = _Token(secrets.token_hex(16), secrets.token_hex(16), account, now + ttl)
        with self._lock:
            if len(self._tokens) > 10_000:  # forget long-expired tokens
                for key in [k for k, t in self._tokens.items() if t.expires_at < now - DAY_S]:
                    self._refresh.pop(self._tokens.pop(key).refresh, None)
            self._tokens[token.access] = token
            self._refresh[token.refresh] = token
        return {
            "appKey": self.config.app_key,
            "account": account,
            "accessToken": token.access,
            "expiresIn": str(ttl),
            "refreshToken": token.refresh,
            "time": fmt_time(now),
        }

    def _token_get(self, params: Mapping[str, str]) -> dict[str, Any]:
        user = _param(params, "user_id")
        pwd = _param(params, "user_pwd_md5")
        if user not in self.fleet.accounts or pwd != md5_lower(self.config.user_pwd):
            raise ApiError(1002, "Illegal user: wrong user_id or password")
        return self._issue(user, params)

    def _token_refresh(self, params: Mapping[str, str]) -> dict[str, Any]:
        access = _param(params, "access_token")
        refresh = _param(params, "refresh_token")
        with self._lock:
            token = self._refresh.get(refresh)
            ok = token is not None and token.access == access and token.refresh_valid
            if token is not None and ok:
                token.refresh_valid = False  # single use; the old access token lives on
        if token is None or not ok:
            raise ApiError(1004, "token invalid: refresh_token does not match")
        return self._issue(token.account, params)

    # ── access helpers ─────────────────────────────────────────────────────

    def _may_see(self, account: str, target: str) -> bool:
        return account in (target, self.config.user_id)

    def _target(self, params: Mapping[str, str], name: str, account: str) -> str:
        target = _param(params, name)
        if target not in self.fleet.accounts or not self._may_see(account, target):
            raise ApiError(1002, f"Illegal user: {target}")
        return target

    def _device(self, imei: str, account: str) -> SimDevice:
        dev = self.fleet.get_device(imei)
        if dev is None or not self._may_see(account, dev.account):
            raise ApiError(1002, f"Illegal device: {imei}")
        return dev

    def _imeis(
        self, params: Mapping[str, str], account: str, *, strict: bool, owner: str | None = None
    ) -> list[SimDevice]:
        raw = params.get("imeis", "").strip() or params.get("imei", "").strip()
        imeis = [x.strip() for x in raw.split(",") if x.strip()]
        if not imeis:
            raise ApiError(1001, "Missing parameter: imeis")
        if len(imeis) > MAX_IMEIS:
            raise ApiError(1001, f"Too many imeis (max {MAX_IMEIS})")
        out = []
        for imei in imeis:
            dev = self.fleet.get_device(imei)
            visible = dev is not None and self._may_see(account, dev.account)
            if dev is not None and visible and (owner is None or dev.account == owner):
                out.append(dev)
            elif strict:
                raise ApiError(1002, f"Illegal device: {imei}")
        return out

    def _corrupt(
        self, items: list[dict[str, Any]], time_key: str, speed_key: str
    ) -> list[dict[str, Any]]:
        """Corrupt items with probability `faults.malformed` each (separate RNG)."""
        p = self.faults.malformed
        if p <= 0:
            return items
        for item in items:
            if not self._chance(p):
                continue
            kind = self._fault_rng.randrange(4)
            if kind == 0:
                item.pop(time_key if self._fault_rng.random() < 0.5 else "lat", None)
            elif kind == 1:
                item[self._fault_rng.choice((time_key, "lat", "lng", speed_key))] = ""
            elif kind == 2:
                item["lat"], item["lng"] = "0", "0"
            else:
                moment = datetime.strptime(item[time_key], TIME_FMT).replace(tzinfo=UTC)
                item[time_key] = fmt_time(moment.timestamp() + 3 * DAY_S)
        return items

    # ── payload builders ───────────────────────────────────────────────────

    def _list_item(self, dev: SimDevice) -> dict[str, Any]:
        return {
            "imei": dev.imei,
            "deviceName": dev.device_name,
            "mcType": dev.mc_type,
            "mcTypeUseScope": "automobile",
            "sim": None,
            "expiration": fmt_time(dev.expiration.timestamp()),
            "activationTime": fmt_time(dev.activation_time.timestamp()),
            "reMark": None,
            "vehicleName": None,
            "vehicleIcon": "automobile",
            "vehicleNumber": None,
            "vehicleModels": None,
            "carFrame": None,
            "driverName": None,
            "driverPhone": None,
            "enabledFlag": "1",
            "engineNumber": None,
            "deviceGroupId": str(100 + self.fleet.accounts.index(dev.account)),
            "deviceGroup": "Default group",
        }

    def _location_item(self, dev: SimDevice, now: float) -> dict[str, Any]:
        fix, _ = self.fleet._fix_at(dev, math.floor(now))
        gps_ts = fix.gps_time.timestamp()
        ts = math.floor(now)
        hb = max(gps_ts, ts - (ts - dev.index * 37) % HB_INTERVAL_S)
        odo_km = self.fleet._odometer_m(dev, gps_ts) / 1000
        return {
            "imei": dev.imei,
            "deviceName": dev.device_name,
            "icon": "automobile",
            "status": "1",
            "lat": _num(fix.lat),
            "lng": _num(fix.lng),
            "expireFlag": "1",
            "activationFlag": "1",
            "posType": "GPS",
            "locDesc": None,
            "gpsTime": fmt_time(gps_ts),
            "hbTime": fmt_time(hb),
            "speed": str(fix.speed_kmh),
            "accStatus": "1" if fix.acc_on else "0",
            "electQuantity": "100",
            "powerValue": "12.6" if not fix.acc_on else "13.9",
            "distance": None,
            "temperature": None,
            "trackerOil": None,
            "gpsSignal": "4",
            "gpsNum": str(fix.satellites),
            "direction": str(fix.direction),
            "currentMileage": f"{odo_km:.2f}",
            "batteryPowerVal": "100",
            "confidence": None,
        }

    # ── methods ────────────────────────────────────────────────────────────

    def _device_list(self, params: dict[str, str], account: str) -> tuple[Any, Any]:
        target = self._target(params, "target", account)
        return [self._list_item(d) for d in self.fleet.devices_of(target)], None

    def _device_detail(self, params: dict[str, str], account: str) -> tuple[Any, Any]:
        dev = self._device(_param(params, "imei"), account)
        item = self._list_item(dev)
        odo = self.fleet._odometer_m(dev, self.clock()) / 1000
        item.update(
            {
                "sim": dev.sim,
                "vehicleName": dev.vehicle_name,
                "vehicleNumber": dev.vehicle_number,
                "vehicleModels": dev.vehicle_model,
                "carFrame": dev.vin,
                "driverName": dev.driver_name,
                "driverPhone": dev.driver_phone,
                "engineNumber": dev.engine_number,
                "account": dev.account,
                "customerName": f"Fireside Communications ({dev.city})",
                "iccid": dev.iccid,
                "imsi": dev.imsi,
                "licensePlatNo": dev.vehicle_number,
                "vin": dev.vin,
                "vehicleBrand": dev.vehicle_brand,
                "fuel_100km": f"{dev.fuel_100km:.1f}",
                "status": "1",
                "currentMileage": f"{odo:.2f}",
            }
        )
        return item, None

    def _location_list(self, params: dict[str, str], account: str) -> tuple[Any, Any]:
        target = self._target(params, "target", account)
        now = self.clock()
        items = [self._location_item(d, now) for d in self.fleet.devices_of(target)]
        return self._corrupt(items, "gpsTime", "speed"), None

    def _location_get(self, params: dict[str, str], account: str) -> tuple[Any, Any]:
        devs = self._imeis(params, account, strict=False)
        now = self.clock()
        items = [self._location_item(d, now) for d in devs]
        return self._corrupt(items, "gpsTime", "speed"), None

    def _track_list(self, params: dict[str, str], account: str) -> tuple[Any, Any]:
        dev = self._device(_param(params, "imei"), account)
        begin, end = _window(params, "begin_time", "end_time", 7)
        now = self.clock()
        if begin < now - 90 * DAY_S:
            raise ApiError(1001, "begin_time must be within the last 3 months")
        if end > now + 300:
            raise ApiError(1001, "end_time must not be in the future")
        fixes = self.fleet.track(dev.imei, _dt(begin), _dt(min(end, now + 1)))
        items = [
            {
                "lng": _num(f.lng),
                "lat": _num(f.lat),
                "gpsTime": fmt_time(f.gps_time.timestamp()),
                "direction": str(f.direction),
                "gpsSpeed": str(f.speed_kmh),
                "posType": "1",
                "satellite": str(f.satellites),
                "ignition": "1" if f.acc_on else "0",
                "accStatus": "1" if f.acc_on else "0",
                "confidence": None,
                "gpsMode": "0",
            }
            for f in fixes
        ]
        return self._corrupt(items, "gpsTime", "gpsSpeed"), None

    def _track_mileage(self, params: dict[str, str], account: str) -> tuple[Any, Any]:
        devs = self._imeis(params, account, strict=True)
        begin, end = _window(params, "begin_time", "end_time", 31)
        start_row = _int_param(params, "start_row", 0, 0, 10**9)
        page_size = _int_param(params, "page_size", 100, 1, 1000)
        rows: list[dict[str, Any]] = []
        totals = []
        for dev in devs:
            if dev.imei in self.config.empty_trip_report:
                totals.append({"imei": dev.imei, "totalMileage": "0"})
                continue
            trips = self.fleet.trips(dev.imei, _dt(begin), _dt(min(end, self.clock())))
            totals.append({"imei": dev.imei, "totalMileage": str(sum(t.distance_m for t in trips))})
            rows.extend(
                {
                    "imei": dev.imei,
                    "startTime": fmt_time(t.start_time.timestamp()),
                    "endTime": fmt_time(t.end_time.timestamp()),
                    "startLat": _num(t.start_lat),
                    "startLng": _num(t.start_lng),
                    "endLat": _num(t.end_lat),
                    "endLng": _num(t.end_lng),
                    "runTimeSecond": str(t.run_time_s),
                    "distance": str(t.distance_m),
                    "avgSpeed": f"{t.avg_speed_kmh:.1f}",
                    "startMileage": str(t.start_odometer_m),
                    "endMileage": str(t.end_odometer_m),
                }
                for t in trips
            )
        return _page(rows, start_row, page_size), totals

    def _parking(self, params: dict[str, str], account: str) -> tuple[Any, Any]:
        owner = self._target(params, "account", account)
        devs = self._imeis(params, account, strict=True)
        for dev in devs:
            if dev.account != owner:
                raise ApiError(1002, f"Illegal device: {dev.imei} does not belong to {owner}")
        begin, end = _window(params, "start_time", "end_time", 31)
        acc_type = params.get("acc_type", "off").strip().lower() or "off"
        if acc_type not in ("off", "0", "on", "1"):
            raise ApiError(1001, "Illegal parameter: acc_type")
        idle = acc_type in ("on", "1")
        start_row = _int_param(params, "start_row", 0, 0, 10**9)
        page_size = _int_param(params, "page_size", 100, 1, 1000)
        rows = []
        for dev in devs:
            for stop in self.fleet.stops(dev.imei, _dt(begin), _dt(min(end, self.clock())), idle):
                rows.append(
                    {
                        "imei": dev.imei,
                        "startTime": fmt_iso(stop.start_time.timestamp()),
                        "endTime": fmt_iso(stop.end_time.timestamp()),
                        "durSecond": str(stop.duration_s),
                        "lng": _num(stop.lng),
                        "lat": _num(stop.lat),
                        "addr": stop.address,
                        "deviceName": dev.device_name,
                        "mcType": dev.mc_type,
                        "acc": "1" if idle else "0",
                        "stopSecond": str(stop.duration_s),
                    }
                )
        total = sum(int(r["durSecond"]) for r in rows)
        return None, {
            "totalTime": str(total),
            "dataTotalRows": str(len(rows)),
            "rows": _page(rows, start_row, page_size),
        }

    def _alarm_list(self, params: dict[str, str], account: str) -> tuple[Any, Any]:
        devs = self._imeis(params, account, strict=False)
        begin, end = _window(params, "begin_time", "end_time", 31)
        page_no = _int_param(params, "page_no", 1, 1, 10**9)
        page_size = _int_param(params, "page_size", 100, 1, 100)
        alarms = [
            (a, dev)
            for dev in devs
            for a in self.fleet.alarms(dev.imei, _dt(begin), _dt(min(end, self.clock())))
        ]
        alarms.sort(key=lambda pair: (pair[0].alarm_time, pair[0].imei))
        items = [
            {
                "deviceName": dev.device_name,
                "imei": dev.imei,
                "model": dev.mc_type,
                "account": dev.account,
                "alertTypeId": a.type_id,
                "alarmTypeName": a.type_name,
                "alertTime": fmt_time(a.alarm_time.timestamp()),
                "positioningTime": fmt_time(a.alarm_time.timestamp()),
                "lng": _num(a.lng),
                "lat": _num(a.lat),
                "speed": str(a.speed),
                "geoid": None,
            }
            for a, dev in _page(alarms, (page_no - 1) * page_size, page_size)
        ]
        return self._corrupt(items, "alertTime", "speed"), None

    def _obd_list(self, params: dict[str, str], account: str) -> tuple[Any, Any]:
        owner = self._target(params, "account", account)
        devs = self._imeis(params, account, strict=True)
        for dev in devs:
            if dev.account != owner:
                raise ApiError(1002, f"Illegal device: {dev.imei} does not belong to {owner}")
        begin, end = _window(params, "start_time", "end_time", 31)
        page_no = _int_param(params, "page_no", 1, 1, 10**9)
        page_size = _int_param(params, "page_size", 100, 1, 1000)
        readings = [
            r
            for dev in devs
            for r in self.fleet.obd(dev.imei, _dt(begin), _dt(min(end, self.clock())))
        ]
        items = [_obd_item(r) for r in _page(readings, (page_no - 1) * page_size, page_size)]
        return None, {
            "pageNo": str(page_no),
            "pageSize": str(page_size),
            "totalCount": str(len(readings)),
            "result": items,
        }


def _obd_item(r: SimObd) -> dict[str, Any]:
    """Polling/push shape of one OBD reading."""
    return {
        "imei": r.imei,
        "dataReportTime": fmt_time(r.report_time.timestamp()),
        "odometerReading": f"{r.odometer_km:.1f}",
        "deviceAccumulatedMileage": f"{r.accumulated_km:.1f}",
        "remainingFuel": f"{r.remaining_fuel_l:.1f}",
        "remainingFuelPercentage": str(r.remaining_fuel_pct),
        "coolantTemperature": str(r.coolant_c),
        "vehicleBatterVoltage": f"{r.battery_v:.1f}",
        "currentRPM": str(r.rpm),
        "currentSpeed": str(r.speed_kmh),
        "vin": r.vin,
    }
