"""The inbox watcher against a real Dovecot: logged once, acknowledged once, never a loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from mailer import daemon
from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import profiles, tokens
from mailer.inbound import autoreply, inquiries
from mailer.inbound.intake import AckPolicy
from mailer.inbound.mailbox import PROCESSED_KEYWORD, Mailbox
from mailer.inbound.watcher import Inbox, Inquiries, save_position
from mailer.outbound import outbox
from mailer.outbound.outbox import NewMessage
from mailer.outbound.smtp import SmtpTarget
from mailer.store.models import MAILBOX_STATE, InquiryStatus, OutboxStatus
from tests.configs import inbox_config, real_servers, shipped_config
from tests.conftest import add_customers
from tests.dovecot import DovecotServer
from tests.running import EVENT_SECONDS, eventually, serving
from tests.smtp_sink import Sink, listening

MAIL = Path(__file__).parent / "mail"


def inquiry(
    message_id: str,
    *,
    sender: str = "Мария Иванова <maria@example.com>",
    extra: str = "",
    subject: str = "Поръчка 1042",
    text: str = "Здравейте, поръчката ми още не пристига.",
) -> bytes:
    return (
        f"From: {sender}\r\nTo: support@northwind-roasters.example\r\n"
        f"Subject: {subject}\r\nMessage-ID: {message_id}\r\n"
        "Date: Tue, 24 Nov 2026 13:55:00 +0200\r\n"
        f"{extra}Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    ).encode()


@pytest.fixture
def known(engine: Engine, tmp_path: Path, clock: ManualClock) -> None:
    add_customers(
        engine,
        tmp_path,
        "email,name,locale,timezone\nmaria@example.com,Мария Иванова,bg,Europe/Sofia\n"
        "ivan.dimitrov@mail.example.bg,Иван Димитров,bg,Europe/Sofia\n",
        clock.now(),
    )


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

    watcher = Inbox(
        engine=engine,
        open_mailbox=open_mailbox,
        handler=Inquiries(AckPolicy.from_config(cfg)),
        clock=clock,
    )
    yield watcher
    await watcher.close()


def inquiry_rows(engine: Engine) -> list[inquiries.Listed]:
    with engine.connect() as conn:
        return inquiries.find(conn, limit=100)


def ack_rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = outbox.find(conn, limit=100)
    return [r for r in rows if str(r["dedupe_key"]).startswith(inquiries.ACK_PREFIX)]


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
    assert logged.status == InquiryStatus.ACKNOWLEDGED and logged.reasons == []
    assert PROCESSED_KEYWORD in dovecot.flags(folder)[1]
    sink = Sink()
    async with listening(sink) as port:
        delivery = daemon.build_delivery(
            cfg, engine, clock, SmtpTarget(host="127.0.0.1", port=port)
        )
        assert await delivery.deliver_due() == 1
    (ack,) = sink.received
    mail = ack.message
    assert ack.mail_from == "<>" and ack.rcpt_tos == ["maria@example.com"]
    assert mail["Auto-Submitted"] == "auto-replied"
    assert mail["X-Auto-Response-Suppress"] == "All"
    assert mail["In-Reply-To"] == "<q1@mail.example>"
    assert mail["Subject"] == f"Получихме съобщението Ви [#{logged.id}]"
    assert "Мария" in mail.get_body(("plain",)).get_content()


async def test_a_new_sender_is_acknowledged_in_the_language_they_wrote_in(
    watcher: Inbox,
    dovecot: DovecotServer,
    folder: str,
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
) -> None:
    """Nobody told mailer Siti's language: her mail is Indonesian, so is the answer, and so
    is her profile. Klaus writes German, which no acknowledgement is written in: English."""
    indonesian = (
        "Halo, saya sudah memesan biji kopi minggu lalu tetapi paketnya belum sampai. "
        "Bisakah Anda memeriksa status pesanan saya?"
    )
    german = "Hallo, ich habe letzte Woche Kaffee bestellt, aber das Paket ist noch nicht da."
    siti = inquiry("<s1@x>", sender="Siti <siti@example.id>", subject="Pesanan", text=indonesian)
    klaus = inquiry("<k1@x>", sender="Klaus <klaus@example.de>", subject="Paket", text=german)
    dovecot.append(siti, folder)
    dovecot.append(klaus, folder)
    assert await watcher.process_available() == 2
    sink = Sink()
    async with listening(sink) as port:
        target = SmtpTarget(host="127.0.0.1", port=port)
        assert await daemon.build_delivery(cfg, engine, clock, target).deliver_due() == 2
    subjects = {got.rcpt_tos[0]: got.message["Subject"] for got in sink.received}
    assert subjects["siti@example.id"].startswith("Pesan Anda sudah kami terima [#")
    assert subjects["klaus@example.de"].startswith("We've received your message [#")
    with engine.connect() as conn:
        assert profiles.get(conn, "siti@example.id").locale == "id"
        assert profiles.get(conn, "klaus@example.de").locale is None


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
        save_position(conn, folder, 1, 0, clock.now())
        conn.execute(MAILBOX_STATE.update().values(uidvalidity=12345, last_uid=99))
    await watcher.close()
    assert await watcher.process_available() == 1, "read again from the start"
    assert len(inquiry_rows(engine)) == 1 and len(ack_rows(engine)) == 1


async def test_an_out_of_office_reply_is_logged_and_closed_never_acknowledged(
    watcher: Inbox, engine: Engine, dovecot: DovecotServer, folder: str
) -> None:
    dovecot.append((MAIL / "exchange_out_of_office.eml").read_bytes(), folder)
    await watcher.process_available()
    (logged,) = inquiry_rows(engine)
    assert logged.status == InquiryStatus.CLOSED and logged.decision == "auto-reply"
    assert any("auto-submitted" in r for r in logged.reasons)
    assert ack_rows(engine) == []


async def test_our_own_acknowledgement_coming_back_is_not_answered(
    watcher: Inbox, engine: Engine, dovecot: DovecotServer, folder: str
) -> None:
    extra = "X-Mailer-Loop: northwind-roasters.example\r\nAuto-Submitted: auto-replied\r\n"
    dovecot.append(inquiry("<loop@northwind-roasters.example>", extra=extra), folder)
    await watcher.process_available()
    (logged,) = inquiry_rows(engine)
    assert logged.decision == "loop" and ack_rows(engine) == []


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
    first, second = sorted(inquiry_rows(engine), key=lambda r: r.id)
    assert second.thread_id == first.id and second.status == InquiryStatus.NEW
    assert len(ack_rows(engine)) == 1


async def test_a_hard_bounce_suppresses_the_address(
    watcher: Inbox, engine: Engine, dovecot: DovecotServer, folder: str
) -> None:
    dovecot.append((MAIL / "postfix_bounce_user_unknown.eml").read_bytes(), folder)
    await watcher.process_available()
    with engine.connect() as conn:
        ivan = profiles.get(conn, "ivan.dimitrov@mail.example.bg")
        statuses = conn.execute(select(inquiries.INQUIRIES.c.decision)).scalars().all()
    assert statuses == ["bounce"] and ivan.suppressed_reason.startswith("hard bounce")
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
    async with listening(sink) as port:
        cfg = inbox_config(tmp_path, dovecot, port, folder)
        async with serving(clock, (cfg, engine)):
            await asyncio.to_thread(dovecot.wait_until_idling, EVENT_SECONDS)
            dovecot.append(inquiry("<live@mail.example>"), folder)
            await eventually(lambda: bool(sink.received), "the acknowledgement reaches the sink")
    (ack,) = sink.received
    assert ack.message["In-Reply-To"] == "<live@mail.example>"


async def test_a_backlog_is_committed_and_flagged_in_lists(
    watcher: Inbox, engine: Engine, dovecot: DovecotServer, folder: str
) -> None:
    senders = [f"Customer {n} <c{n}@example.org>" for n in range(5)]
    for n, sender in enumerate(senders):
        dovecot.append(inquiry(f"<b{n}@mail.example>", sender=sender), folder)
    assert await watcher.process_available() == 5
    assert len(inquiry_rows(engine)) == 5
    assert sorted(str(r["to_address"]) for r in ack_rows(engine)) == [
        f"c{n}@example.org" for n in range(5)
    ]
    assert all(PROCESSED_KEYWORD in flags for flags in dovecot.flags(folder).values())
    assert await watcher.process_available() == 0


async def test_a_message_that_breaks_the_decision_is_logged_as_failed_and_the_rest_go_on(
    watcher: Inbox,
    engine: Engine,
    dovecot: DovecotServer,
    folder: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in the decision code cannot be produced by a real server: it is injected."""
    decide = autoreply.decide

    def broken_for_one(message: EmailMessage, *args: Any, **kwargs: Any) -> autoreply.Decision:
        if message["Message-ID"] == "<bad@mail.example>":
            raise KeyError("a bug in a rule")
        return decide(message, *args, **kwargs)

    monkeypatch.setattr(autoreply, "decide", broken_for_one)
    dovecot.append(inquiry("<good1@mail.example>"), folder)
    dovecot.append(inquiry("<bad@mail.example>", sender="Siti <siti@example.com>"), folder)
    dovecot.append(inquiry("<good2@mail.example>", sender="Иван <ivan@example.com>"), folder)

    assert await watcher.process_available() == 3

    rows = {r.id: r for r in inquiry_rows(engine)}
    failed = [r for r in rows.values() if r.status == InquiryStatus.FAILED]
    assert len(rows) == 3 and len(failed) == 1
    with engine.connect() as conn:
        kept = inquiries.get(conn, failed[0].id)
    assert kept is not None and b"<bad@mail.example>" in kept.raw
    assert "a bug in a rule" in kept.error
    assert all(PROCESSED_KEYWORD in flags for flags in dovecot.flags(folder).values())
    assert await watcher.process_available() == 0, "not fetched again"


