"""The API's OpenAPI document as a contract a shop's developers can rely on: schemathesis
generates requests for every operation it describes and sends them to a real server, and
every answer must be documented (status, content type, body schema), never a 5xx, and
every error an RFC 9457 problem."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine

from mailer.core.clock import ManualClock
from tests.site import Site
from tests.test_api import ALL, MARIA, PROBLEM, make_key

EXAMPLES = 25  # per operation: enough to reach every field's edge cases, bounded for CI
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_every_generated_request_is_answered_as_the_openapi_document_says(
    site: Site, engine: Engine, clock: ManualClock
) -> None:
    # a rate far above what the run sends, so 429 never hides what an operation answers
    shop = make_key(engine, clock, "contract", *ALL, rate=100_000)
    schema = schemathesis.openapi.from_url(site.url + "/api/v1/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results) > 5, "every operation described, each usable"
    for operation in operations:
        _exercise(operation, site.url + "/api/v1", shop)
    # generated addresses are never customers: the found answers checked for a real one
    assert site.call("POST", "/api/v1/customers", MARIA, shop).status == 200
    for operation in operations:
        if "{email}" in operation.path:
            _exercise(operation, site.url + "/api/v1", shop, {"email": MARIA["email"]})


def _exercise(
    operation: APIOperation[Any, Any, Any, Any],
    base_url: str,
    shop: dict[str, str],
    path_parameters: dict[str, Any] | None = None,
) -> None:
    """Up to EXAMPLES generated requests for one operation, the same ones on every run."""

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(path_parameters=path_parameters))
    def answered_as_documented(case: Case[Any]) -> None:
        response = case.call(base_url=base_url, headers=shop, timeout=10)
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            assert response.headers["content-type"][0] == PROBLEM, response.text

    answered_as_documented()


def test_the_document_says_which_routes_answer_not_found(site: Site) -> None:
    """Found by the run above: a client reading the document could not know that an
    unknown address or message id is 404 rather than a wrong URL."""
    paths = site.call("GET", "/api/v1/openapi.json").json()["paths"]
    for path, method in [
        ("/customers/{email}", "get"),
        ("/customers/{email}", "delete"),
        ("/messages/{message_id}", "get"),
    ]:
        content = paths[path][method]["responses"]["404"]["content"]
        assert list(content) == [PROBLEM], (method, path)


@pytest.mark.parametrize("message_id", ["0", "-1", str(2**31), str(2**64)])
def test_a_message_id_no_message_can_have_is_refused_by_name_not_a_server_error(
    site: Site, engine: Engine, clock: ManualClock, message_id: str
) -> None:
    """Found by the run above: an id past the database's integer range was a 500 (an
    overflow on SQLite, `integer out of range` on PostgreSQL)."""
    sender = make_key(engine, clock, "sender", *ALL)
    reply = site.call("GET", f"/api/v1/messages/{message_id}", headers=sender)
    assert reply.status == 422 and reply.headers["content-type"] == PROBLEM
    assert [e["field"] for e in reply.json()["errors"]] == ["message_id"]
