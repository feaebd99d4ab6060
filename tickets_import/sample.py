"""Synthetic INC change files in the feed's CSV format, for the tests, the benchmark and demos.

The column set is the export's (seed 003): the ticket fields, the lifecycle times as naive
EAT text, and the bookkeeping columns the importer drops.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta

FEED_COLUMNS = (
    "ticket_id",
    "raw_status",
    "cluster",
    "region",
    "location_name",
    "assigned_team",
    "owner",
    "sla_status",
    "mttr",
    "created_at_service",
    "scheduled_at",
    "closed_at",
    "first_seen_at",
    "last_seen_at",
    "source_created_at",
    "source_updated_at",
    "latitude",
    "longitude",
    "summary",
    "service_type",
    "is_alarm",
    "is_auto_created",
    "is_auto_closed",
    "week_start",
    "week_end",
    "source_s3_bucket",
    "source_s3_key",
    "source_snapshot_id",
    "department",
    "source_type",
)
EAT_FORMAT = "%Y-%m-%d %H:%M:%S"
_CLUSTERS = (("Kilimani", "Nairobi"), ("Westlands", "Nairobi"), ("QOA", "Nairobi"),
             ("Nyali", "Mombasa"), ("Kololo", "Kampala"))  # fmt: skip
_STATUSES = ("NEW", "ASSIGNED", "In Progress", "PENDING", "RESOLVED", "CLOSED")


def ticket(ticket_id: str, **fields: str) -> dict[str, str]:
    """One feed record with plausible defaults; keyword arguments override columns."""
    record = {
        "ticket_id": ticket_id,
        "raw_status": "Assigned",
        "cluster": "Kilimani",
        "region": "Nairobi",
        "location_name": "Argwings Kodhek Rd",
        "assigned_team": "Field Team A",
        "owner": "j.otieno",
        "sla_status": "",
        "mttr": "",
        "created_at_service": "2026-06-20 09:15:00",
        "scheduled_at": "",
        "closed_at": "",
        "first_seen_at": "2026-06-20 09:20:00",
        "last_seen_at": "2026-06-22 08:00:00",
        "source_created_at": "2026-06-20 09:15:00",
        "source_updated_at": "2026-06-20 09:15:00",
        "latitude": "",
        "longitude": "",
        "summary": "Customer offline",
        "service_type": "FTTH",
        "is_alarm": "false",
        "is_auto_created": "false",
        "is_auto_closed": "false",
        "week_start": "2026-06-15",
        "week_end": "2026-06-21",
        "source_s3_bucket": "isptickets",
        "source_s3_key": "automations/inc/export.csv",
        "source_snapshot_id": "snap-1",
        "department": "NOC",
        "source_type": "INC",
    }
    record.update(fields)
    return record


def to_csv(records: Iterable[Mapping[str, str]], columns: Iterable[str] = FEED_COLUMNS) -> bytes:
    """Records as CSV bytes (UTF-8, header first, CRLF as the export writes it)."""
    cols = list(columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    for record in records:
        writer.writerow({name: record.get(name, "") for name in cols})
    return buf.getvalue().encode("utf-8")


def generate(
    count: int, *, seed: int = 6, start: datetime | None = None
) -> Iterator[dict[str, str]]:
    """`count` varied records (statuses, clusters, some closed with MTTR, some with a feed
    point, ~2% alarm rows) — deterministic for a given seed."""
    rng = random.Random(seed)
    # Naive EAT, as the feed sends it.
    base = start or datetime(2026, 6, 1, 8, 0, 0)  # noqa: DTZ001
    for n in range(count):
        cluster, region = _CLUSTERS[n % len(_CLUSTERS)]
        status = _STATUSES[rng.randrange(len(_STATUSES))]
        created = base + timedelta(minutes=rng.randrange(0, 60 * 24 * 20))
        closed = created + timedelta(minutes=rng.randrange(30, 60 * 72))
        is_closed = status in ("RESOLVED", "CLOSED")
        has_point = rng.random() < 0.3
        yield ticket(
            f"INC{n:09d}",
            raw_status=status,
            cluster=cluster,
            region=region,
            location_name=f"FDH-{n % 500:03d} Plot {n % 97} Road",
            assigned_team=f"Field Team {'ABCD'[n % 4]}",
            owner=f"tech{n % 40:02d}",
            sla_status=("Met" if rng.random() < 0.8 else "Breached") if is_closed else "",
            mttr=str(int((closed - created).total_seconds() // 60)) if is_closed else "",
            created_at_service=created.strftime(EAT_FORMAT) if rng.random() > 0.3 else "",
            closed_at=closed.strftime(EAT_FORMAT) if is_closed else "",
            first_seen_at=(created + timedelta(minutes=20)).strftime(EAT_FORMAT),
            last_seen_at=(closed if is_closed else created + timedelta(days=2)).strftime(
                EAT_FORMAT
            ),
            source_created_at=created.strftime(EAT_FORMAT),
            source_updated_at=(closed if is_closed else created).strftime(EAT_FORMAT),
            latitude=f"{-1.29 + rng.uniform(-0.05, 0.05):.6f}" if has_point else "",
            longitude=f"{36.79 + rng.uniform(-0.05, 0.05):.6f}" if has_point else "",
            summary=f'Ticket {n}, customer reports "no signal"',
            is_alarm="true" if rng.random() < 0.02 else "false",
        )
