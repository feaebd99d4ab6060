"""Shared test fixtures: a real PostgreSQL + PostGIS (+ TimescaleDB) server, migrated once per
engine, a fresh database per test.

Where the server comes from (first that applies):
1. `TEST_DATABASE_URL` — a superuser URL of a server you provide (databases are created in it);
2. testcontainers with `timescale/timescaledb-ha:pg16` — when a Docker engine answers;
3. a throwaway cluster from the local PostgreSQL binaries (`tests/pgcluster.py`), which
   preloads TimescaleDB with its background workers on, as production, when it is installed.

The two engines (see docs/development.md):
- `timescaledb` — the production engine: hypertables, compression, continuous aggregate;
  every test runs on it when the server has TimescaleDB;
- `plain` — PostgreSQL + PostGIS only (`USE_TIMESCALEDB=off`), a database on the same server.
  Modules marked `pytestmark = pytest.mark.both_engines` run once per engine; tests marked
  `timescaledb_only` need the production engine and are deselected (with a one-line notice)
  where the server has none. `TEST_ENGINE=plain` runs the whole suite on plain PostgreSQL.
Migrations are applied once into a template database per engine; each test gets `CREATE
DATABASE ... TEMPLATE`, a file copy of a few tens of milliseconds.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from run_migrations import migrate, timescaledb_state  # noqa: E402
from tests.pgcluster import LocalCluster, free_port, timescaledb_installed  # noqa: E402
from ts_shared import Settings, make_pool, make_s3_client  # noqa: E402

TIMESCALEDB, PLAIN = "timescaledb", "plain"
# Which engine each database this session created was built for (by name); `test_settings`
# reads it, so a test's settings always match its database.
ENGINE_OF: dict[str, str] = {}


def available_engines() -> list[str]:
    """Engines this run covers, the production engine first (decided at collection time)."""
    cached: list[str] | None = getattr(available_engines, "_cache", None)
    if cached is not None:
        return cached
    forced = os.environ.get("TEST_ENGINE", "")
    if forced not in ("", TIMESCALEDB, PLAIN):
        raise pytest.UsageError(f"TEST_ENGINE must be {TIMESCALEDB} or {PLAIN}, not {forced!r}")
    if forced == PLAIN:
        engines = [PLAIN]
    elif url := os.environ.get("TEST_DATABASE_URL"):
        with psycopg.connect(url, autocommit=True) as conn:
            usable = timescaledb_state(conn) == "usable"
        engines = [TIMESCALEDB, PLAIN] if usable else [PLAIN]
    elif timescaledb_installed() or (
        os.environ.get("TEST_USE_DOCKER", "auto") != "never" and _docker_answers()
    ):  # the local cluster preloads it; the timescaledb-ha image has it
        engines = [TIMESCALEDB, PLAIN]
    else:
        engines = [PLAIN]
    if forced == TIMESCALEDB and TIMESCALEDB not in engines:
        raise pytest.UsageError("TEST_ENGINE=timescaledb but the server has no usable TimescaleDB")
    available_engines._cache = engines  # type: ignore[attr-defined]
    return engines


def pytest_report_header(config: pytest.Config) -> str:
    engines = available_engines()
    if TIMESCALEDB in engines:
        return "engines: timescaledb (every test) + plain (both_engines modules)"
    return (
        "engines: plain PostgreSQL + PostGIS only — TimescaleDB is not installed here"
        " (make deps installs it from ../shared/tools/timescaledb); timescaledb_only tests"
        " deselected"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_engines"):
        metafunc.parametrize("engine", available_engines(), indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if TIMESCALEDB in available_engines():
        return
    dropped = [i for i in items if i.get_closest_marker("timescaledb_only")]
    if dropped:
        items[:] = [i for i in items if not i.get_closest_marker("timescaledb_only")]
        config.hook.pytest_deselected(items=dropped)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    """The engine of this test's database: the production engine unless parametrized."""
    return str(getattr(request, "param", available_engines()[0]))


@functools.cache
def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """Superuser connection string of the test server (see module doc for the source)."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    if os.environ.get("TEST_USE_DOCKER", "auto") != "never" and _docker_answers():
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

        container = PostgresContainer(
            "timescale/timescaledb-ha:pg16",
            username="postgres",
            password="postgres",
            dbname="postgres",
            driver=None,
        )
        container.start()
        try:
            yield container.get_connection_url()
        finally:
            container.stop()
        return
    cluster = LocalCluster(timescaledb=TIMESCALEDB in available_engines())
    cluster.init()
    cluster.start()
    try:
        yield cluster.admin_url
    finally:
        cluster.stop(remove=True)


def url_for(admin_url: str, dbname: str) -> str:
    """The same server as `admin_url`, another database."""
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo("", **{k: v for k, v in info.items() if v is not None})


def with_password(url: str, password: str) -> str:
    """The same URL with a password (the test server trusts every local login, so it is
    accepted and ignored: tests use it to check a password never reaches a log or a table)."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["password"] = password
    return psycopg.conninfo.make_conninfo("", **{k: v for k, v in info.items() if v is not None})


def engine_of(database_url: str) -> str:
    """The engine a database of this session was created for (the production one if unknown)."""
    name = psycopg.conninfo.conninfo_to_dict(database_url).get("dbname")
    return ENGINE_OF.get(str(name), available_engines()[0])


def test_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for tests: no .env file, fast retries, the given database, and
    USE_TIMESCALEDB matching the engine the database was made for."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "use_timescaledb": "on" if engine_of(database_url) == TIMESCALEDB else "off",
        "jimi_backoff_base_s": 0.01,
        "jimi_backoff_cap_s": 0.05,
        "log_level": "DEBUG",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a test function


