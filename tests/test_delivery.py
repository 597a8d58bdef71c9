"""The one road to SMTP: outbox rows delivered to a real aiosmtpd server, faults and all."""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from email.headerregistry import Address
from pathlib import Path
from socket import SO_SNDBUF, SOL_SOCKET
from typing import Any

import aiosmtplib
import pytest
import uvloop
from aiosmtpd.smtp import SMTP, Envelope, Session
from aiosmtplib.protocol import normalize_message_line_endings
from sqlalchemy import Engine, event, select, text, update

from mailer import daemon
from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.core.errors import MailerError
from mailer.customers import profiles
from mailer.outbound import delivery as delivery_module
from mailer.outbound import outbox, smtp
from mailer.outbound.delivery import Delivery
from mailer.outbound.outbox import NewMessage, Outcome, Result
from mailer.outbound.smtp import RateLimiter, SmtpTarget
from mailer.outbound.templates import TemplateStore
from mailer.scheduling import previews
from mailer.store.models import OutboxStatus
from tests.configs import ROOT, shipped_config
from tests.conftest import add_customers
from tests.smtp_sink import Relay, Sink, listening, loopback_tls, relayed, start_sink

CUSTOMERS_CSV = (
    "email,name,locale,timezone,tags\n"
    "maria@example.com,Мария Иванова,bg,Europe/Sofia,newsletter\n"
    "siti@example.com,Siti Rahmawati,id,Asia/Jakarta,newsletter\n"
    "emma@example.com,Emma Wilson,en,America/Los_Angeles,newsletter\n"
)


@pytest.fixture
def people(engine: Engine, tmp_path: Path, clock: ManualClock) -> dict[str, int]:
    add_customers(engine, tmp_path, CUSTOMERS_CSV, clock.now())
    with engine.connect() as conn:
        return {c.email.split("@")[0]: c.id for c in profiles.find(conn)}


def message(people: dict[str, int], who: str, key: str, **kwargs: object) -> NewMessage:
    defaults: dict[str, object] = {
        "to_address": f"{who}@example.com",
        "category": Category.MARKETING,
        "template": "newsletter",
        "context": {"params": {"headline": "Зимни новини", "intro": "Нов бленд."}},
        "valid_for": timedelta(days=3),
    }
    defaults.update(kwargs)
    return NewMessage(
        dedupe_key=key,
        customer_id=people[who],
        **defaults,  # type: ignore[arg-type]
    )


@dataclass
class Road:
    """The outbox, a delivery worker, the sink it delivers to and the clock, for one test."""

    engine: Engine
    people: dict[str, int]
    delivery: Delivery
    sink: Sink
    clock: ManualClock

    def queue(self, *messages: tuple[str, str] | NewMessage, **kwargs: object) -> None:
        """Queue (customer, key) pairs with ``kwargs``, or ready NewMessages."""
        built = [
            m if isinstance(m, NewMessage) else message(self.people, m[0], m[1], **kwargs)
            for m in messages
        ]
        outbox.enqueue(self.engine, built, self.clock.now())

    def status(self, key: str) -> dict[str, object]:
        columns = [outbox.OUTBOX.c[n] for n in ("status", "reason", "attempts", "due_at")]
        query = select(*columns).where(outbox.OUTBOX.c.dedupe_key == key)
        with self.engine.connect() as conn:
            return dict(conn.execute(query).one()._mapping)

    async def deliver(self, after: timedelta = timedelta(0)) -> int:
        self.clock.advance(after)
        return await self.delivery.deliver_due()


TRANSACTIONAL: dict[str, object] = {"category": Category.TRANSACTIONAL}
# the server advertises PIPELINING (RFC 2920) or not: what it refuses reads the same either way
PIPELINED_OR_NOT = pytest.mark.parametrize(
    "pipelining", [False, True], ids=["in turn", "pipelined"]
)


@pytest.fixture
def road(
    cfg: Config,
    engine: Engine,
    people: dict[str, int],
    clock: ManualClock,
    sink: tuple[Sink, int],
) -> Road:
    target = SmtpTarget(host="127.0.0.1", port=sink[1], pool_size=2)
    return Road(engine, people, daemon.build_delivery(cfg, engine, clock, target), sink[0], clock)


async def test_message_arrives_with_correct_headers_parts_and_encodings(road: Road) -> None:
    road.queue(("maria", "news:1:maria"))
    assert await road.deliver() == 1
    (received,) = road.sink.received
    mail = received.message
    assert received.rcpt_tos == ["maria@example.com"]
    assert received.mail_from == "support@northwind-roasters.example"
    assert mail["To"].addresses[0] == Address("Мария Иванова", addr_spec="maria@example.com")
    assert "=?utf-8?" in received.data.decode("ascii").split("\r\n\r\n")[0], "encoded header"
    assert mail["Subject"] == "Зимни новини"
    assert mail["Message-ID"].endswith("@northwind-roasters.example>")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "<https://mail.northwind-roasters.example/unsubscribe/" in mail["List-Unsubscribe"]
    assert mail.get_content_type() == "multipart/alternative"
    assert "Мария" in mail.get_body(("plain",)).get_content()
    assert "Мария" in mail.get_body(("html",)).get_content()
    row = road.status("news:1:maria")
    assert (row["status"], row["attempts"]) == ("sent", 1)


