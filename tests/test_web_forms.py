"""The forms a company's website posts to: an inquiry asked on a real page in Chromium,
logged from the web and acknowledged by mail at an SMTP server like any inquiry; a
newsletter sign-up that gets nothing until the customer confirms from their mailbox; and
what keeps robots and floods out (honeypot, limits per client and per address, sizes,
CORS). On SQLite and PostgreSQL."""

from __future__ import annotations

import http.client
import http.server
import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import Engine, func, select

from mailer import daemon
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import profiles, tokens
from mailer.customers.profiles import CUSTOMERS
from mailer.inbound import inquiries, language
from mailer.inbound.inquiries import INQUIRIES
from mailer.outbound.outbox import OUTBOX
from mailer.outbound.smtp import SmtpTarget
from mailer.scheduling import firing
from mailer.scheduling.schedules import NewsletterSchedule
from mailer.web.form_fields import FormProblem, allowed_origin, is_robot, read_inquiry
from mailer.web.server import build as build_web
from tests.configs import shipped_config
from tests.conftest import FIRING, sign_in
from tests.site import Reply, Site
from tests.smtp_sink import Received, Sink, listening

WEBSITE = "https://northwind-roasters.example"  # the one origin [forms] cors_origins lists
DECEMBER_1 = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)  # 09:00 in Sofia
NEWSLETTER = NewsletterSchedule(
    template="newsletter",
    cron="0 9 1 * *",
    timezone="Europe/Sofia",
    params={"headline": "December", "intro": "News."},
)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    """The shipped config, its forms open to the company's website, with small limits."""
    return shipped_config(
        tmp_path,
        {
            "MAILER_WEB__BASE_URL": "https://mail.northwind-roasters.example",
            "MAILER_FORMS__CORS_ORIGINS": f'["{WEBSITE}"]',
            "MAILER_FORMS__PER_ADDRESS_PER_HOUR": "3",
            "MAILER_FORMS__PER_IP_PER_HOUR": "6",
            "MAILER_FORMS__MAX_MESSAGE_CHARS": "2000",
        },
    )


def snippet(site: Site) -> str:
    """The inquiry form as the README gives it, pointed at this app."""
    return f"""<!DOCTYPE html><html><head><title>Contact us</title></head><body>
<form method="post" action="{site.url}/forms/inquiry" accept-charset="utf-8">
  <label>Your e-mail <input type="email" name="email" required></label>
  <label>Your name <input name="name"></label>
  <label>Subject <input name="subject"></label>
  <label>Message <textarea name="message" required></textarea></label>
  <input type="hidden" name="locale" value="bg">
  <div style="position:absolute;left:-10000px" aria-hidden="true">
    <input name="website" tabindex="-1" autocomplete="off">
  </div>
  <button type="submit">Send</button>
</form></body></html>"""


@pytest.fixture
def website(site: Site, tmp_path: Path) -> Iterator[str]:
    """The company's contact page, served from another loopback port than mailer's."""
    folder = tmp_path / "website"
    folder.mkdir()
    (folder / "contact.html").write_text(snippet(site), encoding="utf-8")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/contact.html"
    finally:
        server.shutdown()
        server.server_close()


def post(
    site: Site,
    path: str,
    fields: dict[str, str] | None = None,
    *,
    as_json: bool = False,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request as a website's visitor or script sends it, redirects not followed."""
    body = None
    if fields is not None:
        body = json.dumps(fields).encode() if as_json else urlencode(fields).encode()
    kind = "application/json" if as_json else "application/x-www-form-urlencoded"
    sent = {"Content-Type": kind} if body is not None else {}
    connection = http.client.HTTPConnection(urlsplit(site.url).netloc, timeout=10)
    try:
        connection.request(method, path, body=body, headers=sent | (headers or {}))
        response = connection.getresponse()
        answer = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, answer, response.read())
    finally:
        connection.close()


async def deliver(cfg: Config, engine: Engine, clock: ManualClock) -> list[Received]:
    """Everything due, through the delivery workers to an SMTP server."""
    sink = Sink()
    async with listening(sink) as port:
        target = SmtpTarget(host="127.0.0.1", port=port)
        await daemon.build_delivery(cfg, engine, clock, target).deliver_due()
    return sink.received


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def counts(engine: Engine) -> tuple[int, int, int]:
    """Inquiries, customers and queued messages: what a post could have left behind."""
    with engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (INQUIRIES, CUSTOMERS, OUTBOX)
        )


