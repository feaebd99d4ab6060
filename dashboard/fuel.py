"""Read-API for fuel: `GET /analytics/fuel-fills` and `GET /analytics/fuel` (FleetOps Fuel Log).

JSON is built in SQL from `reporting.v_fuel_fills` / `v_fuel_daily` / `v_fuel_efficiency` and
returned unchanged. Mounted by dashboard_api.py with `app.include_router(fuel.router)`; the
pool and settings come from `app.state` (see dashboard/deps.py). Parameters are text checked
by `dashboard.params.parse_fuel_query`; bad ones give 422, and so does an unknown
cost_centre / city / vehicle_number (`reporting.check_filters`, the query's WHERE clause).
Text filters are case-insensitive like everywhere in the read-API.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response
from psycopg_pool import ConnectionPool

from dashboard.deps import json_from_sql, require_api_key, ro_pool
from dashboard.export import csv_response, export_filename
from dashboard.params import FuelQuery, parse_format, parse_fuel_query

router = APIRouter(tags=["fuel"], dependencies=[Depends(require_api_key)])

# Shared WHERE clause over a view with fill_date / cost_centre / city / plate_norm columns.
_FILTER = """
      {alias}.{day} BETWEEN %(from)s AND %(to)s
  AND (%(cost_centre)s::text IS NULL OR lower({alias}.cost_centre) = lower(%(cost_centre)s))
  AND (%(city)s::text IS NULL OR lower({alias}.city) = lower(%(city)s))
  AND (%(plate)s::text IS NULL OR {alias}.plate_norm = %(plate)s)
"""
# Refuses (SQLSTATE 22023) a filter value that matches nothing before any view is read.
_CHECK = (
    "WHERE reporting.check_filters(%(cost_centre)s, NULL, %(city)s,"
    " ARRAY[%(vehicle)s]::text[], 'vehicle_number', true)"
)

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
    + _CHECK
)

# The CSV export: every fill of the range, the JSON fills' columns, streamed (issue #18).
# check_filters in WHERE is a one-time filter: an unknown filter value fails the first FETCH.
_FILLS_CSV_SQL = (
    """
SELECT f.fill_id AS id, f.filled_at, f.fill_date AS date, f.car, f.vehicle_number, f.imei,
       f.cost_centre, f.city, f.vehicle_type, f.litres, f.amount_kes, f.price_per_litre_kes,
       f.odometer_km, f.fuel_type, f.driver, f.department, f.matched_device
FROM reporting.v_fuel_fills AS f
WHERE """
    + _FILTER.format(alias="f", day="fill_date")
    + """
  AND reporting.check_filters(%(cost_centre)s, NULL, %(city)s,
                              ARRAY[%(vehicle)s]::text[], 'vehicle_number', true)
ORDER BY f.filled_at DESC, f.fill_id
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
    + _CHECK
)


def _params(query: FuelQuery) -> dict[str, object]:
    return {
        "from": query.start,
        "to": query.end,
        "cost_centre": query.cost_centre,
        "city": query.city,
        "vehicle": query.vehicle_number,
        "plate": query.plate,
        "limit": query.limit,
    }


FromQ = Annotated[
    str | None, Query(alias="from", description="first day (EAT), YYYY-MM-DD; default to-29")
]
ToQ = Annotated[
    str | None, Query(alias="to", description="last day (EAT), YYYY-MM-DD; default today")
]
CostCentreQ = Annotated[str | None, Query(description="cost centre (case-insensitive)")]
CityQ = Annotated[str | None, Query(description="city (case-insensitive)")]
VehicleQ = Annotated[str | None, Query(description="plate, any spelling")]
Pool = Annotated[ConnectionPool, Depends(ro_pool)]


@router.get("/analytics/fuel-fills")
def fuel_fills(
    pool: Pool,
    date_from: FromQ = None,
    date_to: ToQ = None,
    cost_centre: CostCentreQ = None,
    city: CityQ = None,
    vehicle_number: VehicleQ = None,
    limit: Annotated[str | None, Query(description="1-5000, default 1000")] = None,
    format: Annotated[
        str | None, Query(description="json (default) or csv (every fill, no limit)")
    ] = None,
    accept: Annotated[str | None, Header(description="text/csv = format=csv")] = None,
) -> Response:
    """Fuel fills (newest first) with vehicle, cost centre, city, litres, KES and driver.
    CSV (format=csv or Accept: text/csv) streams every fill of the range, `limit` ignored."""
    query = parse_fuel_query(date_from, date_to, cost_centre, city, vehicle_number, limit)
    if parse_format(format, accept) == "csv":
        return csv_response(
            pool,
            _FILLS_CSV_SQL,
            _params(query),
            export_filename("fuel-fills", query.start, query.end),
        )
    return json_from_sql(pool, _FILLS_SQL, _params(query))


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
    query = parse_fuel_query(date_from, date_to, cost_centre, city, vehicle_number)
    return json_from_sql(pool, _FUEL_SQL, _params(query))
