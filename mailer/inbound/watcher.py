"""The inbox watcher: every message in the support mailbox becomes an inquiry, and those
from people get an acknowledgement through the outbox.

A message is marked processed on the server only after its inquiry (and its
acknowledgement, in the same transaction) is committed, and the last UID is kept with
the mailbox's UIDVALIDITY, so a restart at any moment loses no mail and logs none twice.
When UIDVALIDITY changes the mailbox is read again from the start and Message-IDs
already logged are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InterfaceError, OperationalError

from mailer.core.categories import Category
from mailer.core.clock import Clock
from mailer.core.config import Config
from mailer.customers import profiles, tokens
from mailer.inbound import autoreply, inquiries, rsvp
from mailer.inbound.business_hours import BusinessHours, reply_expected_by
from mailer.inbound.mailbox import Fetched, Mailbox, MailboxUnavailable
from mailer.inbound.parsing import MAX_RAW, Inbound, parse
from mailer.outbound import outbox
from mailer.outbound.outbox import NewMessage
from mailer.outbound.prepare import LOOP_HEADER
from mailer.store.models import MAILBOX_STATE, InquiryStatus

log = logging.getLogger("mailer.inbound.watcher")

RECONNECT = (1.0, 300.0)  # first and longest wait before reconnecting
IDLE_SECONDS = 25 * 60  # re-issue IDLE well before the 29 minutes of RFC 2177
# Failures that say nothing about the message: wait and try again, never log it as failed.
UNAVAILABLE = (MailboxUnavailable, OperationalError, InterfaceError)


@dataclass(frozen=True, slots=True, kw_only=True)
class AckPolicy:
    """Everything the acknowledgement decision needs from the configuration."""

    identity: autoreply.Identity
    hours: BusinessHours
    template: str
    enabled: bool
    once_per_sender: timedelta
    answer_within: timedelta
    max_per_day: int
    secret: bytes  # checks the tokens in unsubscribe requests sent to our mailto: link

    @classmethod
    def from_config(cls, cfg: Config) -> AckPolicy:
        settings = cfg.settings
        ours = [
            parseaddr(a)[1].lower() for a in (settings.sender.from_, settings.sender.reply_to) if a
        ]
        domains = {a.rpartition("@")[2] for a in ours}
        return cls(
            identity=autoreply.Identity(frozenset(ours), frozenset(domains), LOOP_HEADER),
            hours=BusinessHours.from_settings(settings.business_hours),
            template=settings.autoreply.template,
            enabled=settings.autoreply.enabled,
            once_per_sender=settings.autoreply.once_per_sender,
            answer_within=settings.autoreply.answer_within,
            max_per_day=settings.autoreply.max_per_day,
            secret=tokens.load_secret(cfg),
        )


def handle(
    conn: Connection, inbound: Inbound, now: datetime, policy: AckPolicy
) -> inquiries.Logged:
    """Log one message, decide, and queue its acknowledgement, all in the caller's transaction."""
    logged = inquiries.log(conn, inbound, now)
    if logged.duplicate:
        return logged
    if _unsubscribed(conn, inbound, logged, now, policy) or _answered(
        conn, inbound, logged, now, policy
    ):
        return logged
    decided = _decide(conn, inbound, logged, now, policy)
    acknowledge = decided.acknowledge and policy.enabled and logged.customer_id is not None
    if acknowledge:
        outbox.enqueue_in(conn, [_acknowledgement(inbound, logged, now, policy)], now)
    if decided.kind == "bounce" and inbound.message is not None:
        _record_bounce(conn, inbound.message, now)
    status = _status(acknowledge, decided.kind)
    inquiries.record_decision(
        conn, logged.inquiry_id, status=status, decision=decided.kind, reasons=list(decided.reasons)
    )
    if logged.thread_id is not None and decided.kind in inquiries.FROM_PEOPLE:  # not a robot
        inquiries.reopen(conn, logged.thread_id, inbound.sender, now)
    return logged


def _unsubscribed(
    conn: Connection, inbound: Inbound, logged: inquiries.Logged, now: datetime, policy: AckPolicy
) -> bool:
    """A request sent to our List-Unsubscribe mailto: link is carried out and closed."""
    unsubscribing = tokens.requested_by_mail(policy.secret, inbound.subject)
    if unsubscribing is None:
        return False
    profiles.unsubscribe_id(conn, unsubscribing, now)
    reason = f"List-Unsubscribe request by mail for customer {unsubscribing}"
    _close(conn, logged, "unsubscribe", reason)
    return True


def _answered(
    conn: Connection, inbound: Inbound, logged: inquiries.Logged, now: datetime, policy: AckPolicy
) -> bool:
    """A calendar's answer to one of our invitations is kept as the customer's answer and
    closed unacknowledged: a calendar sent it, and nobody at the desk needs to act on it.
    An answer about an event that is not ours is mail like any other."""
    reply = inbound.calendar_reply
    if reply is None:
        return False
    event = rsvp.event_of(conn, reply.uid, policy.identity.domains)
    customer_id = rsvp.customer_of(conn, reply, logged.customer_id)
    if event is None or customer_id is None:
        return False
    kept = rsvp.record(
        conn, reply, event, customer_id=customer_id, inquiry_id=logged.inquiry_id, now=now
    )
    late = "" if kept else "; kept the newer answer recorded before"
    _close(conn, logged, "calendar-reply", f"calendar-reply: {reply.attendee} {reply.answer}{late}")
    return True


