"""`mailer check` finds what start-up would stop on, through the same calls start-up makes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer import checks
from mailer.core import config
from mailer.core.clock import ManualClock
from mailer.core.errors import ConfigError
from mailer.store import db, migrate
from tests.configs import ROOT
from tests.pg import PostgresServer, free_port

SENDER = '[sender]\nfrom = "Support <support@northwind.coffee>"\n'


def project(
    tmp_path: Path, database_url: str, extra: str = "", data: str = "var", sender: str = SENDER
) -> Path:
    """A config.toml with the repository's templates and schedules and a sender of its own
    (the placeholder is warned of); relative paths are taken from ``tmp_path``."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[database]\nurl = "{database_url}"\n'
        f'[paths]\ntemplates = "{ROOT / "templates"}"\nschedules = "{ROOT / "schedules"}"\n'
        f'data = "{data}"\n{sender}{extra}',
        encoding="utf-8",
    )
    return path


def errors_and_warnings(path: Path, clock: ManualClock) -> tuple[list[str], list[str]]:
    found = checks.check_all(path, clock)
    return [str(p) for p in found if not p.warning], [str(p) for p in found if p.warning]


def start_up_problems(path: Path) -> list[str]:
    """What every command and `mailer run` say when they open the configured database."""
    with pytest.raises(ConfigError) as caught:
        checks.open_database(config.load(path, {}))
    return [str(p) for p in caught.value.problems]


@pytest.fixture
def upgraded(database_url: str) -> str:
    engine = db.connect(database_url)
    migrate.upgrade(engine)
    engine.dispose()
    return database_url


def test_a_migrated_database_and_the_shipped_templates_pass(
    tmp_path: Path, upgraded: str, clock: ManualClock
) -> None:
    assert errors_and_warnings(project(tmp_path, upgraded), clock) == ([], [])


def test_a_database_without_the_schema_is_a_problem_as_at_start_up(
    tmp_path: Path, database_url: str, clock: ManualClock
) -> None:
    empty = db.connect(database_url)  # there, but without the schema
    empty.connect().close()
    empty.dispose()
    path = project(tmp_path, database_url)
    expected = f"{path}: [database] url: {migrate.NOT_CURRENT}"
    assert errors_and_warnings(path, clock) == ([expected], [])
    assert start_up_problems(path) == [expected]


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("{tmp}/db/mailer.db", "no database at {tmp}/db/mailer.db; `mailer db upgrade` creates"),
        ("/proc/mailer/mailer.db", "no database at /proc/mailer/mailer.db; `mailer db upgrade`"),
        ("{tmp}", "cannot open sqlite:///{tmp}: unable to open database file"),
    ],
)
def test_an_sqlite_file_that_is_not_there_is_named_by_check_and_start_up_and_not_made(
    tmp_path: Path, clock: ManualClock, location: str, reason: str
) -> None:
    """Not made, nor its folder: a mistyped path must not become an empty database."""
    path = project(tmp_path, "sqlite:///" + location.format(tmp=tmp_path))
    (problem,), _ = errors_and_warnings(path, clock)
    assert problem.startswith(f"{path}: [database] url: " + reason.format(tmp=tmp_path))
    assert start_up_problems(path) == [problem]
    assert not (tmp_path / "db").exists()


def test_a_postgresql_server_that_does_not_answer_is_named_without_its_password(
    tmp_path: Path, clock: ManualClock
) -> None:
    url = f"postgresql://mailer:s3cret@127.0.0.1:{free_port()}/mailer"
    path = project(tmp_path, url)
    (problem,), _ = errors_and_warnings(path, clock)
    assert problem.startswith(f"{path}: [database] url: cannot open postgresql://mailer:***@")
    assert "Connection refused" in problem and "s3cret" not in problem


def test_a_postgresql_database_that_does_not_exist_is_named(
    tmp_path: Path, postgres: PostgresServer, clock: ManualClock
) -> None:
    path = project(tmp_path, postgres.url("no_such_database"))
    (problem,), _ = errors_and_warnings(path, clock)
    assert 'database "no_such_database" does not exist' in problem


def test_a_data_folder_that_cannot_hold_the_link_signing_key_is_named(
    tmp_path: Path, upgraded: str, clock: ManualClock
) -> None:
    path = project(tmp_path, upgraded, data="config.toml/var")
    errors, _ = errors_and_warnings(path, clock)
    assert errors == [
        f"{path}: [paths] data: cannot keep the link-signing key in"
        f" {tmp_path}/config.toml/var/secret.key: Not a directory"
    ]


def test_a_sender_at_a_special_use_domain_is_a_warning_not_a_problem(
    tmp_path: Path, upgraded: str, clock: ManualClock
) -> None:
    sender = '[sender]\nfrom = "Support <support@intranet.local>"\nreply_to = "help@shop.test"\n'
    path = project(tmp_path, upgraded, sender=sender)
    assert errors_and_warnings(path, clock) == (
        [],
        [
            f"{path}: [sender] from: support@intranet.local is at a special-use domain (.local);"
            " mail to or from it will not leave your network",
            f"{path}: [sender] reply_to: help@shop.test is at a special-use domain (.test);"
            " mail to or from it will not leave your network",
        ],
    )


def test_segment_rules_that_leave_customers_unnamed_are_a_problem_before_any_refresh(
    tmp_path: Path, upgraded: str, clock: ManualClock
) -> None:
    rules = "[insight.segments.best]\nrecency = [4, 5]\nfrequency = [4, 5]\nmonetary = [1, 5]\n"
    errors, _ = errors_and_warnings(project(tmp_path, upgraded, extra=rules), clock)
    assert len(errors) == 1
    assert "[insight] segments" in errors[0] and "score combinations fit no segment" in errors[0]
