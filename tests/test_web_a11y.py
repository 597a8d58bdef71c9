"""Every page on a phone and with a keyboard, in Debian's Chromium: axe-core finds nothing
serious on any staff or customer page at 390 and 1280 px, no page scrolls sideways on a
phone, fields have borders a person can see, the skip link comes first and the current
section is marked in the navigation.

These tests are about markup, not the database, so they run on SQLite only. axe-core is
vendored under tests/vendor/axe-core (never served by the app); it is evaluated into each
page through the DevTools protocol, which the app's Content-Security-Policy does not block,
so the pages are checked exactly as they are served.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page, expect
from pytest_playwright_asyncio import CreateContextCallback
from sqlalchemy import Engine, insert

from mailer.api import keys
from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import followups, profiles, tokens
from mailer.customers.followups import NewFollowUp
from mailer.inbound import saved_replies
from mailer.inbound.saved_replies import Draft
from mailer.outbound import outbox
from mailer.outbound.compose import Envelope, compose
from mailer.outbound.outbox import NewMessage, Outcome, Result
from mailer.sandbox.smtp_server import SANDBOX
from tests.configs import ROOT
from tests.conftest import sign_in
from tests.site import Site
from tests.test_insights_report import stock
from tests.test_web_desk import mail, received

AXE = (Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js").read_text(encoding="utf-8")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
MARIA = "maria@example.bg"
# axe's findings on a page: rule, impact and the first elements it names
RUN_AXE = """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
  .filter((v) => v.impact === "serious" || v.impact === "critical")
  .map((v) => `${v.impact} ${v.id}: ${v.help} at ` +
    v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", "))"""
# fields whose border is too faint against what is behind them (WCAG 1.4.11: 3:1)
FAINT_FIELDS = """() => {
  const rgb = (text) => text.match(/[\\d.]+/g).map(Number);
  const luminance = ([r, g, b]) => [r, g, b].map((c) => c / 255)
    .map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4))
    .reduce((sum, c, i) => sum + c * [0.2126, 0.7152, 0.0722][i], 0);
  const behind = (element) => {
    for (let e = element.parentElement; e; e = e.parentElement) {
      const color = rgb(getComputedStyle(e).backgroundColor);
      if (color.length < 4 || color[3] > 0) return color;
    }
    return [255, 255, 255];
  };
  const fields = document.querySelectorAll(
    "input:not([type=hidden], [type=checkbox], [type=radio]), select, textarea");
  return [...fields].filter((field) => field.offsetParent !== null).filter((field) => {
    const a = luminance(rgb(getComputedStyle(field).borderTopColor));
    const b = luminance(behind(field));
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05) < 3;
  }).map((field) => field.name || field.id);
}"""


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: these tests check markup."""
    return f"sqlite:///{tmp_path / 'mailer.db'}"


@pytest.fixture
def cfg(cfg: Config) -> Config:
    """The shipped config with the repo's schedule files, so the schedule pages have some."""
    shutil.copytree(ROOT / "schedules", cfg.schedules_dir)
    return cfg


@dataclass(frozen=True, slots=True, kw_only=True)
class Seeded:
    inquiry: int
    maria: int
    anonymous: list[str]  # the pages reached without signing in
    signed_in: list[str]  # the admin's pages: every staff page


@pytest.fixture
def seeded(
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    staff: dict[str, str],
    people: None,
    tmp_path: Path,
) -> Seeded:
    """Something on every page: Мария's inquiry (acknowledged), a saved reply, a follow-up
    for the admin, a failed message and a captured one, a shop's orders with their
    insight, and its API key."""
    stock(engine, tmp_path)
    inquiry = received(
        engine, cfg, clock, mail("<a1@mail.example>", "Поръчка 1042", "Здравейте!", MARIA)
    )
    now = clock.now()
    with engine.begin() as conn:
        maria = profiles.get(conn, MARIA).id
        ana = profiles.get(conn, "ana@example.com").id
        draft = Draft(name="Shipping delay", locale="bg", body="Здравейте, {{ agent }}")
        saved = saved_replies.save(conn, draft, None, "sam", now)
        call = NewFollowUp(
            customer_id=maria, due_at=now, note="Обаждане", created_by="ada", assignee="ada"
        )
        followups.add(conn, call, now)
        shop, _ = keys.create(
            conn, "shop", [keys.Scope.SEND], rate_per_minute=None, created_by="ada", now=now
        )
        conn.execute(
            insert(SANDBOX).values(
                received_at=now,
                mail_from="hello@northwind.example",
                recipients=[MARIA],
                subject="Новини",
                raw=compose(
                    Envelope(from_="hello@northwind.example", to_address=MARIA),
                    "Новини",
                    "Здравейте",
                    "<p>Здравейте</p>",
                ),
            )
        )
    letter = NewMessage(
        dedupe_key="n", to_address=MARIA, category=Category.MARKETING, template="newsletter"
    )
    outbox.enqueue(engine, [letter], now)
    with engine.connect() as conn:
        failed = outbox.find(conn)[0]["id"]
    fail = Outcome(outbox_id=failed, result=Result.FAILED, at=now, reason="550")
    outbox.record(engine, [fail], {failed: 0})  # never claimed: token 0
    token = tokens.sign(tokens.load_secret(cfg), maria)
    confirming = tokens.sign_confirmation(tokens.load_secret(cfg), ana, now + timedelta(days=1))
    return Seeded(
        inquiry=inquiry,
        maria=maria,
        anonymous=[
            "/login",
            f"/unsubscribe/{token}",
            "/unsubscribe/not-a-token",
            "/forms/thanks/inquiry?lang=bg",
            "/forms/thanks/subscribe",
            f"/forms/confirm/{confirming}",
        ],
        signed_in=[
            "/inquiries",
            f"/inquiries/{inquiry}",
            f"/inquiries/{inquiry}/acknowledgement",
            "/desk/replies",
            "/desk/replies/new",
            f"/desk/replies/{saved}",
            "/customers",
            f"/customers/{maria}",
            f"/customers/{maria}/edit",
            f"/customers/{maria}/erase",
            "/followups",
            "/templates",
            f"/templates/newsletter?customer={MARIA}",
            "/templates/newsletter/edit",
            "/schedules",
            "/schedules/newsletter",
            "/schedules/new?kind=newsletter",
            "/schedules/newsletter/edit",
            "/schedules/webinar-spring-roasting/webinar",
            "/insights",
            f"/customers/{ana}",  # with orders and their insight
            "/outbox",
            "/sandbox",
            "/sandbox/1",
            "/webhooks",
            "/api-keys",
            "/deliverability",
            f"/api-keys/{shop.id}/revoke",
            "/no-such-page",
        ],
    )


