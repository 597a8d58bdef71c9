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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailer.commerce import insights, orders
from mailer.core.errors import InvalidContact, MailerError, NotFound, TemplateError
from mailer.core.fieldtypes import wall_moment, whole_number
from mailer.customers import contacts, followups, profiles
from mailer.inbound import inquiries, plain_words
from mailer.outbound import outbox
from mailer.outbound.prepare import Preparer, purchases_of
from mailer.outbound.templates import TemplateStore
from mailer.relationship import history
from mailer.relationship.timeline import Cursor
from mailer.sandbox import smtp_server
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
    typed_fields,
    viewer_zone,
)

PAGE = 50
ORDERS = 5  # latest orders on a customer's page
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
    return whole_number(request.query_params.get(name, ""))


def _link(path: str, **params: Any) -> str:
    """A link that keeps the reader's filters; empty ones are left out."""
    given = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(given)}" if given else path


# Inquiries ---------------------------------------------------------------------------------


@reads_inquiries
async def inquiry_list(request: Request) -> Response:
    """One row per conversation; quick filters Mine, Unassigned, Open (support's turn) and
    Overdue (past the promised answer time) beside the status filter and the search."""
    status = request.query_params.get("status", "")
    status = status if status in STATUSES else ""
    q = request.query_params.get("q", "").strip()
    show = request.query_params.get("show", "")
    show = "overdue" if request.query_params.get("late") == "1" else show
    show = show if show in QUICK else ""
    before, after = _number(request, "before"), _number(request, "after")
    user = current_user(request)
    assert user is not None
    wanted = _wanted(show, status, q, user.name)
    page = await db(request, _conversations, request, show, wanted, before, after)
    keep = {"show": show, "q": q, "status": status}
    context = {
        "page": page,
        "show": show,
        "quick": QUICK,
        "quick_links": {name: _link("/inquiries", show=name, q=q, status=status) for name in QUICK},
        "here": _link("/inquiries", **keep, before=before, after=after),
        "promised": await db(request, _promised, request, page.rows),
        "said": {c.root.id: _said(c.latest) for c in page.rows},
        "langs": await db(request, _languages, request, [c.latest.customer_id for c in page.rows]),
        "now": state(request).clock.now(),
        "q": q,
        "status": status,
        "statuses": STATUSES,
        "newer": _link("/inquiries", **keep, after=page.newer) if page.newer else None,
        "older": _link("/inquiries", **keep, before=page.older) if page.older else None,
    }
    return render(request, "desk_inquiries.html", context)


# the quick filters, as their links name them
QUICK = {"mine": "Mine", "unassigned": "Unassigned", "open": "Open", "overdue": "Overdue"}


def _wanted(show: str, status: str, q: str, me: str) -> inquiries.Wanted:
    """Open is support's turn (new, acknowledged, open); Unassigned is nobody's of those."""
    return inquiries.Wanted(
        status=status or None,
        waiting=show in ("open", "unassigned"),
        assignee=me if show == "mine" else None,
        unassigned=show == "unassigned",
        search=q,
    )


def _conversations(
    request: Request, show: str, wanted: inquiries.Wanted, before: int | None, after: int | None
) -> inquiries.Conversations:
    """Overdue is its own list (the longest overdue first, one page): the others page."""
    with state(request).engine.connect() as conn:
        if show == "overdue":
            late = inquiries.past_promise(conn, state(request).clock.now(), size=PAGE)
            return inquiries.Conversations(late, None, None)
        return inquiries.conversations(conn, wanted, before=before, after=after, size=PAGE)


def _promised(request: Request, rows: list[inquiries.Conversation]) -> dict[int, datetime]:
    """The promised answer time of each conversation on the page that waits for support."""
    waiting = [r.root for r in rows if r.root.status in inquiries.WAITING_FOR_SUPPORT]
    with state(request).engine.connect() as conn:
        return inquiries.promises(conn, waiting)


def _languages(request: Request, customer_ids: list[int | None]) -> dict[int, str]:
    with state(request).engine.connect() as conn:
        return profiles.languages(conn, customer_ids)


def _said(message: inquiries.Listed) -> dict[str, Any]:
    """A message's decision and reasons in support's words."""
    return {
        "decision": plain_words.decision(message.decision, message.reasons),
        "reasons": [plain_words.reason(r) for r in message.reasons],
    }


