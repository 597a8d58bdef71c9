"""Several SMTP relays: failover, a refused login, mail routed by category, shares by weight,
and config mistakes named with file and key. Real aiosmtpd relays on loopback, a moved clock."""

from __future__ import annotations

import asyncio
import random
import warnings
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session
from sqlalchemy import Engine, select

from mailer import daemon
from mailer.core import config
from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import profiles
from mailer.outbound import outbox, rates, relays
from mailer.outbound.delivery import Delivery, Hold
from mailer.outbound.outbox import NewMessage
from mailer.outbound.relays import Down, route
from mailer.outbound.smtp import SmtpTarget
from tests.conftest import add_customers
from tests.smtp_sink import Sink, listening, start_sink
from tests.test_config import problems, write

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no SQL of its own

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ALL = frozenset(Category)


def relay(name: str, port: int = 1, **kwargs: object) -> SmtpTarget:
    return SmtpTarget(name=name, host="127.0.0.1", port=port, **kwargs)  # type: ignore[arg-type]


# Routing, without I/O -----------------------------------------------------------------------


def test_relays_are_tried_by_priority_and_only_those_carrying_the_category() -> None:
    first, second = relay("first", priority=1), relay("second", priority=2)
    bulk = relay("bulk", priority=0, categories=frozenset({Category.MARKETING}))
    rng = random.Random(1)
    assert route([second, bulk, first], "transactional", {}, NOW, rng) == [first, second]
    assert route([second, bulk, first], "marketing", {}, NOW, rng) == [bulk, first, second]


def test_a_rate_limited_send_claims_about_a_second_of_mail_at_a_time() -> None:
    """Mail queued during a newsletter (an acknowledgement) waits behind the batches claimed
    ahead: at 20 a second, seconds of them, not a minute."""
    assert relays.batch_for([relay("one")], 400) == 400  # no limit: as many as it may
    assert relays.batch_for([relay("one", rate_per_second=20)], 400) == 20
    limited = [relay("one", rate_per_second=10), relay("two", rate_per_second=5.5)]
    assert relays.batch_for(limited, 400) == 16
    assert relays.batch_for([*limited, relay("three")], 400) == 400
    assert relays.batch_for([relay("one", rate_per_second=0.2)], 400) == 1
    assert relays.batch_for([relay("one", rate_per_second=5000)], 400) == 400
    news = frozenset({Category.MARKETING})
    fast_receipts = relay("receipts", categories=frozenset({Category.TRANSACTIONAL}))
    slow_news = relay("news", rate_per_second=5, categories=news)
    assert relays.batch_for([fast_receipts, slow_news], 400) == 5  # the slowest category


def test_each_claim_takes_about_a_second_of_the_pace_the_last_batch_went_at() -> None:
    """Four processes sharing 20 a second each get five: a claim of 20 would hold four
    seconds of their sends, and what is queued meanwhile would wait behind three of them."""
    assert relays.next_batch(20, 4.0, least=4, most=20) == 5
    assert relays.next_batch(200, 0.08, least=4, most=200) == 200  # faster: as many as it may
    assert relays.next_batch(5, 1.2, least=4, most=200) == 5  # a slow server: about a second
    assert relays.next_batch(4, 8.0, least=4, most=200) == 4  # never fewer than carried at once
    assert relays.next_batch(1, 0.004, least=4, most=200) == 200  # one fast ack: grows at once
    assert relays.next_batch(10, 0.0, least=4, most=200) == 200  # the clock could not tell
    assert relays.next_batch(10, -3.0, least=4, most=200) == 200  # or was set back


def test_the_daemon_sizes_its_batches_to_the_configured_rate(
    cfg: Config, engine: Engine, clock: ManualClock
) -> None:
    limited = SmtpTarget(host="127.0.0.1", port=1, rate_per_second=20)
    assert daemon.build_delivery(cfg, engine, clock, limited).batch_size == 20
    free = SmtpTarget(host="127.0.0.1", port=1)
    assert daemon.build_delivery(cfg, engine, clock, free).batch_size == daemon.BATCH


def test_a_resting_relay_is_skipped_until_its_rest_is_over() -> None:
    first, second = relay("first", priority=1), relay("second", priority=2)
    down = {"first": relays.fell(None, NOW, "refused")}
    assert route([first, second], "transactional", down, NOW, random.Random(1)) == [second]
    later = NOW + relays.REST[0]
    assert route([first, second], "transactional", down, later, random.Random(1)) == [
        first,
        second,
    ]
    assert route([first], "transactional", down, NOW, random.Random(1)) == []


