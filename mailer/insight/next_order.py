"""When each customer will probably order next, and how sure that is.

A customer with two or more repeat purchases has a rhythm of their own: the next order is
due the median gap after their last one, give or take the gaps' spread (1.4826 x their
median absolute deviation, about one standard deviation for regular gaps). Fewer gaps say
too little, so a one-time buyer or a customer with one repeat purchase gets the BG/NBD
population model's wait instead: given their history, how long until someone like them
buys again, between its 16% and 84% quantiles around the median. A customer who has
probably stopped buying gets no date at all.

Confidence, 0-1, is P(alive) x evidence x regularity: evidence n/(n+2) for n gaps (1/3 for
the population model, as good as one gap), regularity 1/(1 + half the window / the typical
wait: the median gap, or the population model's median wait), so a tight window around a
long wait is surer than a wide one around a short wait.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from mailer.insight.btyd import BgNbd, p_alive, wait_quantile
from mailer.insight.history import Floats, Ints, Purchases, Summary

SIGMA_PER_MAD = 1.4826  # a normal spread's standard deviation per median absolute deviation
ONE_SIGMA = (0.16, 0.84)


@dataclass(frozen=True, slots=True, kw_only=True)
class NextOrders:
    """Per customer, aligned with the summary. Days are day numbers (NaN: no prediction);
    ``basis`` says what the prediction rests on: "own rhythm", "one repeat purchase",
    "one-time buyer", or "likely lapsed" (no date)."""

    day: Floats
    earliest: Floats
    latest: Floats
    confidence: Floats
    basis: NDArray[np.str_]


def group_median(group: Ints, values: Floats, groups: int) -> Floats:
    """The median of ``values`` in each group 0..groups-1 (NaN for an empty one), by one
    sort rather than one call per customer."""
    order = np.lexsort((values, group))
    ordered = values[order]
    counts = np.bincount(group, minlength=groups)
    starts = np.cumsum(counts) - counts
    some = counts > 0
    low, high = (starts + (counts - 1) // 2)[some], (starts + counts // 2)[some]
    median = np.full(groups, np.nan)
    median[some] = (ordered[low] + ordered[high]) / 2
    return median


def own_rhythm(days: Purchases, summary: Summary) -> tuple[Floats, Floats]:
    """Each customer's median gap between purchase days and its spread (NaN without gaps)."""
    days_sorted = np.lexsort((days.day, days.customer))
    customer, day = days.customer[days_sorted], days.day[days_sorted]
    same = customer[1:] == customer[:-1]
    group = np.searchsorted(summary.customer, customer[1:][same])
    gaps = np.diff(day).astype(np.float64)[same]
    groups = len(summary.customer)
    median = group_median(group, gaps, groups)
    deviation = group_median(group, np.abs(gaps - median[group]), groups)
    return median, SIGMA_PER_MAD * deviation


def next_orders(
    days: Purchases, summary: Summary, model: BgNbd, *, today: int, min_alive: float = 0.1
) -> NextOrders:
    """Predicted next order per customer. ``days`` are the purchase days the summary was
    made from; an overdue customer's date is today, with the confidence P(alive) allows."""
    x, age = summary.frequency, summary.age
    alive = p_alive(model, x, summary.recency, age)
    gap, spread = own_rhythm(days, summary)
    rhythm = x >= 2
    early, median, late = (wait_quantile(model, x, age, q) for q in (ONE_SIGMA[0], 0.5, 0.84))
    wait = np.where(rhythm, np.maximum(summary.last_day + gap - today, 0), median)
    half_window = np.where(rhythm, np.maximum(spread, 1.0), (late - early) / 2)
    evidence = np.where(rhythm, x / (x + 2.0), 1 / 3)
    confidence = alive * evidence / (1 + half_window / np.where(rhythm, gap, median))
    day = np.where(rhythm, today + wait, today + median)
    earliest = np.where(rhythm, np.maximum(day - half_window, today), today + early)
    latest = np.where(rhythm, day + half_window, today + late)
    lapsed = alive < min_alive
    basis = np.select(
        [lapsed, rhythm, x == 1],
        ["likely lapsed", "own rhythm", "one repeat purchase"],
        "one-time buyer",
    )
    return NextOrders(
        day=np.where(lapsed, np.nan, day),
        earliest=np.where(lapsed, np.nan, earliest),
        latest=np.where(lapsed, np.nan, latest),
        confidence=np.where(lapsed, np.nan, confidence),
        basis=basis,
    )