@reads_inquiries
async def inquiry_page(request: Request) -> Response:
    return await inquiry_page_with(request)


async def inquiry_page_with(
    request: Request, *, text: str | None = None, refused: str | None = None, status: int = 200
) -> Response:
    """The conversation's page; a message threaded onto it opens there at that message.
    A refused reply comes back to it with its text and the reason."""
    # starting from a saved reply renders a template: that waits its turn with the others
    run = rendering if "saved" in request.query_params else db
    context = await run(request, _inquiry, request, request.path_params["id"], text)
    if context is None:
        raise HTTPException(404, "There is no such inquiry.")
    inquiry = context["inquiry"]
    if inquiry.thread_id is not None:
        return RedirectResponse(f"/inquiries/{inquiry.thread_id}#message-{inquiry.id}", 303)
    context = {**context, "statuses": STATUSES, "reply_refused": refused}
    return render(request, "desk_inquiry.html", context, status=status)


def _inquiry(request: Request, inquiry_id: int, text: str | None = None) -> dict[str, Any] | None:
    with state(request).engine.connect() as conn:
        inquiry = inquiries.get(conn, inquiry_id)
        if inquiry is None or inquiry.thread_id is not None:
            return None if inquiry is None else {"inquiry": inquiry}
        ids = [message.id for message in inquiry.thread]
        user = current_user(request)
        writes = user is not None and user.may(Role.SUPPORT)
        return {
            "inquiry": inquiry,
            "raw_text": _raw_text(inquiry),
            "acks": inquiries.acknowledgements(conn, ids),
            "said": {m.id: _said(m) for m in inquiry.thread},
            "langs": profiles.languages(conn, [m.customer_id for m in inquiry.thread]),
            "events": inquiries.events(conn, inquiry_id),
            "assignees": users.assignable(conn),
            **_promise(request, conn, inquiry),
            "sent_replies": inquiries.replies(conn, inquiry_id),
            "reply_editor": reply_editor.editor(request, conn, inquiry, text) if writes else None,
        }


@reads_inquiries
async def acknowledgement(request: Request) -> Response:
    """The acknowledgement an inquiry got, opened: what the customer was sent."""
    context = await rendering(request, _acknowledgement, request, request.path_params["id"])
    if context is None:
        raise HTTPException(404, "No acknowledgement was queued for this inquiry.")
    return render(request, "desk_acknowledgement.html", context)


def _acknowledgement(request: Request, inquiry_id: int) -> dict[str, Any] | None:
    """Rendered again from its template and the values it was queued with, as the delivery
    worker made the copy that went."""
    web = state(request)
    with web.engine.connect() as conn:
        queued = outbox.by_key(conn, inquiries.ack_key(inquiry_id))
        ack = inquiries.acknowledgements(conn, [inquiry_id]).get(inquiry_id)
    if queued is None or ack is None:
        return None
    shown: dict[str, Any] = {"inquiry_id": inquiry_id, "ack": ack}
    preparer = Preparer(web.cfg, TemplateStore(web.cfg.templates_dir), web.secret)
    purchases = purchases_of(web.engine, preparer.store, [queued]).get(queued.id)
    try:
        made = preparer.prepare(queued, ack.sent_at or ack.created_at, purchases)
    except TemplateError as exc:
        return {**shown, "problem": str(exc)}
    return {**shown, "subject": made.subject, "text": smtp_server.read(made.data)["text"]}


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


@dataclass(frozen=True, slots=True)
class Change:
    """What one post of the inquiry page's form asks for; each part is recorded as its own
    event, as if done one at a time."""

    status: InquiryStatus
    assignee: str | None
    note: str


@posted_by_support
async def change(request: Request, form: FormData) -> Response:
    """Status, assignee and a note in one action, one transaction."""
    status = str(form.get("status", ""))
    if status not in STATUSES:
        raise HTTPException(400, f"{status!r} is not a status an inquiry can have.")
    note = str(form.get("note", "")).strip()
    if len(note) > NOTE_MAX:
        raise HTTPException(400, f"A note has at most {NOTE_MAX} characters.")
    wanted = Change(InquiryStatus(status), str(form.get("assignee", "")) or None, note)
    await _act(request, _change, wanted)
    return RedirectResponse(f"/inquiries/{request.path_params['id']}#timeline", 303)


