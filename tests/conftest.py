"""Fixtures: each database test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mailer import db, migrate
from mailer.clock import ManualClock
from tests.pg import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
_database_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database, not yet migrated, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mailer.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"test_{next(_database_names)}"
    server.admin(f"CREATE DATABASE {name}")
    return server.url(name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated database, on each backend."""
    engine = db.connect(database_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
