"""The report marketing and owners read: who the customers are by segment, what they and
the products bring in, how many come back, and through which channels.

It is built once, at the end of each refresh, and kept as one row of insight_reports (this
module is its one writer): the page and ``mailer insights report`` read that row, so
showing it costs no more than reading it, whatever the number of orders. An order import
that brings a few customers up to date leaves it alone; it is as of the last refresh.

Amounts in two currencies are never added together, so each currency gets its own section.
Customer figures (segments, lifetime value, repeat buyers) come from the stored insight,
where each customer counts in their main currency, by a few grouped queries; order figures
come from the orders, in the currency each order was in: cohorts and channels from the
refresh's own order arrays, products from one grouped pass over the lines. Cohort months
and the cutoff are the business's zone's, like the refresh's days. Everything is as of the
refresh's day, so the order figures and the customer figures describe the same moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, tzinfo
from typing import Any

import numpy as np
from sqlalchemy import Engine, Table, case, delete, func, insert, select
from sqlalchemy.engine import Connection

from mailer.commerce.insights import (
    CUSTOMERS,
    FITS,
    INSIGHTS,
    LINES,
    ORDERS,
    Bools,
    OrderArrays,
    day_end,
    group_sum,
    read_orders,
)
from mailer.core.money import exponent, from_minor
from mailer.insight.history import Ints
from mailer.store.models import InsightReport, OrderStatus, Product

PRODUCTS: Table = Product.__table__  # type: ignore[attr-defined]
REPORTS: Table = InsightReport.__table__  # type: ignore[attr-defined]
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """The report as read back, with when the refresh it is of ran and when it was built
    (the same moment, unless it was built on demand)."""

    report: Report
    refreshed: datetime | None  # None: nothing to report yet, so nothing stored
    built_at: datetime | None


def current(engine: Engine, zone: tzinfo, now: datetime) -> Stored:
    """The report of the last refresh, read from its one row; built and stored here once
    if the refresh left none (a database from before reports were stored, or another
    business zone since)."""
    with engine.connect() as conn:
        row = _latest(conn)
        fitted, refreshed = conn.execute(
            select(FITS.c.id, FITS.c.fitted_at).order_by(FITS.c.id.desc()).limit(1)
        ).first() or (None, None)
        if row is not None and row.fit_id == fitted and row.timezone == str(zone):
            found = addressed(conn, decoded(row.report))
            return Stored(report=found, refreshed=refreshed, built_at=row.built_at)
    if fitted is None:
        return Stored(report=Report(as_of=None, currencies=()), refreshed=None, built_at=None)
    with engine.begin() as conn:
        return Stored(report=rebuild(conn, zone, now), refreshed=refreshed, built_at=now)


def addressed(conn: Connection, report: Report) -> Report:
    """The top customers under their addresses of today: one erased since the refresh is
    shown as erased, not under the address they asked us to forget."""
    ids = {c.customer_id for part in report.currencies for c in part.top_customers}
    emails = dict(
        conn.execute(select(CUSTOMERS.c.id, CUSTOMERS.c.email).where(CUSTOMERS.c.id.in_(ids))).all()
    )
    return replace(
        report,
        currencies=tuple(
            replace(
                part,
                top_customers=tuple(
                    replace(c, email=emails.get(c.customer_id, "")) for c in part.top_customers
                ),
            )
            for part in report.currencies
        ),
    )


def _latest(conn: Connection) -> Any:
    return conn.execute(select(REPORTS).order_by(REPORTS.c.id.desc()).limit(1)).first()


def rebuild(
    conn: Connection, zone: tzinfo, now: datetime, orders: OrderArrays | None = None
) -> Report:
    """Build the report of the last refresh and keep it as the one stored row, in the
    caller's transaction (the refresh's own, so the page never sees new figures with an
    old report); ``orders`` are the refresh's, read again when not given."""
    fitted = conn.execute(select(FITS.c.id).order_by(FITS.c.id.desc()).limit(1)).scalar()
    found = build(conn, zone, orders)
    conn.execute(delete(REPORTS))
    conn.execute(
        insert(REPORTS).values(
            fit_id=fitted,
            as_of=found.as_of,
            timezone=str(zone),
            report=encoded(found),
            built_at=now,
        )
    )
    return found


