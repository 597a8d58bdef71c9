"""The template store: picks a template's locale variant, renders it in Jinja's sandbox, and
names the file and line a person must fix when it cannot.

Layout under the root (usually ``templates/``)::

    NAME/subject.txt, NAME/body.html and/or NAME/body.txt     the default variant
    NAME/LOCALE/...                                           the same files for one locale
    NAME/sample.toml                                          [params] for `templates check`
    _layouts/*.html                                           shared layouts ({% extends %})

A variant is a whole folder, so a Bulgarian subject never comes with an English body.
Marketing edits these files, so they run in the immutable sandbox with StrictUndefined: a
missing variable or a reach for Python internals is an error at check time, never a blank
in a customer's inbox.
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import secrets
import time
import tomllib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Protocol, TypeVar
from zoneinfo import ZoneInfo

import css_inline
from html_to_markdown import _html_to_markdown as html_to_markdown_rust
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    meta,
    nodes,
    select_autoescape,
)
from jinja2.defaults import DEFAULT_NAMESPACE
from jinja2.exceptions import SecurityError, TemplateNotFound, TemplateSyntaxError, UndefinedError
from jinja2.loaders import split_template_path
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailer.core.errors import Problem, TemplateError
from mailer.core.fieldtypes import locale_tag
from mailer.core.files import read_toml
from mailer.core.text import one_line
from mailer.outbound import renderpool
from mailer.outbound.formatting import DEFAULT_LOCALE, FILTERS, with_reader

FOLDER_CACHE_SECONDS = 1.0
SUBJECT, HTML, TEXT, SAMPLE = "subject.txt", "body.html", "body.txt", "sample.toml"
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

# Remote stylesheets would make rendering depend on the network; @media rules cannot be
# inlined, so they stay in a <style> tag for the clients that honour them.
_Compiled = tuple[Template, Template | None, Template | None]  # subject, HTML, text
_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)
_NO_ATTRIBUTE = re.compile(r"^'[^']*' has no attribute '(?P<attribute>.+)'$")
_NO_VARIABLE = re.compile(r"^('.+') is undefined$")


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderedMessage:
    """One message, ready to be put into MIME parts; `variant` says which folder was used."""

    subject: str
    text: str
    html: str | None
    variant: str | None


class Finisher(Protocol[T_co]):
    """What a render worker does with a message right after rendering it (picklable)."""

    def __call__(self, rendered: RenderedMessage, /) -> T_co: ...


class RenderJob(NamedTuple):
    """One message to render: the arguments of ``TemplateStore.render``."""

    name: str
    context: Mapping[str, Any]
    locale: str | None
    zone: ZoneInfo


@dataclass(frozen=True, slots=True)
class _Variant:
    """The files of one variant folder, as template names relative to the root."""

    subject: str
    html: str | None
    text: str | None

    def parts(self) -> tuple[str, str | None, str | None]:
        return (self.subject, self.html, self.text)

    def files(self) -> list[str]:
        return [f for f in self.parts() if f is not None]


class _Folders:
    """The template folders under one root: which templates and variants exist."""

    def __init__(self, root: Path, *, default_locale: str = DEFAULT_LOCALE) -> None:
        """`default_locale` is the language the default (non-locale) folders are written in."""
        self.root = root.resolve()
        self.default_locale = default_locale

    def names(self) -> list[str]:
        """Template folders; folders starting with "_" (such as _layouts) are shared parts."""
        if not self.root.is_dir():
            return []
        return _subfolders(self.root)

    def variants(self, name: str) -> list[str | None]:
        """The default variant (None) first, then the locale folders in name order."""
        if name not in self.names():
            known = ", ".join(self.names()) or "none"
            raise TemplateError(Problem(self._where(name), f"no such template (known: {known})"))
        return [None, *_subfolders(self.root / name)]

    def languages(self, name: str) -> frozenset[str]:
        """The languages ``name`` is written in ("bg" for a "bg-BG" folder), the default
        folders' among them; none for a template that does not exist."""
        if name not in self.names():
            return frozenset()
        return frozenset(_language(v or self.default_locale) for v in self.variants(name))

    def resolve(self, name: str, locale: str | None) -> str | None:
        """The variant for a locale: "bg-BG", then "bg", then the default (None)."""
        by_key = {_key(v): v for v in self.variants(name) if v is not None}
        return next((by_key[c] for c in _fallbacks(locale) if c in by_key), None)

    def unsendable(self, name: str, locale: str | None) -> str | None:
        """Why a message of ``name`` for ``locale`` could not be rendered, judged from the
        files alone (no rendering): the variant the locale falls back to lacks a subject or
        a body. None: it can be sent. TemplateError when there is no such template."""
        folder = _folder(name, self.resolve(name, locale))
        present = {f for f in (SUBJECT, HTML, TEXT) if (self.root / folder / f).is_file()}
        if SUBJECT in present and present & {HTML, TEXT}:
            return None
        return f"no variant for this locale, and {self._where(folder)} has no subject and body"

    def _where(self, name: str, line: int | None = None) -> str:
        """A path as a person finds it from the project folder: templates/NAME/bg/body.html:12."""
        where = f"{self.root.name}/{name}"
        return f"{where}:{line}" if line else where