async def test_an_inquiry_from_the_website_is_logged_acknowledged_and_answered_by_mail(
    page: Page,
    site: Site,
    website: str,
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    staff: dict[str, str],
) -> None:
    await page.goto(website)
    await page.get_by_label("Your e-mail").fill("Maria@Example.bg")
    await page.get_by_label("Your name").fill("Мария Иванова")
    await page.get_by_label("Subject").fill("Мелачката скърца")
    await page.get_by_label("Message").fill("Здравейте, мелачката ми скърца. <b>Помощ</b>")
    await page.get_by_role("button", name="Send").click()

    await page.wait_for_url(re.compile(r"/forms/thanks/inquiry\?lang=bg$"))
    await expect(page.get_by_role("heading")).to_have_text(
        "Благодарим Ви, съобщението Ви пристигна"
    )
    with engine.connect() as conn:
        (listed,) = inquiries.find(conn)
        customer = profiles.get(conn, "maria@example.bg")
    assert listed.channel == "web" and listed.customer_id == customer.id
    assert (listed.sender, listed.subject) == ("maria@example.bg", "Мелачката скърца")
    assert customer.locale == "bg" and not customer.marketing_consent  # asking is no consent

    (ack,) = await deliver(cfg, engine, clock)
    assert ack.rcpt_tos == ["maria@example.bg"]
    assert ack.message["Subject"] == f"Получихме съобщението Ви [#{listed.id}]"
    assert ack.message["Auto-Submitted"] == "auto-replied"

    await sign_in(page, site, "sam")
    await page.goto(f"{site.url}/inquiries/{listed.id}")
    await expect(page.locator("#channel")).to_have_text("through the website's form")
    await expect(page.locator("pre.body")).to_have_text(
        "Здравейте, мелачката ми скърца. <b>Помощ</b>"
    )
    editor = page.get_by_label("Your reply")
    await editor.press("Control+Home")
    await editor.type("Почистете я.")
    await page.get_by_role("button", name="Send reply").click()
    await expect(page.locator("#timeline + ol")).to_contain_text("sam replied to the customer")
    (reply,) = await deliver(cfg, engine, clock)
    assert reply.rcpt_tos == ["maria@example.bg"]
    assert f"[#{listed.id}]" in reply.message["Subject"]
    assert text_of(reply.message).startswith("Почистете я.")


async def test_a_sign_up_gets_marketing_only_after_confirming_from_the_mail(
    page: Page, site: Site, engine: Engine, cfg: Config, clock: ManualClock
) -> None:
    clock.set(DECEMBER_1)
    signed_up = post(site, "/forms/subscribe", {"email": "ana@example.com", "name": "Ana Cruz"})
    assert signed_up.status == 303
    assert signed_up.headers.get("location") == "/forms/thanks/subscribe?lang=en"
    firing.fire_due(engine, {"news": NEWSLETTER}, clock.now(), FIRING)

    (confirmation,) = [
        r for r in await deliver(cfg, engine, clock) if r.rcpt_tos == ["ana@example.com"]
    ]
    assert (
        confirmation.message["Subject"]
        == "Please confirm your subscription to Northwind Coffee Roasters"
    )
    with engine.connect() as conn:
        ana = profiles.get(conn, "ana@example.com")
        newsletter = conn.execute(
            select(OUTBOX.c.status, OUTBOX.c.reason).where(
                OUTBOX.c.customer_id == ana.id, OUTBOX.c.template == "newsletter"
            )
        ).one()
    assert not ana.marketing_consent
    assert newsletter.status != "sent" and "marketing" in str(newsletter.reason)

    link = re.search(r"https://\S+/forms/confirm/\S+", text_of(confirmation.message))
    assert link is not None
    await page.goto(site.url + urlsplit(link.group(0)).path)
    await expect(page.get_by_role("heading")).to_have_text("Confirm your subscription")
    with engine.connect() as conn:
        assert not profiles.get(conn, "ana@example.com").marketing_consent  # opening is not yet
    await page.get_by_role("button", name="Yes, subscribe me").click()
    await expect(page.get_by_role("heading")).to_have_text("You are subscribed. Thank you!")

    with engine.connect() as conn:
        row = conn.execute(select(CUSTOMERS).where(CUSTOMERS.c.id == ana.id)).mappings().one()
    assert row["marketing_consent"] and row["consent_source"] == "web form"
    assert row["consent_ip"] == "127.0.0.1" and row["consent_at"] == DECEMBER_1

    again = post(site, "/forms/subscribe", {"email": "ana@example.com"}, as_json=True)
    stranger = post(site, "/forms/subscribe", {"email": "new@example.com"}, as_json=True)
    assert (again.status, stranger.status) == (202, 202)
    clock.set(datetime(2027, 1, 1, 7, 0, tzinfo=UTC))
    firing.fire_due(engine, {"news": NEWSLETTER}, clock.now(), FIRING)
    to_ana = [
        r.message for r in await deliver(cfg, engine, clock) if r.rcpt_tos == ["ana@example.com"]
    ]
    assert [m["Subject"] for m in to_ana if "confirm" in m["Subject"]] == [], "no second mail"
    assert len(to_ana) == 1 and to_ana[0]["List-Unsubscribe"], "the January newsletter"


