"""Test data for the reporting layer, inserted directly with SQL (fast and deterministic).

Low-level `add_*` helpers write one row (or one track) each; `seed_fleet` builds the standard
small fleet the read-API tests assert against and returns what it inserted. "Today" is the
East-Africa (UTC+3) calendar day, like the reporting layer; today's events are placed inside
the part of today that has already elapsed, so the tests pass at any hour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg

EAT = timezone(timedelta(hours=3), "EAT")

Conn = psycopg.Connection[Any]


def add_device(
    conn: Conn,
    imei: str,
    vehicle_number: str | None,
    *,
    driver_name: str | None = None,
    driver_phone: str | None = None,
    cost_centre: str | None = None,
    city: str | None = None,
    vehicle_type: str | None = None,
    vehicle_name: str | None = None,
    account: str = "fireside",
    is_active: bool = True,
) -> None:
    conn.execute(
        """
        INSERT INTO tracksolid.devices (imei, vehicle_number, vehicle_name, driver_name,
            driver_phone, cost_centre, city, vehicle_type, account, is_active, source)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'csv')
        """,
        (
            imei,
            vehicle_number,
            vehicle_name,
            driver_name,
            driver_phone,
            cost_centre,
            city,
            vehicle_type,
            account,
            is_active,
        ),
    )


def add_live_position(
    conn: Conn,
    imei: str,
    lat: float,
    lng: float,
    *,
    gps_time: datetime,
    speed_kmh: float = 0.0,
    acc_on: bool = False,
    online: bool = True,
    direction_deg: int = 90,
) -> None:
    conn.execute(
        """
        INSERT INTO tracksolid.live_positions (imei, gps_time, lat, lng, speed_kmh, direction_deg,
            acc_on, online, source)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'poll')
        """,
        (imei, gps_time, lat, lng, speed_kmh, direction_deg, acc_on, online),
    )


def add_track(
    conn: Conn,
    imei: str,
    start: datetime,
    points: Sequence[tuple[float, float]],
    *,
    step_s: int = 60,
    speed_kmh: float = 40.0,
    flagged: Sequence[int] = (),
) -> list[datetime]:
    """Insert fixes (lat, lng) every `step_s` from `start`; indexes in `flagged` get a
    quality_flag. Returns the fix times."""
    times = [start + timedelta(seconds=i * step_s) for i in range(len(points))]
    rows = [
        (
            imei,
            t,
            lat,
            lng,
            speed_kmh,
            True,
            "implausible_jump" if i in flagged else None,
        )
        for i, (t, (lat, lng)) in enumerate(zip(times, points, strict=True))
    ]
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh, acc_on,
                source, quality_flag)
            VALUES (%s, %s, %s, %s, %s, %s, 'track_list', %s)
            """,
            rows,
        )
    return times


