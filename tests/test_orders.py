"""Orders from the shop's CSV: exact money, whole orders only, re-imports that change
nothing, on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from mailer.commerce import orders, products
from mailer.commerce.order_rows import (
    Draft,
    LineRow,
    Packed,
    Rules,
    packed,
    packed_orders,
    parse_moment,
    parse_row,
    parse_rows,
)
from mailer.commerce.order_rows import orders as order_rows
from mailer.core.errors import ImportFileError
from mailer.core.money import from_minor, to_minor
from mailer.customers import profiles
from mailer.customers.csv_rows import too_many_cells
from mailer.store.models import Product

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
RULES = Rules(now=NOW, zone=ZoneInfo("Europe/Sofia"), currencies=frozenset({"EUR", "JPY", "BHD"}))
HEADER = "Order ID,Email,Date,SKU,Description,Qty,UnitPrice,Currency,Status\n"


def test_amounts_are_exact_in_each_currencys_decimals() -> None:
    assert to_minor("0.1", "EUR") + to_minor("0.2", "EUR") == to_minor("0.3", "EUR") == 30
    assert to_minor("1200", "JPY") == 1200 and from_minor(1200, "JPY") == "1200"
    assert to_minor("1.234", "BHD") == 1234 and from_minor(-5, "BHD") == "-0.005"
    assert to_minor("12,50", "EUR") == 1250 and to_minor("12.500", "EUR") == 1250
    for wrong in ("12.345", "1e3", "12.5.0", "abc"):
        with pytest.raises(ValueError):
            to_minor(wrong, "EUR")
    with pytest.raises(ValueError, match="more decimals than JPY's 0"):
        to_minor("100.5", "JPY")


def test_a_date_without_a_zone_is_the_businesss() -> None:
    sofia = ZoneInfo("Europe/Sofia")
    assert parse_moment("2026-03-01 14:30", sofia) == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    assert parse_moment("01.03.2026", sofia) == datetime(2026, 2, 28, 22, 0, tzinfo=UTC)
    for placeholder in ("0001-01-01", "01.01.0001", "9999-12-31T23:00-12:00"):
        with pytest.raises(ValueError, match="is not between the years 1900 and 2999"):
            parse_moment(placeholder, sofia)


def write(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + rows, encoding="utf-8")
    return path


GOOD = (
    "A1,ana@example.com,2026-11-01,BEAN-1,Beans,3,0.10,EUR,\n"
    "A1,ana@example.com,2026-11-01,MUG-2,Mug,1,0.20,EUR,\n"
    "J1,ken@example.jp,2026-11-02 10:00,BEAN-1,Beans,2,1200,JPY,\n"
    "B1,ali@example.bh,2026-11-03,BEAN-1,Beans,1,1.234,BHD,\n"
    "R1,ana@example.com,2026-11-05,BEAN-1,Beans,-1,0.10,EUR,returned\n"
)


ODD_ROWS = [
    "O1,a@example.com,2026-03-01 14:30,S1,Tea,2,12.50,EUR,placed",
    "O1, A@Example.COM ,2026-03-01 14:30,S2, Cups ,1,3,EUR,placed",
    "O1,a@example.com,2026-03-01 14:30,S3,Mug\x1b[31m,1,3.5,EUR,placed",
    "O2,b@example.com,01.03.2026,S1,Tea,-1,12.5,eur,returned",
    "O3,b@example.com,2026-03-01,S1,Tea,0,1.00,EUR,placed",
    "O4,b@example.com,2026-03-01,S1,Tea,1,1.005,EUR,placed",
    "O5,not an address,2030-01-01,,Tea,x,-1,USD,lost",
    "O6,c@example.com,2026-03-01,S1,Tea,1,7,JPY,",
    "O7,c@example.com,2026-03-01," + "S" * 101 + ",Tea,1,7,JPY,placed",
    "O8,c@example.com,2026-03-01,S1,Tea,1,7,JPY,placed,an extra cell",
    "O9,c@example.com,2026-03-01,S1,Tea,1",
    ",c@example.com,2026-03-01,S1,Tea,1,7,JPY,placed",
    "O10,c@example.com,2026-03-01,S1,Tea,1,12\u0660.5,BHD,placed",
]


def test_every_row_is_judged_as_the_full_check_judges_it() -> None:
    """Well-formed rows take a fast path: what it accepts, and the line and reason of what
    it leaves to the full check, are what the full check says of the row alone."""
    header = ["order_ref", "email", "ordered_at", "sku", "product", "quantity", "unit_price"]
    header += ["currency", "status"]
    rows = [(n, text.split(",")) for n, text in enumerate(ODD_ROWS, 2)]
    fast = list(parse_rows(header, [(n, list(cells)) for n, cells in rows], RULES))
    for (line, cells), got in zip(rows, fast, strict=True):
        try:
            if extra := too_many_cells(header, cells):
                raise ValueError(extra)
            assert got == parse_row(line, dict(zip(header, cells, strict=False)), RULES)
        except ValueError as exc:
            assert not isinstance(got, LineRow) and got[1].reason == str(exc)
    assert sum(isinstance(got, LineRow) for got in fast) == 6  # O8 has a cell too many


def test_orders_packed_from_the_fast_path_are_the_orders_the_full_check_gives() -> None:
    """A large file's orders skip LineRows where the fast path took every row: each order,
    its fingerprint, and each reason are what checking the rows one by one gives."""
    header = ["order_ref", "email", "ordered_at", "sku", "product", "quantity", "unit_price"]
    header += ["currency", "status"]
    texts = [
        *ODD_ROWS,
        "P1,a@example.com,2026-03-01,S1,Tea,2,12.50,EUR,placed",
        "P1,A@example.com,2026-03-01,S2,Cups,1,3,EUR,placed",  # the same, said otherwise
        "P2,a@example.com,2026-03-01,S1,Tea,2,12.50,EUR,",
        "P2,a@example.com,2026-03-02,S1,Tea,2,12.50,EUR,",  # another date
        "P3,a@example.com,2026-03-01,S1,Tea,-2,12.50,EUR,placed",  # not a return
        "P4,a@example.com,2026-03-01,S1,Tea,1,1,EUR,returned",
        "P4,a@example.com,2026-03-01,S1,Tea,-1,1,EUR,returned",
        "P1,a@example.com,2026-03-01,S1,Tea,2,12.50,EUR,placed",  # back after others
        "P5,a@example.com,2026-03-01,S1,Tea,1,1,EUR,placed",
        "P5,a@example.com,2026-03-01,S1,,1,1,EUR,placed",  # no product name
        "P6,a@example.com,2026-03-01,S1,Tea,1,1,EUR,placed",
        ",a@example.com,2026-03-01,S1,Tea,1,1,EUR,placed",
        "P6,a@example.com,2026-03-01,S1,Tea,1,1,EUR,placed",
    ]

    def rows() -> list[tuple[int, list[str]]]:
        return [(n, text.split(",")) for n, text in enumerate(texts, 2)]

    expected = [
        packed(o) if isinstance(o, Draft) else o
        for o in order_rows(parse_rows(header, rows(), RULES))
    ]
    assert list(packed_orders(header, rows(), RULES)) == expected
    assert sum(isinstance(o, Packed) for o in expected) == 7


def test_import_adds_orders_and_unknown_buyers_then_changes_nothing_again(
    engine: Engine, tmp_path: Path
) -> None:
    path = write(tmp_path, GOOD)
    report = orders.import_csv(engine, path, RULES)
    assert (report.added, report.lines, report.customers_added, report.rejected) == (4, 5, 3, [])
    again = orders.import_csv(engine, path, RULES)
    assert (again.added, again.unchanged, again.rejected) == (0, 4, [])
    with engine.connect() as conn:
        ana = profiles.get(conn, "ana@example.com")
        summary = orders.summary(conn, ana.id)
        listed = orders.find(conn)
    assert not ana.marketing_consent and ana.source == "orders"
    assert summary["count"] == 2 and summary["totals"] == {"EUR": "0.40"}  # 0.30 + 0.20 - 0.10
    assert summary["last_at"] == datetime(2026, 11, 4, 22, 0, tzinfo=UTC)
    totals = {row["order_ref"]: (row["total"], row["status"]) for row in listed}
    assert totals == {
        "A1": ("0.50", "placed"),
        "J1": ("2400", "placed"),
        "B1": ("1.234", "placed"),
        "R1": ("-0.10", "returned"),
    }


def test_each_bad_line_is_named_and_its_order_is_left_out_whole(
    engine: Engine, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "G1,ana@example.com,2026-11-01,BEAN-1,Beans,1,5.00,EUR,\n"
        "X1,bo@example.com,2026-11-01,BEAN-1,Beans,1,5.00,EUR,\n"
        "X1,bo@example.com,2026-11-01,MUG-2,Mug,1,5.00,USD,\n"
        "X2,bo@example.com,2026-11-01,MUG-2,Mug,-1,5.00,EUR,\n"
        "X3,bo@example.com,2099-01-01,MUG-2,Mug,1,5.00,EUR,\n"
        "X4,bo@example.com,yesterday,MUG-2,Mug,1,five,EUR,\n"
        ",bo@example.com,2026-11-01,MUG-2,Mug,1,5.00,EUR,\n"
        "X5,,2026-11-01,MUG-2,Mug,1,5.00,EUR,\n"
        "X6,bo@example.com,2026-11-01,MUG-2,Mug,1,5.00,EUR,\n"
        "X6,bo@example.com,2026-11-01,MUG-3,Mug, large,1,5.00,EUR,placed\n",  # unquoted comma
    )
    report = orders.import_csv(engine, path, RULES)
    bad = {line: reason for line, _, reason in orders.reasons(report.rejected)}
    assert "does not sell in USD" in bad[4]
    assert "negative but the order's status is not returned" in bad[5]
    assert "in the future" in bad[6]
    assert "is not a date" in bad[7] and "'five' is not an amount" in bad[7]
    assert bad[8] == "no order id" and bad[9] == "no email address"
    assert bad[11] == (
        "10 cells but the header has 9 columns: a value holding the separator (a comma) needs"
        " double quotes around it"
    )
    assert report.added == 1 and len(report.rejected) == 7
    with engine.connect() as conn:
        assert [o["order_ref"] for o in orders.find(conn)] == ["G1"]  # nothing of X1 or X6 went in


@pytest.mark.parametrize("apart", [False, True], ids=["read here", "read in a child"])
def test_a_file_of_many_batches_is_imported_whole_orders_and_reported_by_line(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apart: bool
) -> None:
    """Batches of two orders, read in this process or (as a large file is) in a child
    process while the batches before are written: the same orders, lines and reasons."""
    monkeypatch.setattr(orders, "BATCH", 2)
    monkeypatch.setattr(orders, "READ_APART", 0 if apart else 1 << 40)
    orders.import_csv(engine, write(tmp_path, GOOD), RULES)
    head = "N{0},buyer{1}@example.com,2026-11-0{2}"
    rows = "".join(
        f"{head.format(n, n % 3, 1 + n % 5)},BEAN-{n % 4},Beans {n % 4},1,1.00,EUR,\n"
        f"{head.format(n, n % 3, 1 + n % 5)},MUG-2,Mug,2,0.50,EUR,\n"
        for n in range(1, 10)
    )
    bad = "N5,buyer2@example.com,2026-11-01,MUG-2,Mug,1,nine,EUR,\n"  # N5's third line
    changed = GOOD.splitlines(keepends=True)[2].replace("1200", "1300")  # J1 with another price
    rows = rows.replace("N6,", bad + "N6,", 1) + changed
    seen: list[int] = []
    report = orders.import_csv(engine, write(tmp_path, rows), RULES, progress=seen.append)
    assert sum(seen) == 20 and len(seen) == 5
    assert orders.reasons(report.rejected) == [
        (12, "N5", "price 'nine' is not an amount like 12.50"),
        (21, "J1", "order J1 was imported before with other content; nothing of it was changed"),
    ]
    assert (report.added, report.lines, report.customers_added) == (8, 16, 3)
    with engine.connect() as conn:
        listed = {row["order_ref"]: row["lines"] for row in orders.find(conn, limit=100)}
        buyer = profiles.get(conn, "buyer1@example.com")
        skus = conn.execute(select(Product.sku).order_by(Product.sku)).scalars().all()
    assert "N5" not in listed and all(listed[f"N{n}"] == 2 for n in (1, 2, 3, 4, 6, 7, 8, 9))
    assert buyer.fields == {} and buyer.source == "orders" and not buyer.marketing_consent
    assert skus == ["BEAN-0", "BEAN-1", "BEAN-2", "BEAN-3", "MUG-2"]
    again = orders.import_csv(engine, write(tmp_path, rows), RULES)
    assert (again.added, again.unchanged, len(again.rejected)) == (0, 8, 2)


def test_an_order_whose_lines_are_apart_is_left_out_whole_and_imports_once_put_together(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D1's third line comes after D2, and its first part was stored in an earlier batch:
    the whole of D1 is left out, both places named, and the corrected file adds it."""
    monkeypatch.setattr(orders, "BATCH", 1)
    d1 = "D1,ana@example.com,2026-11-01,BEAN-1,Beans,1,5.00,EUR,\n"
    d2 = "D2,bo@example.com,2026-11-02,MUG-2,Mug,1,3.00,EUR,\n"
    late = "D1,ana@example.com,2026-11-01,MUG-2,Mug,2,3.00,EUR,\n"
    report = orders.import_csv(
        engine, write(tmp_path, d1 + d1.replace("BEAN-1", "TEA") + d2 + late), RULES
    )
    assert orders.reasons(report.rejected) == [
        (2, "D1", "order D1 goes on after other orders; left out whole, with the rest of it"),
        (5, "D1", "order D1 began at line 2; keep an order's lines together"),
    ]
    assert (report.added, report.lines, report.rejected_lines) == (1, 1, 3)
    with engine.connect() as conn:
        assert [o["order_ref"] for o in orders.find(conn)] == ["D2"]
    fixed = orders.import_csv(
        engine, write(tmp_path, d1 + d1.replace("BEAN-1", "TEA") + late + d2), RULES
    )
    assert (fixed.added, fixed.lines, fixed.unchanged, fixed.rejected) == (1, 3, 1, [])


