"""Screenshots of the web app's main pages for the README, taken from a demo database.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Builds a throwaway SQLite database with the demo customers, a few inquiries (a Bulgarian
question, an out-of-office reply, a bounce), a newsletter fired at 09:00 in every zone and
delivered to a local sink (so some of it is throttled), and three users; serves the app on
loopback and photographs it with Debian's Chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.configs, tests.site, tests.smtp_sink

from playwright.async_api import Page, async_playwright  # noqa: E402
from sqlalchemy import Engine  # noqa: E402
from sqlalchemy.engine import Connection  # noqa: E402

from mailer import daemon  # noqa: E402
from mailer.core.clock import ManualClock  # noqa: E402
from mailer.core.config import Config  # noqa: E402
from mailer.customers import followups, profiles, tokens  # noqa: E402
from mailer.inbound import watcher  # noqa: E402
from mailer.inbound.parsing import parse  # noqa: E402
from mailer.inbound.watcher import AckPolicy  # noqa: E402
from mailer.outbound import outbox  # noqa: E402
from mailer.outbound.outbox import NewMessage  # noqa: E402
from mailer.outbound.smtp import SmtpTarget  # noqa: E402
from mailer.outbound.templates import TemplateStore  # noqa: E402
from mailer.scheduling import firing  # noqa: E402
from mailer.scheduling.firing import Firing  # noqa: E402
from mailer.scheduling.schedules import load_schedules  # noqa: E402
from mailer.staff import users  # noqa: E402
from mailer.store import db, migrate  # noqa: E402
from mailer.store.models import Role  # noqa: E402
from mailer.web.server import build  # noqa: E402
from tests.configs import shipped_config  # noqa: E402
from tests.site import served  # noqa: E402
from tests.smtp_sink import Sink, listening  # noqa: E402

NOW = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)  # 10:30 in Sofia, the newsletter's morning
PASSWORD = "screenshots only"
MAIL = ROOT / "tests" / "mail"
INQUIRY = ROOT / "demo" / "inquiry_bg.eml"


async def populate(cfg: Config, engine: Engine, clock: ManualClock) -> None:
    migrate.upgrade(engine)
    profiles.import_csv(engine, ROOT / "demo" / "customers.csv", clock.now())
    with engine.begin() as conn:
        for name, role in (("sam", Role.SUPPORT), ("mia", Role.MARKETING), ("ada", Role.ADMIN)):
            users.add(conn, name, role, PASSWORD, clock.now())
        policy = AckPolicy.from_config(cfg)
        for raw in (
            INQUIRY.read_bytes(),
            (MAIL / "exchange_out_of_office.eml").read_bytes(),
            (MAIL / "postfix_bounce_user_unknown.eml").read_bytes(),
        ):
            watcher.handle(conn, parse(raw), clock.now(), policy)
        add_followups(conn, clock.now())
    names = TemplateStore(cfg.templates_dir).names()
    schedules, _ = load_schedules(cfg.schedules_dir, names, clock)
    async with listening(Sink()) as port:
        delivery = daemon.build_delivery(
            cfg, engine, clock, SmtpTarget(host="127.0.0.1", port=port)
        )
        # a message Мария got this morning, so the newsletter waits for her next free slot
        news = {"params": {"headline": "A welcome offer", "intro": "Ten percent off."}}
        maria = "maria.ivanova@example.com"
        earlier = NewMessage(
            dedupe_key="shots:welcome",
            to_address=maria,
            category="marketing",
            template="newsletter",
            customer_id=1,
            context=news,
        )
        outbox.enqueue(engine, [earlier], clock.now())
        await delivery.deliver_due()
        firing.fire_due(engine, schedules, clock.now(), Firing.from_config(cfg))
        await delivery.deliver_due()


def add_followups(conn: Connection, now: datetime) -> None:
    """ada's list: one overdue from the inquiry, one later today, one next week (Sofia)."""
    users.change(conn, "ada", display_name="Ada Petrova", timezone="Europe/Sofia")
    for email, due, note, inquiry in (
        ("maria.ivanova@example.com", "2026-11-30 16:00", "Call back about order 1042", 1),
        ("georgi.petrov@example.com", "2026-12-01 15:30", "Offer the grinder service", None),
        ("maria.ivanova@example.com", "1w", "Did the replacement beans arrive?", None),
    ):
        new = followups.NewFollowUp(
            customer_id=followups.customer_id(conn, email),
            due_at=followups.parse_due(due, now, ZoneInfo("Europe/Sofia")),
            note=note,
            created_by="sam",
            assignee="ada",
            inquiry_id=inquiry,
        )
        followups.add(conn, new, now)


MARIA = "maria.ivanova%40example.com"


async def shoot(url: str, out: Path, cfg: Config) -> None:
    token = tokens.sign(tokens.load_secret(cfg), 1)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--disable-gpu"]
        )
        page = await browser.new_page(viewport={"width": 1280, "height": 860})
        await page.goto(url + "/login")
        await page.screenshot(path=out / "login.png")
        await sign_in(page, url, "ada")
        for name, path in (
            ("inquiries", "/inquiries"),
            ("inquiry", "/inquiries/1"),
            ("customer", "/customers/1"),
            ("followups", "/followups"),
            ("customer-edit", "/customers/1/edit"),
            ("templates", "/templates"),
            ("preview", f"/templates/birthday?locale=bg&customer={MARIA}"),
            ("template-editor", f"/templates/birthday/edit?variant=bg&customer={MARIA}"),
            ("schedules", "/schedules"),
            ("schedule-runs", "/schedules/newsletter"),
            ("schedule-form", "/schedules/newsletter/edit"),
            ("outbox", "/outbox"),
        ):
            await page.goto(url + path)
            await page.wait_for_load_state("networkidle")  # htmx's parts are in
            await page.screenshot(path=out / f"{name}.png", full_page=True)
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.goto(url + "/customers/1")
        await page.screenshot(path=out / "phone-customer.png")
        await page.set_viewport_size({"width": 1280, "height": 860})
        await page.goto(f"{url}/unsubscribe/{token}")
        await page.screenshot(path=out / "unsubscribe.png")
        await browser.close()


async def sign_in(page: Page, url: str, name: str) -> None:
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(lambda current: "/login" not in current)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mailer-shots-") as tmp:
        overrides = {
            "MAILER_SANDBOX__ENABLED": "false",
            "MAILER_PATHS__SCHEDULES": str(ROOT / "schedules"),
        }
        cfg = shipped_config(Path(tmp), overrides)
        engine = db.connect(f"sqlite:///{tmp}/shots.db")
        clock = ManualClock(NOW)
        await populate(cfg, engine, clock)
        with served(build(cfg, engine, clock)) as site:
            await shoot(site.url, args.out, cfg)
        engine.dispose()
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
