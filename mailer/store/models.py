"""The tables. Every timestamp is timezone-aware UTC (see ``db.UTCDateTime``).

Changing a table means adding an Alembic revision in ``mailer/store/migrations/versions``; a test
fails when these models and the migrations disagree.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Table,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from mailer.store.db import UTCDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


def _when(nullable: bool = True, **kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, nullable=nullable, **kwargs)


def _belongs_to(parent: str) -> Any:
    """A required link to the row this one is about, gone when that row is deleted."""
    foreign = ForeignKey(parent, ondelete="CASCADE")
    return Field(sa_column=Column(Integer, foreign, index=True, nullable=False))


class Customer(SQLModel, table=True):
    __tablename__ = "customers"
    __table_args__ = (
        Index("ix_customers_birthday", "birth_month", "birth_day"),
        # schedules fire per zone in use and select each zone's customers
        Index("ix_customers_timezone", "timezone"),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True, description="lower-cased, validated")
    name: str = Field(default="", max_length=200)
    first_name: str = Field(default="", max_length=100)
    locale: str | None = Field(default=None, max_length=35)
    timezone: str | None = Field(default=None, max_length=64, description="IANA zone")
    birth_month: int | None = None
    birth_day: int | None = None
    birth_year: int | None = Field(default=None, description="unknown when the customer said so")
    fields: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    marketing_consent: bool = True
    relationship_consent: bool = True
    unsubscribed_at: datetime | None = _when(description="no marketing or relationship mail")
    suppressed_reason: str | None = Field(default=None, max_length=200)
    pause_until: datetime | None = _when()
    caps_override: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    source: str = Field(default="import", max_length=20)
    # where the marketing consent was given, when a customer confirmed it themselves
    consent_at: datetime | None = _when(description="when the customer confirmed marketing")
    consent_source: str | None = Field(default=None, max_length=50, description="e.g. web form")
    consent_ip: str | None = Field(default=None, max_length=45, description="who confirmed")
    created_at: datetime = _when(nullable=False, default_factory=utcnow)
    updated_at: datetime = _when(nullable=False, default_factory=utcnow)
    search_text: str = Field(
        default="",
        sa_column_kwargs={"server_default": ""},
        description="email, name and first name case-folded by customers.profiles on each write",
    )


class ErasedAddress(SQLModel, table=True):
    """An address whose customer asked to be forgotten, kept only as a SHA-256 hash so that
    it is never mailed again and nothing else about the person remains."""

    __tablename__ = "erased_addresses"

    address_hash: str = Field(primary_key=True, max_length=64)
    erased_at: datetime = _when(nullable=False)


class CustomerChange(SQLModel, table=True):
    """One field of a customer changed by a person or an import: who, when, from what to
    what (JSON). Erasure clears the values and keeps who and when."""

    __tablename__ = "customer_changes"
    __table_args__ = (Index("ix_customer_changes_customer_at", "customer_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(
        sa_column=Column(Integer, ForeignKey("customers.id", ondelete="CASCADE"), nullable=False)
    )
    at: datetime = _when(nullable=False)
    actor: str = Field(max_length=100, description="a user's name, or import:FILE")
    field: str = Field(max_length=200, description="a column, tags, or fields.<key>")
    before: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    after: Any = Field(default=None, sa_column=Column(JSON, nullable=True))


class CustomerTag(SQLModel, table=True):
    """Tags live in their own indexed table so audiences are chosen by set-based queries."""

    __tablename__ = "customer_tags"

    customer_id: int = Field(
        sa_column=Column(Integer, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True)
    )
    tag: str = Field(max_length=100, primary_key=True, index=True)


class OutboxStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    SKIPPED = "skipped"
    EXPIRED = "expired"
    FAILED = "failed"
    BOUNCED = "bounced"  # accepted by SMTP, then returned as permanently undeliverable
    CANCELLED = "cancelled"  # stopped by an operator before it was sent


class OutboxMessage(SQLModel, table=True):
    """One logical message. Its dedupe key makes queueing it twice a no-op."""

    __tablename__ = "outbox"
    __table_args__ = (
        # the claim's ORDER BY, so due rows are found without sorting the queue (on SQLite,
        # one status at a time; PostgreSQL sorts what its IN over both statuses finds)
        Index("ix_outbox_claim", "status", text("priority DESC"), "due_at"),
        # the throttle's look-back over a customer's recent contacts
        Index("ix_outbox_customer_reserved", "customer_id", "reserved_at"),
        # the inbox's look at what was sent to one address (acknowledgements per sender)
        Index("ix_outbox_to_created", "to_address", "created_at"),
        # a bounce names the message it returns by its Message-ID
        Index("ix_outbox_message_id", "message_id"),
        # a schedule run's results, and a cancelled webinar's messages still waiting
        Index("ix_outbox_run", "run_id", "status"),
        # a customer's timeline pages through their messages by when each last changed
        Index("ix_outbox_customer_updated", "customer_id", "updated_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(max_length=300, unique=True)
    customer_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("customers.id", ondelete="SET NULL"))
    )
    to_address: str = Field(max_length=320)
    category: str = Field(max_length=20)
    template: str = Field(max_length=100)
    locale: str | None = Field(default=None, max_length=35)
    context: dict[str, Any] = Field(
        default_factory=dict, sa_type=JSON, description="template variables, see jsonvalues"
    )
    headers: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    envelope_from: str | None = Field(
        default=None, max_length=320, description='None: the sender address; "": null sender'
    )
    priority: int = 0
    status: str = Field(default=OutboxStatus.QUEUED, max_length=20)
    reason: str | None = Field(default=None, max_length=1000)
    due_at: datetime = _when(nullable=False)
    valid_until: datetime | None = _when()
    lease_until: datetime | None = _when()
    lease_token: int = Field(  # bumped by every claim: a result counts only from its holder
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    attempts: int = 0
    message_id: str | None = Field(default=None, max_length=300)
    subject: str | None = Field(default=None, max_length=998, description="as rendered at send")
    created_at: datetime = _when(nullable=False, default_factory=utcnow)
    updated_at: datetime = _when(nullable=False, default_factory=utcnow)
    reserved_at: datetime | None = _when(description="when the throttle gave it a slot")
    worker_id: str | None = Field(
        default=None, max_length=64, description="the process that claimed it (workers.id)"
    )
    sent_at: datetime | None = _when()
    run_id: int | None = Field(default=None, description="the schedule run that queued it")
    request_hash: str | None = Field(
        default=None, max_length=64, description="SHA-256 of the API call that queued it"
    )


class DeliveryAttempt(SQLModel, table=True):
    """Every try at handing a message to SMTP, with the server's answer."""

    __tablename__ = "delivery_attempts"

    id: int | None = Field(default=None, primary_key=True)
    outbox_id: int = _belongs_to("outbox.id")
    at: datetime = _when(nullable=False)
    outcome: str = Field(max_length=20)
    smtp_code: int | None = None
    smtp_reply: str | None = Field(default=None, max_length=2000)


