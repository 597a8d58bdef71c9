"""The API's OpenAPI document as a contract a shop's developers can rely on: schemathesis
generates requests for every operation it describes and sends them to a real server, and
every answer must be documented (status, content type, body schema), never a 5xx, and
every error an RFC 9457 problem. The document says what it can of each field (an address's
format, an event name's pattern, an amount's shape); what depends on this server (its
templates, currencies and clock, babel's locales, the tz database) the run fills in, so
every write route succeeds often enough for its 2xx answer to be checked too."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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
from mailer.core.config import Config
from tests.site import Site
from tests.test_api import ALL, MARIA, PROBLEM, make_key

EXAMPLES = 25  # per operation: enough to reach every field's edge cases, bounded for CI
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


Statuses = defaultdict[str, Counter[int]]
# what a request needs to succeed that only this server knows, drawn from what it has
LOCALES = ["bg", "bg-BG", "en", "en-US", "de-AT", "tl"]
ZONES = ["Europe/Sofia", "UTC", "Asia/Manila", "America/Los_Angeles"]
CURRENCIES = ["EUR", "BGN", "eur"]  # the shipped config.toml's [company] currencies


def test_every_generated_request_is_answered_as_the_openapi_document_says(
    site: Site, engine: Engine, clock: ManualClock, cfg: Config
) -> None:
    # a rate far above what the run sends, so 429 never hides what an operation answers
    shop = make_key(engine, clock, "contract", *ALL, rate=100_000)
    schema = schemathesis.openapi.from_url(site.url + "/api/v1/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results) > 5, "every operation described, each usable"
    templates = sorted(p.name for p in cfg.templates_dir.iterdir() if p.name[0] != "_")
    fill = _server_facts(templates, clock)
    statuses: Statuses = defaultdict(Counter)
    for operation in operations:
        _exercise(operation, site.url + "/api/v1", shop, fill, statuses)
    # generated addresses are never customers: the found answers checked for a real one
    assert site.call("POST", "/api/v1/customers", MARIA, shop).status == 200
    for operation in operations:
        if "{email}" in operation.path:
            _exercise(operation, site.url + "/api/v1", shop, fill, statuses, MARIA)
    writes = {op.label for op in operations if op.method.upper() == "POST"}
    succeeded = {label for label in writes if any(200 <= s < 300 for s in statuses[label])}
    assert succeeded == writes, dict(statuses)


Fill = Callable[[str, Any, st.DataObject], None]


def _server_facts(templates: list[str], clock: ManualClock) -> dict[str, Fill]:
    """By operation, what in a generated body is replaced with this server's facts."""

    def past(data: st.DataObject) -> str:
        ago = data.draw(st.integers(0, 3 * 365 * 86_400), label="seconds ago")
        return (clock.now() - timedelta(seconds=ago)).isoformat()

    def customer(item: dict[str, Any], data: st.DataObject) -> None:
        for field, known in [("locale", LOCALES), ("timezone", ZONES)]:
            if item.get(field) is not None:
                item[field] = data.draw(st.sampled_from(known), label=field)
        if item.get("birthday") is not None:
            item["birthday"] = past(data)[:10]

    def order(item: dict[str, Any], data: st.DataObject) -> None:
        item["ordered_at"] = past(data)
        item["currency"] = data.draw(st.sampled_from(CURRENCIES), label="currency")
        for line in item["lines"]:  # EUR and BGN have two decimals
            for price in ("unit_price", "unit_cost"):
                if isinstance(line.get(price), float | int):
                    line[price] = round(line[price], 2)
                elif isinstance(line.get(price), str):
                    whole, sep, cents = line[price].strip().replace(",", ".").partition(".")
                    line[price] = f"{whole}{sep}{cents[:2]}"

    def event(item: dict[str, Any], data: st.DataObject) -> None:
        if item.get("occurred_at") is not None:
            item["occurred_at"] = past(data)

    def message(body: Any, data: st.DataObject) -> None:
        body["template"] = data.draw(st.sampled_from(templates), label="template")
        if body.get("locale") is not None:
            body["locale"] = data.draw(st.sampled_from(LOCALES), label="locale")

    def each(fill: Callable[[dict[str, Any], st.DataObject], None]) -> Fill:
        def filled(body: Any, data: st.DataObject) -> None:
            for item in body if isinstance(body, list) else [body]:
                fill(item, data)

        return filled

    return {
        "POST /customers": each(customer),
        "POST /orders": each(order),
        "POST /events": each(event),
        "POST /messages": message,
    }


def _exercise(
    operation: APIOperation[Any, Any, Any, Any],
    base_url: str,
    shop: dict[str, str],
    fill: dict[str, Fill],
    statuses: Statuses,
    customer: dict[str, Any] | None = None,
) -> None:
    """Up to EXAMPLES generated requests for one operation, the same ones on every run;
    each answer's status counted by operation."""
    path_parameters = {"email": customer["email"]} if customer else None

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(path_parameters=path_parameters), data=st.data())
    def answered_as_documented(case: Case[Any], data: st.DataObject) -> None:
        if operation.label in fill:
            fill[operation.label](case.body, data)
        response = case.call(base_url=base_url, headers=shop, timeout=10)
        statuses[operation.label][response.status_code] += 1
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


def test_the_document_says_which_writes_answer_conflict(site: Site) -> None:
    """Found by the run above once orders were generated valid: an order sent again with
    other content was a 409 the document did not list."""
    paths = site.call("GET", "/api/v1/openapi.json").json()["paths"]
    for path in ["/orders", "/events", "/messages"]:
        content = paths[path]["post"]["responses"]["409"]["content"]
        assert list(content) == [PROBLEM], path


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


def test_control_characters_in_tags_and_field_names_are_cleared_not_a_server_error(
    site: Site, engine: Engine, clock: ManualClock
) -> None:
    """Found by the run above once customers were generated valid: a NUL in a tag was a 500
    on PostgreSQL, which cannot store one; it is cleared as in any other text."""
    shop = make_key(engine, clock, "shop", *ALL)
    customer = {**MARIA, "tags": ["v\x00ip", "\x07"], "fields": {"ci\x00ty": "Sofia"}}
    assert site.call("POST", "/api/v1/customers", customer, shop).status == 200
    shown = site.call("GET", f"/api/v1/customers/{MARIA['email']}", headers=shop).json()
    assert shown["tags"] == ["v ip"] and shown["fields"] == {"ci_ty": "Sofia"}
