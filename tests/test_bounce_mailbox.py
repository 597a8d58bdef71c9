"""The bounce mailbox: a real Dovecot folder that our return path's mail lands in, watched
beside support's. Reports there bounce, suppress and unsubscribe through the VERP address
they came back to; nothing there ever becomes an inquiry, and nothing is read twice.

Messages are delivered to an in-process SMTP sink, their envelope senders taken from what
it received, and real servers' bounces (the corpus) APPENDed to Dovecot as the bouncing
server would have delivered them. Time in the database comes from the ManualClock.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, Table, func, select

from mailer import daemon
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import profiles
from mailer.inbound import inquiries
from mailer.inbound.mailbox import PROCESSED_KEYWORD
from mailer.inbound.watcher import Inbox
from mailer.outbound import bounces
from mailer.outbound.delivery import Delivery
from mailer.outbound.smtp import SmtpTarget
from mailer.store.models import MAILBOX_STATE, OutboxStatus
from tests.configs import inbox_config, shipped_config
from tests.conftest import add_customers
from tests.dovecot import DovecotServer
from tests.running import eventually, serving
from tests.smtp_sink import Sink
from tests.test_bounce_reports import (
    CUSTOMERS,
    RETURN_PATH,
    arf,
    bounce_to,
    send,
    status_of,
    suppressed,
)

BOUNCE = "lhost-postfix-34.eml"  # a real Postfix bounce that names another address inside
PASSWORD_ENV = "MAILER_TEST_BOUNCE_PASSWORD"


def bounce_imap(dovecot: DovecotServer, folder: str, **more: str) -> dict[str, str]:
    """The overrides that make a Dovecot folder the bounce mailbox ([bounces.imap])."""
    keys = {
        "host": dovecot.host,
        "port": dovecot.port,
        "security": "none",
        "username": dovecot.user,
        "password_env": PASSWORD_ENV,
        "mailbox": folder,
        **more,
    }
    table = ", ".join(f"{key} = {json.dumps(value)}" for key, value in keys.items())
    return {
        "MAILER_BOUNCES__RETURN_PATH": RETURN_PATH,
        "MAILER_BOUNCES__IMAP": "{" + table + "}",
        PASSWORD_ENV: dovecot.password,
    }


@pytest.fixture
def bounce_cfg(tmp_path: Path, dovecot: DovecotServer, folder: str) -> Config:
    return shipped_config(
        tmp_path,
        {
            "MAILER_WEB__BASE_URL": "https://mail.northwind-roasters.example",
            **bounce_imap(dovecot, folder),
        },
    )


@pytest.fixture
def delivery(
    bounce_cfg: Config,
    engine: Engine,
    clock: ManualClock,
    sink: tuple[Sink, int],
    tmp_path: Path,
) -> Delivery:
    add_customers(engine, tmp_path, CUSTOMERS, clock.now())
    target = SmtpTarget(host="127.0.0.1", port=sink[1], pool_size=2)
    return daemon.build_delivery(bounce_cfg, engine, clock, target)


def build(cfg: Config, engine: Engine, clock: ManualClock) -> Inbox:
    watcher = daemon.build_bounce_mailbox(cfg, engine, clock, sandbox_on=False)
    assert watcher is not None
    return watcher


@pytest.fixture
async def watcher(bounce_cfg: Config, engine: Engine, clock: ManualClock) -> AsyncIterator[Inbox]:
    watcher = build(bounce_cfg, engine, clock)
    yield watcher
    await watcher.close()


def envelope_senders(sink: tuple[Sink, int]) -> dict[str, str]:
    """Recipient -> the envelope sender (return path) its message was sent with."""
    return {r.rcpt_tos[0].split("@")[0]: r.mail_from for r in sink[0].received}


def count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def processed(dovecot: DovecotServer, folder: str) -> list[bool]:
    """Whether each message in the folder, in UID order, is marked processed."""
    flags = dovecot.flags(folder)
    return [PROCESSED_KEYWORD in flags[uid] for uid in sorted(flags)]


async def test_a_bounce_in_the_bounce_mailbox_suppresses_its_customer_and_is_no_inquiry(
    watcher: Inbox,
    bounce_cfg: Config,
    delivery: Delivery,
    engine: Engine,
    clock: ManualClock,
    sink: tuple[Sink, int],
    dovecot: DovecotServer,
    folder: str,
) -> None:
    ids = await send(engine, delivery, clock, "maria", "emma")
    returns_to = envelope_senders(sink)
    assert returns_to["maria"].startswith(f"bounces+m{ids['maria']}-")
    # the bouncing server delivers its report to maria's message's own return path
    await asyncio.to_thread(dovecot.append, bounce_to(returns_to["maria"], BOUNCE), folder)

    assert await watcher.process_available() == 1
    assert status_of(engine, ids["maria"]) == OutboxStatus.BOUNCED
    assert suppressed(engine)["maria@example.com"].startswith("hard bounce reported")
    assert "emma@example.com" not in suppressed(engine)
    assert status_of(engine, ids["emma"]) == OutboxStatus.SENT
    assert count(engine, inquiries.INQUIRIES) == 0, "a bounce here is never an inquiry"
    assert processed(dovecot, folder) == [True]

    # a restart reads on from where it was, kept apart from support's mailbox of that name
    await watcher.close()
    again = build(bounce_cfg, engine, clock)
    try:
        assert await again.process_available() == 0
    finally:
        await again.close()
    assert count(engine, bounces.REPORTS) == 1
    with engine.connect() as conn:
        kept = conn.execute(select(MAILBOX_STATE.c.mailbox)).scalars().all()
    assert kept == [f"bounce mailbox {folder}"]


async def test_a_complaint_in_the_bounce_mailbox_unsubscribes_the_customer(
    watcher: Inbox,
    delivery: Delivery,
    engine: Engine,
    clock: ManualClock,
    sink: tuple[Sink, int],
    dovecot: DovecotServer,
    folder: str,
) -> None:
    (outbox_id,) = (await send(engine, delivery, clock, "siti")).values()
    (received,) = sink[0].received
    original = f"Return-Path: <{received.mail_from}>\r\n".encode() + received.data
    complaint = arf(original, headers_only=True)
    await asyncio.to_thread(dovecot.append, complaint, folder)

    assert await watcher.process_available() == 1
    with engine.connect() as conn:
        siti = profiles.get(conn, "siti@example.com")
        kinds = conn.execute(select(bounces.REPORTS.c.kind, bounces.REPORTS.c.outbox_id)).all()
    assert siti.unsubscribed_at == clock.now() and siti.suppressed_reason is None
    assert [tuple(k) for k in kinds] == [("complaint", outbox_id)]
    assert count(engine, inquiries.INQUIRIES) == 0
    assert processed(dovecot, folder) == [True]


def person_reply(message_id: str, sender: str, subject: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {RETURN_PATH}\r\nSubject: {subject}\r\n"
        f"Message-ID: {message_id}\r\nDate: Tue, 24 Nov 2026 11:00:00 +0000\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nThanks, got your letter.\r\n"
    ).encode()


async def test_mail_that_is_no_report_is_logged_and_moved_aside_never_an_inquiry(
    tmp_path: Path,
    engine: Engine,
    clock: ManualClock,
    dovecot: DovecotServer,
    folder: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = shipped_config(tmp_path, bounce_imap(dovecot, folder, processed=f"move:{folder}Read"))
    reply = person_reply("<re-1@mail.example.bg>", "maria@example.com", "Re: Новини")
    spam = person_reply("<spam-7@cheap.example>", "offers@cheap.example", "You won!")
    await asyncio.to_thread(dovecot.append_many, [reply, spam], folder)

    watcher = build(cfg, engine, clock)
    try:
        with caplog.at_level(logging.INFO, logger="mailer.inbound.bounce_mailbox"):
            assert await watcher.process_available() == 2
    finally:
        await watcher.close()
    assert count(engine, inquiries.INQUIRIES) == 0
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("<re-1@mail.example.bg> from maria@example.com is not a report" in s for s in said)
    assert any(
        "<spam-7@cheap.example> from offers@cheap.example is not a report" in s for s in said
    )
    assert processed(dovecot, folder) == [True, True]
    assert len(dovecot.flags(f"{folder}Read")) == 2, "copied into the folder for such mail"


def garbage_report(verp: str, report_type: str) -> bytes:
    """A multipart/report to a real return path whose report part is garbage; the text
    names a customer, as a careless or hostile server's might."""
    return (
        f"Delivered-To: {verp}\r\nFrom: MAILER-DAEMON@mx.example.id\r\nTo: {verp}\r\n"
        f"Subject: report\r\nMessage-ID: <garbage-{report_type}@mx.example.id>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="g"\r\n\r\n'
        "--g\r\nContent-Type: text/plain\r\n\r\n"
    ).encode() + (
        b"\xff\xfe emma@example.com \x01\x02 ###\r\n"
        b"--g\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"\x9c not: a field emma@example.com\r\n\r\nnothing\r\n--g--\r\n"
    )


