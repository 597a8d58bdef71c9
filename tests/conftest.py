"""Fixtures: each database test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from playwright.async_api import Page
from sqlalchemy import Engine, make_url

from mailer import daemon
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import profiles
from mailer.outbound.delivery import Delivery
from mailer.outbound.smtp import SmtpTarget
from mailer.scheduling.firing import Firing
from mailer.staff import users
from mailer.store import db, migrate
from mailer.store.models import Role
from mailer.web.server import build as build_web
from tests.configs import shipped_config
from tests.dovecot import DovecotServer
from tests.pg import PostgresServer
from tests.site import Site, served
from tests.smtp_sink import Sink, start_sink

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


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole migration chain run once: each test's database starts as a copy of it,
    which saves about a second a test (tests/test_migrations.py runs the chain itself)."""
    path = tmp_path_factory.mktemp("migrated") / "mailer.db"
    engine = db.connect(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def migrated_postgres(postgres: PostgresServer) -> str:
    """The same for PostgreSQL: a template database that test databases are created from."""
    postgres.admin("CREATE DATABASE migrated")
    engine = db.connect(postgres.url("migrated"))
    migrate.upgrade(engine)
    engine.dispose()
    return "migrated"


@pytest.fixture
def engine(request: pytest.FixtureRequest, database_url: str) -> Iterator[Engine]:
    """A migrated database, on each backend."""
    name = make_url(database_url).database
    assert name is not None
    if database_url.startswith("sqlite"):
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), name)
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        template = request.getfixturevalue("migrated_postgres")
        server.admin(f"DROP DATABASE {name}", f"CREATE DATABASE {name} TEMPLATE {template}")
    engine = db.connect(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session", autouse=True)
def quick_password_hashes() -> Iterator[None]:
    """Staff passwords hashed with argon2id at its lowest cost: signing in is what these
    tests check, not the hash's strength, and the shipped cost (64 MiB, three passes) made
    each sign-in and each new account take a second on this machine. Processes the tests
    start still use the shipped cost."""
    shipped = users.HASHER
    users.HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    yield
    users.HASHER = shipped


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


# Customers in five zones for the schedule tests: birthdays around 29 February, one
# without a zone (the business's), one without marketing consent, one without tags.
HEADER = "email,name,locale,timezone,birthday,tags,marketing_consent,relationship_consent,city\n"
PEOPLE = {
    "aroha@example.nz": "Aroha,en-NZ,Pacific/Auckland,1990-02-28,newsletter,yes,yes,Auckland",
    "maria@example.bg": "Мария,bg,Europe/Sofia,1988-02-29,newsletter,yes,yes,София",
    "siti@example.id": "Siti,id,Asia/Jakarta,1992-03-01,newsletter,yes,yes,Jakarta",
    "jose@example.ph": "Jose,tl,Asia/Manila,1985-12-01,newsletter;vip,yes,yes,Manila",
    "dana@example.com": "Dana,en-US,America/Los_Angeles,1979-02-27,newsletter,yes,yes,LA",
    "ivan@example.bg": "Иван,bg,,1970-02-28,newsletter,no,yes,Пловдив",
    "nobody@example.com": "Nobody,en,Europe/Sofia,,,yes,yes,",
}
FIRING = Firing(fallback_zone="Europe/Sofia", domain="northwind-roasters.example")


def add_customers(engine: Engine, directory: Path, csv: str, now: datetime) -> None:
    """Customers as marketing would import them: a CSV file, header first, every row valid."""
    path = directory / "customers.csv"
    path.write_text(csv, encoding="utf-8")
    report = profiles.import_csv(engine, path, now)
    assert not report.rejected, report.rejected


@pytest.fixture
def people(engine: Engine, tmp_path: Path) -> None:
    rows = [f"{email},{rest}" for email, rest in PEOPLE.items()]
    add_customers(
        engine, tmp_path, HEADER + "\n".join(rows) + "\n", datetime(2026, 1, 1, tzinfo=UTC)
    )


@pytest.fixture
async def sink() -> AsyncIterator[tuple[Sink, int]]:
    """An aiosmtpd server on a free loopback port that keeps what it receives: (handler, port)."""
    handler = Sink()
    server, port = await start_sink(handler)
    yield handler, port
    server.close()
    await server.wait_closed()


@pytest.fixture
async def delivering(
    engine: Engine, cfg: Config, clock: ManualClock, sink: tuple[Sink, int]
) -> tuple[Delivery, Sink]:
    """The daemon's delivery workers on the shipped config, delivering to a sink."""
    target = SmtpTarget(host="127.0.0.1", port=sink[1])
    return daemon.build_delivery(cfg, engine, clock, target), sink[0]


# The web app and the browser ---------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright never downloads a browser here
PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def browser_type_launch_args(
    browser_type_launch_args: dict[str, Any], browser_name: str
) -> dict[str, Any]:
    if browser_name != "chromium":
        return browser_type_launch_args
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": ["--disable-gpu"]}


@pytest.fixture
def staff(engine: Engine, clock: ManualClock) -> dict[Role, str]:
    """One account per role, all with PASSWORD: role -> user name."""
    names = {Role.SUPPORT: "sam", Role.MARKETING: "mia", Role.ADMIN: "ada"}
    with engine.begin() as conn:
        for role, name in names.items():
            users.add(conn, name, role, PASSWORD, clock.now())
    return names


@pytest.fixture
def site(engine: Engine, cfg: Config, clock: ManualClock) -> Iterator[Site]:
    with served(build_web(cfg, engine, clock)) as running:
        yield running


async def sign_in(page: Page, site: Site, name: str) -> None:
    """Through the login form, as a person would."""
    await page.goto(site.url + "/login")
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(lambda url: "/login" not in url)
