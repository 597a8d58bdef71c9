"""Templates saved from the browser: checked as typed, written atomically, kept as versions.

The files under ``templates/`` stay the source of truth, so deploying from a repository and
``mailer templates check`` work as before; the ``template_versions`` table (owned here)
keeps every browser save with who made it and when, to compare and restore. A variant is
checked before anything is written (an invalid one is refused with its problems), then
each of its files is replaced atomically while the template's folder is locked, so the
renderer, which loads a variant's files under the same lock (``templates._Renderer``),
sends either the old set or the new one, never a mix.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, insert, select
from sqlalchemy.engine import Connection, RowMapping

from mailer.core import files
from mailer.core.errors import MailerError, NotFound, Problem, TemplateError
from mailer.core.fieldtypes import locale_tag
from mailer.outbound.templates import HTML, SUBJECT, TEXT, TemplateStore, folder_lock
from mailer.store.models import TemplateVersion

TEMPLATE_VERSIONS: Table = TemplateVersion.__table__  # type: ignore[attr-defined]
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
PART_MAX = 200_000  # characters in one part; a newsletter is a few thousand


@dataclass(frozen=True, slots=True)
class Draft:
    """One variant's parts as text; None where the variant has no such file."""

    subject: str
    html: str | None
    text: str | None

    @classmethod
    def typed(cls, subject: str, html: str, text: str) -> Draft:
        """From a form: browsers send CRLF line ends, and an empty body means no file."""

        def clean(value: str) -> str:
            return value.replace("\r\n", "\n").replace("\r", "\n")

        return cls(clean(subject), clean(html) or None, clean(text) or None)

    def parts(self) -> dict[str, str | None]:
        return {SUBJECT: self.subject, HTML: self.html, TEXT: self.text}


@dataclass(frozen=True, slots=True, kw_only=True)
class Version:
    id: int
    template: str
    variant: str | None
    draft: Draft
    saved_by: str
    saved_at: datetime


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One line of a diff: "+" added, "-" removed, " " kept, "@" where, "=" a part's name."""

    kind: str
    text: str


def read(store: TemplateStore, name: str, variant: str | None) -> Draft:
    """The variant's files as they are now; TemplateError if there is no such variant."""
    if variant not in store.variants(name):
        raise TemplateError(Problem(f"{store.root.name}/{name}", f"no variant {variant!r}"))
    folder = _folder(store.root, name, variant)
    found = {part: _text(store.root, folder / part) for part in _PARTS}
    return Draft(found[SUBJECT] or "", found[HTML], found[TEXT])


def _text(root: Path, path: Path) -> str | None:
    """A part's text, None when there is no such file; MailerError for one saved in another
    encoding than UTF-8 (by an editor outside mailer), which the editor must not overwrite."""
    if not path.is_file():
        return None
    try:
        return path.read_text("utf-8")
    except UnicodeDecodeError as exc:
        where = path.relative_to(root.parent)
        raise MailerError(
            f"{where} is not UTF-8 text (byte 0x{exc.object[exc.start]:02X} at {exc.start});"
            " save it as UTF-8 to edit it here"
        ) from None


def save(
    engine: Engine,
    store: TemplateStore,
    name: str,
    variant: str | None,
    draft: Draft,
    *,
    by: str,
    now: datetime,
    company: Mapping[str, Any] | None,
) -> list[Problem]:
    """Write ``draft`` as the variant and record it as a version, unless it has problems,
    which are returned (and nothing is written)."""
    problems = limits(store, name, variant, draft) or store.check_draft(
        name, variant, draft.parts(), company=company
    )
    if problems:
        return problems
    with engine.begin() as conn:
        conn.execute(
            insert(TEMPLATE_VERSIONS).values(
                template=name,
                variant=variant or "",
                subject=draft.subject,
                html=draft.html,
                text=draft.text,
                saved_by=by,
                saved_at=now,
            )
        )
        write(store.root, name, variant, draft)  # committed only once the files are in place
    return []


def write(root: Path, name: str, variant: str | None, draft: Draft) -> None:
    """Replace the variant's files under the template folder's exclusive lock; a part that
    is None is removed."""
    (root / name).mkdir(exist_ok=True)
    with folder_lock(root / name, shared=False, where=f"{root.name}/{name}"):
        folder = _folder(root, name, variant)
        folder.mkdir(exist_ok=True)
        for part, content in draft.parts().items():
            if content is not None:
                files.replace(folder / part, content)
            else:
                (folder / part).unlink(missing_ok=True)
        files.sync_folder(folder)


