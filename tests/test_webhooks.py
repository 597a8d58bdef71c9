"""Webhooks as an admin and a receiving system see them: events arrive signed as the
Standard Webhooks specification says, a receiver that fails is tried again later, nothing
is lost when a worker stops, and no webhook reaches a private address unless allowed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import Engine, select

from mailer.core.clock import ManualClock
from mailer.core.config import WebhookSettings
from mailer.core.errors import InvalidInput
from mailer.customers import profiles
from mailer.hooks import addresses, deliveries, endpoints, signing
from mailer.hooks.events import EventType
from mailer.hooks.sender import Webhooks
from mailer.inbound import inquiries
from mailer.inbound.parsing import parse
from mailer.outbound import outbox
from mailer.relationship import privacy
from mailer.store.models import WebhookDelivery
from tests.command import Mailer
from tests.command import mailer as mailer
from tests.command import project as project
from tests.conftest import HEADER, add_customers, sign_in
from tests.site import Site
from tests.webhook_receiver import Receiver, start

ALLOWED = WebhookSettings(allow_private=True, timeout=5)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    server = await start(found)
    yield found
    server.close()
    await server.wait_closed()


def worker(engine: Engine, clock: ManualClock, settings: WebhookSettings = ALLOWED) -> Webhooks:
    return Webhooks(engine=engine, clock=clock, settings=settings, jitter=lambda: 0.0)


def register(engine: Engine, clock: ManualClock, url: str, *events: EventType) -> str:
    with engine.begin() as conn:
        made = endpoints.add(
            conn, url, events, allow_private=True, created_by="ada", now=clock.now()
        )
    return made.secret


@pytest.fixture
def maria(engine: Engine, tmp_path: Path, clock: ManualClock) -> str:
    add_customers(engine, tmp_path, HEADER + "maria@example.bg,Мария,bg,,,,yes,yes,\n", clock.now())
    return "maria@example.bg"


def verified(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The check a receiver makes, written from the specification, not with mailer's code."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(f"v1,{expected}", given)
        for given in headers["webhook-signature"].split()
    )


def test_signatures_match_the_specifications_published_example() -> None:
    secret, msg_id, stamp = (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
    )
    body = b'{"test": 2432232314}'
    signature = signing.sign(secret, msg_id, stamp, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    given = {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}
    assert signing.verify(secret, given, body, now=stamp + 299)
    assert not signing.verify(secret, given, body, now=stamp + 301)  # a replay, too late
    assert not signing.verify(secret, given, body + b" ", now=stamp)
    made = signing.new_secret()
    assert made.startswith("whsec_") and len(base64.b64decode(made[6:])) == 32


async def test_an_unsubscribe_reaches_the_receiver_signed(
    engine: Engine, clock: ManualClock, receiver: Receiver, maria: str
) -> None:
    secret = register(engine, clock, receiver.url, EventType.CUSTOMER_UNSUBSCRIBED)
    with engine.begin() as conn:
        profiles.unsubscribe(conn, maria, clock.now())
        profiles.unsubscribe(conn, maria, clock.now())  # already: no second event
    assert await worker(engine, clock).deliver_due() == 1
    (got,) = receiver.received
    assert got.path == "/hooks/mailer?from=test"
    assert got.headers["content-type"] == "application/json"
    assert verified(secret, got.headers, got.body)
    assert int(got.headers["webhook-timestamp"]) == int(clock.now().timestamp())
    event = json.loads(got.body)
    assert event["type"] == "customer.unsubscribed"
    assert event["timestamp"] == "2026-11-24T12:00:00Z"
    assert event["data"]["email"] == maria
    assert event["data"]["unsubscribed_at"] == "2026-11-24T12:00:00Z"
    with engine.connect() as conn:
        (row,) = deliveries.find(conn)
    assert row["status"] == "delivered" and row["attempts"] == 1
    assert row["event_id"] == got.headers["webhook-id"]
    assert await worker(engine, clock).deliver_due() == 0  # delivered once


async def test_a_failing_receiver_is_tried_again_later_with_the_same_id(
    engine: Engine, clock: ManualClock, receiver: Receiver, maria: str
) -> None:
    secret = register(engine, clock, receiver.url, EventType.CUSTOMER_UNSUBSCRIBED)
    receiver.answers = [500, 503]
    with engine.begin() as conn:
        profiles.unsubscribe(conn, maria, clock.now())
    hooks = worker(engine, clock)
    assert await hooks.deliver_due() == 1
    with engine.connect() as conn:
        (row,) = deliveries.find(conn)
    assert row["status"] == "queued" and row["last_status_code"] == 500
    assert row["next_attempt_at"] == clock.now() + timedelta(minutes=1)
    assert await hooks.deliver_due() == 0  # not due yet
    clock.advance(timedelta(minutes=1))
    assert await hooks.deliver_due() == 1  # 503: the next wait is three minutes
    clock.advance(timedelta(minutes=2, seconds=59))
    assert await hooks.deliver_due() == 0
    clock.advance(timedelta(seconds=1))
    assert await hooks.deliver_due() == 1
    with engine.connect() as conn:
        (row,) = deliveries.find(conn)
    assert row["status"] == "delivered" and row["attempts"] == 3
    assert [a["status_code"] for a in row["attempts_log"]] == [500, 503, 200]
    assert row["attempts_log"][0]["error"] == "the receiver answered 500"
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert all(verified(secret, r.headers, r.body) for r in receiver.received)


async def test_a_delivery_that_keeps_failing_is_failed_after_the_last_attempt(
    engine: Engine, clock: ManualClock, receiver: Receiver, maria: str
) -> None:
    register(engine, clock, receiver.url, EventType.CUSTOMER_UNSUBSCRIBED)
    receiver.answers = [500] * 10
    with engine.begin() as conn:
        profiles.unsubscribe(conn, maria, clock.now())
    hooks = worker(engine, clock, WebhookSettings(allow_private=True, max_attempts=3))
    for _ in range(3):
        assert await hooks.deliver_due() == 1
        clock.advance(timedelta(hours=1))
    assert await hooks.deliver_due() == 0
    with engine.connect() as conn:
        (row,) = deliveries.find(conn, failed=True)
    assert row["attempts"] == 3 and len(row["attempts_log"]) == 3
    with engine.begin() as conn:  # an admin's retry, once the receiver is mended
        assert deliveries.retry(conn, row["id"], clock.now())
        assert not deliveries.retry(conn, row["id"], clock.now())  # queued, not failed
    receiver.answers = []
    assert await hooks.deliver_due() == 1
    with engine.connect() as conn:
        (row,) = deliveries.find(conn)
    assert row["status"] == "delivered" and row["attempts"] == 4


def test_waits_grow_to_about_a_day_with_jitter() -> None:
    waits = [deliveries.wait_after(n, 0.0) for n in range(1, 8)]
    assert waits[:3] == [timedelta(minutes=m) for m in (1, 3, 9)]
    assert waits[-1] == timedelta(hours=12)
    assert timedelta(hours=17) < sum(waits, timedelta()) < timedelta(hours=19)
    assert deliveries.wait_after(2, 0.999) < timedelta(minutes=3.75)


async def test_an_event_waits_out_a_worker_that_stopped_before_delivering(
    engine: Engine, clock: ManualClock, receiver: Receiver, maria: str
) -> None:
    register(engine, clock, receiver.url, EventType.CUSTOMER_UNSUBSCRIBED)
    with engine.begin() as conn:
        profiles.unsubscribe(conn, maria, clock.now())
    hooks = worker(engine, clock)
    taken = deliveries.claim(engine, clock.now(), 10, hooks.lease)  # then the process dies
    assert len(taken) == 1 and receiver.received == []
    restarted = worker(engine, clock)
    assert await restarted.deliver_due() == 0  # still leased to the dead worker
    clock.advance(hooks.lease + timedelta(seconds=1))
    assert await restarted.deliver_due() == 1
    assert len(receiver.received) == 1


async def test_an_event_commits_or_rolls_back_with_its_change(
    engine: Engine, clock: ManualClock, receiver: Receiver, maria: str
) -> None:
    register(engine, clock, receiver.url, EventType.CUSTOMER_UNSUBSCRIBED)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        profiles.unsubscribe(conn, maria, clock.now())
        raise RuntimeError("the process dies before the commit")
    with engine.connect() as conn:
        assert conn.execute(select(WebhookDelivery)).all() == []
        assert profiles.get(conn, maria).unsubscribed_at is None


async def test_messages_sent_and_bounced_are_told_to_those_who_asked(
    engine: Engine, clock: ManualClock, receiver: Receiver, maria: str
) -> None:
    register(engine, clock, receiver.url, EventType.MESSAGE_SENT, EventType.MESSAGE_BOUNCED)
    register(engine, clock, receiver.url, EventType.INQUIRY_CREATED)  # hears of neither
    message = outbox.NewMessage(
        dedupe_key="test:1", to_address=maria, category="transactional", template="ack"
    )
    outbox.enqueue(engine, [message], clock.now())
    with engine.connect() as conn:
        (queued,) = outbox.find(conn)
    sent = outbox.Outcome(
        outbox_id=queued["id"], result=outbox.Result.SENT, at=clock.now(), message_id="<m1@x>"
    )
    outbox.record(engine, [sent], {queued["id"]: 0})  # never claimed: lease token 0
    with engine.begin() as conn:
        outbox.mark_bounced(conn, [queued["id"]], "550 5.1.1 no such user", clock.now())
    assert await worker(engine, clock).deliver_due() == 2
    told = [json.loads(r.body) for r in receiver.received]
    assert sorted(e["type"] for e in told) == ["message.bounced", "message.sent"]
    for event in told:
        assert event["data"]["message_id"] == "<m1@x>" and event["data"]["to"] == maria
    bounced = next(e for e in told if e["type"] == "message.bounced")
    assert bounced["data"]["reason"] == "550 5.1.1 no such user"


async def test_an_inquiry_is_told_once_however_often_the_mail_server_delivers_it(
    engine: Engine, clock: ManualClock, receiver: Receiver
) -> None:
    secret = register(engine, clock, receiver.url, EventType.INQUIRY_CREATED)
    raw = (
        "From: Ана Петрова <ana@example.com>\r\nTo: support@northwind-roasters.example\r\n"
        "Subject: Мелачка\r\nMessage-ID: <a1@mail.example>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nThe grinder is broken.\r\n"
    ).encode()
    for _ in range(2):
        with engine.begin() as conn:
            logged = inquiries.log(conn, parse(raw), clock.now())
    hooks = worker(engine, clock)
    assert await hooks.deliver_due() == 1
    (got,) = receiver.received
    assert verified(secret, got.headers, got.body)
    event = json.loads(got.body)
    assert event["type"] == "inquiry.created"
    assert event["data"] == {
        "inquiry_id": logged.inquiry_id,
        "thread_id": None,
        "customer_id": logged.customer_id,
        "from": "ana@example.com",
        "subject": "Мелачка",
        "received_at": "2026-11-24T12:00:00Z",
    }


async def test_the_daemons_worker_delivers_when_woken_and_stops_when_told(
    engine: Engine, clock: ManualClock, receiver: Receiver, maria: str
) -> None:
    register(engine, clock, receiver.url, EventType.CUSTOMER_UNSUBSCRIBED)
    hooks, stop = worker(engine, clock), asyncio.Event()
    running = asyncio.create_task(hooks.run(stop))
    with engine.begin() as conn:
        profiles.unsubscribe(conn, maria, clock.now())
    hooks.wake()
    async with asyncio.timeout(10):
        while not receiver.received:
            await asyncio.sleep(0.01)
        stop.set()
        await running
    assert len(receiver.received) == 1


async def test_erasing_a_customer_empties_what_their_events_said(
    engine: Engine, clock: ManualClock, receiver: Receiver, maria: str
) -> None:
    for _ in range(2):  # two endpoints: one delivered before the erasure, one still waiting
        register(engine, clock, receiver.url, EventType.CUSTOMER_UNSUBSCRIBED)
    with engine.begin() as conn:
        profiles.unsubscribe(conn, maria, clock.now())
    hooks = worker(engine, clock)
    first = deliveries.claim(engine, clock.now(), 1, hooks.lease)
    deliveries.record(
        engine,
        first,
        [
            deliveries.Outcome(
                delivery_id=first[0].id, at=clock.now(), duration_ms=3, status_code=204
            )
        ],
        8,
        lambda: 0.0,
    )
    with engine.begin() as conn:
        erased = privacy.erase(conn, maria, clock.now())
    assert erased.webhooks == 2
    assert await hooks.deliver_due() == 0 and receiver.received == []
    with engine.connect() as conn:
        rows = deliveries.find(conn)
    assert {(r["status"], r["last_error"]) for r in rows} == {
        ("delivered", None),
        ("failed", "the customer was erased"),
    }
    assert all(r["payload"] == {} for r in rows)
    assert maria not in json.dumps([r["payload"] for r in rows])


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("192.168.0.1", "a private address"),
        ("169.254.169.254", "a link-local address"),  # a cloud's metadata service
        ("fe80::1", "a link-local address"),
        ("100.64.0.1", "not a public address"),
        ("224.0.0.1", "not a public address"),
        ("93.184.215.14", None),
        ("2606:4700::1111", None),
    ],
)
def test_only_public_addresses_may_receive_webhooks(address: str, why: str | None) -> None:
    assert addresses.refusal(address) == why


async def test_a_private_address_is_refused_at_registration_and_at_delivery(
    engine: Engine, clock: ManualClock, receiver: Receiver, maria: str
) -> None:
    with (
        pytest.raises(InvalidInput, match=r"127\.0\.0\.1, a loopback address"),
        engine.begin() as conn,
    ):
        endpoints.add(
            conn,
            receiver.url,
            [EventType.CUSTOMER_UNSUBSCRIBED],
            allow_private=False,
            created_by="ada",
            now=clock.now(),
        )
    register(engine, clock, receiver.url, EventType.CUSTOMER_UNSUBSCRIBED)  # allowed then
    with engine.begin() as conn:
        profiles.unsubscribe(conn, maria, clock.now())
    strict = WebhookSettings(allow_private=False)
    assert await worker(engine, clock, strict).deliver_due() == 1
    assert receiver.received == []
    with engine.connect() as conn:
        (row,) = deliveries.find(conn)
    assert row["status"] == "queued" and row["last_status_code"] is None
    assert row["last_error"].startswith("refused: 127.0.0.1 resolves to 127.0.0.1, a loopback")


def test_urls_nobody_could_post_to_are_refused() -> None:
    for url, said in [
        ("ftp://example.com/x", "is not an http:// or https:// URL"),
        ("https://user:pw@example.com/", "carries a user, password"),
        ("http://example.com:99999/", "is not a URL"),
        ("https:///path", "is not an http:// or https:// URL"),
        ("https://example.com/a b", "has spaces, control or non-ASCII"),
        ("https://example.com/x\r\nX-Evil: 1", "has spaces, control or non-ASCII"),
        ("https://bücher.example/", "has spaces, control or non-ASCII"),
    ]:
        with pytest.raises(InvalidInput, match=said):
            addresses.parse(url)


async def test_an_admin_adds_lists_and_removes_webhooks(
    mailer: Mailer, project: dict[str, str], receiver: Receiver
) -> None:
    mailer("db", "upgrade")
    refused = mailer("webhooks", "add", receiver.url, "--event", "message.sent", check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip() == (
        "error: URL: 127.0.0.1 resolves to 127.0.0.1, a loopback address; "
        "set [webhooks] allow_private = true to allow it"
    )
    project["MAILER_WEBHOOKS__ALLOW_PRIVATE"] = "true"
    made = mailer(
        "webhooks", "add", receiver.url, "--event", "message.sent", "--event", "inquiry.created"
    )
    secret = made.stdout.strip()
    assert secret.startswith("whsec_") and "shown only now" in made.stderr
    wrong = mailer("webhooks", "add", receiver.url, "--event", "message.opened", check=False)
    assert wrong.stderr.strip().startswith("error: --event: unknown event 'message.opened'; one of")
    (listed,) = json.loads(mailer("webhooks", "list", "--json").stdout)
    assert listed["events"] == "inquiry.created message.sent"
    assert secret not in json.dumps(listed) and listed["disabled_at"] is None
    removed = mailer("webhooks", "remove", str(listed["id"]))
    assert removed.stdout.strip() == (
        f"webhook {listed['id']} ({receiver.url}) is removed; 0 waiting deliveries dropped"
    )
    assert json.loads(mailer("webhooks", "list", "--json").stdout)[0]["disabled_at"]
    assert json.loads(mailer("webhooks", "deliveries", "--failed", "--json").stdout) == []
    again = mailer("webhooks", "retry", "7", check=False)
    assert again.stderr.strip().startswith("error: delivery 7 was not queued again: only a")
    missing = mailer("webhooks", "remove", "99", check=False)
    assert missing.stderr.strip() == "error: no webhook 99; `mailer webhooks list` shows them"


async def test_an_admin_sees_each_attempt_of_a_failed_delivery_on_the_webhooks_page(
    page: Page,
    site: Site,
    staff: dict[str, str],
    engine: Engine,
    clock: ManualClock,
    receiver: Receiver,
    maria: str,
) -> None:
    register(engine, clock, receiver.url, EventType.CUSTOMER_UNSUBSCRIBED)
    receiver.answers = [500]
    with engine.begin() as conn:
        profiles.unsubscribe(conn, maria, clock.now())
    await worker(engine, clock, WebhookSettings(allow_private=True, max_attempts=1)).deliver_due()
    await sign_in(page, site, "ada")
    await page.goto(site.url + "/webhooks?failed=1")
    await expect(page.locator("#webhook-1")).to_contain_text(receiver.url)
    delivery = page.locator("tbody tr[id^=delivery-]")
    await expect(delivery).to_have_count(1)
    await expect(delivery).to_contain_text("customer.unsubscribed")
    await expect(delivery.locator(".badge")).to_have_text("failed")
    await expect(delivery.get_by_role("listitem")).to_contain_text("500 the receiver answered 500")
    await sign_in(page, site, "mia")
    response = await page.goto(site.url + "/webhooks")
    assert response is not None and response.status == 403
