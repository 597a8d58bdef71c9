"""What a website's inquiry or subscribe form sent, read and checked: plain functions over
the posted fields, no I/O.

A form post is read the way mail is: the inquiry becomes a message (From, Subject, body)
so the parser, the autoreply rules and the acknowledgement treat it exactly like mail.
Every refusal names the field and the limit, never the value sent: nothing a visitor
typed is echoed back into a page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from mailer.core.fieldtypes import locale_tag, sendable_address
from mailer.core.text import half_a_character, one_line, plain_lines
from mailer.customers.csv_rows import normalise_email

FORM_DOMAIN = "web-form.invalid"  # RFC 2606: a name that is nobody's
HONEYPOT = "website"  # hidden from people; a robot that fills every field fills this one
SHORT = {"email": 320, "name": 200, "subject": 200, "locale": 35}  # characters
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")


class FormProblem(Exception):
    """Why a post is refused: the HTTP status, the field (or "" for the whole post), and a
    sentence that names them."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


@dataclass(frozen=True, slots=True, kw_only=True)
class InquiryForm:
    email: str
    name: str
    subject: str
    message: str
    locale: str | None


@dataclass(frozen=True, slots=True)
class SubscribeForm:
    email: str
    name: str
    locale: str | None


def is_robot(fields: Mapping[str, object]) -> bool:
    """The honeypot was filled: answer as if all went well and keep nothing."""
    value = fields.get(HONEYPOT)
    return bool(value.strip()) if isinstance(value, str) else value is not None


def read_inquiry(fields: Mapping[str, object], max_message: int) -> InquiryForm:
    message = _text(fields, "message", max_message, multiline=True)
    if not message.strip():
        raise FormProblem(422, "message", "message is required")
    return InquiryForm(
        email=_email(fields),
        name=_text(fields, "name", SHORT["name"]),
        subject=_text(fields, "subject", SHORT["subject"]),
        message=message,
        locale=_locale(fields),
    )


def read_subscribe(fields: Mapping[str, object]) -> SubscribeForm:
    return SubscribeForm(_email(fields), _text(fields, "name", SHORT["name"]), _locale(fields))


def inquiry_message(form: InquiryForm, now: datetime) -> bytes:
    """The inquiry as the mail it stands for, from the visitor. Its Message-ID is in a
    domain of no one's, never ours: the autoreply rules take a message with one of our own
    Message-IDs for a mail loop."""
    mail = EmailMessage(policy=SMTP)
    local, _, host = form.email.rpartition("@")
    mail["From"] = Address(display_name=form.name, username=local, domain=host)
    mail["Subject"] = form.subject
    mail["Date"] = format_datetime(now)
    mail["Message-ID"] = make_msgid("form", domain=FORM_DOMAIN)
    mail.set_content(form.message)
    return mail.as_bytes()


def allowed_origin(origin: str | None, allowed: Sequence[str]) -> str | None:
    """The origin to name in Access-Control-Allow-Origin: only one the config lists."""
    if origin is None:
        return None
    listed = {a.rstrip("/").lower() for a in allowed}
    return origin if origin.rstrip("/").lower() in listed else None


def _text(fields: Mapping[str, object], name: str, limit: int, *, multiline: bool = False) -> str:
    value = fields.get(name) or ""  # JSON's null is a field left empty
    if not isinstance(value, str):
        raise FormProblem(422, name, f"{name} must be text")
    if len(value) > limit:
        raise FormProblem(422, name, f"{name} is longer than {limit} characters")
    if half_a_character(value):
        raise FormProblem(422, name, f"{name} holds half of a character (a lone surrogate)")
    return plain_lines(value) if multiline else one_line(value)


def _email(fields: Mapping[str, object]) -> str:
    text = _text(fields, "email", SHORT["email"])
    if not text:
        raise FormProblem(422, "email", "email is required")
    try:
        address = normalise_email(text)  # as every other road in keys its customer
    except ValueError:
        raise FormProblem(422, "email", "email is not a valid e-mail address") from None
    if sendable_address(address) is None:  # the answer would not reach them: said now
        raise FormProblem(
            422, "email", "email must have plain Latin letters before the @ for our replies"
        )
    return address


def _locale(fields: Mapping[str, object]) -> str | None:
    text = _text(fields, "locale", SHORT["locale"])
    if text and not _LOCALE.match(text):
        raise FormProblem(422, "locale", "locale is not a language tag such as en or bg-BG")
    try:  # a well-formed tag of no known language: the message's own language is used
        return locale_tag(text) if text else None
    except ValueError:
        return None
