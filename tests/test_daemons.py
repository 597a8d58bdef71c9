"""Several `mailer run` processes, as an operator starts them: in real processes, because
the process (its lock, its death by kill -9) is what is tested."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.command import ROOT, environment, runner
from tests.pg import PostgresServer, free_port

TAKEOVER_SECONDS = 15.0  # the bound promised for a new leader after the old one died


class Daemon:
    """A `mailer run` process whose log (stderr) is read as it comes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        command = [sys.executable, "-m", "mailer", "run", *args]
        self.process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
        self.log = ""

    def wait_for(self, *markers: str, seconds: float = 90) -> str:
        """The log so far once it holds every marker; fails after ``seconds``."""
        assert self.process.stderr is not None
        pipe = self.process.stderr.fileno()
        deadline = time.monotonic() + seconds
        while not all(m in self.log for m in markers) and time.monotonic() < deadline:
            ready, _, _ = select.select([pipe], [], [], 0.2)
            chunk = os.read(pipe, 65536) if ready else b""
            if ready and not chunk:
                break  # the process closed its stderr
            self.log += chunk.decode(errors="replace")
        missing = [m for m in markers if m not in self.log]
        assert not missing, f"{missing} not in the log:\n{self.log}"
        return self.log

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        assert self.process.stderr is not None
        self.process.stderr.close()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def project(tmp_path: Path, database_url: str, **overrides: str) -> dict[str, str]:
    """The shipped config, on its own database, with no schedules due today."""
    config = tmp_path / "config.toml"
    config.write_text((ROOT / "config.toml").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "no-schedules").mkdir(exist_ok=True)
    env = environment(config, database_url)
    env.update(
        MAILER_PATHS__SCHEDULES=str(tmp_path / "no-schedules"),
        MAILER_PATHS__DATA=str(tmp_path / "var"),
        MAILER_SANDBOX__SMTP_PORT=str(free_port()),
        MAILER_SANDBOX__IMAP_PORT=str(free_port()),
        **overrides,
    )
    return env


def test_a_second_daemon_on_one_sqlite_file_refuses_and_web_alone_delivers_nothing(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    env = project(tmp_path, f"sqlite:///{tmp_path / 'mailer.db'}")
    mailer = runner(env)
    mailer("db", "upgrade")
    mailer("customers", "import", str(ROOT / "demo" / "customers.csv"))
    mailer("templates", "send-test", "birthday", "--to", "maria.ivanova@example.com")
    daemons.append(web := Daemon(env, "--only", "web"))
    assert "not delivering; roles web;" in web.wait_for("is running")
    second = runner(env, process=True)("run", check=False)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"error: another `mailer run` (pid {web.process.pid}) is using "
        f"{tmp_path / 'mailer.db'}; on SQLite only one may run: stop it first, or use "
        "PostgreSQL to run several"
    ]
    (queued,) = json.loads(mailer("outbox", "list", "--json").stdout)  # commands still work
    assert web.stop() == 0
    assert queued["status"] == "queued"
    (still,) = json.loads(mailer("outbox", "list", "--json").stdout)
    assert still["status"] == "queued", "the web app alone sends nothing"


def test_an_unknown_role_or_none_is_one_line(tmp_path: Path) -> None:
    """`--only "$ROLES"` with the variable unset must not run every role."""
    env = project(tmp_path, f"sqlite:///{tmp_path / 'mailer.db'}")
    result = runner(env)("run", "--only", "web,inbx", check=False)
    assert (result.returncode, result.stderr.strip()) == (
        1,
        "error: --only: 'inbx' is not a role; roles are delivery, inbox, schedules, web",
    )
    result = runner(env)("run", "--only", "", check=False)
    assert (result.returncode, result.stderr.strip()) == (
        1,
        "error: --only: no role given; roles are delivery, inbox, schedules, web",
    )


def test_one_daemon_leads_the_inbox_and_schedules_and_another_takes_over_after_kill_9(
    tmp_path: Path,
    postgres: PostgresServer,
    migrated_postgres: str,
    daemons: list[Daemon],
) -> None:
    """Two daemons on one PostgreSQL: one watches the mailbox and fires the schedules, the
    other stands by; killed with -9, the first is replaced within the bound."""
    postgres.admin("DROP DATABASE IF EXISTS two_daemons")
    postgres.admin(f"CREATE DATABASE two_daemons TEMPLATE {migrated_postgres}")
    env = project(
        tmp_path,
        postgres.url("two_daemons"),
        MAILER_SANDBOX__ENABLED="false",
        MAILER_IMAP__PORT=str(free_port()),  # nothing listens: the watcher retries, as it would
    )
    leads = ("inbox INBOX: this process leads", "schedules: this process leads")
    daemons.append(first := Daemon(env, "--only", "inbox,schedules"))
    first.wait_for("is running", *leads)
    daemons.append(second := Daemon(env, "--only", "inbox,schedules,delivery"))
    log = second.wait_for(
        "is running", "inbox INBOX: another process leads", "schedules: another process leads"
    )
    assert "this process leads" not in log
    first.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    second.wait_for(*leads, seconds=TAKEOVER_SECONDS)
    assert time.monotonic() - killed < TAKEOVER_SECONDS
    assert "lost the database" not in second.log
    assert second.stop() == 0
