"""The outbox: the one road every message takes to SMTP.

A message is a row first (its dedupe key makes queueing the same message twice a no-op),
then a claim gives due rows to one worker with a lease, the throttle decides per customer
inside that same transaction, and each delivery attempt is recorded. A worker that dies
leaves its leased rows to come back when the lease runs out, or at once when its death is
known (``take_back``).

Every claim bumps the row's lease token (a fencing token): a result is written only by
the worker whose token the row still holds. A worker that lost its lease (it stalled past
the lease and another worker claimed the row again) finds its result logged as a late
attempt, never over the new holder's state, so it can neither queue the message again nor
mark as failed what the other worker sent.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache, lru_cache
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Engine,
    ScalarSelect,
    Select,
    String,
    Table,
    bindparam,
    case,
    delete,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql.base import Executable, ReadOnlyColumnCollection

from mailer.core import jsonvalues
from mailer.core.categories import Category
from mailer.core.config import Settings
from mailer.core.errors import NotFound
from mailer.core.fieldtypes import email_address, sendable_address
from mailer.customers import contacts as contact_log
from mailer.customers import profiles
from mailer.customers.profiles import CUSTOMERS
from mailer.hooks import events as webhooks
from mailer.hooks.events import EventType
from mailer.outbound import throttle
from mailer.store import bulk, db
from mailer.store.models import DeliveryAttempt, OutboxAttachment, OutboxMessage, OutboxStatus

OUTBOX: Table = OutboxMessage.__table__  # type: ignore[attr-defined]
ATTEMPTS: Table = DeliveryAttempt.__table__  # type: ignore[attr-defined]
ATTACHMENTS: Table = OutboxAttachment.__table__  # type: ignore[attr-defined]
ENQUEUE_BATCH = 1000
# rows a worker may claim once due: new or retried (queued) and held back by the throttle
WAITING = (OutboxStatus.QUEUED, OutboxStatus.DEFERRED)
_DEFERRED_UNTIL = "deferred until"
_DEFERRED_PREFIX = re.compile(rf"^{_DEFERRED_UNTIL} .+? UTC: ")
HISTORY_WINDOW = timedelta(days=31)
NON_TRANSACTIONAL = (Category.MARKETING.value, Category.RELATIONSHIP.value)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file a message carries, as the caller gave it (checked before it is queued)."""

    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class NewMessage:
    """What a part of mailer asks to be sent; everything else is decided on the road."""

    dedupe_key: str
    to_address: str
    category: str
    template: str
    customer_id: int | None = None
    locale: str | None = None
    context: Mapping[str, Any] = field(
        default_factory=dict
    )  # template variables: params, inquiry...
    headers: Mapping[str, str] = field(default_factory=dict)
    envelope_from: str | None = None
    priority: int = 0
    due_at: datetime | None = None
    valid_for: timedelta | None = None
    request_hash: str | None = None  # an API call's, to tell a replay from a reuse of its key
    attachments: Sequence[Attachment] = ()


def enqueue(engine: Engine, messages: Iterable[NewMessage], now: datetime) -> int:
    """Queue messages, a thousand to a statement; returns how many were new.

    A dedupe key that is already queued or sent is silently kept as it was, so a schedule
    that fires twice, or two workers racing, produce one row.
    """
    added = 0
    iterator = iter(messages)
    while batch := list(islice(iterator, ENQUEUE_BATCH)):
        with engine.begin() as conn:
            added += enqueue_in(conn, batch, now)
    return added


QUEUED_CHANNEL = "mailer_outbox"  # PostgreSQL: a trigger NOTIFYs it after each insert


def watch(engine: Engine) -> db.Watch | None:
    """A cheap look at whether messages may have been queued since the last look, by this
    process or another (see ``db.watch``)."""
    return db.watch(engine, QUEUED_CHANNEL)


def enqueue_in(conn: Connection, batch: Sequence[NewMessage], now: datetime) -> int:
    """Queue within the caller's transaction, e.g. an acknowledgement with its inquiry."""
    added = _insert_new(conn, [_row(m, now) for m in batch])
    _attach(conn, added, batch)
    _skip_barred(conn, batch, now)
    return len(added)


def enqueue_one(conn: Connection, message: NewMessage, now: datetime) -> dict[str, Any] | None:
    """Queue one message within the caller's transaction and return its row as ``get_by_key``
    gives it (no attempts yet), or None when its dedupe key was queued before. The row
    comes back from the insert itself: the API's send answers with it, and reading it back
    was one of a send's five round trips on PostgreSQL."""
    inserted = conn.execute(_statements_for(conn.dialect.name, whole=True), _row(message, now))
    row = inserted.mappings().one_or_none()
    if row is None:
        return None
    _attach(conn, {message.dedupe_key: row["id"]}, [message])
    skipped = _skip_barred(conn, [message], now)
    return {**row, **skipped.get(message.dedupe_key, {}), "attempts_log": []}


def _row(message: NewMessage, now: datetime) -> dict[str, Any]:
    due = message.due_at or now
    problem = _address_problem(message.to_address)
    return {
        "dedupe_key": message.dedupe_key,
        "customer_id": message.customer_id,
        "to_address": message.to_address,
        "category": str(message.category),
        "template": message.template,
        "locale": message.locale,
        "context": jsonvalues.encode(message.context),
        "headers": dict(message.headers),
        "envelope_from": message.envelope_from,
        "priority": message.priority,
        "status": OutboxStatus.SKIPPED if problem else OutboxStatus.QUEUED,
        "reason": problem,
        "due_at": due,
        "valid_until": due + message.valid_for if message.valid_for else None,
        "attempts": 0,
        "request_hash": message.request_hash,
        "created_at": now,
        "updated_at": now,
    }