async def test_the_same_logical_message_queued_twice_concurrently_is_one_row(road: Road) -> None:
    start = threading.Barrier(4)
    added: list[int] = []

    def queue() -> None:
        start.wait()
        new = message(road.people, "siti", "birthday:2:2026")
        added.append(outbox.enqueue(road.engine, [new], road.clock.now()))

    threads = [threading.Thread(target=queue) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(added) == [0, 0, 0, 1]
    with road.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM outbox")).scalar_one() == 1


@PIPELINED_OR_NOT
async def test_temporary_refusal_is_retried_later_then_sent(road: Road, pipelining: bool) -> None:
    road.sink.pipelining = pipelining
    road.sink.faults.append(("RCPT", "451 4.7.1 greylisted, try again later"))
    road.queue(("maria", "k1"), **TRANSACTIONAL)
    await road.deliver()
    first = road.status("k1")
    assert first["status"] == "queued" and "451 4.7.1 greylisted" in str(first["reason"])
    assert first["due_at"] > road.clock.now()  # type: ignore[operator]
    assert await road.deliver() == 0, "not before its retry time"
    await road.deliver(after=timedelta(minutes=5))
    assert (road.status("k1")["status"], road.status("k1")["attempts"]) == ("sent", 2)
    assert len(road.sink.received) == 1


@PIPELINED_OR_NOT
async def test_permanent_refusal_fails_once_and_is_not_retried(
    road: Road, pipelining: bool
) -> None:
    road.sink.pipelining = pipelining
    road.sink.faults.append(("RCPT", "550 5.1.1 no such user here"))
    road.queue(("emma", "k2"), **TRANSACTIONAL)
    await road.deliver()
    await road.deliver(after=timedelta(days=1))
    row = road.status("k2")
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "550" in str(row["reason"]) and "no such user" in str(row["reason"])
    assert road.sink.received == []


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        (("DATA", "552 5.2.2 mailbox full"), "552 is temporary per RFC 5321 4.5.3.1.10"),
        (("DATA", "drop"), "the connection died in the middle of DATA"),
    ],
)
@PIPELINED_OR_NOT
async def test_these_failures_are_retried_and_then_delivered(
    road: Road, fault: tuple[str, str], why: str, pipelining: bool
) -> None:
    road.sink.pipelining = pipelining
    road.sink.faults.append(fault)
    road.queue(("siti", "k4"), **TRANSACTIONAL)
    await road.deliver()
    row = road.status("k4")
    assert row["status"] == "queued" and "retrying" in str(row["reason"]), why
    await road.deliver(after=timedelta(minutes=5))
    assert road.status("k4")["status"] == "sent"


