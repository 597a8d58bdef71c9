"""Per-domain pacing: at most N messages a minute to a domain or a group of domains, a
domain that answers "too fast" slowed down and recovering gradually, the rest of its mail
left waiting untried, and operators told in `mailer stats`, on the page and in the log."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from playwright.async_api import Page, expect
from sqlalchemy import Engine, select

from mailer import daemon
from mailer.core import config
from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.core.errors import ConfigError
from mailer.core.moments import absolute
from mailer.customers import profiles
from mailer.outbound import outbox, pacing_rules
from mailer.outbound import pacing as pacing_module
from mailer.outbound.delivery import Delivery
from mailer.outbound.outbox import NewMessage
from mailer.outbound.pacing import DomainPacing
from mailer.outbound.pacing_rules import (
    Pace,
    Rules,
    given_back,
    paced_until,
    rate_now,
    recovered,
    slowed,
    slows_down,
    take,
)
from mailer.outbound.smtp import SmtpTarget
from mailer.staff import users
from mailer.store import db
from tests.command import environment, runner
from tests.configs import shipped_config
from tests.conftest import add_customers, sign_in
from tests.site import Site
from tests.smtp_sink import Sink, start_sink

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
GROUPS = '{google = {domains = ["gmail.com", "googlemail.com"], per_minute = 3}}'
PACED = {
    "MAILER_PACING__PER_MINUTE": "4",
    "MAILER_PACING__SLOW_FOR": '"10m"',
    "MAILER_PACING__GROUPS": GROUPS,
}
ADDRESSES = [
    *(f"g{n}@gmail.com" for n in range(4)),
    *(f"m{n}@googlemail.com" for n in range(2)),
    *(f"o{n}@example.org" for n in range(6)),
    "n0@example.net",
]
RULES = Rules(per_minute=8, slow_for=timedelta(minutes=10), groups={"google": 3}, group_of={})


# The rules, without I/O ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reply", "slows"),
    [
        (421, "421 4.7.0 Try again later, closing connection", True),
        (421, "421 Service not available", True),
        (451, "451 4.7.1 Sending rate exceeded", True),
        (450, "450-4.7.28 Unusual rate of unsolicited mail", True),
        (452, "452 4.2.2 Mailbox full", False),
        (452, "452 4.7.1 Too many recipients this hour", False),
        (450, "450 4.2.0 Recipient address rejected: Greylisted, see postgrey", False),
        (451, "451 4.7.1 Greylisting in action, please come back later", False),
        (451, "451 4.3.0 Temporary lookup failure", False),
        (550, "550 5.7.1 Rejected by policy", False),
        (None, "TimeoutError", False),
    ],
)
def test_only_replies_that_say_too_fast_slow_a_domain_down(
    code: int | None, reply: str, slows: bool
) -> None:
    assert slows_down(code, reply) is slows


def test_a_deferral_halves_the_rate_at_most_once_a_minute_and_never_below_the_floor() -> None:
    rules = replace(RULES, floor_per_minute=2)
    pace = slowed(Pace(), rules, "example.org", T0, "421 too fast")
    assert (pace.rate, pace.slowed_until) == (4, T0 + timedelta(minutes=10))
    again = slowed(pace, rules, "example.org", T0 + timedelta(seconds=30), "421 too fast")
    assert again.rate == 4, "not twice in one minute"
    assert again.slowed_until == T0 + timedelta(minutes=10, seconds=30), "the hold is extended"
    later = slowed(again, rules, "example.org", T0 + MINUTE, "421 too fast")
    assert later.rate == 2
    assert slowed(later, rules, "example.org", T0 + 2 * MINUTE, "421").rate == 2, "the floor"


def test_an_unlimited_domain_drops_to_the_deferred_rate_then_halves() -> None:
    rules = Rules(deferred_per_minute=60)
    assert rate_now(Pace(), rules, "example.org", T0) is None
    pace = slowed(Pace(), rules, "example.org", T0, "421")
    assert pace.rate == 60
    assert slowed(pace, rules, "example.org", T0 + MINUTE, "421").rate == 30


def test_the_rate_is_held_then_climbs_a_tenth_a_quiet_minute_back_to_normal() -> None:
    pace = slowed(Pace(), RULES, "example.org", T0, "421")  # 8 -> 4 until 12:10
    at = [T0 + timedelta(minutes=m) for m in (9, 10, 11, 12, 13, 14)]
    assert [rate_now(pace, RULES, "example.org", t) for t in at] == [4, 4, 5, 6, 7, 8]
    assert not recovered(pace, RULES, "example.org", at[-2])
    assert recovered(pace, RULES, "example.org", at[-1])
    unlimited = slowed(Pace(), Rules(), "example.org", T0, "421")  # 60 until 12:10
    unlimited = slowed(unlimited, Rules(), "example.org", T0 + MINUTE, "421")  # 30 until 12:11
    at = [T0 + timedelta(minutes=m) for m in (11, 12, 16, 17)]
    assert [rate_now(unlimited, Rules(), "example.org", t) for t in at] == [30, 36, 60, None]


def test_a_group_shares_one_budget_a_minute(tmp_path: Path) -> None:
    rules = Rules.from_settings(shipped_config(tmp_path, PACED).settings.pacing)
    assert rules.key("GMail.com") == rules.key("googlemail.com") == "google"
    assert rules.key("example.org") == "example.org"
    assert (rules.normal("google"), rules.normal("example.org")) == (3, 4)
    granted, pace = take(Pace(), rules, "google", T0, 2)
    assert granted == 2 and paced_until(pace, rules, "google", T0) is None
    granted, pace = take(pace, rules, "google", T0 + timedelta(seconds=20), 5)
    assert granted == 1
    assert paced_until(pace, rules, "google", T0 + timedelta(seconds=30)) == T0 + MINUTE
    granted, pace = take(pace, rules, "google", T0 + MINUTE, 5)
    assert granted == 3, "a new minute, a new budget"


# Config -------------------------------------------------------------------------------------


def test_config_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    bad = {
        "MAILER_PACING__PER_MINUTE": "-1",
        "MAILER_PACING__SLOW_FOR": '"soon"',
        "MAILER_PACING__GROUPS": (
            '{google = {domains = ["gmail.com"], per_minut = 3}, other = {domains = ["gmail.com"]}}'
        ),
    }
    with pytest.raises(ConfigError) as caught:
        shipped_config(tmp_path, bad)
    lines = str(caught.value).splitlines()
    assert any(
        "MAILER_PACING__PER_MINUTE (environment): [pacing] per_minute: " in line
        and "greater than or equal to 0" in line
        for line in lines
    )
    assert any("[pacing] slow_for: 'soon' is not a duration" in line for line in lines)
    assert any(
        '[pacing.groups.google] per_minut: unknown key (did you mean "per_minute"?)' in line
        for line in lines
    )
    path = tmp_path / "config.toml"
    path.write_text(
        '[pacing]\nfloor_per_minute = 0\n[pacing.groups.google]\ndomains = ["gmail com"]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path, {})
    assert str(caught.value).splitlines() == [
        f"{path}: [pacing] floor_per_minute: Input should be greater than or equal to 1 (got 0)",
        f"{path}: [pacing.groups.google] domains.0: 'gmail com' is not a domain such as "
        "'example.com'",
    ]


# Delivery against a real SMTP server -----------------------------------------------------------


@dataclass
class Provider(Sink):
    """A sink that answers RCPT for a domain with the replies queued for it, in turn."""

    replies: dict[str, list[str]] = field(default_factory=dict)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        queued = self.replies.get(address.rpartition("@")[2], [])
        if queued:
            return queued.pop(0)
        return await super().handle_RCPT(server, session, envelope, address, options)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    """The shipped config with pacing: 4 a minute to each domain, 3 to Google's together."""
    return shipped_config(tmp_path, {"MAILER_WEB__BASE_URL": "https://mail.example", **PACED})