class TemplateStore(_Folders):
    """The templates under one root. Rendering and checking run in a render worker
    (``renderpool``), so a template that loops or grows without end fails within seconds
    instead of stopping the process that asked."""

    def __init__(
        self,
        root: Path,
        *,
        default_locale: str = DEFAULT_LOCALE,
        pool: renderpool.RenderPool | None = None,
        drafts: Mapping[str, str | None] | None = None,
    ) -> None:
        """``pool`` defaults to the process's shared one; ``drafts`` (template path -> text,
        None for no file) stand in for files (``with_draft``)."""
        super().__init__(root, default_locale=default_locale)
        self._pool = pool
        self._drafts = dict(drafts or {})

    def with_draft(
        self, name: str, variant: str | None, parts: Mapping[str, str | None]
    ) -> TemplateStore:
        """This store with one variant's ``parts`` (SUBJECT, HTML, TEXT -> text, None for no
        such file) in place of its files: the editor previews text as it is typed, through
        the same renderer a send uses, without writing anything."""
        drafts = {**self._drafts, **_draft_paths(name, variant, parts)}
        return TemplateStore(
            self.root, default_locale=self.default_locale, pool=self._pool, drafts=drafts
        )

    @property
    def pool(self) -> renderpool.RenderPool:
        return self._pool or renderpool.shared()

    def render(
        self, name: str, context: Mapping[str, Any], *, locale: str | None, zone: ZoneInfo
    ) -> RenderedMessage:
        """Render the variant for `locale`; dates and times are shown in `zone`."""
        return self.pool.call(
            self._where(name), _render, self._key, name, dict(context), locale, zone, self._drafts
        )

    def render_all(self, jobs: Sequence[RenderJob]) -> list[RenderedMessage | TemplateError]:
        """``render`` for each job, in one round trip to a render worker for the whole batch;
        a message that cannot be rendered has its TemplateError in its place."""
        unfinished: list[Finisher[RenderedMessage] | None] = [None] * len(jobs)
        return self.finish_all(jobs, unfinished)

    def finish_all(
        self, jobs: Sequence[RenderJob], finishers: Sequence[Finisher[T] | None]
    ) -> list[RenderedMessage | T | TemplateError]:
        """``render_all``, but each message whose finisher is given is finished by it in the
        render worker, right after its template (composed and signed, see
        ``mailer.outbound.finishing``): what comes back is the finisher's result, not the
        rendered text, and the daemon neither composes nor ships it back for signing."""
        batch = secrets.randbits(63)
        calls = [
            (
                self._where(name),
                (finisher, self._key, name, dict(context), locale, zone, self._drafts, batch),
            )
            for (name, context, locale, zone), finisher in zip(jobs, finishers, strict=True)
        ]
        made: list[RenderedMessage | T | TemplateError] = []
        for result in self.pool.map(_render_finished, calls):
            if isinstance(result, TemplateError) or not isinstance(result, Exception):
                made.append(result)
            else:
                raise result  # a bug, not a template's fault: raised, as ``render`` does
        return made

    def reads(self, name: str) -> frozenset[str]:
        """The top-level variables any variant of ``name`` reads, so a send loads costly
        ones (a customer's orders) only for the templates that show them; a file that does
        not parse reads nothing here (rendering reports it)."""
        return frozenset().union(*(found.names for found in self._reads(name)))

    def unknown(self, name: str, given: Collection[str]) -> frozenset[str]:
        """The top-level names ``name`` needs that neither ``given`` nor Jinja provides: a
        message queued with only ``given`` fails on them when it is rendered. A name a file
        asks ``is defined`` of, gives a ``default`` or sets itself, it does not need."""
        needed = frozenset().union(*(found.needed for found in self._reads(name)))
        return needed - frozenset(given) - DEFAULT_NAMESPACE.keys()

    def _reads(self, name: str) -> Iterator[_Reads]:
        for variant in self.variants(name):
            folder = _folder(name, variant)
            for file in (SUBJECT, HTML, TEXT):
                path = f"{folder}/{file}"
                if path in self._drafts:
                    yield _variables(self._drafts[path] or "")
                else:
                    yield _file_variables(self.root / path, _signature(self.root / path))

    def check(self, *, company: Mapping[str, Any] | None = None) -> list[Problem]:
        """Render every file of every variant against sample data and report every problem.

        Pass the configured `company` so templates are checked against the real values.
        """
        if not self.root.is_dir():
            return [Problem(self.root.name, "templates folder not found")]
        problems = [p for name in self.names() for p in self._check_template(name, company)]
        return list(dict.fromkeys(problems))  # a broken layout is reported once, not per child

    def check_draft(
        self,
        name: str,
        variant: str | None,
        parts: Mapping[str, str | None],
        *,
        company: Mapping[str, Any] | None = None,
    ) -> list[Problem]:
        """Check one variant as it would be with ``parts`` (SUBJECT, HTML, TEXT -> text, None
        for no such file) in place of its files, before anything is written: syntax,
        variables against the sample data, the layout it extends."""
        drafts = _draft_paths(name, variant, parts)
        try:
            where = self._where(_folder(name, variant))
            return self.pool.call(where, _check_draft, self._key, name, variant, drafts, company)
        except TemplateError as exc:
            return [exc.problem]

    def _check_template(self, name: str, company: Mapping[str, Any] | None) -> list[Problem]:
        problems: list[Problem] = []
        for variant in self.variants(name):
            where = self._where(_folder(name, variant))
            try:
                problems += self.pool.call(where, _check, self._key, name, variant, company)
            except TemplateError as exc:  # the folder itself is unusable, or it overran
                problems.append(exc.problem)
        return problems

    @property
    def _key(self) -> tuple[Path, str]:
        return (self.root, self.default_locale)


