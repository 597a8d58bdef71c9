"""Support's desk: finding, reading and working inquiries, and a customer's whole story.

Inquiries are made the way the inbox makes them (a raw message through inbox.handle), the
newsletter history by queueing and claiming through the outbox under the shipped throttle;
browser tests drive Debian's Chromium through Playwright and assert what a person sees.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Page, expect
from pytest_playwright_asyncio import CreateContextCallback
from sqlalchemy import Engine

from mailer.core import moments
from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import profiles
from mailer.inbound import inquiries, intake, plain_words
from mailer.inbound.intake import AckPolicy
from mailer.inbound.parsing import parse
from mailer.outbound import outbox, throttle
from mailer.outbound.outbox import NewMessage, Outcome, Policy, Result
from mailer.store.models import InquiryStatus, OutboxStatus
from mailer.web.server import build as build_web
from tests.configs import shipped_config
from tests.conftest import add_customers, sign_in
from tests.site import Site, served

MARIA = "Мария Иванова <maria@example.com>"
ORDER_TEXT = "Здравейте, поръчка 1042 още не пристига."
HOSTILE = '<script>window.pwned=1</script>\n<img src=x onerror="window.pwned=1">'


def mail(message_id: str, subject: str, text: str, sender: str = MARIA) -> bytes:
    return (
        f"From: {sender}\r\nTo: support@northwind-roasters.example\r\n"
        f"Subject: {subject}\r\nMessage-ID: {message_id}\r\n"
        "Date: Tue, 24 Nov 2026 13:55:00 +0200\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{text}\r\n"
    ).encode()


def received(engine: Engine, cfg: Config, clock: ManualClock, raw: bytes) -> int:
    """As the inbox watcher takes a message in: logged, decided, acknowledged if due."""
    with engine.begin() as conn:
        logged = intake.handle(conn, parse(raw), clock.now(), AckPolicy.from_config(cfg))
    return logged.inquiry_id


@pytest.fixture
def maria(engine: Engine, clock: ManualClock, tmp_path: Path) -> int:
    add_customers(
        engine,
        tmp_path,
        "email,name,locale,timezone,tags\n"
        "maria@example.com,Мария Иванова,bg,Europe/Sofia,newsletter\n",
        clock.now() - timedelta(days=30),
    )
    with engine.connect() as conn:
        return int(profiles.get(conn, "maria@example.com").id)


@pytest.fixture
def order(engine: Engine, cfg: Config, clock: ManualClock, maria: int) -> int:
    """Мария asks about her order, and earlier about a grinder (acknowledged once)."""
    received(engine, cfg, clock, mail("<g1@mail.example>", "Grinder is noisy", "It squeaks."))
    clock.advance(timedelta(minutes=5))
    return received(engine, cfg, clock, mail("<o1@mail.example>", "Order 1042", ORDER_TEXT))


def status_of(engine: Engine, inquiry_id: int) -> str:
    with engine.connect() as conn:
        found = inquiries.get(conn, inquiry_id)
    assert found is not None
    return str(found.status)


# What a person sees ------------------------------------------------------------------------


async def test_support_finds_an_inquiry_by_search_reads_it_and_changes_its_status(
    page: Page, site: Site, staff: dict[str, str], order: int
) -> None:
    await sign_in(page, site, "sam")
    await expect(page).to_have_url(site.url + "/inquiries")
    rows = page.locator("#inquiries tbody tr")
    await expect(rows).to_have_count(2)
    await page.get_by_role("searchbox").fill("1042")  # htmx refreshes the table as she types
    await expect(rows).to_have_count(1)
    await expect(page).to_have_url(re.compile(r"q=1042"))
    await page.get_by_role("link", name="Order 1042").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Order 1042")
    await expect(page.locator("pre.body")).to_have_text(ORDER_TEXT)
    message = page.get_by_role("article", name=f"Message #{order}")
    await expect(message).to_contain_text("maria@example.com")
    await expect(message).to_contain_text(  # one acknowledgement per sender a week
        "Decision: a person writing again, not answered automatically: "
        "we already answered this sender recently"
    )
    await expect(message).to_contain_text("Acknowledgement: none was queued")
    await page.get_by_label("Status").select_option("open")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#timeline + ol")).to_contain_text(
        "sam changed the status: new → open"
    )
    await expect(page.get_by_role("heading", level=1).locator(".badge")).to_have_text("open")


async def test_the_acknowledgement_and_the_rules_that_fired_are_shown_with_the_message(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, order: int
) -> None:
    with engine.connect() as conn:
        (first,) = [i for i in inquiries.find(conn) if i.subject == "Grinder is noisy"]
        decided = inquiries.get(conn, order)
    assert decided is not None and decided.reasons
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries/{first.id}")
    message = page.get_by_role("article", name=f"Message #{first.id}")
    await expect(message).to_contain_text("Acknowledgement: queued")
    await expect(message).to_contain_text("to maria@example.com")
    await page.goto(f"{site.url}/inquiries/{order}")
    reasons = page.get_by_role("article", name=f"Message #{order}").locator("ul.reasons li")
    in_words = [plain_words.reason(r) for r in decided.reasons]
    sofia = ZoneInfo("Europe/Sofia")  # sam reads the business's zone; reasons are kept in UTC
    shown = [f"{r.words} ({moments.restated(r.detail, sofia)})" for r in in_words]
    await expect(reasons).to_have_text(shown)


async def test_a_stranger_claiming_an_inquiry_gets_one_of_their_own_that_says_which(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    order: int,
) -> None:
    """Support sees the claim in one line, with a link to merge by hand."""
    claim = mail(
        "<eve@mail.example>",
        f"Re: Order 1042 [#{order}]",
        "Ship it to me instead.",
        sender="Eve <eve@example.org>",
    )
    stranger = received(engine, cfg, clock, claim)
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries/{order}")
    await expect(page.get_by_role("article")).to_have_count(1)
    await expect(page.locator("#claimed")).to_have_count(0)
    await page.goto(f"{site.url}/inquiries/{stranger}")
    await expect(page.locator("#claimed")).to_have_text(
        f"This message claims to continue inquiry #{order} from another address."
    )
    await page.locator("#claimed").get_by_role("link").click()
    await expect(page).to_have_url(f"{site.url}/inquiries/{order}")


async def test_assigning_and_noting_are_recorded_with_who_did_it(
    page: Page, site: Site, staff: dict[str, str], order: int
) -> None:
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries/{order}")
    await page.get_by_label("Assign to").select_option("ada")
    await page.get_by_label("Internal note").fill("Called her: the courier lost it.")
    await page.get_by_role("button", name="Save").click()
    timeline = page.locator("#timeline + ol")
    await expect(timeline).to_contain_text("sam assigned it to ada")
    await expect(timeline).to_contain_text("sam noted:Called her: the courier lost it.")
    await page.get_by_label("Assign to").select_option("")
    await page.get_by_role("button", name="Save").click()
    await expect(timeline).to_contain_text("sam unassigned it")
    await page.goto(f"{site.url}/inquiries?q=1042")
    await expect(page.locator("#inquiries tbody tr")).to_have_count(1)
    await page.goto(f"{site.url}/inquiries/999999")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Not found")


async def test_customer_html_in_an_inquiry_is_shown_as_text_and_never_runs(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, cfg: Config, clock: ManualClock
) -> None:
    hostile = mail("<x1@mail.example>", "<b>Hi</b>", HOSTILE, sender="Eve <eve@example.com>")
    inquiry_id = received(engine, cfg, clock, hostile)
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries/{inquiry_id}")
    await expect(page.locator("pre.body")).to_have_text(HOSTILE)
    await expect(page.get_by_role("heading", level=1)).to_contain_text("<b>Hi</b>")
    assert await page.locator("main script, main img").count() == 0
    assert await page.evaluate("window.pwned") is None


async def test_a_message_that_could_not_be_handled_shows_its_error_and_source(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, clock: ManualClock
) -> None:
    source = b"From: ???\r\n\r\n<p>Broken \xff mail</p>"
    with engine.begin() as conn:
        failed = inquiries.log_failed(conn, source, "ValueError: no sender", clock.now())
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries?status=failed")
    await page.get_by_role("link", name=f"#{failed}").click()
    await expect(page.get_by_text("could not be handled: ValueError: no sender")).to_be_visible()
    await expect(page.locator("pre.body")).to_contain_text("<p>Broken \ufffd mail</p>")


async def test_the_customer_page_shows_a_throttled_newsletter_with_its_reason(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    maria: int,
    order: int,
) -> None:
    now = clock.now()
    news = [
        NewMessage(
            dedupe_key=f"news:{n}:{maria}",
            to_address="maria@example.com",
            category=Category.MARKETING,
            template="newsletter",
            customer_id=maria,
        )
        for n in (1, 2)
    ]
    outbox.enqueue(engine, news, now)
    rules = throttle.Rules.from_settings(cfg.settings.throttle)
    policy = Policy(
        rules=rules, fallback_zone=cfg.settings.business_hours.timezone, lease=timedelta(minutes=5)
    )
    claimed = outbox.claim(engine, now, 10, policy)
    sent = next(c for c in claimed if c.category == Category.MARKETING)
    outbox.record(
        engine,
        [
            Outcome(
                outbox_id=sent.id,
                result=Result.SENT,
                at=now,
                message_id="<n1@x>",
                subject="Новини",
            )
        ],
        outbox.leases(claimed),
    )
    with engine.connect() as conn:
        (deferred,) = outbox.find(conn, status=OutboxStatus.DEFERRED)
    assert "marketing cap 1 per day" in deferred["reason"]

    await sign_in(page, site, "sam")
    await page.get_by_role("link", name="Customers").click()
    await page.get_by_role("searchbox").fill("maria")
    await page.get_by_role("link", name="maria@example.com").click()
    row = page.locator("tr", has=page.get_by_text("deferred", exact=True))
    await expect(row).to_contain_text("newsletter")
    await expect(row).to_contain_text(
        moments.restated(deferred["reason"], ZoneInfo("Europe/Sofia"))
    )
    contact = page.get_by_role("table", name="Contact")
    sofia, stamp = ZoneInfo("Europe/Sofia"), "%Y-%m-%d %H:%M %Z"  # sam reads the business's zone
    await expect(contact).to_contain_text(
        f"{now.astimezone(sofia):{stamp}} · newsletter (marketing)"
    )
    next_news = f"{deferred['due_at'].astimezone(sofia):{stamp}}"
    await expect(contact.locator("tr", has_text="Next marketing")).to_contain_text(next_news)
    await expect(page.get_by_role("table", name="Profile")).to_contain_text("Europe/Sofia")
    await expect(page.locator("pre.body")).to_have_count(2)  # support reads what she wrote


async def test_marketing_is_refused_inquiries_and_sees_nothing_they_wrote_on_the_customer_page(
    page: Page, site: Site, staff: dict[str, str], maria: int, order: int
) -> None:
    await sign_in(page, site, "mia")
    for path in (f"/inquiries/{order}", "/inquiries"):
        response = await page.goto(site.url + path)
        assert response is not None and response.status == 403
        await expect(page.get_by_role("heading", level=1)).to_have_text("Not for you")
    await page.goto(f"{site.url}/customers/{maria}")
    await expect(page.get_by_role("cell", name=f"#{order}")).to_be_visible()  # that she wrote
    await expect(page.get_by_role("main")).not_to_contain_text("Order 1042")  # not what
    await expect(page.get_by_role("main")).not_to_contain_text("1042 още")
    await expect(page.get_by_role("main")).not_to_contain_text("squeaks")
    await expect(page.get_by_role("link", name=f"#{order}")).to_have_count(0)


async def test_marketing_reads_but_cannot_change_inquiries_where_the_config_allows(
    page: Page,
    staff: dict[str, str],
    engine: Engine,
    clock: ManualClock,
    tmp_path: Path,
    order: int,
) -> None:
    flag = {"MAILER_WEB__MARKETING_READS_INQUIRIES": "true"}
    (tmp_path / "reading").mkdir()
    reading = shipped_config(tmp_path / "reading", flag)
    with served(build_web(reading, engine, clock)) as site:
        await sign_in(page, site, "mia")
        await page.goto(f"{site.url}/inquiries/{order}")
        await expect(page.locator("pre.body")).to_have_text(ORDER_TEXT)
        await expect(page.get_by_role("button", name="Save")).to_have_count(0)
        await expect(page.get_by_role("button", name="Assign to me")).to_have_count(0)
        token = await page.locator('meta[name="csrf-token"]').get_attribute("content")
        posted = await page.request.post(
            f"{site.url}/inquiries/{order}/change", form={"csrf": token or "", "status": "closed"}
        )
        assert posted.status == 403
    assert status_of(engine, order) == InquiryStatus.NEW


async def test_the_search_works_without_javascript(
    new_context: CreateContextCallback, site: Site, staff: dict[str, str], order: int
) -> None:
    context = await new_context(java_script_enabled=False)
    page = await context.new_page()
    await sign_in(page, site, "sam")
    await page.get_by_role("searchbox").fill("grinder")
    await page.get_by_label("Status").select_option("acknowledged")
    await page.get_by_role("button", name="Search").click()
    await expect(page).to_have_url(re.compile(r"q=grinder&status=acknowledged"))
    await expect(page.locator("#inquiries tbody tr")).to_have_text(re.compile("Grinder is noisy"))


async def test_support_finds_a_customer_by_her_cyrillic_name_in_any_case_and_no_wildcards(
    page: Page,
    site: Site,
    staff: dict[str, str],
    maria: int,
    engine: Engine,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    (tmp_path / "more").mkdir()
    add_customers(
        engine, tmp_path / "more", "email,name\nbeans@example.com,100% Arabica\n", clock.now()
    )
    await sign_in(page, site, "sam")
    await page.get_by_role("link", name="Customers").click()
    maria_link = page.get_by_role("link", name="maria@example.com")
    beans_link = page.get_by_role("link", name="beans@example.com")
    for typed in ("ИВАНОВА", "иванова", "Мария"):
        await page.get_by_role("searchbox").fill(typed)
        await expect(maria_link).to_be_visible()
        await expect(beans_link).to_have_count(0)
    await page.get_by_role("searchbox").fill("%")
    await expect(beans_link).to_be_visible()
    await expect(maria_link).to_have_count(0)


async def test_control_characters_in_a_search_are_ignored_not_an_error(
    page: Page, site: Site, staff: dict[str, str], maria: int, order: int
) -> None:
    """What a crafted link could carry: a NUL byte, which neither database can search for."""
    await sign_in(page, site, "sam")
    for path, shown in (
        ("/inquiries?q=%00", "Order 1042"),
        ("/inquiries?q=Order%00%201042", "Order 1042"),
        ("/inquiries?q=%00%01Or", "Order 1042"),
        ("/customers?q=%00", "maria@example.com"),
        ("/customers?q=%D0%98%D0%92%00%D0%90%D0%9D", "maria@example.com"),  # "ИВ", NUL, "АН"  # noqa: RUF003
    ):
        response = await page.goto(site.url + path)
        assert response is not None and response.status == 200, path
        await expect(page.get_by_role("main")).to_contain_text(shown)


# What any client could send ----------------------------------------------------------------


def test_a_status_post_without_the_csrf_token_is_refused(
    site: Site, staff: dict[str, str], engine: Engine, order: int
) -> None:
    for action, fields in (
        ("change", {"status": "closed", "assignee": "sam", "note": "forged"}),
        ("mine", {}),
    ):
        status, body = site.post(f"/inquiries/{order}/{action}", fields)
        assert status == 403 and "expired" in body
    assert status_of(engine, order) == InquiryStatus.NEW
    with engine.connect() as conn:
        assert inquiries.events(conn, order) == []


async def test_a_signed_in_browser_cannot_be_made_to_post_without_the_token(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, order: int
) -> None:
    """What a hostile page could make sam's browser send: his cookie, but not his token."""
    await sign_in(page, site, "sam")
    posted = await page.request.post(
        f"{site.url}/inquiries/{order}/change", form={"status": "closed"}
    )
    assert posted.status == 403
    assert status_of(engine, order) == InquiryStatus.NEW