def test_a_file_read_in_a_child_that_cannot_be_read_is_refused_by_name(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orders, "READ_APART", 0)
    path = tmp_path / "orders.csv"
    path.write_text("Email,SKU\nana@example.com,BEAN-1\n", encoding="utf-8")
    with pytest.raises(
        ImportFileError,
        match=r"orders\.csv: the first line must be a header with an 'order_id' column$",
    ):
        orders.import_csv(engine, path, RULES)
    path.write_bytes(b"Order ID,Email\n\xff\xfe,ana@example.com\n")
    with pytest.raises(ImportFileError, match=r"orders\.csv: line 2: byte 0xFF is not UTF-8"):
        orders.import_csv(engine, path, RULES)
    with engine.connect() as conn:
        assert orders.find(conn) == []


def test_a_reading_child_killed_half_way_through_a_batch_stops_the_import_with_a_line(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child is killed (as the out-of-memory killer would) while it is sending a batch
    bigger than the pipe can hold: the import stops with a line that says so instead of
    waiting for the rest of the batch, and the orders written before it are kept."""
    monkeypatch.setattr(orders, "READ_APART", 0)
    monkeypatch.setattr(orders, "PIPE_BYTES", 4096)
    rows = "".join(
        f"K{n},buyer{n % 50}@example.com,2026-11-01,BEAN-1,Beans,1,1.00,EUR,\n"
        for n in range(3 * orders.BATCH)
    )

    def kill_the_child_mid_batch(_lines: int) -> None:
        (child,) = multiprocessing.active_children()
        wchan = Path(f"/proc/{child.pid}/wchan")
        for _ in range(1000):  # at most 10 s for the child to fill the pipe
            if "pipe_write" in wchan.read_text():
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the child never waited on the pipe")
        os.kill(child.pid, signal.SIGKILL)

    with pytest.raises(ImportFileError, match=r"orders\.csv: the process reading it stopped"):
        orders.import_csv(engine, write(tmp_path, rows), RULES, progress=kill_the_child_mid_batch)
    with engine.connect() as conn:
        assert len(orders.find(conn, limit=5000)) == orders.BATCH


def test_an_order_imported_again_with_other_content_is_reported_and_kept(
    engine: Engine, tmp_path: Path
) -> None:
    orders.import_csv(engine, write(tmp_path, GOOD), RULES)
    changed = GOOD.replace("MUG-2,Mug,1,0.20", "MUG-2,Mug,2,0.20")
    report = orders.import_csv(engine, write(tmp_path, changed), RULES)
    assert orders.reasons(report.rejected) == [
        (2, "A1", "order A1 was imported before with other content; nothing of it was changed")
    ]
    with engine.connect() as conn:
        assert {o["order_ref"]: o["total"] for o in orders.find(conn)}["A1"] == "0.50"


def test_products_are_upserted_by_sku_and_learnt_from_orders(
    engine: Engine, tmp_path: Path
) -> None:
    orders.import_csv(engine, write(tmp_path, GOOD), RULES)
    path = tmp_path / "products.csv"
    path.write_text("StockCode,Name,Category\nBEAN-1,Espresso beans,coffee\nNEW-3,Filter,\n")
    report = products.import_csv(engine, path, NOW)
    assert (report.added, report.updated, report.unchanged) == (1, 1, 0)
    again = products.import_csv(engine, path, NOW)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 2)
    with engine.connect() as conn:
        rows = conn.execute(select(Product.sku, Product.name, Product.category)).all()  # type: ignore[call-overload]
    assert sorted(map(tuple, rows)) == [
        ("BEAN-1", "Espresso beans", "coffee"),
        ("MUG-2", "Mug", ""),
        ("NEW-3", "Filter", ""),
    ]
