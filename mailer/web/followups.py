"""Support's follow-ups: "My follow-ups" (overdue, today, upcoming, in the reader's zone),
created from an inquiry or a customer's page, completed, snoozed and reassigned; and the
count of overdue ones the navigation shows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from mailer.core.errors import MailerError, NotFound
from mailer.core.fieldtypes import whole_number
from mailer.customers import followups, profiles
from mailer.relationship import meetings
from mailer.staff import users
from mailer.staff.users import SignedIn
from mailer.store.models import Role
from mailer.web.common import (
    current_user,
    db,
    local_path,
    render,
    require,
    state,
    typed_fields,
    viewer_zone,
)
from mailer.web.desk import posted_by_support

SNOOZES = {"1d": timedelta(days=1), "1w": timedelta(weeks=1)}
Change = Callable[[Connection, int, SignedIn, datetime], None]


def _me(request: Request) -> SignedIn:
    user = current_user(request)
    assert user is not None  # every route here requires a signed-in user
    return user


@require(Role.SUPPORT)
async def my_followups(request: Request) -> Response:
    user = _me(request)
    zone = viewer_zone(request)
    now = state(request).clock.now()
    rows, assignees = await db(request, _mine, request, user.name)
    context = {
        "groups": followups.by_day(rows, now, zone),
        "assignees": assignees,
        "snoozes": SNOOZES,
    }
    return render(request, "followups.html", context)


def _mine(request: Request, name: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The follow-ups, each with its customer's language (``lang``), and who may take them."""
    with state(request).engine.connect() as conn:
        rows = followups.find(conn, assignee=name)
        langs = profiles.languages(conn, [row["customer_id"] for row in rows])
        mine = [{**row, "lang": langs.get(row["customer_id"])} for row in rows]
        return mine, users.assignable(conn)


@require(Role.SUPPORT)
async def overdue_badge(request: Request) -> Response:
    """The navigation's count, fetched by htmx so no page waits for it."""
    now = state(request).clock.now()
    count = await db(request, _overdue, request, _me(request).name, now)
    badge = f'<span class="badge failed" title="overdue">{count}</span>' if count else ""
    return HTMLResponse(badge)


def _overdue(request: Request, name: str, now: datetime) -> int:
    with state(request).engine.connect() as conn:
        return followups.overdue_count(conn, name, now)


def _form_id(form: FormData, name: str) -> int | None:
    value = form.get(name, "")
    return whole_number(value) if isinstance(value, str) else None


def _back(form: FormData) -> str:
    """Where the form came from: only a path on this site."""
    return local_path(str(form.get("back", "")), "/followups")


@posted_by_support
async def create(request: Request, form: FormData) -> Response:
    customer = _form_id(form, "customer")
    if customer is None:
        raise HTTPException(400, "A follow-up needs a customer.")
    due, note = str(form.get("due", "")), str(form.get("note", ""))
    inquiry = _form_id(form, "inquiry")
    try:
        await db(request, _create, request, customer, inquiry, due, note, form)
    except MailerError as exc:  # the form again, saying why, with what was typed in it
        context = {
            "problem": str(exc),
            "followup_customer": customer,
            "followup_inquiry": inquiry,
            "followup_typed": typed_fields(form),
            "followup_back": _back(form),
        }
        return render(request, "followup_refused.html", context, status=400)
    return RedirectResponse(_back(form), status_code=303)


def _create(
    request: Request, customer: int, inquiry: int | None, due: str, note: str, form: FormData
) -> None:
    """A follow-up, or with "meeting" ticked a meeting whose invitation goes out with it;
    MailerError says why not."""
    web, user = state(request), _me(request)
    now = web.clock.now()
    with web.engine.begin() as conn:
        new = followups.NewFollowUp(
            customer_id=customer,
            due_at=followups.due_for(conn, due, user.name, now, viewer_zone(request)),
            note=note,
            created_by=user.name,
            assignee=user.name,
            inquiry_id=inquiry,
            meeting=_plan(form) if form.get("meeting") else None,
        )
        if new.meeting is None:
            followups.add(conn, new, now)
        else:
            meetings.schedule(conn, new, meetings.Sender.from_config(web.cfg), now)


def _plan(form: FormData) -> followups.MeetingPlan:
    attendees = str(form.get("attendees", "")).replace(",", " ").split()
    return meetings.plan(str(form.get("duration", "")), str(form.get("where", "")), (*attendees,))


@posted_by_support
async def complete(request: Request, form: FormData) -> Response:
    return await _change(
        request, lambda conn, id_, user, now: followups.done(conn, id_, user.name, now)
    )


@posted_by_support
async def snooze(request: Request, form: FormData) -> Response:
    delay = SNOOZES.get(str(form.get("by", "")))
    if delay is None:
        raise HTTPException(400, f"Snooze by one of {', '.join(SNOOZES)}.")
    return await _change(
        request, lambda conn, id_, user, now: followups.snooze(conn, id_, delay, now)
    )


@posted_by_support
async def reassign(request: Request, form: FormData) -> Response:
    name = str(form.get("assignee", "")) or None

    def to(conn: Connection, followup_id: int, user: SignedIn, now: datetime) -> None:
        if name is not None and name not in users.assignable(conn):
            raise HTTPException(400, f"{name!r} is not an active support user.")
        followups.reassign(conn, followup_id, name)

    return await _change(request, to)


async def _change(request: Request, change: Change) -> Response:
    """Do it as the signed-in user, then back to the list (303: reloading repeats nothing)."""
    await db(request, _write, request, change, int(request.path_params["id"]))
    return RedirectResponse("/followups", status_code=303)


def _write(request: Request, change: Change, followup_id: int) -> None:
    web = state(request)
    with web.engine.begin() as conn:
        try:
            change(conn, followup_id, _me(request), web.clock.now())
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except MailerError as exc:  # e.g. a meeting moved into the past
            raise HTTPException(400, str(exc)) from None


@posted_by_support
async def move(request: Request, form: FormData) -> Response:
    """A new time (in the reader's zone), length or place; the customer gets the update."""
    at, duration, where = (str(form.get(k, "")).strip() for k in ("at", "duration", "where"))

    def to(conn: Connection, meeting_id: int, user: SignedIn, now: datetime) -> None:
        current = followups.meeting(conn, meeting_id)
        starts_at = followups.due_for(conn, at, None, now, viewer_zone(request))
        plan = meetings.replan(current, duration or None, where or None)
        meetings.move(conn, meeting_id, starts_at, plan, sender=_sender(request), now=now)

    return await _change(request, to)


@posted_by_support
async def cancel(request: Request, form: FormData) -> Response:
    return await _change(
        request,
        lambda conn, id_, user, now: meetings.cancel(conn, id_, user.name, _sender(request), now),
    )


def _sender(request: Request) -> meetings.Sender:
    return meetings.Sender.from_config(state(request).cfg)


routes = [
    Route("/followups", my_followups),
    Route("/followups", create, methods=["POST"]),
    Route("/followups/overdue", overdue_badge),
    Route("/followups/{id:rowid}/done", complete, methods=["POST"]),
    Route("/followups/{id:rowid}/snooze", snooze, methods=["POST"]),
    Route("/followups/{id:rowid}/assign", reassign, methods=["POST"]),
    Route("/followups/{id:rowid}/move", move, methods=["POST"]),
    Route("/followups/{id:rowid}/cancel", cancel, methods=["POST"]),
]
