"""The customer's side: one-click unsubscribe and preferences, from the links in every mail.

No sign-in and no CSRF token: the signed token in the link is the credential, it names one
customer and cannot be forged or guessed (mailer.customers.tokens). A mailbox provider's RFC 8058
POST (``List-Unsubscribe=One-Click``) unsubscribes at once and gets a short answer, not a
page; a person opening the link gets a page with one button, their preferences and, once
unsubscribed, a way to undo it.

The pages speak the customer's language (``customer_words``, chosen as mail templates
choose theirs) and wear the company's name from ``[company]``, not mailer's: the customer
came from the company's mail and should recognise where they landed.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mailer.core.errors import NotFound
from mailer.customers import profiles, tokens
from mailer.web import customer_words
from mailer.web.common import db, render, state

PAUSES = {"": None, "30": timedelta(days=30), "90": timedelta(days=90)}


async def page(request: Request) -> Response:
    customer = await _customer(request)
    if customer is None:
        return _not_valid(request)
    return _page(request, customer)


async def unsubscribe(request: Request) -> Response:
    form = await request.form()
    customer = await _customer(request)
    if customer is None:
        return _not_valid(request)
    now = state(request).clock.now()
    await db(request, _unsubscribe, request, customer.id, now)
    if form.get("List-Unsubscribe") == "One-Click":
        return PlainTextResponse("Unsubscribed.\n")
    return _page(request, replace(customer, unsubscribed_at=now), "unsubscribed")


async def resubscribe(request: Request) -> Response:
    """The undo on the page shown after unsubscribing; the consents were never touched."""
    customer = await _customer(request)
    if customer is None:
        return _not_valid(request)
    now = state(request).clock.now()
    await db(request, _resubscribe, request, customer.id, now)
    return _page(request, replace(customer, unsubscribed_at=None, updated_at=now), "resubscribed")


async def preferences(request: Request) -> Response:
    customer = await _customer(request)
    if customer is None:
        return _not_valid(request)
    if request.method == "GET":
        return _page(request, customer)
    form = await request.form()
    now = state(request).clock.now()
    pause = PAUSES.get(str(form.get("pause", "")))
    values: dict[str, Any] = {
        "marketing_consent": form.get("marketing") == "on",
        "relationship_consent": form.get("relationship") == "on",
        "pause_until": now + pause if pause else None,
    }
    await db(request, _save, request, customer.id, values, now)
    return _page(request, replace(customer, **values, updated_at=now), "saved")


def _page(request: Request, customer: profiles.Profile, done: str | None = None) -> Response:
    """The preferences page in the customer's language; `done` says what just happened."""
    lang = customer_words.language(customer.locale)
    context = {"customer": customer, "token": _token(request), "done": done}
    return render(request, "unsubscribe.html", context | framing(request, lang))


def framing(request: Request, lang: str) -> dict[str, Any]:
    """What customer_base.html needs: the language, its words and the company."""
    company = state(request).cfg.settings.company
    return {"lang": lang, "t": customer_words.WORDS[lang], "company": company}


def _token(request: Request) -> str:
    return str(request.path_params["token"])


async def _customer(request: Request) -> profiles.Profile | None:
    customer_id = tokens.verify(state(request).secret, _token(request))
    if customer_id is None:
        return None
    return await db(request, _load, request, customer_id)


def _load(request: Request, customer_id: int) -> profiles.Profile | None:
    with state(request).engine.connect() as conn:
        try:
            return profiles.get_id(conn, customer_id)
        except NotFound:
            return None


def _unsubscribe(request: Request, customer_id: int, now: datetime) -> None:
    with state(request).engine.begin() as conn:
        profiles.unsubscribe_id(conn, customer_id, now)


def _resubscribe(request: Request, customer_id: int, now: datetime) -> None:
    with state(request).engine.begin() as conn:
        profiles.resubscribe_id(conn, customer_id, now)


def _save(request: Request, customer_id: int, values: dict[str, Any], now: datetime) -> None:
    with state(request).engine.begin() as conn:
        profiles.set_preferences(conn, customer_id, **values, now=now)


def _not_valid(request: Request) -> Response:
    """Nobody is known from a broken link, so the browser's languages choose the words."""
    lang = customer_words.from_header(request.headers.get("accept-language", ""))
    return render(request, "link_not_valid.html", framing(request, lang), status=404)


routes = [
    Route("/unsubscribe/{token}", page, methods=["GET"]),
    Route("/unsubscribe/{token}", unsubscribe, methods=["POST"]),
    Route("/resubscribe/{token}", resubscribe, methods=["POST"]),
    Route("/preferences/{token}", preferences, methods=["GET", "POST"]),
]
