"""Every touch on one timeline, newest first, and how long since we last spoke both ways.

The merge is pure and tested without a database; the rest writes through the modules that
own each table (outbox, inquiries, the contact log) on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, MetaData, Table, insert, text

from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.core.errors import InvalidContact
from mailer.customers import contacts, followups, profiles
from mailer.customers.contacts import NewContact
from mailer.inbound import inquiries
from mailer.inbound.parsing import parse
from mailer.outbound import outbox
from mailer.outbound.outbox import OUTBOX, NewMessage, Outcome, Result
from mailer.relationship import history, privacy
from mailer.relationship.timeline import Cursor, Entry, Source, merge
from mailer.store import db, migrate
from mailer.store.models import Direction
from tests.conftest import add_customers

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def entry(source: Source, row: int, minutes: int, kind: str = "x") -> Entry:
    return Entry(at=T0 + timedelta(minutes=minutes), source=source, id=row, kind=kind)


# The merge, pure ---------------------------------------------------------------------------


def test_entries_from_every_source_come_newest_first() -> None:
    mail = [entry(Source.MAIL, 1, 10), entry(Source.MAIL, 2, 30)]
    calls = [entry(Source.CONTACT, 7, 20)]
    asked = [entry(Source.INQUIRY, 3, 40)]
    page = merge([mail, calls, asked], size=10)
    assert [(e.source, e.id) for e in page.entries] == [
        (Source.INQUIRY, 3),
        (Source.MAIL, 2),
        (Source.CONTACT, 7),
        (Source.MAIL, 1),
    ]
    assert page.older is None


def test_a_page_ends_at_a_cursor_and_the_next_starts_right_after_it_even_within_one_instant() -> (
    None
):
    """Entries of one instant from several sources are neither lost nor shown twice."""
    everything = [
        [entry(Source.MAIL, n, 0) for n in (1, 2, 3)],
        [entry(Source.CONTACT, n, 0) for n in (1, 2)],
        [entry(Source.INQUIRY, 9, 0), entry(Source.INQUIRY, 8, -1)],
        [entry(Source.UNSUBSCRIBE, 5, 0)],
    ]
    seen: list[tuple[Source, int]] = []
    cursor: Cursor | None = None
    while True:
        page = merge(everything, size=3, cursor=cursor)
        seen += [(e.source, e.id) for e in page.entries]
        if page.older is None:
            break
        cursor = Cursor.decode(page.older.encode())
    assert seen == [
        (Source.CONTACT, 2),
        (Source.CONTACT, 1),
        (Source.MAIL, 3),
        (Source.MAIL, 2),
        (Source.MAIL, 1),
        (Source.INQUIRY, 9),
        (Source.UNSUBSCRIBE, 5),
        (Source.INQUIRY, 8),
    ]


@pytest.mark.parametrize(
    "text",
    [
        *("", "1.mail", "x.mail.1", "1.fax.1", "1.mail.-1", "\u0661.mail.1"),
        *("253402300800000000.contact.1", "1.contact.99999999999999999999"),  # past what fits
    ],
)
def test_a_cursor_from_a_link_that_is_not_one_is_none(text: str) -> None:
    assert Cursor.decode(text) is None


def test_a_cursor_survives_a_link_to_the_microsecond() -> None:
    cursor = Cursor(T0.replace(microsecond=123456), Source.CONTACT, 42)
    assert Cursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize(
    ("kind", "direction", "note", "said"),
    [
        ("email", "in", "", "kind 'email' is not one of call, meeting, note"),
        ("meeting", None, "", "a meeting needs a direction"),
        ("note", "in", "x", "a note has no direction"),
        ("note", None, " ", "a note needs some text"),
        ("call", "sideways", "", "a call's direction is in .*, not 'sideways'$"),
    ],
)
def test_a_contact_that_makes_no_sense_is_refused_before_anything_is_written(
    kind: str, direction: str | None, note: str, said: str
) -> None:
    with pytest.raises(InvalidContact, match=said):
        NewContact(kind=kind, direction=direction, at=T0, by="sam", note=note)


def test_only_a_call_has_a_duration() -> None:
    with pytest.raises(InvalidContact, match="only a call has a duration"):
        NewContact(kind="meeting", direction="out", at=T0, by="sam", duration=timedelta(hours=1))


# Through the database ----------------------------------------------------------------------


@pytest.fixture
def maria(engine: Engine, tmp_path: Path) -> int:
    add_customers(
        engine, tmp_path, "email,name\nmaria@example.com,Мария\n", T0 - timedelta(days=60)
    )
    with engine.connect() as conn:
        return int(profiles.get(conn, "maria@example.com").id)


def test_control_characters_in_what_staff_type_are_kept_out_as_everywhere(
    engine: Engine, maria: int
) -> None:
    """A NUL pasted into a note (which PostgreSQL cannot store) or an escape sequence: gone
    from what is written, the line breaks of the note kept."""
    entry = NewContact(
        kind="call", direction="out", at=T0, by="sam", outcome="ok\x00", note="a\x00b\n\x1b[31mc"
    )
    with engine.begin() as conn:
        contacts.log(conn, maria, entry, T0)
    with engine.connect() as conn:
        (row,) = contacts.of_customer(conn, maria)
    assert (row["outcome"], row["note"]) == ("ok", "ab\n[31mc")


def call(at: datetime, direction: str = "out", note: str = "") -> NewContact:
    return NewContact(kind="call", direction=direction, at=at, by="sam", note=note)


def sent(engine: Engine, customer_id: int, key: str, at: datetime) -> int:
    """A newsletter queued and accepted by the server at ``at``."""
    message = NewMessage(
        dedupe_key=key,
        to_address="maria@example.com",
        category=Category.MARKETING,
        template="newsletter",
        customer_id=customer_id,
    )
    outbox.enqueue(engine, [message], at)
    with engine.connect() as conn:
        (row,) = [r for r in outbox.find(conn, customer_id=customer_id) if r["dedupe_key"] == key]
    sent = Outcome(outbox_id=row["id"], result=Result.SENT, at=at)
    outbox.record(engine, [sent], {row["id"]: 0})  # never claimed: lease token 0
    return int(row["id"])


def wrote(engine: Engine, at: datetime, subject: str = "Order 1042") -> int:
    raw = (
        f"From: Мария <maria@example.com>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{at.timestamp()}@mail.example>\r\n\r\nHello\r\n"
    ).encode()
    with engine.begin() as conn:
        return inquiries.log(conn, parse(raw), at).inquiry_id


def test_the_timeline_shows_mail_inquiries_contacts_and_the_unsubscribe_with_who(
    engine: Engine, maria: int
) -> None:
    sent(engine, maria, "news:1", T0)
    wrote(engine, T0 + timedelta(hours=1))
    with engine.begin() as conn:
        contacts.log(
            conn, maria, call(T0 + timedelta(hours=2), note="Called back"), T0 + timedelta(days=1)
        )
        profiles.unsubscribe(conn, "maria@example.com", T0 + timedelta(hours=3))
        skipped = NewMessage(
            dedupe_key="news:2",
            to_address="maria@example.com",
            category=Category.MARKETING,
            template="newsletter",
            customer_id=maria,
        )
    outbox.enqueue(engine, [skipped], T0 + timedelta(hours=4))  # skipped: she unsubscribed
    with engine.connect() as conn:
        customer = profiles.get(conn, "maria@example.com")
        page = history.page(conn, maria, customer.unsubscribed_at)
        hidden = history.page(conn, maria, customer.unsubscribed_at, with_text=False)
    shown = [(e.kind, e.direction, e.channel, e.by, e.title) for e in page.entries]
    assert shown == [
        ("skipped", "out", "email", "mailer", "newsletter"),
        ("unsubscribed", None, None, None, ""),
        ("call", "out", "call", "sam", ""),
        ("inquiry", "in", "email", "maria@example.com", "Order 1042"),
        ("sent", "out", "email", "mailer", "newsletter"),
    ]
    assert "unsubscribed" in page.entries[0].text and page.entries[2].text == "Called back"
    assert [e.title for e in hidden.entries if e.kind == "inquiry"] == [""]  # marketing's view


def test_a_timeline_of_thousands_pages_by_time_and_loses_nothing(
    engine: Engine, maria: int
) -> None:
    with engine.begin() as conn:
        for n in range(120):
            at = T0 + timedelta(minutes=n // 2)  # two to a minute: ties within one source
            contacts.log(conn, maria, call(at), T0 + timedelta(days=1))
    for n in range(30):
        wrote(engine, T0 + timedelta(minutes=n * 2))  # ties with the calls, across sources
    seen: list[tuple[Source, int]] = []
    cursor = None
    with engine.connect() as conn:
        while True:
            page = history.page(conn, maria, None, cursor=cursor, size=50)
            seen += [(e.source, e.id) for e in page.entries]
            if page.older is None:
                break
            cursor = page.older
    assert len(seen) == len(set(seen)) == 150
    with engine.connect() as conn:
        whole = history.page(conn, maria, None, size=500)
    assert seen == [(e.source, e.id) for e in whole.entries]


def test_last_contact_both_ways_follows_mail_inquiries_and_logged_calls(
    engine: Engine, maria: int
) -> None:
    with engine.connect() as conn:
        assert contacts.last_of(conn, maria) == {"out": None, "in": None}
    sent(engine, maria, "news:1", T0)
    wrote(engine, T0 + timedelta(hours=1))
    with engine.begin() as conn:
        contacts.log(conn, maria, call(T0 - timedelta(days=3)), T0)  # logged late: older
        contacts.log(conn, maria, call(T0 + timedelta(hours=2), "in"), T0 + timedelta(hours=2))
        later = T0 + timedelta(hours=5)
        note = NewContact(kind="note", direction=None, at=later, by="sam", note="x")
        contacts.log(conn, maria, note, later)  # a note reaches nobody
        last = contacts.last_of(conn, maria)
    assert last == {
        "out": {"at": T0, "channel": "email"},
        "in": {"at": T0 + timedelta(hours=2), "channel": "call"},
    }


def test_a_logged_call_uses_up_no_marketing_slot(
    engine: Engine, maria: int, clock: ManualClock, cfg: Config
) -> None:
    now = clock.now()
    with engine.connect() as conn:
        before = outbox.next_contact(
            conn, profiles.get(conn, "maria@example.com"), now, cfg.settings
        )
    with engine.begin() as conn:
        contacts.log(conn, maria, call(now - timedelta(minutes=5)), now)
    with engine.connect() as conn:
        after = outbox.next_contact(
            conn, profiles.get(conn, "maria@example.com"), now, cfg.settings
        )
        assert outbox.contacts(conn, [maria], now) == {}
    assert before == after


def test_the_customer_list_sorts_by_last_contact_and_finds_the_quiet_ones(
    engine: Engine, tmp_path: Path
) -> None:
    names = ["ana", "boris", "vera", "zoe"]
    rows = "".join(f"{n}@example.com,{n}\n" for n in names)
    add_customers(engine, tmp_path, "email,name\n" + rows, T0 - timedelta(days=400))
    with engine.begin() as conn:
        ids = {n: int(profiles.get(conn, f"{n}@example.com").id) for n in names}
        contacts.log(conn, ids["ana"], call(T0 - timedelta(days=200)), T0)
        contacts.log(conn, ids["boris"], call(T0 - timedelta(days=10), "in"), T0)
        contacts.touch(conn, Direction.OUT, "email", [(ids["vera"], T0 - timedelta(days=95))])
        # zoe: never

        def names_of(order: str = "", quiet_days: int | None = None) -> list[str]:
            since = T0 - timedelta(days=quiet_days) if quiet_days is not None else None
            found = contacts.browse(conn, order=order, quiet_since=since)
            return [c.customer.name for c in found]

        assert names_of("recent") == ["boris", "vera", "ana", "zoe"]
        assert names_of("quiet") == ["zoe", "ana", "vera", "boris"]
        assert names_of("quiet", quiet_days=90) == ["zoe", "ana", "vera"]
        assert names_of(quiet_days=150) == ["ana", "zoe"]
        assert [c.customer.name for c in contacts.browse(conn, search="BOR", order="recent")] == [
            "boris"
        ]
        for order, expected in (("recent", "boris vera ana zoe"), ("quiet", "zoe ana vera boris")):
            for size in (1, 2, 3):
                pages = [
                    contacts.browse(conn, order=order, limit=size, offset=start)
                    for start in range(0, 5, size)
                ]
                assert [c.customer.name for p in pages for c in p] == expected.split(), (
                    order,
                    size,
                )
        (boris,) = contacts.browse(conn, search="boris")
    assert boris.last_contact == {
        "out": None,
        "in": {"at": T0 - timedelta(days=10), "channel": "call"},
    }
    assert boris.customer.tags == ()


def test_deleting_a_customer_takes_their_contact_log_with_them(engine: Engine, maria: int) -> None:
    with engine.begin() as conn:
        contacts.log(conn, maria, call(T0), T0)
        conn.execute(profiles.CUSTOMERS.delete())
        assert conn.execute(contacts.CONTACTS.select()).all() == []
        assert conn.execute(contacts.LAST.select()).all() == []


def test_two_messages_to_one_customer_recorded_in_one_batch_keep_the_later(
    engine: Engine, maria: int
) -> None:
    news = [
        NewMessage(
            dedupe_key=f"news:{n}",
            to_address="maria@example.com",
            category=Category.MARKETING,
            template="newsletter",
            customer_id=maria,
        )
        for n in (1, 2)
    ]
    outbox.enqueue(engine, news, T0)
    with engine.connect() as conn:
        ids = sorted(r["id"] for r in outbox.find(conn, customer_id=maria))
    later = T0 + timedelta(minutes=1)
    outbox.record(
        engine,
        [
            Outcome(outbox_id=ids[0], result=Result.SENT, at=later),
            Outcome(outbox_id=ids[1], result=Result.SENT, at=T0),
        ],
        dict.fromkeys(ids, 0),
    )
    with engine.connect() as conn:
        assert contacts.last_of(conn, maria)["out"] == {"at": later, "channel": "email"}


def test_mail_recorded_after_a_later_call_leaves_the_call_as_the_last_contact(
    engine: Engine, maria: int
) -> None:
    """Results are recorded in batches, after the fact: a newsletter the server took at T0
    but recorded after a call at T0 + 1 h does not hide the call."""
    with engine.begin() as conn:
        contacts.log(conn, maria, call(T0 + timedelta(hours=1)), T0 + timedelta(hours=1))
    sent(engine, maria, "news:late", T0)
    with engine.connect() as conn:
        assert contacts.last_of(conn, maria)["out"] == {
            "at": T0 + timedelta(hours=1),
            "channel": "call",
        }
    sent(engine, maria, "news:next", T0 + timedelta(hours=2))
    with engine.connect() as conn:
        assert contacts.last_of(conn, maria)["out"] == {
            "at": T0 + timedelta(hours=2),
            "channel": "email",
        }


def test_upgrading_starts_last_contacts_from_the_mail_sent_and_the_inquiries_received(
    database_url: str, tmp_path: Path
) -> None:
    engine = db.connect(database_url)
    migrate.upgrade(engine, "0012")
    with engine.begin() as conn:
        for name in ("Ana", "Boris", "Cleo"):  # as revision 0012 stored customers
            conn.execute(
                text(
                    "INSERT INTO customers (email, name, first_name, fields, marketing_consent,"
                    " relationship_consent, source, created_at, updated_at)"
                    " VALUES (:e, :n, :n, '{}', true, true, 'import', :t, :t)"
                ),
                {"e": f"{name.lower()}@example.com", "n": name, "t": T0 - timedelta(days=90)},
            )
        found = conn.execute(text("SELECT name, id FROM customers")).all()
        ids = {name.lower(): int(customer) for name, customer in found}
        for n, at in enumerate((T0 - timedelta(days=3), T0)):
            message = {"dedupe_key": f"news:{n}", "customer_id": ids["ana"], "sent_at": at}
            conn.execute(insert(OUTBOX).values(**OLD_MAIL, **message))
        unsent = {"dedupe_key": "news:late", "customer_id": ids["boris"], "status": "deferred"}
        conn.execute(insert(OUTBOX).values({**OLD_MAIL, **unsent}))
        for sender, at in (("boris@example.com", T0 - timedelta(days=1)), ("x@example.com", T0)):
            customer = ids["boris"] if sender.startswith("boris") else None
            asked = {"sender": sender, "customer_id": customer, "received_at": at}
            conn.execute(insert(OLD_INQUIRIES).values({**OLD_INQUIRY, **asked}))
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert contacts.last_of(conn, ids["ana"]) == {
            "out": {"at": T0, "channel": "email"},
            "in": None,
        }
        assert contacts.last_of(conn, ids["boris"]) == {
            "out": None,
            "in": {"at": T0 - timedelta(days=1), "channel": "email"},
        }
        listed = [c.customer.name for c in contacts.browse(conn, order="recent")]
    assert listed == ["Ana", "Boris", "Cleo"]
    engine.dispose()


OLD_MAIL = {
    "to_address": "ana@example.com",
    "category": "marketing",
    "template": "newsletter",
    "context": {},
    "headers": {},
    "priority": 0,
    "status": "sent",
    "due_at": T0 - timedelta(days=5),
    "attempts": 1,
    "created_at": T0 - timedelta(days=5),
    "updated_at": T0 - timedelta(days=5),
}
# inquiries as revision 0012 had them: the columns added since (with their defaults) left out
OLD_INQUIRIES = Table(
    "inquiries", MetaData(), *(c._copy() for c in inquiries.INQUIRIES.c if c.name != "channel")
)
OLD_INQUIRY = {
    "sender_name": "",
    "subject": "Hello",
    "body_text": "Hi",
    "reply_text": "Hi",
    "attachments": [],
    "defects": [],
    "status": "new",
    "reasons": [],
    "raw": b"",
    "raw_truncated": False,
}


def test_erasing_a_customer_clears_what_staff_wrote_about_them_and_export_carries_it(
    engine: Engine, maria: int
) -> None:
    meeting = NewContact(
        kind="meeting", direction="out", at=T0, by="sam", location="Café Мария",
        attendees=["Мария Иванова"], note="Her grinder squeaks",
    )  # fmt: skip
    with engine.begin() as conn:
        contacts.log(conn, maria, meeting, T0)
        exported = privacy.export(conn, "maria@example.com", T0)
        assert [c["note"] for c in exported["contacts"]] == ["Her grinder squeaks"]
        erased = privacy.erase(conn, "maria@example.com", T0 + timedelta(hours=1))
    assert erased.contacts == 1
    with engine.connect() as conn:
        (row,) = contacts.of_customer(conn, maria)
        assert (row["note"], row["location"], row["attendees"]) == ("", "", [])
        assert (row["kind"], row["at"]) == ("meeting", T0)


def test_desk_replies_and_follow_ups_join_the_timeline_with_who(engine: Engine, maria: int) -> None:
    inquiry = wrote(engine, T0)
    with engine.begin() as conn:
        inquiries.record_reply(conn, inquiry, "A new grinder is on its way.", "sam", T0 + HOUR)
        plan = followups.NewFollowUp(
            customer_id=maria,
            due_at=T0 + timedelta(days=3),
            note="Ask whether the grinder arrived",
            created_by="mila",
            assignee="sam",
        )
        followups.add(conn, plan, T0 + 2 * HOUR)
        page = history.page(conn, maria, None)
        hidden = history.page(conn, maria, None, with_text=False)
    shown = [(e.source, e.kind, e.by, e.text) for e in page.entries]
    assert shown == [
        ("followup", "follow-up", "mila", "Ask whether the grinder arrived"),
        ("reply", "reply", "sam", "A new grinder is on its way."),
        ("inquiry", "inquiry", "maria@example.com", ""),
    ]
    assert page.entries[0].details["due_at"] == T0 + timedelta(days=3)
    assert [e.text for e in hidden.entries if e.kind == "reply"] == [""]  # marketing's view
