"""Every error of the API as an RFC 9457 problem document (``application/problem+json``):
a type, a title, the status, a detail for a person, and for invalid input an ``errors``
list naming each field that was wrong by a JSON pointer into the request body.

Types are ``about:blank`` (RFC 9457, 4.2.1): the status says what kind of problem it is,
and ``errors`` says where.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailer.api import access
from mailer.core.errors import NotFound

log = logging.getLogger("mailer.api")
MEDIA_TYPE = "application/problem+json"
# the union members a body may be (one object or a list): pydantic names them in a location
SHAPES = frozenset({"one", "batch"})


class FieldError(BaseModel):
    """One thing wrong with a request, and where."""

    pointer: str = Field(description="JSON pointer into the request body, e.g. /3/email")
    index: int | None = Field(None, description="the item of a batch, counted from 0")
    field: str = Field(description="the field within the item (dotted), or the parameter")
    detail: str


class ProblemDocument(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] = []


class Invalid(HTTPException):
    """Input that pydantic let through but mailer's own checks refused, field by field. An
    HTTPException, so that FastAPI lets it through from where it reads the body."""

    def __init__(self, errors: Sequence[FieldError], status: int = 422, detail: str = "") -> None:
        self.errors = list(errors)
        super().__init__(status, detail or _counted(len(self.errors)))


def not_found(what: str) -> dict[int | str, dict[str, Any]]:
    """The 404 a route answers for an address or id it does not know, documented so
    clients can tell it from a wrong URL."""
    return {404: {"model": ProblemDocument, "description": f"no such {what}"}}


def conflict(what: str) -> dict[int | str, dict[str, Any]]:
    """The 409 of a write route whose item, sent again with the same id, says something
    else than the stored one: nothing of the call is kept."""
    return {
        409: {
            "model": ProblemDocument,
            "description": f"{what} with this id was stored before with other content;"
            " nothing of the call is kept",
        }
    }


def _counted(n: int) -> str:
    return f"{n} field{'s' if n != 1 else ''} of the request {'are' if n != 1 else 'is'} not valid"


def item_error(index: int | None, field: str, detail: str) -> FieldError:
    """An error in item ``index`` of a batch (None: the body is one object)."""
    parts = ([] if index is None else [str(index)]) + (field.split(".") if field else [])
    return FieldError(pointer=_pointer(parts), index=index, field=field, detail=detail)


def at(path: Sequence[str | int], detail: str) -> FieldError:
    """An error at ``path`` into the body, keys and positions (the first, in a batch, its
    item)."""
    index = path[0] if path and isinstance(path[0], int) else None
    field = ".".join(str(p) for p in path[index is not None :])
    pointer = _pointer([str(p) for p in path])
    return FieldError(pointer=pointer, index=index, field=field, detail=detail)


def _pointer(parts: Sequence[str]) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def problem(
    status: int,
    detail: str,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    document = ProblemDocument(
        title=HTTPStatus(status).phrase, status=status, detail=detail, errors=list(errors)
    )
    return JSONResponse(
        document.model_dump(), status_code=status, media_type=MEDIA_TYPE, headers=headers
    )


def as_problem_json(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with every problem response under its own media type: FastAPI
    files a response model under application/json."""
    problem_schema = {"$ref": "#/components/schemas/ProblemDocument"}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                if content.get("application/json", {}).get("schema") == problem_schema:
                    content[MEDIA_TYPE] = content.pop("application/json")
    return document


def from_pydantic(error: dict[str, Any]) -> FieldError:
    """A validation error of FastAPI's, located in the body, a path or a header."""
    where, *rest = error["loc"]
    parts = [p for n, p in enumerate(rest) if not (n == 0 and p in SHAPES)]
    detail = str(error["msg"]).removeprefix("Value error, ")  # our own checks say it whole
    if where != "body":
        return FieldError(pointer="", field=".".join(map(str, parts)) or str(where), detail=detail)
    if error["type"] == "json_invalid":
        detail = f"not JSON: {error.get('ctx', {}).get('error', 'cannot be read')}"
        return FieldError(pointer="", field="", detail=detail)
    return at(parts, detail)


async def _invalid_request(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, RequestValidationError)
    refused = await access.refusal(request)  # a route that checks its key itself
    if refused is not None:
        return await _http(request, refused)
    errors = [from_pydantic(e) for e in exc.errors()]
    if any(e["type"] == "json_invalid" for e in exc.errors()):
        return problem(400, "the request body is not JSON", errors)
    return problem(422, _counted(len(errors)), errors)


async def _invalid(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, Invalid)
    return problem(exc.status_code, exc.detail, exc.errors)


async def _http(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.detail != HTTPStatus(exc.status_code).phrase else ""
    return problem(exc.status_code, detail or _said(exc.status_code), headers=exc.headers)


def _said(status: int) -> str:
    return {
        404: "no such resource",
        405: "this resource does not take that method",
        413: "the request body is larger than the API takes ([api] max_body_bytes)",
    }.get(status, HTTPStatus(status).description)


async def _not_found(request: Request, exc: Exception) -> Any:
    return problem(404, str(exc))


async def _bug(request: Request, exc: Exception) -> Any:
    """A bug: the caller gets a reference that the log's line (before the traceback the
    server writes) carries, with the method and path it lacks."""
    reference = secrets.token_hex(4)
    log.error("%s %s failed [%s]: %r", request.method, request.url.path, reference, exc)
    return problem(500, f"mailer failed to answer; the error is in its log as [{reference}]")


class BodyLimit:
    """Refuse a request body over ``limit`` bytes as a problem (413): at once when its
    Content-Length says so, else as soon as the bytes read pass it, so a body sent in chunks
    without a length is never read further than the limit. ``wider`` gives routes (by the
    end of their path) that take more, such as a send with attachments, their own limit and
    the detail that names it."""

    def __init__(
        self, app: ASGIApp, limit: int, wider: Mapping[str, tuple[int, str]] | None = None
    ) -> None:
        self.app = app
        self.limit = limit
        self.wider = dict(wider or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].rstrip("/")
        limit, detail = next(
            (wide for end, wide in self.wider.items() if path.endswith(end)),
            (self.limit, _said(413)),
        )
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await problem(413, detail)(scope, receive, send)
            return
        read = 0

        async def counted() -> Message:
            nonlocal read
            message = await receive()
            read += len(message.get("body", b""))
            if read > limit:
                raise HTTPException(413, detail)
            return message

        await self.app(scope, counted, send)


def install(
    api: FastAPI, max_body_bytes: int, wider: Mapping[str, tuple[int, str]] | None = None
) -> None:
    api.add_middleware(BodyLimit, limit=max_body_bytes, wider=wider)
    api.add_exception_handler(RequestValidationError, _invalid_request)
    api.add_exception_handler(Invalid, _invalid)
    api.add_exception_handler(HTTPException, _http)
    api.add_exception_handler(NotFound, _not_found)
    api.add_exception_handler(Exception, _bug)
