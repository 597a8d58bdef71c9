"""Webinar invitations: the RFC 5545 event must parse back exactly, and every invitation,
update and cancellation must reach the reader in the shape calendar clients act on."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar, Component
from sqlalchemy import Engine

from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import profiles
from mailer.outbound import outbox, throttle
from mailer.outbound.invitations import Attendee, invitation
from mailer.outbound.outbox import NewMessage, Policy
from mailer.outbound.prepare import Preparer
from mailer.outbound.templates import TemplateStore, sample_context
from tests.conftest import add_customers

SHIPPED = Path(__file__).resolve().parent.parent / "templates"
SOFIA = ZoneInfo("Europe/Sofia")
SENT_AT = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
# 19:00 at +03:00 is 16:00 UTC, which is 18:00 in Sofia (EET, +02:00, in December)
STARTS_AT = datetime(2026, 12, 3, 19, 0, tzinfo=timezone(timedelta(hours=3)))
DURATION = timedelta(minutes=90)
JOIN_URL = "https://meet.northwind-roasters.example/filter-coffee"
UID = "webinar-filter-coffee@northwind-roasters.example"
ANA = Attendee("ana.petrova@example.com", "Ana Petrova")
CUSTOMERS_CSV = (
    "email,name,locale,timezone,tags\n"
    "maria@example.com,Мария Иванова,bg,Europe/Sofia,webinars\n"
    "emma@example.com,Emma Wilson,en,America/Los_Angeles,webinars\n"
)


def calendar(**changes: Any) -> dict[str, Any]:
    """A message's ``calendar`` context, as schedule firing queues it."""
    fields: dict[str, Any] = {
        "uid": UID,
        "sequence": 0,
        "method": "REQUEST",
        "title": "Brewing better filter coffee",
        "description": "Our head roaster on grind, ratio and water.",
        "starts_at": STARTS_AT,
        "ends_at": STARTS_AT + DURATION,
        "join_url": JOIN_URL,
        "organizer": "events@northwind-roasters.example",
        "organizer_name": "Northwind Roasters Events",
    }
    return {**fields, **changes}


def webinar(**changes: Any) -> dict[str, Any]:
    """A message's ``webinar`` context, as schedule firing queues it."""
    fields: dict[str, Any] = {
        "title": "Brewing better filter coffee",
        "description": "Our head roaster on grind, ratio and water.",
        "starts_at": STARTS_AT,
        "ends_at": STARTS_AT + DURATION,
        "duration": DURATION,
        "join_url": JOIN_URL,
        "organizer": "Northwind Roasters Events <events@northwind-roasters.example>",
        "changed": False,
        "cancelled": False,
    }
    return {**fields, **changes}


def event_of(data: bytes) -> tuple[Calendar, Component]:
    parsed = Calendar.from_ical(data)
    [event] = parsed.walk("VEVENT")
    return parsed, event


def leaves(message: EmailMessage) -> list[EmailMessage]:
    return [part for part in message.walk() if not part.is_multipart()]


# The iCalendar object


def test_request_parses_back_with_the_events_identity_times_and_people() -> None:
    parsed, event = event_of(invitation(calendar(sequence=2), ANA, SENT_AT))
    assert parsed["METHOD"] == "REQUEST"
    assert parsed["VERSION"] == "2.0"
    assert parsed["PRODID"]
    assert event["UID"] == UID
    assert event["SEQUENCE"] == 2
    assert event.decoded("DTSTAMP") == SENT_AT
    assert event.decoded("DTSTART") == STARTS_AT
    assert event.decoded("DTEND") == STARTS_AT + DURATION
    assert event["SUMMARY"] == "Brewing better filter coffee"
    assert event["LOCATION"] == JOIN_URL
    assert event["URL"] == JOIN_URL
    assert event["STATUS"] == "CONFIRMED"
    assert event["ORGANIZER"] == "mailto:events@northwind-roasters.example"
    assert event["ORGANIZER"].params["CN"] == "Northwind Roasters Events"
    attendee = event["ATTENDEE"]
    assert attendee == "mailto:ana.petrova@example.com"
    assert dict(attendee.params) == {
        "CN": "Ana Petrova",
        "ROLE": "REQ-PARTICIPANT",
        "PARTSTAT": "NEEDS-ACTION",
        "RSVP": "TRUE",
    }


def test_cancel_names_the_same_event_and_says_it_is_cancelled() -> None:
    parsed, event = event_of(invitation(calendar(method="CANCEL", sequence=3), ANA, SENT_AT))
    assert parsed["METHOD"] == "CANCEL"
    assert event["UID"] == UID
    assert event["SEQUENCE"] == 3
    assert event["STATUS"] == "CANCELLED"
    assert event.decoded("DTSTART") == STARTS_AT
    assert event["ATTENDEE"] == "mailto:ana.petrova@example.com"


