"""A helpdesk or warehouse keeps up with what customers wrote to support, over real HTTP on
SQLite and PostgreSQL: page by page from the last id it saw, and one inquiry in full."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from mailer.api.keys import Scope
from mailer.core.clock import ManualClock
from mailer.inbound import inquiries
from mailer.inbound.parsing import parse
from mailer.relationship import privacy
from mailer.store.models import InquiryStatus
from tests.site import Site
from tests.test_api import make_key, problem_of


def _mail(sender: str, subject: str, text: str, number: int) -> bytes:
    return (
        f"From: {sender}\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <q{number}@example.com>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{text}\r\n"
    ).encode()


def _wrote(engine: Engine, clock: ManualClock) -> list[int]:
    """Ana asks twice, Boris once, an hour apart; the desk answers Ana's first."""
    letters = [
        ("Ana <Ana@Example.com>", "Поръчка 12", "Пристига ли поръчката?"),
        ("boris@example.com", "Refund", "Please refund order 7."),
        ("ana@example.com", "Again", "Still waiting."),
    ]
    ids = []
    with engine.begin() as conn:
        for n, (sender, subject, text) in enumerate(letters):
            ids.append(
                inquiries.log(conn, parse(_mail(sender, subject, text, n)), clock.now()).inquiry_id
            )
            clock.advance(timedelta(hours=1))
        inquiries.record_reply(conn, ids[0], "It left today.", "mila", clock.now())
        inquiries.set_status(conn, ids[1], InquiryStatus.CLOSED)
    return ids


def test_a_helpdesk_pages_through_inquiries_and_filters_them(
    site: Site, engine: Engine, clock: ManualClock
) -> None:
    first, refund, again = _wrote(engine, clock)
    desk = make_key(engine, clock, "desk", Scope.INQUIRIES_READ)
    page = site.call("GET", "/api/v1/inquiries?limit=2", headers=desk).json()
    assert [i["id"] for i in page["inquiries"]] == [first, refund] and page["next"] == refund
    rest = site.call("GET", f"/api/v1/inquiries?limit=2&after={page['next']}", headers=desk).json()
    assert [i["id"] for i in rest["inquiries"]] == [again] and rest["next"] is None
    shown = page["inquiries"][0]
    assert shown["subject"] == "Поръчка 12" and shown["channel"] == "mail"
    assert "body_text" not in shown and "raw" not in shown  # a list says who and when, not what

    def ids(query: str) -> list[int]:
        reply = site.call("GET", f"/api/v1/inquiries?{query}", headers=desk)
        assert reply.status == 200, reply.body
        return [i["id"] for i in reply.json()["inquiries"]]

    assert ids("email=ANA@example.com") == [first, again]
    assert ids("status=closed") == [refund]
    assert ids("since=2026-11-24T13:30:00%2B01:00") == [refund, again]  # 12:30 UTC
    # "+" not written as %2B reaches the server as a space: still the offset it was
    assert ids("since=2026-11-24T13:30:00+01:00") == [refund, again]
    assert ids("since=2026-11-24T13:30:00.000+0100") == [refund, again]
    assert len(ids("since=0001-01-01T00:00:00%2B01:00")) > 2  # "from the start": every one
    bad = problem_of(site.call("GET", "/api/v1/inquiries?limit=500", headers=desk), 422)
    assert [e["field"] for e in bad["errors"]] == ["limit"]  # type: ignore[union-attr]
    bad = problem_of(site.call("GET", "/api/v1/inquiries?since=2026-11-24", headers=desk), 422)
    assert [e["field"] for e in bad["errors"]] == ["since"]  # type: ignore[union-attr]


def test_one_inquiry_comes_with_its_text_decision_and_replies_and_never_its_bytes(
    site: Site, engine: Engine, clock: ManualClock
) -> None:
    first, _, _ = _wrote(engine, clock)
    desk = make_key(engine, clock, "desk", Scope.INQUIRIES_READ)
    found = site.call("GET", f"/api/v1/inquiries/{first}", headers=desk).json()
    assert (
        found["body_text"].strip() == "Пристига ли поръчката?"
        and found["sender"] == "ana@example.com"
    )
    assert found["status"] == "new" and found["thread_id"] == first
    assert "decision" in found and "raw" not in found
    assert [(r["by"], r["text"]) for r in found["replies"]] == [("mila", "It left today.")]
    missing = problem_of(site.call("GET", "/api/v1/inquiries/999999", headers=desk), 404)
    assert "999999" in str(missing["detail"])
    with engine.begin() as conn:
        privacy.erase(conn, "ana@example.com", clock.now())
    gone = site.call("GET", f"/api/v1/inquiries/{first}", headers=desk).json()
    assert (gone["body_text"], gone["subject"], gone["sender"]) == ("", "", "")
    assert [r["text"] for r in gone["replies"]] == [""]


def test_a_key_without_the_inquiries_scope_reads_nothing(
    site: Site, engine: Engine, clock: ManualClock
) -> None:
    first, _, _ = _wrote(engine, clock)
    shop = make_key(engine, clock, "shop", Scope.EVENTS_WRITE, Scope.CUSTOMERS_READ)
    for path in ("/api/v1/inquiries", f"/api/v1/inquiries/{first}"):
        refused = problem_of(site.call("GET", path, headers=shop), 403)
        assert "inquiries:read" in str(refused["detail"])
