"""Tickets importer end to end: moto S3 server on loopback + real PostgreSQL/PostGIS."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

import import_tickets
from tickets_import import feed
from tickets_import.sample import ticket, to_csv
from ts_shared import Settings, make_s3_client


def put(settings: Settings, name: str, records: Sequence[Mapping[str, str]] | bytes) -> str:
    key = settings.tickets_prefix + name
    body = records if isinstance(records, bytes) else to_csv(records)
    make_s3_client(settings).put_object(Bucket=settings.tickets_bucket, Key=key, Body=body)
    return key


def keys(settings: Settings, prefix: str) -> list[str]:
    s3 = make_s3_client(settings)
    found = s3.list_objects_v2(Bucket=settings.tickets_bucket, Prefix=prefix).get("Contents", [])
    return sorted(obj["Key"] for obj in found)


def run(settings: Settings, pool: ConnectionPool, *args: str, **kwargs: Any) -> tuple[int, str]:
    out = io.StringIO()
    code = import_tickets.run(list(args), settings, pool, out=out, **kwargs)
    return code, out.getvalue()


def one(pool: ConnectionPool, query: str, params: Sequence[Any] = ()) -> Any:
    with pool.connection() as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


def test_drains_oldest_first_advances_watermark_archives_and_rerun_is_noop(
    s3_settings: Settings, pool: ConnectionPool
) -> None:
    # Same ticket in both files: the newer file must win, so order matters.
    put(
        s3_settings,
        "2026-06-25T10-40-00.csv",
        [
            ticket(
                "INC1",
                raw_status="Closed",
                closed_at="2026-06-25 10:30:00",
                source_updated_at="2026-06-25 10:30:00",
                mttr="75",
            ),
            ticket("INC3"),
        ],
    )
    put(s3_settings, "2026-06-25T10-20-00.csv", [ticket("INC1"), ticket("INC2")])
    code, line = run(s3_settings, pool, "--from-bucket", "--apply")
    assert code == 0, line
    assert "files=2 imported=2 archived=2" in line
    assert "upserted=4 (new=3 changed=1 unchanged=0)" in line
    assert (
        one(pool, "SELECT bucket || '/' || mttr FROM tickets.inc WHERE ticket_id='INC1'")
        == "closed/75"
    )
    assert one(pool, "SELECT source_max_key FROM tickets.import_meta") == (
        "changes/2026-06-25T10-40-00.csv"
    )
    assert one(pool, "SELECT metadata->>'source_max_key' FROM tickets.import_meta") == (
        "changes/2026-06-25T10-40-00.csv"
    )
    assert keys(s3_settings, "changes/") == []
    assert keys(s3_settings, "processed/") == [
        "processed/2026-06-25T10-20-00.csv",
        "processed/2026-06-25T10-40-00.csv",
    ]
    updated_at = one(pool, "SELECT max(updated_at) FROM tickets.inc")

    code, line = run(s3_settings, pool, "--from-bucket", "--apply")
    assert code == 0
    assert "files=0 imported=0" in line and "upserted=0" in line
    assert one(pool, "SELECT max(updated_at) FROM tickets.inc") == updated_at
    # An old file re-delivered below the watermark is archived, never re-applied.
    put(s3_settings, "2026-06-25T10-00-00.csv", [ticket("INC1", raw_status="NEW")])
    code, line = run(s3_settings, pool, "--from-bucket", "--apply")
    assert code == 0 and "archived=1" in line and "imported=0" in line
    assert one(pool, "SELECT bucket FROM tickets.inc WHERE ticket_id='INC1'") == "closed"
    methods = one(
        pool, "SELECT count(*) FROM tracksolid.ingestion_log WHERE method='import_tickets'"
    )
    assert methods >= 5  # one row per file and per run


def test_dry_run_parses_counts_and_writes_nothing(
    s3_settings: Settings, pool: ConnectionPool
) -> None:
    put(s3_settings, "2026-06-25T10-20-00.csv", [ticket("INC1"), ticket("INC2", is_alarm="true")])
    code, line = run(s3_settings, pool, "--from-bucket")
    assert code == 0
    assert "DRY-RUN" in line and "rows read=2" in line and "alarm=1" in line
    assert one(pool, "SELECT count(*) FROM tickets.inc") == 0
    assert one(pool, "SELECT count(*) FROM tickets.import_meta") == 0
    assert one(pool, "SELECT count(*) FROM tickets.inc_daily_snapshot") == 0
    assert one(pool, "SELECT count(*) FROM tracksolid.ingestion_log") == 0
    assert keys(s3_settings, "changes/") == ["changes/2026-06-25T10-20-00.csv"]


def test_reseed_ignores_the_watermark_and_resets_it(
    s3_settings: Settings, pool: ConnectionPool
) -> None:
    put(s3_settings, "2026-06-25T10-20-00.csv", [ticket("INC1")])
    assert run(s3_settings, pool, "--from-bucket", "--apply")[0] == 0
    # Cutover: the new bucket's files sort below the old watermark.
    put(s3_settings, "2026-06-01T06-00-00.csv", [ticket("INC9")])
    code, line = run(s3_settings, pool, "--from-bucket", "--apply")
    assert "imported=0" in line  # below the watermark: archived only
    put(s3_settings, "2026-06-01T06-20-00.csv", [ticket("INC8")])
    code, line = run(s3_settings, pool, "--from-bucket", "--reseed", "--apply")
    assert code == 0 and "imported=1" in line and "reseed" in line
    assert one(pool, "SELECT count(*) FROM tickets.inc WHERE ticket_id='INC8'") == 1
    assert one(pool, "SELECT source_max_key FROM tickets.import_meta") == (
        "changes/2026-06-01T06-20-00.csv"
    )


def test_crash_after_commit_before_archive_is_harmless(
    s3_settings: Settings, pool: ConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(s3_settings, "2026-06-25T10-20-00.csv", [ticket("INC1"), ticket("INC2")])
    put(s3_settings, "2026-06-25T10-40-00.csv", [ticket("INC3")])
    real_archive = feed.archive
    calls = {"n": 0}

    def dies_once(*args: Any, **kwargs: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("process killed")  # not a FeedArchiveError: a real crash
        return real_archive(*args, **kwargs)

    monkeypatch.setattr(feed, "archive", dies_once)
    with pytest.raises(RuntimeError, match="killed"):
        run(s3_settings, pool, "--from-bucket", "--apply")
    # The first file's transaction committed; the file still sits in changes/.
    assert one(pool, "SELECT count(*) FROM tickets.inc") == 2
    assert keys(s3_settings, "changes/") == [
        "changes/2026-06-25T10-20-00.csv",
        "changes/2026-06-25T10-40-00.csv",
    ]
    ingested = one(pool, "SELECT max(ingested_at) FROM tickets.inc")
    code, line = run(s3_settings, pool, "--from-bucket", "--apply")
    assert code == 0, line
    assert "imported=1 archived=2" in line
    assert one(pool, "SELECT count(*) FROM tickets.inc") == 3
    assert one(pool, "SELECT min(ingested_at) FROM tickets.inc") <= ingested
    assert keys(s3_settings, "changes/") == []
    assert len(keys(s3_settings, "processed/")) == 2


def test_malformed_rows_dead_lettered_and_unreadable_file_quarantined(
    s3_settings: Settings, pool: ConnectionPool, caplog: pytest.LogCaptureFixture
) -> None:
    good = to_csv([ticket("INC1"), ticket("INC2")]).decode()
    lines = good.splitlines()
    broken = "\r\n".join([lines[0], lines[1], "INC9,NEW", lines[2], ""]).encode()
    put(s3_settings, "2026-06-25T10-20-00.csv", broken)
    put(s3_settings, "2026-06-25T10-40-00.csv", b"ticket_id,raw_status\n\xff\xfeINC\n")
    put(s3_settings, "2026-06-25T11-00-00.csv", [ticket("INC3")])
    code, line = run(s3_settings, pool, "--from-bucket", "--apply")
    assert code == 0, line  # the feed kept moving: not a failure
    assert "rejected=1" in line and "quarantined=1" in line
    assert "quarantined-files=changes/2026-06-25T10-40-00.csv" in line
    assert "changes/2026-06-25T10-20-00.csv:3: expected 30 fields, got 2" in caplog.text
    assert "quarantined changes/2026-06-25T10-40-00.csv" in caplog.text
    assert sorted(r[0] for r in _all(pool, "SELECT ticket_id FROM tickets.inc")) == [
        "INC1",
        "INC2",
        "INC3",
    ]
    assert _all(pool, "SELECT source_key, line, ticket_id, raw_text FROM tickets.rejects") == [
        ("changes/2026-06-25T10-20-00.csv", 3, "INC9", "INC9,NEW\r\n")
    ]
    assert keys(s3_settings, "changes/") == []
    assert keys(s3_settings, "quarantine/") == [
        "quarantine/changes/2026-06-25T10-40-00.csv",
        "quarantine/changes/2026-06-25T10-40-00.csv.reason.json",
    ]
    assert one(pool, "SELECT source_max_key FROM tickets.import_meta") == (
        "changes/2026-06-25T11-00-00.csv"
    )
    assert (
        one(
            pool,
            "SELECT count(*) FROM tracksolid.ingestion_log"
            " WHERE NOT ok AND target LIKE 'changes/%%' AND error LIKE 'quarantined:%%'",
        )
        == 1
    )


def test_a_file_that_cannot_be_set_aside_stops_the_drain_before_it(
    s3_settings: Settings, pool: ConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(s3_settings, "2026-06-25T10-20-00.csv", [ticket("INC1")])
    put(s3_settings, "2026-06-25T10-40-00.csv", b"id,status\n1,NEW\n")
    put(s3_settings, "2026-06-25T11-00-00.csv", [ticket("INC3")])

    def refuses(*args: Any, **kwargs: Any) -> str:
        raise feed.FeedArchiveError("cannot quarantine: access denied")

    monkeypatch.setattr(feed, "quarantine", refuses)
    code, line = run(s3_settings, pool, "--from-bucket", "--apply")
    assert code == import_tickets.EXIT_UNREADABLE, line
    assert "unreadable=changes/2026-06-25T10-40-00.csv" in line
    # Neither imported nor quarantined: the watermark stops before it, the newer file waits.
    assert one(pool, "SELECT source_max_key FROM tickets.import_meta") == (
        "changes/2026-06-25T10-20-00.csv"
    )
    assert keys(s3_settings, "changes/") == [
        "changes/2026-06-25T10-40-00.csv",
        "changes/2026-06-25T11-00-00.csv",
    ]
    assert one(pool, "SELECT count(*) FROM tickets.quarantined_files") == 0


def _all(pool: ConnectionPool, query: str) -> list[tuple[Any, ...]]:
    with pool.connection() as conn:
        return conn.execute(query).fetchall()


def test_local_csv_eat_conversion_and_typed_columns(
    settings: Settings, pool: ConnectionPool, tmp_path: Path
) -> None:
    path = tmp_path / "inc.csv"
    path.write_bytes(
        to_csv(
            [
                ticket(
                    "INC1",
                    raw_status="resolved",
                    created_at_service="2026-06-25 00:30:00",
                    closed_at="2026-06-25 02:45:30",
                    mttr="135.4",
                    region="MOMBASA",
                    latitude="-4.05",
                    longitude="39.66",
                ),
                ticket(
                    "INC2",
                    created_at_service="2026-02-30 10:00:00",
                    latitude="0",
                    longitude="0",
                    mttr="2:05",
                ),
            ]
        )
    )
    code, line = run(settings, pool, "--inc-csv", str(path), "--apply")
    assert code == 0, line
    row = one(
        pool,
        "SELECT created_at_service, closed_at, mttr, bucket, normalized_status, region,"
        " is_actionable, geo_source, latitude, longitude, ST_SRID(geom) FROM tickets.inc"
        " WHERE ticket_id = 'INC1'",
    )
    assert row[0] == datetime(2026, 6, 24, 21, 30, tzinfo=UTC)  # 00:30 EAT = 21:30 UTC
    assert row[1] == datetime(2026, 6, 24, 23, 45, 30, tzinfo=UTC)
    assert row[2:8] == (135, "closed", "resolved", "mombasa", False, "feed")
    assert (row[8], row[9], row[10]) == (-4.05, 39.66, 4326)
    row2 = one(
        pool,
        "SELECT created_at_service, mttr, geom IS NULL, raw->>'created_at_service'"
        " FROM tickets.inc WHERE ticket_id = 'INC2'",
    )
    assert row2 == (None, 125, True, "2026-02-30 10:00:00")  # raw keeps what the feed sent
    assert (
        one(pool, "SELECT count(*) FROM tickets.import_meta WHERE source_max_key IS NOT NULL") == 0
    )


def test_open_sla_is_derived_with_first_seen_fallback(
    settings: Settings, pool: ConnectionPool, tmp_path: Path
) -> None:
    eat = timedelta(hours=3)
    now = datetime.now(UTC)
    fmt = "%Y-%m-%d %H:%M:%S"

    def eat_text(moment: datetime) -> str:
        return (moment + eat).strftime(fmt)

    path = tmp_path / "inc.csv"
    path.write_bytes(
        to_csv(
            [
                ticket("OLD", created_at_service=eat_text(now - timedelta(hours=60))),
                ticket("NEW", created_at_service=eat_text(now - timedelta(hours=2))),
                ticket(
                    "FALLBACK",
                    created_at_service="",
                    first_seen_at=eat_text(now - timedelta(hours=50)),
                ),
                ticket("NOSTART", created_at_service="", first_seen_at=""),
                ticket("DONE", raw_status="CLOSED", closed_at=eat_text(now)),
            ]
        )
    )
    assert run(settings, pool, "--inc-csv", str(path), "--apply")[0] == 0
    rows = {
        r[0]: r[1:]
        for r in _all(
            pool,
            "SELECT ticket_id, sla_basis, round(open_hours), derived_sla_status"
            " FROM tickets.inc_open_sla",
        )
    }
    assert set(rows) == {"OLD", "NEW", "FALLBACK", "NOSTART"}
    assert rows["OLD"] == ("created_at_service", 60, "breached")
    assert rows["NEW"] == ("created_at_service", 2, "within")
    assert rows["FALLBACK"] == ("first_seen_at", 50, "breached")
    assert rows["NOSTART"] == (None, None, "unknown")


def test_history_capture_across_two_runs_on_different_days(
    s3_settings: Settings, pool: ConnectionPool
) -> None:
    day1 = datetime(2026, 6, 25, 9, 0, tzinfo=UTC)  # 12:00 EAT
    put(
        s3_settings,
        "2026-06-25T12-00-00.csv",
        [
            ticket("INC1", created_at_service="2026-06-25 08:00:00"),
            ticket("INC2", created_at_service="2026-06-24 08:00:00", cluster="Nyali"),
            ticket("INC3", raw_status="CLOSED", closed_at="2026-06-25 07:00:00"),
        ],
    )
    assert run(s3_settings, pool, "--from-bucket", "--apply", history_at=day1)[0] == 0
    put(
        s3_settings,
        "2026-06-26T12-00-00.csv",
        [
            ticket(
                "INC1",
                raw_status="RESOLVED",
                closed_at="2026-06-26 10:00:00",
                source_updated_at="2026-06-26 10:00:00",
            ),
            ticket("INC4", created_at_service="2026-06-26 09:00:00"),
        ],
    )
    day2 = day1 + timedelta(days=1)
    assert run(s3_settings, pool, "--from-bucket", "--apply", history_at=day2)[0] == 0
    # A third run the same day adds nothing new and rewrites that day's snapshot only.
    assert run(s3_settings, pool, "--from-bucket", "--apply", history_at=day2)[0] == 0

    closures = _all(pool, "SELECT ticket_id, observed_at FROM tickets.closure_events ORDER BY 1")
    assert closures == [("INC1", day2), ("INC3", day1)]
    snap = {
        (str(r[0]), r[1]): r[2:]
        for r in _all(
            pool,
            "SELECT snapshot_date, cluster, open_count, breached_count, created_count, closed_count"
            " FROM tickets.inc_daily_snapshot",
        )
    }
    assert snap[("2026-06-25", "Kilimani")] == (1, 0, 1, 1)
    assert snap[("2026-06-25", "Nyali")] == (1, 0, 0, 0)
    assert snap[("2026-06-26", "Kilimani")] == (1, 0, 1, 1)
    assert snap[("2026-06-26", "Nyali")] == (1, 1, 0, 0)  # 52 h open at day 2: breached
    with pool.connection() as conn, pytest.raises(Exception, match="append-only"):
        conn.execute("DELETE FROM tickets.closure_events")


def test_second_importer_is_locked_out(s3_settings: Settings, pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('tickets.import_tickets'))")
        code, line = run(s3_settings, pool, "--from-bucket", "--apply")
        conn.execute("SELECT pg_advisory_unlock(hashtext('tickets.import_tickets'))")
    assert code == 0 and "another import holds the lock" in line


def test_cli_usage_errors(settings: Settings, pool: ConnectionPool) -> None:
    with pytest.raises(SystemExit) as exc:
        run(settings, pool)
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        run(settings, pool, "--reseed", "--apply")
