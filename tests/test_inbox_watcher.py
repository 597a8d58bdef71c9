"""The inbox watcher end to end against a real Dovecot: what support and customers would see.

Mail is APPENDed to a real mailbox, the watcher is built from config.toml as `mailer run`
builds it, and the outcome is read back from the inquiry log, the outbox, an SMTP sink and
the flags on the server. Waits on the real servers are bounded loops; time in the log and
the outbox comes from the ManualClock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Engine, func, select

from mailer import daemon
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import profiles
from mailer.inbound import inquiries
from mailer.inbound.mailbox import PROCESSED_KEYWORD, MailboxUnavailable
from mailer.inbound.watcher import Inbox
from mailer.outbound import outbox
from mailer.store import db, migrate
from mailer.store.models import InquiryStatus
from tests.configs import inbox_config
from tests.conftest import add_customers
from tests.dovecot import DovecotServer
from tests.pg import PostgresServer
from tests.running import POLL, eventually, serving
from tests.smtp_sink import Sink, listening
from tests.test_inbox import EVENT_SECONDS, MAIL, inquiry

MB = 1024 * 1024
QUIET = 1.0  # seconds without news after which two mailers are taken to have stopped
NO_SMTP = 9  # the discard port: tests that run only the watcher never send
INBOUND = MAIL / "inbound"
CUSTOMERS = """\
email,name,locale,timezone
maria@example.com,Мария Иванова,bg,Europe/Sofia
stoyan@old-domain.example,Стоян Петков,bg,Europe/Sofia
g.koleva@firma-plovdiv.example,Галина Колева,bg,Europe/Sofia
"""
_other_databases = itertools.count()


@pytest.fixture
def known(engine: Engine, tmp_path: Path, clock: ManualClock) -> None:
    """Customers the sample bounces and inquiries are about."""
    add_customers(engine, tmp_path, CUSTOMERS, clock.now())


@pytest.fixture
def mailer_cfg(tmp_path: Path, dovecot: DovecotServer, folder: str) -> Config:
    """The shipped config.toml pointed at the Dovecot folder of this test."""
    return inbox_config(tmp_path, dovecot, NO_SMTP, folder)


def build_watcher(cfg: Config, engine: Engine, clock: ManualClock) -> Inbox:
    return daemon.build_inbox(cfg, engine, clock, lambda: None, sandbox_on=False)


@pytest.fixture
async def watcher(
    engine: Engine, mailer_cfg: Config, clock: ManualClock, known: None
) -> AsyncIterator[Inbox]:
    watcher = build_watcher(mailer_cfg, engine, clock)
    yield watcher
    await watcher.close()


@pytest.fixture
def other_engine(
    engine: Engine, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Engine]:
    """A second migrated database on the same backend, for a second mailer instance."""
    if engine.dialect.name == "sqlite":
        url = f"sqlite:///{tmp_path / 'other.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        name = f"other_{next(_other_databases)}"
        server.admin(f"CREATE DATABASE {name}")
        url = server.url(name)
    other = db.connect(url)
    migrate.upgrade(other)
    yield other
    other.dispose()


def logged(engine: Engine) -> dict[str, Any]:
    """The only inquiry in the log, with its body and raw bytes."""
    with engine.connect() as conn:
        (row,) = conn.execute(select(inquiries.INQUIRIES)).mappings()
        return dict(row)


def message_ids(engine: Engine) -> list[str]:
    """The Message-IDs in the log, in the order they were logged."""
    table = inquiries.INQUIRIES
    with engine.connect() as conn:
        found = conn.execute(select(table.c.message_id).order_by(table.c.id)).scalars()
        return [str(message_id) for message_id in found]


def count_inquiries(engine: Engine) -> int:
    with engine.connect() as conn:
        found = conn.execute(select(func.count()).select_from(inquiries.INQUIRIES))
        return int(found.scalar_one())


def suppressed(engine: Engine) -> set[str]:
    table = profiles.CUSTOMERS
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.email).where(table.c.suppressed_reason.is_not(None)))
        return set(rows.scalars())


def acknowledgements(engine: Engine) -> dict[str, str]:
    """Dedupe key -> recipient of every acknowledgement in the outbox, however many."""
    table = outbox.OUTBOX
    query = select(table.c.dedupe_key, table.c.to_address).where(
        table.c.dedupe_key.startswith(inquiries.ACK_PREFIX)
    )
    with engine.connect() as conn:
        return {key: to for key, to in conn.execute(query)}


def fired(reasons: list[str]) -> set[str]:
    """The names of the rules that fired, from the reasons support reads on the inquiry."""
    return {reason.partition(":")[0] for reason in reasons}


def unprocessed(dovecot: DovecotServer, folder: str) -> list[int]:
    """UIDs on the server that do not carry the processed keyword."""
    return [uid for uid, flags in dovecot.flags(folder).items() if PROCESSED_KEYWORD not in flags]


async def quiet(progress: Callable[[], object]) -> None:
    """Wait, bounded by EVENT_SECONDS, until ``progress`` has not changed for QUIET seconds."""
    seen, still = progress(), 0
    for _ in range(int(EVENT_SECONDS / POLL)):
        await asyncio.sleep(POLL)
        now = progress()
        still = still + 1 if now == seen else 0
        seen = now
        if still * POLL >= QUIET:
            return
    raise AssertionError(f"still busy after {EVENT_SECONDS} s: {seen}")


# Mail that must not be acknowledged -------------------------------------------------------


# sample in tests/mail, decision, status, rules that must be among the reasons, suppressed
MACHINE_MAIL = [
    ("gmail_vacation", "auto-reply", "closed", {"auto-submitted", "precedence"}, set()),
    ("mailing_list_post", "list", "closed", {"list", "precedence"}, set()),
    ("noreply_courier", "system", "closed", {"system-sender"}, set()),
    (
        "exim_bounce",
        "bounce",
        "closed",
        {"failed-recipients", "daemon-sender", "null-return-path"},
        {"stoyan@old-domain.example"},
    ),
    ("postfix_delayed", "bounce", "closed", {"report", "delivery-status"}, set()),
    ("spam_flagged", "inquiry", "new", {"spam-flagged"}, set()),
    ("auto_response_suppress_dr", "system", "closed", {"auto-response-suppress"}, set()),
]


@pytest.mark.parametrize(
    ("sample", "decision", "status", "rules", "bounced"),
    MACHINE_MAIL,
    ids=[case[0] for case in MACHINE_MAIL],
)
async def test_machine_mail_is_logged_with_its_reasons_and_never_acknowledged(
    watcher: Inbox,
    engine: Engine,
    dovecot: DovecotServer,
    folder: str,
    sample: str,
    decision: str,
    status: str,
    rules: set[str],
    bounced: set[str],
) -> None:
    """Spam stays "new" for a human; a delayed DSN is temporary and suppresses nobody."""
    dovecot.append((MAIL / f"{sample}.eml").read_bytes(), folder)

    assert await watcher.process_available() == 1

    row = logged(engine)
    assert (row["decision"], row["status"]) == (decision, InquiryStatus(status))
    assert rules <= fired(row["reasons"])
    assert acknowledgements(engine) == {}
    assert suppressed(engine) == bounced
    assert unprocessed(dovecot, folder) == []


# Customers' mail in every charset -----------------------------------------------------------


# sample in tests/mail/inbound, sender, their name, subject and a line of the body, decoded
PEOPLES_MAIL = [
    (
        "ru_koi8r",
        "ivan.sidorov@mail.example.ru",
        "Иван Сидоров",
        "Доставка в Москву",
        "Подскажите, пожалуйста, можно ли заказать доставку в Москву?",
    ),
    (
        "bg_windows1251",
        "maria.petrova@abv.bg",
        "Мария Петрова",
        "Въпрос за поръчка № 10482",
        "все още не е пристигнала. Може ли да проверите къде е?",  # noqa: RUF001
    ),
    (
        "fr_latin1",
        "helene.dupre@orange.example.fr",
        "Hélène Dupré",
        "Problème de livraison à Lyon",
        "la boîte de tisane à la mélisse était abîmée.",
    ),
    (
        "broken_mime",
        "user@legacy.example",
        "Old Mailer",
        "Поръчка не е получена",  # noqa: RUF001
        "Здравейте, поръчката ми не е получена.",  # noqa: RUF001
    ),
]


@pytest.mark.parametrize(
    ("sample", "sender", "name", "subject", "line"),
    PEOPLES_MAIL,
    ids=[case[0] for case in PEOPLES_MAIL],
)
async def test_mail_in_any_charset_is_logged_readable_and_acknowledged(
    watcher: Inbox,
    engine: Engine,
    dovecot: DovecotServer,
    folder: str,
    sample: str,
    sender: str,
    name: str,
    subject: str,
    line: str,
) -> None:
    dovecot.append((INBOUND / f"{sample}.eml").read_bytes(), folder)

    assert await watcher.process_available() == 1

    row = logged(engine)
    assert (row["sender"], row["sender_name"], row["subject"]) == (sender, name, subject)
    assert line in row["body_text"]
    assert row["status"] == InquiryStatus.ACKNOWLEDGED
    assert list(acknowledgements(engine).values()) == [sender]


# A huge message -----------------------------------------------------------------------------


def with_attachment(message_id: str, size: int) -> bytes:
    """A customer's question with a photo of ``size`` random bytes, base64 as clients send it."""
    photo = base64.encodebytes(os.urandom(size)).replace(b"\n", b"\r\n")
    head = (
        "From: Мария Иванова <maria@example.com>\r\nTo: support@northwind-roasters.example\r\n"
        f"Subject: Повредена пратка\r\nMessage-ID: {message_id}\r\n"
        "Date: Tue, 24 Nov 2026 13:55:00 +0200\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Пакетът пристигна смачкан, снимката е приложена.\r\n"  # noqa: RUF001
        '--b1\r\nContent-Type: image/jpeg; name="parcel.jpg"\r\n'
        'Content-Disposition: attachment; filename="parcel.jpg"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return head.encode() + photo + b"--b1--\r\n"


async def test_a_20_mb_attachment_is_recorded_raw_kept_truncated_and_the_next_mail_flows(
    watcher: Inbox,
    engine: Engine,
    mailer_cfg: Config,
    dovecot: DovecotServer,
    folder: str,
) -> None:
    keep = mailer_cfg.settings.imap.keep_raw_mb * MB
    big = with_attachment("<big@mail.example>", 20 * MB)
    assert len(big) > keep, "the base64 of 20 MB is bigger than what the shipped config keeps"
    await asyncio.to_thread(dovecot.append, big, folder)

    assert await watcher.process_available() == 1

    row = logged(engine)
    assert row["attachments"] == [
        {"filename": "parcel.jpg", "content_type": "image/jpeg", "size": 20 * MB}
    ]
    assert "Пакетът пристигна смачкан" in row["body_text"]
    assert (len(row["raw"]), row["raw_truncated"]) == (keep, True)
    assert row["raw"] == big[:keep]
    assert any(f"raw kept up to {keep} bytes" in defect for defect in row["defects"])
    assert row["status"] == InquiryStatus.ACKNOWLEDGED and len(acknowledgements(engine)) == 1

    dovecot.append(inquiry("<after@mail.example>", sender="Siti <siti@example.com>"), folder)
    assert await watcher.process_available() == 1
    assert sorted(acknowledgements(engine).values()) == ["maria@example.com", "siti@example.com"]
    assert unprocessed(dovecot, folder) == []


# Restarts and dropped connections -----------------------------------------------------------


# When the watcher is interrupted in the middle of a backlog:
SEEN_LOGGED = "stopped-once-some-are-logged"  # wherever it is when the log shows progress
STOPPED_IN_COMMIT = "stopped-while-a-commit-runs"  # its task cancelled during a commit
DROPPED_IN_COMMIT = "connection-dropped-while-a-commit-runs"  # the server kills the session


class CommitGate(ManualClock):
    """A manual clock that, when told to, holds the first caller outside the event loop (the
    watcher's commit, in its worker thread) until released: the test's handle on "a commit is
    under way right now"."""

    def __init__(self, start: datetime, *, hold: bool) -> None:
        super().__init__(start)
        self.holding = threading.Event()
        self.release = threading.Event()
        self._hold = hold

    def now(self) -> datetime:
        if self._hold and not self.holding.is_set() and not _in_event_loop():
            self.holding.set()
            self.release.wait(EVENT_SECONDS)
        return super().now()


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def interrupted(
    cfg: Config, engine: Engine, start: datetime, dovecot: DovecotServer, moment: str
) -> None:
    """A daemon working through a backlog is interrupted part way.

    Stopped: its watcher task is cancelled, as `mailer run` does when the shutdown grace runs
    out; a commit already in its worker thread runs to its end, as it would in a real process.
    The daemon has its own thread and event loop, like a process of its own: once that loop
    has ended, so has every database write it started.
    """

    async def run() -> None:
        clock = CommitGate(start, hold=moment != SEEN_LOGGED)
        watcher = build_watcher(cfg, engine, clock)
        working = asyncio.create_task(watcher.process_available())
        try:
            if moment == SEEN_LOGGED:
                await until_some_logged(engine, working)
            else:
                started = await asyncio.to_thread(clock.holding.wait, EVENT_SECONDS)
                assert started, "the watcher never started a commit in a worker thread"
            if moment == DROPPED_IN_COMMIT:
                dovecot.kick()
            else:
                working.cancel()
        finally:
            clock.release.set()
            with contextlib.suppress(asyncio.CancelledError, MailboxUnavailable):
                await working
            await watcher.close()

    asyncio.run(run())


async def until_some_logged(engine: Engine, working: asyncio.Task[int]) -> None:
    for _ in range(int(EVENT_SECONDS / POLL)):
        if working.done() or await asyncio.to_thread(count_inquiries, engine) > 0:
            return
        await asyncio.sleep(POLL)


@pytest.mark.parametrize("moment", [SEEN_LOGGED, STOPPED_IN_COMMIT, DROPPED_IN_COMMIT])
async def test_a_backlog_interrupted_part_way_is_logged_acknowledged_and_flagged_once(
    engine: Engine,
    mailer_cfg: Config,
    clock: ManualClock,
    dovecot: DovecotServer,
    folder: str,
    known: None,
    moment: str,
) -> None:
    total = 250
    senders = [f"c{n}@example.org" for n in range(total)]
    backlog = [
        inquiry(f"<backlog{n}@mail.example>", sender=f"Customer {n} <{address}>")
        for n, address in enumerate(senders)
    ]
    await asyncio.to_thread(dovecot.append_many, backlog, folder)

    await asyncio.to_thread(interrupted, mailer_cfg, engine, clock.now(), dovecot, moment)
    assert 0 < count_inquiries(engine) < total, "interrupted in the middle of the backlog"

    watcher = build_watcher(mailer_cfg, engine, clock)  # the daemon starts (or connects) again
    try:
        await watcher.process_available()
    finally:
        await watcher.close()

    ids = message_ids(engine)
    assert sorted(ids) == sorted(f"<backlog{n}@mail.example>" for n in range(total))
    acks = acknowledgements(engine)
    assert sorted(acks.values()) == sorted(senders), "one acknowledgement for each sender"
    assert len(acks) == total
    assert unprocessed(dovecot, folder) == [], "every message is marked processed on the server"


async def test_mail_arriving_while_the_idle_connection_is_down_is_acknowledged_once(
    engine: Engine,
    tmp_path: Path,
    clock: ManualClock,
    dovecot: DovecotServer,
    folder: str,
    known: None,
) -> None:
    """The reconnect waits RECONNECT[0] = 1 s (with jitter 0.8-1.2) before it opens again."""
    sink = Sink()
    async with listening(sink) as port:
        cfg = inbox_config(tmp_path, dovecot, port, folder)
        async with serving(clock, (cfg, engine)):
            await asyncio.to_thread(dovecot.wait_until_idling, EVENT_SECONDS)
            dovecot.kick()
            await asyncio.to_thread(dovecot.append, inquiry("<during@mail.example>"), folder)
            await eventually(lambda: bool(sink.received), "the acknowledgement reaches the sink")

    (ack,) = sink.received
    assert ack.message["In-Reply-To"] == "<during@mail.example>"
    assert message_ids(engine) == ["<during@mail.example>"]
    assert unprocessed(dovecot, folder) == []


# Two mailers writing to each other ----------------------------------------------------------


class Relay(Sink):
    """An SMTP server that delivers each message into its recipient's Dovecot folder."""

    def __init__(self, deliver: Callable[[str, bytes], Awaitable[None]]) -> None:
        super().__init__()
        self.deliver = deliver
        self.relayed: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        for recipient in envelope.rcpt_tos:
            await self.deliver(str(recipient).lower(), envelope.original_content or b"")
            self.relayed.append(str(recipient).lower())
        return answer


A_SUPPORT = "support@northwind-roasters.example"  # the shipped config's sender
B_SUPPORT = "support@bilki-roza.example"


async def test_two_mailers_writing_to_each_other_stop_after_one_acknowledgement(
    engine: Engine,
    other_engine: Engine,
    tmp_path: Path,
    clock: ManualClock,
    dovecot: DovecotServer,
    folder: str,
) -> None:
    folders = {A_SUPPORT: folder, B_SUPPORT: f"{folder}B"}
    dovecot.create(folders[B_SUPPORT])

    async def deliver(recipient: str, data: bytes) -> None:
        await asyncio.to_thread(dovecot.append, data, folders[recipient])

    relay = Relay(deliver)
    first = inquiry("<start@bilki-roza.example>", sender=f"Bilki Roza Support <{B_SUPPORT}>")
    dovecot.append(first, folders[A_SUPPORT])
    async with listening(relay) as port:
        cfg_a = inbox_config(tmp_path / "a", dovecot, port, folders[A_SUPPORT])
        cfg_b = inbox_config(
            tmp_path / "b",
            dovecot,
            port,
            folders[B_SUPPORT],
            MAILER_SENDER__FROM=f"Bilki Roza Support <{B_SUPPORT}>",
            MAILER_SENDER__REPLY_TO=B_SUPPORT,
        )
        async with serving(clock, (cfg_a, engine), (cfg_b, other_engine)):
            await eventually(
                lambda: count_inquiries(other_engine) > 0, "B logs A's acknowledgement"
            )
            await quiet(
                lambda: (
                    len(relay.received),
                    count_inquiries(engine) + count_inquiries(other_engine),
                )
            )

    assert relay.relayed == [B_SUPPORT], "one acknowledgement in all, from A to B"
    assert logged(engine)["status"] == InquiryStatus.ACKNOWLEDGED
    at_b = logged(other_engine)
    assert at_b["sender"] == A_SUPPORT
    assert (at_b["decision"], at_b["status"]) == ("auto-reply", InquiryStatus.CLOSED)
    assert "foreign-loop-header: X-Mailer-Loop: northwind-roasters.example" in at_b["reasons"]
    assert acknowledgements(other_engine) == {}
