"""JSON that keeps dates, times and durations: template context stored on an outbox row.

A message is rendered when it is sent, not when it is queued, so what a template needs
(an inquiry's received time, a webinar's start) waits in the database as JSON and must
come back as the same types the date filters expect.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any


def encode(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} in a message's context; use UTC")
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, timedelta):
        return {"$seconds": value.total_seconds()}
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key == "$datetime":
                return datetime.fromisoformat(inner)
            if key == "$date":
                return date.fromisoformat(inner)
            if key == "$seconds":
                return timedelta(seconds=inner)
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def standard_text(value: Any) -> str:
    """``value`` as compact standard JSON; ValueError for NaN or Infinity, which Python's
    JSON reads and writes but no other reader takes (nor PostgreSQL's json type)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise ValueError("NaN and Infinity are not JSON numbers; send null or a number") from None
