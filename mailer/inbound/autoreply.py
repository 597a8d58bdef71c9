"""Should this inbound message be acknowledged? A chain of small rules over a parsed message.

The inbox watcher logs every message as an inquiry first, then asks ``decide``. Every rule in
``RULES`` runs and each one that fires records its reason ("name: why"), so support can see
on the inquiry row why no acknowledgement went out. The message is acknowledged only when no
rule fired. The rules follow RFC 3834 (automatic responses), RFC 5230 (Sieve vacation),
RFC 3464 (delivery status notifications) and what help desks learned the hard way; bounces
in the servers' own formats are read by flufl.bounce, GNU Mailman's bounce parser.

``Decision.kind`` says what the message is, for the log; when rules of several kinds fire,
the first kind in ``KINDS`` wins (a bounce that also says ``Auto-Submitted`` is a bounce).
Some rules only block the acknowledgement and leave the message an "inquiry": spam-flagged
mail and mail from a sender whose address hard-bounced are still people writing to us.

Headers are read from the top-level message only: a customer who forwards a bounce or one
of our own messages as an attachment is still a customer asking something.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message, MIMEPart
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr
from typing import Literal, Protocol

from flufl.bounce import all_failures

Kind = Literal["inquiry", "auto-reply", "bounce", "list", "system", "loop", "repeat"]

# The order in which a fired rule's kind wins over another's.
KINDS: tuple[Kind, ...] = ("loop", "bounce", "auto-reply", "list", "system", "repeat", "inquiry")
# The kinds of mail a person wrote, not a robot: these wait for support.
FROM_PEOPLE: tuple[Kind, ...] = ("inquiry", "repeat")

DELIVERY_STATUS = frozenset({"message/delivery-status", "message/global-delivery-status"})
# Where a bounce returns the original (RFC 6522 allows either, RFC 6533 the global forms).
RETURNED_HEADERS = frozenset({"text/rfc822-headers", "message/global-headers"})
RETURNED_MESSAGE = frozenset({"message/rfc822", "message/global"})
# How much of each text part flufl.bounce reads: a bounce's own words come first.
LIBRARY_TEXT = 8 * 1024
# A returned message's Message-ID line in a bounce's text (Exim, qmail, Sendmail quote it).
INLINE_MESSAGE_ID = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


class _DetectorCrashes(logging.Filter):
    """flufl.bounce logs a traceback at ERROR when one of its heuristic detectors trips on
    ordinary odd mail (Yale's on a message without From); the other detectors and the rules
    still judge the message, so that is debugging detail, not an error for the operator."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Exception in detector"):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


logging.getLogger("flufl.bounce").addFilter(_DetectorCrashes())


@dataclass(frozen=True, slots=True)
class Identity:
    """Who "we" are: the addresses and domains our own mail comes from."""

    addresses: frozenset[str]  # lower-case, e.g. support@ and noreply@ of our domain
    domains: frozenset[str]  # lower-case Message-ID and sender domains
    loop_header: str = "X-Mailer-Loop"


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderHistory:
    """What the log knows about the sender and the thread, gathered by the caller."""

    last_acknowledged_at: datetime | None
    acknowledgements_last_day: int
    hard_bounced: bool
    thread_already_acknowledged: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """Everything a rule may look at besides the message."""

    identity: Identity
    history: SenderHistory
    now: datetime
    once_per_sender: timedelta
    max_per_day: int


