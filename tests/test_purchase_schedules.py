"""Mail that anticipates: reorder, winback and after_purchase fired with a moved clock on
SQLite and PostgreSQL, once per purchase cycle (or order day), and through the throttle.

Customers are the shared schedule people (tests/conftest.py); their orders are imported as
the shop would send them, and their insight is what a refresh computes from them:
- maria (Sofia) buys coffee every 30 days, last on 29 October: next order predicted 28 Nov;
- jose (Manila) bought tea three times early in the year: likely lapsed (p_active ~0.02);
- siti (Jakarta) bought two mugs on 20 November, ivan (Sofia, no marketing consent) one;
  dana's order that day was cancelled.
Thirty filler buyers, imported without consent, let the purchase models fit.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from mailer.commerce import insights, orders, refresh
from mailer.commerce.order_rows import Rules
from mailer.core.clock import ManualClock
from mailer.core.config import InsightSettings
from mailer.customers.profiles import CUSTOMERS
from mailer.outbound import throttle
from mailer.outbound.delivery import Delivery
from mailer.outbound.outbox import OUTBOX
from mailer.scheduling import dryrun, firing, purchases
from mailer.scheduling.schedules import (
    AfterPurchaseSchedule,
    NewsletterSchedule,
    ReorderSchedule,
    Schedule,
    WinbackSchedule,
    load_schedules,
)
from mailer.store.models import OutboxStatus
from tests.conftest import FIRING
from tests.smtp_sink import Sink

REFRESHED = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
HEADER = "Order ID,Email,Date,SKU,Description,Category,Qty,UnitPrice,Currency,Status\n"
PARAMS = {"headline": "Time for fresh beans", "intro": "Your usual is waiting."}


def _history() -> str:
    rows = [
        f"M{n},maria@example.bg,{date(2026, 6, 1) + timedelta(days=30 * n)},BEAN-1,Beans,"
        "Coffee,1,30.00,EUR,\n"
        for n in range(6)
    ]
    rows += [
        f"J{n},jose@example.ph,{date(2026, 1, 10) + timedelta(days=25 * n)},TEA-9,Sencha,"
        "Tea,1,10.00,EUR,\n"
        for n in range(3)
    ]
    rows.append("S1,siti@example.id,2026-11-20,MUG-2,Mug,Kitchen,1,15.00,EUR,\n")
    rows.append("S2,siti@example.id,2026-11-20,MUG-3,Mug,Kitchen,1,15.00,EUR,\n")  # same day
    rows.append("D1,dana@example.com,2026-11-20,MUG-2,Mug,Kitchen,1,15.00,EUR,cancelled\n")
    rows.append("I1,ivan@example.bg,2026-11-20,MUG-2,Mug,Kitchen,1,15.00,EUR,\n")
    for i in range(30):
        first = date(2026, 1, 5) + timedelta(days=i)
        for n in range(1 + i % 5):
            day = first + timedelta(days=20 * n + i % 7)
            rows.append(
                f"F{i}-{n},f{i}@example.com,{day},FILL-{i % 3},Filler,Filler,1,{10 + i}.00,EUR,\n"
            )
    return "".join(rows)


def buy(engine: Engine, tmp_path: Path, rows: str, now: datetime) -> None:
    """Orders imported at ``now``: the buyers' insight follows them in the same transaction."""
    path = tmp_path / f"orders-{now:%Y%m%d%H%M}.csv"
    path.write_text(HEADER + rows, encoding="utf-8")
    report = orders.import_csv(engine, path, Rules(now=now, zone=UTC, currencies=frozenset()))
    assert report.rejected == []


@pytest.fixture
def shop(engine: Engine, people: None, tmp_path: Path) -> Engine:
    buy(engine, tmp_path, _history(), REFRESHED)
    refresh.run(engine, InsightSettings(), REFRESHED.date(), REFRESHED)
    return engine


def insight_of(engine: Engine, email: str) -> dict[str, Any]:
    with engine.connect() as conn:
        query = (
            select(insights.INSIGHTS)
            .join(CUSTOMERS, CUSTOMERS.c.id == insights.INSIGHTS.c.customer_id)
            .where(CUSTOMERS.c.email == email)
        )
        return dict(conn.execute(query).mappings().one())


