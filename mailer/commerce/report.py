"""The report marketing and owners read: who the customers are by segment, what they and
the products bring in, how many come back, and through which channels.

Every figure is computed in the database by a handful of grouped queries, one set per
currency: amounts in two currencies are never added together, so each currency gets its own
section. Customer figures (segments, lifetime value, repeat buyers) come from the stored
insight, where each customer counts in their main currency; order figures (products,
cohorts, channels) come from the orders themselves, in the currency each order was in.
Cohort months are calendar months in UTC. Everything is as of the day of the stored
insight, so the order figures and the customer figures describe the same moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from sqlalchemy import Table, and_, case, extract, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from mailer.commerce.insights import CUSTOMERS, INSIGHTS, LINES, ORDERS, day_end
from mailer.core.money import exponent, from_minor
from mailer.store.models import OrderStatus, Product

PRODUCTS: Table = Product.__table__  # type: ignore[attr-defined]
TOP = 10  # customers and products listed
COHORTS = 12  # first-order months shown, the latest
MONTHS = 6  # months after the first order followed
CLV_EDGES = (0, 10, 25, 50, 100, 250, 500, 1000)  # bucket floors, in major units


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    name: str
    customers: int
    revenue: int  # minor units, net of returns
    margin: int  # minor units, of the customers whose every cost is known
    revenue_share: float
    margin_share: float | None  # None: no margin known in this currency


@dataclass(frozen=True, slots=True, kw_only=True)
class TopCustomer:
    customer_id: int
    email: str
    revenue: int
    orders: int
    segment: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Bucket:
    low: int  # minor units; the last bucket has no upper bound
    high: int | None
    customers: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProductRow:
    sku: str
    name: str
    revenue: int
    buyers: int
    never_bought: int  # the currency's buyers who never bought it


@dataclass(frozen=True, slots=True, kw_only=True)
class Cohort:
    month: str  # YYYY-MM of the first order
    customers: int
    returned: tuple[float | None, ...]  # share ordering again in months +1..; None: not yet


@dataclass(frozen=True, slots=True, kw_only=True)
class Channel:
    name: str
    orders: int
    revenue: int
    share: float  # of the currency's orders


@dataclass(frozen=True, slots=True, kw_only=True)
class CurrencyReport:
    currency: str
    customers: int  # whose main currency this is
    revenue: int
    repeat_rate: float  # share of those customers who bought on more than one day
    segments: tuple[Segment, ...]
    top_customers: tuple[TopCustomer, ...]
    clv: tuple[Bucket, ...]
    clv_unknown: int  # customers without a lifetime value (no model)
    products: tuple[ProductRow, ...]
    cohorts: tuple[Cohort, ...]
    channels: tuple[Channel, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    as_of: date | None  # of the insight; None before the first refresh
    currencies: tuple[CurrencyReport, ...]  # the one with most customers first


def build(conn: Connection, zone: tzinfo = UTC) -> Report:
    """The whole report as of the stored insight's day: orders after it (in the business's
    ``zone``) are left out, so every figure describes the same moment."""
    as_of = conn.execute(select(func.max(INSIGHTS.c.as_of))).scalar()
    if as_of is None:
        return Report(as_of=None, currencies=())
    until = Until(month=as_of.year * 12 + as_of.month - 1, end=day_end(as_of, zone))
    counts = conn.execute(
        select(INSIGHTS.c.currency, func.count())
        .group_by(INSIGHTS.c.currency)
        .order_by(func.count().desc(), INSIGHTS.c.currency)
    ).all()
    return Report(
        as_of=as_of, currencies=tuple(_currency(conn, code, count, until) for code, count in counts)
    )


@dataclass(frozen=True, slots=True)
class Until:
    """The last month counted (year * 12 + month - 1) and the moment orders stop counting."""

    month: int
    end: datetime


def _currency(conn: Connection, currency: str, customers: int, until: Until) -> CurrencyReport:
    segments = _segments(conn, currency)
    repeat = conn.execute(
        select(func.count()).where(INSIGHTS.c.currency == currency, INSIGHTS.c.frequency > 0)
    ).scalar_one()
    clv, unknown = _clv(conn, currency)
    return CurrencyReport(
        currency=currency,
        customers=customers,
        revenue=sum(s.revenue for s in segments),
        repeat_rate=repeat / customers,
        segments=segments,
        top_customers=_top_customers(conn, currency),
        clv=clv,
        clv_unknown=unknown,
        products=_products(conn, currency, until.end),
        cohorts=_cohorts(conn, currency, until),
        channels=_channels(conn, currency, until.end),
    )


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _segments(conn: Connection, currency: str) -> tuple[Segment, ...]:
    found = conn.execute(
        select(
            INSIGHTS.c.rfm_segment,
            func.count(),
            func.sum(INSIGHTS.c.monetary),
            func.coalesce(func.sum(INSIGHTS.c.margin), 0),
            func.count(INSIGHTS.c.margin),
        )
        .where(INSIGHTS.c.currency == currency)
        .group_by(INSIGHTS.c.rfm_segment)
        .order_by(func.sum(INSIGHTS.c.monetary).desc(), INSIGHTS.c.rfm_segment)
    ).all()
    revenue = sum(int(r[2]) for r in found)
    margin, costed = sum(int(r[3]) for r in found), sum(r[4] for r in found)
    return tuple(
        Segment(
            name=name,
            customers=count,
            revenue=int(money),
            margin=int(kept),
            revenue_share=_share(int(money), revenue),
            margin_share=_share(int(kept), margin) if costed else None,
        )
        for name, count, money, kept, _ in found
    )


def _top_customers(conn: Connection, currency: str) -> tuple[TopCustomer, ...]:
    found = conn.execute(
        select(
            INSIGHTS.c.customer_id,
            CUSTOMERS.c.email,
            INSIGHTS.c.monetary,
            INSIGHTS.c.orders,
            INSIGHTS.c.rfm_segment,
        )
        .join(CUSTOMERS, CUSTOMERS.c.id == INSIGHTS.c.customer_id)
        .where(INSIGHTS.c.currency == currency)
        .order_by(INSIGHTS.c.monetary.desc(), CUSTOMERS.c.email)
        .limit(TOP)
    ).all()
    return tuple(
        TopCustomer(customer_id=i, email=e, revenue=int(m), orders=o, segment=s)
        for i, e, m, o, s in found
    )


def _clv(conn: Connection, currency: str) -> tuple[tuple[Bucket, ...], int]:
    """How many customers' lifetime value falls in each bucket (below zero counts in the
    first), and how many have none."""
    unit = 10 ** exponent(currency)
    floors = [edge * unit for edge in CLV_EDGES]
    value = INSIGHTS.c.clv
    index = case(
        *((value < floor, n - 1) for n, floor in enumerate(floors[1:], 1)), else_=len(floors) - 1
    )
    counts: dict[int, int] = dict(
        conn.execute(
            select(index, func.count())
            .where(INSIGHTS.c.currency == currency, value.is_not(None))
            .group_by(index)
        ).all()
    )
    unknown = conn.execute(
        select(func.count()).where(INSIGHTS.c.currency == currency, value.is_(None))
    ).scalar_one()
    highs: list[int | None] = [*floors[1:], None]
    buckets = tuple(
        Bucket(low=low, high=high, customers=counts.get(n, 0))
        for n, (low, high) in enumerate(zip(floors, highs, strict=True))
    )
    return buckets, unknown


def _counted(currency: str, end: datetime, *statuses: str) -> ColumnElement[bool]:
    """The currency's orders before ``end`` of these statuses (default: placed or returned)."""
    status = ORDERS.c.status.in_(statuses) if statuses else ORDERS.c.status != OrderStatus.CANCELLED
    return and_(ORDERS.c.currency == currency, ORDERS.c.ordered_at < end, status)


