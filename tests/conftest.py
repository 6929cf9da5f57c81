"""Fixtures for real services: Redis, the database, the sandbox, worker processes.

``REDIS_URL`` selects a Redis server, else an embedded Valkey is started.
``DATABASE_URL`` selects PostgreSQL, else a SQLite file is used. Either way the
tests talk to a real server; fakeredis serves only the fast unit tests that
ask for it by name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from shared.models import Base
from tests.helpers import ServiceEnv, reset_caches
from workers.embedded import EmbeddedValkey

TEST_SECRET_KEY = "gC3v0qQG4c5b3eW1w6qJ8dM2yXxZp7s9hR0tUuVvWwQ="


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: ``REDIS_URL`` if set, else an embedded Valkey."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database: ``DATABASE_URL`` (PostgreSQL) if set, else SQLite."""
    from shared.migrate import upgrade

    url = os.environ.get("DATABASE_URL")
    if url:
        url = _psycopg_url(url)
        _drop_everything(url)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'apexsync.db'}"
    upgrade(url)
    return url


def _psycopg_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _drop_everything(url: str) -> None:
    from shared.db import make_engine

    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def clean_db(database_url: str) -> str:
    """The database with every table emptied."""
    from shared.db import get_engine

    engine = get_engine(database_url)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Restarting the sequences gives ids from 1, as SQLite does once
            # its tables are empty, so a test reads the same ids on both.
            names = ", ".join(table.name for table in Base.metadata.sorted_tables)
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            return database_url
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    return database_url


@pytest.fixture
def clean_redis(redis_url: str) -> str:
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[object]:
    """Start a fresh sandbox on a free loopback port.

    ``@pytest.mark.sandbox(packages=N, seed=S)`` sets its seed.
    """
    from sandbox.server import SandboxServer

    marker = request.node.get_closest_marker("sandbox")
    options = dict(marker.kwargs) if marker else {}
    server = SandboxServer(
        port=0, packages=options.get("packages", 300), seed=options.get("seed", 7)
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def service(
    clean_db: str,
    clean_redis: str,
    sandbox: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ServiceEnv]:
    """Settings pointing at the real Redis, the test database and the sandbox."""
    env = ServiceEnv.build(
        database_url=clean_db,
        redis_url=clean_redis,
        sandbox=sandbox,
        state_dir=tmp_path,
        secret_key=TEST_SECRET_KEY,
    )
    for key, value in env.variables.items():
        monkeypatch.setenv(key, value)
    reset_caches()
    try:
        yield env
    finally:
        env.stop_processes()
        for key in env.variables:
            monkeypatch.delenv(key, raising=False)
        reset_caches()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sandbox(packages, seed): sandbox seed options")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under ``APEXSYNC_REQUIRE_SERVICES`` (CI), a skipped test fails the run."""
    if not os.environ.get("APEXSYNC_REQUIRE_SERVICES"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        reporter.write_line(
            f"{skipped} tests were skipped; CI requires every suite to run."
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