class _Renderer(_Folders):
    """The Jinja side, inside a render worker: compiled once, recompiled when a file changes.

    A message must never get a subject from one save and a body from the one before. The
    editor writes a variant's files while holding an exclusive ``folder_lock`` on the
    template's folder; here the variant's files are looked up and their compiled templates
    fetched (recompiled if changed) under the shared lock, then rendered from those objects
    after it is released. That costs an open and a flock of one folder per message (a few
    microseconds against about a millisecond of rendering), where comparing the parts'
    stats before and after loading could not see a save that is only half done, and a
    generation counter would be one more file for every deployment to carry. Whether a file
    changed is decided by its (mtime_ns, size, inode): every save replaces the file, so
    its inode changes even within one tick of the file system's clock, which Jinja's own
    float mtime check would miss.

    ``drafts`` (template path -> text, None for no file) stand in for files when the editor
    checks a variant before saving it.
    """

    def __init__(
        self,
        root: Path,
        *,
        default_locale: str = DEFAULT_LOCALE,
        drafts: Mapping[str, str | None] | None = None,
    ) -> None:
        super().__init__(root, default_locale=default_locale)
        self._drafts = dict(drafts or {})
        self._env = ImmutableSandboxedEnvironment(
            loader=_StatLoader(self.root, self._drafts),
            undefined=StrictUndefined,
            autoescape=select_autoescape(("html",), default=False),
            auto_reload=True,
        )
        self._env.filters.update(FILTERS)
        self._chosen: dict[tuple[str, str | None], tuple[float, str | None]] = {}
        self._batch: tuple[int | None, dict[tuple[str, str | None], _Compiled]] = (None, {})

    def render(
        self,
        name: str,
        context: Mapping[str, Any],
        *,
        locale: str | None,
        zone: ZoneInfo,
        batch: int | None = None,
    ) -> RenderedMessage:
        """``batch`` names the batch this message is rendered with (``TemplateStore.render_all``):
        its messages are rendered from the files as the batch's first message of each variant
        found them, so a save lands between two batches, never inside one."""
        variant = self._choose(name, locale)
        seen = self._batch[1] if batch is not None and batch == self._batch[0] else {}
        self._batch = (batch, seen)
        compiled = seen.get((name, variant))
        first = compiled is None
        if compiled is None:
            compiled = seen[(name, variant)] = self._load(name, variant)
        subject, html, text = compiled
        data = with_reader(context, self._reading_locale(locale, variant), zone)
        # the layouts that ``extends`` loads were looked at by the variant's first message
        self._env.auto_reload = first
        try:
            html_out = self._render(html, data) if html else None
            text_out = self._render(text, data) if text else _html_to_text(html_out or "")
            subject_out = self._render(subject, data)
        finally:
            self._env.auto_reload = True
        return RenderedMessage(
            subject=one_line(subject_out),
            text=text_out,
            html=_INLINER.inline(html_out) if html_out is not None else None,
            variant=variant,
        )

    def _load(self, name: str, variant: str | None) -> _Compiled:
        """The variant's compiled files, fetched under the folder's shared lock (see above)."""
        with folder_lock(self.root / name, shared=True, where=self._where(name)):
            files = self._variant_files(name, variant)
            subject, html, text = (self._compiled(f) if f else None for f in files.parts())
        assert subject is not None  # a variant without a subject is refused above
        return subject, html, text

    def check_variant(
        self, name: str, variant: str | None, company: Mapping[str, Any] | None
    ) -> list[Problem]:
        """Each file on its own, so one broken file does not hide the next."""
        self._check_locale_folder(name, variant)
        files = self._variant_files(name, variant)
        context = sample_context(self.root, name, variant, company=company)
        zone = ZoneInfo(context["customer"]["timezone"])
        data = with_reader(context, variant or self.default_locale, zone)
        problems: list[Problem] = []
        for file in files.files():
            try:
                self._render(self._compiled(file), data)
            except TemplateError as exc:
                problems.append(exc.problem)
        return problems

    def _check_locale_folder(self, name: str, variant: str | None) -> None:
        """A folder named "gb" instead of "bg" would never be chosen: say so at check time."""
        try:
            if variant is not None:
                locale_tag(variant)
        except ValueError as exc:
            where = self._where(_folder(name, variant))
            raise TemplateError(Problem(where, f"not a locale folder: {exc}")) from None

    def _choose(self, name: str, locale: str | None) -> str | None:
        """The variant, remembered for a second: a send renders one template thousands of
        times, and listing the folders each time cost more than rendering. Its files are
        looked at on every render (``_variant_files``), so a save is seen at once."""
        key, now = (name, locale), time.monotonic()
        cached = self._chosen.get(key)
        if cached is None or cached[0] < now:
            cached = (now + FOLDER_CACHE_SECONDS, self.resolve(name, locale))
            self._chosen[key] = cached
        return cached[1]

    def _variant_files(self, name: str, variant: str | None) -> _Variant:
        """A variant needs a subject and at least one body; a half-written folder is an error."""
        folder = _folder(name, variant)
        present = {f for f in (SUBJECT, HTML, TEXT) if self._exists(f"{folder}/{f}")}
        missing = [] if SUBJECT in present else [SUBJECT]
        missing += [] if present & {HTML, TEXT} else [f"{HTML} or {TEXT}"]
        if missing:
            raise TemplateError(Problem(self._where(folder), "missing " + " and ".join(missing)))
        return _Variant(
            subject=f"{folder}/{SUBJECT}",
            html=f"{folder}/{HTML}" if HTML in present else None,
            text=f"{folder}/{TEXT}" if TEXT in present else None,
        )

    def _reading_locale(self, locale: str | None, variant: str | None) -> str:
        """Format for the customer's own locale when the text is in their language ("en-GB"
        dates in the English default), else in the text's language: a German reader of the
        English default gets English month names, not a mix of both languages."""
        written_in = variant or self.default_locale
        if locale and _language(locale) == _language(written_in):
            return locale
        return written_in

    def _exists(self, path: str) -> bool:
        if path in self._drafts:
            return self._drafts[path] is not None
        return (self.root / path).is_file()

    def _compiled(self, template: str) -> Template:
        """The compiled file (recompiled when it changed), or a TemplateError."""
        try:
            return self._env.get_template(template)
        except Exception as exc:  # a syntax error, or a file that went away
            raise TemplateError(self._problem(exc, template)) from exc

    def _render(self, template: Template, data: Mapping[str, Any]) -> str:
        """The template rendered, or a TemplateError; output is counted as it is written, so
        a template cannot grow past ``renderpool.OUTPUT_LIMIT`` characters."""
        chunks: list[str] = []
        size = 0
        try:
            for chunk in template.generate(data):
                size += len(chunk)
                if size > renderpool.OUTPUT_LIMIT:
                    raise _TooLong(f"writes more than {renderpool.OUTPUT_LIMIT:,} characters")
                chunks.append(chunk)
        except Exception as exc:  # whatever a template raises is the template's problem
            raise TemplateError(self._problem(exc, template.name or "")) from exc
        return "".join(chunks)

    def _problem(self, exc: Exception, template: str) -> Problem:
        if isinstance(exc, TemplateSyntaxError):
            where = self._where(exc.name or template, exc.lineno)
            return Problem(where, f"syntax error: {exc.message or exc}")
        frame = _template_frame(exc.__traceback__, self.root)
        if frame is None:
            return Problem(self._where(template), _describe(exc, ""))
        path, line = frame
        return Problem(self._where(path, line), _describe(exc, self._source_line(path, line)))

    def _source_line(self, path: str, line: int) -> str:
        try:
            source = self._drafts.get(path)
            if source is None:
                source = (self.root / path).read_text(encoding="utf-8")
            return source.splitlines()[line - 1]
        except (OSError, UnicodeDecodeError, IndexError):
            return ""


