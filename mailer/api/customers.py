"""``/customers``: upsert one or a batch, read one with their timeline, erase one.

An upsert is checked as a CSV import checks a row (``customers.csv_rows``) and stored as
an import stores it (``customers.profiles``), all or nothing: one bad item and the whole
call is refused, each bad item named by its index and field, so a shop can fix and send
the same call again.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from mailer.api.access import caller, state
from mailer.api.batches import Address, OneOrBatch
from mailer.api.bodies import JsonRoute
from mailer.api.keys import ApiKey, Scope
from mailer.api.problems import FieldError, Invalid, item_error, not_found
from mailer.customers import profiles
from mailer.customers.csv_rows import (
    KNOWN_COLUMNS,
    CustomerRow,
    InvalidRow,
    normalise_header,
    parse_row,
)
from mailer.relationship import privacy
from mailer.relationship.overview import overview
from mailer.relationship.timeline import Source

SOURCE = "api"  # a customer's source when the API added them
_COLUMNS: list[JsonValue] = [*sorted(KNOWN_COLUMNS)]  # what a custom field is not named
router = APIRouter(prefix="/customers", tags=["customers"], route_class=JsonRoute)


class CustomerIn(BaseModel):
    """A customer to add, or to update by address; what is left out keeps its stored value."""

    model_config = ConfigDict(extra="forbid")

    email: Address
    name: str | None = Field(None, max_length=200)
    first_name: str | None = Field(None, max_length=100)
    locale: str | None = Field(None, max_length=35, examples=["bg-BG"])
    timezone: str | None = Field(None, max_length=64, examples=["Europe/Sofia"])
    birthday: str | None = Field(
        None, description="1990-04-17, --04-17 (no year) or 17.04.1990", examples=["1988-02-29"]
    )
    tags: list[Annotated[str, Field(max_length=100)]] | None = Field(
        None, description="replaces the stored tags; [] removes them all"
    )
    marketing_consent: bool | None = None
    relationship_consent: bool | None = None
    fields: dict[str, Annotated[str, Field(max_length=10_000)]] = Field(
        default_factory=dict,
        description="custom fields, as extra CSV columns are kept; not named as a column",
        json_schema_extra={"propertyNames": {"pattern": r"\S", "not": {"enum": _COLUMNS}}},
    )


Customers = OneOrBatch[CustomerIn]


class UpsertResult(BaseModel):
    inserted: int
    updated: int
    unchanged: int


class TimelineEntry(BaseModel):
    at: datetime
    source: Source
    id: int
    kind: str
    direction: str | None
    channel: str | None
    by: str | None
    title: str
    text: str
    details: dict[str, Any]


class Message(BaseModel):
    """A message to the customer, sent or not; its template data stays inside mailer."""

    id: int
    template: str
    category: str
    status: str
    reason: str | None = Field(description="why it was not sent, or not yet")
    subject: str | None
    created_at: datetime
    due_at: datetime
    sent_at: datetime | None


class CustomerView(BaseModel):
    """A customer as `mailer customers show --json` gives them."""

    id: int
    email: str
    name: str
    first_name: str
    locale: str | None
    timezone: str | None
    birth_month: int | None
    birth_day: int | None
    birth_year: int | None
    fields: dict[str, Any]
    tags: list[str]
    marketing_consent: bool
    relationship_consent: bool
    unsubscribed_at: datetime | None
    suppressed_reason: str | None
    pause_until: datetime | None
    source: str
    created_at: datetime
    updated_at: datetime
    next_contact: dict[str, datetime | None]
    last_contact: dict[str, dict[str, Any] | None]
    timeline: list[TimelineEntry]
    history: list[Message] = Field(description="the latest messages, newest first")
    orders: dict[str, Any]
    insight: dict[str, Any] | None


class Erased(BaseModel):
    messages: int
    inquiries: int
    followups: int
    contacts: int


def _cells(item: CustomerIn, index: int | None) -> tuple[dict[str, str], list[FieldError]]:
    """The item as the CSV row it stands for, and the custom fields it cannot have."""
    flags = {True: "yes", False: "no", None: ""}
    cells = {
        "email": item.email,
        "name": item.name or "",
        "first_name": item.first_name or "",
        "locale": item.locale or "",
        "timezone": item.timezone or "",
        "birthday": item.birthday or "",
        "tags": ",".join(item.tags or ()),
        "marketing_consent": flags[item.marketing_consent],
        "relationship_consent": flags[item.relationship_consent],
    }
    wrong = []
    for given, value in item.fields.items():
        column = normalise_header(given)
        if column in KNOWN_COLUMNS or not column:
            wrong.append(item_error(index, f"fields.{given}", "not a custom field's name"))
        else:
            cells[column] = value
    return cells, wrong


def _rows(items: list[CustomerIn], single: bool) -> list[CustomerRow]:
    """Each item checked as an import row (its index as its line); Invalid names each
    problem of every item."""
    rows, errors = [], []
    for index, item in enumerate(items):
        at = None if single else index
        cells, wrong = _cells(item, at)
        errors += wrong
        try:
            row = parse_row(index, cells)
        except InvalidRow as exc:
            errors += [item_error(at, column, text) for column, text in exc.problems.items()]
            continue
        rows.append(replace(row, tags=()) if item.tags == [] else row)
    if errors:
        raise Invalid(errors)
    return rows


@router.post("", response_model=UpsertResult, summary="Add or update customers by address")
def upsert(
    request: Request,
    body: Annotated[Customers, Body()],
    key: Annotated[ApiKey, Depends(caller(Scope.CUSTOMERS_WRITE))],
) -> UpsertResult:
    """One customer or a list of up to 1,000, matched by email address (any case). All are
    stored or, when any is invalid, none."""
    single = isinstance(body, CustomerIn)
    items = [body] if isinstance(body, CustomerIn) else body
    rows = _rows(items, single)
    api = state(request)
    with api.engine.begin() as conn:
        report = profiles.upsert(conn, rows, api.clock.now(), f"api:{key.name}", SOURCE)
        if report.rejected:  # an erased address: nothing of the call is kept
            raise Invalid(
                [item_error(None if single else r.line, "email", r.reason) for r in report.rejected]
            )
    return UpsertResult(
        inserted=report.inserted, updated=report.updated, unchanged=report.unchanged
    )


@router.get(
    "/{email}",
    response_model=CustomerView,
    summary="A customer with their timeline",
    responses=not_found("customer"),
)
def show(
    request: Request,
    email: str,
    key: Annotated[ApiKey, Depends(caller(Scope.CUSTOMERS_READ))],
) -> dict[str, Any]:
    api = state(request)
    with api.engine.connect() as conn:
        return overview(conn, email, api.clock.now(), api.cfg.settings)


@router.delete(
    "/{email}",
    response_model=Erased,
    summary="Forget a customer for good",
    responses=not_found("customer"),
)
def erase(
    request: Request,
    email: str,
    key: Annotated[ApiKey, Depends(caller(Scope.CUSTOMERS_WRITE))],
) -> Erased:
    """As `mailer customers erase`: personal data cleared, the address kept only as a hash
    so it is never mailed or imported again; counts and the throttle's history stay."""
    api = state(request)
    with api.engine.begin() as conn:
        done = privacy.erase(conn, email, api.clock.now())
    return Erased(
        messages=done.messages,
        inquiries=done.inquiries,
        followups=done.followups,
        contacts=done.contacts,
    )
