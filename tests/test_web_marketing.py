"""Marketing's and operators' pages in Debian's Chromium: previews in the customer's
language that no template can script, schedules' next firings and what their runs became,
and an admin's retry of a failed message. Each runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import Engine, insert, select

from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import profiles
from mailer.outbound import outbox
from mailer.outbound.compose import Envelope, compose
from mailer.outbound.outbox import OUTBOX, NewMessage, Outcome, Result
from mailer.sandbox.smtp_server import SANDBOX
from mailer.scheduling import firing, results
from mailer.staff import users
from mailer.store.models import OutboxStatus
from mailer.web.server import build as build_web
from tests.configs import ROOT, shipped_config
from tests.conftest import FIRING, sign_in
from tests.site import Site, served

MARIA = "maria@example.bg"
MANILA_NIGHT = "quiet hours 21:00-08:00 in Asia/Manila"


@pytest.fixture
def cfg(cfg: Config) -> Config:
    """The shipped config with a copy of the repo's schedule files, and one broken file."""
    shutil.copytree(ROOT / "schedules", cfg.schedules_dir)
    (cfg.schedules_dir / "typo.toml").write_text('kind = "newsleter"\n', encoding="utf-8")
    return cfg


@pytest.fixture
def edited(tmp_path: Path, engine: Engine, clock: ManualClock) -> Iterator[Site]:
    """The app over a copy of the repo's templates plus two a marketer got wrong: one with
    script in its HTML, one naming a variable that does not exist."""
    templates = tmp_path / "edited" / "templates"
    shutil.copytree(ROOT / "templates", templates)
    for name, body in {
        "scripted": (
            '<p id="mark">script did not run</p>'
            "<script>document.getElementById('mark').textContent = 'script ran'</script>"
            '<img src="/nowhere.png" onerror="mark.textContent = `handler ran`">'
        ),
        "broken": "<p>Hello {{ customer.nickname }}</p>",
    }.items():
        (templates / name).mkdir()
        (templates / name / "subject.txt").write_text(f"A {name} template", encoding="utf-8")
        (templates / name / "body.html").write_text(body, encoding="utf-8")
    settings = {"MAILER_PATHS__TEMPLATES": str(templates)}
    with served(build_web(shipped_config(tmp_path / "edited", settings), engine, clock)) as site:
        yield site


async def test_marketing_previews_the_bulgarian_birthday_for_a_bulgarian_customer(
    page: Page, site: Site, staff: dict[str, str], people: None
) -> None:
    await sign_in(page, site, "mia")
    await page.goto(site.url + "/templates")
    row = page.locator("#template-birthday")
    await expect(row).to_contain_text("bg")
    await expect(row).to_contain_text("renders")
    await expect(row).to_contain_text("birthdays")  # the schedule that sends it
    await row.get_by_role("link", name="birthday", exact=True).click()
    await page.get_by_label("Customer", exact=True).fill("МАРИЯ")  # her name, in capitals
    await page.get_by_role("button", name="Preview").click()
    await page.get_by_role("link", name=MARIA).click()  # the one customer the search found
    await expect(page.get_by_role("heading", level=2).first).to_have_text(
        "Честит рожден ден, Мария! ☕"
    )
    headers = page.locator("table.headers")
    await expect(headers).to_contain_text(f"Мария <{MARIA}>")
    await expect(headers).to_contain_text("Reply-To")
    await expect(headers).to_contain_text("https://mail.northwind-roasters.example/unsubscribe/")
    frame = page.frame_locator("iframe.preview")
    await expect(frame.get_by_role("heading")).to_have_text("Честит рожден ден, Мария!")
    await expect(frame.locator("body")).to_contain_text("Днес целият екип на Northwind")
    await expect(page.locator("pre.body")).to_contain_text("Днес целият екип на Northwind")
    assert await page.locator("iframe.preview").get_attribute("sandbox") == ""


