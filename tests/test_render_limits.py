"""No template can take the daemon down: a render that loops, grows a huge string or writes
a flood of output fails with a clear reason within its limits, in delivery, previews and
`templates check` alike, while the event loop, the pages and /healthz keep answering.

The limits here are tighter than the shipped ones (1 s instead of 5) so the suite waits
less; a render limit is wall-clock time by nature, so these tests do spend that second.
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import Engine, select

import mailer
from mailer import daemon
from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.core.errors import RenderTimeout, TemplateError
from mailer.outbound import outbox, renderpool
from mailer.outbound.delivery import Delivery
from mailer.outbound.outbox import NewMessage
from mailer.outbound.renderpool import Limits, RenderPool
from mailer.outbound.smtp import SmtpTarget
from mailer.outbound.templates import TemplateStore
from mailer.store.models import OutboxStatus
from mailer.web.server import build as build_web
from tests.configs import ROOT, shipped_config
from tests.conftest import sign_in
from tests.site import Site, served
from tests.smtp_sink import Sink

LIMITS = Limits(seconds=1.0, memory=256 * 1024 * 1024, output=100_000)
LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
BOUND = 10.0  # seconds: far above LIMITS.seconds, far below "the daemon froze"
UTC_ZONE = ZoneInfo("UTC")


@pytest.fixture(scope="module")
def pool() -> Iterator[RenderPool]:
    """The tight pool, for the whole process while these tests run."""
    tight = RenderPool(LIMITS)
    previous = renderpool.install(tight)
    yield tight
    renderpool.install(previous)
    tight.close()


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """The shipped templates plus three that a marketer got badly wrong."""
    root = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", root)
    for name, body in {
        "looping": f"<p>{LOOP}</p>",
        "huge": '<p>{{ "a" * 10**9 }}</p>',
        "wordy": '<p>{{ "word " * 30000 }}</p>',
    }.items():
        (root / name).mkdir()
        (root / name / "subject.txt").write_text(f"The {name} one", encoding="utf-8")
        (root / name / "body.html").write_text(body, encoding="utf-8")
    return root


def render(store: TemplateStore, name: str) -> str:
    return store.render(name, {"customer": {"name": "Ana"}}, locale=None, zone=UTC_ZONE).subject


def test_a_looping_template_fails_within_its_limit_and_the_next_render_works(
    pool: RenderPool, templates: Path
) -> None:
    store = TemplateStore(templates)
    started = time.monotonic()
    with pytest.raises(TemplateError) as failed:
        render(store, "looping")
    assert time.monotonic() - started < BOUND
    assert str(failed.value) == (
        "templates/looping: took longer than 1 s to render; is there a loop that never ends?"
    )
    (templates / "fine").mkdir()
    (templates / "fine" / "subject.txt").write_text("Hello {{ customer.name }}", "utf-8")
    (templates / "fine" / "body.txt").write_text("Hi", "utf-8")
    assert render(store, "fine") == "Hello Ana"


def test_a_huge_string_fails_on_memory_without_taking_the_machines(
    pool: RenderPool, templates: Path
) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(TemplateError) as failed:
        render(TemplateStore(templates), "huge")
    assert "needs more memory than a template may use" in str(failed.value)
    assert str(failed.value).startswith("templates/huge/body.html:1: ")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100 * 1024  # the gigabyte never came into this process


def test_output_past_the_limit_is_refused(pool: RenderPool, templates: Path) -> None:
    with pytest.raises(TemplateError) as failed:
        render(TemplateStore(templates), "wordy")
    assert str(failed.value) == "templates/wordy/body.html: writes more than 100,000 characters"


def test_templates_check_reports_every_overrun_and_still_checks_the_rest(
    pool: RenderPool, templates: Path
) -> None:
    (templates / "broken").mkdir()
    (templates / "broken" / "subject.txt").write_text("{{ customer.nickname }}", "utf-8")
    (templates / "broken" / "body.txt").write_text("x", "utf-8")
    found = {p.where: p.message for p in TemplateStore(templates).check()}
    assert found["templates/looping"].startswith("took longer than 1 s to render")
    assert found["templates/huge/body.html:1"].startswith("needs more memory")
    assert found["templates/wordy/body.html"] == "writes more than 100,000 characters"
    assert found["templates/broken/subject.txt:1"] == (
        "undefined variable: 'customer' has no attribute 'nickname'"
    )
    assert not [where for where in found if "birthday" in where]  # the good ones pass


async def test_looping_messages_fail_at_once_while_the_loop_and_other_mail_go_on(
    pool: RenderPool,
    templates: Path,
    tmp_path: Path,
    engine: Engine,
    clock: ManualClock,
    sink: tuple[Sink, int],
) -> None:
    delivery = _delivery(templates, tmp_path, engine, clock, sink[1])
    queued = [
        NewMessage(
            dedupe_key=f"loop:{n}",
            to_address=f"reader{n}@example.com",
            category=Category.TRANSACTIONAL,
            template="looping",
        )
        for n in range(5)
    ]
    ack = {"inquiry": {"reference": "42", "subject": "Grinder", "received_at": clock.now()}}
    fine = NewMessage(
        dedupe_key="fine",
        to_address="ana@example.com",
        category=Category.TRANSACTIONAL,
        template="ack",
        context=ack | _reply_by(clock),
    )
    outbox.enqueue(engine, [*queued, fine], clock.now())

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    await delivery.deliver_due()
    elapsed = time.monotonic() - started
    ticker.cancel()

    assert elapsed < BOUND  # one overrun for the template, not one per message
    assert ticks >= 0.5 * LIMITS.seconds / 0.01  # the loop kept running meanwhile
    assert [m.rcpt_tos for m in sink[0].received] == [["ana@example.com"]]
    with engine.connect() as conn:
        rows = conn.execute(
            select(outbox.OUTBOX.c.status, outbox.OUTBOX.c.reason).where(
                outbox.OUTBOX.c.template == "looping"
            )
        ).all()
    assert {status for status, _ in rows} == {OutboxStatus.FAILED}
    assert {reason for _, reason in rows} == {
        "template: templates/looping: took longer than 1 s to render; "
        "is there a loop that never ends?"
    }
    clock.advance(timedelta(hours=1))
    assert await delivery.deliver_due() == 0  # failed for good: not tried again and again


async def test_messages_rendered_before_one_that_loops_are_still_sent(
    pool: RenderPool,
    templates: Path,
    tmp_path: Path,
    engine: Engine,
    clock: ManualClock,
    sink: tuple[Sink, int],
) -> None:
    """The worker sends its results in groups; those finished before a call that never ends
    still come back, and only that call is charged with the overrun."""
    (templates / "moody").mkdir()
    (templates / "moody" / "subject.txt").write_text("News", encoding="utf-8")
    body = f"<p>{{% if stuck %}}{LOOP}{{% endif %}}Hello</p>"
    (templates / "moody" / "body.html").write_text(body, encoding="utf-8")
    delivery = _delivery(templates, tmp_path, engine, clock, sink[1])
    queued = [
        NewMessage(
            dedupe_key=f"moody:{n}",
            to_address=f"reader{n}@example.com",
            category=Category.TRANSACTIONAL,
            template="moody",
            context={"stuck": n == 3},
        )
        for n in range(4)
    ]
    outbox.enqueue(engine, queued, clock.now())

    await delivery.deliver_due()

    assert sorted(m.rcpt_tos[0] for m in sink[0].received) == [
        "reader0@example.com",
        "reader1@example.com",
        "reader2@example.com",
    ]
    with engine.connect() as conn:
        stuck = conn.execute(
            select(outbox.OUTBOX.c.status, outbox.OUTBOX.c.reason).where(
                outbox.OUTBOX.c.to_address == "reader3@example.com"
            )
        ).one()
    assert stuck == (
        OutboxStatus.FAILED,
        "template: templates/moody: took longer than 1 s to render; "
        "is there a loop that never ends?",
    )


def test_a_render_worker_imports_the_same_mailer_as_the_daemon(pool: RenderPool) -> None:
    """Its import path starts with the folder this mailer was imported from, not whatever
    mailer the interpreter has installed."""
    here = str(Path(mailer.__file__).resolve().parents[1])
    assert pool.call("templates/any", eval, "__import__('sys').path")[0] == here


def test_a_call_that_kills_its_worker_fails_alone(pool: RenderPool) -> None:
    """Results finished before it but not yet sent back are made again by a new worker; the
    call the worker was in when it died is the one that fails."""
    crash = "__import__('os').kill(__import__('os').getpid(), 11)"  # SIGSEGV
    made = pool.map(eval, [("templates/news", (made,)) for made in ("0", "1", crash, "3")])
    assert made[0:2] == [0, 1] and made[3] == 3
    assert str(made[2]) == "templates/news: the renderer stopped (exit code -11)"


def test_a_call_stuck_in_c_code_is_charged_alone(pool: RenderPool) -> None:
    """A long computation in C holds the interpreter, so the worker can send nothing while it
    runs; the calls finished before it still succeed and only it overruns."""
    stuck = "(9 ** 99999999).bit_length()"  # minutes of C code
    made = pool.map(eval, [("templates/news", (made,)) for made in ("0", "1", stuck)])
    assert made[0:2] == [0, 1]
    assert str(made[2]) == (
        "templates/news: took longer than 1 s to render; is there a loop that never ends?"
    )


def test_a_call_finishing_just_as_the_daemon_gives_up_is_the_one_charged(
    pool: RenderPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that overruns by a little may finish, and the worker start the next, between
    the daemon's wait running out and its kill (the daemon's thread waits for the
    interpreter meanwhile: here 0.3 s before every kill, a delay a real worker cannot be
    made to show on demand). The slow call is charged; the calls after it keep their
    results."""
    kill = renderpool._Worker.stop

    def late_kill(worker: renderpool._Worker) -> int | None:
        if worker.alive():
            time.sleep(0.3)
        return kill(worker)

    monkeypatch.setattr(renderpool._Worker, "stop", late_kill)
    slow = "__import__('time').sleep(1.06) or 1"  # just past the limit and its 40 ms
    calls = [("templates/a", ("0",)), ("templates/slow", (slow,))]
    calls += [("templates/b", ("__import__('time').sleep(0.1) or 2",)), ("templates/b", ("3",))]
    made = pool.map(eval, calls)
    assert made[0] == 0 and made[2:] == [2, 3]
    assert isinstance(made[1], RenderTimeout)
    assert str(made[1]).startswith("templates/slow: took longer than 1 s to render")


