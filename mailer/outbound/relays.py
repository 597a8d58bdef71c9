"""Several SMTP relays: which one a message goes to, and which are resting after a failure.

``[smtp]`` is the default relay and ``[relays.NAME]`` adds others, each with its own pool,
rate and credentials. A message goes to the relays that carry its category, the lowest
priority first, shared by weight among equal priorities. A relay that cannot be reached or
refuses our login is resting for a while (longer each time it fails again) and the message
goes on to the next relay in the same attempt; only when none is left for a message's
category does that category's mail wait (delivery holds it, the others go on).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from mailer.core.clock import Clock
from mailer.core.config import Config
from mailer.core.errors import SmtpUnavailable
from mailer.outbound import rates
from mailer.outbound.smtp import RELAY_FAULTS, SmtpPool, SmtpTarget

log = logging.getLogger("mailer.outbound.relays")

REST = (timedelta(seconds=30), timedelta(minutes=10))  # first and longest rest after a failure
BATCH_SECONDS = 1.0  # what sending one batch should take, see next_batch


@dataclass(frozen=True, slots=True)
class Down:
    """A relay resting until ``until`` after ``failures`` failures in a row."""

    until: datetime
    failures: int
    reason: str


def targets(cfg: Config, *, sandbox: bool) -> list[SmtpTarget]:
    """[smtp] and every [relays.NAME]; in the sandbox, only the local sandbox server."""
    default = SmtpTarget.from_config(cfg, sandbox=sandbox)
    if sandbox:
        return [default]
    return [default] + [
        SmtpTarget.of(name, relay, cfg.secret(f"relays.{name}", "password_env"))
        for name, relay in cfg.settings.relays.items()
    ]


def route(
    relays: Sequence[SmtpTarget],
    category: str,
    down: Mapping[str, Down],
    now: datetime,
    rng: random.Random,
) -> list[SmtpTarget]:
    """The relays to try for a message, in order: those that carry its category and are not
    resting, by priority, each priority's relays drawn in turn by weight."""
    ready = [r for r in relays if category in r.categories and not _resting(down.get(r.name), now)]
    order: list[SmtpTarget] = []
    for priority in sorted({r.priority for r in ready}):
        left = [r for r in ready if r.priority == priority]
        while left:  # one left needs no draw: a relay of its own is most setups' only one
            chosen = left[0] if len(left) == 1 else rng.choices(left, [r.weight for r in left])[0]
            order.append(chosen)
            left.remove(chosen)
    return order


def batch_for(relays: Sequence[SmtpTarget], most: int) -> int:
    """The most messages delivery claims at a time: ``most``, or about a second of the
    slowest category's rate, the rates of the relays that carry it together (a category
    with a relay without a limit goes as fast as it can). Delivery claims a few batches
    ahead, and what is queued meanwhile (an acknowledgement) waits behind them: at 20 a
    second, three batches of 200 would hold it half a minute. Once a batch has gone out,
    ``next_batch`` sizes the claims from the pace it achieved."""
    rates = []
    for category in frozenset().union(*(relay.categories for relay in relays)):
        carrying = [relay.rate_per_second for relay in relays if category in relay.categories]
        if min(carrying) > 0:
            rates.append(sum(carrying))
    return max(1, min(most, math.ceil(min(rates)))) if rates else most


def next_batch(sent: int, seconds: float, least: int, most: int) -> int:
    """The size of the next claim: about BATCH_SECONDS of what the last batch achieved, so
    that mail queued meanwhile waits seconds behind the batches claimed ahead however slow
    the server, or however many processes share a rate (``batch_for`` knows only the rate,
    not the share one process gets). Never below ``least``, the messages the connections
    carry at once (a smaller batch would take as long), nor above ``most``."""
    if seconds <= 0:  # as fast as the clock can tell, or a clock set back
        return most
    return max(least, min(most, math.ceil(sent * BATCH_SECONDS / seconds)))


def fell(down: Down | None, now: datetime, reason: str) -> Down:
    """The rest after one more failure: doubled each time, up to the longest."""
    failures = (down.failures if down else 0) + 1
    rest = min(REST[0] * 2 ** (failures - 1), REST[1])
    return Down(now + rest, failures, reason)


def _resting(down: Down | None, now: datetime) -> bool:
    return down is not None and now < down.until


class Relays:
    """Sends each message through the first relay that takes it (see ``route``); the same
    ``send``, ``probe`` and ``close`` as one SmtpPool, plus the message's category."""

    def __init__(
        self, relays: Sequence[SmtpTarget], engine: Engine, clock: Clock, rng: random.Random
    ) -> None:
        self.targets = list(relays)
        self.down: dict[str, Down] = {}
        self._pools = {
            r.name: SmtpPool(r, clock, rates.shared(engine, r, clock)) for r in self.targets
        }
        self._clock = clock
        self._rng = rng

    async def send(self, sender: str, recipient: str, data: bytes, category: str) -> str:
        """The final reply of the relay that took the message; an error about the message
        itself (a refused recipient) is raised as it is, without trying another relay.
        Raises SmtpUnavailable when no relay for the category is left."""
        now = self._clock.now()
        failures: list[str] = []
        for relay in route(self.targets, category, self.down, now, self._rng):
            try:
                reply = await self._pools[relay.name].send(sender, recipient, data)
            except RELAY_FAULTS as exc:
                failures.append(self._fell(relay, exc))
                continue
            self._answered(relay)
            return reply
        why = "; ".join(failures) or self._resting_reasons(category)
        raise SmtpUnavailable(f"no relay for {category} mail answers: {why}")

    async def probe(self, category: str) -> None:
        """While the category's mail is held: connect to each of its resting relays (all of
        them when none rests), whatever its rest; returns when one answers. Raises the last
        failure when none does."""
        carrying = [r for r in self.targets if category in r.categories]
        resting = [r for r in carrying if r.name in self.down] or carrying
        failure: Exception | None = None
        for relay in resting:
            try:
                await self._pools[relay.name].probe()
            except RELAY_FAULTS as exc:
                failure = exc
                continue
            self._answered(relay)
            return
        assert failure is not None
        raise failure

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()

    def _fell(self, relay: SmtpTarget, exc: Exception) -> str:
        """Rest the relay; sends that were under way when it failed add no further rest."""
        reason = f"{_label(relay)}: {exc}"
        now, before = self._clock.now(), self.down.get(relay.name)
        if not _resting(before, now):
            down = self.down[relay.name] = fell(before, now, reason)
            log.log(self._level, "relay %s; resting until %s UTC", reason, f"{down.until:%T}")
        return reason

    def _answered(self, relay: SmtpTarget) -> None:
        if (down := self.down.pop(relay.name, None)) is not None:
            what = f"{down.failures} failures"
            log.log(self._level, "relay %s answers again after %s", _label(relay), what)

    @property
    def _level(self) -> int:
        """A warning when there is another relay to turn to; with one, the held mail says it."""
        return logging.WARNING if len(self.targets) > 1 else logging.INFO

    def _resting_reasons(self, category: str) -> str:
        carrying = [r for r in self.targets if category in r.categories]
        return "; ".join(self.down[r.name].reason for r in carrying if r.name in self.down)

    def __str__(self) -> str:
        return ", ".join(_label(r) for r in self.targets)


def _label(relay: SmtpTarget) -> str:
    return f"{relay.name} ({relay})"