class _StatLoader(FileSystemLoader):
    """Template files, with drafts in place of some, each up to date while its
    (mtime_ns, size, inode) is unchanged (see ``_Renderer``)."""

    def __init__(self, root: Path, drafts: Mapping[str, str | None]) -> None:
        super().__init__(root)
        self._root, self._drafts = root, drafts

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        path = self._root.joinpath(*split_template_path(template))
        if template in self._drafts:
            draft = self._drafts[template]
            if draft is None:
                raise TemplateNotFound(template)
            return draft, str(path), lambda: True
        before = _signature(path)  # taken first: a file replaced while read is read again
        source, filename, _ = super().get_source(environment, template)
        return source, filename, lambda: _signature(path) == before


_PARSER = Environment()  # with mailer's filters: compiling for the names checks each filter
_PARSER.filters.update(FILTERS)
_GUARDS = (
    (nodes.Test, frozenset({"defined", "undefined"})),
    (nodes.Filter, frozenset({"default", "d"})),
)


class _Reads(NamedTuple):
    """The top-level variables a file reads, and those of them it does without: asked
    ``is defined`` of or given a ``default`` (under StrictUndefined, the only reads a
    missing name passes), or set in the file itself (Jinja's look-up takes a name set
    inside an ``if`` or a block for one the template reads)."""

    names: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()

    @property
    def needed(self) -> frozenset[str]:
        return self.names - self.optional


