"""The insight columns, made from whole arrays, hold exactly what reading each customer's
figures one at a time from the arrays gives (the way the rows were first made), on a
generated book of customers: one-time buyers, returns, uncosted lines, two currencies, a
lapsed tail, and a currency without a spend model."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from mailer.commerce import insights
from mailer.core.config import InsightSettings
from mailer.insight import btyd, next_order, rfm
from mailer.insight.simulate import simulate

AS_OF = date(2026, 6, 30)
NOW = datetime(2026, 7, 1, 9, tzinfo=UTC)


def _orders(seed: int, customers: int = 3000) -> insights.OrderArrays:
    rng = np.random.default_rng(seed)
    today = AS_OF.toordinal()
    bought = simulate(
        btyd.BgNbd(r=0.6, alpha=40.0, a=0.8, b=2.5),
        btyd.GammaGamma(p=6.0, q=4.0, gamma=15.0),
        first_day=today - rng.integers(1, 700, customers),
        until=today,
        rng=rng,
    )
    n = len(bought.customer)
    returned = rng.random(n) < 0.05
    amount = np.round(bought.amount * 100).astype(np.int64)
    currency = np.where(bought.customer % 7 == 0, "USD", "EUR")
    currency[bought.customer == 5] = "GBP"  # a currency of one customer: no spend model
    return insights.OrderArrays(
        customer=bought.customer + 1,
        day=bought.day,
        currency=currency.astype("<U3"),
        channel=np.where(rng.random(n) < 0.3, "store", "web"),
        returned=returned,
        amount=np.where(returned, -amount, amount),
        margin=amount // 3,
        costed=rng.random(n) < 0.9,
    )


def _one_at_a_time(
    customers: insights.Customers, fit_: insights.Fit, baskets: dict[int, Any]
) -> list[dict[str, Any]]:
    """The rows as they were made before: every figure read from the arrays by index."""
    settings, summary = InsightSettings(), customers.summary
    today, horizon = fit_.as_of.toordinal(), settings.horizon.days
    scores = insights.rfm_scores(customers, today, insights.exact_scores)
    segment = rfm.segments(scores, insights.segments_config(settings))
    seen = {"recency": summary.recency, "age": summary.age, "mean_repeat": summary.mean_repeat}
    frequency = summary.frequency.astype(np.float64)
    ahead = insights.outlook(
        fit_, frequency=frequency, currency=customers.currency, horizon_days=horizon, **seen
    )
    assert ahead is not None and fit_.purchases is not None
    nexts = next_order.next_orders(customers.days, summary, fit_.purchases, today=today)
    first = summary.last_day - summary.recency.astype(np.int64)

    def optional(values: Any, i: int) -> float | None:
        value = float(values[i])
        return value if np.isfinite(value) else None

    def rounded(values: Any, i: int) -> int | None:
        value = optional(values, i)
        return None if value is None else round(value)

    return [
        {
            "customer_id": int(customers.ids[i]),
            "as_of": fit_.as_of,
            "updated_at": NOW,
            "orders": int(customers.orders[i]),
            "first_order": date.fromordinal(int(first[i])),
            "last_order": date.fromordinal(int(summary.last_day[i])),
            "recency_days": today - int(summary.last_day[i]),
            "frequency": int(summary.frequency[i]),
            "span_days": int(summary.recency[i]),
            "age_days": int(summary.age[i]),
            "currency": str(customers.currency[i]),
            "monetary": int(customers.monetary[i]),
            "mean_repeat": float(summary.mean_repeat[i]),
            "margin": int(customers.margin[i]) if customers.costed[i] else None,
            "r_score": int(scores.recency[i]),
            "f_score": int(scores.frequency[i]),
            "m_score": int(scores.monetary[i]),
            "rfm_segment": str(segment[i]),
            "p_active": optional(ahead.p_active, i),
            "horizon_days": horizon,
            "expected_orders": optional(ahead.expected_orders, i),
            "clv": rounded(ahead.clv, i),
            "predicted_next_order": (
                None if (day := rounded(nexts.day, i)) is None else date.fromordinal(day)
            ),
            "next_order_confidence": optional(nexts.confidence, i),
            "basis": str(nexts.basis[i]),
            "one_time_buyer": bool(summary.frequency[i] == 0),
            "preferred_channel": str(customers.channel[i]),
            "basket": baskets.get(int(customers.ids[i]), []),
        }
        for i in range(len(customers.ids))
    ]


@pytest.mark.parametrize("seed", [1, 2])
def test_the_columns_hold_each_customers_figures_exactly(seed: int) -> None:
    customers = insights.per_customer(_orders(seed), AS_OF.toordinal())
    fitted = insights.fit(customers, AS_OF)
    assert fitted.purchases is not None and "GBP" not in fitted.values
    baskets = {int(c): [{"sku": f"S{c % 9}", "orders": 2}] for c in customers.ids[::3]}
    found = insights.columns(
        customers,
        fitted,
        insights.exact_scores,
        settings=InsightSettings(),
        baskets=baskets,
        now=NOW,
    )
    rows = [dict(zip(found, row, strict=True)) for row in zip(*found.values(), strict=True)]
    expected = _one_at_a_time(customers, fitted, baskets)
    assert len(rows) == len(expected) > 2000
    for got, want in zip(rows, expected, strict=True):
        assert got == want
        assert [type(v) for v in got.values()] == [type(v) for v in want.values()]
    assert any(r["clv"] is None for r in rows) and any(r["margin"] is None for r in rows)
    assert any(r["predicted_next_order"] is None for r in rows)


@pytest.mark.parametrize(
    "zone", ["UTC", "Europe/Sofia", "America/St_Johns", "Australia/Lord_Howe", "Asia/Kathmandu"]
)
def test_local_days_are_each_moments_day_in_the_zone(zone: str) -> None:
    """Asked once per hour, the zone still gives each moment its own day, across DST
    changes at odd minutes (St John's changed at 00:01 until 2011) and half-hour ones."""
    tz = ZoneInfo(zone)
    rng = np.random.default_rng(7)
    seconds = np.concatenate(
        [rng.integers(0, 2_000_000_000, 20_000), np.arange(1_130_000_000, 1_310_000_000, 1201)]
    )
    expected = [
        datetime.fromtimestamp(s, UTC).astimezone(tz).date().toordinal() for s in seconds.tolist()
    ]
    assert insights.local_days(seconds, tz).tolist() == expected


def test_baskets_count_orders_not_lines_and_break_ties_by_sku() -> None:
    """An order counts once for a SKU however many of its lines hold it; no lines, no
    baskets."""
    lines = insights.BoughtLines(
        customer=np.array([1, 1, 1, 1, 1, 2], dtype=np.int64),
        order=np.array([10, 10, 11, 11, 12, 20], dtype=np.int64),
        sku=np.array([2, 2, 1, 2, 0, 3], dtype=np.int64),
        positive=np.ones(6, dtype=bool),
        names=["A", "B", "C", "D"],
    )
    assert insights.baskets(lines) == {
        1: [{"sku": "C", "orders": 2}, {"sku": "A", "orders": 1}, {"sku": "B", "orders": 1}],
        2: [{"sku": "D", "orders": 1}],
    }
    nothing = np.zeros(0, dtype=np.int64)
    empty = insights.BoughtLines(
        customer=nothing, order=nothing, sku=nothing, positive=nothing > 0, names=[]
    )
    assert insights.baskets(empty) == {}
