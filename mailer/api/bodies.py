"""How the API reads a request body: JSON, sent as JSON, of text mailer can keep.

Python's JSON reader takes what no database or mail can carry: half of a UTF-16 surrogate
pair (``"\\ud800"``, what a JavaScript client leaves when it cuts a string inside an emoji),
and objects nested as deep as the reader's recursion goes. Each failed far from the call (a
send queued and then failed, a customer record that could no longer be shown), so the body
is refused at the call instead, each place named by its JSON pointer. (Control characters,
a NUL among them, are cleared from text where it is kept, as they are from any text.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from mailer.api.problems import FieldError, Invalid, ProblemDocument, at
from mailer.core.text import half_a_character

DEPTH = 32  # objects and lists within each other: far beyond any order, event or context
_UNSENT = "send the body as JSON, with Content-Type: application/json"
_NOT_SENT_AS_JSON = {"model": ProblemDocument, "description": "a body not sent as application/json"}


def problems(value: Any, path: tuple[str | int, ...] = ()) -> list[FieldError]:
    """What in a parsed body cannot be kept, each where it is."""
    if isinstance(value, str):
        return _text(value, path, "")
    if len(path) >= DEPTH and isinstance(value, dict | list):
        return [at(path, f"nested more than {DEPTH} levels deep")]
    found: list[FieldError] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _text(key, path, f" (the name {key[:40]!r})")
            found += problems(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += problems(inner, (*path, index))
    return found


def _text(value: str, path: tuple[str | int, ...], what: str) -> list[FieldError]:
    if half_a_character(value):
        detail = f"half of a UTF-16 surrogate pair (a \\ud800-\\udfff escape) alone{what}"
        return [at(path, f"not text: {detail}; send the whole character")]
    return []


def is_json(content_type: str | None) -> bool:
    """application/json, or a JSON-based type such as application/problem+json."""
    if not content_type:
        return False
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class _Checked(Request):
    """A request whose JSON body is refused (422) when ``problems`` finds anything: raised
    as the HTTPException it is, where FastAPI reads the body."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                value = json.loads(await self.body())
            except RecursionError:  # nested past what the reader can follow, let alone 32
                raise Invalid([at((), f"nested more than {DEPTH} levels deep")]) from None
            if found := problems(value):
                raise Invalid(found)
            self._json = value
        return self._json


class JsonRoute(APIRoute):
    """A route whose body, when it takes one, must be JSON sent as JSON (415 otherwise: a
    form-encoded body would be read as a string and refused for its shape) and keepable.
    The 415 is documented on the routes that take a body (every POST here)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if {"POST", "PUT", "PATCH"} & set(kwargs.get("methods") or ()):
            kwargs["responses"] = {**(kwargs.get("responses") or {}), 415: _NOT_SENT_AS_JSON}
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def checked(request: Request) -> Response:
            if takes_body and not is_json(request.headers.get("content-type")):
                raise HTTPException(415, _UNSENT)
            return await handler(_Checked(request.scope, request.receive))

        return checked
