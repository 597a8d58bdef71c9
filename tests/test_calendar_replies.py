"""Customers answering our calendar invitations: the iTIP REPLY that Google Calendar,
Outlook and Apple Calendar mail back is read, kept as the customer's latest answer, shown
on the webinar's page and the customer's timeline, and neither acknowledged nor left on
the desk. End to end through a real Dovecot, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import Engine, select

from mailer import daemon
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import followups
from mailer.customers.followups import NewFollowUp
from mailer.inbound import inquiries
from mailer.inbound.itip import CalendarReply
from mailer.inbound.parsing import parse
from mailer.outbound.invitations import Attendee, invitation
from mailer.outbound.outbox import OUTBOX
from mailer.relationship import meetings
from mailer.scheduling import firing, results
from mailer.store.models import InquiryStatus
from tests.configs import ROOT, inbox_config
from tests.conftest import FIRING, sign_in
from tests.dovecot import DovecotServer
from tests.site import Site

CALENDAR = Path(__file__).parent / "mail" / "calendar"
WEBINAR = "webinar-spring-roasting"
WEBINAR_UID = f"webinar-{WEBINAR}@northwind-roasters.example"
TITLE = "Spring roasting: light roasts at home"
SENDER = meetings.Sender("support@northwind-roasters.example", "Northwind Coffee")


def sample(name: str) -> bytes:
    return (CALENDAR / name).read_bytes()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "google_accepted.eml",
            CalendarReply(
                uid=WEBINAR_UID,
                attendee="maria@example.bg",
                answer="accepted",
                sequence=0,
                stamp=datetime(2027, 5, 7, 8, 15, tzinfo=UTC),
                title=TITLE,
            ),
        ),
        (
            "outlook_accepted.eml",  # the address in capitals, the title after "Accepted: "
            CalendarReply(
                uid="meeting-1@northwind-roasters.example",
                attendee="dana@example.com",
                answer="accepted",
                sequence=0,
                stamp=datetime(2027, 5, 10, 16, 42, 10, tzinfo=UTC),
                title="Northwind Coffee: Mia Jensen",
            ),
        ),
        (
            "apple_tentative.eml",  # only an attached .ics
            CalendarReply(
                uid=WEBINAR_UID,
                attendee="maria@example.bg",
                answer="tentative",
                sequence=0,
                stamp=datetime(2027, 5, 6, 14, 12, tzinfo=UTC),
                title=TITLE,
            ),
        ),
    ],
)
def test_each_calendar_clients_reply_is_read(name: str, expected: CalendarReply) -> None:
    assert parse(sample(name)).calendar_reply == expected


def test_an_invitation_or_a_broken_calendar_is_no_reply() -> None:
    calendar = {
        "uid": WEBINAR_UID,
        "sequence": 0,
        "method": "REQUEST",
        "title": TITLE,
        "description": "",
        "starts_at": datetime(2027, 5, 20, 13, tzinfo=UTC),
        "ends_at": datetime(2027, 5, 20, 14, tzinfo=UTC),
        "join_url": "https://meet.example/spring",
        "organizer": "events@northwind-roasters.example",
        "organizer_name": None,
    }
    request = invitation(calendar, Attendee("maria@example.bg"), datetime(2027, 5, 6, tzinfo=UTC))
    forwarded = _with_calendar(request)
    broken = _with_calendar(b"BEGIN:VCALENDAR\r\nMETHOD:REPLY\r\nBEGIN:VEVENT\r\nUID")
    assert parse(forwarded).calendar_reply is None
    assert parse(broken).calendar_reply is None
    assert parse(broken).text == "See the event."  # the mail itself still reads


def _with_calendar(ics: bytes) -> bytes:
    head = (
        b"From: maria@example.bg\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nSee the event.\r\n"
        b"--b\r\nContent-Type: text/calendar; method=REPLY\r\n\r\n"
    )
    return head + ics + b"\r\n--b--\r\n"


@pytest.fixture
def cfg(cfg: Config) -> Config:
    shutil.copytree(ROOT / "schedules", cfg.schedules_dir)
    return cfg


def _invite(engine: Engine, cfg: Config, clock: ManualClock) -> None:
    """The webinar's invitations, and a meeting with Dana: meeting 1."""
    firing.first_seen(engine, [WEBINAR], clock.now())
    clock.set(datetime(2027, 5, 6, 13, 5, tzinfo=UTC))
    schedules, _ = results.load(cfg, clock)
    firing.fire_due(engine, {WEBINAR: schedules[WEBINAR]}, clock.now(), FIRING)
    with engine.begin() as conn:
        new = NewFollowUp(
            customer_id=followups.customer_id(conn, "dana@example.com"),
            due_at=datetime(2027, 5, 12, 13, tzinfo=UTC),
            note="",
            created_by="sam",
            meeting=meetings.plan("30m", "https://meet.northwind-roasters.example/dana"),
        )
        assert meetings.schedule(conn, new, SENDER, clock.now()) == 1