async def test_raw_mail_above_keep_raw_mb_is_kept_truncated_and_says_so(
    engine: Engine,
    tmp_path: Path,
    clock: ManualClock,
    dovecot: DovecotServer,
    folder: str,
    known: None,
) -> None:
    overrides = {**real_servers(dovecot, 2525, folder), "MAILER_IMAP__KEEP_RAW_MB": "1"}
    cfg = shipped_config(tmp_path, overrides)
    watcher = daemon.build_inbox(cfg, engine, clock, lambda: None, sandbox_on=False)
    big = inquiry("<big@mail.example>").replace(b"\r\n\r\n", b"\r\n\r\n" + b"x" * 76 * 20_000)
    dovecot.append(big, folder)
    try:
        assert await watcher.process_available() == 1
    finally:
        await watcher.close()
    (row,) = inquiry_rows(engine)
    with engine.connect() as conn:
        kept = inquiries.get(conn, row.id)
    assert kept is not None and kept.raw_truncated and len(kept.raw) == 1024 * 1024
    assert any("raw kept up to 1048576 bytes" in d for d in kept.defects)
    assert row.status == InquiryStatus.ACKNOWLEDGED


@pytest.mark.parametrize("forged", [False, True])
async def test_a_mailto_unsubscribe_request_unsubscribes_at_once_and_is_not_acknowledged(
    watcher: Inbox,
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    dovecot: DovecotServer,
    folder: str,
    forged: bool,
) -> None:
    """What a mail client sends for our List-Unsubscribe mailto: link (subject from the URL)."""
    with engine.connect() as conn:
        maria = profiles.get(conn, "maria@example.com")
    token = tokens.sign(tokens.load_secret(cfg), maria.id + (1 if forged else 0))
    if forged:
        token = token.replace(".", ".x", 1)
    request = inquiry("<unsub@mail.example>").replace(
        "Поръчка 1042".encode(), f"unsubscribe {token}".encode()
    )
    dovecot.append(request, folder)
    await watcher.process_available()
    (logged,) = inquiry_rows(engine)
    with engine.connect() as conn:
        unsubscribed_at = profiles.get(conn, "maria@example.com").unsubscribed_at
    if forged:
        assert unsubscribed_at is None and logged.status == InquiryStatus.ACKNOWLEDGED
    else:
        assert unsubscribed_at == clock.now() and logged.decision == "unsubscribe"
        assert logged.status == InquiryStatus.CLOSED and ack_rows(engine) == []


