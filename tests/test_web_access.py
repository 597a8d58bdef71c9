"""The web app's doors: signing in, CSRF, customers' unsubscribe links, health and metrics.

Browser tests drive Debian's Chromium through Playwright against the app on loopback;
"any client" tests post with urllib, as a mailbox provider or an attacker's page would.
"""

from __future__ import annotations

import asyncio
import http.client
import queue
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from ipaddress import ip_network
from pathlib import Path

import pytest
from playwright.async_api import Page, expect
from pytest_playwright_asyncio import CreateContextCallback
from sqlalchemy import Engine

from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import profiles, tokens
from mailer.outbound import outbox
from mailer.outbound.outbox import NewMessage
from mailer.web import server as web_server
from mailer.web.clients import client_of
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


def test_kept_alive_requests_do_not_wait_for_a_delayed_ack(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    """Sequential requests on one kept-alive connection, as a shop's HTTP client sends its
    API calls, served as ``mailer web`` serves them but on asyncio's own loop (the one that
    stalled): with Nagle's algorithm on, each answer's body waited for the client's delayed
    ACK, 40 ms a request whatever the app did."""
    app = build_web(shipped_config(tmp_path, {}), engine, clock)
    sock = web_server.listen("127.0.0.1:0")
    ready: queue.Queue[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = queue.Queue()

    async def main() -> None:
        stop = asyncio.Event()
        ready.put((asyncio.get_running_loop(), stop))
        await web_server.serve(app, sock, stop)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    loop, stop = ready.get(timeout=10)
    connection = http.client.HTTPConnection("127.0.0.1", sock.getsockname()[1], timeout=10)
    took = []
    try:
        for _ in range(20):
            started = time.perf_counter()
            connection.request("GET", "/healthz")
            assert connection.getresponse().read() == b"ok\n"
            took.append(time.perf_counter() - started)
    finally:
        connection.close()
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
    assert statistics.median(took) < 0.020, f"{statistics.median(took) * 1000:.0f} ms a request"


def test_metrics_count_messages_by_status_and_the_queue_due(
    site: Site, engine: Engine, clock: ManualClock
) -> None:
    test_send = NewMessage(
        dedupe_key="m:1",
        to_address="maria@example.com",
        category=Category.TRANSACTIONAL,
        template="birthday",
    )
    outbox.enqueue(engine, [test_send], clock.now() - timedelta(minutes=1))
    status, body = site.get("/metrics")
    assert status == 200
    assert 'mailer_messages{status="queued"} 1.0' in body
    assert "mailer_queue_due 1.0" in body


# Behind a reverse proxy -----------------------------------------------------------------------

FORWARDED = "X-Forwarded-For"
PROXIES = [ip_network("127.0.0.1"), ip_network("10.0.0.0/8")]


def test_the_client_is_the_right_most_address_no_trusted_proxy_added() -> None:
    assert client_of("127.0.0.1", ["203.0.113.7"], PROXIES) == ("203.0.113.7", True)
    forged = ["127.0.0.1, 198.51.100.1", "203.0.113.7, 10.1.2.3"]  # two headers, two proxies
    assert client_of("10.0.0.2", forged, PROXIES) == ("203.0.113.7", True)
    assert client_of("127.0.0.1", [], PROXIES) == ("127.0.0.1", True)  # forwarded, not local
    assert client_of("10.0.0.2", ["10.0.0.9"], PROXIES) == ("10.0.0.9", True)
    assert client_of("::ffff:10.0.0.2", [" 203.0.113.7 "], PROXIES) == ("203.0.113.7", True)
    assert client_of("198.51.100.1", ["127.0.0.1"], PROXIES) == ("198.51.100.1", False)
    assert client_of("127.0.0.1", ["203.0.113.7"], []) == ("127.0.0.1", False)


def test_forwarded_for_is_ignored_unless_proxies_are_trusted(site: Site) -> None:
    """The default: whoever opened the connection is the client, here this machine."""
    assert site.get("/metrics", {FORWARDED: "203.0.113.7"})[0] == 200


@pytest.fixture
def behind_proxy(engine: Engine, tmp_path: Path, clock: ManualClock) -> Iterator[Site]:
    """The app behind a proxy on this machine (the test's own requests come from it)."""
    proxied = shipped_config(tmp_path, {"MAILER_WEB__TRUSTED_PROXIES": '["127.0.0.1"]'})
    with served(build_web(proxied, engine, clock)) as running:
        yield running


def test_through_a_trusted_proxy_metrics_need_the_token_even_from_this_machine(
    behind_proxy: Site,
) -> None:
    assert behind_proxy.get("/metrics")[0] == 403  # a proxy that names no client
    assert behind_proxy.get("/metrics", {FORWARDED: "203.0.113.7"})[0] == 403
    assert behind_proxy.get("/metrics", {FORWARDED: "127.0.0.1"})[0] == 403
    assert behind_proxy.get("/healthz") == (200, "ok\n")


async def test_failures_through_a_proxy_lock_out_the_guessing_client_not_the_name(
    new_context: CreateContextCallback, behind_proxy: Site, staff: dict[str, str]
) -> None:
    """Five wrong passwords for sam from one address, each with a different forged
    X-Forwarded-For in front of what the proxy added: that address is locked out; sam,
    at his own desk, signs in."""
    guesser = await new_context()
    page = await guesser.new_page()
    for n in range(6):
        await guesser.set_extra_http_headers({FORWARDED: f"192.0.2.{n}, 203.0.113.7"})
        await page.goto(behind_proxy.url + "/login")
        await page.get_by_label("Name").fill("sam")
        await page.get_by_label("Password").fill("not the password" if n < 5 else PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        expected = "do not match" if n < 5 else "Too many failed sign-ins"
        await expect(page.get_by_role("alert")).to_contain_text(expected)
    sams_desk = await new_context(extra_http_headers={FORWARDED: "198.51.100.4"})
    sam = await sams_desk.new_page()
    await sign_in(sam, behind_proxy, "sam")
    await expect(sam.locator("form.signout")).to_contain_text("sam (support)")


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
        return int(profiles.get(conn, "maria@example.com").id)


def test_the_one_click_post_unsubscribes_at_once_without_a_page(
    site: Site, engine: Engine, cfg: Config, clock: ManualClock, known_customer: int
) -> None:
    """RFC 8058: the mailbox provider POSTs List-Unsubscribe=One-Click to the link."""
    token = tokens.sign(tokens.load_secret(cfg), known_customer)
    status, body = site.post(f"/unsubscribe/{token}", {"List-Unsubscribe": "One-Click"})
    assert (status, body) == (200, "Unsubscribed.\n")
    with engine.connect() as conn:
        assert profiles.get(conn, "maria@example.com").unsubscribed_at == clock.now()


def test_a_forged_or_altered_token_unsubscribes_nobody(
    site: Site, engine: Engine, cfg: Config, known_customer: int
) -> None:
    real = tokens.sign(tokens.load_secret(cfg), known_customer)
    forged = tokens.sign(b"someone else's key", known_customer)
    for token in (forged, real[:-2] + "xx", "1", "../admin"):
        status, _ = site.post(f"/unsubscribe/{token}", {"List-Unsubscribe": "One-Click"})
        assert status == 404
    with engine.connect() as conn:
        assert profiles.get(conn, "maria@example.com").unsubscribed_at is None


def test_pages_tell_the_browser_to_run_only_the_apps_own_script(site: Site) -> None:
    with urllib.request.urlopen(site.url + "/login", timeout=10) as response:
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "img-src 'self' data:" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        cookie = response.headers["Set-Cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