def encoded(report: Report) -> dict[str, Any]:
    """The report as JSON, every figure as it is (minor units, unrounded shares)."""
    found = asdict(report)
    found["as_of"] = report.as_of and report.as_of.isoformat()
    return found


PARTS: dict[str, Any] = {
    "segments": Segment,
    "top_customers": TopCustomer,
    "clv": Bucket,
    "products": ProductRow,
    "cohorts": Cohort,
    "channels": Channel,
}


def decoded(found: dict[str, Any]) -> Report:
    """The report ``encoded`` stored, equal to the one built."""
    return Report(
        as_of=found["as_of"] and date.fromisoformat(found["as_of"]),
        currencies=tuple(
            CurrencyReport(
                **part
                | {
                    name: tuple(kind(**_tupled(row)) for row in part[name])
                    for name, kind in PARTS.items()
                }
            )
            for part in found["currencies"]
        ),
    )


def _tupled(row: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in row.items()}


def build(conn: Connection, zone: tzinfo = UTC, orders: OrderArrays | None = None) -> Report:
    """The whole report as of the last refresh's day: orders after it (in the business's
    ``zone``) are left out, so every figure describes the same moment. ``orders`` are that
    refresh's, read again when not given."""
    as_of = conn.execute(select(FITS.c.as_of).order_by(FITS.c.id.desc()).limit(1)).scalar()
    if as_of is None:
        return Report(as_of=None, currencies=())
    if orders is None:
        orders = read_orders(conn, as_of, zone)
    end = day_end(as_of, zone)
    counts = conn.execute(
        select(INSIGHTS.c.currency, func.count())
        .group_by(INSIGHTS.c.currency)
        .order_by(func.count().desc(), INSIGHTS.c.currency)
    ).all()
    products = _products(conn, [code for code, _ in counts], orders, end)
    return Report(
        as_of=as_of,
        currencies=tuple(
            _currency(conn, code, count, orders, products.get(code, ()), _month_of(as_of))
            for code, count in counts
        ),
    )


