"""Table-driven tests of the pure push parsers with the odd inputs real devices send."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import pytest
from starlette.datastructures import Headers

from tests import push_factories as f
from webhook import parse as p
from webhook.redact import redact_body, scrub_secret
from webhook.store import Delivery
from webhook_receiver import decode_fields

CTX = p.ParseContext(now=datetime(2026, 3, 3, tzinfo=UTC), max_future_s=3600)


def one(parser: p.Parser, item: dict[str, Any]) -> Any:
    rows = parser(item, CTX)
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize(
    ("over", "field", "expected"),
    [
        ({"direction": "-1"}, "direction_deg", None),
        ({"direction": "400"}, "direction_deg", None),
        ({"direction": 90}, "direction_deg", 90),
        ({"gpsSpeed": ""}, "speed_kmh", None),
        ({"gpsSpeed": "null"}, "speed_kmh", None),
        ({"gpsSpeed": "-3"}, "speed_kmh", None),
        ({"gpsSpeed": 12.5}, "speed_kmh", 12.5),
        ({"acc": "0"}, "acc_on", False),
        ({"acc": ""}, "acc_on", None),
        ({"postType": "2"}, "pos_type", "LBS"),
        ({"postType": 3}, "pos_type", "WIFI"),
        ({"postType": "gps"}, "pos_type", "GPS"),
        ({"satelliteNum": "999"}, "satellites", None),
        ({"gpsMode": "1"}, "gps_mode", 1),
        ({"gpsMode": "99999"}, "gps_mode", None),
        ({"altitude": "abc"}, "altitude_m", None),
        ({"gpsTime": "2026-03-02T08:00:00Z"}, "gps_time", datetime(2026, 3, 2, 8, tzinfo=UTC)),
        ({"gpsTime": "1772438400"}, "gps_time", datetime(2026, 3, 2, 8, tzinfo=UTC)),
        ({"gpsTime": 1772438400000}, "gps_time", datetime(2026, 3, 2, 8, tzinfo=UTC)),
        (
            {"gpsTime": "", "gateTime": "2026-03-02 08:00:05"},
            "gps_time",
            datetime(2026, 3, 2, 8, 0, 5, tzinfo=UTC),
        ),
        ({"lat": " -1.5 ", "lng": "36.8"}, "lat", -1.5),
    ],
)
def test_gps_field_oddities(over: dict[str, Any], field: str, expected: Any) -> None:
    row = one(p.parse_gps, f.gps(**over))
    assert getattr(row, field) == expected


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"lat": "0", "lng": "0"}, "no usable fix"),
        ({"lat": "0.0000001", "lng": "-0.0"}, "no usable fix"),
        ({"lat": "91", "lng": "36"}, "no usable fix"),
        ({"lat": "-1", "lng": "181"}, "no usable fix"),
        ({"lat": "", "lng": "36"}, "missing lat/lng"),
        ({"lat": "NaN", "lng": "36"}, "missing lat/lng"),
        ({"gpsTime": "0000-00-00 00:00:00", "gateTime": ""}, "unparsable gpsTime"),
        ({"gpsTime": None, "gateTime": None}, "missing gpsTime"),
        ({"gpsTime": "1999-12-31 23:59:59"}, "before 2000"),
        ({"gpsTime": "2026-03-04 00:00:00"}, "in the future"),
        ({"deviceImei": ""}, "missing deviceImei"),
        ({"deviceImei": "12 34"}, "invalid deviceImei"),
        ({"deviceImei": "x" * 80}, "invalid deviceImei"),
    ],
)
def test_gps_item_errors(over: dict[str, Any], reason: str) -> None:
    with pytest.raises(p.ItemError, match=reason):
        p.parse_gps(f.gps(**over), CTX)


def test_alarm_msg_forms() -> None:
    as_obj = one(p.parse_alarm, f.alarm())
    as_str = one(p.parse_alarm, f.alarm(as_string=True))
    assert as_obj[:8] == as_str[:8]
    assert as_obj.alarm_type == "6"
    assert as_obj.speed_kmh == 97.0
    assert as_str.raw["msg"]["alertType"] == "6"  # decoded in raw
    flat = {"imei": f.IMEIS[0], "type": "ACC_OFF", "alarmTime": "2026-03-02 08:00:00"}
    row = one(p.parse_alarm, flat)
    assert (row.alarm_type, row.alarm_name, row.lat) == ("ACC_OFF", None, None)
    named = one(p.parse_alarm, f.alarm(alertType="1", alarmName=""))
    assert named.alarm_name == "SOS alarm"  # documented id → name when the push has none
    zero = one(p.parse_alarm, f.alarm(lat="0", lng="0"))
    assert (zero.lat, zero.lng) == (None, None)  # alarm kept, position dropped
    with pytest.raises(p.ItemError, match="msg is not a JSON object"):
        p.parse_alarm({"imei": f.IMEIS[0], "msg": "{broken"}, CTX)
    with pytest.raises(p.ItemError, match="missing alertType"):
        p.parse_alarm({"imei": f.IMEIS[0], "msg": {"alarmTime": "2026-03-02 08:00:00"}}, CTX)


def test_other_paths_map_their_fields() -> None:
    hb = one(p.parse_heartbeat, f.heartbeat())
    assert (hb.power_level, hb.gsm_signal, hb.acc_on, hb.gps_pos, hb.fortify) == (
        6,
        4,
        False,
        True,
        False,
    )
    ev = one(p.parse_event, f.event(kind="logout"))
    assert (ev.event_type, ev.timezone, ev.source) == ("LOGOUT", "+03:00", "push")
    iot = one(p.parse_iothub_event, f.iothub_event())
    assert iot.event_time == f.T0
    assert json.loads(iot.event_content) == {"reason": "tamper", "voltage": "0.0"}
    lb = one(p.parse_lbs, f.lbs())
    assert (lb.mcc, lb.mnc, len(lb.cells), lb.post_type) == ("639", "02", 2, 2)
    lb_bad = one(p.parse_lbs, {**f.lbs(), "lbsJson": "{not json"})
    assert (lb_bad.mcc, lb_bad.cells) == (None, None)  # kept raw, not rejected
    ob = one(p.parse_obd, f.obd())
    assert (ob.reading_time, ob.rpm, ob.battery_voltage_v, ob.vin) == (
        f.T0,
        2100.0,
        13.9,
        "JTFSS22P300123456",
    )
    tr = one(p.parse_trip, f.trip())
    assert (tr.distance_km, tr.driving_time_s, tr.start_mileage_km) == (12.45, 1500, 84199.0)
    tr2 = one(p.parse_trip, {**f.trip(), "distance": "", "distanceKm": "3.2", "runTimeSecond": ""})
    assert (tr2.distance_km, tr2.driving_time_s) == (3.2, 1500)  # duration from the times
    with pytest.raises(p.ItemError, match="endTime before startTime"):
        p.parse_trip({**f.trip(), "endTime": "2026-03-01 00:00:00"}, CTX)
    fu = one(p.parse_oil, f.oil())
    assert (fu.fuel_level, fu.unit) == (52.3, "L")
    unknown = one(
        p.parse_oil, {"deviceImei": f.IMEIS[0], "gateTime": "2026-03-02 08:00:00", "x": 1}
    )
    assert unknown.fuel_level is None and unknown.raw["x"] == 1


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (
            f.fault(),
            [("P0301", "Cylinder 1 misfire detected"), ("P0420", "Cylinder 1 misfire detected")],
        ),
        (
            {**f.fault(), "faultCode": ["P0101", "P0101"]},
            [("P0101", "Cylinder 1 misfire detected")],
        ),
        (
            {
                **f.fault(),
                "faultCode": None,
                "faults": None,
                "dtc": json.dumps([{"code": "U0100", "desc": "Lost comm with ECM"}]),
            },
            [("U0100", "Lost comm with ECM")],
        ),
    ],
)
def test_fault_code_shapes(item: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    rows: list[Any] = p.parse_fault(item, CTX)
    assert [(r.code, r.description) for r in rows] == expected


def test_fault_without_code_and_temperature_shapes() -> None:
    with pytest.raises(p.ItemError, match="no fault code"):
        p.parse_fault({"deviceImei": f.IMEIS[0], "gateTime": "2026-03-02 08:00:00"}, CTX)
    rows: list[Any] = p.parse_temperature(f.temperature(), CTX)
    assert sorted((r.sensor, r.temperature_c) for r in rows) == [("1", 4.5), ("2", -18.2)]
    single: list[Any] = p.parse_temperature(
        {"deviceImei": f.IMEIS[0], "gateTime": "2026-03-02 08:00:00", "temperature": "21.5"}, CTX
    )
    assert [(r.sensor, r.temperature_c) for r in single] == [("", 21.5)]


def test_parse_delivery_collects_errors_sorts_and_picks_newest_live() -> None:
    later = f.gps(f.IMEIS[0], f.T0 + timedelta(minutes=1))
    items: list[Any] = [later, f.gps(f.IMEIS[1]), 42, f.gps(f.IMEIS[0]), f.gps(lat="0", lng="0")]
    out = p.parse_delivery(p.parse_gps, items, CTX)
    assert (out.item_count, out.items_ok, out.items_failed, out.status) == (5, 3, 2, "partial")
    assert [e["index"] for e in out.errors] == [2, 4]
    rows = out.rows[p.PositionRow]
    assert [(r.imei, r.gps_time) for r in rows] == sorted((r.imei, r.gps_time) for r in rows)
    newest = sorted([(f.IMEIS[0], f.T0 + timedelta(minutes=1)), (f.IMEIS[1], f.T0)])
    assert [(lv.imei, lv.gps_time) for lv in out.live] == newest
    assert set(out.devices) == {f.IMEIS[0], f.IMEIS[1]}
    assert "item 2: item is not a JSON object" in (out.error_text() or "")


def test_parser_bug_costs_one_item_not_the_delivery() -> None:
    def boom(item: Any, ctx: p.ParseContext) -> list[p.Row]:
        if item.get("boom"):
            raise KeyError("surprise")
        return p.parse_gps(item, ctx)

    out = p.parse_delivery(boom, [f.gps(), {"boom": 1}], CTX)
    assert out.items_ok == 1
    assert "internal parse error: KeyError" in out.errors[0]["reason"]


def test_unknown_open_api_msg_type_is_raw_only() -> None:
    assert p.parser_for("/push", "jimi.push.device.unknown") is None
    out = p.parse_delivery(None, [{"a": 1}, {"b": 2}], CTX)
    assert (out.items_ok, out.rows, out.status) == (2, {}, "parsed")


@pytest.mark.parametrize(
    ("raw", "value", "stored"),
    [
        ('[{"a":1}]', [{"a": 1}], '[{"a":1}]'),
        ('[{"a":"x\\u0000y"}]', [{"a": "xy"}], '[{"a":"xy"}]'),
        ('[{"a":"\\ud800"}]', [{"a": "?"}], '[{"a":"?"}]'),
        ('[{"n":"\\u4e2d"}]', [{"n": "中"}], '[{"n":"中"}]'),
    ],
)
def test_decode_json_cleans_what_jsonb_refuses(raw: str, value: Any, stored: str) -> None:
    assert p.decode_json(raw, "data_list") == (value, stored)


@pytest.mark.parametrize(
    ("raw", "message"),
    [("[{", "not valid JSON"), ("", "not valid JSON"), ("NaN-ish", "not valid JSON")],
)
def test_decode_json_errors(raw: str, message: str) -> None:
    with pytest.raises(p.MalformedDeliveryError, match=message):
        p.decode_json(raw, "data_list")


@pytest.mark.parametrize(
    ("value", "ok"), [([], True), ({"a": 1}, True), ("text", False), (3, False), (None, False)]
)
def test_items_of(value: Any, ok: bool) -> None:
    if ok:
        assert isinstance(p.items_of(value, "data_list"), list)
    else:
        with pytest.raises(p.MalformedDeliveryError, match="must be a JSON array or object"):
            p.items_of(value, "data_list")


def test_delivery_key_and_spool_record_round_trip() -> None:
    d = Delivery("/push", "jimi.push.device.alarm", '{"a":1}', f.T0)
    back = Delivery.from_json(d.to_json())
    assert (back.path, back.msg_type, back.data, back.received_at, back.spooled) == (
        "/push",
        "jimi.push.device.alarm",
        '{"a":1}',
        f.T0,
        True,
    )
    assert back.key == d.key
    assert d.key != Delivery("/pushgps", None, '{"a":1}', f.T0).key
    assert d.method == "/push:jimi.push.device.alarm"


@pytest.mark.parametrize(
    "body",
    [
        b"token=t&data_list=%5B%7B%22a%22%3A%22x%2By%22%7D%5D",
        b"data_list=%5B%5D&&token=a+b",
        b"data_list=%5B%22%E4%B8%AD%5C%5C%22%5D",  # UTF-8 escapes and an escaped backslash
        'data_list=["中\\\\x41"]'.encode(),  # raw UTF-8 and a literal backslash
        b"data_list=%ZZ&x",  # a bad escape: falls back to urllib, same result
        b"",
    ],
)
def test_fast_form_decoding_matches_urllib(body: bytes) -> None:
    hdr = Headers({"content-type": "application/x-www-form-urlencoded"})
    got = asyncio.run(decode_fields(body, hdr))
    assert got == dict(parse_qsl(body.decode(), keep_blank_values=True))


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("[1e999]", ["1e999"]),
        ("[-1e999, 1e-999, 0e-5000]", ["-1e999", "1e-999", "0e-5000"]),
        ("[NaN, Infinity, -Infinity]", ["NaN", "Infinity", "-Infinity"]),
        ("[" + "9" * 400 + "]", ["9" * 400]),
        ("[" + "1" * 5000 + "]", ["1" * 5000]),  # past Python's int-string limit: no error
        ("[1.5, -0, 12, 1e300, " + "9" * 300 + "]", [1.5, 0, 12, 1e300, int("9" * 300)]),
    ],
)
def test_numbers_no_column_can_hold_are_kept_as_text(raw: str, value: list[Any]) -> None:
    """jsonb refuses NaN/Infinity and the typed columns cannot hold 1e999: the value stays
    its text (a JSON string), so the item and its siblings still store."""
    decoded, stored = p.decode_json(raw, "data_list")
    assert decoded == value

    def refuse(literal: str) -> None:
        raise AssertionError(f"{literal} in the stored text: jsonb would refuse it")

    assert json.loads(stored, parse_constant=refuse) == value


@pytest.mark.parametrize(
    ("doc", "deep"),
    [
        ("[" * 32 + "]" * 32, False),
        ("[" * 33 + "]" * 33, True),
        ('{"a":' * 33 + "1" + "}" * 33, True),
        ("[" * 33, True),  # truncated: a parser would still recurse 33 deep
        (b"[" * 5000, True),
        ('["' + "[" * 40 + '"]', False),  # brackets inside a string
        ('["\\"' + "[" * 40 + '"]', False),  # ... after an escaped quote
        ('["\\\\"' + "[" * 40, True),  # an escaped backslash ends the string
        ('"' + "[" * 40, False),  # an unterminated string: nothing after it is structure
        ("]" + "[" * 40, False),  # a parser stops at the first character
        ("[]" * 10_000, False),
        (json.dumps([f.alarm(as_string=True)] * 50), False),
    ],
)
def test_json_too_deep(doc: str | bytes, deep: bool) -> None:
    assert p.json_too_deep(doc) is deep


def test_too_deep_json_is_refused_before_json_loads() -> None:
    with pytest.raises(p.MalformedDeliveryError, match="nests deeper than 32 levels"):
        p.decode_json("[" * 5000 + "]" * 5000, "data_list")
    # A JSON string field nested too deep stays the string: the alarm is an item error.
    item = f.alarm()
    item["msg"] = "[" * 5000 + "]" * 5000
    with pytest.raises(p.ItemError, match="msg is not a JSON object"):
        p.parse_alarm(item, CTX)


@pytest.mark.parametrize(
    "when",
    [
        "0000-01-01 00:00:00",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31 23:59:59",
        "9999-12-31T23:59:59-14:00",
        "99999-01-01",
        -62135596800,
        253402300800,
        10**20,
        -(10**20),
        "1" * 300,
        1e308,
        True,
        [2026, 3, 2],
        {"y": 2026},
    ],
)
def test_extreme_dates_are_item_errors(when: Any) -> None:
    with pytest.raises(p.ItemError, match="gpsTime"):
        p.parse_gps(f.gps(gpsTime=when, gateTime=""), CTX)


@pytest.mark.parametrize(
    ("body", "ctype", "reason"),
    [
        (b"data_list=%5B%5D&x=\xff", "application/x-www-form-urlencoded", "not valid UTF-8"),
        (b"data_list=%FF", "application/x-www-form-urlencoded", "not valid UTF-8 once decoded"),
        (b"data_list=[]\x00", "application/x-www-form-urlencoded", "NUL byte"),
        (b"data_list=%5B%00%5D", "application/x-www-form-urlencoded", "field data_list contains"),
        (b"data_list=" + b"%5B" * 40, "application/x-www-form-urlencoded", "nests deeper"),
        (b'{"data":' + b"[" * 40 + b"]" * 40 + b"}", "application/json", "nests deeper"),
        (b'{"msgType":"a\\u0000"}', "application/json", "field msgType contains a NUL"),
        (b'{"token":"\\udc00"}', "application/json", "field token is not valid UTF-8"),
        (b'{"data":NaN', "application/json", "body is not valid JSON"),
    ],
)
def test_structural_checks_refuse_before_anything_else(
    body: bytes, ctype: str, reason: str
) -> None:
    with pytest.raises(p.MalformedDeliveryError, match=reason):
        asyncio.run(decode_fields(body, Headers({"content-type": ctype})))


SECRET = "s3cret-push-token"


@pytest.mark.parametrize(
    ("body", "kept"),
    [
        (b"token=s3cret-push-token&data_list=%5B", "token=***&data_list=%5B"),
        (b"data_list=x&%74oken=abc&x=1", "data_list=x&%74oken=***&x=1"),
        (b"\xff\x00token=zz&a=1", "\ufffdtoken=***&a=1"),
        (b'{"msgType":"a","token":"x\\"y","data":1}', '{"msgType":"a","token":"***","data":1}'),
        (b'{"token": 12345}', '{"token": "***"}'),
        (
            b'--b\r\nContent-Disposition: form-data; name="token"\r\n\r\nabc\r\n--b--',
            '--b\r\nContent-Disposition: form-data; name="token"\r\n\r\n***\r\n--b--',
        ),
        (b"note=echo+s3cret-push-token+here", "note=echo+***+here"),
        (b'{"note":"s3cret-push-token"}', '{"note":"***"}'),
    ],
)
def test_redact_body_blanks_the_token(body: bytes, kept: str) -> None:
    assert redact_body(body, SECRET) == kept


def test_scrub_secret_only_rewrites_when_the_token_is_there() -> None:
    value = [{"a": f"x {SECRET} y", SECRET: 1}]
    text = json.dumps(value)
    assert scrub_secret(value, text, SECRET) == (
        [{"a": "x *** y", "***": 1}],
        '[{"a":"x *** y","***":1}]',
    )
    clean = [{"a": 1}]
    assert scrub_secret(clean, '[{"a": 1}]', SECRET) == (clean, '[{"a": 1}]')
    assert scrub_secret(clean, '[{"a": 1}]', None) == (clean, '[{"a": 1}]')
