"""Who a schedule reaches, as SQL conditions over the customers table.

Audiences are chosen by the database, never by loading customers into Python: a million
customers cost one indexed query per batch, and memory stays flat.

What customers bought is read from their orders (placed ones; cancelled orders and returns
count for nothing, an item bought and later returned still counts as bought). A value of
``bought_any``/``bought_none`` matches a line whose SKU or whose category equals it, ignoring
case. The last order's time is read from the orders too, so it is current after every import.
Everything else comes from the stored insight (``mailer insights refresh``, and after each
order import for the customers it touched): a customer without insight matches none of
those filters. Money compares in minor units only with customers whose insight currency is
the amount's. A date in ``last_order_before``/``after`` starts at 00:00 in the business's
zone (``[business_hours] timezone``), as a shop owner means a day; a duration ('90d') is
counted back from the run's planned time.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, literal, or_, select, tuple_
from sqlalchemy.engine import Connection

from mailer.commerce.insights import INSIGHTS, LINES, ORDERS
from mailer.customers.profiles import CUSTOMERS, TAGS
from mailer.outbound.outbox import OUTBOX
from mailer.scheduling.schedules import Audience, Money
from mailer.store.models import OrderStatus

C = CUSTOMERS.c
INSIGHT = INSIGHTS.c


def matches(
    audience: Audience, at: datetime | None = None, zone: tzinfo = UTC
) -> list[ColumnElement[bool]]:
    """Tags (any, all, none of), locales (a language includes its regional variants),
    custom fields, purchases and insight, for a run at ``at`` (now if not given); dates
    are days of the business's ``zone``; an empty filter does not filter."""
    found = _profile(audience) + _purchases(audience, at or datetime.now(UTC), zone)
    insight = _insight(audience)
    if insight:
        found.append(C.id.in_(select(INSIGHT.customer_id).where(*insight)))
    return found


def _profile(audience: Audience) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    if audience.tags_any:
        found.append(_tagged(audience.tags_any))
    found += [_tagged([tag]) for tag in audience.tags_all]
    if audience.exclude_tags:
        found.append(~_tagged(audience.exclude_tags))
    if audience.locales:
        found.append(or_(*(_speaks(locale) for locale in audience.locales)))
    found += [C.fields[name].as_string() == value for name, value in audience.fields.items()]
    return found


def _purchases(audience: Audience, at: datetime, zone: tzinfo) -> list[ColumnElement[bool]]:
    """Through the orders' (customer_id, ordered_at) index, one EXISTS per filter."""
    found: list[ColumnElement[bool]] = []
    if audience.bought_any:
        found.append(_bought(audience.bought_any))
    if audience.bought_none:
        found.append(~_bought(audience.bought_none))
    if audience.last_order_after is not None:
        found.append(
            placed_order(ORDERS.c.ordered_at >= _moment(audience.last_order_after, at, zone))
        )
    if audience.last_order_before is not None:
        cutoff = _moment(audience.last_order_before, at, zone)
        found += [
            placed_order(ORDERS.c.ordered_at < cutoff),
            ~placed_order(ORDERS.c.ordered_at >= cutoff),
        ]
    return found


def _insight(audience: Audience) -> list[ColumnElement[bool]]:
    """Conditions on the customer's customer_insights row (its key is the customer id)."""
    found: list[ColumnElement[bool]] = []
    if audience.rfm_segments:
        found.append(INSIGHT.rfm_segment.in_(audience.rfm_segments))
    if audience.orders_min is not None:
        found.append(INSIGHT.orders >= audience.orders_min)
    if audience.spent_min is not None:
        found.append(_at_least(INSIGHT.monetary, audience.spent_min))
    if audience.clv_min is not None:
        found.append(_at_least(INSIGHT.clv, audience.clv_min))
    if audience.active_probability_below is not None:
        found.append(INSIGHT.p_active < audience.active_probability_below)
    return found


def _at_least(column: ColumnElement[int], amount: Money) -> ColumnElement[bool]:
    return and_(INSIGHT.currency == amount.currency, column >= amount.minor)


def _moment(value: date | timedelta, at: datetime, zone: tzinfo) -> datetime:
    """The moment a filter's date begins in ``zone`` (one constant, so the orders'
    (customer_id, ordered_at) index still serves), or the duration counted back."""
    if isinstance(value, timedelta):
        return at - value
    return datetime.combine(value, time(), zone).astimezone(UTC)


def placed_order(*where: ColumnElement[bool]) -> ColumnElement[bool]:
    """The customer has a placed order meeting ``where``."""
    return (
        select(ORDERS.c.id)
        .where(ORDERS.c.customer_id == C.id, ORDERS.c.status == OrderStatus.PLACED, *where)
        .exists()
    )


def _bought(values: Collection[str]) -> ColumnElement[bool]:
    """A placed order holds a line whose SKU or category is one of ``values``, any case."""
    lowered = sorted({value.lower() for value in values})
    line = (
        select(LINES.c.order_id)
        .where(
            LINES.c.order_id == ORDERS.c.id,
            or_(func.lower(LINES.c.sku).in_(lowered), func.lower(LINES.c.category).in_(lowered)),
        )
        .exists()
    )
    return placed_order(line)


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """What one matched customer's rows say about the purchase and insight filters."""

    insight: Mapping[str, Any] | None = None
    last_order: datetime | None = None
    bought: frozenset[str] = frozenset()  # the filter values a placed order's line matched


