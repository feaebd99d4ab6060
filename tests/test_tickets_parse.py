"""Pure parts of the tickets importer: CSV cleaning, place-name cleaning, distance."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tickets_import.geocode import clean_place_name, haversine_km
from tickets_import.parse import (
    Bounds,
    RowIssue,
    UnreadableFileError,
    parse_csv_bytes,
    parse_csv_text,
    parse_eat,
    redact_secrets,
    reparse_record,
)
from tickets_import.sample import ticket, to_csv


def test_cleaning_drops_alarm_sentinel_and_bookkeeping_columns() -> None:
    data = (
        to_csv(
            [
                ticket("INC1", region="Nairobi", raw_status="in progress"),
                ticket("INC2", is_alarm="TRUE"),
                ticket("INC3", is_alarm="1"),
            ]
        )
        + b'"EXPORT STOPPED: row limit reached",,,\r\n'
    )
    parsed = parse_csv_bytes(data, "changes/a.csv")
    assert [r.ticket_id for r in parsed.rows] == ["INC1"]
    assert parsed.records == 4
    assert parsed.dropped_alarm == 2
    assert parsed.dropped_sentinel == 1
    assert parsed.errors == []
    raw = parsed.rows[0].raw
    assert raw["region"] == "nairobi"
    assert raw["raw_status"] == "IN PROGRESS"
    for dropped in ("week_start", "week_end", "source_s3_bucket", "source_s3_key",
                    "source_snapshot_id", "department", "source_type"):  # fmt: skip
        assert dropped not in raw
    assert raw["service_type"] == "FTTH"  # constant, but kept in raw (seed 003)
    assert raw["scheduled_at"] is None  # empty → null


def test_malformed_rows_are_reported_with_line_and_skipped() -> None:
    text = (
        "ticket_id,raw_status,region\r\n"
        "INC1,NEW,Nairobi\r\n"
        "INC2,NEW\r\n"  # too few fields
        ",NEW,Nairobi\r\n"  # no ticket id
        'INC3,"NEW"x,Nairobi\r\n'  # broken quoting
        "INC 4,NEW,Nairobi\r\n"  # implausible id
        "INC5,CLOSED,Mombasa\r\n"
    )
    parsed = parse_csv_text(text, "f.csv")
    assert [r.ticket_id for r in parsed.rows] == ["INC1", "INC5"]
    assert [(e.line, e.reason.split(" ")[0]) for e in parsed.errors] == [
        (3, "expected"),
        (4, "empty"),
        (5, "malformed"),
        (6, "implausible"),
    ]
    assert str(parsed.errors[0]) == "f.csv:3: expected 3 fields, got 2"


def test_later_duplicate_wins_and_multiline_fields_keep_line_numbers() -> None:
    text = 'ticket_id,raw_status,summary\nINC1,NEW,"two\nlines"\nINC2,NEW,x\nINC1,CLOSED,again\n'
    parsed = parse_csv_text(text, "f.csv")
    assert parsed.duplicates == 1
    assert [(r.ticket_id, r.raw["raw_status"], r.line) for r in parsed.rows] == [
        ("INC2", "NEW", 4),
        ("INC1", "CLOSED", 5),
    ]


def test_bad_times_are_kept_as_warnings() -> None:
    parsed = parse_csv_text(
        "ticket_id,created_at_service,closed_at,latitude\n"
        "INC1,2026-02-30 10:00:00,25/06/2026,abc\n",
        "f.csv",
    )
    assert len(parsed.rows) == 1
    assert len(parsed.warnings) == 3
    assert "created_at_service" in parsed.warnings[0].reason


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"id,status\n1,NEW\n", "no ticket_id"),
        (b"ticket_id,a,a\n", "duplicate header"),
        (b"ticket_id\n\xff\xfe\x00garbage\n", "not UTF-8"),
        (b"ticket_id,na\x00me\nINC1,x\n", "NUL byte"),
        (("ticket_id" + ",c" * 300).encode() + b"\n", "301 columns"),
    ],
)
def test_unreadable_files(data: bytes, message: str) -> None:
    with pytest.raises(UnreadableFileError, match=message):
        parse_csv_bytes(data, "f.csv")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("INC2,NE\x00W,Nairobi", "raw_status: contains a NUL byte"),
        ("INC2,\ud800,Nairobi", "raw_status: contains invalid Unicode"),
        ("INC2,NEW," + "k" * 2001, "region: value is 2,001 characters (bound 2,000)"),
        ('INC2,NEW,"' + "\u00e9" * 33000 + '"', "row is 66,012 bytes (bound 65,536)"),
        ("I" * 65 + ",NEW,Nairobi", "implausible ticket_id"),
    ],
)
def test_bounds_and_unstorable_values_reject_only_their_row(row: str, reason: str) -> None:
    text = f"ticket_id,raw_status,region\nINC1,NEW,Nairobi\n{row}\nINC3,NEW,Kampala\n"
    parsed = parse_csv_text(text, "f.csv")
    assert [r.ticket_id for r in parsed.rows] == ["INC1", "INC3"]
    [issue] = parsed.errors
    assert issue.line == 3 and issue.reason.startswith(reason)
    assert issue.raw == row + "\n"  # the raw record, for the dead letter


def test_bounds_are_configurable_and_a_dead_letter_reparses() -> None:
    text = "ticket_id,summary\nINC1," + "s" * 2500 + "\n"
    assert parse_csv_text(text, "f.csv").errors
    relaxed = Bounds(field_chars=3000)
    assert [r.ticket_id for r in parse_csv_text(text, "f.csv", bounds=relaxed).rows] == ["INC1"]
    raw = ("INC1," + "s" * 2500 + "\r\n").encode()
    still = reparse_record(["ticket_id", "summary"], raw, "f.csv", 2)
    assert isinstance(still, RowIssue) and still.line == 2 and "bound 2,000" in still.reason
    outcome = reparse_record(["ticket_id", "summary"], raw, "f.csv", 2, bounds=relaxed)
    assert isinstance(outcome, tuple) and outcome[0].raw["summary"] == "s" * 2500


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("call 0722, password=hunter2 ok", "call 0722, password=*** ok"),
        ("Pwd: s3cret, then", "Pwd: ***, then"),
        ("url https://x.io/a?token=abc&b=1", "url https://x.io/a?token=***&b=1"),
        ("Authorization: Bearer abcdefghijkl", "Authorization: Bearer ***"),
        ("key AKIAABCDEFGHIJKLMNOP here", "key *** here"),
        ("ftp://user:pw@host/x", "ftp://user:***@host/x"),
        ("Kilimani, Argwings Kodhek Rd", "Kilimani, Argwings Kodhek Rd"),
    ],
)
def test_secret_looking_values_are_redacted(text: str, redacted: str) -> None:
    assert redact_secrets(text) == redacted


def test_bom_is_ignored() -> None:
    parsed = parse_csv_bytes(b"\xef\xbb\xbfticket_id,raw_status\nINC1,new\n", "f.csv")
    assert parsed.rows[0].raw == {"ticket_id": "INC1", "raw_status": "NEW"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-06-25 10:20:00", datetime(2026, 6, 25, 7, 20, tzinfo=UTC)),
        ("2026-06-25T00:30", datetime(2026, 6, 24, 21, 30, tzinfo=UTC)),
        ("2026-06-25", datetime(2026, 6, 24, 21, 0, tzinfo=UTC)),
        ("2026-02-30 10:00:00", None),
        ("25/06/2026 10:20", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_eat(value: str | None, expected: datetime | None) -> None:
    assert parse_eat(value) == expected


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("FDH-023 Argwings Kodhek Rd", "Argwings Kodhek Rd"),
        ("Westlands (NRB_WL_045)", "Westlands"),
        ("OLT12 Ngong Road", "Ngong Road"),
        ("NRB-KLM-01 / Kilimani", "Kilimani"),
        ("Yaya Centre ODB 7", "Yaya Centre"),
        ("Kilimani", "Kilimani"),
        ("FDH-001", ""),
    ],
)
def test_clean_place_name_strips_network_codes(name: str, cleaned: str) -> None:
    assert clean_place_name(name) == cleaned


def test_haversine() -> None:
    nairobi, mombasa = (-1.2864, 36.8172), (-4.0435, 39.6682)
    assert haversine_km(*nairobi, *nairobi) == 0
    assert 435 < haversine_km(*nairobi, *mombasa) < 445