def written(engine: Engine, email: str) -> list[dict[str, Any]]:
    """The outbox rows of one customer, oldest first."""
    with engine.connect() as conn:
        query = select(OUTBOX).where(OUTBOX.c.to_address == email).order_by(OUTBOX.c.id)
        return [dict(row) for row in conn.execute(query).mappings()]


def fire(engine: Engine, at: datetime, **schedules: Schedule) -> list[firing.RunResult]:
    return firing.fire_due(engine, schedules, at, FIRING)


def sofia_nine(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 9, tzinfo=ZoneInfo("Europe/Sofia")).astimezone(
        UTC
    )


def reorder(**changes: Any) -> ReorderSchedule:
    values: dict[str, Any] = {"template": "newsletter", "lead": timedelta(days=2)}
    return ReorderSchedule(**(values | {"params": PARAMS} | changes))


# Who is due when: plain decisions.


def test_a_reorder_is_due_from_lead_before_the_predicted_day_up_to_that_day() -> None:
    lead, predicted = timedelta(days=7), date(2026, 12, 9)
    due_days = [
        day
        for day in (date(2026, 12, 1) + timedelta(days=n) for n in range(12))
        if purchases.reorder_due(predicted, day, lead)
    ]
    assert due_days[0] == date(2026, 12, 2) and due_days[-1] == predicted
    assert not purchases.reorder_due(None, predicted, lead)  # no prediction, no reminder
    assert purchases.reorder_why(predicted, date(2026, 12, 2)) == (
        "predicted next order 2026-12-09, 7 days ahead"
    )
    assert purchases.reorder_why(predicted, predicted).endswith(", today")


def test_winback_wants_a_buyer_below_the_threshold_and_a_model_figure() -> None:
    assert purchases.winback_due(0.12, 3, 0.3)
    assert not purchases.winback_due(0.3, 3, 0.3)
    assert not purchases.winback_due(0.05, 0, 0.3)  # never bought: nothing to win back
    assert not purchases.winback_due(None, 3, 0.3)  # no model fitted: no guess


def test_after_purchase_thanks_for_the_local_order_day() -> None:
    assert purchases.ordered_on(date(2026, 11, 23), timedelta(days=3)) == date(2026, 11, 20)
    # Sofia's 29 March 2026 is 23 hours long: the clocks go forward
    start, end = purchases.local_day(date(2026, 3, 29), ZoneInfo("Europe/Sofia"))
    assert start == datetime(2026, 3, 28, 22, tzinfo=UTC) and end - start == timedelta(hours=23)
    why = purchases.after_purchase_why(["S1", "S2"], date(2026, 11, 20), date(2026, 11, 23))
    assert why == "ordered 2026-11-20 (S1, S2), 3 days ago"


# Firing on each database.


def test_reorder_writes_once_per_cycle_and_again_after_a_new_order(
    shop: Engine, tmp_path: Path
) -> None:
    assert insight_of(shop, "maria@example.bg")["predicted_next_order"] == date(2026, 11, 28)
    firing.first_seen(shop, ["beans"], REFRESHED)
    assert fire(shop, sofia_nine(date(2026, 11, 25)), beans=reorder()) != []
    assert written(shop, "maria@example.bg") == []  # 3 days ahead: not yet

    fire(shop, sofia_nine(date(2026, 11, 26)), beans=reorder())  # 2 days ahead
    again = fire(shop, sofia_nine(date(2026, 11, 26)), beans=reorder())
    (message,) = written(shop, "maria@example.bg")
    assert again == []
    assert message["dedupe_key"] == f"beans:{message['customer_id']}:cycle-2026-10-29"
    assert message["status"] == OutboxStatus.QUEUED and message["template"] == "newsletter"
    assert message["due_at"] == sofia_nine(date(2026, 11, 26))
    for day in (27, 28, 29):  # the next days still select her: nothing more is written
        fire(shop, sofia_nine(date(2026, 11, day)), beans=reorder())
    assert len(written(shop, "maria@example.bg")) == 1

    bought = datetime(2026, 11, 29, 10, tzinfo=UTC)
    buy(shop, tmp_path, "M6,maria@example.bg,2026-11-29,BEAN-1,Beans,Coffee,1,30.00,EUR,\n", bought)
    predicted = insight_of(shop, "maria@example.bg")["predicted_next_order"]
    assert predicted > date(2026, 12, 20)  # her next cycle
    fire(shop, sofia_nine(predicted - timedelta(days=3)), beans=reorder())
    assert len(written(shop, "maria@example.bg")) == 1
    fire(shop, sofia_nine(predicted - timedelta(days=2)), beans=reorder())
    keys = [row["dedupe_key"].rpartition(":")[2] for row in written(shop, "maria@example.bg")]
    assert keys == ["cycle-2026-10-29", "cycle-2026-11-29"]


