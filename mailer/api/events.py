"""``/events``: what the shop saw its customers do (viewed_product, cart_abandoned, ...),
kept on each customer's timeline as an inbound touch named by the event.

One event or a list of up to 1,000, all stored or, when any is invalid, none, each problem
named by the item's index and field. An address not known yet becomes a lead, as an order
makes one; an event with the caller's ``id`` is kept once per customer, so a call sent again
after a timeout stores nothing twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from mailer.api.access import caller, state
from mailer.api.batches import Address, OneOrBatch
from mailer.api.bodies import JsonRoute
from mailer.api.keys import ApiKey, Scope
from mailer.api.problems import FieldError, Invalid, conflict, item_error
from mailer.core import jsonvalues
from mailer.core.fieldtypes import EVENT_NAME, UtcMoment
from mailer.customers import events
from mailer.customers.csv_rows import normalise_email

PAYLOAD_MAX = 8192  # bytes of an event's payload as compact JSON: a timeline entry, not a store
router = APIRouter(prefix="/events", tags=["events"], route_class=JsonRoute)


class EventIn(BaseModel):
    """Something a customer did in the shop. Its payload is JSON as the standard has it:
    NaN and Infinity, which some encoders write, are refused rather than stored and printed
    back as JSON no other reader takes."""

    model_config = ConfigDict(extra="forbid")

    email: Address
    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=EVENT_NAME,
        description="lower case, digits and _ . : -",
        examples=["viewed_product", "cart_abandoned", "order_placed"],
    )
    occurred_at: UtcMoment | None = Field(
        None, description="with its offset, e.g. 2024-03-01T14:30:00+02:00; left out: now"
    )
    payload: dict[str, Any] = Field(
        default_factory=dict, description=f"any JSON object, at most {PAYLOAD_MAX} bytes"
    )
    id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="the caller's id: the same event sent again is stored once",
    )

    @field_validator("payload")
    @classmethod
    def _small(cls, payload: dict[str, Any]) -> dict[str, Any]:
        size = len(jsonvalues.standard_text(payload).encode())
        if size > PAYLOAD_MAX:
            raise ValueError(f"the payload is {size} bytes as JSON; at most {PAYLOAD_MAX} are kept")
        return payload


Events = OneOrBatch[EventIn]


class EventsResult(BaseModel):
    added: int = Field(description="events stored by this call")
    unchanged: int = Field(description="events with an id stored before for the customer")
    customers_added: int = Field(description="addresses not known before, added as leads")


def drafts(items: list[EventIn], single: bool, now: datetime) -> list[events.Draft]:
    """Every event checked; Invalid names each bad one by index and field. An event in the
    future is refused: a clock that is wrong would put it on top of every timeline."""
    where = (lambda i: None) if single else (lambda i: i)
    errors: list[FieldError] = []
    found: list[events.Draft] = []
    first: dict[tuple[str, str], int] = {}
    for i, item in enumerate(items):
        try:
            email = normalise_email(item.email)
        except ValueError as exc:
            errors.append(item_error(where(i), "email", str(exc)))
            continue
        at = item.occurred_at or now
        if at > now:
            errors.append(item_error(where(i), "occurred_at", f"{at.isoformat()} is in the future"))
        if item.id is not None and first.setdefault((email, item.id), i) != i:
            seen = first[(email, item.id)]
            errors.append(item_error(where(i), "id", f"event {seen} has this id too"))
        found.append(
            events.Draft(
                email=email, name=item.name, occurred_at=at, payload=item.payload, ref=item.id
            )
        )
    if errors:
        raise Invalid(errors)
    return found


@router.post(
    "",
    response_model=EventsResult,
    summary="Record customer events",
    responses=conflict("an event"),
)
def record(
    request: Request,
    body: Annotated[Events, Body()],
    key: Annotated[ApiKey, Depends(caller(Scope.EVENTS_WRITE))],
) -> EventsResult:
    """One event or a list of up to 1,000, shown on each customer's timeline. All are
    stored or, when any is invalid or its id was stored with other content, none."""
    items = [body] if isinstance(body, EventIn) else body
    api = state(request)
    now = api.clock.now()
    single = isinstance(body, EventIn)
    checked = drafts(items, single, now)
    report = _stored(api.engine, checked, now, f"api:{key.name}", single)
    return EventsResult(
        added=report.added, unchanged=report.unchanged, customers_added=report.customers_added
    )


def _stored(
    engine: Engine, checked: list[events.Draft], now: datetime, source: str, single: bool
) -> events.Recorded:
    """Recorded in one transaction, tried once more if a concurrent call added one of the
    same new addresses first (the second try finds it)."""
    try:
        return _record(engine, checked, now, source, single)
    except IntegrityError:
        return _record(engine, checked, now, source, single)


def _record(
    engine: Engine, checked: list[events.Draft], now: datetime, source: str, single: bool
) -> events.Recorded:
    with engine.begin() as conn:
        report = events.record(conn, checked, now, source)
        if report.conflicts:  # raised inside the transaction: nothing of the call is kept
            raise Invalid(
                [_conflict(checked[i], None if single else i) for i in report.conflicts],
                409,
                "events with these ids were stored with other content",
            )
        return report


def _conflict(draft: events.Draft, index: int | None) -> FieldError:
    return item_error(
        index,
        "id",
        f"event {draft.ref!r} of {draft.email} was stored before with another name, time or"
        " payload; send it with a new id",
    )
