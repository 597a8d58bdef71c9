"""Several `mailer run` processes on one PostgreSQL, with a real Dovecot and a real SMTP sink,
as an operator runs them when one machine is not enough: each inquiry logged and
acknowledged once, each message delivered once, the inbox taken over after a kill -9, and
the SMTP rate held by all processes together. Time is real here (processes read the system
clock): every wait has a deadline and polls."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from mailer.core.categories import Category
from mailer.outbound import outbox
from mailer.outbound.outbox import NewMessage
from mailer.store import db
from tests.command import runner
from tests.configs import real_servers
from tests.conftest import PASSWORD
from tests.dovecot import DovecotServer
from tests.pg import PostgresServer
from tests.site import Site
from tests.smtp_sink import Sink, start_sink
from tests.test_daemons import TAKEOVER_SECONDS, Daemon, daemons, project
from tests.test_inbox import inquiry
from tests.test_shared_rate import TimedSink
from tests.test_web_sessions import PAGE, Browser, copy_of

__all__ = ["daemons"]  # the fixture, shared with tests/test_daemons.py

DRAIN_SECONDS = 60.0  # bound on three processes clearing the backlogs below
INQUIRIES = 30
RECEIPTS = 100


@contextmanager
def sink_thread(sink: Sink) -> Iterator[int]:
    """The sink on its own event loop in a thread, so this test may block on the processes
    while they deliver into it; yields its port."""
    loop = asyncio.new_event_loop()
    server, port = loop.run_until_complete(start_sink(sink))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


class Logged(Daemon):
    """A `mailer run` whose log is read all along by a thread: three processes logging into
    pipes that nobody empties while the test waits on one of them would block on a full pipe."""

    def __init__(self, env: dict[str, str], *args: str, command: str = "run") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailer", command, *args], env=env, stderr=subprocess.PIPE
        )
        self.log = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        try:
            for line in iter(self.process.stderr.readline, b""):
                self.log += line.decode(errors="replace")
        except (OSError, ValueError):  # closed by ``kill`` at the end of the test
            pass

    def wait_for(self, *markers: str, seconds: float = 90) -> str:
        until(lambda: all(m in self.log for m in markers), f"{markers} logged", seconds)
        return self.log


def until(
    condition: Callable[[], bool],
    what: str,
    seconds: float = DRAIN_SECONDS,
    watched: list[Daemon] | None = None,
) -> float:
    """Poll until ``condition`` holds; returns the seconds it took, fails after ``seconds``
    with the logs of the ``watched`` processes."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            logs = "\n---\n".join(d.log[-4000:] for d in watched or [])
            raise AssertionError(f"not within {seconds} s: {what}\n{logs}")
        time.sleep(0.05)
    return time.monotonic() - start


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(query).fetchall())


def fresh_database(postgres: PostgresServer, template: str, name: str) -> str:
    postgres.admin(f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name} TEMPLATE {template}")
    return postgres.url(name)


def receipts(count: int, due: datetime | None = None, prefix: str = "receipt") -> list[NewMessage]:
    """Transactional, so the quiet hours of the hour the suite runs hold none back: the
    outbox claims them the way it claims a campaign's."""
    return [
        NewMessage(
            dedupe_key=f"{prefix}:{n}",
            to_address=f"{prefix}{n}@example.com",
            category=Category.TRANSACTIONAL,
            template="newsletter",
            context={"params": {"headline": "Receipt", "intro": "Thank you."}},
            due_at=due,
        )
        for n in range(count)
    ]


def enqueue(url: str, messages: list[NewMessage]) -> None:
    engine: Engine = db.connect(url)
    try:
        outbox.enqueue(engine, messages, datetime.now(UTC))
    finally:
        engine.dispose()


def inquiries_logged(url: str) -> list[tuple[object, ...]]:
    return rows(url, "SELECT message_id, status FROM inquiries")


def received_by(sink: Sink) -> Counter[str]:
    return Counter(r for got in list(sink.received) for r in got.rcpt_tos)


@pytest.fixture
def backlog(
    tmp_path: Path,
    postgres: PostgresServer,
    migrated_postgres: str,
    dovecot: DovecotServer,
    folder: str,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[dict[str, str], str, Sink]]:
    """A database with RECEIPTS messages queued, INQUIRIES in the Dovecot folder, a sink;
    yields the environment of a `mailer run` on them, the database URL and the sink."""
    url = fresh_database(postgres, migrated_postgres, f"cluster_{request.node.name[-20:]}")
    dovecot.append_many(
        [
            inquiry(f"<q{n}@mail.example>", sender=f"Customer {n} <c{n}@example.org>")
            for n in range(INQUIRIES)
        ],
        folder,
    )
    enqueue(url, receipts(RECEIPTS))
    sink = Sink()
    with sink_thread(sink) as port:
        env = project(tmp_path, url, **real_servers(dovecot, port, folder))
        yield env, url, sink


