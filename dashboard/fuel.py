"""Read-API for fuel: `GET /analytics/fuel-fills` and `GET /analytics/fuel` (FleetOps Fuel Log).

JSON is built in SQL from `reporting.v_fuel_fills` / `v_fuel_daily` / `v_fuel_efficiency` and
returned unchanged. Mounted by dashboard_api.py with `app.include_router(fuel.router)`; the
pool and settings come from `app.state` (see dashboard/deps.py). Bad parameters give 422.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from psycopg_pool import ConnectionPool

from dashboard.deps import json_from_sql, require_api_key, ro_pool
from ts_shared import normalize_plate

router = APIRouter(tags=["fuel"], dependencies=[Depends(require_api_key)])

EAT = ZoneInfo("Africa/Nairobi")  # fill days are East Africa Time days
MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 30

# Shared WHERE clause over a view with fill_date / cost_centre / city / plate_norm columns.
_FILTER = """
      {alias}.{day} BETWEEN %(from)s AND %(to)s
  AND (%(cost_centre)s::text IS NULL OR {alias}.cost_centre = %(cost_centre)s)
  AND (%(city)s::text IS NULL OR {alias}.city = %(city)s)
  AND (%(plate)s::text IS NULL OR {alias}.plate_norm = %(plate)s)
"""

_FILLS_SQL = (
    """
SELECT json_build_object(
    'from', %(from)s::date, 'to', %(to)s::date,
    'count', (SELECT count(*) FROM reporting.v_fuel_fills AS f WHERE """
    + _FILTER.format(alias="f", day="fill_date")
    + """),
    'fills', coalesce((
        SELECT json_agg(json_build_object(
                   'id', f.fill_id, 'filled_at', f.filled_at, 'date', f.fill_date,
                   'car', f.car, 'vehicle_number', f.vehicle_number, 'imei', f.imei,
                   'cost_centre', f.cost_centre, 'city', f.city, 'vehicle_type', f.vehicle_type,
                   'litres', f.litres, 'amount_kes', f.amount_kes,
                   'price_per_litre_kes', f.price_per_litre_kes, 'odometer_km', f.odometer_km,
                   'fuel_type', f.fuel_type, 'driver', f.driver, 'department', f.department,
                   'matched_device', f.matched_device)
               ORDER BY f.filled_at DESC, f.fill_id)
        FROM (SELECT * FROM reporting.v_fuel_fills AS f WHERE """
    + _FILTER.format(alias="f", day="fill_date")
    + """
              ORDER BY f.filled_at DESC, f.fill_id LIMIT %(limit)s) AS f), '[]'::json)
)::text
"""
)

_FUEL_SQL = (
    """
