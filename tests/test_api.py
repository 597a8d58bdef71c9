"""The HTTP API as a shop's systems meet it: over real HTTP, on SQLite and PostgreSQL,
with keys, scopes and a rate limit per key, and RFC 9457 problems naming the field."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from openapi_spec_validator import validate
from playwright.async_api import Page, expect
from sqlalchemy import Engine

from mailer.api import inquiries as api_inquiries
from mailer.api import keys
from mailer.api.keys import Scope
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.web.server import build as build_web
from tests.site import Reply, Site, served
from tests.test_timeline import sent
from tests.test_web_forms import deliver

PROBLEM = "application/problem+json"
ALL = tuple(Scope)


def make_key(
    engine: Engine, clock: ManualClock, name: str, *scopes: Scope, rate: int | None = None
) -> dict[str, str]:
    """A key as `mailer api-keys create` makes it, as the header a caller sends."""
    with engine.begin() as conn:
        _, secret = keys.create(
            conn, name, scopes, rate_per_minute=rate, created_by="test", now=clock.now()
        )
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def shop(engine: Engine, clock: ManualClock) -> dict[str, str]:
    return make_key(engine, clock, "shop", *ALL)


def problem_of(reply: Reply, status: int) -> dict[str, object]:
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == PROBLEM
    document = reply.json()
    assert document["status"] == status and document["type"] == "about:blank"
    assert document["title"] and document["detail"]
    return dict(document)


def pointers(document: dict[str, object]) -> dict[str, str]:
    errors = document["errors"]
    assert isinstance(errors, list)
    return {e["pointer"]: e["detail"] for e in errors}


MARIA = {
    "email": "Maria@Example.BG",
    "name": "Мария Петрова",
    "locale": "bg-BG",
    "timezone": "Europe/Sofia",
    "birthday": "1988-02-29",
    "tags": ["Newsletter", "vip"],
    "marketing_consent": True,
    "fields": {"city": "София"},
}


def test_a_shop_upserts_a_customer_and_reads_them_back_with_their_timeline(
    site: Site, shop: dict[str, str], engine: Engine, clock: ManualClock
) -> None:
    added = site.call("POST", "/api/v1/customers", MARIA, shop)
    assert added.status == 200 and added.json() == {"inserted": 1, "updated": 0, "unchanged": 0}
    renamed = site.call(
        "POST", "/api/v1/customers", {"email": "maria@example.bg", "name": "M"}, shop
    )
    assert renamed.json() == {"inserted": 0, "updated": 1, "unchanged": 0}
    shown = site.call("GET", "/api/v1/customers/MARIA@example.bg", headers=shop).json()
    assert shown["email"] == "maria@example.bg" and shown["name"] == "M"
    assert shown["first_name"] == "Мария"  # what the second call left out stays
    assert (shown["birth_month"], shown["birth_day"]) == (2, 29)
    assert shown["tags"] == ["newsletter", "vip"] and shown["fields"] == {"city": "София"}
    assert shown["source"] == "api"
    assert shown["timeline"] == [] and shown["orders"]["count"] == 0
    assert set(shown["next_contact"]) == {"marketing", "relationship"}
    sent(engine, shown["id"], "newsletter-1", clock.now())
    shown = site.call("GET", "/api/v1/customers/maria@example.bg", headers=shop).json()
    assert [(e["kind"], e["title"]) for e in shown["timeline"]] == [("sent", "newsletter")]
    (message,) = shown["history"]
    assert message["status"] == "sent" and "context" not in message  # template data stays in


def test_a_batch_is_stored_at_once_and_sending_it_again_changes_nothing(
    site: Site, shop: dict[str, str]
) -> None:
    batch = [{"email": f"c{n}@example.com", "name": f"Customer {n}"} for n in range(1000)]
    assert site.call("POST", "/api/v1/customers", batch, shop).json()["inserted"] == 1000
    again = site.call("POST", "/api/v1/customers", batch, shop).json()
    assert again == {"inserted": 0, "updated": 0, "unchanged": 1000}
    too_many = site.call("POST", "/api/v1/customers", [*batch, {"email": "x@example.com"}], shop)
    assert "/1000" not in pointers(problem_of(too_many, 422))  # the list, not an item
    assert problem_of(too_many, 422)["errors"][0]["detail"].startswith("List should have at most")  # type: ignore[index]


def test_each_bad_item_is_named_by_index_and_field_and_nothing_of_the_call_is_kept(
    site: Site, shop: dict[str, str]
) -> None:
    batch = [
        {"email": "good@example.com"},
        {"email": "not an address"},
        {"email": "ana@example.com", "birthday": "31.02.1990", "timezone": "Mars/Olympus"},
        {"email": "bo@example.com", "colour": "blue"},
        {"email": "cy@example.com", "fields": {"E-Mail": "x"}},
    ]
    refused = problem_of(site.call("POST", "/api/v1/customers", batch, shop), 422)
    found = pointers(refused)
    assert set(found) == {"/3/colour"}  # the shape is checked first, by the schema
    assert "Extra inputs" in found["/3/colour"]
    del batch[3]
    refused = problem_of(site.call("POST", "/api/v1/customers", batch, shop), 422)
    found = pointers(refused)
    assert set(found) == {"/1/email", "/2/birthday", "/2/timezone", "/3/fields/E-Mail"}
    assert "31.02.1990" in found["/2/birthday"] and "Mars/Olympus" in found["/2/timezone"]
    by_pointer = {e["pointer"]: e for e in refused["errors"]}  # type: ignore[attr-defined]
    assert (by_pointer["/2/birthday"]["index"], by_pointer["/2/birthday"]["field"]) == (
        2,
        "birthday",
    )
    missing = site.call("GET", "/api/v1/customers/good@example.com", headers=shop)
    assert problem_of(missing, 404)["detail"] == "no customer good@example.com"
    one = problem_of(site.call("POST", "/api/v1/customers", {"email": "@"}, shop), 422)
    assert list(pointers(one)) == ["/email"] and one["errors"][0]["index"] is None  # type: ignore[index]


def test_keys_are_checked_wrong_or_revoked_is_401_and_a_missing_scope_403(
    site: Site, engine: Engine, clock: ManualClock
) -> None:
    reader = make_key(engine, clock, "reader", Scope.CUSTOMERS_READ)
    path = "/api/v1/customers"
    nobody = site.call("POST", path, MARIA)
    assert problem_of(nobody, 401) and nobody.headers["www-authenticate"] == "Bearer"
    wrong = {"Authorization": "Bearer mlr_" + "x" * 43}
    assert problem_of(site.call("POST", path, MARIA, wrong), 401)
    denied = problem_of(site.call("POST", path, MARIA, reader), 403)
    assert denied["detail"] == "this key lacks the scope customers:write"
    assert problem_of(site.call("GET", f"{path}/nobody@example.com", headers=reader), 404)
    with engine.begin() as conn:
        keys.revoke(conn, "reader", clock.now())
    assert problem_of(site.call("GET", f"{path}/nobody@example.com", headers=reader), 401)


def test_last_use_is_recorded_at_most_once_a_minute(
    site: Site, engine: Engine, clock: ManualClock, shop: dict[str, str]
) -> None:
    def last_used() -> datetime | None:
        with engine.connect() as conn:
            return keys.get(conn, "shop").last_used_at

    site.call("GET", "/api/v1/customers/a@example.com", headers=shop)
    first = clock.now()
    clock.advance(timedelta(seconds=30))
    site.call("GET", "/api/v1/customers/a@example.com", headers=shop)
    assert last_used() == first
    clock.advance(timedelta(seconds=30))
    site.call("GET", "/api/v1/customers/a@example.com", headers=shop)
    assert last_used() == clock.now()


@pytest.fixture
def second_site(engine: Engine, cfg: Config, clock: ManualClock) -> Iterator[Site]:
    """Another app on the same database, as a second process serving the API would be."""
    with served(build_web(cfg, engine, clock)) as running:
        yield running


def test_past_its_rate_a_key_gets_429_with_retry_after_counted_across_servers(
    site: Site, second_site: Site, engine: Engine, clock: ManualClock
) -> None:
    clock.set(datetime(2026, 11, 24, 12, 0, 45, tzinfo=UTC))
    slow = make_key(engine, clock, "slow", Scope.CUSTOMERS_READ, rate=3)
    other = make_key(engine, clock, "other", Scope.CUSTOMERS_READ, rate=3)
    path = "/api/v1/customers/a@example.com"
    for where in (site, second_site, site):
        assert where.call("GET", path, headers=slow).status == 404
    refused = second_site.call("GET", path, headers=slow)
    assert problem_of(refused, 429)["detail"] == "this key may make 3 requests a minute"
    assert refused.headers["retry-after"] == "15"
    assert site.call("GET", path, headers=other).status == 404  # each key its own count
    clock.advance(timedelta(seconds=15))
    assert site.call("GET", path, headers=slow).status == 404


def test_a_keys_count_keeps_one_window_and_a_refused_key_counts_nothing(
    site: Site, engine: Engine, clock: ManualClock
) -> None:
    """The counts an operator's database keeps: a key's first request in a new minute
    clears its older minutes, and a revoked or unknown key adds no count at all."""
    clock.set(datetime(2026, 11, 24, 12, 0, 30, tzinfo=UTC))
    shop = make_key(engine, clock, "shop", Scope.CUSTOMERS_READ)
    gone = make_key(engine, clock, "gone", Scope.CUSTOMERS_READ)
    with engine.begin() as conn:
        keys.revoke(conn, "gone", clock.now())
    path = "/api/v1/customers/a@example.com"

    def windows() -> list[tuple[str, datetime, int]]:
        query = (
            "SELECT k.name, w.window_start, w.requests FROM api_rate_windows w"
            " JOIN api_keys k ON k.id = w.key_id ORDER BY k.name"
        )
        with engine.connect() as conn:
            return [(n, _utc(start), r) for n, start, r in conn.exec_driver_sql(query)]

    for _ in range(2):
        assert site.call("GET", path, headers=shop).status == 404
    assert site.call("GET", path, headers=gone).status == 401
    assert site.call("GET", path, headers={"Authorization": "Bearer mlr_nobody"}).status == 401
    assert windows() == [("shop", datetime(2026, 11, 24, 12, 0, tzinfo=UTC), 2)]
    clock.advance(timedelta(minutes=1))
    assert site.call("GET", path, headers=shop).status == 404
    assert windows() == [("shop", datetime(2026, 11, 24, 12, 1, tzinfo=UTC), 1)]


def _utc(value: datetime | str) -> datetime:
    """A time as either database hands it to plain SQL: aware, or SQLite's text in UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