def why(audience: Audience, seen: Evidence) -> str:
    """Why a customer meets the purchase and insight filters, e.g. "segment at risk;
    p_active 0.12 < 0.2"; "" when the audience has none."""
    row = seen.insight or {}
    found = [f"bought {', '.join(sorted(seen.bought))}"] if audience.bought_any else []
    if audience.bought_none:
        found.append(f"bought none of {', '.join(audience.bought_none)}")
    if seen.last_order is not None and (audience.last_order_before or audience.last_order_after):
        found.append(f"last order {seen.last_order:%Y-%m-%d}")
    if audience.rfm_segments:
        found.append(f"segment {row.get('rfm_segment')}")
    if audience.orders_min is not None:
        found.append(f"{row.get('orders')} orders >= {audience.orders_min}")
    for name, key, floor in (
        ("spent", "monetary", audience.spent_min),
        ("clv", "clv", audience.clv_min),
    ):
        if floor is not None and row.get(key) is not None:
            found.append(f"{name} {Money(row[key], floor.currency)} >= {floor}")
    if audience.active_probability_below is not None and row.get("p_active") is not None:
        found.append(f"p_active {row['p_active']:.2f} < {audience.active_probability_below}")
    return "; ".join(found)


def evidence(
    conn: Connection, audience: Audience, ids: Sequence[int], zone: tzinfo = UTC
) -> dict[int, Evidence]:
    """The rows ``why`` reads for these customers: at most three queries, for a chunk; the
    last order's time in the business's ``zone``, whose days the filters speak of."""
    rows: dict[int, Mapping[str, Any]] = {}
    if _insight(audience):
        query = select(INSIGHTS).where(INSIGHT.customer_id.in_(ids))
        rows = {r["customer_id"]: dict(r) for r in conn.execute(query).mappings()}
    last: dict[int, datetime] = {}
    if audience.last_order_before or audience.last_order_after:
        query = (
            select(ORDERS.c.customer_id, func.max(ORDERS.c.ordered_at))
            .where(ORDERS.c.customer_id.in_(ids), ORDERS.c.status == OrderStatus.PLACED)
            .group_by(ORDERS.c.customer_id)
        )
        last = {i: moment.astimezone(zone) for i, moment in conn.execute(query).all()}
    bought = _bought_of(conn, audience.bought_any, ids) if audience.bought_any else {}
    return {
        i: Evidence(insight=rows.get(i), last_order=last.get(i), bought=bought.get(i, frozenset()))
        for i in ids
    }


def _bought_of(
    conn: Connection, values: list[str], ids: Sequence[int]
) -> dict[int, frozenset[str]]:
    lowered = {value.lower(): value for value in values}
    query = (
        select(ORDERS.c.customer_id, func.lower(LINES.c.sku), func.lower(LINES.c.category))
        .join(LINES, LINES.c.order_id == ORDERS.c.id)
        .where(
            ORDERS.c.customer_id.in_(ids),
            ORDERS.c.status == OrderStatus.PLACED,
            or_(func.lower(LINES.c.sku).in_(lowered), func.lower(LINES.c.category).in_(lowered)),
        )
        .distinct()
    )
    found: dict[int, set[str]] = {}
    for customer, sku, category in conn.execute(query):
        found.setdefault(customer, set()).update(
            lowered[v] for v in (sku, category) if v in lowered
        )
    return {customer: frozenset(matched) for customer, matched in found.items()}


def count(conn: Connection, where: Sequence[ColumnElement[bool]]) -> int:
    """How many customers match now, by the conditions a run selects with (consent and caps
    are decided per message when it runs)."""
    query = select(func.count()).select_from(CUSTOMERS).where(*where)
    return int(conn.execute(query).scalar_one())


def in_zone(zone: str, fallback: str) -> ColumnElement[bool]:
    """Customers on ``zone``'s clock; those who never gave a zone live on the business's."""
    if zone == fallback:
        return or_(C.timezone == zone, C.timezone.is_(None))
    return C.timezone == zone


def born_on(days: Sequence[tuple[int, int]]) -> ColumnElement[bool]:
    """Birthdays on these (month, day) pairs: served by the (birth_month, birth_day) index."""
    return tuple_(C.birth_month, C.birth_day).in_(days)


def received(run_ids: Collection[int], statuses: Collection[str]) -> ColumnElement[bool]:
    """Customers with a message of these runs in one of these statuses (a webinar's
    invitees); found through the outbox's per-customer index."""
    if not run_ids:
        return false()
    return (
        select(OUTBOX.c.id)
        .where(
            OUTBOX.c.customer_id == C.id,
            OUTBOX.c.run_id.in_(run_ids),
            OUTBOX.c.status.in_(statuses),
        )
        .exists()
    )


def zones_in_use(fallback: str) -> ColumnElement[str]:
    """The zone each customer's mail is timed on, for ``SELECT DISTINCT``."""
    return func.coalesce(C.timezone, literal(fallback))


def _tagged(tags: Collection[str]) -> ColumnElement[bool]:
    return (
        select(TAGS.c.customer_id)
        .where(TAGS.c.customer_id == C.id, TAGS.c.tag.in_(sorted(tags)))
        .exists()
    )


def _speaks(locale: str) -> ColumnElement[bool]:
    language = func.lower(C.locale)
    return or_(language == locale.lower(), language.like(f"{locale.lower()}-%"))
