"""Sessions are kept in the database: the cookie carries only a random id, so signing out,
disabling a user or giving them a new password ends their sessions in every process
serving the web app at once (two app instances on one database here, over real HTTP)."""

from __future__ import annotations

import http.client
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, select

from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.staff import sessions, users
from mailer.store import db
from mailer.store.models import Role
from mailer.web.server import build as build_web
from tests.conftest import PASSWORD
from tests.site import Site, served

PAGE = "/inquiries"  # a page for signed-in support staff


@dataclass
class Browser:
    """Just enough of a browser: one cookie, the last form's CSRF token, no redirects."""

    cookie: str = ""
    csrf: str = ""

    def request(
        self, site: Site, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """The status, and where it redirects to."""
        parts = urllib.parse.urlsplit(site.url)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        headers = {"Cookie": self.cookie} if self.cookie else {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode({**form, "csrf": self.csrf})
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        page = response.read().decode()
        if set_cookie := response.getheader("Set-Cookie"):
            self.cookie = set_cookie.split(";")[0]
        if found := re.search(r'name="csrf" value="([^"]+)"', page):
            self.csrf = found.group(1)
        connection.close()
        return response.status, response.getheader("Location") or ""

    def sign_in(self, site: Site, name: str) -> None:
        self.request(site, "GET", "/login")
        status, _ = self.request(site, "POST", "/login", {"name": name, "password": PASSWORD})
        assert status == 303
        assert self.request(site, "GET", PAGE)[0] == 200


@pytest.fixture
def two_sites(engine: Engine, cfg: Config, clock: ManualClock) -> Iterator[tuple[Site, Site]]:
    """The app twice, as two processes would serve it: each with its own connections."""
    other = db.connect(engine.url.render_as_string(hide_password=False))
    with (
        served(build_web(cfg, engine, clock)) as first,
        served(build_web(cfg, other, clock)) as second,
    ):
        yield first, second
    other.dispose()


def copy_of(browser: Browser) -> Browser:
    return Browser(cookie=browser.cookie, csrf=browser.csrf)


def test_signing_out_in_one_process_ends_the_copied_cookie_in_another(
    two_sites: tuple[Site, Site], staff: dict[Role, str]
) -> None:
    first, second = two_sites
    sam = Browser()
    sam.sign_in(first, staff[Role.SUPPORT])
    stolen = copy_of(sam)
    assert stolen.request(second, "GET", PAGE)[0] == 200, "one session, any process"
    assert sam.request(first, "POST", "/logout", {}) == (303, "/login")
    status, where = stolen.request(second, "GET", PAGE)
    assert status == 303 and where.startswith("/login")


@pytest.mark.parametrize("change", ["disable", "new password"])
def test_disabling_a_user_or_a_new_password_ends_every_session_at_once(
    two_sites: tuple[Site, Site], staff: dict[Role, str], engine: Engine, change: str
) -> None:
    name = staff[Role.SUPPORT]
    at_desk, at_home = Browser(), Browser()
    at_desk.sign_in(two_sites[0], name)
    at_home.sign_in(two_sites[1], name)
    colleague = Browser()
    colleague.sign_in(two_sites[1], staff[Role.ADMIN])
    with engine.begin() as conn:
        if change == "disable":
            users.disable(conn, name)
        else:
            users.set_password(conn, name, "a brand new passphrase")
    assert at_desk.request(two_sites[0], "GET", PAGE)[0] == 303
    assert at_home.request(two_sites[1], "GET", PAGE)[0] == 303
    assert colleague.request(two_sites[0], "GET", PAGE)[0] == 200, "others stay signed in"


def test_the_cookie_carries_only_an_id_the_database_only_its_hash(
    two_sites: tuple[Site, Site], staff: dict[Role, str], engine: Engine
) -> None:
    sam = Browser()
    sam.request(two_sites[0], "GET", "/login")
    anonymous = sam.cookie
    sam.sign_in(two_sites[0], staff[Role.SUPPORT])
    assert sam.cookie != anonymous, "a new id at sign-in: a planted cookie is worth nothing"
    session_id = sam.cookie.split("=", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", session_id)
    with engine.connect() as conn:
        stored = conn.execute(select(sessions.SESSIONS.c.id_hash)).scalars().all()
    assert session_id not in stored and len(stored) == 1 and len(stored[0]) == 64


def test_a_session_unused_for_twelve_hours_ends(
    two_sites: tuple[Site, Site], staff: dict[Role, str], clock: ManualClock
) -> None:
    sam = Browser()
    sam.sign_in(two_sites[0], staff[Role.SUPPORT])
    clock.advance(sessions.IDLE / 2)
    assert sam.request(two_sites[1], "GET", PAGE)[0] == 200  # in use: it lasts
    clock.advance(sessions.IDLE * 0.9)
    assert sam.request(two_sites[0], "GET", PAGE)[0] == 200
    clock.advance(sessions.IDLE)
    assert sam.request(two_sites[1], "GET", PAGE)[0] == 303


def test_a_session_id_is_made_only_for_a_page_that_uses_one(
    two_sites: tuple[Site, Site], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sign-in page's form needs an id (its CSRF token is derived from it) and sends its
    cookie; a call that uses none (the API's, with its key) costs no random id and sets no
    cookie."""
    made: list[str] = []
    new_id = sessions.new_id

    def counted() -> str:
        made.append(new_id())
        return made[-1]

    monkeypatch.setattr(sessions, "new_id", counted)
    browser = Browser()
    assert browser.request(two_sites[0], "GET", "/api/v1/openapi.json")[0] == 200
    assert (made, browser.cookie) == ([], "")
    browser.request(two_sites[0], "GET", "/login")
    assert len(made) == 1 and browser.cookie == f"mailer_session={made[0]}"