# The context is_bounce runs the bounce rules with; they look only at the message.
_NOBODY = Context(
    identity=Identity(frozenset(), frozenset()),
    history=SenderHistory(
        last_acknowledged_at=None,
        acknowledgements_last_day=0,
        hard_bounced=False,
        thread_already_acknowledged=False,
    ),
    now=datetime(1970, 1, 1, tzinfo=UTC),
    once_per_sender=timedelta(0),
    max_per_day=1,
)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer, with every reason for support to read on the inquiry row."""

    acknowledge: bool
    reasons: tuple[str, ...]  # "name: why" for every rule that fired, in chain order
    kind: Kind


class Rule(Protocol):
    """One link of the chain; ``kind`` is what the message is when this rule fires."""

    name: str
    description: str
    kind: Kind

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        """None when the rule does not fire, else why it fired."""


# Helpers shared by the rules ----------------------------------------------------------------


def _headers(msg: Message, *names: str) -> list[tuple[str, str]]:
    """(name, value) of each named header, in the message's order, folding whitespace undone.

    Only the wanted headers are decoded: msg.items() parses every header into an object,
    which cost 1.7 ms a call on mail with 25 Received lines, eleven calls a message."""
    wanted = {name.lower() for name in names}
    return [
        (name, " ".join(_decoded(msg, name, value).split()))
        for name, value in msg.raw_items()
        if name.lower() in wanted
    ]


def _decoded(msg: Message, name: str, value: str) -> str:
    """A header decoded, or as received when the policy's header class refuses it (an
    encoded CR/LF in a display name makes ``msg.get`` raise): every rule must still run."""
    try:
        return str(msg.policy.header_fetch_parse(name, value))
    except (ValueError, TypeError, IndexError):
        return str(value)


def _shown(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(f"{name}: {value}" for name, value in pairs)


def _value(msg: Message, name: str) -> str:
    """The first such header, decoded as ``_headers`` does; "" when there is none."""
    return next((value for _, value in _headers(msg, name)), "")


def _from(msg: Message) -> tuple[str, str]:
    """(display name, address lower-case) of From; "" when there is none, no "@" when it is
    a bare name."""
    name, address = parseaddr(_value(msg, "From"))
    return name, address.lower()


def _sender(msg: Message) -> str:
    return _from(msg)[1]


def _local_part(address: str) -> str:
    """The local part without a +detail: "noreply+42@x" -> "noreply"."""
    return address.rsplit("@", 1)[0].partition("+")[0]


def _domain(address: str) -> str:
    return address.rpartition("@")[2].rstrip(">").lower()


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def _nodes(msg: MIMEPart) -> Iterator[MIMEPart]:
    """Every part of the MIME tree, multiparts included; attached messages (message/rfc822)
    are not descended into."""
    yield msg
    if msg.get_content_maintype() == "multipart":
        for part in msg.iter_parts():
            yield from _nodes(part)


def _is_thread_reply(msg: Message) -> bool:
    return "In-Reply-To" in msg or "References" in msg


# Loop: our own mail coming back --------------------------------------------------------------


class OwnAddress:
    """Mail From one of our own addresses: answering it would be talking to ourselves."""

    name = "own-address"
    description = "From is one of our own addresses"
    kind: Kind = "loop"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        sender = _sender(msg)
        return f"From: {sender}" if sender in ctx.identity.addresses else None


class OwnLoopHeader:
    """Our loop header with our own domain: a message we sent has come back (RFC 3834 §2)."""

    name = "own-loop-header"
    description = "carries our loop header"
    kind: Kind = "loop"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        ours = [
            (name, value)
            for name, value in _headers(msg, ctx.identity.loop_header)
            if value.lower() in ctx.identity.domains
        ]
        return _shown(ours) or None


class OwnMessageId:
    """The message's own Message-ID was made at our domain, so we wrote it.

    The domain must match exactly: our mail server's bounces (``@smtp.our.domain``) are
    bounces to act on, not loops.
    """

    name = "own-message-id"
    description = "its Message-ID is at one of our domains"
    kind: Kind = "loop"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        message_id = _value(msg, "Message-ID").strip()
        return f"Message-ID: {message_id}" if _domain(message_id) in ctx.identity.domains else None


# Bounce: delivery failure reports ------------------------------------------------------------


class Report:
    """A multipart/report is a machine's report about earlier mail (RFC 6522, RFC 3464)."""

    name = "report"
    description = "Content-Type is multipart/report"
    kind: Kind = "bounce"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        if msg.get_content_type() != "multipart/report":
            return None
        return f"Content-Type: multipart/report; report-type={msg.get_param('report-type')}"


