"""What customers who bought the same also bought: the one module that writes
product_recommendations.

The full insight refresh reads who bought which SKU in one distinct query, finds each SKU's
nearest other SKUs (mailer.insight.cobought) and replaces the table. A customer's
recommendations are then read for many customers at once at send time: the neighbours of
what they bought, less what they bought, with the catalogue's name and category.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
from sqlalchemy import Table, delete, insert, select
from sqlalchemy.engine import Connection

from mailer.insight import cobought
from mailer.store.models import Order, OrderLine, OrderStatus, Product, ProductRecommendation

RECOMMENDATIONS: Table = ProductRecommendation.__table__  # type: ignore[attr-defined]
PRODUCTS: Table = Product.__table__  # type: ignore[attr-defined]
ORDERS: Table = Order.__table__  # type: ignore[attr-defined]
LINES: Table = OrderLine.__table__  # type: ignore[attr-defined]
SHOWN = 5  # recommendations a template gets per customer
BATCH = 5000


def _bought(
    conn: Connection, upto: datetime | None = None, customers: Sequence[int] | None = None
) -> Any:
    """Distinct (customer, SKU) pairs of placed orders, before ``upto`` when given."""
    query = (
        select(ORDERS.c.customer_id, LINES.c.sku)
        .join(LINES, LINES.c.order_id == ORDERS.c.id)
        .where(ORDERS.c.status == OrderStatus.PLACED, LINES.c.quantity > 0)
        .distinct()
    )
    if upto is not None:
        query = query.where(ORDERS.c.ordered_at < upto)
    if customers is not None:
        query = query.where(ORDERS.c.customer_id.in_(customers))
    return conn.execute(query)


def refresh(conn: Connection, as_of: date, upto: datetime) -> int:
    """Replace every SKU's co-bought SKUs from the placed orders before ``upto`` (the end
    of the day ``as_of``); returns how many SKUs have any."""
    result = _bought(conn, upto)
    pairs = result.cursor.fetchall()  # plain tuples: an int and a str need no conversion
    result.close()
    customer = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
    names, sku = np.unique(np.array([p[1] for p in pairs], dtype=np.str_), return_inverse=True)
    found = cobought.neighbours(customer, sku.astype(np.int64), len(names))
    rows = [
        {
            "sku": str(names[a]),
            "rank": int(r),
            "other_sku": str(names[b]),
            "customers": int(c),
            "score": float(s),
            "as_of": as_of,
        }
        for a, b, r, c, s in zip(
            found.sku, found.other, found.rank, found.customers, found.score, strict=True
        )
    ]
    conn.execute(delete(RECOMMENDATIONS))
    for start in range(0, len(rows), BATCH):
        conn.execute(insert(RECOMMENDATIONS), rows[start : start + BATCH])
    return len(np.unique(found.sku))


def for_customers(
    conn: Connection, customer_ids: Sequence[int], limit: int = SHOWN
) -> dict[int, list[dict[str, Any]]]:
    """Each customer's recommended products (sku, product, category, score, and the bought
    ``because_sku`` / ``because_product`` it goes with), in three queries for them all;
    a customer with none gets []."""
    ids = sorted(set(customer_ids))
    bought: dict[int, set[str]] = {i: set() for i in ids}
    for customer_id, sku in _bought(conn, customers=ids) if ids else []:
        bought[customer_id].add(sku)
    skus = sorted(set().union(*bought.values())) if ids else []
    near: dict[str, list[tuple[str, float]]] = {}
    query = select(RECOMMENDATIONS).where(RECOMMENDATIONS.c.sku.in_(skus))
    for row in (
        conn.execute(query.order_by(RECOMMENDATIONS.c.sku, RECOMMENDATIONS.c.rank)) if skus else []
    ):
        near.setdefault(row.sku, []).append((row.other_sku, row.score))
    chosen = {i: cobought.for_customer(bought[i], near, limit) for i in ids}
    named = _catalogue(conn, {s.sku for found in chosen.values() for s in found} | set(skus))
    return {i: [_shown(s, named) for s in found] for i, found in chosen.items()}


def _catalogue(conn: Connection, skus: set[str]) -> dict[str, tuple[str, str]]:
    if not skus:
        return {}
    query = select(PRODUCTS.c.sku, PRODUCTS.c.name, PRODUCTS.c.category)
    return {
        r.sku: (r.name, r.category) for r in conn.execute(query.where(PRODUCTS.c.sku.in_(skus)))
    }


def _shown(found: cobought.Suggestion, named: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """A recommendation as a template sees it; a SKU the catalogue lacks goes by its SKU."""
    name, category = named.get(found.sku, ("", ""))
    return {
        "sku": found.sku,
        "product": name or found.sku,
        "category": category,
        "score": round(found.score, 4),
        "because_sku": found.because,
        "because_product": named.get(found.because, ("", ""))[0] or found.because,
    }