def test_winback_writes_a_lapsed_buyer_once_per_lapse(shop: Engine, tmp_path: Path) -> None:
    lapsed = WinbackSchedule(template="newsletter", below=0.3, params=PARAMS)
    assert insight_of(shop, "jose@example.ph")["p_active"] < 0.3
    assert insight_of(shop, "maria@example.bg")["p_active"] > 0.3
    firing.first_seen(shop, ["lapsed"], REFRESHED)
    manila_nine = datetime(2026, 11, 25, 1, tzinfo=UTC)
    fire(shop, manila_nine, lapsed=lapsed)
    fire(shop, manila_nine + timedelta(days=1), lapsed=lapsed)  # the next day: still lapsed
    (message,) = written(shop, "jose@example.ph")
    assert message["dedupe_key"].endswith(":cycle-2026-03-01")
    assert written(shop, "maria@example.bg") == [] and written(shop, "siti@example.id") == []
    fillers = [row for n in range(30) for row in written(shop, f"f{n}@example.com")]
    assert fillers and {row["reason"] for row in fillers} == {"no consent for marketing"}

    # He buys again (no longer lapsed), then drifts again for half a year: a new lapse.
    december = datetime(2026, 12, 2, 12, tzinfo=UTC)
    buy(shop, tmp_path, "J9,jose@example.ph,2026-12-01,TEA-9,Sencha,Tea,1,10.00,EUR,\n", december)
    assert insight_of(shop, "jose@example.ph")["p_active"] > 0.3
    fire(shop, manila_nine + timedelta(days=8), lapsed=lapsed)
    assert len(written(shop, "jose@example.ph")) == 1
    refresh.run(shop, InsightSettings(), date(2027, 6, 1), december)  # half a year on
    assert insight_of(shop, "jose@example.ph")["p_active"] < 0.3
    firing.first_seen(shop, ["lapsed"], datetime(2027, 6, 1, tzinfo=UTC))
    fire(shop, datetime(2027, 6, 2, 1, tzinfo=UTC), lapsed=lapsed)
    fire(shop, datetime(2027, 6, 3, 1, tzinfo=UTC), lapsed=lapsed)
    keys = [row["dedupe_key"].rpartition(":")[2] for row in written(shop, "jose@example.ph")]
    assert keys == ["cycle-2026-03-01", "cycle-2026-12-01"]


def test_after_purchase_thanks_once_per_order_day_in_the_customers_zone(
    shop: Engine, tmp_path: Path
) -> None:
    thanks = AfterPurchaseSchedule(
        template="newsletter", after=timedelta(days=3), categories=["KITCHEN"], params=PARAMS
    )
    coffee_only = thanks.model_copy(update={"categories": ["coffee"]})
    firing.first_seen(shop, ["thanks", "coffee"], REFRESHED - timedelta(days=3))
    jakarta_nine = datetime(2026, 11, 23, 2, tzinfo=UTC)  # three days after her two mugs
    fire(shop, jakarta_nine - timedelta(hours=1), thanks=thanks)
    assert written(shop, "siti@example.id") == []  # 08:00 in Jakarta: not yet
    fire(shop, jakarta_nine, thanks=thanks, coffee=coffee_only)
    fire(shop, jakarta_nine + timedelta(hours=5), thanks=thanks, coffee=coffee_only)
    fire(shop, jakarta_nine + timedelta(days=1), thanks=thanks, coffee=coffee_only)
    (message,) = written(shop, "siti@example.id")  # two orders that day, one thank-you
    assert message["dedupe_key"] == f"thanks:{message['customer_id']}:order-2026-11-20"
    assert message["category"] == "marketing" and message["context"]["ordered_on"] == "2026-11-20"
    assert written(shop, "maria@example.bg") == []  # no order three days before
    assert written(shop, "dana@example.com") == []  # hers was cancelled
    (to_ivan,) = written(shop, "ivan@example.bg")
    assert (to_ivan["status"], to_ivan["reason"]) == ("skipped", "no consent for marketing")

    # 23:30 in Jakarta on 1 December is still 1 December there, 16:30 UTC
    buy(
        shop,
        tmp_path,
        "S3,siti@example.id,2026-12-01T16:30:00Z,MUG-2,Mug,Kitchen,1,15.00,EUR,\n",
        REFRESHED + timedelta(days=8),
    )
    fire(shop, datetime(2026, 12, 4, 2, tzinfo=UTC), thanks=thanks)
    keys = [row["dedupe_key"].rpartition(":")[2] for row in written(shop, "siti@example.id")]
    assert keys == ["order-2026-11-20", "order-2026-12-01"]


