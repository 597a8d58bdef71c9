"""The web app: support's desk, marketing's previews and results, customers' unsubscribe,
and the public forms a company's website posts to.

Served by the daemon (``[web] bind``) and by ``mailer web`` alone. Sessions are kept in
the database, the cookie carrying only a random id (HttpOnly, SameSite=Lax, Secure when
``base_url`` is https), so every process serving the app sees a sign-out at once; every
form carries a CSRF token; every page checks the role it is for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from mailer.api.app import PREFIX, create_api
from mailer.core.clock import Clock
from mailer.core.config import Config
from mailer.customers import tokens
from mailer.store.models import Role
from mailer.web import auth, forms, health, times, unsubscribe
from mailer.web.clients import ClientAddress
from mailer.web.common import HERE, WebState, render, require
from mailer.web.sessions import SessionCookie

# The app's own pages run only its own script; mail previews are sandboxed iframes whose
# remote images this policy keeps from loading (img-src has no remote origins).
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-src 'self'; frame-ancestors 'self'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'"
)
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class SecurityHeaders:
    """Headers on every response that make the browser refuse what the app never does."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] += [
                    (b"content-security-policy", POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


@require(Role.SUPPORT, Role.MARKETING)
async def home(request: Request) -> Response:
    user = request.scope["mailer.user"]
    return RedirectResponse("/templates" if user.role == Role.MARKETING else "/inquiries", 303)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return render(
        request, "error.html", {"status": exc.status_code, "detail": exc.detail}, exc.status_code
    )


async def out_of_range(request: Request, exc: Exception) -> Response:
    """A number or date in the request beyond what a database or a calendar holds (a page
    number of twenty digits): the request is wrong, not the server."""
    detail = "A number or date in this address or form is out of range."
    return render(request, "error.html", {"status": 400, "detail": detail}, 400)


def create_app(
    cfg: Config,
    engine: Engine,
    clock: Clock,
    pages: list[Route | Mount] | None = None,
) -> Starlette:
    """The app; ``pages`` are the signed-in sections (desk, marketing, operations)."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters.update(times.FILTERS)  # every time on a page in the reader's zone
    templates.env.globals["zone_name"] = times.zone_name
    web = WebState(
        cfg=cfg, engine=engine, clock=clock, secret=tokens.load_secret(cfg), templates=templates
    )
    https = cfg.settings.web.base_url.startswith("https://")
    routes: list[Route | Mount] = [
        Route("/", home),
        Mount(PREFIX, create_api(cfg, engine, clock)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        *auth.routes,
        *health.routes,
        *unsubscribe.routes,
        *forms.routes,
        *(pages or []),
    ]
    middleware = [
        Middleware(ClientAddress, proxies=cfg.settings.web.trusted_proxies),
        Middleware(SecurityHeaders),
        Middleware(SessionCookie, https=https),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: http_error, OverflowError: out_of_range},
    )
    app.state.web = web
    return app
