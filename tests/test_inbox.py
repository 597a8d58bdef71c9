"""The inbox watcher against a real Dovecot: logged once, acknowledged once, never a loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from mailer import customers, daemon, inbox, inquiries, outbox
from mailer.clock import ManualClock
from mailer.config import Config
from mailer.inbox import AckPolicy, Inbox
from mailer.mailbox import PROCESSED_KEYWORD, Mailbox
from mailer.models import InquiryStatus
from mailer.smtp import SmtpTarget
from tests.configs import real_servers, shipped_config
from tests.dovecot import DovecotServer
from tests.smtp_sink import Sink, start_sink

MAIL = Path(__file__).parent / "mail"
EVENT_SECONDS = 10.0  # bound on waiting for something a real server will do


def inquiry(
    message_id: str, *, sender: str = "Мария Иванова <maria@example.com>", extra: str = ""
) -> bytes:
    return (
        f"From: {sender}\r\nTo: support@northwind-roasters.example\r\n"
        f"Subject: Поръчка 1042\r\nMessage-ID: {message_id}\r\n"
        "Date: Tue, 24 Nov 2026 13:55:00 +0200\r\n"
        f"{extra}Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "Здравейте, поръчката ми още не пристига.\r\n"
    ).encode()


@pytest.fixture
def known(engine: Engine, tmp_path: Path, clock: ManualClock) -> None:
    csv = tmp_path / "c.csv"
    csv.write_text(
        "email,name,locale,timezone\nmaria@example.com,Мария Иванова,bg,Europe/Sofia\n"
        "ivan.dimitrov@mail.example.bg,Иван Димитров,bg,Europe/Sofia\n",
        encoding="utf-8",
    )
    customers.import_csv(engine, csv, clock.now())


@pytest.fixture
async def watcher(
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    dovecot: DovecotServer,
    folder: str,
    known: None,
) -> AsyncIterator[Inbox]:
    def open_mailbox() -> Mailbox:
        return Mailbox(
            dovecot.host,
            dovecot.port,
            security="none",
            username=dovecot.user,
            password=dovecot.password,
            mailbox=folder,
            timeout=5.0,
        )

    watcher = Inbox(engine, open_mailbox, AckPolicy.from_config(cfg), clock)
    yield watcher
    await watcher.close()


def inquiry_rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return inquiries.find(conn, limit=100)


def ack_rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = outbox.find(conn, limit=100)
    return [r for r in rows if str(r["dedupe_key"]).startswith(inbox.ACK_PREFIX)]


async def test_an_inquiry_is_logged_acknowledged_in_bulgarian_and_marked_processed(
    watcher: Inbox,
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    dovecot: DovecotServer,
    folder: str,
) -> None:
    dovecot.append(inquiry("<q1@mail.example>"), folder)
    assert await watcher.process_available() == 1
    (logged,) = inquiry_rows(engine)
    assert logged["status"] == InquiryStatus.ACKNOWLEDGED and logged["reasons"] == []
    assert PROCESSED_KEYWORD in dovecot.flags(folder)[1]
    sink = Sink()
    server, port = await start_sink(sink)
    try:
        delivery = daemon.build_delivery(cfg, engine, clock, SmtpTarget("127.0.0.1", port))
        assert await delivery.deliver_due() == 1
    finally:
        server.close()
        await server.wait_closed()
    (ack,) = sink.received
    mail = ack.message
    assert ack.mail_from == "<>" and ack.rcpt_tos == ["maria@example.com"]
    assert mail["Auto-Submitted"] == "auto-replied"
    assert mail["X-Auto-Response-Suppress"] == "All"
    assert mail["In-Reply-To"] == "<q1@mail.example>"
    assert mail["Subject"] == f"Получихме съобщението Ви [#{logged['id']}]"
    assert "Мария" in mail.get_body(("plain",)).get_content()


async def test_a_restart_logs_nothing_twice(
    watcher: Inbox, engine: Engine, dovecot: DovecotServer, folder: str
) -> None:
    dovecot.append(inquiry("<r1@mail.example>"), folder)
    await watcher.process_available()
    await watcher.close()  # the daemon stops and starts again
    dovecot.append(inquiry("<r2@mail.example>", sender="Siti <siti@example.com>"), folder)
    assert await watcher.process_available() == 1
    assert len(inquiry_rows(engine)) == 2 and len(ack_rows(engine)) == 2


async def test_a_changed_uidvalidity_rereads_the_mailbox_without_duplicates(
    watcher: Inbox, engine: Engine, dovecot: DovecotServer, folder: str, clock: ManualClock
) -> None:
    dovecot.append(inquiry("<u1@mail.example>"), folder)
    await watcher.process_available()
    with engine.begin() as conn:  # as if the server had rebuilt the mailbox
        inbox.save_position(conn, folder, 1, 0, clock.now())
        conn.execute(inbox.STATE.update().values(uidvalidity=12345, last_uid=99))
    await watcher.close()
    assert await watcher.process_available() == 1, "read again from the start"
    assert len(inquiry_rows(engine)) == 1 and len(ack_rows(engine)) == 1


async def test_an_out_of_office_reply_is_logged_and_closed_never_acknowledged(
    watcher: Inbox, engine: Engine, dovecot: DovecotServer, folder: str
) -> None:
    dovecot.append((MAIL / "exchange_out_of_office.eml").read_bytes(), folder)
    await watcher.process_available()
    (logged,) = inquiry_rows(engine)
    assert logged["status"] == InquiryStatus.CLOSED and logged["decision"] == "auto-reply"
    assert any("auto-submitted" in r for r in logged["reasons"])  # type: ignore[attr-defined]
    assert ack_rows(engine) == []


async def test_our_own_acknowledgement_coming_back_is_not_answered(
    watcher: Inbox, engine: Engine, dovecot: DovecotServer, folder: str
) -> None:
    extra = "X-Mailer-Loop: northwind-roasters.example\r\nAuto-Submitted: auto-replied\r\n"
    dovecot.append(inquiry("<loop@northwind-roasters.example>", extra=extra), folder)
    await watcher.process_available()
    (logged,) = inquiry_rows(engine)
    assert logged["decision"] == "loop" and ack_rows(engine) == []


async def test_a_second_message_in_an_acknowledged_thread_gets_no_second_ack(
    watcher: Inbox, engine: Engine, dovecot: DovecotServer, folder: str, clock: ManualClock
) -> None:
    dovecot.append(inquiry("<th1@mail.example>"), folder)
    await watcher.process_available()
    clock.advance(timedelta(days=10))  # past once_per_sender: only the thread rule holds
    dovecot.append(
        inquiry("<th2@mail.example>", extra="In-Reply-To: <th1@mail.example>\r\n"), folder
    )
    await watcher.process_available()
    first, second = sorted(inquiry_rows(engine), key=lambda r: r["id"])  # type: ignore[arg-type, return-value]
    assert second["thread_id"] == first["id"] and second["status"] == InquiryStatus.NEW
    assert len(ack_rows(engine)) == 1


async def test_a_hard_bounce_suppresses_the_address(
    watcher: Inbox, engine: Engine, dovecot: DovecotServer, folder: str
) -> None:
    dovecot.append((MAIL / "postfix_bounce_user_unknown.eml").read_bytes(), folder)
    await watcher.process_available()
    with engine.connect() as conn:
        ivan = customers.get(conn, "ivan.dimitrov@mail.example.bg")
        statuses = conn.execute(select(inquiries.INQUIRIES.c.decision)).scalars().all()
    assert statuses == ["bounce"] and ivan["suppressed_reason"].startswith("hard bounce")
    assert ack_rows(engine) == []


async def test_the_daemon_acknowledges_mail_arriving_while_it_idles(
    engine: Engine,
    tmp_path: Path,
    clock: ManualClock,
    dovecot: DovecotServer,
    folder: str,
    known: None,
) -> None:
    sink = Sink()
    server, port = await start_sink(sink)
    cfg = shipped_config(tmp_path, real_servers(dovecot, port, folder))
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.serve(cfg, engine, stop, sandbox_on=False, clock=clock))
    try:
        await asyncio.to_thread(dovecot.wait_until_idling, EVENT_SECONDS)
        dovecot.append(inquiry("<live@mail.example>"), folder)
        for _ in range(int(EVENT_SECONDS / 0.05)):  # bounded wait for the real server's push
            if sink.received:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
        server.close()
        await server.wait_closed()
    (ack,) = sink.received
    assert ack.message["In-Reply-To"] == "<live@mail.example>"
