"""Sending a reply from the desk, and managing support's saved replies (``/desk/replies``).

A reply that must not go (a suppressed address) is refused on the inquiry page with the
reason and the text kept (``reply_editor`` builds the editor).
"""

from __future__ import annotations

from datetime import datetime

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailer.core.text import plain_lines
from mailer.inbound import inquiries, replies, saved_replies
from mailer.inbound.saved_replies import Draft
from mailer.store.models import Role
from mailer.web import desk
from mailer.web.common import current_user, db, render, require, state
from mailer.web.desk import posted_by_support


@posted_by_support
async def send_reply(request: Request, form: FormData) -> Response:
    inquiry_id = int(request.path_params["id"])
    user = current_user(request)
    assert user is not None
    text = plain_lines(str(form.get("text", "")))  # as notes are kept: no NUL, no escapes
    now = state(request).clock.now()
    refused = await db(request, _send, request, inquiry_id, text, user.name, now)
    if refused is None:
        return RedirectResponse(f"/inquiries/{inquiry_id}#timeline", status_code=303)
    return await desk.inquiry_page_with(request, text=text, refused=refused, status=409)


def _send(request: Request, inquiry_id: int, text: str, user: str, now: datetime) -> str | None:
    """None when the reply was queued, else why it was refused."""
    with state(request).engine.begin() as conn:
        inquiry = inquiries.get(conn, inquiry_id)
        if inquiry is None:
            raise HTTPException(404, "There is no such inquiry.")
        try:
            replies.send(conn, inquiry, text=text, user=user, now=now)
        except replies.Refused as exc:
            return str(exc)
    return None


# Saved replies ------------------------------------------------------------------------------


@require(Role.SUPPORT)
async def saved_list(request: Request) -> Response:
    found = await db(request, _all, request)
    return render(request, "desk_replies.html", {"saved": found})


def _all(request: Request) -> list[saved_replies.Saved]:
    with state(request).engine.connect() as conn:
        return saved_replies.find(conn)


@require(Role.SUPPORT)
async def saved_form(request: Request) -> Response:
    saved_id = request.path_params.get("id")
    saved = await db(request, _one, request, saved_id) if saved_id is not None else None
    if saved_id is not None and saved is None:
        raise HTTPException(404, "There is no such saved reply.")
    draft = Draft(name=saved.name, locale=saved.locale, body=saved.body) if saved else None
    return _form(request, saved_id, draft or Draft(name="", locale="en", body=""), None)


def _form(
    request: Request, saved_id: int | None, draft: Draft, problem: str | None, status: int = 200
) -> Response:
    context = {"saved_id": saved_id, "draft": draft, "problem": problem}
    return render(request, "desk_reply_form.html", context, status=status)


def _one(request: Request, saved_id: int) -> saved_replies.Saved | None:
    with state(request).engine.connect() as conn:
        return saved_replies.get(conn, saved_id)


@posted_by_support
async def save(request: Request, form: FormData) -> Response:
    saved_id = request.path_params.get("id")
    draft = Draft(
        name=str(form.get("name", "")),
        locale=str(form.get("locale", "")),
        body=str(form.get("body", "")).replace("\r\n", "\n"),
    )
    user = current_user(request)
    assert user is not None
    now = state(request).clock.now()
    problem = await db(request, _save, request, saved_id, draft, user.name, now)
    if problem is not None:
        return _form(request, saved_id, draft, problem, status=400)
    return RedirectResponse("/desk/replies", status_code=303)


def _save(
    request: Request, saved_id: int | None, draft: Draft, actor: str, now: datetime
) -> str | None:
    with state(request).engine.begin() as conn:
        problem = saved_replies.problem(conn, draft, saved_id)
        if problem is None and saved_replies.save(conn, draft, saved_id, actor, now) is None:
            raise HTTPException(404, "There is no such saved reply.")
        return problem


@posted_by_support
async def remove(request: Request, form: FormData) -> Response:
    await db(request, _remove, request, int(request.path_params["id"]))
    return RedirectResponse("/desk/replies", status_code=303)


def _remove(request: Request, saved_id: int) -> None:
    with state(request).engine.begin() as conn:
        saved_replies.remove(conn, saved_id)


routes = [
    Route("/inquiries/{id:rowid}/reply", send_reply, methods=["POST"]),
    Route("/desk/replies", saved_list),
    Route("/desk/replies/new", saved_form),
    Route("/desk/replies/new", save, methods=["POST"]),
    Route("/desk/replies/{id:rowid}", saved_form),
    Route("/desk/replies/{id:rowid}", save, methods=["POST"]),
    Route("/desk/replies/{id:rowid}/delete", remove, methods=["POST"]),
]
