"""The template editor: marketing edits a template's subject, HTML and text in each language
in the browser, sees it for a real customer at phone and desktop widths, and goes back to
any earlier save.

Every save is checked first (syntax, variables against the sample data, the layout) and an
invalid one is not written: the text stays in the form and each problem is shown at its
line. The files stay the source of truth (``outbound.template_files``); without JavaScript
the page is a plain form of textareas, with it a CodeMirror editor is laid over them and
the preview follows the text as it is typed, rendered from the form and never written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailer.core.errors import MailerError, NotFound, Problem, TemplateError
from mailer.outbound import template_files
from mailer.outbound.template_files import Draft
from mailer.outbound.templates import TemplateStore
from mailer.scheduling import previews, results
from mailer.store.models import Role
from mailer.web import marketing
from mailer.web.common import (
    WebState,
    current_user,
    db,
    posted,
    render,
    rendering,
    require,
    state,
)

WIDTHS = {"phone": 390, "desktop": 800}  # the preview's widths, in CSS pixels
_AT_LINE = re.compile(r"^(?P<file>.+?)(?::(?P<line>\d+))?$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Shown:
    """A problem as the editor shows it: at a line of one of the variant's parts if it is
    in one (``part`` is the file name), else only where it is."""

    problem: Problem
    part: str | None
    line: int | None


def located(problems: list[Problem], folder: str) -> list[Shown]:
    """Problems with the part and line they are at, for ``folder`` ("templates/NAME/bg")."""
    shown = []
    for problem in problems:
        match = _AT_LINE.match(problem.where)
        path, line = (match["file"], match["line"]) if match else (problem.where, None)
        part = path.removeprefix(folder + "/") if path.startswith(folder + "/") else None
        if part is not None and "/" in part:
            part = None  # a file in a language folder below the default one
        shown.append(Shown(problem=problem, part=part, line=int(line) if line else None))
    return shown


@require(Role.MARKETING)
async def editor_page(request: Request) -> Response:
    web, name, variant = state(request), request.path_params["name"], _variant(request)
    context = await rendering(request, _page, web, name, variant, request.query_params)
    return _render(request, context)


@posted(Role.MARKETING)
async def save(request: Request, form: FormData) -> Response:
    web, name, variant = state(request), request.path_params["name"], _variant(request)
    draft = _typed(form)
    problems = await rendering(request, _save, web, name, variant, draft, _by(request))
    if not problems:
        customer = str(form.get("customer", ""))  # the preview stays on the same customer
        url = _editor_url(name, variant, saved="1", customer=customer)
        return RedirectResponse(url, status_code=303)
    context = await rendering(request, _page, web, name, variant, form)  # the form's customer
    return _render(request, {**context, "draft": draft, "problems": problems}, 400)


@posted(Role.MARKETING)
async def preview_draft(request: Request, form: FormData) -> Response:
    """The preview of the text in the form, for the page to show as it is typed."""
    web, name, variant = state(request), request.path_params["name"], _variant(request)
    query = str(form.get("customer", "")).strip()
    context = await rendering(request, _draft_preview, web, name, variant, _typed(form), query)
    return render(request, "template_preview.html", context)


@posted(Role.MARKETING)
async def restore(request: Request, form: FormData) -> Response:
    web, name, variant = state(request), request.path_params["name"], _variant(request)
    chosen = await db(request, _version, web, name, variant, request.path_params["id"])
    problems = await rendering(request, _save, web, name, variant, chosen.draft, _by(request))
    if not problems:
        return RedirectResponse(_editor_url(name, variant, saved="1"), status_code=303)
    context = await rendering(request, _page, web, name, variant, request.query_params)
    return _render(request, {**context, "draft": chosen.draft, "problems": problems}, 400)


@require(Role.MARKETING)
async def diff_page(request: Request) -> Response:
    web, name, variant = state(request), request.path_params["name"], _variant(request)
    params = request.query_params
    context = await db(request, _diff, web, name, variant, params.get("old"), params.get("new"))
    return render(request, "template_diff.html", context)


@posted(Role.MARKETING)
async def new_variant(request: Request, form: FormData) -> Response:
    web, name = state(request), request.path_params["name"]
    source = str(form.get("source", "")) or None
    locale = str(form.get("locale", "")).strip()
    try:
        folder, problems = await rendering(
            request, _new_variant, web, name, source, locale, _by(request)
        )
    except MailerError as exc:
        context = await rendering(request, _page, web, name, source, request.query_params)
        return _render(request, {**context, "variant_error": exc}, 400)
    if problems:  # the copy was valid where it came from; a locale folder can still be wrong
        context = await rendering(request, _page, web, name, source, request.query_params)
        return _render(request, {**context, "variant_error": problems[0]}, 400)
    return RedirectResponse(_editor_url(name, folder), status_code=303)


@posted(Role.MARKETING)
async def new_template(request: Request, form: FormData) -> Response:
    web, name = state(request), str(form.get("name", "")).strip()
    try:
        problems = await rendering(request, _new_template, web, name, _by(request))
    except MailerError as exc:
        return render(request, "error.html", {"status": 400, "detail": str(exc)}, 400)
    if problems:
        detail = "; ".join(str(p) for p in problems)
        return render(request, "error.html", {"status": 400, "detail": detail}, 400)
    return RedirectResponse(_editor_url(name, None), status_code=303)


def _render(request: Request, context: dict[str, Any], status: int = 200) -> Response:
    return render(request, "template_editor.html", context, status)


def _typed(form: FormData) -> Draft:
    return Draft.typed(*(str(form.get(field, "")) for field in ("subject", "html", "text")))


def _variant(request: Request) -> str | None:
    return request.query_params.get("variant") or None


def _by(request: Request) -> str:
    user = current_user(request)
    assert user is not None  # the page requires a signed-in user
    return user.name


def _editor_url(name: str, variant: str | None, **extra: str) -> str:
    query = urlencode({k: v for k, v in {"variant": variant or "", **extra}.items() if v})
    return f"/templates/{name}/edit" + (f"?{query}" if query else "")


def _store(web: WebState) -> TemplateStore:
    return TemplateStore(web.cfg.templates_dir)


def _folder(store: TemplateStore, name: str, variant: str | None) -> str:
    """The variant's folder as problems name it: "templates/NAME/bg"."""
    return f"{store.root.name}/{name}" + (f"/{variant}" if variant else "")


