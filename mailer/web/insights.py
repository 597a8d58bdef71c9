"""The insights page marketing and owners read: segments, top customers, lifetime values,
products, returning cohorts and channels, each currency apart, with charts drawn on the
server as SVG (scaled by their viewBox, so they fit a phone) and no script."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailer.commerce import report
from mailer.core.money import from_minor
from mailer.store.models import Role
from mailer.web.common import db, render, require, state

CHART_WIDTH, LABEL_WIDTH, ROW = 600, 170, 26  # SVG units


@dataclass(frozen=True, slots=True, kw_only=True)
class HBar:
    """One row of a horizontal bar chart."""

    label: str
    text: str  # the figure written after the bar
    y: int
    width: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Chart:
    width: int
    height: int
    label_width: int
    bars: tuple[HBar, ...]


def bars(rows: Sequence[tuple[str, float, str]]) -> Chart:
    """(label, value, text) rows as bars, the largest value filling the space left of its
    text."""
    room = CHART_WIDTH - LABEL_WIDTH - 110
    largest = max((value for _, value, _ in rows), default=0) or 1
    found = tuple(
        HBar(label=label, text=text, y=n * ROW, width=round(max(value, 0) / largest * room, 1))
        for n, (label, value, text) in enumerate(rows)
    )
    return Chart(
        width=CHART_WIDTH, height=max(len(rows), 1) * ROW, label_width=LABEL_WIDTH, bars=found
    )


def heat(share: float | None) -> str:
    """A cohort cell's background: paler for fewer returning, never too dark for its text."""
    if share is None:
        return ""
    return f"background:hsl(210 70% {97 - 35 * min(max(share, 0), 1):.0f}%)"


def _charts(part: report.CurrencyReport) -> dict[str, Chart]:
    code = part.currency
    money = [(s.name, s.revenue, f"{s.revenue_share:.0%}") for s in part.segments]
    buckets = [
        (
            f"{from_minor(b.low, code)}+" if b.high is None else f"< {from_minor(b.high, code)}",
            b.customers,
            str(b.customers),
        )
        for b in part.clv
    ]
    return {"segments": bars(money), "clv": bars(buckets)}


def _page(request: Request) -> dict[str, Any]:
    web = state(request)
    zone = web.cfg.settings.business_hours.timezone
    stored = report.current(web.engine, zone, web.clock.now())
    found = stored.report
    return {
        "report": found,
        "refreshed": stored.refreshed,
        "charts": {part.currency: _charts(part) for part in found.currencies},
        "months": range(1, report.MONTHS + 1),
        "money": from_minor,
        "heat": heat,
    }


@require(Role.MARKETING)
async def insights_page(request: Request) -> Response:
    return render(request, "insights.html", await db(request, _page, request))


routes = [Route("/insights", insights_page)]
