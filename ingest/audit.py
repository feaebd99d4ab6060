"""Registry gap report (`ingest_worker.py audit-registry`; seed 000: sync_driver_audit.py).

What an operator fixes in the registry CSV or in Tracksolid:
- active devices without a driver;
- a driver on two (or more) active vehicles at once;
- IMEIs in the registry (imported by the CSV) that no account lists, and listed IMEIs the
  registry does not have;
- active devices silent for more than `silent_hours` (no fix and no heartbeat), with since when.

"Listed" means listed by the last device sync in which every account answered (read from
`ingestion_log`); with `listed` given (the accounts' lists fetched just now, `fetch_listed`)
that set is used instead. Read-only: the report never changes the database.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ts_shared import JimiClient, JimiError, clean

Conn = psycopg.Connection[Any]

# Last device sync whose every account list answered (jobs.Ingestor.sync_devices counts the
# failed lists in detail.updated.account_lists_failed) and that was not interrupted; the rows it
# listed have api_listed_at within its run, which began duration_ms before it was logged.
_LAST_SYNC_SQL = """
SELECT logged_at - make_interval(secs => coalesce(duration_ms, 0) / 1000.0 + 60) AS since,
       logged_at
FROM tracksolid.ingestion_log
WHERE source = 'job' AND method = 'device_sync'
  AND coalesce((detail -> 'updated' ->> 'account_lists_failed')::int, 0) = 0
  AND NOT coalesce((detail ->> 'interrupted')::boolean, false)
ORDER BY logged_at DESC LIMIT 1
"""

_NO_DRIVER_SQL = """
SELECT d.imei, tracksolid.vehicle_label(d) AS vehicle, d.account, d.cost_centre, d.city
FROM tracksolid.devices d
WHERE d.is_active AND nullif(btrim(d.driver_name), '') IS NULL
ORDER BY d.cost_centre NULLS LAST, 2
"""

_SHARED_DRIVER_SQL = """
SELECT min(btrim(d.driver_name)) AS driver, count(*) AS vehicles,
       string_agg(tracksolid.vehicle_label(d), ', ' ORDER BY tracksolid.vehicle_label(d))
           AS vehicle_list
FROM tracksolid.devices d
WHERE d.is_active AND nullif(btrim(d.driver_name), '') IS NOT NULL
GROUP BY lower(btrim(d.driver_name))
HAVING count(*) > 1
ORDER BY 1
"""

_REGISTRY_SQL = """
SELECT d.imei, tracksolid.vehicle_label(d) AS vehicle, btrim(d.driver_name) AS driver, d.is_active,
       d.registry_updated_at IS NOT NULL AS in_registry, d.api_listed_at, d.account
FROM tracksolid.devices d
"""

_SILENT_SQL = """
SELECT d.imei, tracksolid.vehicle_label(d) AS vehicle, btrim(d.driver_name) AS driver, d.account,
       greatest(lp.gps_time, lp.hb_time) AS silent_since, d.first_seen_at
FROM tracksolid.devices d
LEFT JOIN tracksolid.live_positions lp ON lp.imei = d.imei
WHERE d.is_active
  AND (greatest(lp.gps_time, lp.hb_time) IS NULL
       OR greatest(lp.gps_time, lp.hb_time) < now() - make_interval(hours => %s))
