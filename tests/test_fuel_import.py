"""import_fuel: parsing, normalisers, snapshot/changes against moto S3 + real PostgreSQL."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

import import_fuel
from import_fuel import BadRecord, FuelRecord, parse_file, parse_number, parse_record
from ts_shared import Settings, make_s3_client

SNAPSHOT_KEY = "fuel_records/latest.json"


def rec(rid: Any, car: str = "KCA 542Q", litres: Any = "40", **extra: Any) -> dict[str, Any]:
    """A source record as the n8n export writes it."""
    base: dict[str, Any] = {
        "id": rid,
        "car": car,
        "litres": litres,
        "amount": "7,000",
        "odometer": "120,000",
        "fuel_type": "Diesel",
        "driver": "john  kamau",
        "department": "Field Ops",
        "fill_time": "2026-06-10 08:30:00",
        "created_at": "2026-06-10 08:31:00",
        "updated_at": "2026-06-10 08:31:00",
        "deleted_at": None,
    }
    base.update(extra)
    return base


def put(settings: Settings, key: str, body: Any) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    make_s3_client(settings).put_object(Bucket=settings.fuel_bucket, Key=key, Body=data)


def snapshot(records: list[Any], generated_at: str = "2026-06-10T12:00:00+03:00") -> dict[str, Any]:
    return {"metadata": {"generated_at": generated_at, "count": len(records)}, "records": records}


def rows(pool: ConnectionPool, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with pool.connection() as conn:
        return conn.execute(query, params).fetchall()


def one(pool: ConnectionPool, query: str, *params: Any) -> Any:
    result = rows(pool, query, *params)
    return result[0][0] if result else None


def state(pool: ConnectionPool) -> dict[str, tuple[Any, ...]]:
    return {
        r[0]: r[1:]
        for r in rows(
            pool,
            "SELECT id, litres, deleted_at IS NOT NULL, missing_since IS NOT NULL,"
            " plate_norm, fuel_type, department FROM fuel.records",
        )
    }


# ── pure parsing ────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ("not an object", "record is not a JSON object (str)"),
        ({"car": "KCA 542Q", "litres": 3}, "missing id"),
        ({"id": {"x": 1}, "litres": 3}, "id is not an int or string"),
        (rec(1, car="  "), "car (plate) missing"),
        (rec(1, litres=None), "litres missing"),
        (rec(1, litres="forty"), "litres not a number: 'forty'"),
        (rec(1, litres="-5"), "litres out of range (0, 2000]: -5"),
        (rec(1, litres=6500), "litres out of range (0, 2000]: 6500"),
        (rec(1, fill_time=None, created_at=None), "fill time missing"),
        (rec(1, fill_time="yesterday"), "fill time unparsable: 'yesterday'"),
        (rec(1, updated_at="soon"), "updated_at unparsable: 'soon'"),
        (rec(1, deleted_at="??"), "deleted_at unparsable: '??'"),
        (rec(1, fill_time=123, created_at=None), "fill time unparsable: 123"),  # not for SQL
        (rec(1, litres=float("nan")), "litres: not a finite number (nan)"),
        (rec(1, car="KCA\x00542Q"), "car: contains a NUL character"),
        (rec(1, updated_at="\ud800"), "updated_at: contains a lone surrogate (not valid Unicode)"),
        (rec(1, driver="d" * 2001), "driver: text longer than 2000 characters"),
    ],
)
def test_parse_record_rejects_with_reason(item: Any, reason: str) -> None:
    parsed = parse_record(item, 7)
    assert isinstance(parsed, BadRecord)
    assert parsed.reason == reason and parsed.index == 7


@pytest.mark.parametrize(
    ("item", "rid", "deletion"),
    [
        (rec(12), "12", False),
        (rec(12.0, car="kca-542q", litres="45.5 L"), "12", False),
        (rec(" A-7 ", litres="KES 40"), "A-7", False),
        (rec(3, fill_time=None), "3", False),  # falls back to created_at
        ({"id": 5, "op": "delete"}, "5", True),  # tombstone: only the id is needed
        ({"id": 6, "deleted_at": "2026-06-11 10:00:00"}, "6", True),
    ],
)
def test_parse_record_accepts_messy_values(item: Any, rid: str, deletion: bool) -> None:
    parsed = parse_record(item, 0)
    assert isinstance(parsed, FuelRecord)
    assert (parsed.id, parsed.deletion) == (rid, deletion)


def test_parse_file_envelopes_duplicates_and_whole_file_errors() -> None:
    newer = rec(1, litres="50", updated_at="2026-06-10 10:00:00")
    older = rec(1, litres="40", updated_at="2026-06-10 09:00:00")
    parsed = parse_file(json.dumps(snapshot([newer, older, "junk"])).encode(), "k")
    assert [r.raw["litres"] for r in parsed.records] == ["50"]
    assert [(b.index, b.reason) for b in parsed.bad] == [(2, "record is not a JSON object (str)")]
    assert parsed.generated_at is not None and parsed.total == 3
    assert len(parse_file(json.dumps([rec(1)]).encode(), "k").records) == 1
    for body in (b"{not json", b'{"metadata": {}}', b"42"):
        with pytest.raises(import_fuel.FileParseError):
            parse_file(body, "k")


NUMBERS = [
    "5,000",
    "KES 4500",
    "Ksh.2,000.50",
    "45.5 L",
    "12 ltrs",
    "120,345 km",
    "abc",
    "-3",
    "1e3",
    "",
    "  7 ",
    "4.",
    "0.5",
]


def test_python_and_sql_number_and_time_rules_agree(pool: ConnectionPool) -> None:
    sql_nums = dict(rows(pool, "SELECT x, fuel.to_num(x) FROM unnest(%s::text[]) AS x", NUMBERS))
    assert {n: parse_number(n) for n in NUMBERS} == sql_nums
    times = [
        "2026-06-10 08:30:00",
        "2026-06-10T08:30:00Z",
        "2026-06-10T08:30:00+03:00",
        "2026-06-10",
        "1718000000",
        "2026/06/10 08:30:00",
        "garbage",
    ]
    sql_times = dict(rows(pool, "SELECT x, fuel.to_ts(x) FROM unnest(%s::text[]) AS x", times))
    assert {t: import_fuel.parse_time(t) for t in times} == sql_times


# ── normalisers ─────────────────────────────────────────────────────────────


def test_normalisers_and_operator_extensible_department_map(pool: ConnectionPool) -> None:
    plates = ["KCA 542Q", "kca-542q", " KCA542Q ", "KCA 542Q (Probox)", "UBA 123X", ""]
    got = rows(pool, "SELECT fuel.norm_plate(x) FROM unnest(%s::text[]) AS x", plates)
    assert [r[0] for r in got] == ["KCA542Q"] * 4 + ["UBA123X", None]
    fuels = ["DISIEL", "deisel", "Diesel ", "AGO", "petrol", "Petro", "PMS", "Super", "kerosene"]
    got = rows(pool, "SELECT fuel.canon_fuel_type(x) FROM unnest(%s::text[]) AS x", fuels)
    assert [r[0] for r in got] == ["DIESEL"] * 4 + ["PETROL"] * 4 + ["KEROSENE"]
    depts = [
        "field ops",
        "FIELD-OPS",
        "Feild Operations",
        "noc",
        "Maintainance",
        "admin",
        "  sales &  marketing",
        "logistcs",
        "Tech  support",
    ]
    got = rows(pool, "SELECT fuel.canon_department(x) FROM unnest(%s::text[]) AS x", depts)
    assert [r[0] for r in got] == [
        "Field Operations",
        "Field Operations",
        "Field Operations",
        "Network Operations",
        "Maintenance",
        "Administration",
        "Sales",
        "Logistics",
        "Tech Support",
    ]
    assert one(pool, "SELECT count(*) >= 30 FROM fuel.department_map")
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO fuel.records (id, raw) VALUES ('1', %s)",
            (json.dumps(rec(1, department="TECH-SUPPORT ")),),
        )
    assert one(pool, "SELECT department_raw FROM fuel.v_unmapped_departments") == "TECH-SUPPORT"
    with pool.connection() as conn:  # the operator adds one spelling: records follow
        conn.execute(
            "INSERT INTO fuel.department_map (alias, department)"
            " VALUES ('Tech Support', 'Network Operations')"
        )
    assert rows(pool, "SELECT department, department_mapped, parse_issues FROM fuel.records") == [
        ("Network Operations", True, [])
    ]


def test_trigger_derives_typed_columns_from_raw(pool: ConnectionPool) -> None:
    raw = rec(
        9,
        car="kca 542 q",
        litres="45.5 L",
        amount="KES 8,190",
        odometer="abc",
        fuel_type="DISIEL",
        fill_time="2026-06-10 08:30:00",
    )
    with pool.connection() as conn:
        conn.execute("INSERT INTO fuel.records (id, raw) VALUES ('9', %s)", (json.dumps(raw),))
    got = rows(
        pool,
        "SELECT plate_raw, plate_norm, litres, amount_kes, price_per_litre_kes,"
        " odometer_km, fuel_type, driver, department, filled_at::text,"
        " parse_issues FROM fuel.records",
    )
    assert got == [
        (
            "kca 542 q",
            "KCA542Q",
            Decimal("45.50"),
            Decimal("8190.00"),
            Decimal("180.00"),
            None,
            "DIESEL",
            "John Kamau",
            "Field Operations",
            "2026-06-10 05:30:00+00",
            ["odometer_unparsable"],
        )
    ]


# ── the importer against S3 + PostgreSQL ────────────────────────────────────


def test_snapshot_dry_run_then_apply_then_rerun_is_noop(
    s3_settings: Settings, pool: ConnectionPool, caplog: pytest.LogCaptureFixture
) -> None:
    records = [
        rec(1, car="KCA 542Q", fuel_type="DISIEL", department="feild operations"),
        rec(2, car="kca542q", fuel_type="petrol", department="NOC"),
        rec(3, car="KBZ-001A", fuel_type="AGO", department="Maintainance"),
        {"id": 4, "car": "KDA 100B", "litres": "lots", "fill_time": "2026-06-10 09:00"},
        ["not", "a", "record"],
        rec(5, car="UBA 123X", litres="30", fuel_type="Super", department="admin"),
    ]
    put(s3_settings, SNAPSHOT_KEY, snapshot(records))
    caplog.set_level(logging.INFO, logger="import_fuel")

    assert import_fuel.main(["--snapshot"], settings=s3_settings) == 0  # dry run
    assert "dry run, nothing written" in caplog.text
    assert one(pool, "SELECT count(*) FROM fuel.records") == 0
    assert one(pool, "SELECT count(*) FROM fuel.rejects") == 0
    assert one(pool, "SELECT count(*) FROM fuel.ingest_state") == 0
    assert one(pool, "SELECT count(*) FROM tracksolid.ingestion_log") == 0

    assert import_fuel.main(["--snapshot", "--apply"], settings=s3_settings) == 0
    assert state(pool) == {
        "1": (Decimal("40.00"), False, False, "KCA542Q", "DIESEL", "Field Operations"),
        "2": (Decimal("40.00"), False, False, "KCA542Q", "PETROL", "Network Operations"),
        "3": (Decimal("40.00"), False, False, "KBZ001A", "DIESEL", "Maintenance"),
        "5": (Decimal("30.00"), False, False, "UBA123X", "PETROL", "Administration"),
    }
    assert rows(pool, "SELECT record_index, record_id, reason FROM fuel.rejects ORDER BY 1") == [
        (3, "4", "litres not a number: 'lots'"),
        (4, None, "record is not a JSON object (list)"),
    ]
    assert "record #3 id=4 skipped: litres not a number" in caplog.text
    log_row = rows(
        pool,
        "SELECT ok, rows, detail FROM tracksolid.ingestion_log"
        " WHERE source = 'import' AND method = 'import_fuel'",
    )
    assert len(log_row) == 1 and log_row[0][:2] == (True, 4)
    assert log_row[0][2]["bad_total"] == 2

    stamp = one(pool, "SELECT max(updated_at) FROM fuel.records")
    report = import_fuel.run(
        import_fuel.build_parser().parse_args(["--snapshot", "--apply"]), s3_settings, pool=pool
    )
    assert (report.total("inserted"), report.total("updated"), report.total("unchanged")) == (
        0,
        0,
        4,
    )
    assert one(pool, "SELECT max(updated_at) FROM fuel.records") == stamp


def test_changes_watermark_soft_delete_undelete_and_out_of_order(
    s3_settings: Settings, pool: ConnectionPool
) -> None:
    put(s3_settings, SNAPSHOT_KEY, snapshot([rec(1), rec(2), rec(3)]))
    assert import_fuel.main(["--snapshot", "--apply"], settings=s3_settings) == 0
    ch = "fuel_records/changes/"
    put(
        s3_settings,
        ch + "2026-06-10T13:00:00Z.json",
        {
            "records": [
                rec(2, litres="55", updated_at="2026-06-10 15:00:00"),  # edit
                {"id": 3, "op": "delete", "updated_at": "2026-06-10 15:05:00"},  # tombstone
                rec(4, car="KDD 444D", updated_at="2026-06-10 15:10:00"),  # new
            ]
        },
    )
    put(
        s3_settings,
        ch + "2026-06-10T14:00:00Z.json",
        {
            "records": [
                rec(
                    1, deleted_at="2026-06-10 16:00:00", updated_at="2026-06-10 16:00:00"
                ),  # soft delete
                rec(2, litres="11", updated_at="2026-06-10 14:00:00"),  # older than the 15:00 edit
            ]
        },
    )
    args = ["--changes", "--apply"]
    assert import_fuel.main(args, settings=s3_settings) == 0
    got = state(pool)
    assert got["1"][1] is True and got["3"][1] is True  # soft-deleted, kept
    assert got["2"][0] == Decimal("55.00")  # the stale delta did not win
    assert got["4"][:2] == (Decimal("40.00"), False)
    assert one(pool, "SELECT raw->>'amount' FROM fuel.records WHERE id = '3'") == "7,000"
    assert one(pool, "SELECT watermark_key FROM fuel.ingest_state WHERE feed = 'changes'") == (
        ch + "2026-06-10T14:00:00Z.json"
    )
    assert {r[0] for r in rows(pool, "SELECT fill_id FROM reporting.v_fuel_fills")} == {"2", "4"}

    # Rerun: nothing new, nothing read.
    report = import_fuel.run(import_fuel.build_parser().parse_args(args), s3_settings, pool=pool)
    assert report.files == []

    # A late file (key below the watermark) undeletes 3 and carries a stale edit of 2.
    put(
        s3_settings,
        ch + "2026-06-10T12:30:00Z.json",
        {
            "records": [
                rec(3, litres="33", updated_at="2026-06-10 17:00:00"),
                rec(2, litres="99", updated_at="2026-06-10 12:00:00"),
            ]
        },
    )
    report = import_fuel.run(import_fuel.build_parser().parse_args(args), s3_settings, pool=pool)
    assert [f.key for f in report.files] == [ch + "2026-06-10T12:30:00Z.json"]
    assert (report.total("updated"), report.total("stale")) == (1, 1)
    got = state(pool)
    assert got["3"][:2] == (Decimal("33.00"), False) and got["2"][0] == Decimal("55.00")
    assert one(pool, "SELECT watermark_key FROM fuel.ingest_state WHERE feed = 'changes'") == (
        ch + "2026-06-10T14:00:00Z.json"
    )


def test_unreadable_file_is_quarantined_and_watermark_moves_on(
    s3_settings: Settings, pool: ConnectionPool, caplog: pytest.LogCaptureFixture
) -> None:
    ch = "fuel_records/changes/"
    put(s3_settings, ch + "2026-06-11T01:00:00Z.json", [rec(1)])
    put(s3_settings, ch + "2026-06-11T02:00:00Z.json", b'{"records": [ {"id": 2, ')
    put(s3_settings, ch + "2026-06-11T03:00:00Z.json", [rec(3), {"id": None}])
    assert import_fuel.main(["--changes", "--apply"], settings=s3_settings) == 0
    assert "2026-06-11T02:00:00Z.json" in caplog.text and "not valid JSON" in caplog.text
    assert "quarantined=1 dead_letters=1" in caplog.text
    assert set(state(pool)) == {"1", "3"}
    wm = "SELECT watermark_key FROM fuel.ingest_state WHERE feed = 'changes'"
    assert one(pool, wm) == ch + "2026-06-11T03:00:00Z.json"  # quarantined: the feed moves
    assert one(pool, "SELECT quarantine_key FROM fuel.quarantined_files") == (
        "quarantine/" + ch + "2026-06-11T02:00:00Z.json"
    )
    detail = one(pool, "SELECT detail FROM tracksolid.ingestion_log ORDER BY log_id DESC LIMIT 1")
    assert list(detail["quarantined"]) == [ch + "2026-06-11T02:00:00Z.json"]

    # Fixed upstream and put back at its key (below the watermark, inside the look-back).
    put(s3_settings, ch + "2026-06-11T02:00:00Z.json", [rec(2)])
    assert import_fuel.main(["--changes", "--apply"], settings=s3_settings) == 0
    assert set(state(pool)) == {"1", "2", "3"}
    assert one(pool, wm) == ch + "2026-06-11T03:00:00Z.json"
    assert one(pool, "SELECT count(*) FROM fuel.quarantined_files") == 0


def test_snapshot_reconcile_hides_vanished_rows_and_missing_snapshot_fails(
    s3_settings: Settings, pool: ConnectionPool
) -> None:
    assert import_fuel.main(["--snapshot", "--apply"], settings=s3_settings) == 1  # no file
    assert rows(pool, "SELECT ok, target FROM tracksolid.ingestion_log") == [(False, "snapshot")]
    put(s3_settings, SNAPSHOT_KEY, snapshot([rec(i) for i in range(1, 6)]))
    assert import_fuel.main(["--snapshot", "--apply"], settings=s3_settings) == 0
    # Record 5 vanished from the source; record 6 arrived after this snapshot was exported.
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO fuel.records (id, raw) VALUES ('6', %s)",
            (json.dumps(rec(6, updated_at="2026-06-10 13:00:00")),),
        )
    put(s3_settings, SNAPSHOT_KEY, snapshot([rec(i) for i in range(1, 5)]))
    assert import_fuel.main(["--snapshot", "--apply"], settings=s3_settings) == 0
    assert {k for k, v in state(pool).items() if v[2]} == {"5"}
    assert one(pool, "SELECT count(*) FROM reporting.v_fuel_fills") == 5
    put(s3_settings, SNAPSHOT_KEY, snapshot([rec(i) for i in range(1, 6)]))  # back again
    assert import_fuel.main(["--snapshot", "--apply"], settings=s3_settings) == 0
    assert not any(v[2] for v in state(pool).values())


def test_file_mode_dry_run_and_apply(
    settings: Settings, pool: ConnectionPool, tmp_path: Path
) -> None:
    path = tmp_path / "fills.json"
    path.write_text(json.dumps([rec(1), rec(2, litres="x")]))
    assert import_fuel.main(["--file", str(path)], settings=settings) == 0
    assert one(pool, "SELECT count(*) FROM fuel.records") == 0
    assert import_fuel.main(["--file", str(path), "--apply"], settings=settings) == 0
    assert set(state(pool)) == {"1"}
    assert import_fuel.main(["--file", str(tmp_path / "nope.json")], settings=settings) == 1
    with pytest.raises(SystemExit):
        import_fuel.main(["--snapshot", "--changes"], settings=settings)


def test_readonly_role_reads_fuel_views_only(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        conn.execute("INSERT INTO fuel.records (id, raw) VALUES ('1', %s)", (json.dumps(rec(1)),))
        conn.execute(
            "INSERT INTO tracksolid.devices (imei, vehicle_number, cost_centre)"
            " VALUES ('860000000000001', 'KCA 542Q', 'CC-NBO')"
        )
        conn.commit()
        conn.execute("SET ROLE dashboard_ro")
        for view in ("v_fuel_fills", "v_fuel_efficiency", "v_fuel_daily"):
            conn.execute(f"SELECT * FROM reporting.{view}").fetchall()
        assert conn.execute("SELECT cost_centre FROM reporting.v_fuel_fills").fetchone() == (
            "CC-NBO",
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM fuel.records")
