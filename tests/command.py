"""The `mailer` command for tests: run in this process as `python -m mailer` would run it.

A process costs ~2.7 s, mostly imports, and a command test runs several; so each call sets
the environment, arguments and standard streams a process would get, calls `cli.main()`
and returns what a process would have: exit code, stdout and stderr. Tests of the process
itself (signals, the entry point) use ``process=True``."""

from __future__ import annotations

import functools
import io
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from mailer import cli
from mailer.cli import common
from mailer.core.clock import Clock
from mailer.store import db
from tests.configs import ROOT

Mailer = Callable[..., subprocess.CompletedProcess[str]]


def environment(config: Path, database_url: str) -> dict[str, str]:
    """This process's environment without MAILER_* settings, then the project's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_CONFIG=str(config),
        MAILER_DATABASE__URL=database_url,
        MAILER_PATHS__TEMPLATES=str(ROOT / "templates"),
        MAILER_PATHS__SCHEDULES=str(ROOT / "schedules"),
        MAILER_WEB__BIND="127.0.0.1:0",
        COLUMNS="200",
    )
    return env


def in_process(
    env: Mapping[str, str], args: Sequence[str], stdin: str = "", clock: Clock | None = None
) -> subprocess.CompletedProcess[str]:
    """`mailer ARGS...` through `cli.main()`; everything it changes is put back afterwards,
    and the engines it opened are closed, as the end of a process would close them. With
    ``clock``, the command reads the time from it, not from the wall."""
    stdout, stderr = io.StringIO(), io.StringIO()
    engines: list[Engine] = []
    connect = db.connect

    def connect_and_keep(url: str, **kwargs: Any) -> Engine:
        engines.append(connect(url, **kwargs))
        return engines[-1]

    with pytest.MonkeyPatch.context() as patch:
        for name in set(os.environ) - set(env):
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        patch.setattr(sys, "argv", ["mailer", *args])
        patch.setattr(sys, "stdin", io.StringIO(stdin))
        patch.setattr(db, "connect", connect_and_keep)
        if clock is not None:
            patch.setattr(cli, "App", functools.partial(common.App, clock=clock))
        # no handlers, as in a new process: a warning logged reaches stderr, pytest's capture not
        patch.setattr(logging.getLogger(), "handlers", [])
        for console in (common.out, common.err):  # colours are chosen at import, on a pipe none
            patch.setattr(console, "_color_system", None)
        try:
            with redirect_stdout(stdout), redirect_stderr(stderr):
                cli.main()
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code, stderr)
        finally:
            for engine in engines:
                engine.dispose()
    return subprocess.CompletedProcess(
        ["mailer", *args], code, stdout.getvalue(), stderr.getvalue()
    )


def _exit_code(code: object, stderr: io.StringIO) -> int:
    """The status `sys.exit(code)` gives a process: a message is printed and means 1."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=stderr)
    return 1


def in_a_process(
    env: Mapping[str, str], args: Sequence[str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`python -m mailer ARGS...` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        input=stdin,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def runner(env: Mapping[str, str], *, process: bool = False, clock: Clock | None = None) -> Mailer:
    """`mailer ARGS...` on this environment (read at each call, so a test can change it);
    a traceback always fails the test, and so does exit 1 unless ``check=False``. A
    ``clock`` is the time the commands read (in this process only)."""

    def run(*args: str, check: bool = True, stdin: str = "") -> subprocess.CompletedProcess[str]:
        if process:
            assert clock is None, "a process of its own reads the wall clock"
            result = in_a_process(env, args, stdin)
        else:
            result = in_process(env, args, stdin, clock)
        assert "Traceback" not in result.stderr, result.stderr
        if check:
            assert result.returncode == 0, result.stderr
        return result

    return run


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> dict[str, str]:
    """A config.toml like the shipped one, on its own database."""
    config = tmp_path / "config.toml"
    config.write_text((ROOT / "config.toml").read_text(encoding="utf-8"), encoding="utf-8")
    return environment(config, database_url)


@pytest.fixture
def mailer(project: dict[str, str]) -> Mailer:
    return runner(project)


@pytest.fixture
def on_sqlite(tmp_path: Path) -> tuple[Mailer, dict[str, str]]:
    """For mistakes made before any database is reached: one backend is enough."""
    config = tmp_path / "config.toml"
    config.write_text((ROOT / "config.toml").read_text(encoding="utf-8"), encoding="utf-8")
    env = environment(config, f"sqlite:///{tmp_path / 'var' / 'mailer.db'}")
    return runner(env), env


@pytest.fixture
def with_demo(mailer: Mailer) -> Mailer:
    mailer("db", "upgrade")
    mailer("customers", "import", str(ROOT / "demo" / "customers.csv"))
    return mailer


def add_user(mailer: Mailer, name: str, *options: str) -> subprocess.CompletedProcess[str]:
    """A support user with a password, added as a script adds one: through stdin."""
    return mailer(
        "users", "add", name, "--role", "support", *options, "--password-stdin",
        check=False, stdin="correct horse battery\n",
    )  # fmt: skip
