"""The IMAP edge: one aioimaplib connection to one mailbox, behind a small interface.

The inbox watcher only needs five things: open (and learn UIDVALIDITY), fetch what came
after a UID, mark a message processed, wait for new mail, close. Everything aioimaplib
2.0.3 gets wrong is absorbed here:

- it never fails a pending command when the server goes away (an untagged BYE is ignored
  too), so every step races a connection-lost signal and a deadline, and any drop surfaces
  as :class:`MailboxUnavailable` instead of a hang;
- it has no STARTTLS, so the transport is upgraded in place (and never silently left plain);
- it drops ``EXISTS`` that arrives during most commands, so :meth:`Mailbox.wait_for_new`
  first asks the server for UIDs above the highest one seen before it starts to IDLE;
- its FETCH parsing is quadratic in the batch, so messages are fetched 100 at a time.

Mail is never deleted: "processed" is the keyword :data:`PROCESSED_KEYWORD` plus ``\\Seen``,
and ``move:FOLDER`` copies the message into FOLDER (created on demand) and flags the
original rather than moving it, because a MOVE expunges the original from the mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aioimaplib

from mailer.core.errors import MailerError

PROCESSED_KEYWORD = "$MailerProcessed"
PROCESSED_FLAGS = f"(\\Seen {PROCESSED_KEYWORD})"
IDLE_MAX_SECONDS = 28 * 60.0  # RFC 2177: a server may drop an IDLE after 30 minutes
LOGOUT_SECONDS = 2.0
SECURITY_MODES = ("tls", "starttls", "none")

_T = TypeVar("_T")
_UID_CODE = re.compile(rb"\bUID (\d+)")
_FETCH_HEAD = re.compile(rb"\d+ FETCH \(.*\{\d+\}$")


class MailboxUnavailable(MailerError, ConnectionError):
    """The IMAP server cannot be reached, refused us, or dropped the connection.

    The watcher's answer is always the same: close, back off, open again.
    """


@dataclass(frozen=True, slots=True)
class Fetched:
    """One message exactly as the server stores it."""

    uid: int
    raw: bytes


class Mailbox:
    """One connection to one mailbox; ``open()`` again after any :class:`MailboxUnavailable`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: str,
        username: str,
        password: str,
        mailbox: str = "INBOX",
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context`` defaults to the system trust store (tests pass their own CA)."""
        if security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {SECURITY_MODES}, not {security!r}")
        self._host, self._port, self._security = host, port, security
        self._username, self._password, self._mailbox = username, password, mailbox
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._client: Any = None
        self._lost: asyncio.Future[None] | None = None
        self._uidvalidity = 0
        self._highest_uid = 0
        self._keeps_keyword = False

    @property
    def name(self) -> str:
        """The mailbox selected, e.g. "INBOX": positions are kept per mailbox."""
        return self._mailbox

    @property
    def uidvalidity(self) -> int:
        """UIDVALIDITY from the last ``open()`` (0 before): a UID means nothing without it."""
        return self._uidvalidity

    @property
    def supports_idle(self) -> bool:
        """Whether ``wait_for_new`` IDLEs; if not, the watcher should pass its poll interval."""
        return self._client is not None and bool(self._client.has_capability("IDLE"))

    async def open(self) -> int:
        """Connect, secure, LOGIN and SELECT (read-write: EXAMINE leaves aioimaplib in AUTH)."""
        await self.close()
        try:
            client = self._connect()
            await self._call(client.wait_hello_from_server(), "connect")
            if self._security == "starttls":
                await self._starttls(client)
            await self._command(client.login(self._username, self._password), "LOGIN")
            # aioimaplib mangles the CAPABILITY that comes with the LOGIN reply: ask again
            await self._call(client.protocol.capability(), "CAPABILITY")
            selected = await self._command(client.select(self._mailbox), "SELECT")
        except BaseException:
            await self.close()
            raise
        self._uidvalidity = _response_code(selected.lines, "UIDVALIDITY")
        self._highest_uid = _response_code(selected.lines, "UIDNEXT", default=1) - 1
        self._keeps_keyword = _keeps_keyword(selected.lines)
        return self._uidvalidity

    async def fetch_after(self, last_uid: int, *, batch: int = 100) -> AsyncIterator[list[Fetched]]:
        """Every message with a UID above ``last_uid``, in UID order and in lists of at most
        ``batch``, without setting \\Seen: the caller commits and marks a whole list at once.

        UIDs are listed first and fetched by set, so gaps in the UID space cost nothing.
        """
        uids = await self._uids_after(last_uid)
        client = self._connected()
        for start in range(0, len(uids), batch):
            uid_set = uid_ranges(uids[start : start + batch])
            # no overall deadline: aioimaplib's own timer fails a FETCH that stops receiving
            fetch = client.uid("fetch", uid_set, "(UID BODY.PEEK[])")
            response = self._check(await self._race(fetch, "UID FETCH", None), "UID FETCH")
            if fetched := _parse_fetch(response.lines):
                yield fetched

    async def mark_processed(self, uids: Sequence[int], processed: str) -> None:
        """``flag``: add \\Seen and the keyword; ``move:FOLDER``: also copy into FOLDER first.

        One command for the whole list, whatever its size. The UIDs must come from
        ``fetch_after`` on this connection: Dovecot silently ignores a UID that the session
        has not seen yet.
        """
        if not uids:
            return
        uid_set = uid_ranges(uids)
        if processed.startswith("move:") and processed[5:]:
            await self._copy(uid_set, processed[5:])
        elif processed != "flag":
            raise ValueError(f"processed must be 'flag' or 'move:FOLDER', not {processed!r}")
        store = self._connected().uid("store", uid_set, "+FLAGS.SILENT", PROCESSED_FLAGS)
        await self._command(store, "UID STORE")

    async def wait_for_new(self, timeout: float) -> bool:
        """True as soon as mail newer than any UID seen arrives, False after ``timeout``.

        With IDLE (re-issued before RFC 2177's 29 minutes) the answer comes as the server
        pushes it; without, the mailbox is checked once now and once after ``timeout``.
        """
        if await self._has_new():
            return True
        if not self.supports_idle:
            await self._race(asyncio.sleep(timeout), "poll", timeout + 1)
            return await self._has_new()
        deadline = asyncio.get_running_loop().time() + timeout
        while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            if await self._idle(min(remaining, IDLE_MAX_SECONDS)):
                return True
        return False

    async def close(self) -> None:
        """LOGOUT politely if the connection is alive, then always release the socket."""
        client, self._client = self._client, None
        if client is None:
            return
        if self._lost is not None and not self._lost.done():
            if client.has_pending_idle():
                client.idle_done()
            with contextlib.suppress(MailboxUnavailable):
                await self._race(client.logout(), "LOGOUT", LOGOUT_SECONDS)
        _release(client)

    def _connect(self) -> Any:
        """Start the TCP (or implicit TLS) connection, wired to a connection-lost signal."""
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lost = lost

        def on_lost(_exc: Exception | None) -> None:
            if not lost.done():
                lost.set_result(None)

        self._client = aioimaplib.IMAP4(
            self._host,
            self._port,
            timeout=self._timeout,
            conn_lost_cb=on_lost,
            ssl_context=self._tls_context() if self._security == "tls" else None,
        )
        return self._client

    def _tls_context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    async def _starttls(self, client: Any) -> None:
        """aioimaplib has no STARTTLS: send it, then upgrade the transport in place.

        A server that does not offer it is refused: falling back to plain text would send
        the password in the clear.
        """
        protocol = client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise self._unavailable("STARTTLS", "the server does not offer STARTTLS")
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        await self._command(protocol.execute(command), "STARTTLS")
        upgrade = asyncio.get_running_loop().start_tls(
            protocol.transport, protocol, self._tls_context(), server_hostname=self._host
        )
        protocol.transport = await self._call(upgrade, "TLS handshake")
        await self._call(protocol.capability(), "CAPABILITY")  # RFC 3501: forget the old ones

    async def unmarked_up_to(self, last_uid: int) -> list[int]:
        """UIDs up to ``last_uid`` without our keyword: handled, but not yet marked, when the
        connection or the process ended between the commit and the STORE."""
        if last_uid < 1 or not self._keeps_keyword:
            return []  # a server that forgets our keyword would have us mark everything again
        client = self._connected()
        await self._command(client.noop(), "NOOP")
        search = client.uid_search("UID", f"1:{last_uid}", "UNKEYWORD", PROCESSED_KEYWORD)
        response = await self._command(search, "UID SEARCH")
        return sorted(uid for uid in _search_uids(response.lines) if uid <= last_uid)

    async def _uids_after(self, last_uid: int) -> list[int]:
        """UIDs above ``last_uid``; ``N:*`` always matches the highest UID, hence the filter.

        Dovecot answers a command from the session's view of the mailbox, which only catches
        up with other sessions' deliveries at a sync point: the NOOP is that sync.
        """
        client = self._connected()
        await self._command(client.noop(), "NOOP")
        search = client.uid_search("UID", f"{last_uid + 1}:*", charset=None)
        response = await self._command(search, "UID SEARCH")
        uids = sorted(_search_uids(response.lines))
        self._highest_uid = max([self._highest_uid, *uids])
        return [uid for uid in uids if uid > last_uid]

    async def _has_new(self) -> bool:
        return bool(await self._uids_after(self._highest_uid))

    async def _copy(self, uid_set: str, folder: str) -> None:
        """UID COPY, creating the folder when the server answers TRYCREATE (RFC 3501)."""
        client, target = self._connected(), aioimaplib.quoted(folder)
        response = await self._call(client.uid("copy", uid_set, target), "UID COPY")
        if response.result != "OK" and "TRYCREATE" in _text(response.lines):
            created = await self._call(client.create(target), f"CREATE {folder}")
            if created.result != "OK" and "ALREADYEXISTS" not in _text(created.lines):
                self._check(created, f"CREATE {folder}")
            response = await self._call(client.uid("copy", uid_set, target), "UID COPY")
        self._check(response, "UID COPY")

    async def _idle(self, seconds: float) -> bool:
        """One IDLE of at most ``seconds``: True when the server pushed EXISTS."""
        client = self._connected()
        _drain(client.protocol.idle_queue)  # lines left over from the previous IDLE
        idle = await self._call(client.idle_start(timeout=seconds + self._timeout), "IDLE")
        try:
            found = await self._race(_until_exists(client, seconds), "IDLE", None)
        except BaseException:
            idle.cancel()
            raise
        client.idle_done()
        await self._command(idle, "IDLE DONE")
        return found

    async def _command(self, step: Awaitable[Any], what: str) -> Any:
        """One IMAP command whose answer must be OK."""
        return self._check(await self._call(step, what), what)

    async def _call(self, step: Awaitable[_T], what: str) -> _T:
        return await self._race(step, what, self._timeout)

    async def _race(self, step: Awaitable[_T], what: str, limit: float | None) -> _T:
        """Await one IMAP step, giving up when the connection drops or ``limit`` passes."""
        task = asyncio.ensure_future(step)
        lost = self._lost
        waiting: set[asyncio.Future[Any]] = {task} if lost is None else {task, lost}
        try:
            await asyncio.wait(waiting, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
        if not task.done() or task.cancelled():
            dropped = lost is not None and lost.done()
            raise self._unavailable(
                what, "the server closed the connection" if dropped else f"no answer in {limit} s"
            )
        try:
            return task.result()
        except (OSError, aioimaplib.AioImapException) as exc:
            raise self._unavailable(what, str(exc) or type(exc).__name__) from exc

    def _connected(self) -> Any:
        if self._client is None:
            raise self._unavailable("use", "not open: call open() first")
        if self._lost is not None and self._lost.done():
            raise self._unavailable("use", "the connection was lost: open() again")
        return self._client

    def _check(self, response: Any, what: str) -> Any:
        """A NO or BAD answer is an error too, with the server's own words."""
        if response.result != "OK":
            raise self._unavailable(what, f"{response.result} {_text(response.lines)}")
        return response

    def _unavailable(self, what: str, why: str) -> MailboxUnavailable:
        where = f"IMAP {self._username}@{self._host}:{self._port}/{self._mailbox}"
        return MailboxUnavailable(f"{where}: {what} failed: {why}")


async def _until_exists(client: Any, seconds: float) -> bool:
    """Read IDLE pushes until one holds EXISTS; others (EXPUNGE, FETCH, keep-alives) wait on."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            lines = await client.wait_server_push(timeout=remaining)
        except TimeoutError:
            return False
        if any(isinstance(line, bytes) and line.endswith(b" EXISTS") for line in lines):
            return True
    return False


def uid_ranges(uids: Sequence[int]) -> str:
    """An IMAP sequence set with consecutive runs collapsed: [3, 4, 5, 9] -> "3:5,9"."""
    ordered = sorted(set(uids))
    runs: list[list[int]] = []
    for uid in ordered:
        if runs and uid == runs[-1][1] + 1:
            runs[-1][1] = uid
        else:
            runs.append([uid, uid])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in runs)


def _parse_fetch(lines: list[Any]) -> list[Fetched]:
    """aioimaplib gives ``N FETCH (UID u BODY[] {size}``, the literal, then the rest."""
    found = []
    for index, head in enumerate(lines[:-1]):
        body = lines[index + 1]
        if type(head) is bytes and _FETCH_HEAD.match(head) and isinstance(body, bytearray):
            tail = lines[index + 2] if index + 2 < len(lines) else b""
            match = _UID_CODE.search(head) or _UID_CODE.search(bytes(tail))
            if match:
                found.append(Fetched(int(match[1]), bytes(body)))
    return sorted(found, key=lambda fetched: fetched.uid)


def _search_uids(lines: Iterable[Any]) -> list[int]:
    """The ``* SEARCH`` line arrives as bare numbers; the status line is not one."""
    for line in lines:
        if isinstance(line, bytes) and re.fullmatch(rb"[\d ]+", line):
            return [int(uid) for uid in line.split()]
    return []


def _keeps_keyword(lines: Iterable[Any]) -> bool:
    """Whether SELECT's PERMANENTFLAGS (RFC 3501) let our keyword outlive the session."""
    for line in lines:
        found = re.search(rb"\[PERMANENTFLAGS \(([^)]*)\)\]", line)
        if found:
            flags = found[1].split()
            return b"\\*" in flags or PROCESSED_KEYWORD.encode() in flags
    return False


def _response_code(lines: Iterable[Any], code: str, default: int = 0) -> int:
    for line in lines:
        match = re.search(rf"\[{code} (\d+)\]".encode(), line)
        if match:
            return int(match[1])
    return default


def _text(lines: list[Any]) -> str:
    return bytes(lines[-1]).decode(errors="replace") if lines else ""


def _drain(queue: asyncio.Queue[Any]) -> None:
    while not queue.empty():
        queue.get_nowait()


def _release(client: Any) -> None:
    """Close the socket and whatever aioimaplib left pending, so nothing leaks."""
    client._client_task.cancel()  # still connecting when open() gave up
    transport = client.protocol.transport
    if transport is not None:
        transport.close()
    for task in (*client.tasks, *client.protocol.tasks):
        task.cancel()