ORDERS = [
    {
        "order_id": "A-1",
        "email": "ana@example.com",
        "ordered_at": "2026-11-20T10:00:00+02:00",
        "currency": "EUR",
        "lines": [
            {"sku": "BEAN-1", "product": "Beans", "quantity": 2, "unit_price": "12.90"},
            {"sku": "MUG-2", "product": "Mug", "unit_price": 8},
        ],
    },
    {
        "order_id": "A-2",
        "email": "bo@example.com",
        "ordered_at": "2026-11-21",
        "currency": "BGN",
        "lines": [{"sku": "BEAN-1", "product": "Beans", "unit_price": 25.5}],
    },
]


def test_orders_are_recorded_once_however_often_they_are_sent(
    site: Site, shop: dict[str, str]
) -> None:
    first = site.call("POST", "/api/v1/orders", ORDERS, shop).json()
    assert first == {"added": 2, "unchanged": 0, "lines": 3, "customers_added": 2}
    again = site.call("POST", "/api/v1/orders", ORDERS, shop).json()
    assert again == {"added": 0, "unchanged": 2, "lines": 0, "customers_added": 0}
    shown = site.call("GET", "/api/v1/customers/ana@example.com", headers=shop).json()
    assert shown["orders"]["count"] == 1 and shown["orders"]["totals"] == {"EUR": "33.80"}
    changed = [{**ORDERS[0], "order_id": "A-3"}, {**ORDERS[1], "currency": "EUR"}]
    conflict = problem_of(site.call("POST", "/api/v1/orders", changed, shop), 409)
    assert list(pointers(conflict)) == ["/1/order_id"]
    assert site.call("POST", "/api/v1/orders", ORDERS[:1], shop).json()["unchanged"] == 1
    kept = site.call("POST", "/api/v1/orders", changed[:1], shop).json()
    assert kept["added"] == 1  # A-3 of the refused call was not kept


