"""Per-customer insight kept in the database: the one module that writes customer_insights
and insight_fits.

A refresh reads every order up to a day in two set-based queries (orders with their totals,
and each customer's most-bought SKUs) into numpy arrays, fits the purchase models of
mailer.insight once, computes every customer's figures in one vectorised pass and writes them
in batches. After an order import, the customers it touched are scored the same way with the
stored models, without fitting again. Each customer's money figures are in their main
currency, the one most of their placed orders are in; their models read those orders only,
and the spend model is fitted per currency, since amounts in two currencies never add up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from math import isfinite
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Delete, Select, Table, bindparam, case, delete, func, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from mailer.core.config import InsightSettings
from mailer.core.errors import FitFailed
from mailer.core.money import from_minor
from mailer.insight import btyd, history, next_order, rfm
from mailer.insight.history import Floats, Ints, Purchases
from mailer.store import bulk
from mailer.store.db import epoch_seconds
from mailer.store.models import (
    Customer,
    CustomerInsight,
    InsightFit,
    Order,
    OrderLine,
    OrderStatus,
)

INSIGHTS: Table = CustomerInsight.__table__  # type: ignore[attr-defined]
FITS: Table = InsightFit.__table__  # type: ignore[attr-defined]
ORDERS: Table = Order.__table__  # type: ignore[attr-defined]
LINES: Table = OrderLine.__table__  # type: ignore[attr-defined]
CUSTOMERS: Table = Customer.__table__  # type: ignore[attr-defined]
COPY_FROM = 100  # rows from which COPY beats an INSERT on PostgreSQL
BASKET = 3  # SKUs in a typical basket
CENTILES = np.linspace(0, 1, 101)  # the stored score distributions an update scores against
LAST_FIT = select(FITS).order_by(FITS.c.id.desc()).limit(1)
Bools = NDArray[np.bool_]
Texts = NDArray[np.str_]


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderArrays:
    """One entry per placed or returned order up to the day, aligned."""

    customer: Ints
    day: Ints  # date.toordinal() of the order's day in the business's zone
    currency: Texts
    channel: Texts
    returned: Bools
    amount: Ints  # minor units; a return's is negative
    margin: Ints  # amount less cost, where every line has a cost
    costed: Bools  # every line has a cost


@dataclass(frozen=True, slots=True, kw_only=True)
class Fit:
    """The models the figures come from: BG/NBD over everyone (None when it could not be
    fitted), Gamma-Gamma per currency, and the score distributions of the refresh."""

    as_of: date
    purchases: btyd.BgNbd | None
    values: dict[str, btyd.GammaGamma]
    references: dict[str, list[float]]
    failure: str | None = None
    spend_failures: dict[str, str] = field(default_factory=dict)  # currency: why no model


@dataclass(kw_only=True)
class RefreshReport:
    customers: int = 0
    orders: int = 0
    recommended: int = 0  # SKUs with co-bought SKUs to recommend
    notes: list[str] = field(default_factory=list)  # what could not be fitted, one line each


def day_end(as_of: date, zone: tzinfo) -> datetime:
    """The first moment after ``as_of`` in the business's zone, in UTC."""
    return datetime.combine(as_of + timedelta(days=1), time(), zone).astimezone(UTC)


def read_orders(
    conn: Connection, as_of: date, zone: tzinfo, customers: Sequence[int] | None = None
) -> OrderArrays:
    """Every placed or returned order up to ``as_of`` (of these customers) with its total,
    in one grouped query."""
    query = _orders_query(conn.dialect.name, customers is not None)
    found = {"end": day_end(as_of, zone), "customers": list(customers or ())}
    rows = _fetched(conn, query, found)
    columns = list(zip(*rows, strict=True)) if rows else [()] * 8
    del rows  # the columns hold the same values: half the peak
    return OrderArrays(
        customer=np.array(columns[0], dtype=np.int64),
        day=local_days(np.array(columns[1], dtype=np.int64), zone),
        currency=np.array(columns[2], dtype="<U3"),
        channel=np.array(columns[3], dtype=np.str_),
        returned=np.array(columns[4], dtype=np.str_) == OrderStatus.RETURNED,
        amount=np.array(columns[5], dtype=np.int64),
        margin=np.array(columns[6], dtype=np.int64),
        costed=np.array(columns[7], dtype=np.int64) == 0,
    )