class OutboxAttachment(SQLModel, table=True):
    """A file sent with a transactional message, kept with it until it is sent and after, so
    a retry sends the same bytes; erased with the message's customer."""

    __tablename__ = "outbox_attachments"

    id: int | None = Field(default=None, primary_key=True)
    outbox_id: int = _belongs_to("outbox.id")
    position: int = Field(description="the order the caller gave, from 0")
    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=255)
    content: bytes = Field(default=b"", sa_column=Column(LargeBinary, nullable=False))


class InquiryStatus(StrEnum):
    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    OPEN = "open"
    ANSWERED = "answered"
    CLOSED = "closed"
    FAILED = "failed"


class Inquiry(SQLModel, table=True):
    """A message a customer wrote to support; the raw bytes are kept before any decision."""

    __tablename__ = "inquiries"
    # Broken mailers reuse Message-IDs: only the same ID with the same content is one message.
    __table_args__ = (
        UniqueConstraint("message_id", "fingerprint", name="uq_inquiries_message_fingerprint"),
        # a customer's timeline pages through what they wrote by when it came
        Index("ix_inquiries_customer_received", "customer_id", "received_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_id: str | None = Field(default=None, max_length=998, index=True)
    fingerprint: str | None = Field(
        default=None, max_length=64, description="sha256 of the message without trace headers"
    )
    thread_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("inquiries.id"), index=True)
    )
    customer_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("customers.id", ondelete="SET NULL"), index=True),
    )
    sender: str = Field(default="", max_length=320, index=True)
    sender_name: str = Field(default="", max_length=200)
    subject: str = Field(default="", max_length=998)
    body_text: str = ""
    reply_text: str = Field(default="", description="body without the quoted history")
    attachments: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    defects: list[str] = Field(default_factory=list, sa_type=JSON)
    received_at: datetime = _when(nullable=False, index=True)
    status: str = Field(default=InquiryStatus.NEW, max_length=20, index=True)
    decision: str | None = Field(default=None, max_length=20)
    reasons: list[str] = Field(default_factory=list, sa_type=JSON)
    error: str | None = None
    raw: bytes = Field(default=b"", sa_column=Column(LargeBinary, nullable=False))
    raw_truncated: bool = False
    assignee: str | None = Field(
        default=None, max_length=100, index=True, description="a user's name"
    )
    claimed_thread_id: int | None = Field(
        default=None, description="the inquiry a non-participant's message said it continues"
    )
    channel: str = Field(
        default="mail",
        max_length=20,
        sa_column_kwargs={"server_default": "mail"},
        description="how it came: mail, or web (the website's inquiry form)",
    )


