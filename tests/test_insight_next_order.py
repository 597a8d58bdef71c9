"""A predicted next order date: from a customer's own rhythm when they have one, from the
population model when they have bought only once or twice, and none when they have left."""

from __future__ import annotations

import math

import numpy as np

from mailer.insight.btyd import BgNbd
from mailer.insight.history import Purchases, purchase_days, summarise
from mailer.insight.next_order import NextOrders, next_orders

MODEL = BgNbd(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)  # CDNOW's, in days
TODAY = 10_000
HISTORIES = {
    "regular": [TODAY - 10 - 30 * n for n in range(8)],
    "irregular": [TODAY - 10 - g for g in (0, 5, 65, 85, 175, 185, 260)],
    "one-time": [TODAY - 40],
    "twice": [TODAY - 80, TODAY - 40],
    "gone": [TODAY - 900 - 30 * n for n in range(8)],
}


def predict() -> dict[str, tuple[float, float, float, float, str]]:
    customer = [k for k, days in enumerate(HISTORIES.values()) for _ in days]
    day = [d for days in HISTORIES.values() for d in days]
    orders = Purchases(np.array(customer), np.array(day), np.full(len(day), 25.0))
    found: NextOrders = next_orders(
        purchase_days(orders), summarise(orders, TODAY), MODEL, today=TODAY
    )
    rows = zip(found.day, found.earliest, found.latest, found.confidence, found.basis, strict=True)
    return {
        name: (d, e, la, c, str(b)) for name, (d, e, la, c, b) in zip(HISTORIES, rows, strict=True)
    }


def test_a_regular_buyer_is_due_one_gap_after_their_last_order_with_confidence() -> None:
    day, earliest, latest, confidence, basis = predict()["regular"]
    assert basis == "own rhythm"
    assert day == TODAY + 20 and earliest == TODAY + 19 and latest == TODAY + 21
    assert confidence > 0.5


def test_an_irregular_buyer_gets_a_wider_window_and_less_confidence() -> None:
    found = predict()
    _, earliest, latest, confidence, basis = found["irregular"]
    assert basis == "own rhythm"
    assert latest - earliest > 30
    assert earliest >= TODAY
    assert confidence < found["regular"][3]


def test_one_time_and_twice_buyers_fall_back_to_the_population_model() -> None:
    found = predict()
    for name, basis in (("one-time", "one-time buyer"), ("twice", "one repeat purchase")):
        day, earliest, latest, confidence, said = found[name]
        assert said == basis
        assert TODAY <= earliest < day < latest
        assert 0 < confidence < found["regular"][3]


def test_a_customer_who_has_probably_left_gets_no_date() -> None:
    day, _, _, confidence, basis = predict()["gone"]
    assert basis == "likely lapsed"
    assert math.isnan(day) and math.isnan(confidence)
