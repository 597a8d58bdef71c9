"""The template editor in Debian's Chromium: a save with a mistake is refused at its line and
nothing is written, a fix is saved and kept as a version to compare and restore, the
preview shows a real customer in two languages at phone and desktop widths, a new language
starts as a copy, and support may not edit; a new template from the list, whose preview
follows the text as it is typed (nothing saved) and shows a mistake at its line, beside the
editor on a wide screen; and a save without JavaScript. Then the renderer against a real
concurrent save: never a subject from one save with a body from another.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Locator, Page, expect
from pytest_playwright_asyncio import CreateContextCallback
from sqlalchemy import Engine

from mailer.core.clock import ManualClock
from mailer.outbound import renderpool
from mailer.outbound.template_files import Draft, write
from mailer.outbound.templates import TemplateStore
from mailer.web.server import build as build_web
from tests.configs import ROOT, shipped_config
from tests.conftest import sign_in
from tests.site import Site, served

MARIA = "maria@example.bg"
BROKEN = """{% extends "_layouts/bg.html" %}
{% block content %}
<h1>Здравейте, {{ customer.nickname }}!</h1>
{% endblock %}
"""
FIXED = BROKEN.replace("customer.nickname", "customer.first_name")


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "editing" / "templates"
    shutil.copytree(ROOT / "templates", folder)
    return folder


@pytest.fixture
def editing(templates: Path, engine: Engine, clock: ManualClock) -> Iterator[Site]:
    """The app over a copy of the repo's templates, which the editor writes to."""
    cfg = shipped_config(
        templates.parent,
        {
            "MAILER_PATHS__TEMPLATES": str(templates),
            "MAILER_WEB__BASE_URL": "https://mail.northwind-roasters.example",
        },
    )
    with served(build_web(cfg, engine, clock)) as site:
        yield site


async def type_into(page: Page, part: str, text: str) -> None:
    """Into the CodeMirror editor laid over the textarea, as a paste would."""
    await page.evaluate(
        "([id, text]) => document.getElementById(id).nextElementSibling.CodeMirror.setValue(text)",
        [part, text],
    )


async def test_a_mistake_is_refused_at_its_line_and_a_fix_is_kept_as_a_version_to_restore(
    page: Page,
    editing: Site,
    templates: Path,
    clock: ManualClock,
    staff: dict[str, str],
    people: None,
) -> None:
    body = templates / "birthday" / "bg" / "body.html"
    shipped = body.read_text(encoding="utf-8")
    await sign_in(page, editing, "mia")
    await page.goto(editing.url + "/templates/birthday")
    await page.get_by_role("link", name="Edit this template").click()
    await page.get_by_role("link", name="bg", exact=True).click()
    await expect(page.locator(".CodeMirror").nth(1)).to_contain_text("Честит")
    await expect(page.locator(".CodeMirror-linenumber").first).to_be_visible()

    await type_into(page, "html", BROKEN)
    await page.get_by_role("button", name="Save").click()
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("Not saved")
    await expect(alert).to_contain_text(
        "Line 3 of body.html: templates/birthday/bg/body.html:3: undefined variable: "
        "'customer' has no attribute 'nickname'"
    )
    marked = page.locator(".CodeMirror .problem-line")
    await expect(marked).to_have_count(1)
    await expect(marked).to_contain_text("customer.nickname")  # the typed text stays
    assert body.read_text(encoding="utf-8") == shipped  # nothing written

    await type_into(page, "html", FIXED)
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_contain_text("Saved")
    assert body.read_text(encoding="utf-8") == FIXED
    clock.advance(timedelta(minutes=5))
    await type_into(page, "subject", "Честит рожден ден!\n")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_contain_text("Saved")

    versions = page.locator("table.versions tbody tr")
    await expect(versions).to_have_count(2)
    await expect(versions.first).to_contain_text("current")
    await expect(versions.first).to_contain_text("mia")
    await versions.first.get_by_role("link", name="Changes").click()
    diff = page.locator("pre.diff")
    await expect(diff).to_contain_text("subject.txt")
    await expect(diff.locator(".diff-removed")).to_contain_text("{% if customer.first_name %}")
    await expect(diff.locator(".diff-added")).to_have_text("+Честит рожден ден!")
    await expect(diff).not_to_contain_text("body.html")  # unchanged between the two

    await page.go_back()
    await page.get_by_role("button", name="Restore #1").click()
    await expect(page.get_by_role("status")).to_contain_text("Saved")
    await expect(versions).to_have_count(3)  # a restore is a new save
    await expect(versions.first).to_contain_text("#3")
    subject = (templates / "birthday" / "bg" / "subject.txt").read_text(encoding="utf-8")
    assert "{% if customer.first_name %}" in subject and body.read_text("utf-8") == FIXED


