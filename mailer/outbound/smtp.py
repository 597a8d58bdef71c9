"""The SMTP edge: a small pool of reused aiosmtplib connections and what their errors mean."""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Protocol

import aiosmtplib
from aiosmtplib.email import quote_address
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
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(target.pool_size)
        self._rate = pacer or RateLimiter(target.rate_per_second, clock)

    async def send(self, sender: str, recipient: str, data: bytes) -> str:
        """The server's final reply; raises an aiosmtplib error or SmtpUnavailable."""
        async with self._slots:
            await self._rate.wait()
            client, reused = await self._client()
            try:
                reply = await _sendmail(client, sender, recipient, data)
            except aiosmtplib.SMTPServerDisconnected:
                if not reused:
                    raise
                # a connection that sat idle was closed by the server: once more on a new one
                client = await self._connect()
                reply = await _sendmail(client, sender, recipient, data)
            self._idle.append(client)
            return reply

    async def _client(self) -> tuple[aiosmtplib.SMTP, bool]:
        """An idle connection (reused=True) or a new one."""
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client, True
        return await self._connect(), False

    async def _connect(self) -> aiosmtplib.SMTP:
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
        return client

    async def probe(self) -> None:
        """Connect once (and keep the connection) to learn whether the server is back."""
        async with self._slots:
            client, _ = await self._client()
            self._idle.append(client)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except aiosmtplib.SMTPException:
                client.close()


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


async def _sendmail(client: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes) -> str:
    """One transaction; a connection that failed is closed, never handed out again.

    The commands are written here rather than by aiosmtplib's ``sendmail``, which parses
    both addresses with the email package four times a message (measured: a quarter of
    its time); plain addresses, what mailer sends to, go out as they are."""
    try:
        if client.is_ehlo_or_helo_needed:  # a new connection without TLS or login
            await _greet(client)
        size = wire_size(data)
        options = [b"SIZE=%d" % size] if client.supports_extension("size") else []
        reply = await client.execute_command(b"MAIL", b"FROM:" + _quoted(sender), *options)
        if reply.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
        reply = await client.execute_command(b"RCPT", b"TO:" + _quoted(recipient))
        if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            refused = aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
            raise aiosmtplib.SMTPRecipientsRefused([refused])
        return (await client.data(data)).message
    except BaseException:
        client.close()
        raise


def wire_size(data: bytes) -> int:
    """The octets DATA carries (RFC 1870 SIZE): each line ending sent as CRLF and a last one
    added, as aiosmtplib sends it; counted without the copy that converting would make."""
    pairs = data.count(b"\r\n")
    ended = data.endswith((b"\n", b"\r"))
    return len(data) + (data.count(b"\n") - pairs) + (data.count(b"\r") - pairs) + 2 * (not ended)


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO, or HELO for a server that knows no ESMTP: MAIL must come after one of them."""
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        if not client.is_connected:
            raise
        await client.helo()


def _quoted(address: str) -> bytes:
    """``<address>`` for MAIL and RCPT; anything but a plain address (a display name, odd
    characters) is parsed and checked by aiosmtplib, as its ``sendmail`` would."""
    if not address or _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>".encode("ascii")
    return quote_address(address).encode("ascii")