class DeliveryStatusPart:
    """A message/delivery-status part is the machine-readable half of a DSN (RFC 3464 §2)."""

    name = "delivery-status"
    description = "has a message/delivery-status part"
    kind: Kind = "bounce"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        types = {part.get_content_type() for part in _nodes(msg)}
        found = sorted(types & DELIVERY_STATUS)
        return f"{found[0]} part" if found else None


# Local parts and display names that bounce senders use: MAILER-DAEMON, postmaster,
# post_master (Verizon), "Mail Delivery System" (Exim, Postfix), "Mail Delivery Subsystem"
# (Sendmail), "Mail Administrator", "Mail Delivery Service".
DAEMON_LOCAL = re.compile(r"mailer[-_.]?daemon|mail[-_.]?daemon|post[-_.]?master")
DAEMON_NAME = re.compile(
    r"\W*(mailer[-_ ]?daemon|post[-_ ]?master|mail delivery (sub)?system"
    r"|mail delivery service|mail administrator)\b.*",
    re.IGNORECASE,
)


def _is_daemon(local_part: str) -> bool:
    return DAEMON_LOCAL.fullmatch(local_part) is not None


class DaemonSender:
    """MAILER-DAEMON and postmaster send bounces, by address or by display name ("Mail
    Delivery System <root@...>"); nobody reads what we send back to them."""

    name = "daemon-sender"
    description = "From is MAILER-DAEMON, postmaster or a mail delivery system"
    kind: Kind = "bounce"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        display, sender = _from(msg)
        if _is_daemon(_local_part(sender)) or DAEMON_NAME.fullmatch(display):
            return f"From: {_value(msg, 'From')}"
        return None


class DaemonReturnPath:
    """A Return-Path of MAILER-DAEMON or postmaster: some servers put the daemon there and
    nowhere else (RFC 5321 §4.5.5 wants it empty)."""

    name = "daemon-return-path"
    description = "Return-Path is MAILER-DAEMON or postmaster"
    kind: Kind = "bounce"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        pairs = _headers(msg, "Return-Path")
        daemon = [(n, v) for n, v in pairs if _is_daemon(_local_part(parseaddr(v)[1].lower()))]
        return _shown(daemon) or None


class BounceSubject:
    """The subjects that mail servers give their bounces, whole, from the start.

    Only the servers' own wording counts: a person's "my delivery failed" or a forwarded
    "Fwd: Returned mail" is not matched. Gathered from Postfix, Exim, Sendmail, qmail,
    Exchange/Outlook, Gmail, Lotus Domino, GroupWise, Courier and antivirus gateways.
    """

    name = "bounce-subject"
    description = "Subject is a mail server's bounce subject"
    kind: Kind = "bounce"
    pattern = re.compile(
        r"(undelivered mail returned to sender"
        r"|undeliverable: .*"
        r"|undeliverable (mail|message)\b.*"
        r"|(mail delivery failed|mail failed)\b.*returning.*"
        r"|mail delivery failed"
        r"|(returned mail|postmaster notify): .*"
        r"|failure notice\b.*"
        r"|delivery status notification( \((failure|delay)\)|: (failed|error|delayed))"
        r"|delivery (failure|status) notification"
        r"|delivery notification: delivery has failed"
        r"|(mail|message) delivery (failure|has failed)"
        r"|non-?deliver(y|able)( report| notification| mail)\b.*"
        r"|mail system error - returned mail"
        r"|message status - undeliverable"
        r"|warning: could not send message for past .*"
        r"|delayed mail \(still being retried\))",
        re.IGNORECASE,
    )

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        subject = " ".join(_value(msg, "Subject").split())
        return f"Subject: {subject}" if self.pattern.fullmatch(subject) else None


class BounceParser:
    """flufl.bounce, the bounce parser of GNU Mailman: detectors for DSNs and for the
    non-standard reports of Exim, qmail, Postfix, GroupWise, Exchange, Yahoo, AOL, Lotus and
    more, learned from real bounces over twenty years."""

    name = "bounce-parser"
    description = "flufl.bounce finds failed recipients"
    kind: Kind = "bounce"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        temporary, permanent = _library_failures(msg)
        if not (temporary or permanent):
            return None
        found = [f"{a} (permanent)" for a in permanent] + [f"{a} (temporary)" for a in temporary]
        return ", ".join(found)