def _variables(source: str) -> _Reads:
    try:
        tree = _PARSER.parse(source)
        names = meta.find_undeclared_variables(tree)
    except TemplateSyntaxError:  # a filter no one knows too: rendering reports it
        return _Reads()
    guarded = {
        found.node.name
        for kind, guards in _GUARDS
        for found in tree.find_all(kind)
        if found.name in guards and isinstance(found.node, nodes.Name)
    }
    set_here = {found.name for found in tree.find_all(nodes.Name) if found.ctx != "load"}
    return _Reads(frozenset(names), frozenset(guarded | set_here))


@functools.lru_cache(maxsize=1024)
def _file_variables(path: Path, signature: tuple[int, int, int] | None) -> _Reads:
    """A file's variables, once per version of it (``signature``); none when it is absent."""
    if signature is None:
        return _Reads()
    try:
        return _variables(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return _Reads()


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_mtime_ns, found.st_size, found.st_ino)


@contextmanager
def folder_lock(folder: Path, *, shared: bool, where: str) -> Iterator[None]:
    """An advisory lock on a template's folder itself (no lock file for a repository to
    carry): shared while a renderer loads a variant's files, exclusive while the editor
    writes them. Held for microseconds by readers and for one save by a writer."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise TemplateError(Problem(where, f"cannot open the folder: {exc.strerror}")) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


_RENDERERS: dict[tuple[Path, str], _Renderer] = {}


def _renderer(key: tuple[Path, str]) -> _Renderer:
    """The worker's renderer for one root, kept so templates are compiled once."""
    if key not in _RENDERERS:
        _RENDERERS[key] = _Renderer(key[0], default_locale=key[1])
    return _RENDERERS[key]


def _render(
    key: tuple[Path, str],
    name: str,
    context: Mapping[str, Any],
    locale: str | None,
    zone: ZoneInfo,
    drafts: Mapping[str, str | None],
    batch: int | None = None,
) -> RenderedMessage:
    """Runs in a render worker; with ``drafts``, in a renderer of its own that is dropped
    afterwards, so a preview's text is never compiled into what a send renders."""
    renderer = _Renderer(key[0], default_locale=key[1], drafts=drafts) if drafts else None
    return (renderer or _renderer(key)).render(name, context, locale=locale, zone=zone, batch=batch)


def _render_finished(finisher: Finisher[T] | None, *render: Any) -> RenderedMessage | T:
    """Runs in a render worker: ``_render(*render)``, then the finisher on what it rendered."""
    rendered = _render(*render)
    return rendered if finisher is None else finisher(rendered)


def _check(
    key: tuple[Path, str], name: str, variant: str | None, company: Mapping[str, Any] | None
) -> list[Problem]:
    """Runs in a render worker."""
    return _renderer(key).check_variant(name, variant, company)


def _check_draft(
    key: tuple[Path, str],
    name: str,
    variant: str | None,
    drafts: Mapping[str, str | None],
    company: Mapping[str, Any] | None,
) -> list[Problem]:
    """Runs in a render worker, in a renderer of its own that is dropped afterwards."""
    renderer = _Renderer(key[0], default_locale=key[1], drafts=drafts)
    return renderer.check_variant(name, variant, company)


