"""The inquiry log: stored, deduplicated, threaded and tied to a customer, on both databases."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.customers import profiles
from mailer.inbound import inquiries
from mailer.inbound.parsing import parse
from mailer.outbound import outbox
from mailer.outbound.outbox import NewMessage
from mailer.store.models import InquiryStatus
from tests.conftest import add_customers


def mail(
    message_id: str,
    *,
    sender: str = "Ана Петрова <ana@example.com>",
    subject: str = "Мелачка",
    extra: str = "",
) -> bytes:
    return (
        f"From: {sender}\r\nTo: support@northwind-roasters.example\r\n"
        f"Subject: {subject}\r\nMessage-ID: {message_id}\r\n{extra}"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "Здравейте, мелачката ми не работи.\r\n"
    ).encode()


def log(engine: Engine, raw: bytes, clock: ManualClock) -> inquiries.Logged:
    with engine.begin() as conn:
        return inquiries.log(conn, parse(raw), clock.now())


def test_an_unknown_sender_becomes_a_lead_without_marketing_consent(
    engine: Engine, clock: ManualClock
) -> None:
    logged = log(engine, mail("<a1@mail.example>"), clock)
    with engine.connect() as conn:
        lead = profiles.get(conn, "ana@example.com")
        stored = inquiries.get(conn, logged.inquiry_id)
    assert logged.customer_id == lead.id and lead.source == "inquiry"
    assert (lead.name, lead.marketing_consent) == ("Ана Петрова", False)
    assert stored is not None and stored.status == InquiryStatus.NEW
    assert stored.raw.startswith(b"From: ") and "мелачката" in stored.body_text


def test_a_known_customer_is_linked_and_not_duplicated(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    add_customers(engine, tmp_path, "email,name\nana@example.com,Ana P.\n", clock.now())
    logged = log(engine, mail("<a2@mail.example>"), clock)
    with engine.connect() as conn:
        assert logged.customer_id == profiles.get(conn, "ana@example.com").id
        assert len(profiles.find(conn)) == 1


def test_the_same_message_logged_twice_is_one_inquiry(engine: Engine, clock: ManualClock) -> None:
    first = log(engine, mail("<same@mail.example>"), clock)
    again = log(engine, mail("<same@mail.example>"), clock)
    assert again == inquiries.Logged(
        inquiry_id=first.inquiry_id, thread_id=None, customer_id=first.customer_id, duplicate=True
    )
    with engine.connect() as conn:
        assert len(inquiries.find(conn)) == 1


def test_a_different_message_that_reuses_a_message_id_is_logged_too(
    engine: Engine, clock: ManualClock
) -> None:
    """Broken mailers give every message one ID: what the second customer wrote is kept."""
    first = log(engine, mail("<reused@mail.example>"), clock)
    other = mail("<reused@mail.example>", sender="Иван <ivan@example.com>", subject="Кафе")
    second = log(engine, other, clock)
    again = log(engine, other, clock)
    assert not second.duplicate and second.inquiry_id != first.inquiry_id
    assert again == inquiries.Logged(
        inquiry_id=second.inquiry_id, thread_id=None, customer_id=second.customer_id, duplicate=True
    )
    with engine.connect() as conn:
        assert sorted(i.sender for i in inquiries.find(conn)) == [
            "ana@example.com",
            "ivan@example.com",
        ]


def test_a_redelivery_through_other_servers_is_still_one_inquiry(
    engine: Engine, clock: ManualClock
) -> None:
    raw = mail("<relayed@mail.example>")
    trace = (
        b"Return-Path: <ana@example.com>\r\nDelivered-To: support@northwind-roasters.example\r\n"
        b"Received: from mx2.example.net by mx.northwind-roasters.example\r\n"
        b"\tfor <support@northwind-roasters.example>; Tue, 24 Nov 2026 14:00:00 +0200\r\n"
    )
    first = log(engine, raw, clock)
    again = log(engine, trace + raw.replace(b"\r\n", b"\n"), clock)
    assert again.duplicate and again.inquiry_id == first.inquiry_id


def test_a_message_logged_before_fingerprints_is_recognised_by_its_raw_bytes(
    engine: Engine, clock: ManualClock
) -> None:
    first = log(engine, mail("<old@mail.example>"), clock)
    with engine.begin() as conn:
        conn.execute(inquiries.INQUIRIES.update().values(fingerprint=None))
    again = log(engine, mail("<old@mail.example>"), clock)
    other = log(engine, mail("<old@mail.example>", subject="Друго"), clock)
    assert again.duplicate and again.inquiry_id == first.inquiry_id
    assert not other.duplicate


def test_a_stranger_cannot_write_into_another_customers_inquiry(
    engine: Engine, clock: ManualClock
) -> None:
    """A subject reference or an In-Reply-To is easy to guess; the sender is what counts."""
    root = log(engine, mail("<own1@mail.example>"), clock)
    stranger = "Eve <eve@example.org>"
    by_subject = mail("<eve1@mail.example>", sender=stranger, subject=f"Re: [#{root.inquiry_id}]")
    by_header = mail(
        "<eve2@mail.example>", sender=stranger, extra="In-Reply-To: <own1@mail.example>\r\n"
    )
    for raw in (by_subject, by_header):
        logged = log(engine, raw, clock)
        with engine.connect() as conn:
            stored = inquiries.get(conn, logged.inquiry_id)
        assert logged.thread_id is None and stored is not None
        assert stored.claimed_thread_id == root.inquiry_id
        assert [t.id for t in stored.thread] == [logged.inquiry_id]
    with engine.connect() as conn:
        thread = inquiries.get(conn, root.inquiry_id)
    assert thread is not None and [t.sender for t in thread.thread] == ["ana@example.com"]


def test_anyone_who_already_wrote_in_a_thread_may_continue_it(
    engine: Engine, clock: ManualClock
) -> None:
    root = log(engine, mail("<p1@mail.example>"), clock)
    colleague = log(engine, mail("<p2@mail.example>", sender="Иван <ivan@example.com>"), clock)
    with engine.begin() as conn:  # support merged it into Ана's inquiry
        conn.execute(
            inquiries.INQUIRIES.update()
            .where(inquiries.INQUIRIES.c.id == colleague.inquiry_id)
            .values(thread_id=root.inquiry_id)
        )
    extra = "In-Reply-To: <p1@mail.example>\r\n"
    follow_up = log(
        engine, mail("<p3@mail.example>", sender="ivan@example.com", extra=extra), clock
    )
    assert follow_up.thread_id == root.inquiry_id


def test_replies_join_the_first_inquiry_of_their_thread(engine: Engine, clock: ManualClock) -> None:
    root = log(engine, mail("<t1@mail.example>"), clock)
    clock.advance(timedelta(hours=1))
    reply = log(
        engine, mail("<t2@mail.example>", extra="In-Reply-To: <t1@mail.example>\r\n"), clock
    )
    refs = "References: <t1@mail.example> <t2@mail.example>\r\n"
    second = log(engine, mail("<t3@mail.example>", extra=refs), clock)
    assert reply.thread_id == root.inquiry_id and second.thread_id == root.inquiry_id
    with engine.connect() as conn:
        thread = inquiries.get(conn, second.inquiry_id)
    assert thread is not None
    assert [t.id for t in thread.thread] == [
        root.inquiry_id,
        reply.inquiry_id,
        second.inquiry_id,
    ]


def test_a_reply_to_our_acknowledgement_joins_the_inquiry_it_acknowledged(
    engine: Engine, clock: ManualClock
) -> None:
    root = log(engine, mail("<r1@mail.example>"), clock)
    key = inquiries.ack_key(root.inquiry_id)
    ack = NewMessage(
        dedupe_key=key,
        to_address="ana@example.com",
        category=Category.TRANSACTIONAL,
        template="ack",
    )
    outbox.enqueue(engine, [ack], clock.now())
    with engine.begin() as conn:
        conn.execute(
            outbox.OUTBOX.update()
            .where(outbox.OUTBOX.c.dedupe_key == key)
            .values(message_id="<ack1@northwind-roasters.example>")
        )
    extra = "In-Reply-To: <ack1@northwind-roasters.example>\r\n"
    reply = log(engine, mail("<r2@mail.example>", extra=extra), clock)
    assert reply.thread_id == root.inquiry_id


def test_a_reference_in_the_subject_threads_a_reply_without_headers(
    engine: Engine, clock: ManualClock
) -> None:
    root = log(engine, mail("<s1@mail.example>"), clock)
    subject = f"Re: Получихме съобщението Ви [{inquiries.reference(root.inquiry_id)}]"
    reply = log(engine, mail("<s2@mail.example>", subject=subject), clock)
    assert reply.thread_id == root.inquiry_id


def test_status_changes_are_kept(engine: Engine, clock: ManualClock) -> None:
    logged = log(engine, mail("<st@mail.example>"), clock)
    with engine.begin() as conn:
        assert inquiries.set_status(conn, logged.inquiry_id, InquiryStatus.ANSWERED)
        assert not inquiries.set_status(conn, 999, InquiryStatus.CLOSED)
    with engine.connect() as conn:
        assert [i.status for i in inquiries.find(conn, status="answered")] == ["answered"]


@pytest.mark.parametrize(
    ("search", "found"),
    [
        ("МЕЛАЧКАТА", ["<a@x>"]),  # any case, any script, inside a word of the text
        ("елачк", ["<a@x>", "<b@x>"]),  # the subject of one, the text of the other
        ("ana@exa", ["<a@x>"]),  # the sender
        ("Ан", ["<a@x>"]),  # too short for trigrams: still found
        ('50% "off"', ["<b@x>"]),  # quotes and LIKE wildcards are only text
        ("радост", ["<a@x>"]),  # an edited name
        ("кафе", []),
    ],
)
def test_search_finds_any_part_of_sender_subject_or_text(
    engine: Engine, clock: ManualClock, search: str, found: list[str]
) -> None:
    log(engine, mail("<a@x>"), clock)
    other = mail("<b@x>", sender="Ivo <ivo@example.org>", subject='Мелачка: 50% "off"?')
    log(engine, other.replace("мелачката ми".encode(), "нещо".encode()), clock)
    with engine.begin() as conn:  # an edit is searched as edited (SQLite keeps a copy)
        conn.execute(
            inquiries.INQUIRIES.update()
            .where(inquiries.INQUIRIES.c.message_id == "<a@x>")
            .values(sender_name="Ана Радостова")
        )
    with engine.connect() as conn:
        page = inquiries.browse(conn, search=search)
    assert sorted(str(row.message_id) for row in page.rows) == found
