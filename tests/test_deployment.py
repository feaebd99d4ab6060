"""Static validation of docker-compose.yaml and the Dockerfile (no Docker engine runs here).

Checks what a broken deploy would show only on the server: the services and their wiring,
that every variable the compose file uses is listed in .env.example, that no secret is
written in the file, and that every command points at something that exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT
from tests.test_configuration import env_example

COMPOSE = ROOT / "docker-compose.yaml"
APP_SERVICES = {"ingest_worker", "webhook_receiver", "dashboard_api", "importers", "db_backup"}
SECRET_HINTS = ("PASSWORD", "SECRET", "TOKEN", "KEY", "DATABASE_URL")


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_services_and_dependencies() -> None:
    services = compose()["services"]
    assert set(services) == APP_SERVICES | {
        "timescale_db",
        "migrate",
        "jimi_sim",
        "dashboard_api_staging",
    }
    db = services["timescale_db"]
    assert db["image"] == "timescale/timescaledb-ha:pg16"
    assert "healthcheck" in db and db["volumes"][0].startswith("timescale_data:")
    assert services["migrate"]["depends_on"]["timescale_db"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["command"] == ["python", "run_migrations.py"]
    for name in APP_SERVICES:
        service = services[name]
        deps = service["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["timescale_db"]["condition"] == "service_healthy", name
        assert service["restart"] == "unless-stopped", name
        assert service["env_file"] == ".env", name
        assert "healthcheck" in service, name
    assert services["jimi_sim"]["profiles"] == ["demo"]
    assert services["dashboard_api_staging"]["profiles"] == ["staging-bridge"]
    optional = {"jimi_sim", "dashboard_api_staging"}
    assert all("profiles" not in s for n, s in services.items() if n not in optional)


def test_staging_bridge_is_read_only_on_8891_without_refresher() -> None:
    """Seed 000 §3: the staging bridge reads as dashboard_ro and never refreshes v_trips."""
    bridge = compose()["services"]["dashboard_api_staging"]
    env = bridge["environment"]
    assert env["DATABASE_URL"] == env["DASHBOARD_DATABASE_URL"] == "${DASHBOARD_DATABASE_URL:-}"
    assert env["VTRIPS_REFRESH_INTERVAL_S"] == "0"
    assert bridge["command"][:2] == ["uvicorn", "dashboard_api:app"]
    assert "8891" in bridge["command"] and bridge["ports"] == [
        "${STAGING_DASHBOARD_PORT:-8891}:8891"
    ]
    assert set(compose()["volumes"]) == {"timescale_data", "webhook_spool"}


def test_every_variable_used_is_in_env_example() -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    assert used, "the compose file interpolates variables"
    missing = used - set(env_example())
    assert missing == set(), f"add to .env.example: {sorted(missing)}"


def test_no_secret_is_written_in_the_compose_file() -> None:
    for name, service in compose()["services"].items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if any(hint in key for hint in SECRET_HINTS):
                assert isinstance(value, str) and value.startswith("${"), (
                    f"{name}.{key} must come from .env, not be written in the file"
                )
    assert not re.search(r"(password|secret)\s*[:=]\s*[\"']?[A-Za-z0-9]{6,}", COMPOSE.read_text(),
                         flags=re.I)  # fmt: skip


def test_commands_point_at_existing_entry_points() -> None:
    for name, service in compose()["services"].items():
        command = service.get("command")
        if not command:
            continue
        if command[0] == "python" and command[1] == "-m":
            module = command[2]
            assert (ROOT / (module.replace(".", "/") + ".py")).exists(), f"{name}: {module}"
        elif command[0] == "python":
            assert (ROOT / command[1]).exists(), f"{name}: {command[1]} missing"
        elif command[0] == "uvicorn":
            module, attr = command[1].split(":")
            source = (ROOT / f"{module}.py").read_text()
            assert re.search(rf"^{attr}\s*[:=]", source, flags=re.M), f"{name}: {command[1]}"
        for check in (service.get("healthcheck") or {}).get("test", [])[2:3]:
            assert (ROOT / check).exists(), f"{name}: healthcheck script {check} missing"


def test_dockerfile_is_one_slim_locked_non_root_image() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert froms[-1].startswith("python:3.12-slim"), "the final stage is python:3.12-slim"
    assert "uv sync --frozen --no-dev" in text, "locked dependencies"
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "postgresql-client-16" in text
    for copied in re.findall(r"^COPY (?!--from)(.+) \./$", text, flags=re.M):
        for path in copied.split():
            assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"
    assert (ROOT / "web/package-lock.json").exists()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".git" in ignored


def test_env_example_makes_the_demo_start() -> None:
    """`cp .env.example .env && docker compose --profile demo up` needs no edit: the required
    variables have values and the worker falls back to the simulator without credentials."""
    values = env_example()
    for required in re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text()):
        assert values.get(required), f"{required} is required by compose but empty"
    assert values["TRACKSOLID_APP_KEY"] == ""
    worker_env = compose()["services"]["ingest_worker"]["environment"]
    assert worker_env["JIMI_SIM_URL"].endswith("http://jimi_sim:8088/route/rest}")
    sim = compose()["services"]["jimi_sim"]["command"]
    assert "http://webhook_receiver:8081" in sim


def test_paths_in_docs_exist() -> None:
    """Every `docs/*.md` page linked from the README exists."""
    readme = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\((docs/[^)#]+)\)", readme):
        assert Path(ROOT / link).exists(), link