def _library_failures(msg: Message) -> tuple[list[str], list[str]]:
    """(temporary, permanent) addresses flufl.bounce reads, decoded; none when a detector
    breaks on the message (the other rules still judge it)."""
    try:
        temporary, permanent = all_failures(_legacy_view(msg))
    except Exception:  # a heuristic detector tripping on odd mail must not lose the message
        return [], []
    return _addresses(temporary), _addresses(permanent)


def _legacy_view(part: Message) -> Message:
    """What flufl.bounce needs of a message, in the compat32 form it was written for.

    Its detectors read every line of every part: a 5 MB attachment cost 24 s. A bounce is in
    its text and its delivery-status parts, so those are kept (text up to LIBRARY_TEXT
    characters) and every other leaf is left empty. Attached messages are emptied too: a
    customer forwarding a bounce is no bounce. Headers are copied as received (8-bit ones
    decoded), which the compat32 policy never refuses.
    """
    view = Message()
    for name, value in part.raw_items():
        view[name] = _text(value)
    kind = part.get_content_type()
    payload = part.get_payload()
    if part.get_content_maintype() == "multipart" and isinstance(payload, list):
        view.set_payload([_legacy_view(c) for c in payload if isinstance(c, Message)])
    elif kind in RETURNED_MESSAGE:
        view.set_payload([Message()])
    elif kind in DELIVERY_STATUS:
        view.set_payload(payload)
    elif part.get_content_maintype() == "text" and isinstance(payload, str):
        view.set_payload(payload[:LIBRARY_TEXT])
    else:
        view.set_payload("")
    return view