def create_database(
    admin_url: str, name: str, template: str | None = None, engine: str | None = None
) -> str:
    """CREATE DATABASE (optionally from a template) for `engine` and return its URL."""
    ENGINE_OF[name] = (
        engine or (ENGINE_OF.get(template, "") if template else "") or (available_engines()[0])
    )
    with psycopg.connect(admin_url, autocommit=True) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        conn.execute(query)
    return url_for(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """DROP DATABASE ... WITH (FORCE), ignoring a missing one."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def seal_template(admin_url: str, name: str) -> None:
    """Make `name` copyable while TimescaleDB's background workers are on: no new sessions
    (the launcher skips databases that refuse connections), then end the scheduler's."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                sql.Identifier(name)
            )
        )
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )


def unseal_template(admin_url: str, name: str) -> None:
    """Undo `seal_template` so the database can be dropped."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false ALLOW_CONNECTIONS true").format(
                sql.Identifier(name)
            )
        )


@pytest.fixture(scope="session")
def engine_templates(pg_admin_url: str) -> Iterator[dict[str, str]]:
    """Per engine, the name of a database with every migration applied (built on first use),
    used as the per-test template."""
    templates: dict[str, str] = {}
    yield templates
    for name in templates.values():
        unseal_template(pg_admin_url, name)
        drop_database(pg_admin_url, name)


def template_for(admin_url: str, templates: dict[str, str], engine: str) -> str:
    """The migrated template database of `engine`, created the first time it is asked for."""
    if engine not in templates:
        name = f"tpl_{engine[:5]}_{uuid.uuid4().hex[:8]}"
        url = create_database(admin_url, name, engine=engine)
        migrate(url, test_settings(url))
        seal_template(admin_url, name)
        templates[engine] = name
    return templates[engine]


@pytest.fixture
def template_db(pg_admin_url: str, engine_templates: dict[str, str], engine: str) -> str:
    """Name of the migrated template database of this test's engine."""
    return template_for(pg_admin_url, engine_templates, engine)


@pytest.fixture
def empty_db(pg_admin_url: str, engine: str) -> Iterator[str]:
    """URL of a brand-new empty database (for migration tests) of this test's engine."""
    name = f"e_{uuid.uuid4().hex[:10]}"
    url = create_database(pg_admin_url, name, engine=engine)
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture
def db_url(pg_admin_url: str, template_db: str) -> Iterator[str]:
    """URL of a fresh, fully migrated database of this test's engine."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    url = create_database(pg_admin_url, name, template=template_db)
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture
def twin_dbs(pg_admin_url: str, engine_templates: dict[str, str]) -> Iterator[dict[str, str]]:
    """A migrated database of each engine on the same server (tests that compare the engines
    on the same data; mark them `timescaledb_only`)."""
    urls: dict[str, str] = {}
    for engine in (TIMESCALEDB, PLAIN):
        name = f"twin_{engine[:5]}_{uuid.uuid4().hex[:8]}"
        template = template_for(pg_admin_url, engine_templates, engine)
        urls[engine] = create_database(pg_admin_url, name, template=template)
    yield urls
    for url in urls.values():
        drop_database(pg_admin_url, str(psycopg.conninfo.conninfo_to_dict(url)["dbname"]))


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Test settings pointing at this test's database."""
    return test_settings(db_url)


@pytest.fixture
def pool(db_url: str) -> Iterator[ConnectionPool]:
    """A small pool on this test's database."""
    p = make_pool(db_url, min_size=1, max_size=6, name="test")
    yield p
    p.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 protocol server on loopback (moto in server mode) for the whole session."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_settings(db_url: str, s3_endpoint: str) -> Settings:
    """Settings for this test's database and fresh, empty tickets/fuel/backup buckets."""
    suffix = uuid.uuid4().hex[:8]
    settings = test_settings(
        db_url,
        rustfs_endpoint=s3_endpoint,
        rustfs_access_key="test-access",
        rustfs_secret_key="test-secret",
        rustfs_region="us-east-1",
        tickets_bucket=f"tickets-{suffix}",
        fuel_bucket=f"fuel-{suffix}",
        backup_bucket=f"backup-{suffix}",
    )
    s3 = make_s3_client(settings)
    for bucket in (settings.tickets_bucket, settings.fuel_bucket, settings.backup_bucket):
        s3.create_bucket(Bucket=bucket)
    return settings


def read_only_url(db_url: str) -> str:
    """The URL of `db_url` as the read-API's role `dashboard_ro` (USAGE on reporting only)."""
    return psycopg.conninfo.make_conninfo(db_url, options="-c role=dashboard_ro")


@pytest.fixture
def ro_pool(db_url: str) -> Iterator[ConnectionPool]:
    """Connections that run as `dashboard_ro`, like the read-API's in production."""
    pool = make_pool(read_only_url(db_url), min_size=1, max_size=2, name="ro")
    yield pool
    pool.close()


def router_client(router: Any, settings: Settings, pool: ConnectionPool) -> Any:
    """A TestClient for one read-API router on its own app: the house error handlers, and
    `app.state` as dashboard_api's lifespan sets it (the read-only pool, the settings)."""
    from fastapi import FastAPI  # noqa: PLC0415
    from fastapi.testclient import TestClient  # noqa: PLC0415

    from dashboard.errors import install_error_handlers  # noqa: PLC0415

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    app.state.ro_pool = pool
    app.state.settings = settings
    return TestClient(app)