def test_a_bad_order_line_is_named_down_to_its_field(site: Site, shop: dict[str, str]) -> None:
    bad = [
        ORDERS[0],
        {
            **ORDERS[1],
            "ordered_at": "2999-01-01",
            "currency": "USD",
            "lines": [
                {"sku": "BEAN-1", "product": "Beans", "unit_price": "1"},
                {"sku": "", "product": "Beans", "unit_price": "1"},
            ],
        },
        {**ORDERS[0]},
        {**ORDERS[1], "order_id": "A-9", "lines": [{"sku": "X", "product": "Y", "unit_price": -2}]},
    ]
    found = pointers(problem_of(site.call("POST", "/api/v1/orders", bad, shop), 422))
    assert set(found) == {
        "/1/ordered_at",
        "/1/currency",
        "/1/lines/1/sku",
        "/2/order_id",
        "/3/lines/0/unit_price",
    }
    assert "in the future" in found["/1/ordered_at"] and "USD" in found["/1/currency"]
    assert found["/2/order_id"] == "order 0 has this id too"
    assert "negative" in found["/3/lines/0/unit_price"]
    assert problem_of(site.call("GET", "/api/v1/customers/ana@example.com", headers=shop), 404)


def test_an_erased_customer_is_gone_and_cannot_be_brought_back(
    site: Site, shop: dict[str, str]
) -> None:
    site.call("POST", "/api/v1/customers", MARIA, shop)
    erased = site.call("DELETE", "/api/v1/customers/maria@example.bg", headers=shop)
    assert erased.status == 200 and erased.json()["messages"] == 0
    assert problem_of(site.call("GET", "/api/v1/customers/maria@example.bg", headers=shop), 404)
    back = problem_of(site.call("POST", "/api/v1/customers", [MARIA], shop), 422)
    assert pointers(back) == {"/0/email": "erased at the customer's request"}
    gone = site.call("DELETE", "/api/v1/customers/maria@example.bg", headers=shop)
    assert problem_of(gone, 404)


