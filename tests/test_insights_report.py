"""The insights report on a small shop whose figures are known by hand, on SQLite and
PostgreSQL: segments, top customers, products nobody else bought, returning cohorts and
channels, each currency on its own; built by the refresh and read back as it was stored,
with its months and its last day those of the business's zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, delete, func, select

from mailer.commerce import insights, orders, refresh, report
from mailer.commerce.order_rows import Rules
from mailer.core.config import InsightSettings
from mailer.relationship import privacy

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


def stock(
    engine: Engine,
    tmp_path: Path,
    rows: str = SHOP,
    zone: ZoneInfo | None = None,
    now: datetime = NOW,
) -> None:
    """The shop's orders imported and the insight refreshed as of the end of June, both
    in the business's ``zone`` (UTC if not given)."""
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + rows, encoding="utf-8")
    rules = Rules(now=now, zone=zone or UTC, currencies=frozenset())
    assert not orders.import_csv(engine, path, rules).rejected
    refresh.run(engine, InsightSettings(), AS_OF, now, zone or UTC)


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


def test_the_refresh_stores_the_report_and_later_imports_leave_it_as_of_that_refresh(
    engine: Engine, tmp_path: Path
) -> None:
    stock(engine, tmp_path)
    with engine.connect() as conn:
        built = report.build(conn)
    later = NOW + timedelta(hours=3)
    assert report.current(engine, UTC, later) == report.Stored(
        report=built, refreshed=NOW, built_at=NOW
    )
    path = tmp_path / "more.csv"
    path.write_text(HEADER + "D1,dan@example.com,2026-06-30,MUG-2,Mug,9,25.00,,EUR,web,\n")
    assert not orders.import_csv(
        engine, path, Rules(now=later, zone=UTC, currencies=frozenset())
    ).rejected
    with engine.begin() as conn:
        assert insights.update_customers(conn, [1, 2, 3, 4, 5], later, InsightSettings()) == 5
    kept = report.current(engine, UTC, later)
    assert kept.built_at == NOW and kept.report.currencies[0].revenue == 10000  # dan not yet


def stored_reports(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(report.REPORTS)).scalar_one())


def test_without_a_stored_report_it_is_built_once_on_demand(engine: Engine, tmp_path: Path) -> None:
    stock(engine, tmp_path)
    with engine.begin() as conn:
        conn.execute(delete(report.REPORTS))  # as after the upgrade that brought the table
    first, second = NOW + timedelta(hours=1), NOW + timedelta(hours=2)
    found = report.current(engine, UTC, first)
    assert (found.refreshed, found.built_at) == (NOW, first)
    assert found.report.currencies[0].customers == 3
    assert report.current(engine, UTC, second) == found  # read, not built again
    manila = report.current(engine, ZoneInfo("Asia/Manila"), second)  # the zone changed
    assert manila.built_at == second and stored_reports(engine) == 1


def test_before_any_refresh_nothing_is_stored(engine: Engine) -> None:
    found = report.current(engine, UTC, NOW)
    nothing = report.Report(as_of=None, currencies=())
    assert found == report.Stored(report=nothing, refreshed=None, built_at=None)
    assert stored_reports(engine) == 0


@pytest.mark.parametrize(
    ("zone", "first", "again", "months"),
    [
        # just before local midnight at the end of a month: in UTC already the next
        ("America/New_York", "2026-03-31 23:30", "2026-04-30 23:30", ("2026-03", "2026-06")),
        # just after local midnight: in UTC still the month before
        ("Asia/Manila", "2026-04-01 00:30", "2026-05-01 00:30", ("2026-04", "2026-06")),
    ],
)
def test_cohort_months_and_the_last_day_are_the_business_zones(
    engine: Engine, tmp_path: Path, zone: str, first: str, again: str, months: tuple[str, ...]
) -> None:
    rows = (
        f"N1,nia@example.com,{first},BEAN-1,Beans,1,10.00,,EUR,web,\n"
        f"N2,nia@example.com,{again},BEAN-1,Beans,1,10.00,,EUR,web,\n"
        # the last evening of June, local time: on the report's last day, in July in UTC
        "O1,oli@example.com,2026-06-30 23:00,BEAN-1,Beans,3,10.00,,EUR,store,\n"
    )
    july = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    stock(engine, tmp_path, rows, ZoneInfo(zone), july)
    (eur,) = report.current(engine, ZoneInfo(zone), july).report.currencies
    assert tuple(c.month for c in eur.cohorts) == months
    assert eur.cohorts[0].returned[:2] == (1.0, 0.0)  # nia came back the month after
    assert eur.cohorts[1].returned == (None,) * report.MONTHS  # July has not begun there
    assert [(c.name, c.orders) for c in eur.channels] == [("web", 2), ("store", 1)]
    assert [(p.sku, p.revenue, p.buyers) for p in eur.products] == [("BEAN-1", 5000, 2)]


def test_a_top_customer_erased_since_the_refresh_is_not_shown_by_their_address(
    engine: Engine, tmp_path: Path
) -> None:
    stock(engine, tmp_path)
    with engine.begin() as conn:
        privacy.erase(conn, "ana@example.com", NOW)
    (eur, _) = report.current(engine, UTC, NOW).report.currencies
    assert eur.top_customers[0].email.endswith("@erased.invalid")
    assert "ana@example.com" not in {c.email for c in eur.top_customers}