def _page(web: WebState, name: str, variant: str | None, params: Any) -> dict[str, Any]:
    """The editor with the variant's current files, its saved versions and the preview."""
    store = _store(web)
    try:
        draft = template_files.read(store, name, variant)
    except TemplateError:
        raise HTTPException(404, f"There is no template {name!r} with that language.") from None
    except MailerError as exc:
        raise HTTPException(400, str(exc)) from None
    with web.engine.connect() as conn:
        saved = template_files.versions(conn, name, variant)
    context: dict[str, Any] = {
        "variants": store.variants(name),
        "draft": draft,
        "current": draft,
        "versions": saved,
        "saved": params.get("saved") == "1",
    }
    query = params.get("customer", "").strip()
    return {**context, **_preview(web, store, name, variant, query)}


def _draft_preview(
    web: WebState, name: str, variant: str | None, draft: Draft, query: str
) -> dict[str, Any]:
    """The preview of ``draft`` in place of the variant's files; nothing is written."""
    store = _store(web)
    _variant_or_404(store, name, variant)
    problems = template_files.limits(store, name, variant, draft)
    if problems:
        shown = located(problems, _folder(store, name, variant))
        return {**_shared(store, name, variant, query), "unsaved": True, "preview_problems": shown}
    drafted = store.with_draft(name, variant, draft.parts())
    return {**_preview(web, drafted, name, variant, query), "unsaved": True}


def _shared(store: TemplateStore, name: str, variant: str | None, query: str) -> dict[str, Any]:
    """What the editor page and its preview both show."""
    return {
        "name": name,
        "variant": variant,
        "default_locale": store.default_locale,
        "query": query,
        "widths": WIDTHS,
    }