class _TooLong(Exception):
    """A template wrote more than a message may hold."""


def sample_context(
    root: Path, name: str, locale: str | None, *, company: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Believable data for every variable mailer passes to a template, for check and preview.

    `params` come from ``ROOT/NAME/sample.toml`` (its [params] table), because only the
    schedules that use a template know the real ones.
    """
    received = datetime(2025, 3, 13, 16, 45, tzinfo=UTC)
    return {
        "customer": _sample_customer(locale),
        "company": dict(company if company is not None else _SAMPLE_COMPANY),
        "unsubscribe_url": "https://mail.example.com/u/sample-token",
        "preferences_url": "https://mail.example.com/preferences/sample-token",
        "params": _sample_params(root.resolve(), name),
        "inquiry": {"reference": "NW-1042", "subject": "Grinder settings", "received_at": received},
        "reply_expected_by": received + timedelta(hours=17),
        "reply": {"text": "The burrs need a clean.\n\n> It squeaks.", "agent": "Sam"},
        "confirm_url": "https://mail.example.com/forms/confirm/sample-token",
        "confirm_until": received + timedelta(days=7),
        "webinar": _sample_webinar(),
        "meeting": _sample_meeting(),
        "event": _sample_event(received),
        **_sample_purchases(received),
    }


_SAMPLE_COMPANY = {
    "name": "Northwind Coffee Roasters",
    "address": "12 Harbour Lane, Bristol BS1 4RN, United Kingdom",
    "support_email": "hello@northwind.example",
    "website": "https://northwind.example",
}


def _sample_customer(locale: str | None) -> dict[str, Any]:
    return {
        "email": "ana.petrova@example.com",
        "name": "Ana Petrova",
        "first_name": "Ana",
        "locale": locale,
        "timezone": "Europe/Sofia",
        "birthday": date(1990, 3, 14),
        "tags": ["newsletter", "webinars"],
        "fields": {},
    }


def _sample_webinar() -> dict[str, Any]:
    """A first invitation: `changed` marks an update of an earlier one, `cancelled` a
    cancellation (the webinar_cancel template)."""
    starts_at, duration = datetime(2025, 4, 3, 15, 0, tzinfo=UTC), timedelta(minutes=45)
    return {
        "title": "Brewing better filter coffee at home",
        "description": "Our head roaster shows how grind, ratio and water change the cup.",
        "starts_at": starts_at,
        "ends_at": starts_at + duration,
        "duration": duration,
        "join_url": "https://meet.example.com/northwind-filter",
        "organizer": "Northwind Coffee Roasters <events@northwind.example>",
        "changed": False,
        "cancelled": False,
    }


def _sample_meeting() -> dict[str, Any]:
    """A first invitation to a meeting with the customer (the meeting_invitation template);
    `changed` marks a move, `cancelled` a cancellation."""
    starts_at, duration = datetime(2025, 3, 18, 10, 30, tzinfo=UTC), timedelta(minutes=30)
    return {
        "starts_at": starts_at,
        "ends_at": starts_at + duration,
        "duration": duration,
        "place": "https://meet.example.com/northwind-ana",
        "online": True,
        "organizer": "Sam Ivanova",
        "attendees": ["Rio Santos"],
        "changed": False,
        "cancelled": False,
    }


def _sample_event(at: datetime) -> dict[str, Any]:
    """A customer event as an event schedule passes it: what the shop sent, as values."""
    items = [{"title": "Ethiopia Yirgacheffe 250 g", "quantity": 2}]
    payload = {"items": items, "cart_url": "https://northwind.example/cart/sample"}
    return {"name": "cart_abandoned", "occurred_at": at, "payload": payload}


def _sample_purchases(at: datetime) -> dict[str, Any]:
    """``orders``, ``insight`` and ``recommendations`` as mailer.commerce.facts gives them
    for a customer with two orders (one without is [], None, [])."""
    earlier = at - timedelta(days=34)
    line = {"sku": "ETH-YIR-250", "product": "Ethiopia Yirgacheffe 250 g", "category": "coffee"}
    filters = {"sku": "FLT-V60-100", "product": "V60 paper filters (100)", "category": "gear"}
    orders = [
        {
            "id": "NW-5531",
            "date": at,
            "channel": "web",
            "currency": "EUR",
            "status": "placed",
            "total": "27.80",
            "lines": [{**line, "quantity": 2}],
        },
        {
            "id": "NW-5107",
            "date": earlier,
            "channel": "web",
            "currency": "EUR",
            "status": "placed",
            "total": "19.40",
            "lines": [{**line, "quantity": 1}, {**filters, "quantity": 1}],
        },
    ]
    insight = {
        "email": "ana.petrova@example.com",
        "as_of": at.date(),
        "orders": 2,
        "first_order": earlier.date(),
        "last_order": at.date(),
        "recency_days": 0,
        "frequency": 1,
        "currency": "EUR",
        "monetary": "47.20",
        "margin": "18.10",
        "r_score": 5,
        "f_score": 3,
        "m_score": 3,
        "rfm_segment": "potential",
        "p_active": 0.91,
        "horizon_days": 90,
        "expected_orders": 2.4,
        "clv": "61.00",
        "predicted_next_order": (at + timedelta(days=30)).date(),
        "next_order_confidence": 0.6,
        "basis": "own rhythm",
        "one_time_buyer": False,
        "preferred_channel": "web",
        "basket": [{"sku": "ETH-YIR-250", "orders": 2}],
    }
    recommendations = [
        {
            "sku": "KEN-AA-250",
            "product": "Kenya AA 250 g",
            "category": "coffee",
            "score": 0.42,
            "because_sku": "ETH-YIR-250",
            "because_product": "Ethiopia Yirgacheffe 250 g",
        },
        {
            "sku": "GRD-HND-01",
            "product": "Hand grinder",
            "category": "gear",
            "score": 0.31,
            "because_sku": "FLT-V60-100",
            "because_product": "V60 paper filters (100)",
        },
    ]
    return {"orders": orders, "insight": insight, "recommendations": recommendations}


def _sample_params(root: Path, name: str) -> dict[str, Any]:
    path, where = root / name / SAMPLE, f"{root.name}/{name}/{SAMPLE}"
    if not path.is_file():
        return {}
    try:
        data = read_toml(path)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        line = re.search(r"at line (\d+)", str(exc))
        raise TemplateError(Problem(f"{where}:{line[1]}" if line else where, str(exc))) from None
    unknown = sorted(set(data) - {"params"})
    if unknown or not isinstance(data.get("params", {}), dict):
        message = f"unknown key {unknown[0]!r}" if unknown else "'params' must be a table"
        raise TemplateError(Problem(where, f"{message}; sample.toml holds one [params] table"))
    params: dict[str, Any] = data.get("params", {})
    return params


def _subfolders(folder: Path) -> list[str]:
    """The names of the folders in ``folder`` that do not start with "_" or ".", sorted;
    ``os.scandir`` tells a folder from its directory entry, without a stat for each."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.name[0] not in "_." and e.is_dir())


def _folder(name: str, variant: str | None) -> str:
    return name if variant is None else f"{name}/{variant}"


def _draft_paths(
    name: str, variant: str | None, parts: Mapping[str, str | None]
) -> dict[str, str | None]:
    """A variant's parts under the template paths the loader asks for."""
    folder = _folder(name, variant)
    return {f"{folder}/{part}": parts.get(part) for part in (SUBJECT, HTML, TEXT)}


def _key(locale: str) -> str:
    return locale.strip().replace("_", "-").lower()


def _language(locale: str) -> str:
    return _key(locale).split("-")[0]


def _fallbacks(locale: str | None) -> list[str]:
    """The folder names to try, most specific first: "bg_BG" -> ["bg-bg", "bg"]."""
    parts = _key(locale).split("-") if locale else []
    return ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]


