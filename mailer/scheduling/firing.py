"""Fire what is due: turn each schedule's due occurrences into runs in the outbox.

``fire_due`` is safe to call at any moment and as often as wanted: it computes what is due
now (including what was missed while mailer was down, as long as it is inside
``valid_for``), leaves out occurrences already run, and fans out the rest. The daemon calls
it when APScheduler's triggers fire and once at start; tests call it with a clock they move.

Catch-up is for downtime, not for history: nothing planned before mailer first saw a
schedule is fired (a fresh install at 02:37 does not send yesterday's newsletter). That
moment is kept in the database, so a restart still catches up what it missed after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from email.utils import parseaddr
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import ColumnElement, Engine, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from mailer.core.config import Config
from mailer.outbound import outbox
from mailer.scheduling import audience, fanout, occurrences, purchases, triggers, webinars
from mailer.scheduling.fanout import Plan, RunResult
from mailer.scheduling.occurrences import Occurrence, WebinarState
from mailer.scheduling.schedules import (
    BirthdaySchedule,
    EventSchedule,
    NewsletterSchedule,
    PurchaseSchedule,
    Schedule,
    WebinarSchedule,
)
from mailer.store.models import OutboxStatus, ScheduleSeen

log = logging.getLogger("mailer.scheduling.firing")

INVITED = ("invite", "update-%")  # the runs whose recipients hold the event in a calendar
DELIVERED = (OutboxStatus.SENDING, OutboxStatus.SENT)
PROMISED = (*DELIVERED, OutboxStatus.QUEUED, OutboxStatus.DEFERRED)
SEEN: Table = ScheduleSeen.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Firing:
    """What firing needs from the configuration."""

    fallback_zone: str  # the business's zone, for customers who never gave theirs
    domain: str  # of the sender address: webinar UIDs are made unique by it

    @classmethod
    def from_config(cls, cfg: Config) -> Firing:
        settings = cfg.settings
        address = parseaddr(settings.sender.from_)[1]
        return cls(settings.business_hours.timezone.key, address.rpartition("@")[2])


def customer_zones(engine: Engine, fallback: str) -> list[str]:
    """Every zone some customer's mail is timed on (one trigger each), read from the index."""
    with engine.connect() as conn:
        names = conn.execute(select(audience.zones_in_use(fallback)).distinct()).scalars()
        return [name for name in names if _known_zone(name)]


def fire_due(
    engine: Engine,
    schedules: Mapping[str, Schedule],
    now: datetime,
    firing: Firing,
    progress: Callable[[str, int], None] = lambda _name, _count: None,
    edited: Mapping[str, datetime] | None = None,
    zones: list[str] | None = None,
) -> list[RunResult]:
    """Run every due occurrence of every schedule that has not run yet, none planned before
    mailer first saw the schedule enabled (this call records it for one never seen) or
    before it was last resumed (what fell due while paused is not caught up).

    ``edited`` (schedule -> when its file last changed) keeps catch-up from reaching back
    before an edit too: a newsletter moved from 09:00 to 10:00 at noon is not sent again for
    today's 10:00, which its old version already covered. An event schedule keys each
    message by its event, so an edit needs no such cut: its events since it was first seen
    (or resumed) stay due. ``zones`` are the zones in use, when the caller has just read
    them.
    """
    if zones is None:
        zones = customer_zones(engine, firing.fallback_zone)
    seen = first_seen(engine, [name for name, s in schedules.items() if s.enabled], now)
    results = []
    for name, schedule in schedules.items():
        known = seen.get(name, now)  # a disabled schedule counts from when it is enabled
        changed = known if isinstance(schedule, EventSchedule) else (edited or {}).get(name, known)
        since = max(known, changed, schedule.resumed_at or known)
        for plan in due_plans(engine, name, schedule, now, firing, zones, since=since):
            results.append(run(engine, plan, now, partial(progress, name)))
    return results


def first_seen(
    engine: Engine, names: list[str], now: datetime, *, record: bool = True
) -> dict[str, datetime]:
    """When mailer first saw each schedule; ``now`` for one never seen, which is kept unless
    ``record`` is false (a dry run keeps nothing)."""
    with engine.begin() as conn:
        if record and names:
            dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
            new = [{"schedule": name, "first_seen_at": now} for name in names]
            conn.execute(dialect.insert(SEEN).on_conflict_do_nothing(), new)
        rows = conn.execute(select(SEEN).where(SEEN.c.schedule.in_(names)))
        known = {row.schedule: row.first_seen_at for row in rows}
    return {name: known.get(name, now) for name in names}


def due_plans(
    engine: Engine,
    name: str,
    schedule: Schedule,
    now: datetime,
    firing: Firing,
    zones: list[str],
    *,
    since: datetime | None = None,
    dry_run: bool = False,
) -> list[Plan]:
    """The runs a schedule owes at ``now``, none planned before ``since``. A dry run also
    lists those already run, and keeps nothing it noted (a webinar's new SEQUENCE is rolled
    back). An event schedule's run of the day is owed at every pass, for events before
    ``since`` never (None: only its ``valid_for`` bounds how far back events are due)."""
    with engine.connect() as conn:
        state = _webinar_state(conn, name, schedule, now, firing)
        again = dry_run or isinstance(schedule, EventSchedule)
        done = set() if again else fanout.done_occurrences(conn, name)
        due = occurrences.due(schedule, zones, now, state)
        plans = [
            _plan(conn, name, schedule, occurrence, firing, state, since)
            for occurrence in due
            if (occurrence.key, occurrence.zone) not in done
            and (since is None or occurrence.at >= since)
        ]
        if not dry_run:
            conn.commit()
        return plans


