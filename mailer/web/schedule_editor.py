"""Marketing's schedule form: create and edit newsletters, birthdays, webinars and the
purchase kinds (reorder, winback, after_purchase), pause and resume them, and see a
webinar's invitations.

The form writes the schedule file (mailer.scheduling.schedule_files) after the checks
`mailer check` runs, so the file stays the one source of truth and the daemon picks the
change up as it picks up a hand edit. While the form changes, a live preview shows how many
customers the audience matches (the query a run uses), the time in words and the next five
firings. ``params`` and other keys the form does not show are kept as they are in the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailer.core.durations import format_duration
from mailer.core.errors import Problem
from mailer.inbound import rsvp
from mailer.outbound.templates import TemplateStore
from mailer.scheduling import (
    audience,
    cron_words,
    fanout,
    firing,
    occurrences,
    results,
    schedule_files,
)
from mailer.scheduling.firing import Firing
from mailer.scheduling.schedules import (
    AfterPurchaseSchedule,
    Audience,
    EventSchedule,
    NewsletterSchedule,
    ReorderSchedule,
    Schedule,
    WebinarSchedule,
    WinbackSchedule,
    segment_names,
    validate,
)
from mailer.store.models import Role
from mailer.web.common import WebState, db, posted, render, require, state

KINDS = ("newsletter", "birthday", "webinar", "reorder", "winback", "after_purchase", "event")
COMMON = (
    "valid_for",
    "priority",
    "audience.tags_any",
    "audience.tags_all",
    "audience.exclude_tags",
    "audience.locales",
    "audience.fields",
)
FIELDS = {
    "newsletter": ("template", "cron", "timezone", *COMMON),
    "birthday": ("template", "send_at", "feb29", *COMMON),
    "reorder": ("template", "send_at", "lead", *COMMON),
    "winback": ("template", "send_at", "below", *COMMON),
    "after_purchase": ("template", "send_at", "after", "categories", "category", *COMMON),
    "event": ("template", "event", "delay", "unless", "category", *COMMON),
    "webinar": (
        "template",
        "title",
        "description",
        "starts_at",
        "duration",
        "join_url",
        "organizer",
        "organizer_name",
        "invite_at",
        "reminder_template",
        "reminders",
        *COMMON,
    ),
}
LISTS = {
    "audience.tags_any",
    "audience.tags_all",
    "audience.exclude_tags",
    "audience.locales",
    "categories",
    "unless",
}
MOMENTS = {"starts_at", "invite_at"}  # written as TOML date-times when they parse as one
NEW = {
    "newsletter": {"template": "newsletter", "cron": "0 9 1 * *", "timezone": "customer"},
    "birthday": {"template": "birthday", "send_at": "09:00", "feb29": "feb28"},
    "webinar": {"template": "webinar_invite", "reminder_template": "webinar_reminder"},
    "reorder": {"template": "reorder", "send_at": "09:00", "lead": "7d"},
    "winback": {"template": "winback", "send_at": "09:00", "below": "0.3"},
    "after_purchase": {
        "template": "after_purchase",
        "send_at": "09:00",
        "after": "3d",
        "category": "marketing",
    },
    "event": {
        "template": "cart_abandoned",
        "event": "cart_abandoned",
        "delay": "1h",
        "unless": "order_placed",
        "category": "marketing",
    },
}
UPCOMING = 5


def values_from_form(kind: str, form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The keys to write for the posted fields, and errors for fields that cannot be read.
    An empty field removes its key, so the default applies (or "is required" is said)."""
    values: dict[str, Any] = {"kind": kind, "audience": {}}
    errors: dict[str, str] = {}
    for field in FIELDS[kind]:
        raw = form.get(field, "").strip()
        try:
            value = _value(field, raw)
        except ValueError as exc:
            errors[field] = str(exc)
            continue
        table, _, key = field.rpartition(".")
        (values[table] if table else values)[key] = value
    return values, errors


def _value(field: str, raw: str) -> Any:
    if field in LISTS or field == "reminders":
        return [part.strip() for part in raw.split(",") if part.strip()]
    if field == "audience.fields":
        return _custom_fields(raw)
    if not raw:
        return None
    if field == "priority" and re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if field == "below" and re.fullmatch(r"\d*\.?\d+", raw):
        return float(raw)
    if field in MOMENTS:
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            return raw  # the schedule's own check says what is wrong with it
    return raw


def _custom_fields(raw: str) -> dict[str, str]:
    found = {}
    for line in filter(None, (line.strip() for line in raw.splitlines())):
        name, equals, value = (part.strip() for part in line.partition("="))
        if not equals or not name:
            raise ValueError(f"{line!r}: write one field a line as name = value")
        found[name] = value
    return found


