"""`mailer check`: every problem in config, database, templates and schedules, in one pass.

Start-up (`mailer run`, `mailer web`, every command that uses the database) refuses to go
on for the same reasons, through the same calls: reading the config and `open_database`.
So a clean `mailer check` means start-up will not stop on any of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import parseaddr
from pathlib import Path

from sqlalchemy import Engine

from mailer.commerce import insights
from mailer.core import config
from mailer.core.clock import Clock
from mailer.core.errors import ConfigError, DatabaseUnavailable, Problem
from mailer.core.fieldtypes import special_use_domain
from mailer.customers import tokens
from mailer.outbound import dkim
from mailer.outbound.templates import TemplateStore
from mailer.scheduling import schedules
from mailer.store import migrate


def check_all(config_path: Path, clock: Clock) -> list[Problem]:
    """Problems of every kind, warnings among them; with a broken config, the default
    folders are checked and the database is not (its URL may be what is broken); with no
    config file at all, only that is said."""
    problems: list[Problem] = []
    company, segments = None, None
    try:
        cfg = config.load(config_path)
    except ConfigError as exc:
        problems += exc.problems
        if not config_path.is_file():  # no config at all: its folders are anyone's guess
            return problems
        templates_dir, schedules_dir = config.folders(config_path)
    else:
        templates_dir, schedules_dir = cfg.templates_dir, cfg.schedules_dir
        company = cfg.settings.company or None
        segments = schedules.segment_names(cfg.settings.insight)
        problems += warnings(cfg) + _refusals(cfg)
    store = TemplateStore(templates_dir)
    problems += store.check(company=company)
    _, schedule_problems = schedules.load_schedules(schedules_dir, store.names(), clock, segments)
    return problems + schedule_problems


def _refusals(cfg: config.Config) -> list[Problem]:
    """What start-up would stop on after reading the config: the database, the data folder
    where the key that signs unsubscribe links is kept (made there if missing), and the
    DKIM keys; and what an insight refresh would stop on: segment rules that leave
    customers unnamed."""
    problems: list[Problem] = []
    steps = (
        lambda: open_database(cfg).dispose(),
        lambda: tokens.load_secret(cfg),
        lambda: dkim.from_config(cfg),
        lambda: insights.segments_config(cfg.settings.insight),
    )
    for step in steps:
        try:
            step()
        except ConfigError as exc:
            problems += exc.problems
    return problems


def open_database(cfg: config.Config, *, require_current: bool = True) -> Engine:
    """The configured database, answering and (unless `mailer db upgrade` asks) with the
    current schema; else a ConfigError naming ``[database] url`` and why."""
    try:
        return migrate.open_database(cfg.database_url, require_current=require_current)
    except DatabaseUnavailable as exc:
        raise ConfigError([Problem(cfg.where("database", "url"), str(exc))]) from None


@contextmanager
def listening(cfg: config.Config, section: str, key: str) -> Iterator[None]:
    """Start-up listening on a port the config names: one taken or not allowed is named by
    its key, like a mistake in the file, since `mailer check` cannot know it in advance."""
    try:
        yield
    except OSError as exc:
        message = f"cannot listen there: {exc.strerror or exc}"
        raise ConfigError([Problem(cfg.where(section, key), message)]) from None


PLACEHOLDER_FROM = config.SenderSettings.model_fields["from_"].default


def warnings(cfg: config.Config) -> list[Problem]:
    """Settings that work but may surprise: no sender set, so mail would go out from the
    placeholder; a sender at a special-use domain, whose mail stays inside the network it
    is sent in (fine for an intranet or a test setup)."""
    sender = cfg.settings.sender
    found: list[Problem] = []
    if sender.from_ == PLACEHOLDER_FROM:
        message = f"not set: mail would go out from the placeholder {PLACEHOLDER_FROM}"
        found.append(Problem(cfg.where("sender", "from"), message, warning=True))
    for key, value in (("from", sender.from_), ("reply_to", sender.reply_to)):
        address = parseaddr(value or "")[1]
        name = special_use_domain(address)
        if name:
            message = (
                f"{address} is at a special-use domain (.{name}); "
                "mail to or from it will not leave your network"
            )
            found.append(Problem(cfg.where("sender", key), message, warning=True))
    return found
