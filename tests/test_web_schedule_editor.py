"""Marketing writes schedules in Chromium: a newsletter made with the form (live audience
count, the time in words, a wrong crontab refused at its field), paused so nothing fires,
resumed without catching up; a webinar's page and a run's totals. SQLite and PostgreSQL.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import Engine, select

from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.outbound import outbox
from mailer.outbound.outbox import OUTBOX, Outcome, Result
from mailer.scheduling import firing, results
from mailer.scheduling.schedules import EventSchedule
from tests.configs import ROOT
from tests.conftest import FIRING, sign_in
from tests.site import Site


@pytest.fixture
def cfg(cfg: Config) -> Config:
    shutil.copytree(ROOT / "schedules", cfg.schedules_dir)
    return cfg


def _fire(engine: Engine, cfg: Config, clock: ManualClock, name: str) -> list[int]:
    """What the daemon would queue now for ``name``: how many messages each run queued."""
    schedules, problems = results.load(cfg, clock)
    assert problems == []
    fired = firing.fire_due(engine, {name: schedules[name]}, clock.now(), FIRING)
    return [run.queued for run in fired]


async def test_marketing_makes_pauses_and_resumes_a_newsletter(
    page: Page,
    site: Site,
    staff: dict[str, str],
    people: None,
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
) -> None:
    await sign_in(page, site, "mia")
    await page.goto(site.url + "/schedules")
    await page.locator("#new-schedule").get_by_role("link", name="newsletter").click()
    await page.locator("#name").fill("vip-news")
    await expect(page.locator("#audience-count")).to_contain_text("7 customers match")
    await page.get_by_label("Any of these tags").fill("vip")
    await expect(page.locator("#audience-count")).to_contain_text("1 customer matches")  # Jose
    await expect(page.locator("#in-words")).to_have_text(
        "09:00 on the 1st of every month, in each customer's own time zone"
    )
    await expect(page.locator("#upcoming li")).to_have_count(5)
    await expect(page.locator("#upcoming li").first).to_contain_text("2026-12-01T09:00")

    cron = page.get_by_label("When (crontab)")
    await cron.fill("0 9 * * 1")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#cron-error")).to_contain_text("write weekdays as names")
    await expect(page.get_by_role("alert")).to_contain_text("Nothing was saved: 1 problem")
    assert not (cfg.schedules_dir / "vip-news.toml").exists()

    await cron.fill("0 9 * * mon")
    await expect(page.locator("#in-words")).to_contain_text("09:00 every Monday")
    await page.get_by_role("button", name="Save").click()
    await page.wait_for_url(site.url + "/schedules/vip-news")
    assert _fire(engine, cfg, clock, "vip-news") == []  # mailer sees it on Tuesday 24th

    await page.get_by_role("button", name="Pause").click()
    await expect(page.get_by_role("main")).to_contain_text("paused")
    clock.set(datetime(2026, 11, 30, 2, 30, tzinfo=UTC))  # Monday 10:30 in Manila
    assert _fire(engine, cfg, clock, "vip-news") == []
    await sign_in(page, site, "mia")  # six days later: her session ran out after 12 idle hours
    await page.goto(site.url + "/schedules/vip-news")
    await page.get_by_role("button", name="Resume").click()
    await expect(page.get_by_role("button", name="Pause")).to_be_visible()
    assert _fire(engine, cfg, clock, "vip-news") == []  # this morning's is not caught up
    clock.set(datetime(2026, 12, 7, 2, 30, tzinfo=UTC))
    assert sum(_fire(engine, cfg, clock, "vip-news")) == 1  # next Monday's goes to Jose
    with engine.connect() as conn:
        assert conn.execute(select(OUTBOX.c.to_address)).scalars().all() == ["jose@example.ph"]


async def test_a_webinars_page_and_its_runs_totals(
    page: Page,
    site: Site,
    staff: dict[str, str],
    people: None,
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
) -> None:
    name = "webinar-spring-roasting"
    firing.first_seen(engine, [name], clock.now())
    clock.set(datetime(2027, 5, 6, 13, 5, tzinfo=UTC))  # just after the invitations' time
    assert _fire(engine, cfg, clock, name) == [5]  # Иван gave no consent: skipped
    with engine.connect() as conn:
        ids = dict(conn.execute(select(OUTBOX.c.to_address, OUTBOX.c.id)).all())
    sent = Outcome(outbox_id=ids["maria@example.bg"], result=Result.SENT, at=clock.now())
    outbox.record(engine, [sent], {sent.outbox_id: 0})  # never claimed: lease token 0

    await sign_in(page, site, "mia")
    await page.goto(f"{site.url}/schedules/{name}")
    totals = page.locator("#run-totals")
    await expect(totals).to_contain_text("audience 6")
    for shown in ("queued 4", "sent 1", "deferred 0", "skipped 1", "expired 0", "bounced 0"):
        await expect(totals).to_contain_text(shown)
    await page.get_by_role("link", name="Webinar and invitations").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "Spring roasting: light roasts at home"
    )
    webinar = page.locator("#webinar")
    # in the reader's zone: mia has none, so the business's (Sofia, UTC+3 in May)
    await expect(webinar).to_contain_text("2027-05-20 16:00 EEST")
    await expect(webinar).to_contain_text("1d before: 2027-05-19 16:00 EEST")
    await expect(webinar).to_contain_text("1h before: 2027-05-20 15:00 EEST")
    await expect(page.locator("#invited")).to_have_text("1 customer")  # only Мария's arrived

    await sign_in(page, site, "sam")
    for path in ("/schedules/new", f"/schedules/{name}/edit", f"/schedules/{name}/webinar"):
        response = await page.goto(site.url + path)
        assert response is not None and response.status == 403, path


async def test_marketing_makes_a_reorder_reminder_with_the_form(
    page: Page, site: Site, staff: dict[str, str], people: None, cfg: Config
) -> None:
    await sign_in(page, site, "mia")
    await page.goto(site.url + "/schedules")
    await page.locator("#new-schedule").get_by_role("link", name="reorder").click()
    await page.locator("#name").fill("beans")
    await page.get_by_label("Template").select_option("newsletter")
    await expect(page.locator("#in-words")).to_have_text(
        "09:00 daily, 7d before each customer's predicted next order,"
        " in each customer's own time zone"
    )
    lead = page.get_by_label("Lead")
    await lead.fill("36h")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#lead-error")).to_have_text(
        "'1d12h' is not a whole number of days, e.g. '7d'"
    )
    await lead.fill("5d")
    await page.get_by_role("button", name="Save").click()
    await page.wait_for_url(site.url + "/schedules/beans")
    schedules, problems = results.load(cfg, ManualClock(datetime(2026, 11, 24, tzinfo=UTC)))
    assert problems == []
    assert schedules["beans"].kind == "reorder" and schedules["beans"].template == "newsletter"
    assert "5d" in (cfg.schedules_dir / "beans.toml").read_text(encoding="utf-8")


async def test_marketing_makes_a_cart_reminder_with_the_form(
    page: Page, site: Site, staff: dict[str, str], people: None, cfg: Config
) -> None:
    await sign_in(page, site, "mia")
    await page.goto(site.url + "/schedules")
    await page.locator("#new-schedule").get_by_role("link", name="event").click()
    await page.locator("#name").fill("cart")
    await expect(page.locator("#in-words")).to_have_text(
        "1h after each cart_abandoned event, unless order_placed comes first"
    )
    delay = page.get_by_label("Send after")
    await delay.fill("an hour")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#delay-error")).to_contain_text("'an hour' is not a duration")
    await delay.fill("2h")
    await page.get_by_label("Unless first").fill("order_placed, cart_recovered")
    await page.get_by_role("button", name="Save").click()
    await page.wait_for_url(site.url + "/schedules/cart")
    schedules, problems = results.load(cfg, ManualClock(datetime(2026, 11, 24, tzinfo=UTC)))
    assert problems == []
    cart = schedules["cart"]
    assert isinstance(cart, EventSchedule)
    assert (cart.event, cart.delay, cart.unless) == (
        "cart_abandoned",
        timedelta(hours=2),
        ["order_placed", "cart_recovered"],
    )
    await page.goto(site.url + "/schedules/cart/edit")
    await expect(page.get_by_label("Unless first")).to_have_value("order_placed, cart_recovered")


async def test_a_file_broken_by_hand_is_named_on_its_edit_page_not_a_server_error(
    page: Page, site: Site, staff: dict[str, str], cfg: Config
) -> None:
    """A schedule file edited outside mailer into bad TOML, another encoding or an unknown
    kind: its edit page says what is wrong with it, so it is mended in the file."""
    (cfg.schedules_dir / "typo.toml").write_text('kind = "newsletter\n', encoding="utf-8")
    (cfg.schedules_dir / "latin.toml").write_bytes('title = "Café"\n'.encode("latin-1"))
    (cfg.schedules_dir / "five.toml").write_text("kind = 5\n", encoding="utf-8")
    await sign_in(page, site, "mia")
    for name, said in (
        ("typo", "cannot be edited here: it is not valid TOML"),
        ("latin", "cannot be edited here: it is not UTF-8 text"),
        ("five", "has kind 5, not one of"),
    ):
        response = await page.goto(f"{site.url}/schedules/{name}/edit")
        assert response is not None and response.status == 400, name
        await expect(page.get_by_role("main")).to_contain_text(said)
