"""Templates as marketing sees them before anything goes out: each one's variants and
problems, a preview for a real customer, and a test send through the outbox.

One implementation behind ``mailer templates`` and the marketing pages. A preview goes
through the sending code itself (``outgoing.Preparer``), so its subject, headers and parts
are the ones a send would carry; only its links are signed with a key the app refuses, so
a preview never hands out a working unsubscribe link of the customer it shows.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from mailer.core import jsonvalues
from mailer.core.categories import Category
from mailer.core.config import Config
from mailer.core.errors import MailerError, NotFound, Problem
from mailer.customers import profiles
from mailer.customers.csv_rows import normalise_email
from mailer.outbound import outbox
from mailer.outbound.outbox import Claimed, NewMessage
from mailer.outbound.prepare import Preparer, purchases_of
from mailer.outbound.templates import TemplateStore, sample_context
from mailer.sandbox import smtp_server
from mailer.scheduling.schedules import Schedule, WebinarSchedule

# what a preview or a test borrows from the sample data, being what one message is about (a
# reply, a meeting, a link to confirm); the customer, company and links are real
SAMPLE_ONLY = (
    *("params", "inquiry", "reply_expected_by", "reply", "confirm_url", "confirm_until"),
    *("webinar", "meeting", "event"),
)
PREVIEW_KEY = b"preview: links signed with this open no one's preferences"
SHOWN_HEADERS = ("From", "To", "Reply-To", "List-Unsubscribe", "List-Unsubscribe-Post")


@dataclass(frozen=True, slots=True, kw_only=True)
class Preview:
    template: str
    variant: str | None  # the locale folder used; None for the default
    category: str
    subject: str
    headers: list[tuple[str, str]]  # SHOWN_HEADERS that the message carries, decoded
    text: str
    html: str | None


def preview(
    engine: Engine,
    cfg: Config,
    store: TemplateStore,
    customer: profiles.Profile,
    name: str,
    *,
    locale: str | None,
    category: str,
    now: datetime,
) -> Preview:
    """``name`` as ``customer`` would receive it as ``category`` mail; TemplateError if it
    cannot be rendered. ``locale`` overrides the customer's own. The customer's orders,
    insight and recommendations are their real ones, loaded as a send loads them."""
    claimed = Claimed(
        id=0,
        to_address=customer.email,
        category=category,
        template=name,
        locale=locale,
        # as the outbox would give it back once stored
        context=jsonvalues.decode(jsonvalues.encode(_sample(cfg, store, name, locale))),
        headers={},
        envelope_from=None,
        attempts=0,
        created_at=now,
        valid_until=None,
        customer=customer,
    )
    purchases = purchases_of(engine, store, [claimed]).get(claimed.id)
    sent = Preparer(cfg, store, PREVIEW_KEY).prepare(claimed, now, purchases)
    message = smtp_server.read(sent.data)
    return Preview(
        template=name,
        variant=store.resolve(name, locale or customer.locale),
        category=category,
        subject=sent.subject,
        headers=[(k, v) for k, v in message["headers"] if k in SHOWN_HEADERS],
        text=message["text"] or "",
        html=message["html"],
    )


def send_test(
    engine: Engine,
    cfg: Config,
    store: TemplateStore,
    name: str,
    to: str,
    *,
    locale: str | None,
    now: datetime,
) -> NewMessage:
    """Queue one test of ``name`` to ``to`` with sample data; the daemon sends it.

    A test to a customer's address is rendered with that customer's data. Tests go as
    transactional mail (no caps, no quiet hours), so a customer who unsubscribed or whose
    address is suppressed is refused: a "test" must not become a way round their choice.
    """
    store.variants(name)  # an unknown template is refused now, not at send time
    try:
        address = normalise_email(to)
    except ValueError as exc:
        raise MailerError(str(exc)) from None
    with engine.connect() as conn:
        try:
            customer = profiles.get(conn, address)
        except NotFound:
            customer = None
    if customer is not None and (customer.unsubscribed_at or customer.suppressed_reason):
        raise MailerError(f"{address} unsubscribed or is suppressed: tests do not go there")
    customer_id = customer.id if customer is not None else None
    message = NewMessage(
        dedupe_key=f"test:{name}:{uuid.uuid4()}",
        to_address=address,
        category=Category.TRANSACTIONAL,
        template=name,
        customer_id=customer_id,
        locale=locale,
        context=_sample(cfg, store, name, locale),
    )
    outbox.enqueue(engine, [message], now)
    return message


def category_of(name: str, schedules: Iterable[Schedule]) -> str:
    """How a template goes out: as the first schedule using it sends it, else as transactional
    mail (acknowledgements, tests), which carries no unsubscribe headers."""
    using = (s.category for s in schedules if name in templates_of(s))
    return next(using, Category.TRANSACTIONAL)


def templates_of(schedule: Schedule) -> list[str]:
    """Every template a schedule sends: a webinar's reminders and cancellation too."""
    extra = (
        [schedule.reminder_template, schedule.cancel_template]
        if isinstance(schedule, WebinarSchedule)
        else []
    )
    return [schedule.template, *(t for t in extra if t)]


def problems_by_template(
    store: TemplateStore, company: Mapping[str, Any] | None
) -> dict[str, list[Problem]]:
    """The template check's problems under the template whose folder they are in; those of
    shared parts (a layout) under ""."""
    names = set(store.names())
    found: dict[str, list[Problem]] = {}
    for problem in store.check(company=company):
        inside = problem.where.removeprefix(f"{store.root.name}/")
        folder = re.split(r"[/:]", inside, maxsplit=1)[0]
        found.setdefault(folder if folder in names else "", []).append(problem)
    return found


def _sample(cfg: Config, store: TemplateStore, name: str, locale: str | None) -> dict[str, Any]:
    sample = sample_context(store.root, name, locale, company=cfg.settings.company or None)
    return {key: sample[key] for key in SAMPLE_ONLY}