def _change(conn: Connection, inquiry_id: int, wanted: Change, actor: str, now: datetime) -> bool:
    if not inquiries.change_status(conn, inquiry_id, wanted.status, actor, now):
        return False
    _assign(conn, inquiry_id, wanted.assignee, actor, now)
    if wanted.note:
        inquiries.add_note(conn, inquiry_id, wanted.note, actor, now)
    return True


@posted_by_support
async def assign_to_me(request: Request, form: FormData) -> Response:
    """ "Assign to me", from a row of the list or the inquiry page: back where it was done."""
    user = current_user(request)
    assert user is not None
    await _act(request, _assign, user.name)
    back = str(form.get("back", ""))
    inquiry_page = f"/inquiries/{request.path_params['id']}"
    return RedirectResponse(back if _on_the_list(back) else inquiry_page, 303)


def _on_the_list(path: str) -> bool:
    """Only the inquiry list itself is a place to go back to, never another site."""
    return path == "/inquiries" or path.startswith("/inquiries?")


def _assign(conn: Connection, inquiry_id: int, name: str | None, actor: str, now: datetime) -> bool:
    if name is not None and name not in users.assignable(conn):
        raise HTTPException(400, f"{name!r} is not an active support user.")
    return inquiries.assign(conn, inquiry_id, name, actor, now)


async def _act(request: Request, action: Action, value: Any) -> None:
    """Do it as the signed-in user, on the conversation (its first inquiry), in one
    transaction; 404 when there is no such inquiry."""
    inquiry_id = int(request.path_params["id"])
    user = current_user(request)
    assert user is not None
    now = state(request).clock.now()
    if not await db(request, _write, request, action, inquiry_id, value, user.name, now):
        raise HTTPException(404, "There is no such inquiry.")


def _write(
    request: Request, action: Action, inquiry_id: int, value: Any, actor: str, now: datetime
) -> bool:
    with state(request).engine.begin() as conn:
        root = inquiries.root_id(conn, inquiry_id)
        return root is not None and action(conn, root, value, actor, now)


# Customers ---------------------------------------------------------------------------------


@require(Role.SUPPORT, Role.MARKETING)
async def customer_list(request: Request) -> Response:
    q = request.query_params.get("q", "").strip()
    page = max(_number(request, "page") or 1, 1)
    sort = request.query_params.get("sort", "")
    sort = sort if sort in contacts.ORDERS else ""
    quiet = _number(request, "quiet")
    unanswered = 1 if request.query_params.get("unanswered") else None
    found = await db(request, _customers, request, q, page, sort, quiet, unanswered)
    keep = {"q": q, "sort": sort, "quiet": quiet, "unanswered": unanswered}
    context = {
        "customers": found[:PAGE],
        **keep,
        "sorted": {s: _link("/customers", **{**keep, "sort": s}) for s in contacts.ORDERS},
        "newer": _link("/customers", **keep, page=page - 1) if page > 1 else None,
        "older": _link("/customers", **keep, page=page + 1) if len(found) > PAGE else None,
    }
    return render(request, "customer_list.html", context)


def _customers(
    request: Request, q: str, page: int, sort: str, quiet: int | None, unanswered: int | None
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
            only=inquiries.never_answered() if unanswered else None,
            limit=PAGE + 1,
            offset=(page - 1) * PAGE,
        )


@require(Role.SUPPORT, Role.MARKETING)
async def customer_page(request: Request) -> Response:
    return await _profile(request, request.path_params["id"])


async def _profile(
    request: Request, customer_id: int, typed: Mapping[str, str] | None = None, problem: str = ""
) -> Response:
    """The customer's page; with ``problem``, the contact form that was refused is shown
    open again, saying why, with what was typed in it (so a note is never lost)."""
    readable = _may_read(request)
    cursor = Cursor.decode(request.query_params.get("before", ""))
    context = await db(request, _customer, request, customer_id, readable, cursor)
    if context is None:
        raise HTTPException(404, "There is no such customer.")
    older = context["timeline"].older
    context["older"] = _link(f"/customers/{customer_id}", before=older.encode()) if older else None
    context["newer"] = f"/customers/{customer_id}#timeline" if cursor else None
    context["kinds"], context["directions"] = contacts.KINDS, contacts.DIRECTIONS
    context["typed"], context["contact_problem"] = typed or {}, problem
    return render(
        request,
        "customer_profile.html",
        {**context, "readable": readable},
        status=400 if problem else 200,
    )


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
            "orders": orders.find(conn, customer_id, limit=ORDERS),
            "insight": next(iter(insights.export(conn, customer_id=customer_id)), None),
            "day_start": functools.partial(_day_start, web.cfg.settings.business_hours.timezone),
        }


