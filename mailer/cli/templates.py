"""`mailer templates ...`: list, check and preview what marketing writes."""

from __future__ import annotations

import dataclasses

import typer

from mailer.cli.common import JSON_OPTION, app_of, err, group, out, print_json, print_rows
from mailer.customers import profiles
from mailer.outbound.templates import TemplateStore
from mailer.scheduling import previews, results

app = group("Templates: list, check, preview.")


def _store(ctx: typer.Context) -> TemplateStore:
    return TemplateStore(app_of(ctx).config.templates_dir)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Every template with its language variants."""
    store = _store(ctx)
    rows = [
        {"name": name, "variants": [v or "default" for v in store.variants(name)]}
        for name in store.names()
    ]
    print_rows(rows, ("name", "variants"), as_json=as_json)


@app.command("check")
def check(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Render every template and variant against sample data; exit 1 on any problem."""
    company = app_of(ctx).config.settings.company
    problems = _store(ctx).check(company=company or None)
    if as_json:
        print_json([{"where": p.where, "message": p.message} for p in problems])
    else:
        for problem in problems:
            out.print(str(problem))
        if not problems:
            out.print("all templates render")
    if problems:
        raise typer.Exit(1)


@app.command("preview")
def preview(
    ctx: typer.Context,
    name: str,
    customer: str = typer.Option(..., "--customer", help="Email of the customer to render for."),
    locale: str | None = typer.Option(None, help="Override the customer's locale."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Render a template for a real customer: subject, headers, text and HTML, as sent."""
    app_ = app_of(ctx)
    cfg = app_.config
    with app_.engine().connect() as conn:
        profile = profiles.get(conn, customer)
    schedules, _ = results.load(cfg, app_.clock)
    category = previews.category_of(name, schedules.values())
    message = previews.preview(
        app_.engine(),
        cfg,
        _store(ctx),
        profile,
        name,
        locale=locale,
        category=category,
        now=app_.clock.now(),
    )
    if as_json:
        print_json(dataclasses.asdict(message))
        return
    err.print(f"{name} / {message.variant or 'default'} for {profile.email}", style="dim")
    out.print(f"Subject: {message.subject}", style="bold")
    for header, value in message.headers:
        out.print(f"{header}: {value}")
    out.print("")
    out.print(message.text)
    if message.html:
        out.print("\n--- HTML ---", style="bold")
        out.print(message.html)


@app.command("send-test")
def send_test(
    ctx: typer.Context,
    name: str,
    to: str = typer.Option(..., "--to", help="Address to send the test to."),
    locale: str | None = typer.Option(None, help="Language variant; default: the customer's."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Queue one test message through the outbox with sample data; the daemon sends it."""
    app_ = app_of(ctx)
    message = previews.send_test(
        app_.engine(), app_.config, _store(ctx), name, to, locale=locale, now=app_.clock.now()
    )
    if as_json:
        print_json({"dedupe_key": message.dedupe_key, "to": message.to_address})
    else:
        out.print(f"queued a test of {name} to {message.to_address}; `mailer run` delivers it")
