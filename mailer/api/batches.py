"""One item or a list of them: the body every write route takes, so a shop sends a single
change as it happens or a backlog in one call."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import Discriminator, Field, Tag

BATCH_MAX = 1000  # items in one call

Item = TypeVar("Item")


def _shape(value: Any) -> str:
    return "batch" if isinstance(value, list) else "one"


OneOrBatch = Annotated[
    Annotated[Item, Tag("one")]
    | Annotated[list[Item], Tag("batch"), Field(min_length=1, max_length=BATCH_MAX)],
    Discriminator(_shape),
]
