"""The browser's half of a session: a cookie that carries a random id and nothing else.

Every visitor gets an id when a page first needs one (for a form's CSRF token); signing
in replaces it with the id of a session stored server side (mailer.staff.sessions), and
signing out with a fresh anonymous one, so an id never outlives the state it stood for.
The CSRF token is an HMAC of the id under the app's secret: tied to the session, kept
nowhere, and a new one at every sign-in and sign-out.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from mailer.staff import sessions

COOKIE = "mailer_session"
_PLAUSIBLE = re.compile(r"[A-Za-z0-9_-]{43}")  # what sessions.new_id makes
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass
class Visit:
    """This request's session id, and whether the browser must be sent it. One the browser
    does not hold yet is made when a page first asks for it: an API call never does, and
    a random id from the system for each call was 6% of a transactional send's CPU."""

    _id: str | None  # None: the browser sent none, and nothing asked for one yet
    fresh: bool  # the browser does not hold this id yet
    wanted: bool = False  # a page used it (a form's token, a sign-in): send the cookie

    @property
    def id(self) -> str:
        if self._id is None:
            self._id = sessions.new_id()
        return self._id

    def replace(self, session_id: str) -> None:
        self._id, self.fresh, self.wanted = session_id, True, True


class SessionCookie:
    """Reads the id from the cookie (a page that needs one makes it) and sends a new id back
    when it changed; HttpOnly, SameSite=Lax, Secure when the app is served over https."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], https: bool):
        self.app = app
        self.attributes = "; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if https else "")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held = Request(scope).cookies.get(COOKIE, "")
        plausible = _PLAUSIBLE.fullmatch(held) is not None
        visit = Visit(held if plausible else None, fresh=not plausible)
        scope["mailer.visit"] = visit

        async def with_cookie(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and visit.fresh and visit.wanted:
                cookie = f"{COOKIE}={visit.id}{self.attributes}"
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, with_cookie)


def visit(request: Request) -> Visit:
    found = request.scope["mailer.visit"]
    assert isinstance(found, Visit)
    return found


def csrf(request: Request, secret: bytes) -> str:
    """This session's CSRF token; a page that asks for one gets the cookie it depends on."""
    current = visit(request)
    current.wanted = True
    return hmac.new(secret, b"csrf " + current.id.encode(), hashlib.sha256).hexdigest()