def test_bodies_past_the_limit_and_bodies_not_json_are_refused_as_problems(
    site: Site, shop: dict[str, str]
) -> None:
    connection = _connect(site)  # a body said to be too large is refused before it is sent
    connection.putrequest("POST", "/api/v1/customers")
    for name, value in {**shop, "Content-Length": str(1024 * 1024 + 1)}.items():
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and response.getheader("content-type") == PROBLEM
    assert "max_body_bytes" in json.loads(response.read())["detail"]
    connection.close()
    garbled = site.call("POST", "/api/v1/customers", headers=shop, raw=b'{"email": ')
    assert problem_of(garbled, 400)["detail"] == "the request body is not JSON"
    # nested past what the JSON reader can follow: the same answer as past 32 levels
    abyss = b"[" * 50_000 + b"]" * 50_000
    deep = problem_of(site.call("POST", "/api/v1/customers", headers=shop, raw=abyss), 422)
    assert pointers(deep) == {"": "nested more than 32 levels deep"}
    assert problem_of(site.call("GET", "/api/v1/nowhere", headers=shop), 404)


def test_the_openapi_document_describes_every_route_and_the_key(site: Site) -> None:
    served_doc = site.call("GET", "/api/v1/openapi.json")
    assert served_doc.status == 200
    document = served_doc.json()
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises, naming the part of the document that breaks the spec
    assert document["servers"] == [{"url": "/api/v1"}]
    assert {p: sorted(ops) for p, ops in document["paths"].items()} == {
        "/customers": ["post"],
        "/customers/{email}": ["delete", "get"],
        "/orders": ["post"],
        "/messages": ["post"],
        "/messages/{message_id}": ["get"],
        "/events": ["post"],
        "/inquiries": ["get"],
        "/inquiries/{inquiry_id}": ["get"],
    }
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    upsert = document["paths"]["/customers"]["post"]
    assert upsert["security"] == [{"HTTPBearer": []}]
    invalid = upsert["responses"]["422"]["content"]
    assert invalid == {PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemDocument"}}}
    one_or_many = upsert["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert one_or_many[1]["maxItems"] == 1000


def _connect(site: Site) -> http.client.HTTPConnection:
    host, port = site.url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=10)


def test_a_body_sent_in_chunks_without_a_length_is_cut_off_at_the_limit(
    site: Site, shop: dict[str, str]
) -> None:
    connection = _connect(site)
    chunks = [b" " * 65536] * 16 + [b" "]  # one byte past the limit, never said up front
    headers = {**shop, "Content-Type": "application/json"}
    connection.request("POST", "/api/v1/customers", chunks, headers, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and response.getheader("content-type") == PROBLEM
    connection.close()


async def test_the_docs_page_shows_every_route_without_asking_any_other_server(
    page: Page, site: Site
) -> None:
    asked: list[str] = []
    failed: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.on("console", lambda m: failed.append(m.text) if m.type == "error" else None)
    await page.goto(site.url + "/api/v1/docs")
    routes = page.locator(".opblock-summary-path")
    await expect(routes).to_have_count(9)
    await expect(page.get_by_role("button", name="Authorize")).to_be_visible()
    assert {url.split("/")[2] for url in asked if not url.startswith("data:")} == {
        site.url.removeprefix("http://")
    }
    assert not failed  # nothing refused by the Content-Security-Policy, nothing missing


def _nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value


_DEEP = "/a" * 31  # the 32nd level, below the payload or the data
_SEND = {"template": "t", "to": "a@example.com"}
_EVENT = {"email": "a@example.com", "name": "x"}


def _order(**line: object) -> dict[str, object]:
    head = {"order_id": "Z-1", "email": "a@example.com", "ordered_at": "2026-01-01"}
    return {**head, "currency": "EUR", "lines": [{"sku": "a", "product": "b", **line}]}


ODD = [
    ("/api/v1/customers", None, ""),
    ("/api/v1/customers", "x", ""),
    ("/api/v1/customers", [1], "/0"),
    ("/api/v1/customers", {"email": "a@example.com", "tags": "x"}, "/tags"),
    ("/api/v1/customers", {"email": "a@example.com", "fields": {"a": 1}}, "/fields/a"),
    ("/api/v1/customers", {"email": "a@example.com\r\nBcc: x@example.com"}, "/email"),
    ("/api/v1/orders", _order(unit_price="NaN"), "/lines/0/unit_price"),
    ("/api/v1/orders", _order(unit_price="99999999999999999999"), "/lines/0/unit_price"),
    ("/api/v1/orders", _order(unit_price=1, quantity=10**20), "/lines/0/quantity"),
    ("/api/v1/orders", {**_order(unit_price=1), "lines": []}, "/lines"),
    # half of a surrogate pair, as a client leaves it when it cuts a string inside an emoji
    ("/api/v1/orders", _order(unit_price=1, product="Beans \ud83d"), "/lines/0/product"),
    ("/api/v1/customers", {"email": "a@example.com", "name": "\udc00"}, "/name"),
    ("/api/v1/messages", {**_SEND, "data": {"x": "\ud800"}}, "/data/x"),
    # nested past any real payload: refused where it passes 32 levels
    ("/api/v1/events", {**_EVENT, "payload": _nested(40)}, "/payload" + _DEEP),
    ("/api/v1/messages", {**_SEND, "data": _nested(40)}, "/data" + _DEEP),
]


@pytest.mark.parametrize(("path", "body", "pointer"), ODD)
def test_odd_input_is_a_problem_naming_the_field_never_a_failure(
    site: Site, shop: dict[str, str], path: str, body: object, pointer: str
) -> None:
    raw = json.dumps(body).encode()
    refused = problem_of(site.call("POST", path, headers=shop, raw=raw), 422)
    assert list(pointers(refused)) == [pointer]


def test_a_body_not_sent_as_json_is_refused_and_a_whole_emoji_is_kept(
    site: Site, shop: dict[str, str]
) -> None:
    """`curl -d` sends a form's Content-Type: the body was read as a string and refused for
    its shape ("a valid dictionary"). Now it is told how to send it. A character outside
    the BMP escaped as its pair (what JSON writers do) is whole, and kept."""
    body = json.dumps(MARIA).encode()
    for kind in ({"Content-Type": "application/x-www-form-urlencoded"}, {"Content-Type": ""}):
        refused = problem_of(site.call("POST", "/api/v1/customers", None, shop | kind, body), 415)
        assert refused["detail"] == "send the body as JSON, with Content-Type: application/json"
    coffee = {**MARIA, "name": "Мария \ud83d\ude00"}
    assert json.dumps(coffee).count("\\ud83d\\ude00") == 1  # sent as the escaped pair
    assert site.call("POST", "/api/v1/customers", coffee, shop).status == 200
    shown = site.call("GET", "/api/v1/customers/maria@example.bg", headers=shop).json()
    assert shown["name"] == "Мария 😀"


async def test_the_readmes_send_goes_out_with_the_shipped_receipt_in_the_customers_language(
    site: Site, shop: dict[str, str], cfg: Config, engine: Engine, clock: ManualClock
) -> None:
    """The README's example call, as a shop copies it, against the templates mailer ships."""
    assert site.call("POST", "/api/v1/customers", MARIA, shop).status == 200
    body = {
        "template": "order_confirmation",
        "to": "maria@example.bg",
        "locale": "bg-BG",
        "data": {"order": "1042", "total": "42.90 EUR"},
    }
    headers = shop | {"Idempotency-Key": "order-1042-confirmation"}
    assert site.call("POST", "/api/v1/messages", body, headers).status == 202
    (received,) = await deliver(cfg, engine, clock)
    message = received.message
    assert message["Subject"] == "Поръчка 1042 е потвърдена"  # noqa: RUF001
    html = message.get_body(("html",))
    assert html is not None
    content = str(html.get_content())  # type: ignore[attr-defined]
    assert "Мария" in content and "42.90 EUR" in content
    assert "unsubscribe" not in content.lower()  # a receipt: no unsubscribe link


def test_a_bug_answers_500_with_a_reference_that_its_log_line_carries(
    site: Site,
    shop: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fake fault, the one a real server cannot be asked for: a bug in a route. The shop's
    developer quotes the reference; the operator finds the line, with method and path."""

    def broken(*args: object, **kwargs: object) -> list[object]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(api_inquiries.inquiries, "since", broken)
    with caplog.at_level("ERROR", logger="mailer.api"):
        failed = problem_of(site.call("GET", "/api/v1/inquiries", headers=shop), 500)
    found = re.fullmatch(
        r"mailer failed to answer; the error is in its log as \[(\w{8})\]", str(failed["detail"])
    )
    assert found is not None, failed
    assert f"GET /api/v1/inquiries failed [{found[1]}]: RuntimeError('a bug')" in caplog.text
