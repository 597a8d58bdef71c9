"""Purchase histories drawn from the models themselves: known parameters in, orders out, so
a fit can be checked against the truth, and the validation has data when no real sample can
be fetched."""

from __future__ import annotations

import numpy as np

from mailer.insight.btyd import BgNbd, GammaGamma
from mailer.insight.history import Floats, Ints, Purchases


def simulate(
    purchases: BgNbd,
    values: GammaGamma,
    *,
    first_day: Ints,
    until: int,
    rng: np.random.Generator,
) -> Purchases:
    """Every order of customers 0..n-1, each first buying on their ``first_day``, up to day
    ``until``: one purchase-number at a time for all customers still buying, not one
    customer at a time."""
    n = len(first_day)
    rate = rng.gamma(purchases.r, 1 / purchases.alpha, n)
    drop = rng.beta(purchases.a, purchases.b, n)
    spend_scale = 1 / rng.gamma(values.q, 1 / values.gamma, n)
    customers: list[Ints] = [np.arange(n)]
    times: list[Floats] = [first_day.astype(np.float64)]
    now = first_day.astype(np.float64)
    buying = np.arange(n)
    while len(buying):
        now[buying] += rng.exponential(1 / rate[buying])
        buying = buying[now[buying] <= until]
        customers.append(buying)
        times.append(now[buying].copy())
        buying = buying[rng.random(len(buying)) >= drop[buying]]
    who = np.concatenate(customers)
    return Purchases(
        who, np.floor(np.concatenate(times)).astype(np.int64), rng.gamma(values.p, spend_scale[who])
    )
