"""Support's desk: inquiries (the list, and one thread with what was done about it) and
customers (who they are, every touch on one timeline, when we last spoke either way, when
the next mail may go), where support logs calls, meetings and notes.

What customers wrote is only ever shown as text (autoescaped, in ``<pre>``): their HTML is
never rendered, so nothing in it runs or loads. Marketing sees customers but not what they
wrote to support, unless ``[web] marketing_reads_inquiries`` says it may; changing an
inquiry is support's alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.engine import Connection
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailer.core.errors import InvalidContact, NotFound
from mailer.customers import contacts, profiles
from mailer.inbound import inquiries
from mailer.outbound import outbox
from mailer.relationship import history
from mailer.relationship.timeline import Cursor
from mailer.staff import users
from mailer.store.models import InquiryStatus, Role
from mailer.web import reply_editor
from mailer.web.common import (
    Endpoint,
    current_user,
    db,
    posted,
    render,
    rendering,
    require,
    state,
)

PAGE = 50
HISTORY = 200  # messages on a customer's page; `mailer customers show --history` has all
RAW_SHOWN = 100_000  # bytes of a failed message's source shown to support
NOTE_MAX = 10_000
STATUSES = [s.value for s in InquiryStatus]
Action = Callable[[Connection, int, Any, str, datetime], bool]


def _may_read(request: Request) -> bool:
    user = current_user(request)
    allowed = state(request).cfg.settings.web.marketing_reads_inquiries
    return user is not None and (user.may(Role.SUPPORT) or allowed)


def reads_inquiries(endpoint: Endpoint) -> Endpoint:
    """Support (and admin); marketing only where ``marketing_reads_inquiries`` allows it."""

    @require(Role.SUPPORT, Role.MARKETING)
    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        if not _may_read(request):
            raise HTTPException(403, "What customers wrote to support is for support users.")
        return await endpoint(request)

    return guarded


posted_by_support = posted(Role.SUPPORT)


def _number(request: Request, name: str) -> int | None:
    value = request.query_params.get(name, "")
    return int(value) if value.isascii() and value.isdigit() else None


def _link(path: str, **params: Any) -> str:
    """A link that keeps the reader's filters; empty ones are left out."""
    given = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(given)}" if given else path


# Inquiries ---------------------------------------------------------------------------------


@reads_inquiries
async def inquiry_list(request: Request) -> Response:
    status = request.query_params.get("status", "")
    status = status if status in STATUSES else ""
    q = request.query_params.get("q", "").strip()
    before, after = _number(request, "before"), _number(request, "after")
    late = request.query_params.get("late") == "1"
    browse = _late if late else _browse
    page = await db(request, browse, request, status, q, before, after)
    context = {
        "page": page,
        "late": late,
        "promised": await db(request, _promised, request, page.rows),
        "now": state(request).clock.now(),
        "q": q,
        "status": status,
        "statuses": STATUSES,
        "newer": _link("/inquiries", q=q, status=status, after=page.newer) if page.newer else None,
        "older": _link("/inquiries", q=q, status=status, before=page.older) if page.older else None,
    }
    return render(request, "desk_inquiries.html", context)


def _late(request: Request, *_: Any) -> inquiries.Page:
    """The quick filter "past promise": waiting for support past the promised time."""
    with state(request).engine.connect() as conn:
        late = inquiries.past_promise(conn, state(request).clock.now(), size=PAGE)
    return inquiries.Page(late, None, None)


def _promised(request: Request, rows: list[inquiries.Listed]) -> dict[int, datetime]:
    """The promised answer time of each inquiry on the page that still waits for support."""
    waiting = [r for r in rows if r.status in inquiries.WAITING_FOR_SUPPORT]
    with state(request).engine.connect() as conn:
        return inquiries.promises(conn, waiting)


def _browse(
    request: Request, status: str, q: str, before: int | None, after: int | None
) -> inquiries.Page:
    with state(request).engine.connect() as conn:
        return inquiries.browse(
            conn, status=status, search=q, before=before, after=after, size=PAGE
        )


@reads_inquiries
async def inquiry_page(request: Request) -> Response:
    return await inquiry_page_with(request)


async def inquiry_page_with(
    request: Request, *, text: str | None = None, refused: str | None = None, status: int = 200
) -> Response:
    """The inquiry page; a refused reply comes back to it with its text and the reason."""
    # starting from a saved reply renders a template: that waits its turn with the others
    run = rendering if "saved" in request.query_params else db
    context = await run(request, _inquiry, request, request.path_params["id"], text)
    if context is None:
        raise HTTPException(404, "There is no such inquiry.")
    context = {**context, "statuses": STATUSES, "reply_refused": refused}
    return render(request, "desk_inquiry.html", context, status=status)