@pytest.mark.usefixtures("people")
async def test_answers_are_kept_shown_and_kept_off_the_desk(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    dovecot: DovecotServer,
    folder: str,
    tmp_path: Path,
) -> None:
    _invite(engine, cfg, clock)
    invited = _outbox_keys(engine)
    not_ours = sample("google_accepted.eml").replace(b"spring-roasting@", b"autumn-cupping@")
    not_ours = not_ours.replace(b"Accepted: Spring roasting", b"Accepted: Autumn cupping")
    not_ours = not_ours.replace(b"<calendar-7c1e", b"<calendar-8d2f")
    # Google's acceptance, then an older Maybe from her Mac arriving late, Dana's Outlook
    # acceptance of the meeting, and an answer about an event that is not ours
    for raw in (
        sample("google_accepted.eml"),
        sample("apple_tentative.eml"),
        sample("outlook_accepted.eml"),
        not_ours,
    ):
        dovecot.append(raw, folder)
    clock.advance(timedelta(days=2))
    watcher_cfg = inbox_config(tmp_path / "watcher", dovecot, 9, folder)
    watcher = daemon.build_inbox(watcher_cfg, engine, clock, lambda: None, sandbox_on=False)
    try:
        assert await watcher.process_available() == 4
    finally:
        await watcher.close()

    acknowledged = [k for k in _outbox_keys(engine) if k not in invited]
    assert len(acknowledged) == 1  # only the mail about someone else's event
    statuses = _statuses(engine)
    assert statuses[:3] == [(InquiryStatus.CLOSED, "calendar-reply")] * 3
    assert statuses[3] == (InquiryStatus.ACKNOWLEDGED, "inquiry")

    await sign_in(page, site, "mia")
    await page.goto(f"{site.url}/schedules/{WEBINAR}/webinar")
    replies = page.locator("#replies")
    await expect(replies).to_contain_text("1 accepted: Мария")  # the late Maybe changed nothing
    await expect(replies).to_contain_text("0 tentative")
    await expect(replies).to_contain_text("0 declined")

    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries?show=open")
    desk = page.locator("#inquiries")
    await expect(desk).to_contain_text("Autumn cupping")
    await expect(desk).not_to_contain_text("Spring roasting")
    await expect(desk).not_to_contain_text("Mia Jensen")
    await page.goto(f"{site.url}/customers/{_customer(engine, 'maria@example.bg')}")
    timeline = page.get_by_role("table", name="Timeline")
    await expect(timeline).to_contain_text(f"Accepted the invitation to {TITLE}")
    await expect(timeline).not_to_contain_text("Tentatively")
    await page.goto(f"{site.url}/customers/{_customer(engine, 'dana@example.com')}")
    timeline = page.get_by_role("table", name="Timeline")
    await expect(timeline.locator("tr.followup")).to_contain_text("the customer accepted")


def _outbox_keys(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(OUTBOX.c.dedupe_key)).scalars())


def _statuses(engine: Engine) -> list[tuple[str, str]]:
    table = inquiries.INQUIRIES
    with engine.connect() as conn:
        found = conn.execute(select(table.c.status, table.c.decision).order_by(table.c.id))
        return [(status, decision) for status, decision in found]


def _customer(engine: Engine, email: str) -> int:
    with engine.connect() as conn:
        return followups.customer_id(conn, email)
