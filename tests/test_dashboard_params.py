"""dashboard.params: table-driven tests of the pure request parsing (no database)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from dashboard.params import (
    EAT,
    MAX_BODY_BYTES,
    MAX_TRIP_FEATURES,
    BodyTooLargeError,
    ParamError,
    check_json_depth,
    filter_value,
    merge_fields,
    parse_acc_status,
    parse_body,
    parse_day_range,
    parse_fuel_query,
    parse_hours,
    parse_inc_query,
    parse_int,
    parse_trip_query,
    parse_vehicles,
    parse_when,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=EAT)


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


@pytest.mark.parametrize(
    "value", ["0", "169", "-3", "abc", "1.5", "9" * 400, "1e999", "NaN", "inf", "٣", "1\x00"]
)
def test_parse_hours_rejects(value: str) -> None:
    with pytest.raises(ParamError, match=r"^hours (must be|contains a control character)"):
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
    assert parse_trip_query({"limit": ["9" * 400]}).limit == MAX_TRIP_FEATURES
    assert parse_trip_query({"limit": ["3"]}).limit == 3
    with pytest.raises(ParamError, match=r"^limit must be 0 or more \(got -1\)$"):
        parse_trip_query({"limit": ["-1"]})


def test_day_range_defaults_and_errors() -> None:
    first, last = parse_day_range(None, "2026-11-20")
    assert (first, last) == (date(2026, 11, 14), date(2026, 11, 20))
    with pytest.raises(ParamError, match="is before start"):
        parse_day_range("2026-11-20", "2026-11-01")
    with pytest.raises(ParamError, match=r"limited to 366 days \(got 732 days\)"):
        parse_day_range("2024-01-01", "2026-01-01")
    assert parse_day_range("2025-01-01", "2026-01-01") == (date(2025, 1, 1), date(2026, 1, 1))
    with pytest.raises(ParamError, match=r"end: '2026-02-30' is not a valid date"):
        parse_day_range(None, "2026-02-30")
    today = datetime.now(EAT).date()
    assert parse_day_range(None, None) == (today - timedelta(days=6), today)


# ── Hostile input: every case is a ParamError with one sentence, never another exception ────


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  all ", None),
        ("*", None),
        (" Nairobi-North ", "Nairobi-North"),
        ("Ñairobi Kusini 东", "Ñairobi Kusini 东"),
        ("x" * 200, "x" * 200),
    ],
)
def test_filter_value_accepts(value: str | None, expected: str | None) -> None:
    assert filter_value(value, "cost_centre") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Nairobi\x00North", "cost_centre contains a control character or an invalid code point"
         " (U+0000 at position 7)"),
        ("\x1b[31mred", "cost_centre contains a control character"),
        ("a\nb", "cost_centre contains a control character"),
        ("a\x85b", "cost_centre contains a control character"),  # C1 (NEL)
        ("Nai\ud800robi", "cost_centre contains a control character or an invalid code point"
         " (U+D800 at position 3)"),
        ("x" * 201, "cost_centre is too long (at most 200 characters, got 201)"),
        ("x" * 100_000, "cost_centre is too long (at most 200 characters, got 100000)"),
    ],
)  # fmt: skip
def test_filter_value_refuses(value: str, message: str) -> None:
    with pytest.raises(ParamError) as caught:
        filter_value(value, "cost_centre")
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [
        (None, {}, 7),
        (" 12 ", {}, 12),
        ("+5", {}, 5),
        ("-0", {"low": 0}, 0),
        ("0000000000000000000042", {}, 42),  # leading zeros are not digits that count
        ("9" * 400, {"clamp_high": True}, 100),
        ("101", {"clamp_high": True}, 100),
    ],
)
def test_parse_int(value: str | None, kwargs: dict[str, Any], expected: int) -> None:
    options: dict[str, Any] = {"default": 7, "low": 1, "high": 100, **kwargs}
    assert parse_int("n", value, **options) == expected


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        ("9" * 400, {}, "n must be between 1 and 100 (got a 400-digit number)"),
        ("-" + "9" * 400, {"clamp_high": True}, "n must be 1 or more (got a 400-digit number)"),
        ("1e999", {}, "n must be a whole number between 1 and 100 (got '1e999')"),
        ("NaN", {}, "n must be a whole number between 1 and 100 (got 'NaN')"),
        ("Infinity", {}, "n must be a whole number between 1 and 100 (got 'Infinity')"),
        ("1_000", {}, "n must be a whole number between 1 and 100 (got '1_000')"),
        ("٣", {}, "n must be a whole number between 1 and 100 (got '٣')"),  # not ASCII
        ("0", {}, "n must be between 1 and 100 (got 0)"),
        ("0", {"clamp_high": True}, "n must be 1 or more (got 0)"),
        ("4\x00", {}, "n contains a control character"),
    ],
)
def test_parse_int_refuses(value: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse_int("n", value, default=7, low=1, high=100, **kwargs)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("name", "value", "is_end", "message"),
    [
        ("end", "9999-12-31", True, "end: '9999-12-31' is outside the supported dates"
         " 2000-01-01 to 2099-12-31"),
        ("start", "0001-01-01", False, "start: '0001-01-01' is outside the supported dates"),
        ("from", "0001-01-01T00:00:00", False, "from: '0001-01-01T00:00:00' is outside"),
        ("to", "9999-12-31T23:59:59-23:59", True, "to: '9999-12-31T23:59:59-23:59' is outside"),
        ("start", "2026-11-20T08:00:00+25:00", False, "start: '2026-11-20T08:00:00+25:00' is not"
         " a date or time"),
        ("start", "2026-11-20\x00", False, "start contains a control character"),
        ("start", "2026-11-20" + " " * 100 + "x", False, "start is too long (at most 64"),
    ],
)  # fmt: skip
def test_parse_when_refuses_extreme_dates(
    name: str, value: str, is_end: bool, message: str
) -> None:
    with pytest.raises(ParamError) as caught:
        parse_when(name, value, is_end=is_end)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("0001-01-01", None, "start: '0001-01-01' is outside the supported dates"),
        (None, "9999-12-31", "end: '9999-12-31' is outside the supported dates"),
        (None, "2099-12-32", "end: '2099-12-32' is not a valid date"),
        ("2026-11-20T00:00", None, "start: '2026-11-20T00:00' is not a valid date"),
    ],
)
def test_day_range_refuses_extreme_dates(start: str | None, end: str | None, message: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse_day_range(start, end)
    assert str(caught.value).startswith(message)


def test_trip_query_keeps_the_dates_as_given_and_caps_the_window() -> None:
    query = parse_trip_query({"start": [" 2026-11-01 "], "end": ["2026-11-10"]}, now=NOW)
    assert (query.start_text, query.end_text) == ("2026-11-01", "2026-11-10")
    assert query.end == datetime(2026, 11, 11, tzinfo=EAT)  # exclusive inside, echoed as given
    none = parse_trip_query({}, now=NOW)
    assert (none.start_text, none.end_text, none.start, none.end) == (None, None, None, None)
    with pytest.raises(ParamError, match=r"^end \(2026-11-10\) is before start \(2026-11-20\)$"):
        parse_trip_query({"start": ["2026-11-20"], "end": ["2026-11-10"]}, now=NOW)
    assert parse_trip_query({"start": ["2025-01-01"], "end": ["2026-01-01"]}, now=NOW).limit
    for fields, days in (
        ({"start": ["2025-01-01"], "end": ["2026-01-02"]}, 367),
        ({"start": ["2025-11-01"]}, 390),  # up to now
        ({"end": ["2099-12-31"], "start": ["2000-01-01"]}, 36525),
    ):
        with pytest.raises(ParamError) as caught:
            parse_trip_query(fields, now=NOW)
        assert str(caught.value) == f"the date range is limited to 366 days (got {days} days)"
    with pytest.raises(ParamError, match="is in the future"):
        parse_trip_query({"start": ["2026-12-01"]}, now=NOW)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cost_centre": ["Nairobi\x00"]}, "cost_centre contains a control character"),
        ({"driver_name": ["\ud83d"]}, "driver contains a control character or an invalid code"),
        ({"city": ["c" * 201]}, "city is too long"),
        ({"vehicles": ["KCA 542Q,\x00"]}, "vehicles contains a control character"),
        ({"vehicles": ['["KCA", ["nested"]]']}, "vehicles: expected a list of vehicle numbers"),
        ({"vehicles": ["[" * 10_000]}, "the JSON is nested too deeply"),
        ({"vehicles": [",".join(f"V{i}" for i in range(10_001))]}, "vehicles: at most 10000"),
        ({"limit": ["1e999"]}, "limit must be a whole number 0 or more (got '1e999')"),
        ({"end": ["9999-12-31"]}, "end: '9999-12-31' is outside the supported dates"),
    ],
)
def test_trip_query_refuses_hostile_fields(fields: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse_trip_query(fields, now=NOW)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("all", None), ("ON", "on"), ("true", "on"), ("0", "off"), ("Idle", "idle")],
)
def test_parse_acc_status(value: str | None, expected: str | None) -> None:
    assert parse_acc_status(value) == expected


def test_parse_acc_status_refuses() -> None:
    with pytest.raises(ParamError) as caught:
        parse_acc_status("sideways")
    assert str(caught.value) == (
        "acc_status must be one of on, off, moving, idle, parked, offline or all (got 'sideways')"
    )


def test_inc_query_defaults_and_echo() -> None:
    q = parse_inc_query(None, None, None, None, None, now=NOW)
    assert (q.cluster, q.status, q.window, q.start, q.end) == (None, "all", "7d", None, None)
    q = parse_inc_query(" Kilimani ", "OPEN", "30D", None, None, now=NOW)
    assert (q.cluster, q.status, q.window) == ("Kilimani", "open", "30d")
    q = parse_inc_query("all", "", "", "2026-11-01", "2026-11-10", now=NOW)
    assert (q.cluster, q.window, q.start_text, q.end_text) == (None, "custom", "2026-11-01",
                                                               "2026-11-10")  # fmt: skip
    assert q.end == datetime(2026, 11, 11, tzinfo=EAT)  # a date-only `to` includes the day
    naive = parse_inc_query(None, None, None, "2026-11-01T08:00:00", None, now=NOW)
    assert naive.start == datetime(2026, 11, 1, 5, tzinfo=UTC)  # naive = EAT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((None, "bogus", None, None, None), "status must be one of all, open, pending,"),
        ((None, None, "2y", None, None), "window must be one of 24h, 7d, 30d, 90d, custom"
         " (got '2y')"),
        ((None, None, "custom", "2026-11-01", None), "window=custom needs both 'from' and 'to'"),
        ((None, None, None, "0001-01-01T00:00:00", None), "from: '0001-01-01T00:00:00' is"
         " outside the supported dates"),
        ((None, None, None, "2026-02-30", "2026-03-02"), "from: '2026-02-30' is not a valid date"),
        ((None, None, None, "2026-11-10", "2026-11-01"), "'from' (2026-11-10) must be before"
         " 'to' (2026-11-01)"),
        ((None, None, None, "2026-12-01", None), "'from' (2026-12-01) must be before 'to' (now)"),
        ((None, None, None, "2024-01-01", "2026-01-01"), "the date range is limited to 366 days"),
        ((None, None, "90d", None, "9999-12-31"), "to: '9999-12-31' is outside"),
        (("Kili\x00mani", None, None, None, None), "cluster contains a control character"),
        ((None, "open\x00", None, None, None), "status contains a control character"),
    ],
)  # fmt: skip
def test_inc_query_refuses(args: tuple[str | None, ...], message: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse_inc_query(*args, now=NOW)
    assert str(caught.value).startswith(message)


def test_fuel_query() -> None:
    q = parse_fuel_query(None, "2026-06-30", " CC-NBO ", "all", "kcb-100a")
    assert (q.start, q.end) == (date(2026, 6, 1), date(2026, 6, 30))  # 30 days by default
    assert (q.cost_centre, q.city, q.vehicle_number, q.plate, q.limit) == (
        "CC-NBO", None, "kcb-100a", "KCB100A", 1000,
    )  # fmt: skip
    today = date(2026, 11, 25)
    assert parse_fuel_query(None, None, None, None, None, "5", today=today).start == date(
        2026, 10, 27
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("2026-06-10", "2026-06-01", None, None, None), "to (2026-06-01) is before from"),
        ((None, "0001-01-05", None, None, None), "to: '0001-01-05' is outside the supported"),
        (("0001-01-01", None, None, None, None), "from: '0001-01-01' is outside the supported"),
        ((None, None, None, None, "--"), "vehicle_number has no letters or digits (got '--')"),
        ((None, None, "CC\x00", None, None), "cost_centre contains a control character"),
        ((None, None, None, "c" * 300, None), "city is too long"),
        ((None, None, None, None, None, "0"), "limit must be between 1 and 5000 (got 0)"),
        ((None, None, None, None, None, "1e999"), "limit must be a whole number between 1"),
    ],
)
def test_fuel_query_refuses(args: tuple[str | None, ...], message: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse_fuel_query(*args, today=date(2026, 11, 25))
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ('{"a": [1, 2]}', True),
        ("[" * 16 + "]" * 16, True),
        ("[" * 17 + "]" * 17, False),
        ("[" * 1_000_000, False),  # no recursion: a million levels cost one loop
        ('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[["}', True),  # brackets inside a string
        ('{"a": "\\"[[[[[[[[[[[[[[[[[[[[[["}', True),  # ... after an escaped quote
        ('{"a": "\\\\", "b": ' + "[" * 17 + "]" * 17 + "}", False),  # an escaped backslash
    ],
)
def test_check_json_depth(text: str, ok: bool) -> None:
    if ok:
        check_json_depth(text)
    else:
        with pytest.raises(ParamError, match="nested too deeply"):
            check_json_depth(text)


@pytest.mark.parametrize(
    ("ctype", "body", "message"),
    [
        ("application/json", b'{"city": "\xff"}', "the body is not UTF-8 text (invalid byte at"),
        ("application/x-www-form-urlencoded", b"city=%ff", "the form body is not UTF-8 text"),
        ("application/x-www-form-urlencoded", b"a=1&" * 1001, "the form has more than 1000"),
        ("application/json", b"[" * 100_000 + b"]" * 100_000, "the JSON is nested too deeply"),
        ("application/json", b'{"city": {"name": "x"}}', "'city' must be text, a number or a"),
        ("application/json", b'{"v": [["x"]]}', "'v' must be text, a number or a list of them"),
        ("application/json", b'{"a": 1, "a": 2', "the body is not valid JSON"),
    ],
)
def test_hostile_bodies(ctype: str, body: bytes, message: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse_body(ctype, body)
    assert str(caught.value).startswith(message)
    assert caught.value.status_code == 422


def test_bodies_keep_numbers_as_text_and_refuse_size() -> None:
    digits = "9" * 5000  # json.loads would refuse to int() this; it stays text
    parsed = parse_body("application/json", f'{{"limit": {digits}, "x": NaN, "y": 1e999}}'.encode())
    assert parsed == {"limit": [digits], "x": ["NaN"], "y": ["1e999"]}
    assert parse_body(None, b'{"vehicles": ["KCA 542Q", 7, true]}') == {
        "vehicles": ["KCA 542Q", "7", "true"]
    }
    with pytest.raises(BodyTooLargeError) as caught:
        parse_body("application/json", b" " * (MAX_BODY_BYTES + 1))
    assert caught.value.status_code == 413
    # A percent-encoded NUL decodes; the field's own check refuses it (see above).
    assert parse_body(None, b"city=Nairobi%00") == {"city": ["Nairobi\x00"]}