def _inquiry(request: Request, inquiry_id: int, text: str | None = None) -> dict[str, Any] | None:
    with state(request).engine.connect() as conn:
        inquiry = inquiries.get(conn, inquiry_id)
        if inquiry is None:
            return None
        ids = [message.id for message in inquiry.thread]
        user = current_user(request)
        writes = user is not None and user.may(Role.SUPPORT)
        return {
            "inquiry": inquiry,
            "raw_text": _raw_text(inquiry),
            "acks": inquiries.acknowledgements(conn, ids),
            "events": inquiries.events(conn, inquiry_id),
            "assignees": _assignees(conn),
            **_promise(request, conn, inquiry),
            "sent_replies": inquiries.replies(conn, inquiry_id),
            "reply_editor": reply_editor.editor(request, conn, inquiry, text) if writes else None,
        }


def _promise(request: Request, conn: Connection, inquiry: inquiries.Listed) -> dict[str, Any]:
    """When the acknowledgement promised an answer, and whether that has passed while the
    inquiry still waits for support."""
    promised = inquiries.promises(conn, [inquiry]).get(inquiry.id)
    waiting = inquiry.status in inquiries.WAITING_FOR_SUPPORT
    late = waiting and promised is not None and promised < state(request).clock.now()
    return {"promised": promised if waiting else None, "past_promise": late}


def _raw_text(inquiry: inquiries.Opened) -> str | None:
    """A message that could not be read has no text: support gets its source instead."""
    if inquiry.body_text or not inquiry.raw:
        return None
    return bytes(inquiry.raw[:RAW_SHOWN]).decode("utf-8", "replace")


def _assignees(conn: Connection) -> list[str]:
    """Whoever may work on inquiries: active support and admin users."""
    may = (Role.SUPPORT, Role.ADMIN)
    return [u["name"] for u in users.find(conn) if u["role"] in may and not u["disabled"]]


@posted_by_support
async def change_status(request: Request, form: FormData) -> Response:
    status = str(form.get("status", ""))
    if status not in STATUSES:
        raise HTTPException(400, f"{status!r} is not a status an inquiry can have.")
    return await _act(request, inquiries.change_status, InquiryStatus(status))


@posted_by_support
async def assign(request: Request, form: FormData) -> Response:
    return await _act(request, _assign, str(form.get("assignee", "")) or None)


def _assign(conn: Connection, inquiry_id: int, name: str | None, actor: str, now: datetime) -> bool:
    if name is not None and name not in _assignees(conn):
        raise HTTPException(400, f"{name!r} is not an active support user.")
    return inquiries.assign(conn, inquiry_id, name, actor, now)


@posted_by_support
async def add_note(request: Request, form: FormData) -> Response:
    text = str(form.get("text", "")).strip()
    if not text or len(text) > NOTE_MAX:
        raise HTTPException(400, f"A note needs some text, at most {NOTE_MAX} characters.")
    return await _act(request, inquiries.add_note, text)


async def _act(request: Request, action: Action, value: Any) -> Response:
    """Do it as the signed-in user, then back to the inquiry (303: reloading repeats nothing)."""
    inquiry_id = int(request.path_params["id"])
    user = current_user(request)
    assert user is not None
    now = state(request).clock.now()
    if not await db(request, _write, request, action, inquiry_id, value, user.name, now):
        raise HTTPException(404, "There is no such inquiry.")
    return RedirectResponse(f"/inquiries/{inquiry_id}#timeline", status_code=303)


def _write(
    request: Request, action: Action, inquiry_id: int, value: Any, actor: str, now: datetime
) -> bool:
    with state(request).engine.begin() as conn:
        return action(conn, inquiry_id, value, actor, now)


# Customers ---------------------------------------------------------------------------------


@require(Role.SUPPORT, Role.MARKETING)
async def customer_list(request: Request) -> Response:
    q = request.query_params.get("q", "").strip()
    page = max(_number(request, "page") or 1, 1)
    sort = request.query_params.get("sort", "")
    sort = sort if sort in contacts.ORDERS else ""
    quiet = _number(request, "quiet")
    found = await db(request, _customers, request, q, page, sort, quiet)
    keep = {"q": q, "sort": sort, "quiet": quiet}
    context = {
        "customers": found[:PAGE],
        **keep,
        "sorted": {s: _link("/customers", q=q, quiet=quiet, sort=s) for s in contacts.ORDERS},
        "newer": _link("/customers", **keep, page=page - 1) if page > 1 else None,
        "older": _link("/customers", **keep, page=page + 1) if len(found) > PAGE else None,
    }
    return render(request, "customer_list.html", context)