def test_a_plain_thank_you_may_go_as_relationship_mail(shop: Engine) -> None:
    """Ivan agreed to relationship mail only: a thank-you declared as such reaches him."""
    thanks = AfterPurchaseSchedule(
        template="newsletter", after=timedelta(days=3), category="relationship", params=PARAMS
    )
    firing.first_seen(shop, ["thanks"], REFRESHED - timedelta(days=3))
    fire(shop, sofia_nine(date(2026, 11, 23)), thanks=thanks)
    (to_ivan,) = written(shop, "ivan@example.bg")
    assert (to_ivan["category"], to_ivan["status"]) == ("relationship", OutboxStatus.QUEUED)


def test_a_dry_run_says_who_is_due_and_why_then_that_they_were_written(shop: Engine) -> None:
    rules = throttle.Rules(min_gap=timedelta(0), quiet_hours=None, caps={})
    at = sofia_nine(date(2026, 11, 26))

    def forecast() -> dryrun.Fate:
        plans = firing.due_plans(
            shop, "beans", reorder(), at, FIRING, ["Europe/Sofia"], dry_run=True
        )
        (found,) = [dryrun.forecast(shop, plan, rules, ZoneInfo("Europe/Sofia")) for plan in plans]
        (maria,) = [fate for fate in found.sample if fate.email == "maria@example.bg"]
        return maria

    before = forecast()
    assert before.action == "send"
    assert before.reason == "predicted next order 2026-11-28, 2 days ahead"
    fire(shop, at, beans=reorder())
    after = forecast()
    assert (after.action, after.reason) == (
        "already queued",
        "written before in this purchase cycle; predicted next order 2026-11-28, 2 days ahead",
    )


@pytest.mark.parametrize(
    ("schedule", "at", "zone", "email", "why"),
    [
        (
            WinbackSchedule(template="newsletter", below=0.3),
            datetime(2026, 11, 25, 1, tzinfo=UTC),
            "Asia/Manila",
            "jose@example.ph",
            r"p_active 0\.0\d < 0\.3; last order 2026-03-01",
        ),
        (
            AfterPurchaseSchedule(template="newsletter", after=timedelta(days=3)),
            datetime(2026, 11, 23, 2, tzinfo=UTC),
            "Asia/Jakarta",
            "siti@example.id",
            r"ordered 2026-11-20 \(S1, S2\), 3 days ago",
        ),
    ],
    ids=["winback", "after_purchase"],
)
def test_the_dry_run_names_the_figure_behind_each_choice(
    shop: Engine, schedule: Schedule, at: datetime, zone: str, email: str, why: str
) -> None:
    rules = throttle.Rules(min_gap=timedelta(0), quiet_hours=None, caps={})
    (plan,) = firing.due_plans(shop, "it", schedule, at, FIRING, [zone], dry_run=True)
    found = dryrun.forecast(shop, plan, rules, ZoneInfo(zone))
    (fate,) = [fate for fate in found.sample if fate.email == email]
    assert re.fullmatch(why, fate.reason)


# What customers receive: the shipped throttle decides between these and other mail.


