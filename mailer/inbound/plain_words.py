"""What the acknowledgement decision means, in support's words: one table for every rule of
``autoreply.RULES`` and every kind of decision, so the desk says "not answered
automatically: we already answered this sender recently" instead of "once-per-sender".

Pure: tests check that every rule in the chain and every kind has its wording, so a new
rule without words fails a test rather than showing its name to support.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailer.inbound import autoreply

# Why a message got no automatic answer, by the rule (or the watcher's step) that said so.
REASONS: dict[str, str] = {
    "own-address": "it came from one of our own addresses",
    "own-loop-header": "it is our own mail coming back",
    "own-message-id": "we wrote it ourselves (its Message-ID is one of ours)",
    "report": "it is a mail server's report about earlier mail",
    "delivery-status": "it carries a delivery status report",
    "daemon-sender": "it comes from a mail server's delivery system (MAILER-DAEMON, postmaster)",
    "daemon-return-path": "its return address is a mail server's delivery system",
    "no-sender": "it has no sender address to answer",
    "failed-recipients": "a mail server names addresses it could not deliver to",
    "bounce-subject": "its subject is a mail server's bounce subject",
    "bounce-parser": "it reports addresses that mail could not be delivered to",
    "auto-submitted": "it says it was sent automatically",
    "precedence-auto-reply": "it says it is an automatic reply",
    "vendor-auto-reply": "an auto-responder marked it as an automatic reply",
    "auto-reply-subject": "it is a reply with an out-of-office subject",
    "list": "it came through a mailing list",
    "precedence": "it is bulk or mailing-list mail",
    "auto-response-suppress": "the sender asked for no automatic answers",
    "system-sender": "it comes from a no-reply or system address",
    "null-return-path": "it has no return address, as automatic mail has",
    "foreign-loop-header": "another automatic mailer sent it",
    "thread-acknowledged": "this conversation was already acknowledged",
    "once-per-sender": "we already answered this sender recently",
    "rate-backstop": "this sender already got as many automatic answers as we send in a day",
    "spam-flagged": "the mail server marked it as spam",
    "hard-bounced": "mail to this sender's address bounced before",
    "unparseable": "the message could not be read well",
    "calendar-reply": "it is a calendar's automatic answer to one of our invitations",
}

# What the message is, by the decision recorded on it.
KINDS: dict[str, str] = {
    "inquiry": "a person's message",
    "repeat": "a person writing again",
    "auto-reply": "an out-of-office or other automatic reply",
    "bounce": "a bounce: mail we sent could not be delivered",
    "list": "mailing-list or bulk mail",
    "system": "automatic mail from a system address",
    "loop": "our own mail coming back",
    "unsubscribe": "an unsubscribe request by mail: the customer was unsubscribed",
    "calendar-reply": "an answer to a calendar invitation: kept as the customer's answer",
    "failed": "a message that could not be handled, kept for a person to look at",
}
UNDECIDED = "not decided yet"
NOT_ANSWERED = "not answered automatically"


@dataclass(frozen=True, slots=True)
class Reason:
    """One recorded reason: the words for support, and what the rule saw (headers, dates)."""

    words: str
    detail: str


def reason(recorded: str) -> Reason:
    """A reason as recorded ("once-per-sender: last acknowledged ..."), in words; one the
    table does not know is shown as it was recorded."""
    name, _, detail = recorded.partition(": ")
    words = REASONS.get(name)
    return Reason(words, detail) if words else Reason(recorded, "")


def decision(kind: str | None, reasons: Sequence[str]) -> str:
    """The decision in one line: what the message is and, for a person's message that got
    no automatic answer, the first reason why."""
    if kind is None:
        return UNDECIDED
    what = KINDS.get(kind, kind)
    if kind not in autoreply.FROM_PEOPLE or not reasons:
        return what
    return f"{what}, {NOT_ANSWERED}: {reason(reasons[0]).words}"