def _fetched(conn: Connection, query: Select[Any], parameters: dict[str, Any]) -> list[Any]:
    """The rows as the driver gives them: plain tuples, without SQLAlchemy making a Row of
    each (the columns read here need no conversion)."""
    result = conn.execute(query, parameters)
    try:
        return list(result.cursor.fetchall())
    finally:
        result.close()


EPOCH_DAY = date(1970, 1, 1).toordinal()


def local_days(seconds: Ints, zone: tzinfo) -> Ints:
    """The day (``date.toordinal()``) in ``zone`` of each moment, given in whole seconds
    since 1970 UTC. The zone is asked once per hour that holds any moment, and for each
    moment only in an hour where the offset changes, instead of once per order."""
    hours, inverse = np.unique(seconds // 3600, return_inverse=True)
    inverse = inverse.ravel()
    start = np.array([_offset(h * 3600, zone) for h in hours.tolist()], dtype=np.int64)
    end = np.array([_offset(h * 3600 + 3599, zone) for h in hours.tolist()], dtype=np.int64)
    shift = start[inverse]
    changing = (start != end)[inverse]
    if changing.any():
        shift[changing] = [_offset(s, zone) for s in seconds[changing].tolist()]
    days: Ints = (seconds + shift) // 86400 + EPOCH_DAY
    return days


def _offset(seconds: int, zone: tzinfo) -> int:
    """The zone's offset from UTC at this moment, in seconds."""
    offset = datetime.fromtimestamp(seconds, UTC).astimezone(zone).utcoffset()
    return 0 if offset is None else offset.days * 86400 + offset.seconds


def _before_end() -> ColumnElement[bool]:
    return ORDERS.c.ordered_at < bindparam("end", type_=ORDERS.c.ordered_at.type)


@lru_cache(maxsize=8)  # built once: building the statement cost more than running it for one
def _orders_query(dialect: str, some: bool) -> Select[Any]:
    """The orders up to ``:end`` with their totals (of the ``:customers`` if ``some``)."""
    quantity = LINES.c.quantity
    query = (
        select(
            ORDERS.c.customer_id,
            epoch_seconds(ORDERS.c.ordered_at, dialect),
            ORDERS.c.currency,
            ORDERS.c.channel,
            ORDERS.c.status,
            func.coalesce(func.sum(quantity * LINES.c.unit_price), 0),
            func.coalesce(func.sum(quantity * (LINES.c.unit_price - LINES.c.unit_cost)), 0),
            func.sum(
                case((LINES.c.order_id.is_not(None) & LINES.c.unit_cost.is_(None), 1), else_=0)
            ),
        )
        .outerjoin(LINES, LINES.c.order_id == ORDERS.c.id)
        .where(_before_end(), ORDERS.c.status != OrderStatus.CANCELLED)
        .group_by(ORDERS.c.id)
    )
    if some:
        query = query.where(bulk.any_of(ORDERS.c.customer_id, "customers", dialect))
    return query


@dataclass(frozen=True, slots=True, kw_only=True)
class BoughtLines:
    """One entry per line of a placed order up to the day, aligned; SKUs are numbered in
    sorted order, so ties rank the same on every database."""

    customer: Ints
    order: Ints
    sku: Ints  # index into ``names``
    positive: Bools  # quantity above zero
    names: list[str]


CHUNK = 100_000  # lines read at a time


def read_lines(
    conn: Connection, end: datetime, customers: Sequence[int] | None = None
) -> BoughtLines:
    """Every line of the placed orders before ``end`` (of these customers), in one query,
    read a chunk at a time as plain tuples, so a million lines never sit in memory as
    Python objects. (Not ``yield_per``: SQLAlchemy would then buffer the first rows itself,
    out of the raw cursor's reach.)"""
    query = _lines_query(conn.dialect.name, customers is not None)
    result = conn.execute(query, {"end": end, "customers": list(customers or ())})
    number: dict[str, int] = {}
    parts: list[tuple[Ints, Ints, Ints, Bools]] = []
    while chunk := result.cursor.fetchmany(CHUNK):
        customer, order, sku, quantity = zip(*chunk, strict=True)
        del chunk
        numbered = np.fromiter((number.setdefault(s, len(number)) for s in sku), np.int64)
        parts.append(
            (
                np.array(customer, dtype=np.int64),
                np.array(order, dtype=np.int64),
                numbered,
                np.array(quantity, dtype=np.int64) > 0,
            )
        )
    result.close()
    names = sorted(number)
    position = np.empty(len(names), dtype=np.int64)
    position[[number[n] for n in names]] = np.arange(len(names))
    if not parts:
        nothing = np.zeros(0, dtype=np.int64)
        return BoughtLines(
            customer=nothing, order=nothing, sku=nothing, positive=nothing > 0, names=names
        )
    columns = [np.concatenate(column) for column in zip(*parts, strict=True)]
    return BoughtLines(
        customer=columns[0],
        order=columns[1],
        sku=position[columns[2]],
        positive=columns[3],
        names=names,
    )


@lru_cache(maxsize=8)
def _lines_query(dialect: str, some: bool) -> Select[Any]:
    """(customer, order, SKU, quantity) of the lines of placed orders before ``:end`` (of
    the ``:customers`` if ``some``)."""
    query = (
        select(ORDERS.c.customer_id, LINES.c.order_id, LINES.c.sku, LINES.c.quantity)
        .join(LINES, LINES.c.order_id == ORDERS.c.id)
        .where(_before_end(), ORDERS.c.status == OrderStatus.PLACED)
    )
    if some:
        query = query.where(bulk.any_of(ORDERS.c.customer_id, "customers", dialect))
    return query


def read_baskets(
    conn: Connection, as_of: date, zone: tzinfo, customers: Sequence[int] | None = None
) -> dict[int, list[dict[str, Any]]]:
    """Each customer's most-bought SKUs (see ``baskets``)."""
    return baskets(read_lines(conn, day_end(as_of, zone), customers))


def baskets(lines: BoughtLines) -> dict[int, list[dict[str, Any]]]:
    """Each customer's BASKET most-bought SKUs, by how many placed orders hold them (ties:
    the first SKU in sorted order), by sorting the lines rather than by a windowed query."""
    if not len(lines.order):
        return {}
    by = np.lexsort((lines.sku, lines.order))
    order, sku, customer = lines.order[by], lines.sku[by], lines.customer[by]
    once = np.r_[True, (order[1:] != order[:-1]) | (sku[1:] != sku[:-1])]  # a SKU per order
    customer, sku = customer[once], sku[once]
    by = np.lexsort((sku, customer))
    customer, sku = customer[by], sku[by]
    starts = np.flatnonzero(np.r_[True, (customer[1:] != customer[:-1]) | (sku[1:] != sku[:-1])])
    orders = np.diff(np.r_[starts, len(sku)])
    customer, sku = customer[starts], sku[starts]
    by = np.lexsort((sku, -orders, customer))
    customer, sku, orders = customer[by], sku[by], orders[by]
    kept = np.arange(len(customer)) - np.searchsorted(customer, customer) < BASKET
    found: dict[int, list[dict[str, Any]]] = {}
    names = lines.names
    for c, s, n in zip(
        customer[kept].tolist(), sku[kept].tolist(), orders[kept].tolist(), strict=True
    ):
        found.setdefault(c, []).append({"sku": names[s], "orders": n})
    return found


@lru_cache(maxsize=4)
def _forget(dialect: str) -> Delete:
    """Delete the rows of the ``:customers``."""
    return delete(INSIGHTS).where(bulk.any_of(INSIGHTS.c.customer_id, "customers", dialect))


def most_used(group: Ints, groups: int, values: Texts, weight: Bools) -> Texts:
    """Each group's most frequent value among the weighted entries (ties: the first in
    sorted order); "" for a group with none."""
    names, index = np.unique(values, return_inverse=True)
    if not len(names):
        return np.full(groups, "", dtype=np.str_)
    counts = np.bincount(
        group * len(names) + index, weights=weight, minlength=groups * len(names)
    ).reshape(groups, len(names))
    chosen: Texts = np.where(counts.max(axis=1) > 0, names[counts.argmax(axis=1)], "")
    return chosen


def group_sum(group: Ints, groups: int, values: Ints, where: Bools) -> Ints:
    """Exact integer sums per group over the selected entries."""
    total = np.zeros(groups, dtype=np.int64)
    np.add.at(total, group[where], values[where])
    return total


@dataclass(frozen=True, slots=True, kw_only=True)
class Customers:
    """The per-customer view of the orders: the purchase summary of each customer's orders
    in their main currency, and what is counted over all their orders."""

    ids: Ints
    days: Purchases  # purchase days, for the next-order rhythm
    summary: history.Summary
    currency: Texts
    orders: Ints
    monetary: Ints
    margin: Ints
    costed: Bools  # every line of the customer's orders in their currency has a cost
    channel: Texts


def per_customer(orders: OrderArrays, today: int) -> Customers:
    """Group the orders by customer; a customer with only returns is left out."""
    ids, group = np.unique(orders.customer, return_inverse=True)
    n, placed = len(ids), ~orders.returned
    main = most_used(group, n, orders.currency, placed)
    in_main = orders.currency == main[group]
    events = placed & in_main
    purchases = Purchases(
        group[events], orders.day[events], orders.amount[events].astype(np.float64)
    )
    summary = history.summarise(purchases, today)
    keep = summary.customer
    uncosted = np.bincount(group[in_main & ~orders.costed], minlength=n)[keep]
    return Customers(
        ids=ids[keep],
        days=history.purchase_days(purchases),
        summary=summary,
        currency=main[keep],
        orders=np.bincount(group[placed], minlength=n)[keep],
        monetary=group_sum(group, n, orders.amount, in_main)[keep],
        margin=group_sum(group, n, orders.margin, in_main)[keep],
        costed=uncosted == 0,
        channel=most_used(group, n, orders.channel, placed)[keep],
    )


def fit(customers: Customers, as_of: date) -> Fit:
    """The models fitted to these customers; what could not be fitted is named in
    ``failure`` (BG/NBD) or ``spend_failures`` (a currency's spend model)."""
    summary, failure = customers.summary, None
    try:
        purchases: btyd.BgNbd | None = btyd.fit_bgnbd(
            summary.frequency, summary.recency, summary.age
        )
    except FitFailed as exc:
        purchases, failure = None, str(exc)
    values: dict[str, btyd.GammaGamma] = {}
    spend_failures: dict[str, str] = {}
    for currency in np.unique(customers.currency):
        mine = customers.currency == currency
        try:
            values[str(currency)] = btyd.fit_gamma_gamma(
                summary.frequency[mine], summary.mean_repeat[mine]
            )
        except FitFailed as exc:
            spend_failures[str(currency)] = str(exc)
    days_since = (as_of.toordinal() - summary.last_day).astype(np.float64)
    references = {
        "recency": -days_since,
        "frequency": summary.orders.astype(np.float64),
        **{
            f"monetary:{c}": customers.monetary[customers.currency == c].astype(np.float64)
            for c in np.unique(customers.currency)
        },
    }
    centiles = {k: [float(q) for q in np.quantile(v, CENTILES)] for k, v in references.items()}
    return Fit(
        as_of=as_of,
        purchases=purchases,
        values=values,
        references=centiles,
        failure=failure,
        spend_failures=spend_failures,
    )


Scorer = Callable[[str, Floats], Ints]


def exact_scores(name: str, values: Floats) -> Ints:
    """Quintiles among these customers themselves (a refresh)."""
    return rfm.quintiles(values)


def scores_against(fit_: Fit) -> Scorer:
    """Quintiles against the distribution stored by the last refresh (an update of a few
    customers, who cannot be ranked among themselves alone)."""

    def score(name: str, values: Floats) -> Ints:
        reference = np.asarray(fit_.references.get(name, []), dtype=np.float64)
        if not len(reference):
            return np.full(len(values), 3, dtype=np.int64)
        below = np.searchsorted(reference, values, "left") + np.searchsorted(
            reference, values, "right"
        )
        share = below / (2 * len(reference))
        scored: Ints = np.minimum(1 + np.floor(5 * share), 5).astype(np.int64)
        return scored

    return score


def rfm_scores(customers: Customers, today: int, score: Scorer) -> rfm.Scores:
    """R from days since the last order, F from purchase days (one is always F 1), M from
    the net spend, compared only with customers of the same main currency."""
    summary = customers.summary
    recency = score("recency", (summary.last_day - today).astype(np.float64))
    frequency = score("frequency", summary.orders.astype(np.float64))
    monetary = np.zeros(len(customers.ids), dtype=np.int64)
    for currency in np.unique(customers.currency):
        mine = customers.currency == currency
        monetary[mine] = score(f"monetary:{currency}", customers.monetary[mine].astype(np.float64))
    return rfm.Scores(recency, np.where(summary.orders > 1, frequency, 1), monetary)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outlook:
    p_active: Floats
    expected_orders: Floats
    clv: Floats  # NaN where the currency has no spend model


def outlook(
    fit_: Fit,
    *,
    frequency: Floats,
    recency: Floats,
    age: Floats,
    mean_repeat: Floats,
    currency: Texts,
    horizon_days: int,
) -> Outlook | None:
    """What the models expect of each customer over the horizon; None without a model."""
    model = fit_.purchases
    if model is None:
        return None
    history_ = {"frequency": frequency, "recency": recency, "age": age}
    with np.errstate(invalid="ignore", over="ignore"):  # beyond the model's range: left empty
        return _expected(model, fit_, history_, mean_repeat, currency, horizon_days)


def _expected(
    model: btyd.BgNbd,
    fit_: Fit,
    history_: dict[str, Floats],
    mean_repeat: Floats,
    currency: Texts,
    horizon_days: int,
) -> Outlook:
    worth = np.full(len(mean_repeat), np.nan)
    for code, values in fit_.values.items():
        mine = currency == code
        worth[mine] = btyd.clv(
            model,
            values,
            **{k: v[mine] for k, v in history_.items()},
            mean_value=mean_repeat[mine],
            horizon=btyd.Horizon(length=float(horizon_days)),
        )
    return Outlook(
        p_active=btyd.p_alive(model, **history_),
        expected_orders=btyd.expected_purchases(model, horizon_days, **history_),
        clv=worth,
    )


def segments_config(settings: InsightSettings) -> rfm.SegmentsConfig:
    """The configured segment rules, or the shipped ones; ConfigError if they leave a gap."""
    return _checked_rules(
        tuple(
            rfm.SegmentRule(name=name, **rule.model_dump())
            for name, rule in settings.segments.items()
        )
    )


@lru_cache(maxsize=16)  # checking the 125 score combinations costs more than updating a customer
def _checked_rules(rules: tuple[rfm.SegmentRule, ...]) -> rfm.SegmentsConfig:
    return rfm.SegmentsConfig(rules) if rules else rfm.SegmentsConfig()


def columns(
    customers: Customers,
    fit_: Fit,
    score: Scorer,
    *,
    settings: InsightSettings,
    baskets: dict[int, list[dict[str, Any]]],
    now: datetime,
) -> dict[str, list[Any]]:
    """Each customer_insights column for all these customers at once, one Python list per
    column (made from whole arrays, not element by element)."""
    summary, today, horizon = customers.summary, fit_.as_of.toordinal(), settings.horizon.days
    scores = rfm_scores(customers, today, score)
    segment = rfm.segments(scores, segments_config(settings))
    ahead = outlook(
        fit_,
        frequency=summary.frequency.astype(np.float64),
        recency=summary.recency,
        age=summary.age,
        mean_repeat=summary.mean_repeat,
        currency=customers.currency,
        horizon_days=horizon,
    )
    n, nothing = len(customers.ids), np.full(len(customers.ids), np.nan)
    model = fit_.purchases
    nexts = (
        next_order.next_orders(customers.days, summary, model, today=today)
        if model is not None
        else next_order.NextOrders(
            day=nothing,
            earliest=nothing,
            latest=nothing,
            confidence=nothing,
            basis=np.full(n, "no model fitted"),
        )
    )
    first = summary.last_day - summary.recency.astype(np.int64)
    ids = customers.ids.tolist()
    return {
        "customer_id": ids,
        "as_of": [fit_.as_of] * n,
        "updated_at": [now] * n,
        "orders": customers.orders.tolist(),
        "first_order": _dates(first.tolist()),
        "last_order": _dates(summary.last_day.tolist()),
        "recency_days": (today - summary.last_day).tolist(),
        "frequency": summary.frequency.tolist(),
        "span_days": summary.recency.astype(np.int64).tolist(),
        "age_days": summary.age.astype(np.int64).tolist(),
        "currency": customers.currency.tolist(),
        "monetary": customers.monetary.tolist(),
        "mean_repeat": summary.mean_repeat.tolist(),
        "margin": [
            m if c else None
            for m, c in zip(customers.margin.tolist(), customers.costed.tolist(), strict=True)
        ],
        "r_score": scores.recency.tolist(),
        "f_score": scores.frequency.tolist(),
        "m_score": scores.monetary.tolist(),
        "rfm_segment": segment.tolist(),
        "p_active": _optional(ahead.p_active) if ahead else [None] * n,
        "horizon_days": [horizon] * n,
        "expected_orders": _optional(ahead.expected_orders) if ahead else [None] * n,
        "clv": _rounded(ahead.clv) if ahead else [None] * n,
        "predicted_next_order": _dates(_rounded(nexts.day)),
        "next_order_confidence": _optional(nexts.confidence),
        "basis": nexts.basis.tolist(),
        "one_time_buyer": (summary.frequency == 0).tolist(),
        "preferred_channel": customers.channel.tolist(),
        "basket": [baskets.get(customer, []) for customer in ids],
    }


def _optional(values: Floats) -> list[float | None]:
    return [v if isfinite(v) else None for v in values.tolist()]


def _rounded(values: Floats) -> list[int | None]:
    return [round(v) if isfinite(v) else None for v in values.tolist()]


def _dates(days: list[int] | list[int | None]) -> list[date | None]:
    """Day numbers as dates, each distinct day made once (most customers share a few)."""
    made = {d: date.fromordinal(d) for d in set(days) if d is not None}
    return [None if d is None else made[d] for d in days]


def _write(conn: Connection, found: dict[str, list[Any]]) -> None:
    """The rows of these columns: into PostgreSQL by COPY when there are many, else by an
    INSERT; into SQLite by the driver's executemany."""
    if conn.dialect.name != "postgresql":
        bulk.insert_columns(conn, INSIGHTS, found)
    elif len(found["customer_id"]) >= COPY_FROM:
        bulk.copy_columns(conn, INSIGHTS, found)
    else:
        rows = zip(*found.values(), strict=True)
        conn.execute(insert(INSIGHTS), [dict(zip(found, row, strict=True)) for row in rows])


def store_fit(conn: Connection, fit_: Fit, customers: int, now: datetime) -> None:
    parameters: dict[str, Any] = {
        "bgnbd": None if fit_.purchases is None else vars_of(fit_.purchases),
        "gamma_gamma": {c: vars_of(v) for c, v in fit_.values.items()},
        "references": fit_.references,
    }
    conn.execute(
        insert(FITS).values(
            fitted_at=now,
            as_of=fit_.as_of,
            customers=customers,
            failure=fit_.failure and fit_.failure[:500],
            parameters=parameters,
        )
    )


def vars_of(model: btyd.BgNbd | btyd.GammaGamma) -> dict[str, float]:
    return {name: float(getattr(model, name)) for name in model.__slots__}


def last_fit(conn: Connection) -> Fit | None:
    """The models of the latest refresh, or None if there was none."""
    row = conn.execute(LAST_FIT).mappings().first()
    if row is None:
        return None
    found = row["parameters"]
    return Fit(
        as_of=row["as_of"],
        purchases=btyd.BgNbd(**found["bgnbd"]) if found["bgnbd"] else None,
        values={c: btyd.GammaGamma(**v) for c, v in found["gamma_gamma"].items()},
        references=found["references"],
        failure=row["failure"],
    )


def replace_all(conn: Connection, fitted: Fit, found: dict[str, list[Any]], now: datetime) -> None:
    """A full refresh's figures (``columns``) in place of every customer's, with the models
    they came from, in the caller's transaction."""
    store_fit(conn, fitted, len(found["customer_id"]), now)
    conn.execute(delete(INSIGHTS))
    _write(conn, found)


def update_customers(
    conn: Connection,
    customer_ids: Sequence[int],
    now: datetime,
    settings: InsightSettings,
    zone: tzinfo = UTC,
) -> int:
    """Recompute these customers' rows as of today with the stored models (nothing before
    the first refresh); returns how many rows were written."""
    fitted = last_fit(conn)
    if fitted is None or not customer_ids:
        return 0
    today = max(now.astimezone(zone).date(), fitted.as_of)
    fitted = Fit(
        as_of=today,
        purchases=fitted.purchases,
        values=fitted.values,
        references=fitted.references,
        failure=fitted.failure,
    )
    ids = sorted(set(customer_ids))
    customers = per_customer(read_orders(conn, today, zone, ids), today.toordinal())
    found = columns(
        customers,
        fitted,
        scores_against(fitted),
        settings=settings,
        baskets=read_baskets(conn, today, zone, ids),
        now=now,
    )
    conn.execute(_forget(conn.dialect.name), {"customers": ids})
    _write(conn, found)
    return len(found["customer_id"])


def update_customer(
    conn: Connection,
    customer_id: int,
    now: datetime,
    settings: InsightSettings | None = None,
    zone: tzinfo = UTC,
) -> int:
    """One customer's row again after a new order, with the stored models."""
    return update_customers(conn, [customer_id], now, settings or InsightSettings(), zone)


def export(
    conn: Connection, horizon_days: int | None = None, customer_id: int | None = None
) -> list[dict[str, Any]]:
    """The stored insight, one object per customer, money as exact decimal text in the
    customer's currency; another horizon than the stored one is computed from the stored
    models."""
    found = _stored(conn, None if customer_id is None else [customer_id])
    if found and horizon_days is not None and horizon_days != found[0]["horizon_days"]:
        _reproject(conn, found, horizon_days)
    return [shown(row) for row in found]


def of_customers(conn: Connection, customer_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """These customers' stored insight as ``export`` shows it, by customer id, in one query
    (a customer without orders has none)."""
    return {row["customer_id"]: shown(row) for row in _stored(conn, sorted(set(customer_ids)))}


def _stored(conn: Connection, customer_ids: Sequence[int] | None) -> list[dict[str, Any]]:
    query = (
        select(CUSTOMERS.c.email, INSIGHTS)
        .join(CUSTOMERS, CUSTOMERS.c.id == INSIGHTS.c.customer_id)
        .order_by(CUSTOMERS.c.email)
    )
    if customer_ids is not None:
        query = query.where(INSIGHTS.c.customer_id.in_(customer_ids))
    return [dict(row) for row in conn.execute(query).mappings()]


def _reproject(conn: Connection, found: list[dict[str, Any]], horizon_days: int) -> None:
    fitted = last_fit(conn)
    column = {
        k: np.array([r[k] for r in found], dtype=np.float64)
        for k in ("frequency", "span_days", "age_days", "mean_repeat")
    }
    ahead = (
        None
        if fitted is None
        else outlook(
            fitted,
            frequency=column["frequency"],
            recency=column["span_days"],
            age=column["age_days"],
            mean_repeat=column["mean_repeat"],
            currency=np.array([r["currency"] for r in found], dtype="<U3"),
            horizon_days=horizon_days,
        )
    )
    nothing = [None] * len(found)
    expected = _optional(ahead.expected_orders) if ahead else nothing
    worth = _rounded(ahead.clv) if ahead else nothing
    for row, orders, clv in zip(found, expected, worth, strict=True):
        row["horizon_days"] = horizon_days
        row["expected_orders"] = orders
        row["clv"] = clv


def shown(row: dict[str, Any]) -> dict[str, Any]:
    currency = row["currency"]
    money = {
        k: None if row[k] is None else from_minor(row[k], currency)
        for k in ("monetary", "margin", "clv")
    }
    hidden = {"customer_id", "updated_at", "span_days", "age_days", "mean_repeat"}
    return {k: v for k, v in row.items() if k not in hidden} | money
