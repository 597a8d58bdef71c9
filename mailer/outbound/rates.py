"""The SMTP rate (``[smtp] rate_per_second``) shared by every delivery process on one
database, so four workers on four machines send no faster than one would.

The bucket is one row holding the time its next free slot starts (a token bucket kept as
its virtual schedule, no burst: a quiet spell earns none, as with the local limit). A
process takes a block of slots, about a quarter of a second's worth, with one atomic
``UPDATE ... RETURNING``, then spaces its sends over that block itself: a few statements a
second per process whatever the rate, never one per message. Slots a process took but did
not use before their time passed are dropped, never sent as a burst later; so the global
rate is never exceeded, and at most a quarter of a second per process is lost when a
process stops or runs dry. Processes must agree on the time (NTP), as they must for leases.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy import Engine, Table, bindparam, case, literal, update
from sqlalchemy.dialects import postgresql, sqlite

from mailer.core.clock import Clock
from mailer.outbound.smtp import DEFAULT_RELAY, SmtpTarget
from mailer.store.models import RateBucket

BUCKETS: Table = RateBucket.__table__  # type: ignore[attr-defined]
BLOCK_SECONDS = 0.25  # how much of the rate one round trip takes


def take(engine: Engine, name: str, slots: int, rate: float, now: float) -> float:
    """Reserve the next ``slots`` slots of bucket ``name`` at ``rate`` a second; returns when
    the first starts (seconds since the epoch); the others follow every 1/rate seconds."""
    free_at = BUCKETS.c.free_at
    start = case((free_at > bindparam("now"), free_at), else_=bindparam("now"))
    statement = (
        update(BUCKETS)
        .where(BUCKETS.c.name == name)
        .values(free_at=start + literal(slots / rate))
        .returning(BUCKETS.c.free_at)
    )
    with engine.begin() as conn:
        ends = conn.execute(statement, {"now": now}).scalar_one_or_none()
        if ends is None:  # the bucket's first use: create it, then take as anyone would
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            create = dialect.insert(BUCKETS).values(name=name, free_at=now)
            conn.execute(create.on_conflict_do_nothing(index_elements=["name"]))
            ends = conn.execute(statement, {"now": now}).scalar_one()
    return float(ends) - slots / rate


@dataclass(kw_only=True)
class SharedRate:
    """Paces one process's sends by slots taken from the shared bucket (see ``take``); the
    same ``wait`` as the local ``smtp.RateLimiter``, for ``SmtpPool``."""

    engine: Engine
    name: str
    rate: float
    clock: Clock
    _next: float = 0.0  # the start of the next slot this process holds
    _left: int = 0  # slots held, from _next on
    _taking: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def block(self) -> int:
        return max(1, round(self.rate * BLOCK_SECONDS))

    async def wait(self) -> None:
        async with self._taking:  # one round trip at a time; the others wait for its block
            now = self.clock.now().timestamp()
            if self._left == 0 or self._next < now - 1 / self.rate:  # none held, or stale
                self._next = await asyncio.to_thread(
                    take, self.engine, self.name, self.block, self.rate, now
                )
                self._left = self.block
            slot = self._next
            self._next += 1 / self.rate
            self._left -= 1
        delay = slot - self.clock.now().timestamp()
        if delay > 0:
            await asyncio.sleep(delay)


def shared(engine: Engine, target: SmtpTarget, clock: Clock) -> SharedRate | None:
    """A relay's rate shared through ``engine``; None when it has no rate. Each relay has a
    bucket of its own, by name; [smtp] keeps the bucket it had before there were several."""
    if target.rate_per_second <= 0:
        return None
    name = f"smtp {target}" if target.name == DEFAULT_RELAY else f"relay {target.name}"
    return SharedRate(engine=engine, name=name, rate=target.rate_per_second, clock=clock)