async def test_a_reorder_reminder_waits_for_the_days_marketing_slot(
    shop: Engine, clock: ManualClock, delivering: tuple[Delivery, Sink]
) -> None:
    """The shipped throttle allows one marketing message a day: the newsletter, by priority;
    the reminder is deferred, not lost, and arrives the next day once, within valid_for."""
    delivery, sink = delivering
    newsletter = NewsletterSchedule(
        template="newsletter", cron="0 9 26 * *", priority=10, params=PARAMS
    )
    schedules: dict[str, Schedule] = {
        "news": newsletter,
        "beans": reorder(valid_for=timedelta(days=2)),
    }
    firing.first_seen(shop, list(schedules), REFRESHED)
    clock.set(sofia_nine(date(2026, 11, 26)))
    firing.fire_due(shop, schedules, clock.now(), FIRING)
    await delivery.deliver_due()
    assert len(received(sink, "maria@example.bg")) == 1
    assert states(shop, "maria@example.bg") == {
        "news": OutboxStatus.SENT,
        "beans": OutboxStatus.DEFERRED,
    }

    clock.set(sofia_nine(date(2026, 11, 27)) + timedelta(hours=2))
    firing.fire_due(shop, schedules, clock.now(), FIRING)
    await delivery.deliver_due()
    await delivery.deliver_due()
    assert len(received(sink, "maria@example.bg")) == 2
    assert states(shop, "maria@example.bg") == {
        "news": OutboxStatus.SENT,
        "beans": OutboxStatus.SENT,
    }


async def test_the_shipped_thank_you_names_the_order_and_goes_out(
    shop: Engine, clock: ManualClock, delivering: tuple[Delivery, Sink]
) -> None:
    """The shipped after_purchase template reads the customer's orders, insight and
    recommendations: each is loaded for it (a file using mailer's date filter was read as
    reading nothing, and the insight it tests was never loaded: the message failed)."""
    delivery, sink = delivering
    thanks = AfterPurchaseSchedule(template="after_purchase", after=timedelta(days=3))
    firing.first_seen(shop, ["thanks"], REFRESHED - timedelta(days=3))
    clock.set(datetime(2026, 11, 23, 2, tzinfo=UTC))  # 09:00 in Jakarta, three days on
    fire(shop, clock.now(), thanks=thanks)
    await delivery.deliver_due()
    assert states(shop, "siti@example.id") == {"thanks": OutboxStatus.SENT}
    (mail,) = received(sink, "siti@example.id")
    text = mail.message.get_body(("plain",)).get_content()
    assert "pesanan S1" in text and "Mug" in text  # in her language, Indonesian


def received(sink: Sink, address: str) -> list[Any]:
    return [r for r in sink.received if r.rcpt_tos == [address]]


def states(engine: Engine, address: str) -> dict[str, str]:
    """Each schedule's message to one customer, by its status."""
    return {row["dedupe_key"].partition(":")[0]: row["status"] for row in written(engine, address)}


# Mistakes in a schedule file: one line each, with file and key.


def test_each_mistake_in_a_purchase_schedule_names_its_file_and_key(tmp_path: Path) -> None:
    files = {
        "beans.toml": 'kind = "reorder"\nlead = "36h"\n',
        "lapsed.toml": 'kind = "winback"\nbelow = 1.5\nlead = "7d"\n',
        "thanks.toml": (
            'kind = "after_purchase"\ncategories = "coffee"\ncategory = "transactional"\n'
        ),
        "review.toml": 'kind = "after_purchase"\nafter = "0d"\ntemplate = "newsletter"\n',
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    loaded, problems = load_schedules(tmp_path, {"newsletter"}, ManualClock(REFRESHED))
    said = {p.where.removeprefix(f"{tmp_path}/"): p.message for p in problems}
    assert loaded == {}
    assert said == {
        "beans.toml: template": "there is no template named 'reorder'",
        "beans.toml: lead": "'1d12h' is not a whole number of days, e.g. '7d'",
        "lapsed.toml: template": "there is no template named 'winback'",
        "lapsed.toml: below": "1.5 is not a probability from 0 to 1, e.g. 0.2",
        "lapsed.toml: lead": "is not a known key",
        "thanks.toml: template": "there is no template named 'after_purchase'",
        "thanks.toml: after": "is required",
        "thanks.toml: categories": 'is not a list; write e.g. ["coffee", "tea"]',
        "thanks.toml: category": "'transactional': write 'marketing' (a review request, an"
        " offer) or 'relationship' (a plain thank-you)",
        "review.toml: after": "must be a day or more, e.g. '3d'",
    }
    assert all("\n" not in p.message for p in problems)
