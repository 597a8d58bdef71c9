"""The pages customers reach from the links in our mail: in their own language, under the
company's name, with an undo after unsubscribing; and what support then sees on the
customer's page. In Debian's Chromium, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import Engine

from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import profiles, tokens
from mailer.web import customer_words
from mailer.web.customer_words import WORDS
from tests.conftest import add_customers, sign_in
from tests.site import Site

COMPANY = "Northwind Coffee Roasters"  # [company] name in the shipped config.toml


@pytest.fixture
def links(engine: Engine, cfg: Config, clock: ManualClock, tmp_path: Path) -> dict[str, str]:
    """Each customer's link to their page (the path of their mail's unsubscribe link)."""
    add_customers(
        engine,
        tmp_path,
        "email,name,locale\n"
        "maria@example.bg,Мария Иванова,bg-BG\n"
        "jose@example.ph,Jose Santos,tl\n"
        "hans@example.de,Hans Weber,de-DE\n",
        clock.now(),
    )
    secret = tokens.load_secret(cfg)
    with engine.connect() as conn:
        found = profiles.find(conn)
    return {c.email: f"/unsubscribe/{tokens.sign(secret, c.id)}" for c in found}


def customer(engine: Engine, email: str) -> profiles.Profile:
    with engine.connect() as conn:
        return profiles.get(conn, email)


async def test_a_bulgarian_customer_unsubscribes_and_undoes_it_and_support_sees_both(
    page: Page,
    site: Site,
    engine: Engine,
    clock: ManualClock,
    staff: dict[str, str],
    links: dict[str, str],
) -> None:
    await page.goto(site.url + links["maria@example.bg"])
    await expect(page.locator("html")).to_have_attribute("lang", "bg")
    await expect(page).to_have_title(f"Настройки за писмата · {COMPANY}")
    await expect(page.get_by_text(COMPANY, exact=True)).to_be_visible()
    await page.get_by_role("button", name="Отписване от всичко").click()
    await expect(page.get_by_role("status")).to_contain_text("Отписахте се")  # noqa: RUF001
    assert customer(engine, "maria@example.bg").unsubscribed_at == clock.now()

    maria = customer(engine, "maria@example.bg").id
    staff_page = await page.context.new_page()
    await sign_in(staff_page, site, "sam")
    await staff_page.goto(f"{site.url}/customers/{maria}")
    timeline = staff_page.get_by_role("table", name="Timeline")
    await expect(timeline.locator("tr", has_text="Unsubscribed")).to_have_count(1)

    await page.get_by_role("button", name="Абонирайте ме отново").click()
    await expect(page.get_by_role("status")).to_have_text(WORDS["bg"]["resubscribed"])
    await expect(page.get_by_role("button", name="Отписване от всичко")).to_be_visible()
    assert customer(engine, "maria@example.bg").unsubscribed_at is None

    await staff_page.reload()
    profile = staff_page.get_by_role("table", name="Profile")
    await expect(profile.locator("tr", has_text="Unsubscribed")).to_contain_text("no")
    await expect(timeline.locator("tr", has_text="Unsubscribed")).to_have_count(0)
    history = staff_page.locator("ol.history li", has_text="the customer changed unsubscribed_at")
    await expect(history).to_have_count(2)  # undone, but the history keeps that it happened


async def test_a_tagalog_customer_stops_birthday_greetings_in_tagalog(
    page: Page, site: Site, engine: Engine, staff: dict[str, str], links: dict[str, str]
) -> None:
    await page.goto(site.url + links["jose@example.ph"])
    await expect(page.locator("html")).to_have_attribute("lang", "tl")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Mga setting ng inyong email")
    await expect(page.get_by_text(COMPANY, exact=True)).to_be_visible()
    await page.get_by_label("Mga pagbati sa kaarawan").uncheck()
    await page.get_by_label("Magpahinga muna").select_option("30")
    await page.get_by_role("button", name="I-save ang aking mga setting").click()
    await expect(page.get_by_role("status")).to_have_text("Nai-save na po ang inyong mga setting.")
    saved = customer(engine, "jose@example.ph")
    assert (saved.marketing_consent, saved.relationship_consent) == (True, False)
    assert saved.pause_until is not None and saved.unsubscribed_at is None

    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/customers/{saved.id}")
    profile = page.get_by_role("table", name="Profile")
    await expect(profile.locator("tr", has_text="Consent")).to_contain_text(
        "marketing: yes, relationship: no"
    )
    await expect(profile.locator("tr", has_text="Paused")).to_contain_text("until")


async def test_a_customer_in_a_language_we_do_not_write_gets_english(
    page: Page, site: Site, engine: Engine, links: dict[str, str]
) -> None:
    await page.goto(site.url + links["hans@example.de"])
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await page.get_by_role("button", name="Unsubscribe from everything").click()
    await expect(page.get_by_role("status")).to_contain_text("You are unsubscribed")
    await page.get_by_role("button", name="Subscribe me again").click()
    await expect(page.get_by_role("status")).to_have_text(WORDS["en"]["resubscribed"])
    assert customer(engine, "hans@example.de").unsubscribed_at is None


def test_undo_needs_a_valid_link_too(
    site: Site, engine: Engine, clock: ManualClock, links: dict[str, str]
) -> None:
    with engine.begin() as conn:
        profiles.unsubscribe(conn, "maria@example.bg", clock.now())
    forged = links["maria@example.bg"].replace("/unsubscribe/", "/resubscribe/")[:-2] + "xx"
    status, body = site.post(forged, {})
    assert status == 404 and "This link is not valid" in body
    assert customer(engine, "maria@example.bg").unsubscribed_at == clock.now()


def test_a_broken_link_answers_in_the_browsers_language(site: Site) -> None:
    status, body = site.get("/unsubscribe/broken", {"Accept-Language": "id-ID,en;q=0.5"})
    assert status == 404
    assert '<html lang="id">' in body and WORDS["id"]["not_valid"] in body


# The catalogue, without a browser


def test_every_language_has_every_line_english_has() -> None:
    assert set(WORDS) == {"en", "bg", "id", "tl"}
    for lang, lines in WORDS.items():
        assert set(lines) == set(WORDS["en"]), lang
        assert all(text.strip() for text in lines.values()), lang


@pytest.mark.parametrize(
    ("locale", "lang"),
    [
        ("bg-BG", "bg"),
        ("bg_BG", "bg"),
        ("TL", "tl"),
        ("id-ID", "id"),
        ("de-DE", "en"),
        (None, "en"),
    ],
)
def test_the_language_falls_back_as_templates_do(locale: str | None, lang: str) -> None:
    assert customer_words.language(locale) == lang


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        ("tl-PH,en;q=0.8", "tl"),
        ("de-DE,de;q=0.9,bg;q=0.7,en;q=0.5", "bg"),
        ("en;q=0.4,id;q=0.9", "id"),
        ("fr;q=1,bg;q=0", "en"),
        ("", "en"),
        ("bg;q=nonsense", "en"),
    ],
)
def test_a_broken_link_picks_the_best_language_the_browser_accepts(header: str, lang: str) -> None:
    assert customer_words.from_header(header) == lang
