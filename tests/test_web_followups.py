"""Follow-ups in the browser: made from an inquiry, overdue when the clock passes them,
snoozed, completed; times in the agent's own zone."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from playwright.async_api import Page, expect
from sqlalchemy import Engine

from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import followups
from mailer.staff import users
from tests.conftest import add_customers, sign_in
from tests.site import Site
from tests.test_web_desk import mail, received


async def test_a_follow_up_from_an_inquiry_becomes_overdue_is_snoozed_then_done(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    add_customers(engine, tmp_path, "email,name\nmaria@example.com,Мария\n", clock.now())
    inquiry = received(engine, cfg, clock, mail("<o1@mail.example>", "Order 1042", "Where?"))
    with engine.begin() as conn:
        users.change(conn, "sam", timezone="Asia/Manila")
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries/{inquiry}")
    form = page.get_by_role("form", name="New follow-up")
    await form.get_by_label("About").fill("Call back about the order")
    await form.get_by_role("button", name="Add follow-up").click()
    await page.wait_for_url(f"**/inquiries/{inquiry}")

    await page.goto(site.url + "/followups")
    upcoming = page.get_by_role("region", name="Upcoming")
    await expect(upcoming).to_contain_text("2026-11-27 20:00")  # 3 days on, in Manila
    await expect(upcoming).to_contain_text("Call back about the order")
    await expect(upcoming.get_by_role("link", name=f"inquiry #{inquiry}")).to_be_visible()
    nav_count = page.locator("header nav a[href='/followups'] .badge")
    await expect(nav_count).to_have_count(0)

    clock.advance(timedelta(days=4))
    await sign_in(page, site, "sam")  # her session ran out after 12 idle hours
    await page.goto(site.url + "/followups")
    await expect(nav_count).to_have_text("1")
    overdue = page.get_by_role("region", name="Overdue")
    await overdue.get_by_role("button", name="Snooze 1d").click()
    await expect(page.get_by_role("heading", name="Overdue (0)")).to_be_visible()
    await expect(nav_count).to_have_count(0)
    await expect(page.get_by_role("region", name="Upcoming")).to_contain_text("snoozed 1 time")

    await page.get_by_role("button", name="Done").click()
    await expect(page.get_by_text("Nothing.")).to_have_count(3)
    with engine.connect() as conn:
        assert followups.find(conn) == []


async def test_a_follow_up_from_the_customer_page_needs_a_due_time_and_can_be_reassigned(
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
    await sign_in(page, site, "ada")
    await page.goto(f"{site.url}/customers/{customer}")
    form = page.get_by_role("form", name="New follow-up")
    # where to go back to is a path on this site only: a browser reads "/\" as "//"
    await form.locator("input[name=back]").evaluate("e => e.value = '/\\\\evil.example'")
    await form.get_by_label("Follow up").fill("someday")
    await form.get_by_label("About").fill("Ask how the grinder works out")
    await form.get_by_role("button", name="Add follow-up").click()
    # refused: the form again, saying why, with the note as it was typed
    await expect(page.get_by_role("alert")).to_contain_text("due: 'someday' is not a due time")
    await expect(form.get_by_label("About")).to_have_value("Ask how the grinder works out")
    await expect(form.get_by_label("Follow up")).to_have_value("someday")
    back = page.get_by_role("link", name="Back without adding it")
    await expect(back).to_have_attribute("href", "/followups")
    await form.locator("input[name=back]").evaluate(f"e => e.value = '/customers/{customer}'")
    await form.get_by_label("Follow up").fill("2026-11-24 09:00")  # Sofia: already past
    await form.get_by_role("button", name="Add follow-up").click()
    await page.wait_for_url(f"**/customers/{customer}")  # back where it was asked for
    nav_count = page.locator("header nav a[href='/followups'] .badge")
    await expect(nav_count).to_have_text("1")
    await page.goto(site.url + "/followups")
    await page.get_by_label("Reassign to").select_option("sam")
    await page.get_by_role("button", name="Reassign").click()
    await expect(page.get_by_text("Nothing.")).to_have_count(3)
    await expect(nav_count).to_have_count(0)
    with engine.connect() as conn:
        assert followups.overdue_count(conn, "sam", clock.now()) == 1
