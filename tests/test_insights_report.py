"""The insights report on a small shop whose figures are known by hand, on SQLite and
PostgreSQL: segments, top customers, products nobody else bought, returning cohorts and
channels, each currency on its own."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import Engine

from mailer.commerce import insights, orders, report
from mailer.commerce.order_rows import Rules
from mailer.core.config import InsightSettings

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
AS_OF = date(2026, 6, 30)
HEADER = "order_id,email,date,sku,product,quantity,unit_price,cost,currency,channel,status\n"
SHOP = (
    "A1,ana@example.com,2026-01-10,BEAN-1,Beans,2,10.00,6.00,EUR,web,\n"
    "A2,ana@example.com,2026-02-10,BEAN-1,Beans,1,10.00,6.00,EUR,web,\n"
    "A3,ana@example.com,2026-03-15,MUG-2,Mug,1,25.00,10.00,EUR,store,\n"
    "B1,bob@example.com,2026-01-20,BEAN-1,Beans,1,10.00,6.00,EUR,web,\n"
    "B2,bob@example.com,2026-03-01,MUG-2,Mug,4,25.00,10.00,EUR,web,cancelled\n"
    "C1,cy@example.com,2026-02-05,MUG-2,Mug,1,25.00,10.00,EUR,store,\n"
    "C2,cy@example.com,2026-04-05,BEAN-1,Beans,1,10.00,6.00,EUR,web,\n"
    "K1,ken@example.jp,2026-03-01,BEAN-1,Beans,2,1200,,JPY,web,\n"
)


def stock(engine: Engine, tmp_path: Path) -> None:
    """The shop's orders imported and the insight refreshed as of the end of June."""
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + SHOP, encoding="utf-8")
    rules = Rules(now=NOW, zone=UTC, currencies=frozenset())
    assert not orders.import_csv(engine, path, rules).rejected
    insights.refresh(engine, InsightSettings(), AS_OF, NOW)


def shop(engine: Engine, tmp_path: Path) -> report.Report:
    stock(engine, tmp_path)
    with engine.connect() as conn:
        return report.build(conn)


def test_each_currency_is_reported_apart_with_its_customers_products_and_cohorts(
    engine: Engine, tmp_path: Path
) -> None:
    found = shop(engine, tmp_path)
    assert found.as_of == AS_OF
    eur, jpy = found.currencies  # the currency with most customers first
    assert (eur.currency, eur.customers, eur.revenue) == ("EUR", 3, 10000)
    assert (jpy.currency, jpy.customers, jpy.revenue) == ("JPY", 1, 2400)
    assert eur.repeat_rate == 2 / 3 and jpy.repeat_rate == 0
    assert [(c.email, c.revenue) for c in eur.top_customers] == [
        ("ana@example.com", 5500),
        ("cy@example.com", 3500),
        ("bob@example.com", 1000),  # the cancelled order counts for nothing
    ]
    assert sum(s.customers for s in eur.segments) == 3
    assert sum(s.margin for s in eur.segments) == 5000  # 27 + 4 + 19 euros
    assert abs(sum(s.revenue_share for s in eur.segments) - 1) < 1e-9
    assert jpy.segments[0].margin_share is None  # no cost given: no margin to share
    assert [(p.sku, p.revenue, p.buyers, p.never_bought) for p in eur.products] == [
        ("BEAN-1", 5000, 3, 0),
        ("MUG-2", 5000, 2, 1),  # bob only cancelled his mugs
    ]
    january, february = eur.cohorts
    assert (january.month, january.customers) == ("2026-01", 2)
    assert january.returned == (0.5, 0.5, 0.0, 0.0, 0.0, None)  # July has not happened
    assert (february.month, february.customers) == ("2026-02", 1)
    assert february.returned[:2] == (0.0, 1.0)
    assert [(c.name, c.orders, c.revenue) for c in eur.channels] == [
        ("web", 4, 5000),
        ("store", 2, 5000),
    ]
    assert sum(b.customers for b in eur.clv) + eur.clv_unknown == 3


def test_the_report_as_json_keeps_money_exact_in_its_currency(
    engine: Engine, tmp_path: Path
) -> None:
    shown = report.shown(shop(engine, tmp_path))
    eur, jpy = shown["currencies"]
    assert shown["as_of"] == "2026-06-30"
    assert (eur["revenue"], jpy["revenue"]) == ("100.00", "2400")
    assert eur["products"][1] == {
        "sku": "MUG-2",
        "name": "Mug",
        "revenue": "50.00",
        "buyers": 2,
        "never_bought": 1,
    }
    assert eur["cohorts"][0]["returned"][-1] is None
    assert eur["clv"][0]["low"] == "0.00" and eur["clv"][-1]["high"] is None


def test_before_any_refresh_the_report_is_empty(engine: Engine) -> None:
    with engine.connect() as conn:
        assert report.build(conn) == report.Report(as_of=None, currencies=())
