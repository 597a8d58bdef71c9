"""What a machine's report about our mail changes: bounces suppress, complaints unsubscribe.

A report is attributed to the message it is about by the message's own return path (VERP,
signed, so it holds whatever the reporting server writes), else by the Message-ID of the
copy it returns. Only then does the report count: a hard bounce suppresses the address the
message went to, a soft one counts toward ``[bounces] soft_limit``, a complaint
unsubscribes the customer from marketing. A report that names no message of ours changes
nothing by guess. A hard bounce also suppresses the failed addresses it names: a report
of a permanent failure is about that address whichever message it returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, Message
from email.parser import HeaderParser
from email.utils import parseaddr
from enum import StrEnum
from typing import Literal

from sqlalchemy.engine import Connection

from mailer.core.config import Config
from mailer.customers import profiles, tokens
from mailer.inbound import autoreply
from mailer.outbound import bounces, outbox, return_path
from mailer.outbound.bounces import Kind, SoftRule

# where the delivering server writes the address a report came back to
ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
# RFC 3463 X.2.2: the mailbox is full; its owner may empty it, so it is soft even as 5.2.2
MAILBOX_FULL = ".2.2"
COMPLAINT_ACTOR = "complaint"  # who the history says unsubscribed a customer who complained
# RFC 5965 Feedback-Types that are someone's complaint; DMARC's auth-failure reports,
# virus and not-spam reports are feedback about mail, not a wish to receive less of it
COMPLAINT_TYPES = frozenset({"abuse", "fraud"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportPolicy:
    secret: bytes
    return_path: str | None
    soft: SoftRule

    @classmethod
    def from_config(cls, cfg: Config) -> ReportPolicy:
        settings = cfg.settings.bounces
        return cls(
            secret=tokens.load_secret(cfg),
            return_path=settings.return_path,
            soft=SoftRule(settings.soft_limit, settings.soft_window),
        )


BounceKind = Literal["hard", "soft", "delay"]


class Outcome(StrEnum):
    """What a report changed; the last two changed nothing, and the report is worth a look."""

    SUPPRESSED = "hard bounce: address suppressed"
    COUNTED = "soft bounce: counted"
    DELAYED = "delay: the reporting server still tries, nothing to do"
    COMPLAINED = "complaint: customer unsubscribed from marketing"
    FEEDBACK = "feedback report that is no complaint: nothing to do"
    NOT_OURS = "names no message or customer of ours: nothing changed"
    UNREAD = "nothing in it says who failed or complained: nothing changed"


UNCHANGED = frozenset({Outcome.NOT_OURS, Outcome.UNREAD})


def kind_of(failure: autoreply.Failure) -> BounceKind:
    """Hard: the address cannot receive mail. Soft: it failed for now (a full mailbox, a
    temporary 4.x.x failure reported as final). Delay: the sending server still tries."""
    if failure.action == "delayed":
        return "delay"
    if failure.status.endswith(MAILBOX_FULL) or failure.status.startswith("4"):
        return "soft" if failure.action == "failed" or failure.permanent else "delay"
    return "hard" if failure.permanent else "delay"


def is_complaint(message: Message) -> bool:
    """An ARF feedback report (RFC 5965): someone marked our mail as spam."""
    return (
        message.get_content_type() == "multipart/report"
        and str(message.get_param("report-type", "")).lower() == "feedback-report"
    )


def is_report(message: EmailMessage) -> bool:
    """A machine's report about mail: a bounce (by the autoreply rules) or a complaint."""
    return is_complaint(message) or autoreply.is_bounce(message)


def record(conn: Connection, message: EmailMessage, now: datetime, policy: ReportPolicy) -> Outcome:
    """Act on one report in the caller's transaction (the one logging it)."""
    if is_complaint(message):
        return _complaint(conn, message, now, policy)
    return _bounce(conn, message, now, policy)


def _bounce(
    conn: Connection, message: EmailMessage, now: datetime, policy: ReportPolicy
) -> Outcome:
    found = autoreply.failures(message)
    kinds = {kind_of(failure) for failure in found}
    worst = next((kind for kind in ("hard", "soft") if kind in kinds), None)
    if worst is None:  # nobody is suppressed by guess
        return Outcome.DELAYED if found else Outcome.UNREAD
    failure = next(f for f in found if kind_of(f) == worst)
    messages = _about(conn, message, policy)
    if worst == "soft":
        for sent in messages:
            _soft(conn, sent, failure, now, policy)
        return Outcome.COUNTED if messages else Outcome.NOT_OURS
    said = f": {failure.status} {failure.diagnostic}".rstrip() if failure.status else ""
    reason = f"bounced: {failure.address} reported permanent failure{said}"
    outbox.mark_bounced(conn, [sent.id for sent in messages], reason[:200], now)
    for sent in messages:
        _keep(conn, sent, Kind.HARD, now, failure.status, failure.diagnostic)
    named = [f.address for f in found if kind_of(f) == "hard"]
    addresses = [sent.to_address for sent in messages] + named
    profiles.suppress(conn, addresses, f"hard bounce reported {now:%Y-%m-%d}", now)
    return Outcome.SUPPRESSED


