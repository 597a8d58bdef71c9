"""Two `mailer web` processes serving the API from one PostgreSQL, as behind a load
balancer: a key's rate is counted once across both, and a key revoked with the command
line is refused by both at once; and one `mailer web` of several processes
(`[web] processes`), which start, serve one port and stop together."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer.api import limits
from mailer.store import db, migrate
from tests.command import environment, runner
from tests.configs import ROOT
from tests.pg import PostgresServer
from tests.site import Reply, Site
from tests.test_cli import _read_until

START_SECONDS = 60.0  # ~3 s on a quiet machine, mostly imports
RATE = 4
PATH = "/api/v1/customers/maria@example.bg"


@pytest.fixture
def project(
    postgres: PostgresServer, migrated_postgres: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """The shipped config.toml on a migrated PostgreSQL database of its own."""
    postgres.admin(f"CREATE DATABASE two_web_processes TEMPLATE {migrated_postgres}")
    config = tmp_path / "config.toml"
    config.write_text((ROOT / "config.toml").read_text(encoding="utf-8"), encoding="utf-8")
    try:
        yield environment(config, postgres.url("two_web_processes"))
    finally:
        postgres.admin("DROP DATABASE two_web_processes WITH (FORCE)")


@pytest.fixture
def two_servers(project: dict[str, str]) -> Iterator[tuple[Site, Site]]:
    """Both started at once (most of a start is imports), each on a free port."""
    command = [sys.executable, "-m", "mailer", "web"]
    with contextlib.ExitStack() as stack:
        started = []
        for _ in range(2):
            process = stack.enter_context(
                subprocess.Popen(command, env=project, stderr=subprocess.PIPE, text=True)
            )
            stack.callback(process.kill)  # however the test ends; after SIGTERM, a no-op
            started.append(process)
        sites = []
        for process in started:
            said = _read_until(process, "web app on", START_SECONDS)
            address = re.search(r"web app on (http://\S+)", said)
            assert address is not None, said
            sites.append(Site(address.group(1).rstrip("/")))
        yield sites[0], sites[1]
        for process in started:
            process.send_signal(signal.SIGTERM)
        assert [process.wait(timeout=START_SECONDS) for process in started] == [0, 0]


def burst(sites: tuple[Site, Site], key: str, count: int) -> list[Reply] | None:
    """``count`` requests, alternately to each server; None when a minute began meanwhile
    (the servers run on the real clock, and a new minute starts a new count)."""
    started = datetime.now(UTC)
    headers = {"Authorization": f"Bearer {key}"}
    replies = [sites[n % 2].call("GET", PATH, headers=headers) for n in range(count)]
    ended = datetime.now(UTC)
    return replies if limits.window_start(started) == limits.window_start(ended) else None


def test_two_processes_share_a_keys_rate_and_both_refuse_it_once_revoked(
    project: dict[str, str], two_servers: tuple[Site, Site]
) -> None:
    mailer = runner(project)
    for attempt in range(2):  # a second key, had the first burst straddled two minutes
        name = f"shop-{attempt}"
        made = mailer("api-keys", "create", name, "--scope", "customers:read", "--rate", "4")
        replies = burst(two_servers, made.stdout.strip(), RATE + 2)
        if replies is not None:
            break
    assert replies is not None, "two bursts in a row straddled a minute"
    statuses = [reply.status for reply in replies]
    assert statuses == [404] * RATE + [429, 429], "404: the key passed, maria is not there"
    now = datetime.now(UTC)
    next_minute = limits.window_start(now) + limits.WINDOW
    for refused in replies[RATE:]:
        assert refused.json()["detail"] == f"this key may make {RATE} requests a minute"
        waited = int(refused.headers["retry-after"])  # whole seconds, rounded up
        assert 1 <= waited <= 60
        assert abs(waited - (next_minute - now).total_seconds()) <= 2

    crm = mailer("api-keys", "create", "crm", "--scope", "customers:read").stdout.strip()
    headers = {"Authorization": f"Bearer {crm}"}
    before = [site.call("GET", PATH, headers=headers) for site in two_servers]
    assert [reply.status for reply in before] == [404, 404]
    mailer("api-keys", "revoke", "crm")
    after = [site.call("GET", PATH, headers=headers) for site in two_servers]
    assert [reply.status for reply in after] == [401, 401]
    assert all(reply.headers["www-authenticate"] == "Bearer" for reply in after)


@contextlib.contextmanager
def forked_web(database_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Site]]:
    """`mailer web` with `[web] processes = 2` on a migrated database, once both say
    they listen."""
    engine = db.connect(database_url)
    migrate.upgrade(engine)
    engine.dispose()
    config = tmp_path / "config.toml"
    config.write_text((ROOT / "config.toml").read_text(encoding="utf-8"), encoding="utf-8")
    env = {**environment(config, database_url), "MAILER_WEB__PROCESSES": "2"}
    command = [sys.executable, "-m", "mailer", "web"]
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as process:
        try:
            said = ""
            deadline = time.monotonic() + START_SECONDS
            while said.count("web app on") < 2 and time.monotonic() < deadline:
                said += _read_until(process, "web app on", START_SECONDS)
            addresses = set(re.findall(r"web app on (http://\S+)", said))
            assert len(addresses) == 1 and said.count("web app on") == 2, said
            yield process, Site(addresses.pop().rstrip("/"))
        finally:
            process.kill()  # however the test ends; after an exit, a no-op


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_mailer_web_serves_one_port_from_several_processes_and_stops_as_one(
    database_url: str, tmp_path: Path
) -> None:
    with forked_web(database_url, tmp_path) as (process, site):
        web = children(process.pid)
        assert len(web) == 2
        assert {site.call("GET", PATH).status for _ in range(20)} == {401}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=START_SECONDS) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in web)


def test_when_one_web_process_dies_the_others_stop_and_the_command_fails(
    database_url: str, tmp_path: Path
) -> None:
    with forked_web(database_url, tmp_path) as (process, _):
        first, second = children(process.pid)
        os.kill(first, signal.SIGKILL)
        assert process.wait(timeout=START_SECONDS) == 1
        assert not Path(f"/proc/{second}").exists()