# Built once as the extension's own options object: html_to_markdown.convert translates its
# Python options into this on every call, which cost as much as the conversion itself. Its
# single-pass scanner (tier 1) is chosen outright: it reads our mail in 40-60% of the time of
# the DOM walk, which "auto" picks whenever tags are to be stripped (and for much of our
# mail besides), and hands the DOM walk what it cannot read. Tier 1 ignores ``strip_tags``,
# so the emphasis tags become spans beforehand: renamed, not removed, they keep the
# whitespace around them and leave their attributes to the HTML parser.
_TO_TEXT = html_to_markdown_rust.ConversionOptions(
    extract_metadata=False, skip_images=True, tier_strategy=html_to_markdown_rust.TierStrategy.TIER1
)
_EMPHASIS = re.compile(r"<(/?)(?:b|strong|em|i)(?=[\s/>])", re.I)  # not <br>, <big>, <img>


def _html_to_text(html: str) -> str:
    """The text part for clients that show no HTML: links kept visible, no emphasis marks,
    no trailing spaces (a <br> comes out as markdown's two-space line break).

    html-to-markdown (Rust) takes 20-60 us a message where html2text took 1 ms, which
    alone would have capped a newsletter send near 1,000 messages a second."""
    plain = _EMPHASIS.sub(r"<\1span", html)
    content = html_to_markdown_rust.convert(plain, _TO_TEXT).content or ""
    return "\n".join(line.rstrip() for line in content.strip().splitlines()) + "\n"