async def test_a_wildcard_or_a_nul_in_the_customer_picker_offers_no_one(
    page: Page, site: Site, staff: dict[str, str], people: None
) -> None:
    await sign_in(page, site, "mia")
    response = await page.goto(site.url + "/templates/birthday?customer=%25%00")  # "%", NUL
    assert response is not None and response.status == 200
    await expect(page.get_by_role("main")).to_contain_text("birthday")
    await expect(page.get_by_role("link", name=MARIA)).to_have_count(0)


async def test_the_english_variant_is_chosen_by_language(
    page: Page, site: Site, staff: dict[str, str], people: None
) -> None:
    await sign_in(page, site, "mia")
    await page.goto(f"{site.url}/templates/birthday?customer={MARIA}&locale=en")
    await expect(page.get_by_role("heading", level=2).first).to_have_text(
        "Happy birthday, Мария! ☕"
    )
    await expect(page.get_by_label("Language").first).to_have_value("en")


async def test_script_in_a_template_does_not_run_in_the_preview(
    page: Page, edited: Site, staff: dict[str, str], people: None
) -> None:
    await sign_in(page, edited, "mia")
    await page.goto(f"{edited.url}/templates/scripted?customer={MARIA}")
    frame = page.frame_locator("iframe.preview")
    await expect(frame.locator("#mark")).to_have_text("script did not run")
    preview = next(f for f in page.frames if f != page.main_frame)
    await preview.wait_for_load_state("load")  # the image has failed by now
    await expect(frame.locator("#mark")).to_have_text("script did not run")
    assert await page.locator("iframe.preview").get_attribute("sandbox") == ""


async def test_the_templates_page_names_each_templates_problems(
    page: Page, edited: Site, staff: dict[str, str], people: None
) -> None:
    await sign_in(page, edited, "mia")
    await page.goto(edited.url + "/templates")
    broken = page.locator("#template-broken")
    await expect(broken).to_contain_text("1 problem")
    await expect(broken).to_contain_text(
        "templates/broken/body.html:1: undefined variable: 'customer' has no attribute 'nickname'"
    )
    await expect(page.locator("#template-birthday")).to_contain_text("renders")
    await page.goto(f"{edited.url}/templates/broken?customer={MARIA}")
    await expect(page.get_by_role("alert")).to_contain_text(
        f"cannot be rendered for {MARIA}: templates/broken/body.html:1: undefined variable"
    )


async def test_marketing_queues_a_test_send_from_the_preview_page(
    page: Page, site: Site, staff: dict[str, str], engine: Engine
) -> None:
    await sign_in(page, site, "mia")
    await page.goto(site.url + "/templates/birthday")
    await page.get_by_label("To", exact=True).fill("Mia@Northwind-Roasters.example")
    await page.locator("form[method=post] select[name=locale]").select_option("bg")
    await page.get_by_role("button", name="Queue a test").click()
    await expect(page.get_by_role("status")).to_have_text(
        "A test of birthday is queued for mia@northwind-roasters.example in bg."
    )
    with engine.connect() as conn:
        (queued,) = outbox.find(conn)
    assert (queued["template"], queued["locale"], queued["category"]) == (
        "birthday",
        "bg",
        Category.TRANSACTIONAL,
    )
    await page.goto(site.url + "/templates/birthday")
    await page.get_by_label("To", exact=True).fill("not an address@")
    await page.get_by_label("To", exact=True).evaluate(
        "input => input.type = 'text'"
    )  # past the browser
    await page.get_by_role("button", name="Queue a test").click()
    await expect(page.get_by_role("alert")).to_contain_text("not a valid email address")


async def test_support_may_not_open_marketing_pages(
    page: Page, site: Site, staff: dict[str, str]
) -> None:
    await sign_in(page, site, "sam")
    for path in (
        "/templates",
        "/templates/birthday",
        "/schedules",
        "/schedules/newsletter",
        "/insights",
    ):
        response = await page.goto(site.url + path)
        assert response is not None and response.status == 403, path
        await expect(page.get_by_role("heading")).to_have_text("Not for you")