def test_each_failure_in_a_row_doubles_the_rest_up_to_the_longest() -> None:
    down: Down | None = None
    rests = []
    for _ in range(7):
        down = relays.fell(down, NOW, "refused")
        rests.append(down.until - NOW)
    assert rests[:3] == [timedelta(seconds=30), timedelta(seconds=60), timedelta(seconds=120)]
    assert rests[-1] == relays.REST[1]


def test_equal_priorities_share_the_mail_by_weight() -> None:
    big, small = relay("big", weight=3), relay("small", weight=1)
    rng = random.Random(2026)
    firsts = Counter(route([big, small], "marketing", {}, NOW, rng)[0].name for _ in range(4000))
    assert 2850 <= firsts["big"] <= 3150, firsts  # 3 of 4, within about 5 standard deviations
    assert all(len(route([big, small], "marketing", {}, NOW, rng)) == 2 for _ in range(10))


@SQLITE
def test_each_relay_has_its_own_shared_rate(engine: Engine, clock: ManualClock) -> None:
    default, backup = relay("smtp", rate_per_second=5.0), relay("backup", rate_per_second=5.0)
    names = {rates.shared(engine, r, clock).name for r in (default, backup)}  # type: ignore[union-attr]
    assert names == {"smtp 127.0.0.1:1", "relay backup"}


# Delivery through real relays -----------------------------------------------------------------

CUSTOMERS = "email,name,locale,timezone,tags\nmaria@example.com,Мария,bg,Europe/Sofia,newsletter\n"


@pytest.fixture
def maria(engine: Engine, tmp_path: Path, clock: ManualClock) -> None:
    add_customers(engine, tmp_path, CUSTOMERS, clock.now())


def queue(engine: Engine, clock: ManualClock, key: str, category: Category) -> None:
    """A message to Maria whose subject is its key."""
    with engine.connect() as conn:
        maria = profiles.find(conn)[0].id
    new = NewMessage(
        dedupe_key=key,
        to_address="maria@example.com",
        customer_id=maria,
        category=category,
        template="newsletter",
        context={"params": {"headline": key, "intro": "Нов бленд."}},
        valid_for=timedelta(days=3),
    )
    outbox.enqueue(engine, [new], clock.now())


def status(engine: Engine, key: str) -> tuple[str, int]:
    query = select(outbox.OUTBOX.c.status, outbox.OUTBOX.c.attempts).where(
        outbox.OUTBOX.c.dedupe_key == key
    )
    with engine.connect() as conn:
        row = conn.execute(query).one()
    return row.status, row.attempts


def build(cfg: Config, engine: Engine, clock: ManualClock, *targets: SmtpTarget) -> Delivery:
    return daemon.build_delivery(cfg, engine, clock, targets)


async def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    server, port = await start_sink(Sink())
    server.close()
    await server.wait_closed()
    return port


@SQLITE
async def test_a_relay_that_cannot_be_reached_hands_its_mail_to_the_next_until_it_is_back(
    cfg: Config, engine: Engine, clock: ManualClock, maria: None
) -> None:
    port = await closed_port()
    backup = Sink()
    async with listening(backup) as backup_port:
        delivery = build(
            cfg,
            engine,
            clock,
            relay("main", port, priority=1),
            relay("backup", backup_port, priority=2),
        )
        queue(engine, clock, "k1", Category.TRANSACTIONAL)
        assert await delivery.deliver_due() == 1
        assert status(engine, "k1") == ("sent", 1)  # one attempt, not a failed one
        assert len(backup.received) == 1 and "main" in delivery.relays.down
        assert delivery.held == {}

        queue(engine, clock, "k2", Category.TRANSACTIONAL)
        await delivery.deliver_due()  # main is resting: straight to the backup
        assert len(backup.received) == 2

        main = Sink()
        server, _ = await start_sink(main, port)
        try:
            clock.advance(relays.REST[0])
            queue(engine, clock, "k3", Category.TRANSACTIONAL)
            await delivery.deliver_due()
        finally:
            server.close()
            await server.wait_closed()
        await delivery.relays.close()
    assert len(main.received) == 1 and len(backup.received) == 2
    assert status(engine, "k3") == ("sent", 1)
    assert delivery.relays.down == {}