def _template_frame(tb: TracebackType | None, root: Path) -> tuple[str, int] | None:
    """The innermost template file and line in a traceback; Jinja rewrites its frames so that
    they carry the template's filename and line number."""
    found = None
    while tb is not None:
        filename = Path(tb.tb_frame.f_code.co_filename)
        if filename.is_relative_to(root):
            found = (filename.relative_to(root).as_posix(), tb.tb_lineno)
        tb = tb.tb_next
    return found


def _describe(exc: Exception, source_line: str) -> str:
    """The error in plain words for the person editing the template."""
    if isinstance(exc, UndefinedError):
        return f"undefined variable: {_undefined_subject(exc.message or str(exc), source_line)}"
    if isinstance(exc, SecurityError):
        return f"not allowed in templates: {exc}"
    if isinstance(exc, TemplateNotFound):
        return f"no such template: {exc.name}"
    if isinstance(exc, _TooLong):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "needs more memory than a template may use; is something repeated too often?"
    return f"cannot render: {exc} ({type(exc).__name__})"


def _undefined_subject(message: str, source_line: str) -> str:
    """Jinja names the container's type ("'dict object' has no attribute 'nickname'"); name
    the variable instead ("'customer' has no attribute 'nickname'"), read from the line."""
    if variable := _NO_VARIABLE.match(message):
        return variable[1]
    match = _NO_ATTRIBUTE.match(message)
    if match is None:
        return message
    attribute = re.escape(match["attribute"])
    owner = re.search(
        rf"([A-Za-z_][\w.]*?)\s*(?:\.{attribute}\b|\[\s*['\"]{attribute}['\"])", source_line
    )
    return f"'{owner[1]}' has no attribute '{match['attribute']}'" if owner else message


# Template text kept in the database (support's saved replies) ------------------------------


def check_text(source: str, where: str, pool: renderpool.RenderPool | None = None) -> str | None:
    """A syntax error in ``source`` as one line naming its line number, or None; compiled
    in a render worker like every other template, so saving never runs it here."""
    return (pool or renderpool.shared()).call(where, _text_problem, source, where)


def render_text(
    source: str,
    where: str,
    context: Mapping[str, Any],
    *,
    locale: str,
    zone: ZoneInfo,
    pool: renderpool.RenderPool | None = None,
) -> str:
    """``source`` rendered in the sandbox with the same filters as template files; raises
    TemplateError with the line at fault."""
    call = (pool or renderpool.shared()).call
    return call(where, _render_text, source, where, dict(context), locale, zone)


_TEXT_ENVIRONMENT: list[ImmutableSandboxedEnvironment] = []


def _text_environment() -> ImmutableSandboxedEnvironment:
    """The worker's environment for template text: plain text, so nothing is escaped."""
    if not _TEXT_ENVIRONMENT:
        env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        env.filters.update(FILTERS)
        _TEXT_ENVIRONMENT.append(env)
    return _TEXT_ENVIRONMENT[0]


def _text_problem(source: str, where: str) -> str | None:
    """Runs in a render worker."""
    try:
        _text_environment().parse(source)
    except TemplateSyntaxError as exc:
        return f"{where}, line {exc.lineno}: {one_line(exc.message or str(exc))}"
    return None


def _render_text(
    source: str, where: str, context: Mapping[str, Any], locale: str, zone: ZoneInfo
) -> str:
    """Runs in a render worker; output is bounded as for template files."""
    size, chunks = 0, []
    lines = source.splitlines()
    try:
        for chunk in (
            _text_environment().from_string(source).generate(with_reader(context, locale, zone))
        ):
            size += len(chunk)
            if size > renderpool.OUTPUT_LIMIT:
                raise _TooLong(f"writes more than {renderpool.OUTPUT_LIMIT:,} characters")
            chunks.append(chunk)
    except TemplateSyntaxError as exc:
        problem = Problem(f"{where}:{exc.lineno}", f"syntax error: {exc.message}")
        raise TemplateError(problem) from exc
    except Exception as exc:  # whatever a template raises is the template's problem
        line = _text_line(exc.__traceback__)
        shown = lines[line - 1] if line and line <= len(lines) else ""
        raise TemplateError(Problem(f"{where}:{line or '?'}", _describe(exc, shown))) from exc
    return "".join(chunks)


def _text_line(tb: TracebackType | None) -> int | None:
    """The line in template text from a string, whose frames Jinja names "<template>"."""
    found = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            found = tb.tb_lineno
        tb = tb.tb_next
    return found
