"""Who a schedule reaches, as SQL conditions over the customers table.

Audiences are chosen by the database, never by loading customers into Python: a million
customers cost one indexed query per batch, and memory stays flat.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import ColumnElement, false, func, literal, or_, select, tuple_
from sqlalchemy.engine import Connection

from mailer.customers.profiles import CUSTOMERS, TAGS
from mailer.outbound.outbox import OUTBOX
from mailer.scheduling.schedules import Audience

C = CUSTOMERS.c


def matches(audience: Audience) -> list[ColumnElement[bool]]:
    """Tags (any, all, none of), locales (a language includes its regional variants) and
    custom fields; an empty filter does not filter."""
    found: list[ColumnElement[bool]] = []
    if audience.tags_any:
        found.append(_tagged(audience.tags_any))
    found += [_tagged([tag]) for tag in audience.tags_all]
    if audience.exclude_tags:
        found.append(~_tagged(audience.exclude_tags))
    if audience.locales:
        found.append(or_(*(_speaks(locale) for locale in audience.locales)))
    found += [C.fields[name].as_string() == value for name, value in audience.fields.items()]
    return found


def count(conn: Connection, where: Sequence[ColumnElement[bool]]) -> int:
    """How many customers match now, by the conditions a run selects with (consent and caps
    are decided per message when it runs)."""
    query = select(func.count()).select_from(CUSTOMERS).where(*where)
    return int(conn.execute(query).scalar_one())


def in_zone(zone: str, fallback: str) -> ColumnElement[bool]:
    """Customers on ``zone``'s clock; those who never gave a zone live on the business's."""
    if zone == fallback:
        return or_(C.timezone == zone, C.timezone.is_(None))
    return C.timezone == zone


def born_on(days: Sequence[tuple[int, int]]) -> ColumnElement[bool]:
    """Birthdays on these (month, day) pairs: served by the (birth_month, birth_day) index."""
    return tuple_(C.birth_month, C.birth_day).in_(days)


def received(run_ids: Collection[int], statuses: Collection[str]) -> ColumnElement[bool]:
    """Customers with a message of these runs in one of these statuses (a webinar's
    invitees); found through the outbox's per-customer index."""
    if not run_ids:
        return false()
    return (
        select(OUTBOX.c.id)
        .where(
            OUTBOX.c.customer_id == C.id,
            OUTBOX.c.run_id.in_(run_ids),
            OUTBOX.c.status.in_(statuses),
        )
        .exists()
    )


def zones_in_use(fallback: str) -> ColumnElement[str]:
    """The zone each customer's mail is timed on, for ``SELECT DISTINCT``."""
    return func.coalesce(C.timezone, literal(fallback))


def _tagged(tags: Collection[str]) -> ColumnElement[bool]:
    return (
        select(TAGS.c.customer_id)
        .where(TAGS.c.customer_id == C.id, TAGS.c.tag.in_(sorted(tags)))
        .exists()
    )


def _speaks(locale: str) -> ColumnElement[bool]:
    language = func.lower(C.locale)
    return or_(language == locale.lower(), language.like(f"{locale.lower()}-%"))