def form_from_file(data: Mapping[str, Any]) -> dict[str, str]:
    """The form's fields for a file's keys as written ("3d" stays "3d")."""
    form = {key: _shown(value) for key, value in data.items() if not isinstance(value, dict)}
    for key, value in dict(data.get("audience", {})).items():
        if key == "fields":
            form["audience.fields"] = "\n".join(f"{k} = {v}" for k, v in value.items())
        else:
            form[f"audience.{key}"] = _shown(value)
    return form


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value).lower() if isinstance(value, bool) else str(value)


def errors_by_field(kind: str, problems: list[Problem]) -> tuple[dict[str, str], list[str]]:
    """Each problem next to its field ("reminders.1" is the reminders field); the rest
    (keys the form does not show) in a list for the top of the form."""
    fields: dict[str, str] = {}
    other: list[str] = []
    shown = {"name", *FIELDS[kind]}
    for problem in problems:
        key = problem.where.rpartition(": ")[2] if ": " in problem.where else problem.where
        field = ".".join(part for part in key.split(".") if not part.isdigit())
        if field in shown:
            fields[field] = (
                f"{fields[field]}; {problem.message}" if field in fields else problem.message
            )
        else:
            other.append(str(problem))
    return fields, other


@require(Role.MARKETING)
async def new_form(request: Request) -> Response:
    kind = request.query_params.get("kind", "newsletter")
    if kind not in KINDS:
        raise HTTPException(404, f"There is no kind of schedule named {kind!r}.")
    return render(request, "schedule_form.html", _form_context(state(request), kind, NEW[kind]))


@require(Role.MARKETING)
async def edit_form(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        data = await db(request, schedule_files.read, state(request).cfg.schedules_dir, name)
    except ValueError as exc:
        raise HTTPException(
            400,
            f"The schedule file {name!r} cannot be edited here: {exc}. "
            "Correct it in the file; `mailer check` names every problem.",
        ) from None
    if data is None:
        raise HTTPException(404, f"There is no schedule file named {name!r} to edit.")
    if data.get("kind") not in KINDS:
        kinds = ", ".join(KINDS)
        raise HTTPException(
            400, f"The schedule file {name!r} has kind {data.get('kind')!r}, not one of {kinds}."
        )
    context = _form_context(state(request), data["kind"], form_from_file(data), name=name)
    return render(request, "schedule_form.html", context)


@posted(Role.MARKETING)
async def create(request: Request, form: FormData) -> Response:
    name = str(form.get("name", "")).strip()
    return await _save(request, form, name, schedule_files.create)


@posted(Role.MARKETING)
async def update(request: Request, form: FormData) -> Response:
    return await _save(request, form, request.path_params["name"], schedule_files.update)


async def _save(request: Request, form: FormData, name: str, write: Any) -> Response:
    """Written only when every field is right; otherwise the form again, errors at fields."""
    web, kind = state(request), str(form.get("kind", ""))
    if kind not in KINDS:
        raise HTTPException(400, f"{kind!r} is not a kind of schedule.")
    typed = {key: str(value) for key, value in form.items() if key != "csrf"}
    values, errors = values_from_form(kind, typed)
    if not errors:
        known, now = _known(web), web.clock.now()
        problems = await db(request, write, web.cfg.schedules_dir, name, values, known, now)
        if not problems:
            return RedirectResponse(f"/schedules/{name}", status_code=303)
        errors, other = errors_by_field(kind, problems)
    else:
        other = []
    is_new = write is schedule_files.create
    context = _form_context(web, kind, typed, name=None if is_new else name)
    context.update(errors=errors, other=other, chosen_name=name)
    return render(request, "schedule_form.html", context, 400)


@posted(Role.MARKETING)
async def preview(request: Request, form: FormData) -> Response:
    """The live part of the form: audience count, time in words, next firings."""
    kind = str(form.get("kind", ""))
    if kind not in KINDS:
        raise HTTPException(400, f"{kind!r} is not a kind of schedule.")
    typed = {key: str(value) for key, value in form.items() if key != "csrf"}
    context = await db(request, _preview, state(request), kind, typed)
    return render(request, "schedule_preview.html", context)


def _preview(web: WebState, kind: str, typed: dict[str, str]) -> dict[str, Any]:
    values, errors = values_from_form(kind, typed)
    now = web.clock.now()
    found: dict[str, Any] = {"kind": kind, "count": None, "words": None, "upcoming": None}
    known = _known(web)
    zone = web.cfg.settings.business_hours.timezone
    with web.engine.connect() as conn:
        try:
            chosen = Audience.model_validate(_without_none(values["audience"]))
            found["count"] = audience.count(conn, audience.matches(chosen, now, zone))
        except ValidationError:
            pass  # the audience's own fields say what is wrong on saving
    if kind == "newsletter" and values.get("cron"):
        found["words"] = cron_words.describe(values["cron"], values.get("timezone") or "customer")
    schedule, _ = validate("form", _without_none(values), known.templates, now, known.segments)
    if schedule is not None and not errors:
        found["upcoming"] = occurrences.upcoming(schedule, _zones(web), now, UPCOMING)
        found["words"] = _words(schedule) or found["words"]
    return found


def _known(web: WebState) -> schedule_files.Known:
    templates = TemplateStore(web.cfg.templates_dir).names()
    return schedule_files.Known(templates, segment_names(web.cfg.settings.insight))


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: _without_none(value) if isinstance(value, Mapping) else value
        for key, value in values.items()
        if value is not None
    }


