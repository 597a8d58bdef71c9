"""Keeping a customer's record right in the browser: support edits it and sees each change
in its history, a bad field or another customer's address is refused where it was typed,
and only an admin exports the customer as JSON or erases them, after typing the address."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Locator, Page, expect
from sqlalchemy import Engine

from mailer.core.clock import ManualClock
from mailer.customers import edits, profiles
from mailer.web.customer_edit import as_form
from tests.conftest import add_customers, sign_in
from tests.site import Site

MARIA = "maria@example.bg"
SOFIA = ZoneInfo("Europe/Sofia")
CSV = (
    "email,name,locale,timezone,tags,city\n"
    f"{MARIA},Мария Иванова,bg,Europe/Sofia,newsletter,София\n"
    "ivan@example.bg,Иван Петров,bg,,,Пловдив\n"
)


@pytest.fixture
def maria(engine: Engine, clock: ManualClock, tmp_path: Path) -> int:
    add_customers(engine, tmp_path, CSV, clock.now() - timedelta(days=30))
    with engine.connect() as conn:
        return profiles.get(conn, MARIA).id


async def open_editor(page: Page, site: Site, customer: int) -> None:
    await page.goto(f"{site.url}/customers/{customer}")
    await page.get_by_role("link", name="Edit").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Edit Мария Иванова")


def error_of(page: Page, name: str) -> Locator:
    return page.locator(f'[id="{name}-error"]')


async def test_support_edits_a_customer_and_sees_each_change_in_the_history(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, maria: int
) -> None:
    await sign_in(page, site, "sam")
    await open_editor(page, site, maria)
    await expect(page.get_by_label("City")).to_have_value("София")
    await page.get_by_label("Name", exact=True).fill("Мария Петрова")
    await page.get_by_label("Time zone").fill("Europe/Berlin")
    await page.get_by_label("Birthday").fill("--02-29")
    await page.get_by_label("Marketing mail").uncheck()
    await page.get_by_label("marketing per week").fill("1")
    await page.get_by_label("Tags").fill("vip, newsletter")
    await page.get_by_label("City").fill("")
    await page.get_by_label("New field's name").fill("Favourite roast")
    await page.get_by_label("New field's value").fill("Yirgacheffe")
    await page.get_by_role("button", name="Save").click()

    await expect(page.get_by_role("heading", level=1)).to_have_text("Мария Петрова")
    profile = page.get_by_role("table", name="Profile")
    await expect(profile).to_contain_text("Europe/Berlin")
    await expect(profile).to_contain_text("newsletter, vip")
    await expect(profile).to_contain_text("marketing: no")
    history = page.get_by_role("region", name="History").locator("li")
    # the injected clock's noon UTC, in the business's zone (Sofia)
    await expect(history.first).to_have_text(
        "2026-11-24 14:00 EET · sam changed name: Мария Иванова → Мария Петрова"
    )
    await expect(history).to_have_count(8)
    await expect(history.filter(has_text="caps_override")).to_contain_text(
        '(none) → {"marketing": {"per_week": 1}}'
    )
    await expect(history.filter(has_text="fields.city")).to_contain_text("София → (none)")
    with engine.connect() as conn:
        stored = profiles.get_id(conn, maria)
    assert stored.fields == {"favourite_roast": "Yirgacheffe"}
    assert (stored.birth_month, stored.birth_day, stored.birth_year) == (2, 29, None)


async def test_a_bad_field_is_refused_next_to_it_and_nothing_is_saved(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, maria: int
) -> None:
    await sign_in(page, site, "sam")
    await open_editor(page, site, maria)
    await page.get_by_label("Name", exact=True).fill("Мария Петрова")  # good, but not saved
    await page.get_by_label("Time zone").fill("EST")
    await page.get_by_label("relationship per day").fill("two")
    await page.get_by_role("button", name="Save").click()

    await expect(page.locator("#problem")).to_have_text("Nothing was saved: 2 fields to correct.")
    await expect(error_of(page, "timezone")).to_have_text(
        "'EST' is not an IANA time zone such as 'Europe/Sofia' or 'UTC'"
    )
    await expect(error_of(page, "caps.relationship.per_day")).to_have_text(
        "'two' is not a whole number, 0 or more"
    )
    await expect(page.get_by_label("Time zone")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Name", exact=True)).to_have_value("Мария Петрова")  # kept
    with engine.connect() as conn:
        assert profiles.get_id(conn, maria).name == "Мария Иванова"
        assert profiles.history(conn, maria) == []


async def test_another_customers_address_is_a_clear_error_naming_them(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, maria: int
) -> None:
    await sign_in(page, site, "sam")
    await open_editor(page, site, maria)
    await page.get_by_label("Email").fill("Ivan@Example.bg")
    await page.get_by_role("button", name="Save").click()
    with engine.connect() as conn:
        ivan = profiles.get(conn, "ivan@example.bg").id
        assert profiles.get_id(conn, maria).email == MARIA
    await expect(error_of(page, "email")).to_have_text(
        f"ivan@example.bg is already the address of customer #{ivan} (Иван Петров)"
    )


async def test_a_form_opened_before_a_colleague_saved_does_not_undo_their_change(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    clock: ManualClock,
    maria: int,
) -> None:
    await sign_in(page, site, "sam")
    await open_editor(page, site, maria)
    clock.advance(timedelta(minutes=2))
    with engine.begin() as conn:  # mila changes the language meanwhile
        mine = {**as_form(profiles.get_id(conn, maria), SOFIA), "locale": "en"}
        profiles.edit(conn, maria, edits.read_form(mine, SOFIA), "mila", clock.now())
    await page.get_by_label("Tags").fill("vip")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#problem")).to_contain_text("Someone else changed this customer")
    await expect(page.get_by_label("Tags")).to_have_value("vip")  # sam's entry is kept
    with engine.connect() as conn:
        assert profiles.get_id(conn, maria).tags == ("newsletter",)
    await page.get_by_label("Language").fill("en")  # sam takes mila's change in, and saves
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("table", name="Profile")).to_contain_text("vip")
    with engine.connect() as conn:
        stored = profiles.get_id(conn, maria)
    assert (stored.locale, stored.tags) == ("en", ("vip",))


async def test_an_admin_exports_the_customer_and_erases_them_after_typing_the_address(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, maria: int
) -> None:
    await sign_in(page, site, "ada")
    await page.goto(f"{site.url}/customers/{maria}")
    async with page.expect_download() as downloading:
        await page.get_by_role("link", name="Export (JSON)").click()
    download = await downloading.value
    assert download.suggested_filename == f"customer-{maria}.json"
    exported = json.loads(Path(await download.path()).read_text(encoding="utf-8"))
    assert exported["customer"]["email"] == MARIA
    assert exported["customer"]["fields"] == {"city": "София"}

    await page.get_by_role("link", name="Erase").click()
    await page.get_by_label("Type the customer's address").fill("ivan@example.bg")
    await page.get_by_role("button", name="Erase for good").click()
    await expect(page.locator("#problem")).to_contain_text("nothing was erased")
    with engine.connect() as conn:
        assert profiles.get_id(conn, maria).email == MARIA

    await page.get_by_label("Type the customer's address").fill(" Maria@Example.bg ")
    await page.get_by_role("button", name="Erase for good").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Customer #{maria} erased")
    await expect(page.locator("#erased")).to_contain_text("the values in the history")
    with engine.connect() as conn:
        forgotten = profiles.get_id(conn, maria)
        assert forgotten.suppressed_reason == profiles.ERASED_REASON
        assert forgotten.name == "" and profiles.is_erased(conn, MARIA)


async def test_support_sees_no_export_or_erase_and_cannot_reach_them(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, maria: int
) -> None:
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/customers/{maria}")
    await expect(page.get_by_role("link", name="Edit")).to_be_visible()
    await expect(page.get_by_role("link", name="Export (JSON)")).to_have_count(0)
    await expect(page.get_by_role("link", name="Erase")).to_have_count(0)
    for path in ("export.json", "erase"):
        response = await page.goto(f"{site.url}/customers/{maria}/{path}")
        assert response is not None and response.status == 403
    token = await page.locator('meta[name="csrf-token"]').get_attribute("content")
    posted = await page.request.post(
        f"{site.url}/customers/{maria}/erase", form={"csrf": token or "", "confirm": MARIA}
    )
    assert posted.status == 403
    with engine.connect() as conn:
        assert not profiles.is_erased(conn, MARIA)


async def test_marketing_sees_the_history_but_cannot_edit(
    page: Page, site: Site, staff: dict[str, str], maria: int
) -> None:
    await sign_in(page, site, "mia")
    await page.goto(f"{site.url}/customers/{maria}")
    await expect(page.get_by_role("region", name="History")).to_contain_text("No changes recorded.")
    await expect(page.get_by_role("link", name="Edit")).to_have_count(0)
    response = await page.goto(f"{site.url}/customers/{maria}/edit")
    assert response is not None and response.status == 403
