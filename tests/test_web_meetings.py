"""A meeting in the browser: scheduled from the customer's page, moved and cancelled from
"My follow-ups", each step queuing the calendar message the customer's calendar needs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from playwright.async_api import Page, expect
from sqlalchemy import Engine, select

from mailer.core.clock import ManualClock
from mailer.customers import followups
from mailer.outbound.outbox import OUTBOX
from mailer.staff import users
from tests.conftest import add_customers, sign_in
from tests.site import Site


async def test_a_meeting_is_scheduled_moved_and_cancelled_from_the_web(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    add_customers(engine, tmp_path, "email,name\nmaria@example.com,Мария\n", clock.now())
    with engine.begin() as conn:
        customer = followups.customer_id(conn, "maria@example.com")
        users.change(conn, "sam", timezone="Europe/Sofia")
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/customers/{customer}")
    form = page.get_by_role("form", name="New follow-up")
    await form.get_by_label("Follow up").fill("2026-11-26 10:00")
    await form.get_by_label("About").fill("Grinder demo")
    await form.get_by_label("A meeting").check()
    await form.get_by_label("Where").fill("Room 2")
    await form.get_by_role("button", name="Add follow-up").click()
    await page.wait_for_url(f"**/customers/{customer}")

    await page.goto(site.url + "/followups")
    upcoming = page.get_by_role("region", name="Upcoming")
    await expect(upcoming).to_contain_text("2026-11-26 10:00")
    await expect(upcoming).to_contain_text("Meeting · 30 min · Room 2")
    await expect(upcoming.get_by_role("button", name="Snooze 1d")).to_have_count(0)
    move = upcoming.get_by_role("form", name="Move meeting #1")
    await move.get_by_label("Move to").fill("2026-11-27 11:30")
    await move.get_by_role("button", name="Move meeting").click()
    await expect(upcoming).to_contain_text("2026-11-27 11:30")

    await upcoming.get_by_role("button", name="Cancel meeting").click()
    await expect(page.get_by_text("Nothing.")).to_have_count(3)
    with engine.connect() as conn:
        queued = conn.execute(
            select(OUTBOX.c.dedupe_key, OUTBOX.c.template).order_by(OUTBOX.c.id)
        ).all()
        [meeting] = [
            r for r in conn.execute(select(followups.FOLLOWUPS)).mappings() if r["id"] == 1
        ]
    assert [key for key, _ in queued] == ["meeting:1:0", "meeting:1:1", "meeting:1:2"]
    assert {template for _, template in queued} == {"meeting_invitation"}
    assert (meeting["status"], meeting["sequence"]) == ("cancelled", 2)
    assert meeting["due_at"] == datetime(2026, 11, 27, 9, 30, tzinfo=UTC)  # 11:30 in Sofia


async def test_a_meeting_in_the_past_is_refused_with_the_reason(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    add_customers(engine, tmp_path, "email,name\nmaria@example.com,Мария\n", clock.now())
    with engine.connect() as conn:
        customer = followups.customer_id(conn, "maria@example.com")
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/customers/{customer}")
    form = page.get_by_role("form", name="New follow-up")
    await form.get_by_label("Follow up").fill("2026-11-20 10:00")
    await form.get_by_label("A meeting").check()
    await form.get_by_label("Where").fill("Room 2")
    await form.get_by_role("button", name="Add follow-up").click()
    await expect(page.get_by_text("a meeting cannot start in the past")).to_be_visible()
