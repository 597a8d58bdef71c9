"""A shop's system sends a receipt through the API: over real HTTP, on SQLite and
PostgreSQL, delivered to a real SMTP server, once however often the call is retried."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from mailer import daemon
from mailer.api.keys import Scope
from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import profiles
from mailer.outbound import outbox
from mailer.outbound.delivery import Delivery
from mailer.outbound.outbox import NewMessage
from mailer.outbound.smtp import SmtpTarget
from tests.configs import shipped_config
from tests.conftest import add_customers
from tests.site import Reply, Site
from tests.smtp_sink import Sink
from tests.test_api import PROBLEM, make_key, pointers, problem_of

TEMPLATES = {
    "receipt/subject.txt": "Your order {{ params.order }}",
    "receipt/body.txt": "Hello {{ customer.first_name or 'there' }},\n"
    "order {{ params.order }}: {{ params.total }}\n{{ params.note | default('') }}\n",
    "receipt/bg/subject.txt": "Вашата поръчка {{ params.order }}",
    "receipt/bg/body.txt": "Здравейте, {{ customer.first_name }}! Поръчка {{ params.order }}.\n",
    "welcome/bg/subject.txt": "Добре дошли",  # no default to fall back to
    "welcome/bg/body.txt": "Здравейте!\n",
    # an acknowledgement: what it reads comes only with mailer's own messages
    "ack/subject.txt": "We got your message [#{{ inquiry.reference }}]",
    "ack/body.txt": "{% set by = reply_expected_by %}{{ customer.name }}, {{ by }}"
    " {{ range(1) | list }}\n",
    # names it asks `is defined` of, or gives a default, it does without
    "coupon/subject.txt": "{% if inquiry is defined %}Re: {{ inquiry.subject }}{% endif %}Hi",
    "coupon/body.txt": "{{ coupon | default('no code') }} {{ code | d('') }}\n",
}
RECEIPT = {"template": "receipt", "to": "ana@example.com", "data": {"order": "A-1", "total": "9 €"}}
BODY_LIMIT = 4096
ATTACHMENT_LIMIT = 51200  # bytes: [api] attachment_max_mb below
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    """The shipped config with a templates folder of its own and a small body limit."""
    for name, text in TEMPLATES.items():
        path = tmp_path / "templates" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return shipped_config(
        tmp_path,
        {
            "MAILER_PATHS__TEMPLATES": str(tmp_path / "templates"),
            "MAILER_API__MAX_BODY_BYTES": str(BODY_LIMIT),
            "MAILER_API__ATTACHMENT_MAX_MB": str(ATTACHMENT_LIMIT / 1024 / 1024),
            "MAILER_API__ATTACHMENT_MAX_COUNT": "3",
        },
    )


@pytest.fixture
def sender(engine: Engine, clock: ManualClock) -> dict[str, str]:
    return make_key(engine, clock, "checkout", Scope.SEND)


@pytest.fixture
def delivery(cfg: Config, engine: Engine, clock: ManualClock, sink: tuple[Sink, int]) -> Delivery:
    return daemon.build_delivery(cfg, engine, clock, SmtpTarget(host="127.0.0.1", port=sink[1]))


def send(site: Site, body: object, headers: dict[str, str], key: str = "order-A-1") -> Reply:
    return site.call("POST", "/api/v1/messages", body, {**headers, "Idempotency-Key": key})


def rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(outbox.OUTBOX)).scalar_one())


async def test_a_receipt_is_accepted_then_delivered_with_its_data_and_shown_as_sent(
    site: Site,
    sender: dict[str, str],
    delivery: Delivery,
    sink: tuple[Sink, int],
    engine: Engine,
) -> None:
    note = "{{ 7 * 7 }} {% if true %}x{% endif %} <b>"
    accepted = send(site, {**RECEIPT, "data": {**RECEIPT["data"], "note": note}}, sender)
    assert accepted.status == 202, accepted.body
    message = accepted.json()
    assert message["status"] == "queued" and message["to"] == "ana@example.com"
    assert accepted.headers["location"] == f"/api/v1/messages/{message['id']}"

    assert await delivery.deliver_due() == 1
    (received,) = sink[0].received
    assert received.rcpt_tos == ["ana@example.com"]
    assert received.message["Subject"] == "Your order A-1"
    text = received.message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Hello there,\norder A-1: 9 €" in text
    assert note in text and "49" not in text  # data is shown as text, never run
    assert "List-Unsubscribe" not in received.message  # transactional
    with engine.connect() as conn:
        assert profiles.find(conn) == []  # a stranger is sent to, not added

    shown = site.call("GET", accepted.headers["location"], headers=sender).json()
    assert shown["status"] == "sent" and shown["sent_at"] and shown["reason"] is None
    (attempt,) = shown["attempts"]
    assert attempt["outcome"] == "sent" and attempt["smtp_reply"]


async def test_a_receipt_goes_out_before_mail_queued_earlier_at_the_usual_priority(
    site: Site,
    sender: dict[str, str],
    delivery: Delivery,
    sink: tuple[Sink, int],
    engine: Engine,
    clock: ManualClock,
) -> None:
    """Someone at the shop's checkout waits for the receipt; the campaign queued before it
    (a schedule's mail, priority 0 unless its file says more) can wait: the receipt is
    claimed first, as acknowledgements and desk replies are."""
    earlier = [
        NewMessage(
            dedupe_key=f"campaign:{n}",
            to_address=f"reader{n}@example.com",
            category=Category.TRANSACTIONAL,
            template="receipt",
            context={"params": {"order": f"C-{n}", "total": "1 €"}},
        )
        for n in range(3)
    ]
    outbox.enqueue(engine, earlier, clock.now())
    assert send(site, RECEIPT, sender).status == 202
    delivery.batch_size = 1  # one at a time, so the order at the server is the claims'
    assert await delivery.deliver_due() == 4
    assert sink[0].received[0].rcpt_tos == ["ana@example.com"]


async def test_a_known_customer_gets_it_in_their_language_with_their_name(
    site: Site,
    sender: dict[str, str],
    delivery: Delivery,
    sink: tuple[Sink, int],
    engine: Engine,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    add_customers(
        engine, tmp_path, "email,name,locale\nana@example.com,Ана Иванова,bg\n", clock.now()
    )
    assert send(site, {**RECEIPT, "to": "Ana@Example.com"}, sender).status == 202
    await delivery.deliver_due()
    (received,) = sink[0].received
    assert received.message["Subject"] == "Вашата поръчка A-1"
    assert "Здравейте, Ана!" in received.message.get_body(("plain",)).get_content()
    with engine.connect() as conn:
        customer = profiles.get(conn, "ana@example.com")
        (row,) = outbox.find(conn, customer_id=customer.id)
    assert row["category"] == Category.TRANSACTIONAL


async def test_the_same_idempotency_key_sends_once_and_with_another_body_is_refused(
    site: Site,
    sender: dict[str, str],
    delivery: Delivery,
    sink: tuple[Sink, int],
    engine: Engine,
    clock: ManualClock,
) -> None:
    first = send(site, RECEIPT, sender).json()
    reordered = {k: RECEIPT[k] for k in reversed(list(RECEIPT))}
    again = send(site, reordered, sender)
    assert again.status == 202 and again.json()["id"] == first["id"]
    await delivery.deliver_due()
    after = send(site, RECEIPT, sender).json()
    assert after["id"] == first["id"] and after["status"] == "sent"
    assert len(sink[0].received) == 1

    changed = {**RECEIPT, "data": {"order": "A-2", "total": "9 €"}}
    conflict = problem_of(send(site, changed, sender), 409)
    assert "Idempotency-Key" in str(conflict["errors"])
    other_key = make_key(engine, clock, "pos", Scope.SEND)
    assert send(site, changed, other_key).json()["id"] != first["id"]  # keys are per API key
    assert rows(engine) == 2


def test_ten_concurrent_retries_of_one_call_queue_one_message(
    site: Site, sender: dict[str, str], engine: Engine
) -> None:
    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda _: send(site, RECEIPT, sender), range(10)))
    assert {r.status for r in replies} == {202}, [r.body for r in replies]
    assert len({r.json()["id"] for r in replies}) == 1
    assert rows(engine) == 1


def test_each_invalid_field_is_named(site: Site, sender: dict[str, str]) -> None:
    def refused(body: object, status: int = 422) -> dict[str, str]:
        return pointers(problem_of(send(site, body, sender), status))

    assert set(refused({**RECEIPT, "to": "ana@@example.com"})) == {"/to"}
    unknown = refused({**RECEIPT, "template": "reciept"})
    assert "no such template" in unknown["/template"] and "receipt" in unknown["/template"]
    assert set(refused({**RECEIPT, "locale": "bulgarian!"})) == {"/locale"}
    assert "no variant" in refused({**RECEIPT, "template": "welcome", "locale": "en"})["/locale"]
    assert set(refused({**RECEIPT, "data": ["A-1"]})) == {"/data"}
    assert set(refused({**RECEIPT, "data": {"when": {"$date": "x"}}})) == {"/data/when/$date"}
    nan = refused({**RECEIPT, "data": {"total": float("nan")}})  # as some encoders write it
    assert nan == {"/data": "NaN and Infinity are not JSON numbers; send null or a number"}
    assert set(refused({**RECEIPT, "colour": "red"})) == {"/colour"}
    both = refused({**RECEIPT, "to": "nobody", "template": "nothing"})
    assert set(both) == {"/to", "/template"}
    assert "max_body_bytes" in str(
        problem_of(send(site, {**RECEIPT, "data": {"x": "y" * BODY_LIMIT}}, sender), 413)
    )
    welcome_bg = send(site, {**RECEIPT, "template": "welcome", "locale": "bg-BG"}, sender, "w")
    assert welcome_bg.status == 202  # bg-BG falls back to bg
    # accepted, it would have failed when rendered: refused now, naming what it lacks
    ack = refused({**RECEIPT, "template": "ack"})["/template"]
    assert ack.startswith("it reads inquiry, reply_expected_by, which a send does not give")
    assert send(site, {**RECEIPT, "template": "coupon"}, sender, "c").status == 202


def test_the_key_must_name_the_call_and_hold_the_send_scope(
    site: Site, sender: dict[str, str], engine: Engine, clock: ManualClock
) -> None:
    unnamed = site.call("POST", "/api/v1/messages", RECEIPT, sender)
    assert "idempotency-key" in str(problem_of(unnamed, 422)["errors"]).lower()
    reader = make_key(engine, clock, "reader", Scope.CUSTOMERS_READ)
    problem_of(send(site, RECEIPT, reader), 403)
    assert rows(engine) == 0


def test_a_send_is_judged_by_its_key_before_its_body_and_counted_once(
    site: Site, sender: dict[str, str], engine: Engine, clock: ManualClock
) -> None:
    wrong = {"Authorization": "Bearer mlr_" + "x" * 43}
    bad_bodies = [
        {**RECEIPT, "colour": "red"},  # refused by the model
        {**RECEIPT, "template": "reciept"},  # refused by mailer's own checks
        {**RECEIPT, "data": {"x": "y" * BODY_LIMIT}},  # too large, as JSON
    ]
    for body in bad_bodies:
        for headers in ({}, wrong):
            refused = send(site, body, headers)
            assert problem_of(refused, 401) and refused.headers["www-authenticate"] == "Bearer"
        assert problem_of(site.call("POST", "/api/v1/messages", body, wrong), 401)  # unnamed
    reader = make_key(engine, clock, "reader", Scope.CUSTOMERS_READ)
    for body in bad_bodies:
        problem_of(send(site, body, reader), 403)
    slow = make_key(engine, clock, "slow", Scope.SEND, rate=2)
    problem_of(send(site, bad_bodies[0], slow), 422)
    problem_of(send(site, bad_bodies[1], slow), 422)
    for body in (RECEIPT, bad_bodies[0]):
        past = send(site, body, slow)
        assert problem_of(past, 429) and "retry-after" in past.headers
    assert rows(engine) == 0


def test_an_erased_customer_is_forgotten_by_their_messages_and_not_sent_to_again(
    site: Site, sender: dict[str, str], engine: Engine, clock: ManualClock, tmp_path: Path
) -> None:
    add_customers(engine, tmp_path, "email\nana@example.com\n", clock.now())
    queued = send(site, RECEIPT, sender).json()
    admin = make_key(engine, clock, "admin", Scope.CUSTOMERS_WRITE)
    assert site.call("DELETE", "/api/v1/customers/ana@example.com", headers=admin).status == 200
    shown = site.call("GET", f"/api/v1/messages/{queued['id']}", headers=sender).json()
    assert shown["to"] == "" and shown["status"] == "skipped"
    with engine.connect() as conn:
        assert outbox.get(conn, queued["id"])["request_hash"] is None  # type: ignore[index]
    assert "erased" in pointers(problem_of(send(site, RECEIPT, sender), 422))["/to"]


async def test_data_the_template_cannot_render_fails_the_message_naming_the_line(
    site: Site, sender: dict[str, str], delivery: Delivery, sink: tuple[Sink, int]
) -> None:
    accepted = send(site, {**RECEIPT, "data": {"order": "A-1"}}, sender)
    assert accepted.status == 202  # checked as far as the files say, rendered at send
    await delivery.deliver_due()
    shown = site.call("GET", accepted.headers["location"], headers=sender).json()
    assert shown["status"] == "failed" and sink[0].received == []
    assert "receipt/body.txt:2" in shown["reason"] and "total" in shown["reason"]


def test_only_messages_sent_through_the_api_can_be_read(
    site: Site, sender: dict[str, str], engine: Engine, clock: ManualClock
) -> None:
    news = NewMessage(
        dedupe_key="news:1",
        to_address="ana@example.com",
        category="transactional",
        template="receipt",
    )
    outbox.enqueue(engine, [news], clock.now())
    with engine.connect() as conn:
        (row,) = outbox.find(conn)
    assert problem_of(site.call("GET", f"/api/v1/messages/{row['id']}", headers=sender), 404)
    assert problem_of(site.call("GET", "/api/v1/messages/999", headers=sender), 404)


def test_the_openapi_document_describes_the_send(site: Site) -> None:
    send_doc = site.call("GET", "/api/v1/openapi.json").json()["paths"]["/messages"]["post"]
    assert {"202", "409", "422"} <= set(send_doc["responses"])
    assert send_doc["responses"]["409"]["content"] == {
        PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemDocument"}}
    }
    (header,) = [p for p in send_doc["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key" and header["required"] is True


def test_a_suppressed_customer_is_not_sent_to_and_the_answer_says_why(
    site: Site, sender: dict[str, str], engine: Engine, clock: ManualClock, tmp_path: Path
) -> None:
    add_customers(engine, tmp_path, "email\nana@example.com\n", clock.now())
    with engine.begin() as conn:
        profiles.suppress(conn, ["ana@example.com"], "hard bounce", clock.now())
    message = send(site, RECEIPT, sender).json()
    assert message["status"] == "skipped" and message["reason"] == "suppressed: hard bounce"


def attached(
    filename: str, content: bytes, content_type: str = "application/pdf"
) -> dict[str, str]:
    encoded = base64.b64encode(content).decode()
    return {"filename": filename, "content_type": content_type, "content": encoded}


def stored_attachments(engine: Engine) -> int:
    with engine.connect() as conn:
        query = select(func.count()).select_from(outbox.ATTACHMENTS)
        return int(conn.execute(query).scalar_one())


async def test_attachments_arrive_intact_with_their_names_in_any_language(
    site: Site, sender: dict[str, str], delivery: Delivery, sink: tuple[Sink, int]
) -> None:
    notes = "Бележка: доставка до 17:00\n".encode()
    files = [attached("фактура-№42.pdf", PDF), attached("notes.txt", notes, "text/plain")]
    accepted = send(site, {**RECEIPT, "attachments": files}, sender)
    assert accepted.status == 202, accepted.body
    assert await delivery.deliver_due() == 1
    (received,) = sink[0].received
    message = received.message
    assert message.get_content_type() == "multipart/mixed"
    body = message.get_body(("plain",))
    assert body is not None and "order A-1: 9 €" in body.get_content()
    got = [
        (a.get_filename(), a.get_content_type(), a.get_payload(decode=True))
        for a in message.iter_attachments()
    ]
    assert got == [
        ("фактура-№42.pdf", "application/pdf", PDF),
        ("notes.txt", "text/plain", notes),
    ]
    assert b"filename*=utf-8''" in received.data  # RFC 2231, which every client reads


def test_attachments_past_the_limit_are_refused_and_nothing_is_queued(
    site: Site, sender: dict[str, str], engine: Engine
) -> None:
    over = [attached("a.pdf", PDF), attached("big.pdf", b"x" * (ATTACHMENT_LIMIT - len(PDF) + 1))]
    document = problem_of(send(site, {**RECEIPT, "attachments": over}, sender), 413)
    detail = str(document["detail"])
    assert "(51,200 bytes" in detail and "attachment_max_mb" in detail
    assert set(pointers(document)) == {"/attachments"}
    huge = [attached("huge.pdf", b"x" * ATTACHMENT_LIMIT * 2)]
    assert "attachment_max_mb" in str(
        problem_of(send(site, {**RECEIPT, "attachments": huge}, sender), 413)["detail"]
    )
    many = [attached(f"{n}.pdf", PDF) for n in range(4)]
    assert (
        "at most 3"
        in pointers(problem_of(send(site, {**RECEIPT, "attachments": many}, sender), 422))[
            "/attachments"
        ]
    )
    assert rows(engine) == 0 and stored_attachments(engine) == 0


def test_each_wrong_attachment_field_is_named(
    site: Site, sender: dict[str, str], engine: Engine
) -> None:
    wrong = [
        {**attached("a.pdf", PDF), "content": "not base64!"},
        attached(" ", PDF),
        attached("../../etc/passwd", PDF),
        attached("a\r\nb.pdf", PDF),
        attached("invoice.pdf", PDF, "application/x-msdownload"),
        attached("invoice.pdf.EXE", PDF),
        attached("invoice.pdf", b"MZ\x90\x00" + PDF),
        attached("invoice.pdf", PDF, "multipart/mixed"),
    ]
    found = {}
    for n, item in enumerate(wrong):
        body = {**RECEIPT, "attachments": [item]}
        found[n] = pointers(problem_of(send(site, body, sender, f"k{n}"), 422))
    assert found[0] == {"/attachments/0/content": "not base64"}
    assert "empty" in found[1]["/attachments/0/filename"]
    assert "folders" in found[2]["/attachments/0/filename"]
    assert "control" in found[3]["/attachments/0/filename"]
    assert "program" in found[4]["/attachments/0/content_type"]
    assert "program" in found[5]["/attachments/0/filename"]
    assert "program" in found[6]["/attachments/0/content"]
    assert "multipart" in found[7]["/attachments/0/content_type"]
    assert rows(engine) == 0


def test_the_idempotency_key_covers_the_attachments(
    site: Site, sender: dict[str, str], engine: Engine
) -> None:
    first = send(site, {**RECEIPT, "attachments": [attached("a.pdf", PDF)]}, sender).json()
    encoded = base64.encodebytes(PDF).decode()  # the same bytes in 76-character lines
    rewrapped = {**attached("a.pdf", PDF), "content": encoded}
    again = send(site, {**RECEIPT, "attachments": [rewrapped]}, sender)
    assert again.status == 202 and again.json()["id"] == first["id"]
    other = [attached("a.pdf", PDF + b"2")]
    problem_of(send(site, {**RECEIPT, "attachments": other}, sender), 409)
    problem_of(send(site, RECEIPT, sender), 409)  # without the file is another call too
    assert rows(engine) == 1 and stored_attachments(engine) == 1


def test_erasing_the_customer_deletes_their_attachments(
    site: Site, sender: dict[str, str], engine: Engine, clock: ManualClock, tmp_path: Path
) -> None:
    add_customers(engine, tmp_path, "email\nana@example.com\n", clock.now())
    send(site, {**RECEIPT, "attachments": [attached("a.pdf", PDF)]}, sender)
    send(
        site,
        {**RECEIPT, "to": "bo@example.com", "attachments": [attached("b.pdf", PDF)]},
        sender,
        "bo",
    )
    assert stored_attachments(engine) == 2
    admin = make_key(engine, clock, "admin", Scope.CUSTOMERS_WRITE)
    assert site.call("DELETE", "/api/v1/customers/ana@example.com", headers=admin).status == 200
    with engine.connect() as conn:
        (left,) = conn.execute(select(outbox.ATTACHMENTS.c.filename)).scalars()
    assert left == "b.pdf"  # another recipient's file stays
