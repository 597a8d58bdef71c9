"""`mailer schedules ...`: when each schedule fires next, and running one by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from mailer.cli.common import (
    JSON_OPTION,
    App,
    app_of,
    err,
    group,
    out,
    parse_moment,
    print_json,
    print_rows,
    print_table,
)
from mailer.core.errors import NotFound
from mailer.outbound import throttle
from mailer.scheduling import dryrun, firing, occurrences, results
from mailer.scheduling.fanout import Plan
from mailer.scheduling.firing import Firing
from mailer.scheduling.schedules import Schedule

app = group("Newsletters, birthdays, webinars, reorder, winback and after_purchase in schedules/.")

AT_HELP = "As if it were this moment, with its UTC offset, e.g. 2026-12-01T09:00:00+02:00."


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Every schedule file: kind, template, and the next time it fires."""
    app_ = app_of(ctx)
    schedules = _loaded(app_)
    zones = firing.customer_zones(app_.engine(), Firing.from_config(app_.config).fallback_zone)
    rows = [
        {
            "name": found.name,
            "kind": found.schedule.kind,
            "template": found.schedule.template,
            "enabled": found.schedule.enabled,
            "next_fire": found.next_fire,
            "zones": len(found.zones),
        }
        for found in results.summaries(schedules, zones, app_.clock.now())
    ]
    print_rows(rows, ("name", "kind", "template", "enabled", "next_fire", "zones"), as_json=as_json)


@app.command("run")
def run(
    ctx: typer.Context,
    name: str,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show who would get what; queue nothing."
    ),
    at: str = typer.Option(None, "--at", help=AT_HELP, show_default=False),
    sample: int = typer.Option(20, min=0, help="Customers listed per run in a dry run."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run what of NAME is due now: the same runs the daemon would make, once, nothing
    planned before mailer first saw NAME. --at runs what was due at that moment, even so."""
    app_ = app_of(ctx)
    schedules = _loaded(app_)
    if name not in schedules:
        known = ", ".join(sorted(schedules)) or "none"
        raise NotFound(f"no schedule named {name!r} (loaded: {known})")
    moment = parse_moment(at) if at else app_.clock.now()
    settings = Firing.from_config(app_.config)
    engine = app_.engine()
    zones = firing.customer_zones(engine, settings.fallback_zone)
    schedule = schedules[name]
    keep = schedule.enabled and not dry_run
    since = None if at else firing.first_seen(engine, [name], moment, record=keep)[name]
    plans = firing.due_plans(
        engine, name, schedule, moment, settings, zones, since=since, dry_run=dry_run
    )
    if not plans:
        upcoming = occurrences.next_fire(schedule, zones, moment)
        out.print(f"nothing of {name} is due at {moment:%Y-%m-%d %H:%M %Z}; next: {upcoming}")
        if since is not None and since > moment - schedule.valid_for:
            out.print(
                f"mailer first saw {name} at {since:%Y-%m-%d %H:%M %Z} and does not catch up "
                "what was planned before; --at DATETIME runs an earlier moment on purpose"
            )
        return
    if dry_run:
        _dry_run(app_, plans, sample, as_json)
        return
    results = [firing.run(engine, plan, moment, _progress(plan)) for plan in plans]
    rows = [
        {"occurrence": r.occurrence, "zone": r.zone, "queued": r.queued, "skipped": r.skipped}
        for r in results
    ]
    print_rows(
        rows, ("occurrence", "zone", "queued", "skipped"), as_json=as_json, title=f"{name}: queued"
    )


def _progress(plan: Plan) -> Callable[[int], None]:
    where = f" ({plan.occurrence.zone})" if plan.occurrence.zone else ""

    def show(written: int) -> None:
        if written:
            err.print(f"{plan.schedule} {plan.occurrence.key}{where}: {written} written so far")

    return show


def _dry_run(app_: App, plans: list[Plan], sample: int, as_json: bool) -> None:
    settings = app_.config.settings
    rules = throttle.Rules.from_settings(settings.throttle)
    zone = settings.business_hours.timezone
    forecasts = [dryrun.forecast(app_.engine(), plan, rules, zone, sample=sample) for plan in plans]
    if as_json:
        print_json([_forecast_json(f) for f in forecasts])
        return
    for found in forecasts:
        occurrence = found.plan.occurrence
        where = f" ({occurrence.zone})" if occurrence.zone else ""
        title = (
            f"{found.plan.schedule} {occurrence.key}{where}, due {occurrence.at:%Y-%m-%d %H:%M} "
            f"UTC: {found.total} customer(s), dry run"
        )
        counts = [
            {"outcome": action, "reason": reason, "customers": count}
            for (action, reason), count in found.tally.most_common()
        ]
        print_table(counts, ("outcome", "customers", "reason"), title=title)
        if found.sample:
            rows = [_fate_row(f) for f in found.sample]
            print_table(rows, ("email", "action", "reason"), title="first customers")


def _fate_row(fate: dryrun.Fate) -> dict[str, Any]:
    return {"email": fate.email, "action": fate.action, "reason": fate.reason}


def _forecast_json(found: dryrun.Forecast) -> dict[str, Any]:
    occurrence = found.plan.occurrence
    return {
        "schedule": found.plan.schedule,
        "occurrence": occurrence.key,
        "zone": occurrence.zone,
        "due_at": occurrence.at,
        "template": found.plan.template,
        "customers": found.total,
        "outcomes": [
            {"action": action, "reason": reason, "customers": count}
            for (action, reason), count in found.tally.most_common()
        ],
        "sample": [_fate_row(f) for f in found.sample],
    }


def _loaded(app_: App) -> dict[str, Schedule]:
    """The schedules that load; a broken file is named, as `mailer check` would."""
    schedules, problems = results.load(app_.config, app_.clock)
    for problem in problems:
        err.print(f"skipped: {problem}")
    return schedules