@pytest.fixture
async def provider() -> tuple[Provider, int]:
    handler = Provider()
    server, port = await start_sink(handler)
    yield handler, port  # type: ignore[misc]
    server.close()
    await server.wait_closed()


@pytest.fixture
def customers(engine: Engine, tmp_path: Path, clock: ManualClock) -> None:
    rows = "".join(f"{a},{a.split('@')[0]},en,UTC\n" for a in ADDRESSES)
    add_customers(engine, tmp_path, "email,name,locale,timezone\n" + rows, clock.now())


def delivery_to(cfg: Config, engine: Engine, clock: ManualClock, port: int) -> Delivery:
    return daemon.build_delivery(cfg, engine, clock, SmtpTarget(host="127.0.0.1", port=port))


@dataclass
class Road:
    """Customers at several providers, a delivery worker, the provider's server, the clock."""

    engine: Engine
    cfg: Config
    clock: ManualClock
    provider: Provider
    port: int

    @property
    def delivery(self) -> Delivery:
        return delivery_to(self.cfg, self.engine, self.clock, self.port)

    @property
    def pacing(self) -> DomainPacing:
        return DomainPacing.from_config(self.cfg, self.engine)

    def queue(self, addresses: list[str], tag: str = "") -> None:
        queue(self.engine, self.clock, addresses, tag)

    def sent_to(self) -> list[str]:
        return [r.rcpt_tos[0].split("@")[1] for r in self.provider.received]


