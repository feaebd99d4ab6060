"""Fuel views and read-API on a scripted vehicle whose true consumption (12 L/100 km) is known."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from dashboard.fuel import router
from tests.conftest import read_only_url, router_client, test_settings
from ts_shared import Settings, make_pool

EAT = ZoneInfo("Africa/Nairobi")
IMEI = "860000000000100"
TRUE_L_PER_100KM = Decimal(12)


def at(day: int, hour: int) -> datetime:
    return datetime(2026, 6, day, hour, tzinfo=EAT)


def fill(
    rid: str, when: datetime, odo: float, litres: float, car: str = "KCB 100A", **extra: Any
) -> dict[str, Any]:
    return {
        "id": rid,
        "car": car,
        "litres": f"{litres:.2f}",
        "amount": f"{litres * 180:.0f}",
        "odometer": str(odo),
        "fuel_type": "Diesel",
        "driver": "Jane Wanjiru",
        "department": "Field Ops",
        "fill_time": when.strftime("%Y-%m-%d %H:%M:%S"),
        "updated_at": when.strftime("%Y-%m-%d %H:%M:%S"),
        **extra,
    }


@pytest.fixture
def scripted(pool: ConnectionPool) -> dict[str, Any]:
    """One vehicle driven at exactly 12 L/100 km, five fills, GPS from trips and from fixes."""
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO tracksolid.devices (imei, vehicle_number, cost_centre, city,"
            " vehicle_type, fuel_100km_l) VALUES (%s, 'KCB 100A', 'CC-NBO', 'Nairobi', 'van', 12),"
            " ('860000000000200', 'KDA 200B', 'CC-MSA', 'Mombasa', 'pickup', 10)",
            (IMEI,),
        )
        # A → B: three trips, 300 km.
        for start, km in ((at(1, 10), 100), (at(1, 15), 150), (at(2, 9), 50)):
            conn.execute(
                "INSERT INTO tracksolid.trips (imei, start_time, end_time, distance_km, source)"
                " VALUES (%s, %s, %s, %s, 'mileage')",
                (IMEI, start, start + timedelta(hours=2), km),
            )
        # B → C: no trips; 21 moving fixes along latitude -1 from 36.0 to 37.0 E, plus
        # parked jitter that must not count.
        base = at(3, 8)
        for i in range(21):
            conn.execute(
                "INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh,"
                " source) VALUES (%s, %s, -1.0, %s, 60, 'track_list')",
                (IMEI, base + timedelta(minutes=5 * i), 36.0 + 0.05 * i),
            )
        for i in range(10):
            conn.execute(
                "INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh,"
                " source) VALUES (%s, %s, %s, 37.0, 0, 'poll')",
                (IMEI, at(3, 12) + timedelta(minutes=i), -1.0 + 0.0003 * (i % 2)),
            )
        gps_bc = conn.execute(
            "SELECT ST_Length(ST_MakeLine(ST_MakePoint(36.0, -1.0), ST_MakePoint(37.0, -1.0))"
            "::geography) / 1000"
        ).fetchone()
        assert gps_bc is not None
        km_bc = float(gps_bc[0])
        # C → D: trips 200 km; D → E: trips 50 km.
        conn.execute(
            "INSERT INTO tracksolid.trips (imei, start_time, distance_km, source) VALUES"
            " (%s, %s, 200, 'mileage'), (%s, %s, 50, 'mileage')",
            (IMEI, at(4, 9), IMEI, at(5, 9)),
        )
        fills = [
            fill("A", at(1, 8), 10000, 50),
            fill("B", at(2, 18), 10300, 36),
            fill("X", at(3, 9), 10350, 5, deleted_at="2026-06-03 10:00:00"),  # soft-deleted
            fill("C", at(3, 18), 10300 + km_bc, float(TRUE_L_PER_100KM) * km_bc / 100),
            fill("D", at(4, 18), 10400, 24),  # odometer typo: went backwards
            fill("E", at(5, 18), 10450, 100),  # 100 L for 50 km: implausible
            fill("Z", at(2, 12), 5000, 40, car="kda-200b", fuel_type="Petro"),  # other vehicle
        ]
        for f in fills:
            conn.execute(
                "INSERT INTO fuel.records (id, raw) VALUES (%s, %s)", (f["id"], json.dumps(f))
            )
    return {"km_bc": km_bc}


def efficiency(pool: ConnectionPool) -> dict[str, dict[str, Any]]:
    with pool.connection() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        got = cur.execute("SELECT * FROM reporting.v_fuel_efficiency WHERE plate_norm = 'KCB100A'")
        return {r["fill_id"]: r for r in got.fetchall()}


def test_efficiency_recovers_true_consumption(
    pool: ConnectionPool, scripted: dict[str, Any]
) -> None:
    eff = efficiency(pool)
    assert list(eff) == ["A", "B", "C", "D", "E"]  # X is soft-deleted
    assert eff["A"]["flags"] == ["first_fill"] and eff["A"]["l_per_100km_odo"] is None
    b, c, d, e = eff["B"], eff["C"], eff["D"], eff["E"]
    # B: litres belong to the 300 km driven since A, measured both ways.
    assert (b["odo_distance_km"], b["gps_distance_km"], b["gps_distance_source"]) == (
        Decimal(300),
        Decimal("300.000"),
        "trips",
    )
    assert b["l_per_100km_odo"] == b["l_per_100km_gps"] == TRUE_L_PER_100KM
    assert b["flags"] == [] and b["odo_plausible"] and b["gps_plausible"]
    assert (b["imei"], b["cost_centre"], b["city"]) == (IMEI, "CC-NBO", "Nairobi")
    # C: no trips, distance from the moving fixes only (parked jitter ignored); the deleted
    # fill X does not split the interval.
    assert c["gps_distance_source"] == "positions" and c["prev_fill_id"] == "B"
    assert float(c["gps_distance_km"]) == pytest.approx(scripted["km_bc"], abs=0.01)
    assert float(c["l_per_100km_gps"]) == pytest.approx(12, abs=0.02)
    assert float(c["l_per_100km_odo"]) == pytest.approx(12, abs=0.02)
    # D: odometer went backwards → flagged, GPS still right.
    assert d["l_per_100km_odo"] is None and d["l_per_100km_gps"] == TRUE_L_PER_100KM
    assert "odometer_not_increasing" in d["flags"] and d["gps_plausible"]
    # E: 100 L for 50 km → implausible both ways.
    assert e["l_per_100km_gps"] == Decimal(200)
    assert set(e["flags"]) >= {"implausible_odo", "implausible_gps"}
    assert e["odo_plausible"] is False and e["gps_plausible"] is False


def test_daily_view_groups_by_local_day(pool: ConnectionPool, scripted: dict[str, Any]) -> None:
    with pool.connection() as conn:
        result = conn.execute(
            "SELECT day, plate_norm, fills, litres, amount_kes, cost_centre, petrol_litres"
            " FROM reporting.v_fuel_daily"
        ).fetchall()
    got = {(r[0].isoformat(), r[1]): r[2:] for r in result}
    assert got[("2026-06-02", "KCB100A")] == (1, Decimal("36.00"), Decimal("6480.00"), "CC-NBO", 0)
    assert got[("2026-06-02", "KDA200B")][3:] == ("CC-MSA", Decimal("40.00"))
    assert ("2026-06-03", "KCB100A") in got and len(got) == 6


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    """The fuel router on its own app, reading through a dashboard_ro connection."""
    ro_pool = make_pool(read_only_url(db_url), min_size=1, max_size=2, name="fuel_api_test")
    with router_client(router, test_settings(db_url), ro_pool) as tc:
        yield tc
    ro_pool.close()


def test_fuel_fills_endpoint_filters(client: TestClient, scripted: dict[str, Any]) -> None:
    june = {"from": "2026-06-01", "to": "2026-06-30"}
    body = client.get("/analytics/fuel-fills", params=june).json()
    assert body["count"] == 6 and [f["id"] for f in body["fills"]][:2] == ["E", "D"]
    body = client.get("/analytics/fuel-fills", params={**june, "vehicle_number": "kda-200b"}).json()
    assert [(f["id"], f["fuel_type"], f["city"]) for f in body["fills"]] == [
        ("Z", "PETROL", "Mombasa")
    ]
    body = client.get(
        "/analytics/fuel-fills", params={**june, "cost_centre": "CC-NBO", "limit": 2}
    ).json()
    assert body["count"] == 5 and len(body["fills"]) == 2
    body = client.get("/analytics/fuel-fills", params={"from": "2026-06-03", "to": "2026-06-03"})
    assert [f["id"] for f in body.json()["fills"]] == ["C"]
    assert body.headers["content-type"] == "application/json"


def test_fuel_analytics_endpoint(client: TestClient, scripted: dict[str, Any]) -> None:
    body = client.get("/analytics/fuel", params={"from": "2026-06-01", "to": "2026-06-30"}).json()
    assert body["totals"]["fills"] == 7 - 1 and body["totals"]["vehicles"] == 2
    day2 = next(d for d in body["daily"] if d["day"] == "2026-06-02")
    assert (day2["fills"], day2["litres"], day2["vehicles"]) == (2, 76.0, 2)
    kcb = next(v for v in body["efficiency"] if v["vehicle_number"] == "KCB 100A")
    assert kcb["l_per_100km_odo"] == pytest.approx(12, abs=0.02)
    assert kcb["l_per_100km_gps"] == pytest.approx(12, abs=0.02)
    assert (kcb["fills"], kcb["intervals"], kcb["flagged_intervals"]) == (5, 4, 2)
    assert kcb["nominal_l_per_100km"] == 12


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2026-06-10", "to": "2026-06-01"}, "to (2026-06-01) is before from (2026-06-10)"),
        ({"from": "10/06/2026"}, "from: '10/06/2026' is not a valid date (use YYYY-MM-DD)"),
        ({"from": "2026-02-30"}, "from: '2026-02-30' is not a valid date (use YYYY-MM-DD)"),
        (
            {"from": "2025-01-01", "to": "2026-06-01"},
            "the date range is limited to 366 days (got 517 days)",
        ),
        (
            {"to": "0001-01-05"},
            "to: '0001-01-05' is outside the supported dates 2000-01-01 to 2099-12-31",
        ),
        ({"vehicle_number": "--"}, "vehicle_number has no letters or digits (got '--')"),
        ({"vehicle_number": "ZZ 999"}, 'unknown vehicle_number "ZZ 999" — see /analytics/filters'),
        ({"cost_centre": "CC-XXX"}, 'unknown cost_centre "CC-XXX" — see /analytics/filters'),
        ({"city": "Atlantis"}, 'unknown city "Atlantis" — see /analytics/filters'),
        ({"city": "Nai\x00robi"}, "city contains a control character"),
        ({"limit": "0"}, "limit must be between 1 and 5000 (got 0)"),
        ({"limit": "5001"}, "limit must be between 1 and 5000 (got 5001)"),
        ({"limit": "9" * 400}, "limit must be between 1 and 5000 (got a 400-digit number)"),
        ({"limit": "NaN"}, "limit must be a whole number between 1 and 5000 (got 'NaN')"),
    ],
)
def test_bad_parameters_are_422(
    client: TestClient, scripted: dict[str, Any], params: dict[str, str], message: str
) -> None:
    """One sentence, FastAPI's validation list never (it was `{"detail": [{"type": ...}]}`)."""
    paths = ["/analytics/fuel-fills"] + ([] if "limit" in params else ["/analytics/fuel"])
    for path in paths:
        response = client.get(path, params=params)
        assert response.status_code == 422, path
        body = response.json()
        assert set(body) == {"detail"} and body["detail"].startswith(message), body


