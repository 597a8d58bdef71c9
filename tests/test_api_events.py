"""A shop tells mailer what its customers did (viewed a product, left a cart), over real
HTTP on SQLite and PostgreSQL, and staff see it on the customer's timeline."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import Engine, func, select

from mailer.api.keys import Scope
from mailer.core.clock import ManualClock
from mailer.customers.events import EVENTS
from mailer.relationship import privacy
from tests.site import Reply, Site
from tests.test_api import make_key, pointers, problem_of

VIEWED = {
    "email": "Ana@Example.com",
    "name": "viewed_product",
    "occurred_at": "2026-11-24T13:30:00+02:00",
    "payload": {"sku": "TEA-1", "title": "Зелен чай"},
    "id": "ev-1",
}


def _stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(EVENTS)).scalar_one())


def test_an_event_shows_on_the_customers_timeline_once_however_often_it_is_sent(
    site: Site, engine: Engine, clock: ManualClock
) -> None:
    shop = make_key(engine, clock, "shop", Scope.EVENTS_WRITE, Scope.CUSTOMERS_READ)
    first = site.call("POST", "/api/v1/events", VIEWED, shop)
    assert first.status == 200, first.body
    assert first.json() == {"added": 1, "unchanged": 0, "customers_added": 1}
    again = site.call("POST", "/api/v1/events", [VIEWED], shop).json()
    assert again == {"added": 0, "unchanged": 1, "customers_added": 0}
    clock.advance(timedelta(minutes=5))
    cart = {"email": "ana@example.com", "name": "cart_abandoned"}  # now, no id
    assert site.call("POST", "/api/v1/events", cart, shop).json()["added"] == 1
    shown = site.call("GET", "/api/v1/customers/ana@example.com", headers=shop).json()
    assert shown["source"] == "api"  # unknown addresses become leads, as orders make them
    touches = [(e["kind"], e["title"], e["direction"], e["at"]) for e in shown["timeline"]]
    assert touches == [
        ("event", "cart_abandoned", "in", "2026-11-24T12:05:00Z"),
        ("event", "viewed_product", "in", "2026-11-24T11:30:00Z"),
    ]
    viewed = shown["timeline"][1]
    assert viewed["details"]["payload"] == VIEWED["payload"] and "Зелен чай" in viewed["text"]
    assert viewed["by"] == "api:shop"
    with engine.begin() as conn:
        assert privacy.erase(conn, "ana@example.com", clock.now()).events == 2
    assert _stored(engine) == 0  # a payload may say anything about them


def test_one_bad_event_in_a_batch_is_named_and_nothing_of_the_call_is_kept(
    site: Site, engine: Engine, clock: ManualClock
) -> None:
    shop = make_key(engine, clock, "shop", Scope.EVENTS_WRITE)
    batch = [
        {"email": f"c{n}@example.com", "name": "viewed_product", "id": f"e{n}"} for n in range(999)
    ]
    future = {"email": "late@example.com", "name": "x", "occurred_at": "2030-01-01T00:00:00Z"}
    refused = problem_of(site.call("POST", "/api/v1/events", [*batch, future], shop), 422)
    assert list(pointers(refused)) == ["/999/occurred_at"]
    assert refused["errors"][0]["index"] == 999  # type: ignore[index]
    shaped = [{**batch[0]}, {"email": "a@example.com", "name": "Viewed Product"}]
    shaped.append({"email": "b@example.com", "name": "x", "payload": {"big": "x" * 9000}})
    shaped.append({"email": "b@example.com", "name": "x", "occurred_at": "2026-11-24T10:00:00"})
    dotnet_none = "0001-01-01T00:00:00+01:00"  # a client's "no date": past the calendar in UTC
    shaped.append({"email": "b@example.com", "name": "x", "occurred_at": dotnet_none})
    shaped.append({"email": "b@example.com", "name": "x", "payload": {"price": float("nan")}})
    found = pointers(problem_of(site.call("POST", "/api/v1/events", shaped, shop), 422))
    assert set(found) == {"/1/name", "/2/payload", "/3/occurred_at", "/4/occurred_at", "/5/payload"}
    assert "not between the years 1900 and 2999" in found["/4/occurred_at"]
    assert "9010 bytes" in found["/2/payload"]
    twice = [batch[0], {**batch[0], "email": "C0@example.com"}]
    found = pointers(problem_of(site.call("POST", "/api/v1/events", twice, shop), 422))
    assert found == {"/1/id": "event 0 has this id too"}
    bad_address = problem_of(
        site.call("POST", "/api/v1/events", {"email": "no", "name": "x"}, shop), 422
    )
    assert list(pointers(bad_address)) == ["/email"]
    assert _stored(engine) == 0
    assert site.call("POST", "/api/v1/events", batch, shop).json()["added"] == 999


def test_a_key_without_the_events_scope_is_refused(
    site: Site, engine: Engine, clock: ManualClock
) -> None:
    reader = make_key(engine, clock, "reader", Scope.CUSTOMERS_READ)
    refused = problem_of(site.call("POST", "/api/v1/events", VIEWED, reader), 403)
    assert "events:write" in str(refused["detail"])
    assert _stored(engine) == 0


def test_an_id_sent_again_with_other_content_is_a_conflict_and_nothing_of_the_call_is_kept(
    site: Site, engine: Engine, clock: ManualClock
) -> None:
    shop = make_key(engine, clock, "shop", Scope.EVENTS_WRITE)
    assert site.call("POST", "/api/v1/events", VIEWED, shop).status == 200
    changed = {**VIEWED, "payload": {"sku": "TEA-2"}}
    fresh = {"email": "bob@example.com", "name": "viewed_product", "id": "ev-9"}
    refused = problem_of(site.call("POST", "/api/v1/events", [fresh, changed], shop), 409)
    assert pointers(refused) == {
        "/1/id": "event 'ev-1' of ana@example.com was stored before with another name, time"
        " or payload; send it with a new id"
    }
    assert _stored(engine) == 1  # bob's event went back with the call
    again = site.call("POST", "/api/v1/events", [fresh, VIEWED], shop)
    assert again.json() == {"added": 1, "unchanged": 1, "customers_added": 1}


def test_calls_racing_with_the_same_new_events_store_each_once_without_an_error(
    site: Site, engine: Engine, clock: ManualClock
) -> None:
    """Eight shop workers retry the same batch at once, for an address mailer has not seen."""
    shop = make_key(engine, clock, "shop", Scope.EVENTS_WRITE)
    batch = [
        {"email": "racer@example.com", "name": "cart_abandoned", "id": f"r{n}", "payload": {"n": n}}
        for n in range(20)
    ]
    start = threading.Barrier(8)

    def send(_: int) -> Reply:
        start.wait()
        return site.call("POST", "/api/v1/events", batch, shop)

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(send, range(8)))
    assert [reply.status for reply in replies] == [200] * 8, [r.body for r in replies]
    assert sum(reply.json()["added"] for reply in replies) == 20
    assert _stored(engine) == 20
