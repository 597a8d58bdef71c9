"""What customers who bought the same also bought: the one module that writes
product_recommendations.

The full insight refresh reads who bought which SKU in one query, finds each SKU's
nearest other SKUs (mailer.insight.cobought) and replaces the table. A customer's
recommendations are then read for many customers at once at send time: the neighbours of
what they bought, less what they bought, with the catalogue's name and category.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.engine import Connection, CursorResult

from mailer.commerce import insights
from mailer.insight import cobought
from mailer.store.models import Order, OrderLine, OrderStatus, Product, ProductRecommendation

RECOMMENDATIONS: Table = ProductRecommendation.__table__  # type: ignore[attr-defined]
PRODUCTS: Table = Product.__table__  # type: ignore[attr-defined]
ORDERS: Table = Order.__table__  # type: ignore[attr-defined]
LINES: Table = OrderLine.__table__  # type: ignore[attr-defined]
SHOWN = 5  # recommendations a template gets per customer
BATCH = 5000  # rows to an INSERT


def _bought(conn: Connection, customers: Sequence[int]) -> CursorResult[Any]:
    """(customer, SKU) of every line of these customers' placed orders; repeats are left
    to the reader, which is cheaper than sorting them away in the database."""
    query = (
        select(ORDERS.c.customer_id, LINES.c.sku)
        .join(LINES, LINES.c.order_id == ORDERS.c.id)
        .where(ORDERS.c.status == OrderStatus.PLACED, LINES.c.quantity > 0)
        .where(ORDERS.c.customer_id.in_(customers))
    )
    return conn.execute(query)


def learn(
    conn: Connection, as_of: date, upto: datetime, lines: insights.BoughtLines | None = None
) -> list[dict[str, Any]]:
    """Every SKU's co-bought SKUs from the placed orders before ``upto`` (the end of the
    day ``as_of``), as product_recommendations rows; from ``lines`` when the caller has
    read them (``insights.read_lines`` up to ``upto``), else read here."""
    bought = lines if lines is not None else insights.read_lines(conn, upto)
    names = bought.names
    found = cobought.neighbours(
        bought.customer[bought.positive], bought.sku[bought.positive], len(names)
    )
    return [
        {
            "sku": names[a],
            "rank": int(r),
            "other_sku": names[b],
            "customers": int(c),
            "score": float(s),
            "as_of": as_of,
        }
        for a, b, r, c, s in zip(
            found.sku, found.other, found.rank, found.customers, found.score, strict=True
        )
    ]


def store(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Replace the table with ``rows`` (from ``learn``); returns how many SKUs have any."""
    conn.execute(delete(RECOMMENDATIONS))
    for start in range(0, len(rows), BATCH):
        conn.execute(insert(RECOMMENDATIONS), rows[start : start + BATCH])
    return len({row["sku"] for row in rows})


def for_customers(
    conn: Connection, customer_ids: Sequence[int], limit: int = SHOWN
) -> dict[int, list[dict[str, Any]]]:
    """Each customer's recommended products (sku, product, category, score, and the bought
    ``because_sku`` / ``because_product`` it goes with), in three queries for them all;
    a customer with none gets []."""
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    bought: dict[int, set[str]] = {i: set() for i in ids}
    for row in _bought(conn, ids):
        bought[row.customer_id].add(row.sku)
    near = _neighbours(conn, sorted(set().union(*bought.values())))
    chosen = {i: cobought.for_customer(bought[i], near, limit) for i in ids}
    shown = {sku for found in chosen.values() for s in found for sku in (s.sku, s.because)}
    named = _catalogue(conn, shown)
    return {i: [_shown(s, named) for s in found] for i, found in chosen.items()}


def _neighbours(conn: Connection, skus: list[str]) -> dict[str, list[tuple[str, float]]]:
    """The stored co-bought SKUs of these, closest first, with their scores."""
    near: dict[str, list[tuple[str, float]]] = {}
    if not skus:
        return near
    query = select(RECOMMENDATIONS.c.sku, RECOMMENDATIONS.c.other_sku, RECOMMENDATIONS.c.score)
    query = query.where(RECOMMENDATIONS.c.sku.in_(skus))
    for sku, other, score in conn.execute(
        query.order_by(RECOMMENDATIONS.c.sku, RECOMMENDATIONS.c.rank)
    ):
        near.setdefault(sku, []).append((other, score))
    return near


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