@asynccontextmanager
async def refusing_logins(sink: Sink) -> AsyncIterator[int]:
    """An aiosmtpd relay that requires a login and refuses every one with 535."""

    def authenticator(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
    ) -> AuthResult:
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535

    def make() -> SMTP:
        with warnings.catch_warnings():  # login without TLS: on loopback, that is the point
            warnings.simplefilter("ignore")
            return SMTP(
                sink,
                hostname="strict.test",
                authenticator=authenticator,
                auth_required=True,
                auth_require_tls=False,
            )

    server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@SQLITE
async def test_a_relay_that_refuses_the_login_is_rested_and_the_next_one_takes_the_mail(
    cfg: Config, engine: Engine, clock: ManualClock, maria: None
) -> None:
    strict, backup = Sink(), Sink()
    async with refusing_logins(strict) as strict_port, listening(backup) as backup_port:
        delivery = build(
            cfg,
            engine,
            clock,
            relay("strict", strict_port, username="mailer", password="wrong", priority=1),
            relay("backup", backup_port, priority=2),
        )
        queue(engine, clock, "k1", Category.TRANSACTIONAL)
        await delivery.deliver_due()
        await delivery.relays.close()
    assert status(engine, "k1") == ("sent", 1)
    assert strict.received == [] and len(backup.received) == 1
    assert "535" in delivery.relays.down["strict"].reason


@SQLITE
async def test_when_every_relay_for_the_mail_is_down_its_category_waits(
    cfg: Config, engine: Engine, clock: ManualClock, maria: None
) -> None:
    strict = Sink()
    async with refusing_logins(strict) as strict_port:
        delivery = build(
            cfg,
            engine,
            clock,
            relay("main", await closed_port()),
            relay("strict", strict_port, username="mailer", password="wrong"),
        )
        queue(engine, clock, "k1", Category.TRANSACTIONAL)
        await delivery.deliver_due()
        await delivery.relays.close()
    assert status(engine, "k1") == ("queued", 0)  # nothing lost, no attempt counted
    assert set(delivery.held) == {"transactional"}
    assert set(delivery.relays.down) == {"main", "strict"}


@SQLITE
async def test_transactional_and_marketing_mail_leave_through_their_own_relays(
    cfg: Config, engine: Engine, clock: ManualClock, maria: None
) -> None:
    receipts, newsletters = Sink(), Sink()
    async with listening(receipts) as a, listening(newsletters) as b:
        delivery = build(
            cfg,
            engine,
            clock,
            relay("receipts", a, categories=frozenset({Category.TRANSACTIONAL})),
            relay("bulk", b, categories=frozenset({Category.MARKETING, Category.RELATIONSHIP})),
        )
        queue(engine, clock, "order", Category.TRANSACTIONAL)
        queue(engine, clock, "news", Category.MARKETING)
        assert await delivery.deliver_due() == 2
        await delivery.relays.close()
    assert [r.message["Subject"] for r in receipts.received] == ["order"]
    assert [r.message["Subject"] for r in newsletters.received] == ["news"]


async def test_when_no_relay_for_marketing_answers_only_marketing_waits_until_one_does(
    cfg: Config, engine: Engine, clock: ManualClock, maria: None
) -> None:
    """The bulk relay is down: marketing is held (left in the queue, its reason saying why)
    and its relay probed ever less often, while receipts keep leaving through theirs."""
    receipts, newsletters = Sink(), Sink()
    bulk_port = await closed_port()
    async with listening(receipts) as port:
        delivery = build(
            cfg,
            engine,
            clock,
            relay("receipts", port, categories=frozenset({Category.TRANSACTIONAL})),
            relay("bulk", bulk_port, categories=frozenset({Category.MARKETING})),
        )
        queue(engine, clock, "news", Category.MARKETING)
        queue(engine, clock, "order:1", Category.TRANSACTIONAL)
        assert await delivery.deliver_due() == 2
        assert set(delivery.held) == {"marketing"}
        with engine.connect() as conn:
            news = outbox.get_by_key(conn, "news")
        assert news is not None and (news["status"], news["attempts"]) == ("queued", 0)
        assert news["reason"].startswith(
            f"waiting: no relay for marketing mail answers: bulk (127.0.0.1:{bulk_port}): "
        )
        assert outbox.next_due(engine, skip_categories={"marketing"}) is None
        assert outbox.next_due(engine) is not None

        queue(engine, clock, "order:2", Category.TRANSACTIONAL)
        assert await delivery.deliver_due() == 1, "the held marketing mail is not claimed"
        waits = []
        for _ in range(3):  # each probe that finds no relay doubles the wait for the next
            clock.advance(timedelta(seconds=delivery.held["marketing"].wait))
            await delivery.probe_held()
            waits.append(delivery.held["marketing"].wait)
        assert waits == [2.0, 4.0, 8.0]

        server, _ = await start_sink(newsletters, bulk_port)
        try:
            clock.advance(timedelta(seconds=4))
            await delivery.probe_held()
            assert set(delivery.held) == {"marketing"}, "not probed before its time"
            clock.advance(timedelta(seconds=4))
            await delivery.probe_held()
            assert delivery.held == {}
            assert await delivery.deliver_due() == 1
            await delivery.relays.close()
        finally:
            server.close()
            await server.wait_closed()
    assert [r.message["Subject"] for r in receipts.received] == ["order:1", "order:2"]
    assert [r.message["Subject"] for r in newsletters.received] == ["news"]
    assert status(engine, "news") == ("sent", 1)