def _products(conn: Connection, currency: str, end: datetime) -> tuple[ProductRow, ...]:
    """The best-selling products by revenue, then their buyers: counting distinct buyers
    of the few products shown is far cheaper than of every product."""
    placed = _counted(currency, end, OrderStatus.PLACED)
    buyers_all = conn.execute(
        select(func.count(func.distinct(ORDERS.c.customer_id))).where(placed)
    ).scalar_one()
    revenue = func.sum(LINES.c.quantity * LINES.c.unit_price)
    top = conn.execute(
        select(LINES.c.sku, revenue)
        .join(ORDERS, ORDERS.c.id == LINES.c.order_id)
        .where(_counted(currency, end))
        .group_by(LINES.c.sku)
        .order_by(revenue.desc(), LINES.c.sku)
        .limit(TOP)
    ).all()
    skus = [sku for sku, _ in top]
    buyers: dict[str, int] = dict(
        conn.execute(
            select(LINES.c.sku, func.count(func.distinct(ORDERS.c.customer_id)))
            .join(ORDERS, ORDERS.c.id == LINES.c.order_id)
            .where(placed, LINES.c.sku.in_(skus))
            .group_by(LINES.c.sku)
        ).all()
    )
    names: dict[str, str] = dict(
        conn.execute(select(PRODUCTS.c.sku, PRODUCTS.c.name).where(PRODUCTS.c.sku.in_(skus))).all()
    )
    return tuple(
        ProductRow(
            sku=sku,
            name=names.get(sku, ""),
            revenue=int(money),
            buyers=buyers.get(sku, 0),
            never_bought=buyers_all - buyers.get(sku, 0),
        )
        for sku, money in top
    )


