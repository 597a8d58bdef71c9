"""The shapes every write route shares: one item or a list of them, so a shop sends a
single change as it happens or a backlog in one call, and an email address."""

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

# checked by ``fieldtypes.email_address`` with its own messages; the format tells a client
# (and a generator of test requests) that an address is wanted, not any text
Address = Annotated[
    str, Field(max_length=320, json_schema_extra={"format": "email"}, examples=["maria@example.bg"])
]
