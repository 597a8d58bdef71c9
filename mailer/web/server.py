"""Serving the web app from the daemon's event loop (or alone, for ``mailer web``)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator

import uvicorn
import uvloop
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from mailer import checks
from mailer.core.clock import Clock, SystemClock
from mailer.core.config import Config
from mailer.inbound import language
from mailer.web import (
    api_keys,
    customer_edit,
    desk,
    followups,
    insights,
    marketing,
    operations,
    replies,
    schedule_editor,
    template_editor,
)
from mailer.web.app import create_app

log = logging.getLogger("mailer.web")
BACKLOG = 2048


def build(cfg: Config, engine: Engine, clock: Clock) -> Starlette:
    """The whole app: customers' pages and every staff section. The model the inquiry form
    tells a new sender's language with is loaded here, before serving and before ``mailer
    web`` forks: the first post does not hold a thread and the event loop for a second, and
    the processes share its 55 MB."""
    language.load()
    sections: list[Route | Mount] = [
        *desk.routes,
        *customer_edit.routes,
        *replies.routes,
        *followups.routes,
        *schedule_editor.routes,  # before marketing's /schedules/{name}
        *template_editor.routes,
        *marketing.routes,
        *insights.routes,
        *operations.routes,
        *api_keys.routes,
    ]
    return create_app(cfg, engine, clock, sections)


class _Embedded(uvicorn.Server):
    """uvicorn inside mailer's loop: the daemon owns the signals, not the web server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(bind: str) -> socket.socket:
    """Listen on ``host:port`` now (port 0 picks a free one), so a taken port fails at start.

    Nagle's algorithm is off on every connection (TCP_NODELAY; accepted sockets inherit it,
    and asyncio sets it only on sockets made with IPPROTO_TCP): the server writes a
    response's head and body separately, and with Nagle on, the body waited for the
    client's delayed ACK, 40 ms on every kept-alive request."""
    host, _, port = bind.rpartition(":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host.strip("[]"), int(port)))
    sock.listen(BACKLOG)  # connections wait in the queue until the app is up
    return sock


def uvicorn_config(app: Starlette) -> uvicorn.Config:
    """uvicorn's proxy_headers stay off: they would believe X-Forwarded-For from 127.0.0.1
    (or $FORWARDED_ALLOW_IPS) whatever config.toml says; mailer.web.clients decides. HTTP is
    parsed by httptools, named rather than found, so tests run the parser production does."""
    return uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        http="httptools",
    )


async def serve(app: Starlette, sock: socket.socket, stop: asyncio.Event) -> None:
    """Until ``stop``; requests in flight are finished, then the socket is closed."""
    server = _Embedded(uvicorn_config(app))
    host, port = sock.getsockname()[:2]
    log.info("web app on http://%s:%d", host, port)
    running = asyncio.create_task(server.serve(sockets=[sock]))
    await stop.wait()
    server.should_exit = True
    await running
    sock.close()


def run_alone(cfg: Config, engine: Engine) -> None:
    """``mailer web``: only the app, until SIGINT or SIGTERM (for a separate web host), in
    ``[web] processes`` processes that take connections from one listening socket."""
    with checks.listening(cfg, "web", "bind"):
        sock = listen(cfg.settings.web.bind)
    app = build(cfg, engine, SystemClock())  # before any fork: each process has its copy
    settle()
    count = cfg.settings.web.processes
    if count == 1:
        _serve_until_signalled(app, sock)
        return
    failed = _forked(count, lambda: _child(app, engine, sock))
    sock.close()
    if failed:
        raise SystemExit(1)


def settle() -> None:
    """Keep what a server process holds from its start (modules, the app, its schemas and
    statements) out of the garbage collector's passes: it lives as long as the process,
    and a full pass over it, which a 1,000-item API batch sets off, took a third of the
    batch's CPU. Only for a process's own start: whatever exists now is never collected."""
    gc.freeze()


def _serve_until_signalled(app: Starlette, sock: socket.socket) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOPS:
            loop.add_signal_handler(sig, stop.set)
        await serve(app, sock, stop)

    uvloop.run(main())  # as the daemon's: the same work costs less CPU on it


STOPS = (signal.SIGINT, signal.SIGTERM)


def _run_child(work: Callable[[], None]) -> int:
    """A forked web process's exit code: 0 when it stopped as asked (a Ctrl-C that reaches
    it after its loop gave the signals back is a stop too), 1 on an error."""
    try:
        work()
    except KeyboardInterrupt:
        return 0
    except BaseException:
        log.exception("a web process failed")
        return 1
    return 0


def _child(app: Starlette, engine: Engine, sock: socket.socket) -> None:
    """One forked web process: the parent's pooled database connections are left to the
    parent (SQLAlchemy's advice for a fork), and its own are opened as it needs them."""
    engine.dispose(close=False)
    _serve_until_signalled(app, sock)


def _forked(count: int, work: Callable[[], None]) -> bool:
    """Run ``work`` in ``count`` forked processes until each has ended; a SIGINT or SIGTERM
    to this one is passed on to them, and when one ends on its own (an error), the others
    are stopped as at a signal. True when any ended on an error."""
    children: set[int] = set()
    stopping = False

    def stop(sig: int = signal.SIGTERM, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    previous = {sig: signal.signal(sig, stop) for sig in STOPS}
    try:
        try:
            for _ in range(count):
                pid = os.fork()
                if pid == 0:  # the child: default signal handling until its loop sets its own
                    for sig in STOPS:
                        signal.signal(sig, signal.SIG_DFL)
                    os._exit(_run_child(work))
                children.add(pid)
        except BaseException:  # a fork failed: the processes started must not serve alone
            stop()
            raise
        failed = False
        while children:
            pid, status = os.wait()
            children.discard(pid)
            ended = os.waitstatus_to_exitcode(status)
            if stopping and ended in (0, -signal.SIGTERM, -signal.SIGINT):
                continue  # stopped as asked, before or after its loop took the signals
            if not stopping:
                log.error("web process %d ended on its own; stopping the others", pid)
            failed = True
            stop()
        return failed
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