class MailboxState(SQLModel, table=True):
    """How far the inbox watcher got, so a restart resumes without losing or repeating mail."""

    __tablename__ = "mailbox_state"

    mailbox: str = Field(primary_key=True, max_length=200)
    uidvalidity: int = Field(sa_type=BigInteger)
    last_uid: int = Field(default=0, sa_type=BigInteger)
    updated_at: datetime = _when(nullable=False, default_factory=utcnow)


# the watcher writes it, the health page reads it: here, so the web needs no watcher
MAILBOX_STATE: Table = MailboxState.__table__  # type: ignore[attr-defined]


class Worker(SQLModel, table=True):
    """A `mailer run` process on PostgreSQL, alive while ``seen_at`` is recent: the messages
    a dead one held are taken back at once instead of when their leases run out."""

    __tablename__ = "workers"

    id: str = Field(primary_key=True, max_length=64)
    host: str = Field(max_length=255)
    pid: int
    started_at: datetime = _when(nullable=False)
    seen_at: datetime = _when(nullable=False)


WORKERS: Table = Worker.__table__  # type: ignore[attr-defined]


class SandboxMessage(SQLModel, table=True):
    """A message the local sandbox server captured instead of delivering it."""

    __tablename__ = "sandbox_messages"

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = _when(nullable=False, index=True)
    mail_from: str = Field(default="", max_length=320)
    recipients: list[str] = Field(default_factory=list, sa_type=JSON)
    subject: str = Field(default="", max_length=998)
    message_id: str | None = Field(default=None, max_length=998)
    raw: bytes = Field(default=b"", sa_column=Column(LargeBinary, nullable=False))


class RunStatus(StrEnum):
    RUNNING = "running"  # still queueing; a restart finishes it (dedupe keys make that safe)
    DONE = "done"


class ScheduleRun(SQLModel, table=True):
    """One occurrence of a schedule for one zone's customers, fanned out once.

    The unique (schedule, occurrence, zone) makes a double fire, an overlap or a catch-up
    after a restart a no-op; the counts are what marketing sees for the run.
    """

    __tablename__ = "schedule_runs"
    __table_args__ = (UniqueConstraint("schedule", "occurrence", "zone", name="uq_schedule_run"),)

    id: int | None = Field(default=None, primary_key=True)
    schedule: str = Field(max_length=100, index=True)
    occurrence: str = Field(max_length=100)
    zone: str = Field(default="", max_length=64)
    kind: str = Field(max_length=20)
    planned_at: datetime = _when(nullable=False)
    started_at: datetime = _when(nullable=False)
    finished_at: datetime | None = _when()
    status: str = Field(default=RunStatus.RUNNING, max_length=20)
    queued: int = 0
    skipped: int = 0


class ScheduleSeen(SQLModel, table=True):
    """When mailer first loaded a schedule to fire it: catch-up never reaches back before
    this, so a new file or a fresh install does not send what was planned before it."""

    __tablename__ = "schedules_seen"

    schedule: str = Field(primary_key=True, max_length=100)
    first_seen_at: datetime = _when(nullable=False)