def _preview(
    web: WebState, store: TemplateStore, name: str, variant: str | None, query: str
) -> dict[str, Any]:
    """The variant (as ``store`` has it) for the customer ``query`` names by address; the
    customers whose address or name contains it when it names no one exactly."""
    shared = _shared(store, name, variant, query)
    if not query:
        return shared
    customer = marketing.chosen_customer(web, query)
    if isinstance(customer, list):
        return {**shared, "matches": customer}
    schedules, _ = results.load(web.cfg, web.clock)
    try:
        shown = previews.preview(
            web.engine,
            web.cfg,
            store,
            customer,
            name,
            locale=variant or store.default_locale,
            category=previews.category_of(name, schedules.values()),
            now=web.clock.now(),
        )
    except TemplateError as exc:
        shown_problems = located([exc.problem], _folder(store, name, variant))
        return {**shared, "customer": customer, "preview_problems": shown_problems}
    return {**shared, "customer": customer, "preview": shown}


def _save(web: WebState, name: str, variant: str | None, draft: Draft, by: str) -> list[Shown]:
    store = _store(web)
    _variant_or_404(store, name, variant)
    problems = template_files.save(
        web.engine,
        store,
        name,
        variant,
        draft,
        by=by,
        now=web.clock.now(),
        company=web.cfg.settings.company or None,
    )
    return located(problems, _folder(store, name, variant))


def _variant_or_404(store: TemplateStore, name: str, variant: str | None) -> None:
    if variant not in _variants_or_404(store, name):
        raise HTTPException(404, f"{name} has no {variant} variant.")


def _variants_or_404(store: TemplateStore, name: str) -> list[str | None]:
    try:
        return store.variants(name)
    except TemplateError:
        raise HTTPException(404, f"There is no template named {name!r}.") from None


def _version(
    web: WebState, name: str, variant: str | None, version_id: str | int
) -> template_files.Version:
    with web.engine.connect() as conn:
        try:
            found = template_files.version(conn, int(version_id))
        except (NotFound, ValueError):
            raise HTTPException(404, "There is no such saved version.") from None
    if (found.template, found.variant) != (name, variant):
        raise HTTPException(404, "That version is of another template or language.")
    return found


def _diff(
    web: WebState, name: str, variant: str | None, old: str | None, new: str | None
) -> dict[str, Any]:
    """Two saved versions compared ("current" is the files as they are now)."""
    store = _store(web)
    _variants_or_404(store, name)
    try:
        current = template_files.read(store, name, variant)
    except MailerError as exc:
        raise HTTPException(400, str(exc)) from None
    sides = [
        None if side in (None, "", "current") else _version(web, name, variant, side)
        for side in (old, new)
    ]
    drafts = [side.draft if side is not None else current for side in sides]
    return {
        "name": name,
        "variant": variant,
        "default_locale": store.default_locale,
        "old": sides[0],
        "new": sides[1],
        "lines": template_files.diff(drafts[0], drafts[1]),
    }


def _new_variant(
    web: WebState, name: str, source: str | None, locale: str, by: str
) -> tuple[str, list[Problem]]:
    store = _store(web)
    if source not in _variants_or_404(store, name):
        raise MailerError(f"{name} has no {source} variant to copy")
    company = web.cfg.settings.company or None
    return template_files.create_variant(
        web.engine, store, name, source, locale, by=by, now=web.clock.now(), company=company
    )


def _new_template(web: WebState, name: str, by: str) -> list[Problem]:
    company = web.cfg.settings.company or None
    return template_files.create_template(
        web.engine, _store(web), name, by=by, now=web.clock.now(), company=company
    )


routes = [
    Route("/templates/new", new_template, methods=["POST"]),
    Route("/templates/{name}/edit", editor_page),
    Route("/templates/{name}/edit", save, methods=["POST"]),
    Route("/templates/{name}/preview", preview_draft, methods=["POST"]),
    Route("/templates/{name}/versions/diff", diff_page),
    Route("/templates/{name}/versions/{id:rowid}/restore", restore, methods=["POST"]),
    Route("/templates/{name}/variants", new_variant, methods=["POST"]),
]
