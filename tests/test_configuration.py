"""Every setting is documented: in .env.example and in docs/configuration.md."""

from __future__ import annotations

import re

from tests.conftest import ROOT
from ts_shared import Settings

COMPOSE_ONLY = {
    "POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD", "MIGRATE_DATABASE_URL",
    "WEBHOOK_PORT", "DASHBOARD_PORT", "DEMO_DEVICES", "STAGING_CORS_ORIGINS",
    "STAGING_DASHBOARD_PORT",
}  # fmt: skip


def env_example() -> dict[str, str]:
    """Variable → value as written in .env.example."""
    text = (ROOT / ".env.example").read_text()
    return dict(re.findall(r"^([A-Z][A-Z0-9_]+)=(.*)$", text, flags=re.M))


def test_every_setting_is_in_env_example_and_docs() -> None:
    names = {name.upper() for name in Settings.model_fields}
    documented = set(
        re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "docs/configuration.md").read_text())
    )
    listed = set(env_example())
    assert names - listed == set(), "add these to .env.example"
    assert names - documented == set(), "document these in docs/configuration.md"
    assert listed - names - COMPOSE_ONLY == set(), ".env.example lists unknown variables"
    assert documented >= COMPOSE_ONLY


def test_env_example_holds_no_real_secret() -> None:
    """Secrets are empty or an obvious `change-me` placeholder (so the demo starts as is)."""
    values = env_example()
    secret_names = [
        name.upper() for name, info in Settings.model_fields.items()
        if "SecretStr" in str(info.annotation)
    ] + ["POSTGRES_PASSWORD", "MIGRATE_DATABASE_URL"]  # fmt: skip
    for name in secret_names:
        value = values[name]
        password = re.sub(r"^postgresql://[^:]+:([^@]*)@.*$", r"\1", value)
        assert value == "" or password.startswith("change-me"), f"{name} holds a real value"


def test_empty_lines_in_env_mean_defaults(monkeypatch: object) -> None:
    s = Settings(_env_file=None, tracksolid_api_url="", tracksolid_user_pwd="")
    assert s.tracksolid_api_url == "https://eu-open.tracksolidpro.com/route/rest"
    assert s.tracksolid_user_pwd_md5.get_secret_value() == ""
    assert not s.jimi_configured


def test_demo_simulator_settings() -> None:
    s = Settings(_env_file=None, jimi_sim_url="http://jimi_sim:8088/route/rest")
    assert not s.jimi_configured
    demo = s.with_simulator()
    assert demo.jimi_configured and demo.tracksolid_api_url == "http://jimi_sim:8088/route/rest"
    assert demo.targets == ["fireside", "Fireside@HQ", "Fireside_MSA"]
