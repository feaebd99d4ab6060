"""Alarms vs events (issue #15): tracksolid.alarm_types classifies every alarm type; ignition
and other events never count as alarms in a KPI, and the fleet summary gives alarms by
severity. The alarms arrive the way production receives them: pushed deliveries through the
receiver's store (webhook.store.write_delivery)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from sim.records import ALARM_TYPES
from tests import push_factories as f
from tests.factories import add_alarm, add_device, db_now, eat_midnight
from webhook.parse import ALARM_NAMES, ParseContext
from webhook.store import Delivery, write_delivery

Conn = psycopg.Connection[Any]
IMEIS = ("862798050100001", "862798050100002", "862798050100003", "862798050100004")
SEVERITIES = ("critical", "high", "medium", "low", "info")
# Every type id the contract names (docs/jimi-open-api.md §3 "Alarm type ids").
CONTRACT_TYPES = (
    *("1", "2", "3", "4", "5", "6", "9", "12", "17", "90", "147", "197", "198"),
    *("ACC_ON", "ACC_OFF", "in", "out", "overSpeed", "offline", "stayAlert", "stayTimeIn"),
    *("stayTimeOut", "fenceOverspeed", "mileageAlarm", "obd", "ubiAcce", "ubiDece", "ubiTurn"),
    "ubiColl",
)


@pytest.fixture
def conn(db_url: str) -> Iterator[Conn]:
    with psycopg.connect(db_url, autocommit=True) as c:
        for n, imei in enumerate(IMEIS):
            add_device(c, imei, f"KDA {n}00A", cost_centre="Nairobi-North" if n else "Mombasa")
        yield c


def recent_times(conn: Conn, n: int) -> list[datetime]:
    """n distinct whole-second times inside today (EAT) and before now."""
    now = db_now(conn).replace(microsecond=0)
    if now - eat_midnight(now) < timedelta(seconds=n + 5):
        pytest.skip("too close to EAT midnight for a day's worth of alarms")
    return [now - timedelta(seconds=k + 1) for k in range(n)]


def push_alarms(conn: Conn, items: list[dict[str, Any]]) -> None:
    """Store items as /pushalarm deliveries of 50 (what JIMI sends) through the receiver."""
    for start in range(0, len(items), 50):
        data = json.dumps(items[start : start + 50])
        delivery = Delivery("/pushalarm", None, data, datetime.now(UTC))
        result = write_delivery(conn, delivery, ParseContext(datetime.now(UTC)))
        assert result.status == "parsed" and result.items_failed == 0


def summary(conn: Conn, cost_centre: str | None = None) -> dict[str, Any]:
    row = conn.execute("SELECT reporting.fn_fleet_summary(%s)", (cost_centre,)).fetchone()
    assert row is not None
    doc: dict[str, Any] = row[0]
    return doc


def ignition_storm(conn: Conn) -> None:
    """200 ACC_ON/ACC_OFF over 4 vehicles, 3 SOS and 1 overspeed, today."""
    times = recent_times(conn, 51)
    items = [
        f.alarm(imei, times[k], alertType=kind, alarmName=kind.replace("_", " "))
        for imei in IMEIS
        for k in range(50)
        for kind in ("ACC_ON" if k % 2 else "ACC_OFF",)
    ]
    items += [f.alarm(IMEIS[1], times[k], alertType="1", alarmName="SOS alarm") for k in range(3)]
    items.append(f.alarm(IMEIS[2], times[50], alertType="6", alarmName="Overspeed alarm"))
    push_alarms(conn, items)


def test_every_contract_and_simulator_type_is_classified(conn: Conn) -> None:
    rows = conn.execute("SELECT alarm_type, kind, severity FROM tracksolid.alarm_types").fetchall()
    table = {r[0]: (r[1], r[2]) for r in rows}
    for alarm_type in (*CONTRACT_TYPES, *ALARM_TYPES, *ALARM_NAMES):
        assert alarm_type in table, alarm_type
    assert table["1"] == ("alarm", "critical")
    assert table["6"] == ("alarm", "high")
    for ignition in ("ACC_ON", "ACC_OFF", "197", "198"):
        assert table[ignition] == ("event", "info")
    assert {kind for kind, _ in table.values()} == {"alarm", "event"}
    assert {sev for _, sev in table.values()} <= set(SEVERITIES)


def test_ignition_storm_counts_four_alarms_by_severity_and_events_apart(conn: Conn) -> None:
    ignition_storm(conn)
    assert conn.execute("SELECT count(*) FROM tracksolid.alarms").fetchone() == (204,)

    doc = summary(conn)
    assert doc["today"]["alarms"] == 4
    assert doc["today"]["events"] == 200
    assert doc["alarms_by_severity"] == {"critical": 3, "high": 1, "medium": 0, "low": 0, "info": 0}
    assert list(doc["alarms_by_severity"]) == list(SEVERITIES)  # a stable order for the SPA
    assert {a["category"]: a["alarms"] for a in doc["alarms_today"]} == {"sos": 3, "overspeed": 1}
    assert {e["alarm_type"]: e["events"] for e in doc["events_today"]} == {
        "ACC_ON": 100,
        "ACC_OFF": 100,
    }

    # The per-vehicle roll-up and the daily views agree.
    per_vehicle = conn.execute(
        "SELECT sum(alarms_today), sum(events_today) FROM tracksolid.v_fleet_today"
    ).fetchone()
    assert per_vehicle == (4, 200)
    assert conn.execute("SELECT sum(alarms) FROM reporting.v_alarms_daily").fetchone() == (4,)
    assert conn.execute("SELECT sum(alarms) FROM reporting.v_events_daily").fetchone() == (200,)

    # A cost-centre filter narrows every figure: IMEIS[0] is the only Mombasa vehicle.
    mombasa = summary(conn, "Mombasa")
    assert mombasa["today"]["alarms"] == 0 and mombasa["today"]["events"] == 50
    assert set(mombasa["alarms_by_severity"].values()) == {0}


def test_unknown_type_counts_as_a_medium_alarm(conn: Conn) -> None:
    (moment,) = recent_times(conn, 1)
    add_alarm(conn, IMEIS[0], moment, "tamperX", "Tamper (new firmware code)")
    add_alarm(conn, IMEIS[0], moment, "ACC_ON", "ACC ON")
    doc = summary(conn)
    assert doc["today"]["alarms"] == 1 and doc["today"]["events"] == 1
    assert doc["alarms_by_severity"]["medium"] == 1
    row = conn.execute(
        "SELECT kind, severity, alarm_name FROM reporting.v_alarms_daily WHERE alarm_type = %s",
        ("tamperX",),
    ).fetchone()
    assert row == ("alarm", "medium", "Tamper (new firmware code)")


def test_the_read_only_role_reads_the_event_view(conn: Conn) -> None:
    ignition_storm(conn)
    conn.execute("SET ROLE dashboard_ro")
    try:
        total = conn.execute("SELECT sum(alarms) FROM reporting.v_events_daily").fetchone()
        doc = summary(conn)
    finally:
        conn.execute("RESET ROLE")
    assert total == (200,)
    assert doc["today"]["alarms"] == 4
