"""The inquiry log: stored, deduplicated, threaded and tied to a customer, on both databases."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mailer import customers, inquiries, outbox
from mailer.clock import ManualClock
from mailer.inbound import parse
from mailer.models import Category, InquiryStatus
from mailer.outbox import NewMessage
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
        lead = customers.get(conn, "ana@example.com")
        stored = inquiries.get(conn, logged.inquiry_id)
    assert logged.customer_id == lead["id"] and lead["source"] == "inquiry"
    assert (lead["name"], lead["marketing_consent"]) == ("Ана Петрова", False)
    assert stored is not None and stored["status"] == InquiryStatus.NEW
    assert stored["raw"].startswith(b"From: ") and "мелачката" in stored["body_text"]


def test_a_known_customer_is_linked_and_not_duplicated(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    add_customers(engine, tmp_path, "email,name\nana@example.com,Ana P.\n", clock.now())
    logged = log(engine, mail("<a2@mail.example>"), clock)
    with engine.connect() as conn:
        assert logged.customer_id == customers.get(conn, "ana@example.com")["id"]
        assert len(customers.find(conn)) == 1


def test_the_same_message_logged_twice_is_one_inquiry(engine: Engine, clock: ManualClock) -> None:
    first = log(engine, mail("<same@mail.example>"), clock)
    again = log(engine, mail("<same@mail.example>"), clock)
    assert again == inquiries.Logged(first.inquiry_id, None, first.customer_id, duplicate=True)
    with engine.connect() as conn:
        assert len(inquiries.find(conn)) == 1


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
    assert [t["id"] for t in thread["thread"]] == [
        root.inquiry_id,
        reply.inquiry_id,
        second.inquiry_id,
    ]


def test_a_reply_to_our_acknowledgement_joins_the_inquiry_it_acknowledged(
    engine: Engine, clock: ManualClock
) -> None:
    root = log(engine, mail("<r1@mail.example>"), clock)
    key = inquiries.ACK_KEY.format(id=root.inquiry_id)
    ack = NewMessage(key, "ana@example.com", Category.TRANSACTIONAL, "ack")
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
        assert [i["status"] for i in inquiries.find(conn, status="answered")] == ["answered"]


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
    assert sorted(str(row["message_id"]) for row in page.rows) == found
