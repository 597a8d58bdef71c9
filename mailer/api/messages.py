"""``/messages``: a transactional message (a receipt, a password reset) sent for a shop's
own system, and what became of it.

The call is checked and queued in the outbox, the one road to SMTP, as a transactional
message; the delivery worker renders and sends it like any other. Every call carries an
``Idempotency-Key``: the key's dedupe key in the outbox (``api:KEY-ID:IDEMPOTENCY-KEY``)
makes a retry return the message the first call queued, even when retries race, because
the outbox's unique key decides, not a look before the insert. The same key with another
body is refused (409), as Stripe does: the outbox row keeps a hash of the call.

The key is required rather than optional: a receipt sent twice is a mistake a customer
sees, and a caller that retries after a timeout cannot know whether its first call
arrived; naming the call makes the retry safe.

The template is checked at acceptance as far as its files say (it exists, and the locale
falls back to a variant with a subject and a body), not rendered: rendering costs a
render worker's round trip on every call, and the message is rendered at send time anyway
(a template fixed after queueing is used). A template that fails with the given data
fails the message, and ``GET /messages/{id}`` names the file and line.

Attachments (a PDF invoice, a ticket) come base64 in the body, are checked as
``api.attachments`` says and queued with the message in the same transaction; this route
alone takes a body larger than ``[api] max_body_bytes``, by the attachments' own limit,
and what is not attachments is still held to ``max_body_bytes``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from mailer.api import attachments
from mailer.api.access import ApiState, Pending, admit, caller, deferred, state
from mailer.api.attachments import AttachmentIn
from mailer.api.batches import Address
from mailer.api.bodies import JsonRoute
from mailer.api.keys import ApiKey, Scope
from mailer.api.problems import FieldError, Invalid, ProblemDocument, item_error, not_found
from mailer.core import jsonvalues
from mailer.core.categories import Category
from mailer.core.config import ApiSettings
from mailer.core.errors import NotFound, TemplateError
from mailer.core.fieldtypes import MAX_ID, email_address, locale_tag
from mailer.customers import profiles
from mailer.outbound import outbox
from mailer.outbound.prepare import GIVEN
from mailer.outbound.templates import TemplateStore
from mailer.store import db

PREFIX = "api:"  # every message queued through the API, and only those, can be read here
router = APIRouter(prefix="/messages", tags=["messages"], route_class=JsonRoute)
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="the caller's name for this send (printable ASCII, no spaces); the "
        "same key again returns the same message, with another body it is refused (409)",
    ),
]
# ids are the outbox's integer keys (32-bit on PostgreSQL): a larger number is no message,
# and sent to the database it would fail there rather than be found missing
MessageId = Annotated[int, Path(ge=1, le=MAX_ID, description="the id a send returned")]


def _standard(data: dict[str, Any]) -> dict[str, Any]:
    """Stored as JSON: standard JSON only (no NaN), which PostgreSQL's json type refuses."""
    jsonvalues.standard_text(data)
    return data


class MessageIn(BaseModel):
    """A transactional message: a template of the templates folder, for one address."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(max_length=100, examples=["order_confirmation"])
    to: Address = Field(
        description="any address; a customer with it is linked, no customer is added"
    )
    data: Annotated[dict[str, Any], AfterValidator(_standard)] = Field(
        default_factory=dict,
        description="the template's `params`, as values only: text in it is never run as a "
        "template; no key may start with $",
        examples=[{"order": "A-1042", "total": "42.90 EUR"}],
        json_schema_extra={"propertyNames": {"pattern": r"^[^$]"}},
    )
    locale: str | None = Field(
        None,
        max_length=35,
        description="the template's variant (bg-BG, then bg, then the default); left out: "
        "the customer's, else the default",
        examples=["bg-BG"],
    )
    attachments: list[AttachmentIn] = Field(
        default_factory=list,
        description="files sent with the message; together at most [api] attachment_max_mb "
        "(decoded; more is 413) and at most [api] attachment_max_count of them; programs are "
        "refused",
    )


class Attempt(BaseModel):
    at: datetime
    outcome: str = Field(description="sent, retry or failed")
    smtp_code: int | None
    smtp_reply: str | None


class MessageView(BaseModel):
    """A message queued through the API, as it stands."""

    id: int
    template: str
    to: str
    locale: str | None
    status: str = Field(description="queued, sending, deferred, sent, failed, skipped, ...")
    reason: str | None = Field(description="why it was not sent, or not yet")
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    attempts: list[Attempt]


@dataclass(frozen=True, slots=True)
class Checked:
    """A send's body as checked before its transaction: the normalised address, the
    decoded files, and the call's hash."""

    address: str
    files: list[outbox.Attachment]
    digest: str


