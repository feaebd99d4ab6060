"""Model: day plans and the `Fleet` (the deterministic vehicle model).

Each vehicle's day is planned from hash(seed, imei, day): 3-6 trips along the city's roads
between 08:00 and 20:00 EAT. Any instant is computable in O(trips per day).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sim.config import (
    DAY_S,
    FIX_INTERVAL_S,
    HB_INTERVAL_S,
    OBD_INTERVAL_S,
    ODO_EPOCH_DAY,
    SHIFTS,
    WORK_END_S,
    WORK_START_S,
    SimConfig,
)
from sim.devices import _make_devices, account_names
from sim.records import ALARM_TYPES, SimAlarm, SimDevice, SimEvent, SimFix, SimObd, SimStop, SimTrip
from sim.roads import ROADS, Road, haversine_m

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


@dataclass(frozen=True, slots=True)
class Dispatch:
    """An errand off the day plan (a technician sent to a ticket): from the planned position
    at `start`, straight to the site at `speed_kmh`, parked there until `leave`, straight back
    to where the plan is at `back`. Fixes every FIX_INTERVAL_S replace the plan's meanwhile."""

    lat: float
    lng: float
    start: int
    arrive: int
    leave: int
    back: int
    from_lat: float
    from_lng: float
    back_lat: float
    back_lng: float
    speed_kmh: float

    def position(self, ts: int) -> tuple[float, float, float, bool]:
        """(lat, lng, speed km/h, moving) at `ts` in [start, back)."""
        if ts < self.arrive:
            return (*_between(self.from_lat, self.from_lng, self.lat, self.lng,
                              (ts - self.start) / max(1, self.arrive - self.start)),
                    self.speed_kmh, True)  # fmt: skip
        if ts < self.leave:
            return self.lat, self.lng, 0.0, False
        return (*_between(self.lat, self.lng, self.back_lat, self.back_lng,
                          (ts - self.leave) / max(1, self.back - self.leave)),
                self.speed_kmh, True)  # fmt: skip


def _between(lat0: float, lng0: float, lat1: float, lng1: float, f: float) -> tuple[float, float]:
    return lat0 + (lat1 - lat0) * f, lng0 + (lng1 - lng0) * f