def test_a_confirmation_link_past_its_week_or_forged_confirms_nothing(
    site: Site, engine: Engine, cfg: Config, clock: ManualClock
) -> None:
    post(site, "/forms/subscribe", {"email": "ana@example.com"})
    with engine.connect() as conn:
        ana = profiles.get(conn, "ana@example.com")
    secret = tokens.load_secret(cfg)
    late = tokens.sign_confirmation(secret, ana.id, clock.now() + timedelta(days=7))
    clock.advance(timedelta(days=7, seconds=1))
    status, page = site.get(f"/forms/confirm/{late}")
    assert status == 410 and "This link has expired" in page and "Sign up again" in page
    assert post(site, f"/forms/confirm/{late}", {}).status == 410
    assert post(site, f"/forms/confirm/{tokens.sign(secret, ana.id)}", {}).status == 404
    with engine.connect() as conn:
        assert not profiles.get(conn, "ana@example.com").marketing_consent


def test_a_robot_filling_the_hidden_field_is_thanked_and_nothing_is_kept(
    site: Site, engine: Engine
) -> None:
    before = counts(engine)
    fields = {"email": "bot@example.com", "message": "Buy now", "website": "http://spam.example"}
    html = post(site, "/forms/inquiry", fields)
    script = post(site, "/forms/subscribe", fields, as_json=True)
    assert (html.status, script.status) == (303, 202)
    assert html.headers.get("location", "").startswith("/forms/thanks/inquiry")
    assert counts(engine) == before


async def test_a_form_that_says_no_language_is_answered_in_the_one_written(
    site: Site, engine: Engine, cfg: Config, clock: ManualClock
) -> None:
    fields = {
        "email": "jose@example.ph",
        "subject": "Order 1042",
        "message": "Magandang araw po. Hindi pa po dumarating ang order ko na kape. "
        "Pwede po bang pakitingnan kung nasaan na?",
    }
    assert post(site, "/forms/inquiry", fields, as_json=True).status == 202
    with engine.connect() as conn:
        assert profiles.get(conn, "jose@example.ph").locale == "tl"
    (ack,) = await deliver(cfg, engine, clock)
    assert ack.message["Subject"].startswith("Natanggap namin ang inyong mensahe [#")


def test_the_language_model_is_ready_before_the_first_post(
    cfg: Config, engine: Engine, clock: ManualClock
) -> None:
    """Loading it takes about a second; the first new sender's post does not wait for it."""
    language._identifier.cache_clear()
    build_web(cfg, engine, clock)
    assert language._identifier.cache_info().currsize == 1


def test_posts_beyond_the_limits_per_address_and_per_client_are_refused_for_the_hour(
    site: Site, clock: ManualClock
) -> None:
    fields = {"email": "maria@example.bg", "message": "Hello?"}
    statuses = [post(site, "/forms/inquiry", fields, as_json=True).status for _ in range(4)]
    assert statuses == [202, 202, 202, 429]
    refused = post(site, "/forms/inquiry", fields, as_json=True)
    assert 0 < int(refused.headers.get("retry-after", "0")) <= 3600
    # five posts from this client so far, refused ones too; six an hour are allowed
    others = [{"email": f"p{i}@example.com"} for i in range(2)]
    assert [post(site, "/forms/subscribe", f).status for f in others] == [303, 429]
    clock.advance(timedelta(hours=1))
    assert post(site, "/forms/inquiry", fields, as_json=True).status == 202