def _month(column: Any) -> ColumnElement[int]:
    months: ColumnElement[int] = extract("year", column) * 12 + extract("month", column) - 1
    return months


def _cohorts(conn: Connection, currency: str, until: Until) -> tuple[Cohort, ...]:
    """Per first-order month, how many customers ordered again in each following month."""
    months = (
        select(ORDERS.c.customer_id, _month(ORDERS.c.ordered_at).label("month"))
        .where(_counted(currency, until.end, OrderStatus.PLACED))
        .distinct()
        .subquery()
    )
    first = (
        select(months.c.customer_id, func.min(months.c.month).label("first"))
        .group_by(months.c.customer_id)
        .subquery()
    )
    offset = months.c.month - first.c.first
    found = conn.execute(
        select(first.c.first, offset, func.count())
        .join(first, first.c.customer_id == months.c.customer_id)
        .where(offset <= MONTHS, first.c.first > until.month - COHORTS)
        .group_by(first.c.first, offset)
    ).all()
    table: dict[int, dict[int, int]] = {}
    for start, after, count in found:
        table.setdefault(int(start), {})[int(after)] = count
    return tuple(
        Cohort(
            month=f"{start // 12}-{start % 12 + 1:02d}",
            customers=seen[0],
            returned=tuple(
                _share(seen.get(k, 0), seen[0]) if start + k <= until.month else None
                for k in range(1, MONTHS + 1)
            ),
        )
        for start, seen in sorted(table.items())
    )


def _channels(conn: Connection, currency: str, end: datetime) -> tuple[Channel, ...]:
    per_order = (
        select(
            ORDERS.c.id,
            ORDERS.c.channel,
            func.coalesce(func.sum(LINES.c.quantity * LINES.c.unit_price), 0).label("total"),
        )
        .outerjoin(LINES, LINES.c.order_id == ORDERS.c.id)
        .where(_counted(currency, end))
        .group_by(ORDERS.c.id, ORDERS.c.channel)
        .subquery()
    )
    found = conn.execute(
        select(per_order.c.channel, func.count(), func.sum(per_order.c.total))
        .group_by(per_order.c.channel)
        .order_by(func.count().desc(), per_order.c.channel)
    ).all()
    orders = sum(r[1] for r in found)
    return tuple(
        Channel(name=name or "(none)", orders=n, revenue=int(total), share=_share(n, orders))
        for name, n, total in found
    )


def shown(report: Report) -> dict[str, Any]:
    """The report as JSON: money as exact decimal text in its currency, shares as
    fractions rounded to four places."""
    return {
        "as_of": report.as_of.isoformat() if report.as_of else None,
        "currencies": [_shown_currency(c) for c in report.currencies],
    }


MONEY = frozenset({"revenue", "margin", "low", "high"})


def _plain(record: Any, currency: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in record.__slots__:
        value = getattr(record, name)
        if name in MONEY and value is not None:
            value = from_minor(value, currency)
        elif isinstance(value, float):
            value = round(value, 4)
        elif isinstance(value, tuple):
            value = [round(v, 4) if isinstance(v, float) else v for v in value]
        found[name] = value
    return found


def _shown_currency(part: CurrencyReport) -> dict[str, Any]:
    code = part.currency
    lists = ("segments", "top_customers", "clv", "products", "cohorts", "channels")
    head = {k: v for k, v in _plain(part, code).items() if k not in lists}
    return head | {name: [_plain(r, code) for r in getattr(part, name)] for name in lists}
