"""RFM scores and segments: who counts as a champion, who is new, who is lost, computed from
order arrays without a database."""

from __future__ import annotations

import numpy as np
import pytest

from mailer.core.errors import ConfigError
from mailer.insight.history import Purchases, summarise
from mailer.insight.rfm import (
    Scores,
    SegmentRule,
    SegmentsConfig,
    default_rules,
    quintiles,
    scores,
    segments,
)

TODAY = 1000


def segment_of(r: int, f: int, m: int) -> str:
    rfm = Scores(np.array([r]), np.array([f]), np.array([m]))
    return str(segments(rfm, SegmentsConfig())[0])


@pytest.mark.parametrize(
    ("r", "f", "m", "segment"),
    [
        (5, 5, 5, "champions"),
        (4, 4, 4, "champions"),
        (5, 5, 3, "loyal"),
        (3, 4, 5, "loyal"),
        (3, 1, 1, "potential"),
        (5, 2, 1, "potential"),
        (5, 1, 5, "new"),
        (4, 1, 1, "new"),
        (2, 4, 4, "can't lose"),
        (1, 5, 5, "can't lose"),
        (2, 3, 5, "at risk"),
        (1, 5, 2, "at risk"),
        (2, 2, 5, "hibernating"),
        (2, 1, 1, "hibernating"),
        (1, 2, 5, "lost"),
        (1, 1, 1, "lost"),
    ],
)
def test_each_segment_is_reached_at_its_boundaries(r: int, f: int, m: int, segment: str) -> None:
    assert segment_of(r, f, m) == segment


def test_a_mixed_population_falls_into_every_segment() -> None:
    kinds = [  # segment, days since the last order, orders, spend per order; ten of each
        ("lost", 700, 1, 5.0),
        ("can't lose", 600, 12, 90.0),
        ("at risk", 500, 6, 4.0),
        ("hibernating", 400, 1, 10.0),
        ("potential", 300, 1, 20.0),
        ("loyal", 250, 3, 10.0),
        ("loyal", 150, 9, 3.0),
        ("loyal", 100, 4, 10.0),
        ("champions", 10, 12, 90.0),
        ("new", 3, 1, 20.0),
    ]
    customer, day, spend = [], [], []
    for k, (_, since, orders, amount) in enumerate(kinds):
        for c in range(10):
            customer += [10 * k + c] * orders
            day += [TODAY - since - 10 * n - c for n in range(orders)]
            spend += [amount] * orders
    summary = summarise(Purchases(np.array(customer), np.array(day), np.array(spend)), TODAY)
    named = segments(scores(summary, TODAY), SegmentsConfig()).reshape(len(kinds), 10)
    assert [set(row) for row in named] == [{kind[0]} for kind in kinds]


def test_one_order_customers_score_frequency_one_and_land_by_recency() -> None:
    # most customers bought once: still F=1, new if lately, lost if long ago
    customer = np.array([0, 1, 2, 3, 4, 5, 5, 5])
    day = np.array([999, 990, 800, 400, 100, 500, 700, 900])
    summary = summarise(Purchases(customer, day, np.full(8, 20.0)), TODAY)
    rfm = scores(summary, TODAY)
    assert list(rfm.frequency) == [1, 1, 1, 1, 1, 5]
    named = list(segments(rfm, SegmentsConfig()))
    assert named[0] == "new" and named[4] == "lost"


def test_ties_share_a_score_and_a_lone_customer_is_in_the_middle() -> None:
    assert list(quintiles(np.array([7.0, 7.0, 7.0, 7.0, 7.0]))) == [3] * 5
    assert list(quintiles(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))) == [1, 2, 3, 4, 5]
    assert list(quintiles(np.array([1.0, 1.0, 2.0, 3.0]))) == [2, 2, 4, 5]
    assert list(quintiles(np.array([42.0]))) == [3]


def test_segment_rules_that_leave_customers_out_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[insight\] segments: 25 score combinations"):
        SegmentsConfig(rules=(SegmentRule(name="champions", recency=(2, 5)),))
    with pytest.raises(ConfigError, match="vip: score range 0-5 is not within 1-5"):
        SegmentsConfig(rules=(SegmentRule(name="vip", recency=(0, 5)), *default_rules()))
