"""Signing in and out. Failed sign-ins are limited per name and client, and per client
(the address mailer.web.clients found, behind a proxy too)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailer.staff import sessions, users
from mailer.web import sessions as web_sessions
from mailer.web.common import checked_form, db, local_path, render, state


async def login(request: Request) -> Response:
    target = local_path(request.query_params.get("next", "/"), "/")
    if request.method == "GET":
        return render(request, "login.html", {"next": target})
    form = await checked_form(request)
    name, password = str(form.get("name", "")).strip(), str(form.get("password", ""))
    web = state(request)
    now = web.clock.now()
    client = request.client.host if request.client else ""
    if not await db(request, web.guard.attempt, name, client, now):
        message = "Too many failed sign-ins. Wait a quarter of an hour and try again."
        return render(request, "login.html", {"next": target, "error": message}, 429)
    visit = web_sessions.visit(request)
    async with web.hashing:  # argon2 takes 64 MiB and tens of ms: a few at a time
        started = await db(request, _sign_in, request, name, password, visit.id)
    if started is None:
        message = "That name and password do not match an active account."
        return render(request, "login.html", {"next": target, "error": message, "name": name}, 401)
    await db(request, web.guard.succeeded, name, client)
    visit.replace(started)  # a new session id (and CSRF token) at every sign-in
    return RedirectResponse(target, status_code=303)


def _sign_in(request: Request, name: str, password: str, previous: str) -> str | None:
    """A new server-side session for the user, ending the one this browser had, if any."""
    web = state(request)
    with web.engine.begin() as conn:
        user = users.authenticate(conn, name, password)
        if user is None:
            return None
        sessions.end(conn, previous)
        return sessions.start(conn, user.id, web.clock.now())


async def logout(request: Request) -> Response:
    await checked_form(request)
    visit = web_sessions.visit(request)
    await db(request, _sign_out, request, visit.id)
    visit.replace(sessions.new_id())
    return RedirectResponse("/login", status_code=303)


def _sign_out(request: Request, session_id: str) -> None:
    with state(request).engine.begin() as conn:
        sessions.end(conn, session_id)


routes = [
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
]