async def test_outage_is_logged_once_and_loses_nothing(
    road: Road, cfg: Config, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Sink()
    server, port = await start_sink(handler)
    server.close()
    await server.wait_closed()  # the port is now closed: connections are refused
    delivery = daemon.build_delivery(
        cfg, road.engine, road.clock, SmtpTarget(host="127.0.0.1", port=port)
    )
    keys = [f"down:{i}" for i in range(5)]
    who = ["maria", "siti", "emma", "maria", "siti"]
    road.queue(*zip(who, keys, strict=True), **TRANSACTIONAL)
    with caplog.at_level(logging.WARNING, "mailer.outbound.delivery"):
        await delivery.deliver_due()
        await delivery.deliver_due()
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "holding transactional mail until a relay for it answers" in caplog.records[0].message
    assert {road.status(k)["status"] for k in keys} == {"queued"}
    assert {road.status(k)["attempts"] for k in keys} == {0}
    server, _ = await start_sink(handler, port)
    try:
        road.clock.advance(timedelta(seconds=1))
        await delivery.probe_held()
        assert delivery.held == {}
        await delivery.deliver_due()
    finally:
        server.close()
        await server.wait_closed()
    assert {road.status(k)["status"] for k in keys} == {"sent"}
    assert len(handler.received) == 5


async def test_a_crashed_workers_messages_return_after_the_lease(road: Road) -> None:
    road.queue(("maria", "k5"), **TRANSACTIONAL)
    policy = road.delivery.policy
    claimed = outbox.claim(road.engine, road.clock.now(), 10, policy)  # then the worker dies
    assert len(claimed) == 1 and road.status("k5")["status"] == "sending"
    assert await road.deliver() == 0
    await road.deliver(after=policy.lease + timedelta(seconds=1))
    assert road.status("k5")["status"] == "sent"


async def test_a_cancelled_stuck_message_is_not_queued_again_by_its_late_worker(
    road: Road,
) -> None:
    road.queue(("maria", "k7"), **TRANSACTIONAL)
    now = road.clock.now()
    (claimed,) = outbox.claim(road.engine, now, 10, road.delivery.policy)  # stuck sending
    with road.engine.begin() as conn:
        assert outbox.cancel(conn, claimed.id, now)
    late = Outcome(outbox_id=claimed.id, result=Result.RELEASED, at=now, reason="waiting: shutdown")
    outbox.record(road.engine, [late], outbox.leases([claimed]))
    assert road.status("k7")["status"] == "cancelled"
    assert await road.deliver(after=timedelta(hours=1)) == 0
    assert road.sink.received == []


async def test_a_name_with_line_breaks_cannot_add_a_header(road: Road) -> None:
    with road.engine.begin() as conn:
        conn.execute(
            update(profiles.CUSTOMERS)
            .where(profiles.CUSTOMERS.c.id == road.people["emma"])
            .values(name="Emma\r\nBcc: victim@example.org")
        )
    road.queue(("emma", "k6"), **TRANSACTIONAL)
    await road.deliver()
    (received,) = road.sink.received
    assert received.message["Bcc"] is None
    assert received.rcpt_tos == ["emma@example.com"]


async def test_a_template_that_fails_for_one_customer_fails_only_that_message(
    road: Road,
) -> None:
    road.queue(("maria", "k7"))
    road.queue(("siti", "k8"), context={"params": {}})  # no headline
    await road.deliver()
    assert road.status("k7")["status"] == "sent"
    row = road.status("k8")
    assert row["status"] == "failed" and "templates/newsletter" in str(row["reason"])


async def test_an_invalid_address_is_skipped_with_a_reason(road: Road) -> None:
    road.queue(
        NewMessage(
            dedupe_key="k9",
            to_address="not an address@",
            category=Category.TRANSACTIONAL,
            template="ack",
        )
    )
    row = road.status("k9")
    assert row["status"] == "skipped" and "not a valid email address" in str(row["reason"])


async def test_an_address_beyond_ascii_is_skipped_or_sent_in_ascii_and_never_stops_a_batch(
    road: Road,
) -> None:
    """Mail leaves without SMTPUTF8: a local part beyond ASCII is skipped at the door, an
    international domain is kept as the customer has it and written to in its ASCII form;
    a row queued with such an address before (or written by hand) fails alone, and the rest
    of its batch is delivered."""
    road.queue(("maria", "u1"), to_address="пример@example.com")
    road.queue(("siti", "u2"), to_address="siti@bücher.example")
    row = road.status("u1")
    assert row["status"] == "skipped" and "need SMTPUTF8" in str(row["reason"])
    road.queue(("emma", "u3"), **TRANSACTIONAL)
    with road.engine.begin() as conn:  # as a queue filled before the door was there
        conn.execute(
            update(outbox.OUTBOX)
            .where(outbox.OUTBOX.c.dedupe_key == "u3")
            .values(to_address="эмма@example.com")
        )
    await road.deliver()
    (received,) = road.sink.received
    assert received.rcpt_tos == ["siti@xn--bcher-kva.example"]
    assert road.status("u2")["status"] == "sent"
    row = road.status("u3")
    assert row["status"] == "failed" and "not a plain ASCII address" in str(row["reason"])


async def test_a_bug_preparing_one_message_fails_it_alone_and_its_batch_is_sent(
    road: Road, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault no server or template can produce, mailer's own bug, injected here: it fails
    the one message it is in, with what was raised, instead of stopping its batch at every
    lease."""
    road.queue(("maria", "b1"), ("siti", "b2"), ("emma", "b3"), **TRANSACTIONAL)
    prepare_all = road.delivery.preparer.prepare_all

    def buggy(claimed: list[Any], now: Any, purchases: Any) -> list[Any]:
        if any(item.to_address.startswith("siti") for item in claimed):
            raise KeyError("a bug")
        return prepare_all(claimed, now, purchases)

    monkeypatch.setattr(road.delivery.preparer, "prepare_all", buggy)
    with caplog.at_level(logging.ERROR, logger="mailer.outbound.delivery"):
        assert await road.deliver() == 3
    assert sorted(r.rcpt_tos[0] for r in road.sink.received) == [
        "emma@example.com",
        "maria@example.com",
    ]
    row = road.status("b2")
    assert row["status"] == "failed"
    assert row["reason"] == "internal error (a bug in mailer, in the log): KeyError('a bug')"
    assert "preparing a batch of 3 failed; preparing each alone" in caplog.text


async def test_second_marketing_message_on_a_day_is_deferred_with_its_reason(
    road: Road,
) -> None:
    road.queue(("maria", "m1"))
    await road.deliver()
    road.clock.advance(timedelta(hours=1))
    road.queue(("maria", "m2"))
    await road.deliver()
    row = road.status("m2")
    assert row["status"] == "deferred"
    assert "deferred until" in str(row["reason"]) and "marketing" in str(row["reason"])
    assert len(road.sink.received) == 1


async def test_higher_priority_wins_a_contested_slot(road: Road) -> None:
    road.queue(("siti", "news"), priority=10)
    road.queue(("siti", "invite"), priority=20, context={"params": {"headline": "Webinar"}})
    await road.deliver()
    assert road.status("invite")["status"] == "sent"
    assert road.status("news")["status"] == "deferred"


async def test_a_message_that_cannot_go_inside_its_window_expires(road: Road) -> None:
    road.queue(("emma", "e1"))
    await road.deliver()
    road.queue(("emma", "e2"), valid_for=timedelta(hours=2))
    await road.deliver()
    row = road.status("e2")
    assert row["status"] == OutboxStatus.EXPIRED and "valid" in str(row["reason"])


async def test_unsubscribed_customer_gets_no_marketing_but_still_transactional(
    road: Road,
) -> None:
    with road.engine.begin() as conn:
        profiles.unsubscribe(conn, "maria@example.com", road.clock.now())
    road.queue(("maria", "u1"))
    road.queue(("maria", "u2"), **TRANSACTIONAL)
    assert road.status("u1")["status"] == "skipped", "checked at enqueue"
    await road.deliver()
    assert road.status("u2")["status"] == "sent"
    assert len(road.sink.received) == 1


def test_two_workers_cannot_both_pass_a_cap(road: Road) -> None:
    keys = [f"race:{i}" for i in range(10)]
    road.queue(*(("maria", k) for k in keys))
    start = threading.Barrier(2)
    sent: list[int] = []

    def worker() -> None:
        start.wait()
        claimed = outbox.claim(road.engine, road.clock.now(), 5, road.delivery.policy)
        sent.append(len(claimed))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(sent) == 1
    assert [road.status(k)["status"] for k in keys].count("sending") == 1


def _sqlite_steps(engine: Engine, work: Callable[[], object]) -> int:
    """The hundreds of virtual-machine steps SQLite took for ``work``: what the database
    did, counted the same on a busy machine as on a quiet one."""
    steps = 0

    def step() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    def counted(dbapi_connection: Any, *_: object) -> None:
        dbapi_connection.set_progress_handler(step, 100)

    def uncounted(dbapi_connection: Any, *_: object) -> None:
        dbapi_connection.set_progress_handler(None, 0)

    event.listen(engine, "checkout", counted)
    event.listen(engine, "checkin", uncounted)
    try:
        work()
    finally:
        event.remove(engine, "checkout", counted)
        event.remove(engine, "checkin", uncounted)
    return steps


def _counted_claim(road: Road, limit: int) -> tuple[int, list[outbox.Claimed]]:
    """One claim of up to ``limit`` messages, with the SQLite steps it took."""
    claimed: list[outbox.Claimed] = []

    def claim() -> None:
        claimed.extend(outbox.claim(road.engine, road.clock.now(), limit, road.delivery.policy))

    return _sqlite_steps(road.engine, claim), claimed


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_claiming_receipts_to_strangers_does_not_read_the_sent_history(road: Road) -> None:
    """A shop's receipts to people who are no customers are claimed without reading anyone's
    contact history: the claim costs SQLite the same with 2,200 newsletters sent as with
    200. It read every one of them, with the write lock held, so that the shop's sends
    waited longer the longer mailer had run."""

    def sent_newsletters(start: int, count: int) -> None:
        road.queue(*(("maria", f"news:{n}") for n in range(start, start + count)))
        with road.engine.begin() as conn:
            conn.execute(
                update(outbox.OUTBOX)
                .where(outbox.OUTBOX.c.status == OutboxStatus.QUEUED)
                .values(status=OutboxStatus.SENT, reserved_at=road.clock.now())
            )

    def claimed_receipts(start: int) -> int:
        receipts = [
            NewMessage(
                dedupe_key=f"receipt:{n}",
                to_address=f"buyer{n}@example.com",
                customer_id=None,
                template="receipt",
                category=Category.TRANSACTIONAL,
            )
            for n in range(start, start + 3)
        ]
        road.queue(*receipts)
        steps, claimed = _counted_claim(road, 10)
        assert len(claimed) == 3
        return steps

    sent_newsletters(0, 200)
    short = claimed_receipts(0)
    sent_newsletters(200, 2_000)
    long = claimed_receipts(3)
    assert short > 0 and long <= short + 50, (short, long)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_claim_costs_the_same_however_long_the_queue(road: Road) -> None:
    """A long queue of due messages is claimed 20 at a time: each claim reads the next 20
    in priority and due order and stops, so it costs SQLite the same with 4,000 waiting as
    with 400 (it sorted every waiting one), and the order is kept: the highest priority
    first, then the earliest due, deferred or not."""

    def queue(start: int, count: int, **kwargs: object) -> None:
        road.queue(*(("siti", f"q:{n}") for n in range(start, start + count)), **kwargs)

    def claim() -> tuple[int, list[int]]:
        steps, claimed = _counted_claim(road, 20)
        return steps, [item.id for item in claimed]

    queue(0, 400, **TRANSACTIONAL)
    short, _ = claim()
    queue(400, 3_600, **TRANSACTIONAL)
    long, _ = claim()
    assert short > 0 and long <= short + 50, (short, long)

    table = outbox.OUTBOX
    earlier = road.clock.now() - timedelta(hours=1)
    changes = {
        "q:100": {"status": OutboxStatus.DEFERRED, "due_at": earlier},
        "q:101": {"priority": 100},
    }
    with road.engine.begin() as conn:  # q:100 was deferred and is due, q:101 is urgent
        for key, values in changes.items():
            conn.execute(update(table).where(table.c.dedupe_key == key).values(**values))
        ids: dict[str, int] = {
            k: i for k, i in conn.execute(select(table.c.dedupe_key, table.c.id))
        }
    _, taken = claim()
    assert taken[:2] == [ids["q:101"], ids["q:100"]]
    assert len(taken) == 20


async def test_stop_lets_the_batch_in_flight_finish(road: Road) -> None:
    road.queue(*((w, f"s:{w}") for w in ("maria", "siti", "emma")), **TRANSACTIONAL)
    stop = asyncio.Event()
    worker = asyncio.create_task(road.delivery.run(stop))
    for _ in range(200):  # bounded: the three messages arrive within a few event-loop turns
        if len(road.sink.received) == 3:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(worker, 10)
    assert len(road.sink.received) == 3


async def test_a_message_another_process_queues_goes_out_without_waiting_for_the_next_look(
    road: Road, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An API send queued by a web process of its own cannot wake the daemon's worker; the
    idle worker sees the commit (SQLite) or the outbox's NOTIFY (PostgreSQL) and looks at
    the queue (its rest between looks made a minute here, so only that can deliver in
    time)."""
    monkeypatch.setattr(delivery_module, "IDLE_POLL", 60.0)
    road.queue(("maria", "first"), **TRANSACTIONAL)
    stop = asyncio.Event()
    worker = asyncio.create_task(road.delivery.run(stop))
    for _ in range(500):  # bounded: the first arrives, then the worker finds nothing due
        if road.sink.received:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the worker rests idle
    await asyncio.to_thread(road.queue, ("siti", "second"), **TRANSACTIONAL)
    for _ in range(500):  # bounded: 5 s, far below the minute of rest
        if len(road.sink.received) == 2:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(worker, 10)
    assert [r.rcpt_tos for r in road.sink.received] == [["maria@example.com"], ["siti@example.com"]]


@dataclass
class HeldSink(Sink):
    """A server that takes a message's content only when ``gate`` opens."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.waiting.set()
        await self.gate.wait()
        return await super().handle_DATA(server, session, envelope)


async def test_the_next_batch_is_claimed_during_a_send_and_given_back_at_a_stop(
    road: Road, cfg: Config
) -> None:
    sink = HeldSink()
    async with listening(sink) as port:
        target = SmtpTarget(host="127.0.0.1", port=port)
        delivery = daemon.build_delivery(cfg, road.engine, road.clock, target)
        delivery.batch_size = 1
        road.queue(("maria", "b1"), ("siti", "b2"), ("emma", "b3"), **TRANSACTIONAL)
        stop = asyncio.Event()
        worker = asyncio.create_task(delivery.run(stop))
        await asyncio.wait_for(sink.waiting.wait(), 10)
        for _ in range(500):  # bounded: the next claim needs a thread and a render
            if road.status("b2")["status"] == "sending":
                break
            await asyncio.sleep(0.01)
        assert road.status("b2")["status"] == "sending"  # claimed while b1 is in flight
        stop.set()
        sink.gate.set()
        await asyncio.wait_for(worker, 10)
    assert [r.rcpt_tos for r in sink.received] == [["maria@example.com"]]
    assert road.status("b1")["status"] == "sent"
    b2, b3 = road.status("b2"), road.status("b3")
    assert (b2["status"], b2["reason"], b2["attempts"]) == ("queued", "waiting: shutdown", 0)
    assert b3["status"] == "queued"


def _claims(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many messages each claim of the delivery worker took, in order."""
    taken: list[int] = []
    claim = outbox.claim

    def counted(*args: Any, **kwargs: Any) -> list[outbox.Claimed]:
        claimed = claim(*args, **kwargs)
        taken.append(len(claimed))
        return claimed

    monkeypatch.setattr(outbox, "claim", counted)
    return taken


async def test_a_claim_that_drains_the_queue_claims_nothing_ahead(
    road: Road, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a backlog the next batches are claimed while one is sent; a claim that finds
    fewer than a batch has drained the queue, and a claim ahead would find only what came
    meanwhile: a write transaction on SQLite's one lock for a message or two, which the
    API's sends wait behind. Three receipts, room for 200: one claim, all three sent."""
    taken = _claims(monkeypatch)
    road.queue(*(("maria", f"receipt-{n}") for n in range(3)), **TRANSACTIONAL)
    assert await road.deliver() == 3
    assert taken == [3]
    assert len(road.sink.received) == 3


async def test_messages_queued_one_by_one_after_the_queue_drained_go_out_in_one_claim(
    road: Road, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a claim that drained the queue the worker waits TRICKLE_GAP (here two seconds,
    so that this machine's speed does not matter) before it claims again: four receipts
    queued one by one meanwhile, each committed alone and the worker woken for it, as the
    API queues them, go out together, one claim and one record instead of one each."""
    monkeypatch.setattr(delivery_module, "TRICKLE_GAP", 2.0)
    road.queue(("maria", "warm"), **TRANSACTIONAL)
    assert await road.deliver() == 1  # the render worker started before the clock counts
    taken = _claims(monkeypatch)
    road.queue(("maria", "first"), **TRANSACTIONAL)
    stop = asyncio.Event()
    worker = asyncio.create_task(road.delivery.run(stop))
    loop = asyncio.get_running_loop()
    try:
        for _ in range(500):  # bounded: the first receipt's claim, render and send
            if len(road.sink.received) == 2:
                break
            await asyncio.sleep(0.01)
        gap_left = road.delivery._claimed_at + 2.0 - loop.time()
        for n in range(4):
            road.queue(("siti", f"then-{n}"), **TRANSACTIONAL)
            road.delivery.wake()
            await asyncio.sleep(0.02)  # the worker's turn, as between two API calls
        for _ in range(500):
            if len(road.sink.received) == 6:
                break
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)
    assert gap_left > 0.5, "the machine took most of the gap to send one message"
    assert len(road.sink.received) == 6
    assert [n for n in taken if n] == [1, 4]


@dataclass
class SlowSink(Sink):
    """A server that takes a quarter of a second of the test's clock for each message, and
    calls ``on_arrival`` with how many it has taken."""

    clock: ManualClock = field(default_factory=ManualClock)
    on_arrival: Callable[[int], None] = lambda count: None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.clock.advance(timedelta(seconds=0.25))
        reply = await super().handle_DATA(server, session, envelope)
        self.on_arrival(len(self.received))
        return reply


def receipt(key: str, to: str, **kwargs: Any) -> NewMessage:
    return NewMessage(
        dedupe_key=key,
        to_address=to,
        category=Category.TRANSACTIONAL,
        template="newsletter",
        context={"params": {"headline": "Receipt", "intro": "Thank you."}},
        **kwargs,
    )


async def test_a_slow_server_gets_batches_of_about_a_second_so_an_ack_waits_seconds(
    road: Road, cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At four messages a second a claim of 20 holds five seconds of sends, and an
    acknowledgement queued meanwhile waits behind the batches claimed ahead: once the first
    batch shows the pace, each claim takes about a second of it (four) instead. The clock
    moves only as the server takes its time."""
    sink = SlowSink(clock=road.clock)
    queued_at: list[int] = []

    def ack_after_seventy(count: int) -> None:
        if count == 70:
            queued_at.append(count)
            ack = receipt("ack", "asker@example.com", priority=100)
            outbox.enqueue(road.engine, [ack], road.clock.now())

    sink.on_arrival = ack_after_seventy
    async with listening(sink) as port:
        target = SmtpTarget(host="127.0.0.1", port=port, pool_size=2)
        road.delivery = daemon.build_delivery(cfg, road.engine, road.clock, target)
        road.delivery.batch_size = 20
        taken = _claims(monkeypatch)
        road.queue(*(receipt(f"r{n}", f"buyer{n}@example.com") for n in range(100)))
        assert await road.deliver() == 101
    # two or three claimed before the first batch showed the pace; then about a second's
    # worth each (the last ones: what was left)
    assert taken[:2] == [20, 20] and set(taken[3:]) <= {4, 1, 0}, taken
    assert queued_at == [70]
    arrived = [r.rcpt_tos[0] for r in sink.received].index("asker@example.com")
    # behind at most three batches of four (before, all 100 receipts were claimed by then)
    assert arrived <= 70 + 3 * 4, f"the ack went out after {arrived - 70} more receipts"
    assert len(sink.received) == 101


LOUNGE = (
    '{% if "vip" in customer.tags %}The members lounge is yours.{% else %}Shop news.{% endif %}'
)


async def test_a_template_that_asks_for_a_tag_sends_what_its_preview_shows(
    tmp_path: Path,
    engine: Engine,
    people: dict[str, int],
    clock: ManualClock,
    sink: tuple[Sink, int],
) -> None:
    add_customers(engine, tmp_path, "email,tags\nmaria@example.com,newsletter;vip\n", clock.now())
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    (templates / "lounge").mkdir()
    (templates / "lounge" / "subject.txt").write_text("This week", encoding="utf-8")
    (templates / "lounge" / "body.txt").write_text(LOUNGE, encoding="utf-8")
    cfg = shipped_config(tmp_path, {"MAILER_PATHS__TEMPLATES": str(templates)})
    delivery = daemon.build_delivery(cfg, engine, clock, SmtpTarget(host="127.0.0.1", port=sink[1]))
    outbox.enqueue(
        engine,
        [
            message(people, who, f"lounge:{who}", template="lounge", **TRANSACTIONAL)
            for who in ("maria", "emma")
        ],
        clock.now(),
    )

    assert await delivery.deliver_due() == 2
    bodies = {
        m.rcpt_tos[0]: m.message.get_body(("plain",)).get_content().strip()
        for m in sink[0].received
    }
    assert bodies == {
        "maria@example.com": "The members lounge is yours.",
        "emma@example.com": "Shop news.",
    }
    with engine.connect() as conn:
        maria = profiles.get(conn, "maria@example.com")
    shown = previews.preview(
        engine,
        cfg,
        TemplateStore(templates),
        maria,
        "lounge",
        locale=None,
        category=Category.TRANSACTIONAL,
        now=clock.now(),
    )
    assert shown.text.strip() == bodies["maria@example.com"]


def test_the_rate_limit_spaces_sends_and_a_quiet_spell_earns_no_burst(clock: ManualClock) -> None:
    limiter = RateLimiter(2.0, clock)
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.5, 1.0]
    clock.advance(timedelta(seconds=0.75))
    assert limiter.reserve() == 0.75  # the queue moved on with the clock
    clock.advance(timedelta(minutes=10))
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.5, 1.0]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"A: b\r\n\r\nbody\r\n",
        b"A: b\n\nbare\rends\n",
        b"no end",
        b"\r\n\r",
        b"x\n\r",
        b".a\n.",
    ],
)
def test_size_counts_the_octets_data_carries_without_the_dots_it_adds(data: bytes) -> None:
    """RFC 1870: the content as DATA carries it, each line ending CRLF and a last one added,
    but not the dots doubled at line starts (RFC 5321 4.5.2) nor the final dot line."""
    size, content = smtp._content(data)
    sent = normalize_message_line_endings(data)
    assert size == len(sent)
    assert (
        content
        == (b"." if sent.startswith(b".") else b"") + sent.replace(b"\n.", b"\n..") + b".\r\n"
    )


async def test_a_one_off_send_the_server_refuses_is_one_clear_error(
    sink: tuple[Sink, int], clock: ManualClock
) -> None:
    sink[0].faults.append(("RCPT", "550 5.1.1 no such mailbox"))
    target = SmtpTarget(host="127.0.0.1", port=sink[1])
    with pytest.raises(MailerError) as refused:
        await smtp.send_one(target, clock, "ana@example.com", "nobody@example.com", b"Hi\r\n")
    assert str(refused.value) == (
        f"127.0.0.1:{sink[1]} did not take the message: 550 5.1.1 no such mailbox"
    )


@PIPELINED_OR_NOT
async def test_a_message_arrives_as_written_in_two_round_trips_when_the_server_pipelines(
    sink: tuple[Sink, int], clock: ManualClock, pipelining: bool
) -> None:
    """MAIL, RCPT and DATA go in one write when the server allows it (four round trips a
    message become two); either way a line that begins with a dot, or is one, arrives
    whole and bare line endings arrive as CRLF."""
    handler, port = sink
    handler.pipelining = pipelining
    data = b"Subject: dots\r\n\r\n.a dot first\r\n.\r\nbare\nends\r\n..two"
    relay = Relay(port)
    async with relayed(relay) as relay_port:
        target = SmtpTarget(host="127.0.0.1", port=relay_port)
        await smtp.send_one(target, clock, "ana@example.com", "maria@example.com", data)
    assert handler.received[0].data == normalize_message_line_endings(data)
    mail = b"MAIL FROM:<ana@example.com> SIZE=%d\r\n" % len(normalize_message_line_endings(data))
    commands = [mail, b"RCPT TO:<maria@example.com>\r\n", b"DATA\r\n"]
    sent = [write for write in relay.writes if write.startswith((b"MAIL", b"RCPT", b"DATA"))]
    assert sent == ([b"".join(commands)] if pipelining else commands)


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [(None, "queued as test"), ("550 5.1.1 no such mailbox", "550 5.1.1 no such mailbox")],
)
async def test_replies_to_pipelined_commands_that_arrive_together_are_each_read(
    sink: tuple[Sink, int], clock: ManualClock, fault: str | None, outcome: str
) -> None:
    """The server's replies to MAIL, RCPT and DATA come back in one read: each is taken
    for its command, so a refused recipient is the refusal and an accepted one is sent."""
    handler, port = sink
    handler.pipelining = True
    handler.faults.extend([("RCPT", fault)] if fault else [])
    relay = Relay(port, hold_until=b"503 " if fault else b"354 ")  # DATA's reply, the last
    async with relayed(relay) as relay_port:
        target = SmtpTarget(host="127.0.0.1", port=relay_port)
        send = smtp.send_one(target, clock, "ana@example.com", "maria@example.com", b"Hi\r\n")
        if fault:
            with pytest.raises(MailerError, match=outcome):
                await send
        else:
            assert outcome in await send
    assert len(handler.received) == (0 if fault else 1)


