"""What a template sees about a customer: plain data built from the stored profile."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from mailer.core.config import Config

if TYPE_CHECKING:
    from mailer.customers.profiles import Profile


def customer_view(customer: Profile) -> dict[str, Any]:
    """The ``customer`` variable: profile fields only, never consent or internal state."""
    year, month, day = customer.birth_year, customer.birth_month, customer.birth_day
    return {
        "email": customer.email,
        "name": customer.name,
        "first_name": customer.first_name,
        "locale": customer.locale,
        "timezone": customer.timezone or "",
        "birthday": date(year, month, day) if year and month and day else None,
        "tags": list(customer.tags),
        "fields": dict(customer.fields),
    }


def customer_zone(customer: Profile | None, cfg: Config) -> ZoneInfo:
    """The customer's own zone, or the business's for a stranger or a customer who never
    told us."""
    name = customer.timezone if customer else None
    return ZoneInfo(name) if name else cfg.settings.business_hours.timezone