def _soft(
    conn: Connection,
    sent: outbox.Returned,
    failure: autoreply.Failure,
    now: datetime,
    policy: ReportPolicy,
) -> None:
    _keep(conn, sent, Kind.SOFT, now, failure.status, failure.diagnostic)
    history = bounces.soft_history(conn, sent.to_address, now - policy.soft.window)
    run = bounces.soft_run(history)
    if run >= policy.soft.limit:
        reason = f"{run} soft bounces in a row ({failure.status or 'temporary failure'})"
        profiles.suppress(conn, [sent.to_address], reason, now)


def _complaint(
    conn: Connection, message: EmailMessage, now: datetime, policy: ReportPolicy
) -> Outcome:
    """The customer is unsubscribed from marketing at once, and their history says why.
    A report without the machine-readable part that says it is a complaint changes nothing."""
    feedback = _feedback_type(message)
    if not feedback:
        return Outcome.UNREAD
    if feedback not in COMPLAINT_TYPES:
        return Outcome.FEEDBACK
    messages = _about(conn, message, policy)
    customers = {sent.customer_id for sent in messages if sent.customer_id is not None}
    original = _returned(message)
    if not customers and original is not None:
        customers |= _by_unsubscribe_link(original, policy.secret)
    reporter = parseaddr(str(message.get("From", "")))[1].rpartition("@")[2] or "a provider"
    for customer_id in sorted(customers):
        profiles.unsubscribe_id(conn, customer_id, now, actor=f"{COMPLAINT_ACTOR} via {reporter}")
    for sent in messages:
        _keep(conn, sent, Kind.COMPLAINT, now, diagnostic=f"marked as spam, reported by {reporter}")
    if customers or messages:
        return Outcome.COMPLAINED
    return Outcome.UNREAD if original is None else Outcome.NOT_OURS


def _keep(
    conn: Connection,
    sent: outbox.Returned,
    kind: Kind,
    now: datetime,
    status: str = "",
    diagnostic: str = "",
) -> None:
    """The report, kept with the message it is about."""
    bounces.record(
        conn,
        outbox_id=sent.id,
        address=sent.to_address,
        kind=kind,
        status=status,
        diagnostic=diagnostic,
        now=now,
    )


def _about(conn: Connection, message: EmailMessage, policy: ReportPolicy) -> list[outbox.Returned]:
    """The messages of ours a report is about: by return path, else by Message-ID."""
    if policy.return_path:
        envelope = " ".join(_values(message, ENVELOPE_HEADERS))
        original = _returned(message)
        if original is not None:  # a complaint returns the original with its Return-Path
            envelope += " " + " ".join(_values(original, ("Return-Path",)))
        found = return_path.message_id(policy.secret, policy.return_path, envelope)
        if found is not None:
            return outbox.returned(conn, ids=[found])
    return outbox.returned(conn, message_ids=autoreply.bounced_message_ids(message))


def _feedback_type(message: EmailMessage) -> str:
    """The Feedback-Type of a report's message/feedback-report part, "" when it has none."""
    for part in message.walk():
        if part.get_content_type() == "message/feedback-report":
            fields = part.get_payload(0) if part.is_multipart() else None
            if isinstance(fields, Message):
                return str(fields.get("Feedback-Type", "")).strip().lower()
    return ""


def _values(message: Message, names: Iterable[str]) -> list[str]:
    return [str(value) for name in names for value in message.get_all(name, [])]


def _returned(message: EmailMessage) -> Message | None:
    """The copy of our message (or its headers) that a report returns, if any."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind in autoreply.RETURNED_MESSAGE:
            payload = part.get_payload(0) if part.is_multipart() else None
            if isinstance(payload, Message):
                return payload
        if kind in autoreply.RETURNED_HEADERS:
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return HeaderParser().parsestr(text.decode("utf-8", "replace"))
    return None


def _by_unsubscribe_link(original: Message, secret: bytes) -> set[int]:
    """The customer the returned copy's signed List-Unsubscribe link names."""
    link = str(original.get("List-Unsubscribe", ""))
    found = tokens.customer_in_link(secret, link)
    return set() if found is None else {found}
