"""`mailer stats`: how the installation's mail is doing, per day and receiving domain."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Any

import typer

from mailer.cli.common import JSON_OPTION, app_of, err, out, print_json, print_table
from mailer.outbound import deliverability
from mailer.outbound.deliverability import Counts, Row
from mailer.outbound.pacing import DomainPacing, Slowed

# the table's headings, short so that day and domain stay whole in 80 columns
HEADINGS = {
    "sent": "sent",
    "deferred": "defer",
    "soft": "soft",
    "hard": "hard",
    "complaints": "compl",
    "suppressed": "suppr",
    "bounce_rate": "bounce %",
    "complaint_rate": "compl %",
}
KEY = "defer: deferred by the receiving server; compl: spam complaints; suppr: suppressed"


def stats(
    ctx: typer.Context,
    days: int = typer.Option(7, "--days", min=1, max=400, help="Days back, today included."),
    top: int = typer.Option(10, "--top", min=1, help="Domains shown; the rest are summed."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Sent, deferred, soft and hard bounces, complaints and suppressions per day and domain
    (days in [business_hours] timezone), with the rates providers judge a sender by."""
    app_ = app_of(ctx)
    cfg, now = app_.config, app_.clock.now()
    zone = cfg.settings.business_hours.timezone
    start = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    since = (start - timedelta(days=days - 1)).astimezone(now.tzinfo)
    engine = app_.engine()
    with engine.connect() as conn:
        rows = deliverability.collect(conn, since, now, zone, top=top)
        slowed = DomainPacing.from_config(cfg, engine).slowed_now(conn, now)
    limits = deliverability.Thresholds.from_config(cfg)
    found = deliverability.warnings(rows, limits)
    if as_json:
        print_json(
            {
                "since": since,
                "until": now,
                "thresholds": asdict(limits),
                "total": _figures(deliverability.total(rows)),
                "days": [_row(row) for row in rows],
                "warnings": found,
                "slowed": [asdict(s) for s in slowed],
            }
        )
        return
    first = since.astimezone(zone)
    per_day = [{"day": r.day, "domain": r.domain, **_headed(r.counts, rates=False)} for r in rows]
    columns = ["day", "domain", *(HEADINGS[name] for name in deliverability.COUNTED)]
    print_table(per_day, columns, f"Mail since {first:%Y-%m-%d} ({zone.key})")
    summed = _headed(deliverability.total(rows), rates=True)
    print_table([summed], list(summed), "All of it")
    out.print(KEY)
    if slowed:
        print_table([_slowed(s) for s in slowed], list(SLOWED_COLUMNS), SLOWED_TITLE)
    for warning in found:
        err.print(f"warning: {warning}")


SLOWED_TITLE = "Slowed down now (pacing)"
SLOWED_COLUMNS = ("domain", "per min", "normal", "held until", "last reply")


def _slowed(slowed: Slowed) -> dict[str, Any]:
    """A domain or group the receiving servers slowed down, as the table shows it."""
    values = (
        slowed.name,
        slowed.rate,
        slowed.normal or "unlimited",
        slowed.slowed_until,
        slowed.reason,
    )
    return dict(zip(SLOWED_COLUMNS, values, strict=True))


def _headed(counts: Counts, *, rates: bool) -> dict[str, Any]:
    """The figures under the table's short headings, rates as percentages."""
    figures = _figures(counts)
    shown = {HEADINGS[k]: v for k, v in figures.items() if k in deliverability.COUNTED}
    if rates:
        for name in ("bounce_rate", "complaint_rate"):
            value = figures[name]
            shown[HEADINGS[name]] = "" if value is None else f"{value:.2%}"
    return shown


def _row(row: Row) -> dict[str, Any]:
    return {"day": row.day, "domain": row.domain, **_figures(row.counts)}


def _figures(counts: Counts) -> dict[str, Any]:
    rates = {"bounce_rate": counts.bounce_rate, "complaint_rate": counts.complaint_rate}
    return {**asdict(counts), **{k: None if v is None else round(v, 5) for k, v in rates.items()}}
