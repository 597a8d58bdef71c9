"""Worker processes that run template code, each call bounded in time, memory and output.

Marketing edits the templates, and Jinja's sandbox keeps them away from Python's internals
but not from looping for ever or building a gigabyte string. A thread cannot be stopped,
so every render runs in a worker process that is killed when it overruns: the caller gets
a TemplateError within ``Limits.seconds`` and the next call gets a fresh worker. Memory is
bounded by the worker's address-space limit, output by the renderer counting what it
writes (see ``templates``).

A worker is a fresh interpreter (forking the daemon, with its threads and sockets, is not
safe); it starts in about half a second and then serves call after call. The pool is
used from threads; a caller blocks for at most a few multiples of ``Limits.seconds``.
Delivery also composes and DKIM-signs its rendered messages here
(``mailer.outbound.finishing``), so that this runs on another core than the daemon's sends.
"""

from __future__ import annotations

import atexit
import os
import pickle
import queue
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from mailer.core.errors import Problem, RenderTimeout, TemplateError

__all__ = ["Limits", "RenderPool", "install", "main", "shared"]
T = TypeVar("T")
STARTUP_SECONDS = 30.0  # a new worker's imports, on a busy machine
# A worker sends the results it has finished at least this often (see ``_Replies``); the
# caller's wait for the next ones allows for it.
SEND_EVERY = 0.02


@dataclass(frozen=True, slots=True)
class Limits:
    """What one call may take. Rendering a real message takes about a millisecond and a
    few hundred KB, so these are three orders of magnitude above any honest template."""

    seconds: float = 5.0
    memory: int = 512 * 1024 * 1024  # bytes of address space beyond the idle worker
    output: int = 2_000_000  # characters one rendered file may hold

    def describe_timeout(self) -> str:
        return f"took longer than {self.seconds:g} s to render; is there a loop that never ends?"


