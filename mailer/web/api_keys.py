"""API keys for admins in the browser: the keys with their scopes and last use, a form that
makes one and shows it once, and a revoke that asks first.

The new key is in the answer to the form's POST only: never in a URL, a redirect, the
session or a log, and the answer tells the browser not to keep it, so going back to the
list cannot show it again. It is stored only as its hash (mailer.api.keys).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailer.api import keys
from mailer.core.errors import InvalidInput, NotFound, Problem
from mailer.core.fieldtypes import whole_number
from mailer.web.common import current_user, db, posted, render, require, state

NO_STORE = {"Cache-Control": "no-store"}
FIELDS = {"NAME": "name", "--scope": "scope", "--rate": "rate"}  # keys' problems, as the form


@require()
async def keys_page(request: Request) -> Response:
    revoked = request.query_params.get("revoked", "")
    context = {"revoked": whole_number(revoked)}
    return await _page(request, context)


async def _page(request: Request, context: dict[str, Any], status: int = 200) -> Response:
    """The list and the form, with what the last action left to say."""
    found = await db(request, _find, state(request).engine)
    values = {
        "keys": found,
        "scopes": list(keys.Scope),
        "default_rate": state(request).cfg.settings.api.rate_per_minute,
        "made": None,
        "secret": None,
        "problems": {},
        "entered": {},
        "revoked": None,
        **context,
    }
    response = render(request, "api_keys.html", values, status)
    response.headers.update(NO_STORE)
    return response


def _find(engine: Engine) -> list[keys.ApiKey]:
    with engine.connect() as conn:
        return keys.find(conn)


@posted()
async def create(request: Request, form: FormData) -> Response:
    """Make the key and show it in this answer, the only time it is ever shown."""
    entered = {
        "name": str(form.get("name", "")),
        "scopes": [str(s) for s in form.getlist("scope")],
        "rate": str(form.get("rate", "")).strip(),
    }
    try:
        made, secret = await db(request, _create, request, entered)
    except InvalidInput as exc:
        problems = {FIELDS.get(p.where, p.where): p.message for p in exc.problems}
        return await _page(request, {"problems": problems, "entered": entered}, 400)
    return await _page(request, {"made": made, "secret": secret})


def _create(request: Request, entered: dict[str, Any]) -> tuple[keys.ApiKey, str]:
    scopes = keys.parse_scopes(entered["scopes"])
    if not scopes:
        raise InvalidInput([Problem("--scope", "tick at least one scope")])
    rate = entered["rate"]
    if rate and not (rate.isascii() and rate.isdigit()):
        raise InvalidInput([Problem("--rate", "the rate is a whole number of requests")])
    # more digits than any rate has are refused as too large all the same; cut to 20 so
    # int() never meets the thousands it refuses
    rate = rate.lstrip("0")[:20] or rate
    web, user = state(request), current_user(request)
    assert user is not None  # the route requires a signed-in admin
    with web.engine.begin() as conn:
        return keys.create(
            conn,
            entered["name"],
            scopes,
            rate_per_minute=int(rate) if rate else None,
            created_by=user.name,
            now=web.clock.now(),
        )


@require()
async def revoke_page(request: Request) -> Response:
    """Ask first: a revoked key is refused at once by every process, with no undoing it."""
    key = await db(request, _get, state(request).engine, request.path_params["id"])
    return render(request, "api_key_revoke.html", {"key": key})


def _get(engine: Engine, key_id: int) -> keys.ApiKey:
    with engine.connect() as conn, _known(key_id):
        return keys.get(conn, key_id)


@posted()
async def revoke(request: Request, form: FormData) -> Response:
    key_id: int = request.path_params["id"]
    await db(request, _revoke, request, key_id)
    return RedirectResponse(f"/api-keys?revoked={key_id}", 303)


def _revoke(request: Request, key_id: int) -> None:
    web = state(request)
    with web.engine.begin() as conn, _known(key_id):
        keys.revoke(conn, key_id, web.clock.now())


@contextmanager
def _known(key_id: int) -> Iterator[None]:
    """An id that names no key is a page that does not exist."""
    try:
        yield
    except NotFound:
        raise HTTPException(404, f"There is no API key {key_id}.") from None


routes = [
    Route("/api-keys", keys_page),
    Route("/api-keys", create, methods=["POST"]),
    Route("/api-keys/{id:rowid}/revoke", revoke_page),
    Route("/api-keys/{id:rowid}/revoke", revoke, methods=["POST"]),
]
