"""Saved replies: the canned responses support starts a reply from, one per name and
language, kept in the ``saved_replies`` table.

Support edits them in the web app, so they are Jinja templates run in the same sandbox and
render workers as template files (``templates.check_text``/``render_text``): a syntax error
is refused when saved, with its line, and rendering one cannot reach Python's internals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.engine import Connection, RowMapping

from mailer.core.fieldtypes import locale_tag
from mailer.outbound import renderpool, templates
from mailer.store.models import SavedReply

SAVED_REPLIES: Table = SavedReply.__table__  # type: ignore[attr-defined]
NAME_MAX = 100
BODY_MAX = 20_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Saved:
    id: int
    name: str
    locale: str
    body: str
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Draft:
    """What support typed into the form, checked by ``problem`` before it is stored."""

    name: str
    locale: str
    body: str


def _load(row: RowMapping) -> Saved:
    return Saved(**{f.name: row[f.name] for f in fields(Saved)})


def find(conn: Connection) -> list[Saved]:
    """All of them, by language, then name."""
    query = select(SAVED_REPLIES).order_by(SAVED_REPLIES.c.locale, SAVED_REPLIES.c.name)
    return [_load(r) for r in conn.execute(query).mappings()]


def get(conn: Connection, saved_id: int) -> Saved | None:
    row = (
        conn.execute(select(SAVED_REPLIES).where(SAVED_REPLIES.c.id == saved_id)).mappings().first()
    )
    return _load(row) if row is not None else None


def in_language_first(saved: list[Saved], locale: str | None) -> list[Saved]:
    """Those in the customer's language ("bg" for "bg-BG") before the rest."""
    language = (locale or "").split("-")[0].lower()
    return sorted(saved, key=lambda s: s.locale.split("-")[0].lower() != language)


def problem(
    conn: Connection,
    draft: Draft,
    saved_id: int | None,
    pool: renderpool.RenderPool | None = None,
) -> str | None:
    """Why the draft cannot be saved, in one line, or None."""
    if not draft.name.strip() or len(draft.name) > NAME_MAX:
        return f"A saved reply needs a name of at most {NAME_MAX} characters."
    try:
        locale_tag(draft.locale)
    except ValueError as exc:
        return f"Language: {exc}"
    if not draft.body.strip() or len(draft.body) > BODY_MAX:
        return f"A saved reply needs some text, at most {BODY_MAX:,} characters."
    same = select(SAVED_REPLIES.c.id).where(
        SAVED_REPLIES.c.name == draft.name.strip(),
        SAVED_REPLIES.c.locale == locale_tag(draft.locale),
        SAVED_REPLIES.c.id != (saved_id or 0),
    )
    if conn.execute(same).first() is not None:
        return f"There is already a saved reply {draft.name!r} in {locale_tag(draft.locale)}."
    return templates.check_text(draft.body, f"saved reply {draft.name.strip()!r}", pool)


def save(
    conn: Connection, draft: Draft, saved_id: int | None, actor: str, now: datetime
) -> int | None:
    """Store a draft that ``problem`` passed: a new one (``saved_id`` None) or over an
    existing one; None when that one is gone."""
    values = {
        "name": draft.name.strip(),
        "locale": locale_tag(draft.locale),
        "body": draft.body,
        "updated_at": now,
        "updated_by": actor,
    }
    if saved_id is None:
        new_id = conn.execute(insert(SAVED_REPLIES).values(**values)).inserted_primary_key
        assert new_id is not None
        return int(new_id[0])
    changed = conn.execute(
        update(SAVED_REPLIES).where(SAVED_REPLIES.c.id == saved_id).values(**values)
    )
    return saved_id if changed.rowcount else None


def remove(conn: Connection, saved_id: int) -> bool:
    return bool(conn.execute(delete(SAVED_REPLIES).where(SAVED_REPLIES.c.id == saved_id)).rowcount)


def render(
    saved: Saved,
    context: Mapping[str, Any],
    zone: ZoneInfo,
    pool: renderpool.RenderPool | None = None,
) -> str:
    """The saved reply for one inquiry; raises TemplateError naming the line at fault."""
    where = f"saved reply {saved.name!r}"
    return templates.render_text(
        saved.body, where, context, locale=saved.locale, zone=zone, pool=pool
    )