def _words(schedule: Schedule) -> str | None:
    if isinstance(schedule, NewsletterSchedule):
        zone = schedule.timezone if isinstance(schedule.timezone, str) else schedule.timezone.key
        return cron_words.describe(schedule.cron, zone)
    if isinstance(schedule, WebinarSchedule):
        return None
    if isinstance(schedule, EventSchedule):
        unless = f", unless {' or '.join(schedule.unless)} comes first" if schedule.unless else ""
        return f"{format_duration(schedule.delay)} after each {schedule.event} event{unless}"
    clock, zone = schedule.send_at.strftime("%H:%M"), "in each customer's own time zone"
    if isinstance(schedule, ReorderSchedule):
        lead = format_duration(schedule.lead)
        return f"{clock} daily, {lead} before each customer's predicted next order, {zone}"
    if isinstance(schedule, WinbackSchedule):
        return (
            f"{clock} daily, to customers whose active probability fell below"
            f" {schedule.below:g}, once per lapse, {zone}"
        )
    if isinstance(schedule, AfterPurchaseSchedule):
        return f"{clock}, {format_duration(schedule.after)} after each order day, {zone}"
    return f"{clock} on each customer's birthday, {zone}"


def _zones(web: WebState) -> list[str]:
    """The zones customers live in; the business's when there are no customers yet."""
    fallback = Firing.from_config(web.cfg).fallback_zone
    return firing.customer_zones(web.engine, fallback) or [fallback]


def _form_context(
    web: WebState, kind: str, form: Mapping[str, str], name: str | None = None
) -> dict[str, Any]:
    return {
        "kind": kind,
        "name": name,
        "form": form,
        "errors": {},
        "other": [],
        "template_names": TemplateStore(web.cfg.templates_dir).names(),
        "kinds": KINDS,
    }


@posted(Role.MARKETING)
async def pause(request: Request, form: FormData) -> Response:
    return await _switch(request, schedule_files.pause)


@posted(Role.MARKETING)
async def resume(request: Request, form: FormData) -> Response:
    return await _switch(request, schedule_files.resume)


async def _switch(request: Request, switch: Any) -> Response:
    web, name = state(request), request.path_params["name"]
    known, now = _known(web), web.clock.now()
    problems = await db(request, switch, web.cfg.schedules_dir, name, known, now)
    if problems:
        detail = "Nothing was changed: " + "; ".join(map(str, problems))
        raise HTTPException(400, detail)
    return RedirectResponse(f"/schedules/{name}", status_code=303)


@require(Role.MARKETING)
async def webinar_page(request: Request) -> Response:
    context = await db(request, _webinar, state(request), request.path_params["name"])
    return render(request, "schedule_webinar.html", context)


def _webinar(web: WebState, name: str) -> dict[str, Any]:
    schedule = results.load(web.cfg, web.clock)[0].get(name)
    if not isinstance(schedule, WebinarSchedule):
        raise HTTPException(404, f"There is no webinar named {name!r} that loads.")
    starts = schedule.starts_at
    reminders = [(format_duration(early), starts - early) for early in schedule.reminders]
    with web.engine.connect() as conn:
        runs = fanout.runs_of(conn, name, firing.INVITED)
        invited = audience.count(conn, [audience.received(runs, firing.DELIVERED)])
        answers = rsvp.of_webinar(conn, name)
    return {
        "name": name,
        "webinar": schedule,
        "duration": format_duration(schedule.duration),
        "reminders": reminders,
        "invited": invited,
        "answers": answers,
    }


routes = [
    Route("/schedules/new", new_form),
    Route("/schedules/new", create, methods=["POST"]),
    Route("/schedules/preview", preview, methods=["POST"]),
    Route("/schedules/{name}/edit", edit_form),
    Route("/schedules/{name}/edit", update, methods=["POST"]),
    Route("/schedules/{name}/pause", pause, methods=["POST"]),
    Route("/schedules/{name}/resume", resume, methods=["POST"]),
    Route("/schedules/{name}/webinar", webinar_page),
]