def _day_start(zone: ZoneInfo, day: date) -> datetime:
    """A day's first moment in the business's zone, for ``|ago``."""
    return datetime.combine(day, time(), zone)


@posted_by_support
async def log_contact(request: Request, form: FormData) -> Response:
    """A call, meeting or note from the customer's page, as the signed-in user."""
    customer_id = int(request.path_params["id"])
    user = current_user(request)
    assert user is not None
    now = state(request).clock.now()
    later = _field(form, "follow_up")
    try:
        entry = _new_contact(form, user.name, now, viewer_zone(request))
        found = await db(request, _log_contact, request, customer_id, entry, later, now)
    except (InvalidContact, MailerError) as exc:
        typed = typed_fields(form)
        return await _profile(request, customer_id, typed, str(exc))
    if not found:
        raise HTTPException(404, "There is no such customer.")
    return RedirectResponse(f"/customers/{customer_id}#timeline", status_code=303)


def _new_contact(form: FormData, by: str, now: datetime, zone: ZoneInfo) -> contacts.NewContact:
    """The form as a contact; a time without an offset is in the reader's zone, as the
    page shows every time."""
    minutes = _field(form, "minutes")
    longest = int(contacts.LONGEST_CALL.total_seconds()) // 60
    if minutes and whole_number(minutes, longest) is None:
        raise InvalidContact(f"the duration {minutes!r} is not a number of minutes up to a week")
    return contacts.NewContact(
        kind=_field(form, "kind"),
        direction=_field(form, "direction") or None,
        at=_moment(_field(form, "at"), zone) or now,
        by=by,
        note=str(form.get("note", "")),
        duration=timedelta(minutes=int(minutes)) if minutes else None,
        outcome=str(form.get("outcome", "")),
        location=str(form.get("where", "")),
        attendees=[a for a in _field(form, "attendees").split(",") if a.strip()],
    )


def _field(form: FormData, name: str) -> str:
    return str(form.get(name, "")).strip()


def _moment(text: str, zone: ZoneInfo) -> datetime | None:
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidContact(f"the time {text!r} is not a date and time") from None
    try:
        return wall_moment(at, zone)
    except ValueError as exc:
        raise InvalidContact(f"the time {text!r} is {exc}") from None


def _log_contact(
    request: Request, customer_id: int, entry: contacts.NewContact, later: str, now: datetime
) -> bool:
    """The contact, and with ``later`` ("3d") a follow-up for whoever logged it that names
    the contact it came from; both or neither."""
    with state(request).engine.begin() as conn:
        try:
            profiles.get_id(conn, customer_id)
        except NotFound:
            return False
        contact_id = contacts.log(conn, customer_id, entry, now)
        if later:
            due = followups.due_for(conn, later, entry.by, now, viewer_zone(request))
            about = f"after the {entry.kind}" + (f": {entry.note}" if entry.note else "")
            reminder = followups.NewFollowUp(
                customer_id=customer_id,
                due_at=due,
                note=about,
                created_by=entry.by,
                assignee=entry.by,
                contact_id=contact_id,
            )
            followups.add(conn, reminder, now)
        return True


routes = [
    Route("/inquiries", inquiry_list),
    Route("/inquiries/{id:rowid}", inquiry_page),
    Route("/inquiries/{id:rowid}/acknowledgement", acknowledgement),
    Route("/inquiries/{id:rowid}/change", change, methods=["POST"]),
    Route("/inquiries/{id:rowid}/mine", assign_to_me, methods=["POST"]),
    Route("/customers", customer_list),
    Route("/customers/{id:rowid}", customer_page),
    Route("/customers/{id:rowid}/contacts", log_contact, methods=["POST"]),
]
