"""Model: the public records the fleet model answers with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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