async def test_an_address_with_a_control_character_cannot_add_a_command(
    sink: tuple[Sink, int], clock: ManualClock
) -> None:
    target = SmtpTarget(host="127.0.0.1", port=sink[1])
    with pytest.raises(ValueError, match="prohibited control character"):
        await smtp.send_one(target, clock, "ana@example.com", "a\x00b@example.com", b"Hi\r\n")
    assert sink[0].received == []


def test_messages_go_out_on_the_event_loop_that_mailer_runs_on(clock: ManualClock) -> None:
    """`mailer run` delivers on uvloop, whose transports are not asyncio's own classes."""

    async def send() -> Sink:
        handler = Sink(pipelining=True)
        async with listening(handler) as port:
            target = SmtpTarget(host="127.0.0.1", port=port)
            await smtp.send_one(target, clock, "ana@example.com", "maria@example.com", b"Hi\r\n")
        return handler

    assert [r.rcpt_tos for r in uvloop.run(send()).received] == [["maria@example.com"]]


@pytest.mark.parametrize(
    "said",
    [b"421 4.4.2 idle too long\r\n", b"garbage\r\n", b"x" * 40_000],
    ids=["a reply", "not a reply", "a line without end"],
)
async def test_what_a_server_says_to_an_idle_connection_is_not_taken_for_the_next_reply(
    sink: tuple[Sink, int], clock: ManualClock, said: bytes
) -> None:
    """Nothing asked for it: that connection is closed, and the next message goes out at
    once on a new one (a 421 read as the next MAIL's reply held the message back)."""
    handler, port = sink
    handler.pipelining = True
    relay = Relay(port)
    async with relayed(relay) as relay_port:
        pool = smtp.SmtpPool(SmtpTarget(host="127.0.0.1", port=relay_port, pool_size=1), clock)
        await pool.send("ana@example.com", "maria@example.com", b"Hi\r\n")
        idle = pool._idle[0]
        relay.clients[0].write(said)
        for _ in range(1000):  # until the client has read it: a few turns of the loop
            if not idle.is_open:
                break
            await asyncio.sleep(0)
        await pool.send("ana@example.com", "maria@example.com", b"Hi again\r\n")
        await pool.close()
    assert [r.data for r in handler.received] == [b"Hi\r\n", b"Hi again\r\n"]
    assert len(relay.clients) == 2 and idle.replies.transport.is_closing()


