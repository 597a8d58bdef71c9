"""What a template may say about a customer's purchases: ``orders`` (their recent orders
with lines), ``insight`` (the object ``mailer customers show --json`` carries) and
``recommendations`` (what customers who bought the same also bought).

Read for many customers at once, only the names a template reads, so a claim batch of a
template that uses them costs a few queries, and one that does not costs none. A customer
without orders gets ``[]``, ``None`` and ``[]``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from mailer.commerce import insights, recommendations
from mailer.commerce.insights import LINES, ORDERS
from mailer.commerce.recommendations import PRODUCTS
from mailer.core.money import from_minor
from mailer.store.models import OrderStatus

NAMES = ("orders", "insight", "recommendations")
RECENT = 5  # orders a template gets per customer, newest first


def empty(wanted: Collection[str]) -> dict[str, Any]:
    """The values of a customer with no purchases (or a stranger)."""
    nothing: dict[str, Any] = {"orders": [], "insight": None, "recommendations": []}
    return {name: nothing[name] for name in NAMES if name in wanted}


def load(
    conn: Connection, customer_ids: Sequence[int], wanted: Collection[str]
) -> dict[int, dict[str, Any]]:
    """The ``wanted`` names (of NAMES) for each of these customers."""
    ids = sorted(set(customer_ids))
    found = {i: empty(wanted) for i in ids}
    if not ids:
        return found
    if "orders" in wanted:
        for i, orders in recent_orders(conn, ids).items():
            found[i]["orders"] = orders
    if "insight" in wanted:
        for i, insight in insights.of_customers(conn, ids).items():
            found[i]["insight"] = insight
    if "recommendations" in wanted:
        for i, products in recommendations.for_customers(conn, ids).items():
            found[i]["recommendations"] = products
    return found


def recent_orders(conn: Connection, customer_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """Each customer's RECENT latest orders that were not cancelled, with their lines, in two
    queries; the total is the exact decimal text of the lines' sum in the order's currency."""
    rank = func.row_number().over(
        partition_by=ORDERS.c.customer_id, order_by=(ORDERS.c.ordered_at.desc(), ORDERS.c.id.desc())
    )
    ranked = (
        select(ORDERS, rank.label("rank"))
        .where(ORDERS.c.customer_id.in_(customer_ids), ORDERS.c.status != OrderStatus.CANCELLED)
        .subquery()
    )
    heads = conn.execute(
        select(ranked).where(ranked.c.rank <= RECENT).order_by(ranked.c.customer_id, ranked.c.rank)
    ).mappings()
    orders = {row["id"]: row for row in heads}
    lines = _lines(conn, list(orders))
    found: dict[int, list[dict[str, Any]]] = {}
    for order_id, row in orders.items():
        mine = lines.get(order_id, [])
        found.setdefault(row["customer_id"], []).append(_order(row, mine))
    return found


def _lines(conn: Connection, order_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    if not order_ids:
        return {}
    query = (
        select(LINES, PRODUCTS.c.name.label("known_name"), PRODUCTS.c.category.label("known_cat"))
        .outerjoin(PRODUCTS, PRODUCTS.c.sku == LINES.c.sku)
        .where(LINES.c.order_id.in_(order_ids))
        .order_by(LINES.c.order_id, LINES.c.line_no)
    )
    found: dict[int, list[dict[str, Any]]] = {}
    for row in conn.execute(query).mappings():
        found.setdefault(row["order_id"], []).append(dict(row))
    return found


def _order(row: Any, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """An order as a template sees it; a line's product and category are the order's own
    words, else the catalogue's, else the SKU."""
    total = sum(line["quantity"] * line["unit_price"] for line in lines)
    return {
        "id": row["order_ref"],
        "date": row["ordered_at"].astimezone(UTC),  # |date shows it on the reader's calendar
        "channel": row["channel"],
        "currency": row["currency"],
        "status": row["status"],
        "total": from_minor(total, row["currency"]),
        "lines": [
            {
                "sku": line["sku"],
                "product": line["product"] or line["known_name"] or line["sku"],
                "category": line["category"] or line["known_cat"] or "",
                "quantity": line["quantity"],
            }
            for line in lines
        ],
    }
