"""The S3 client factory talks path-style to a real S3 protocol server on loopback."""

from __future__ import annotations

from ts_shared import Settings, make_s3_client


def test_s3_round_trip(s3_settings: Settings) -> None:
    s3 = make_s3_client(s3_settings)
    s3.put_object(Bucket=s3_settings.fuel_bucket, Key="fuel_records/latest.json", Body=b"[]")
    listed = s3.list_objects_v2(Bucket=s3_settings.fuel_bucket, Prefix="fuel_records/")
    assert [o["Key"] for o in listed.get("Contents", [])] == ["fuel_records/latest.json"]
    body = s3.get_object(Bucket=s3_settings.fuel_bucket, Key="fuel_records/latest.json")["Body"]
    assert body.read() == b"[]"
    assert s3.meta.config.s3["addressing_style"] == "path"  # type: ignore[attr-defined]