ORDER BY greatest(lp.gps_time, lp.hb_time) NULLS FIRST, 2
"""


@dataclass
class AuditReport:
    """The gap report: one list of rows (dicts) per finding."""

    generated_at: datetime
    listing_source: str  # "last complete device sync at ..." | "API lists fetched now" | ...
    silent_hours: int
    devices_active: int = 0
    devices_inactive: int = 0
    without_driver: list[dict[str, Any]] = field(default_factory=list)
    driver_on_several_vehicles: list[dict[str, Any]] = field(default_factory=list)
    registry_not_listed: list[dict[str, Any]] = field(default_factory=list)
    listed_not_in_registry: list[dict[str, Any]] = field(default_factory=list)
    silent: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def fetch_listed(client: JimiClient) -> tuple[set[str], list[str]]:
    """IMEIs every account lists now (`jimi.user.device.list`), and the accounts that failed."""
    listed: set[str] = set()
    failed: list[str] = []
    for target, reply in client.call_each_target("jimi.user.device.list"):
        if isinstance(reply, JimiError):
            failed.append(f"{target} ({reply})")
            continue
        listed.update(i for item in reply.items() if (i := clean(item.get("imei"))))
    return listed, failed


def gather(
    conn: Conn,
    *,
    silent_hours: int = 24,
    listed: set[str] | None = None,
    failed_accounts: Sequence[str] = (),
) -> AuditReport:
    """Build the report from the database (and `listed`, when the lists were fetched now)."""
    with conn.cursor(row_factory=dict_row) as cur:
        now = cur.execute("SELECT now() AS t").fetchone()
        report = AuditReport(generated_at=now["t"] if now else datetime.now(UTC),
                             listing_source="", silent_hours=silent_hours)  # fmt: skip
        report.without_driver = cur.execute(_NO_DRIVER_SQL).fetchall()
        report.driver_on_several_vehicles = cur.execute(_SHARED_DRIVER_SQL).fetchall()
        report.silent = cur.execute(_SILENT_SQL, (silent_hours,)).fetchall()
        devices = cur.execute(_REGISTRY_SQL).fetchall()
        last_sync = cur.execute(_LAST_SYNC_SQL).fetchone()
    report.devices_active = sum(1 for d in devices if d["is_active"])
    report.devices_inactive = len(devices) - report.devices_active
    if listed is not None:
        report.listing_source = "the accounts' device lists, fetched now"
        if failed_accounts:
            report.notes.append(
                "these accounts did not answer, their devices count as not listed: "
                + "; ".join(failed_accounts)
            )
        is_listed = {d["imei"]: d["imei"] in listed for d in devices}
    elif last_sync is not None:
        report.listing_source = f"the last complete device sync ({_when(last_sync['logged_at'])})"
        is_listed = {
            d["imei"]: d["api_listed_at"] is not None and d["api_listed_at"] >= last_sync["since"]
            for d in devices
        }
    else:
        report.listing_source = "no complete device sync recorded"
        report.notes.append("no device sync has listed every account yet: run the worker's "
                            "device_sync, or audit-registry --live")  # fmt: skip
        is_listed = {d["imei"]: False for d in devices}
    _split_listing(report, devices, is_listed, listed or set())
    return report


def _split_listing(
    report: AuditReport,
    devices: list[dict[str, Any]],
    is_listed: dict[str, bool],
    listed_now: set[str],
) -> None:
    """Registry IMEIs no account lists; listed IMEIs the registry (CSV) does not have."""
    known = set(is_listed)
    for d in devices:
        row = {k: d[k] for k in ("imei", "vehicle", "driver", "account")}
        row["active"] = d["is_active"]
        if d["in_registry"] and not is_listed[d["imei"]]:
            report.registry_not_listed.append(row)
        elif is_listed[d["imei"]] and not d["in_registry"]:
            report.listed_not_in_registry.append(row)
    for imei in sorted(listed_now - known):  # listed now, never synced yet
        report.listed_not_in_registry.append(
            {"imei": imei, "vehicle": None, "driver": None, "account": None, "active": None}
        )
    if not any(d["in_registry"] for d in devices):
        report.notes.append("no device was imported from the registry CSV yet "
                            "(ingest_worker.py import-devices FILE.csv --apply)")  # fmt: skip


def _age(span: timedelta) -> str:
    hours = max(0, int(span.total_seconds() // 3600))
    return f"{hours // 24} d {hours % 24} h" if hours >= 24 else f"{hours} h"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return _when(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _table(title: str, rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A titled, left-aligned text table ("none" when empty)."""
    head = f"{title} ({len(rows)})"
    if not rows:
        return f"{head}\n  none\n"
    cells = [[_cell(r.get(key)) for key, _ in columns] for r in rows]
    widths = [max(len(label), *(len(c[i]) for c in cells)) for i, (_, label) in enumerate(columns)]
    lines = [
        head,
        "  "
        + "  ".join(label.ljust(w) for (_, label), w in zip(columns, widths, strict=True)).rstrip(),
    ]
    lines += [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    return "\n".join(lines) + "\n"


def format_text(report: AuditReport) -> str:
    """The report as aligned text for a terminal."""
    silent = [
        {
            **r,
            "since": r["silent_since"] or f"never (registered {_when(r['first_seen_at'])})",
            "for": _age(report.generated_at - (r["silent_since"] or r["first_seen_at"])),
        }
        for r in report.silent
    ]
    parts = [
        f"Registry audit — {_when(report.generated_at)}\n"
        f"Devices: {report.devices_active} active, {report.devices_inactive} inactive. "
        f"Listed = {report.listing_source}.\n",
        _table("Active devices without a driver", report.without_driver,
               [("imei", "IMEI"), ("vehicle", "VEHICLE"), ("account", "ACCOUNT"),
                ("cost_centre", "COST CENTRE"), ("city", "CITY")]),
        _table("Drivers on more than one active vehicle", report.driver_on_several_vehicles,
               [("driver", "DRIVER"), ("vehicles", "VEHICLES"), ("vehicle_list", "ON")]),
        _table("In the registry, not listed by any account", report.registry_not_listed,
               [("imei", "IMEI"), ("vehicle", "VEHICLE"), ("driver", "DRIVER"),
                ("account", "LAST ACCOUNT"), ("active", "ACTIVE")]),
        _table("Listed by an account, not in the registry", report.listed_not_in_registry,
               [("imei", "IMEI"), ("vehicle", "VEHICLE"), ("driver", "DRIVER"),
                ("account", "ACCOUNT")]),
        _table(f"Active devices silent for more than {report.silent_hours} h", silent,
               [("imei", "IMEI"), ("vehicle", "VEHICLE"), ("driver", "DRIVER"),
                ("account", "ACCOUNT"), ("since", "SILENT SINCE"), ("for", "FOR")]),
    ]  # fmt: skip
    parts += [f"Note: {n}\n" for n in report.notes]
    return "\n".join(parts)


def format_json(report: AuditReport) -> str:
    """The report as JSON (times in ISO-8601)."""
    return json.dumps(asdict(report), default=_json_default, indent=2, ensure_ascii=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
