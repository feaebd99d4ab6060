"""The upstream S3 exports for the simulated fleet: INC tickets and fuel fills.

In production two other systems write the files the importers read (docs/tickets.md,
docs/fuel.md). The demo has neither, so the simulator plays both, against any S3 endpoint
(the demo's loopback moto server), in exactly the formats the importers parse:

- tickets: each round one change file `<TICKETS_PREFIX><EAT timestamp>.csv` with the export's
  columns (`tickets_import.sample`): new tickets beside the fleet's roads (with a feed point,
  so they are on the map without a geocoder) and the next state of some open ones
  (assigned → in progress → resolved);
- fuel: `<FUEL_PREFIX>latest.json`, the full snapshot `{metadata, records}` rewritten with
  the round's new fills (plates, drivers and odometers of the simulated vehicles), as the
  hourly `--snapshot` reconcile expects (a record absent from it would be marked missing).

A new ticket also sends a vehicle of its city there (`Fleet.dispatch`), so the ticket-visit
job has visits to find. Deterministic in the seed, apart from the wall-clock times.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sim.model import Fleet
from sim.records import SimDevice
from sim.roads import ROADS
from tickets_import.sample import EAT_FORMAT, ticket, to_csv

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

EAT_OFFSET = timedelta(hours=3)  # East Africa Time, no DST: the feeds' naive times
SNAPSHOT_NAME = "latest.json"
# Clusters (the INC export's service areas) of each simulated city.
CLUSTERS = {
    "Nairobi": ("Kilimani", "Westlands", "Embakasi", "Kasarani"),
    "Mombasa": ("Nyali", "Likoni", "Changamwe"),
    "Kampala": ("Kololo", "Nakawa", "Rubaga"),
}
SUMMARIES = ("Customer offline", "Slow speeds reported", "Fibre cut", "ONT no power",
             "Intermittent connection", "Relocation request")  # fmt: skip
# Ticket states in the order the feed reports them, and the team/owner columns they fill.
STAGES = ("NEW", "Assigned", "In Progress", "RESOLVED")
PRICES_KES = {"Diesel": 171.5, "Petrol": 180.7}
DEPARTMENTS = ("Field Operations", "field ops", "NOC", "Logistics")  # spellings the map folds


def eat_text(moment: datetime) -> str:
    """A UTC instant as the feeds' naive EAT text `YYYY-MM-DD HH:MM:SS`."""
    return (moment.astimezone(UTC) + EAT_OFFSET).strftime(EAT_FORMAT)


@dataclass
class _OpenTicket:
    """A ticket the feed still reports changes of."""

    record: dict[str, str]
    stage: int
    created: datetime


