"""`mailer templates ...`: list, check and preview what marketing writes."""

from __future__ import annotations

import uuid

import typer
from sqlalchemy.engine import Connection

from mailer import customers, outbox
from mailer.cli.common import JSON_OPTION, app_of, err, out, print_json, print_table
from mailer.context import customer_view, customer_zone
from mailer.customer_csv import normalise_email
from mailer.errors import MailerError, NotFound
from mailer.models import Category
from mailer.outbox import NewMessage
from mailer.templates import TemplateStore, sample_context

# what a test send borrows from the sample data; the customer, company and links are real
SAMPLE_ONLY = ("params", "inquiry", "reply_expected_by", "webinar")

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
    cfg, now = app_.config, app_.clock.now()
    store = _store(ctx)
    store.variants(name)  # an unknown template is refused now, not at send time
    try:
        address = normalise_email(to)
    except ValueError as exc:
        raise MailerError(str(exc)) from None
    engine = app_.engine()
    with engine.connect() as conn:
        customer_id = _customer_id(conn, address)
    sample = sample_context(store.root, name, locale, company=cfg.settings.company or None)
    message = NewMessage(
        dedupe_key=f"test:{name}:{uuid.uuid4()}",
        to_address=address,
        category=Category.TRANSACTIONAL,
        template=name,
        customer_id=customer_id,
        locale=locale,
        context={k: sample[k] for k in SAMPLE_ONLY},
    )
    outbox.enqueue(engine, [message], now)
    if as_json:
        print_json({"dedupe_key": message.dedupe_key, "to": address})
    else:
        out.print(f"queued a test of {name} to {address}; `mailer run` delivers it")


def _customer_id(conn: Connection, address: str) -> int | None:
    """A test to a customer's address is rendered with that customer's data."""
    try:
        return int(customers.get(conn, address)["id"])
    except NotFound:
        return None