def _text(value: str) -> str:
    """A header value as text: raw 8-bit bytes (an unencoded name in From), which compat32
    would hand out as a ``Header`` the detectors cannot read, are decoded as UTF-8."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _addresses(found: frozenset[bytes]) -> list[str]:
    decoded = (a.decode("utf-8", "replace").strip().strip("<>").lower() for a in found)
    return sorted(a for a in decoded if "@" in a)


class NoSender:
    """Without a From address there is nobody to acknowledge (RFC 5322 §3.6.2 requires one)."""

    name = "no-sender"
    description = "From is empty, missing or has no address"
    kind: Kind = "bounce"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        if "@" in _sender(msg):
            return None
        return f"From: {_value(msg, 'From').strip() or '(missing or empty)'}"


class FailedRecipients:
    """Exim and others name the addresses that failed in X-Failed-Recipients."""

    name = "failed-recipients"
    description = "has X-Failed-Recipients"
    kind: Kind = "bounce"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        return _shown(_headers(msg, "X-Failed-Recipients")) or None


# Auto-reply: machines answering mail -------------------------------------------------------


class AutoSubmitted:
    """RFC 3834 §2 (the field is defined in §5): never answer Auto-Submitted other than "no"."""

    name = "auto-submitted"
    description = "Auto-Submitted is present and not no"
    kind: Kind = "auto-reply"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        pairs = _headers(msg, "Auto-Submitted")
        automatic = [(name, value) for name, value in pairs if value.lower() != "no"]
        return _shown(automatic) or None


class PrecedenceAutoReply:
    """Precedence: auto_reply is the old way to say what RFC 3834 spells Auto-Submitted."""

    name = "precedence-auto-reply"
    description = "Precedence or X-Precedence is auto_reply"
    kind: Kind = "auto-reply"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        pairs = _headers(msg, "Precedence", "X-Precedence")
        return _shown([(n, v) for n, v in pairs if v.lower() == "auto_reply"]) or None


class VendorAutoReply:
    """Auto-responders that predate RFC 3834 mark their replies with headers of their own.

    X-Loop is set by procmail, ticket systems and lists to stop loops; any value counts.
    """

    name = "vendor-auto-reply"
    description = "carries a vendor auto-reply header (X-Autoreply, X-Loop, ...)"
    kind: Kind = "auto-reply"
    headers = (
        "X-Autoreply",
        "X-Autorespond",
        "X-Autogenerated",
        "X-AutoReply-From",
        "X-Mail-Autoreply",
        "X-Loop",
        "X-FC-MachineGenerated",
        "X-Autoresponder",
    )

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        return _shown(_headers(msg, *self.headers)) or None


class AutoReplySubject:
    """Out-of-office subjects, a weak signal: only with In-Reply-To/References.

    Some auto-responders send no header at all, only a localized subject. A person who
    writes a new message about an "Out of office question" has no In-Reply-To, so is
    still acknowledged; a person replying in a thread with such a subject is not, which is
    the safe side to err on.
    """

    name = "auto-reply-subject"
    description = "an out-of-office subject on a reply"
    kind: Kind = "auto-reply"
    prefixes = (
        "automatic reply:",
        "auto:",
        "out of office",
        "autosvar",
        "réponse automatique",
        "abwesenheitsnotiz",
        "automatische antwort:",
        "автоматичен отговор:",
    )

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        subject = _value(msg, "Subject").strip()
        if not (_is_thread_reply(msg) and subject.casefold().startswith(self.prefixes)):
            return None
        return f"Subject: {subject}"


# List: mail sent to many -------------------------------------------------------------------


class ListHeaders:
    """List-* headers (RFC 2369, RFC 2919) mark list mail; RFC 3834 §2, RFC 5230 §4.6: skip it."""

    name = "list"
    description = "has a List-* header"
    kind: Kind = "list"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        names = sorted({name for name in msg if name.lower().startswith("list-")})
        return ", ".join(names) or None


class Precedence:
    """Precedence bulk, list or junk (RFC 2076 §3.9) is mass mail; RFC 3834 §2 says skip it."""

    name = "precedence"
    description = "Precedence or X-Precedence is bulk, list or junk"
    kind: Kind = "list"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        pairs = _headers(msg, "Precedence", "X-Precedence")
        mass = [(n, v) for n, v in pairs if v.lower() in {"bulk", "list", "junk"}]
        return _shown(mass) or None


# System: machines that are not answering anything --------------------------------------------


class SuppressAutoResponse:
    """Exchange's X-Auto-Response-Suppress asks that no auto-response be sent ([MS-OXCMAIL]).

    All, AutoReply and DR (delivery reports) all mean "a machine sent this, do not answer".
    """

    name = "auto-response-suppress"
    description = "X-Auto-Response-Suppress has All, AutoReply or DR"
    kind: Kind = "system"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        pairs = _headers(msg, "X-Auto-Response-Suppress")
        asked = [(n, v) for n, v in pairs if _tokens(v) & {"all", "autoreply", "dr"}]
        return _shown(asked) or None


class SystemSender:
    """Robots' addresses: list owners and requests, list servers (RFC 5230 §4.6), noreply."""

    name = "system-sender"
    description = "From is a system address (noreply, owner-*, *-request, bounce*, ...)"
    kind: Kind = "system"
    pattern = re.compile(
        r"owner-.*|.*-request|no[-_]?reply|do-?not-?reply|listserv|majordomo|mailer-daemon"
        r"|bounce.*"
    )

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        sender = _sender(msg)
        return f"From: {sender}" if self.pattern.fullmatch(_local_part(sender)) else None


class NullReturnPath:
    """An empty envelope sender marks automatic mail (RFC 5321 §4.5.5, RFC 3834 §3).

    Bounces have it, and so do well-behaved out-of-office replies, so it blocks the
    acknowledgement without making the message a bounce by itself.
    """

    name = "null-return-path"
    description = "Return-Path is empty (<>)"
    kind: Kind = "system"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        empty = [(n, v) for n, v in _headers(msg, "Return-Path") if v.strip("<> ") == ""]
        return _shown(empty) or None


class ForeignLoopHeader:
    """Another mailer's loop header: machine mail from a robot like us, not a person."""

    name = "foreign-loop-header"
    description = "carries another mailer's loop header"
    kind: Kind = "system"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        pairs = _headers(msg, ctx.identity.loop_header)
        theirs = [(n, v) for n, v in pairs if v.lower() not in ctx.identity.domains]
        return _shown(theirs) or None


