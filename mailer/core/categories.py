"""Why a message is sent: the one vocabulary that tables, schedules and throttling share.

Kept apart from the tables so pure decisions (throttling, schedules) can name a category
without loading the database layer.
"""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    """Why a message is sent; caps and unsubscribes apply per category."""

    TRANSACTIONAL = "transactional"
    RELATIONSHIP = "relationship"
    MARKETING = "marketing"