@pytest.fixture
def road(
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    customers: None,
    provider: tuple[Provider, int],
) -> Road:
    return Road(engine, cfg, clock, *provider)


def queue(engine: Engine, clock: ManualClock, addresses: list[str], tag: str = "") -> None:
    with engine.connect() as conn:
        ids = {c.email: c.id for c in profiles.find(conn, limit=100)}
    messages = [
        NewMessage(
            dedupe_key=f"receipt:{tag}{address}",
            to_address=address,
            customer_id=ids[address],
            category=Category.TRANSACTIONAL,
            template="newsletter",
            context={"params": {"headline": "Receipt", "intro": "Thanks."}},
        )
        for address in addresses
    ]
    outbox.enqueue(engine, messages, clock.now())


def rows(engine: Engine) -> dict[str, dict[str, object]]:
    columns = [outbox.OUTBOX.c[n] for n in ("to_address", "status", "reason", "attempts")]
    with engine.connect() as conn:
        return {r.to_address: dict(r._mapping) for r in conn.execute(select(*columns))}


async def test_each_domain_and_group_gets_its_budget_a_minute_and_the_rest_waits_untried(
    road: Road,
) -> None:
    engine, cfg, clock = road.engine, road.cfg, road.clock
    road.queue(ADDRESSES)
    delivery = road.delivery
    await delivery.deliver_due()
    sent = sorted(road.sent_to())
    google = [d for d in sent if d in ("gmail.com", "googlemail.com")]
    assert len(google) == 3 and sent.count("example.org") == 4 and "example.net" in sent
    waiting = {a: r for a, r in rows(engine).items() if r["status"] == "queued"}
    assert len(waiting) == 3 + 2
    for address, row in waiting.items():
        assert row["attempts"] == 0, "released untried"
        who = "example.org" if address.endswith("example.org") else "group google"
        assert row["reason"] == f"waiting: {who} is paced until 2026-11-24 12:01 UTC"

    assert await delivery.deliver_due() == 0, "the paced domains are not claimed again"
    paced = DomainPacing.from_config(cfg, engine).paced(clock.now())
    assert set(paced) == {"gmail.com", "googlemail.com", "example.org"}
    assert outbox.next_due(engine, skip_domains=list(paced)) is None
    assert 0 < await delivery._idle_for() <= 1.0

    clock.advance(MINUTE)
    await delivery.deliver_due()
    assert len(road.provider.received) == len(ADDRESSES)
    assert {r["status"] for r in rows(engine).values()} == {"sent"}