WITH daily AS (
    SELECT * FROM reporting.v_fuel_daily AS d WHERE """
    + _FILTER.format(alias="d", day="day")
    + """
),
eff AS (
    SELECT * FROM reporting.v_fuel_efficiency AS e WHERE """
    + _FILTER.format(alias="e", day="fill_date")
    + """
)
SELECT json_build_object(
    'from', %(from)s::date, 'to', %(to)s::date,
    'totals', (SELECT json_build_object(
                   'fills', coalesce(sum(fills), 0), 'litres', coalesce(sum(litres), 0),
                   'amount_kes', coalesce(sum(amount_kes), 0),
                   'vehicles', count(DISTINCT plate_norm)) FROM daily),
    'daily', coalesce((
        SELECT json_agg(json_build_object(
                   'day', day, 'fills', fills, 'litres', litres, 'amount_kes', amount_kes,
                   'price_per_litre_kes', price_per_litre_kes, 'vehicles', vehicles,
                   'diesel_litres', diesel_litres, 'petrol_litres', petrol_litres)
               ORDER BY day)
        FROM (SELECT day, sum(fills) AS fills, sum(litres) AS litres,
                     sum(amount_kes) AS amount_kes,
                     round(sum(amount_kes) / nullif(sum(litres), 0), 2) AS price_per_litre_kes,
                     count(DISTINCT plate_norm) AS vehicles,
                     sum(diesel_litres) AS diesel_litres, sum(petrol_litres) AS petrol_litres
              FROM daily GROUP BY day) AS x), '[]'::json),
    'efficiency', coalesce((
        SELECT json_agg(json_build_object(
                   'vehicle_number', vehicle_number, 'imei', imei, 'cost_centre', cost_centre,
                   'city', city, 'fills', fills, 'intervals', intervals,
                   'litres', litres_measured, 'odo_km', odo_km, 'gps_km', gps_km,
                   'l_per_100km_odo', round(litres_odo / nullif(odo_km, 0) * 100, 2),
                   'l_per_100km_gps', round(litres_gps / nullif(gps_km, 0) * 100, 2),
                   'nominal_l_per_100km', nominal, 'flagged_intervals', flagged)
               ORDER BY vehicle_number)
        FROM (SELECT plate_norm, max(vehicle_number) AS vehicle_number, max(imei) AS imei,
                     max(cost_centre) AS cost_centre, max(city) AS city, count(*) AS fills,
                     count(prev_fill_id) AS intervals,
                     sum(litres) FILTER (WHERE prev_fill_id IS NOT NULL) AS litres_measured,
                     sum(odo_distance_km) FILTER (WHERE odo_plausible) AS odo_km,
                     sum(litres) FILTER (WHERE odo_plausible) AS litres_odo,
                     round(sum(gps_distance_km) FILTER (WHERE gps_plausible), 3) AS gps_km,
                     sum(litres) FILTER (WHERE gps_plausible) AS litres_gps,
                     max(nominal_l_per_100km) AS nominal,
                     count(*) FILTER (WHERE prev_fill_id IS NOT NULL
                                        AND flags <> '{}'::text[]) AS flagged
              FROM eff GROUP BY plate_norm) AS v), '[]'::json)
)::text
"""
)


def _params(
    date_from: date | None,
    date_to: date | None,
    cost_centre: str | None,
    city: str | None,
    vehicle_number: str | None,
) -> dict[str, object]:
    """Resolve the range (default: the last 30 days) and check it; 422 when it is invalid."""
    to = date_to or datetime.now(EAT).date()
    start = date_from or (to - timedelta(days=DEFAULT_RANGE_DAYS - 1))
    if start > to:
        raise HTTPException(status_code=422, detail="'from' must not be after 'to'")
    if (to - start).days + 1 > MAX_RANGE_DAYS:
        raise HTTPException(status_code=422, detail=f"range longer than {MAX_RANGE_DAYS} days")
    plate = None
    if vehicle_number is not None:
        plate = normalize_plate(vehicle_number)
        if plate is None:
            raise HTTPException(status_code=422, detail="vehicle_number has no letters/digits")
    return {
        "from": start,
        "to": to,
        "cost_centre": cost_centre or None,
        "city": city or None,
        "plate": plate,
    }


FromQ = Annotated[date | None, Query(alias="from", description="first day (EAT), YYYY-MM-DD")]
ToQ = Annotated[date | None, Query(alias="to", description="last day (EAT), YYYY-MM-DD")]
CostCentreQ = Annotated[str | None, Query(max_length=100)]
CityQ = Annotated[str | None, Query(max_length=100)]
VehicleQ = Annotated[str | None, Query(max_length=50, description="plate, any spelling")]
Pool = Annotated[ConnectionPool, Depends(ro_pool)]


@router.get("/analytics/fuel-fills")
def fuel_fills(
    pool: Pool,
    date_from: FromQ = None,
    date_to: ToQ = None,
    cost_centre: CostCentreQ = None,
    city: CityQ = None,
    vehicle_number: VehicleQ = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> Response:
    """Fuel fills (newest first) with vehicle, cost centre, city, litres, KES and driver."""
    params = _params(date_from, date_to, cost_centre, city, vehicle_number)
    params["limit"] = limit
    return json_from_sql(pool, _FILLS_SQL, params)


@router.get("/analytics/fuel")
def fuel_analytics(
    pool: Pool,
    date_from: FromQ = None,
    date_to: ToQ = None,
    cost_centre: CostCentreQ = None,
    city: CityQ = None,
    vehicle_number: VehicleQ = None,
) -> Response:
    """Daily fuel spend and per-vehicle efficiency (L/100 km by odometer and GPS)."""
    params = _params(date_from, date_to, cost_centre, city, vehicle_number)
    return json_from_sql(pool, _FUEL_SQL, params)
