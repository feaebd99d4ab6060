"""Simulator of the Tracksolid Pro / JIMI Open Platform API (polled methods and pushes).

Serves `POST /route/rest` as the vendor contract (jimi-open-api.md) describes
(signed form requests, OAuth tokens, string numbers, the vendor's quirks) over a
deterministic fleet model: vehicles in Nairobi, Mombasa and Kampala drive along real-ish
road polylines on a schedule derived from hash(seed, imei, day). Any instant of the last
months is computable in O(trips per day), so 10,000 devices are cheap.

Sections: model (roads, devices, day plans) · protocol (signing, methods, faults) ·
HTTP server · push sender · CLI.

    python jimi_sim.py --port 8088 --devices 50 --accounts 3 --seed 1
"""

from __future__ import annotations

import argparse
import bisect
import functools
import hashlib
import itertools
import json
import logging
import math
import random
import secrets
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import httpx

log = logging.getLogger(__name__)

__all__ = [
    "Faults",
    "Fleet",
    "JimiApi",
    "PushSender",
    "SimAlarm",
    "SimConfig",
    "SimDevice",
    "SimEvent",
    "SimFix",
    "SimObd",
    "SimRequest",
    "SimServer",
    "SimStop",
    "SimTrip",
    "build_push_deliveries",
    "main",
    "sign_params",
]

DAY_S = 86_400
FIX_INTERVAL_S = 30
OBD_INTERVAL_S = 600
HB_INTERVAL_S = 180
WORK_START_S = 5 * 3600  # 08:00 EAT
WORK_END_S = 17 * 3600  # 20:00 EAT
ODO_EPOCH_DAY = 19_723  # 2024-01-01: the day each vehicle's base odometer refers to
EARTH_RADIUS_M = 6_371_008.8
TIME_FMT = "%Y-%m-%d %H:%M:%S"
ISO_FMT = "%Y-%m-%dT%H:%M:%SZ"
PUSH_BATCH = 50
MAX_IMEIS = 100


@dataclass
class SimConfig:
    """Everything the simulator is built from: fleet size, credentials, faults, push target."""

    devices: int = 50
    accounts: int = 3
    seed: int = 1
    app_key: str = "demo-app-key"
    app_secret: str = "demo-app-secret"  # noqa: S105 - demo credential of a simulator
    user_id: str = "fireside"
    user_pwd: str = "demo-password"  # noqa: S105 - demo credential of a simulator
    token_ttl_max: int = 7200
    fail_1006: float = 0.0
    fail_5xx: float = 0.0
    slow_share: float = 0.0
    slow_ms: int = 1500
    malformed: float = 0.0
    push_url: str | None = None
    push_token: str | None = None
    push_interval_s: float = 10.0
    push_openapi_path: str = "/push"


# ═════════════════════════════════════════════════════════════════════════════
# Model: geometry and roads
# ═════════════════════════════════════════════════════════════════════════════