def run(
    engine: Engine, plan: Plan, now: datetime, progress: Callable[[int], None] = lambda _: None
) -> RunResult:
    """One run, with what a webinar update or cancellation withdraws from earlier runs."""
    step = plan.occurrence.key
    if plan.kind != "webinar" or not (step == "cancel" or step.startswith("update-")):
        return fanout.execute(engine, plan, now, progress)
    why = "webinar cancelled" if step == "cancel" else f"superseded by {step}"

    def withdraw_earlier(conn: Connection, run_id: int) -> None:
        earlier = [i for i in fanout.runs_of(conn, plan.schedule) if i != run_id]
        outbox.withdraw(conn, earlier, why, now)

    return fanout.execute(engine, plan, now, progress, withdraw_earlier)


def _webinar_state(
    conn: Connection, name: str, schedule: Schedule, now: datetime, firing: Firing
) -> WebinarState:
    if not isinstance(schedule, WebinarSchedule):
        return WebinarState()
    return webinars.state(conn, name, schedule, firing.domain, now)


def _plan(
    conn: Connection,
    name: str,
    schedule: Schedule,
    occurrence: Occurrence,
    firing: Firing,
    state: WebinarState,
    since: datetime | None,
) -> Plan:
    def plan(
        template: str, who: list[ColumnElement[bool]], context: dict[str, Any], **how: Any
    ) -> Plan:
        return Plan(
            schedule=name,
            kind=schedule.kind,
            occurrence=occurrence,
            category=schedule.category,
            template=template,
            priority=schedule.priority,
            audience=who,
            context=context,
            chosen_by=schedule.audience if who is chosen else None,
            **how,
        )

    chosen = audience.matches(schedule.audience, occurrence.at, ZoneInfo(firing.fallback_zone))
    if isinstance(schedule, NewsletterSchedule):
        if schedule.timezone == "customer":
            chosen.append(audience.in_zone(occurrence.zone, firing.fallback_zone))
        return plan(schedule.template, chosen, {"params": dict(schedule.params)})
    if isinstance(schedule, BirthdaySchedule):
        chosen.append(audience.in_zone(occurrence.zone, firing.fallback_zone))
        days = occurrences.birthdays_on(date.fromisoformat(occurrence.key), schedule.feb29)
        chosen.append(audience.born_on(days))
        return plan(schedule.template, chosen, {"params": dict(schedule.params)})
    if isinstance(schedule, EventSchedule):
        trigger = triggers.Trigger(
            event=schedule.event,
            unless=tuple(schedule.unless),
            delay=schedule.delay,
            valid_for=schedule.valid_for,
            since=since,
        )
        return plan(
            schedule.template,
            chosen,
            {"params": dict(schedule.params)},
            once_per=triggers.once_per(),
            repeat="written before for this event",
            trigger=trigger,
        )
    if isinstance(schedule, PurchaseSchedule):
        chosen.append(audience.in_zone(occurrence.zone, firing.fallback_zone))
        day, zone = date.fromisoformat(occurrence.key), ZoneInfo(occurrence.zone)
        due = purchases.select_for(schedule, day, zone, conn.dialect.name)
        chosen += due.who
        context = {"params": dict(schedule.params), **due.context}
        return plan(
            schedule.template,
            chosen,
            context,
            once_per=due.once_per,
            repeat=due.repeat,
            explain=due.explain,
        )
    return _webinar_plan(conn, name, schedule, occurrence, firing, state, plan, chosen)


def _webinar_plan(
    conn: Connection,
    name: str,
    schedule: WebinarSchedule,
    occurrence: Occurrence,
    firing: Firing,
    state: WebinarState,
    plan: Callable[[str, list[ColumnElement[bool]], dict[str, Any]], Plan],
    chosen: list[ColumnElement[bool]],
) -> Plan:
    """Invitations go to the audience; everything after them only to those invited."""
    step, domain, sequence = occurrence.key, firing.domain, state.sequence
    invited = fanout.runs_of(conn, name, INVITED)
    if step == "invite":
        return plan(
            schedule.template, chosen, webinars.context(name, schedule, domain, sequence, "REQUEST")
        )
    if step == "cancel":
        context = webinars.context(name, schedule, domain, sequence, "CANCEL")
        return plan(schedule.cancel_template, [audience.received(invited, DELIVERED)], context)
    if step.startswith("update-"):
        context = webinars.context(name, schedule, domain, sequence, "REQUEST", changed=True)
        return plan(schedule.template, [audience.received(invited, PROMISED)], context)
    assert schedule.reminder_template is not None  # reminders without one fail validation
    context = webinars.context(name, schedule, domain, sequence, None)
    return plan(schedule.reminder_template, [audience.received(invited, DELIVERED)], context)


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("customers with unknown time zone %r are not reached by schedules", name)
        return False
    return True
