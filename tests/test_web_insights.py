"""The insights page and a customer's purchases in Debian's Chromium, on SQLite and
PostgreSQL: what marketing reads about segments, lifetime values and returning cohorts,
and what one customer's orders say about them; the page shows the report the last refresh
kept, whatever was imported since."""

from __future__ import annotations

from datetime import UTC, timedelta
from pathlib import Path

from playwright.async_api import Page, expect
from sqlalchemy import Engine, delete

from mailer.commerce import insights, orders, refresh, report
from mailer.commerce.order_rows import Rules
from mailer.core.config import InsightSettings
from tests.conftest import sign_in
from tests.site import Site
from tests.test_insights_report import AS_OF, HEADER, NOW, stock, stored_reports


async def test_marketing_reads_segments_cohorts_and_a_customers_purchases(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    stock(engine, tmp_path)
    await sign_in(page, site, "mia")
    await (
        page.get_by_role("navigation", name="Sections").get_by_role("link", name="Insights").click()
    )
    await expect(page.get_by_role("heading", name="EUR: 3 customers, 100.00 EUR")).to_be_visible()
    segments = page.get_by_role("table", name="Segments, EUR")
    await expect(segments.locator("tbody tr")).not_to_have_count(0)
    await expect(page.get_by_role("img", name="Revenue by segment, EUR")).to_be_visible()
    await expect(page.get_by_role("img", name="Customers by lifetime value, JPY")).to_be_visible()
    january = page.get_by_role("table", name="Cohorts, EUR").get_by_role("row", name="2026-01")
    await expect(january).to_contain_text("2")  # ana and bob began in January
    await expect(january.locator("td").nth(1)).to_have_text("50%")  # ana came back in February
    await expect(page.get_by_role("table", name="Products, EUR")).to_contain_text("Mug")
    await page.get_by_role("link", name="ana@example.com").click()
    said = page.get_by_role("table", name="What their orders say")
    await expect(said).to_contain_text("55.00 EUR in 3 orders")
    await expect(said).to_contain_text("chance they still buy from us")
    await expect(said).to_contain_text("what we expect them to spend in the next")
    await expect(page.get_by_role("table", name="Latest orders")).to_contain_text("A3")


async def test_the_page_shows_the_report_kept_by_the_last_refresh(
    page: Page, site: Site, staff: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    stock(engine, tmp_path)
    with engine.begin() as conn:
        conn.execute(delete(report.REPORTS))  # as after the upgrade that brought the table
    await sign_in(page, site, "mia")
    await page.goto(site.url + "/insights")
    eur = page.get_by_role("heading", name="EUR: 3 customers, 100.00 EUR")
    await expect(eur).to_be_visible()
    assert stored_reports(engine) == 1  # built on this first view, kept for every other
    later = NOW + timedelta(hours=2)
    path = tmp_path / "more.csv"
    path.write_text(HEADER + "D1,dan@example.com,2026-06-30,MUG-2,Mug,9,25.00,,EUR,web,\n")
    rules = Rules(now=later, zone=UTC, currencies=frozenset())
    assert not orders.import_csv(engine, path, rules).rejected
    with engine.begin() as conn:
        insights.update_customers(conn, [1, 2, 3, 4, 5], later, InsightSettings())
    await page.reload()
    await expect(eur).to_be_visible()  # as of the last refresh, as the page says
    await expect(page.get_by_text(f"Figures as of {AS_OF}")).to_be_visible()
    refresh.run(engine, InsightSettings(), AS_OF, later)
    await page.reload()
    await expect(page.get_by_role("heading", name="EUR: 4 customers, 325.00 EUR")).to_be_visible()