def _close(conn: Connection, logged: inquiries.Logged, decision: str, reason: str) -> None:
    inquiries.record_decision(
        conn, logged.inquiry_id, status=InquiryStatus.CLOSED, decision=decision, reasons=[reason]
    )


def _status(acknowledged: bool, kind: str) -> InquiryStatus:
    """Robots' mail is logged and closed; people's mail waits for a human."""
    if acknowledged:
        return InquiryStatus.ACKNOWLEDGED
    return InquiryStatus.NEW if kind in inquiries.FROM_PEOPLE else InquiryStatus.CLOSED


def _decide(
    conn: Connection, inbound: Inbound, logged: inquiries.Logged, now: datetime, policy: AckPolicy
) -> autoreply.Decision:
    if inbound.message is None:
        return autoreply.Decision(False, ("unparseable: " + "; ".join(inbound.defects),), "inquiry")
    history = _history(conn, inbound.sender, logged, now)
    return autoreply.decide(
        inbound.message,
        policy.identity,
        history,
        now,
        once_per_sender=policy.once_per_sender,
        max_per_day=policy.max_per_day,
    )


def _history(
    conn: Connection, sender: str, logged: inquiries.Logged, now: datetime
) -> autoreply.SenderHistory:
    acks = outbox.OUTBOX.c
    to_sender = (acks.to_address == sender) & inquiries.IS_ACKNOWLEDGEMENT
    last, today = conn.execute(
        select(
            func.max(acks.created_at),
            func.count().filter(acks.created_at >= now - timedelta(days=1)),
        ).where(to_sender)
    ).one()
    suppressed = conn.execute(
        select(profiles.CUSTOMERS.c.suppressed_reason).where(
            profiles.CUSTOMERS.c.id == logged.customer_id
        )
    ).scalar()
    return autoreply.SenderHistory(
        last_acknowledged_at=_aware(last),
        acknowledgements_last_day=int(today or 0),
        hard_bounced=suppressed is not None,
        thread_already_acknowledged=_thread_acknowledged(conn, logged),
    )


def _aware(value: Any) -> datetime | None:
    """Aggregates bypass the column type: SQLite hands back text or a naive datetime (UTC)."""
    if value is None:
        return None
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(when, datetime)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _thread_acknowledged(conn: Connection, logged: inquiries.Logged) -> bool:
    if logged.thread_id is None:
        return False
    table = inquiries.INQUIRIES
    members = select(table.c.id).where(
        (table.c.id == logged.thread_id) | (table.c.thread_id == logged.thread_id)
    )
    keys = [inquiries.ack_key(i) for i in conn.execute(members).scalars()]
    found = conn.execute(select(func.count()).where(outbox.OUTBOX.c.dedupe_key.in_(keys))).scalar()
    return bool(found)


def _acknowledgement(
    inbound: Inbound, logged: inquiries.Logged, now: datetime, policy: AckPolicy
) -> NewMessage:
    """RFC 3834: marked auto-replied, threaded, with the null sender so nothing bounces back."""
    headers = {"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"}
    if inbound.message_id:
        headers["In-Reply-To"] = inbound.message_id
        headers["References"] = " ".join([*inbound.references, inbound.message_id])
    inquiry = {
        "reference": inquiries.reference(logged.inquiry_id),
        "subject": inbound.subject,
        "received_at": now,
    }
    return NewMessage(
        dedupe_key=inquiries.ack_key(logged.inquiry_id),
        to_address=inbound.sender,
        category=Category.TRANSACTIONAL,
        template=policy.template,
        customer_id=logged.customer_id,
        context={
            "inquiry": inquiry,
            "reply_expected_by": reply_expected_by(now, policy.hours, policy.answer_within),
        },
        headers=headers,
        envelope_from="",
        priority=100,
        valid_for=timedelta(days=1),
    )


def _record_bounce(conn: Connection, message: EmailMessage, now: datetime) -> None:
    """A permanent failure marks the returned message bounced and stops all further mail to
    that address; the message is found by its Message-ID, the address also by the report."""
    failures = autoreply.bounced_addresses(message)
    permanent = [address.lower() for address, is_permanent in failures if is_permanent]
    if not permanent:
        return  # a delay: the sending server is still trying
    returned = autoreply.bounced_message_ids(message)
    reason = f"bounced: {', '.join(permanent)} reported permanent failure"
    permanent += (a.lower() for a in outbox.mark_bounced(conn, returned, reason, now))
    profiles.suppress(conn, permanent, f"hard bounce reported {now:%Y-%m-%d}", now)