async def test_a_hard_bounce_marks_the_returned_message_bounced_by_its_message_id(
    watcher: Inbox, engine: Engine, dovecot: DovecotServer, folder: str, clock: ManualClock
) -> None:
    """The report names the final address; the returned headers name our message, sent to an
    address forwarding there: both are suppressed, and the message shows why it never arrived."""
    sent = NewMessage(
        dedupe_key="newsletter:1:maria",
        to_address="maria@example.com",
        category=Category.MARKETING,
        template="newsletter",
    )
    outbox.enqueue(engine, [sent], clock.now())
    with engine.begin() as conn:
        conn.execute(
            outbox.OUTBOX.update().values(
                status=OutboxStatus.SENT,
                message_id="<0b7e1f3c9d2a4e58b6c7d8e9f0a1b2c3@bilki-roza.example>",
            )
        )
    dovecot.append((MAIL / "postfix_bounce_user_unknown.eml").read_bytes(), folder)
    await watcher.process_available()
    with engine.connect() as conn:
        (row,) = outbox.find(conn, limit=10)
        suppressed = conn.execute(
            select(profiles.CUSTOMERS.c.email).where(
                profiles.CUSTOMERS.c.suppressed_reason.is_not(None)
            )
        ).scalars()
        assert set(suppressed) == {"ivan.dimitrov@mail.example.bg", "maria@example.com"}
    assert row["status"] == OutboxStatus.BOUNCED
    assert "ivan.dimitrov@mail.example.bg" in str(row["reason"])


