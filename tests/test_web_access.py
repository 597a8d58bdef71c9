"""The web app's doors: signing in, CSRF, customers' unsubscribe links, health and metrics.

Browser tests drive Debian's Chromium through Playwright against the app on loopback;
"any client" tests post with urllib, as a mailbox provider or an attacker's page would.
"""

from __future__ import annotations

import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import Engine

from mailer import customers, outbox, tokens
from mailer.clock import ManualClock
from mailer.config import Config
from mailer.models import Category
from mailer.outbox import NewMessage
from mailer.web.server import build as build_web
from tests.configs import shipped_config
from tests.conftest import PASSWORD, add_customers, sign_in
from tests.site import Site, served


def test_metrics_need_the_bearer_token_when_one_is_configured(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    env = {"MAILER_WEB__METRICS_TOKEN_ENV": "SCRAPE", "SCRAPE": "s3cret-scrape"}
    with served(build_web(shipped_config(tmp_path, env), engine, clock)) as running:
        assert running.get("/metrics")[0] == 403
        request = urllib.request.Request(running.url + "/metrics")
        request.add_header("Authorization", "Bearer s3cret-scrape")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert b"mailer_queue_due" in response.read()


def test_health_answers_without_signing_in(site: Site) -> None:
    assert site.get("/healthz") == (200, "ok\n")


def test_metrics_count_messages_by_status_and_the_queue_due(
    site: Site, engine: Engine, clock: ManualClock
) -> None:
    test_send = NewMessage("m:1", "maria@example.com", Category.TRANSACTIONAL, "birthday")
    outbox.enqueue(engine, [test_send], clock.now() - timedelta(minutes=1))
    status, body = site.get("/metrics")
    assert status == 200
    assert 'mailer_messages{status="queued"} 1.0' in body
    assert "mailer_queue_due 1.0" in body


async def test_a_person_signs_in_and_out(page: Page, site: Site, staff: dict[str, str]) -> None:
    await page.goto(site.url + "/")
    await expect(page).to_have_url(site.url + "/login?next=/")
    await sign_in(page, site, "sam")
    await expect(page.locator("form.signout")).to_contain_text("sam (support)")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(site.url + "/login")
    await page.goto(site.url + "/")
    await expect(page).to_have_url(site.url + "/login?next=/")


async def test_a_wrong_password_is_refused_and_repeated_failures_lock_for_a_while(
    page: Page, site: Site, staff: dict[str, str]
) -> None:
    for _ in range(5):
        await page.goto(site.url + "/login")
        await page.get_by_label("Name").fill("sam")
        await page.get_by_label("Password").fill("not the password")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_contain_text("do not match")
    await page.get_by_label("Password").fill(PASSWORD)  # right, but too late
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-ins")


def test_a_form_posted_without_its_csrf_token_is_refused(site: Site, staff: dict[str, str]) -> None:
    """What a hostile page could make a signed-in browser send: refused before anything."""
    status, body = site.post("/login", {"name": "sam", "password": PASSWORD})
    assert status == 403 and "expired" in body
    assert site.post("/logout", {})[0] == 403


async def test_a_form_posted_with_another_sessions_token_is_refused(
    page: Page, site: Site, staff: dict[str, str]
) -> None:
    await page.goto(site.url + "/login")
    await page.locator("input[name=csrf]").evaluate("input => input.value = 'forged'")
    await page.get_by_label("Name").fill("sam")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading")).to_have_text("Not for you")


@pytest.fixture
def known_customer(engine: Engine, clock: ManualClock, tmp_path: Path) -> int:
    """Мария, who gets newsletters; her id is what her links' tokens carry."""
    add_customers(
        engine, tmp_path, "email,name,locale\nmaria@example.com,Мария Иванова,bg\n", clock.now()
    )
    with engine.connect() as conn:
        return int(customers.get(conn, "maria@example.com")["id"])


def test_the_one_click_post_unsubscribes_at_once_without_a_page(
    site: Site, engine: Engine, cfg: Config, clock: ManualClock, known_customer: int
) -> None:
    """RFC 8058: the mailbox provider POSTs List-Unsubscribe=One-Click to the link."""
    token = tokens.sign(tokens.load_secret(cfg), known_customer)
    status, body = site.post(f"/unsubscribe/{token}", {"List-Unsubscribe": "One-Click"})
    assert (status, body) == (200, "Unsubscribed.\n")
    with engine.connect() as conn:
        assert customers.get(conn, "maria@example.com")["unsubscribed_at"] == clock.now()


def test_a_forged_or_altered_token_unsubscribes_nobody(
    site: Site, engine: Engine, cfg: Config, known_customer: int
) -> None:
    real = tokens.sign(tokens.load_secret(cfg), known_customer)
    forged = tokens.sign(b"someone else's key", known_customer)
    for token in (forged, real[:-2] + "xx", "1", "../admin"):
        status, _ = site.post(f"/unsubscribe/{token}", {"List-Unsubscribe": "One-Click"})
        assert status == 404
    with engine.connect() as conn:
        assert customers.get(conn, "maria@example.com")["unsubscribed_at"] is None


async def test_the_unsubscribe_page_has_one_button_and_preferences(
    page: Page, site: Site, engine: Engine, cfg: Config, known_customer: int
) -> None:
    token = tokens.sign(tokens.load_secret(cfg), known_customer)
    await page.goto(f"{site.url}/unsubscribe/{token}")
    await expect(page.get_by_text("maria@example.com")).to_be_visible()
    await page.get_by_label("Birthday greetings").uncheck()
    await page.get_by_label("Take a break").select_option("30")
    await page.get_by_role("button", name="Save my preferences").click()
    await expect(page.get_by_role("status")).to_have_text("Your preferences are saved.")
    with engine.connect() as conn:
        saved = customers.get(conn, "maria@example.com")
    assert saved["relationship_consent"] is False and saved["marketing_consent"] is True
    assert saved["pause_until"] is not None and saved["unsubscribed_at"] is None
    await page.get_by_role("button", name="Unsubscribe from everything").click()
    await expect(page.get_by_role("status")).to_contain_text("You are unsubscribed")
    with engine.connect() as conn:
        assert customers.get(conn, "maria@example.com")["unsubscribed_at"] is not None


def test_pages_tell_the_browser_to_run_only_the_apps_own_script(site: Site) -> None:
    with urllib.request.urlopen(site.url + "/login", timeout=10) as response:
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "img-src 'self' data:" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        cookie = response.headers["Set-Cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
