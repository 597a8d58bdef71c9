"""What a template sees about a customer: plain data built from the stored row."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from mailer.core.config import Config


def customer_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``customer`` variable: profile fields only, never consent or internal state."""
    year, month, day = row.get("birth_year"), row.get("birth_month"), row.get("birth_day")
    return {
        "email": row["email"],
        "name": row.get("name") or "",
        "first_name": row.get("first_name") or "",
        "locale": row.get("locale"),
        "timezone": row.get("timezone") or "",
        "birthday": date(year, month, day) if year and month and day else None,
        "tags": list(row.get("tags") or []),
        "fields": dict(row.get("fields") or {}),
    }


def customer_zone(row: Mapping[str, Any], cfg: Config) -> ZoneInfo:
    """The customer's own zone, or the business's when the customer never told us."""
    name = row.get("timezone")
    return ZoneInfo(name) if name else cfg.settings.business_hours.timezone
