"""dashboard.params: table-driven tests of the pure request parsing (no database)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from dashboard.params import (
    EAT,
    MAX_TRIP_FEATURES,
    ParamError,
    merge_fields,
    parse_body,
    parse_day_range,
    parse_hours,
    parse_trip_query,
    parse_vehicles,
    parse_when,
)


@pytest.mark.parametrize(
    ("value", "is_end", "expected"),
    [
        (None, False, None),
        ("  ", False, None),
        ("2026-11-20", False, datetime(2026, 11, 20, tzinfo=EAT)),
        ("2026-11-20", True, datetime(2026, 11, 21, tzinfo=EAT)),  # the day is included
        ("2026-11-20T08:00:00", False, datetime(2026, 11, 20, 8, tzinfo=EAT)),
        ("2026-11-20T08:00:00Z", False, datetime(2026, 11, 20, 8, tzinfo=UTC)),
        ("2026-11-20 08:00:00+03:00", False, datetime(2026, 11, 20, 5, tzinfo=UTC)),
    ],
)
def test_parse_when(value: str | None, is_end: bool, expected: datetime | None) -> None:
    assert parse_when("start", value, is_end=is_end) == expected


@pytest.mark.parametrize("value", ["2026-13-01", "yesterday", "20/11/2026", "2026-11-20T25:00"])
def test_parse_when_rejects_malformed(value: str) -> None:
    with pytest.raises(ParamError, match=r"^start: .* (is not a valid date|is not a date)"):
        parse_when("start", value)


@pytest.mark.parametrize(
    ("value", "expected"), [(None, 24), ("", 24), ("1", 1), ("168", 168), (" 48 ", 48)]
)
def test_parse_hours(value: str | None, expected: int) -> None:
    assert parse_hours(value) == expected


@pytest.mark.parametrize("value", ["0", "169", "-3", "abc", "1.5"])
def test_parse_hours_rejects(value: str) -> None:
    with pytest.raises(ParamError, match="hours must be"):
        parse_hours(value)


def test_form_and_json_bodies_decode_to_the_same_fields() -> None:
    form = parse_body(
        "application/x-www-form-urlencoded; charset=UTF-8",
        b"cost_centre=Nairobi-North&vehicles=KCA+542Q&vehicles=KBZ+101A&driver=",
    )
    as_json = parse_body(
        "application/json",
        b'{"cost_centre": "Nairobi-North", "vehicles": ["KCA 542Q", "KBZ 101A"], "driver": ""}',
    )
    assert (
        form
        == as_json
        == {
            "cost_centre": ["Nairobi-North"],
            "vehicles": ["KCA 542Q", "KBZ 101A"],
            "driver": [""],
        }
    )
    # No Content-Type: sniffed.
    assert parse_body(None, b'{"city": "Mombasa"}') == {"city": ["Mombasa"]}
    assert parse_body(None, b"city=Mombasa") == {"city": ["Mombasa"]}
    assert parse_body("application/json", b"") == {}
    assert parse_body("application/json", b'{"limit": 5, "x": null}') == {"limit": ["5"]}


@pytest.mark.parametrize(
    ("ctype", "body", "message"),
    [
        ("application/json", b"{not json", "not valid JSON"),
        ("application/json", b"[1, 2]", "must be an object"),
        ("application/xml", b"<a/>", "unsupported Content-Type"),
    ],
)
def test_bad_bodies(ctype: str, body: bytes, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        parse_body(ctype, body)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        ([""], None),
        (["all"], None),
        (["KCA 542Q"], ["KCA 542Q"]),
        (["KCA 542Q, KBZ 101A"], ["KCA 542Q", "KBZ 101A"]),
        (['["KCA 542Q", "KBZ 101A"]'], ["KCA 542Q", "KBZ 101A"]),
        (["KCA 542Q", "KCA 542Q"], ["KCA 542Q"]),
    ],
)
def test_parse_vehicles(values: list[str], expected: list[str] | None) -> None:
    assert parse_vehicles(values) == expected


def test_trip_query_aliases_brackets_and_precedence() -> None:
    fields = merge_fields(
        [("cost_centre", "from-query"), ("city", "Nairobi")],
        [
            ("vehicles[]", "KCA 542Q"),
            ("vehicles[]", "KBZ 101A"),
            ("cost_centre", "Kampala"),
            ("start_date", "2026-11-01"),
            ("end_date", "2026-11-07"),
            ("driver", "all"),
        ],
    )
    query = parse_trip_query(fields)
    assert query.vehicles == ["KCA 542Q", "KBZ 101A"]
    assert query.cost_centre == "Kampala"  # the body wins over the query string
    assert query.city == "Nairobi"
    assert query.driver is None
    assert query.start == datetime(2026, 11, 1, tzinfo=EAT)
    assert query.end == datetime(2026, 11, 8, tzinfo=EAT)
    assert query.limit == MAX_TRIP_FEATURES


def test_trip_query_rejects_end_before_start_and_caps_limit() -> None:
    with pytest.raises(ParamError, match="is before start"):
        parse_trip_query({"start": ["2026-11-07"], "end": ["2026-11-01"]})
    with pytest.raises(ParamError, match="limit must be a whole number"):
        parse_trip_query({"limit": ["many"]})
    assert parse_trip_query({"limit": ["10000000"]}).limit == MAX_TRIP_FEATURES
    assert parse_trip_query({"limit": ["3"]}).limit == 3


def test_day_range_defaults_and_errors() -> None:
    first, last = parse_day_range(None, "2026-11-20")
    assert (first, last) == (date(2026, 11, 14), date(2026, 11, 20))
    with pytest.raises(ParamError, match="is before start"):
        parse_day_range("2026-11-20", "2026-11-01")
    with pytest.raises(ParamError, match="limited to 366 days"):
        parse_day_range("2024-01-01", "2026-01-01")
    with pytest.raises(ParamError, match=r"end: '2026-02-30' is not a valid date"):
        parse_day_range(None, "2026-02-30")
    today = datetime.now(EAT).date()
    assert parse_day_range(None, None) == (today - timedelta(days=6), today)
