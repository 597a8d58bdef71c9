"""Every time on a page in the reader's zone, named: their own zone, else the business's
(Europe/Sofia in the shipped config); distances ("in 5 hours") where people think in them,
with the exact time in the title; and the reply's quote of the customer's message in the
customer's zone, since the customer reads it. Chromium, on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import Engine, update

from mailer.core import moments
from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.customers import contacts
from mailer.customers.contacts import NewContact
from mailer.customers.profiles import CUSTOMERS
from mailer.outbound import outbox
from mailer.outbound.outbox import NewMessage, Outcome, Result
from mailer.staff import users
from tests.conftest import sign_in
from tests.site import Site
from tests.test_desk_replies import opened
from tests.test_web_desk import maria, order  # noqa: F401 (fixtures)
from tests.test_web_marketing import cfg  # noqa: F401 (the repo's schedules)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # the clock fixture's: 20:00 in Manila


@pytest.mark.parametrize(
    ("at", "said"),
    [
        (NOW, "now"),
        (NOW + timedelta(seconds=59), "now"),
        (NOW + timedelta(minutes=1), "in 1 minute"),
        (NOW - timedelta(minutes=59, seconds=59), "59 minutes ago"),
        (NOW + timedelta(hours=3, minutes=40), "in 3 hours"),
        (NOW - timedelta(hours=36), "1 day ago"),
        (NOW - timedelta(days=10), "10 days ago"),
        (NOW + timedelta(days=163), "in 5 months"),
        (NOW - timedelta(days=800), "2 years ago"),
    ],
)
def test_a_distance_is_said_in_its_largest_whole_unit(at: datetime, said: str) -> None:
    assert moments.relative(at, NOW) == said


def test_a_time_names_its_zone_because_abbreviations_are_ambiguous() -> None:
    manila, los_angeles = ZoneInfo("Asia/Manila"), ZoneInfo("America/Los_Angeles")
    assert moments.named(NOW, manila) == "2026-11-24 20:00 PST (Asia/Manila)"
    assert moments.named(NOW, los_angeles) == "2026-11-24 04:00 PST (America/Los_Angeles)"


def test_a_stored_reason_states_its_times_in_the_readers_zone() -> None:
    sofia = ZoneInfo("Europe/Sofia")
    stored = "deferred until 2026-12-02 08:00 UTC: acked 2026-07-01 09:30:15 UTC"
    assert moments.restated(stored, sofia) == (
        "deferred until 2026-12-02 10:00 EET: acked 2026-07-01 12:30 EEST"
    )
    assert moments.restated("no time here, UTC or not", sofia) == "no time here, UTC or not"


async def test_a_marketer_in_manila_reads_schedules_in_manila_and_one_without_a_zone_in_sofia(
    page: Page, site: Site, staff: dict[str, str], people: None, engine: Engine
) -> None:
    with engine.begin() as conn:
        users.change(conn, "mia", timezone="Asia/Manila")
    await sign_in(page, site, "mia")
    await expect(page.locator("header #zone")).to_have_text("Asia/Manila")
    await page.goto(site.url + "/schedules")
    await expect(page.get_by_role("main")).to_contain_text("Times are in Asia/Manila")
    fire = page.locator("#schedule-birthdays time")  # 17:00 UTC
    await expect(fire).to_have_text("in 5 hours")
    await expect(fire).to_have_attribute("title", "2026-11-25 01:00 PST (Asia/Manila)")
    await expect(fire).to_have_attribute("datetime", "2026-11-24T17:00:00+00:00")
    await page.goto(site.url + "/schedules/birthdays")
    await expect(page.get_by_role("main")).to_contain_text(
        "Next fire: 2026-11-25 01:00 PST (in 5 hours)"
    )

    with engine.begin() as conn:
        users.change(conn, "mia", timezone="")  # back to the business's
    await page.reload()
    await expect(page.locator("header #zone")).to_have_text("Europe/Sofia")
    await expect(page.get_by_role("main")).to_contain_text(
        "Next fire: 2026-11-24 19:00 EET (in 5 hours)"
    )


async def test_support_in_manila_reads_last_contact_in_the_customer_list_in_manila(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    clock: ManualClock,
    maria: int,  # noqa: F811
) -> None:
    with engine.begin() as conn:
        users.change(conn, "sam", timezone="Asia/Manila")
        call = NewContact(kind="call", direction="out", at=NOW - timedelta(days=3), by="sam")
        contacts.log(conn, maria, call, clock.now())
    await sign_in(page, site, "sam")
    await page.goto(site.url + "/customers")
    await expect(page.get_by_role("main")).to_contain_text("Times are in Asia/Manila")
    reached = page.locator("td.last-contact div", has_text="→")
    await expect(reached).to_have_text("→ 3 days ago · call")
    await expect(reached.locator("time")).to_have_attribute(
        "title", "2026-11-21 20:00 PST (Asia/Manila)"
    )


async def test_an_admin_in_manila_reads_the_outbox_in_manila_and_one_without_a_zone_in_sofia(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, clock: ManualClock
) -> None:
    message = NewMessage(
        dedupe_key="t:1",
        to_address="reader@example.com",
        category=Category.TRANSACTIONAL,
        template="ack",
    )
    outbox.enqueue(engine, [message], clock.now())
    with engine.connect() as conn:
        queued = outbox.find(conn)[0]["id"]
    stored = "retrying at 2026-11-24 13:00 UTC after: 421 busy"  # as delivery writes it
    failed = Outcome(outbox_id=queued, result=Result.FAILED, at=clock.now(), reason=stored)
    outbox.record(engine, [failed], {queued: 0})
    await sign_in(page, site, "ada")
    await page.goto(site.url + "/outbox")
    row = page.locator("tbody tr").first
    await expect(page.get_by_role("main")).to_contain_text("Times are in Europe/Sofia")
    await expect(row).to_contain_text("2026-11-24 14:00 EET")
    await expect(row).to_contain_text("retrying at 2026-11-24 15:00 EET after: 421 busy")
    with engine.begin() as conn:
        users.change(conn, "ada", timezone="Asia/Manila")
    await page.reload()
    await expect(page.get_by_role("main")).to_contain_text("Times are in Asia/Manila")
    await expect(row).to_contain_text("2026-11-24 20:00 PST")
    await expect(row).to_contain_text("retrying at 2026-11-24 21:00 PST after")
    await expect(row.locator("time")).to_have_attribute(
        "title", "2026-11-24 20:00 PST (Asia/Manila)"
    )


async def test_the_reply_quotes_the_customers_message_at_her_time_not_the_agents(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    order: int,  # noqa: F811
) -> None:
    received_at = opened(engine, order).received_at
    with engine.begin() as conn:
        users.change(conn, "sam", timezone="America/Los_Angeles")
        conn.execute(update(CUSTOMERS).values(timezone="Asia/Manila"))
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries/{order}")
    manila = moments.named(received_at, ZoneInfo("Asia/Manila"))
    editor = page.get_by_label("Your reply")
    await expect(editor).to_have_value(re.compile(rf"\nOn {re.escape(manila)}, .+ wrote:\n> "))
    with engine.begin() as conn:
        conn.execute(update(CUSTOMERS).values(timezone=None))  # she never told us: Sofia's
    await page.reload()
    sofia = moments.named(received_at, ZoneInfo("Europe/Sofia"))
    await expect(editor).to_have_value(re.compile(rf"\nOn {re.escape(sofia)}, "))
