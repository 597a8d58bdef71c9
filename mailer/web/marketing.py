"""Marketing's pages: templates with their languages and problems, a preview for a real
customer with a test send, and each schedule's next firing and what its runs became.

Templates and schedules are files, and the files stay the one source of truth: these pages
only read them. The one thing written here is a test message, into the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailer.core.errors import MailerError, NotFound, Problem, TemplateError
from mailer.customers import profiles
from mailer.outbound.templates import TemplateStore
from mailer.scheduling import firing, previews, results
from mailer.scheduling.firing import Firing
from mailer.scheduling.results import Day, Summary
from mailer.store.models import OutboxStatus, Role
from mailer.web.common import (
    WebState,
    checked_form,
    db,
    render,
    rendering,
    require,
    state,
    viewer_zone,
)

MATCHES = 10  # customers offered when the search names no one exactly
CHART_WIDTH, CHART_HEIGHT = 600, 150  # the bars' area, in SVG units


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    """One day of the chart: sent stacked under not sent, heights in SVG units."""

    day: Day
    x: float
    width: float
    sent: float
    not_sent: float


@require(Role.MARKETING)
async def templates_page(request: Request) -> Response:
    return render(
        request, "marketing_templates.html", await rendering(request, _templates, state(request))
    )


@require(Role.MARKETING)
async def template_page(request: Request) -> Response:
    name, query = request.path_params["name"], request.query_params.get("customer", "").strip()
    locale = request.query_params.get("locale", "")
    context = await rendering(request, _template, state(request), name, query, locale)
    return render(request, "marketing_template.html", context)


@require(Role.MARKETING)
async def send_test(request: Request) -> Response:
    form = await checked_form(request)
    web, name = state(request), request.path_params["name"]
    to, locale = str(form.get("to", "")).strip(), str(form.get("locale", ""))
    context = await db(request, _template, web, name, "", locale)
    try:
        message = await db(
            request,
            previews.send_test,
            web.engine,
            web.cfg,
            TemplateStore(web.cfg.templates_dir),
            name,
            to,
            locale=context["locale"] or None,
            now=web.clock.now(),
        )
    except MailerError as exc:
        return render(request, "marketing_template.html", {**context, "to": to, "error": exc}, 400)
    return render(request, "marketing_sent.html", {**context, "to": message.to_address})


@require(Role.MARKETING)
async def schedules_page(request: Request) -> Response:
    summaries, broken = await db(request, _summaries, state(request))
    return render(request, "marketing_schedules.html", {"summaries": summaries, "broken": broken})


@require(Role.MARKETING)
async def schedule_page(request: Request) -> Response:
    name, zone = request.path_params["name"], viewer_zone(request)
    context = await db(request, _schedule, state(request), name, zone)
    return render(request, "marketing_schedule.html", context)


def _templates(web: WebState) -> dict[str, Any]:
    store = TemplateStore(web.cfg.templates_dir)
    schedules, _ = results.load(web.cfg, web.clock)
    problems = previews.problems_by_template(store, web.cfg.settings.company or None)
    rows = [
        {
            "name": name,
            "variants": store.variants(name),
            "problems": problems.get(name, []),
            "used_by": [
                s for s, found in schedules.items() if name in previews.templates_of(found)
            ],
        }
        for name in store.names()
    ]
    shared = problems.get("", [])
    return {"templates": rows, "shared": shared, "default_locale": store.default_locale}


def chosen_customer(web: WebState, query: str) -> profiles.Profile | list[profiles.Profile]:
    """The customer a preview form names by address, else those whose address or name
    contains the text, to pick from."""
    with web.engine.connect() as conn:
        try:
            return profiles.get(conn, query)
        except NotFound:
            return profiles.find(conn, search=query, limit=MATCHES)


def _template(web: WebState, name: str, query: str, locale: str) -> dict[str, Any]:
    """The preview form, and the preview once ``query`` names one customer by address."""
    store = TemplateStore(web.cfg.templates_dir)
    try:
        variants = store.variants(name)
    except TemplateError:
        raise HTTPException(404, f"There is no template named {name!r}.") from None
    locales = [variant or store.default_locale for variant in variants]
    context: dict[str, Any] = {
        "name": name,
        "variants": variants,
        "default_locale": store.default_locale,
        "query": query,
        "locale": locale if locale in locales else "",  # only what the form offers
    }
    if not query:
        return context
    customer = chosen_customer(web, query)
    if isinstance(customer, list):
        return {**context, "matches": customer}
    chosen = context["locale"] or None
    return {**context, "customer": customer, **_preview(web, store, customer, name, chosen)}


def _preview(
    web: WebState, store: TemplateStore, customer: profiles.Profile, name: str, locale: str | None
) -> dict[str, Any]:
    schedules, _ = results.load(web.cfg, web.clock)
    category = previews.category_of(name, schedules.values())
    try:
        shown = previews.preview(
            web.engine,
            web.cfg,
            store,
            customer,
            name,
            locale=locale,
            category=category,
            now=web.clock.now(),
        )
    except TemplateError as exc:
        return {"problem": exc.problem}
    return {"preview": shown}


def _summaries(web: WebState) -> tuple[list[Summary], dict[str, list[Problem]]]:
    """Loaded schedules with their next firing, and broken files with their problems."""
    schedules, problems = results.load(web.cfg, web.clock)
    zones = firing.customer_zones(web.engine, Firing.from_config(web.cfg).fallback_zone)
    found = results.summaries(schedules, zones, web.clock.now())
    return found, results.problems_by_file(problems)


def _schedule(web: WebState, name: str, zone: ZoneInfo) -> dict[str, Any]:
    summaries, broken = _summaries(web)
    summary = next((s for s in summaries if s.name == name), None)
    with web.engine.connect() as conn:
        runs = results.runs(conn, name)
        days = results.daily(conn, name, web.clock.now().astimezone(zone).date(), zone)
    if summary is None and not runs and name not in broken:
        raise HTTPException(404, f"There is no schedule named {name!r}.")
    return {
        "name": name,
        "summary": summary,
        "problems": broken.get(name, []),
        "runs": runs,
        "totals": results.totals(runs),
        "statuses": list(OutboxStatus),
        "chart": _chart(days),
    }


def _chart(days: list[Day]) -> dict[str, Any]:
    """Bars scaled so the busiest day fills the height; the page draws them as SVG."""
    tallest = max((day.sent + day.not_sent for day in days), default=0)
    step, scale = CHART_WIDTH / len(days), CHART_HEIGHT / (tallest or 1)
    bars = [
        Bar(
            day=day,
            x=round(i * step + 1, 1),
            width=round(step - 2, 1),
            sent=round(day.sent * scale, 1),
            not_sent=round(day.not_sent * scale, 1),
        )
        for i, day in enumerate(days)
    ]
    return {"width": CHART_WIDTH, "height": CHART_HEIGHT, "tallest": tallest, "bars": bars}


routes = [
    Route("/templates", templates_page),
    Route("/templates/{name}", template_page),
    Route("/templates/{name}/send-test", send_test, methods=["POST"]),
    Route("/schedules", schedules_page),
    Route("/schedules/{name}", schedule_page),
]
