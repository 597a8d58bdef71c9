"""Replies from the desk: written in the browser, delivered threaded on the customer's
message, answered by the customer through a real Dovecot into the same inquiry, which
re-opens; saved replies managed and used; a suppressed address refused with the reason;
and support's own clock (the promised answer time, and which inquiries are past it).
"""

from __future__ import annotations

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import Engine

from mailer import daemon
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.core.errors import TemplateError
from mailer.customers import profiles
from mailer.inbound import inquiries, replies, saved_replies
from mailer.inbound.inquiries import REPLY_PREFIX
from mailer.inbound.saved_replies import Draft
from mailer.inbound.watcher import Inbox
from mailer.outbound import outbox, templates
from mailer.outbound.smtp import SmtpTarget
from mailer.store.models import InquiryStatus, OutboxStatus
from tests.conftest import sign_in
from tests.dovecot import DovecotServer
from tests.site import Site
from tests.smtp_sink import Received, Sink, listening
from tests.test_inbox import inquiry, known, watcher  # noqa: F401 (fixtures)
from tests.test_web_desk import maria, order, received  # noqa: F401 (fixtures)

SUPPORT = "support@northwind-roasters.example"


async def deliver(cfg: Config, engine: Engine, clock: ManualClock) -> list[Received]:
    """Everything due, through the delivery workers to an SMTP sink."""
    sink = Sink()
    async with listening(sink) as port:
        target = SmtpTarget(host="127.0.0.1", port=port)
        await daemon.build_delivery(cfg, engine, clock, target).deliver_due()
    return sink.received


def opened(engine: Engine, inquiry_id: int) -> inquiries.Opened:
    with engine.connect() as conn:
        found = inquiries.get(conn, inquiry_id)
    assert found is not None
    return found


def reply_rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = outbox.find(conn, limit=100)
    return [r for r in rows if str(r["dedupe_key"]).startswith(REPLY_PREFIX)]


def answer(message_id: str, in_reply_to: str, references: str, subject: str) -> bytes:
    return (
        f"From: Мария Иванова <maria@example.com>\r\nTo: {SUPPORT}\r\n"
        f"Subject: {subject}\r\nMessage-ID: {message_id}\r\n"
        f"In-Reply-To: {in_reply_to}\r\nReferences: {references}\r\n"
        "Date: Wed, 25 Nov 2026 10:00:00 +0200\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "Благодаря, но пакетът още не е дошъл.\r\n"  # noqa: RUF001
    ).encode()


async def test_a_reply_from_the_desk_threads_and_the_customers_answer_reopens_the_inquiry(
    page: Page,
    site: Site,
    staff: dict[str, str],
    watcher: Inbox,  # noqa: F811
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    dovecot: DovecotServer,
    folder: str,
) -> None:
    dovecot.append(inquiry("<e2e1@mail.example>"), folder)
    assert await watcher.process_available() == 1
    with engine.connect() as conn:
        (root,) = inquiries.find(conn, limit=10)
    (ack,) = await deliver(cfg, engine, clock)
    assert ack.message["In-Reply-To"] == "<e2e1@mail.example>"

    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries/{root.id}")
    await expect(page.locator("#promise")).to_contain_text("Answer promised by")
    editor = page.get_by_label("Your reply")
    await expect(editor).to_have_value(re.compile(r"> Здравейте, поръчката ми още не пристига\."))
    await editor.press("Control+Home")
    await editor.type("Здравейте, Мария! Пратката тръгна днес.")
    await page.get_by_role("button", name="Send reply").click()
    await expect(page.locator("#timeline + ol")).to_contain_text("sam replied to the customer")
    assert opened(engine, root.id).status == InquiryStatus.ANSWERED

    (sent,) = await deliver(cfg, engine, clock)
    mail = sent.message
    assert sent.rcpt_tos == ["maria@example.com"]
    assert mail["From"].addresses[0].display_name == "sam"
    assert mail["From"].addresses[0].addr_spec == SUPPORT
    assert mail["In-Reply-To"] == "<e2e1@mail.example>"
    assert "<e2e1@mail.example>" in mail["References"]
    assert mail["Subject"] == f"Re: Поръчка 1042 [#{root.id}]"
    assert "Auto-Submitted" not in mail and "List-Unsubscribe" not in mail
    body = mail.get_body(("plain",)).get_content()
    assert body.startswith("Здравейте, Мария! Пратката тръгна днес.")
    assert "> Здравейте, поръчката ми още не пристига." in body

    clock.advance(timedelta(hours=3))
    reply_id = mail["Message-ID"]
    references = reply_id  # threaded by our reply's Message-ID alone
    subject = f"Re: {mail['Subject']}"
    dovecot.append(answer("<e2e2@mail.example>", reply_id, references, subject), folder)
    assert await watcher.process_available() == 1
    again = opened(engine, root.id)
    assert [m.message_id for m in again.thread] == ["<e2e1@mail.example>", "<e2e2@mail.example>"]
    assert again.status == InquiryStatus.OPEN
    with engine.connect() as conn:
        events = inquiries.events(conn, root.id)
    assert [(e.kind, e.actor, e.text) for e in events][-1] == (
        "status",
        "maria@example.com",
        "answered → open",
    )
    assert await deliver(cfg, engine, clock) == [], "the thread was acknowledged once"


