"""Device registry import: the operator's CSV (plate, driver, phone, cost centre, city, type,
fuel consumption, active, driver assigned from).

The Tracksolid API does not know drivers, cost centres or cities (seed 000: 144 devices waiting
in a CSV). This import upserts them by IMEI; an empty cell never erases a stored value, and
the API sync never overwrites them with its nulls (see writers.upsert_devices).

Life cycle (docs/ingestion.md): `active` = no deactivates a device (never deleted; reason
`registry`), yes reactivates it. A new driver closes the vehicle's current driver period and
opens one from `assigned_from` (date = 00:00 EAT; naive times are EAT), else from now
(writers.record_driver_changes). A bad value of an optional column is ignored with a warning;
the rest of its row is imported.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from psycopg_pool import ConnectionPool

from ingest.writers import count_new_and_updated, record_driver_changes, set_assignment_context
from ts_shared import clean, clean_bool, clean_num, clean_ts

EAT = timezone(timedelta(hours=3), "EAT")  # operators write local (East Africa) times
FUEL_100KM_RANGE = (1.0, 100.0)  # litres per 100 km: a motorbike ~2, a lorry ~40
MAX_FUTURE = timedelta(days=1)  # an assigned_from further ahead is a typo

# Accepted header spellings (case / spaces / punctuation ignored) → column.
HEADER_ALIASES = {
    "imei": ("imei", "deviceimei", "imeino", "imeinumber"),
    "vehicle_number": ("vehiclenumber", "plate", "platenumber", "numberplate", "registration",
                       "regno", "reg", "vehicle", "vehicleplate"),
    "driver_name": ("drivername", "driver", "technician"),
    "driver_phone": ("driverphone", "phone", "mobile", "phonenumber", "tel"),
    "cost_centre": ("costcentre", "costcenter", "cc", "department", "segment"),
    "city": ("city", "assignedcity", "region", "town", "base"),
    "vehicle_type": ("vehicletype", "type", "vehiclemodel", "model"),
    "fuel_100km_l": ("fuel100kml", "fuel100km", "fuell100km", "fuelper100km", "litresper100km",
                     "litersper100km", "l100km", "fuelconsumption", "consumption"),
    "active": ("active", "isactive", "enabled"),
    "assigned_from": ("assignedfrom", "assignedsince", "driverfrom", "driversince",
                      "validfrom"),
}  # fmt: skip
REGISTRY_COLUMNS = tuple(HEADER_ALIASES)
IMEI_RE = re.compile(r"^\d{15}$")
_ACTIVE_WORDS = {"yes", "no", "true", "false", "1", "0", "y", "n"}


@dataclass
class RegistryReport:
    """What the import found (and, with apply, did)."""

    rows: int = 0
    valid: list[dict[str, Any]] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)
    duplicates: list[tuple[int, str]] = field(default_factory=list)
    ignored: list[tuple[int, str]] = field(default_factory=list)  # bad optional values
    unknown: list[str] = field(default_factory=list)  # IMEIs not yet known from the API
    inserted: int = 0
    updated: int = 0
    deactivated: int = 0
    reactivated: int = 0
    driver_changes: int = 0
    applied: bool = False

    def summary(self) -> str:
        """One line for the operator."""
        mode = "applied" if self.applied else "dry run (use --apply to write)"
        return (
            f"{self.rows} rows: {len(self.valid)} valid, {len(self.bad)} bad, "
            f"{len(self.duplicates)} duplicate IMEIs, {len(self.ignored)} values ignored, "
            f"{len(self.unknown)} not yet known from the API; inserted {self.inserted}, "
            f"updated {self.updated}, deactivated {self.deactivated}, reactivated "
            f"{self.reactivated}, driver changes {self.driver_changes} — {mode}"
        )


def _key(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.lower())


def map_headers(headers: list[str]) -> dict[str, str]:
    """CSV header → registry column, for the headers we recognise."""
    mapping: dict[str, str] = {}
    for header in headers:
        key = _key(header)
        for column, aliases in HEADER_ALIASES.items():
            if key in aliases and column not in mapping.values():
                mapping[header] = column
                break
    return mapping


def parse_fuel(value: str | None) -> float | None:
    """Litres per 100 km (`7.5` or `7,5`); ValueError outside FUEL_100KM_RANGE."""
    if value is None:
        return None
    number = clean_num(value.replace(",", "."))
    low, high = FUEL_100KM_RANGE
    if number is None or not low <= number <= high:
        raise ValueError(f"fuel_100km_l {value!r} is not a number from {low:g} to {high:g}")
    return round(number, 2)


def parse_active(value: str | None) -> bool | None:
    """yes/no, true/false, 1/0 (y/n); None for an empty cell; ValueError otherwise."""
    if value is None:
        return None
    if value.strip().lower() not in _ACTIVE_WORDS:
        raise ValueError(f"active {value!r} is not one of yes/no/true/false/1/0")
    return clean_bool(value)


def parse_assigned_from(value: str | None, now: datetime) -> datetime | None:
    """A date (00:00 EAT) or date-time (naive = EAT); ValueError if unreadable or more than
    MAX_FUTURE ahead of `now`."""
    if value is None:
        return None
    moment = clean_ts(value, tz=EAT)
    if moment is None or isinstance(clean_num(value), float):  # no bare epoch numbers
        raise ValueError(f"assigned_from {value!r} is not a date (YYYY-MM-DD [HH:MM])")
    if moment > now + MAX_FUTURE:
        raise ValueError(f"assigned_from {value!r} is in the future")
    return moment


_OPTIONAL = {
    "fuel_100km_l": lambda v, now: parse_fuel(v),
    "active": lambda v, now: parse_active(v),
    "assigned_from": parse_assigned_from,
}


def parse_registry(text: str, *, now: datetime | None = None) -> RegistryReport:
    """Parse the CSV text: validate IMEIs (15 digits), report bad rows and duplicates; a bad
    optional value (fuel, active, assigned_from) is dropped with a line in `ignored`."""
    moment = now or datetime.now(UTC)
    report = RegistryReport()
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    mapping = map_headers(list(reader.fieldnames or []))
    if "imei" not in mapping.values():
        report.bad.append((1, f"no IMEI column among headers {reader.fieldnames}"))
        return report
    seen: dict[str, int] = {}
    for line, raw in enumerate(reader, start=2):
        report.rows += 1
        row: dict[str, Any] = {col: clean(raw.get(header)) for header, col in mapping.items()}
        imei = re.sub(r"\s", "", row.get("imei") or "")
        if imei.endswith(".0"):  # spreadsheets turn IMEIs into floats
            imei = imei[:-2]
        if not IMEI_RE.match(imei):
            report.bad.append((line, f"IMEI {row.get('imei')!r} is not 15 digits"))
            continue
        if imei in seen:
            report.duplicates.append((line, f"{imei} (first on line {seen[imei]})"))
            continue
        seen[imei] = line
        row["imei"] = imei
        for column, parse in _OPTIONAL.items():
            try:
                row[column] = parse(row.get(column), moment)
            except ValueError as exc:
                report.ignored.append((line, f"{exc} (value ignored)"))
                row[column] = None
        report.valid.append({c: row.get(c) for c in REGISTRY_COLUMNS})
    return report


def import_registry(pool: ConnectionPool, path: Path, *, apply: bool) -> RegistryReport:
    """Parse `path`; with `apply`, upsert the valid rows, apply `active` and record driver
    changes, all in one transaction."""
    report = parse_registry(path.read_text(encoding="utf-8-sig", errors="replace"))
    imeis = [r["imei"] for r in report.valid]
    with pool.connection() as conn:
        known = {
            r[0]
            for r in conn.execute(
                "SELECT imei FROM tracksolid.devices WHERE imei = ANY(%s)", (imeis,)
            ).fetchall()
        }
        report.unknown = [i for i in imeis if i not in known]
        if not apply or not report.valid:
            return report
        with conn.transaction(), conn.cursor() as cur:
            set_assignment_context(conn, "csv")
            cur.executemany(_UPSERT_SQL, report.valid, returning=True)
            report.inserted, report.updated = count_new_and_updated(cur)
            report.deactivated, report.reactivated = _apply_active(cur, report.valid)
            record_driver_changes(
                conn,
                [r["imei"] for r in report.valid],
                source="csv",
                starts={r["imei"]: r["assigned_from"] for r in report.valid if r["assigned_from"]},
            )
            # periods opened in this transaction (by the devices trigger or the line above)
            opened = cur.execute(
                "SELECT count(*) FROM tracksolid.driver_assignments"
                " WHERE source = 'csv' AND recorded_at = now()"
            ).fetchone()
            report.driver_changes = int(opened[0]) if opened else 0
    report.applied = True
    return report


_UPSERT_SQL = """
INSERT INTO tracksolid.devices AS d
    (imei, vehicle_number, driver_name, driver_phone, cost_centre, city, vehicle_type,
     fuel_100km_l, source, registry_updated_at)