def test_times_go_out_in_utc_whatever_offset_they_came_with() -> None:
    data = invitation(calendar(), ANA, SENT_AT.astimezone(SOFIA))
    assert b"\r\nDTSTART:20261203T160000Z\r\n" in data
    assert b"\r\nDTEND:20261203T173000Z\r\n" in data
    assert b"\r\nDTSTAMP:20261124T120000Z\r\n" in data
    assert b"VTIMEZONE" not in data


def test_description_ends_with_the_join_link() -> None:
    _, event = event_of(invitation(calendar(), ANA, SENT_AT))
    assert event["DESCRIPTION"] == f"Our head roaster on grind, ratio and water.\n\n{JOIN_URL}"
    _, event = event_of(invitation(calendar(description=""), ANA, SENT_AT))
    assert event["DESCRIPTION"] == JOIN_URL


def test_a_stranger_is_an_attendee_without_a_name() -> None:
    _, event = event_of(invitation(calendar(), Attendee("guest@example.org"), SENT_AT))
    assert event["ATTENDEE"] == "mailto:guest@example.org"
    assert "CN" not in event["ATTENDEE"].params
    assert event["ATTENDEE"].params["RSVP"] == "TRUE"


def test_an_organizer_without_a_name_is_named_by_the_caller() -> None:
    data = invitation(calendar(organizer_name=None), ANA, SENT_AT, organizer_name="Northwind")
    _, event = event_of(data)
    assert event["ORGANIZER"] == "mailto:events@northwind-roasters.example"
    assert event["ORGANIZER"].params["CN"] == "Northwind"


def test_line_breaks_in_names_and_title_cannot_add_a_property() -> None:
    sneaky = Attendee("ana.petrova@example.com", "Ana\r\nATTENDEE:mailto:evil@example.com")
    data = invitation(calendar(title="Coffee\r\nMETHOD:CANCEL"), sneaky, SENT_AT)
    parsed, event = event_of(data)
    assert parsed["METHOD"] == "REQUEST"
    assert event["ATTENDEE"] == "mailto:ana.petrova@example.com"  # one attendee, not a list
    assert event["ATTENDEE"].params["CN"] == "Ana ATTENDEE:mailto:evil@example.com"
    assert event["SUMMARY"] == "Coffee METHOD:CANCEL"


