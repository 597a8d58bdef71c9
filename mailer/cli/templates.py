"""`mailer templates ...`: list, check and preview what marketing writes."""

from __future__ import annotations

import typer

from mailer import customers
from mailer.cli.common import JSON_OPTION, app_of, err, out, print_json, print_table
from mailer.context import customer_view, customer_zone
from mailer.templates import TemplateStore, sample_context

app = typer.Typer(help="Templates: list, check, preview.", no_args_is_help=True)


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
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ("name", "variants"))


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
    """Render a template for a real customer: subject, text and HTML, exactly as sent."""
    app_ = app_of(ctx)
    cfg = app_.config
    store = _store(ctx)
    with app_.engine().connect() as conn:
        row = customers.get(conn, customer)
    context = sample_context(store.root, name, locale, company=cfg.settings.company or None)
    context["customer"] = customer_view(row)
    base = cfg.settings.web.base_url.rstrip("/")
    context.update(
        unsubscribe_url=f"{base}/unsubscribe/preview", preferences_url=f"{base}/preferences/preview"
    )
    chosen = locale or row["locale"]
    message = store.render(name, context, locale=chosen, zone=customer_zone(row, cfg))
    if as_json:
        print_json(
            {
                "template": name,
                "variant": message.variant,
                "subject": message.subject,
                "text": message.text,
                "html": message.html,
            }
        )
        return
    err.print(f"{name} / {message.variant or 'default'} for {row['email']}", style="dim")
    out.print(f"Subject: {message.subject}\n", style="bold")
    out.print(message.text)
    if message.html:
        out.print("\n--- HTML ---", style="bold")
        out.print(message.html)
