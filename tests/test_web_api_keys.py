"""API keys in the browser, as an admin makes and revokes them and a shop's system then
calls the API with them over real HTTP; other staff can neither see nor use the page."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import Engine

from mailer.api import keys
from mailer.core.clock import ManualClock
from mailer.core.moments import absolute
from mailer.staff import users
from tests.conftest import HEADER, add_customers, sign_in
from tests.site import Site

MARIA = "maria@example.bg"
JAKARTA = ZoneInfo("Asia/Jakarta")  # ada's own zone, not the business's (Sofia)


@pytest.fixture
def maria(engine: Engine, tmp_path: Path, clock: ManualClock) -> None:
    add_customers(engine, tmp_path, HEADER + f"{MARIA},Мария,bg,,,,yes,yes,\n", clock.now())


async def test_an_admin_makes_a_key_sees_it_once_and_revoking_it_locks_the_shop_out(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    clock: ManualClock,
    maria: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailer")
    with engine.begin() as conn:
        users.change(conn, "ada", timezone="Asia/Jakarta")
    await sign_in(page, site, "ada")
    await (
        page.get_by_role("navigation", name="Sections").get_by_role("link", name="API keys").click()
    )
    await page.get_by_label("Name (the system that will use it)").fill("shop")
    await page.get_by_role("button", name="Create key").click()  # no scope ticked
    await expect(page.locator("#problem")).to_have_text("No key was made: tick at least one scope")
    await page.get_by_label("customers:read").check()
    await page.get_by_label("Requests a minute").fill("99999999999")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.locator("#problem")).to_contain_text("at most 1,000,000 requests a minute")
    await page.get_by_label("Requests a minute").fill("")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.get_by_role("heading", name="Key shop is made")).to_be_visible()
    secret = await page.locator("#new-key").input_value()
    assert secret.startswith("mlr_") and secret not in page.url
    row = page.locator("tr", has_text="shop")
    await expect(row).to_contain_text(secret[: keys.PREFIX_LENGTH] + "…")
    await expect(row).to_contain_text("customers:read")
    await expect(row.locator(".last-used")).to_have_text("never")

    shop = {"Authorization": f"Bearer {secret}"}
    clock.advance(timedelta(minutes=5))
    found = site.call("GET", f"/api/v1/customers/{MARIA}", headers=shop)
    assert found.status == 200 and found.json()["email"] == MARIA
    used = absolute(clock.now(), JAKARTA)
    assert used.endswith(" WIB")
    await page.goto(site.url + "/api-keys")
    await expect(row.locator(".last-used")).to_have_text(used)
    assert secret not in await page.content()  # shown once, never again

    await row.get_by_role("link", name="Revoke…").click()
    await expect(page.get_by_role("heading")).to_have_text("Revoke the key shop")
    assert site.call("GET", f"/api/v1/customers/{MARIA}", headers=shop).status == 200  # asked
    await page.get_by_role("button", name="Revoke shop").click()
    await expect(page.get_by_role("status")).to_contain_text("is revoked")
    await expect(row).to_contain_text(absolute(clock.now(), JAKARTA))
    await expect(row.get_by_role("link", name="Revoke…")).to_have_count(0)
    refused = site.call("GET", f"/api/v1/customers/{MARIA}", headers=shop)
    assert refused.status == 401 and MARIA not in refused.body.decode()
    assert secret not in caplog.text


async def test_other_staff_can_neither_see_nor_use_the_keys_page(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, clock: ManualClock
) -> None:
    with engine.begin() as conn:
        kept, _ = keys.create(
            conn, "shop", [keys.Scope.SEND], rate_per_minute=None, created_by="ada", now=clock.now()
        )
    await sign_in(page, site, "sam")
    nav = page.get_by_role("navigation", name="Sections")
    await expect(nav.get_by_role("link", name="Customers")).to_be_visible()
    await expect(nav.get_by_role("link", name="API keys")).to_have_count(0)
    for path in ("/api-keys", f"/api-keys/{kept.id}/revoke"):
        response = await page.goto(site.url + path)
        assert response is not None and response.status == 403, path
    token = await page.locator("meta[name=csrf-token]").get_attribute("content")
    assert token
    made = await page.request.post(
        site.url + "/api-keys", form={"csrf": token, "name": "mine", "scope": "send"}
    )
    revoked = await page.request.post(
        site.url + f"/api-keys/{kept.id}/revoke", form={"csrf": token}
    )
    assert (made.status, revoked.status) == (403, 403)
    with engine.connect() as conn:
        assert [(k.name, k.revoked_at) for k in keys.find(conn)] == [("shop", None)]