async def test_a_421_or_4_7_x_slows_the_domain_down_and_452_or_greylisting_do_not(
    road: Road, caplog: pytest.LogCaptureFixture
) -> None:
    engine, clock = road.engine, road.clock
    road.provider.replies = {
        "example.org": ["421 4.7.0 Try again later, closing connection"],
        "gmail.com": ["452 4.2.2 Mailbox full"],
        "example.net": ["451 4.7.1 Greylisting in action, please come back later"],
    }
    road.queue(["o0@example.org", "g0@gmail.com", "n0@example.net"])
    with caplog.at_level(logging.INFO, logger="mailer.outbound.pacing"):
        await road.delivery.deliver_due()
    pacing = road.pacing
    with engine.connect() as conn:
        (slow,) = pacing.slowed_now(conn, clock.now())
    assert (slow.name, slow.rate, slow.normal) == ("example.org", 2, 4)
    assert slow.slowed_until == clock.now() + timedelta(minutes=10)
    assert slow.reason.startswith("421 4.7.0 Try again later")
    assert "pacing: example.org slows down to 2 a minute until 2026-11-24 12:10 UTC" in caplog.text
    assert rows(engine)["o0@example.org"]["attempts"] == 1, "the deferred message was tried"

    # another "too fast" within the minute extends the hold but does not halve again
    clock.advance(timedelta(seconds=30))
    pacing.deferred([("example.org", 451, "451 4.7.1 rate limited")], clock.now())
    with engine.connect() as conn:
        (slow,) = pacing.slowed_now(conn, clock.now())
    assert (slow.rate, slow.slowed_until) == (2, clock.now() + timedelta(minutes=10))
    clock.advance(MINUTE)
    pacing.deferred([("example.org", 451, "451 4.7.1 rate limited")], clock.now())
    with engine.connect() as conn:
        assert [s.rate for s in pacing.slowed_now(conn, clock.now())] == [1]
    clock.advance(MINUTE)
    pacing.deferred([("example.org", 421, "421 closing")], clock.now())
    with engine.connect() as conn:
        assert [s.rate for s in pacing.slowed_now(conn, clock.now())] == [1], "the floor"

    # held for ten minutes, then a tenth of 4 (rounded up: 1) a quiet minute
    clock.advance(timedelta(minutes=10))
    with engine.connect() as conn:
        assert [s.rate for s in pacing.slowed_now(conn, clock.now())] == [1]
    clock.advance(timedelta(minutes=2))
    with engine.connect() as conn:
        assert [s.rate for s in pacing.slowed_now(conn, clock.now())] == [3]
    clock.advance(MINUTE)
    with caplog.at_level(logging.INFO, logger="mailer.outbound.pacing"):
        assert pacing.paced(clock.now()) == {}
    assert "pacing: example.org is back at its normal rate" in caplog.text
    with engine.connect() as conn:
        assert pacing.slowed_now(conn, clock.now()) == []


async def test_a_slowed_group_holds_back_all_its_domains(road: Road) -> None:
    road.provider.replies = {"googlemail.com": ["450 4.7.28 Unusual rate of mail"]}
    road.queue(["m0@googlemail.com"])
    delivery = road.delivery
    await delivery.deliver_due()  # google: 3 -> 1 a minute
    road.clock.advance(MINUTE)
    road.queue(["g0@gmail.com", "g1@gmail.com", "g2@gmail.com"], tag="2:")
    await delivery.deliver_due()
    assert len(road.provider.received) == 1, "one for the group (m0's retry may be due too)"
    reasons = {str(r["reason"]) for r in rows(road.engine).values() if r["status"] == "queued"}
    assert "waiting: group google is paced until 2026-11-24 12:02 UTC" in reasons