async def test_support_starts_a_reply_from_a_saved_reply_in_the_customers_language(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    clock: ManualClock,
    order: int,  # noqa: F811
) -> None:
    with engine.begin() as conn:
        for locale, body in (
            ("en", "Hello {{ customer.first_name }}, about {{ inquiry.reference }}:"),
            ("bg", "Здравейте, {{ customer.name }}! Относно {{ inquiry.reference }}: {{ agent }}"),
        ):
            draft = Draft(name="Shipping delay", locale=locale, body=body)
            saved_replies.save(conn, draft, None, "sam", clock.now())
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries/{order}")
    choice = page.get_by_label("Saved reply")
    await expect(choice.locator("option").first).to_have_text("Shipping delay (bg)")
    await page.get_by_role("button", name="Start from it").click()
    editor = page.get_by_label("Your reply")
    await expect(editor).to_have_value(
        re.compile(rf"^Здравейте, Мария Иванова! Относно #{order}: sam\n")
    )
    await page.get_by_role("button", name="Send reply").click()
    await expect(page.locator("#timeline + ol")).to_contain_text("Здравейте, Мария Иванова!")
    (row,) = reply_rows(engine)
    assert row["status"] == OutboxStatus.QUEUED and row["to_address"] == "maria@example.com"


async def test_a_reply_to_a_suppressed_address_is_refused_with_the_reason(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    clock: ManualClock,
    order: int,  # noqa: F811
) -> None:
    with engine.begin() as conn:
        profiles.suppress(
            conn, ["maria@example.com"], "hard bounce reported 2026-11-20", clock.now()
        )
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries/{order}")
    refused = page.locator("#reply-refused")
    await expect(refused).to_contain_text("hard bounce reported 2026-11-20")
    await page.get_by_label("Your reply").fill("<b>Still</b> there?")
    await page.get_by_role("button", name="Send reply").click()
    await expect(refused).to_contain_text("No reply can go to maria@example.com")
    await expect(page.get_by_label("Your reply")).to_have_value("<b>Still</b> there?")
    assert reply_rows(engine) == []
    assert opened(engine, order).status != InquiryStatus.ANSWERED


def test_a_reply_to_a_customer_who_unsubscribed_still_goes(
    engine: Engine,
    clock: ManualClock,
    order: int,  # noqa: F811
) -> None:
    with engine.begin() as conn:
        profiles.unsubscribe_id(conn, opened(engine, order).customer_id or 0, clock.now())
        replies.send(conn, opened(engine, order), text="Yes.", user="sam", now=clock.now())
    (row,) = reply_rows(engine)
    assert row["status"] == OutboxStatus.QUEUED and row["category"] == "transactional"


