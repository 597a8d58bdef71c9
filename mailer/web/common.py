"""What every page shares: the signed-in user, roles, CSRF, and rendering.

Pages are server-rendered Jinja with htmx for the small live parts: no build step, and
nothing a customer wrote is ever handed to a browser as markup (autoescape is on, and
bodies are shown as text).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from mailer.core import fieldtypes
from mailer.core.clock import Clock
from mailer.core.config import Config
from mailer.core.fieldtypes import whole_number
from mailer.staff import sessions, users
from mailer.staff.signins import LoginGuard
from mailer.staff.users import SignedIn
from mailer.store.models import Role
from mailer.web import sessions as web_sessions

HERE = Path(__file__).parent
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
Endpoint = Callable[[Request], Awaitable[Response]]
FormEndpoint = Callable[[Request, FormData], Awaitable[Response]]
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(kw_only=True)
class WebState:
    """Everything the pages need, created once per app."""

    cfg: Config
    engine: Engine
    clock: Clock
    secret: bytes
    templates: Jinja2Templates
    hashing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    rendering: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    guard: LoginGuard = field(init=False)

    def __post_init__(self) -> None:
        self.guard = LoginGuard(engine=self.engine)  # counted with every other process


def state(request: Request) -> WebState:
    found = request.app.state.web
    assert isinstance(found, WebState)
    return found


async def db(request: Request, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Database work off the event loop: the engine is synchronous."""
    return await asyncio.to_thread(work, *args, **kwargs)


async def rendering(request: Request, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Work that renders templates: at most two at a time, the rest waiting here rather than
    in threads, so a template that runs to its time limit cannot take every thread from the
    pages (and /healthz) that need one for the database."""
    async with state(request).rendering:
        return await asyncio.to_thread(work, *args, **kwargs)


def viewer_zone(request: Request) -> ZoneInfo:
    """The zone staff pages show this reader's times in: their own, else the business's
    (``[business_hours] timezone``)."""
    user = current_user(request)
    fallback = state(request).cfg.settings.business_hours.timezone
    try:
        return fieldtypes.zone(user.timezone) if user and user.timezone else fallback
    except ValueError:
        return fallback


def current_user(request: Request) -> SignedIn | None:
    found = request.scope.get("mailer.user")
    return found if isinstance(found, SignedIn) else None


class RowIdConvertor(Convertor[int]):
    """A row's id in a page's path. One larger than an id column holds matches no page
    (404), never reaching the database, which would refuse it (an error page)."""

    regex = "[0-9]{1,10}"

    def convert(self, value: str) -> int:
        return whole_number(value) or 0  # no row has id 0

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("rowid", RowIdConvertor())  # before any route of the pages is made


def csrf_token(request: Request) -> str:
    """One token per session, in every form and in htmx's requests (base.html)."""
    return web_sessions.csrf(request, state(request).secret)


async def checked_form(request: Request) -> FormData:
    """The posted form, refused (403) unless it carries this session's CSRF token."""
    form = await request.form()
    sent = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    expected = csrf_token(request)
    # bytes: compare_digest refuses str with characters beyond ASCII, which a forged one has
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise HTTPException(403, "This form has expired. Go back, reload the page and try again.")
    if any(not isinstance(value, str) for _, value in form.multi_items()):  # no form has a file
        await form.close()
        raise HTTPException(400, "This form takes text only, no files.")
    return form


def require(*roles: Role) -> Callable[[Endpoint], Endpoint]:
    """Sign-in, then role: anonymous visitors go to the login page, others get 403."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            user = await signed_in_user(request)
            if user is None:
                target = quote(
                    request.url.path + ("?" + request.url.query if request.url.query else "")
                )
                return RedirectResponse(f"/login?next={target}", status_code=303)
            if not user.may(*roles):
                raise HTTPException(403, f"This page is for {' or '.join(roles)} users.")
            request.scope["mailer.user"] = user
            return await endpoint(request)

        return guarded

    return wrap


def posted(*roles: Role) -> Callable[[FormEndpoint], Endpoint]:
    """A form's endpoint: the CSRF token first, so a forged post is refused (403) before
    anything else is looked at; then sign-in and the role."""

    def wrap(endpoint: FormEndpoint) -> Endpoint:
        @require(*roles)
        async def signed_in(request: Request) -> Response:
            return await endpoint(request, await request.form())  # parsed once, then cached

        @functools.wraps(endpoint)
        async def checked(request: Request) -> Response:
            await checked_form(request)
            return await signed_in(request)

        return checked

    return wrap


async def signed_in_user(request: Request) -> SignedIn | None:
    """Whom this browser's session belongs to: nobody once it was signed out, or the user
    was disabled or given a new password, in this process or any other."""
    current = web_sessions.visit(request)
    if current.fresh:
        return None
    web = state(request)
    return await db(request, _user, web.engine, current.id, web.clock.now())


def _user(engine: Engine, session_id: str, now: datetime) -> SignedIn | None:
    with engine.begin() as conn:
        user_id = sessions.user_of(conn, session_id, now)
        return users.get(conn, user_id) if user_id is not None else None


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status: int = 200
) -> Response:
    values = {
        "request": request,
        "user": current_user(request),
        "csrf_token": csrf_token(request),
        "Role": Role,
        "marketing_reads_inquiries": state(request).cfg.settings.web.marketing_reads_inquiries,
        **(context or {}),
    }
    return state(request).templates.TemplateResponse(request, name, values, status_code=status)


def typed_fields(form: FormData) -> dict[str, str]:
    """What was typed in a refused form, to show it again: nothing typed is lost."""
    return {name: value for name, value in form.items() if isinstance(value, str)}


def local_path(target: str, fallback: str) -> str:
    """``target`` when it is a path on this site, else ``fallback``: a redirect never
    leads to someone else's. Browsers read a backslash as a slash and drop tabs and line
    breaks, so a slash and a backslash, or a tab between two slashes, lead off the site as
    two slashes do."""
    parts = urlsplit(target)
    foreign = parts.scheme or parts.netloc or "\\" in target or not target.isprintable()
    if foreign or not target.startswith("/") or target.startswith("//"):
        return fallback
    return target
