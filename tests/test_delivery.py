"""The one road to SMTP: outbox rows delivered to a real aiosmtpd server, faults and all."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from datetime import timedelta
from email.headerregistry import Address
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text, update

from mailer import config, customers, daemon, outbox
from mailer.clock import ManualClock
from mailer.config import Config
from mailer.delivery import Delivery
from mailer.models import Category, OutboxStatus
from mailer.outbox import NewMessage
from mailer.smtp import SmtpTarget
from tests.conftest import ROOT
from tests.smtp_sink import Sink, start_sink

CUSTOMERS_CSV = (
    "email,name,locale,timezone,tags\n"
    "maria@example.com,Мария Иванова,bg,Europe/Sofia,newsletter\n"
    "siti@example.com,Siti Rahmawati,id,Asia/Jakarta,newsletter\n"
    "emma@example.com,Emma Wilson,en,America/Los_Angeles,newsletter\n"
)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    path = tmp_path / "config.toml"
    path.write_text((ROOT / "config.toml").read_text(encoding="utf-8"), encoding="utf-8")
    env = {
        "MAILER_PATHS__TEMPLATES": str(ROOT / "templates"),
        "MAILER_PATHS__DATA": str(tmp_path / "var"),
        "MAILER_WEB__BASE_URL": "https://mail.northwind-roasters.example",
    }
    return config.load(path, env)


@pytest.fixture
def people(engine: Engine, tmp_path: Path, clock: ManualClock) -> dict[str, int]:
    csv = tmp_path / "c.csv"
    csv.write_text(CUSTOMERS_CSV, encoding="utf-8")
    customers.import_csv(engine, csv, clock.now())
    with engine.connect() as conn:
        return {c["email"].split("@")[0]: c["id"] for c in customers.find(conn)}


@pytest.fixture
async def sink() -> AsyncIterator[tuple[Sink, int]]:
    handler = Sink()
    server, port = await start_sink(handler)
    yield handler, port
    server.close()
    await server.wait_closed()


@pytest.fixture
def delivery(cfg: Config, engine: Engine, clock: ManualClock, sink: tuple[Sink, int]) -> Delivery:
    return daemon.build_delivery(cfg, engine, clock, SmtpTarget("127.0.0.1", sink[1], pool_size=2))


def message(people: dict[str, int], who: str, key: str, **kwargs: object) -> NewMessage:
    defaults: dict[str, object] = {
        "category": Category.MARKETING,
        "template": "newsletter",
        "context": {"params": {"headline": "Зимни новини", "intro": "Нов бленд."}},
        "valid_for": timedelta(days=3),
    }
    defaults.update(kwargs)
    return NewMessage(
        dedupe_key=key,
        to_address=f"{who}@example.com",
        customer_id=people[who],
        **defaults,  # type: ignore[arg-type]
    )


def status(engine: Engine, key: str) -> dict[str, object]:
    columns = [outbox.OUTBOX.c[n] for n in ("status", "reason", "attempts", "due_at")]
    query = select(*columns).where(outbox.OUTBOX.c.dedupe_key == key)
    with engine.connect() as conn:
        return dict(conn.execute(query).one()._mapping)


async def test_message_arrives_with_correct_headers_parts_and_encodings(
    engine: Engine,
    people: dict[str, int],
    delivery: Delivery,
    sink: tuple[Sink, int],
    clock: ManualClock,
) -> None:
    outbox.enqueue(engine, [message(people, "maria", "news:1:maria")], clock.now())
    assert await delivery.deliver_due() == 1
    (received,) = sink[0].received
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
    row = status(engine, "news:1:maria")
    assert (row["status"], row["attempts"]) == ("sent", 1)


async def test_the_same_logical_message_queued_twice_concurrently_is_one_row(
    engine: Engine, people: dict[str, int], clock: ManualClock
) -> None:
    start = threading.Barrier(4)
    added: list[int] = []

    def queue() -> None:
        start.wait()
        added.append(
            outbox.enqueue(engine, [message(people, "siti", "birthday:2:2026")], clock.now())
        )

    threads = [threading.Thread(target=queue) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(added) == [0, 0, 0, 1]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM outbox")).scalar_one() == 1


async def test_temporary_refusal_is_retried_later_then_sent(
    engine: Engine,
    people: dict[str, int],
    delivery: Delivery,
    sink: tuple[Sink, int],
    clock: ManualClock,
) -> None:
    sink[0].faults.append(("RCPT", "451 4.7.1 greylisted, try again later"))
    outbox.enqueue(
        engine, [message(people, "maria", "k1", category=Category.TRANSACTIONAL)], clock.now()
    )
    await delivery.deliver_due()
    first = status(engine, "k1")
    assert first["status"] == "queued" and "451 4.7.1 greylisted" in str(first["reason"])
    assert first["due_at"] > clock.now()
    assert await delivery.deliver_due() == 0, "not before its retry time"
    clock.advance(timedelta(minutes=5))
    await delivery.deliver_due()
    assert (status(engine, "k1")["status"], status(engine, "k1")["attempts"]) == ("sent", 2)
    assert len(sink[0].received) == 1


async def test_permanent_refusal_fails_once_and_is_not_retried(
    engine: Engine,
    people: dict[str, int],
    delivery: Delivery,
    sink: tuple[Sink, int],
    clock: ManualClock,
) -> None:
    sink[0].faults.append(("RCPT", "550 5.1.1 no such user here"))
    outbox.enqueue(
        engine, [message(people, "emma", "k2", category=Category.TRANSACTIONAL)], clock.now()
    )
    await delivery.deliver_due()
    clock.advance(timedelta(days=1))
    await delivery.deliver_due()
    row = status(engine, "k2")
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["reason"] == "550 no such user here" or "5.1.1 no such user" in str(row["reason"])
    assert sink[0].received == []


async def test_552_is_treated_as_temporary(
    engine: Engine,
    people: dict[str, int],
    delivery: Delivery,
    sink: tuple[Sink, int],
    clock: ManualClock,
) -> None:
    sink[0].faults.append(("DATA", "552 5.2.2 mailbox full"))
    outbox.enqueue(
        engine, [message(people, "emma", "k3", category=Category.TRANSACTIONAL)], clock.now()
    )
    await delivery.deliver_due()
    assert status(engine, "k3")["status"] == "queued"


async def test_connection_dropped_mid_data_is_retried(
    engine: Engine,
    people: dict[str, int],
    delivery: Delivery,
    sink: tuple[Sink, int],
    clock: ManualClock,
) -> None:
    sink[0].faults.append(("DATA", "drop"))
    outbox.enqueue(
        engine, [message(people, "siti", "k4", category=Category.TRANSACTIONAL)], clock.now()
    )
    await delivery.deliver_due()
    row = status(engine, "k4")
    assert row["status"] == "queued" and "retrying" in str(row["reason"])
    clock.advance(timedelta(minutes=5))
    await delivery.deliver_due()
    assert status(engine, "k4")["status"] == "sent"


async def test_outage_is_logged_once_and_loses_nothing(
    cfg: Config,
    engine: Engine,
    people: dict[str, int],
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = Sink()
    server, port = await start_sink(handler)
    server.close()
    await server.wait_closed()  # the port is now closed: connections are refused
    delivery = daemon.build_delivery(cfg, engine, clock, SmtpTarget("127.0.0.1", port))
    keys = [f"down:{i}" for i in range(5)]
    who = ["maria", "siti", "emma", "maria", "siti"]
    outbox.enqueue(
        engine,
        [
            message(people, w, k, category=Category.TRANSACTIONAL)
            for w, k in zip(who, keys, strict=True)
        ],
        clock.now(),
    )
    with caplog.at_level(logging.WARNING, "mailer.delivery"):
        await delivery.deliver_due()
        await delivery.deliver_due()
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "unreachable" in caplog.records[0].message
    assert {status(engine, k)["status"] for k in keys} == {"queued"}
    assert {status(engine, k)["attempts"] for k in keys} == {0}
    server, _ = await start_sink(handler, port)
    try:
        assert await delivery._probe()
        await delivery.deliver_due()
    finally:
        server.close()
        await server.wait_closed()
    assert {status(engine, k)["status"] for k in keys} == {"sent"}
    assert len(handler.received) == 5


async def test_a_crashed_workers_messages_return_after_the_lease(
    engine: Engine,
    people: dict[str, int],
    delivery: Delivery,
    sink: tuple[Sink, int],
    clock: ManualClock,
) -> None:
    outbox.enqueue(
        engine, [message(people, "maria", "k5", category=Category.TRANSACTIONAL)], clock.now()
    )
    claimed = outbox.claim(engine, clock.now(), 10, delivery.policy)  # then the worker dies
    assert len(claimed) == 1 and status(engine, "k5")["status"] == "sending"
    assert await delivery.deliver_due() == 0
    clock.advance(delivery.policy.lease + timedelta(seconds=1))
    await delivery.deliver_due()
    assert status(engine, "k5")["status"] == "sent"


async def test_a_name_with_line_breaks_cannot_add_a_header(
    engine: Engine,
    people: dict[str, int],
    delivery: Delivery,
    sink: tuple[Sink, int],
    clock: ManualClock,
) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(outbox.CUSTOMERS)
            .where(outbox.CUSTOMERS.c.id == people["emma"])
            .values(name="Emma\r\nBcc: victim@example.org")
        )
    outbox.enqueue(
        engine, [message(people, "emma", "k6", category=Category.TRANSACTIONAL)], clock.now()
    )
    await delivery.deliver_due()
    (received,) = sink[0].received
    assert received.message["Bcc"] is None
    assert received.rcpt_tos == ["emma@example.com"]


async def test_a_template_that_fails_for_one_customer_fails_only_that_message(
    engine: Engine,
    people: dict[str, int],
    delivery: Delivery,
    sink: tuple[Sink, int],
    clock: ManualClock,
) -> None:
    good = message(people, "maria", "k7")
    broken = message(people, "siti", "k8", context={"params": {}})  # no headline
    outbox.enqueue(engine, [good, broken], clock.now())
    await delivery.deliver_due()
    assert status(engine, "k7")["status"] == "sent"
    row = status(engine, "k8")
    assert row["status"] == "failed" and "templates/newsletter" in str(row["reason"])


async def test_an_invalid_address_is_skipped_with_a_reason(
    engine: Engine, delivery: Delivery, clock: ManualClock
) -> None:
    bad = NewMessage("k9", "not an address@", Category.TRANSACTIONAL, "ack")
    outbox.enqueue(engine, [bad], clock.now())
    row = status(engine, "k9")
    assert row["status"] == "skipped" and "not a valid email address" in str(row["reason"])


async def test_second_marketing_message_on_a_day_is_deferred_with_its_reason(
    engine: Engine,
    people: dict[str, int],
    delivery: Delivery,
    sink: tuple[Sink, int],
    clock: ManualClock,
) -> None:
    outbox.enqueue(engine, [message(people, "maria", "m1")], clock.now())
    await delivery.deliver_due()
    clock.advance(timedelta(hours=1))
    outbox.enqueue(engine, [message(people, "maria", "m2")], clock.now())
    await delivery.deliver_due()
    row = status(engine, "m2")
    assert row["status"] == "queued"
    assert "deferred until" in str(row["reason"]) and "marketing" in str(row["reason"])
    assert len(sink[0].received) == 1


async def test_higher_priority_wins_a_contested_slot(
    engine: Engine,
    people: dict[str, int],
    delivery: Delivery,
    sink: tuple[Sink, int],
    clock: ManualClock,
) -> None:
    newsletter = message(people, "siti", "news", priority=10)
    webinar = message(
        people, "siti", "invite", priority=20, context={"params": {"headline": "Webinar"}}
    )
    outbox.enqueue(engine, [newsletter, webinar], clock.now())
    await delivery.deliver_due()
    assert status(engine, "invite")["status"] == "sent"
    assert status(engine, "news")["status"] == "queued"


async def test_a_message_that_cannot_go_inside_its_window_expires(
    engine: Engine, people: dict[str, int], delivery: Delivery, clock: ManualClock
) -> None:
    outbox.enqueue(engine, [message(people, "emma", "e1")], clock.now())
    await delivery.deliver_due()
    outbox.enqueue(
        engine, [message(people, "emma", "e2", valid_for=timedelta(hours=2))], clock.now()
    )
    await delivery.deliver_due()
    row = status(engine, "e2")
    assert row["status"] == OutboxStatus.EXPIRED and "valid" in str(row["reason"])


async def test_unsubscribed_customer_gets_no_marketing_but_still_transactional(
    engine: Engine,
    people: dict[str, int],
    delivery: Delivery,
    sink: tuple[Sink, int],
    clock: ManualClock,
) -> None:
    with engine.begin() as conn:
        customers.unsubscribe(conn, "maria@example.com", clock.now())
    outbox.enqueue(
        engine,
        [
            message(people, "maria", "u1"),
            message(people, "maria", "u2", category=Category.TRANSACTIONAL),
        ],
        clock.now(),
    )
    assert status(engine, "u1")["status"] == "skipped", "checked at enqueue"
    await delivery.deliver_due()
    assert status(engine, "u2")["status"] == "sent"
    assert len(sink[0].received) == 1


def test_two_workers_cannot_both_pass_a_cap(
    engine: Engine, people: dict[str, int], delivery: Delivery, clock: ManualClock
) -> None:
    keys = [f"race:{i}" for i in range(10)]
    outbox.enqueue(engine, [message(people, "maria", k) for k in keys], clock.now())
    start = threading.Barrier(2)
    sent: list[int] = []

    def worker() -> None:
        start.wait()
        sent.append(len(outbox.claim(engine, clock.now(), 5, delivery.policy)))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(sent) == 1
    assert sorted(status(engine, k)["status"] for k in keys).count("sending") == 1


async def test_stop_lets_the_batch_in_flight_finish(
    engine: Engine,
    people: dict[str, int],
    delivery: Delivery,
    sink: tuple[Sink, int],
    clock: ManualClock,
) -> None:
    outbox.enqueue(
        engine,
        [
            message(people, w, f"s:{w}", category=Category.TRANSACTIONAL)
            for w in ("maria", "siti", "emma")
        ],
        clock.now(),
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(delivery.run(stop))
    for _ in range(200):  # bounded: the three messages arrive within a few event-loop turns
        if len(sink[0].received) == 3:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(worker, 10)
    assert len(sink[0].received) == 3
