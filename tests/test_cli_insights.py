"""`mailer insights` as a person runs it: refresh the figures, export them, and see them on a
customer, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailer.cli import common
from tests.command import Mailer

# the fixtures of the `mailer` command's tests
from tests.command import mailer as mailer
from tests.command import project as project

HEADER = "order_id,email,ordered_at,sku,product,quantity,unit_price,currency,channel\n"
START = date(2026, 1, 1)


def line(ref: str, email: str, day: date, price: str = "20.00", sku: str = "BEAN-1") -> str:
    return f"{ref},{email},{day},{sku},Beans,1,{price},EUR,web\n"


def crowd() -> list[str]:
    """Sixty customers who buy now and then and drop out after a purchase one time in
    three: enough repeat buyers, and enough who stopped, to fit the models."""
    pick = random.Random(7)
    rows = []
    for n in range(60):
        day = date(2025, 1, 1) + timedelta(days=pick.randrange(180))
        for k in range(12):
            rows.append(line(f"C{n}-{k}", f"c{n}@example.com", day, f"{pick.randrange(10, 60)}.00"))
            day += timedelta(days=round(pick.expovariate(1 / 40)) + 1)
            if pick.random() < 0.3 or day > date(2026, 6, 30):
                break
    return rows


def orders_file(tmp_path: Path, rows: list[str], name: str = "orders.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "".join(rows), encoding="utf-8")
    return path


def exported(mailer: Mailer, *args: str) -> dict[str, dict[str, Any]]:
    found = json.loads(mailer("insights", "export", "--json", *args).stdout)
    return {row["email"]: row for row in found}


def test_refresh_as_of_a_day_segments_and_predicts_each_kind_of_customer(
    mailer: Mailer, tmp_path: Path
) -> None:
    mailer("db", "upgrade")
    regular = [line(f"R{k}", "reg@example.com", START + timedelta(days=30 * k)) for k in range(6)]
    later = line("R-late", "reg@example.com", date(2026, 7, 20))  # after --as-of: ignored
    lapsed = [
        line(f"L{k}", "gone@example.com", date(2025, 1, 2) + timedelta(10 * k)) for k in range(6)
    ]
    once = line("O1", "once@example.com", date(2026, 6, 20), "35.00", "MUG-2")
    mailer(
        "orders", "import", str(orders_file(tmp_path, [*regular, later, *lapsed, once, *crowd()]))
    )
    result = mailer("insights", "refresh", "--as-of", "2026-06-30")
    assert "as of 2026-06-30" in result.stdout and "no purchase model" not in result.stderr
    found = exported(mailer)
    reg, gone, one = found["reg@example.com"], found["gone@example.com"], found["once@example.com"]
    assert (reg["orders"], reg["monetary"], reg["currency"]) == (6, "120.00", "EUR")
    assert reg["recency_days"] == (date(2026, 6, 30) - date(2026, 5, 31)).days
    assert reg["basis"] == "own rhythm"
    predicted = date.fromisoformat(reg["predicted_next_order"])
    assert abs((predicted - date(2026, 6, 30)).days) <= 2  # due 30 days after 31 May
    assert reg["p_active"] > gone["p_active"] + 0.3 and reg["expected_orders"] > 0.5
    assert one["one_time_buyer"] and one["basis"] == "one-time buyer"
    assert one["rfm_segment"] == "new" and one["p_active"] == 1.0 and one["clv"] is not None
    assert one["basket"] == [{"sku": "MUG-2", "orders": 1}]
    assert gone["p_active"] < 0.2 and gone["rfm_segment"] in {"at risk", "can't lose"}
    assert gone["predicted_next_order"] is None
    longer = exported(mailer, "--horizon", "365d")["reg@example.com"]
    assert longer["expected_orders"] > reg["expected_orders"]
    shown = json.loads(mailer("customers", "show", "reg@example.com", "--json").stdout)
    assert shown["insight"]["rfm_segment"] == reg["rfm_segment"]
    assert shown["insight"]["predicted_next_order"] == reg["predicted_next_order"]


def test_an_order_import_brings_the_customers_insight_up_to_date(
    mailer: Mailer, tmp_path: Path
) -> None:
    mailer("db", "upgrade")
    once = line("O1", "once@example.com", date(2026, 6, 1))
    mailer("orders", "import", str(orders_file(tmp_path, [once, *crowd()])))
    mailer("insights", "refresh", "--as-of", "2026-06-30")
    assert exported(mailer)["once@example.com"]["one_time_buyer"]
    again = line("O2", "once@example.com", date(2026, 11, 1), "40.00")
    mailer("orders", "import", str(orders_file(tmp_path, [again], "more.csv")))
    now = exported(mailer)["once@example.com"]
    assert (now["orders"], now["monetary"], now["one_time_buyer"]) == (2, "60.00", False)
    assert now["last_order"] == "2026-11-01" and now["p_active"] is not None


def test_a_fit_that_fails_says_so_in_one_line_and_still_writes_rfm(
    mailer: Mailer, tmp_path: Path
) -> None:
    mailer("db", "upgrade")
    rows = [line(f"O{n}", f"o{n}@example.com", START + timedelta(days=n)) for n in range(5)]
    mailer("orders", "import", str(orders_file(tmp_path, rows)))
    result = mailer("insights", "refresh", "--as-of", "2026-06-30")
    assert result.returncode == 0
    assert result.stderr.count("\n") == 1 and "no purchase model" in result.stderr
    assert "repeat purchases" in result.stderr
    found = exported(mailer)
    assert len(found) == 5
    assert all(r["p_active"] is None and r["clv"] is None for r in found.values())
    assert found["o4@example.com"]["r_score"] == 5 and found["o0@example.com"]["r_score"] == 1
    assert {r["rfm_segment"] for r in found.values()} <= {"new", "potential", "hibernating", "lost"}


def test_a_currency_without_a_spend_model_is_named_with_the_reason(
    mailer: Mailer, tmp_path: Path
) -> None:
    """One customer buying in leva, one repeat purchase: the purchase model is fitted on
    everybody, the leva have no spend model, and the note says why."""
    mailer("db", "upgrade")
    leva = [
        line(f"B{k}", "bg@example.com", START + timedelta(days=20 * k)).replace("EUR", "BGN")
        for k in range(2)
    ]
    mailer("orders", "import", str(orders_file(tmp_path, [*crowd(), *leva])))
    result = mailer("insights", "refresh", "--as-of", "2026-06-30")
    assert result.stderr == (
        "no spend model for BGN: Gamma-Gamma fit needs at least two customers with paid "
        "repeat purchases; clv left empty there\n"
    )
    found = exported(mailer)
    assert found["bg@example.com"]["clv"] is None and found["bg@example.com"]["p_active"]
    assert all(row["clv"] is not None for email, row in found.items() if email != "bg@example.com")


def test_the_report_gives_each_currency_its_segments_products_and_cohorts(
    mailer: Mailer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailer("db", "upgrade")
    regular = [line(f"R{k}", "reg@example.com", START + timedelta(days=30 * k)) for k in range(6)]
    leva = "Y1,ken@example.bg,2026-03-01,BEAN-1,Beans,2,12.00,BGN,store\n"
    mailer("orders", "import", str(orders_file(tmp_path, [*regular, leva, *crowd()])))
    mailer("insights", "refresh", "--as-of", "2026-06-30")
    found = json.loads(mailer("insights", "report", "--json").stdout)
    assert found["as_of"] == "2026-06-30"
    eur, bgn = found["currencies"]
    assert (eur["currency"], eur["customers"], bgn["currency"], bgn["revenue"]) == (
        "EUR",
        61,
        "BGN",
        "24.00",
    )
    assert sum(s["customers"] for s in eur["segments"]) == 61
    assert eur["top_customers"][0]["revenue"] >= eur["top_customers"][-1]["revenue"]
    assert eur["products"][0]["sku"] == "BEAN-1" and eur["products"][0]["never_bought"] == 0
    # the twelve months up to the refresh's hold one first order: reg's, 1 January in Sofia
    # (31 December in UTC), so January; the next, 31 January, is January too, then 2 March
    (cohort,) = eur["cohorts"]
    assert (cohort["month"], cohort["customers"]) == ("2026-01", 1)
    assert cohort["returned"][:2] == [0.0, 1.0]
    assert [c["name"] for c in bgn["channels"]] == ["store"]
    monkeypatch.setattr(common.out, "width", 80)
    text = mailer("insights", "report").stdout
    assert "EUR: 61 customers" in text and "BGN products" in text and "BEAN-1" in text
    assert all(len(row) <= 80 for row in text.splitlines())
