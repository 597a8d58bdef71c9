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
import mmap
import os
import queue
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any, TypeVar

from mailer.core.errors import Problem, RenderTimeout, TemplateError

__all__ = ["Limits", "RenderPool", "install", "main", "shared"]
T = TypeVar("T")
STARTUP_SECONDS = 30.0  # a new worker's imports, on a busy machine
# A call's result as a worker sends it back: its place in the batch, whether it returned
# (else ``value`` is what it raised), the value, and the seconds it took.
_Reply = tuple[int, bool, Any, float]
# A worker sends the results it has finished at least this often (see ``_Replies``); the
# caller's wait for the next ones allows twice this for it.
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
        progress_fd = _Progress.new_file()
        try:
            self._progress = _Progress(progress_fd)
            command = (
                "from mailer.outbound.renderpool import *; "
                f"main({theirs.fileno()}, {progress_fd}, {limits!r})"
            )
            self.process = subprocess.Popen(
                [sys.executable, "-P", "-c", command],  # -P: a mailer/ in the cwd is not ours
                pass_fds=[theirs.fileno(), progress_fd],
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C at a terminal is for the daemon: it stops us
                env={**os.environ, "PYTHONPATH": _import_path()},
            )
        except BaseException:
            ours.close()
            raise
        finally:
            os.close(progress_fd)  # the map holds its own descriptor
            theirs.close()
        self.stopped_in: int | None = None  # the call it was in when it was stopped or died
        self.late: list[_Reply] = []  # results that came after the caller gave up waiting
        self._stopping = threading.Lock()  # the pool's close() may stop it from another thread
        self.conn = Connection(ours.detach())
        # multiprocessing's own poll builds a selector on every call (16 us), and delivery
        # waits for a group of replies every few milliseconds
        self._replies = select.poll()
        self._replies.register(self.conn.fileno(), select.POLLIN)
        self._received: deque[_Reply] = deque()  # results come in groups
        self.started = False

    def _wait(self, seconds: float) -> bool:
        """Whether a reply (or the end of the worker) came within ``seconds``."""
        return bool(self._replies.poll(seconds * 1000))

    def send(self, where: str, work: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> None:
        """Start ``work(*args)`` for each of ``calls`` there, one after the other; each result
        is read back with ``reply``."""
        try:
            self._ready(where)
            self.conn.send((work, list(calls)))
        except (EOFError, OSError):
            raise self._stopped(where) from None

    def reply(self, where: str, limits: Limits, position: int) -> Any:
        """The result of the batch's call at ``position``, or the exception it raised
        (returned, not raised); kill the worker (and raise) when no result came in time: see
        ``stopped_in`` for the call that overran."""
        try:
            if not self._received:
                if not self._wait(limits.seconds + 2 * SEND_EVERY):
                    self.stop()
                    raise RenderTimeout(Problem(where, limits.describe_timeout()))
                self._received.extend(self.conn.recv())
            answered, _, value, _ = self._received.popleft()
        except (EOFError, OSError):
            raise self._stopped(where) from None
        if answered != position:  # never expected; a wrong one would go to another customer
            self.stop()
            raise TemplateError(Problem(where, "the renderer answered out of turn"))
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
        """Kill the worker; keep the call it was in and the results it sent meanwhile."""
        with self._stopping:
            if self.alive():
                self.process.kill()
            code = self.process.wait()
            if not self._progress.closed:  # read once the process is gone: it stays put
                self.stopped_in = self._progress.read()
                self._progress.close()
                self.late = self._unread()
            self.conn.close()
            return code

    def _unread(self) -> list[_Reply]:
        """The whole groups of results still in the socket of a worker that has ended."""
        unread: list[_Reply] = []
        try:
            while self._wait(0):
                unread += self.conn.recv()
        except (EOFError, OSError):  # its end, or a group it did not finish writing
            pass
        return unread


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
        not tried again for the rest of its ``where`` after it (they fail at once with its
        error: each would take the whole limit again); the other calls, and those before it
        whose results had not come back, go on in a new worker."""
        results: dict[int, T | Exception] = {}
        overran: dict[str, tuple[int, TemplateError]] = {}  # by where: the call, its error
        while todo := [i for i in range(len(calls)) if i not in results]:
            for i in todo:
                culprit = overran.get(calls[i][0])
                if culprit is not None and i > culprit[0]:
                    results[i] = culprit[1]
            todo = [i for i in todo if i not in results]
            if todo:
                self._run(work, [(i, *calls[i]) for i in todo], results, overran)
        return [results[i] for i in range(len(calls))]

    def _run(
        self,
        work: Callable[..., T],
        calls: list[tuple[int, str, tuple[Any, ...]]],
        results: dict[int, T | Exception],
        overran: dict[str, tuple[int, TemplateError]],
    ) -> None:
        """As many of ``calls`` as one worker gets through before one overruns or it stops."""
        worker = self._idle.get()
        read = 0
        try:
            if worker is not None and not worker.alive():
                worker.stop()  # it ended while idle: its descriptors are let go
            if worker is None or not worker.alive():
                worker = self._start()
            worker.send(calls[0][1], work, [args for _, _, args in calls])
            for position, (i, where, _) in enumerate(calls):
                try:
                    results[i] = worker.reply(where, self.limits, position)
                except TemplateError as exc:  # it overran or died: the rest go to a new one
                    _settle(exc, calls, position, worker, self.limits, results, overran)
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


def _settle(
    error: TemplateError,
    calls: list[tuple[int, str, tuple[Any, ...]]],
    position: int,
    worker: _Worker,
    limits: Limits,
    results: dict[int, Any],
    overran: dict[str, tuple[int, TemplateError]],
) -> None:
    """A worker overran or ended while the caller waited for the call at ``position``.
    Results it sent meanwhile stand; the call at fault is the one that took the whole
    limit (it may have finished just as the caller gave up), else the one it was in. A
    worker found between calls faults nobody's template: the first call without a result
    gets the error, without failing its template's others. The calls left without a result
    go to a new worker."""
    culprit = None
    for answered, _, value, took in worker.late:
        slow = isinstance(error, RenderTimeout) and took >= limits.seconds
        if slow and culprit is None:
            culprit = answered
        else:
            results[calls[answered][0]] = value
    if culprit is None and worker.stopped_in is not None and worker.stopped_in >= position:
        culprit = worker.stopped_in
    if culprit is None:
        i, where, _ = calls[position]
        results[i] = TemplateError(Problem(where, error.problem.message))
        return
    i, where, _ = calls[culprit]
    charged = type(error)(Problem(where, error.problem.message))
    results[i] = charged
    if isinstance(charged, RenderTimeout):
        overran[where] = (i, charged)


class _Progress:
    """Which call of its batch a worker is in, in a few bytes of memory both processes map:
    the daemon reads it when the worker overran or died, so that the call at fault is
    charged, not the first one whose result had not been sent yet (see ``_Replies``)."""

    _SLOT = struct.Struct("=q")
    BETWEEN_CALLS = -1

    def __init__(self, fd: int) -> None:
        self._memory = mmap.mmap(fd, self._SLOT.size)  # with a descriptor of its own

    @classmethod
    def new_file(cls) -> int:
        """A file of its own for one worker, written through (not only mapped), so that no
        room left surfaces here as an OSError rather than as SIGBUS at the first store."""
        if hasattr(os, "memfd_create"):  # Linux: in memory, in no folder
            fd = os.memfd_create("mailer-render-progress")
        else:
            fd, path = tempfile.mkstemp(prefix="mailer-render-")
            os.unlink(path)
        try:
            os.pwrite(fd, cls._SLOT.pack(cls.BETWEEN_CALLS), 0)
        except OSError:
            os.close(fd)
            raise
        return fd

    @property
    def closed(self) -> bool:
        return self._memory.closed

    def write(self, position: int) -> None:
        self._SLOT.pack_into(self._memory, 0, position)

    def read(self) -> int | None:
        (position,) = self._SLOT.unpack_from(self._memory, 0)
        return None if position == self.BETWEEN_CALLS else int(position)

    def close(self) -> None:
        self._memory.close()


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


def main(fd: int, progress_fd: int, limits: Limits) -> None:
    """The worker's loop: one call at a time until the socket closes."""
    global OUTPUT_LIMIT
    OUTPUT_LIMIT = limits.output
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    # imported now, not inside the first call's time; composing and signing are done here too
    import mailer.outbound.dkim
    import mailer.outbound.finishing
    import mailer.outbound.templates  # noqa: F401

    conn = Connection(fd)
    progress = _Progress(progress_fd)
    replies = _Replies(conn)
    _limit_memory(limits.memory)
    conn.send("ready")
    while True:
        try:
            work, calls = conn.recv()
        except EOFError:
            return
        for position, args in enumerate(calls):
            progress.write(position)
            started = time.monotonic()
            try:
                done, value = True, work(*args)
            except Exception as exc:  # the caller decides what each error means
                done, value = False, exc
            progress.write(_Progress.BETWEEN_CALLS)
            replies.add((position, done, value, time.monotonic() - started))
        replies.send()


class _Replies:
    """Results go back in groups: one message a result cost the two processes 10-12 us of
    CPU and a wakeup each, a tenth of a small newsletter's rendering. A group goes when the
    oldest result in it has waited ``SEND_EVERY``, after any call that took that long itself,
    and at the end of the batch, so a call starts at most twice ``SEND_EVERY`` after the
    last group went: the caller, waiting its time limit plus that for the next group, never
    stops a call that has had less than the limit. Everything is sent from the one thread
    that runs the calls, so a call that never ends cannot hold a group half written, and a
    failed send ends the worker (the caller sees it end) instead of losing results."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._finished: list[_Reply] = []
        self._since = 0.0  # when the oldest result not yet sent was finished

    def add(self, reply: _Reply) -> None:
        now = time.monotonic()
        if not self._finished:
            self._since = now
        self._finished.append(reply)
        if reply[3] >= SEND_EVERY or now - self._since >= SEND_EVERY:
            self.send()

    def send(self) -> None:
        """Every finished result, now; one that cannot be pickled comes back as an error."""
        finished, self._finished = self._finished, []
        if not finished:
            return
        try:
            data = ForkingPickler.dumps(finished)
        except Exception:
            data = ForkingPickler.dumps([_picklable(reply) for reply in finished])
        self._conn.send_bytes(data)


def _picklable(reply: _Reply) -> _Reply:
    try:
        ForkingPickler.dumps(reply)
    except Exception as exc:
        return (reply[0], False, RuntimeError(f"{type(exc).__name__}: {exc}"), reply[3])
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
