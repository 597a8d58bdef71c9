"""The API app, mounted by the web app at /api/v1.

FastAPI rather than more Starlette routes: it builds the OpenAPI 3.1 document from the same
typed pydantic models that validate each request, so the document cannot drift from what
the API accepts, and it is Starlette underneath, so it mounts into the web app as it is
and shares its server, middleware and process. Its docs page is served from mailer's own
copy of Swagger UI (FastAPI's default loads it from a CDN).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine

from mailer.api import customers, events, inquiries, messages, orders, problems
from mailer.api.access import ApiState
from mailer.core.clock import Clock
from mailer.core.config import Config

PREFIX = "/api/v1"
STATIC = Path(__file__).resolve().parent / "static"
SWAGGER = "swagger-ui-5.35.0"
DESCRIPTION = """What a company's other systems tell mailer and ask of it.

Send a key made with `mailer api-keys create NAME --scope ...` as
`Authorization: Bearer KEY`. A missing, unknown or revoked key is 401, a key without the
route's scope 403, a key past its requests for the minute 429 with `Retry-After`. A body
that cannot be read at all is refused before the key is looked at: not JSON 400, not sent
as `application/json` 415, half a surrogate pair or nesting past 32 levels 422. Every
error is an RFC 9457 problem document (`application/problem+json`) whose `errors` name
each field that was wrong by a JSON pointer into the request body.
"""


def create_api(cfg: Config, engine: Engine, clock: Clock) -> FastAPI:
    api = FastAPI(
        title="mailer API",
        version="1",
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        responses={
            code: {"model": problems.ProblemDocument, "description": text}
            for code, text in {
                401: "no valid key",
                403: "the key lacks the scope",
                422: "invalid input, each field named",
                429: "too many requests this minute",
            }.items()
        },
    )
    api.state.api = ApiState(cfg=cfg, engine=engine, clock=clock)
    settings = cfg.settings.api
    problems.install(api, settings.max_body_bytes, {"/messages": messages.body_limit(settings)})
    api.include_router(customers.router)
    api.include_router(orders.router)
    api.include_router(messages.router)
    api.include_router(events.router)
    api.include_router(inquiries.router)
    api.mount("/docs-assets", StaticFiles(directory=STATIC), name="docs-assets")
    api.add_api_route("/docs", docs, include_in_schema=False, response_class=HTMLResponse)
    generate = api.openapi
    api.openapi = lambda: problems.as_problem_json(generate())  # type: ignore[method-assign]
    return api


def docs(request: Request) -> HTMLResponse:
    """Swagger UI over /api/v1/openapi.json, every file from this server."""
    root = request.scope.get("root_path", "")
    assets = f"{root}/docs-assets"
    return HTMLResponse(
        f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mailer API</title>
<link rel="stylesheet" href="{assets}/{SWAGGER}/swagger-ui.css">
<link rel="icon" href="data:,">
</head>
<body>
<div id="swagger-ui" data-openapi="{root}/openapi.json"></div>
<script src="{assets}/{SWAGGER}/swagger-ui-bundle.js"></script>
<script src="{assets}/docs.js"></script>
</body>
</html>
"""
    )
