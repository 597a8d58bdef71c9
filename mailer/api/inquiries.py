"""``/inquiries``: what customers wrote to support, for a company's other systems (a
helpdesk, a data warehouse) to keep up with: a list going on from the last id seen, and
one inquiry with what it said, what mailer decided about it and the desk's replies.

The raw message bytes are never sent: what was written is its text, and an erased
customer's inquiries have none left (``privacy.erase`` clears them).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, BeforeValidator, Field

from mailer.api.access import caller, state
from mailer.api.bodies import JsonRoute
from mailer.api.keys import ApiKey, Scope
from mailer.api.problems import FieldError, Invalid, not_found
from mailer.core.errors import NotFound
from mailer.core.fieldtypes import MAX_ID, BoundMoment
from mailer.customers.csv_rows import normalise_email
from mailer.inbound import inquiries
from mailer.store.models import InquiryStatus

LIMIT_MAX = 200
_SPACED_OFFSET = re.compile(r"(\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d:?\d\d)$")
router = APIRouter(prefix="/inquiries", tags=["inquiries"], route_class=JsonRoute)


class InquirySummary(BaseModel):
    """An inquiry as a list shows it, without what was written."""

    id: int
    thread_id: int = Field(description="the first inquiry of its thread (its own id if first)")
    customer_id: int | None
    sender: str
    sender_name: str
    subject: str
    channel: str = Field(description="mail, or web (the website's inquiry form)")
    status: InquiryStatus
    decision: str | None = Field(description="what mailer made of it, e.g. person or autoreply")
    reasons: list[str]
    assignee: str | None
    received_at: datetime


class InquiryList(BaseModel):
    inquiries: list[InquirySummary] = Field(description="oldest first")
    next: int | None = Field(description="pass as `after` for the next page; null: none yet")


class Reply(BaseModel):
    """What support wrote back from the desk."""

    at: datetime
    by: str
    text: str


class InquiryView(InquirySummary):
    body_text: str
    reply_text: str = Field(description="the text without the quoted history")
    attachments: list[dict[str, Any]] = Field(description="names, types and sizes, not content")
    replies: list[Reply] = Field(description="the desk's replies in its thread, oldest first")


def _summary(found: inquiries.Listed) -> dict[str, Any]:
    return {
        name: getattr(found, name) for name in InquirySummary.model_fields if name != "thread_id"
    } | {"thread_id": inquiries.root_of(found)}


def _offset_plus(value: Any) -> Any:
    """A query string reads "+" as a space, so "10:00:00+02:00" not written as %2B arrives as
    "10:00:00 02:00": the offset it was, not an error about "extra characters"."""
    return _SPACED_OFFSET.sub(r"\1+\2", value) if isinstance(value, str) else value


Since = Annotated[BoundMoment, BeforeValidator(_offset_plus)]


@router.get("", response_model=InquiryList, summary="Inquiries, from the last one seen")
def listed(
    request: Request,
    key: Annotated[ApiKey, Depends(caller(Scope.INQUIRIES_READ))],
    status: InquiryStatus | None = None,
    since: Annotated[Since | None, Query(description="received at or after")] = None,
    email: Annotated[str | None, Query(description="the sender's or their customer's")] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="the last id of the page before")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=LIMIT_MAX)] = 50,
) -> InquiryList:
    address = None
    if email:
        try:
            address = normalise_email(email)
        except ValueError as exc:
            raise Invalid([FieldError(pointer="", field="email", detail=str(exc))]) from exc
    with state(request).engine.connect() as conn:
        rows = inquiries.since(
            conn,
            status=status,
            received_since=since,
            email=address,
            after=after,
            size=limit + 1,  # one more than shown says whether a next page exists
        )
    shown = rows[:limit]
    more = len(rows) > limit
    return InquiryList(
        inquiries=[InquirySummary(**_summary(r)) for r in shown],
        next=shown[-1].id if more else None,
    )


@router.get(
    "/{inquiry_id}",
    response_model=InquiryView,
    summary="One inquiry with its replies",
    responses=not_found("inquiry"),
)
def show(
    request: Request,
    inquiry_id: Annotated[int, Path(ge=1, le=MAX_ID, description="the inquiry's id")],
    key: Annotated[ApiKey, Depends(caller(Scope.INQUIRIES_READ))],
) -> InquiryView:
    with state(request).engine.connect() as conn:
        found = inquiries.get(conn, inquiry_id)
        if found is None:
            raise NotFound(f"no inquiry {inquiry_id}")
        done = inquiries.events(conn, inquiries.root_of(found))
    return InquiryView(
        **_summary(found),
        body_text=found.body_text,
        reply_text=found.reply_text,
        attachments=found.attachments,
        replies=[Reply(at=e.at, by=e.actor, text=e.text) for e in done if e.kind == "reply"],
    )
