"""Device registry import: the operator's CSV (plate, driver, phone, cost centre, city, type).

The Tracksolid API does not know drivers, cost centres or cities (seed 000: 144 devices waiting
in a CSV). This import upserts them by IMEI; an empty cell never erases a stored value, and
the API sync never overwrites them with its nulls (see writers.upsert_devices).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg_pool import ConnectionPool

from ingest.writers import count_new_and_updated
from ts_shared import clean

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
}  # fmt: skip
REGISTRY_COLUMNS = tuple(HEADER_ALIASES)
IMEI_RE = re.compile(r"^\d{15}$")


@dataclass
class RegistryReport:
    """What the import found (and, with apply, did)."""

    rows: int = 0
    valid: list[dict[str, Any]] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)
    duplicates: list[tuple[int, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # IMEIs not yet known from the API
    inserted: int = 0
    updated: int = 0
    applied: bool = False

    def summary(self) -> str:
        """One line for the operator."""
        mode = "applied" if self.applied else "dry run (use --apply to write)"
        return (
            f"{self.rows} rows: {len(self.valid)} valid, {len(self.bad)} bad, "
            f"{len(self.duplicates)} duplicate IMEIs, {len(self.unknown)} not yet known from "
            f"the API; inserted {self.inserted}, updated {self.updated} — {mode}"
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


def parse_registry(text: str) -> RegistryReport:
    """Parse the CSV text: validate IMEIs (15 digits), report bad rows and duplicates."""
    report = RegistryReport()
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    mapping = map_headers(list(reader.fieldnames or []))
    if "imei" not in mapping.values():
        report.bad.append((1, f"no IMEI column among headers {reader.fieldnames}"))
        return report
    seen: dict[str, int] = {}
    for line, raw in enumerate(reader, start=2):
        report.rows += 1
        row = {col: clean(raw.get(header)) for header, col in mapping.items()}
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
        report.valid.append({c: row.get(c) for c in REGISTRY_COLUMNS})
    return report


def import_registry(pool: ConnectionPool, path: Path, *, apply: bool) -> RegistryReport:
    """Parse `path`; with `apply`, upsert the valid rows in one transaction."""
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
            cur.executemany(
                """
                INSERT INTO tracksolid.devices AS d
                    (imei, vehicle_number, driver_name, driver_phone, cost_centre, city,
                     vehicle_type, source, registry_updated_at)
                VALUES (%(imei)s, %(vehicle_number)s, %(driver_name)s, %(driver_phone)s,
                        %(cost_centre)s, %(city)s, %(vehicle_type)s, 'csv', now())
                ON CONFLICT (imei) DO UPDATE SET
                    vehicle_number = COALESCE(EXCLUDED.vehicle_number, d.vehicle_number),
                    driver_name = COALESCE(EXCLUDED.driver_name, d.driver_name),
                    driver_phone = COALESCE(EXCLUDED.driver_phone, d.driver_phone),
                    cost_centre = COALESCE(EXCLUDED.cost_centre, d.cost_centre),
                    city = COALESCE(EXCLUDED.city, d.city),
                    vehicle_type = COALESCE(EXCLUDED.vehicle_type, d.vehicle_type),
                    registry_updated_at = now(), updated_at = now()
                RETURNING (xmax = 0)
                """,
                report.valid,
                returning=True,
            )
            report.inserted, report.updated = count_new_and_updated(cur)
    report.applied = True
    return report