# Repeat: a person we already answered ----------------------------------------------------------


class ThreadAcknowledged:
    """One acknowledgement per inquiry: the follow-ups in its thread get none."""

    name = "thread-acknowledged"
    description = "the thread was already acknowledged"
    kind: Kind = "repeat"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        return "inquiry already acknowledged" if ctx.history.thread_already_acknowledged else None


class OncePerSender:
    """RFC 3834 §2, RFC 5230 §4.1-4.2 (":days"): answer a sender at most once per period."""

    name = "once-per-sender"
    description = "the sender was acknowledged within once_per_sender"
    kind: Kind = "repeat"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        last = ctx.history.last_acknowledged_at
        if last is None or ctx.now - last >= ctx.once_per_sender:
            return None
        return f"last acknowledged {last.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


class RateBackstop:
    """A cap per sender per day that holds when every other rule missed.

    Two robots that strip every header still stop after max_per_day replies.
    """

    name = "rate-backstop"
    description = "the sender got max_per_day acknowledgements in the last day"
    kind: Kind = "repeat"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        count, limit = ctx.history.acknowledgements_last_day, ctx.max_per_day
        return f"{count} acknowledgements in the last day (max {limit})" if count >= limit else None


# Inquiry, but not to be acknowledged ---------------------------------------------------------


class SpamFlagged:
    """Acknowledging spam sends backscatter to forged senders; support still sees it."""

    name = "spam-flagged"
    description = "X-Spam-Flag is YES or X-Spam-Status is Yes"
    kind: Kind = "inquiry"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        flags = [(n, v) for n, v in _headers(msg, "X-Spam-Flag") if v.lower() == "yes"]
        status = _headers(msg, "X-Spam-Status")
        flags += [(n, v) for n, v in status if v.lower().startswith("yes")]
        return _shown(flags) or None


class HardBounced:
    """Mail to an address that hard-bounced would only bounce again; the person still wrote."""

    name = "hard-bounced"
    description = "the sender's address hard-bounced"
    kind: Kind = "inquiry"

    def check(self, msg: EmailMessage, ctx: Context) -> str | None:
        return "the sender's address hard-bounced" if ctx.history.hard_bounced else None


RULES: tuple[Rule, ...] = (
    OwnAddress(),
    OwnLoopHeader(),
    OwnMessageId(),
    Report(),
    DeliveryStatusPart(),
    DaemonSender(),
    DaemonReturnPath(),
    NoSender(),
    FailedRecipients(),
    BounceSubject(),
    BounceParser(),
    AutoSubmitted(),
    PrecedenceAutoReply(),
    VendorAutoReply(),
    AutoReplySubject(),
    ListHeaders(),
    Precedence(),
    SuppressAutoResponse(),
    SystemSender(),
    NullReturnPath(),
    ForeignLoopHeader(),
    ThreadAcknowledged(),
    OncePerSender(),
    RateBackstop(),
    SpamFlagged(),
    HardBounced(),
)


def decide(
    msg: EmailMessage,
    identity: Identity,
    history: SenderHistory,
    now: datetime,
    *,
    once_per_sender: timedelta,
    max_per_day: int = 3,
) -> Decision:
    """Run every rule; acknowledge only when none fired."""
    ctx = Context(
        identity=identity,
        history=history,
        now=now,
        once_per_sender=once_per_sender,
        max_per_day=max_per_day,
    )
    fired = [(rule, rule.check(msg, ctx)) for rule in RULES]
    hits = [(rule, reason) for rule, reason in fired if reason is not None]
    kinds = {rule.kind for rule, _ in hits}
    kind: Kind = next((k for k in KINDS if k in kinds), "inquiry")
    reasons = tuple(f"{rule.name}: {reason}" for rule, reason in hits)
    return Decision(not hits, reasons, kind)


