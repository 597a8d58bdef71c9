"""Bounces and complaints about our mail: each message returns to its own address (VERP), so
a report names the message and customer whatever the reporting server writes; hard bounces
suppress, soft ones count, complaints unsubscribe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from mailer import daemon
from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.customers import profiles
from mailer.inbound import autoreply, intake
from mailer.inbound.intake import AckPolicy
from mailer.inbound.parsing import parse
from mailer.inbound.reports import kind_of
from mailer.outbound import bounces, outbox, return_path
from mailer.outbound.bounces import Sent
from mailer.outbound.delivery import Delivery
from mailer.outbound.outbox import NewMessage
from mailer.outbound.smtp import SmtpTarget
from mailer.store.models import OutboxStatus
from tests.configs import shipped_config
from tests.conftest import add_customers
from tests.smtp_sink import Sink

BOUNCES = Path(__file__).parent / "mail" / "bounces"
RETURN_PATH = "bounces@northwind-roasters.example"
SECRET = b"k" * 32


def test_a_return_path_names_its_message_only_with_a_valid_signature() -> None:
    made = return_path.address(SECRET, RETURN_PATH, 4242)
    assert made.startswith("bounces+m4242-") and made.endswith("@northwind-roasters.example")
    assert return_path.message_id(SECRET, RETURN_PATH, f"<{made}>") == 4242
    assert return_path.message_id(SECRET, RETURN_PATH, made.upper()) == 4242, "case changed"
    forged = made.replace("m4242", "m4243")
    assert return_path.message_id(SECRET, RETURN_PATH, forged) is None
    assert return_path.message_id(b"other" * 8, RETURN_PATH, made) is None
    elsewhere = made.replace("northwind-roasters.example", "evil.example")
    assert return_path.message_id(SECRET, RETURN_PATH, elsewhere) is None


@pytest.mark.parametrize(
    ("status", "action", "permanent", "kind"),
    [
        ("5.1.1", "failed", True, "hard"),  # no such user
        ("5.2.2", "failed", True, "soft"),  # mailbox full: its owner may empty it
        ("4.2.2", "failed", False, "soft"),
        ("4.4.7", "failed", False, "soft"),  # gave up after retrying
        ("4.4.1", "delayed", False, "delay"),  # still trying: not a bounce yet
        ("", "", True, "hard"),  # a server's own format, read as permanent
        ("", "", False, "delay"),
    ],
)
def test_what_a_reported_failure_counts_as(
    status: str, action: str, permanent: bool, kind: str
) -> None:
    failure = autoreply.Failure(
        address="x@example.com", permanent=permanent, status=status, action=action
    )
    assert kind_of(failure) == kind


def test_a_soft_run_is_broken_by_a_message_that_did_not_bounce() -> None:
    day = datetime(2026, 11, 1, tzinfo=UTC)
    at = [day + timedelta(days=n) for n in range(5)]
    assert bounces.soft_run([Sent(at[0], True), Sent(at[1], True), Sent(at[2], True)]) == 3
    assert bounces.soft_run([Sent(at[0], True), Sent(at[1], False), Sent(at[2], True)]) == 1
    # reports arrive in any order; the run is judged in the order the mail was sent
    assert bounces.soft_run([Sent(at[2], True), Sent(at[0], False), Sent(at[1], True)]) == 2
    assert bounces.soft_run([]) == 0


CUSTOMERS = (
    "email,name,locale,tags\n"
    "maria@example.com,Мария Иванова,bg,newsletter\n"
    "siti@example.com,Siti Rahmawati,id,newsletter\n"
    "emma@example.com,Emma Wilson,en,newsletter\n"
)


@pytest.fixture
def verp_cfg(tmp_path: Path) -> Config:
    return shipped_config(
        tmp_path,
        {
            "MAILER_BOUNCES__RETURN_PATH": RETURN_PATH,
            "MAILER_WEB__BASE_URL": "https://mail.northwind-roasters.example",
        },
    )


@pytest.fixture
def delivery(
    verp_cfg: Config, engine: Engine, clock: ManualClock, sink: tuple[Sink, int], tmp_path: Path
) -> Delivery:
    add_customers(engine, tmp_path, CUSTOMERS, clock.now())
    target = SmtpTarget(host="127.0.0.1", port=sink[1], pool_size=2)
    return daemon.build_delivery(verp_cfg, engine, clock, target)


async def send(engine: Engine, delivery: Delivery, clock: ManualClock, *who: str) -> dict[str, int]:
    """A message to each named customer, delivered (transactional: no caps between the
    days of a test); their outbox ids by name."""
    with engine.connect() as conn:
        ids = {c.email.split("@")[0]: c.id for c in profiles.find(conn)}
    stamp = clock.now().strftime("%Y%m%d%H%M")
    messages = [
        NewMessage(
            dedupe_key=f"news:{stamp}:{name}",
            to_address=f"{name}@example.com",
            customer_id=ids[name],
            category=Category.TRANSACTIONAL,
            template="newsletter",
            context={"params": {"headline": "Новини", "intro": "Нов бленд."}},
            valid_for=timedelta(days=3),
        )
        for name in who
    ]
    outbox.enqueue(engine, messages, clock.now())
    assert await delivery.deliver_due() == len(who)
    with engine.connect() as conn:
        rows = outbox.find(conn, limit=1000)
    return {
        str(r["to_address"]).split("@")[0]: int(r["id"])  # type: ignore[call-overload]
        for r in rows
        if str(r["dedupe_key"]).startswith(f"news:{stamp}:")
    }


def report(engine: Engine, cfg: Config, raw: bytes, now: datetime) -> str:
    """A report arriving in the support mailbox, as the watcher hands it on; its decision."""
    with engine.begin() as conn:
        logged = intake.handle(conn, parse(raw), now, AckPolicy.from_config(cfg))
    with engine.connect() as conn:
        row = conn.execute(
            select(intake.inquiries.INQUIRIES.c.decision).where(
                intake.inquiries.INQUIRIES.c.id == logged.inquiry_id
            )
        ).scalar_one()
    return str(row)


def bounce_to(verp: str, name: str) -> bytes:
    """A real server's bounce (a corpus file) as delivered to our return path: the
    delivering server adds Delivered-To; the report inside names someone else entirely."""
    return f"Delivered-To: {verp}\r\n".encode() + (BOUNCES / name).read_bytes()


def suppressed(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(profiles.CUSTOMERS.c.email, profiles.CUSTOMERS.c.suppressed_reason).where(
                profiles.CUSTOMERS.c.suppressed_reason.is_not(None)
            )
        )
        return {row.email: row.suppressed_reason for row in rows}


def status_of(engine: Engine, outbox_id: int) -> str:
    with engine.connect() as conn:
        row = outbox.get(conn, outbox_id)
    assert row is not None
    return str(row["status"])


def hard_corpus() -> list[str]:
    """Corpus bounces from different servers that report a permanent failure."""
    found = []
    for path in sorted(BOUNCES.glob("*.eml")):
        failures = autoreply.failures(parse(path.read_bytes()).message)  # type: ignore[arg-type]
        if any(kind_of(f) == "hard" for f in failures):
            found.append(path.name)
    return found


async def test_corpus_bounces_from_many_servers_each_name_the_right_message(
    engine: Engine,
    verp_cfg: Config,
    delivery: Delivery,
    clock: ManualClock,
    sink: tuple[Sink, int],
    tmp_path: Path,
) -> None:
    corpus = hard_corpus()
    servers = {name.split("-")[1] for name in corpus}
    assert len(corpus) >= 20 and len(servers) >= 15, corpus
    people = [f"c{n}" for n in range(len(corpus))]
    add_customers(
        engine,
        tmp_path,
        "email,name\n" + "".join(f"{p}@example.com,{p}\n" for p in people),
        clock.now(),
    )
    ids = await send(engine, delivery, clock, *people)
    envelope = {r.rcpt_tos[0].split("@")[0]: r.mail_from for r in sink[0].received}
    for who, outbox_id in ids.items():
        assert envelope[who].startswith(f"bounces+m{outbox_id}-"), "its own return path"
    # each report goes to one message's return path; the text inside names other people
    for who, bounce in zip(people, corpus, strict=True):
        assert report(engine, verp_cfg, bounce_to(envelope[who], bounce), clock.now()) == "bounce"
    gone = suppressed(engine)
    for who, bounce in zip(people, corpus, strict=True):
        assert status_of(engine, ids[who]) == OutboxStatus.BOUNCED, bounce
        assert gone[f"{who}@example.com"].startswith("hard bounce reported"), bounce
    assert not {"maria@example.com", "siti@example.com", "emma@example.com"} & set(gone)


async def test_a_soft_bounce_counts_and_a_run_of_them_suppresses(
    engine: Engine, verp_cfg: Config, delivery: Delivery, clock: ManualClock, sink: tuple[Sink, int]
) -> None:
    soft = _dsn("4.2.2", "failed", "552 mailbox full")
    secret = AckPolicy.from_config(verp_cfg).secret
    for day in range(3):
        (outbox_id,) = (await send(engine, delivery, clock, "siti")).values()
        verp = return_path.address(secret, RETURN_PATH, outbox_id)
        assert report(engine, verp_cfg, soft(verp), clock.now()) == "bounce"
        assert status_of(engine, outbox_id) == OutboxStatus.SENT, "a soft bounce only counts"
        if day < 2:
            assert "siti@example.com" not in suppressed(engine)
        clock.advance(timedelta(days=1))
    assert suppressed(engine)["siti@example.com"].startswith("3 soft bounces in a row (4.2.2)")

    # for emma, a message that went through breaks the run
    verps = []
    for _ in range(4):
        (outbox_id,) = (await send(engine, delivery, clock, "emma")).values()
        verps.append(return_path.address(secret, RETURN_PATH, outbox_id))
        clock.advance(timedelta(days=1))
    for n in (0, 1, 3):  # the third message (n=2) was delivered
        report(engine, verp_cfg, soft(verps[n]), clock.now())
    assert "emma@example.com" not in suppressed(engine)


def arf(original: bytes, *, headers_only: bool) -> bytes:
    """A feedback-loop report (RFC 5965) as a mailbox provider sends it: the original comes
    back whole, or as its headers only."""
    kind = "text/rfc822-headers" if headers_only else "message/rfc822"
    returned = original.split(b"\r\n\r\n")[0] + b"\r\n" if headers_only else original
    return (
        b"From: Feedback Loop <fbl@feedback.mail.example.id>\r\n"
        b"To: support@northwind-roasters.example\r\nSubject: complaint about message\r\n"
        b"Date: Wed, 02 Dec 2026 10:00:00 +0000\r\nMessage-ID: <fbl-1@mail.example.id>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=feedback-report; boundary="p"\r\n\r\n'
        b"--p\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        b"--p\r\nContent-Type: message/feedback-report\r\n\r\n"
        b"Feedback-Type: abuse\r\nUser-Agent: FBL/1.0\r\nVersion: 1\r\n"
        b"--p\r\nContent-Type: " + kind.encode() + b"\r\n\r\n" + returned + b"\r\n--p--\r\n"
    )


@pytest.mark.parametrize("headers_only", [False, True])
async def test_a_complaint_unsubscribes_the_customer_from_marketing_at_once(
    engine: Engine,
    verp_cfg: Config,
    delivery: Delivery,
    clock: ManualClock,
    sink: tuple[Sink, int],
    headers_only: bool,
) -> None:
    (outbox_id,) = (await send(engine, delivery, clock, "maria")).values()
    (received,) = sink[0].received
    # the provider that received it added the return path it came with
    original = f"Return-Path: <{received.mail_from}>\r\n".encode() + received.data
    clock.advance(timedelta(hours=2))
    assert (
        report(engine, verp_cfg, arf(original, headers_only=headers_only), clock.now()) == "bounce"
    )
    with engine.connect() as conn:
        maria = profiles.get(conn, "maria@example.com")
        (change, *_) = profiles.history(conn, maria.id)
        kinds = conn.execute(select(bounces.REPORTS.c.kind, bounces.REPORTS.c.outbox_id)).all()
    assert maria.unsubscribed_at == clock.now() and maria.suppressed_reason is None
    assert (change.field, change.actor) == (
        "unsubscribed_at",
        "complaint via feedback.mail.example.id",
    )
    assert [tuple(k) for k in kinds] == [("complaint", outbox_id)]


async def test_feedback_that_is_no_complaint_unsubscribes_nobody(
    engine: Engine, verp_cfg: Config, delivery: Delivery, clock: ManualClock, sink: tuple[Sink, int]
) -> None:
    """A DMARC failure report (RFC 6591) is an ARF report too, about our authentication."""
    await send(engine, delivery, clock, "maria")
    (received,) = sink[0].received
    original = f"Return-Path: <{received.mail_from}>\r\n".encode() + received.data
    dmarc = arf(original, headers_only=True).replace(b"abuse", b"auth-failure")
    assert report(engine, verp_cfg, dmarc, clock.now()) == "bounce"
    with engine.connect() as conn:
        assert profiles.get(conn, "maria@example.com").unsubscribed_at is None
        assert conn.execute(select(bounces.REPORTS.c.kind)).all() == []


async def test_a_complaint_without_a_return_path_finds_the_customer_by_the_unsubscribe_link(
    engine: Engine, cfg: Config, clock: ManualClock, sink: tuple[Sink, int], tmp_path: Path
) -> None:
    """Some providers strip the recipient and Message-ID from the copy they return; the
    signed List-Unsubscribe link still says whose message it was."""
    add_customers(engine, tmp_path, CUSTOMERS, clock.now())
    target = SmtpTarget(host="127.0.0.1", port=sink[1], pool_size=1)
    delivery = daemon.build_delivery(cfg, engine, clock, target)
    with engine.connect() as conn:
        siti = profiles.get(conn, "siti@example.com")
    news = NewMessage(
        dedupe_key="news:1:siti",
        to_address="siti@example.com",
        customer_id=siti.id,
        category=Category.MARKETING,
        template="newsletter",
        context={"params": {"headline": "Berita", "intro": "Kopi baru."}},
        valid_for=timedelta(days=3),
    )
    outbox.enqueue(engine, [news], clock.now())
    assert await delivery.deliver_due() == 1
    (received,) = sink[0].received
    redacted = b"\r\n".join(
        line
        for line in received.data.split(b"\r\n")
        if not line.lower().startswith((b"message-id:", b"to:"))
    )
    assert report(engine, cfg, arf(redacted, headers_only=True), clock.now()) == "bounce"
    with engine.connect() as conn:
        assert profiles.get(conn, "siti@example.com").unsubscribed_at == clock.now()
        assert profiles.get(conn, "maria@example.com").unsubscribed_at is None


def _dsn(  # type: ignore[no-untyped-def]
    status: str, action: str, diagnostic: str, recipient: str = "someone-else@example.id"
):
    """An RFC 3464 report about a message of ours, to its return path."""

    def make(verp: str) -> bytes:
        return (
            f"Delivered-To: {verp}\r\nFrom: MAILER-DAEMON@mx.example.id\r\nTo: {verp}\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nThe mailbox is full.\r\n"
            "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.example.id\r\n\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\n"
            f"Action: {action}\r\nStatus: {status}\r\n"
            f"Diagnostic-Code: smtp; {diagnostic}\r\n--b--\r\n"
        ).encode()

    return make


async def test_a_hard_bounce_naming_an_international_domain_suppresses_its_customer(
    engine: Engine, clock: ManualClock, tmp_path: Path
) -> None:
    """Mail to bücher.example goes out as xn--bcher-kva.example, and a report that names no
    message of ours names that form, in whatever case: it is the same customer."""
    add_customers(engine, tmp_path, "email,name\nsiti@bücher.example,Siti\n", clock.now())
    hard = _dsn("5.1.1", "failed", "550 no such user", "Siti@XN--BCHER-KVA.example")
    cfg = shipped_config(tmp_path, {})
    assert report(engine, cfg, hard("support@northwind-roasters.example"), clock.now()) == "bounce"
    assert suppressed(engine)["siti@bücher.example"].startswith("hard bounce reported")