def _currency(
    conn: Connection,
    currency: str,
    customers: int,
    orders: OrderArrays,
    products: tuple[ProductRow, ...],
    last_month: int,
) -> CurrencyReport:
    segments = _segments(conn, currency)
    repeat = conn.execute(
        select(func.count()).where(INSIGHTS.c.currency == currency, INSIGHTS.c.frequency > 0)
    ).scalar_one()
    clv, unknown = _clv(conn, currency)
    mine = orders.currency == currency
    return CurrencyReport(
        currency=currency,
        customers=customers,
        revenue=sum(s.revenue for s in segments),
        repeat_rate=repeat / customers,
        segments=segments,
        top_customers=_top_customers(conn, currency),
        clv=clv,
        clv_unknown=unknown,
        products=products,
        cohorts=_cohorts(orders, mine & ~orders.returned, last_month),
        channels=_channels(orders, mine),
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


def _products(
    conn: Connection, currencies: Sequence[str], orders: OrderArrays, end: datetime
) -> dict[str, tuple[ProductRow, ...]]:
    """Each currency's best-selling products by revenue, from one grouped pass over the
    lines; then the buyers of those shown only: counting distinct buyers of a few products
    is far cheaper than of every product."""
    revenue = func.sum(LINES.c.quantity * LINES.c.unit_price)
    sold = conn.execute(
        select(ORDERS.c.currency, LINES.c.sku, revenue)
        .join(ORDERS, ORDERS.c.id == LINES.c.order_id)
        .where(ORDERS.c.ordered_at < end, ORDERS.c.status != OrderStatus.CANCELLED)
        .group_by(ORDERS.c.currency, LINES.c.sku)
    ).all()
    top: dict[str, list[tuple[str, int]]] = {code: [] for code in currencies}
    for code, sku, money in sorted(sold, key=lambda row: (row[0], -int(row[2]), row[1])):
        if len(top.get(code, ())) < TOP:
            top[code].append((sku, int(money)))
    skus = {sku for shown in top.values() for sku, _ in shown}
    buyers: dict[tuple[str, str], int] = {
        (code, sku): count
        for code, sku, count in conn.execute(
            select(ORDERS.c.currency, LINES.c.sku, func.count(func.distinct(ORDERS.c.customer_id)))
            .join(ORDERS, ORDERS.c.id == LINES.c.order_id)
            .where(
                ORDERS.c.ordered_at < end,
                ORDERS.c.status == OrderStatus.PLACED,
                LINES.c.sku.in_(skus),
            )
            .group_by(ORDERS.c.currency, LINES.c.sku)
        )
    }
    names: dict[str, str] = dict(
        conn.execute(select(PRODUCTS.c.sku, PRODUCTS.c.name).where(PRODUCTS.c.sku.in_(skus))).all()
    )
    placed = ~orders.returned
    found: dict[str, tuple[ProductRow, ...]] = {}
    for code, shown in top.items():
        every = len(np.unique(orders.customer[placed & (orders.currency == code)]))
        found[code] = tuple(
            ProductRow(
                sku=sku,
                name=names.get(sku, ""),
                revenue=money,
                buyers=buyers.get((code, sku), 0),
                never_bought=every - buyers.get((code, sku), 0),
            )
            for sku, money in shown
        )
    return found


EPOCH = date(1970, 1, 1).toordinal()
SPAN = 1 << 20  # more months than any customer id is multiplied past


def _month_of(day: date) -> int:
    """year * 12 + month - 1, so that months subtract."""
    return day.year * 12 + day.month - 1


def _months(days: Ints) -> Ints:
    """The months of these date ordinals, all at once."""
    since: Ints = (days - EPOCH).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    return since + _month_of(date(1970, 1, 1))


def _cohorts(orders: OrderArrays, placed: Bools, last_month: int) -> tuple[Cohort, ...]:
    """Per first-order month, how many customers ordered again in each following month;
    months are the business's, as the refresh's days are."""
    pairs = np.unique(orders.customer[placed] * SPAN + _months(orders.day[placed]))
    customer, month = pairs // SPAN, pairs % SPAN  # by customer, then month
    _, start, inverse = np.unique(customer, return_index=True, return_inverse=True)
    first = month[start][inverse]
    after = month - first
    kept = (after <= MONTHS) & (first > last_month - COHORTS)
    cells, counts = np.unique(first[kept] * (MONTHS + 1) + after[kept], return_counts=True)
    table: dict[int, dict[int, int]] = {}
    for cell, count in zip(cells.tolist(), counts.tolist(), strict=True):
        table.setdefault(cell // (MONTHS + 1), {})[cell % (MONTHS + 1)] = count
    return tuple(
        Cohort(
            month=f"{start // 12}-{start % 12 + 1:02d}",
            customers=seen[0],
            returned=tuple(
                _share(seen.get(k, 0), seen[0]) if start + k <= last_month else None
                for k in range(1, MONTHS + 1)
            ),
        )
        for start, seen in sorted(table.items())
    )


def _channels(orders: OrderArrays, mine: Bools) -> tuple[Channel, ...]:
    """Orders and revenue (returns netted) per channel, most orders first."""
    names, index = np.unique(orders.channel[mine], return_inverse=True)
    counts = np.bincount(index, minlength=len(names)).tolist()
    totals = group_sum(index, len(names), orders.amount[mine], np.ones(len(index), bool)).tolist()
    orders_ = sum(counts)
    found = sorted(zip(names.tolist(), counts, totals, strict=True), key=lambda r: (-r[1], r[0]))
    return tuple(
        Channel(name=name or "(none)", orders=n, revenue=total, share=_share(n, orders_))
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
