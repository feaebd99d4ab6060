"""The TimescaleDB layer of the schema on the real extension: hypertables, compression
settings, the continuous aggregate (real-time) and the policies, re-applied when their
settings change; the worker's idempotent writes against a hypertable."""

from __future__ import annotations

import psycopg
import pytest

from run_migrations import migrate
from tests.conftest import test_settings

pytestmark = pytest.mark.timescaledb_only

HYPERTABLES = {"position_history", "heartbeats", "fuel_readings", "temperature_readings"}


def policies(conn: psycopg.Connection[tuple[object, ...]]) -> set[tuple[str, str]]:
    rows = conn.execute(
        "SELECT proc_name, coalesce(hypertable_name, '') FROM timescaledb_information.jobs"
        " WHERE proc_name LIKE 'policy_%'"
    ).fetchall()
    return {(str(r[0]), str(r[1])) for r in rows}


def test_hypertables_cagg_compression_and_policies(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        hypertables = conn.execute(
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = 'tracksolid'"
        ).fetchall()
        assert dict(hypertables) == dict.fromkeys(HYPERTABLES, True)
        segmentby = conn.execute(
            "SELECT hypertable_name, attname FROM timescaledb_information.compression_settings"
            " WHERE hypertable_schema = 'tracksolid' AND segmentby_column_index IS NOT NULL"
            " ORDER BY 1, segmentby_column_index"
        ).fetchall()
        assert set(segmentby) == {(t, "imei") for t in HYPERTABLES} | {
            ("temperature_readings", "sensor")
        }
        caggs = conn.execute(
            "SELECT view_name, materialized_only, view_owner::text"
            " FROM timescaledb_information.continuous_aggregates"
        ).fetchall()
        assert caggs == [("v_mileage_daily_cagg", False, "tracksolid_owner")]
        jobs = policies(conn)
        assert {j for j in jobs if j[0] == "policy_compression"} == {
            ("policy_compression", t) for t in HYPERTABLES
        }
        assert len({j for j in jobs if j[0] == "policy_refresh_continuous_aggregate"}) == 1
        assert not {j for j in jobs if j[0] == "policy_retention"}, "retention is off by default"

        # The worker's idempotent write path works on the hypertable.
        insert = (
            "INSERT INTO tracksolid.position_history (imei, gps_time, lat, lng, speed_kmh,"
            " mileage_km, source) VALUES (%s, %s, -1.29, 36.82, %s, %s, 'poll')"
            " ON CONFLICT (imei, gps_time) DO NOTHING"
        )
        rows = [
            ("A", "2026-11-20 08:00Z", 0, 100.0),
            ("A", "2026-11-20 09:00Z", 50, 130.5),
            ("B", "2026-11-21 09:00Z", 20, 10.0),
        ]
        with conn.cursor() as cur:
            cur.executemany(insert, rows)
            cur.executemany(insert, rows)  # re-poll: nothing new
        assert conn.execute("SELECT count(*) FROM tracksolid.position_history").fetchone() == (3,)
        # Real-time aggregation: the roll-up answers before any refresh.
        daily = conn.execute(
            "SELECT imei, day::date::text, fixes, max_mileage_km - min_mileage_km"
            " FROM tracksolid.v_mileage_daily_cagg ORDER BY imei, day"
        ).fetchall()
        assert daily == [("A", "2026-11-20", 2, 30.5), ("B", "2026-11-21", 1, 0.0)]


def test_policy_settings_are_reapplied_when_changed(db_url: str) -> None:
    settings = test_settings(db_url)
    assert migrate(db_url, settings).applied == []  # the template is up to date
    retained = test_settings(db_url, timescale_retention="400 days", timescale_compress_after="off")
    assert "R__timescale_policies.sql" in migrate(db_url, retained).applied
    with psycopg.connect(db_url, autocommit=True) as conn:
        jobs = policies(conn)
        assert {("policy_retention", t) for t in HYPERTABLES} <= jobs
        assert not {j for j in jobs if j[0] == "policy_compression"}
        drop_after = conn.execute(
            "SELECT DISTINCT config->>'drop_after' FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_retention'"
        ).fetchall()
        assert drop_after == [("400 days",)]
    assert "R__timescale_policies.sql" in migrate(db_url, settings).applied
    with psycopg.connect(db_url, autocommit=True) as conn:
        jobs = policies(conn)
    assert not {j for j in jobs if j[0] == "policy_retention"}
    assert {("policy_compression", t) for t in HYPERTABLES} <= jobs