async def test_what_a_domain_was_allowed_but_did_not_send_is_left_to_other_mail(
    road: Road,
) -> None:
    """Two of example.org's four this minute cannot be rendered (no headline): they fail
    unsent, and two other messages to example.org still go in the same minute."""
    road.queue(["o0@example.org", "o1@example.org"])
    broken = [
        NewMessage(
            dedupe_key=f"broken:{address}",
            to_address=address,
            category=Category.TRANSACTIONAL,
            template="newsletter",
            context={},
        )
        for address in ("o2@example.org", "o3@example.org")
    ]
    outbox.enqueue(road.engine, broken, road.clock.now())
    delivery = road.delivery
    await delivery.deliver_due()
    assert road.sent_to() == ["example.org"] * 2
    failed = [a for a, r in rows(road.engine).items() if r["status"] == "failed"]
    assert sorted(failed) == ["o2@example.org", "o3@example.org"]

    road.queue(["o4@example.org", "o5@example.org"], tag="2:")
    await delivery.deliver_due()
    assert road.sent_to() == ["example.org"] * 4, "the failed two left their room"
    assert rows(road.engine)["o5@example.org"]["status"] == "sent"


def test_room_is_given_back_only_in_the_minute_it_was_taken() -> None:
    taken = Pace(window_start=T0, used=4)
    assert given_back(taken, T0, 3) == replace(taken, used=1)
    assert given_back(taken, T0, 9).used == 0
    later = replace(taken, window_start=T0 + MINUTE, used=2)
    assert given_back(later, T0, 3) == later, "a later minute never counted them"