def test_filters_are_case_insensitive_and_plates_from_fills_are_known(
    client: TestClient, scripted: dict[str, Any], pool: ConnectionPool
) -> None:
    june = {"from": "2026-06-01", "to": "2026-06-30"}
    body = client.get("/analytics/fuel-fills", params={**june, "cost_centre": "cc-nbo"}).json()
    assert body["count"] == 5
    body = client.get("/analytics/fuel", params={**june, "city": "MOMBASA"}).json()
    assert body["totals"]["fills"] == 1
    # A car that is in the fuel log but not in the fleet registry can still be picked.
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO fuel.records (id, raw) VALUES ('U', %s)",
            (json.dumps(fill("U", at(6, 9), 100, 30, car="KXX 001A")),),
        )
    body = client.get("/analytics/fuel-fills", params={**june, "vehicle_number": "kxx001a"})
    assert body.status_code == 200, body.text
    assert [f["id"] for f in body.json()["fills"]] == ["U"]
    assert body.json()["from"] == "2026-06-01" and body.json()["to"] == "2026-06-30"


def test_api_key_required_when_configured(client: TestClient, db_url: str) -> None:
    settings: Settings = test_settings(db_url, dashboard_api_keys="k1,k2")
    client.app.state.settings = settings  # type: ignore[attr-defined]
    assert client.get("/analytics/fuel").status_code == 401
    assert client.get("/analytics/fuel", headers={"X-API-Key": "k2"}).status_code == 200