# Real sockets time out in real time: these run on timeouts of tenths of a second.
BIG = b"Subject: the catalogue\r\n\r\n" + (b"x" * 74 + b"\r\n") * 32_000  # 2.4 MB
GREETING_TIMEOUT = 5.0  # connecting, TLS and EHLO: not what these tests time


def waiting_for_replies(
    monkeypatch: pytest.MonkeyPatch, seconds: float, send_buffer: int | None = None
) -> None:
    """Connections are made with the target's timeout (GREETING_TIMEOUT) but wait
    ``seconds`` for each reply of a transaction: a greeting on a busy machine can take longer
    than the tenths of a second these tests give a reply. ``send_buffer`` sets the socket's
    send buffer (SO_SNDBUF), as TCP sizes it for a slow link."""
    taken_from = smtp._Connection.taken_from

    def with_reply_timeout(client: aiosmtplib.SMTP, timeout: float) -> smtp._Connection:
        if send_buffer is not None:
            socket = client.transport.get_extra_info("socket")
            socket.setsockopt(SOL_SOCKET, SO_SNDBUF, send_buffer)
        return taken_from(client, seconds)

    monkeypatch.setattr(smtp._Connection, "taken_from", with_reply_timeout)


@pytest.mark.parametrize("security", ["none", "tls"])
@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_a_large_message_on_a_slow_uplink_is_not_timed_out_while_it_is_still_leaving(
    clock: ManualClock,
    run: Callable[[Coroutine[Any, Any, Sink]], Sink],
    security: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server cannot answer before it has all of it: 0.6 s at 4 MB/s, three times the
    timeout; the wait for its reply counts from the server's last acknowledgement. The
    socket's send buffer is 128 KB, as TCP sizes it for a slow link, so most of the
    message waits above the socket: in the transport, or inside TLS, which no transport
    reports."""
    tls, certificate = loopback_tls(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
    waiting_for_replies(monkeypatch, 0.2, send_buffer=128 * 1024)

    async def send() -> Sink:
        handler = Sink()
        async with (
            listening(handler, tls if security == "tls" else None) as port,
            relayed(Relay(port, pace=4_000_000)) as relay_port,
        ):
            target = SmtpTarget(
                host="127.0.0.1", port=relay_port, security=security, timeout=GREETING_TIMEOUT
            )
            await smtp.send_one(target, clock, "ana@example.com", "maria@example.com", BIG)
        return handler

    assert [r.data for r in run(send()).received] == [BIG]


async def test_a_server_that_does_not_answer_times_out_after_the_timeout(
    sink: tuple[Sink, int], clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not twice it: the command's own octets, acknowledged at once, are no progress."""
    handler, port = sink
    handler.faults.append(("MAIL", "hang"))
    waiting_for_replies(monkeypatch, 0.4)
    pool = smtp.SmtpPool(SmtpTarget(host="127.0.0.1", port=port, timeout=GREETING_TIMEOUT), clock)
    await pool.probe()  # connected and greeted: what follows is the wait for MAIL's reply
    started = asyncio.get_running_loop().time()
    with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
        await pool.send("ana@example.com", "maria@example.com", b"Hi\r\n")
    assert 0.4 <= asyncio.get_running_loop().time() - started < 0.7
    await pool.close()


async def test_a_server_that_stops_taking_a_message_times_out_and_is_retried(
    sink: tuple[Sink, int], clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, port = sink
    waiting_for_replies(monkeypatch, 0.2)
    relay = Relay(port, pace=4_000_000, stall_after=1_000_000)
    async with relayed(relay) as relay_port:
        target = SmtpTarget(host="127.0.0.1", port=relay_port, timeout=GREETING_TIMEOUT)
        pool = smtp.SmtpPool(target, clock)
        await pool.probe()  # connected and greeted: what follows is the transaction
        started = asyncio.get_running_loop().time()
        with pytest.raises(aiosmtplib.SMTPReadTimeoutError) as raised:
            await pool.send("ana@example.com", "maria@example.com", BIG)
        waited = asyncio.get_running_loop().time() - started
        await pool.close()
    assert smtp.classify(raised.value).result is smtp.Failure.RETRY
    assert waited < 3, "a fifth of a second after the last octet left, not never"
    assert handler.received == [] and pool._idle == []


@pytest.mark.parametrize(
    "fault",
    [
        ("MAIL", "552 5.3.4 too big for this sender"),
        ("RCPT", "550 5.1.1 no such user here"),
        ("DATA", "554 5.7.1 looks like spam"),
    ],
    ids=["sender", "recipient", "content"],
)
@PIPELINED_OR_NOT
async def test_after_a_refusal_the_next_message_goes_on_the_same_connection(
    sink: tuple[Sink, int], clock: ManualClock, fault: tuple[str, str], pipelining: bool
) -> None:
    """Reset (RSET), not dropped: a campaign meets many unknown addresses, and each new
    connection costs a greeting, TLS and a sign-in more on both sides."""
    handler, port = sink
    handler.pipelining = pipelining
    handler.faults.append(fault)
    relay = Relay(port)
    async with relayed(relay) as relay_port:
        pool = smtp.SmtpPool(SmtpTarget(host="127.0.0.1", port=relay_port, pool_size=1), clock)
        with pytest.raises(aiosmtplib.SMTPException) as refused:
            await pool.send("ana@example.com", "emma@example.com", b"Hi\r\n")
        await pool.send("ana@example.com", "maria@example.com", b"Hi again\r\n")
        await pool.close()
    assert smtp.classify(refused.value).reply == fault[1]
    assert [r.rcpt_tos for r in handler.received] == [["maria@example.com"]]
    assert len(relay.clients) == 1 and b"RSET\r\n" in b"".join(relay.writes)


async def test_a_server_that_says_it_is_closing_is_not_asked_for_the_next_message(
    sink: tuple[Sink, int], clock: ManualClock
) -> None:
    handler, port = sink
    handler.faults.append(("RCPT", "421 4.7.0 too many errors, closing"))
    relay = Relay(port)
    async with relayed(relay) as relay_port:
        pool = smtp.SmtpPool(SmtpTarget(host="127.0.0.1", port=relay_port, pool_size=1), clock)
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await pool.send("ana@example.com", "emma@example.com", b"Hi\r\n")
        await pool.send("ana@example.com", "maria@example.com", b"Hi again\r\n")
        await pool.close()
    assert [r.rcpt_tos for r in handler.received] == [["maria@example.com"]]
    assert len(relay.clients) == 2 and b"RSET" not in b"".join(relay.writes)


async def test_a_server_that_takes_content_for_a_transaction_it_refused_is_left_at_once(
    clock: ManualClock,
) -> None:
    """It answers DATA with 354 though it refused the only recipient, and waits for
    content: RSET would be read as content and wait out the timeout. RFC 2920 forbids
    this and aiosmtpd does not do it, so a scripted server stands in for one that does."""
    connections: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        writer.write(b"220 scripted\r\n")
        await reader.readline()  # EHLO
        writer.write(b"250-scripted\r\n250 PIPELINING\r\n")
        await reader.readuntil(b"DATA\r\n")
        writer.write(b"250 2.1.0 ok\r\n550 5.1.1 no such user\r\n354 go ahead\r\n")
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = smtp.SmtpPool(SmtpTarget(host="127.0.0.1", port=port, timeout=30), clock)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await asyncio.wait_for(pool.send("ana@example.com", "emma@example.com", b"Hi\r\n"), 5)
    assert pool._idle == []
    server.close()


async def test_a_send_cancelled_while_its_connection_is_reset_leaves_the_connection(
    sink: tuple[Sink, int], clock: ManualClock
) -> None:
    """The RSET's reply, still to come, would be read as the next message's MAIL reply."""
    handler, port = sink
    handler.pipelining = True
    handler.faults += [("RCPT", "550 5.1.1 no such user here"), ("RSET", "hang")]
    pool = smtp.SmtpPool(SmtpTarget(host="127.0.0.1", port=port, pool_size=1), clock)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pool.send("ana@example.com", "emma@example.com", b"Hi\r\n"), 0.3)
    assert pool._idle == []
    await pool.send("ana@example.com", "maria@example.com", b"Hi again\r\n")
    await pool.close()
    assert [r.rcpt_tos for r in handler.received] == [["maria@example.com"]]


@pytest.mark.parametrize(
    ("seen", "now", "left"),
    [
        (None, smtp._Acks(900, 0.05), 0.0),  # the system does not tell: time out
        (smtp._Acks(900, 0.0), smtp._Acks(900, 0.05), 0.0),  # nothing more acknowledged
        (smtp._Acks(100, 0.0), smtp._Acks(900, 0.05), 0.15),  # still leaving
        (smtp._Acks(100, 0.0), smtp._Acks(134, 0.19), 0.01),  # only the command, at once
    ],
    ids=["unknown", "stalled", "leaving", "command"],
)
def test_a_reply_wait_goes_on_only_while_the_server_acknowledges_more(
    seen: smtp._Acks | None, now: smtp._Acks, left: float
) -> None:
    assert smtp._time_left(seen, now, timeout=0.2) == pytest.approx(left)


def test_a_closed_connection_tells_nothing_of_acknowledgements() -> None:
    """A reply timer may run out just as the connection closes (over TLS on uvloop the TCP
    socket is gone an iteration before the protocol hears of it): no error in the loop."""

    async def closed() -> smtp._Acks | None:
        server = await asyncio.start_server(lambda _, writer: writer.close(), "127.0.0.1", 0)
        transport, _ = await asyncio.get_running_loop().create_connection(
            asyncio.Protocol, "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        assert smtp._acks(transport) is not None
        transport.close()
        await asyncio.sleep(0.01)
        server.close()
        return smtp._acks(transport)

    assert uvloop.run(closed()) is None
    assert asyncio.run(closed()) is None