def add_trip(
    conn: Conn,
    imei: str,
    start: datetime,
    *,
    duration_s: int,
    distance_km: float,
    start_pt: tuple[float, float] | None = (-1.2921, 36.8219),
    end_pt: tuple[float, float] | None = (-1.2630, 36.8030),
    max_speed_kmh: float = 80.0,
) -> int:
    """Insert a trip; points are (lat, lng). Returns trip_id."""
    end = start + timedelta(seconds=duration_s)
    row = conn.execute(
        """
        INSERT INTO tracksolid.trips (imei, start_time, end_time, start_lat, start_lng, end_lat,
            end_lng, distance_km, driving_time_s, avg_speed_kmh, max_speed_kmh, source)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'mileage')
        RETURNING trip_id
        """,
        (
            imei,
            start,
            end,
            start_pt[0] if start_pt else None,
            start_pt[1] if start_pt else None,
            end_pt[0] if end_pt else None,
            end_pt[1] if end_pt else None,
            distance_km,
            duration_s,
            distance_km / duration_s * 3600 if duration_s else None,
            max_speed_kmh,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_parking(
    conn: Conn,
    imei: str,
    start: datetime,
    *,
    duration_s: int | None,
    acc_on: bool,
    lat: float = -1.29,
    lng: float = 36.82,
) -> None:
    """A stop: acc_on true = idling, false = parked; duration None = still going on."""
    end = start + timedelta(seconds=duration_s) if duration_s is not None else None
    conn.execute(
        """
        INSERT INTO tracksolid.parking_events (imei, start_time, end_time, duration_s, acc_on,
            lat, lng)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        """,
        (imei, start, end, duration_s, acc_on, lat, lng),
    )


def add_alarm(
    conn: Conn,
    imei: str,
    alarm_time: datetime,
    alarm_type: str,
    alarm_name: str | None = None,
    *,
    source: str = "poll",
) -> None:
    conn.execute(
        """
        INSERT INTO tracksolid.alarms (imei, alarm_time, alarm_type, alarm_name, lat, lng, source)
        VALUES (%s, %s, %s, %s, -1.29, 36.82, %s)
        """,
        (imei, alarm_time, alarm_type, alarm_name, source),
    )


def add_ingestion_log(
    conn: Conn,
    source: str,
    method: str,
    *,
    ok: bool,
    logged_at: datetime,
    rows: int = 0,
    error: str | None = None,
) -> None:
    conn.execute(
        """
        INSERT INTO tracksolid.ingestion_log (logged_at, source, method, target, ok, rows,
            duration_ms, error)
        VALUES (%s, %s, %s, 'fireside', %s, %s, 120, %s)
        """,
        (logged_at, source, method, ok, rows, error),
    )


def refresh_reporting(conn: Conn) -> None:
    """Bring the reporting matview up to date (what the app's refresher does)."""
    conn.execute("REFRESH MATERIALIZED VIEW reporting.v_trips")


def db_now(conn: Conn) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment.astimezone(UTC)


def eat_midnight(moment: datetime) -> datetime:
    """Start of the EAT calendar day containing `moment`, as an aware UTC datetime."""
    local = moment.astimezone(EAT)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


# ── The standard fleet ─────────────────────────────────────────────────────────────────────

NAIROBI = (-1.2921, 36.8219)
MOMBASA = (-4.0435, 39.6682)
KAMPALA = (0.3476, 32.5825)


@dataclass
class Fleet:
    """What `seed_fleet` inserted (the facts the tests check)."""

    now: datetime
    today_start: datetime
    imeis: dict[str, str] = field(default_factory=dict)  # plate → imei
    trips_today: dict[str, list[int]] = field(default_factory=dict)  # plate → trip ids
    trip_ids: list[int] = field(default_factory=list)
    km_today: dict[str, float] = field(default_factory=dict)
    driving_s_today: dict[str, int] = field(default_factory=dict)
    idle_s_today: dict[str, int] = field(default_factory=dict)
    track_points: int = 0
    track_flagged: int = 0


def seed_fleet(conn: Conn) -> Fleet:
    """Five vehicles in three cost centres, with live state, a track, trips, stops, alarms
    and an ingestion log. Commits nothing itself (use an autocommit connection).

    KCA 542Q  Nairobi-North  moving  2 trips today (12.5 + 7.5 km), 2 harsh accel + 1 overspeed
    KBZ 101A  Nairobi-North  idle    1 trip today (4 km), idling for 20 min (open idling stop)
    KDA 777M  Mombasa-Field  parked  1 trip yesterday only (not moved today)
    UAX 123B  Kampala        offline 1 trip 3 days ago
    KCB 900Z  Kampala        inactive (must never appear)
    """
    now = db_now(conn)
    today0 = eat_midnight(now)
    elapsed = (now - today0).total_seconds()
    fleet = Fleet(now=now, today_start=today0)

    def today_at(fraction: float) -> datetime:
        return today0 + timedelta(seconds=elapsed * fraction)

    def span(fraction: float) -> int:
        return max(1, int(elapsed * fraction))

    devices = [
        ("862798000000001", "KCA 542Q", "Alice Wanjiru", "Nairobi-North", "Nairobi", "Van", True),
        ("862798000000002", "KBZ 101A", "Brian Otieno", "Nairobi-North", "Nairobi", "Pickup", True),
        ("353549000000003", "KDA 777M", "Chebet Mwangi", "Mombasa-Field", "Mombasa", "Van", True),
        ("865135000000004", "UAX 123B", "David Okello", "Kampala", "Kampala", "Motorbike", True),
        ("359857000000005", "KCB 900Z", "Eve Inactive", "Kampala", "Kampala", "Van", False),
    ]
    for imei, plate, driver, cc, city, vtype, active in devices:
        add_device(
            conn,
            imei,
            plate,
            driver_name=driver,
            driver_phone="+254700000000",
            cost_centre=cc,
            city=city,
            vehicle_type=vtype,
            is_active=active,
        )
        fleet.imeis[plate] = imei

    a, b, c, d, e = (
        fleet.imeis[p] for p in ("KCA 542Q", "KBZ 101A", "KDA 777M", "UAX 123B", "KCB 900Z")
    )
    add_live_position(
        conn, a, -1.2800, 36.8100, gps_time=now - timedelta(seconds=30), speed_kmh=45, acc_on=True
    )
    add_live_position(
        conn, b, -1.3000, 36.8300, gps_time=now - timedelta(seconds=60), speed_kmh=0, acc_on=True
    )
    add_live_position(
        conn,
        c,
        MOMBASA[0],
        MOMBASA[1],
        gps_time=now - timedelta(minutes=10),
        speed_kmh=0,
        acc_on=False,
    )
    add_live_position(
        conn,
        d,
        KAMPALA[0],
        KAMPALA[1],
        gps_time=now - timedelta(days=2),
        speed_kmh=0,
        acc_on=False,
        online=False,
    )
    add_live_position(
        conn,
        e,
        KAMPALA[0],
        KAMPALA[1],
        gps_time=now - timedelta(minutes=1),
        speed_kmh=30,
        acc_on=True,
    )

    # Track of KCA 542Q: 30 fixes over the last 2.5 hours, one flagged as a jump.
    points = [(-1.2921 + i * 0.001, 36.8219 + i * 0.0005) for i in range(30)]
    points[10] = (-3.0, 38.0)  # the implausible jump
    add_track(conn, a, now - timedelta(minutes=150), points, step_s=300, flagged=(10,))
    fleet.track_points, fleet.track_flagged = 29, 1
    # An older fix outside a 24 h window.
    add_track(conn, a, now - timedelta(hours=30), [(-1.0, 36.0)])

    # Trips today (inside the elapsed part of today).
    t1 = add_trip(
        conn, a, today_at(0.10), duration_s=span(0.10), distance_km=12.5, max_speed_kmh=95
    )
    t2 = add_trip(conn, a, today_at(0.40), duration_s=span(0.10), distance_km=7.5, max_speed_kmh=70)
    t3 = add_trip(conn, b, today_at(0.30), duration_s=span(0.05), distance_km=4.0, end_pt=None)
    fleet.trips_today = {"KCA 542Q": [t1, t2], "KBZ 101A": [t3]}
    fleet.km_today = {"KCA 542Q": 20.0, "KBZ 101A": 4.0}
    fleet.driving_s_today = {"KCA 542Q": 2 * span(0.10), "KBZ 101A": span(0.05)}
    # Earlier trips.
    t4 = add_trip(
        conn,
        c,
        today0 - timedelta(hours=10),
        duration_s=1800,
        distance_km=30.0,
        start_pt=MOMBASA,
        end_pt=(-4.0, 39.7),
    )
    t5 = add_trip(
        conn,
        d,
        today0 - timedelta(days=3),
        duration_s=900,
        distance_km=5.0,
        start_pt=KAMPALA,
        end_pt=(0.35, 32.6),
    )
    t6 = add_trip(conn, e, today_at(0.20), duration_s=span(0.05), distance_km=3.0)
    fleet.trip_ids = [t1, t2, t3, t4, t5, t6]

    # Stops today: KCA 542Q idled, then parked; KBZ 101A is idling right now.
    add_parking(conn, a, today_at(0.25), duration_s=span(0.05), acc_on=True)
    add_parking(conn, a, today_at(0.55), duration_s=span(0.10), acc_on=False)
    add_parking(conn, b, now - timedelta(minutes=20), duration_s=None, acc_on=True)
    fleet.idle_s_today = {"KCA 542Q": span(0.05)}

    # Alarms today on KCA 542Q; one SOS on KDA 777M (not a driving-behaviour alarm).
    add_alarm(conn, a, today_at(0.11), "ubiAcce", "Harsh acceleration")
    add_alarm(conn, a, today_at(0.12), "ubiAcce", "Harsh acceleration")
    add_alarm(conn, a, today_at(0.42), "6", "Overspeed alarm")
    add_alarm(conn, c, today_at(0.50), "1", "SOS alarm")

    # Ingestion log: one healthy, one stale, one failing API method, a healthy push path.
    for minutes in range(1, 6):
        add_ingestion_log(
            conn,
            "api",
            "jimi.user.device.location.list",
            ok=True,
            logged_at=now - timedelta(minutes=minutes),
            rows=4,
        )
    add_ingestion_log(
        conn, "api", "jimi.device.alarm.list", ok=True, logged_at=now - timedelta(hours=2), rows=3
    )
    for hours, ok in ((1, False), (2, False), (3, False), (4, True)):
        add_ingestion_log(
            conn,
            "api",
            "jimi.device.track.list",
            ok=ok,
            logged_at=now - timedelta(hours=hours),
            rows=100 if ok else 0,
            error=None if ok else "1006 rate limited",
        )
    add_ingestion_log(
        conn, "push", "/pushgps", ok=True, logged_at=now - timedelta(minutes=3), rows=12
    )
    add_ingestion_log(conn, "job", "refresh_cagg", ok=True, logged_at=now)
    refresh_reporting(conn)
    return fleet


CLOCK_KEYS = frozenset({"generated_at", "fix_age_s"})


# Today's utilisation counts the time elapsed so far: these grow between two calls as well.
TODAY_KEYS = frozenset({"period_s", "parked_s", "utilisation_pct", "idle_pct"})


def without_clock(doc: Any, keys: frozenset[str] = CLOCK_KEYS) -> Any:
    """A read-API answer without the values that move with the wall clock between two calls
    (`generated_at`, `fix_age_s`; add TODAY_KEYS for utilisation), to compare answers taken a
    moment apart."""
    if isinstance(doc, dict):
        return {k: without_clock(v, keys) for k, v in doc.items() if k not in keys}
    if isinstance(doc, list):
        return [without_clock(v, keys) for v in doc]
    return doc