async def test_support_manages_saved_replies_and_a_syntax_error_names_its_line(
    page: Page, site: Site, staff: dict[str, str], engine: Engine
) -> None:
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/desk/replies")
    await page.get_by_role("link", name="New saved reply").click()
    await page.get_by_label("Name", exact=True).fill("Refund")
    await page.get_by_label("Language").fill("bg")
    text = page.get_by_label("Text", exact=True)
    await text.fill("Здравейте,\n{{ customer.name }\nВръщаме парите.")  # noqa: RUF001
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#problem")).to_have_text(
        re.compile(r"^saved reply 'Refund', line 2: .+")
    )
    await text.fill("Здравейте, {{ customer.name }}!\nВръщаме парите.")  # noqa: RUF001
    await page.get_by_role("button", name="Save").click()
    rows = page.locator("#saved-replies tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("Refund")
    await expect(rows.first).to_contain_text("by sam")
    await page.get_by_role("link", name="Refund").click()
    await page.get_by_label("Name", exact=True).fill("Refund sent")
    await page.get_by_role("button", name="Save").click()
    await expect(rows.first).to_contain_text("Refund sent")
    await page.get_by_role("button", name="Delete Refund sent (bg)").click()
    await expect(rows).to_have_text(["No saved replies yet."])


async def test_the_desk_marks_inquiries_past_their_promised_answer_time(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    clock: ManualClock,
    order: int,  # noqa: F811
) -> None:
    grinder = order - 1  # acknowledged; the order message repeats within a week (no ack)
    with engine.connect() as conn:
        (promised,) = inquiries.promises(conn, [opened(engine, grinder)]).values()
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries?late=1")
    await expect(page.locator("#inquiries tbody tr")).to_have_text([re.compile("No inquiries")])
    clock.advance(promised - clock.now() + timedelta(minutes=1))
    await sign_in(page, site, "sam")  # sessions end after 12 idle hours
    await page.goto(f"{site.url}/inquiries")
    await page.get_by_role("link", name="Overdue").click()
    rows = page.locator("#inquiries tbody tr")
    await expect(rows).to_have_count(1)  # the order message was not acknowledged: no promise
    await expect(rows.first).to_contain_text("past promise")
    await page.goto(f"{site.url}/inquiries/{grinder}")
    await expect(page.locator("#promise")).to_contain_text("past promise")


def test_a_saved_reply_runs_in_the_sandbox_and_a_failure_names_its_line() -> None:
    zone = ZoneInfo("Europe/Sofia")
    where = "saved reply 'x'"
    assert templates.check_text("Hi\n{% if %}", where) == (
        "saved reply 'x', line 2: Expected an expression, got 'end of statement block'"
    )
    with pytest.raises(TemplateError, match=r"saved reply 'x':2: undefined variable: 'nickname'"):
        templates.render_text("Hi\n{{ nickname }}", where, {}, locale="bg", zone=zone)
    with pytest.raises(TemplateError, match="not allowed in templates"):
        templates.render_text("{{ ''.__class__.__mro__ }}", where, {}, locale="bg", zone=zone)
    shown = templates.render_text("<b>{{ x }}</b>", where, {"x": "&"}, locale="bg", zone=zone)
    assert shown == "<b>&</b>", "plain text: the page escapes it, the mail is text/plain"


async def test_an_out_of_office_answer_to_a_reply_does_not_reopen_the_inquiry(
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    order: int,  # noqa: F811
) -> None:
    with engine.begin() as conn:
        replies.send(conn, opened(engine, order), text="Shipped.", user="sam", now=clock.now())
    (sent,) = [
        m for m in await deliver(cfg, engine, clock) if m.message["Subject"].startswith("Re:")
    ]
    reply_id = sent.message["Message-ID"]
    away = answer("<away@mail.example>", reply_id, reply_id, "Out of office")
    away = away.replace(b"Date:", b"Auto-Submitted: auto-replied\r\nDate:")
    away_id = received(engine, cfg, clock, away)
    assert opened(engine, away_id).thread_id == order, "threaded on the reply's Message-ID"
    assert opened(engine, order).status == InquiryStatus.ANSWERED