def test_only_the_listed_website_may_post_from_its_scripts(site: Site) -> None:
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    allowed = post(site, "/forms/inquiry", method="OPTIONS", headers={"Origin": WEBSITE} | ask)
    assert allowed.status == 204
    assert allowed.headers.get("access-control-allow-origin") == WEBSITE
    assert "POST" in allowed.headers.get("access-control-allow-methods", "")
    evil = post(
        site, "/forms/subscribe", method="OPTIONS", headers={"Origin": "https://evil.example"} | ask
    )
    assert evil.status == 403 and evil.headers.get("access-control-allow-origin") is None

    fields = {"email": "ana@example.com"}
    from_site = post(site, "/forms/subscribe", fields, as_json=True, headers={"Origin": WEBSITE})
    from_evil = post(
        site, "/forms/subscribe", fields, as_json=True, headers={"Origin": "https://evil.example"}
    )
    assert from_site.headers.get("access-control-allow-origin") == WEBSITE
    assert from_evil.headers.get("access-control-allow-origin") is None


def test_an_oversized_field_or_body_is_refused_with_what_and_the_limit_not_echoed(
    site: Site, engine: Engine
) -> None:
    before = counts(engine)
    long = {"email": "ana@example.com", "message": "<script>x</script>" + "a" * 2000}
    refused = post(site, "/forms/inquiry", long, as_json=True)
    assert refused.status == 422
    assert refused.json() == {"error": "message is longer than 2000 characters", "field": "message"}
    page = post(site, "/forms/inquiry", long)
    html = page.body.decode()
    assert page.status == 422 and "Message is longer than 2000 characters." in html
    assert "<script>x" not in html and "&lt;script&gt;" not in html
    huge = post(site, "/forms/inquiry", {"email": "a@example.com", "message": "a" * 70_000})
    assert huge.status == 413
    # half an emoji, as a script leaves it when it cuts a name: was a server error
    for path in ("/forms/inquiry", "/forms/subscribe"):
        cut = {"email": "ana@example.com", "name": "Ana \ud83d", "message": "Hi"}
        refused = post(site, path, cut, as_json=True)
        assert refused.status == 422
        assert refused.json() == {
            "error": "name holds half of a character (a lone surrogate)",
            "field": "name",
        }
    assert counts(engine) == before


def test_reading_a_post_names_the_field_and_never_its_value() -> None:
    with pytest.raises(FormProblem, match=r"^email is not a valid e-mail address$"):
        read_inquiry({"email": "<b>not mail</b>", "message": "Hi"}, 100)
    with pytest.raises(FormProblem, match=r"^message is required$"):
        read_inquiry({"email": "ana@example.com", "message": "   "}, 100)
    with pytest.raises(FormProblem, match=r"^name must be text$"):
        read_inquiry({"email": "ana@example.com", "message": "Hi", "name": ["x"]}, 100)
    form = read_inquiry({"email": "Ana@Example.com", "message": "Hi", "name": "Ana\r\nBcc: x"}, 9)
    assert (form.email, form.name) == ("ana@example.com", "Ana Bcc: x")
    with pytest.raises(FormProblem, match=r"^email must have plain Latin letters before the @"):
        read_inquiry({"email": "пример@example.com", "message": "Hi"}, 100)  # no SMTPUTF8 yet
    form = read_inquiry({"email": "Ana@Bücher.example", "message": "Hi"}, 100)
    assert form.email == "ana@bücher.example"  # as an import keys her (mail goes to xn--...)
    unknown = read_inquiry({"email": "a@example.com", "message": "Hi", "locale": "zz-ZZ"}, 9)
    assert unknown.locale is None  # no such language: the message's own is detected
    assert read_inquiry(
        {"email": "a@example.com", "message": "Hi", "locale": "bg_bg"}, 9
    ).locale == ("bg-BG")
    assert (
        read_inquiry({"email": "ana@example.com", "message": "Hi", "locale": None}, 9).locale
        is None
    )
    assert is_robot({"website": "x"}) and not is_robot({"website": " "})
    assert allowed_origin(WEBSITE + "/", [WEBSITE]) == WEBSITE + "/"
    assert allowed_origin("https://evil.example", [WEBSITE]) is None