class WebinarEvent(SQLModel, table=True):
    """A webinar's calendar identity: the UID never changes, SEQUENCE grows with each change
    of time or place, so calendars replace the event instead of adding a second one."""

    __tablename__ = "webinar_events"

    schedule: str = Field(primary_key=True, max_length=100)
    uid: str = Field(max_length=300)
    sequence: int = 0
    fingerprint: str = Field(max_length=500)
    updated_at: datetime = _when(nullable=False, default_factory=utcnow)


class Role(StrEnum):
    SUPPORT = "support"
    MARKETING = "marketing"
    ADMIN = "admin"


class User(SQLModel, table=True):
    """Someone who signs in to the web app; the password is kept only as an argon2 hash."""

    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    role: str = Field(max_length=20)
    password_hash: str = Field(max_length=200)
    disabled: bool = False
    created_at: datetime = _when(nullable=False, default_factory=utcnow)
    display_name: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=64, description="IANA zone")
    email: str | None = Field(default=None, max_length=320, description="for the digest")


class WebSession(SQLModel, table=True):
    """A signed-in browser; the cookie carries only a random id, kept here as its SHA-256,
    so signing out, disabling the user or a new password ends it in every process.
    Written only by mailer.staff.sessions."""

    __tablename__ = "web_sessions"

    id_hash: str = Field(primary_key=True, max_length=64, description="SHA-256 of the id, hex")
    user_id: int = _belongs_to("users.id")
    created_at: datetime = _when(nullable=False)
    last_seen_at: datetime = _when(nullable=False)
    expires_at: datetime = _when(nullable=False, index=True)


