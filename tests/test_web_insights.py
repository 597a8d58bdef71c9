"""The insights page and a customer's purchases in Debian's Chromium, on SQLite and
PostgreSQL: what marketing reads about segments, lifetime values and returning cohorts,
and what one customer's orders say about them."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page, expect
from sqlalchemy import Engine

from tests.conftest import sign_in
from tests.site import Site
from tests.test_insights_report import stock


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
