"""Shared test fixtures: a real PostgreSQL + PostGIS server, migrated once, a fresh DB per test.

Where the server comes from (first that applies):
1. `TEST_DATABASE_URL` — a superuser URL of a server you provide (databases are created in it);
2. testcontainers with `timescale/timescaledb-ha:pg16` — when a Docker engine answers;
3. a throwaway cluster from the local PostgreSQL binaries (`tests/pgcluster.py`).
Migrations are applied once into a template database; each test gets `CREATE DATABASE ...
TEMPLATE`, which is a file copy and takes a few tens of milliseconds.
"""

from __future__ import annotations

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

from run_migrations import migrate  # noqa: E402
from tests.pgcluster import LocalCluster, free_port  # noqa: E402
from ts_shared import Settings, make_pool, make_s3_client  # noqa: E402


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
    cluster = LocalCluster()
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


def test_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for tests: no .env file, fast retries, the given database."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "jimi_backoff_base_s": 0.01,
        "jimi_backoff_cap_s": 0.05,
        "log_level": "DEBUG",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a test function


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """CREATE DATABASE (optionally from a template) and return its URL."""
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


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> Iterator[str]:
    """Name of a database with every migration applied, used as the per-test template."""
    name = f"tpl_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_admin_url, name)
    migrate(url, test_settings(url))
    yield name
    drop_database(pg_admin_url, name)


@pytest.fixture
def empty_db(pg_admin_url: str) -> Iterator[str]:
    """URL of a brand-new empty database (for migration tests)."""
    name = f"e_{uuid.uuid4().hex[:10]}"
    url = create_database(pg_admin_url, name)
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture
def db_url(pg_admin_url: str, template_db: str) -> Iterator[str]:
    """URL of a fresh, fully migrated database for this test."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    url = create_database(pg_admin_url, name, template=template_db)
    yield url
    drop_database(pg_admin_url, name)


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