def check_exactly_once(url: str, sink: Sink, may_repeat: Collection[str] = ()) -> None:
    """Every inquiry logged once and acknowledged once; every message delivered once, but
    for those named in ``may_repeat`` (in flight in a process that was killed: sent, but
    not yet recorded as sent), which may arrive twice and no more."""
    logged = inquiries_logged(url)
    assert sorted(str(m) for m, _ in logged) == sorted(
        f"<q{n}@mail.example>" for n in range(INQUIRIES)
    )
    assert all(status != "failed" for _, status in logged), logged
    acks = rows(url, "SELECT to_address FROM outbox WHERE dedupe_key LIKE 'ack:inquiry:%'")
    assert sorted(str(a) for (a,) in acks) == sorted(f"c{n}@example.org" for n in range(INQUIRIES))
    got = received_by(sink)
    expected = {f"c{n}@example.org" for n in range(INQUIRIES)} | {
        f"receipt{n}@example.com" for n in range(RECEIPTS)
    }
    assert set(got) == expected
    twice = {address for address, times in got.items() if times > 1}
    assert twice <= set(may_repeat), f"twice though not in flight: {twice - set(may_repeat)}"
    assert max(got.values()) <= 2


def drained(url: str, sink: Sink) -> Callable[[], bool]:
    def done() -> bool:
        queued = rows(url, "SELECT count(*) FROM outbox WHERE status <> 'sent'")[0][0]
        return (
            len(inquiries_logged(url)) == INQUIRIES
            and len(received_by(sink)) == INQUIRIES + RECEIPTS
            and queued == 0
        )

    return done


def inbox_leader(running: list[Daemon], folder: str) -> Daemon | None:
    leading = [d for d in running if f"inbox {folder}: this process leads" in d.log]
    assert len(leading) <= 1, "two processes lead one mailbox"
    return leading[0] if leading else None


def test_three_daemons_handle_each_inquiry_and_message_once_though_the_inbox_leader_dies(
    backlog: tuple[dict[str, str], str, Sink], daemons: list[Daemon], folder: str
) -> None:
    """Three `mailer run` share the backlogs; the process that watches the mailbox (and,
    started first, fires the schedules) is killed with -9 as soon as the work is under way.
    Another leads within the bound and continues from the committed mailbox position:
    each inquiry logged once and acknowledged once. The killed process was also
    delivering: what it had claimed and not yet recorded (its rows still 'sending' when it
    died: perhaps sent, not known) may arrive twice, as the outbox promises; nothing else."""
    env, url, sink = backlog
    daemons.extend(Logged(env) for _ in range(3))
    until(lambda: inbox_leader(daemons, folder) is not None, "one leads the inbox", watched=daemons)
    leader = inbox_leader(daemons, folder)
    assert leader is not None
    until(
        lambda: len(inquiries_logged(url)) > 0 or len(sink.received) >= 10,
        "the work is under way",
        watched=daemons,
    )
    leader.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    leader.process.wait(10)
    at_kill = (len(inquiries_logged(url)), len(sink.received))
    in_flight = {
        str(address)
        for (address,) in rows(
            url,
            "SELECT to_address FROM outbox WHERE status = 'sending' "
            f"AND worker_id LIKE '%:{leader.process.pid}:%'",
        )
    }
    others = [d for d in daemons if d is not leader]
    led = [f"inbox {folder}: this process leads"]
    if "schedules: this process leads" in leader.log:
        led.append("schedules: this process leads")
    until(
        lambda: all(any(m in d.log for d in others) for m in led),
        "another process leads",
        TAKEOVER_SECONDS,
        others,
    )
    assert time.monotonic() - killed < TAKEOVER_SECONDS
    assert inbox_leader(others, folder) is not None
    until(drained(url, sink), "the rest of the backlogs is handled", watched=others)
    check_exactly_once(url, sink, may_repeat=in_flight)
    for daemon in others:
        assert daemon.stop() == 0
    check_exactly_once(url, sink, may_repeat=in_flight)  # nothing more went out as they stopped
    print(f"at the kill: {at_kill[0]} inquiries logged, {at_kill[1]} messages received")
    assert not any("flufl.bounce" in d.log for d in daemons), "the log is not flooded"


