"""What customers who bought the same also bought: item-to-item collaborative filtering as
Amazon described it (Linden, Smith and York, 2003), over who bought what, not how often.

Two SKUs are alike by the cosine of their buyer sets, ``both / sqrt(buyers_a * buyers_b)``:
a plain co-buyer count would put the bestsellers next to everything, while the cosine asks
how much of each product's buyers the other one shares. A pair needs ``min_customers``
customers who bought both, so one shopper's odd basket is not a recommendation. Pure numpy
and scipy.sparse over index arrays; reading and storing are the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from mailer.insight.history import Floats, Ints

TOP = 10  # co-bought SKUs kept per SKU
MIN_CUSTOMERS = 2  # customers who bought both, for a pair to count


@dataclass(frozen=True, slots=True, kw_only=True)
class Neighbours:
    """For each kept pair, aligned: the SKU, the other SKU (indices), its rank among the
    SKU's neighbours (1 = closest), the customers who bought both, and the cosine."""

    sku: Ints
    other: Ints
    rank: Ints
    customers: Ints
    score: Floats


def neighbours(
    customer: Ints,
    sku: Ints,
    skus: int,
    *,
    top: int = TOP,
    min_customers: int = MIN_CUSTOMERS,
) -> Neighbours:
    """Each SKU's ``top`` nearest other SKUs from (customer, sku) purchase pairs (repeats
    allowed); ties go to more co-buyers, then to the lower index."""
    from scipy import sparse  # loaded when neighbours are computed, not by every command

    _, rows = np.unique(customer, return_inverse=True)
    bought = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int32), (rows, sku)),
        shape=(int(rows.max(initial=-1)) + 1, skus),
    )
    bought.data[:] = 1  # a customer counts once however often they bought the SKU
    both = (bought.T @ bought).tocoo()
    buyers = np.asarray(bought.sum(axis=0)).ravel().astype(np.float64)
    keep = (both.row != both.col) & (both.data >= min_customers)
    a, b, count = both.row[keep], both.col[keep], both.data[keep].astype(np.int64)
    score = count / np.sqrt(buyers[a] * buyers[b])
    order = np.lexsort((b, -count, -score, a))
    a, b, count, score = a[order], b[order], count[order], score[order]
    starts = np.searchsorted(a, a, side="left")
    rank = np.arange(len(a)) - starts + 1
    within = rank <= top
    return Neighbours(
        sku=a[within].astype(np.int64),
        other=b[within].astype(np.int64),
        rank=rank[within].astype(np.int64),
        customers=count[within],
        score=score[within],
    )


@dataclass(frozen=True, slots=True)
class Suggestion:
    sku: str
    score: float  # the summed cosine to what the customer bought
    because: str  # the bought SKU it is closest to


def for_customer(
    bought: Iterable[str],
    near: Mapping[str, list[tuple[str, float]]],
    limit: int,
) -> list[Suggestion]:
    """One customer's suggestions: the neighbours of what they bought, less what they
    bought, by the sum of their cosines to it (ties by SKU), each with the bought SKU it is
    closest to, so a message can say "customers who bought X also bought Y"."""
    owned = set(bought)
    total: dict[str, float] = {}
    closest: dict[str, tuple[float, str]] = {}
    for mine in sorted(owned):
        for other, score in near.get(mine, []):
            if other in owned:
                continue
            total[other] = total.get(other, 0.0) + score
            if other not in closest or score > closest[other][0]:
                closest[other] = (score, mine)
    ranked = sorted(total, key=lambda s: (-round(total[s], 12), s))[:limit]
    return [Suggestion(s, total[s], closest[s][1]) for s in ranked]
