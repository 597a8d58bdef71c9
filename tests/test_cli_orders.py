"""`mailer orders` and `mailer products` as a person runs them."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from mailer.commerce import products
from mailer.store import db
from tests.command import Mailer

# the fixtures of the `mailer` command's tests
from tests.command import mailer as mailer
from tests.command import project as project

ROWS = (
    "OrderNo,customer_email,InvoiceDate,StockCode,Description,qty,price,Currency\n"
    "A1,ana@example.com,2026-01-05,BEAN-1,Beans,2,0.10,EUR\n"
    "A1,ana@example.com,2026-01-05,MUG-2,Mug,1,0.20,EUR\n"
    "A2,bo@example.com,2999-01-01,MUG-2,Mug,1,5.00,EUR\n"
)


def test_orders_import_reports_bad_lines_exits_1_and_shows_on_the_customer(
    mailer: Mailer, tmp_path: Path
) -> None:
    mailer("db", "upgrade")
    csv = tmp_path / "orders.csv"
    csv.write_text(ROWS, encoding="utf-8")
    result = mailer("orders", "import", str(csv), check=False)
    assert result.returncode == 1
    assert f"{csv}:4: rejected order A2: order date '2999-01-01' is in the future" in result.stderr
    assert "1 orders added (2 lines, 1 new customers), 0 unchanged, 1 rejected" in result.stdout
    again = json.loads(mailer("orders", "import", str(csv), "--json", check=False).stdout)
    assert again["unchanged"] == 1 and again["rejected"][0]["line"] == 4
    listed = json.loads(mailer("orders", "list", "--customer", "ana@example.com", "--json").stdout)
    assert [(o["order_ref"], o["total"], o["lines"]) for o in listed] == [("A1", "0.40", 2)]
    shown = json.loads(mailer("customers", "show", "ana@example.com", "--json").stdout)
    assert shown["orders"]["count"] == 1 and shown["orders"]["totals"] == {"EUR": "0.40"}


def test_products_import_upserts(mailer: Mailer, tmp_path: Path, project: dict[str, str]) -> None:
    mailer("db", "upgrade")
    csv = tmp_path / "products.csv"
    csv.write_text("sku,name,category\nBEAN-1,Beans,coffee\n,Nameless,\n", encoding="utf-8")
    result = mailer("products", "import", str(csv), check=False)
    assert result.returncode == 1 and f"{csv}:3: rejected no SKU" in result.stderr
    assert "1 added, 0 updated, 0 unchanged, 1 rejected" in result.stdout
    twice = tmp_path / "twice.csv"
    rows = "sku,name,category\nBEAN-2,Old name,coffee\nBEAN-2,New name,\n"
    twice.write_text(rows, encoding="utf-8")
    result = mailer("products", "import", str(twice))
    assert f"{twice}:3: same SKU as line 2; the later row's values were kept" in result.stderr
    assert "1 added, 0 updated, 0 unchanged, 0 rejected" in result.stdout
    listed = json.loads(mailer("products", "import", str(twice), "--json").stdout)
    assert listed["duplicates"] == [{"line": 3, "first_line": 2}]
    engine = db.connect(project["MAILER_DATABASE__URL"])
    with engine.connect() as conn:  # the later row's empty category keeps the earlier one's
        stored = conn.execute(select(products.PRODUCTS).where(products.PRODUCTS.c.sku == "BEAN-2"))
        assert tuple(stored.one())[1:3] == ("New name", "coffee")
    engine.dispose()


def test_a_file_without_quantities_is_one_item_a_line_and_insight_needs_orders_first(
    mailer: Mailer, tmp_path: Path
) -> None:
    mailer("db", "upgrade")
    nothing = mailer("insights", "refresh", check=False)
    assert nothing.returncode == 1
    assert nothing.stderr.strip().splitlines() == [
        "error: no orders up to"
        f" {nothing.stderr.split('up to ')[1].split()[0]} to learn from;"
        " `mailer orders import` first"
    ]
    csv = tmp_path / "orders.csv"
    csv.write_text(
        "order_id,email,ordered_at,sku,product,unit_price,currency\n"
        "B1,ana@example.com,2026-01-05,BEAN-1,Beans,12.50,EUR\n"
        "B1,ana@example.com,2026-01-05,MUG-2,Mug,9.00,EUR\n",
        encoding="utf-8",
    )
    assert "1 orders added (2 lines" in mailer("orders", "import", str(csv)).stdout
    listed = json.loads(mailer("orders", "list", "--json").stdout)
    assert [(o["order_ref"], o["total"]) for o in listed] == [("B1", "21.50")]