def is_bounce(msg: EmailMessage) -> bool:
    """Whether any bounce rule fires: a DSN, a daemon's or empty From or Return-Path,
    X-Failed-Recipients, a server's bounce subject, or flufl.bounce finding failures."""
    return any(rule.check(msg, _NOBODY) is not None for rule in RULES if rule.kind == "bounce")


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """One failed recipient of a bounce, with what the report said of it."""

    address: str
    permanent: bool
    status: str = ""  # RFC 3464 Status, e.g. "5.1.1"; "" when the report has none
    diagnostic: str = ""  # the remote server's words (Diagnostic-Code), if given
    action: str = ""  # RFC 3464 Action: "failed", or "delayed" while it is still trying


def bounced_addresses(msg: EmailMessage) -> list[tuple[str, bool]]:
    """(address, permanent) for each failed recipient of a bounce."""
    return [(failure.address, failure.permanent) for failure in failures(msg)]


def failures(msg: EmailMessage) -> list[Failure]:
    """Each failed recipient of a bounce.

    Read from the message/delivery-status parts (RFC 3464 §2.3: Status 5.x.x is permanent,
    4.x.x temporary; successes are left out); else X-Failed-Recipients; else what
    flufl.bounce reads from a server's own format (Exim, qmail, GroupWise, ...).
    """
    blocks = [
        block
        for part in _nodes(msg)
        if part.get_content_type() in DELIVERY_STATUS
        for block in part.get_payload()
        if isinstance(block, Message)
    ]
    found = [failure for block in blocks if (failure := _failure(block)) is not None]
    if found or (found := _failed_recipients(msg)):
        return found
    temporary, permanent = _library_failures(msg)
    return [Failure(address=a, permanent=True) for a in permanent] + [
        Failure(address=a, permanent=False) for a in temporary if a not in permanent
    ]


def bounced_message_ids(msg: EmailMessage) -> list[str]:
    """The Message-IDs of the mail that bounced, from the copy or headers it returns.

    They name the outbox row exactly, where the failed address alone may have been
    rewritten by forwarding or aliasing on the way. Servers that return the message as
    text ("------ This is a copy of the message, including all the headers. ------") get
    its Message-ID line read from their text.
    """
    found = []
    for part in _nodes(msg):
        kind = part.get_content_type()
        if kind in RETURNED_HEADERS and isinstance(text := _content(part), str):
            returned: Message = HeaderParser().parsestr(text)
        elif kind in RETURNED_MESSAGE and isinstance(payload := part.get_payload(0), Message):
            returned = payload
        else:
            if kind == "text/plain" and isinstance(text := _content(part), str):
                found.extend(INLINE_MESSAGE_ID.findall(text))
            continue
        if message_id := str(returned.get("Message-ID", "")).strip():
            found.append(message_id)
    return list(dict.fromkeys(found))


def _content(part: MIMEPart) -> object:
    """A part's decoded content, or None when its encoding is too broken to decode."""
    try:
        return part.get_content()
    except (LookupError, ValueError):
        return None


def _failure(fields: Message) -> Failure | None:
    """One per-recipient block of a DSN, None if not a failure."""
    recipient = fields.get("Final-Recipient") or fields.get("Original-Recipient")
    if recipient is None:
        return None
    address = str(recipient).partition(";")[2].strip().strip("<>").lower()
    status = str(fields.get("Status", "")).strip().split(" ")[0]
    action = str(fields.get("Action", "")).strip().lower()
    diagnostic = str(fields.get("Diagnostic-Code", "")).partition(";")[2].strip()
    if status.startswith("5") or (not status and action == "failed"):
        return Failure(
            address=address, permanent=True, status=status, diagnostic=diagnostic, action=action
        )
    if status.startswith("4") or (not status and action == "delayed"):
        return Failure(
            address=address, permanent=False, status=status, diagnostic=diagnostic, action=action
        )
    return None


def _failed_recipients(msg: Message) -> list[Failure]:
    values = [value for _, value in _headers(msg, "X-Failed-Recipients")]
    return [
        Failure(address=address.lower(), permanent=True)
        for _, address in getaddresses(values)
        if address
    ]
