"""The customer's page as one timeline, logging a call from it, and the customer list by how
long since we last spoke; in Debian's Chromium, on SQLite and PostgreSQL. Time moves only by
the injected clock."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from playwright.async_api import Page, expect
from sqlalchemy import Engine

from mailer.core.clock import ManualClock
from mailer.customers import contacts, events, followups, profiles
from mailer.customers.contacts import NewContact
from mailer.inbound import inquiries
from mailer.inbound.parsing import parse
from mailer.store.models import InquiryStatus
from tests.conftest import add_customers, sign_in
from tests.site import Site
from tests.test_timeline import sent
from tests.test_web_desk import maria, order  # noqa: F401  (fixtures)

STAMP = "%Y-%m-%d %H:%M %Z"
SOFIA = ZoneInfo("Europe/Sofia")  # the business's zone: sam has none of his own


async def test_support_logs_a_call_and_sees_it_beside_the_inquiry_and_the_mail_we_sent(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    clock: ManualClock,
    maria: int,  # noqa: F811
    order: int,  # noqa: F811
) -> None:
    sent(engine, maria, "news:1", clock.now() - timedelta(days=2))
    clock.advance(timedelta(hours=1))
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/customers/{maria}")
    await page.get_by_text("Log a call, meeting or note").click()
    await page.get_by_label("Kind").select_option("call")
    await page.get_by_label("Direction").select_option("out")
    await page.get_by_label("Minutes (calls)").fill("12")
    await page.get_by_label("Outcome").fill("agreed a demo")
    await page.get_by_label("Note", exact=True).fill("<b>Prefers</b> mornings")
    await page.get_by_label("Follow up in").fill("3d")
    await page.get_by_role("button", name="Log it").click()
    await expect(page).to_have_url(f"{site.url}/customers/{maria}#timeline")

    rows = page.get_by_role("table", name="Timeline").locator("tbody tr")
    due = clock.now() + timedelta(days=3)
    await expect(rows.nth(0)).to_contain_text(f"Follow-up set for {due.astimezone(SOFIA):{STAMP}}")
    await expect(rows.nth(0)).to_contain_text("after the call: <b>Prefers</b> mornings")
    with engine.connect() as conn:
        (reminder,) = followups.find(conn, assignee="sam")
        logged = contacts.of_customer(conn, maria)
    assert reminder["contact_id"] == logged[0]["id"]  # it remembers the call it came from
    rows = rows.filter(has_not_text="Follow-up set for")
    await expect(rows.nth(0)).to_contain_text("Call: agreed a demo")
    await expect(rows.nth(0)).to_contain_text(f"{clock.now().astimezone(SOFIA):{STAMP}}")
    await expect(rows.nth(0)).to_contain_text("sam")
    await expect(rows.nth(0)).to_contain_text("12 min.")
    await expect(rows.nth(0).locator("pre.note")).to_have_text("<b>Prefers</b> mornings")
    await expect(rows.filter(has_text="Wrote: Order 1042")).to_have_count(1)
    await expect(rows.filter(has_text="Wrote: Grinder is noisy")).to_have_count(1)
    await expect(rows.filter(has_text="Mail sent: newsletter (marketing)")).to_have_count(1)
    contact = page.get_by_role("table", name="Contact")
    reached = contact.locator("tr", has_text="We last reached them")
    await expect(reached).to_contain_text(f"{clock.now().astimezone(SOFIA):{STAMP}} · by call")
    heard = contact.locator("tr", has_text="They last reached us")
    await expect(heard).to_contain_text("by email")


async def test_a_contact_that_makes_no_sense_is_refused_with_the_reason(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    maria: int,  # noqa: F811
) -> None:
    await sign_in(page, site, "ada")  # admin may do what support does
    await page.goto(f"{site.url}/customers/{maria}")
    await page.get_by_text("Log a call, meeting or note").click()
    await page.get_by_label("Kind").select_option("note")
    await page.get_by_label("Direction").select_option("in")
    await page.get_by_label("Note", exact=True).fill("x")
    await page.get_by_role("button", name="Log it").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "Nothing was logged: a note has no direction: leave it out"
    )
    note = page.locator("textarea[name=note]")  # its label's name now holds what is typed
    await expect(note).to_have_value("x")  # the form is shown again, with what was typed
    await page.get_by_label("Kind").select_option("call")
    await page.get_by_label("Direction").select_option("out")
    await note.fill("Long talk about the grinder's warranty")
    for wrong, why in (("next week", "is not a due time"), ("0001-01-01", "not between the years")):
        await page.get_by_label("Follow up in").fill(wrong)
        await page.get_by_role("button", name="Log it").click()
        await expect(page.get_by_role("alert")).to_contain_text(why)
        await expect(note).to_have_value("Long talk about the grinder's warranty")
        await expect(page.get_by_label("Kind")).to_have_value("call")
    with engine.connect() as conn:
        assert contacts.last_of(conn, maria) == {"out": None, "in": None}


async def test_numbers_out_of_range_and_forged_tokens_are_answered_not_crashed(
    page: Page,
    site: Site,
    staff: dict[str, str],
    maria: int,  # noqa: F811
) -> None:
    """Ids, counts and cursors too large for a database or a calendar, and a CSRF token
    with characters beyond ASCII, each as a hand-edited address or a forged post sends it."""
    await sign_in(page, site, "ada")
    huge = "9" * 20
    for path, status in (
        (f"/customers/{huge}", 404),
        ("/customers/3000000000", 404),  # past an id column (int4 on PostgreSQL)
        (f"/customers/{huge}/edit", 404),
        ("/customers?quiet=800000", 400),
        (f"/customers/{maria}?before=253402300800000000.contact.1", 200),  # not a cursor of ours
    ):
        answered = await page.request.get(site.url + path)
        assert answered.status == status, path
    forged = await page.request.post(
        f"{site.url}/customers/{maria}/contacts", form={"csrf": "é", "kind": "note", "note": "x"}
    )
    assert forged.status == 403 and "This form has expired" in await forged.text()
    token = await page.locator('meta[name="csrf-token"]').get_attribute("content")
    filed = await page.request.post(
        f"{site.url}/customers/{maria}/contacts",
        multipart={
            "csrf": token or "",
            "kind": "note",
            "note": {"name": "n.txt", "mimeType": "text/plain", "buffer": b"x"},
        },
    )
    assert filed.status == 400 and "takes text only" in await filed.text()


async def test_marketing_sees_the_timeline_but_may_not_log_contacts(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    maria: int,  # noqa: F811
    order: int,  # noqa: F811
) -> None:
    await sign_in(page, site, "mia")
    await page.goto(f"{site.url}/customers/{maria}")
    rows = page.get_by_role("table", name="Timeline").locator("tbody tr")
    await expect(rows.filter(has_text="Wrote to support")).to_have_count(2)
    await expect(page.get_by_text("Log a call, meeting or note")).to_have_count(0)
    token = await page.locator('meta[name="csrf-token"]').get_attribute("content")
    posted = await page.request.post(
        f"{site.url}/customers/{maria}/contacts",
        form={"csrf": token or "", "kind": "note", "note": "forged"},
    )
    assert posted.status == 403


def test_a_contact_post_without_the_csrf_token_is_refused(
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    maria: int,  # noqa: F811
) -> None:
    status, body = site.post(f"/customers/{maria}/contacts", {"kind": "note", "note": "forged"})
    assert status == 403 and "expired" in body
    with engine.connect() as conn:
        assert conn.execute(contacts.CONTACTS.select()).all() == []


async def test_the_customer_list_sorts_by_last_contact_and_finds_who_we_have_not_spoken_to(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    now = clock.now()
    names = ("ana", "boris", "vera", "zoe")
    rows = "".join(f"{n}@example.com,{n.title()}\n" for n in names)
    add_customers(engine, tmp_path, "email,name\n" + rows, now - timedelta(days=400))
    with engine.begin() as conn:
        ids = {n: int(profiles.get(conn, f"{n}@example.com").id) for n in names}
        for name, days, way in (("ana", 200, "out"), ("boris", 10, "in"), ("vera", 95, "out")):
            call = NewContact(kind="call", direction=way, at=now - timedelta(days=days), by="sam")
            contacts.log(conn, ids[name], call, now)
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/customers")
    emails = page.locator("#customers tbody tr td:first-child")
    await expect(emails).to_have_text([f"{n}@example.com" for n in names])
    await page.get_by_role("link", name="Sort by last contact").click()
    await expect(emails).to_have_text([f"{n}@example.com" for n in ("boris", "vera", "ana", "zoe")])
    boris = page.locator("#customers tbody tr", has_text="boris@")
    await expect(boris.locator("td.last-contact")).to_contain_text("← 10 days ago · call")
    await page.get_by_role("link", name="Sort by last contact").click()
    await expect(page).to_have_url(re.compile(r"sort=quiet"))
    await expect(emails).to_have_text([f"{n}@example.com" for n in ("zoe", "ana", "vera", "boris")])
    await page.get_by_label("Not spoken to in").fill("100")
    await page.get_by_role("button", name="Search").click()
    await expect(emails).to_have_text(["zoe@example.com", "ana@example.com"])
    await expect(page).to_have_url(re.compile(r"quiet=100.*sort=quiet|sort=quiet.*quiet=100"))


async def test_a_long_timeline_pages_back_to_its_oldest_entry(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    clock: ManualClock,
    maria: int,  # noqa: F811
) -> None:
    now = clock.now()
    with engine.begin() as conn:
        for n in range(55):
            at = now - timedelta(hours=n)
            note = NewContact(kind="note", direction=None, at=at, by="sam", note=f"note {n}")
            contacts.log(conn, maria, note, now)
    await sign_in(page, site, "mia")
    await page.goto(f"{site.url}/customers/{maria}")
    notes = page.get_by_role("table", name="Timeline").locator("pre.note")
    await expect(notes).to_have_count(50)
    await expect(notes.first).to_have_text("note 0")
    await page.get_by_role("link", name="Older →").click()
    await expect(notes).to_have_text([f"note {n}" for n in range(50, 55)])
    await page.get_by_role("link", name="← Latest").click()
    await expect(notes.first).to_have_text("note 0")


def asks(sender: str, message_id: str, *, reply_to: str = "") -> bytes:
    threading = f"In-Reply-To: {reply_to}\r\n" if reply_to else ""
    return (
        f"From: {sender}\r\nTo: support@northwind-roasters.example\r\nSubject: Grinder\r\n"
        f"Message-ID: {message_id}\r\n{threading}\r\nIt stopped working.\r\n"
    ).encode()


async def test_the_list_finds_customers_who_wrote_and_were_never_answered_by_a_person(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    now = clock.now()
    names = ("ana", "boris", "vera", "zoe")
    rows = "".join(f"{n}@example.com,{n.title()}\n" for n in names)
    add_customers(engine, tmp_path, "email,name\n" + rows, now - timedelta(days=30))
    with engine.begin() as conn:
        logged = {
            n: inquiries.log(conn, parse(asks(f"{n}@example.com", f"<{n}@mail.example>")), now)
            for n in ("ana", "boris", "vera")
        }
        for name in logged:  # what the watcher decides for a person's mail
            inquiries.record_decision(
                conn, logged[name].inquiry_id, status="new", decision="inquiry", reasons=[]
            )
        inquiries.record_reply(conn, logged["boris"].inquiry_id, "On its way.", "sam", now)
        inquiries.set_status(conn, logged["vera"].inquiry_id, InquiryStatus.ANSWERED)  # by phone
        # ana wrote twice in one conversation and nobody answered either; zoe never wrote
        again = asks("ana@example.com", "<ana2@x>", reply_to="<ana@mail.example>")
        inquiries.log(conn, parse(again), now)
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/customers")
    await page.get_by_label("Wrote and never answered by a person").check()
    await page.get_by_role("button", name="Search").click()
    emails = page.locator("#customers tbody tr td:first-child")
    await expect(emails).to_have_text(["ana@example.com"])
    await expect(page).to_have_url(re.compile(r"unanswered=1"))


async def test_support_sees_what_the_shop_said_the_customer_did(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    clock: ManualClock,
    maria: int,  # noqa: F811
) -> None:
    left = events.Draft(
        email="maria@example.com",
        name="cart_abandoned",
        occurred_at=clock.now() - timedelta(minutes=10),
        payload={"items": 2, "total": "31.80 EUR"},
    )
    with engine.begin() as conn:
        events.record(conn, [left], clock.now(), "api:shop")
    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/customers/{maria}")
    row = page.locator("table[aria-label=Timeline] tbody tr").filter(has_text="cart_abandoned")
    await expect(row).to_contain_text("Event: cart_abandoned")
    await expect(row).to_contain_text("← us · shop")
    await expect(row).to_contain_text('"total": "31.80 EUR"')
    await expect(row).to_contain_text("api:shop")
