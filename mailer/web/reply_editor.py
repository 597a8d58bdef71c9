"""The reply editor on the inquiry page: plain text, starting from the customer's message
quoted, or from a saved reply rendered for this inquiry and customer (``?saved=ID``), with
why a reply cannot go shown before anyone writes one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection
from starlette.requests import Request

from mailer.core.errors import NotFound, TemplateError
from mailer.core.fieldtypes import whole_number
from mailer.customers import profiles
from mailer.customers.context import customer_view, customer_zone
from mailer.inbound import inquiries, replies, saved_replies
from mailer.staff import users
from mailer.web.common import current_user, state

PAGE_CONTEXT = "reply_editor"  # the inquiry page's context key for the editor


def editor(
    request: Request, conn: Connection, inquiry: inquiries.Opened, text: str | None = None
) -> dict[str, Any]:
    """The editor's state for the inquiry page: the text to start from, the saved replies
    (the customer's language first), and why a reply cannot go, if it cannot."""
    answering = replies.answering(inquiry)
    customer = _customer(conn, answering.customer_id)
    zone = customer_zone(customer, state(request).cfg)
    chosen = whole_number(request.query_params.get("saved", ""))
    problem = None
    if text is None and chosen is not None:
        text, problem = _from_saved(request, conn, chosen, inquiry, customer)
    return {
        "text": text if text is not None else replies.quoted(answering, zone),
        "saved": saved_replies.in_language_first(
            saved_replies.find(conn), customer.locale if customer else None
        ),
        "chosen": chosen,
        "problem": problem,
        "refusal": replies.refusal(conn, answering.sender),
        "to": answering.sender,
    }


def _customer(conn: Connection, customer_id: int | None) -> profiles.Profile | None:
    try:
        return profiles.get_id(conn, customer_id) if customer_id is not None else None
    except NotFound:
        return None


def _from_saved(
    request: Request,
    conn: Connection,
    saved_id: int,
    inquiry: inquiries.Opened,
    customer: profiles.Profile | None,
) -> tuple[str | None, str | None]:
    """The saved reply rendered for this inquiry above the quoted message, or why not."""
    saved = saved_replies.get(conn, saved_id)
    if saved is None:
        return None, "That saved reply no longer exists."
    cfg = state(request).cfg
    user = current_user(request)
    context = {
        "customer": customer_view(customer) if customer else {"email": inquiry.sender},
        "inquiry": {
            "reference": inquiries.reference(inquiries.root_of(inquiry)),
            "subject": inquiry.subject,
            "received_at": inquiry.received_at,
        },
        "company": dict(cfg.settings.company),
        "agent": users.shown_name(conn, user.name) if user else "",
    }
    zone = customer_zone(customer, cfg)
    try:
        text = saved_replies.render(saved, context, zone)
    except TemplateError as exc:
        return None, f"The saved reply could not be used: {exc}"
    return text + replies.quoted(replies.answering(inquiry), zone), None