def test_a_result_that_cannot_come_back_fails_alone(pool: RenderPool) -> None:
    """Results travel back in groups; one that cannot be pickled (a generator) does not
    take the others of its group with it."""
    made = pool.map(eval, [("templates/news", (made,)) for made in ("0", "(x for x in ())", "2")])
    assert made[0] == 0 and made[2] == 2
    assert isinstance(made[1], RuntimeError)
    assert str(made[1]) == "TypeError: cannot pickle 'generator' object"


def _delivery(
    templates: Path, tmp_path: Path, engine: Engine, clock: ManualClock, port: int
) -> Delivery:
    """The shipped configuration's delivery, rendering from ``templates``, to the sink."""
    cfg = shipped_config(tmp_path, {"MAILER_PATHS__TEMPLATES": str(templates)})
    return daemon.build_delivery(cfg, engine, clock, SmtpTarget(host="127.0.0.1", port=port))


def _reply_by(clock: ManualClock) -> dict[str, object]:
    return {"reply_expected_by": clock.now() + timedelta(hours=4)}


@pytest.fixture
def looping_site(
    templates: Path, tmp_path: Path, engine: Engine, clock: ManualClock
) -> Iterator[Site]:
    cfg: Config = shipped_config(tmp_path, {"MAILER_PATHS__TEMPLATES": str(templates)})
    with served(build_web(cfg, engine, clock)) as site:
        yield site


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the database is idle here
async def test_six_previews_of_a_looping_template_leave_the_health_page_answering(
    pool: RenderPool,
    page: Page,
    looping_site: Site,
    staff: dict[str, str],
    people: None,
) -> None:
    await sign_in(page, looping_site, "mia")
    pages = [await page.context.new_page() for _ in range(6)]
    url = f"{looping_site.url}/templates/looping?customer=maria@example.bg"
    previews = asyncio.gather(*(p.goto(url, timeout=60_000) for p in pages))
    await asyncio.sleep(0.3)  # real time: the previews are rendering now
    answered: list[tuple[int, float]] = []

    def probe() -> None:
        started = time.monotonic()
        status, _ = looping_site.get("/healthz")
        answered.append((status, time.monotonic() - started))

    prober = threading.Thread(target=probe)
    prober.start()
    await asyncio.to_thread(prober.join, BOUND)
    await previews
    assert answered and answered[0][0] == 200
    assert answered[0][1] < LIMITS.seconds  # not queued behind the renders
    for shown in pages:
        await expect(shown.get_by_role("alert")).to_contain_text(
            "templates/looping: took longer than 1 s to render"
        )