def _address_problem(address: str) -> str | None:
    """Why mail cannot be written to this address, if it cannot: it is recorded as skipped
    instead of failing later. (An international domain can: delivery uses its ASCII form.)"""
    try:
        email_address(address)
    except ValueError as exc:
        return f"invalid address: {exc}"
    if sendable_address(address) is None:
        return "invalid address: letters beyond ASCII before the @ need SMTPUTF8"
    return None


def _insert_new(conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
    """The ids of the rows that were new, by dedupe key (a replayed key adds nothing)."""
    # rowcount is not reported for batched inserts on PostgreSQL: count what came back
    returned = conn.execute(_statements_for(conn.dialect.name, whole=False), rows)
    return {key: id_ for key, id_ in returned}


@lru_cache(maxsize=4)
def _statements_for(dialect_name: str, *, whole: bool) -> Any:
    """The enqueue INSERT, built once per dialect: a transactional send through the API
    queues one message a call, and building a statement costs more than running it
    (SQLAlchemy memoises the cache key of a statement object it has seen). It returns
    the new rows' keys and ids, or (``whole``) every column of the new row."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(OUTBOX).on_conflict_do_nothing(index_elements=["dedupe_key"])
    if whole:
        return statement.returning(*OUTBOX.c)
    return statement.returning(OUTBOX.c.dedupe_key, OUTBOX.c.id)


def _attach(conn: Connection, added: Mapping[str, int], batch: Sequence[NewMessage]) -> None:
    """The files of the messages that were new, in the same transaction as their rows: a
    message is never queued without them, and a replay does not store them twice.

    Bytes live in the database rather than in files: a transactional message's attachments
    are small (``[api] attachment_max_mb``), and so they commit, back up, replicate to every
    process serving the API and get erased together with the row that sends them."""
    rows = [
        {
            "outbox_id": added[message.dedupe_key],
            "position": position,
            "filename": attachment.filename,
            "content_type": attachment.content_type,
            "content": attachment.content,
        }
        for message in batch
        if message.attachments and message.dedupe_key in added
        for position, attachment in enumerate(message.attachments)
    ]
    if rows:
        conn.execute(insert(ATTACHMENTS), rows)


def attachments_of(conn: Connection, ids: Collection[int]) -> dict[int, tuple[Attachment, ...]]:
    """The files of these messages, in the order they were given; one query for a batch."""
    query = _attachments_statement(conn.dialect.name)
    found: dict[int, list[Attachment]] = {}
    for row in conn.execute(query, {"ids": list(ids)}) if ids else ():
        found.setdefault(row.outbox_id, []).append(
            Attachment(row.filename, row.content_type, bytes(row.content))
        )
    return {id_: tuple(files) for id_, files in found.items()}


@cache
def _attachments_statement(dialect: str) -> Select[Any]:
    return (
        select(ATTACHMENTS)
        .where(bulk.any_of(ATTACHMENTS.c.outbox_id, "ids", dialect))
        .order_by(ATTACHMENTS.c.outbox_id, ATTACHMENTS.c.position)
    )


def _skip_barred(
    conn: Connection, batch: Sequence[NewMessage], now: datetime
) -> dict[str, dict[str, Any]]:
    """Checked at enqueue (and again at claim): a barred customer's message is skipped at
    once, with the throttle's reason, instead of waiting in the queue to be refused. What
    the skipped rows became (status, reason, updated_at), by dedupe key.

    A message to no customer (a stranger's receipt) has nothing to be barred by and costs
    no statement."""
    skipped: dict[str, dict[str, Any]] = {}
    customers = [m for m in batch if m.customer_id is not None]
    for category in {str(m.category) for m in customers}:
        keys = [m.dedupe_key for m in customers if m.category == category]
        for row in conn.execute(_skip_statement(category), {"_keys": keys, "_now": now}):
            key, *changed = row
            skipped[key] = dict(zip(("status", "reason", "updated_at"), changed, strict=True))
    return skipped


@lru_cache(maxsize=8)
def _skip_statement(category: str) -> Any:
    """The UPDATE that skips a category's barred messages, built once per category: a
    receipt sent through the API to a customer runs it on every call, and building it
    cost more than running it. A correlated EXISTS looks up each row's own customer by
    key; an IN over all barred customers would scan the customers table once per batch."""
    bars = barred(category)
    own = CUSTOMERS.c.id == OUTBOX.c.customer_id
    return (
        update(OUTBOX)
        .where(
            OUTBOX.c.dedupe_key.in_(bindparam("_keys", expanding=True)),
            OUTBOX.c.status == OutboxStatus.QUEUED,
            select(CUSTOMERS.c.id).where(own, or_(*(when for when, _ in bars))).exists(),
        )
        .values(
            status=OutboxStatus.SKIPPED,
            reason=select(case(*bars)).where(own).scalar_subquery(),
            updated_at=bindparam("_now"),
        )
        .returning(OUTBOX.c.dedupe_key, OUTBOX.c.status, OUTBOX.c.reason, OUTBOX.c.updated_at)
    )


def barred(category: str) -> list[tuple[ColumnElement[bool], ColumnElement[str]]]:
    """The throttle's eligibility table as SQL over customers: (condition, reason) pairs."""
    return [(_bars_sql(rule), _reason_sql(rule)) for rule in throttle.eligibility(category)]


def _bars_sql(rule: throttle.Eligibility) -> ColumnElement[bool]:
    column = CUSTOMERS.c[rule.column]
    return column.is_not(None) if rule.bars_when == "set" else column == false()


def _reason_sql(rule: throttle.Eligibility) -> ColumnElement[str]:
    wording = literal(rule.wording, String())
    return wording.concat(CUSTOMERS.c[rule.column]) if rule.quotes_value else wording


def status_and_reason(category: str) -> tuple[ColumnElement[str], ColumnElement[str | None]]:
    """Columns for an ``INSERT ... SELECT`` from customers: skipped with the reason of the
    first bar that holds, else queued, decided in the same statement that writes the row."""
    bars = barred(category)
    status = case(
        *((when, literal(str(OutboxStatus.SKIPPED))) for when, _ in bars),
        else_=literal(str(OutboxStatus.QUEUED)),
    )
    return status, case(*bars, else_=literal(None, String()))


def enqueue_selected(dialect_name: str, columns: Sequence[str], selection: Select[Any]) -> Any:
    """``INSERT INTO outbox (columns) <selection>``, keeping any row whose key exists, for a
    caller that writes many messages from one query (a schedule run over its audience)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return (
        dialect.insert(OUTBOX)
        .from_select(list(columns), selection)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )


def withdraw(
    conn: Connection,
    run_ids: Sequence[int],
    reason: str,
    now: datetime,
    *where: ColumnElement[bool],
) -> int:
    """Skip what these schedule runs still have waiting (a cancelled webinar, a superseded
    invitation), or those of it that meet ``where``; what was sent stays sent."""
    if not run_ids:
        return 0
    return int(
        conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.run_id.in_(run_ids), OUTBOX.c.status.in_(WAITING), *where)
            .values(status=OutboxStatus.SKIPPED, reason=reason, updated_at=now)
        ).rowcount
    )


def erase_customer(conn: Connection, customer_id: int, address: str, now: datetime) -> int:
    """Clear what the customer's messages say about them (address, template data, subject,
    the hash of the API call, the server's replies, the files attached) while keeping each
    row's key, category, status and times, which dedupe, the throttle and the counts need;
    anything still waiting is withdrawn."""
    theirs = or_(OUTBOX.c.customer_id == customer_id, OUTBOX.c.to_address == address)
    ids = list(conn.execute(select(OUTBOX.c.id).where(theirs)).scalars())
    if not ids:
        return 0
    mine = OUTBOX.c.id.in_(ids)
    conn.execute(
        update(OUTBOX)
        .where(mine, OUTBOX.c.status.in_(WAITING))
        .values(status=OutboxStatus.SKIPPED, reason=profiles.ERASED_REASON)
    )
    conn.execute(
        update(OUTBOX)
        .where(mine)
        .values(
            to_address="", context={}, headers={}, subject=None, request_hash=None, updated_at=now
        )
    )
    naming = func.lower(OUTBOX.c.reason).contains(address.lower(), autoescape=True)
    conn.execute(update(OUTBOX).where(mine, naming).values(reason=profiles.ERASED_REASON))
    conn.execute(update(ATTEMPTS).where(ATTEMPTS.c.outbox_id.in_(ids)).values(smtp_reply=None))
    conn.execute(delete(ATTACHMENTS).where(ATTACHMENTS.c.outbox_id.in_(ids)))
    return len(ids)


@dataclass(frozen=True, slots=True)
class Returned:
    """A message a bounce or complaint is about."""

    id: int
    to_address: str
    customer_id: int | None


def returned(
    conn: Connection, *, ids: Collection[int] = (), message_ids: Collection[str] = ()
) -> list[Returned]:
    """The sent messages a report names, by outbox id (its return path) or Message-ID."""
    if not ids and not message_ids:
        return []
    named = or_(OUTBOX.c.id.in_(sorted(ids)), OUTBOX.c.message_id.in_(sorted(message_ids)))
    query = select(OUTBOX.c.id, OUTBOX.c.to_address, OUTBOX.c.customer_id).where(
        named, OUTBOX.c.to_address != ""
    )
    return [Returned(row.id, row.to_address, row.customer_id) for row in conn.execute(query)]


def mark_bounced(conn: Connection, ids: Collection[int], reason: str, now: datetime) -> None:
    """Messages that bounced for good are marked so, and webhooks hear of it."""
    if not ids:
        return
    conn.execute(
        update(OUTBOX)
        .where(OUTBOX.c.id.in_(sorted(ids)))
        .values(status=OutboxStatus.BOUNCED, reason=reason, updated_at=now)
    )
    webhooks.record(conn, EventType.MESSAGE_BOUNCED, _told(conn, sorted(ids)), now)


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """A message this worker may send now: its slot is reserved and its lease is running."""

    id: int
    to_address: str
    category: str
    template: str
    locale: str | None
    context: dict[str, Any]  # the template variables it was queued with, decoded
    headers: dict[str, str]
    envelope_from: str | None  # None: the configured sender; "" is the null sender
    attempts: int
    created_at: datetime
    valid_until: datetime | None
    customer: profiles.Profile | None
    lease: int = 0  # this claim's fencing token (0: not claimed, a preview); see ``record``
    attachments: tuple[Attachment, ...] = ()


def leases(claimed: Iterable[Claimed]) -> dict[int, int]:
    """The fencing tokens a worker holds, by row: what ``record`` and ``extend`` check."""
    return {item.id: item.lease for item in claimed}


def _claimed(
    row: Mapping[str, Any],
    customer: profiles.Profile | None,
    attachments: tuple[Attachment, ...] = (),
) -> Claimed:
    """The one way a claimed outbox row becomes a Claimed."""
    return Claimed(
        id=row["id"],
        to_address=row["to_address"],
        category=row["category"],
        template=row["template"],
        locale=row["locale"],
        context=jsonvalues.decode(row["context"]),
        headers=dict(row["headers"]),
        envelope_from=row["envelope_from"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        valid_until=row["valid_until"],
        customer=customer,
        lease=row["lease_token"],
        attachments=attachments,
    )


def by_key(conn: Connection, dedupe_key: str) -> Claimed | None:
    """The message queued under this key as the delivery worker takes it up (its customer
    loaded, nothing reserved), so a page can show again what it says."""
    row = conn.execute(select(OUTBOX).where(OUTBOX.c.dedupe_key == dedupe_key)).mappings().first()
    if row is None:
        return None
    try:
        customer = profiles.get_id(conn, row["customer_id"]) if row["customer_id"] else None
    except NotFound:  # erased since
        customer = None
    return _claimed(dict(row), customer, attachments_of(conn, [row["id"]]).get(row["id"], ()))


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    rules: throttle.Rules
    fallback_zone: ZoneInfo
    lease: timedelta
    worker: str | None = None  # the claiming process (workers.id), so its death is noticed


def claim(
    engine: Engine,
    now: datetime,
    limit: int,
    policy: Policy,
    *,
    skip_domains: Collection[str] = (),
    skip_categories: Collection[str] = (),
) -> list[Claimed]:
    """Take up to ``limit`` due rows, decide each under the throttle, keep those to send now;
    rows to ``skip_domains`` (receiving domains that may take no more for now) and of
    ``skip_categories`` (held: no relay for them answers) stay queued.

    Deciding happens in the claiming transaction, with the customers' rows locked on
    PostgreSQL (SQLite has a single writer), so two workers can never both pass a cap.
    """
    with db.begin_writing(engine) as conn:
        rows = _claim_rows(conn, now, limit, policy, skip_domains, skip_categories)
        if not rows:
            return []
        locked = _lock_customers(conn, {r["customer_id"] for r in rows} - {None})
        history = contacts(conn, list(locked), now, exclude={r["id"] for r in rows})
        keep, changes = _decide_all(rows, locked, history, now, policy)
        _apply(conn, changes, now)
        files = attachments_of(conn, [item.id for item in keep])
    return [
        replace(item, attachments=files[item.id]) if item.id in files else item for item in keep
    ]


def _not_skipped(dialect: str, domains: bool, categories: bool) -> list[ColumnElement[bool]]:
    """Not to a domain in ``:skip_domains`` (receiving domains that may take no more for
    now), when there are such, nor of a category in ``:skip_categories`` (held: no relay
    for them answers); the values are given when the statement runs."""
    where: list[ColumnElement[bool]] = []
    if domains:
        skipped: BindParameter[list[str]] = bindparam("skip_domains", expanding=True)
        where.append(db.domain_of(OUTBOX.c.to_address, dialect).not_in(skipped))
    if categories:
        where.append(OUTBOX.c.category.not_in(bindparam("skip_categories", expanding=True)))
    return where


def _skips(domains: Collection[str], categories: Collection[str]) -> dict[str, list[str]]:
    """The values of ``_not_skipped``."""
    return {"skip_domains": sorted(domains), "skip_categories": sorted(categories)}


# What deciding and sending a claimed row read of it (``_claimed``, the throttle, the claim
# order), and no more: each column read back is converted for every row of every batch.
_CLAIM_READS = [
    OUTBOX.c[name]
    for name in (
        *("id", "customer_id", "to_address", "category", "template", "locale", "context"),
        *("headers", "envelope_from", "priority", "due_at", "valid_until", "lease_token"),
        *("attempts", "created_at"),
    )
]


def _claim_rows(
    conn: Connection,
    now: datetime,
    limit: int,
    policy: Policy,
    skip_domains: Collection[str],
    skip_categories: Collection[str],
) -> list[dict[str, Any]]:
    statement = _claim_statement(conn.dialect.name, bool(skip_domains), bool(skip_categories))
    params: dict[str, Any] = {
        "now": now,
        "until": now + policy.lease,
        "limit": limit,
        "worker": policy.worker,
        **_skips(skip_domains, skip_categories),
    }
    rows = [dict(r) for r in conn.execute(statement, params).mappings()]
    return sorted(rows, key=lambda r: (-r["priority"], r["due_at"], r["id"]))


@cache
def _claim_statement(dialect: str, domains: bool, categories: bool) -> Executable:
    """The claim's UPDATE, built once for each shape of what is skipped: building it and
    its cache key took 0.6-0.8 ms a claim, with SQLite's write lock held, however few rows
    it took (an acknowledgement claims one)."""
    due = [OUTBOX.c.due_at <= bindparam("now"), *_not_skipped(dialect, domains, categories)]
    return (
        update(OUTBOX)
        .where(OUTBOX.c.id.in_(_first_due(dialect, due, bindparam("limit"))))
        .values(
            status=OutboxStatus.SENDING,
            lease_until=bindparam("until"),
            lease_token=OUTBOX.c.lease_token + 1,
            worker_id=bindparam("worker"),
            reserved_at=bindparam("now"),  # as sent now: the throttle's decisions change the others
            reason=None,
            updated_at=bindparam("now"),
        )
        .returning(*_CLAIM_READS)
    )


def _claim_order(columns: ReadOnlyColumnCollection[str, Any]) -> tuple[ColumnElement[Any], ...]:
    """Highest priority first, then earliest due, then first queued, of the outbox or of a
    subquery of its id, priority and due_at."""
    return (columns.priority.desc(), columns.due_at, columns.id)


def _first_due(
    dialect: str, due_where: list[ColumnElement[bool]], limit: BindParameter[int]
) -> ScalarSelect[int]:
    """The ids of the ``limit`` waiting rows to take first: highest priority, then earliest
    due, then first queued. SQLite reads each waiting status apart, so that each reads
    ix_outbox_claim in its order and stops at ``limit`` due rows (rows not yet due at a
    higher priority are stepped over): with both statuses in one ``IN`` it sorted every waiting
    row for each claim, 16 of the 28 ms a claim of 200 out of 100,000 took, the write lock
    held. PostgreSQL takes the rows ``FOR UPDATE SKIP LOCKED``, which a ``UNION`` may not."""
    if dialect == "postgresql":
        return (
            select(OUTBOX.c.id)
            .where(OUTBOX.c.status.in_(WAITING), *due_where)
            .order_by(*_claim_order(OUTBOX.c))
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    firsts = [
        select(OUTBOX.c.id, OUTBOX.c.priority, OUTBOX.c.due_at)
        .where(OUTBOX.c.status == status, *due_where)
        .order_by(*_claim_order(OUTBOX.c))
        .limit(limit)
        .subquery()
        for status in WAITING
    ]
    both = union_all(*(select(first) for first in firsts)).subquery()
    return select(both.c.id).order_by(*_claim_order(both.c)).limit(limit).scalar_subquery()


def _lock_customers(conn: Connection, ids: set[int]) -> dict[int, profiles.Profile]:
    """The customers of the claimed rows, locked, with their tags: templates may ask for
    ``customer.tags``, and one query gives them to the whole batch, so a message shows
    what its preview showed."""
    if not ids:  # a batch of receipts to strangers: no statement
        return {}
    rows = conn.execute(_customers_statement(conn.dialect.name), {"ids": sorted(ids)})
    found = rows.mappings().all()
    tags = profiles.tags_of(conn, [r["id"] for r in found]) if found else {}
    return {r["id"]: profiles.load(r, tags.get(r["id"], [])) for r in found}


@cache
def _customers_statement(dialect: str) -> Select[Any]:
    """Built once, as the claim's statements are (``_claim_statement``)."""
    query = (
        select(profiles.CUSTOMERS)
        .where(bulk.any_of(profiles.CUSTOMERS.c.id, "ids", dialect))
        .order_by(profiles.CUSTOMERS.c.id)
    )
    return query.with_for_update() if dialect == "postgresql" else query


def contacts(
    conn: Connection, customer_ids: list[int], now: datetime, exclude: Collection[int] = ()
) -> dict[int, list[throttle.Contact]]:
    """Non-transactional messages sent or in flight to these customers in the last month.
    Nothing for no customer, without a query: SQLite reads an empty ``IN`` through the status
    index, every message ever sent, while the claim holds the write lock."""
    if not customer_ids:
        return {}
    params = {"ids": customer_ids, "since": now - HISTORY_WINDOW}
    history: dict[int, list[throttle.Contact]] = {}
    for row in conn.execute(_contacts_statement(conn.dialect.name), params):
        if row.id not in exclude:
            history.setdefault(row.customer_id, []).append(
                throttle.Contact(row.reserved_at, row.category)
            )
    return history


@cache
def _contacts_statement(dialect: str) -> Select[Any]:
    return select(OUTBOX.c.id, OUTBOX.c.customer_id, OUTBOX.c.category, OUTBOX.c.reserved_at).where(
        bulk.any_of(OUTBOX.c.customer_id, "ids", dialect),
        OUTBOX.c.reserved_at >= bindparam("since"),
        OUTBOX.c.status.in_([OutboxStatus.SENDING, OutboxStatus.SENT]),
        OUTBOX.c.category != Category.TRANSACTIONAL,
    )


def customer_state(
    customer: profiles.Profile,
    history: Sequence[throttle.Contact],
    fallback: ZoneInfo,
) -> throttle.CustomerState:
    """What the throttle needs to know about a customer, from the stored profile."""
    overrides = customer.caps_override or {}
    return throttle.CustomerState(
        zone=ZoneInfo(customer.timezone) if customer.timezone else fallback,
        history=history,
        suppressed_reason=customer.suppressed_reason,
        unsubscribed_at=customer.unsubscribed_at,
        marketing_consent=customer.marketing_consent,
        relationship_consent=customer.relationship_consent,
        pause_until=customer.pause_until,
        caps_override={k: throttle.Caps(**v) for k, v in overrides.items()},
    )


def next_contact(
    conn: Connection, customer: profiles.Profile, now: datetime, settings: Settings
) -> dict[str, datetime | None]:
    """When marketing and relationship mail could next go to the customer (None: never), as
    the throttle would decide it for a message claimed now."""
    recent = contacts(conn, [customer.id], now).get(customer.id, [])
    state = customer_state(customer, recent, settings.business_hours.timezone)
    rules = throttle.Rules.from_settings(settings.throttle)
    return {c: throttle.next_allowed(c, now, state, rules) for c in NON_TRANSACTIONAL}


def last_contact(conn: Connection, customer_id: int) -> dict[str, Any] | None:
    """The latest message the SMTP server accepted for the customer, of any category."""
    query = (
        select(OUTBOX)
        .where(OUTBOX.c.customer_id == customer_id, OUTBOX.c.sent_at.is_not(None))
        .order_by(OUTBOX.c.sent_at.desc())
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def _decide_all(
    rows: list[dict[str, Any]],
    locked: dict[int, profiles.Profile],
    history: dict[int, list[throttle.Contact]],
    now: datetime,
    policy: Policy,
) -> tuple[list[Claimed], list[dict[str, Any]]]:
    """In priority order, so the higher priority takes a contested slot. The changes are
    those of the rows not sent now: the claim already wrote each row as sent now."""
    keep: list[Claimed] = []
    changes: list[dict[str, Any]] = []
    for row in rows:
        customer = locked.get(row["customer_id"])
        decision = _decide(row, customer, history, now, policy)
        if decision.action != "send":
            changes.append(_change(row, decision))
        else:
            keep.append(_claimed(row, customer))
            if customer is not None and row["category"] != Category.TRANSACTIONAL:
                history[customer.id].append(throttle.Contact(now, row["category"]))
    return keep, changes


def _decide(
    row: dict[str, Any],
    customer: profiles.Profile | None,
    history: dict[int, list[throttle.Contact]],
    now: datetime,
    policy: Policy,
) -> throttle.Decision:
    """A message to an address that is no customer (a test send) is transactional only."""
    if customer is None:
        if row["category"] == Category.TRANSACTIONAL:
            return throttle.Decision(action="send", at=None, reason="sent", rule=None)
        return throttle.Decision(
            action="skip", at=None, reason="no customer with this address", rule="customer"
        )
    contacts = history.setdefault(customer.id, [])
    state = customer_state(customer, contacts, policy.fallback_zone)
    return throttle.decide(row["category"], now, row["valid_until"], state, policy.rules)


_STATUS_OF = {
    "send": OutboxStatus.SENDING,
    "defer": OutboxStatus.DEFERRED,
    "expire": OutboxStatus.EXPIRED,
    "skip": OutboxStatus.SKIPPED,
}


def _change(row: dict[str, Any], decision: throttle.Decision) -> dict[str, Any]:
    """A claimed row that is not sent now: back to waiting, or done with, and why."""
    deferred = decision.action == "defer"
    return {
        "_id": row["id"],
        "status": _STATUS_OF[decision.action],
        "due_at": decision.at if deferred and decision.at else row["due_at"],
        "reserved_at": None,
        "lease_until": None,
        "reason": _reason(decision),
    }


def _reason(decision: throttle.Decision) -> str:
    if decision.action == "defer" and decision.at:
        return f"{_DEFERRED_UNTIL} {decision.at:%Y-%m-%d %H:%M} UTC: {decision.reason}"
    return decision.reason


def cause(reason: str) -> str:
    """A stored reason without the time a deferral named: one cause, whatever the time."""
    return _DEFERRED_PREFIX.sub("", reason)


def _apply(conn: Connection, changes: list[dict[str, Any]], now: datetime) -> None:
    if not changes:  # every claimed row is sent now
        return
    statement = (
        update(OUTBOX)
        .where(OUTBOX.c.id == bindparam("_id"))
        .values(
            status=bindparam("status"),
            due_at=bindparam("due_at"),
            reserved_at=bindparam("reserved_at"),
            reason=bindparam("reason"),
            lease_until=bindparam("lease_until"),
            updated_at=now,
        )
    )
    conn.execute(statement, changes)


class Result(StrEnum):
    """What became of one claimed message; also the outcome its attempt records."""

    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    RELEASED = "released"  # back to the queue untried: no attempt is recorded
    LATE = "late"  # only on an attempt: the result of a worker that had lost the lease


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What became of one claimed message."""

    outbox_id: int
    result: Result
    at: datetime
    reason: str | None = None
    smtp_code: int | None = None
    smtp_reply: str | None = None
    retry_at: datetime | None = None
    message_id: str | None = None
    subject: str | None = None


def record(engine: Engine, outcomes: Sequence[Outcome], held: Mapping[int, int]) -> list[int]:
    """Write a batch of outcomes and their attempts in one transaction, each only if its row
    still holds the lease token in ``held`` (see ``leases``); returns the rows whose result
    came too late, each logged as a late attempt and nothing else."""
    if not outcomes:
        return []
    with db.begin_writing(engine) as conn:
        for result, statement in _RESULT_STATEMENTS.items():
            params = [_params(o, held) for o in outcomes if o.result == result]
            if params:
                conn.execute(statement, params)
        # after the fenced updates: a row they matched is locked by this transaction, and a
        # token that did not match only grows, so this split is exact
        lost = _lost(conn, held, [o.outbox_id for o in outcomes])
        current = [o for o in outcomes if o.outbox_id not in lost]
        attempts = [_attempt(o) for o in current if o.result != Result.RELEASED]
        attempts += [_late(o) for o in outcomes if o.outbox_id in lost]
        if attempts:
            conn.execute(insert(ATTEMPTS), attempts)
        sent = [o for o in current if o.result == Result.SENT]
        sent_ids = [o.outbox_id for o in sent]
        _reached(conn, sent_ids)
        if sent:
            now = max(o.at for o in sent)
            webhooks.record(conn, EventType.MESSAGE_SENT, _told(conn, sent_ids), now)
    return sorted(lost)


def _lost(conn: Connection, held: Mapping[int, int], ids: list[int]) -> set[int]:
    """The rows another claim has taken since this worker's."""
    tokens = conn.execute(_tokens_statement(conn.dialect.name), {"ids": ids})
    return {row_id for row_id, token in tokens if token != held[row_id]}


@cache
def _tokens_statement(dialect: str) -> Select[int, int]:
    return select(OUTBOX.c.id, OUTBOX.c.lease_token).where(bulk.any_of(OUTBOX.c.id, "ids", dialect))


def extend(engine: Engine, held: Mapping[int, int], until: datetime) -> int:
    """Push the lease of rows still being sent by this worker to ``until``, so a batch that
    runs long (a slow server, a low rate) is not claimed again while it is in flight;
    returns how many rows this worker still holds."""
    if not held:
        return 0
    statement = (
        update(OUTBOX)
        .where(
            OUTBOX.c.id == bindparam("_id"),
            OUTBOX.c.lease_token == bindparam("_lease"),
            OUTBOX.c.status == OutboxStatus.SENDING,
        )
        .values(lease_until=until)
    )
    with engine.begin() as conn:
        conn.execute(statement, [{"_id": i, "_lease": token} for i, token in held.items()])
        still = select(func.count()).where(
            OUTBOX.c.id.in_(list(held)), OUTBOX.c.lease_until == until
        )
        return int(conn.execute(still).scalar_one())


def _told(conn: Connection, ids: list[int]) -> Iterator[dict[str, Any]]:
    """What a ``message.sent`` or ``message.bounced`` webhook says of each message, read only
    when some endpoint wants it."""
    query = select(
        OUTBOX.c.id,
        OUTBOX.c.message_id,
        OUTBOX.c.customer_id,
        OUTBOX.c.to_address,
        OUTBOX.c.category,
        OUTBOX.c.template,
        OUTBOX.c.status,
        OUTBOX.c.reason,
        OUTBOX.c.sent_at,
    ).where(OUTBOX.c.id.in_(ids))
    for row in conn.execute(query.order_by(OUTBOX.c.id)).mappings():
        yield {
            "outbox_id": row["id"],
            "message_id": row["message_id"],
            "customer_id": row["customer_id"],
            "to": row["to_address"],
            "category": row["category"],
            "template": row["template"],
            "sent_at": row["sent_at"],
            **({"reason": row["reason"]} if row["status"] == OutboxStatus.BOUNCED else {}),
        }


def _reached(conn: Connection, sent: list[int]) -> None:
    """What the server accepted is each customer's latest contact from us, by email: the
    latest ``sent_at`` the fenced update just wrote."""
    if not sent:
        return
    contact_log.reached(conn, _latest_sent(conn.dialect.name), {"ids": sent})


@cache
def _latest_sent(dialect: str) -> Select[tuple[int, datetime]]:
    return (
        select(OUTBOX.c.customer_id, func.max(OUTBOX.c.sent_at))
        .where(bulk.any_of(OUTBOX.c.id, "ids", dialect), OUTBOX.c.customer_id.is_not(None))
        .group_by(OUTBOX.c.customer_id)
        .order_by(OUTBOX.c.customer_id)
    )


def _params(outcome: Outcome, held: Mapping[int, int]) -> dict[str, Any]:
    return {
        "_id": outcome.outbox_id,
        "_lease": held[outcome.outbox_id],
        "_at": outcome.at,
        "_reason": outcome.reason,
        "_retry_at": outcome.retry_at,
        "_message_id": outcome.message_id,
        "_subject": outcome.subject,
    }


def _attempt(outcome: Outcome) -> dict[str, Any]:
    return {
        "outbox_id": outcome.outbox_id,
        "at": outcome.at,
        "outcome": outcome.result,
        "smtp_code": outcome.smtp_code,
        "smtp_reply": (outcome.smtp_reply or outcome.reason or "")[:2000] or None,
    }


def _late(outcome: Outcome) -> dict[str, Any]:
    """The result of a worker that had lost its lease, kept for the record only."""
    said = outcome.smtp_reply or outcome.reason or ""
    return {
        **_attempt(outcome),
        "outcome": Result.LATE,
        "smtp_reply": f"late result after lease lost: {outcome.result}: {said}"[:2000],
    }


def _result_statement(**values: Any) -> Any:
    """A message an operator cancelled while it was being sent takes no result, so its
    worker cannot queue it again; one the server accepted is recorded as sent all the
    same, because that is what the customer got."""
    common: dict[str, Any] = {"lease_until": None, "updated_at": bindparam("_at")}
    statement = update(OUTBOX).where(
        OUTBOX.c.id == bindparam("_id"), OUTBOX.c.lease_token == bindparam("_lease")
    )
    if values["status"] != OutboxStatus.SENT:
        statement = statement.where(OUTBOX.c.status != OutboxStatus.CANCELLED)
    return statement.values(**common, **values)


_RESULT_STATEMENTS = {
    Result.SENT: _result_statement(
        status=OutboxStatus.SENT,
        sent_at=bindparam("_at"),
        message_id=bindparam("_message_id"),
        subject=bindparam("_subject"),
        reason=None,
        attempts=OUTBOX.c.attempts + 1,
    ),
    Result.RETRY: _result_statement(
        status=OutboxStatus.QUEUED,
        due_at=bindparam("_retry_at"),
        reserved_at=None,
        reason=bindparam("_reason"),
        attempts=OUTBOX.c.attempts + 1,
    ),
    Result.FAILED: _result_statement(
        status=OutboxStatus.FAILED, reason=bindparam("_reason"), attempts=OUTBOX.c.attempts + 1
    ),
    Result.RELEASED: _result_statement(
        status=OutboxStatus.QUEUED, reserved_at=None, reason=bindparam("_reason")
    ),
}


def release_expired_leases(engine: Engine, now: datetime) -> int:
    """Rows whose worker vanished go back to the queue (and may be sent once more)."""
    return _requeue(engine, OUTBOX.c.lease_until < now, now)


def take_back(engine: Engine, now: datetime, workers: Collection[str] | None) -> int:
    """What processes that are gone were sending goes back to the queue at once, not when
    the lease runs out: those of ``workers``, or every row in flight when None (a daemon
    starting on SQLite, where it is the only process)."""
    if workers is not None and not workers:
        return 0
    held = true() if workers is None else OUTBOX.c.worker_id.in_(workers)
    return _requeue(engine, held, now)


def _requeue(engine: Engine, held: ColumnElement[bool], now: datetime) -> int:
    with engine.begin() as conn:
        result = conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.status == OutboxStatus.SENDING, held)
            .values(
                status=OutboxStatus.QUEUED,
                lease_until=None,
                reserved_at=None,
                worker_id=None,
                reason="queued again: the worker that held it stopped before finishing",
                updated_at=now,
            )
        )
    return int(result.rowcount)


def next_due(
    engine: Engine, *, skip_domains: Collection[str] = (), skip_categories: Collection[str] = ()
) -> datetime | None:
    """When the earliest queued message falls due, so an idle worker knows how long to rest;
    messages to ``skip_domains`` (paced for now) and of ``skip_categories`` (held) are left out."""
    with engine.connect() as conn:
        skipped = _not_skipped(conn.dialect.name, bool(skip_domains), bool(skip_categories))
        query = select(OUTBOX.c.due_at).where(OUTBOX.c.status.in_(WAITING), *skipped)
        first = query.order_by(OUTBOX.c.due_at).limit(1)
        return conn.execute(first, _skips(skip_domains, skip_categories)).scalar_one_or_none()


RETRYABLE = (
    OutboxStatus.FAILED,
    OutboxStatus.EXPIRED,
    OutboxStatus.SKIPPED,
    OutboxStatus.CANCELLED,
    OutboxStatus.QUEUED,
    OutboxStatus.DEFERRED,
)
# not sent yet, and not settled: what an operator may stop
CANCELLABLE = (*WAITING, OutboxStatus.SENDING)


def retry(conn: Connection, outbox_id: int, now: datetime) -> bool:
    """An operator's retry: due now, with a fresh validity window if it had expired."""
    row = conn.execute(select(OUTBOX).where(OUTBOX.c.id == outbox_id)).mappings().one_or_none()
    if row is None or row["status"] not in RETRYABLE:
        return False
    window = (row["valid_until"] - row["due_at"]) if row["valid_until"] else None
    conn.execute(
        update(OUTBOX)
        .where(OUTBOX.c.id == outbox_id)
        .values(
            status=OutboxStatus.QUEUED,
            due_at=now,
            valid_until=now + window if window else None,
            reason="queued again by an operator",
            updated_at=now,
        )
    )
    return True


def cancel(conn: Connection, outbox_id: int, now: datetime) -> bool:
    """An operator's stop for a message that has not gone: waiting, or stuck while being
    sent. A worker still holding it cannot queue it again (see ``_result_statement``)."""
    result = conn.execute(
        update(OUTBOX)
        .where(OUTBOX.c.id == outbox_id, OUTBOX.c.status.in_(CANCELLABLE))
        .values(
            status=OutboxStatus.CANCELLED,
            lease_until=None,
            reason="cancelled by an operator",
            updated_at=now,
        )
    )
    return bool(result.rowcount)


def find(
    conn: Connection,
    *,
    status: str | None = None,
    customer_id: int | None = None,
    limit: int = 50,
    first: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first; with ``first``, messages of that status come before the rest (an
    operator's view puts failures on top)."""
    order = [] if first is None else [case((OUTBOX.c.status == first, 0), else_=1)]
    query = select(OUTBOX).order_by(*order, OUTBOX.c.id.desc()).limit(limit)
    if status:
        query = query.where(OUTBOX.c.status == status)
    if customer_id is not None:
        query = query.where(OUTBOX.c.customer_id == customer_id)
    return [dict(r) for r in conn.execute(query).mappings()]


def counts(conn: Connection) -> dict[str, int]:
    """How many messages are in each status; statuses with none are left out."""
    query = select(OUTBOX.c.status, func.count()).group_by(OUTBOX.c.status)
    return {status: count for status, count in conn.execute(query)}


# built once: the API reads a message back on every replay and every look
_BY_ID = select(OUTBOX).where(OUTBOX.c.id == bindparam("_id"))
_BY_KEY = select(OUTBOX).where(OUTBOX.c.dedupe_key == bindparam("_key"))
_ATTEMPTS_OF = (
    select(ATTEMPTS).where(ATTEMPTS.c.outbox_id == bindparam("_id")).order_by(ATTEMPTS.c.at)
)


def get(conn: Connection, outbox_id: int) -> dict[str, Any] | None:
    return _with_attempts(conn, conn.execute(_BY_ID, {"_id": outbox_id}).mappings().one_or_none())


def get_by_key(conn: Connection, dedupe_key: str) -> dict[str, Any] | None:
    """As ``get``, the message queued under this dedupe key."""
    found = conn.execute(_BY_KEY, {"_key": dedupe_key}).mappings().one_or_none()
    return _with_attempts(conn, found)


def _with_attempts(conn: Connection, row: RowMapping | None) -> dict[str, Any] | None:
    if row is None:
        return None
    attempts = conn.execute(_ATTEMPTS_OF, {"_id": row["id"]}).mappings()
    return {**row, "attempts_log": [dict(a) for a in attempts]}
