"""Who the purchase schedules (reorder, winback, after_purchase) write to on a day, and
once per what.

Each runs daily at its local ``send_at`` like a birthday; the occurrence is the customers'
local date. Who is due is decided by the plain functions below and selected in SQL by the
same rule, from the stored insight (``mailer insights refresh``, and after each order
import for the customers it touched) and the orders:

- ``reorder``: a customer whose predicted next order falls from today to ``lead`` ahead. Not
  after the predicted day has passed: a customer who is late is winback's, not a reminder's.
- ``winback``: a customer with an order whose active probability is below ``below``.
- ``after_purchase``: a customer with a placed order (not cancelled, not a return) on the
  local day ``after`` before today, with a line in ``categories`` when given.

Reorder and winback are once per purchase cycle: the message key carries the last order
day of the insight (``reorder:42:cycle-2026-11-02``), so the daily runs that keep selecting
a customer add nothing, and a new order starts a new cycle that may be written again.
after_purchase is once per customer and order day (``thanks:42:order-2026-11-28``), so an
edited ``after`` never thanks for the same day twice. A message that is throttled until it
expires uses up its cycle: the mail is at most once, never more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, String, cast, func, literal, select
from sqlalchemy.engine import Connection

from mailer.commerce.insights import INSIGHTS, LINES, ORDERS
from mailer.customers.profiles import CUSTOMERS
from mailer.scheduling import audience
from mailer.scheduling.schedules import (
    AfterPurchaseSchedule,
    PurchaseSchedule,
    ReorderSchedule,
)
from mailer.store.models import OrderStatus

INSIGHT = INSIGHTS.c
Explain = Callable[[Connection, Sequence[int]], Mapping[int, str]]


# Decisions: who is due on a day, and why, in words a marketer reads in a dry run.


def reorder_due(predicted: date | None, day: date, lead: timedelta) -> bool:
    """Due from ``lead`` before the predicted next order up to that day itself."""
    first, last = reorder_window(day, lead)
    return predicted is not None and first <= predicted <= last


def reorder_window(day: date, lead: timedelta) -> tuple[date, date]:
    """The predicted next-order dates that are due on ``day`` (both ends included)."""
    return day, day + timedelta(days=lead.days)


def winback_due(p_active: float | None, orders: int, below: float) -> bool:
    """A buyer the model thinks is likely gone; no model figure, no guess."""
    return orders >= 1 and p_active is not None and p_active < below


def ordered_on(day: date, after: timedelta) -> date:
    """The order day thanked for on ``day``."""
    return day - timedelta(days=after.days)


def local_day(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants a day spans on a zone's clock: [start, end)."""
    start = datetime.combine(day, time(), zone)
    end = datetime.combine(day + timedelta(days=1), time(), zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def reorder_why(predicted: date, day: date) -> str:
    """ "predicted next order 2026-12-09, 7 days ahead"."""
    ahead = (predicted - day).days
    when = "today" if ahead == 0 else f"{_days(ahead)} ahead"
    return f"predicted next order {predicted.isoformat()}, {when}"


def winback_why(p_active: float, below: float, last_order: date) -> str:
    return f"p_active {p_active:.2f} < {below}; last order {last_order.isoformat()}"


def after_purchase_why(refs: Sequence[str], ordered: date, day: date) -> str:
    return f"ordered {ordered.isoformat()} ({', '.join(refs)}), {_days((day - ordered).days)} ago"


def _days(count: int) -> str:
    return f"{count} day" if count == 1 else f"{count} days"


# The same rules as SQL, for the fan-out: one statement per customer range, no Python loop.


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """What a purchase schedule adds to a run's plan on one local day in one zone."""

    who: list[ColumnElement[bool]]
    once_per: ColumnElement[str]
    repeat: str
    context: dict[str, Any]
    explain: Explain


def select_for(schedule: PurchaseSchedule, day: date, zone: ZoneInfo, dialect: str) -> Selection:
    """The customers due on ``day`` (the zone's customers are chosen by the caller)."""
    if isinstance(schedule, AfterPurchaseSchedule):
        return _after_purchase(schedule, day, zone)
    if isinstance(schedule, ReorderSchedule):
        first, last = reorder_window(day, schedule.lead)
        due = [INSIGHT.predicted_next_order >= first, INSIGHT.predicted_next_order <= last]
        explain = _explain_reorder(day)
    else:
        due = [INSIGHT.orders >= 1, INSIGHT.p_active < schedule.below]
        explain = _explain_winback(schedule.below)
    return Selection(
        who=[CUSTOMERS.c.id.in_(select(INSIGHT.customer_id).where(*due))],
        once_per=_cycle(dialect),
        repeat="written before in this purchase cycle",
        context={},
        explain=explain,
    )


def _cycle(dialect: str) -> ColumnElement[str]:
    """ "cycle-" and the customer's last order day from the insight, as ISO text."""
    last = INSIGHT.last_order
    text = func.to_char(last, "YYYY-MM-DD") if dialect == "postgresql" else cast(last, String)
    of_customer = select(text).where(INSIGHT.customer_id == CUSTOMERS.c.id)
    day = of_customer.correlate(CUSTOMERS).scalar_subquery()  # also inside a dry run's EXISTS
    return literal("cycle-").concat(day)


def _after_purchase(schedule: AfterPurchaseSchedule, day: date, zone: ZoneInfo) -> Selection:
    ordered = ordered_on(day, schedule.after)
    where = _orders_of_day(ordered, zone, schedule.categories)

    def explain(conn: Connection, ids: Sequence[int]) -> dict[int, str]:
        query = select(ORDERS.c.customer_id, ORDERS.c.order_ref).where(
            ORDERS.c.customer_id.in_(ids), ORDERS.c.status == OrderStatus.PLACED, *where
        )
        refs: dict[int, list[str]] = {}
        for customer, ref in conn.execute(query.order_by(ORDERS.c.order_ref)):
            refs.setdefault(customer, []).append(ref)
        return {c: after_purchase_why(found, ordered, day) for c, found in refs.items()}

    return Selection(
        who=[audience.placed_order(*where)],
        once_per=literal(f"order-{ordered.isoformat()}"),
        repeat="written before for this order day",
        context={"ordered_on": ordered.isoformat()},
        explain=explain,
    )


def _orders_of_day(
    ordered: date, zone: ZoneInfo, categories: Sequence[str]
) -> list[ColumnElement[bool]]:
    """Conditions on an order: placed on that local day, with a line in ``categories``."""
    start, end = local_day(ordered, zone)
    where = [ORDERS.c.ordered_at >= start, ORDERS.c.ordered_at < end]
    if categories:
        lowered = sorted({category.lower() for category in categories})
        line = select(LINES.c.order_id).where(
            LINES.c.order_id == ORDERS.c.id, func.lower(LINES.c.category).in_(lowered)
        )
        where.append(line.exists())
    return where


def _explain_reorder(day: date) -> Explain:
    def explain(conn: Connection, ids: Sequence[int]) -> dict[int, str]:
        query = select(INSIGHT.customer_id, INSIGHT.predicted_next_order).where(
            INSIGHT.customer_id.in_(ids), INSIGHT.predicted_next_order.is_not(None)
        )
        return {c: reorder_why(predicted, day) for c, predicted in conn.execute(query)}

    return explain


def _explain_winback(below: float) -> Explain:
    def explain(conn: Connection, ids: Sequence[int]) -> dict[int, str]:
        query = select(INSIGHT.customer_id, INSIGHT.p_active, INSIGHT.last_order).where(
            INSIGHT.customer_id.in_(ids), INSIGHT.p_active.is_not(None)
        )
        return {c: winback_why(p, below, last) for c, p, last in conn.execute(query)}

    return explain