LatLng = tuple[float, float]


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _bearing(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Initial compass bearing in degrees [0, 360) from point 1 to point 2."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lng2 - lng1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360


class Road:
    """A road polyline starting at its city's hub, parametrised by arc length in metres."""

    def __init__(self, name: str, city: str, points: Sequence[LatLng]) -> None:
        self.name = name
        self.city = city
        self.points = tuple(points)
        cum = [0.0]
        bearings = []
        for (la0, ln0), (la1, ln1) in zip(self.points, self.points[1:], strict=False):
            cum.append(cum[-1] + haversine_m(la0, ln0, la1, ln1))
            bearings.append(_bearing(la0, ln0, la1, ln1))
        self.cum = tuple(cum)
        self.bearings = tuple(bearings)
        self.length = cum[-1]

    def at(self, s: float) -> tuple[float, float, float]:
        """(lat, lng, bearing away from the hub) at arc length `s` (clamped)."""
        s = min(max(s, 0.0), self.length)
        i = min(bisect.bisect_right(self.cum, s) - 1, len(self.points) - 2)
        (la0, ln0), (la1, ln1) = self.points[i], self.points[i + 1]
        seg = self.cum[i + 1] - self.cum[i]
        f = (s - self.cum[i]) / seg if seg > 0 else 0.0
        return la0 + (la1 - la0) * f, ln0 + (ln1 - ln0) * f, self.bearings[i]


# fmt: off
_ROAD_WAYPOINTS: dict[str, tuple[tuple[str, tuple[LatLng, ...]], ...]] = {
    "Nairobi": (
        ("Mombasa Road", (
            (-1.28640, 36.81720), (-1.29250, 36.82250), (-1.30300, 36.82550),
            (-1.31200, 36.83300), (-1.31850, 36.83950), (-1.32550, 36.85200),
            (-1.33300, 36.86900), (-1.33950, 36.88400), (-1.34800, 36.90200),
            (-1.36100, 36.91600), (-1.37800, 36.92800), (-1.39200, 36.93800),
            (-1.41500, 36.95500), (-1.43800, 36.97000))),
        ("Thika Road", (
            (-1.28640, 36.81720), (-1.27900, 36.82300), (-1.26900, 36.83800),
            (-1.25700, 36.84800), (-1.24400, 36.86200), (-1.23100, 36.87600),
            (-1.21900, 36.88800), (-1.19900, 36.91300), (-1.18400, 36.93000),
            (-1.16500, 36.94600), (-1.14600, 36.96000), (-1.12500, 36.98900),
            (-1.10300, 37.01400))),
        ("Waiyaki Way", (
            (-1.28640, 36.81720), (-1.27600, 36.81300), (-1.26600, 36.80400),
            (-1.26200, 36.79000), (-1.26000, 36.77900), (-1.25800, 36.76300),
            (-1.25800, 36.74800), (-1.26000, 36.73200), (-1.25900, 36.71800),
            (-1.25500, 36.69500), (-1.24600, 36.66500))),
        ("Ngong Road", (
            (-1.28640, 36.81720), (-1.29000, 36.81200), (-1.29700, 36.80300),
            (-1.29900, 36.79200), (-1.30000, 36.78000), (-1.29800, 36.76200),
            (-1.29900, 36.75300), (-1.30800, 36.73500), (-1.32000, 36.71000),
            (-1.33800, 36.68500), (-1.36200, 36.65800))),
        ("Jogoo Road", (
            (-1.28640, 36.81720), (-1.28900, 36.83000), (-1.29300, 36.84500),
            (-1.29500, 36.86000), (-1.29000, 36.87800), (-1.28500, 36.89500),
            (-1.28000, 36.91500), (-1.27700, 36.93500))),
    ),
    "Mombasa": (
        ("Moi Avenue / Nairobi Road", (
            (-4.06240, 39.67180), (-4.05900, 39.66700), (-4.05300, 39.66200),
            (-4.04500, 39.65800), (-4.03500, 39.64600), (-4.02300, 39.62800),
            (-4.01200, 39.61000), (-3.99800, 39.59000), (-3.98300, 39.57000))),
        ("Nyali Bridge / Links Road", (
            (-4.06240, 39.67180), (-4.05200, 39.67700), (-4.04300, 39.68800),
            (-4.03300, 39.70000), (-4.02500, 39.71000), (-4.01500, 39.72000),
            (-3.99500, 39.72500), (-3.97200, 39.73300), (-3.94500, 39.74300))),
        ("Likoni Road", (
            (-4.06240, 39.67180), (-4.06800, 39.66700), (-4.07600, 39.66000),
            (-4.08600, 39.66100), (-4.10000, 39.65000), (-4.12500, 39.63000),
            (-4.15000, 39.61000), (-4.18500, 39.58500), (-4.22000, 39.56000))),
    ),
    "Kampala": (
        ("Entebbe Road", (
            (0.31360, 32.58110), (0.30400, 32.58000), (0.29300, 32.57800),
            (0.28300, 32.57600), (0.26400, 32.57400), (0.23700, 32.56200),
            (0.21500, 32.55700), (0.18000, 32.54200), (0.15000, 32.53200),
            (0.12700, 32.51900), (0.09500, 32.49800), (0.06400, 32.47400))),
        ("Jinja Road", (
            (0.31360, 32.58110), (0.31500, 32.59500), (0.32000, 32.61500),
            (0.32900, 32.63500), (0.33800, 32.65800), (0.34800, 32.68500),
            (0.35600, 32.71500), (0.36000, 32.74000))),
        ("Bombo Road", (
            (0.31360, 32.58110), (0.32300, 32.57500), (0.34000, 32.56800),
            (0.36000, 32.56500), (0.38000, 32.56200), (0.40000, 32.55900),
            (0.42000, 32.55500))),
    ),
}
# fmt: on

ROADS: dict[str, tuple[Road, ...]] = {
    city: tuple(Road(name, city, pts) for name, pts in roads)
    for city, roads in _ROAD_WAYPOINTS.items()
}
_CITY_COUNTRY = {"Nairobi": "KE", "Mombasa": "KE", "Kampala": "UG"}
_CITY_ALTITUDE_M = {"Nairobi": 1660, "Mombasa": 30, "Kampala": 1190}

# ═════════════════════════════════════════════════════════════════════════════
# Model: public records
# ═════════════════════════════════════════════════════════════════════════════


@dataclass(frozen=True)
class SimDevice:
    """One tracker and the vehicle/driver it is fitted to."""

    index: int
    imei: str
    account: str
    device_name: str
    mc_type: str
    sim: str
    iccid: str
    imsi: str
    vehicle_number: str
    vehicle_name: str
    vehicle_brand: str
    vehicle_model: str
    vin: str
    engine_number: str
    driver_name: str
    driver_phone: str
    city: str
    activation_time: datetime
    expiration: datetime
    home_road: int
    home_s: float
    base_odometer_km: float
    daily_km: float
    fuel_100km: float
    tank_l: float


@dataclass(frozen=True)
class SimFix:
    """One GPS fix as the device reported it."""

    imei: str
    gps_time: datetime
    lat: float
    lng: float
    speed_kmh: int
    direction: int
    acc_on: bool
    moving: bool
    satellites: int


@dataclass(frozen=True)
class SimTrip:
    """One trip (ignition drive between two stops); distance is the sum along its fixes."""

    imei: str
    start_time: datetime
    end_time: datetime
    start_lat: float
    start_lng: float
    end_lat: float
    end_lng: float
    distance_m: int
    run_time_s: int
    avg_speed_kmh: float
    max_speed_kmh: int
    start_odometer_m: int
    end_odometer_m: int


@dataclass(frozen=True)
class SimStop:
    """A stop: parking (ignition off) or idling (ignition on, speed 0)."""

    imei: str
    start_time: datetime
    end_time: datetime
    lat: float
    lng: float
    acc_on: bool
    duration_s: int
    address: str


@dataclass(frozen=True)
class SimAlarm:
    """An alarm raised on a trip."""

    imei: str
    alarm_time: datetime
    type_id: str
    type_name: str
    lat: float
    lng: float
    speed: int


@dataclass(frozen=True)
class SimObd:
    """One OBD reading (every 10 min while driving)."""

    imei: str
    report_time: datetime
    odometer_km: float
    accumulated_km: float
    remaining_fuel_l: float
    remaining_fuel_pct: int
    coolant_c: int
    battery_v: float
    rpm: int
    speed_kmh: int
    vin: str


@dataclass(frozen=True)
class SimEvent:
    """A device LOGIN/LOGOUT event (GSM reconnect at night)."""

    imei: str
    event_time: datetime
    type: str


ALARM_TYPES: dict[str, str] = {
    "1": "SOS alarm",
    "6": "Overspeed alarm",
    "ubiAcce": "Harsh acceleration",
    "ubiDece": "Harsh braking",
    "ACC_ON": "ACC ON",
    "ACC_OFF": "ACC OFF",
}

# ═════════════════════════════════════════════════════════════════════════════
# Model: devices
# ═════════════════════════════════════════════════════════════════════════════

_IMEI_MODELS = (
    ("862798", "X3"),
    ("862798", "JC400P"),
    ("353549", "AT4"),
    ("865135", "X3"),
    ("865135", "JC400P"),
    ("359857", "GT06N"),
)
_IMEI_WEIGHTS = (23, 8, 23, 6, 4, 7)
_VEHICLES = (
    ("Toyota", "Probox"),
    ("Toyota", "Succeed"),
    ("Toyota", "Hilux"),
    ("Nissan", "NV200"),
    ("Isuzu", "D-Max"),
    ("Suzuki", "Carry"),
    ("Toyota", "Belta"),
    ("Mitsubishi", "L200"),
)
_FIRST_NAMES = (
    "John",
    "Peter",
    "James",
    "Mary",
    "Grace",
    "David",
    "Joseph",
    "Samuel",
    "Daniel",
    "Esther",
    "Faith",
    "Kevin",
    "Brian",
    "Dennis",
    "Collins",
    "Mercy",
    "Anne",
    "Paul",
    "Stephen",
    "George",
    "Moses",
    "Ruth",
    "Isaac",
    "Lydia",
)
_LAST_NAMES_KE = (
    "Otieno",
    "Kamau",
    "Wanjiru",
    "Mwangi",
    "Ochieng",
    "Njoroge",
    "Kiprono",
    "Mutua",
    "Omondi",
    "Kariuki",
    "Wafula",
    "Chebet",
    "Achieng",
    "Njeri",
    "Mohamed",
    "Hassan",
    "Baraka",
    "Mwakio",
)
_LAST_NAMES_UG = (
    "Okello",
    "Mugisha",
    "Nakato",
    "Ssempala",
    "Byaruhanga",
    "Tumusiime",
    "Nsubuga",
    "Namuli",
    "Kato",
    "Atwine",
)
_PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def account_names(config: SimConfig) -> list[str]:
    """Account names of the fleet; the first one is the login user (`user_id`)."""
    names = [config.user_id]
    for name in ("fireside", "Fireside@HQ", "Fireside_MSA"):
        if name not in names:
            names.append(name)
    while len(names) < config.accounts:
        names.append(f"acct{len(names) + 1}")
    return names[: max(1, config.accounts)]


def _luhn_digit(body: str) -> str:
    """Check digit that makes `body + digit` pass the Luhn test (as real IMEIs do)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return str((10 - total % 10) % 10)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _city_for(index: int) -> str:
    """Nairobi ~60 %, Mombasa ~25 %, Kampala ~15 %, interleaved so small fleets get all three."""
    slot = (index * 13) % 20
    return "Nairobi" if slot < 12 else "Mombasa" if slot < 17 else "Kampala"


def _make_devices(config: SimConfig) -> list[SimDevice]:
    """The fleet's devices, deterministic in `config.seed`."""
    rng = random.Random(f"fleet|{config.seed}")
    accounts = account_names(config)
    seen_imei: set[str] = set()
    seen_plate: set[str] = set()
    out: list[SimDevice] = []
    for i in range(config.devices):
        prefix, mc_type = rng.choices(_IMEI_MODELS, weights=_IMEI_WEIGHTS)[0]
        while True:
            body = prefix + _digits(rng, 14 - len(prefix))
            imei = body + _luhn_digit(body)
            if imei not in seen_imei:
                seen_imei.add(imei)
                break
        city = _city_for(i)
        kenya = _CITY_COUNTRY[city] == "KE"
        while True:
            head = f"K{rng.choice('CD')}" if kenya else f"U{rng.choice('ABM')}"
            plate = (
                f"{head}{rng.choice(_PLATE_LETTERS)} {rng.randint(100, 999)}"
                f"{rng.choice(_PLATE_LETTERS)}"
            )
            if plate not in seen_plate:
                seen_plate.add(plate)
                break
        brand, model = rng.choice(_VEHICLES)
        last = _LAST_NAMES_KE if kenya else _LAST_NAMES_UG
        roads = ROADS[city]
        home_road = rng.randrange(len(roads))
        activation = datetime(2023, 1, 1, tzinfo=UTC).timestamp() + rng.randint(0, 700) * DAY_S
        out.append(
            SimDevice(
                index=i,
                imei=imei,
                account=accounts[i % len(accounts)],
                device_name=f"{mc_type}-{imei[-5:]}",
                mc_type=mc_type,
                sim=("2547" if kenya else "2567") + _digits(rng, 8),
                iccid=("89254" if kenya else "89256") + _digits(rng, 14),
                imsi=("63902" if kenya else "64101") + _digits(rng, 10),
                vehicle_number=plate,
                vehicle_name=f"{model} {plate}",
                vehicle_brand=brand,
                vehicle_model=model,
                vin="".join(rng.choice(_VIN_CHARS) for _ in range(17)),
                engine_number=f"{rng.choice(('1NZ', '2KD', 'HR15', '4JJ1'))}{_digits(rng, 7)}",
                driver_name=f"{rng.choice(_FIRST_NAMES)} {rng.choice(last)}",
                driver_phone=("+2547" if kenya else "+2567") + _digits(rng, 8),
                city=city,
                activation_time=datetime.fromtimestamp(activation + rng.randint(0, DAY_S), UTC),
                expiration=datetime.fromtimestamp(activation + 3650 * DAY_S, UTC),
                home_road=home_road,
                home_s=rng.uniform(500.0, min(roads[home_road].length - 200.0, 12_000.0)),
                base_odometer_km=rng.uniform(5_000.0, 160_000.0),
                daily_km=rng.uniform(60.0, 160.0),
                fuel_100km=round(rng.uniform(7.0, 14.0), 1),
                tank_l=float(rng.choice((40, 45, 50, 60, 70, 80))),
            )
        )
    return out


# ═════════════════════════════════════════════════════════════════════════════
# Model: day plans and the Fleet
# ═════════════════════════════════════════════════════════════════════════════

_Leg = tuple[Road, float, float]  # road, from arc length, to arc length


@dataclass(slots=True)
class _Trip:
    """A planned trip: idle (acc on) from idle_start, driving start..end along `legs`."""

    idle_start: int
    start: int
    end: int
    legs: tuple[_Leg, ...]
    length_m: float
    wobble_a: float
    wobble_k: int
    seed: int
    distance_m: int | None = None  # cached sum along the fixes
    alarms: list[SimAlarm] | None = None  # cached


@dataclass(slots=True)
class _DayPlan:
    """What one vehicle does on one UTC day."""

    day: int
    trips: list[_Trip]
    idle_starts: list[int]
    total_length_m: float
    fuel_start_pct: float
    events: list[tuple[int, str]]


def _path_point(legs: tuple[_Leg, ...], d: float) -> tuple[float, float, float]:
    """(lat, lng, heading) at distance `d` along a trip path."""
    for n, (road, s0, s1) in enumerate(legs):
        seg = abs(s1 - s0)
        if d <= seg or n == len(legs) - 1:
            forward = s1 >= s0
            lat, lng, brg = road.at(s0 + d if forward else s0 - d)
            return lat, lng, brg if forward else (brg + 180.0) % 360.0
        d -= seg
    raise ValueError("empty path")  # pragma: no cover


def _legs(roads: tuple[Road, ...], r1: int, s1: float, r2: int, s2: float) -> tuple[_Leg, ...]:
    """Path from (road r1, s1) to (road r2, s2): along one road, or via the city hub."""
    if r1 == r2:
        return ((roads[r1], s1, s2),)
    return ((roads[r1], s1, 0.0), (roads[r2], 0.0, s2))


def _road_dist(r1: int, s1: float, r2: int, s2: float) -> float:
    """Metres of road between two points of a city network (via the hub if roads differ)."""
    return abs(s1 - s2) if r1 == r2 else s1 + s2


def _choose_dest(
    rng: random.Random, roads: tuple[Road, ...], r1: int, s1: float, want: float
) -> tuple[int, float]:
    """A destination roughly `want` metres of road away from (r1, s1)."""
    options: list[tuple[int, float]] = []
    if s1 + want <= roads[r1].length - 100:
        options.append((r1, s1 + want))
    if s1 - want >= 300:
        options.append((r1, s1 - want))
    for j, road in enumerate(roads):
        if j != r1 and 300 <= want - s1 <= road.length - 100:
            options.append((j, want - s1))
    if options:
        return options[rng.randrange(len(options))]
    j = rng.randrange(len(roads))
    return j, rng.uniform(300.0, roads[j].length - 100.0)


def _epoch(moment: datetime) -> float:
    """POSIX seconds of a datetime (naive values are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Fleet:
    """The deterministic vehicle model: same seed, same answers, whatever the query order."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.accounts = account_names(self.config)
        self._devices = _make_devices(self.config)
        self._by_imei = {d.imei: d for d in self._devices}
        size = max(4096, 3 * len(self._devices) + 1024)
        self._plan = functools.lru_cache(maxsize=size)(self._build_plan)

    # ── devices ────────────────────────────────────────────────────────────

    def devices(self) -> list[SimDevice]:
        """All devices, in IMEI-assignment order."""
        return list(self._devices)

    def device(self, imei: str) -> SimDevice:
        """The device with this IMEI (KeyError if unknown)."""
        return self._by_imei[imei]

    def get_device(self, imei: str) -> SimDevice | None:
        """The device with this IMEI, or None."""
        return self._by_imei.get(imei)

    def devices_of(self, account: str) -> list[SimDevice]:
        """Devices owned by one account."""
        return [d for d in self._devices if d.account == account]

    # ── plans ──────────────────────────────────────────────────────────────

    def _build_plan(self, index: int, day: int) -> _DayPlan:
        """Plan of device `index` for UTC day number `day` (cached)."""
        dev = self._devices[index]
        rng = random.Random(f"{self.config.seed}|{dev.imei}|{day}")
        roads = ROADS[dev.city]
        n = rng.randint(3, 6)
        r, s = dev.home_road, dev.home_s
        raw: list[tuple[tuple[_Leg, ...], float, int, float, int, int, int]] = []
        for i in range(n):
            v_kmh = rng.uniform(20.0, 70.0)
            want_s = rng.uniform(10.0, 60.0) * 60.0
            if i == n - 1:
                r2, s2 = dev.home_road, dev.home_s
            else:
                want = max(3000.0, v_kmh / 3.6 * want_s)
                for _ in range(6):  # no hops of a few metres, no penultimate stop next to home
                    r2, s2 = _choose_dest(rng, roads, r, s, want)
                    home_gap = _road_dist(r2, s2, dev.home_road, dev.home_s)
                    if _road_dist(r, s, r2, s2) >= 1500 and (i < n - 2 or home_gap >= 2500):
                        break
            legs = _legs(roads, r, s, r2, s2)
            if _road_dist(r, s, r2, s2) < 1500:  # rare: home is next door; go round via the hub
                legs = ((roads[r], s, 0.0), (roads[r2], 0.0, s2))
            length = max(sum(abs(b - a) for _, a, b in legs), 50.0)
            dur = length / (v_kmh / 3.6)
            if dur > 3600:
                dur = max(3600.0, length / (85 / 3.6))
            elif dur < 600:
                dur = max(length / (20 / 3.6), 120.0)
            raw.append(
                (
                    legs,
                    length,
                    max(120, round(dur)),
                    rng.uniform(0.15, 0.45),
                    rng.randint(2, 6),
                    rng.randint(60, 300),
                    rng.getrandbits(32),
                )
            )
            r, s = r2, s2
        busy = sum(item[2] + item[5] for item in raw)
        free = max(WORK_END_S - WORK_START_S - busy, 300 * (n + 1))
        weights = [rng.uniform(0.3, 1.5) for _ in range(n + 1)]
        wsum = sum(weights)
        t = day * DAY_S + WORK_START_S + round(free * weights[0] / wsum)
        trips: list[_Trip] = []
        for (legs, length, dur, a, k, idle, seed), w in zip(raw, weights[1:], strict=True):
            trip = _Trip(
                idle_start=t,
                start=t + idle,
                end=t + idle + dur,
                legs=legs,
                length_m=length,
                wobble_a=a,
                wobble_k=k,
                seed=seed,
            )
            trips.append(trip)
            t = trip.end + max(60, round(free * w / wsum))
        fuel_start = rng.uniform(45.0, 100.0)
        events: list[tuple[int, str]] = []
        if rng.random() < 0.3:
            out_at = day * DAY_S + rng.randint(19 * 3600, 23 * 3600)
            events = [(out_at, "LOGOUT"), (out_at + rng.randint(120, 1200), "LOGIN")]
        return _DayPlan(
            day=day,
            trips=trips,
            idle_starts=[tr.idle_start for tr in trips],
            total_length_m=sum(tr.length_m for tr in trips),
            fuel_start_pct=fuel_start,
            events=events,
        )

    def _plans(self, dev: SimDevice, begin: float, end: float) -> Iterator[_DayPlan]:
        """Day plans covering [begin, end) plus the day before (its last parking spills over)."""
        for day in range(math.floor(begin) // DAY_S - 1, math.ceil(end) // DAY_S + 1):
            yield self._plan(dev.index, day)

    # ── fixes ──────────────────────────────────────────────────────────────

    @staticmethod
    def _moving_state(trip: _Trip, t: float) -> tuple[float, float, float, float]:
        """(lat, lng, heading, speed km/h) at time t within the drive (exact, not snapped)."""
        dur = trip.end - trip.start
        tau = min(max((t - trip.start) / dur, 0.0), 1.0)
        w = 2 * math.pi * trip.wobble_k
        d = trip.length_m * (tau - trip.wobble_a * math.sin(w * tau) / w)
        lat, lng, brg = _path_point(trip.legs, d)
        speed = trip.length_m / dur * 3.6 * (1 - trip.wobble_a * math.cos(w * tau))
        return lat, lng, brg, speed

    @staticmethod
    def _distance_at(trip: _Trip, t: float) -> float:
        """Path metres covered by time t within the drive."""
        tau = min(max((t - trip.start) / (trip.end - trip.start), 0.0), 1.0)
        w = 2 * math.pi * trip.wobble_k
        return trip.length_m * (tau - trip.wobble_a * math.sin(w * tau) / w)

    @staticmethod
    def _sats(dev: SimDevice, ts: int) -> int:
        return 6 + (ts // FIX_INTERVAL_S + dev.index * 7) % 7

    def _fix(self, dev: SimDevice, trip: _Trip, ts: int) -> SimFix:
        """The fix of `trip` at one of its report times (idle start, grid, end)."""
        if ts < trip.start or ts >= trip.end:
            at_end = ts >= trip.end
            lat, lng, brg = _path_point(trip.legs, trip.length_m if at_end else 0.0)
            return SimFix(
                dev.imei,
                _dt(ts),
                round(lat, 6),
                round(lng, 6),
                0,
                round(brg) % 360,
                acc_on=not at_end,
                moving=False,
                satellites=self._sats(dev, ts),
            )
        lat, lng, brg, speed = self._moving_state(trip, ts)
        return SimFix(
            dev.imei,
            _dt(ts),
            round(lat, 6),
            round(lng, 6),
            round(speed),
            round(brg) % 360,
            acc_on=True,
            moving=True,
            satellites=self._sats(dev, ts),
        )

    def _trip_fix_times(self, trip: _Trip) -> list[int]:
        """Report times of a trip: idle start, drive start, every 30 s, drive end."""
        return [trip.idle_start, *range(trip.start, trip.end, FIX_INTERVAL_S), trip.end]

    def _fix_at(self, dev: SimDevice, ts: int) -> tuple[SimFix, _Trip]:
        """Latest fix at or before `ts`, and the trip it belongs to."""
        plan = self._plan(dev.index, ts // DAY_S)
        i = bisect.bisect_right(plan.idle_starts, ts) - 1
        if i < 0:
            trip = self._plan(dev.index, ts // DAY_S - 1).trips[-1]
            return self._fix(dev, trip, trip.end), trip
        trip = plan.trips[i]
        if ts >= trip.end:
            return self._fix(dev, trip, trip.end), trip
        if ts < trip.start:
            return self._fix(dev, trip, trip.idle_start), trip
        grid = trip.start + (ts - trip.start) // FIX_INTERVAL_S * FIX_INTERVAL_S
        return self._fix(dev, trip, grid), trip

    def position_at(self, imei: str, t: datetime) -> SimFix:
        """The latest fix the device reported at or before `t` (what a live poll shows)."""
        return self._fix_at(self.device(imei), math.floor(_epoch(t)))[0]

    def track(self, imei: str, begin: datetime, end: datetime) -> list[SimFix]:
        """Fixes the device reported in [begin, end), oldest first."""
        dev = self.device(imei)
        b, e = _epoch(begin), _epoch(end)
        out: list[SimFix] = []
        for plan in self._plans(dev, b, e):
            for trip in plan.trips:
                if trip.end < b or trip.idle_start >= e:
                    continue
                out.extend(
                    self._fix(dev, trip, ts) for ts in self._trip_fix_times(trip) if b <= ts < e
                )
        return out

    # ── trips, stops ───────────────────────────────────────────────────────

    def _trip_distance(self, dev: SimDevice, trip: _Trip) -> int:
        """Metres along the trip's fixes from drive start to drive end (cached)."""
        if trip.distance_m is None:
            fixes = [self._fix(dev, trip, ts) for ts in self._trip_fix_times(trip)[1:]]
            trip.distance_m = round(
                sum(haversine_m(a.lat, a.lng, b.lat, b.lng) for a, b in itertools.pairwise(fixes))
            )
        return trip.distance_m

    def _odometer_m(self, dev: SimDevice, ts: float) -> float:
        """Cumulative odometer: continuous and monotonic, `daily_km` per UTC day."""
        day = math.floor(ts) // DAY_S
        plan = self._plan(dev.index, day)
        done = 0.0
        for trip in plan.trips:
            if ts >= trip.end:
                done += trip.length_m
            else:
                if ts > trip.start:
                    done += self._distance_at(trip, ts)
                break
        per_day = dev.daily_km * 1000.0
        base = dev.base_odometer_km * 1000.0 + (day - ODO_EPOCH_DAY) * per_day
        return base + per_day * done / plan.total_length_m

    def odometer_km(self, imei: str, t: datetime) -> float:
        """The vehicle's odometer (km) at `t`."""
        return self._odometer_m(self.device(imei), _epoch(t)) / 1000.0

    def _sim_trip(self, dev: SimDevice, trip: _Trip) -> SimTrip:
        first = self._fix(dev, trip, trip.start)
        last = self._fix(dev, trip, trip.end)
        dist = self._trip_distance(dev, trip)
        run = trip.end - trip.start
        peak = trip.length_m / run * 3.6 * (1 + trip.wobble_a)
        return SimTrip(
            imei=dev.imei,
            start_time=_dt(trip.start),
            end_time=_dt(trip.end),
            start_lat=first.lat,
            start_lng=first.lng,
            end_lat=last.lat,
            end_lng=last.lng,
            distance_m=dist,
            run_time_s=run,
            avg_speed_kmh=round(dist / run * 3.6, 1),
            max_speed_kmh=round(peak),
            start_odometer_m=round(self._odometer_m(dev, trip.start)),
            end_odometer_m=round(self._odometer_m(dev, trip.end)),
        )

    def trips(self, imei: str, begin: datetime, end: datetime) -> list[SimTrip]:
        """Trips that start in [begin, end) and have ended before `end`."""
        dev = self.device(imei)
        b, e = _epoch(begin), _epoch(end)
        return [
            self._sim_trip(dev, trip)
            for plan in self._plans(dev, b, e)
            for trip in plan.trips
            if b <= trip.start < e and trip.end < e
        ]

    def stops(self, imei: str, begin: datetime, end: datetime, acc_on: bool) -> list[SimStop]:
        """Parking (acc_on False) or idling (acc_on True) stops that start in [begin, end) and
        have ended before `end`."""
        dev = self.device(imei)
        b, e = _epoch(begin), _epoch(end)
        out: list[SimStop] = []
        for plan in self._plans(dev, b, e):
            for i, trip in enumerate(plan.trips):
                if acc_on:
                    start, stop, road = trip.idle_start, trip.start, trip.legs[0][0]
                    lat, lng, _ = _path_point(trip.legs, 0.0)
                else:
                    nxt = (
                        plan.trips[i + 1]
                        if i + 1 < len(plan.trips)
                        else self._plan(dev.index, plan.day + 1).trips[0]
                    )
                    start, stop, road = trip.end, nxt.idle_start, trip.legs[-1][0]
                    lat, lng, _ = _path_point(trip.legs, trip.length_m)
                if b <= start < e and stop < e:
                    out.append(
                        SimStop(
                            dev.imei,
                            _dt(start),
                            _dt(stop),
                            round(lat, 6),
                            round(lng, 6),
                            acc_on,
                            stop - start,
                            f"{road.name}, {road.city}",
                        )
                    )
        return out

    # ── alarms, OBD, events ────────────────────────────────────────────────

    def _trip_alarms(self, dev: SimDevice, trip: _Trip) -> list[SimAlarm]:
        """Alarms of one trip, deterministic in the trip seed (cached)."""
        if trip.alarms is not None:
            return trip.alarms
        rng = random.Random(trip.seed)
        dur = trip.end - trip.start
        draws = [rng.random() for _ in range(5)]
        acce_at = trip.start + round(rng.uniform(0.05, 0.4) * dur)
        dece_at = trip.start + round(rng.uniform(0.6, 0.95) * dur)
        sos_at = trip.start + round(rng.uniform(0.1, 0.9) * dur)
        found: list[tuple[int, str]] = []
        if draws[0] < 0.15:
            found.append((trip.idle_start, "ACC_ON"))
        if draws[1] < 0.25:
            found.append((acce_at, "ubiAcce"))
        if trip.length_m / dur * 3.6 * (1 + trip.wobble_a) > 80:
            found.append((trip.start + round(dur / (2 * trip.wobble_k)), "6"))
        if draws[2] < 0.25:
            found.append((dece_at, "ubiDece"))
        if draws[3] < 0.01:
            found.append((sos_at, "1"))
        if draws[4] < 0.15:
            found.append((trip.end, "ACC_OFF"))
        alarms = []
        for ts, type_id in sorted(found):
            if trip.start < ts < trip.end:
                lat, lng, _, speed = self._moving_state(trip, ts)
            else:
                lat, lng, _ = _path_point(trip.legs, 0.0 if ts <= trip.start else trip.length_m)
                speed = 0.0
            alarms.append(
                SimAlarm(
                    dev.imei,
                    _dt(ts),
                    type_id,
                    ALARM_TYPES[type_id],
                    round(lat, 6),
                    round(lng, 6),
                    round(speed),
                )
            )
        trip.alarms = alarms
        return alarms

    def alarms(self, imei: str, begin: datetime, end: datetime) -> list[SimAlarm]:
        """Alarms raised in [begin, end), oldest first."""
        dev = self.device(imei)
        b, e = _epoch(begin), _epoch(end)
        return [
            alarm
            for plan in self._plans(dev, b, e)
            for trip in plan.trips
            if trip.end >= b and trip.idle_start < e
            for alarm in self._trip_alarms(dev, trip)
            if b <= alarm.alarm_time.timestamp() < e
        ]

    def obd(self, imei: str, begin: datetime, end: datetime) -> list[SimObd]:
        """OBD readings (every 10 min while driving) in [begin, end)."""
        dev = self.device(imei)
        b, e = _epoch(begin), _epoch(end)
        out: list[SimObd] = []
        for plan in self._plans(dev, b, e):
            day_odo = self._odometer_m(dev, plan.day * DAY_S)
            for trip in plan.trips:
                for ts in range(trip.start, trip.end, OBD_INTERVAL_S):
                    if not b <= ts < e:
                        continue
                    _, _, _, speed = self._moving_state(trip, ts)
                    odo = self._odometer_m(dev, ts)
                    fuel = (
                        dev.tank_l * plan.fuel_start_pct / 100
                        - dev.fuel_100km * (odo - day_odo) / 100_000
                    )
                    fuel = max(fuel, dev.tank_l * 0.05)
                    warm = min(1.0, (ts - trip.start) / 900)
                    out.append(
                        SimObd(
                            imei=dev.imei,
                            report_time=_dt(ts),
                            odometer_km=round(odo / 1000, 1),
                            accumulated_km=round(odo / 1000 - dev.base_odometer_km * 0.4, 1),
                            remaining_fuel_l=round(fuel, 1),
                            remaining_fuel_pct=round(100 * fuel / dev.tank_l),
                            coolant_c=round(45 + 45 * warm + (ts // 60) % 3),
                            battery_v=round(13.6 + ((ts // 600) % 7) / 10, 1),
                            rpm=round(800 + speed * 32),
                            speed_kmh=round(speed),
                            vin=dev.vin,
                        )
                    )
        return out

    def events(self, imei: str, begin: datetime, end: datetime) -> list[SimEvent]:
        """LOGIN/LOGOUT events in [begin, end)."""
        dev = self.device(imei)
        b, e = _epoch(begin), _epoch(end)
        return [
            SimEvent(dev.imei, _dt(ts), kind)
            for plan in self._plans(dev, b, e)
            for ts, kind in plan.events
            if b <= ts < e
        ]

    def heartbeat_at(self, imei: str, t: datetime) -> datetime:
        """Time of the latest heartbeat (every 3 min) at or before `t`."""
        dev = self.device(imei)
        ts = math.floor(_epoch(t))
        return _dt(ts - (ts - dev.index * 37) % HB_INTERVAL_S)


# ═════════════════════════════════════════════════════════════════════════════
# Protocol: signing, errors, faults, records
# ═════════════════════════════════════════════════════════════════════════════


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


# ═════════════════════════════════════════════════════════════════════════════
# HTTP server
# ═════════════════════════════════════════════════════════════════════════════


class _HTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server with a deep accept queue for load tests."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 4096
    sim: SimServer


class _RequestHandler(BaseHTTPRequestHandler):
    """Routes `/route/rest` to the API and `/_sim/*` to the admin endpoints."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls
    server_version = "nginx"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Send access logs to the module logger at DEBUG."""
        log.debug("%s %s", self.address_string(), format % args)

    @property
    def _sim(self) -> SimServer:
        return cast(_HTTPServer, self.server).sim

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._send(status, body, "application/json;charset=UTF-8")

    def do_POST(self) -> None:
        """API and admin POSTs."""
        url = urlsplit(self.path)
        raw = self._body()
        if url.path == "/route/rest":
            query = parse_qs(url.query, keep_blank_values=True)
            query.update(parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True))
            params = {k: v[-1] for k, v in query.items()}
            status, payload = self._sim.api.handle(params)
            if isinstance(payload, str):
                self._send(status, payload.encode(), "text/html")
            else:
                self._send_json(status, payload)
        elif url.path == "/_sim/faults":
            try:
                values = json.loads(raw or b"{}")
                if not isinstance(values, dict):
                    raise ValueError("body must be a JSON object")
                self._sim.faults.update(values)
            except (ValueError, TypeError) as exc:
                self._send_json(400, {"ok": False, "error": str(exc)})
                return
            self._send_json(200, {"ok": True, **self._sim.faults.as_dict()})
        elif url.path == "/_sim/expire-tokens":
            self._sim.expire_all_tokens()
            self._send_json(200, {"ok": True})
        elif url.path == "/_sim/clear-requests":
            self._sim.clear_requests()
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, {"code": 404, "message": "not found"})

    def do_GET(self) -> None:
        """Admin GETs (health, faults); the API itself only answers POST."""
        path = urlsplit(self.path).path
        if path == "/_sim/health":
            self._send_json(200, {"ok": True, "devices": len(self._sim.fleet.devices())})
        elif path == "/_sim/faults":
            self._send_json(200, self._sim.faults.as_dict())
        elif path == "/route/rest":
            self._send(405, b"Method Not Allowed", "text/plain")
        else:
            self._send_json(404, {"code": 404, "message": "not found"})


class SimServer:
    """The simulator on a loopback port, served from a daemon thread."""

    def __init__(
        self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SimConfig()
        self.host = host
        self.port = port
        self.fleet = Fleet(self.config)
        self.faults = Faults.from_config(self.config)
        self.api = JimiApi(self.config, self.fleet, self.faults)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """`http://host:port` (admin endpoints live under `/_sim/`)."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The API endpoint `http://host:port/route/rest`."""
        return f"{self.base_url}/route/rest"

    @property
    def requests(self) -> list[SimRequest]:
        """Snapshot of every API call received."""
        return self.api.requests

    def clear_requests(self) -> None:
        """Forget recorded calls."""
        self.api.clear_requests()

    def expire_all_tokens(self) -> None:
        """Make every issued token invalid (next call answers 1004)."""
        self.api.expire_all_tokens()

    def start(self) -> SimServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.host, self.port), _RequestHandler)
        httpd.sim = self
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="jimi-sim", daemon=True
        )
        self._thread.start()
        log.info("jimi_sim serving %d devices on %s", len(self.fleet.devices()), self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ═════════════════════════════════════════════════════════════════════════════
# Push
# ═════════════════════════════════════════════════════════════════════════════


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


# ═════════════════════════════════════════════════════════════════════════════
# CLI
# ═════════════════════════════════════════════════════════════════════════════


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    d = SimConfig()
    p = argparse.ArgumentParser(description="Tracksolid Pro / JIMI Open Platform API simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8088)
    p.add_argument("--devices", type=int, default=d.devices)
    p.add_argument("--accounts", type=int, default=d.accounts)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--app-key", default=d.app_key)
    p.add_argument("--app-secret", default=d.app_secret)
    p.add_argument("--user-id", default=d.user_id)
    p.add_argument("--user-pwd", default=d.user_pwd)
    p.add_argument("--token-ttl-max", type=int, default=d.token_ttl_max)
    p.add_argument("--fail-1006", type=float, default=d.fail_1006)
    p.add_argument("--fail-5xx", type=float, default=d.fail_5xx)
    p.add_argument("--slow-share", type=float, default=d.slow_share)
    p.add_argument("--slow-ms", type=int, default=d.slow_ms)
    p.add_argument("--malformed", type=float, default=d.malformed)
    p.add_argument("--push-url", default=None)
    p.add_argument("--push-token", default=None)
    p.add_argument("--push-interval", type=float, default=d.push_interval_s)
    p.add_argument("--push-openapi-path", default=d.push_openapi_path)
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until Ctrl-C / SIGTERM."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = SimConfig(
        devices=args.devices,
        accounts=args.accounts,
        seed=args.seed,
        app_key=args.app_key,
        app_secret=args.app_secret,
        user_id=args.user_id,
        user_pwd=args.user_pwd,
        token_ttl_max=args.token_ttl_max,
        fail_1006=args.fail_1006,
        fail_5xx=args.fail_5xx,
        slow_share=args.slow_share,
        slow_ms=args.slow_ms,
        malformed=args.malformed,
        push_url=args.push_url,
        push_token=args.push_token,
        push_interval_s=args.push_interval,
        push_openapi_path=args.push_openapi_path,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = SimServer(config, host=args.host, port=args.port).start()
    sys.stdout.write(f"jimi_sim listening on {server.url}\n")
    sys.stdout.flush()
    pusher: PushSender | None = None
    push_thread: threading.Thread | None = None
    if config.push_url:
        pusher = PushSender(config, server.fleet)
        push_thread = threading.Thread(
            target=pusher.run, args=(stop,), name="jimi-push", daemon=True
        )
        push_thread.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        if push_thread is not None and pusher is not None:
            push_thread.join(timeout=15)
            pusher.close()
        log.info("jimi_sim stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