def load_position(conn: Connection, mailbox: str, uidvalidity: int) -> int:
    """The last UID handled, or 0 when the mailbox is new or its UIDVALIDITY changed."""
    row = (
        conn.execute(select(MAILBOX_STATE).where(MAILBOX_STATE.c.mailbox == mailbox))
        .mappings()
        .first()
    )
    if row is None or row["uidvalidity"] != uidvalidity:
        return 0
    return int(row["last_uid"])


def save_position(
    conn: Connection, mailbox: str, uidvalidity: int, uid: int, now: datetime
) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    values = {"mailbox": mailbox, "uidvalidity": uidvalidity, "last_uid": uid, "updated_at": now}
    statement = dialect.insert(MAILBOX_STATE).values(**values)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["mailbox"],
            set_={k: statement.excluded[k] for k in ("uidvalidity", "last_uid", "updated_at")},
        )
    )


@dataclass(kw_only=True)
class Inbox:
    engine: Engine
    open_mailbox: Callable[[], Mailbox]
    policy: AckPolicy
    clock: Clock
    processed: str = "flag"
    poll_seconds: float = 60.0  # only for servers without IDLE
    max_raw: int = MAX_RAW
    on_queued: Callable[[], None] = lambda: None
    rng: random.Random = field(default_factory=random.Random)
    _mailbox: Mailbox | None = None
    _swept: bool = False

    async def process_available(self) -> int:
        """Log everything not yet handled; returns how many messages were new.

        Each fetched list is committed in one transaction with the new position and then
        marked on the server with one command: a backlog costs a commit and a round trip
        per hundred messages, not per message.
        """
        mailbox = await self._connected()
        name = mailbox.name
        last = await asyncio.to_thread(self._position, name, mailbox.uidvalidity)
        if not self._swept:  # once per connection: what an interruption left unmarked
            await mailbox.mark_processed(await mailbox.unmarked_up_to(last), self.processed)
            self._swept = True
        handled = 0
        async for fetched in mailbox.fetch_after(last):
            await asyncio.to_thread(self._commit, name, mailbox.uidvalidity, fetched)
            self.on_queued()  # their acknowledgements can go at once, not at the next poll
            await mailbox.mark_processed([f.uid for f in fetched], self.processed)
            handled += len(fetched)
        if handled:
            log.info("inbox: %d new message(s) in %s logged", handled, name)
        return handled

    def _position(self, name: str, uidvalidity: int) -> int:
        with self.engine.connect() as conn:
            return load_position(conn, name, uidvalidity)

    def _commit(self, name: str, uidvalidity: int, fetched: list[Fetched]) -> None:
        """All or nothing per list; if the list fails, each message again on its own, so one
        message that breaks the decision is logged as failed and the others as usual."""
        now = self.clock.now()
        try:
            # parsed before the transaction: SQLite's one writer is not kept waiting on MIME
            parsed = [parse(message.raw, max_raw=self.max_raw) for message in fetched]
            with self.engine.begin() as conn:
                for inbound in parsed:
                    handle(conn, inbound, now, self.policy)
                save_position(conn, name, uidvalidity, fetched[-1].uid, now)
        except UNAVAILABLE:
            raise  # the server or the database is unreachable: no message is to blame
        except Exception:
            if len(fetched) == 1:
                self._commit_failed(name, uidvalidity, fetched[0], now)
            else:
                for message in fetched:
                    self._commit(name, uidvalidity, [message])

    def _commit_failed(self, name: str, uidvalidity: int, message: Fetched, now: datetime) -> None:
        error = traceback.format_exc(limit=-3)
        log.exception("inbox: message UID %d could not be handled; logged as failed", message.uid)
        with self.engine.begin() as conn:
            inquiries.log_failed(conn, message.raw[: self.max_raw], error, now)
            save_position(conn, name, uidvalidity, message.uid, now)

    async def _connected(self) -> Mailbox:
        if self._mailbox is None:
            mailbox = self.open_mailbox()
            await mailbox.open()
            self._mailbox, self._swept = mailbox, False
        return self._mailbox

    async def close(self) -> None:
        if self._mailbox is not None:
            mailbox, self._mailbox = self._mailbox, None
            await mailbox.close()

    async def _wait_for_new(self) -> None:
        mailbox = await self._connected()
        await mailbox.wait_for_new(IDLE_SECONDS if mailbox.supports_idle else self.poll_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until stopped; any connection problem is logged and retried with backoff."""
        wait = RECONNECT[0]
        try:
            while not stop.is_set():
                try:
                    await self.process_available()
                    await _until_stop(stop, self._wait_for_new())
                    wait = RECONNECT[0]
                except UNAVAILABLE as exc:
                    log.warning("inbox unavailable, retrying in %.0f s: %s", wait, exc)
                    await self.close()
                    await _sleep_or_stop(stop, wait * self.rng.uniform(0.8, 1.2))
                    wait = min(wait * 2, RECONNECT[1])
        finally:
            await self.close()


async def _until_stop(stop: asyncio.Event, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` unless ``stop`` comes first; then cancel it (an IDLE may last minutes)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        task.result()
    else:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, MailboxUnavailable):
            await task


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