async def problems_on(page: Page, url: str) -> list[str]:
    """What axe, the width check and the field border check find on one page."""
    response = await page.goto(url)
    await page.wait_for_load_state("networkidle")  # htmx's parts of the page are in
    assert response is not None
    expected = 404 if url.endswith(("/no-such-page", "/not-a-token")) else 200
    assert response.status == expected, url
    found: list[str] = await page.evaluate(FAINT_FIELDS)
    problems = [f"faint border on field {name!r}" for name in found]
    wide = await page.evaluate("() => document.scrollingElement.scrollWidth - innerWidth")
    if wide > 0:
        problems.append(f"scrolls sideways by {wide}px")
    await page.evaluate(AXE)
    problems += await page.evaluate(RUN_AXE)
    return [f"{url.split('/', 3)[-1]}: {p}" for p in problems]


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
async def test_every_page_passes_axe_fits_the_screen_and_has_visible_fields(
    new_context: CreateContextCallback, site: Site, seeded: Seeded, size: dict[str, int]
) -> None:
    context = await new_context(viewport=size)
    page = await context.new_page()
    problems = [p for path in seeded.anonymous for p in await problems_on(page, site.url + path)]
    await sign_in(page, site, "ada")
    problems += [p for path in seeded.signed_in for p in await problems_on(page, site.url + path)]
    assert not problems, "\n".join(problems)


async def test_tab_from_the_top_reaches_the_skip_link_first_and_enter_moves_to_the_content(
    page: Page, site: Site, staff: dict[str, str]
) -> None:
    await sign_in(page, site, "sam")
    skip = page.get_by_role("link", name="Skip to content")
    await expect(skip).not_to_be_in_viewport()  # out of sight until it is tabbed to
    await page.keyboard.press("Tab")
    await expect(skip).to_be_focused()
    await expect(skip).to_be_in_viewport()
    assert await skip.evaluate("e => getComputedStyle(e).outline") == "rgb(26, 79, 139) solid 3px"
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("main")).to_be_focused()
    await page.keyboard.press("Tab")  # past the navigation, straight to the search
    await expect(page.get_by_role("searchbox")).to_be_focused()


async def test_the_navigation_marks_the_page_and_the_section_the_reader_is_in(
    page: Page, site: Site, seeded: Seeded
) -> None:
    await sign_in(page, site, "sam")
    nav = page.get_by_role("navigation", name="Sections")
    for path, link, current in (
        ("/customers", "Customers", "page"),
        (f"/customers/{seeded.maria}", "Customers", "true"),  # a page in that section
        ("/desk/replies", "Saved replies", "page"),
        ("/inquiries", "Inquiries", "page"),
    ):
        await page.goto(site.url + path)
        await expect(nav.get_by_role("link", name=link)).to_have_attribute("aria-current", current)
        await expect(nav.locator("[aria-current]")).to_have_count(1)


async def test_on_a_phone_each_customer_is_a_card_with_every_value_named(
    new_context: CreateContextCallback, site: Site, seeded: Seeded
) -> None:
    context = await new_context(viewport=PHONE)
    page = await context.new_page()
    await sign_in(page, site, "sam")
    await page.goto(site.url + "/customers")
    row = page.locator("#customers tbody tr", has_text=MARIA)
    box = await row.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    name = row.locator("td").nth(1)
    assert await name.evaluate("td => getComputedStyle(td, '::before').content") == '"Name"'
    await expect(page.get_by_role("columnheader", name="Email")).not_to_be_in_viewport()
    await expect(page.get_by_role("link", name="Sort by last contact")).to_be_visible()


async def test_what_a_customer_wrote_is_marked_with_their_language(
    page: Page, site: Site, seeded: Seeded
) -> None:
    await sign_in(page, site, "ada")
    await page.goto(f"{site.url}/inquiries/{seeded.inquiry}")
    await expect(page.locator("article pre.body")).to_have_attribute("lang", "bg")
    await page.goto(site.url + "/customers")
    await expect(page.locator("td[lang=bg]", has_text="Мария")).to_have_count(1)
    await expect(page.locator("td[lang=en-NZ]", has_text="Aroha")).to_have_count(1)
    await page.goto(site.url + "/followups")
    await expect(page.get_by_role("link", name="Мария")).to_have_attribute("lang", "bg")