def test_lines_end_in_crlf_and_fold_within_75_octets() -> None:
    long_title = "Мария и кафето " * 20
    data = invitation(calendar(title=long_title), ANA, SENT_AT)
    assert data.endswith(b"END:VCALENDAR\r\n")
    lines = data.split(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert max(map(len, lines)) <= 75
    assert event_of(data)[1]["SUMMARY"] == long_title.strip()


@pytest.mark.parametrize(
    "changes",
    [{"method": "PUBLISH"}, {"starts_at": datetime(2026, 12, 3, 16, 0)}],
    ids=["other method", "naive start"],
)
def test_other_methods_and_naive_times_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        invitation(calendar(**changes), ANA, SENT_AT)


# The message Preparer makes from a queued row


@pytest.fixture
def prepare(
    cfg: Config, engine: Engine, clock: ManualClock, tmp_path: Path
) -> Callable[..., EmailMessage]:
    """Queue one message, claim it the way delivery does, and parse what Preparer makes."""
    add_customers(engine, tmp_path, CUSTOMERS_CSV, clock.now())
    with engine.connect() as conn:
        ids = {c.email: c.id for c in profiles.find(conn)}
    preparer = Preparer(cfg, TemplateStore(cfg.templates_dir), b"test-secret" * 4)
    rules = throttle.Rules.from_settings(cfg.settings.throttle)
    claim_policy = Policy(
        rules=rules, fallback_zone=cfg.settings.business_hours.timezone, lease=timedelta(minutes=5)
    )

    def queue_and_prepare(
        context: dict[str, Any],
        template: str = "webinar_invite",
        to: str = "maria@example.com",
        category: str = Category.MARKETING,
    ) -> EmailMessage:
        message = NewMessage(
            dedupe_key=f"{template}:{to}",
            to_address=to,
            category=category,
            template=template,
            customer_id=ids.get(to),
            context=context,
        )
        outbox.enqueue(engine, [message], clock.now())
        [claimed] = outbox.claim(engine, clock.now(), 10, claim_policy)
        raw = preparer.prepare(claimed, clock.now()).data
        parsed = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        return parsed

    return queue_and_prepare


def test_invitation_is_a_calendar_alternative_and_an_ics_attachment(
    prepare: Callable[..., EmailMessage], clock: ManualClock
) -> None:
    message = prepare({"webinar": webinar(), "calendar": calendar(sequence=1)})
    assert message.get_content_type() == "multipart/mixed"
    alternative, ics = message.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    text, html, invite = alternative.iter_parts()
    assert [text.get_content_type(), html.get_content_type()] == ["text/plain", "text/html"]
    assert invite.get_content_type() == "text/calendar"
    assert invite.get_param("method") == "REQUEST"
    assert invite.get_content_charset() == "utf-8"
    assert invite.get_content_disposition() is None
    assert ics.get_content_type() == "application/ics"
    assert ics.get_content_disposition() == "attachment"
    assert ics.get_filename() == "invite.ics"
    assert ics.get_content() == invite.get_content().encode("utf-8")
    parsed, event = event_of(ics.get_content())
    assert parsed["METHOD"] == "REQUEST"
    assert (event["UID"], event["SEQUENCE"]) == (UID, 1)
    assert event.decoded("DTSTART") == STARTS_AT
    assert event.decoded("DTSTAMP") == clock.now()
    assert event["ATTENDEE"] == "mailto:maria@example.com"
    assert event["ATTENDEE"].params["CN"] == "Мария Иванова"


def test_bulgarian_customer_sees_the_start_in_her_own_zone(
    prepare: Callable[..., EmailMessage],
) -> None:
    message = prepare({"webinar": webinar(), "calendar": calendar()})
    assert str(message["Subject"]) == "Покана за уебинар: Brewing better filter coffee"
    text = leaves(message)[0].get_content()
    assert "четвъртък, 3 декември 2026 г., 18:00 ч." in text  # noqa: RUF001
    assert "1 час и 30 минути" in text


def test_cancellation_carries_method_cancel_in_both_parts(
    prepare: Callable[..., EmailMessage],
) -> None:
    context = {
        "webinar": webinar(cancelled=True),
        "calendar": calendar(method="CANCEL", sequence=2),
    }
    message = prepare(context, template="webinar_cancel")
    assert str(message["Subject"]).startswith("Отменен: Brewing better filter coffee")
    [invite] = [p for p in leaves(message) if p.get_content_type() == "text/calendar"]
    [ics] = [p for p in leaves(message) if p.get_content_type() == "application/ics"]
    assert invite.get_param("method") == "CANCEL"
    parsed, event = event_of(ics.get_content())
    assert (parsed["METHOD"], event["STATUS"], event["SEQUENCE"]) == ("CANCEL", "CANCELLED", 2)


def test_reminder_without_a_calendar_has_no_invitation_parts(
    prepare: Callable[..., EmailMessage],
) -> None:
    message = prepare({"webinar": webinar()}, template="webinar_reminder")
    assert message.get_content_type() == "multipart/alternative"
    types = [p.get_content_type() for p in leaves(message)]
    assert types == ["text/plain", "text/html"]
    assert all(p.get_filename() is None for p in leaves(message))


def test_a_test_send_to_a_stranger_invites_the_address_it_goes_to(
    prepare: Callable[..., EmailMessage],
) -> None:
    context = {"webinar": webinar(), "calendar": calendar()}
    message = prepare(context, to="guest@example.org", category=Category.TRANSACTIONAL)
    [ics] = [p for p in leaves(message) if p.get_content_type() == "application/ics"]
    _, event = event_of(ics.get_content())
    assert event["ATTENDEE"] == "mailto:guest@example.org"
    assert "CN" not in event["ATTENDEE"].params


# The templates


@pytest.fixture(scope="module")
def shipped() -> TemplateStore:
    return TemplateStore(SHIPPED)


def render_webinar(
    shipped: TemplateStore, name: str, locale: str | None, **changes: Any
) -> tuple[str, str]:
    data = sample_context(SHIPPED, name, locale)
    data["webinar"] = webinar(**changes)
    message = shipped.render(name, data, locale=locale, zone=SOFIA)
    return message.subject, message.text


@pytest.mark.parametrize(
    ("locale", "subject", "sentence"),
    [
        (None, "Updated: Brewing better filter coffee, now Dec 3, 2026 at 6:00", "changed"),
        ("bg", "Промяна: Brewing better filter coffee, вече на 3 декември 2026", "Променихме"),
        ("id", "Perubahan: Brewing better filter coffee, kini 3 Desember 2026", "mengubah"),
    ],
)
def test_a_changed_invitation_says_so_and_gives_the_new_time(
    shipped: TemplateStore, locale: str | None, subject: str, sentence: str
) -> None:
    first_subject, first_text = render_webinar(shipped, "webinar_invite", locale)
    changed_subject, changed_text = render_webinar(shipped, "webinar_invite", locale, changed=True)
    assert changed_subject.startswith(subject)
    assert sentence in changed_text
    assert not first_subject.startswith(subject.split(":")[0])
    assert sentence not in first_text


@pytest.mark.parametrize(
    ("locale", "subject", "when"),
    [
        (None, "Cancelled: Brewing better filter coffee", "Thursday, December 3, 2026, 6:00"),
        ("bg", "Отменен: Brewing better filter coffee", "четвъртък, 3 декември 2026 г., 18:00"),  # noqa: RUF001
        ("id", "Dibatalkan: Brewing better filter coffee", "Kamis, 03 Desember 2026 pukul 18.00"),
    ],
)
def test_a_cancellation_names_the_webinar_and_its_time_in_the_customers_zone(
    shipped: TemplateStore, locale: str | None, subject: str, when: str
) -> None:
    message_subject, text = render_webinar(shipped, "webinar_cancel", locale, cancelled=True)
    assert message_subject.startswith(subject)
    assert when in text