def test_a_held_category_is_probed_from_one_second_doubling_to_a_minute() -> None:
    hold = Hold(since=NOW, reason="no relay", probe_at=NOW + timedelta(seconds=1))
    waits = [hold.wait]
    for _ in range(8):
        hold = hold.missed(NOW)
        waits.append(hold.wait)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert hold.probe_at == NOW + timedelta(minutes=1)


@SQLITE
async def test_relays_of_equal_priority_share_the_mail_by_weight(
    cfg: Config, engine: Engine, clock: ManualClock, maria: None
) -> None:
    big, small = Sink(), Sink()
    async with listening(big) as a, listening(small) as b:
        delivery = build(cfg, engine, clock, relay("big", a, weight=3), relay("small", b))
        delivery.rng.seed(2026)  # the same generator draws the relays
        for i in range(80):
            queue(engine, clock, f"order:{i}", Category.TRANSACTIONAL)
        assert await delivery.deliver_due() == 80
        await delivery.relays.close()
    assert len(big.received) + len(small.received) == 80
    assert 50 <= len(big.received) <= 70, (len(big.received), len(small.received))  # 60 of 80


# Config ---------------------------------------------------------------------------------------

RELAYS = """
[smtp]
host = "mx1.example.com"
categories = ["transactional"]

[relays.bulk]
host = "bulk.example.com"
port = 587
security = "starttls"
username = "northwind"
password_env = "BULK_PASSWORD"
rate_per_second = 20
priority = 1
weight = 3
categories = ["marketing", "relationship"]

[relays.backup]
host = "mx2.example.com"
priority = 2
"""


def test_relays_are_read_from_config_with_their_own_passwords(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, RELAYS), {"BULK_PASSWORD": "s3cret"})
    smtp, bulk, backup = relays.targets(cfg, sandbox=False)
    assert (smtp.name, smtp.host) == ("smtp", "mx1.example.com")
    assert smtp.categories == frozenset({"transactional"})
    assert (bulk.name, bulk.port, bulk.password, bulk.weight) == ("bulk", 587, "s3cret", 3)
    assert bulk.categories == {"marketing", "relationship"} and bulk.rate_per_second == 20
    assert (backup.priority, backup.categories) == (2, ALL)
    assert [t.port for t in relays.targets(cfg, sandbox=True)] == [2525]  # only the sandbox


def test_relay_mistakes_are_named_with_file_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[relays.backup]\nprot = 25\nweight = 0\ncategories = ["newsletters"]\n'
        '[relays.smtp]\nhost = "x"\n[relays."Bad Name"]\n[relays.bulk]\npassword_env = "NOPE"\n',
    )
    found = problems(path)
    assert found[:4] == [
        f"{path}: [relays.backup] weight: Input should be greater than or equal to 1 (got 0)",
        f"{path}: [relays.backup] categories.0: Input should be 'transactional', "
        "'relationship' or 'marketing' (got 'newsletters')",
        f'{path}: [relays.backup] prot: unknown key (did you mean "port"?)',
        f"{path}: [relays] Bad Name: a relay's name is up to 40 lower-case letters, digits, "
        "'-' and '_'",
    ]
    assert f"{path}: [relays.bulk] password_env: environment variable NOPE is not set" in found
    assert all("\n" not in p for p in found)


def test_a_category_no_relay_carries_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[smtp]\ncategories = ["transactional"]\n')
    assert problems(path) == [
        f"{path}: [relays]: no relay carries relationship, marketing: add it to some categories"
    ]
    path = write(tmp_path, '[relays.smtp]\nhost = "x"\n')
    assert problems(path) == [
        f"{path}: [relays]: 'smtp' names the default relay, [smtp]: call this one otherwise"
    ]
