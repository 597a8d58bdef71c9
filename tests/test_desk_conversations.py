"""A desk that is quick to work in: one row per conversation, which a customer's new
message re-opens; quick filters; assign to me; status, assignee and note in one action;
decisions in plain words; times in the reader's zone. Chromium, on SQLite and PostgreSQL,
with time from the injected clock.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import Engine

from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.inbound import inquiries, replies
from mailer.staff import users
from mailer.store.models import InquiryStatus
from tests.conftest import sign_in
from tests.site import Site
from tests.test_web_desk import mail, maria, order, received  # noqa: F401 (fixtures)

REPEAT = (
    "a person writing again, not answered automatically: we already answered this sender recently"
)


def opened(engine: Engine, inquiry_id: int) -> inquiries.Opened:
    with engine.connect() as conn:
        found = inquiries.get(conn, inquiry_id)
    assert found is not None
    return found


@pytest.fixture
def refund(engine: Engine, cfg: Config, clock: ManualClock, order: int) -> int:  # noqa: F811
    """Another customer asks for a refund and is answered; Мария's order is sam's."""
    clock.advance(timedelta(minutes=5))
    asked = mail("<r1@mail.example>", "Refund", "Please refund.", sender="Eve <eve@example.org>")
    refund_id = received(engine, cfg, clock, asked)
    with engine.begin() as conn:
        inquiries.change_status(conn, refund_id, InquiryStatus.ANSWERED, "ada", clock.now())
        inquiries.assign(conn, order, "sam", "sam", clock.now())
    return refund_id


async def test_a_customers_second_message_reopens_her_conversation_in_one_row(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    order: int,  # noqa: F811
) -> None:
    with engine.begin() as conn:
        replies.send(conn, opened(engine, order), text="Shipped.", user="sam", now=clock.now())
    clock.advance(timedelta(hours=2))
    again = mail("<o2@mail.example>", f"Re: Order 1042 [#{order}]", "Still nothing.")
    second = received(engine, cfg, clock, again)
    assert opened(engine, second).thread_id == order
    await sign_in(page, site, "sam")
    rows = page.locator("#inquiries tbody tr")
    await expect(rows).to_have_count(2)  # the order's conversation and the grinder's
    row = rows.filter(has_text="Order 1042")
    await expect(row).to_have_count(1)
    await expect(row.locator("td").nth(0)).to_have_text(f"#{order}")
    await expect(row.locator("td").nth(1)).to_have_text("2026-11-24 16:05 EET")  # her second
    await expect(row.locator("td").nth(3)).to_contain_text(f"Re: Order 1042 [#{order}]")
    await expect(row.locator("td").nth(4)).to_have_text("2")
    await expect(row.locator(".badge")).to_have_text("open")
    await page.goto(f"{site.url}/inquiries/{second}")  # a message opens its conversation
    await expect(page).to_have_url(f"{site.url}/inquiries/{order}#message-{second}")
    await expect(page.get_by_role("article")).to_have_count(2)
    await expect(page.locator("#timeline + ol")).to_contain_text(
        "maria@example.com changed the status: answered → open"
    )
    await page.goto(f"{site.url}/inquiries")
    await page.get_by_role("searchbox").fill("Still nothing")  # found by its second message
    await expect(rows).to_have_count(1)
    await page.get_by_role("searchbox").fill("Shipped")  # nor by what we wrote
    await expect(rows).to_have_text(["No inquiries match."])
    await page.get_by_role("searchbox").fill("1042 още")  # and by its first
    await expect(rows).to_have_text([re.compile(f"#{order}.*Re: Order 1042", re.S)])


async def test_the_four_quick_filters(
    page: Page, site: Site, staff: dict[str, str], clock: ManualClock, refund: int
) -> None:
    await sign_in(page, site, "sam")
    rows = page.locator("#inquiries tbody tr")
    await expect(rows).to_have_count(3)
    subjects = page.locator("#inquiries tbody tr td:nth-child(4) a")
    filters = page.get_by_role("navigation", name="Quick filters")
    for name, shown in (
        ("Mine", ["Order 1042"]),
        ("Unassigned", ["Grinder is noisy"]),
        ("Open", ["Order 1042", "Grinder is noisy"]),
        ("Overdue", []),
    ):
        await filters.get_by_role("link", name=name, exact=True).click()
        await expect(filters.locator("strong")).to_have_text(name)
        await expect(subjects).to_have_text(shown)
    clock.advance(timedelta(days=1))  # past the grinder's promised answer (10:00 tomorrow)
    where = page.url
    await sign_in(page, site, "sam")  # a day on: his session ran out after 12 idle hours
    await page.goto(where)
    await expect(subjects).to_have_text(["Grinder is noisy"])
    await expect(rows.first).to_contain_text("past promise")


async def test_assign_to_me_from_the_list_and_from_the_inquiry_page(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, refund: int
) -> None:
    grinder = next(c.root.id for c in _all(engine) if c.latest.subject == "Grinder is noisy")
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries?show=unassigned")
    await page.get_by_role("button", name=f"Assign to me (#{grinder})").click()
    await expect(page).to_have_url(f"{site.url}/inquiries?show=unassigned")  # back, filtered
    await expect(page.locator("#inquiries tbody tr")).to_have_text(["No inquiries match."])
    await page.get_by_role("link", name="Mine", exact=True).click()
    await expect(page.locator("#inquiries tbody tr")).to_have_count(2)
    await page.goto(f"{site.url}/inquiries/{refund}")
    await expect(page.locator("#assignee")).to_have_text("assigned to nobody")
    await page.get_by_role("button", name=f"Assign to me (#{refund})").click()
    await expect(page.locator("#assignee")).to_have_text("assigned to sam")
    await expect(page.locator("#timeline + ol")).to_contain_text("sam assigned it to sam")
    await expect(page.get_by_role("button", name=f"Assign to me (#{refund})")).to_have_count(0)


async def test_status_assignee_and_note_in_one_action_each_recorded(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    order: int,  # noqa: F811
) -> None:
    with engine.begin() as conn:
        users.change(conn, "sam", timezone="Asia/Manila")  # his times in his zone
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries/{order}")
    await page.get_by_label("Status").select_option("closed")
    await page.get_by_label("Assign to").select_option("ada")
    await page.get_by_label("Internal note").fill("Refunded by phone.")
    await page.get_by_role("button", name="Save").click()
    timeline = page.locator("#timeline + ol li")
    await expect(timeline).to_have_text(
        [
            f"2026-11-24 20:05 PST · received: {REPEAT}",
            "2026-11-24 20:05 PST · sam changed the status: new → closed",
            "2026-11-24 20:05 PST · sam assigned it to ada",
            "2026-11-24 20:05 PST · sam noted:Refunded by phone.",
        ]
    )
    token = await page.locator('meta[name="csrf-token"]').get_attribute("content")
    refused = await page.request.post(
        f"{site.url}/inquiries/{order}/change",
        form={"csrf": token or "", "status": "open", "assignee": "mallory", "note": "no"},
    )
    assert refused.status == 400  # one transaction: nothing of it stays
    assert opened(engine, order).status == InquiryStatus.CLOSED
    with engine.connect() as conn:
        assert [e.kind for e in inquiries.events(conn, order)] == ["status", "assign", "note"]


async def test_decisions_and_reasons_are_in_plain_words_on_the_list_and_the_page(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    order: int,  # noqa: F811
) -> None:
    away = mail("<ooo@mail.example>", "Out of office", "Back on Monday.", sender="Bob <bob@x.org>")
    away = away.replace(b"Date:", b"Auto-Submitted: auto-replied\r\nDate:")
    away_id = received(engine, cfg, clock, away)
    await sign_in(page, site, "sam")
    decisions = page.locator("#inquiries .decision")
    await expect(decisions).to_have_text(
        ["an out-of-office or other automatic reply", REPEAT, "a person's message"]
    )
    await page.goto(f"{site.url}/inquiries/{away_id}")
    await expect(page.locator("ul.reasons li")).to_have_text(
        ["it says it was sent automatically (Auto-Submitted: auto-replied)"]
    )
    await expect(page.get_by_role("main")).not_to_contain_text("auto-submitted:")


def _all(engine: Engine) -> list[inquiries.Conversation]:
    with engine.connect() as conn:
        return inquiries.conversations(conn, inquiries.Wanted()).rows


async def test_the_acknowledgement_that_went_opens_from_the_inquiry_page(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    order: int,  # noqa: F811
) -> None:
    grinder = order - 1  # acknowledged; the order message was not
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries/{grinder}")
    await page.get_by_role("article").get_by_role("link", name="open it").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text(
        f"Acknowledgement of #{grinder}"
    )
    await expect(page.locator("#ack-subject")).to_have_text(
        f"Получихме съобщението Ви [#{grinder}]"
    )
    await expect(page.locator("#ack-text")).to_contain_text("относно „Grinder is noisy“")
    await expect(page.get_by_role("main")).to_contain_text("To maria@example.com")
    response = await page.goto(f"{site.url}/inquiries/{order}/acknowledgement")
    assert response is not None and response.status == 404


def test_conversation_pages_follow_each_other_both_ways_and_count_each_thread_once(
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    maria: int,  # noqa: F811
) -> None:
    roots = []
    for n in range(5):
        roots.append(received(engine, cfg, clock, mail(f"<c{n}@mail.example>", f"Q{n}", "?")))
        clock.advance(timedelta(minutes=1))
    follow_up = mail("<c1b@mail.example>", f"Re: Q1 [#{roots[1]}]", "And another thing.")
    latest = received(engine, cfg, clock, follow_up)
    newest = [roots[1], roots[4], roots[3], roots[2], roots[0]]
    wanted = inquiries.Wanted()
    with engine.connect() as conn:
        first = inquiries.conversations(conn, wanted, size=2)
        second = inquiries.conversations(conn, wanted, before=first.older, size=2)
        third = inquiries.conversations(conn, wanted, before=second.older, size=2)
        back = inquiries.conversations(conn, wanted, after=second.newer, size=2)
        found = inquiries.conversations(conn, inquiries.Wanted(search="another thing"))
    pages = [[c.root.id for c in p.rows] for p in (first, second, third)]
    assert pages == [newest[:2], newest[2:4], newest[4:]]
    assert (first.newer, third.older) == (None, None)
    assert [c.root.id for c in back.rows] == newest[:2] and back.newer is None
    assert [(c.latest.id, c.messages) for c in first.rows] == [(latest, 2), (roots[4], 1)]
    assert [c.root.id for c in found.rows] == [roots[1]]


@pytest.mark.parametrize("few_roots", [inquiries.FEW_ROOTS, 0], ids=["by-roots", "by-walk"])
def test_filtered_pages_are_the_same_whether_read_by_their_roots_or_by_walking_the_log(
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    maria: int,  # noqa: F811
    few_roots: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A filter that keeps few conversations reads them by index; one that keeps many walks
    the log newest first. Support sees the same pages either way."""
    monkeypatch.setattr(inquiries, "FEW_ROOTS", few_roots)
    roots = []
    for n in range(5):
        roots.append(received(engine, cfg, clock, mail(f"<f{n}@mail.example>", f"Q{n}", "?")))
        clock.advance(timedelta(minutes=1))
    with engine.begin() as conn:
        for root in roots[1::2]:
            inquiries.assign(conn, root, "sam", "sam", clock.now())
    received(engine, cfg, clock, mail("<f1b@mail.example>", f"Re: Q1 [#{roots[1]}]", "More."))
    with engine.connect() as conn:
        mine = inquiries.conversations(conn, inquiries.Wanted(assignee="sam"), size=1)
        then = inquiries.conversations(
            conn, inquiries.Wanted(assignee="sam"), before=mine.older, size=1
        )
        nobody = inquiries.conversations(conn, inquiries.Wanted(unassigned=True))
        none = inquiries.conversations(conn, inquiries.Wanted(assignee="lee"))
    assert [c.root.id for c in mine.rows + then.rows] == [roots[1], roots[3]]
    assert mine.rows[0].messages == 2 and then.older is None
    assert [c.root.id for c in nobody.rows] == [roots[4], roots[2], roots[0]]
    assert none.rows == []