def create_variant(
    engine: Engine,
    store: TemplateStore,
    name: str,
    source: str | None,
    locale: str,
    *,
    by: str,
    now: datetime,
    company: Mapping[str, Any] | None,
) -> tuple[str, list[Problem]]:
    """A new language variant of ``name``, a copy of the ``source`` variant to translate:
    its folder name and the problems that kept it from being saved."""
    try:
        folder = locale_tag(locale)
    except ValueError as exc:
        raise MailerError(str(exc)) from None
    if folder.lower() in {(v or store.default_locale).lower() for v in store.variants(name)}:
        raise MailerError(f"{name} already has a {folder} variant")
    draft = read(store, name, source)
    return folder, save(engine, store, name, folder, draft, by=by, now=now, company=company)


def create_template(
    engine: Engine,
    store: TemplateStore,
    name: str,
    *,
    by: str,
    now: datetime,
    company: Mapping[str, Any] | None,
) -> list[Problem]:
    """A new template with a subject and an HTML body in the default language's layout."""
    if not NAME.fullmatch(name):
        raise MailerError(
            f"{name!r} is not a template name: lower-case letters, digits, '-' and '_'"
        )
    if name in store.names() or (store.root / name).exists():
        raise MailerError(f"there is already a template named {name}")
    layout = f"_layouts/{store.default_locale.split('-')[0]}.html"
    if not (store.root / layout).is_file():
        layout = "_layouts/base.html"
    html = (
        f'{{% extends "{layout}" %}}\n{{% block content %}}\n'
        "<p>Hello {{ customer.name }},</p>\n{% endblock %}\n"
    )
    draft = Draft("News from {{ company.name }}\n", html, None)
    return save(engine, store, name, None, draft, by=by, now=now, company=company)


def versions(conn: Connection, name: str, variant: str | None) -> list[Version]:
    """Every save of the variant from the browser, newest first."""
    query = (
        select(TEMPLATE_VERSIONS)
        .where(TEMPLATE_VERSIONS.c.template == name, TEMPLATE_VERSIONS.c.variant == (variant or ""))
        .order_by(TEMPLATE_VERSIONS.c.id.desc())
    )
    return [_load(row) for row in conn.execute(query).mappings()]


def version(conn: Connection, version_id: int) -> Version:
    query = select(TEMPLATE_VERSIONS).where(TEMPLATE_VERSIONS.c.id == version_id)
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(f"no saved version {version_id}")
    return _load(row)


def diff(old: Draft, new: Draft, context: int = 3) -> list[DiffLine]:
    """What changed from ``old`` to ``new``, part by part; parts that did not change are
    left out."""
    found: list[DiffLine] = []
    for part, before in old.parts().items():
        after = new.parts()[part]
        if before == after:
            continue
        lines = difflib.unified_diff(
            (before or "").splitlines(), (after or "").splitlines(), n=context, lineterm=""
        )
        found.append(DiffLine("=", part))
        found += [DiffLine(line[0], line[1:]) for line in lines if line[:3] not in ("---", "+++")]
    return found


def limits(store: TemplateStore, name: str, variant: str | None, draft: Draft) -> list[Problem]:
    """What is wrong with a draft before it is rendered at all: a part too long, no subject."""
    where = f"{store.root.name}/{name if variant is None else f'{name}/{variant}'}"
    too_long = [p for p, text in draft.parts().items() if text and len(text) > PART_MAX]
    found = [Problem(f"{where}/{p}", f"longer than {PART_MAX:,} characters") for p in too_long]
    empty = [] if draft.subject.strip() else [Problem(f"{where}/{SUBJECT}", "the subject is empty")]
    return found + empty


def _load(row: RowMapping) -> Version:
    values = {f.name: row[f.name] for f in fields(Version) if f.name not in ("draft", "variant")}
    draft = Draft(row["subject"], row["html"], row["text"])
    return Version(**values, variant=row["variant"] or None, draft=draft)


def _folder(root: Path, name: str, variant: str | None) -> Path:
    return root / name if variant is None else root / name / variant


_PARTS = (SUBJECT, HTML, TEXT)
