"""What happens to an inquiry once it is logged, whichever way it came (the support
mailbox or the website's inquiry form): the autoreply rules decide, an acknowledgement is
queued through the outbox in the same transaction, a bounce stops mail to its address.

One path for every channel, so a question asked on the website is acknowledged by the same
rules and template as one sent by mail. No mailbox here: the web app loads this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from mailer.core.categories import Category
from mailer.core.config import Config
from mailer.customers import profiles, tokens
from mailer.inbound import autoreply, inquiries, language, reports, rsvp
from mailer.inbound.business_hours import BusinessHours, reply_expected_by
from mailer.inbound.parsing import Inbound
from mailer.outbound import outbox
from mailer.outbound.outbox import NewMessage
from mailer.outbound.prepare import LOOP_HEADER
from mailer.outbound.templates import TemplateStore
from mailer.store.models import InquiryStatus


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
    report_policy: reports.ReportPolicy  # what bounces and complaints change
    templates: TemplateStore  # which languages the acknowledgement is written in

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
            report_policy=reports.ReportPolicy.from_config(cfg),
            templates=TemplateStore(cfg.templates_dir),
        )

    def language_of(self, inbound: Inbound) -> str | None:
        """The language the sender wrote in, if the acknowledgement is written in it too."""
        offered = self.templates.languages(self.template)
        return language.written_in(f"{inbound.subject}\n{inbound.reply_text}", offered)


def handle(
    conn: Connection, inbound: Inbound, now: datetime, policy: AckPolicy, channel: str = "mail"
) -> inquiries.Logged:
    """Log one message, decide, and queue its acknowledgement, all in the caller's transaction."""
    logged = inquiries.log(conn, inbound, now, channel, lambda: policy.language_of(inbound))
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
        reports.record(conn, inbound.message, now, policy.report_policy)
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