async def test_a_delay_notice_changes_nothing_but_the_log(
    watcher: Inbox, engine: Engine, dovecot: DovecotServer, folder: str
) -> None:
    dovecot.append((MAIL / "postfix_delayed.eml").read_bytes(), folder)
    await watcher.process_available()
    (logged,) = inquiry_rows(engine)
    with engine.connect() as conn:
        flagged = conn.execute(
            select(profiles.CUSTOMERS.c.email).where(
                profiles.CUSTOMERS.c.suppressed_reason.is_not(None)
            )
        ).all()
    assert logged.decision == "bounce" and flagged == []


async def test_a_person_whose_from_header_breaks_the_parser_is_logged_and_acknowledged(
    watcher: Inbox, engine: Engine, dovecot: DovecotServer, folder: str
) -> None:
    broken = "=?utf-8?q?Ivan=0D=0AX-Evil:_1?= <ivan@example.com>"
    dovecot.append(inquiry("<crlf@mail.example>", sender=broken), folder)
    await watcher.process_available()
    (logged,) = inquiry_rows(engine)
    assert logged.status == InquiryStatus.ACKNOWLEDGED, logged.error
    assert (logged.sender, logged.sender_name) == ("ivan@example.com", "Ivan X-Evil: 1")
    assert any("From display name holds control characters" in d for d in logged.defects)
    assert [a["to_address"] for a in ack_rows(engine)] == ["ivan@example.com"]


async def test_a_message_with_no_usable_sender_stays_unanswered_and_says_why(
    watcher: Inbox, engine: Engine, dovecot: DovecotServer, folder: str
) -> None:
    dovecot.append(inquiry("<nobody@mail.example>", sender="=?utf-8?q?=0D=0A?="), folder)
    await watcher.process_available()
    (logged,) = inquiry_rows(engine)
    assert logged.status == InquiryStatus.CLOSED and ack_rows(engine) == []
    assert any(str(r).startswith("no-sender: From:") for r in logged.reasons)


async def test_a_hard_bounce_in_a_servers_own_format_marks_the_returned_message_bounced(
    watcher: Inbox, engine: Engine, dovecot: DovecotServer, folder: str, clock: ManualClock
) -> None:
    """Exim's report has no delivery-status part: the address and the returned Message-ID
    are read from its text."""
    sent = NewMessage(
        dedupe_key="newsletter:1:userx",
        to_address="userx@its.example.nl",
        category=Category.MARKETING,
        template="news",
    )
    outbox.enqueue(engine, [sent], clock.now())
    with engine.begin() as conn:
        conn.execute(
            outbox.OUTBOX.update().values(
                status=OutboxStatus.SENT, message_id="<19990920022322.A19735@stereo.rotzorg.org>"
            )
        )
    dovecot.append((MAIL / "bounces" / "flufl-exim-01.eml").read_bytes(), folder)
    await watcher.process_available()
    (logged,) = inquiry_rows(engine)
    with engine.connect() as conn:
        (row,) = outbox.find(conn, limit=10)
    assert logged.decision == "bounce" and ack_rows(engine) == []
    assert row["status"] == OutboxStatus.BOUNCED and "userx@its.example.nl" in str(row["reason"])
