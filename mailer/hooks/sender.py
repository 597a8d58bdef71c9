"""The webhook worker of `mailer run`: claims due deliveries, POSTs each, signed, to an
address it checked, and records what came back.

HTTP is spoken here with asyncio streams, one request per connection: a webhook needs only
the status line of the answer, and connecting to the very address that was checked (while
TLS still verifies the URL's host name) is what keeps a DNS change between the check and
the connection from reaching a private address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from mailer import __version__
from mailer.core.clock import Clock
from mailer.core.config import WebhookSettings
from mailer.core.errors import InvalidInput
from mailer.hooks import addresses, deliveries, signing
from mailer.hooks.addresses import Target

log = logging.getLogger("mailer.webhooks")

BATCH = 20  # deliveries claimed, and POSTed concurrently, at a time
IDLE_POLL = 5.0  # seconds an idle worker rests: events come from other processes too
MIN_REST = 0.1  # seconds: a row due but not claimable (locked elsewhere) is no busy loop
ANSWER_MAX = 8192  # bytes of an answer's status line read at most


class Unanswered(Exception):
    """The receiver did not answer with an HTTP status."""


class Unreachable(Unanswered):
    """No connection to this address: the host's next address may do."""


def request(target: Target, body: bytes, headers: dict[str, str]) -> bytes:
    """One HTTP/1.1 POST that asks the receiver to close the connection after answering."""
    lines = [
        f"POST {target.path} HTTP/1.1",
        f"Host: {target.host_header}",
        f"User-Agent: mailer-webhooks/{__version__}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def status_of(line: bytes) -> int:
    """The status code of an HTTP/1.x status line."""
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise Unanswered(f"not an HTTP answer: {line[:80]!r}")
    return int(parts[1])


async def post(target: Target, address: str, body: bytes, headers: dict[str, str]) -> int:
    """POST to ``address`` (already checked) and return the answer's status code."""
    tls = ssl.create_default_context() if target.scheme == "https" else None
    try:
        reader, writer = await asyncio.open_connection(
            address,
            target.port,
            ssl=tls,
            server_hostname=target.host if tls else None,
            limit=ANSWER_MAX,
        )
    except OSError as exc:
        raise Unreachable(f"cannot connect to {address} port {target.port}: {exc}") from exc
    try:
        writer.write(request(target, body, headers))
        await writer.drain()
        line = await reader.readline()
        while line.startswith(b"HTTP/1.1 1"):  # 100 Continue and the like precede the answer
            while (await reader.readline()).strip():
                pass
            line = await reader.readline()
        return status_of(line)
    except (OSError, ValueError) as exc:
        raise Unanswered(f"the connection failed: {exc}") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def post_to_any(
    target: Target, found: list[str], body: bytes, headers: dict[str, str]
) -> int:
    """Each checked address in turn until one takes the connection, as browsers do when a
    host has an IPv6 and an IPv4 address and only one of them works."""
    for address in found[:-1]:
        with contextlib.suppress(Unreachable):
            return await post(target, address, body, headers)
    return await post(target, found[-1], body, headers)


@dataclass(kw_only=True)
class Webhooks:
    """The worker. ``jitter`` draws in [0, 1): tests pass a fixed one."""

    engine: Engine
    clock: Clock
    settings: WebhookSettings
    jitter: Callable[[], float] = field(default=random.random)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def lease(self) -> timedelta:
        """Long enough for a POST with its DNS look-up and a slow database after it."""
        return timedelta(seconds=self.settings.timeout * 3 + 60)

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop``; a batch in flight is finished, or released if cancelled.
        A database that cannot be reached is waited out, not a reason to stop."""
        while not stop.is_set():
            self._wake.clear()  # an event recorded from now on is not missed
            try:
                if await self.deliver_due():
                    continue
                due = await asyncio.to_thread(deliveries.next_due, self.engine)
            except OperationalError as exc:
                log.warning("webhooks wait for the database: %s", exc.orig)
                due = None
            await self._rest(stop, due)

    async def _rest(self, stop: asyncio.Event, due: datetime | None) -> None:
        seconds = IDLE_POLL
        if due is not None:
            seconds = min(seconds, max(MIN_REST, (due - self.clock.now()).total_seconds()))
        waiters = {asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())}
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def deliver_due(self) -> int:
        """One batch: claim what is due, POST it all, record every attempt; how many tried."""
        now = self.clock.now()
        await asyncio.to_thread(deliveries.release_expired_leases, self.engine, now)
        claimed = await asyncio.to_thread(deliveries.claim, self.engine, now, BATCH, self.lease)
        if not claimed:
            return 0
        try:
            outcomes = await asyncio.gather(*(self._attempt(c) for c in claimed))
        except asyncio.CancelledError:
            await asyncio.to_thread(deliveries.release, self.engine, [c.id for c in claimed])
            raise
        await asyncio.to_thread(
            deliveries.record,
            self.engine,
            claimed,
            outcomes,
            self.settings.max_attempts,
            self.jitter,
        )
        return len(claimed)

    async def _attempt(self, claimed: deliveries.Claimed) -> deliveries.Outcome:
        started = self.clock.monotonic()
        body = json.dumps(claimed.payload, ensure_ascii=False, separators=(",", ":")).encode()
        stamp = int(self.clock.now().timestamp())
        headers = signing.headers(claimed.secret, claimed.event_id, stamp, body)
        code: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.settings.timeout):
                target = addresses.parse(claimed.url)
                found = await addresses.resolve_async(target, self.settings.allow_private)
                code = await post_to_any(target, found, body, headers)
        except InvalidInput as exc:
            error = "refused: " + "; ".join(p.message for p in exc.problems)
        except Unanswered as exc:
            error = str(exc)
        except TimeoutError:
            error = f"no answer within {self.settings.timeout:g} s"
        except Exception as exc:  # recorded on the delivery: one bad URL stops no batch
            log.exception("webhook %s to %s", claimed.event_id, claimed.url)
            error = f"unexpected error: {exc!r}"
        if error:
            log.warning("webhook %s to %s: %s", claimed.event_id, claimed.url, error)
        elapsed = max(0, round((self.clock.monotonic() - started) * 1000))
        return deliveries.Outcome(
            delivery_id=claimed.id,
            at=self.clock.now(),
            duration_ms=elapsed,
            status_code=code,
            error=error,
        )