async def test_marketing_may_not_open_the_outbox_or_the_sandbox(
    page: Page, site: Site, staff: dict[str, str]
) -> None:
    await sign_in(page, site, "mia")
    for path in ("/outbox", "/sandbox", "/sandbox/1"):
        response = await page.goto(site.url + path)
        assert response is not None and response.status == 403, path


async def test_schedules_show_next_fire_times_and_what_a_run_became(
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
    # 24 November 12:00 UTC: 09:00 in Los Angeles comes next; 1 December reaches Auckland
    # first; mia has no zone of her own, so she reads them in the business's (Sofia)
    for row, soon, at in (
        ("birthdays", "in 5 hours", "2026-11-24 19:00 EET"),  # 17:00 UTC
        ("newsletter", "in 6 days", "2026-11-30 22:00 EET"),  # 20:00 UTC
        ("webinar-spring-roasting", "in 5 months", "2027-05-06 16:00 EEST"),  # 13:00 UTC
    ):
        fire = page.locator(f"#schedule-{row} time")
        await expect(fire).to_have_text(soon)
        await expect(fire).to_have_attribute("title", f"{at} (Europe/Sofia)")
    await expect(page.locator("#schedule-newsletter")).to_contain_text("5 (America/Los_Angeles")
    await expect(page.locator("#broken-typo")).to_contain_text("'newsleter' is not a kind")
    response = await page.goto(site.url + "/schedules/nosuch")
    assert response is not None and response.status == 404

    runs = _fire_newsletter_and_deliver_some(engine, cfg, clock)
    await sign_in(page, site, "mia")  # a week later: her session ran out after 12 idle hours
    await page.goto(site.url + "/schedules/newsletter")
    sofia = page.locator(f"#run-{runs['Europe/Sofia']}")
    await expect(sofia).to_contain_text("1 queued, 1 skipped")  # at fan-out: Иван gave no consent
    await expect(sofia).to_contain_text("sent 1")
    await expect(sofia).to_contain_text("skipped 1")
    await expect(sofia).to_contain_text("skipped: no consent for marketing (1)")
    await expect(sofia.locator("td").last).to_have_text("1")  # Мария unsubscribed since
    await expect(page.locator(f"#run-{runs['Asia/Jakarta']}")).to_contain_text("failed 1")
    await expect(page.locator(f"#run-{runs['Asia/Manila']}")).to_contain_text("deferred 1")
    await expect(page.locator(f"#run-{runs['Asia/Manila']}")).to_contain_text(
        f"deferred: {MANILA_NIGHT} (1)"  # the same words whatever time each is held until
    )
    days = page.locator("svg.chart g title")
    await expect(days).to_have_count(30)
    await expect(days.last).to_have_text("2026-12-01: 1 sent, 3 not sent")
    await expect(days.nth(28)).to_have_text("2026-11-30: 0 sent, 1 not sent")
    # a reader in Auckland counts its 09:00 newsletter (20:00 UTC the day before) on 1 December
    with engine.begin() as conn:
        users.change(conn, "mia", timezone="Pacific/Auckland")
    await page.reload()
    await expect(page.get_by_text("The last 30 days (Pacific/Auckland)")).to_be_visible()
    await expect(days.last).to_have_text("2026-12-01: 1 sent, 4 not sent")
    await expect(days.nth(28)).to_have_text("2026-11-30: 0 sent, 0 not sent")


def _fire_newsletter_and_deliver_some(
    engine: Engine, cfg: Config, clock: ManualClock
) -> dict[str, int]:
    """Fire 1 December's newsletter as far as Sofia, then: Мария's is sent and she
    unsubscribes, Siti's fails, Jose's is held by quiet hours. Run ids by zone. mailer has
    known the newsletter since 24 November, so the zones already past 09:00 are caught up."""
    firing.first_seen(engine, ["newsletter"], clock.now())
    clock.set(datetime(2026, 12, 1, 7, 30, tzinfo=UTC))
    schedules, _ = results.load(cfg, clock)
    fired = firing.fire_due(engine, {"newsletter": schedules["newsletter"]}, clock.now(), FIRING)
    now = clock.now()
    with engine.begin() as conn:
        ids = dict(conn.execute(select(OUTBOX.c.to_address, OUTBOX.c.id)).all())
        conn.execute(
            OUTBOX.update()
            .where(OUTBOX.c.id == ids["jose@example.ph"])
            .values(
                status=OutboxStatus.DEFERRED,
                reason=f"deferred until 2026-12-02 00:00 UTC: {MANILA_NIGHT}",
            )
        )
    outbox.record(
        engine,
        [
            Outcome(
                outbox_id=ids[MARIA],
                result=Result.SENT,
                at=now,
                message_id="<n1@x>",
                subject="Новини",
            ),
            Outcome(
                outbox_id=ids["siti@example.id"],
                result=Result.FAILED,
                at=now,
                reason="550 5.1.1 no such user",
            ),
        ],
        dict.fromkeys(ids.values(), 0),  # never claimed: lease token 0
    )
    with engine.begin() as conn:
        profiles.unsubscribe(conn, MARIA, now + timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    return {run.zone: run.run_id for run in fired}


async def test_an_admin_retries_a_failed_message_and_cancels_it_from_the_outbox(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, clock: ManualClock
) -> None:
    now = clock.now()
    messages = [
        NewMessage(
            dedupe_key=f"t:{n}",
            to_address=f"reader{n}@example.com",
            category=Category.TRANSACTIONAL,
            template="ack",
        )
        for n in range(3)
    ]
    outbox.enqueue(engine, messages, now)
    with engine.connect() as conn:
        failed = outbox.find(conn)[-1]["id"]  # the oldest: listed last but for failing
    outbox.record(
        engine,
        [Outcome(outbox_id=failed, result=Result.FAILED, at=now, reason="554 5.7.1 rejected")],
        {failed: 0},  # never claimed: lease token 0
    )
    await sign_in(page, site, "ada")
    await page.goto(site.url + "/outbox")
    await expect(page.get_by_role("navigation", name="Messages by status")).to_contain_text(
        "failed 1"
    )
    first = page.locator("tbody tr").first
    await expect(first).to_have_id(f"message-{failed}")
    await expect(first).to_contain_text("554 5.7.1 rejected")
    await first.get_by_role("button", name="Retry").click()
    await expect(page.get_by_role("status")).to_have_text(
        f"Message {failed} is queued again, due now."
    )
    await expect(page.locator(f"#message-{failed} .badge")).to_have_text("queued")
    with engine.connect() as conn:
        assert outbox.counts(conn) == {"queued": 3}
    await page.locator(f"#message-{failed}").get_by_role("button", name="Cancel").click()
    await expect(page.get_by_role("status")).to_have_text(
        f"Message {failed} is cancelled; it will not be sent."
    )
    await expect(page.locator(f"#message-{failed} .badge")).to_have_text("cancelled")
    with engine.connect() as conn:
        assert outbox.counts(conn) == {"queued": 2, "cancelled": 1}


async def test_an_admin_reads_a_captured_message_in_the_sandbox(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, clock: ManualClock
) -> None:
    envelope = Envelope(
        from_="Northwind <hello@northwind.example>", to_address=MARIA, to_name="Мария"
    )
    html = "<h1>Здравейте</h1><script>document.title = 'ran'</script>"
    raw = compose(envelope, "Новини от Northwind", "Здравейте, Мария", html)
    with engine.begin() as conn:
        conn.execute(
            insert(SANDBOX).values(
                received_at=clock.now(),
                mail_from="hello@northwind.example",
                recipients=[MARIA],
                subject="Новини от Northwind",
                raw=raw,
            )
        )
    await sign_in(page, site, "ada")
    await page.goto(site.url + "/sandbox")
    await page.get_by_role("link", name="Новини от Northwind").click()
    await expect(page.locator("table.headers")).to_contain_text(f"Мария <{MARIA}>")
    await expect(page.locator("pre.body")).to_have_text("Здравейте, Мария\n")
    frame = page.frame_locator("iframe.preview")
    await expect(frame.get_by_role("heading")).to_have_text("Здравейте")
    assert await page.locator("iframe.preview").get_attribute("sandbox") == ""