# SQLite has one writer: there is no second process to share a budget with
ON_POSTGRESQL = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@ON_POSTGRESQL
def test_two_processes_on_postgresql_share_one_budget(
    engine: Engine, cfg: Config, clock: ManualClock, customers: None
) -> None:
    """Both claim at once, each with its own connection: the rows locked in key order split
    the minute's budget between them, whatever the interleaving."""
    queue(engine, clock, ADDRESSES)
    other = db.connect(engine.url.render_as_string(hide_password=False))
    start = threading.Barrier(2)
    kept: list[int] = []
    policy = daemon.build_delivery(cfg, engine, clock, SmtpTarget(host="x", port=1)).policy

    def worker(on: Engine) -> None:
        pacing = DomainPacing.from_config(cfg, on)
        for _ in range(3):
            start.wait()
            now = clock.now()
            claimed = outbox.claim(on, now, 4, policy, skip_domains=list(pacing.paced(now)))
            share = pacing.hold_back(claimed, now)
            kept.extend(item.id for item in share.allowed)
            outbox.record(
                on,
                [
                    outbox.Outcome(
                        outbox_id=item.id, result=outbox.Result.RELEASED, at=now, reason=why
                    )
                    for item, why in share.held
                ],
                outbox.leases(claimed),
            )

    try:
        threads = [threading.Thread(target=worker, args=(e,)) for e in (engine, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        other.dispose()
    addresses = {a: r for a, r in rows(engine).items()}
    allowed = [a for a, r in addresses.items() if r["status"] == "sending"]
    assert len(allowed) == len(kept) == 3 + 4 + 1, allowed
    assert len(set(kept)) == len(kept)


@ON_POSTGRESQL
async def test_two_delivery_processes_on_postgresql_send_one_budget_between_them(
    road: Road,
) -> None:
    road.queue(ADDRESSES)
    other = db.connect(road.engine.url.render_as_string(hide_password=False))
    try:
        first = road.delivery
        second = delivery_to(road.cfg, other, road.clock, road.port)
        first.batch_size = second.batch_size = 3
        await asyncio.gather(first.deliver_due(), second.deliver_due())
    finally:
        other.dispose()
    sent = road.sent_to()
    assert sum(d in ("gmail.com", "googlemail.com") for d in sent) == 3
    assert sent.count("example.org") == 4


def test_a_deferral_while_a_batch_is_counted_waits_and_is_kept(
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    customers: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 421 slows example.org down from the thread that records results while a batch's
    share is being counted in another. The counting is held at that point (no real server
    can hold it there); the deferral waits for it instead of being written over by it."""
    policy = daemon.build_delivery(cfg, engine, clock, SmtpTarget(host="x", port=1)).policy
    pacing = DomainPacing.from_config(cfg, engine)
    queue(engine, clock, ["o0@example.org"])
    pacing.hold_back(outbox.claim(engine, clock.now(), 4, policy), clock.now())  # its row
    clock.advance(MINUTE)
    queue(engine, clock, ["o1@example.org"])
    claimed = outbox.claim(engine, clock.now(), 4, policy)
    counting, go_on = threading.Event(), threading.Event()
    decide = pacing_rules.take

    def held(*args: object) -> tuple[int, Pace]:
        counting.set()
        go_on.wait(10)
        return decide(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(pacing_rules, "take", held)
    count = threading.Thread(target=pacing.hold_back, args=(claimed, clock.now()))
    reply = [("example.org", 421, "421 4.7.0 Try again later")]
    slow = threading.Thread(target=pacing.deferred, args=(reply, clock.now()))
    count.start()
    try:
        assert counting.wait(10)
        slow.start()
        slow.join(0.5)  # unguarded, the deferral is written by now and the count goes over it
    finally:
        go_on.set()
        count.join(10)
        slow.join(10)
    with engine.connect() as conn:
        slowed = pacing.slowed_now(conn, clock.now())
        used = conn.execute(select(pacing_module.PACING.c.used)).scalar_one()
    assert [(s.name, s.rate) for s in slowed] == [("example.org", 2)]
    assert used == 1, "the batch's message is counted"


async def test_a_too_fast_reply_kept_while_the_database_was_away_slows_its_domain_later(
    road: Road,
) -> None:
    """The 421 came while results could not be written: it slows example.org down when
    they are written, as it would have at once."""
    road.provider.replies = {"example.org": ["421 4.7.0 Try again later, closing connection"]}
    road.queue(["o0@example.org"])
    delivery = road.delivery
    claimed = outbox.claim(road.engine, road.clock.now(), 4, delivery.policy)
    ready, _ = await asyncio.to_thread(delivery._prepare, claimed, road.clock.now())
    (outcome,) = await asyncio.gather(*(delivery._send(m, claimed[0]) for m in ready))
    await delivery.relays.close()
    delivery._unwritten.add([outcome], claimed)  # as when the write found no database
    assert await delivery._flush()
    with road.engine.connect() as conn:
        assert [s.name for s in road.pacing.slowed_now(conn, road.clock.now())] == ["example.org"]


# What operators see -----------------------------------------------------------------------------


def _slow_google(cfg: Config, engine: Engine, clock: ManualClock) -> None:
    pacing = DomainPacing.from_config(cfg, engine)
    pacing.deferred([("gmail.com", 421, "421 4.7.0 Try again later")], clock.now())


def test_stats_show_what_is_slowed_down_now(
    engine: Engine, cfg: Config, clock: ManualClock, database_url: str
) -> None:
    _slow_google(cfg, engine, clock)
    env = environment(cfg.path, database_url)
    env.update({k: v for k, v in PACED.items()})
    mailer = runner(env, clock=clock)
    shown = json.loads(mailer("stats", "--json").stdout)
    (slow,) = shown["slowed"]
    assert slow["name"] == "group google" and slow["domains"] == ["gmail.com", "googlemail.com"]
    assert (slow["rate"], slow["normal"]) == (1, 3)
    assert slow["reason"] == "421 4.7.0 Try again later"
    table = mailer("stats").stdout
    assert "Slowed down now (pacing)" in table and "group google" in table


async def test_the_deliverability_page_shows_slowed_domains_in_the_readers_zone(
    page: Page,
    engine: Engine,
    cfg: Config,
    clock: ManualClock,
    site: Site,
    staff: dict[str, str],
) -> None:
    _slow_google(cfg, engine, clock)
    with engine.begin() as conn:
        users.change(conn, "ada", timezone="Asia/Jakarta")
    await sign_in(page, site, "ada")
    await page.goto(site.url + "/deliverability")
    table = page.locator("table#slowed")
    await expect(table.locator("caption")).to_have_text("Slowed down now (pacing)")
    row = table.locator("tbody tr").first
    await expect(row).to_contain_text("group google")
    await expect(row).to_contain_text("gmail.com, googlemail.com")
    until = absolute(clock.now() + timedelta(minutes=10), ZoneInfo("Asia/Jakarta"))
    await expect(row).to_contain_text(until)
    await expect(row).to_contain_text("421 4.7.0 Try again later")
