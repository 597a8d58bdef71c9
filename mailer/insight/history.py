"""Orders as arrays, and the per-customer summary every model reads.

Orders on one day count as one purchase (their amounts summed): the models count purchase
occasions, and a basket split over two checkouts is still one occasion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Ints = NDArray[np.int64]
Floats = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Purchases:
    """One row per order: who, on which day (any day number, e.g. ``date.toordinal()``), and
    for how much."""

    customer: Ints
    day: Ints
    amount: Floats

    def __post_init__(self) -> None:
        if not len(self.customer) == len(self.day) == len(self.amount):
            raise ValueError(
                f"purchases: {len(self.customer)} customers, {len(self.day)} days and "
                f"{len(self.amount)} amounts; each order needs all three"
            )


def purchase_days(orders: Purchases) -> Purchases:
    """One row per customer and day, sorted by customer then day, amounts summed."""
    customer = np.asarray(orders.customer, dtype=np.int64)
    day = np.asarray(orders.day, dtype=np.int64)
    order = np.lexsort((day, customer))
    customer, day = customer[order], day[order]
    amount = np.asarray(orders.amount, dtype=np.float64)[order]
    if not customer.size:
        return Purchases(customer, day, amount)
    starts = np.flatnonzero(np.r_[True, (customer[1:] != customer[:-1]) | (day[1:] != day[:-1])])
    return Purchases(customer[starts], day[starts], np.add.reduceat(amount, starts))


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """Per customer, aligned with ``customer`` (sorted ids). ``frequency`` is repeat
    purchases (purchase days after the first), ``recency`` the days from the first purchase
    to the last, ``age`` the days from the first purchase to today: the (x, t_x, T) of the
    BG/NBD papers. ``mean_repeat`` is the mean amount of the repeat purchases only (0 with
    none), what Gamma-Gamma models; the first order is often unlike the rest."""

    customer: Ints
    orders: Ints
    frequency: Ints
    recency: Floats
    age: Floats
    last_day: Ints
    total: Floats
    mean_repeat: Floats


def summarise(orders: Purchases, today: int) -> Summary:
    """Each customer's purchase summary as of ``today``; orders after today are an error,
    since they would make a customer's age negative."""
    days = purchase_days(orders)
    if len(days.day) and int(days.day.max()) > today:
        raise ValueError(
            f"purchases: an order on day {int(days.day.max())} is after today ({today})"
        )
    customer, starts, counts = np.unique(days.customer, return_index=True, return_counts=True)
    first = days.day[starts]
    last = days.day[starts + counts - 1]
    total = np.add.reduceat(days.amount, starts) if len(starts) else np.zeros(0)
    repeat_total = total - days.amount[starts]
    frequency = counts - 1
    return Summary(
        customer=customer,
        orders=counts.astype(np.int64),
        frequency=frequency.astype(np.int64),
        recency=(last - first).astype(np.float64),
        age=(today - first).astype(np.float64),
        last_day=last,
        total=total,
        mean_repeat=np.divide(
            repeat_total, frequency, out=np.zeros_like(repeat_total), where=frequency > 0
        ),
    )
