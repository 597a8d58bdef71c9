"""Signing in and out. Failed sign-ins are limited per name and client, and per client
(the address mailer.web.clients found, behind a proxy too)."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailer.staff import users
from mailer.staff.users import SignedIn
from mailer.web.common import checked_form, db, render, state


async def login(request: Request) -> Response:
    target = _safe_next(request.query_params.get("next", "/"))
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
    async with web.hashing:  # argon2 takes 64 MiB and tens of ms: a few at a time
        user = await db(request, _authenticate, request, name, password)
    if user is None:
        message = "That name and password do not match an active account."
        return render(request, "login.html", {"next": target, "error": message, "name": name}, 401)
    await db(request, web.guard.succeeded, name, client)
    request.session.clear()  # a fresh session (and CSRF token) at every sign-in
    request.session["user"] = user.id
    return RedirectResponse(target, status_code=303)


def _authenticate(request: Request, name: str, password: str) -> SignedIn | None:
    with state(request).engine.begin() as conn:
        return users.authenticate(conn, name, password)


async def logout(request: Request) -> Response:
    await checked_form(request)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


def _safe_next(target: str) -> str:
    """Only a path on this site: never an open redirect to someone else's."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


routes = [
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
]