@router.post(
    "",
    status_code=202,
    response_model=MessageView,
    summary="Send a transactional message",
    responses={
        409: {
            "model": ProblemDocument,
            "description": "the Idempotency-Key was used with another body",
        },
        413: {
            "model": ProblemDocument,
            "description": "the attachments, or the rest of the body, pass their limit",
        },
    },
)
async def send(
    request: Request,
    body: MessageIn,
    idempotency_key: IdempotencyKey,
    pending: Annotated[Pending, Depends(deferred(Scope.SEND))],
) -> Response:
    """Queued at once and sent by the delivery worker; the answer is the message as it
    stands (usually queued), and ``Location`` is where to follow it."""
    found = await _queued(state(request), body, pending, idempotency_key)
    where = f"{request.scope.get('root_path', '')}/messages/{found.id}"
    return Response(
        found.model_dump_json(), 202, {"Location": where}, media_type="application/json"
    )


async def _queued(
    api: ApiState, body: MessageIn, pending: Pending, idempotency_key: str
) -> MessageView:
    """The message queued under the key's ``idempotency_key``: by this call, or by the
    first call that named it with the same body (Invalid with 409 when the body was
    another). The key is checked, counted and the message queued in one transaction; what
    is wrong with the body is found before it (no files are read while the transaction
    holds the database) and said only once the key has passed."""
    checked: Checked | Invalid
    if body.attachments:  # files of up to the size limit: decoded, then inserted and
        # committed in a transaction of their own, off the event loop (tens of milliseconds)
        checked = await run_in_threadpool(_checked_body, api, body)
        admitted = _admitted(api, body, checked, pending, idempotency_key)
        key, outcome = await run_in_threadpool(db.write_alone, api.engine, admitted)
    else:  # a template folder's look-up and an address: less than a thread's round trip
        checked = _checked_body(api, body)
        admitted = _admitted(api, body, checked, pending, idempotency_key)
        key, outcome = await db.write_together(api.engine, admitted, order=pending.secret)
    # raised once committed: a refused key or a wrong body still counts against the rate
    if isinstance(key, HTTPException):
        raise key
    if isinstance(checked, Invalid):
        raise checked
    if isinstance(outcome, Invalid):
        raise outcome
    assert outcome is not None  # queued: the key and the body passed
    if outcome["request_hash"] != checked.digest:
        conflict = FieldError(pointer="", field="Idempotency-Key", detail="used with another body")
        raise Invalid([conflict], 409, "this Idempotency-Key was used for another message")
    return _view(outcome)


Admitted = tuple[ApiKey | HTTPException, dict[str, Any] | Invalid | None]


def _admitted(
    api: ApiState,
    body: MessageIn,
    checked: Checked | Invalid,
    pending: Pending,
    idempotency_key: str,
) -> Callable[[Connection], Admitted]:
    """The send's write: the key's verdict, and the message queued when the key and the
    body passed."""

    def write(conn: Connection) -> Admitted:
        key = admit(conn, api, pending)
        if isinstance(key, HTTPException) or not isinstance(checked, Checked):
            return key, None
        return key, _enqueued(conn, api, body, checked, f"{PREFIX}{key.id}:{idempotency_key}")

    return write


def _checked_body(api: ApiState, body: MessageIn) -> Checked | Invalid:
    """The body as checked before the transaction, or what is wrong with it."""
    try:
        canonical = _canonical(body)
        if len(canonical) > api.cfg.settings.api.max_body_bytes:
            raise Invalid([], 413, TOO_LARGE)
        address, files = _checked(api, body)
        return Checked(address, files, _digest(canonical, files))
    except Invalid as exc:
        return exc


def _enqueued(
    conn: Connection,
    api: ApiState,
    body: MessageIn,
    checked: Checked,
    dedupe_key: str,
) -> dict[str, Any] | Invalid:
    """The outbox row under ``dedupe_key``, queued now unless it was before; Invalid for an
    erased address."""
    customer_id, erased = _recipient(conn, checked.address)
    if erased:
        return Invalid([item_error(None, "to", "this address was erased at its owner's wish")])
    message = outbox.NewMessage(
        dedupe_key=dedupe_key,
        to_address=checked.address,
        customer_id=customer_id,
        category=Category.TRANSACTIONAL,
        priority=100,  # someone waits for it: before a campaign queued earlier, as an ack
        template=body.template,
        locale=body.locale,
        context={"params": body.data},
        request_hash=checked.digest,
        attachments=checked.files,
    )
    row = outbox.enqueue_one(conn, message, api.clock.now()) or outbox.get_by_key(conn, dedupe_key)
    assert row is not None  # queued now, or before under the same key
    return row


@router.get(
    "/{message_id}",
    response_model=MessageView,
    summary="A message sent through the API",
    responses=not_found("message"),
)
async def show(
    request: Request,
    message_id: MessageId,
    key: Annotated[ApiKey, Depends(caller(Scope.SEND))],
) -> Response:
    """Any key that may send may read any message sent through the API; mail mailer makes
    itself (schedules, acknowledgements) is not shown here."""
    found = await run_in_threadpool(_shown, state(request), message_id)
    return Response(found.model_dump_json(), media_type="application/json")


def _shown(api: ApiState, message_id: int) -> MessageView:
    with api.engine.connect() as conn:
        row = outbox.get(conn, message_id)
    if row is None or not row["dedupe_key"].startswith(PREFIX):
        raise NotFound("no message sent through the API has this id")
    return _view(row)


