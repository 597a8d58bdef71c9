"""Who is calling: the key in ``Authorization: Bearer KEY``, its scopes and its rate.

A missing, unknown or revoked key is 401 and says nothing more; a key without the scope a
route needs is 403; a key past its requests for the minute is 429 with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from starlette.exceptions import HTTPException

from mailer.api import keys, limits
from mailer.api.keys import ApiKey, Scope
from mailer.core.clock import Clock
from mailer.core.config import Config
from mailer.store import db

BEARER = HTTPBearer(auto_error=False, description="an API key from `mailer api-keys create`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


@dataclass(frozen=True, slots=True)
class ApiState:
    cfg: Config
    engine: Engine
    clock: Clock


def state(request: Request) -> ApiState:
    found = request.app.state.api
    assert isinstance(found, ApiState)
    return found


def caller(scope: Scope) -> Callable[[Request, Credentials], Awaitable[ApiKey]]:
    """A dependency: the calling key, which must hold ``scope``; looked up, counted and
    judged in one short write (``db.write_together``)."""

    async def check(request: Request, credentials: Credentials) -> ApiKey:
        secret = credentials.credentials if credentials else ""
        return await _allowed(state(request), secret, scope)

    return check


@dataclass(frozen=True, slots=True)
class Pending:
    """A key not checked yet, and the scope the route needs: the route checks it first
    thing in its own transaction (see ``deferred``)."""

    secret: str
    scope: Scope


def deferred(scope: Scope) -> Callable[[Request, Credentials], Awaitable[Pending]]:
    """A dependency for a route that checks the key in the same transaction as its own
    work (the transactional send), a commit fewer than ``caller``: the route calls
    ``admit`` before it looks at what the body asks.

    The key is still judged before the body's fields: when they fail validation, the route
    never runs, and the validation error's handler asks ``refusal`` first, so a missing or
    bad key is 401 whatever the fields say, and the request is counted once either way. A
    body that is not JSON at all is refused (400) before any of this, as on every route."""

    async def note(request: Request, credentials: Credentials) -> Pending:
        pending = Pending(credentials.credentials if credentials else "", scope)
        request.state.pending_key = pending
        return pending

    return note


async def refusal(request: Request) -> HTTPException | None:
    """For a request whose body failed validation: the refusal of its key when its route
    defers the key's check (None when the key may make the request, or was checked)."""
    pending = getattr(request.state, "pending_key", None)
    if not isinstance(pending, Pending):
        return None
    try:
        await _allowed(state(request), pending.secret, pending.scope)
    except HTTPException as exc:
        return exc
    return None


async def _allowed(api: ApiState, secret: str, scope: Scope) -> ApiKey:
    pending = Pending(secret, scope)
    verdict = await db.write_together(
        api.engine, lambda conn: admit(conn, api, pending), order=secret
    )
    if isinstance(verdict, HTTPException):
        raise verdict
    return verdict


def admit(conn: Connection, api: ApiState, pending: Pending) -> ApiKey | HTTPException:
    """In the caller's transaction: the key, when it may make this request, else the
    refusal to raise once the transaction is committed (so the request's count stays):
    401 for a missing, unknown or revoked key, 429 past its rate, 403 without the scope."""
    now = api.clock.now()
    counted = keys.authenticate(conn, pending.secret, now) if pending.secret else None
    if counted is None:
        return HTTPException(
            401, "a valid API key is required", headers={"WWW-Authenticate": "Bearer"}
        )
    key, number = counted
    limit = key.rate_per_minute or api.cfg.settings.api.rate_per_minute
    verdict = limits.judge(number, limit, now)
    if not verdict.allowed:
        return HTTPException(
            429,
            f"this key may make {limit} requests a minute",
            headers={"Retry-After": str(verdict.retry_after)},
        )
    if pending.scope not in key.scopes:
        return HTTPException(403, f"this key lacks the scope {pending.scope.value}")
    return key
