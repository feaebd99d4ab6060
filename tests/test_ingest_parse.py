"""Pure parse functions and the GPS quality filter, table-driven with the API's odd inputs;
the registry CSV import against a real database."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from ingest import writers
from ingest.parse import (
    ParseError,
    PositionRow,
    parse_alarm,
    parse_device,
    parse_location,
    parse_mileage_trip,
    parse_stop,
    parse_track_point,
)
from ingest.quality import QualityRules, drop_reason, filter_rows, flag_jumps
from ingest.registry import import_registry, parse_registry

NOW = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
RULES = QualityRules(max_speed_kmh=250, max_future_s=86400)

LOCATION = {
    "imei": "862798050000001", "deviceName": "X3-1", "status": "1", "lat": "-1.2921",
    "lng": "36.8219", "posType": "GPS", "gpsTime": "2026-11-24 12:59:30",
    "hbTime": "2026-11-24 12:59:50", "speed": "42", "accStatus": "1", "electQuantity": "",
    "direction": "-1", "currentMileage": "12345.6", "gpsNum": "11", "gpsSignal": "null",
}  # fmt: skip


def test_parse_location_handles_strings_blanks_and_unknown_direction() -> None:
    row = parse_location(LOCATION, "fireside")
    p = row.position
    assert (p.imei, p.lat, p.lng, p.speed_kmh, p.acc_on) == (
        "862798050000001", -1.2921, 36.8219, 42.0, True,
    )  # fmt: skip
    assert p.gps_time == datetime(2026, 11, 24, 12, 59, 30, tzinfo=UTC)
    assert p.direction_deg is None, "-1 means unknown"
    assert row.battery_pct is None and row.gps_signal is None, '"" and "null" are missing'
    assert p.mileage_km == 12345.6 and p.satellites == 11 and row.online is True
    assert p.source == "poll" and row.account == "fireside"


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"lat": ""}, "missing_coordinates"), ({"lng": None}, "missing_coordinates"),
     ({"gpsTime": ""}, "bad_time"), ({"gpsTime": "yesterday"}, "bad_time"),
     ({"imei": ""}, "missing_imei")],
)  # fmt: skip
def test_parse_location_rejects_with_reason(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_location({**LOCATION, **change})
    assert info.value.reason == reason


def test_parse_track_point_uses_request_imei_and_pos_type_codes() -> None:
    p = parse_track_point(
        {"lat": "0.3136", "lng": "32.5811", "gpsTime": "2026-11-24 09:00:00", "direction": "90",
         "gpsSpeed": "35", "posType": "1", "satellite": "9", "ignition": "1", "gpsMode": "1"},
        "353549090000002",
    )  # fmt: skip
    assert (p.imei, p.pos_type, p.acc_on, p.gps_mode, p.direction_deg, p.source) == (
        "353549090000002", "GPS", True, 1, 90, "track_list",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("distance", "expected_km"),
    [("12345", 12.345), ("0", 0.0), ("999.9", 1.0), ("", None), (7000, 7.0)],
)
def test_mileage_distance_is_metres(distance: Any, expected_km: float | None) -> None:
    trip = parse_mileage_trip({
        "imei": "1", "startTime": "2026-11-24 08:00:00", "endTime": "2026-11-24 08:30:00",
        "distance": distance, "runTimeSecond": "", "avgSpeed": "24.7",
        "startMileage": "1000000", "endMileage": "1012345",
    })  # fmt: skip
    assert trip.distance_km == expected_km  # FIX-M11/M16: ÷1000 exactly once
    assert trip.driving_time_s == 1800, "derived from the times when runTimeSecond is blank"
    assert (trip.start_mileage_km, trip.end_mileage_km) == (1000.0, 1012.345)


def test_parking_iso_z_times_and_dur_second() -> None:
    stop = parse_stop(
        {"imei": "1", "startTime": "2026-11-24T05:10:00Z", "endTime": "2026-11-24T05:40:00.000Z",
         "durSecond": "1800", "lat": "-4.05", "lng": "39.66", "addr": "Nyali"},
        acc_on=True, account="Fireside_MSA",
    )  # fmt: skip
    assert stop.start_time == datetime(2026, 11, 24, 5, 10, tzinfo=UTC)
    assert (stop.duration_s, stop.acc_on, stop.account) == (1800, True, "Fireside_MSA")
    fallback = parse_stop(
        {"imei": "1", "startTime": "2026-11-24T05:10:00Z", "endTime": "2026-11-24T05:12:00Z"},
        acc_on=False,
        account=None,
    )
    assert fallback.duration_s == 120


@pytest.mark.parametrize(
    "item",
    [{"alertTypeId": "6", "alertTypeName": "Overspeed", "alertTime": "2026-11-24 10:00:00"},
     {"alertTypeId": "6", "alarmTypeName": "Overspeed", "alertTime": "2026-11-24 10:00:00"},
     {"alarmType": "6", "alarmName": "Overspeed", "alarmTime": "2026-11-24 10:00:00"}],
    ids=["alertTypeName", "alarmTypeName (FIX-E06)", "push-style names"],
)  # fmt: skip
def test_alarm_name_variants(item: dict[str, Any]) -> None:
    alarm = parse_alarm({"imei": "1", "lat": "-1.3", "lng": "36.8", **item})
    assert (alarm.alarm_type, alarm.alarm_name) == ("6", "Overspeed")
    assert alarm.alarm_time == datetime(2026, 11, 24, 10, tzinfo=UTC)


def test_device_detail_fills_what_the_list_leaves_null() -> None:
    listed = {"imei": "1", "deviceName": "X3-1", "vehicleNumber": None, "driverName": None,
              "sim": None, "enabledFlag": "1"}  # fmt: skip
    detail = {"imei": "1", "vehicleNumber": "KDA 123B", "driverName": "Jane W.", "sim": "0722",
              "currentMileage": "1234.5", "driverPhone": ""}  # fmt: skip
    row = parse_device(listed, detail, "Fireside@HQ")
    assert (row["vehicle_number"], row["driver_name"], row["sim"]) == (
        "KDA 123B",
        "Jane W.",
        "0722",
    )
    assert row["account"] == "Fireside@HQ" and row["enabled_flag"] is True
    assert row["driver_phone"] is None and row["current_mileage_km"] == 1234.5


# ── quality filter ───────────────────────────────────────────────────────────


def fix(lat: float, lng: float, at: datetime, imei: str = "1") -> PositionRow:
    return PositionRow(imei, at, lat, lng, None, None, None, None, None, None, None, None, "poll")


@pytest.mark.parametrize(
    ("lat", "lng", "at", "reason"),
    [(0.0, 0.0, NOW, "zero_fix"), (91.0, 36.8, NOW, "out_of_range"),
     (-1.3, 181.0, NOW, "out_of_range"), (-1.3, 36.8, NOW + timedelta(hours=25), "future_time"),
     (-1.3, 36.8, NOW + timedelta(hours=23), None), (0.0, 36.8, NOW, None)],
)  # fmt: skip
def test_drop_rules(lat: float, lng: float, at: datetime, reason: str | None) -> None:
    assert drop_reason(fix(lat, lng, at), NOW, RULES) == reason


def test_filter_counts_drops_per_reason() -> None:
    drops: Counter[str] = Counter()
    kept = filter_rows(
        [
            fix(0, 0, NOW),
            fix(0, 0, NOW),
            fix(-1.3, 36.8, NOW),
            fix(-1.3, 36.8, NOW + timedelta(days=3)),
        ],
        NOW,
        RULES,
        drops,
    )
    assert len(kept) == 1 and drops == Counter({"zero_fix": 2, "future_time": 1})


def test_jumps_are_flagged_not_dropped() -> None:
    t0 = NOW
    rows = [
        fix(-1.2921, 36.8219, t0),  # Nairobi
        fix(-1.2925, 36.8225, t0 + timedelta(seconds=30)),  # 80 m later: fine
        fix(-4.0435, 39.6682, t0 + timedelta(seconds=60)),  # Mombasa 30 s later: a glitch
        fix(-1.2930, 36.8230, t0 + timedelta(seconds=90)),
    ]  # back: judged vs the good fix
    flagged = flag_jumps(rows, {}, RULES)
    assert flagged == 1
    assert [r.quality_flag for r in rows] == [None, None, "implausible_jump", None]
    assert rows[2].implied_speed_kmh is not None and rows[2].implied_speed_kmh > 10_000
    assert rows[1].implied_speed_kmh is not None and rows[1].implied_speed_kmh < 20
    # The previous stored fix counts for the first row of a batch.
    late = [fix(0.3136, 32.5811, t0 + timedelta(minutes=5), imei="2")]  # Kampala
    assert flag_jumps(late, {"2": (t0, -1.2921, 36.8219)}, RULES) == 1


def test_writer_flags_against_stored_history(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        writers.write_positions(conn, [fix(-1.2921, 36.8219, NOW)], RULES)
        inserted, flagged = writers.write_positions(
            conn, [fix(0.3136, 32.5811, NOW + timedelta(minutes=1)),
                   fix(0.3136, 32.5811, NOW + timedelta(minutes=1))], RULES)  # fmt: skip
        assert (inserted, flagged) == (1, 1)
        row = conn.execute("SELECT quality_flag FROM tracksolid.position_history"
                           " ORDER BY gps_time DESC LIMIT 1").fetchone()  # fmt: skip
    assert row == ("implausible_jump",)


# ── device registry CSV ─────────────────────────────────────────────────────

CSV = """IMEI,Vehicle Number,Driver Name,Driver Phone,Cost Centre,City,Vehicle Type
862798050000001,KDA 123B,Jane Wanjiku,0722000001,Nairobi-North,Nairobi,Pickup
862798050000002,KDB 456C,,0722000002,Mombasa-Field,Mombasa,Van
86279805000000X,KDC 789D,Bad Imei,,,,
862798050000001,KDA 999Z,Duplicate,,,,
8.62798050000003E+14,KDD 000E,Float Imei,,,,
865135070000004.0,UBA 123C,Okello,,Kampala-Field,Kampala,Motorbike
"""


def test_registry_parse_reports_bad_and_duplicate_rows() -> None:
    report = parse_registry(CSV)
    assert report.rows == 6
    assert [r["imei"] for r in report.valid] == [
        "862798050000001",
        "862798050000002",
        "865135070000004",
    ]
    assert [line for line, _ in report.bad] == [4, 6]
    assert report.duplicates[0][0] == 5


def test_registry_import_dry_run_then_apply_and_api_nulls_never_erase(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(CSV)
    with pool.connection() as conn:
        known = parse_device({"imei": "862798050000002"}, None, "fireside")
        writers.upsert_devices(conn, [{**known, "raw": None}])
    dry = import_registry(pool, path, apply=False)
    assert not dry.applied and dry.unknown == ["862798050000001", "865135070000004"]
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM tracksolid.devices").fetchone() == (1,)
    done = import_registry(pool, path, apply=True)
    assert (done.inserted, done.updated) == (2, 1)
    # A later API sync sending nulls keeps the registry's values.
    listed = {"imei": "862798050000001", "vehicleNumber": None, "driverName": None}
    with pool.connection() as conn:
        writers.upsert_devices(conn, [{**parse_device(listed, None, "fireside"), "raw": listed}])
        row = conn.execute(
            "SELECT vehicle_number, driver_name, cost_centre, city, vehicle_type, account,"
            " plate_norm FROM tracksolid.devices WHERE imei = '862798050000001'"
        ).fetchone()
    assert row == ("KDA 123B", "Jane Wanjiku", "Nairobi-North", "Nairobi", "Pickup", "fireside",
                   "KDA123B")  # fmt: skip


def test_writer_falls_back_when_a_direct_copy_would_conflict(
    pool: ConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concurrent writer (e.g. a push) stores a fix between the check and the COPY: the batch
    then goes through ON CONFLICT, nothing is lost or doubled."""
    with pool.connection() as conn:
        assert writers.write_positions(conn, [fix(-1.2921, 36.8219, NOW)], RULES) == (1, 0)
    monkeypatch.setattr(writers, "stored_context", lambda conn, firsts: ({}, {}))
    with pool.connection() as conn:
        got = writers.write_positions(
            conn, [fix(-1.2921, 36.8219, NOW), fix(-1.2922, 36.8220, NOW + timedelta(seconds=30))],
            RULES,
        )  # fmt: skip
        count = conn.execute("SELECT count(*) FROM tracksolid.position_history").fetchone()
    assert got == (1, 0) and count == (2,)