def _checked(api: ApiState, body: MessageIn) -> tuple[str, list[outbox.Attachment]]:
    """The normalised address and the decoded files; Invalid names every field that is
    wrong, with 413 when the files together pass their limit."""
    files = attachments.check(body.attachments, api.cfg.settings.api)
    if files.too_large:
        raise Invalid([item_error(None, "attachments", files.too_large)], 413, files.too_large)
    errors = list(files.errors)
    try:
        address = email_address(body.to)
    except ValueError as exc:
        address = ""
        errors.append(item_error(None, "to", str(exc)))
    try:
        locale = locale_tag(body.locale) if body.locale else None
    except ValueError as exc:
        locale = None
        errors.append(item_error(None, "locale", str(exc)))
    store = _templates(api.cfg.templates_dir)
    try:
        problem = store.unsendable(body.template, locale)
    except TemplateError as exc:
        errors.append(item_error(None, "template", exc.problem.message))
    else:
        errors += [item_error(None, "locale", problem)] if problem else []
        if lacking := store.unknown(body.template, GIVEN):
            errors.append(item_error(None, "template", _not_for_sends(lacking)))
    errors += [item_error(None, f"data.{path}", RESERVED) for path in _reserved(body.data)]
    if errors:
        raise Invalid(errors)
    return address, files.files


def _not_for_sends(lacking: frozenset[str]) -> str:
    """Why a template that needs names a send does not give cannot be sent here (an
    acknowledgement's ``inquiry``): it would be queued and then fail."""
    names = ", ".join(sorted(lacking))
    return (
        f"it reads {names}, which a send does not give (mailer's own messages carry"
        " more); a send gives customer, company and params (its data): read it from"
        " params, or give it a default"
    )


TOO_LARGE = (
    "the message, its attachments aside, is larger than the API takes ([api] max_body_bytes)"
)
RESERVED = "keys starting with $ are kept for mailer's own values"


@functools.lru_cache(maxsize=4)
def _templates(root: pathlib.Path) -> TemplateStore:
    """One store per templates folder, made once: making it resolves the folder's path, a
    system call per part of it, and the store keeps nothing that a file's change stales."""
    return TemplateStore(root)


def _reserved(value: Any, path: str = "") -> list[str]:
    """Where in ``data`` a key starts with $: the outbox stores dates as {"$date": ...}, so
    such a key could come back from the queue as something else than was sent."""
    if isinstance(value, dict):
        found = [f"{path}{k}" for k in value if str(k).startswith("$")]
        return found + [p for k, v in value.items() for p in _reserved(v, f"{path}{k}.")]
    if isinstance(value, list):
        return [p for n, v in enumerate(value) for p in _reserved(v, f"{path}{n}.")]
    return []


def _canonical(body: MessageIn) -> bytes:
    """The call without its files, whatever the order of its keys: what ``max_body_bytes``
    still limits, and what the Idempotency-Key's hash covers besides the files."""
    fields = body.model_dump(exclude={"attachments"})
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def _digest(canonical: bytes, files: list[outbox.Attachment]) -> str:
    """The call's hash; a call without files hashes as it did before files were taken, so a
    retry of a send queued by an older mailer is still its replay."""
    digest = hashlib.sha256(canonical)
    if files:
        digest.update(json.dumps(attachments.canonical(files)).encode())
    return digest.hexdigest()


def body_limit(settings: ApiSettings) -> tuple[int, str]:
    """This route's body limit and the 413's detail (see ``attachments.body_limit``)."""
    return attachments.body_limit(settings), (
        "the request body is larger than a message with its attachments may be "
        "([api] max_body_bytes, plus attachment_max_mb for the files)"
    )


# the customer with the address, and whether it was erased, in one statement built once
_RECIPIENT = select(
    select(profiles.CUSTOMERS.c.id)
    .where(profiles.CUSTOMERS.c.email == bindparam("_address"))
    .scalar_subquery(),
    select(profiles.ERASED.c.address_hash)
    .where(profiles.ERASED.c.address_hash == bindparam("_hash"))
    .exists(),
)


def _recipient(conn: Connection, address: str) -> tuple[int | None, bool]:
    """The id of the customer with ``address`` (None: a stranger), and whether the address
    was erased (as ``profiles.is_erased`` judges it)."""
    params = {"_address": address.lower(), "_hash": profiles.address_hash(address)}
    customer_id, erased = conn.execute(_RECIPIENT, params).one()
    return customer_id, bool(erased)


def _view(row: dict[str, Any]) -> MessageView:
    """An outbox row as ``outbox.get`` gives it, with its attempts."""
    return MessageView(
        id=row["id"],
        template=row["template"],
        to=row["to_address"],
        locale=row["locale"],
        status=row["status"],
        reason=row["reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sent_at=row["sent_at"],
        attempts=[Attempt.model_validate(a, from_attributes=False) for a in row["attempts_log"]],
    )
