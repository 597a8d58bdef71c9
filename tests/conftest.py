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
from mailer.config import Config
from tests.configs import shipped_config
from tests.dovecot import DovecotServer
from tests.pg import PostgresServer

_database_names = itertools.count()
_folders = itertools.count()


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


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """A real Dovecot IMAP server on a free loopback port, for the whole session."""
    server = DovecotServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def folder(dovecot: DovecotServer) -> str:
    """A fresh mailbox per test, so UIDs and messages never leak between tests."""
    name = f"Test{next(_folders)}"
    dovecot.create(name)
    return name


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    """The shipped config.toml, with its own data folder and an https base URL."""
    return shipped_config(
        tmp_path, {"MAILER_WEB__BASE_URL": "https://mail.northwind-roasters.example"}
    )
