"""``/orders``: record what customers bought, as an order import does, idempotent by the
shop's order id: the same order sent again changes nothing, and one that says something
else than the stored one is refused (409) with nothing of the call kept.

Each line is checked by ``commerce.order_rows`` (the CSV import's checks) and stored by
``commerce.orders``; a problem is named by the order's index and the field, down to the
line (``/2/lines/0/unit_price``).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.config import JsonDict

from mailer.api.access import ApiState, caller, state
from mailer.api.batches import BATCH_MAX, Address, OneOrBatch
from mailer.api.bodies import JsonRoute
from mailer.api.keys import ApiKey, Scope
from mailer.api.problems import FieldError, Invalid, conflict, item_error
from mailer.commerce import order_rows, orders
from mailer.commerce.order_rows import (
    LIMITS,
    MAX_QUANTITY,
    ORDER_STATUSES,
    Draft,
    LineRow,
    Rejected,
    Rules,
)
from mailer.core.money import MAX_MINOR
from mailer.customers.csv_rows import InvalidRow

router = APIRouter(prefix="/orders", tags=["orders"], route_class=JsonRoute)
# an order's columns as the API names them; a line's are named as in the CSV
HEAD = {"order_ref": "order_id", "email": "email", "ordered_at": "ordered_at"}
HEAD |= {c: c for c in ("currency", "status", "channel")}
# what the import reads as an amount (``money.to_minor``): never negative, a decimal point
# or comma; the document says it so a client need not learn it from a 422. The bound is
# every currency's, three-decimal ones (BHD) included.
_AMOUNT = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_MINOR // 1000},
        {"type": "string", "pattern": r"^\s*\d{1,9}(?:[.,]\d*)?\s*$"},
    ]
}


def _given(longest: int) -> JsonDict:
    """What the document says of a text the import requires: something in it besides
    spaces and control characters (which the import clears), and its limit."""
    return {"pattern": r"[^\s\x00-\x1f\x7f-\x9f]", "maxLength": longest}


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(json_schema_extra=_given(LIMITS["sku"]))
    product: str = Field(json_schema_extra=_given(LIMITS["product"]))
    category: str = Field("", json_schema_extra={"maxLength": LIMITS["category"]})
    quantity: int = Field(
        1,
        description="negative in a returned order: what came back; never 0",
        json_schema_extra={
            "minimum": -MAX_QUANTITY,
            "maximum": MAX_QUANTITY,
            "not": {"const": 0},
        },
    )
    unit_price: Annotated[Decimal, WithJsonSchema(_AMOUNT)] = Field(
        description="in the currency's units, e.g. 12.90; no more decimals than it has"
    )
    unit_cost: Annotated[Decimal | None, WithJsonSchema({"anyOf": [_AMOUNT, {"type": "null"}]})] = (
        None
    )


class OrderIn(BaseModel):
    """One order of the shop with its lines."""

    # a line comes back (a negative quantity) only in a returned order
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"status": {"const": "returned"}}, "required": ["status"]},
            "else": {
                "properties": {"lines": {"items": {"properties": {"quantity": {"minimum": 1}}}}}
            },
        },
    )

    order_id: str = Field(
        description="the shop's; sending it again is safe",
        json_schema_extra=_given(LIMITS["order_ref"]),
    )
    email: Address
    ordered_at: str = Field(
        description="2024-03-01, 2024-03-01T14:30:00+02:00 (no offset: the business's zone);"
        " not in the future",
        examples=["2024-03-01T14:30:00+02:00"],
    )
    currency: str = Field(
        "",
        description="ISO 4217, one the company sells in ([company] currencies); may be left"
        " out when it names one",
        json_schema_extra={"pattern": "^([A-Za-z]{3})?$"},
        examples=["EUR"],
    )
    channel: str = Field("", json_schema_extra={"maxLength": LIMITS["channel"]})
    status: str = Field(
        "placed",
        description="placed, returned or cancelled (paid, refunded, void and the like are"
        " read as one of them)",
        json_schema_extra={"enum": list(ORDER_STATUSES)},
    )
    lines: list[LineIn] = Field(min_length=1, max_length=BATCH_MAX)


Orders = OneOrBatch[OrderIn]


class OrdersResult(BaseModel):
    added: int = Field(description="orders stored by this call")
    unchanged: int = Field(description="orders stored before, with the same content")
    lines: int = Field(description="lines of the orders added")
    customers_added: int = Field(description="addresses not known before, added as leads")


def _cells(order: OrderIn, line: LineIn) -> dict[str, str]:
    return {
        "order_ref": order.order_id,
        "email": order.email,
        "ordered_at": order.ordered_at,
        "currency": order.currency,
        "channel": order.channel,
        "status": order.status,
        "sku": line.sku,
        "product": line.product,
        "category": line.category,
        "quantity": str(line.quantity),
        "unit_price": str(line.unit_price),
        "unit_cost": "" if line.unit_cost is None else str(line.unit_cost),
    }


def _numbered(items: list[OrderIn]) -> Iterator[tuple[int, int, int, LineIn]]:
    """(line number, order index, line index, line), numbered from 1 across the call."""
    number = 0
    for i, order in enumerate(items):
        for j, line in enumerate(order.lines):
            number += 1
            yield number, i, j, line


def _field(column: str, line: int) -> str:
    return HEAD.get(column) or f"lines.{line}.{column}"


def _drafts(items: list[OrderIn], single: bool, rules: Rules) -> list[Draft]:
    """Every order checked whole; Invalid names each problem, once, by order and field."""
    at = {n: (i, j) for n, i, j, _ in _numbered(items)}
    where = (lambda i: None) if single else (lambda i: i)
    errors: dict[tuple[int | None, str], FieldError] = {}
    first: dict[str, int] = {}
    for i, order in enumerate(items):
        seen = first.setdefault(order.order_id, i)
        if seen != i:
            errors[(i, "order_id")] = item_error(i, "order_id", f"order {seen} has this id too")
    rows: list[LineRow | tuple[str, order_rows.BadLine]] = []
    for n, i, j, line in _numbered(items):
        try:
            rows.append(order_rows.parse_row(n, _cells(items[i], line), rules))
        except InvalidRow as exc:
            for column, text in exc.problems.items():
                name = _field(column, j)
                errors.setdefault((where(i), name), item_error(where(i), name, text))
    if errors:
        raise Invalid(list(errors.values()))
    drafts = list(order_rows.orders(rows))
    bad = [
        item_error(where(at[b.line][0]), _field("quantity", at[b.line][1]), b.reason)
        for r in drafts
        if isinstance(r, Rejected)
        for b in r.problems
    ]
    if bad:
        raise Invalid(bad)
    return [d for d in drafts if isinstance(d, Draft)]


def _rules(api: ApiState) -> Rules:
    settings = api.cfg.settings
    return Rules(
        now=api.clock.now(),
        zone=settings.business_hours.timezone,
        currencies=frozenset(settings.company.get("currencies", [])),
    )


@router.post(
    "", response_model=OrdersResult, summary="Record orders", responses=conflict("an order")
)
def record(
    request: Request,
    body: Annotated[Orders, Body()],
    key: Annotated[ApiKey, Depends(caller(Scope.ORDERS_WRITE))],
) -> OrdersResult:
    """One order or a list of up to 1,000. All are stored or, when any is invalid or
    conflicts with a stored order of the same id, none."""
    single = isinstance(body, OrderIn)
    items = [body] if isinstance(body, OrderIn) else body
    api = state(request)
    rules = _rules(api)
    drafts = _drafts(items, single, rules)
    index = {order.order_id: i for i, order in enumerate(items)}
    report = orders.ImportReport()
    with api.engine.begin() as conn:
        orders.add(conn, drafts, rules, f"api:{key.name}", report, api.cfg.settings.insight)
        if report.rejected:  # stored before with other content: nothing of the call is kept
            conflicts = [
                item_error(None if single else index[r.order_ref], "order_id", b.reason)
                for r in report.rejected
                for b in r.problems
            ]
            raise Invalid(conflicts, 409, "orders with these ids were stored with other content")
    return OrdersResult(
        added=report.added,
        unchanged=report.unchanged,
        lines=report.lines,
        customers_added=report.customers_added,
    )
