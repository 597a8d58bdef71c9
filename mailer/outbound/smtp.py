"""The SMTP edge: a small pool of reused connections (made by aiosmtplib, messages pipelined
when the server allows it) and what their errors mean."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import struct
import sys
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import NamedTuple, Protocol, cast

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import normalize_message_line_endings
from aiosmtplib.response import SMTPResponse
from aiosmtplib.status import SMTPStatus

from mailer.core.categories import Category
from mailer.core.clock import Clock
from mailer.core.config import Config, SmtpSettings
from mailer.core.errors import MailerError, SmtpUnavailable

DEFAULT_RELAY = "smtp"  # the name of the relay [smtp] describes
RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=1)
# an addr-spec of printable ASCII without the characters that need parsing or quoting
_ATOM = r'[^\x00-\x20\x7f-\U0010ffff<>()\[\],;:\\"@]+'
_PLAIN_ADDRESS = re.compile(f"{_ATOM}@{_ATOM}")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_CLOSING = SMTPStatus.domain_unavailable  # 421: the server is closing the connection
# the relay is at fault, not the message: it cannot be reached, or it refuses our login
RELAY_FAULTS = (SmtpUnavailable, aiosmtplib.SMTPAuthenticationError)


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpTarget:
    """One relay: where it is, how much it takes, and which mail it carries (see relays)."""

    host: str
    port: int
    security: str = "none"
    username: str = ""
    password: str = ""
    timeout: float = 30.0
    pool_size: int = 4
    rate_per_second: float = 0.0
    name: str = DEFAULT_RELAY
    priority: int = 1
    weight: int = 1
    categories: frozenset[str] = frozenset(Category)

    @classmethod
    def from_config(cls, cfg: Config, *, sandbox: bool) -> SmtpTarget:
        """The configured server, or the local sandbox server when it is on."""
        smtp = cfg.settings.smtp
        if sandbox:
            port = cfg.settings.sandbox.smtp_port
            return cls(
                host="127.0.0.1",
                port=port,
                pool_size=smtp.pool_size,
                rate_per_second=smtp.rate_per_second,
            )
        return cls.of(DEFAULT_RELAY, smtp, cfg.secret("smtp", "password_env"))

    @classmethod
    def of(cls, name: str, relay: SmtpSettings, password: str) -> SmtpTarget:
        return cls(
            host=relay.host,
            port=relay.port,
            security=relay.security,
            username=relay.username,
            password=password,
            timeout=relay.timeout.total_seconds(),
            pool_size=relay.pool_size,
            rate_per_second=relay.rate_per_second,
            name=name,
            priority=relay.priority,
            weight=relay.weight,
            categories=frozenset(relay.categories),
        )

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class Failure(StrEnum):
    """How an SMTP error ends for the message."""

    RETRY = "retry"  # later, with backoff
    FAILED = "failed"  # for good
    OUTAGE = "outage"  # the server is unreachable: wait it out, the message is not at fault


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What an SMTP error means for the message: try again later, give up, or wait out an outage."""

    result: Failure
    code: int | None
    reply: str


def classify(exc: BaseException) -> Diagnosis:
    """4xx, timeouts and dropped connections are temporary; 5xx is final, except 552, which
    RFC 5321 (4.5.3.1.10) says to treat as temporary because old servers sent it for 452."""
    if isinstance(exc, SmtpUnavailable):
        return Diagnosis(Failure.OUTAGE, None, str(exc))
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        code, reply = exc.code, f"{exc.code} {exc.message}"
        permanent = 500 <= code < 600 and code != 552
        return Diagnosis(Failure.FAILED if permanent else Failure.RETRY, code, reply)
    return Diagnosis(Failure.RETRY, None, f"{type(exc).__name__}: {exc}".rstrip(": "))


def backoff(attempts: int, rng: random.Random) -> timedelta:
    """Exponential, capped, with jitter so a burst of failures does not come back as a burst."""
    delay: timedelta = min(RETRY_BASE * 2 ** max(attempts - 1, 0), RETRY_CAP)
    return delay * rng.uniform(0.75, 1.25)


class Pacer(Protocol):
    """What spaces sends out: this process's own limit, or one shared by every process
    (mailer.outbound.rates.SharedRate)."""

    async def wait(self) -> None: ...