class _Worker:
    """One process and the socket to it. The process is started with ``python -c`` rather
    than by multiprocessing, which would import the caller's main script again in it."""

    def __init__(self, limits: Limits) -> None:
        ours, theirs = socket.socketpair()
        command = f"from mailer.outbound.renderpool import *; main({theirs.fileno()}, {limits!r})"
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-c", command],  # -P: a mailer/ in the cwd is not ours
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C at a terminal is for the daemon, which stops us
            env={**os.environ, "PYTHONPATH": _import_path()},
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        # multiprocessing's own poll builds a selector on every call: 16 us a reply, and
        # delivery reads one reply a message
        self._replies = select.poll()
        self._replies.register(self.conn.fileno(), select.POLLIN)
        self._received: deque[tuple[bool, Any]] = deque()  # results come back in groups
        self.started = False

    def _wait(self, seconds: float) -> bool:
        """Whether a reply (or the end of the worker) came within ``seconds``."""
        return bool(self._replies.poll(seconds * 1000))

    def send(self, work: Callable[..., Any], calls: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """Start ``work(*args)`` for each ``(where, args)`` of ``calls`` there, one after the
        other; each result is read back with ``reply``."""
        where = calls[0][0]
        try:
            self._ready(where)
            self.conn.send((work, list(calls)))
        except (EOFError, OSError):
            raise self._stopped(where) from None

    def reply(self, where: str, limits: Limits) -> Any:
        """The next call's result, or the exception it raised (returned, not raised); kill the
        worker (and raise) when the call overruns."""
        try:
            if not self._received:
                if not self._wait(limits.seconds + SEND_EVERY):
                    self.stop()
                    raise RenderTimeout(Problem(where, limits.describe_timeout()))
                self._received.extend(self.conn.recv())
            _, value = self._received.popleft()
        except (EOFError, OSError):
            raise self._stopped(where) from None
        return value

    def _stopped(self, where: str) -> TemplateError:
        return TemplateError(Problem(where, f"the renderer stopped (exit code {self.stop()})"))

    def _ready(self, where: str) -> None:
        """A new worker first imports Jinja and the rest, and says when it has: that time is
        not the template's."""
        if self.started:
            return
        if not self._wait(STARTUP_SECONDS):
            self.stop()
            raise TemplateError(Problem(where, "the renderer did not start"))
        self.conn.recv()
        self.started = True

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int | None:
        if self.alive():
            self.process.kill()
        self.conn.close()
        return self.process.wait()


class RenderPool:
    """Up to ``size`` workers; a call waits for a free one, starting it when needed."""

    def __init__(self, limits: Limits | None = None, size: int = 2) -> None:
        self.limits = limits or Limits()
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(size):
            self._idle.put(None)  # a slot whose worker is started on first use
        self._lock = threading.Lock()
        self._all: set[_Worker] = set()

    def call(self, where: str, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in a worker. ``where`` names the template for the error a person
        reads when the call overruns. Exceptions that ``work`` raises come back as they are."""
        (result,) = self.map(work, [(where, args)])
        if isinstance(result, Exception):
            raise result
        return result

    def map(
        self, work: Callable[..., T], calls: Sequence[tuple[str, tuple[Any, ...]]]
    ) -> list[T | Exception]:
        """``work(*args)`` for each ``(where, args)``, in order, in one worker: one round trip
        for a batch instead of one per message. Each call has the whole time limit; an
        exception comes back in the list in place of its result. A call that overran is
        not tried again for the rest of its ``where`` (they fail at once with its error:
        each would take the whole limit again); the other calls go on in a new worker."""
        results: dict[int, T | Exception] = {}
        overran: dict[str, TemplateError] = {}
        while todo := [i for i in range(len(calls)) if i not in results]:
            for i in todo:
                if calls[i][0] in overran:
                    results[i] = overran[calls[i][0]]
            todo = [i for i in todo if i not in results]
            if todo:
                self._run(work, [(i, *calls[i]) for i in todo], results, overran)
        return [results[i] for i in range(len(calls))]

    def _run(
        self,
        work: Callable[..., T],
        calls: list[tuple[int, str, tuple[Any, ...]]],
        results: dict[int, T | Exception],
        overran: dict[str, TemplateError],
    ) -> None:
        """As many of ``calls`` as one worker gets through before one overruns or it stops."""
        worker = self._idle.get()
        read = 0
        try:
            if worker is None or not worker.alive():
                worker = self._start()
            worker.send(work, [(where, args) for _, where, args in calls])
            for i, where, _ in calls:
                try:
                    results[i] = worker.reply(where, self.limits)
                except RenderTimeout as exc:
                    results[i] = overran[where] = exc
                    return
                except TemplateError as exc:  # the worker died: the rest go to a new one
                    results[i] = exc
                    return
                finally:
                    read += 1
        except TemplateError as exc:  # it did not start or took nothing
            results[calls[0][0]] = exc
        finally:
            if worker is not None and read < len(calls) and worker.alive():
                worker.stop()  # replies still unread would answer the next caller's calls
            self._idle.put(worker if worker is not None and worker.alive() else None)

    def _start(self) -> _Worker:
        worker = _Worker(self.limits)
        with self._lock:
            self._all = {w for w in self._all if w.alive()} | {worker}
        return worker

    def close(self) -> None:
        """Stop every worker; a call still waiting on one gets a TemplateError."""
        with self._lock:
            workers, self._all = self._all, set()
        for worker in workers:
            worker.stop()


_shared: RenderPool | None = None
_shared_lock = threading.Lock()


def shared() -> RenderPool:
    """The process's pool, started on first use and stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = RenderPool()
            atexit.register(_shared.close)
        return _shared


def install(pool: RenderPool | None) -> RenderPool | None:
    """Use ``pool`` from now on (tests use tighter limits); returns the one it replaces."""
    global _shared
    with _shared_lock:
        previous, _shared = _shared, pool
    return previous


# --- inside the worker ---------------------------------------------------------------

OUTPUT_LIMIT = Limits().output  # the worker's own limit, set when it starts


def main(fd: int, limits: Limits) -> None:
    """The worker's loop: one call at a time until the socket closes."""
    global OUTPUT_LIMIT
    OUTPUT_LIMIT = limits.output
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    # imported now, not inside the first call's time; composing and signing are done here too
    import mailer.outbound.dkim
    import mailer.outbound.finishing
    import mailer.outbound.templates  # noqa: F401

    _limit_memory(limits.memory)
    conn = Connection(fd)
    conn.send("ready")
    replies = _Replies(conn)
    while True:
        try:
            work, calls = conn.recv()
        except EOFError:
            return
        previous = None
        for where, args in calls:
            if where != previous:  # an overrun is charged to the template it is in
                replies.send()
                previous = where
            try:
                reply: tuple[bool, Any] = (True, work(*args))
            except Exception as exc:  # the caller decides what each error means
                reply = (False, exc)
            replies.add(reply)
        replies.send()


class _Replies:
    """Results go back in groups: one message a result cost the two processes 10-12 us of
    CPU and a wakeup each, a tenth of a small newsletter's rendering. A call is timed by
    the caller from the results before it, so a thread sends what is finished at least each
    ``SEND_EVERY`` while a long call runs: the call that overran is the first one whose
    result never came. (A call stuck in C code that holds the GIL keeps that thread from
    sending; the results it holds back are then charged with its overrun, but only those of
    the same template, which fails the rest of the batch anyway: see ``main``.)"""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._finished: list[tuple[bool, Any]] = []
        self._lock = threading.Condition()
        threading.Thread(target=self._send_every, name="replies", daemon=True).start()

    def add(self, reply: tuple[bool, Any]) -> None:
        with self._lock:
            self._finished.append(reply)
            if len(self._finished) == 1:
                self._lock.notify()

    def send(self) -> None:
        """Every finished result, now; an error that cannot be pickled comes back as one."""
        with self._lock:
            finished, self._finished = self._finished, []
            if not finished:
                return
            try:
                self._conn.send(finished)
            except (OSError, EOFError):
                raise
            except Exception:  # a result that cannot be pickled: nothing was written yet
                self._conn.send([_picklable(reply) for reply in finished])

    def _send_every(self) -> None:
        while True:
            with self._lock:
                while not self._finished:
                    self._lock.wait()
            time.sleep(SEND_EVERY)
            try:
                self.send()
            except OSError:  # the caller is gone: the main loop ends at its next read
                return


def _picklable(reply: tuple[bool, Any]) -> tuple[bool, Any]:
    try:
        pickle.dumps(reply)
    except Exception as exc:
        return (False, RuntimeError(f"{type(exc).__name__}: {exc}"))
    return reply


def _die_with_parent(every: float = 1.0) -> None:
    """A worker busy in a loop would not notice its socket closing, so a thread looks each
    second whether the process that started it is still there, and ends the worker if not."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _import_path() -> str:
    """Where this ``mailer`` was imported from comes first, so the worker runs the same code."""
    here = str(Path(__file__).resolve().parents[2])  # the folder that holds mailer/
    return os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])


def _limit_memory(extra: int) -> None:
    """Cap the address space at what the worker uses at rest plus ``extra``: a template that
    builds a huge string then meets MemoryError instead of taking the machine's memory."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[0])
    size = pages * resource.getpagesize() + extra
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        size = min(size, hard)
    resource.setrlimit(resource.RLIMIT_AS, (size, hard))
