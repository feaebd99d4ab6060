"""Fault injection for import_fuel: hostile records and unreadable files in a real feed.

moto's S3 server on loopback and the real PostgreSQL of the suite: one `--changes --apply`
run over four delta files where one has records PostgreSQL cannot hold and one cannot be
read at all; the dead letters, the quarantine, the watermark, `--list-rejects` and
`--retry-rejects`; and a Hypothesis property of the pure parser.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import ConnectionPool

import import_fuel
from fuel_import import parse
from fuel_import.parse import BadRecord, FileContentError, FuelRecord, parse_file, parse_record
from tests.test_fuel_import import SNAPSHOT_KEY, one, put, rec, rows, state
from ts_shared import Settings, make_s3_client

CH = "fuel_records/changes/"
KEYS = [CH + f"2026-06-12T0{h}:00:00Z.json" for h in range(1, 5)]
WATERMARK = "SELECT watermark_key FROM fuel.ingest_state WHERE feed = 'changes'"
UNREADABLE = {
    "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\xfd" * 50,
    "nested_5000": b'{"records": ' + b"[" * 5000 + b"]" * 5000 + b"}",
}
UNREADABLE_REASON = {"binary": "not UTF-8", "nested_5000": "nested deeper than 32 levels"}


def _args(*argv: str) -> Any:
    return import_fuel.build_parser().parse_args(list(argv))


def _object(settings: Settings, key: str) -> bytes | None:
    s3 = make_s3_client(settings)
    try:
        return s3.get_object(Bucket=settings.fuel_bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def _feed(settings: Settings, unreadable: bytes) -> None:
    put(settings, KEYS[0], [rec(1), rec(2, car="KBZ 001A")])
    file2 = [
        rec(10),
        rec(11, litres=math.nan),  # NaN in a field the importer reads: dead letter
        rec(12, car="KDA 100B"),
        rec(13, car="KCA\x00542Q"),  # NUL in a field the importer reads: dead letter
        rec(14, amount=math.inf, driver="jane\x00doe", notes="\ud800"),  # optional: cleaned
        rec(15, password="hunter2-secret", litres=math.nan),  # secret-looking: redacted
    ]
    put(settings, KEYS[1], json.dumps({"records": file2}, allow_nan=True).encode())
    put(settings, KEYS[2], unreadable)
    put(
        settings,
        KEYS[3],
        [
            rec(20),
            rec(21, fill_time=123, created_at=None),  # not a time PostgreSQL reads
            rec(22, driver="x" * 10_000_000),  # 10 MB driver name
            rec(23, driver="y" * 3000),  # over the 2,000-character text bound
            rec(24, amount="99999999999999999999"),  # overflows numeric(14,2) in PostgreSQL
        ],
    )


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_changes_quarantines_files_dead_letters_records_and_moves_on(
    kind: str,
    s3_settings: Settings,
    pool: ConnectionPool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _feed(s3_settings, UNREADABLE[kind])
    assert import_fuel.main(["--changes", "--apply"], settings=s3_settings) == 0

    # Every good record of files 1, 2 and 4 is in; the cleaned optional values are NULL.
    assert set(state(pool)) == {"1", "2", "10", "12", "14", "20"}
    assert rows(
        pool, "SELECT amount_kes, driver, raw->>'notes' FROM fuel.records WHERE id='14'"
    ) == [(None, None, None)]
    # The bad records are dead letters with their reasons; the raw text keeps what was read.
    letters = rows(
        pool,
        "SELECT source_key, record_index, record_id, reason FROM fuel.rejects"
        " ORDER BY source_key, record_index",
    )
    assert [(k, i, rid) for k, i, rid, _ in letters] == [
        (KEYS[1], 1, "11"),
        (KEYS[1], 3, "13"),
        (KEYS[1], 5, "15"),
        (KEYS[3], 1, "21"),
        (KEYS[3], 2, "22"),
        (KEYS[3], 3, "23"),
        (KEYS[3], 4, "24"),
    ]
    reasons = {rid: reason for _, _, rid, reason in letters}
    assert reasons["11"] == "litres: not a finite number (nan)"
    assert reasons["13"] == "car: contains a NUL character"
    assert reasons["21"] == "fill time unparsable: 123"
    assert reasons["22"].startswith("record is 100") and reasons["22"].endswith("than 65536")
    assert reasons["23"] == "driver: text longer than 2000 characters"
    assert reasons["24"].startswith("database refused the record: numeric field overflow")
    texts = dict(rows(pool, "SELECT record_id, raw_text FROM fuel.rejects"))
    assert '"litres": NaN' in texts["11"] and "\\u0000" in texts["13"]
    assert "hunter2" not in texts["15"] and '"password": "[redacted]"' in texts["15"]
    assert len(texts["22"]) == parse.MAX_RECORD_BYTES and texts["22"].endswith("[truncated]")

    # File 3 was moved to quarantine/ with its reason object, and recorded.
    assert _object(s3_settings, KEYS[2]) is None
    assert _object(s3_settings, "quarantine/" + KEYS[2]) == UNREADABLE[kind]
    reason_object = _object(s3_settings, "quarantine/" + KEYS[2] + ".reason.json")
    assert reason_object is not None
    why = json.loads(reason_object)
    assert why["object_key"] == KEYS[2] and UNREADABLE_REASON[kind] in why["reason"]
    assert UNREADABLE_REASON[kind] in one(pool, "SELECT reason FROM fuel.quarantined_files")
    log_row = rows(pool, "SELECT ok, detail FROM tracksolid.ingestion_log")
    assert len(log_row) == 1 and log_row[0][0] is True
    assert list(log_row[0][1]["quarantined"]) == [KEYS[2]] and log_row[0][1]["bad_total"] == 7

    # The watermark ends after file 4; a second run reads nothing and changes nothing.
    assert one(pool, WATERMARK) == KEYS[3]
    report = import_fuel.run(_args("--changes", "--apply"), s3_settings, pool=pool)
    assert report.files == [] and not report.failed
    assert one(pool, "SELECT count(*) FROM fuel.rejects") == 7
    assert one(pool, WATERMARK) == KEYS[3]

    # --list-rejects names every dead letter and the quarantined file.
    assert import_fuel.main(["--list-rejects"], settings=s3_settings) == 0
    listing = capsys.readouterr().out
    assert f"dead letter {KEYS[1]} #1 id=11" in listing and f"quarantined {KEYS[2]}" in listing
    assert "7 dead letter(s), 1 quarantined file(s)" in listing

    # After a fix (the text bound raised), --retry-rejects imports the dead letter it now
    # parses; a dry run first writes nothing.
    monkeypatch.setattr(parse, "MAX_TEXT_CHARS", 5000)
    assert import_fuel.main(["--retry-rejects"], settings=s3_settings) == 0
    assert one(pool, "SELECT count(*) FROM fuel.rejects WHERE retried_at IS NOT NULL") == 0
    assert "23" not in state(pool)
    assert import_fuel.main(["--retry-rejects", "--apply"], settings=s3_settings) == 0
    assert one(pool, "SELECT driver FROM fuel.records WHERE id = '23'") == "Y" + "y" * 2999
    assert one(pool, "SELECT source_key FROM fuel.records WHERE id = '23'") == KEYS[3]
    assert one(pool, "SELECT count(*) FROM fuel.rejects") == 6
    assert one(pool, "SELECT count(*) FROM fuel.rejects WHERE retries = 1") == 6
    assert "(stored text truncated" in one(
        pool, "SELECT reason FROM fuel.rejects WHERE record_id = '22'"
    )

    # The quarantined file, fixed in place, goes back with --retry-quarantine (dry run first);
    # still broken, it stays in quarantine and the command fails.
    assert import_fuel.main(["--retry-quarantine", KEYS[2], "--apply"], settings=s3_settings) == 1
    put(s3_settings, "quarantine/" + KEYS[2], [rec(30), rec(31)])
    assert import_fuel.main(["--retry-quarantine", KEYS[2]], settings=s3_settings) == 0
    assert "30" not in state(pool)
    assert import_fuel.main(["--retry-quarantine", KEYS[2], "--apply"], settings=s3_settings) == 0
    assert {"30", "31"} <= set(state(pool))
    assert _object(s3_settings, "quarantine/" + KEYS[2]) is None
    assert _object(s3_settings, "quarantine/" + KEYS[2] + ".reason.json") is None
    assert one(pool, "SELECT count(*) FROM fuel.quarantined_files") == 0
    assert one(pool, WATERMARK) == KEYS[3]


class _FailingGets:
    """The real S3 client, except that reading one key fails (an S3 outage for it)."""

    def __init__(self, client: Any, key: str) -> None:
        self._client, self._key = client, key

    def get_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"] == self._key:
            raise ConnectionError("simulated S3 read failure")
        return self._client.get_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_file_neither_imported_nor_quarantined_holds_the_watermark(
    s3_settings: Settings, pool: ConnectionPool
) -> None:
    put(s3_settings, KEYS[0], [rec(1)])
    put(s3_settings, KEYS[1], [rec(2)])
    put(s3_settings, KEYS[2], [rec(3)])
    failing: Any = _FailingGets(make_s3_client(s3_settings), KEYS[1])
    report = import_fuel.run(_args("--changes", "--apply"), s3_settings, pool=pool, s3=failing)
    assert [f.key for f in report.failed] == [KEYS[1]] and not report.quarantined
    assert set(state(pool)) == {"1", "3"}
    assert one(pool, WATERMARK) == KEYS[0]  # never past the file that was not handled
    assert _object(s3_settings, "quarantine/" + KEYS[1]) is None  # an outage is no quarantine
    assert import_fuel.main(["--changes", "--apply"], settings=s3_settings) == 0  # S3 is back
    assert set(state(pool)) == {"1", "2", "3"} and one(pool, WATERMARK) == KEYS[2]


def test_unreadable_snapshot_fails_and_stays_in_place(
    s3_settings: Settings, pool: ConnectionPool
) -> None:
    put(s3_settings, SNAPSHOT_KEY, UNREADABLE["nested_5000"])
    assert import_fuel.main(["--snapshot", "--apply"], settings=s3_settings) == 1
    assert _object(s3_settings, SNAPSHOT_KEY) == UNREADABLE["nested_5000"]
    assert one(pool, "SELECT count(*) FROM fuel.quarantined_files") == 0
    assert rows(pool, "SELECT ok FROM tracksolid.ingestion_log") == [(False,)]


# ── the pure parser never raises anything but the documented errors ─────────

HOSTILE_TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfffy", "NaN", "", "  ", "null", "1e400"]),
    st.text(min_size=2001, max_size=2100, alphabet="ab"),
)
HOSTILE_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**63, max_value=10**70),
    st.floats(allow_nan=True, allow_infinity=True),
    HOSTILE_TEXT,
)
HOSTILE_VALUE = st.recursive(
    HOSTILE_SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=12,
)
FIELD = st.sampled_from(sorted(parse.REQUIRED_KEYS | {"amount", "driver", "notes"}))
HOSTILE_RECORD = st.one_of(
    HOSTILE_VALUE,
    st.builds(
        lambda base, extra: {**base, **extra},
        st.builds(rec, st.one_of(st.integers(), HOSTILE_TEXT)),
        st.dictionaries(st.one_of(FIELD, HOSTILE_TEXT), HOSTILE_VALUE, max_size=4),
    ),
)


@settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the working tree
    suppress_health_check=[HealthCheck.too_slow],
)
@given(item=HOSTILE_RECORD)
def test_parse_record_never_raises_and_accepts_only_storable_records(item: Any) -> None:
    parsed = parse_record(item, 0)
    assert isinstance(parsed, FuelRecord | BadRecord)
    if isinstance(parsed, FuelRecord):
        text = json.dumps(parsed.raw, allow_nan=False, ensure_ascii=False)  # no NaN/Infinity
        assert "\x00" not in text and "\\u0000" not in text
        text.encode("utf-8")  # no lone surrogate
        assert len(text) <= parse.MAX_RECORD_BYTES
    # whatever it is, a dead letter can keep it
    letter = parse.dead_letter_text(item)
    assert len(letter) <= parse.MAX_RECORD_BYTES and letter.isascii()


@settings(max_examples=200, deadline=None, database=None)
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.builds(lambda n: b"[" * n + b"]" * n, st.integers(0, 20_000)),
        st.builds(lambda n: b'{"records": [' + b"{" * n, st.integers(0, 5000)),
        st.builds(lambda v: json.dumps({"records": [v]}, allow_nan=True).encode(), HOSTILE_VALUE),
    )
)
def test_parse_file_raises_only_file_content_error(data: bytes) -> None:
    try:
        parsed = parse_file(data, "k")
    except FileContentError:
        return
    assert len(parsed.records) + len(parsed.bad) <= parsed.total  # duplicates collapse


def test_parse_record_bounds_deep_python_values_without_recursion() -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    parsed = parse_record({"id": 1, "notes": deep}, 4)
    assert isinstance(parsed, BadRecord) and parsed.reason == "record nested deeper than 32 levels"
    assert parse.dead_letter_text(deep).startswith('"<nested deeper than 32')
