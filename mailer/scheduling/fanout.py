"""One schedule run into the outbox: ``INSERT ... SELECT`` from customers, in id ranges.

Every message of a run is the same but for its customer, so the database writes them
itself: no customer row crosses into Python, memory stays flat at a million recipients,
and each range is its own short transaction, so delivery keeps going meanwhile. The
dedupe key ``SCHEDULE:CUSTOMER:OCCURRENCE`` (``birthdays:42:2027-02-28``) with ON CONFLICT
DO NOTHING makes a second run of the same occurrence, or a restart half way, add nothing.
A plan may put its own per-customer SQL expression in place of the occurrence, so that a
message is once per something that outlives a run: ``reorder:42:cycle-2026-11-02`` is
written once per purchase cycle however many daily runs select the customer.
Who is suppressed, unsubscribed or without consent is written as skipped with the reason,
the same words the throttle uses, so a run's results account for everyone it selected.

An event schedule's plan selects from the customers' events instead (scheduling.triggers),
one message per event, in a single statement per pass; its run is the day's, and each pass
adds to it what fell due since.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Engine,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    cast,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from mailer.core import jsonvalues
from mailer.core.categories import Category
from mailer.customers.profiles import CUSTOMERS
from mailer.outbound import outbox
from mailer.outbound.outbox import OUTBOX
from mailer.scheduling import triggers
from mailer.scheduling.occurrences import Occurrence
from mailer.scheduling.schedules import Audience
from mailer.scheduling.triggers import Trigger
from mailer.store.db import UTCDateTime
from mailer.store.models import OutboxStatus, RunStatus, ScheduleRun

RUNS: Table = ScheduleRun.__table__  # type: ignore[attr-defined]
C = CUSTOMERS.c
RANGE = 20_000  # customer ids per statement and transaction


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What one run queues; only the customer differs from message to message."""

    schedule: str
    kind: str
    occurrence: Occurrence
    category: Category
    template: str
    priority: int
    audience: Sequence[ColumnElement[bool]]
    context: Mapping[str, Any]
    chosen_by: Audience | None = None  # the filters behind ``audience``, to say why in a dry run
    once_per: ColumnElement[str] | None = None  # per customer, in place of the occurrence key
    repeat: str = "the run was done before"  # why a customer already written gets nothing
    # why each customer is chosen beyond the audience (a dry run's sample), by customer id
    explain: Callable[[Connection, Sequence[int]], Mapping[int, str]] | None = None
    trigger: Trigger | None = None  # an event schedule's: one message per due event


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    run_id: int
    schedule: str
    occurrence: str
    zone: str
    queued: int
    skipped: int
    already_done: bool = False


def dedupe_prefix(schedule: str) -> str:
    return f"{schedule}:"


def dedupe_key(plan: Plan) -> ColumnElement[str]:
    """Each customer's message key, as SQL over the customers row (and what ``once_per``
    reads): ``SCHEDULE:CUSTOMER:OCCURRENCE`` unless the plan says once per what else."""
    once = plan.once_per if plan.once_per is not None else literal(plan.occurrence.key)
    return literal(dedupe_prefix(plan.schedule)).concat(cast(C.id, String)).concat(":").concat(once)


def execute(
    engine: Engine,
    plan: Plan,
    now: datetime,
    progress: Callable[[int], None] = lambda _count: None,
    finish: Callable[[Connection, int], None] = lambda _conn, _run_id: None,
) -> RunResult:
    """Queue the run once; a run already done returns its counts and queues nothing.

    ``finish`` runs in the transaction that marks the run done, so what it does (a webinar
    withdrawing its earlier messages) happens exactly when the run counts as done.
    """
    if plan.trigger is not None:
        return _execute_events(engine, plan, plan.trigger, now)
    run_id, done = _start(engine, plan, now)
    if done:
        return _result(engine, plan, run_id, already_done=True)
    statement = _insert_from_customers(engine.dialect.name, plan, run_id, now)
    highest = _highest_customer_id(engine)
    written = 0
    for low in range(0, highest, RANGE):
        with engine.begin() as conn:
            written += conn.execute(statement, {"low": low, "high": low + RANGE}).rowcount
        progress(written)
    with engine.begin() as conn:
        finish(conn, run_id)
        counts = _counts(conn, run_id)
        conn.execute(
            update(RUNS)
            .where(RUNS.c.id == run_id)
            .values(status=RunStatus.DONE, finished_at=now, **counts)
        )
    return _result(engine, plan, run_id, already_done=False)