async def test_a_garbage_report_is_logged_with_its_bytes_and_changes_nothing(
    watcher: Inbox,
    delivery: Delivery,
    engine: Engine,
    clock: ManualClock,
    sink: tuple[Sink, int],
    dovecot: DovecotServer,
    folder: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (outbox_id,) = (await send(engine, delivery, clock, "emma")).values()
    (verp,) = envelope_senders(sink).values()
    garbage = [garbage_report(verp, kind) for kind in ("delivery-status", "feedback-report")]
    await asyncio.to_thread(dovecot.append_many, garbage, folder)

    with caplog.at_level(logging.INFO, logger="mailer.inbound.bounce_mailbox"):
        assert await watcher.process_available() == 2
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2, warned
    for line, kind in zip(warned, ("delivery-status", "feedback-report"), strict=True):
        assert f"<garbage-{kind}@mx.example.id>" in line and "nothing changed" in line
        assert r"\xff\xfe emma@example.com \x01\x02" in line, "its raw bytes, escaped"
    assert suppressed(engine) == {}
    with engine.connect() as conn:
        emma = profiles.get(conn, "emma@example.com")
    assert emma.unsubscribed_at is None
    assert status_of(engine, outbox_id) == OutboxStatus.SENT
    assert count(engine, bounces.REPORTS) == 0 and count(engine, inquiries.INQUIRIES) == 0
    assert processed(dovecot, folder) == [True, True]


def test_the_sandbox_and_a_config_without_one_watch_no_bounce_mailbox(
    bounce_cfg: Config, cfg: Config, engine: Engine, clock: ManualClock
) -> None:
    assert daemon.build_bounce_mailbox(bounce_cfg, engine, clock, sandbox_on=True) is None
    assert daemon.build_bounce_mailbox(cfg, engine, clock, sandbox_on=False) is None


async def test_the_daemon_watches_the_bounce_mailbox_beside_supports(
    tmp_path: Path,
    engine: Engine,
    clock: ManualClock,
    sink: tuple[Sink, int],
    dovecot: DovecotServer,
    folder: str,
) -> None:
    """`mailer run` on real servers: support's folder and the bounce folder, each watched
    (on PostgreSQL each under its own leader lock); the bounce is no inquiry."""
    bounce_folder = f"{folder}Bounces"
    dovecot.create(bounce_folder)
    cfg = inbox_config(tmp_path, dovecot, sink[1], folder, **bounce_imap(dovecot, bounce_folder))
    add_customers(engine, tmp_path, CUSTOMERS, clock.now())
    delivery = daemon.build_delivery(cfg, engine, clock, SmtpTarget(host="127.0.0.1", port=sink[1]))
    ids = await send(engine, delivery, clock, "maria")
    bounced = bounce_to(envelope_senders(sink)["maria"], BOUNCE)

    async with serving(clock, (cfg, engine)):
        await asyncio.to_thread(dovecot.append, bounced, bounce_folder)
        await eventually(
            lambda: status_of(engine, ids["maria"]) == OutboxStatus.BOUNCED, "the bounce is read"
        )
    assert "maria@example.com" in suppressed(engine)
    assert count(engine, inquiries.INQUIRIES) == 0
    assert processed(dovecot, bounce_folder) == [True]
