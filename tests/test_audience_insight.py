"""Schedules chosen by what customers bought and what their insight says: each filter as
one SQL condition on SQLite and PostgreSQL, over orders and insight written by their own
modules, and a mistyped filter named by file and key."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from mailer import checks
from mailer.commerce import insights, orders, refresh
from mailer.commerce.order_rows import Rules
from mailer.core.clock import ManualClock
from mailer.core.config import InsightSettings
from mailer.customers.profiles import CUSTOMERS
from mailer.outbound import throttle
from mailer.scheduling import audience, dryrun, firing
from mailer.scheduling.scheduler import Schedules
from mailer.scheduling.schedules import Audience, NewsletterSchedule, load_schedule, segment_names

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
RULES = Rules(now=NOW, zone=UTC, currencies=frozenset())
HEADER = "Order ID,Email,Date,SKU,Description,Category,Qty,UnitPrice,Currency,Status\n"
NAMED = (
    # ana: four coffee orders, the last on 1 September; 120.00 EUR in all
    "A3,ana@example.com,2026-03-01,BEAN-1,Beans,Coffee,1,30.00,EUR,\n"
    "A5,ana@example.com,2026-05-01,BEAN-1,Beans,Coffee,1,30.00,EUR,\n"
    "A7,ana@example.com,2026-07-01,BEAN-1,Beans,Coffee,1,30.00,EUR,\n"
    "A9,ana@example.com,2026-09-01,BEAN-1,Beans,Coffee,1,30.00,EUR,\n"
    "B1,ben@example.com,2026-11-20,MUG-2,Mug,Kitchen,1,15.00,EUR,\n"
    # ken: three tea orders in yen, 60000 JPY in all
    "K4,ken@example.jp,2026-04-10,TEA-9,Sencha,Tea,2,10000,JPY,\n"
    "K5,ken@example.jp,2026-05-10,TEA-9,Sencha,Tea,2,10000,JPY,\n"
    "K6,ken@example.jp,2026-06-10,TEA-9,Sencha,Tea,2,10000,JPY,\n"
    # cal: a coffee order that was cancelled, so nothing bought
    "C1,cal@example.com,2026-11-10,BEAN-1,Beans,Coffee,1,30.00,EUR,cancelled\n"
)


def _fillers() -> str:
    """Thirty more buyers in the first half of the year, so the purchase models can fit."""
    rows = []
    for i in range(30):
        first = date(2026, 1, 5) + timedelta(days=i)
        for n in range(1 + i % 5):
            day = first + timedelta(days=20 * n + i % 7)
            rows.append(
                f"F{i}-{n},f{i}@example.com,{day},FILL-{i % 3},Filler,Filler,1,{10 + i}.00,EUR,\n"
            )
    return "".join(rows)


@pytest.fixture
def shop(engine: Engine, tmp_path: Path) -> Engine:
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + NAMED + _fillers(), encoding="utf-8")
    report = orders.import_csv(engine, path, RULES)
    assert report.rejected == []
    refresh.run(engine, InsightSettings(), NOW.date(), NOW)
    return engine


def chosen(
    engine: Engine, at: datetime = NOW, zone: ZoneInfo = ZoneInfo("UTC"), **filters: Any
) -> set[str]:
    where = audience.matches(Audience.model_validate(filters), at, zone)
    with engine.connect() as conn:
        found = set(conn.execute(select(CUSTOMERS.c.email).where(*where)).scalars())
        assert audience.count(conn, where) == len(found)
    return found


def named(
    engine: Engine, at: datetime = NOW, zone: ZoneInfo = ZoneInfo("UTC"), **filters: Any
) -> set[str]:
    """The chosen among ana, ben, ken and cal (the fillers left out)."""
    return {email.split("@")[0] for email in chosen(engine, at, zone, **filters) if email[0] != "f"}


def test_bought_matches_a_sku_or_a_category_in_any_case_of_placed_orders(shop: Engine) -> None:
    assert named(shop, bought_any=["bean-1"]) == {"ana"}  # cal's was cancelled
    assert named(shop, bought_any=["COFFEE"]) == {"ana"}
    assert named(shop, bought_any=["Tea", "mug-2"]) == {"ben", "ken"}
    assert named(shop, bought_none=["coffee", "tea"]) == {"ben", "cal"}
    assert len(chosen(shop, bought_any=["filler"])) == 30


def test_last_order_dates_and_durations_count_back_from_the_run(shop: Engine) -> None:
    assert named(shop, last_order_before="2026-08-01") == {"ken"}  # cal never bought
    assert named(shop, last_order_before="60d") == {"ana", "ken"}
    assert named(shop, last_order_after="2026-09-01") == {"ana", "ben"}
    assert named(shop, last_order_after="30d") == {"ben"}
    a_month_later = NOW + timedelta(days=30)
    assert named(shop, a_month_later, last_order_after="30d") == set()
    assert named(shop, a_month_later, last_order_before="90d") == {"ana", "ken"}


def test_a_last_order_date_is_a_day_of_the_business_zone(shop: Engine) -> None:
    new_york = ZoneInfo("America/New_York")  # ana's last order, 1 September 00:00 UTC, was
    assert named(shop, NOW, new_york, last_order_after="2026-09-01") == {"ben"}  # 31 August
    assert named(shop, NOW, new_york, last_order_before="2026-09-01") == {"ana", "ken"}
    schedule = NewsletterSchedule(
        template="t",
        cron="0 9 * * *",
        timezone=new_york,
        audience=Audience.model_validate(
            {"bought_any": ["coffee"], "last_order_before": "2026-09-01"}
        ),
    )
    where = firing.Firing("America/New_York", "example.com")
    due = firing.due_plans(shop, "n", schedule, NOW, where, ["America/New_York"], dry_run=True)
    rules = throttle.Rules(min_gap=timedelta(0), quiet_hours=None, caps={})
    found = dryrun.forecast(shop, due[0], rules, new_york)
    assert [fate.email for fate in found.sample] == ["ana@example.com"]
    assert found.sample[0].reason.endswith("bought coffee; last order 2026-08-31")


def test_orders_and_spend_come_from_the_insight_in_its_own_currency(shop: Engine) -> None:
    assert named(shop, orders_min=3) == {"ana", "ken"}
    assert named(shop, spent_min="100.00 EUR") == {"ana"}  # ken's 60000 JPY is not compared
    assert named(shop, spent_min="50000 JPY") == {"ken"}
    assert named(shop, spent_min="100.00 EUR", orders_min=5) == set()


def test_the_dry_run_counts_the_chosen_and_says_why_each_was(shop: Engine) -> None:
    schedule = NewsletterSchedule(
        template="t",
        cron="0 9 * * *",
        timezone=ZoneInfo("UTC"),
        audience=Audience.model_validate(
            {"bought_any": ["coffee", "tea"], "spent_min": "100.00 EUR", "last_order_before": "30d"}
        ),
    )
    due = firing.due_plans(
        shop, "winback", schedule, NOW, firing.Firing("UTC", "example.com"), ["UTC"], dry_run=True
    )
    rules = throttle.Rules(min_gap=timedelta(0), quiet_hours=None, caps={})
    found = dryrun.forecast(shop, due[0], rules, ZoneInfo("UTC"))
    assert found.total == 1 and found.sample[0].email == "ana@example.com"
    assert found.sample[0].reason.endswith(
        "bought coffee; last order 2026-09-01; spent 120.00 EUR >= 100.00 EUR"
    )


def stored(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        query = select(CUSTOMERS.c.email, insights.INSIGHTS).join(
            insights.INSIGHTS, insights.INSIGHTS.c.customer_id == CUSTOMERS.c.id
        )
        return {row["email"]: dict(row) for row in conn.execute(query).mappings()}


def test_segment_clv_and_activity_choose_exactly_whom_the_insight_names(shop: Engine) -> None:
    rows = stored(shop)
    segment = rows["ana@example.com"]["rfm_segment"]
    assert chosen(shop, rfm_segments=[segment]) == {
        e for e, r in rows.items() if r["rfm_segment"] == segment
    }
    p_active = sorted(r["p_active"] for r in rows.values() if r["p_active"] is not None)
    assert len(set(p_active)) > 2, "the purchase model was not fitted"
    below = p_active[len(p_active) // 2]
    expected = {e for e, r in rows.items() if r["p_active"] is not None and r["p_active"] < below}
    assert 0 < len(chosen(shop, active_probability_below=below)) == len(expected)
    assert chosen(shop, active_probability_below=below) == expected
    clvs = sorted(
        r["clv"] for r in rows.values() if r["clv"] is not None and r["currency"] == "EUR"
    )
    middle = clvs[len(clvs) // 2]
    amount = f"{middle // 100}.{middle % 100:02d} EUR"
    expected = {e for e, r in rows.items() if r["currency"] == "EUR" and (r["clv"] or -1) >= middle}
    assert 0 < len(expected) < len(rows)
    assert chosen(shop, clv_min=amount) == expected


def test_each_mistyped_filter_is_named_by_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "winback.toml"
    path.write_text(
        'kind = "newsletter"\ntemplate = "t"\ncron = "0 9 1 * *"\n'
        "[audience]\n"
        'rfm_segments = ["at risk", "sleepy"]\n'
        'spent_min = "100 EURO"\n'
        'clv_min = "12.345 EUR"\n'
        'last_order_before = "soon"\n'
        "last_order_after = 2026-09-01\n"
        "active_probability_below = 1.5\n"
        "orders_min = 0\n"
        'bought_any = "BEAN-1"\n',
        encoding="utf-8",
    )
    segments = segment_names(InsightSettings())
    _, problems = load_schedule(path, {"t"}, ManualClock(NOW), segments)
    by_key = {p.where.split(": ")[1]: p.message for p in problems}
    assert all(p.where.startswith(str(path)) for p in problems)
    assert set(by_key) == {
        "audience.rfm_segments",
        "audience.spent_min",
        "audience.clv_min",
        "audience.last_order_before",
        "audience.active_probability_below",
        "audience.orders_min",
        "audience.bought_any",
    }
    assert "'sleepy': no such RFM segment" in by_key["audience.rfm_segments"]
    assert "'at risk'" in by_key["audience.rfm_segments"]  # the valid names are listed
    assert "'EURO' is not an ISO 4217 currency code" in by_key["audience.spent_min"]
    assert "more decimals than EUR's 2" in by_key["audience.clv_min"]
    assert "'90d'" in by_key["audience.last_order_before"]
    assert "probability from 0 to 1" in by_key["audience.active_probability_below"]


def test_the_money_and_dates_a_marketer_writes_are_read_exactly() -> None:
    read = Audience.model_validate(
        {"spent_min": "99.5 eur", "clv_min": "1200 JPY", "last_order_before": "12w"}
    )
    assert (read.spent_min and read.spent_min.minor, str(read.spent_min)) == (9950, "99.50 EUR")
    assert read.clv_min is not None and read.clv_min.minor == 1200
    assert read.last_order_before == timedelta(weeks=12)
    assert Audience.model_validate({"last_order_after": "2026-09-01"}).last_order_after == date(
        2026, 9, 1
    )


def test_the_running_scheduler_keeps_a_file_with_an_unknown_segment_out(tmp_path: Path) -> None:
    (tmp_path / "winback.toml").write_text(
        'kind = "newsletter"\ntemplate = "t"\ncron = "0 9 1 * *"\n'
        '[audience]\nrfm_segments = ["sleepy"]\n',
        encoding="utf-8",
    )
    files = Schedules(
        directory=tmp_path,
        template_names=lambda: ["t"],
        clock=ManualClock(NOW),
        segments=segment_names(InsightSettings()),
    )
    problems = files.reload()
    assert files.loaded == {}
    assert [p.where for p in problems] == [f"{tmp_path / 'winback.toml'}: audience.rfm_segments"]


def test_mailer_check_names_segments_by_the_configured_ones(engine: Engine, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    (tmp_path / "schedules").mkdir()
    (tmp_path / "schedules" / "winback.toml").write_text(
        'kind = "newsletter"\ntemplate = "newsletter"\ncron = "0 9 1 * *"\n'
        '[audience]\nrfm_segments = ["everyone", "at risk"]\n',
        encoding="utf-8",
    )
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "{engine.url.render_as_string(hide_password=False)}"\n'
        f'[paths]\ntemplates = "{root / "templates"}"\nschedules = "schedules"\n'
        "[insight.segments.everyone]\n",
        encoding="utf-8",
    )
    problems = [p for p in checks.check_all(config, ManualClock(NOW)) if not p.warning]
    assert [(p.where, p.message) for p in problems] == [
        (
            f"{tmp_path / 'schedules' / 'winback.toml'}: audience.rfm_segments",
            "'at risk': no such RFM segment; the segments are 'everyone'",
        )
    ]