def _execute_events(engine: Engine, plan: Plan, trigger: Trigger, now: datetime) -> RunResult:
    """Every event due now into the day's run, in one statement; the result counts what
    this pass wrote. A pass that finds nothing new writes nothing."""
    run_id, _ = _start(engine, plan, now)
    with engine.begin() as conn:
        _withdraw_cancelled(conn, plan, trigger, now)
        before = _counts(conn, run_id)
        conn.execute(_insert_from_events(engine.dialect.name, plan, trigger, run_id, now))
        counts = _counts(conn, run_id)
        conn.execute(
            update(RUNS)
            .where(RUNS.c.id == run_id)
            .values(status=RunStatus.DONE, finished_at=now, **counts)
        )
    return RunResult(
        run_id=run_id,
        schedule=plan.schedule,
        occurrence=plan.occurrence.key,
        zone=plan.occurrence.zone,
        queued=counts["queued"] - before["queued"],
        skipped=counts["skipped"] - before["skipped"],
    )


def _withdraw_cancelled(conn: Connection, plan: Plan, trigger: Trigger, now: datetime) -> None:
    """A message still waiting (deferred by the throttle) when a cancelling event arrives
    is withdrawn: the customer ordered before it was sent. What was sent stays sent."""
    if not trigger.unless:
        return
    its_event = (
        select(triggers.E.id)
        .select_from(triggers.of_customers())
        .where(
            C.id == OUTBOX.c.customer_id,
            triggers.E.name == trigger.event,
            OUTBOX.c.dedupe_key == dedupe_key(plan),
            triggers.cancelled(trigger),
        )
        .exists()
    )
    reason = f"{' or '.join(trigger.unless)} arrived before it was sent"
    outbox.withdraw(conn, runs_of(conn, plan.schedule), reason, now, its_event)


def runs_of(conn: Connection, schedule: str, occurrences: Sequence[str] = ()) -> list[int]:
    """The ids of a schedule's runs, all or those of some occurrence keys (LIKE patterns)."""
    query = select(RUNS.c.id).where(RUNS.c.schedule == schedule)
    if occurrences:
        query = query.where(or_(*(RUNS.c.occurrence.like(p) for p in occurrences)))
    return list(conn.execute(query).scalars())


def done_occurrences(conn: Connection, schedule: str) -> set[tuple[str, str]]:
    """(occurrence, zone) pairs already fanned out completely."""
    rows = conn.execute(
        select(RUNS.c.occurrence, RUNS.c.zone).where(
            RUNS.c.schedule == schedule, RUNS.c.status == RunStatus.DONE
        )
    )
    return {(row.occurrence, row.zone) for row in rows}


def _start(engine: Engine, plan: Plan, now: datetime) -> tuple[int, bool]:
    """The run's row, created on first sight; (id, whether it finished before)."""
    occurrence = plan.occurrence
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    values = {
        "schedule": plan.schedule,
        "occurrence": occurrence.key,
        "zone": occurrence.zone,
        "kind": plan.kind,
        "planned_at": occurrence.at,
        "started_at": now,
        "status": RunStatus.RUNNING,
        "queued": 0,
        "skipped": 0,
    }
    with engine.begin() as conn:
        conn.execute(dialect.insert(RUNS).values(**values).on_conflict_do_nothing())
        row = conn.execute(
            select(RUNS.c.id, RUNS.c.status).where(
                RUNS.c.schedule == plan.schedule,
                RUNS.c.occurrence == occurrence.key,
                RUNS.c.zone == occurrence.zone,
            )
        ).one()
    return int(row.id), row.status == RunStatus.DONE


