"""What a schedule run would do, customer by customer, without queueing anything.

The same audience query as the real run, and the same throttle decision the delivery
workers would take at the planned time, so "who would be throttled, suppressed or expired,
and why" is answered by the code that will decide it, not by a second opinion. An event
schedule's forecast is per due event: cancelled ones are shown with the event that came
first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection, RowMapping

from mailer.customers import profiles
from mailer.customers.profiles import CUSTOMERS
from mailer.outbound import outbox, throttle
from mailer.outbound.outbox import OUTBOX
from mailer.scheduling import audience, triggers
from mailer.scheduling.fanout import Plan, dedupe_key
from mailer.scheduling.triggers import Trigger

CHUNK = 1_000


@dataclass(frozen=True, slots=True)
class Fate:
    """What the run would do for one customer, and why."""

    email: str
    action: str  # send, defer, expire, skip, or "already queued"
    reason: str  # for the first few, also why the customer is chosen (purchases, insight)


@dataclass
class Forecast:
    """One planned run, dry: how many customers meet each fate, and the first few by name."""

    plan: Plan
    tally: Counter[tuple[str, str]] = field(default_factory=Counter)
    sample: list[Fate] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.tally.values())


def forecast(
    engine: Engine,
    plan: Plan,
    rules: throttle.Rules,
    fallback_zone: ZoneInfo,
    *,
    sample: int = 20,
) -> Forecast:
    """Every selected customer's fate at the run's planned time; the first ``sample`` kept."""
    if plan.trigger is not None:
        return _forecast_events(engine, plan, plan.trigger, rules, fallback_zone, sample)
    found = Forecast(plan)
    occurrence = plan.occurrence
    with engine.connect() as conn:
        for chunk in _chunks(conn, plan):
            ids = [customer.id for customer in chunk]
            queued = _already_queued(conn, plan, ids)
            history = outbox.contacts(conn, ids, occurrence.at)
            seen = (
                audience.evidence(conn, plan.chosen_by, ids, fallback_zone)
                if plan.chosen_by
                else {}
            )
            because = plan.explain(conn, ids) if plan.explain else {}
            for customer in chunk:
                if customer.id in queued:
                    fate = Fate(customer.email, "already queued", plan.repeat)
                else:
                    recent = history.get(customer.id, [])
                    fate = _throttled(plan, customer, recent, rules, fallback_zone)
                found.tally[(fate.action, fate.reason)] += 1
                if len(found.sample) < sample:
                    why = because.get(customer.id, "")
                    found.sample.append(_with_why(fate, plan, seen.get(customer.id), why))
    return found


def _throttled(
    plan: Plan,
    customer: profiles.Profile,
    recent: list[throttle.Contact],
    rules: throttle.Rules,
    fallback_zone: ZoneInfo,
) -> Fate:
    """What the throttle would decide for this customer at the run's planned time."""
    occurrence = plan.occurrence
    state = outbox.customer_state(customer, recent, fallback_zone)
    decision = throttle.decide(plan.category, occurrence.at, occurrence.valid_until, state, rules)
    return Fate(customer.email, decision.action, _reason(decision))


def _forecast_events(
    engine: Engine,
    plan: Plan,
    trigger: Trigger,
    rules: throttle.Rules,
    fallback_zone: ZoneInfo,
    sample: int,
) -> Forecast:
    """Each due event's fate: written before, cancelled by a later event, or the throttle's."""
    found = Forecast(plan)
    with engine.connect() as conn:
        for chunk in _event_chunks(conn, plan, trigger):
            people = {row["id"]: profiles.load(row) for row in chunk}
            history = outbox.contacts(conn, list(people), plan.occurrence.at)
            for row in chunk:
                customer = people[row["id"]]
                if row["written"]:
                    fate = Fate(customer.email, "already queued", plan.repeat)
                elif row["cancelled_by"]:
                    fate = Fate(customer.email, "cancelled", f"{row['cancelled_by']} came first")
                else:
                    recent = history.get(customer.id, [])
                    fate = _throttled(plan, customer, recent, rules, fallback_zone)
                found.tally[(fate.action, fate.reason)] += 1
                if len(found.sample) < sample:
                    what = triggers.why(row["event_name"], row["occurred_at"], row["event_id"])
                    reason = "; ".join(part for part in (fate.reason, what) if part)
                    found.sample.append(Fate(fate.email, fate.action, reason))
    return found


def _event_chunks(conn: Connection, plan: Plan, trigger: Trigger) -> Iterator[list[RowMapping]]:
    """The due events with their customers, a chunk at a time, oldest first."""
    events = triggers.E
    written = select(OUTBOX.c.id).where(OUTBOX.c.dedupe_key == dedupe_key(plan)).exists()
    query = (
        select(
            CUSTOMERS,
            events.id.label("event_id"),
            events.name.label("event_name"),
            events.occurred_at,
            triggers.first_cancelling(trigger).label("cancelled_by"),
            written.label("written"),
        )
        .select_from(triggers.of_customers())
        .where(*triggers.due(trigger, plan.occurrence.at), *plan.audience)
        .order_by(events.occurred_at, events.id)
    )
    rows = conn.execution_options(yield_per=CHUNK).execute(query).mappings()
    while chunk := list(islice(rows, CHUNK)):
        yield chunk


def _chunks(conn: Connection, plan: Plan) -> Iterator[list[profiles.Profile]]:
    """The audience, a chunk at a time; without tags, which the throttle does not read."""
    query = select(CUSTOMERS).where(*plan.audience).order_by(CUSTOMERS.c.id)
    result = conn.execution_options(yield_per=CHUNK).execute(query).mappings()
    rows = (profiles.load(row) for row in result)
    while chunk := list(islice(rows, CHUNK)):
        yield chunk


def _already_queued(conn: Connection, plan: Plan, ids: list[int]) -> set[int]:
    """Those whose message of this run already exists, by the key the run would write."""
    written = select(OUTBOX.c.id).where(OUTBOX.c.dedupe_key == dedupe_key(plan)).exists()
    query = select(CUSTOMERS.c.id).where(CUSTOMERS.c.id.in_(ids), written)
    return set(conn.execute(query).scalars())


def _with_why(fate: Fate, plan: Plan, seen: audience.Evidence | None, because: str) -> Fate:
    """The sample says why each customer was chosen; the tally groups by outcome only."""
    chosen = audience.why(plan.chosen_by, seen) if plan.chosen_by and seen else ""
    reason = "; ".join(part for part in (fate.reason, because, chosen) if part)
    return Fate(fate.email, fate.action, reason)


def _reason(decision: throttle.Decision) -> str:
    """Defer reasons name their time; they are grouped without it."""
    return "" if decision.action == "send" else decision.reason