async def test_preview_in_two_languages_and_widths_a_new_language_and_support_refused(
    page: Page, editing: Site, templates: Path, staff: dict[str, str], people: None
) -> None:
    await sign_in(page, editing, "mia")
    await page.goto(editing.url + "/templates/birthday/edit?variant=bg")
    await page.get_by_label("Customer").fill("МАРИЯ")
    await page.get_by_role("button", name="Show").click()
    await page.get_by_role("link", name=MARIA).click()
    for language, greeting in (("bg", "Честит рожден ден, Мария!"), ("en", "Happy birthday")):
        if language == "en":
            await page.get_by_role("link", name="default (en)").click()
        for width, label in ((390, "phone"), (800, "desktop")):
            frame = page.locator(f"iframe.preview-{label}")
            box = await frame.bounding_box()
            assert box is not None and round(box["width"]) == width
            assert await frame.get_attribute("sandbox") == ""
            inside = page.frame_locator(f"iframe.preview-{label}")
            await expect(inside.get_by_role("heading")).to_contain_text(greeting)
            await expect(inside.locator(".footer")).to_contain_text("Northwind")  # the legal footer

    await page.get_by_label("Language", exact=True).fill("de")
    await page.get_by_label("Copied from").select_option(label="bg")
    await page.get_by_role("button", name="Add language").click()
    await expect(page.get_by_role("link", name="de", exact=True)).to_have_attribute(
        "aria-current", "page"
    )
    await expect(page.locator("table.versions tbody tr")).to_have_count(1)
    copied = (templates / "birthday" / "de" / "body.html").read_text(encoding="utf-8")
    assert copied == (templates / "birthday" / "bg" / "body.html").read_text(encoding="utf-8")

    await page.context.clear_cookies()
    await sign_in(page, editing, "sam")
    response = await page.goto(editing.url + "/templates/birthday/edit")
    assert response is not None and response.status == 403
    token = await page.locator('meta[name="csrf-token"]').get_attribute("content")
    posted = await page.request.post(
        editing.url + "/templates/birthday/edit",
        form={"csrf": token or "", "subject": "Hacked", "html": "<p>x</p>", "text": ""},
    )
    assert posted.status == 403
    assert "Hacked" not in (templates / "birthday" / "subject.txt").read_text(encoding="utf-8")


async def test_a_new_template_previews_unsaved_text_as_typed_and_a_mistake_at_its_line(
    page: Page, editing: Site, templates: Path, staff: dict[str, str], people: None
) -> None:
    await page.set_viewport_size({"width": 1280, "height": 900})
    await sign_in(page, editing, "mia")
    await page.goto(editing.url + "/templates")
    await page.get_by_label("New template").fill("spring_sale")
    await page.get_by_role("button", name="Create").click()
    await expect(page.get_by_role("heading", name="Edit spring_sale")).to_be_visible()
    body = templates / "spring_sale" / "body.html"
    created = body.read_text(encoding="utf-8")
    await page.get_by_label("Customer").fill(MARIA)
    await page.get_by_role("button", name="Show").click()
    desktop = page.frame_locator("iframe.preview-desktop")
    await expect(desktop.locator("body")).to_contain_text("Hello Мария")
    assert await _beside(page.locator("form.editor"), page.locator(".preview-side"))

    await type_into(page, "subject", "Spring beans for {{ customer.first_name }}\n")
    await type_into(page, "html", created.replace("Hello", "Spring is here"))
    await expect(desktop.locator("body")).to_contain_text("Spring is here Мария")
    await expect(page.locator(".preview-subject")).to_have_text("Spring beans for Мария")
    await expect(page.locator("pre.preview-text")).to_contain_text("Spring is here Мария")
    await expect(page.locator(".preview-side")).to_contain_text("Your unsaved text")
    assert body.read_text(encoding="utf-8") == created  # nothing written
    await expect(page.locator("table.versions tbody tr")).to_have_count(1)  # nor recorded

    broken = created.replace("customer.name", "customer.nickname")
    await type_into(page, "html", broken)
    alert = page.locator("#live-preview").get_by_role("alert")
    await expect(alert).to_contain_text(
        "Line 3 of body.html: templates/spring_sale/body.html:3: undefined variable: "
        "'customer' has no attribute 'nickname'"
    )
    await expect(page.locator("iframe.preview-desktop")).to_have_count(0)
    await expect(page.locator(".CodeMirror .problem-line")).to_contain_text("customer.nickname")

    await page.reload()  # the saved files again, and what was typed never reached them
    await expect(desktop.locator("body")).to_contain_text("Hello Мария")
    await page.set_viewport_size({"width": 900, "height": 900})
    assert not await _beside(page.locator("form.editor"), page.locator(".preview-side"))