def _customers(
    request: Request, q: str, page: int, sort: str, quiet: int | None
) -> list[contacts.Listed]:
    """One more than a page, to know whether another follows without counting them all."""
    web = state(request)
    since = web.clock.now() - timedelta(days=quiet) if quiet is not None else None
    with web.engine.connect() as conn:
        return contacts.browse(
            conn,
            search=q,
            order=sort,
            quiet_since=since,
            limit=PAGE + 1,
            offset=(page - 1) * PAGE,
        )


@require(Role.SUPPORT, Role.MARKETING)
async def customer_page(request: Request) -> Response:
    readable = _may_read(request)
    cursor = Cursor.decode(request.query_params.get("before", ""))
    customer_id = request.path_params["id"]
    context = await db(request, _customer, request, customer_id, readable, cursor)
    if context is None:
        raise HTTPException(404, "There is no such customer.")
    older = context["timeline"].older
    context["older"] = _link(f"/customers/{customer_id}", before=older.encode()) if older else None
    context["newer"] = f"/customers/{customer_id}#timeline" if cursor else None
    context["kinds"], context["directions"] = contacts.KINDS, contacts.DIRECTIONS
    return render(request, "customer_profile.html", {**context, "readable": readable})


def _customer(
    request: Request, customer_id: int, readable: bool, cursor: Cursor | None
) -> dict[str, Any] | None:
    web = state(request)
    now = web.clock.now()
    with web.engine.connect() as conn:
        try:
            customer = profiles.get_id(conn, customer_id)
        except NotFound:
            return None
        messages = outbox.find(conn, customer_id=customer_id, limit=HISTORY + 1)
        unsubscribed = customer.unsubscribed_at
        return {
            "customer": customer,
            "now": now,
            "zone": customer.timezone or web.cfg.settings.business_hours.timezone.key,
            "inquiries": inquiries.of_customer(conn, customer_id, with_text=readable),
            "messages": messages[:HISTORY],
            "more_messages": len(messages) > HISTORY,
            "last_contact": outbox.last_contact(conn, customer_id),
            "both_ways": contacts.last_of(conn, customer_id),
            "timeline": history.page(
                conn, customer_id, unsubscribed, cursor=cursor, with_text=readable
            ),
            "next_contact": outbox.next_contact(conn, customer, now, web.cfg.settings),
        }


@posted_by_support
async def log_contact(request: Request, form: FormData) -> Response:
    """A call, meeting or note from the customer's page, as the signed-in user."""
    customer_id = int(request.path_params["id"])
    user = current_user(request)
    assert user is not None
    now = state(request).clock.now()
    try:
        entry = _new_contact(form, user.name, now)
        found = await db(request, _log_contact, request, customer_id, entry, now)
    except InvalidContact as exc:
        raise HTTPException(400, str(exc)) from None
    if not found:
        raise HTTPException(404, "There is no such customer.")
    return RedirectResponse(f"/customers/{customer_id}#timeline", status_code=303)


def _new_contact(form: FormData, by: str, now: datetime) -> contacts.NewContact:
    """The form as a contact; a time without an offset is UTC, as every time on these pages."""
    minutes = _field(form, "minutes")
    if minutes and not (minutes.isascii() and minutes.isdigit()):
        raise InvalidContact(f"the duration {minutes!r} is not a whole number of minutes")
    return contacts.NewContact(
        kind=_field(form, "kind"),
        direction=_field(form, "direction") or None,
        at=_utc(_field(form, "at")) or now,
        by=by,
        note=str(form.get("note", "")),
        duration=timedelta(minutes=int(minutes)) if minutes else None,
        outcome=str(form.get("outcome", "")),
        location=str(form.get("where", "")),
        attendees=[a for a in _field(form, "attendees").split(",") if a.strip()],
    )


def _field(form: FormData, name: str) -> str:
    return str(form.get(name, "")).strip()


def _utc(text: str) -> datetime | None:
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidContact(f"the time {text!r} is not a date and time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _log_contact(
    request: Request, customer_id: int, entry: contacts.NewContact, now: datetime
) -> bool:
    with state(request).engine.begin() as conn:
        try:
            profiles.get_id(conn, customer_id)
        except NotFound:
            return False
        contacts.log(conn, customer_id, entry, now)
        return True


routes = [
    Route("/inquiries", inquiry_list),
    Route("/inquiries/{id:int}", inquiry_page),
    Route("/inquiries/{id:int}/status", change_status, methods=["POST"]),
    Route("/inquiries/{id:int}/assign", assign, methods=["POST"]),
    Route("/inquiries/{id:int}/notes", add_note, methods=["POST"]),
    Route("/customers", customer_list),
    Route("/customers/{id:int}", customer_page),
    Route("/customers/{id:int}/contacts", log_contact, methods=["POST"]),
]
