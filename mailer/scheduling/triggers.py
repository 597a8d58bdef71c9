"""Which customer events an ``event`` schedule answers on a pass, as plain rules and as SQL.

An event named ``event`` (cart_abandoned) that occurred at T is due once T + ``delay`` has
passed, for ``valid_for`` after that (a daemon down longer lets it go, like any schedule),
and never if it occurred before mailer first saw the schedule or before it was resumed: a
new schedule does not write about a year of old carts. It is cancelled by an event named in
``unless`` (order_placed) that the same customer has after T, up to the moment the mail is
queued: a customer who ordered is not reminded of the cart, even if the reminder is late.

Each scheduler pass selects every due, uncancelled event in one ``INSERT ... SELECT``
through the (name, occurred_at) index, however many there are. The message key
``SCHEDULE:CUSTOMER:event-ID`` makes each event's mail exactly once, across passes,
restarts and processes; once queued, a later order_placed does not take it back.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, ColumnElement, String, cast, func, literal, select, type_coerce

from mailer.core import jsonvalues
from mailer.customers.events import EVENTS
from mailer.customers.profiles import CUSTOMERS

E = EVENTS.c
LATER = EVENTS.alias("later")


@dataclass(frozen=True, slots=True, kw_only=True)
class Trigger:
    """What a pass of an event schedule looks for."""

    event: str
    unless: tuple[str, ...]
    delay: timedelta
    valid_for: timedelta
    since: datetime | None  # no event before it fires (first seen, resumed); None: no bound


# Decisions.


def window(trigger: Trigger, now: datetime) -> tuple[datetime, datetime]:
    """The times of events due at ``now``, both ends included: old enough for ``delay``,
    not so old that ``valid_for`` ran out, and not before ``since``."""
    last = now - trigger.delay
    first = last - trigger.valid_for
    if trigger.since is not None:
        first = max(first, trigger.since)
    return first, last


def cancelled_by(
    occurred_at: datetime, later: Collection[tuple[str, datetime]], unless: Collection[str]
) -> str | None:
    """The name of the first of the customer's events after ``occurred_at`` that cancels it."""
    after = sorted((at, name) for name, at in later if name in unless and at > occurred_at)
    return after[0][1] if after else None


def why(name: str, occurred_at: datetime, event_id: int) -> str:
    """ "cart_abandoned 2026-11-24 12:00 UTC (event 17)", for a dry run."""
    return f"{name} {occurred_at:%Y-%m-%d %H:%M} UTC (event {event_id})"


# The same rules as SQL over customer_events (joined with customers by the caller).


def due(trigger: Trigger, now: datetime) -> list[ColumnElement[bool]]:
    """The events due now, through the (name, occurred_at) index."""
    first, last = window(trigger, now)
    return [E.name == trigger.event, E.occurred_at >= first, E.occurred_at <= last]


def cancelled(trigger: Trigger) -> ColumnElement[bool]:
    """The customer has a cancelling event after this one (through (customer_id,
    occurred_at)); events are never stored in the future, so "after" ends now."""
    if not trigger.unless:
        return literal(False)
    return (
        select(LATER.c.id)
        .where(
            LATER.c.customer_id == E.customer_id,
            LATER.c.name.in_(trigger.unless),
            LATER.c.occurred_at > E.occurred_at,
        )
        .exists()
    )


def first_cancelling(trigger: Trigger) -> ColumnElement[str]:
    """The name of the event that cancels this one, or NULL, for a dry run to show."""
    query = (
        select(LATER.c.name)
        .where(
            LATER.c.customer_id == E.customer_id,
            LATER.c.name.in_(trigger.unless or ("",)),
            LATER.c.occurred_at > E.occurred_at,
        )
        .order_by(LATER.c.occurred_at)
        .limit(1)
    )
    return query.scalar_subquery()


def once_per() -> ColumnElement[str]:
    """The part of the message key after the customer: "event-17"."""
    return literal("event-").concat(cast(E.id, String))


def context(constant: Mapping[str, Any], dialect: str) -> ColumnElement[Any]:
    """The template context, built by the database per row: the schedule's own values and
    ``event`` (name, occurred_at, payload), which a template reads as plain values."""
    encoded = jsonvalues.encode(dict(constant))
    if dialect == "postgresql":
        iso = func.to_char(func.timezone("UTC", E.occurred_at), 'YYYY-MM-DD"T"HH24:MI:SS.US')
        event = func.json_build_object(
            "name",
            E.name,
            "occurred_at",
            func.json_build_object("$datetime", iso.concat("+00:00")),
            "payload",
            E.payload,
        )
        pairs: list[tuple[str, ColumnElement[Any]]] = [
            (key, cast(literal(json.dumps(v)), JSON())) for key, v in encoded.items()
        ]
        build = func.json_build_object
    else:  # SQLite keeps "2026-11-24 12:00:00.000000", which fromisoformat reads
        stored = type_coerce(E.occurred_at, String()).concat("+00:00")
        event = func.json_object(
            "name",
            E.name,
            "occurred_at",
            func.json_object("$datetime", stored),
            "payload",
            func.json(E.payload),
        )
        pairs = [(key, func.json(json.dumps(v))) for key, v in encoded.items()]
        build = func.json_object
    flat = [part for key, value in pairs for part in (key, value)]
    return build(*flat, "event", event, type_=JSON())


def of_customers() -> Any:
    """customer_events joined with the customers they are about."""
    return EVENTS.join(CUSTOMERS, CUSTOMERS.c.id == E.customer_id)