def test_signed_out_visitors_are_sent_to_sign_in(site: Site, order: int, maria: int) -> None:
    for path in ("/inquiries", f"/inquiries/{order}", "/customers", f"/customers/{maria}"):
        status, body = site.get(path)
        assert status == 200 and "Sign in" in body


# The list's queries ------------------------------------------------------------------------


def test_inquiry_pages_follow_each_other_both_ways_and_keep_the_filter(
    engine: Engine, cfg: Config, clock: ManualClock, maria: int
) -> None:
    ids = []
    for n in range(7):
        subject = f"Question {n}" + (" about 100%" if n % 2 else "")
        ids.append(received(engine, cfg, clock, mail(f"<p{n}@mail.example>", subject, "?")))
        if n != 3:  # two arrive in the same instant: the id breaks the tie
            clock.advance(timedelta(minutes=1))
    newest = list(reversed(ids))
    with engine.connect() as conn:
        first = inquiries.browse(conn, size=3)
        second = inquiries.browse(conn, before=first.older, size=3)
        third = inquiries.browse(conn, before=second.older, size=3)
        back = inquiries.browse(conn, after=second.newer, size=3)
        matching = inquiries.browse(conn, search="ABOUT 100%", size=2)
        more = inquiries.browse(conn, search="about 100%", before=matching.older, size=2)
        none = inquiries.browse(conn, search="100_", size=2)
    pages = [[r.id for r in p.rows] for p in (first, second, third)]
    assert pages == [newest[:3], newest[3:6], newest[6:]]
    assert (first.newer, third.older) == (None, None)
    assert [r.id for r in back.rows] == newest[:3] and back.newer is None
    assert [r.id for r in matching.rows + more.rows] == [ids[5], ids[3], ids[1]]
    assert none.rows == []