def test_the_smtp_rate_holds_across_two_delivery_processes(
    tmp_path: Path, postgres: PostgresServer, migrated_postgres: str, daemons: list[Daemon]
) -> None:
    """Two `mailer run --only delivery` with rate_per_second = 10: the messages come due in
    two waves, so each process claims one and both send at once; together they never put
    more than 10 (+1: the first message also waited for its connection) into one second."""
    url = fresh_database(postgres, migrated_postgres, "cluster_rate")
    sink = TimedSink()
    with sink_thread(sink) as port:
        env = project(
            tmp_path,
            url,
            MAILER_SANDBOX__ENABLED="false",
            MAILER_SMTP__PORT=str(port),
            MAILER_SMTP__RATE_PER_SECOND="10",
        )
        daemons.extend(Logged(env, "--only", "delivery") for _ in range(2))
        for daemon in daemons:
            daemon.wait_for("is running")
        soon = datetime.now(UTC) + timedelta(seconds=1)
        enqueue(url, receipts(13, soon, "first") + receipts(12, soon + timedelta(seconds=0.3)))
        until(lambda: len(sink.arrivals) >= 25, "the 25 messages arrive", 30)
        for daemon in daemons:
            assert daemon.stop() == 0, daemon.log[-3000:]
    arrivals = sorted(sink.arrivals)
    assert len(arrivals) == 25
    busiest = max(sum(1 for t in arrivals if first <= t < first + 1.0) for first in arrivals)
    assert busiest <= 11, f"{busiest} messages within one second"
    workers = rows(url, "SELECT count(DISTINCT worker_id) FROM outbox")[0][0]
    assert workers == 2, "both processes sent a share"


def test_signing_out_in_one_web_process_ends_the_session_in_another(
    tmp_path: Path, postgres: PostgresServer, migrated_postgres: str, daemons: list[Daemon]
) -> None:
    """Two `mailer web` on one PostgreSQL, over real HTTP: a cookie copied from the first
    works on the second until its owner signs out on the first."""
    url = fresh_database(postgres, migrated_postgres, "cluster_web")
    env = project(tmp_path, url)
    added = runner(env)(
        "users", "add", "sam", "--role", "support", "--password-stdin", stdin=f"{PASSWORD}\n"
    )
    assert added.returncode == 0
    daemons.extend(Logged(env, command="web") for _ in range(2))
    first, second = (
        Site(re.findall(r"web app on (http://\S+)", d.wait_for("web app on"))[0]) for d in daemons
    )
    sam = Browser()
    sam.sign_in(first, "sam")
    stolen = copy_of(sam)
    assert stolen.request(second, "GET", PAGE)[0] == 200, "one session, any process"
    assert sam.request(first, "POST", "/logout", {}) == (303, "/login")
    status, where = stolen.request(second, "GET", PAGE)
    assert status == 303 and where.startswith("/login"), "signed out everywhere"
    for daemon in daemons:
        assert daemon.stop() == 0


def test_after_a_postgresql_restart_under_load_each_message_is_sent_exactly_once(
    tmp_path: Path, postgres: PostgresServer, migrated_postgres: str, daemons: list[Daemon]
) -> None:
    """Two delivery processes; PostgreSQL restarted while they deliver 200 messages. Both
    go on delivering (a run queued after the restart goes out) and stop cleanly. Results
    that could not be written while it was down were kept and written when it came back,
    and neither process took the other for dead meanwhile: every message is sent, and
    arrives exactly once."""
    url = fresh_database(postgres, migrated_postgres, "cluster_restart")
    sink = Sink()
    count, after = 200, 20
    with sink_thread(sink) as port:
        env = project(tmp_path, url, MAILER_SANDBOX__ENABLED="false", MAILER_SMTP__PORT=str(port))
        daemons.extend(Logged(env, "--only", "delivery") for _ in range(2))
        for daemon in daemons:
            daemon.wait_for("is running")
        enqueue(url, receipts(count, prefix="run"))
        until(lambda: len(sink.received) >= 20, "delivery is under way", 30, daemons)
        postgres.restart()
        enqueue(url, receipts(after, prefix="later"))
        until(
            lambda: (
                rows(url, "SELECT count(*) FROM outbox WHERE status <> 'sent'")[0][0] == 0
                and len(received_by(sink)) == count + after
            ),
            "every message is sent after the restart",
            60,
            daemons,
        )
        for daemon in daemons:
            assert daemon.stop() == 0, daemon.log[-3000:]
    got = received_by(sink)
    expected = {f"run{n}@example.com" for n in range(count)}
    assert set(got) == expected | {f"later{n}@example.com" for n in range(after)}
    twice = sorted(address for address, times in got.items() if times > 1)
    assert twice == [], f"sent twice: {twice}"
    assert rows(url, "SELECT count(*) FROM outbox WHERE attempts <> 1")[0][0] == 0