class S3Feed:
    """Writes the fleet's tickets and fuel fills to S3, one round per `publish`."""

    def __init__(
        self,
        fleet: Fleet,
        s3: S3Client,
        *,
        tickets_bucket: str = "fleet-tickets",
        tickets_prefix: str = "changes/",
        fuel_bucket: str = "fleet-fuel",
        fuel_prefix: str = "fuel_records/",
        dispatch: bool = True,
    ) -> None:
        self.fleet = fleet
        self.s3 = s3
        self.tickets_bucket = tickets_bucket
        self.tickets_prefix = tickets_prefix
        self.fuel_bucket = fuel_bucket
        self.fuel_prefix = fuel_prefix if not fuel_prefix or fuel_prefix.endswith("/") else (
            fuel_prefix + "/"
        )  # fmt: skip
        self.dispatch = dispatch
        self._rng = random.Random(f"s3feed|{fleet.config.seed}")
        self._open: list[_OpenTicket] = []
        self._fills: list[dict[str, Any]] = []
        self._tickets_made = 0
        self._last_key = ""
        self.rounds = 0

    # ── S3 ───────────────────────────────────────────────────────────────

    def ensure_buckets(self) -> None:
        """Create the two buckets when they do not exist (a fresh S3 server)."""
        have = {b.get("Name") for b in self.s3.list_buckets().get("Buckets", [])}
        for bucket in (self.tickets_bucket, self.fuel_bucket):
            if bucket not in have:
                self.s3.create_bucket(Bucket=bucket)

    def _change_key(self, now: datetime) -> str:
        """`<prefix><EAT timestamp>.csv`, strictly after the previous key (key order is the
        importer's time order)."""
        moment = now
        while True:
            stamp = (moment.astimezone(UTC) + EAT_OFFSET).strftime("%Y-%m-%dT%H-%M-%S")
            key = f"{self.tickets_prefix}{stamp}.csv"
            if key > self._last_key:
                self._last_key = key
                return key
            moment += timedelta(seconds=1)

    # ── one round ────────────────────────────────────────────────────────

    def publish(
        self, now: datetime | None = None, *, new_tickets: int | None = None,
        new_fills: int | None = None,
    ) -> tuple[int, int]:  # fmt: skip
        """Write one round: a change file (new and progressed tickets) and the fuel snapshot
        when there are new fills. Returns (ticket rows written, fills added)."""
        now = now or datetime.now(UTC)
        rng = self._rng
        if new_tickets is None:
            new_tickets = rng.choice((0, 1, 1, 2))
        if new_fills is None:
            new_fills = rng.choice((0, 1, 1, 2))
        rows = self._progress(now) + [self._new_ticket(now) for _ in range(new_tickets)]
        if rows:
            key = self._change_key(now)
            self.s3.put_object(Bucket=self.tickets_bucket, Key=key, Body=to_csv(rows),
                               ContentType="text/csv")  # fmt: skip
            log.info("s3 feed: %s with %d ticket row(s)", key, len(rows))
        for _ in range(new_fills):
            self._fills.append(self._fill(now))
        if new_fills:
            self._write_snapshot(now)
        self.rounds += 1
        return len(rows), new_fills

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """A busy first round (something to import at once), then a round every
        `interval_s` seconds until `stop` is set. S3 errors are logged and retried next round."""
        first = True
        while not stop.is_set():
            try:
                if first:
                    self.ensure_buckets()
                    self.publish(new_tickets=6, new_fills=3)
                    first = False
                else:
                    self.publish()
            except Exception:
                log.exception("s3 feed round failed (retried in %.0f s)", interval_s)
            stop.wait(interval_s)

    # ── tickets ──────────────────────────────────────────────────────────

    def _new_ticket(self, now: datetime) -> dict[str, str]:
        """A new ticket beside one of a city's roads; a vehicle of the city is sent there."""
        rng = self._rng
        self._tickets_made += 1
        number = self._tickets_made
        dev = rng.choice(self.fleet.devices())
        road = rng.choice(ROADS[dev.city])
        lat, lng, bearing = road.at(rng.uniform(300.0, max(301.0, road.length - 100.0)))
        side = math.radians(bearing + 90.0)  # 40-120 m off the road, at a customer's site
        off = rng.uniform(40.0, 120.0) / 111_320.0
        lat += off * math.cos(side)
        lng += off * math.sin(side) / math.cos(math.radians(lat))
        created = now - timedelta(minutes=rng.randint(5, 90))
        stamp = eat_text(created)
        record = ticket(
            f"INC{900_000_000 + number:09d}",
            raw_status=STAGES[0],
            cluster=rng.choice(CLUSTERS[dev.city]),
            region=dev.city,
            location_name=f"{road.name} FDH-{number:03d}",
            assigned_team="",
            owner="",
            created_at_service=stamp,
            first_seen_at=eat_text(now),
            last_seen_at=eat_text(now),
            source_created_at=stamp,
            source_updated_at=eat_text(now),
            latitude=f"{lat:.6f}",
            longitude=f"{lng:.6f}",
            summary=rng.choice(SUMMARIES),
        )
        self._open.append(_OpenTicket(record, 0, created))
        if self.dispatch:
            self._send_vehicle(dev, lat, lng, now)
        return dict(record)

    def _progress(self, now: datetime) -> list[dict[str, str]]:
        """The next state of about half the open tickets; resolved ones leave the feed."""
        rows: list[dict[str, str]] = []
        still: list[_OpenTicket] = []
        for item in self._open:
            if self._rng.random() < 0.5:
                item.stage += 1
                record = item.record
                record["raw_status"] = STAGES[item.stage]
                record["assigned_team"] = record["assigned_team"] or (
                    f"Field Team {self._rng.choice('ABCD')}"
                )
                record["owner"] = record["owner"] or f"tech{self._rng.randrange(40):02d}"
                record["source_updated_at"] = record["last_seen_at"] = eat_text(now)
                if STAGES[item.stage] == "RESOLVED":
                    minutes = max(1, int((now - item.created).total_seconds() // 60))
                    record["closed_at"] = eat_text(now)
                    record["mttr"] = str(minutes)
                    record["sla_status"] = "Met" if minutes < 48 * 60 else "Breached"
                rows.append(dict(record))
            if item.stage < len(STAGES) - 1:
                still.append(item)
        self._open = still
        return rows

    def _send_vehicle(self, dev: SimDevice, lat: float, lng: float, now: datetime) -> None:
        """Dispatch a vehicle of the ticket's city that is on no errand to the site."""
        city = [d for d in self.fleet.devices() if d.city == dev.city]
        self._rng.shuffle(city)
        for candidate in city:
            if not self.fleet.on_errand(candidate.imei, now):
                self.fleet.dispatch(candidate.imei, lat, lng, now,
                                    self._rng.randint(10, 25) * 60, 40.0)  # fmt: skip
                return

    # ── fuel ─────────────────────────────────────────────────────────────

    def _fill(self, now: datetime) -> dict[str, Any]:
        """One fill of a random vehicle, in the WhatsApp export's loose spellings."""
        rng = self._rng
        dev = rng.choice(self.fleet.devices())
        kind = "Petrol" if dev.index % 3 == 2 else "Diesel"
        litres = round(rng.uniform(0.25, 0.8) * dev.tank_l, 1)
        amount = litres * PRICES_KES[kind]
        filled = now - timedelta(minutes=rng.randint(1, 20))
        return {
            "id": len(self._fills) + 1,
            "car": dev.vehicle_number,
            "litres": f"{litres} L",
            "amount": f"KES {amount:,.2f}",
            "odometer": f"{self.fleet.odometer_km(dev.imei, filled):,.0f} km",
            "fuel_type": kind,
            "driver": dev.driver_name,
            "department": rng.choice(DEPARTMENTS),
            "filled_at": eat_text(filled),
            "created_at": eat_text(now),
            "updated_at": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def _write_snapshot(self, now: datetime) -> None:
        document = {
            "metadata": {
                "generated_at": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "source": "jimi_sim demo feed",
                "count": len(self._fills),
            },
            "records": self._fills,
        }
        body = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")
        key = self.fuel_prefix + SNAPSHOT_NAME
        self.s3.put_object(Bucket=self.fuel_bucket, Key=key, Body=body,
                           ContentType="application/json")  # fmt: skip
        log.info("s3 feed: %s with %d fill(s)", key, len(self._fills))