class RateLimiter:
    """At most ``rate`` sends a second on average in this process; waiting callers queue,
    none is refused."""

    def __init__(self, rate: float, clock: Clock) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._next = float("-inf")  # when the next send may start

    def reserve(self) -> float:
        """Take the next free slot; the seconds until it comes (0 when it is now). Nothing
        awaits in between, so callers in one event loop can never take the same slot."""
        if not self._interval:
            return 0.0
        now = self._clock.monotonic()
        start = max(now, self._next)
        self._next = start + self._interval
        return start - now

    async def wait(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


class SmtpPool:
    """Up to ``pool_size`` open connections, each used by one send at a time and kept open."""

    def __init__(self, target: SmtpTarget, clock: Clock, pacer: Pacer | None = None) -> None:
        self.target = target
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(target.pool_size)
        self._rate = pacer or RateLimiter(target.rate_per_second, clock)

    async def send(self, sender: str, recipient: str, data: bytes) -> str:
        """The server's final reply; raises an aiosmtplib error or SmtpUnavailable."""
        async with self._slots:
            await self._rate.wait()
            connection, reused = await self._connection()
            try:
                return await connection.send(sender, recipient, data)
            except aiosmtplib.SMTPServerDisconnected:
                if not reused:
                    raise
                # a connection that sat idle was closed by the server: once more on a new one
                connection = await self._connect()
                return await connection.send(sender, recipient, data)
            finally:
                if connection.is_open:  # it sent the message, or was reset after a refusal
                    self._idle.append(connection)

    async def _connection(self) -> tuple[_Connection, bool]:
        """An idle connection (reused=True) or a new one."""
        while self._idle:
            connection = self._idle.pop()
            if connection.is_open:
                return connection, True
            connection.close()  # failed, or the server spoke out of turn while it was idle
        return await self._connect(), False

    async def _connect(self) -> _Connection:
        """A connection greeted, and in TLS and signed in when the target asks, by
        aiosmtplib; its messages then go through ``_Connection``."""
        client = aiosmtplib.SMTP(
            hostname=self.target.host,
            port=self.target.port,
            use_tls=self.target.security == "tls",
            start_tls=self.target.security == "starttls",
            username=self.target.username or None,
            password=self.target.password or None,
            timeout=self.target.timeout,
        )
        try:
            await client.connect()
        except (OSError, aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError) as exc:
            raise SmtpUnavailable(f"cannot connect to {self.target}: {exc}") from exc
        try:
            if client.is_ehlo_or_helo_needed:  # a new connection without TLS or login
                await _greet(client)
            return _Connection.taken_from(client, self.target.timeout)
        except BaseException:
            client.close()
            raise

    async def probe(self) -> None:
        """Connect once (and keep the connection) to learn whether the server is back."""
        async with self._slots:
            connection, _ = await self._connection()
            self._idle.append(connection)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.quit()


async def send_one(
    target: SmtpTarget, clock: Clock, sender: str, recipient: str, data: bytes
) -> str:
    """One message on a connection of its own, for a command that sends once and exits.

    Raises SmtpUnavailable when the server cannot be reached, MailerError when it refuses."""
    pool = SmtpPool(target, clock)
    try:
        return await pool.send(sender, recipient, data)
    except aiosmtplib.SMTPException as exc:
        raise MailerError(f"{target} did not take the message: {classify(exc).reply}") from None
    finally:
        await pool.close()


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO, or HELO for a server that knows no ESMTP: MAIL must come after one of them."""
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        if not client.is_connected:
            raise
        await client.helo()


# a reply's lines may be long (RFC 5321 allows 512 octets; servers write more); a server
# that sends more than this without ending a reply is cut off
_LONGEST_REPLY = 32_768


class _Replies(asyncio.Protocol):
    """A connection's replies once aiosmtplib has greeted the server: each parsed as it
    arrives and kept in order. aiosmtplib keeps one reply at a time and drops what arrives
    while it waits to be read, so it cannot pipeline (RFC 2920), where the replies to MAIL,
    RCPT and DATA, written at once, come back at once."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.error: aiosmtplib.SMTPException | None = None  # the connection is unusable
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        # what the server had acknowledged when last looked at: only a wait that runs out
        # looks again (a look is a system call, and most waits end in microseconds)
        self._seen = _acks(transport)
        transport.set_protocol(self)

    def data_received(self, data: bytes) -> None:
        if self.error is not None:  # a connection that failed is not read any further
            return
        self._buffer += data
        try:
            while (reply := self._parse()) is not None:
                self._replies.append(reply)
            if len(self._buffer) > _LONGEST_REPLY:
                raise _invalid("Response too long")
        except aiosmtplib.SMTPResponseException as exc:
            self._buffer.clear()
            self.transport.close()  # a server that breaks the protocol is not listened to
            self._fail(exc)
        self._wake()

    @property
    def pending(self) -> bool:
        """Whether replies have come that nobody has read yet."""
        return bool(self._replies)

    def _parse(self) -> SMTPResponse | None:
        """The first whole reply in the buffer, taken out of it; None until one has come."""
        lines: list[bytes] = []
        offset = 0
        while (end := self._buffer.find(b"\n", offset)) != -1:
            line = bytes(self._buffer[offset : end + 1])
            offset = end + 1
            code = line[:3]
            if not code.isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
                text = line.decode("utf-8", "replace").strip()
                raise _invalid(f"Malformed SMTP response line: {text}")
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                del self._buffer[:offset]
                return SMTPResponse(int(code), b"\n".join(lines).decode("utf-8", "surrogateescape"))
        return None

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        lost = aiosmtplib.SMTPServerDisconnected("Connection lost")
        lost.__cause__ = exc
        self._fail(lost)

    def _fail(self, error: aiosmtplib.SMTPException) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next(self, timeout: float) -> SMTPResponse:
        """The next reply, in the order the commands went; the connection's failure once
        every reply that came before it has been read. The wait times out ``timeout`` after
        the server last acknowledged what was written: a large message on a slow uplink may
        take minutes to reach the server, which cannot answer before it has all of it."""
        loop = asyncio.get_running_loop()
        while not self._replies:
            if self.error is not None:
                raise self.error
            waiter = self._waiter = loop.create_future()
            self._timer = loop.call_later(timeout, self._expire, waiter, timeout)
            try:
                await waiter
            finally:
                self._timer.cancel()
                self._waiter = None
        return self._replies.popleft()

    def _expire(self, waiter: asyncio.Future[None], timeout: float) -> None:
        """Time out the wait, unless the server has acknowledged more since the last look:
        then it runs on until ``timeout`` after that acknowledgement."""
        if waiter.done():
            return
        acks, seen = _acks(self.transport), self._seen
        self._seen = acks
        if (left := _time_left(seen, acks, timeout)) > 0:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(left, self._expire, waiter, timeout)
            return
        waiter.set_exception(
            aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response")
        )


class _Acks(NamedTuple):
    """What the server has acknowledged of a connection, as TCP tells it."""

    octets: int
    seconds_since: float  # since the last acknowledgement came


def _time_left(seen: _Acks | None, acks: _Acks | None, timeout: float) -> float:
    """The seconds a wait whose timer ran out may go on: until ``timeout`` after the last
    acknowledgement, when the server has acknowledged more since ``seen`` (a command's own
    octets, acknowledged at once, give a few milliseconds at most: their acknowledgement
    is as old as the wait); else none. A server that stopped reading acknowledges no more
    octets, only window probes, and times out."""
    if seen is None or acks is None or acks.octets <= seen.octets:
        return 0.0
    return timeout - acks.seconds_since


# Linux's struct tcp_info (linux/tcp.h), whose fields are only ever added at its end:
# tcpi_last_ack_recv (ms) at offset 56, tcpi_bytes_acked at 120 (since Linux 4.1)
_TCP_INFO = struct.Struct("=56xI60xQ")


def _acks(transport: asyncio.BaseTransport) -> _Acks | None:
    """The server's acknowledgements on the connection's socket, counted by the kernel
    below every buffer (TLS keeps its own, which the transport does not report); None
    where the system does not tell, and the wait then times out at its timeout. Only Linux's
    layout is read: the BSDs name a different struct TCP_INFO too. A closed socket says
    nothing (uvloop's has no descriptor left: ValueError)."""
    if sys.platform != "linux":
        return None
    sock = transport.get_extra_info("socket")
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
    except (AttributeError, OSError, ValueError):
        return None
    if len(info) < _TCP_INFO.size:
        return None
    last_ack_ms, octets = _TCP_INFO.unpack(info)
    return _Acks(octets, last_ack_ms / 1000)


def _invalid(text: str) -> aiosmtplib.SMTPResponseException:
    return aiosmtplib.SMTPResponseException(SMTPStatus.invalid_response, text)


@dataclass(eq=False, kw_only=True)
class _Connection:
    """One open connection to the relay, for one message at a time. With PIPELINING
    (RFC 2920) MAIL, RCPT and DATA go in one write and the content in a second: two round
    trips a message instead of four, which is what a relay far away limits a connection
    to. The content is written as compose made it (CRLF lines) with dots doubled, without
    aiosmtplib's regular expressions over every line (a third of its send)."""

    replies: _Replies
    timeout: float
    pipelining: bool
    size: bool
    _owed: int = field(default=0, init=False)  # replies to commands written, not yet read

    @classmethod
    def taken_from(cls, client: aiosmtplib.SMTP, timeout: float) -> _Connection:
        """The connection aiosmtplib made, greeted: its transport, from now on read here."""
        transport = cast(asyncio.Transport, client.transport)  # uvloop's is no subclass
        return cls(
            replies=_Replies(transport),
            timeout=timeout,
            pipelining=client.supports_extension("pipelining"),
            size=client.supports_extension("size"),
        )

    @property
    def is_open(self) -> bool:
        """Fit for a new transaction: not failed, not closing, and no reply waiting that no
        command asked for (a 421 a server sends before closing an idle connection would
        otherwise be read as the next MAIL's reply)."""
        replies = self.replies
        return replies.error is None and not replies.transport.is_closing() and not replies.pending

    async def send(self, sender: str, recipient: str, data: bytes) -> str:
        """One transaction: the server's final reply, or aiosmtplib's error for the step
        it refused. After a refusal the connection is reset for the next message; one that
        failed otherwise is closed, never handed out again."""
        try:
            octets, content = _content(data)
            size = b" SIZE=%d" % octets if self.size else b""
            mail = b"MAIL FROM:" + _quoted(sender) + size + b"\r\n"
            rcpt = b"RCPT TO:" + _quoted(recipient) + b"\r\n"
            if self.pipelining:
                self._ask(mail, rcpt, b"DATA\r\n")
            reply = await self._reply(b"" if self.pipelining else mail)
            if reply.code != SMTPStatus.completed:
                raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
            reply = await self._reply(b"" if self.pipelining else rcpt)
            if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
                refused = aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
                raise aiosmtplib.SMTPRecipientsRefused([refused])
            reply = await self._reply(b"" if self.pipelining else b"DATA\r\n")
            if reply.code != SMTPStatus.start_input:
                raise aiosmtplib.SMTPDataError(reply.code, reply.message)
            reply = await self._reply(content)
            if reply.code != SMTPStatus.completed:
                raise aiosmtplib.SMTPDataError(reply.code, reply.message)
            return reply.message
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as refusal:
            await self._reset(refusal)
            raise
        except BaseException:
            self.close()
            raise

    async def _reset(self, refusal: aiosmtplib.SMTPException) -> None:
        """After a refusal: the replies to commands written ahead read, then RSET, so that
        the next message need not open, greet, secure and sign in to a new connection (a
        campaign meets many unknown recipients). Closed instead when the server is closing
        (421) or broke the protocol, when it answered DATA with 354 though it refused the
        transaction (it waits for content that will not come), or when RSET fails."""
        kept = False
        try:
            if classify(refusal).code not in (_CLOSING, SMTPStatus.invalid_response):
                owed = [(await self._reply()).code for _ in range(self._owed)]
                if SMTPStatus.start_input not in owed:
                    kept = (await self._reply(b"RSET\r\n")).code == SMTPStatus.completed
        except aiosmtplib.SMTPException:
            pass  # closed below
        finally:  # also when cancelled: replies still owed would answer the next message
            if not kept:
                self.close()

    def _ask(self, *commands: bytes) -> None:
        """Write ``commands`` at once; each is owed a reply."""
        self._write(b"".join(commands))
        self._owed += len(commands)

    async def _reply(self, command: bytes = b"") -> SMTPResponse:
        """The next reply, after writing ``command`` (nothing when it went ahead)."""
        if command:
            self._ask(command)
        reply = await self.replies.next(self.timeout)
        self._owed -= 1
        return reply

    def _write(self, data: bytes) -> None:
        if not self.is_open:
            raise self.replies.error or aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.replies.transport.write(data)

    async def quit(self) -> None:
        """QUIT, its reply awaited for a moment, then closed whatever the server does."""
        try:
            await self._reply(b"QUIT\r\n")
        except aiosmtplib.SMTPException:
            pass  # closed below either way
        finally:
            self.close()

    def close(self) -> None:
        self.replies.transport.close()


def _content(data: bytes) -> tuple[int, bytes]:
    """The message's size (RFC 1870 SIZE: its octets as sent, without the dots added below)
    and what goes after DATA: every line ending CRLF, the last line ended, a dot that begins
    a line doubled (RFC 5321 4.5.2), and the line with one dot. compose writes CRLF, so the
    conversion (a regular expression over every line) runs only for content that needs it."""
    pairs = data.count(b"\r\n")
    if data.count(b"\n") != pairs or data.count(b"\r") != pairs:
        data = normalize_message_line_endings(data)
    elif not data.endswith(b"\r\n"):
        data += b"\r\n"
    size = len(data)
    if data.startswith(b"."):
        data = b"." + data
    return size, data.replace(b"\n.", b"\n..") + b".\r\n"


def _quoted(address: str) -> bytes:
    """``<address>`` for MAIL and RCPT; anything but a plain address (a display name, odd
    characters) is parsed by aiosmtplib, as its ``sendmail`` would, and refused with a
    control character in it, as its commands are."""
    if not address or _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>".encode("ascii")
    quoted = quote_address(address).encode("ascii")
    if _CONTROL.search(quoted):  # a line break would end the command and start another
        raise ValueError("Command arg contains a prohibited control character")
    return quoted