def _insert_from_customers(dialect_name: str, plan: Plan, run_id: int, now: datetime) -> Any:
    """INSERT INTO outbox (...) SELECT ... FROM customers WHERE <audience> AND id in range."""
    columns = _columns(dialect_name, plan, run_id, now)
    in_range = and_(C.id > bindparam("low", type_=Integer()), C.id <= bindparam("high"))
    selection = select(*columns.values()).where(in_range, *plan.audience)
    return outbox.enqueue_selected(dialect_name, list(columns), selection)


def _insert_from_events(
    dialect_name: str, plan: Plan, trigger: Trigger, run_id: int, now: datetime
) -> Any:
    """INSERT INTO outbox (...) SELECT ... FROM customer_events JOIN customers WHERE the
    event is due, not cancelled, its customer in the audience and its message not written
    yet (which keeps PostgreSQL from spending an id on every event of every pass)."""
    columns = _columns(dialect_name, plan, run_id, now)
    columns["context"] = triggers.context(plan.context, dialect_name)
    written = select(OUTBOX.c.id).where(OUTBOX.c.dedupe_key == dedupe_key(plan)).exists()
    selection = (
        select(*columns.values())
        .select_from(triggers.of_customers())
        .where(*triggers.due(trigger, now), ~triggers.cancelled(trigger), ~written, *plan.audience)
    )
    return outbox.enqueue_selected(dialect_name, list(columns), selection)


def _columns(dialect_name: str, plan: Plan, run_id: int, now: datetime) -> dict[str, Any]:
    """The outbox row of each selected customer."""
    occurrence = plan.occurrence
    status, reason = outbox.status_and_reason(plan.category)
    return {
        "dedupe_key": dedupe_key(plan),
        "customer_id": C.id,
        "to_address": C.email,
        "category": literal(plan.category, String()),
        "template": literal(plan.template),
        "context": _json(jsonvalues.encode(plan.context), dialect_name),
        "headers": _json({}, dialect_name),
        "priority": literal(plan.priority),
        "status": status,
        "reason": reason,
        "due_at": literal(occurrence.at, UTCDateTime()),
        "valid_until": literal(occurrence.valid_until, UTCDateTime()),
        "attempts": literal(0),
        "created_at": literal(now, UTCDateTime()),
        "updated_at": literal(now, UTCDateTime()),
        "run_id": literal(run_id),
    }


def _json(value: Any, dialect_name: str) -> Any:
    """A JSON constant in the SELECT list: PostgreSQL needs to be told it is JSON."""
    constant = literal(value, JSON())
    return cast(constant, JSON()) if dialect_name == "postgresql" else constant


def _highest_customer_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(C.id), 0))).scalar_one())


def _counts(conn: Connection, run_id: int) -> dict[str, int]:
    """What the run wrote: skipped at once with a reason, or queued for the road."""
    skipped = OUTBOX.c.status == OutboxStatus.SKIPPED
    queued, skipped_count = conn.execute(
        select(func.count().filter(~skipped), func.count().filter(skipped)).where(
            OUTBOX.c.run_id == run_id
        )
    ).one()
    return {"queued": int(queued), "skipped": int(skipped_count)}


def _result(engine: Engine, plan: Plan, run_id: int, *, already_done: bool) -> RunResult:
    with engine.connect() as conn:
        counts = _counts(conn, run_id)
    occurrence = plan.occurrence
    return RunResult(
        run_id=run_id,
        schedule=plan.schedule,
        occurrence=occurrence.key,
        zone=occurrence.zone,
        queued=counts["queued"],
        skipped=counts["skipped"],
        already_done=already_done,
    )
