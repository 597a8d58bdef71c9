"""The shipped config.toml, loaded for a test or benchmark with its own overrides."""

from __future__ import annotations

from pathlib import Path

from mailer.core import config
from mailer.core.config import Config
from tests.dovecot import DovecotServer

ROOT = Path(__file__).resolve().parent.parent


def shipped_config(directory: Path, env: dict[str, str]) -> Config:
    """config.toml as shipped, with the repo's templates and a data folder in ``directory``."""
    path = directory / "config.toml"
    path.write_text((ROOT / "config.toml").read_text(encoding="utf-8"), encoding="utf-8")
    defaults = {
        "MAILER_PATHS__TEMPLATES": str(ROOT / "templates"),
        "MAILER_PATHS__DATA": str(directory / "var"),
    }
    return config.load(path, {**defaults, **env})


def real_servers(dovecot: DovecotServer, smtp_port: int, mailbox: str) -> dict[str, str]:
    """Overrides that point the daemon at a Dovecot mailbox and an SMTP sink, not the sandbox."""
    return {
        "MAILER_SANDBOX__ENABLED": "false",
        "MAILER_WEB__BIND": "127.0.0.1:0",  # any free port: tests run several daemons
        "MAILER_SMTP__PORT": str(smtp_port),
        "MAILER_IMAP__PORT": str(dovecot.port),
        "MAILER_IMAP__USERNAME": dovecot.user,
        "MAILER_IMAP__PASSWORD_ENV": "MAILER_TEST_IMAP_PASSWORD",
        "MAILER_IMAP__MAILBOX": mailbox,
        "MAILER_TEST_IMAP_PASSWORD": dovecot.password,
    }


def inbox_config(
    directory: Path, dovecot: DovecotServer, smtp_port: int, folder: str, **env: str
) -> Config:
    """The shipped config.toml pointed at a Dovecot folder and an SMTP port, without schedule
    files: the only mail the daemon makes is acknowledgements."""
    directory.mkdir(exist_ok=True)
    (directory / "no-schedules").mkdir()
    overrides = {"MAILER_PATHS__SCHEDULES": str(directory / "no-schedules"), **env}
    return shipped_config(directory, {**real_servers(dovecot, smtp_port, folder), **overrides})