VALUES (%(imei)s, %(vehicle_number)s, %(driver_name)s, %(driver_phone)s, %(cost_centre)s,
        %(city)s, %(vehicle_type)s, %(fuel_100km_l)s, 'csv', now())
ON CONFLICT (imei) DO UPDATE SET
    vehicle_number = COALESCE(EXCLUDED.vehicle_number, d.vehicle_number),
    driver_name = COALESCE(EXCLUDED.driver_name, d.driver_name),
    driver_phone = COALESCE(EXCLUDED.driver_phone, d.driver_phone),
    cost_centre = COALESCE(EXCLUDED.cost_centre, d.cost_centre),
    city = COALESCE(EXCLUDED.city, d.city),
    vehicle_type = COALESCE(EXCLUDED.vehicle_type, d.vehicle_type),
    fuel_100km_l = COALESCE(EXCLUDED.fuel_100km_l, d.fuel_100km_l),
    registry_updated_at = now(), updated_at = now()
RETURNING (xmax = 0)
"""


def _apply_active(cur: Any, rows: list[dict[str, Any]]) -> tuple[int, int]:
    """`active` = no → deactivated (reason `registry`), yes → active again; empty: as is.
    Returns (deactivated, reactivated)."""
    off = [r["imei"] for r in rows if r["active"] is False]
    on = [r["imei"] for r in rows if r["active"] is True]
    deactivated = cur.execute(
        "UPDATE tracksolid.devices SET is_active = false, deactivated_at = now(),"
        " deactivation_reason = 'registry', updated_at = now()"
        " WHERE imei = ANY(%s) AND (is_active OR deactivation_reason IS DISTINCT FROM 'registry')",
        (off,),
    ).rowcount
    reactivated = cur.execute(
        "UPDATE tracksolid.devices SET is_active = true, deactivated_at = NULL,"
        " deactivation_reason = NULL, updated_at = now() WHERE imei = ANY(%s) AND NOT is_active",
        (on,),
    ).rowcount
    return deactivated, reactivated
