"""Keeping a customer's record right: support edits it (checked as an import checks a row),
everyone who sees the customer sees the history of changes, and an admin exports it all as
JSON or erases the customer for good after typing the address to confirm.
"""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailer.core.errors import AddressTaken, InvalidInput, NotFound
from mailer.customers import edits, profiles
from mailer.relationship import privacy
from mailer.store.models import Role
from mailer.web.common import current_user, db, posted, render, require, state, viewer_zone

LOCAL = "%Y-%m-%dT%H:%M"  # what a datetime-local input holds


def _customer_id(request: Request) -> int:
    return int(request.path_params["id"])


def _profile(request: Request) -> profiles.Profile:
    with state(request).engine.connect() as conn:
        try:
            return profiles.get_id(conn, _customer_id(request))
        except NotFound:
            raise HTTPException(404, "There is no such customer.") from None


# Editing -----------------------------------------------------------------------------------


@require(Role.SUPPORT)
async def edit_page(request: Request) -> Response:
    customer = await db(request, _profile, request)
    return _form_page(request, customer, as_form(customer, viewer_zone(request)), {})


def as_form(customer: profiles.Profile, zone: ZoneInfo) -> dict[str, str]:
    """The form's inputs filled in with what is stored, as a person would have typed it."""
    columns = {name: getattr(customer, name) for name in ("birth_month", "birth_day", "birth_year")}
    pause = customer.pause_until
    form = {
        "email": customer.email,
        "name": customer.name,
        "first_name": customer.first_name,
        "locale": customer.locale or "",
        "timezone": customer.timezone or "",
        "birthday": edits.birthday_text(columns) or "",
        "pause_until": pause.astimezone(zone).strftime(LOCAL) if pause else "",
        "tags": ", ".join(customer.tags),
    }
    form |= {k: "on" for k in ("marketing_consent", "relationship_consent") if getattr(customer, k)}
    for category, caps in (customer.caps_override or {}).items():
        form |= {f"caps.{category}.{period}": str(count) for period, count in caps.items()}
    form |= {f"{edits.FIELD_PREFIX}{k}": str(v) for k, v in customer.fields.items()}
    return form


def _form_page(
    request: Request,
    customer: profiles.Profile,
    form: dict[str, str],
    errors: dict[str, str],
    stale: bool = False,
) -> Response:
    context = {
        "customer": customer,
        "form": form,
        "errors": errors,
        "stale": stale,
        "seen": customer.updated_at.isoformat(),
        "capped": edits.CAPPED,
        "periods": edits.CAP_PERIODS,
        "custom": [
            k.removeprefix(edits.FIELD_PREFIX) for k in form if k.startswith(edits.FIELD_PREFIX)
        ],
    }
    status = 409 if stale else 400 if errors else 200
    return render(request, "customer_edit.html", context, status=status)


@posted(Role.SUPPORT)
async def save(request: Request, form: FormData) -> Response:
    """Saved whole or not at all; each bad input comes back next to its field. A form
    opened before someone else saved the customer is not saved over their changes."""
    typed = {k: v for k, v in form.items() if isinstance(v, str)}
    customer = await db(request, _profile, request)
    if typed.get("seen") != customer.updated_at.isoformat():  # the form would undo theirs
        return _form_page(request, customer, typed, {}, stale=True)
    try:
        values = edits.read_form(typed, viewer_zone(request))
        if typed.get("pause_until") == as_form(customer, viewer_zone(request))["pause_until"]:
            values["pause_until"] = customer.pause_until  # to the minute shown: kept as stored
        await db(request, _save, request, values)
    except InvalidInput as exc:
        errors = {p.where: p.message for p in exc.problems}
        return _form_page(request, customer, typed, errors)
    except AddressTaken as exc:
        return _form_page(request, customer, typed, {"email": str(exc)})
    return RedirectResponse(f"/customers/{customer.id}#history", status_code=303)


def _save(request: Request, values: dict[str, Any]) -> None:
    user = current_user(request)
    assert user is not None
    web = state(request)
    with web.engine.begin() as conn:
        profiles.edit(conn, _customer_id(request), values, user.name, web.clock.now())


# History -----------------------------------------------------------------------------------


@require(Role.SUPPORT, Role.MARKETING)
async def history(request: Request) -> Response:
    """The list of changes, which the customer page loads into its History section."""
    logged = await db(request, _history, request)
    entries = [
        {
            "at": entry.at,
            "actor": entry.actor,
            "field": entry.field,
            "erased": entry.before is None and entry.after is None,
            "before": shown(entry.before),
            "after": shown(entry.after),
        }
        for entry in logged
    ]
    return render(request, "customer_history.html", {"entries": entries})


def _history(request: Request) -> list[profiles.Logged]:
    with state(request).engine.connect() as conn:
        return profiles.history(conn, _customer_id(request))


def shown(value: Any) -> str:
    """A recorded value as staff read it."""
    if value is None or value == []:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


# Export and erase (admin) ------------------------------------------------------------------


@require(Role.ADMIN)
async def export(request: Request) -> Response:
    """What ``mailer customers export`` writes, as a download."""
    customer = await db(request, _profile, request)
    data = await db(request, _export, request, customer.email)
    body = json.dumps(data, ensure_ascii=False, indent=2, default=str)
    name = f"customer-{customer.id}.json"
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(body, media_type="application/json", headers=disposition)


def _export(request: Request, email: str) -> dict[str, Any]:
    with state(request).engine.connect() as conn:
        return privacy.export(conn, email, state(request).clock.now())


@require(Role.ADMIN)
async def erase_page(request: Request) -> Response:
    customer = await db(request, _profile, request)
    return render(request, "customer_erase.html", {"customer": customer, "refused": None})


@posted(Role.ADMIN)
async def erase(request: Request, form: FormData) -> Response:
    """Only when the address typed is the customer's: there is no undoing it."""
    customer = await db(request, _profile, request)
    typed = str(form.get("confirm", "")).strip().lower()
    if typed != customer.email:
        refused = "That is not this customer's address; nothing was erased."
        context = {"customer": customer, "refused": refused}
        return render(request, "customer_erase.html", context, status=400)
    erased = await db(request, _erase, request, customer.email)
    return render(request, "customer_erased.html", {"customer": customer, "erased": erased})


def _erase(request: Request, email: str) -> privacy.Erased:
    web = state(request)
    with web.engine.begin() as conn:
        return privacy.erase(conn, email, web.clock.now())


routes = [
    Route("/customers/{id:rowid}/edit", edit_page),
    Route("/customers/{id:rowid}/edit", save, methods=["POST"]),
    Route("/customers/{id:rowid}/history", history),
    Route("/customers/{id:rowid}/export.json", export),
    Route("/customers/{id:rowid}/erase", erase_page),
    Route("/customers/{id:rowid}/erase", erase, methods=["POST"]),
]
