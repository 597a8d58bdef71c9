"""Turning a claimed outbox row into the bytes for SMTP: render, address, sign, compose.

Pure CPU work at send time (so a template fixed after queueing is used), kept apart from
the SMTP I/O in ``delivery``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.utils import parseaddr
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine

from mailer.commerce import facts
from mailer.core.categories import Category
from mailer.core.config import Config
from mailer.core.errors import TemplateError
from mailer.core.text import one_line
from mailer.customers import tokens
from mailer.customers.context import customer_view, customer_zone
from mailer.outbound import dkim, return_path
from mailer.outbound.compose import Envelope, Part, list_unsubscribe_headers, make_message_id
from mailer.outbound.finishing import Finish, Finished
from mailer.outbound.invitations import Attendee, invitation
from mailer.outbound.outbox import Attachment, Claimed
from mailer.outbound.templates import RenderedMessage, RenderJob, TemplateStore

# set on everything we send, so the inbox can recognise our own mail coming back
LOOP_HEADER = "X-Mailer-Loop"
INVITE_FILE = "invite.ics"
# a context value naming the person a message is from (a desk reply's agent), shown as
# From's display name with the configured address
FROM_NAME = "from_name"


# what every message's context holds before what it was queued with (``Preparer._context``):
# a template reading another name renders only for messages queued with it (mailer's own)
GIVEN = frozenset(
    {"customer", "company", "unsubscribe_url", "preferences_url", "params", *facts.NAMES}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    outbox_id: int
    sender: str  # the envelope's MAIL FROM; "" is the null sender
    recipient: str
    data: bytes
    subject: str
    message_id: str


class Preparer:
    """Everything that stays the same from message to message is worked out once here."""

    def __init__(
        self, cfg: Config, store: TemplateStore, secret: bytes, signer: dkim.Signer | None = None
    ) -> None:
        """``signer`` DKIM-signs what is sent; previews, which never leave, go unsigned."""
        settings = cfg.settings
        self._signer = signer
        self._cfg = cfg
        self._store = store
        self._secret = secret
        self._return_path = settings.bounces.return_path
        self._from = settings.sender.from_
        self._reply_to = settings.sender.reply_to
        self._sender_name, self._address = parseaddr(self._from)
        self._domain = self._address.rpartition("@")[2]
        self._base_url = settings.web.base_url.rstrip("/")
        self._company = dict(settings.company)

    @property
    def store(self) -> TemplateStore:
        return self._store

    def prepare(
        self, claimed: Claimed, now: datetime, purchases: Mapping[str, Any] | None = None
    ) -> Outgoing:
        """Raises TemplateError when the template cannot be rendered for this customer.
        ``purchases`` are the customer's facts its template reads (``purchases_of``)."""
        (made,) = self.prepare_all([claimed], now, {claimed.id: purchases or {}})
        if isinstance(made, TemplateError):
            raise made
        return made

    def prepare_all(
        self,
        claimed: Sequence[Claimed],
        now: datetime,
        purchases: Mapping[int, Mapping[str, Any]],
    ) -> list[Outgoing | TemplateError]:
        """Each message ready to send, or the TemplateError that says why it cannot be
        rendered for its customer; the whole batch is rendered in one round trip to a render
        worker. ``purchases`` maps outbox ids to their facts (``purchases_of``)."""
        tokens_of = [
            tokens.sign(self._secret, c.customer.id) if c.customer else None for c in claimed
        ]
        contexts = [
            self._context(item, token, purchases.get(item.id, {}))
            for item, token in zip(claimed, tokens_of, strict=True)
        ]
        jobs = [
            RenderJob(
                item.template,
                context,
                item.locale or (item.customer.locale if item.customer else None),
                customer_zone(item.customer, self._cfg),  # the business zone for strangers
            )
            for item, context in zip(claimed, contexts, strict=True)
        ]
        finishes = [
            self._finish(item, context, token, now)
            for item, context, token in zip(claimed, contexts, tokens_of, strict=True)
        ]
        # small messages are composed and signed in the render worker right after their
        # template; one with large attachments is rendered there and finished here, not
        # copied to the worker and back
        finishers = [None if _large(c) else f for c, f in zip(claimed, finishes, strict=True)]
        made = self._store.finish_all(jobs, finishers)
        return [
            _outgoing(item, finish, self._envelope_sender(item), done)
            for item, finish, done in zip(claimed, finishes, made, strict=True)
        ]

    def _finish(
        self, claimed: Claimed, context: Mapping[str, Any], token: str | None, now: datetime
    ) -> Finish:
        """Everything the message's bytes take but its rendered text."""
        customer = claimed.customer
        envelope = Envelope(
            from_=self._from_as(claimed.context.get(FROM_NAME)),
            to_address=claimed.to_address,
            to_name=customer.name if customer else "",
            reply_to=self._reply_to,
            message_id=make_message_id(self._domain),
            date=now,
        )
        unsubscribe = self._list_headers(claimed.category, token)
        headers = {**unsubscribe, LOOP_HEADER: self._domain, **claimed.headers}
        calendar = context.get("calendar")
        alternatives, invite = (
            self._invitation(calendar, claimed, now) if calendar is not None else ([], [])
        )
        return Finish(
            envelope=envelope,
            headers=headers,
            alternatives=alternatives,
            attachments=[*invite, *(_part(file) for file in claimed.attachments)],
            signer=self._signer,
            now=now,
        )

    def _envelope_sender(self, claimed: Claimed) -> str:
        """Where a bounce goes: the message's own VERP address when ``[bounces]
        return_path`` is set, else the From address; a message that asked for its own (an
        acknowledgement's null sender) keeps it."""
        if claimed.envelope_from is not None:
            return claimed.envelope_from
        if self._return_path:
            return return_path.address(self._secret, self._return_path, claimed.id)
        return self._address

    def _from_as(self, name: Any) -> str:
        """The configured From, or its address under a person's name."""
        if not isinstance(name, str) or not name.strip():
            return self._from
        return str(Address(display_name=one_line(name), addr_spec=self._address))

    def _context(
        self, claimed: Claimed, token: str | None, purchases: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The names of GIVEN, and what the message was queued with."""
        customer = claimed.customer
        token = token or "none"
        context: dict[str, Any] = {
            "customer": customer_view(customer) if customer else _stranger(claimed.to_address),
            "company": self._company,
            "unsubscribe_url": f"{self._base_url}/unsubscribe/{token}",
            "preferences_url": f"{self._base_url}/preferences/{token}",
            "params": {},
            **purchases,
        }
        context.update(claimed.context)  # what the message was queued with wins
        return context

    def _invitation(
        self, calendar: dict[str, Any], claimed: Claimed, now: datetime
    ) -> tuple[list[Part], list[Part]]:
        """The event for this recipient, twice, as Google Calendar and Outlook send it: a
        text/calendar alternative with the iTIP method, which Gmail and Outlook show as an
        invitation with Accept and Decline, and invite.ics as an attachment, which Apple Mail
        and the rest offer to add to the calendar."""
        customer = claimed.customer
        attendee = (
            Attendee(customer.email, customer.name) if customer else Attendee(claimed.to_address)
        )
        data = invitation(calendar, attendee, now, organizer_name=self._sender_name)
        method = {"method": calendar["method"], "charset": "UTF-8"}
        return (
            [Part(content_type="text/calendar", data=data, params=method)],
            [
                Part(
                    content_type="application/ics",
                    data=data,
                    params={"name": INVITE_FILE},
                    filename=INVITE_FILE,
                )
            ],
        )

    def _list_headers(self, category: str, token: str | None) -> dict[str, str]:
        """RFC 8058 one-click unsubscribe on everything but transactional mail."""
        if category == Category.TRANSACTIONAL or token is None:
            return {}
        mailto = f"mailto:{self._address}?subject={quote('unsubscribe ' + token)}"
        return list_unsubscribe_headers(f"{self._base_url}/unsubscribe/{token}", mailto)


def purchases_of(
    engine: Engine, store: TemplateStore, claimed: Sequence[Claimed]
) -> dict[int, dict[str, Any]]:
    """For each claimed message (by outbox id) whose template reads ``orders``, ``insight``
    or ``recommendations``, its customer's values of those names, loaded for the whole
    batch at once; a stranger's are empty. Messages whose templates read none are left out."""
    wanted: dict[str, frozenset[str]] = {}
    for template in {item.template for item in claimed}:
        try:
            wanted[template] = store.reads(template) & frozenset(facts.NAMES)
        except TemplateError:  # an unknown template fails when it is rendered
            wanted[template] = frozenset()
    needing = [item for item in claimed if wanted[item.template]]
    if not needing:
        return {}
    ids = [item.customer.id for item in needing if item.customer]
    with engine.connect() as conn:
        loaded = facts.load(conn, ids, frozenset().union(*wanted.values()))
    return {
        item.id: {
            name: value
            for name, value in (
                loaded[item.customer.id] if item.customer else facts.empty(wanted[item.template])
            ).items()
            if name in wanted[item.template]
        }
        for item in needing
    }


def _large(claimed: Claimed) -> bool:
    """Attachments too big to be worth copying to a render worker and back."""
    return sum(len(file.content) for file in claimed.attachments) > dkim.SHIP_AT_MOST


def _outgoing(
    claimed: Claimed,
    finish: Finish,
    sender: str,
    done: RenderedMessage | Finished | TemplateError,
) -> Outgoing | TemplateError:
    """The message to send: finished in the render worker, or here from what it rendered."""
    if isinstance(done, TemplateError):
        return done
    finished = done if isinstance(done, Finished) else finish(done)
    return Outgoing(
        outbox_id=claimed.id,
        sender=sender,
        recipient=claimed.to_address,
        message_id=finish.envelope.message_id,
        **finished._asdict(),  # subject and data
    )


def _part(file: Attachment) -> Part:
    """A caller's file as an attachment; its name also as Content-Type's ``name``, which
    older clients read instead of Content-Disposition's ``filename``."""
    return Part(
        content_type=file.content_type,
        data=file.content,
        params={"name": file.filename},
        filename=file.filename,
    )


def _stranger(address: str) -> dict[str, Any]:
    """The customer variable for a test send to someone who is no customer."""
    return {
        "email": address,
        "name": "",
        "first_name": "",
        "locale": None,
        "timezone": "",
        "birthday": None,
        "tags": [],
        "fields": {},
    }
