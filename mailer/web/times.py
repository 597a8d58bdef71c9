"""Times as staff read them: in the reader's zone (their own, else the business's) with the
zone named, and where people think in distances (next firings, due follow-ups, last
contact, promised answers) as "in 3 hours" or "2 days ago", the exact time in the title.

The filters find the reader's zone and the clock from the request in the template's
context, so no page passes a zone and none can forget to: every time on a page is the
reader's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup
from starlette.requests import Request

from mailer.core.moments import MINUTE, absolute, named, relative, restated
from mailer.web.common import state, viewer_zone


@pass_context
def when(context: Context, at: datetime | None) -> Markup:
    """``{{ at|when }}``: the time in the reader's zone; empty for no time."""
    if at is None:
        return Markup("")
    zone = _zone(context)
    return _element(at, absolute(at, zone), named(at, zone))


@pass_context
def ago(context: Context, at: datetime | None) -> Markup:
    """``{{ at|ago }}``: "in 3 hours" or "2 days ago" by the app's clock, the time in the
    reader's zone as its title; empty for no time."""
    if at is None:
        return Markup("")
    request = _request(context)
    return _element(at, relative(at, state(request).clock.now()), named(at, viewer_zone(request)))


@pass_context
def typed(context: Context, at: datetime | None) -> str:
    """``{{ at|typed }}``: a time as a form's field holds it, in the zone the form reads
    it back in (the reader's)."""
    return "" if at is None else at.astimezone(_zone(context)).strftime(MINUTE)


@pass_context
def local(context: Context, text: str | None) -> str:
    """``{{ reason|local }}``: a stored reason ("deferred until 2026-12-02 08:00 UTC: ...")
    with its times in the reader's zone."""
    return restated(text or "", _zone(context))


@pass_context
def zone_name(context: Context) -> str:
    """``{{ zone_name() }}``: the reader's zone, for the pages that say which it is."""
    return _zone(context).key


FILTERS = {"when": when, "ago": ago, "typed": typed, "local": local}


def _element(at: datetime, text: str, title: str) -> Markup:
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        at.astimezone(UTC).isoformat(), title, text
    )


def _zone(context: Context) -> ZoneInfo:
    return viewer_zone(_request(context))


def _request(context: Context) -> Request:
    request = context.get("request")
    assert isinstance(request, Request), "pages are rendered with their request"
    return request
