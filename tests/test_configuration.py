"""Every setting is documented: in .env.example and in docs/configuration.md."""

from __future__ import annotations

import re

from tests.conftest import ROOT
from ts_shared import Settings


def _env_example_names() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, flags=re.M))


def test_every_setting_is_in_env_example_and_docs() -> None:
    names = {name.upper() for name in Settings.model_fields}
    documented = set(
        re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "docs/configuration.md").read_text())
    )
    assert names - _env_example_names() == set(), "add these to .env.example"
    assert names - documented == set(), "document these in docs/configuration.md"
    assert _env_example_names() - names == set(), ".env.example lists unknown variables"


def test_env_example_has_no_secret_values() -> None:
    secret_fields = [
        name.upper()
        for name, info in Settings.model_fields.items()
        if "SecretStr" in str(info.annotation)
        and name not in {"database_url", "dashboard_database_url"}
    ]
    text = (ROOT / ".env.example").read_text()
    for name in secret_fields:
        match = re.search(rf"^{name}=(.*)$", text, flags=re.M)
        assert match is not None and match.group(1) == "", f"{name} must be empty in .env.example"