class SignInAttempt(SQLModel, table=True):
    """A sign-in under way or failed, counted by every process serving the web app; written
    only by mailer.staff.signins."""

    __tablename__ = "sign_in_attempts"
    __table_args__ = (Index("ix_sign_in_attempts_client_at", "client", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    client: str = Field(max_length=64, description="the client's address")
    name: str | None = Field(
        default=None, max_length=100, description="casefolded; None once forgiven for the name"
    )
    at: datetime = _when(nullable=False)


class InquiryEvent(SQLModel, table=True):
    """What people did with an inquiry: status changes, assignments, internal notes."""

    __tablename__ = "inquiry_events"

    id: int | None = Field(default=None, primary_key=True)
    inquiry_id: int = _belongs_to("inquiries.id")
    at: datetime = _when(nullable=False)
    actor: str = Field(max_length=100)
    kind: str = Field(max_length=20)  # status, assign, note
    text: str = ""


class ContactKind(StrEnum):
    """Touches that are not mail; the column is a plain string so a new channel fits."""

    CALL = "call"
    MEETING = "meeting"
    NOTE = "note"


class Direction(StrEnum):
    OUT = "out"  # we reached them
    IN = "in"  # they reached us


class ContactEntry(SQLModel, table=True):
    """A call, meeting or note staff logged about a customer."""

    __tablename__ = "contacts"
    # a timeline of thousands pages by time without a scan
    __table_args__ = (Index("ix_contacts_customer_at", "customer_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(
        sa_column=Column(Integer, ForeignKey("customers.id", ondelete="CASCADE"), nullable=False)
    )
    kind: str = Field(max_length=20)
    direction: str | None = Field(default=None, max_length=3, description="notes have none")
    at: datetime = _when(nullable=False)
    duration_seconds: int | None = Field(default=None, description="calls")
    outcome: str = Field(default="", max_length=200)
    location: str = Field(default="", max_length=500, description="a meeting's place or link")
    attendees: list[str] = Field(default_factory=list, sa_type=JSON)
    note: str = ""
    logged_by: str = Field(max_length=100, description="a staff user's name")
    created_at: datetime = _when(nullable=False, default_factory=utcnow)


class LastContact(SQLModel, table=True):
    """When we last reached a customer and they last reached us, by which channel; kept as
    each touch is written, so the customer list sorts and filters by it without a scan."""

    __tablename__ = "last_contacts"
    # the customer list by last contact reads along this, both ways, and stops at a page
    __table_args__ = (Index("ix_last_contacts_last_at", "last_at", "customer_id"),)

    customer_id: int = Field(
        sa_column=Column(Integer, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True)
    )
    out_at: datetime | None = _when()
    out_channel: str | None = Field(default=None, max_length=20)
    in_at: datetime | None = _when()
    in_channel: str | None = Field(default=None, max_length=20)
    last_at: datetime | None = _when(description="the later of the two")


class SavedReply(SQLModel, table=True):
    """A canned response support starts a reply from: a Jinja template in the render
    sandbox, one per name and language."""

    __tablename__ = "saved_replies"
    __table_args__ = (UniqueConstraint("name", "locale", name="uq_saved_replies_name_locale"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    locale: str = Field(max_length=35)
    body: str = ""
    updated_at: datetime = _when(nullable=False)
    updated_by: str = Field(max_length=100)


class FollowUpStatus(StrEnum):
    OPEN = "open"
    DONE = "done"
    CANCELLED = "cancelled"  # a meeting called off: the customer was sent a cancellation


FOLLOWUP_UNTOLD = "told_due_at IS NULL OR told_due_at != due_at"


class FollowUp(SQLModel, table=True):
    """A dated reminder to contact a customer again; written by customers.followups."""

    __tablename__ = "followups"
    __table_args__ = (
        Index("ix_followups_status_due", "status", "due_at"),
        Index("ix_followups_assignee_status_due", "assignee", "status", "due_at"),
        # the rows a followup.due pass looks at: not those told already, however many
        Index(
            "ix_followups_untold_due",
            "status",
            "due_at",
            sqlite_where=text(FOLLOWUP_UNTOLD),
            postgresql_where=text(FOLLOWUP_UNTOLD),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = _belongs_to("customers.id")
    due_at: datetime = _when(nullable=False)
    assignee: str | None = Field(default=None, max_length=100, description="a user's name")
    note: str = ""
    inquiry_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("inquiries.id", ondelete="SET NULL"))
    )
    contact_id: int | None = Field(  # the call or meeting it came from
        default=None, sa_column=Column(Integer, ForeignKey("contacts.id", ondelete="SET NULL"))
    )
    status: str = Field(default=FollowUpStatus.OPEN, max_length=10)
    created_by: str = Field(max_length=100)
    created_at: datetime = _when(nullable=False, default_factory=utcnow)
    done_at: datetime | None = _when()
    done_by: str | None = Field(default=None, max_length=100)
    snoozed: int = 0
    # a meeting: due_at is when it starts; what its calendar event needs besides
    duration_minutes: int | None = Field(default=None, description="None: not a meeting")
    place: str | None = Field(default=None, max_length=500, description="a room or a link")
    attendees: list[str] | None = Field(default=None, sa_type=JSON, description="staff names")
    sequence: int = Field(default=0, description="the calendar event's SEQUENCE")
    # the due_at a followup.due webhook was recorded for: once per due time, in any process
    told_due_at: datetime | None = _when()


class TemplateVersion(SQLModel, table=True):
    """One save of a template variant from the browser, all its parts as saved; written by
    outbound.template_files. The files stay the source of truth; this is their history."""

    __tablename__ = "template_versions"
    __table_args__ = (Index("ix_template_versions_variant", "template", "variant", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    template: str = Field(max_length=100)
    variant: str = Field(max_length=35, description="the locale folder; '' for the default")
    subject: str
    html: str | None = None
    text: str | None = None
    saved_by: str = Field(max_length=100)
    saved_at: datetime = _when(nullable=False)


class CalendarReply(SQLModel, table=True):
    """A customer's latest answer to a calendar invitation of ours (a webinar's or a
    meeting's), as their calendar client mailed it back; written by inbound.rsvp."""

    __tablename__ = "calendar_replies"
    __table_args__ = (
        UniqueConstraint("uid", "customer_id", name="uq_calendar_replies_uid_customer"),
        Index("ix_calendar_replies_schedule", "schedule"),
    )

    id: int | None = Field(default=None, primary_key=True)
    uid: str = Field(max_length=300, description="the event's UID")
    customer_id: int = _belongs_to("customers.id")
    schedule: str | None = Field(default=None, max_length=100, description="a webinar's")
    followup_id: int | None = Field(  # a meeting's
        default=None, sa_column=Column(Integer, ForeignKey("followups.id", ondelete="CASCADE"))
    )
    answer: str = Field(max_length=10, description="accepted, tentative or declined")
    sequence: int = Field(default=0, description="the event version answered")
    stamp: datetime | None = _when(description="the reply's DTSTAMP")
    title: str = Field(default="", max_length=300)
    answered_at: datetime = _when(nullable=False, description="when the reply arrived")
    inquiry_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("inquiries.id", ondelete="SET NULL"))
    )


class OrderStatus(StrEnum):
    PLACED = "placed"
    RETURNED = "returned"  # its lines may be negative: what came back
    CANCELLED = "cancelled"


class Order(SQLModel, table=True):
    """What a customer bought, as the shop recorded it; written by commerce.orders. Amounts
    are integers in the currency's minor units (see mailer.core.money)."""

    __tablename__ = "orders"
    # a customer's purchase history, and the insight models' recency and frequency, by time
    __table_args__ = (Index("ix_orders_customer_ordered", "customer_id", "ordered_at"),)

    id: int | None = Field(default=None, primary_key=True)
    order_ref: str = Field(max_length=100, unique=True, description="the shop's order id")
    customer_id: int = Field(
        sa_column=Column(Integer, ForeignKey("customers.id", ondelete="CASCADE"), nullable=False)
    )
    ordered_at: datetime = _when(nullable=False)
    channel: str = Field(default="", max_length=50, description="web shop, phone, store, ...")
    currency: str = Field(max_length=3, description="ISO 4217")
    status: str = Field(default=OrderStatus.PLACED, max_length=20)
    created_at: datetime = _when(nullable=False, default_factory=utcnow)
    source: str = Field(default="", max_length=100, description="import:FILE")
    fingerprint: str = Field(max_length=64, description="its content, to tell a re-import")


class OrderLine(SQLModel, table=True):
    """One line item of an order; a return's quantities are negative."""

    __tablename__ = "order_lines"
    __table_args__ = (Index("ix_order_lines_sku", "sku"),)

    order_id: int = Field(
        sa_column=Column(Integer, ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True)
    )
    line_no: int = Field(primary_key=True, description="1, 2, ... in the file's order")
    sku: str = Field(max_length=100)
    product: str = Field(default="", max_length=200)
    category: str = Field(default="", max_length=100)
    quantity: int
    unit_price: int = Field(sa_type=BigInteger, description="minor units")
    unit_cost: int | None = Field(default=None, sa_type=BigInteger, description="minor units")


class Product(SQLModel, table=True):
    """The catalogue as the shop names it; written by commerce.products."""

    __tablename__ = "products"

    sku: str = Field(max_length=100, primary_key=True)
    name: str = Field(default="", max_length=200)
    category: str = Field(default="", max_length=100)
    updated_at: datetime = _when(nullable=False)


class CustomerInsight(SQLModel, table=True):
    """What a customer's orders up to ``as_of`` say about them; written only by
    commerce.insights (a refresh of everyone, or one customer after an order import).
    Money is in minor units of ``currency``, the customer's main currency (the one most of
    their orders are in): their figures come from their orders in it alone, since amounts in
    different currencies are never added together."""

    __tablename__ = "customer_insights"
    __table_args__ = (Index("ix_customer_insights_segment", "rfm_segment"),)

    customer_id: int = Field(
        sa_column=Column(Integer, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True)
    )
    as_of: date = Field(sa_type=Date)
    updated_at: datetime = _when(nullable=False)
    orders: int = Field(description="orders placed in any currency")
    first_order: date = Field(sa_type=Date)
    last_order: date = Field(sa_type=Date)
    recency_days: int = Field(description="days from the last order to as_of")
    frequency: int = Field(description="repeat purchase days: days with an order after the first")
    span_days: int = Field(description="days from the first order to the last")
    age_days: int = Field(description="days from the first order to as_of")
    currency: str = Field(max_length=3)
    monetary: int = Field(sa_type=BigInteger, description="placed less returned, minor units")
    mean_repeat: float = Field(description="mean amount of a repeat purchase day, minor units")
    margin: int | None = Field(default=None, sa_type=BigInteger, description="None: a cost unknown")
    r_score: int
    f_score: int
    m_score: int
    rfm_segment: str = Field(max_length=50)
    p_active: float | None = None
    horizon_days: int
    expected_orders: float | None = None
    clv: int | None = Field(default=None, sa_type=BigInteger, description="minor units")
    predicted_next_order: date | None = Field(default=None, sa_type=Date)
    next_order_confidence: float | None = None
    basis: str = Field(max_length=30, description="what the next order date rests on")
    one_time_buyer: bool
    preferred_channel: str = Field(default="", max_length=50)
    basket: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)


class InsightFit(SQLModel, table=True):
    """The purchase models as last fitted by a refresh (the newest row counts), so the
    update after an order import scores one customer without fitting again."""

    __tablename__ = "insight_fits"

    id: int | None = Field(default=None, primary_key=True)
    fitted_at: datetime = _when(nullable=False)
    as_of: date = Field(sa_type=Date)
    customers: int
    failure: str | None = Field(default=None, max_length=500, description="why no model")
    parameters: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class InsightReport(SQLModel, table=True):
    """The insight report as built at the end of the last refresh (the newest row counts),
    so the page and the CLI read one row instead of every order line."""

    __tablename__ = "insight_reports"

    id: int | None = Field(default=None, primary_key=True)
    fit_id: int | None = Field(default=None, description="the insight_fits row it is of")
    as_of: date | None = Field(default=None, sa_type=Date)
    timezone: str = Field(max_length=64, description="the business zone its days are in")
    report: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    built_at: datetime = _when(nullable=False)


class ApiKey(SQLModel, table=True):
    """A key another system sends to the HTTP API; written only by mailer.api.keys. The key
    itself is never stored: only its SHA-256 and a prefix people can tell it by."""

    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    prefix: str = Field(max_length=20, description="the key's start, shown to people")
    key_hash: str = Field(max_length=64, unique=True, description="SHA-256 of the key, hex")
    scopes: list[str] = Field(default_factory=list, sa_type=JSON)
    rate_per_minute: int | None = Field(default=None, description="None: [api] default")
    created_at: datetime = _when(nullable=False)
    created_by: str = Field(max_length=100)
    last_used_at: datetime | None = _when()
    revoked_at: datetime | None = _when()


class ApiRateWindow(SQLModel, table=True):
    """Requests one key made in one minute, counted by every process serving the API;
    written only by mailer.api.limits."""

    __tablename__ = "api_rate_windows"

    key_id: int = Field(
        sa_column=Column(Integer, ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True)
    )
    window_start: datetime = Field(sa_type=UTCDateTime, primary_key=True)
    requests: int


class ProductRecommendation(SQLModel, table=True):
    """What customers who bought ``sku`` also bought, closest first; written only by
    commerce.recommendations at each full insight refresh (see mailer.insight.cobought)."""

    __tablename__ = "product_recommendations"

    sku: str = Field(max_length=100, primary_key=True)
    rank: int = Field(primary_key=True, description="1 = the closest")
    other_sku: str = Field(max_length=100)
    customers: int = Field(description="customers who bought both")
    score: float = Field(description="cosine of the two SKUs' buyer sets")
    as_of: date = Field(sa_type=Date)


class WebhookEndpoint(SQLModel, table=True):
    """A URL an admin registered for some events; written only by mailer.hooks.endpoints.
    Removing one disables it, so its deliveries keep saying where they went."""

    __tablename__ = "webhook_endpoints"

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=2000)
    events: list[str] = Field(default_factory=list, sa_type=JSON)
    secret: str = Field(max_length=100, description="whsec_ and base64: the receiver's too")
    created_at: datetime = _when(nullable=False)
    created_by: str = Field(max_length=100)
    disabled_at: datetime | None = _when()


class WebhookStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(SQLModel, table=True):
    """One event on its way to one endpoint: the durable queue of webhooks. Rows are added
    by mailer.hooks.events in the transaction of the change they tell of, and written after
    that only by mailer.hooks.deliveries."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: int = _belongs_to("webhook_endpoints.id")
    event_type: str = Field(max_length=50)
    event_id: str = Field(max_length=64, description="webhook-id: the same on every attempt")
    customer_id: int | None = Field(default=None, index=True, description="whom it is about")
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    status: str = Field(default=WebhookStatus.QUEUED, max_length=10)
    attempts: int = 0
    next_attempt_at: datetime = _when(nullable=False)
    lease_until: datetime | None = _when()
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = _when(nullable=False)
    delivered_at: datetime | None = _when()


class WebhookAttempt(SQLModel, table=True):
    """Each POST of a delivery and what came back, for admins; written by
    mailer.hooks.deliveries."""

    __tablename__ = "webhook_attempts"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = _belongs_to("webhook_deliveries.id")
    at: datetime = _when(nullable=False)
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=500)
    duration_ms: int


class FormRateWindow(SQLModel, table=True):
    """Posts to the public web forms in one window, per client address or per e-mail
    address (kept as a hash), counted by every process serving the forms; written only by
    mailer.api.limits."""

    __tablename__ = "form_rate_windows"

    scope: str = Field(primary_key=True, max_length=20, description="ip or address")
    subject: str = Field(primary_key=True, max_length=64, description="sha256 of the ip or address")
    window_start: datetime = Field(sa_type=UTCDateTime, primary_key=True)
    requests: int


class RateBucket(SQLModel, table=True):
    """A rate shared by every process, as the time its next free slot starts (the virtual
    schedule of a token bucket); written only by mailer.outbound.rates."""

    __tablename__ = "rate_buckets"

    name: str = Field(primary_key=True, max_length=50)
    free_at: float = Field(description="seconds since the epoch when the next slot is free")


class CustomerEvent(SQLModel, table=True):
    """Something the shop saw a customer do (viewed_product, cart_abandoned, ...), sent by
    its API and shown on their timeline; written only by mailer.customers.events."""

    __tablename__ = "customer_events"
    __table_args__ = (
        # a timeline pages by time without a scan; a caller's id is kept once per customer
        Index("ix_customer_events_customer_at", "customer_id", "occurred_at"),
        # an event schedule's pass finds the events of one name due in a window
        Index("ix_customer_events_name_at", "name", "occurred_at"),
        UniqueConstraint("customer_id", "ref", name="uq_customer_events_customer_ref"),
    )

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(
        sa_column=Column(Integer, ForeignKey("customers.id", ondelete="CASCADE"), nullable=False)
    )
    name: str = Field(max_length=100)
    occurred_at: datetime = _when(nullable=False)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    ref: str | None = Field(default=None, max_length=200, description="the caller's id, if any")
    source: str = Field(max_length=120, description="api:<key name>")
    created_at: datetime = _when(nullable=False)


class BounceReport(SQLModel, table=True):
    """A bounce or complaint about one of our messages, as the report said it: the soft ones
    are counted to suppress an address that keeps failing; written only by
    mailer.outbound.bounces."""

    __tablename__ = "bounce_reports"
    __table_args__ = (Index("ix_bounce_reports_address_at", "address", "reported_at"),)

    id: int | None = Field(default=None, primary_key=True)
    outbox_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("outbox.id", ondelete="SET NULL"), index=True),
    )
    address: str = Field(max_length=320)
    kind: str = Field(max_length=20, description="hard, soft or complaint")
    status: str = Field(default="", max_length=20, description="the DSN status, e.g. 5.1.1")
    diagnostic: str = Field(default="", max_length=1000, description="the server's words")
    reported_at: datetime = _when(nullable=False)


class DomainPacing(SQLModel, table=True):
    """How fast one receiving domain, or a group of domains named in [pacing.groups], may
    get mail now: slowed down after it answered "try later", and the messages it took in
    the current minute; written only by mailer.outbound.pacing."""

    __tablename__ = "domain_pacing"

    key: str = Field(primary_key=True, max_length=255, description="a domain or a group's name")
    rate: int | None = Field(default=None, description="per minute now; None: its normal rate")
    slowed_until: datetime | None = _when()
    changed_at: datetime | None = _when(description="when the rate was last cut")
    reason: str | None = Field(default=None, max_length=500, description="the reply that cut it")
    window_start: datetime | None = _when(description="the start of the current minute")
    used: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
