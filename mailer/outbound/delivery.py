"""Delivery workers: claim due messages, render them, hand them to SMTP, record every attempt.

The loop never sleeps through time it was given: ``deliver_due`` works off everything due
at the clock's current time and returns, so tests drive it with a clock they move, and
``run`` only decides how long to rest between rounds.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from mailer.core.clock import Clock
from mailer.core.errors import TemplateError
from mailer.core.fieldtypes import sendable_address
from mailer.outbound import outbox
from mailer.outbound.compose import usable_address
from mailer.outbound.outbox import Claimed, Outcome, Policy, Result
from mailer.outbound.pacing import DomainPacing, Share, domain
from mailer.outbound.prepare import Outgoing, Preparer, purchases_of
from mailer.outbound.relays import Relays, next_batch
from mailer.outbound.smtp import Diagnosis, Failure, backoff, classify
from mailer.store import db
from mailer.store.db import UNREACHABLE

log = logging.getLogger("mailer.outbound.delivery")

MAX_RETRY_AGE = timedelta(days=2)  # for messages without a validity window of their own
IDLE_POLL = 1.0  # seconds between looks at the queue when nothing is due
COMMIT_POLL = 0.05  # seconds between looks at whether anything may have been queued
# seconds at least from a claim that drained the queue to the next: each claim is a write
# transaction, and at 200 sends a second a claim at once after each found 2-3 messages,
# holding SQLite's one write lock a third of the time (what the API's sends wait for)
TRICKLE_GAP = 0.05
HOLD_PROBE = (1.0, 60.0)  # first and longest wait between looks at a held category's relays
DB_AWAY = "the database is unreachable"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Batch:
    """Claimed rows, the messages rendered from them, the outcomes of those that were not,
    and what pacing allowed of them."""

    claimed: list[Claimed]
    ready: list[Outgoing] = field(default_factory=list)
    held: list[Outcome] = field(default_factory=list)
    share: Share | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    """A category whose mail waits: no relay for it answered. Its relays are probed at
    ``probe_at``, each miss doubling the wait (see HOLD_PROBE)."""

    since: datetime
    reason: str
    probe_at: datetime
    wait: float = HOLD_PROBE[0]

    def missed(self, now: datetime) -> Hold:
        wait = min(self.wait * 2, HOLD_PROBE[1])
        return replace(self, probe_at=now + timedelta(seconds=wait), wait=wait)


@dataclass
class _Unwritten:
    """Results the database could not take when they came (it was away), with the lease
    tokens they are written under: kept in memory, and written before anything is claimed."""

    outcomes: list[Outcome] = field(default_factory=list)
    leases: dict[int, int] = field(default_factory=dict)
    domains: dict[int, str] = field(default_factory=dict)  # of each row's recipient

    def add(self, outcomes: Sequence[Outcome], claimed: Sequence[Claimed]) -> None:
        self.outcomes += outcomes
        self.leases |= outbox.leases(claimed)
        self.domains |= {item.id: domain(item.to_address) for item in claimed}

    @property
    def replies(self) -> list[tuple[str, int | None, str]]:
        """The (domain, code, reply) of each send a server refused, for pacing."""
        return [
            (self.domains[o.outbox_id], o.smtp_code, o.smtp_reply)
            for o in self.outcomes
            if o.smtp_reply and o.result in (Result.RETRY, Result.FAILED)
        ]

    @property
    def sent(self) -> list[int]:
        return [o.outbox_id for o in self.outcomes if o.result == Result.SENT]


@dataclass(kw_only=True)
class Delivery:
    engine: Engine
    preparer: Preparer
    relays: Relays
    policy: Policy
    clock: Clock
    batch_size: int = 200  # the daemon's: see daemon.BATCH and relays.batch_for
    ahead: int = 2  # batches claimed and rendering while one is sent: one per render worker
    pacing: DomainPacing | None = None  # None: no domain is paced
    rng: random.Random = field(default_factory=random.Random)
    held: dict[str, Hold] = field(default_factory=dict)  # categories no relay takes now
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _in_flight: dict[int, int] = field(default_factory=dict)  # lease tokens of claimed rows
    _unwritten: _Unwritten = field(default_factory=_Unwritten)
    _writing: asyncio.Lock = field(default_factory=asyncio.Lock)
    _claiming: asyncio.Lock = field(default_factory=asyncio.Lock)  # one claim at a time
    _db_away: str | None = None  # why the database did not answer, until it does again
    _drained: bool = False  # the last claim found fewer than a batch due
    _size: int = 0  # the next claim's size, from the pace of the last batch (0: none yet)
    _claimed_at: float = 0.0  # when the last claim began, by the event loop's clock

    def wake(self) -> None:
        """Something was queued: look at the queue now rather than at the next poll."""
        self._wake.set()

    async def deliver_due(self) -> int:
        """Send everything due now, batch by batch; return how many messages were handled.

        The batches overlap: the next ``ahead`` are claimed (in turn) and rendered (at once,
        each in a thread and its own render worker, where it is also composed and signed)
        and the last one recorded while this one's sends are in flight, so the SMTP
        connections rarely wait for the database or the templates. Stops early when
        the server cannot be reached or the daemon is stopping; the claimed rows that were
        not tried go back to the queue.

        Results that could not be written because the database went away are kept and
        written first when it answers again; until then nothing is claimed.
        """
        handled = 0
        if not await self._flush():
            return 0
        await asyncio.to_thread(outbox.release_expired_leases, self.engine, self.clock.now())
        self._answers()
        if self._halted():
            return 0
        keeper = asyncio.ensure_future(self._keep_leases())
        recording: asyncio.Task[None] | None = None
        following: deque[asyncio.Task[_Batch]] = deque()  # claimed in turn, rendered at once
        try:
            batch = await self._take()
            while batch.claimed:
                # ahead only from a backlog: after a claim that drained the queue, one at once
                # finds what came meanwhile, a transaction for a message or two
                while not self._drained and not self._halted() and len(following) < self.ahead:
                    following.append(asyncio.create_task(self._take()))
                try:
                    outcomes = batch.held + await self._send_all(batch)
                except asyncio.CancelledError:
                    await self._give_back(batch, following, "shutdown")
                    raise
                if recording is not None:
                    await recording
                recording = asyncio.create_task(self._record(outcomes, batch))
                handled += len(batch.claimed)
                if why := self._halted():
                    await self._give_back(None, following, why)
                    break
                batch = _Batch(claimed=[])
                while following and not batch.claimed:  # an empty one: the queue ran dry
                    batch = await following.popleft()
        finally:
            try:
                if recording is not None:
                    await recording
            finally:
                keeper.cancel()
        return handled

    def _halted(self) -> str | None:
        """Why no further batch may be sent now: the daemon is stopping, or the database is
        away (results would pile up unwritten). A category no relay takes is held alone."""
        if self._stop.is_set():
            return "shutdown"
        if self._db_away is not None:
            return DB_AWAY
        return None

    async def _take(self) -> _Batch:
        """Claim the next batch and render it, off the event loop; what a paced domain may
        not get in this minute goes back to the queue untried. When the database goes away
        meanwhile, nothing is claimed, or what was claimed goes back untried."""
        async with self._claiming:  # claims and paces in turn; the renders overlap
            now = self.clock.now()
            self._claimed_at = asyncio.get_running_loop().time()
            size = min(self._size or self.batch_size, self.batch_size)
            try:
                claimed = await asyncio.to_thread(self._claim, now, size)
            except UNREACHABLE as exc:
                self._lost(exc)
                return _Batch(claimed=[])
            self._drained = len(claimed) < size
            if not claimed:
                return _Batch(claimed=[])
            self._in_flight.update(outbox.leases(claimed))
            try:
                share = await asyncio.to_thread(self._paced, claimed, now)
            except UNREACHABLE as exc:
                self._lost(exc)
                away = [_waiting(item.id, now, DB_AWAY) for item in claimed]
                return _Batch(claimed=claimed, held=away)
        # rendering waits on a render worker: in a thread, so the loop keeps serving
        try:
            return await asyncio.to_thread(self._ready, claimed, share, now)
        except UNREACHABLE as exc:  # reading the customers' purchases
            self._lost(exc)
            away = [_waiting(item.id, now, DB_AWAY) for item in claimed]
            return _Batch(claimed=claimed, held=away, share=share)  # its pace given back

    def _claim(self, now: datetime, size: int) -> list[Claimed]:
        """The next batch, skipping the domains that spent this minute's budget and the
        categories held."""
        skip = self.pacing.paced(now) if self.pacing else {}
        return outbox.claim(
            self.engine,
            now,
            size,
            self.policy,
            skip_domains=list(skip),
            skip_categories=frozenset(self.held),
        )

    def _paced(self, claimed: list[Claimed], now: datetime) -> Share | None:
        """What each domain's pace allows of the batch in this minute (None: nothing is
        paced); the rest goes back to the queue untried."""
        return None if self.pacing is None else self.pacing.hold_back(claimed, now)

    def _ready(self, claimed: list[Claimed], share: Share | None, now: datetime) -> _Batch:
        """The batch rendered, but for what its domain's pace holds back for this minute."""
        if share is None:
            ready, held = self._prepare(claimed, now)
            return _Batch(claimed=claimed, ready=ready, held=held)
        ready, held = self._prepare(share.allowed, now)
        paced = [_waiting(item.id, now, why) for item, why in share.held]
        return _Batch(claimed=claimed, ready=ready, held=held + paced, share=share)

    async def _record(self, outcomes: list[Outcome], batch: _Batch) -> None:
        """Each result written only where this worker still holds the row's lease; kept
        until the database answers when it does not."""
        async with self._writing:  # not into a list that is being written
            self._unwritten.add(outcomes, batch.claimed)
        await self._flush()
        if batch.share is not None:
            await self._give_back_pace(outcomes, batch, batch.share)

    async def _give_back_pace(self, outcomes: list[Outcome], batch: _Batch, share: Share) -> None:
        """What pacing allowed but was not tried (a stop, a held category, a template that
        failed) leaves its room in this minute to other messages."""
        untried = {o.outbox_id for o in batch.held}
        untried |= {o.outbox_id for o in outcomes if o.result == Result.RELEASED}
        unsent = [item for item in share.allowed if item.id in untried]
        if unsent and self.pacing is not None:
            try:
                await asyncio.to_thread(self.pacing.give_back, unsent, share.counted_in)
            except UNREACHABLE as exc:  # the pace is advice: not kept like a result
                self._lost(exc)

    async def _flush(self) -> bool:
        """Write every result kept so far, oldest first, in one transaction; False when the
        database is still away (they stay kept, their rows leased to this worker). Then the
        domains whose servers said "too fast" are slowed down.

        A stop that comes while the write is in its thread waits for it: the thread cannot
        be stopped, and results it wrote but that were still kept would be written again."""
        async with self._writing:
            pending = self._unwritten
            if not pending.outcomes:
                return True
            write = asyncio.ensure_future(
                asyncio.to_thread(outbox.record, self.engine, pending.outcomes, pending.leases)
            )
            try:
                await _to_its_end(write)
            except UNREACHABLE as exc:
                self._lost(exc)
                return False
            finally:
                if write.done() and not write.cancelled() and write.exception() is None:
                    self._unwritten = _Unwritten()
        for outbox_id in pending.leases:
            self._in_flight.pop(outbox_id, None)
        self._answers()
        tally = Counter(outcome.result for outcome in pending.outcomes)
        log.info("delivery: %s", ", ".join(f"{n} {what}" for what, n in sorted(tally.items())))
        if self.pacing is not None and (replies := pending.replies):
            try:
                await asyncio.to_thread(self.pacing.deferred, replies, self.clock.now())
            except UNREACHABLE as exc:  # the pace is advice: not kept like a result
                self._lost(exc)
        return True

    def _lost(self, exc: DBAPIError) -> None:
        """The database went away: results are kept and nothing more is claimed until it is back."""
        if self._db_away is None:
            log.warning(
                "delivery waits for the database, keeping %d results to write first: %s",
                len(self._unwritten.outcomes),
                db.reason(exc),
            )
        self._db_away = db.reason(exc)

    def _answers(self) -> None:
        if self._db_away is not None:
            log.warning("delivery: the database answers again")
            self._db_away = None

    async def _send_all(self, batch: _Batch) -> list[Outcome]:
        """The batch sent, and the next claim sized to about a second of the pace it went at
        (see ``next_batch``), timed by the clock's monotonic seconds (a wall clock NTP
        steps forward would make one batch look slow)."""
        started = self.clock.monotonic()
        by_id = {item.id: item for item in batch.claimed}
        sent = list(await asyncio.gather(*(self._send(m, by_id[m.outbox_id]) for m in batch.ready)))
        if sent:
            seconds = self.clock.monotonic() - started
            carried = max(target.pool_size for target in self.relays.targets)
            least = min(carried, self.batch_size)
            self._size = next_batch(len(sent), seconds, least, self.batch_size)
        return sent

    async def _give_back(
        self, batch: _Batch | None, following: Sequence[asyncio.Task[_Batch]], why: str
    ) -> None:
        """Release messages that were prepared but not sent, with those of the batches being
        claimed meanwhile (render failures are recorded as such)."""
        if batch is not None:
            await self._record(self._release(batch.ready, why) + batch.held, batch)
        for task in following:
            taken = await asyncio.shield(task)
            await self._record(self._release(taken.ready, why) + taken.held, taken)

    async def _keep_leases(self) -> None:
        """While batches are in flight, push their leases forward every third of the lease:
        a slow server or a low shared rate can make a batch outlast its lease, and another
        worker would then claim and send the same messages again."""
        lease = self.policy.lease
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            if self._in_flight:
                until = self.clock.now() + lease
                try:
                    await asyncio.to_thread(
                        outbox.extend, self.engine, dict(self._in_flight), until
                    )
                except UNREACHABLE as exc:  # the next turn tries again
                    self._lost(exc)

    def _prepare(
        self, claimed: Sequence[Claimed], now: datetime
    ) -> tuple[list[Outgoing], list[Outcome]]:
        """The messages ready to send, and an outcome for each that is not: failed when it
        cannot be rendered (a template that runs out of time fails the rest of its messages
        in the batch at once, see ``RenderPool.map``), released when the daemon is stopping
        or the database went away meanwhile."""
        if why := self._halted_before_rendering():
            return [], [_waiting(item.id, now, why) for item in claimed]
        ready: list[Outgoing] = []
        held: list[Outcome] = []
        addressed = []
        for item in claimed:
            ascii_form = sendable_address(item.to_address)
            if ascii_form is None or not usable_address(ascii_form):
                held.append(_unaddressable(item.id, now))
            else:  # an international domain is written in its ASCII form (xn--...)
                same = ascii_form == item.to_address
                addressed.append(item if same else replace(item, to_address=ascii_form))
        claimed = addressed
        purchases = purchases_of(self.engine, self.preparer.store, claimed)
        for item, made in zip(claimed, self._made(claimed, now, purchases), strict=True):
            if isinstance(made, TemplateError):
                held.append(_template_failed(item.id, now, made))
            elif isinstance(made, Exception):
                held.append(_broken(item.id, now, made))
            else:
                ready.append(made)
        return ready, held

    def _made(
        self, claimed: Sequence[Claimed], now: datetime, purchases: Mapping[int, Any]
    ) -> list[Outgoing | Exception]:
        """The batch prepared in one round trip; when that raises (a bug, not a template's
        fault), each message alone, so the one it is in fails with it and the rest go on:
        one message must never stop a batch at every lease."""
        try:
            return list(self.preparer.prepare_all(claimed, now, purchases))
        except Exception:
            log.exception("preparing a batch of %d failed; preparing each alone", len(claimed))
        made: list[Outgoing | Exception] = []
        for item in claimed:
            try:
                made += self.preparer.prepare_all([item], now, purchases)
            except Exception as exc:
                made.append(exc)
        return made

    def _halted_before_rendering(self) -> str | None:
        if self._stop.is_set():
            return "shutdown"
        return DB_AWAY if self._db_away is not None else None

    async def _send(self, message: Outgoing, claimed: Claimed) -> Outcome:
        if (hold := self.held.get(claimed.category)) is not None:
            return self._released(message, hold.reason)
        try:
            reply = await self.relays.send(
                message.sender, message.recipient, message.data, claimed.category
            )
        except UNREACHABLE as exc:  # the shared rate's bucket: nothing was sent
            self._lost(exc)
            return self._released(message, DB_AWAY)
        except Exception as exc:  # every failure is recorded on the message, none stops the loop
            return self._failure(message, claimed, exc)
        return Outcome(
            outbox_id=message.outbox_id,
            result=Result.SENT,
            at=self.clock.now(),
            smtp_code=_code(reply),
            smtp_reply=reply,
            message_id=message.message_id,
            subject=message.subject,
        )

    def _failure(self, message: Outgoing, claimed: Claimed, exc: Exception) -> Outcome:
        diagnosis = classify(exc)
        now = self.clock.now()
        if diagnosis.result == Failure.OUTAGE:
            self._hold(claimed.category, diagnosis.reply)
            return self._released(message, diagnosis.reply)
        if diagnosis.result == Failure.RETRY:
            retry_at = now + backoff(claimed.attempts + 1, self.rng)
            if retry_at <= _deadline(claimed):
                reason = f"retrying at {retry_at:%Y-%m-%d %H:%M} UTC after: {diagnosis.reply}"
                return _failed(
                    message, now, diagnosis, reason, result=Result.RETRY, retry_at=retry_at
                )
            reason = f"gave up after {claimed.attempts + 1} attempts: {diagnosis.reply}"
            return _failed(message, now, diagnosis, reason)
        return _failed(message, now, diagnosis, diagnosis.reply)

    def _released(self, message: Outgoing, why: str) -> Outcome:
        return _waiting(message.outbox_id, self.clock.now(), why)

    def _release(self, messages: Sequence[Outgoing], why: str) -> list[Outcome]:
        return [self._released(m, why) for m in messages]

    def _hold(self, category: str, reply: str) -> None:
        """No relay for the category answers: its mail waits, the other categories' goes on."""
        if category not in self.held:
            now = self.clock.now()
            probe_at = now + timedelta(seconds=HOLD_PROBE[0])
            self.held[category] = Hold(since=now, reason=reply, probe_at=probe_at)
            log.warning("holding %s mail until a relay for it answers: %s", category, reply)

    async def probe_held(self) -> None:
        """Connect to the relays of each held category whose probe is due: the category
        flows again when one answers, else its next probe waits twice as long."""
        for category, hold in list(self.held.items()):
            now = self.clock.now()
            if now < hold.probe_at:
                continue
            try:
                await self.relays.probe(category)
            except Exception:  # every probe that does not connect is a miss, none stops the loop
                self.held[category] = hold.missed(now)
                continue
            del self.held[category]
            log.warning("%s mail flows again after %s", category, self.clock.now() - hold.since)
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; then finish the batch in flight and close connections."""
        self._stop = stop  # read before each batch is claimed and rendered
        queued: db.Watch | None = None
        try:
            queued = outbox.watch(self.engine)
            while not stop.is_set():
                await self.probe_held()
                self._wake.clear()
                try:
                    if await self.deliver_due() == 0:
                        await self._rest_idle(stop, queued)
                    elif self._drained:
                        await self._rest_after_trickle(stop)
                except UNREACHABLE as exc:  # a restart or failover: wait it out, not die
                    self._lost(exc)
                    await _rest(stop, self._wake, IDLE_POLL)
        finally:
            try:
                if not await self._flush():
                    self._left_unwritten()
            finally:
                if queued is not None:
                    queued.close()
                await self.relays.close()

    async def _rest_idle(self, stop: asyncio.Event, queued: db.Watch | None) -> None:
        """Rest until the next message falls due, or until woken. A message queued by
        another process (a web process of ``mailer web``, whose ``wake`` cannot reach this
        one) would wait for the next look, up to IDLE_POLL; instead, every COMMIT_POLL, the
        worker asks whether anything may have been queued (SQLite: another connection
        committed; PostgreSQL: the outbox's NOTIFY came) and then looks at the queue."""
        seconds = await self._idle_for()
        away = self._db_away is not None  # then the watch would try to reconnect each look
        if queued is None or away:
            await _rest(stop, self._wake, seconds)
            return
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0 and not stop.is_set() and not self._wake.is_set():
            await _rest(stop, self._wake, min(left, COMMIT_POLL))
            if await asyncio.to_thread(queued.changed):
                seconds = await self._idle_for()
                if seconds == 0:
                    return
                end = min(end, loop.time() + seconds)

    async def _rest_after_trickle(self, stop: asyncio.Event) -> None:
        """Once a claim has drained the queue, the next waits until TRICKLE_GAP after it
        began, so that messages queued one by one meanwhile go out together: one claim and
        one record for them instead of one each (woken only by a stop)."""
        left = self._claimed_at + TRICKLE_GAP - asyncio.get_running_loop().time()
        if left > 0:
            await _rest(stop, asyncio.Event(), left)

    def _left_unwritten(self) -> None:
        """Stopping while the database is away: what could not be written is said, and
        what becomes of it."""
        kept, sent = self._unwritten.outcomes, self._unwritten.sent
        log.error(
            "delivery stops with %d results (%d sent) not written: %s (%s); their messages "
            "stay 'sending' until their lease runs out and then go out again%s",
            len(kept),
            len(sent),
            DB_AWAY,
            self._db_away,
            f" (the sent ones are outbox ids {', '.join(map(str, sent))})" if sent else "",
        )

    async def _idle_for(self) -> float:
        """Until the next message falls due, leaving out the domains paced for now and the
        categories held, or the first of those domains may take more, or the next probe of a
        held category; at most IDLE_POLL."""
        if self._db_away is not None:
            return IDLE_POLL
        now = self.clock.now()
        paced = await asyncio.to_thread(self.pacing.paced, now) if self.pacing else {}
        due = await asyncio.to_thread(
            outbox.next_due,
            self.engine,
            skip_domains=list(paced),
            skip_categories=frozenset(self.held),
        )
        probes = [hold.probe_at for hold in self.held.values()]
        wake_at = min([*([due] if due else []), *paced.values(), *probes], default=None)
        if wake_at is None:
            return IDLE_POLL
        return max(0.0, min(IDLE_POLL, (wake_at - now).total_seconds()))


async def _to_its_end(work: asyncio.Future[Any]) -> None:
    """Await ``work``; when cancelled meanwhile, wait for it to end before passing the
    cancellation on, so the caller learns what it did."""
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        raise


async def _rest(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Wait for ``seconds``, or less if stopped or woken."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _deadline(claimed: Claimed) -> datetime:
    return claimed.valid_until or claimed.created_at + MAX_RETRY_AGE


def _code(reply: str) -> int | None:
    head = reply[:3]
    return int(head) if head.isdigit() else None


def _waiting(outbox_id: int, at: datetime, why: str) -> Outcome:
    """Back to the queue untried: no attempt is recorded, the reason says what it waits for."""
    return Outcome(outbox_id=outbox_id, result=Result.RELEASED, at=at, reason=f"waiting: {why}")


def _unaddressable(row_id: int, now: datetime) -> Outcome:
    """A message to an address no header may hold (one queued before mailer refused such
    addresses at the door): failed for good, not the batch it came in."""
    reason = "invalid address: not a plain ASCII address (mail without SMTPUTF8 cannot reach it)"
    return Outcome(outbox_id=row_id, result=Result.FAILED, at=now, reason=reason)


def _broken(row_id: int, now: datetime, exc: Exception) -> Outcome:
    """A message mailer itself failed to prepare (logged when it happened): failed for good
    with what was raised, for an operator to report."""
    reason = f"internal error (a bug in mailer, in the log): {exc!r}"[:500]
    return Outcome(outbox_id=row_id, result=Result.FAILED, at=now, reason=reason)


def _template_failed(row_id: int, now: datetime, exc: Exception) -> Outcome:
    """A message that cannot be rendered fails for good: trying again renders the same."""
    return Outcome(outbox_id=row_id, result=Result.FAILED, at=now, reason=f"template: {exc}")


def _failed(
    message: Outgoing,
    now: datetime,
    diagnosis: Diagnosis,
    reason: str,
    *,
    result: Result = Result.FAILED,
    retry_at: datetime | None = None,
) -> Outcome:
    """A message the SMTP server refused: failed for good, or to retry at ``retry_at``."""
    return Outcome(
        outbox_id=message.outbox_id,
        result=result,
        at=now,
        reason=reason,
        smtp_code=diagnosis.code,
        smtp_reply=diagnosis.reply,
        retry_at=retry_at,
    )