async def _beside(left: Locator, right: Locator) -> bool:
    """Whether ``right`` starts to the right of where ``left`` ends (else it is below)."""
    first, second = await left.bounding_box(), await right.bounding_box()
    assert first is not None and second is not None
    return second["x"] >= first["x"] + first["width"]


async def test_the_editor_saves_without_javascript(
    new_context: CreateContextCallback, editing: Site, templates: Path, staff: dict[str, str]
) -> None:
    context = await new_context(java_script_enabled=False)
    page = await context.new_page()
    await sign_in(page, editing, "mia")
    await page.goto(editing.url + "/templates/birthday/edit?variant=bg")
    await page.get_by_label("HTML body").fill(FIXED)
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_contain_text("Saved")
    assert (templates / "birthday" / "bg" / "body.html").read_text(encoding="utf-8") == FIXED
    await expect(page.locator("table.versions tbody tr")).to_have_count(1)


def test_a_message_never_mixes_the_subject_of_one_save_with_the_body_of_another(
    templates: Path,
) -> None:
    """Saves of numbered versions run in a thread while messages render in a render worker;
    each message's subject and body name the same version."""
    pool = renderpool.RenderPool(size=1)
    store = TemplateStore(templates, pool=pool)
    sofia, renders = ZoneInfo("Europe/Sofia"), 150
    context = {"customer": {"first_name": "Ana"}, "company": {"name": "N"}}
    write(templates, "race", None, Draft("Version 0", "<p>Version 0</p>", "Version 0"))
    stop, seen = threading.Event(), set()

    def keep_saving() -> None:
        number = 0
        while not stop.is_set():
            number += 1
            draft = Draft(f"Version {number}", f"<p>Version {number}</p>", f"Version {number}")
            write(templates, "race", None, draft)

    saver = threading.Thread(target=keep_saving)
    try:
        store.render("race", context, locale=None, zone=sofia)  # the worker is up
        saver.start()
        for _ in range(renders):
            message = store.render("race", context, locale=None, zone=sofia)
            assert message.html is not None
            assert f"<p>{message.subject}</p>" in message.html, message
            assert message.text.strip() == message.subject, message
            seen.add(message.subject)
    finally:
        stop.set()
        saver.join()
        pool.close()
    assert len(seen) > 1  # the saves really ran between the renders


async def test_a_file_saved_in_another_encoding_is_named_not_opened_and_not_overwritten(
    page: Page, editing: Site, templates: Path, staff: dict[str, str]
) -> None:
    """A body.html saved as Windows-1251 by an editor outside mailer: the editor and the
    comparison of versions say which file and how to mend it, and leave the file as it is."""
    body = templates / "birthday" / "bg" / "body.html"
    body.write_bytes("<p>Честит рожден ден!</p>".encode("cp1251"))
    await sign_in(page, editing, "mia")
    for path in ("/edit?variant=bg", "/versions/diff?variant=bg&old=current&new=current"):
        response = await page.goto(f"{editing.url}/templates/birthday{path}")
        assert response is not None and response.status == 400, path
        await expect(page.get_by_role("main")).to_contain_text(
            "templates/birthday/bg/body.html is not UTF-8 text (byte 0xD7 at 3); save it as UTF-8"
        )
    assert body.read_bytes() == "<p>Честит рожден ден!</p>".encode("cp1251")
