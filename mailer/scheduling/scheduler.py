"""The daemon's clockwork: schedule files kept current, APScheduler waking firing on time.

APScheduler 3 holds one trigger per schedule and zone (``newsletter@Asia/Jakarta``), not one
per customer, and only ever wakes ``firing.fire_due``, which works out for itself what is
due. So a trigger that fires twice, late, or not at all (the daemon was down) changes
nothing: the next wake-up, or the one at start, catches up whatever is still inside
``valid_for`` and was planned after mailer first saw the schedule.

Files are read again when one changes (checked every few seconds) or on SIGHUP. A file that
no longer loads is reported and its last good version keeps running, so a typo saved in
the middle of the month does not silently cancel the newsletter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from mailer.core.clock import Clock
from mailer.core.errors import Problem
from mailer.customers import followups
from mailer.outbound import deliverability
from mailer.scheduling import firing, occurrences
from mailer.scheduling.digests import Digests
from mailer.scheduling.fanout import RunResult
from mailer.scheduling.firing import Firing
from mailer.scheduling.schedules import Schedule, WebinarSchedule, load_schedule

log = logging.getLogger("mailer.scheduling.scheduler")

CHECK_SECONDS = 5.0  # how often the files are looked at again
ZONES_SECONDS = 600.0  # how often the zones in use are, for customers imported meanwhile


@dataclass(kw_only=True)
class Schedules:
    """The schedule files as last loaded: the good ones, and what is wrong with the rest."""

    directory: Path
    template_names: Callable[[], list[str]]
    clock: Clock
    segments: list[str] | None = None  # the configured RFM segment names, to check against
    loaded: dict[str, Schedule] = field(default_factory=dict)
    problems: dict[str, list[Problem]] = field(default_factory=dict)
    edited: dict[str, datetime] = field(default_factory=dict)  # changed since the first load
    _stamps: dict[Path, tuple[float, int]] = field(default_factory=dict)

    def changed(self) -> bool:
        """Whether any file was added, edited or removed since the last reload."""
        return self._scan() != self._stamps

    def reload(self) -> list[Problem]:
        """Load every file again; a broken one keeps its last good version. Returns problems."""
        stamps = self._scan()
        names = self.template_names()
        loaded: dict[str, Schedule] = {}
        problems: dict[str, list[Problem]] = {}
        for path in stamps:
            schedule, found = load_schedule(path, names, self.clock, self.segments)
            if found:
                problems[path.stem] = found
                log.error("schedule %s not reloaded: %s", path.name, "; ".join(map(str, found)))
            if schedule is not None:
                loaded[path.stem] = schedule
                before = self.loaded.get(path.stem)
                if before is not None and before != schedule:
                    self.edited[path.stem] = self.clock.now()
            elif path.stem in self.loaded:
                loaded[path.stem] = self.loaded[path.stem]
                log.warning("schedule %s keeps running as last loaded", path.stem)
        self.loaded, self.problems, self._stamps = loaded, problems, stamps
        return [p for found in problems.values() for p in found]

    def _scan(self) -> dict[Path, tuple[float, int]]:
        if not self.directory.is_dir():
            return {}
        found = {}
        for path in sorted(self.directory.glob("*.toml")):
            if path.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):  # removed while we looked
                info = path.stat()
                found[path] = (info.st_mtime, info.st_size)
        return found


@dataclass(kw_only=True)
class Scheduler:
    schedules: Schedules
    engine: Engine
    clock: Clock
    firing: Firing
    on_queued: Callable[[], None] = lambda: None
    on_told: Callable[[], None] = lambda: None  # webhooks were recorded: wake their worker
    digests: Digests | None = None  # the morning digest of follow-ups, asked every minute
    watch: deliverability.Watch | None = None  # bounce and complaint rates, looked at hourly
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _jobs: AsyncIOScheduler | None = None
    _zones: list[str] | None = None  # as the last sync read them; every firing follows one

    def fire(self) -> list[RunResult]:
        """Everything due now (in a worker thread: a big fan-out takes seconds)."""
        files = self.schedules
        now = self.clock.now()
        results = firing.fire_due(
            self.engine, files.loaded, now, self.firing, _progress, files.edited, self._zones
        )
        for result in results:  # a zone with nobody due is not news
            log.log(
                logging.INFO if result.queued or result.skipped else logging.DEBUG,
                "schedule %s %s%s: %d queued, %d skipped",
                result.schedule,
                result.occurrence,
                f" ({result.zone})" if result.zone else "",
                result.queued,
                result.skipped,
            )
        return results

    def triggers(self, zones: list[str]) -> dict[str, CronTrigger | DateTrigger]:
        """One trigger per schedule and zone, by job id; webinars one per step."""
        found: dict[str, CronTrigger | DateTrigger] = {}
        now = self.clock.now()
        for name, schedule in self.schedules.loaded.items():
            if not schedule.enabled:
                continue
            if isinstance(schedule, WebinarSchedule):
                at = occurrences.next_fire(schedule, zones, now)
                if at is not None:
                    found[f"{name}@next"] = DateTrigger(at, timezone=UTC)
                continue
            for zone in occurrences.zones_for(schedule, zones):
                found[f"{name}@{zone}"] = occurrences.trigger(schedule, zone)
        return found

    async def _triggered(self) -> None:
        """APScheduler's job: a coroutine, so it runs on the loop (a plain function would
        run in a worker thread, where an asyncio.Event must not be set)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, reload: asyncio.Event) -> None:
        """Fire what is due now, then whenever a trigger fires, a file changes or SIGHUP."""
        jobs = AsyncIOScheduler(timezone=UTC)
        self._jobs = jobs
        jobs.start()
        loop = asyncio.get_running_loop()
        synced_at = -ZONES_SECONDS
        try:
            await asyncio.to_thread(self.schedules.reload)
            self._wake.set()  # catch up on what came due while mailer was down
            while not stop.is_set():
                if self._wake.is_set() or loop.time() - synced_at >= ZONES_SECONDS:
                    await self._sync(jobs)
                    synced_at = loop.time()
                await self._fire()
                await self._send_digests()
                await self._tell_due_followups()
                if self.watch is not None:
                    await self._step(self.watch.tick, _nothing, "looking at deliverability")
                await _first(stop, reload, self._wake, timeout=CHECK_SECONDS)
                if reload.is_set() or await asyncio.to_thread(self.schedules.changed):
                    reload.clear()
                    log.info("reloading schedules")
                    await asyncio.to_thread(self.schedules.reload)
                    self._wake.set()
        finally:
            jobs.shutdown(wait=False)
            self._jobs = None

    async def _fire(self) -> None:
        if not self._wake.is_set():
            return
        self._wake.clear()
        try:
            results = await asyncio.to_thread(self.fire)
        except Exception:  # a bug or an outage must not stop the clockwork
            log.exception("firing schedules failed; trying again at the next wake-up")
            return
        if any(result.queued for result in results):
            self.on_queued()

    async def _send_digests(self) -> None:
        if self.digests is not None:
            await self._step(self.digests.tick, self.on_queued, "queuing follow-up digests")

    async def _tell_due_followups(self) -> None:
        """Each pass: ``followup.due`` webhooks for what came due since the last one."""
        await self._step(self._tell_due, self.on_told, "telling webhooks of due follow-ups")

    def _tell_due(self, now: datetime) -> int:
        with self.engine.begin() as conn:
            return followups.tell_due(conn, now)

    async def _step(
        self, work: Callable[[datetime], int], then: Callable[[], None], what: str
    ) -> None:
        """``work`` in a thread at the clock's now; ``then`` when it did something. Like
        firing, a failure (an outage, a bug) is logged and the next pass tries again."""
        try:
            done = await asyncio.to_thread(work, self.clock.now())
        except Exception:
            log.exception("%s failed; trying again later", what)
            return
        if done:
            then()

    async def _sync(self, jobs: AsyncIOScheduler) -> None:
        """Make APScheduler's jobs match the loaded schedules and the zones in use."""
        try:
            zones = await asyncio.to_thread(
                firing.customer_zones, self.engine, self.firing.fallback_zone
            )
        except OperationalError as exc:  # the jobs there are keep running meanwhile
            log.warning("schedules: cannot read the zones in use, trying again: %s", exc)
            return
        self._zones = zones
        wanted = self.triggers(zones)
        for job in jobs.get_jobs():
            if job.id not in wanted:
                job.remove()
        for job_id, trigger in wanted.items():
            existing = jobs.get_job(job_id)
            if existing is None or str(existing.trigger) != str(trigger):
                jobs.add_job(
                    self._triggered,
                    trigger,
                    id=job_id,
                    replace_existing=True,
                    coalesce=True,
                    misfire_grace_time=None,
                )

    def next_runs(self) -> dict[str, datetime]:
        """Job id -> next wake-up, as APScheduler has it (for status output and tests)."""
        if self._jobs is None:
            return {}
        return {job.id: job.next_run_time for job in self._jobs.get_jobs() if job.next_run_time}


def _progress(schedule: str, written: int) -> None:
    """A big run takes seconds: say how far it got, one line per range of customers."""
    if written:
        log.info("schedule %s: %d messages written so far", schedule, written)


async def _first(*events: asyncio.Event, timeout: float) -> None:
    """Return when any event is set, or after ``timeout``."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _nothing() -> None:
    """What follows a step that queues nothing."""