def _bearing(lat0: float, lng0: float, lat1: float, lng1: float) -> float:
    return math.degrees(math.atan2(lng1 - lng0, lat1 - lat0)) % 360


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
        self._detached: set[str] = set()  # devices no account holds (the API answers 1002)
        self._dispatches: dict[str, list[Dispatch]] = {}  # errands off the plan, by IMEI
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
        """The device with this IMEI as the API sees it (None: unknown or detached)."""
        return None if imei in self._detached else self._by_imei.get(imei)

    def devices_of(self, account: str) -> list[SimDevice]:
        """Devices owned by one account (detached ones are listed nowhere)."""
        return [d for d in self._devices if d.account == account and d.imei not in self._detached]

    def detach(self, imei: str) -> None:
        """Take a device out of its account: the API no longer lists it and answers 1002
        for it ("illegal device"), while the device itself keeps moving (and pushing)."""
        self.device(imei)
        self._detached.add(imei)

    def attach(self, imei: str) -> None:
        """Put a detached device back under its account."""
        self._detached.discard(imei)

    # ── plans ──────────────────────────────────────────────────────────────

    def _shift(self, dev: SimDevice) -> int:
        """Seconds the device's working day is shifted from the UTC day (0 unless the fleet
        runs round the clock: then the shifts are spread evenly over the day)."""
        if not self.config.round_the_clock:
            return 0
        return (dev.index % SHIFTS) * (DAY_S // SHIFTS)

    def _day_of(self, dev: SimDevice, ts: float) -> int:
        """The number of the device's (possibly shifted) day that contains `ts`."""
        return (math.floor(ts) - self._shift(dev)) // DAY_S

    def _build_plan(self, index: int, day: int) -> _DayPlan:
        """Plan of device `index` for its day number `day` (the UTC day unless shifted;
        cached)."""
        dev = self._devices[index]
        rng = random.Random(f"{self.config.seed}|{dev.imei}|{day}")
        roads = ROADS[dev.city]
        n = rng.randint(3, 6) * (2 if self.config.round_the_clock else 1)
        day_start = day * DAY_S + self._shift(dev)
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
        t = day_start + WORK_START_S + round(free * weights[0] / wsum)
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
            out_at = day_start + rng.randint(19 * 3600, 23 * 3600)
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
        for day in range(self._day_of(dev, begin) - 1, self._day_of(dev, math.ceil(end)) + 1):
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
        """Latest fix at or before `ts` (an errand's when one is under way), and the plan's
        trip at that time."""
        plan_fix, trip = self._plan_fix_at(dev, ts)
        errand = self._dispatch_at(dev.imei, ts)
        if errand is None:
            return plan_fix, trip
        grid = errand.start + (ts - errand.start) // FIX_INTERVAL_S * FIX_INTERVAL_S
        return self._dispatch_fix(dev, errand, grid), trip

    def _dispatch_at(self, imei: str, ts: int) -> Dispatch | None:
        return next((d for d in self._dispatches.get(imei, ()) if d.start <= ts < d.back), None)

    def _dispatch_fix(self, dev: SimDevice, d: Dispatch, ts: int) -> SimFix:
        lat, lng, speed, moving = d.position(ts)
        if ts < d.arrive:
            heading = _bearing(d.from_lat, d.from_lng, d.lat, d.lng)
        else:
            heading = _bearing(d.lat, d.lng, d.back_lat, d.back_lng)
        return SimFix(dev.imei, _dt(ts), round(lat, 6), round(lng, 6), round(speed),
                      round(heading) % 360, acc_on=moving, moving=moving,
                      satellites=self._sats(dev, ts))  # fmt: skip

    def dispatch(
        self, imei: str, lat: float, lng: float, start: datetime, dwell_s: int,
        speed_kmh: float = 30.0,
    ) -> Dispatch:  # fmt: skip
        """Send a vehicle to (lat, lng) from `start`: it drives there straight, stays
        `dwell_s` seconds parked (ignition off), and drives back to its day plan."""
        dev = self.device(imei)
        t0 = math.floor(_epoch(start))
        here, _ = self._plan_fix_at(dev, t0)
        metres_per_s = speed_kmh / 3.6
        go = max(FIX_INTERVAL_S, round(haversine_m(here.lat, here.lng, lat, lng) / metres_per_s))
        arrive, leave = t0 + go, t0 + go + dwell_s
        later, _ = self._plan_fix_at(dev, leave + go)
        back = leave + max(
            FIX_INTERVAL_S, round(haversine_m(lat, lng, later.lat, later.lng) / metres_per_s)
        )
        errand = Dispatch(lat, lng, t0, arrive, leave, back, here.lat, here.lng,
                          later.lat, later.lng, speed_kmh)  # fmt: skip
        self._dispatches.setdefault(imei, []).append(errand)
        return errand

    def on_errand(self, imei: str, at: datetime) -> bool:
        """Whether the vehicle is on a dispatched errand at `at` (or sent on one later)."""
        ts = math.floor(_epoch(at))
        return any(d.back > ts for d in self._dispatches.get(imei, ()))

    def _plan_fix_at(self, dev: SimDevice, ts: int) -> tuple[SimFix, _Trip]:
        """Latest fix of the day plan at or before `ts`, and the trip it belongs to."""
        plan = self._plan(dev.index, self._day_of(dev, ts))
        i = bisect.bisect_right(plan.idle_starts, ts) - 1
        if i < 0:
            trip = self._plan(dev.index, plan.day - 1).trips[-1]
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
                    self._fix(dev, trip, ts)
                    for ts in self._trip_fix_times(trip)
                    if b <= ts < e and self._dispatch_at(imei, ts) is None
                )
        for d in self._dispatches.get(imei, ()):
            times = {*range(d.start, d.back, FIX_INTERVAL_S), d.arrive, d.leave}
            out.extend(self._dispatch_fix(dev, d, ts) for ts in times if b <= ts < e)
        if imei in self._dispatches:
            out.sort(key=lambda f: f.gps_time)
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
        day = self._day_of(dev, ts)
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
        harsh = 0.5 if self.config.round_the_clock else 0.25  # demo: more to show
        if draws[0] < 0.15:
            found.append((trip.idle_start, "ACC_ON"))
        if draws[1] < harsh:
            found.append((acce_at, "ubiAcce"))
        if trip.length_m / dur * 3.6 * (1 + trip.wobble_a) > 80:
            found.append((trip.start + round(dur / (2 * trip.wobble_k)), "6"))
        if draws[2] < harsh:
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
            day_odo = self._odometer_m(dev, plan.day * DAY_S + self._shift(dev))
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
