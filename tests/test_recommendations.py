"""What customers who bought the same also bought, and the mail that shows it: a customer's
orders, insight and recommendations reach their message through the outbox and a real SMTP
server, a customer without orders still gets a sensible message, and the preview marketing
looks at says what the customer will get."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sqlalchemy import Engine, select

from mailer import daemon
from mailer.commerce import facts, insights, orders, products, recommendations, refresh
from mailer.commerce.order_rows import Rules
from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config, InsightSettings
from mailer.customers import profiles
from mailer.insight import cobought
from mailer.outbound import outbox
from mailer.outbound.outbox import NewMessage
from mailer.outbound.smtp import SmtpTarget
from mailer.outbound.templates import TemplateStore
from mailer.scheduling import previews
from tests.conftest import add_customers
from tests.smtp_sink import Sink

SOFIA = ZoneInfo("Europe/Sofia")
# Who bought what: A with B three times, A with C twice, D with E twice; every other pair
# once, too few to count. Buyers: A 5, B 3, C 2, D 3, E 3.
BASKETS = {
    "c1": "ABC",
    "c2": "AB",
    "c3": "ABD",
    "c4": "AC",
    "c5": "DE",
    "c6": "DE",
    "c7": "AE",
}
AB, AC, DE = 3 / np.sqrt(5 * 3), 2 / np.sqrt(5 * 2), 2 / np.sqrt(3 * 3)


def pairs() -> tuple[np.ndarray, np.ndarray]:
    rows = [(int(c[1:]), "ABCDE".index(s)) for c, skus in BASKETS.items() for s in skus]
    rows.append((1, 0))  # a second purchase of A by c1 changes nothing: buyers, not orders
    customer, sku = zip(*rows, strict=True)
    return np.array(customer, dtype=np.int64), np.array(sku, dtype=np.int64)


def test_each_sku_keeps_its_nearest_co_bought_skus_by_the_cosine_of_their_buyers() -> None:
    found = cobought.neighbours(*pairs(), 5)
    got = [
        ("ABCDE"[a], "ABCDE"[b], int(r), int(c), round(float(s), 6))
        for a, b, r, c, s in zip(
            found.sku, found.other, found.rank, found.customers, found.score, strict=True
        )
    ]
    assert got == [
        ("A", "B", 1, 3, round(AB, 6)),
        ("A", "C", 2, 2, round(AC, 6)),
        ("B", "A", 1, 3, round(AB, 6)),
        ("C", "A", 1, 2, round(AC, 6)),
        ("D", "E", 1, 2, round(DE, 6)),
        ("E", "D", 1, 2, round(DE, 6)),
    ]
    top_one = cobought.neighbours(*pairs(), 5, top=1)
    assert ["ABCDE"[b] for b in top_one.other[top_one.sku == 0]] == ["B"]


def test_a_customer_gets_the_neighbours_of_what_they_bought_less_what_they_own() -> None:
    near = {"A": [("B", 0.8), ("C", 0.6)], "E": [("D", 0.7)], "B": [("C", 0.3), ("A", 0.8)]}
    assert cobought.for_customer(["A", "E"], near, 5) == [
        cobought.Suggestion("B", 0.8, "A"),
        cobought.Suggestion("D", 0.7, "E"),
        cobought.Suggestion("C", 0.6, "A"),
    ]
    # C is near both A and B: the sum ranks it first, and it goes with A, the closer
    assert cobought.for_customer(["A", "B"], {**near, "B": [("C", 0.3)], "A": [("C", 0.6)]}, 5) == [
        cobought.Suggestion("C", 0.8999999999999999, "A")
    ]
    assert cobought.for_customer(["A", "E"], near, 1) == [cobought.Suggestion("B", 0.8, "A")]
    assert cobought.for_customer([], near, 5) == []


NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
HEADER = "Order ID,Email,Date,SKU,Description,Category,Qty,UnitPrice,Currency,Channel\n"
NAMES = {
    "A": "Ethiopia Yirgacheffe",
    "B": "V60 filters",
    "C": "Kenya AA",
    "D": "Decaf",
    "E": "Oat cookies",
}
CATALOGUE = "sku,name,category\n" + "".join(
    f"{s},{n},{'gear' if s == 'B' else 'coffee'}\n" for s, n in NAMES.items()
)


def order_rows() -> str:
    lines = []
    for n, (who, skus) in enumerate(BASKETS.items(), 1):
        for sku in skus:
            lines.append(
                f"N{n},{who}@example.com,2026-10-{n:02d},{sku},{NAMES[sku]},,1,4.50,EUR,web"
            )
    lines.append("N99,c7@example.com,2026-11-20,A,Ethiopia Yirgacheffe,,2,4.50,EUR,web")
    return HEADER + "\n".join(lines) + "\n"


@pytest.fixture
def shop(engine: Engine, tmp_path: Path) -> Engine:
    """Seven customers with orders (c7 reads Bulgarian), one without, the catalogue, and
    a full insight refresh."""
    people = "email,name,locale,timezone\nc7@example.com,Петя Колева,bg,Europe/Sofia\n"
    people += "new@example.com,Nia New,en,Europe/Sofia\n"
    add_customers(engine, tmp_path, people, NOW)
    (tmp_path / "products.csv").write_text(CATALOGUE, encoding="utf-8")
    products.import_csv(engine, tmp_path / "products.csv", NOW)
    (tmp_path / "orders.csv").write_text(order_rows(), encoding="utf-8")
    rules = Rules(now=NOW, zone=SOFIA, currencies=frozenset({"EUR"}))
    assert not orders.import_csv(engine, tmp_path / "orders.csv", rules).rejected
    report = refresh.run(engine, InsightSettings(), date(2026, 11, 24), NOW, SOFIA)
    assert report.recommended == 5
    return engine


def ids(engine: Engine, *emails: str) -> list[int]:
    with engine.connect() as conn:
        return [profiles.get(conn, e).id for e in emails]


def test_the_refresh_stores_what_was_bought_together_and_customers_get_it_named(
    shop: Engine,
) -> None:
    table = recommendations.RECOMMENDATIONS
    with shop.connect() as conn:
        stored = conn.execute(
            select(table.c.sku, table.c.rank, table.c.other_sku, table.c.customers).order_by(
                table.c.sku, table.c.rank
            )
        ).all()
        c7, c5, new = ids(shop, "c7@example.com", "c5@example.com", "new@example.com")
        found = recommendations.for_customers(conn, [c7, c5, new])
    assert [tuple(r) for r in stored] == [
        ("A", 1, "B", 3),
        ("A", 2, "C", 2),
        ("B", 1, "A", 3),
        ("C", 1, "A", 2),
        ("D", 1, "E", 2),
        ("E", 1, "D", 2),
    ]
    assert [(r["sku"], r["product"], r["category"], r["because_product"]) for r in found[c7]] == [
        ("B", "V60 filters", "gear", "Ethiopia Yirgacheffe"),
        ("D", "Decaf", "coffee", "Oat cookies"),
        ("C", "Kenya AA", "coffee", "Ethiopia Yirgacheffe"),
    ]
    assert found[c5] == [] and found[new] == []


def test_facts_give_recent_orders_with_lines_and_the_shown_insight(shop: Engine) -> None:
    c7, new = ids(shop, "c7@example.com", "new@example.com")
    with shop.connect() as conn:
        found = facts.load(conn, [c7, new], facts.NAMES)
        shown = insights.export(conn, customer_id=c7)
    latest = found[c7]["orders"][0]
    assert (latest["id"], latest["date"], latest["total"], latest["currency"]) == (
        "N99",
        datetime(2026, 11, 19, 22, 0, tzinfo=UTC),  # the 20th began then in Sofia
        "9.00",
        "EUR",
    )
    assert latest["lines"] == [
        {"sku": "A", "product": "Ethiopia Yirgacheffe", "category": "coffee", "quantity": 2}
    ]
    assert [o["id"] for o in found[c7]["orders"]] == ["N99", "N7"]
    assert found[c7]["insight"] == shown[0]
    assert found[new] == {"orders": [], "insight": None, "recommendations": []}


def test_a_template_that_reads_none_of_them_loads_none() -> None:
    store = TemplateStore(Path(__file__).resolve().parent.parent / "templates")
    assert store.reads("newsletter") & set(facts.NAMES) == set()
    assert store.reads("reorder") >= {"orders", "insight", "recommendations"}


def reorder(to: str, customer_id: int) -> NewMessage:
    return NewMessage(
        dedupe_key=f"reorder:{to}",
        to_address=to,
        customer_id=customer_id,
        category=Category.MARKETING,
        template="reorder",
    )


async def test_reorder_mail_shows_the_customers_orders_and_recommendations_as_previewed(
    shop: Engine, cfg: Config, clock: ManualClock, sink: tuple[Sink, int]
) -> None:
    c7, new = ids(shop, "c7@example.com", "new@example.com")
    delivery = daemon.build_delivery(cfg, shop, clock, SmtpTarget(host="127.0.0.1", port=sink[1]))
    outbox.enqueue(shop, [reorder("c7@example.com", c7), reorder("new@example.com", new)], NOW)

    assert await delivery.deliver_due() == 2
    mails = {m.rcpt_tos[0]: m.message for m in sink[0].received}
    petya = mails["c7@example.com"].get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert mails["c7@example.com"]["Subject"] == "Време е за ново кафе, Петя?"  # noqa: RUF001
    assert "На 20 ноември 2026 г. поръчахте:\n\n- 2 \u00d7 Ethiopia Yirgacheffe" in petya  # noqa: RUF001
    assert "V60 filters (често се купува заедно с Ethiopia Yirgacheffe)" in petya  # noqa: RUF001
    assert petya.index("V60 filters") < petya.index("Decaf") < petya.index("Kenya AA")
    assert "Отписване" in petya and "/unsubscribe/" in petya
    nia = mails["new@example.com"].get_body(("plain",)).get_content()
    assert mails["new@example.com"]["Subject"].startswith("Fresh from the roaster")
    assert "We roast fresh batches every week" in nia and "also bought" not in nia

    with shop.connect() as conn:
        petya_profile = profiles.get(conn, "c7@example.com")
    shown = previews.preview(
        shop,
        cfg,
        TemplateStore(cfg.templates_dir),
        petya_profile,
        "reorder",
        locale=None,
        category=Category.MARKETING,
        now=clock.now(),
    )
    assert shown.subject == mails["c7@example.com"]["Subject"]
    sent = petya.split("Получавате")[0]  # the footer's links differ
    assert shown.text.replace("\r\n", "\n").split("Получавате")[0] == sent
