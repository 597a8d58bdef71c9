"""Per-domain pacing, kept in the database so every delivery process shares it.

The rules are in ``pacing_rules``; this module reads and writes their state, one row of
``domain_pacing`` per domain or group, and is the only one that writes it. Delivery asks
three things: which domains have spent this minute's budget (``paced``: the claim skips
them), how much of a claimed batch each domain may get (``hold_back``: the rest goes back
to the queue untried), and it tells which domains answered "too fast" (``deferred``) and
which messages it was given but did not send (``give_back``).

On PostgreSQL the rows of a batch are locked in key order while its share is decided, so
two processes claiming at once split one budget between them and cannot deadlock; on
SQLite the whole database is, so a deferral recorded meanwhile is not written over.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping

from mailer.core.config import Config
from mailer.outbound import pacing_rules as rules_
from mailer.outbound.outbox import Claimed
from mailer.outbound.pacing_rules import Pace, Rules, label
from mailer.store import db, models

log = logging.getLogger("mailer.outbound.pacing")

PACING: Table = models.DomainPacing.__table__  # type: ignore[attr-defined]
_FIELDS = ("rate", "slowed_until", "changed_at", "reason", "window_start", "used")


@dataclass(frozen=True, slots=True, kw_only=True)
class Slowed:
    """A domain or group going slower than normal now, as operators see it."""

    key: str
    name: str  # "gmail.com" or "group google"
    domains: list[str]
    rate: int  # per minute now
    normal: int | None  # None: unlimited
    slowed_until: datetime | None
    since: datetime | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Share:
    """What a claimed batch may send in this minute: ``allowed``, in claim order; ``held``,
    each with why it waits; and the start of the minute each limited key's allowed
    messages were counted in (for ``give_back``)."""

    allowed: list[Claimed]
    held: list[tuple[Claimed, str]]
    counted_in: dict[str, datetime]


@dataclass(frozen=True, slots=True)
class DomainPacing:
    """The pacing of every receiving domain, on one database, under ``rules``."""

    engine: Engine
    rules: Rules

    @classmethod
    def from_config(cls, cfg: Config, engine: Engine) -> DomainPacing:
        return cls(engine, Rules.from_settings(cfg.settings.pacing))

    def paced(self, now: datetime) -> dict[str, datetime]:
        """The domains that have spent this minute's budget, each with when it may take
        more; the claim leaves their messages waiting. Keys back at their normal rate are
        marked so here (and logged) by whichever process notices first."""
        with self.engine.begin() as conn:
            found = _read(conn, None)
            for key, pace in found.items():
                if rules_.recovered(pace, self.rules, key, now):
                    _recover(conn, key, pace)
        skipped: dict[str, datetime] = {}
        for key, pace in found.items():
            until = rules_.paced_until(pace, self.rules, key, now)
            if until is not None:
                skipped.update(dict.fromkeys(self.rules.domains(key), until))
        return skipped

    def hold_back(self, claimed: Sequence[Claimed], now: datetime) -> Share:
        """The claimed messages each domain may get in this minute, and the rest with why
        they wait; decided in one transaction with the keys' rows locked in key order, and
        counted against their budgets."""
        by_key: dict[str, list[Claimed]] = {}
        for item in claimed:
            by_key.setdefault(self.rules.key(domain(item.to_address)), []).append(item)
        limited = [k for k in by_key if self.rules.limited(k)]
        held: list[tuple[Claimed, str]] = []
        counted_in: dict[str, datetime] = {}
        with self.engine.begin() as conn:
            found = _locked(conn, by_key, limited)
            changed: dict[str, Pace] = {}
            for key in sorted(found):
                before = found[key]
                granted, after = rules_.take(before, self.rules, key, now, len(by_key[key]))
                if after != before:
                    changed[key] = after
                if rules_.rate_now(before, self.rules, key, now) is not None:
                    assert after.window_start is not None
                    counted_in[key] = after.window_start
                if granted < len(by_key[key]):
                    assert after.window_start is not None
                    until = after.window_start + rules_.MINUTE
                    why = f"{label(key)} is paced until {until:%Y-%m-%d %H:%M} UTC"
                    held += [(item, why) for item in by_key[key][granted:]]
            _save(conn, changed)
        waiting = {item.id for item, _ in held}
        allowed = [item for item in claimed if item.id not in waiting]
        return Share(allowed=allowed, held=held, counted_in=counted_in)

    def give_back(self, unsent: Sequence[Claimed], counted_in: Mapping[str, datetime]) -> None:
        """Room again for messages ``hold_back`` counted but that were not sent (a stop, a
        held category, a template that failed), in the minute they were counted in if it
        is still the current one."""
        by_key = Counter(self.rules.key(domain(item.to_address)) for item in unsent)
        if not (keys := sorted(k for k in by_key if k in counted_in)):
            return
        with self.engine.begin() as conn:
            found = _locked(conn, keys, [])
            changed = {
                key: after
                for key, before in found.items()
                if (after := rules_.given_back(before, counted_in[key], by_key[key])) != before
            }
            _save(conn, changed)

    def deferred(self, replies: Iterable[tuple[str, int | None, str]], now: datetime) -> None:
        """Slow down the domains whose replies (domain, code, text) say we send too fast."""
        slowing: dict[str, list[str]] = {}
        for address_domain, code, reply in replies:
            if rules_.slows_down(code, reply):
                slowing.setdefault(self.rules.key(address_domain), []).append(reply[:500])
        if not slowing:
            return
        with self.engine.begin() as conn:
            found = _locked(conn, slowing, list(slowing))
            changed: dict[str, Pace] = {}
            for key in sorted(slowing):
                before = pace = found[key]
                for reply in slowing[key]:
                    pace = rules_.slowed(pace, self.rules, key, now, reply)
                changed[key] = pace
                if pace.rate != rules_.rate_now(before, self.rules, key, now):
                    _told_slower(key, pace)
            _save(conn, changed)

    def slowed_now(self, conn: Connection, now: datetime) -> list[Slowed]:
        """Keys below their normal rate now, slowest first."""
        shown = []
        for key, pace in _read(conn, None).items():
            rate = rules_.rate_now(pace, self.rules, key, now)
            if pace.rate is None or rate is None or rules_.recovered(pace, self.rules, key, now):
                continue
            normal = self.rules.normal(key) or None
            shown.append(
                Slowed(
                    key=key,
                    name=label(key),
                    domains=self.rules.domains(key),
                    rate=rate,
                    normal=normal,
                    slowed_until=pace.slowed_until,
                    since=pace.changed_at,
                    reason=pace.reason or "",
                )
            )
        return sorted(shown, key=lambda s: (s.rate, s.key))


def domain(address: str) -> str:
    """The part of an address after its @, lower-cased (as db.domain_of says it in SQL)."""
    return address.partition("@")[2].lower()


def _read(conn: Connection, keys: Sequence[str] | None, *, lock: bool = False) -> dict[str, Pace]:
    query = select(PACING).order_by(PACING.c.key)
    if keys is not None:
        query = query.where(PACING.c.key.in_(sorted(keys)))
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return {row["key"]: _pace(row) for row in conn.execute(query).mappings()}


def _pace(row: RowMapping) -> Pace:
    return Pace(**{name: row[name] for name in _FIELDS})


def _locked(conn: Connection, keys: Iterable[str], needed: Sequence[str]) -> dict[str, Pace]:
    """The rows of ``keys`` that exist, locked in key order, with a new row for each of
    ``needed`` that had none."""
    db.lock_for_writing(conn, PACING)
    found = _read(conn, list(keys), lock=True)
    missing = sorted(set(needed) - set(found))
    if missing:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(PACING).on_conflict_do_nothing(index_elements=["key"])
        conn.execute(insert, [{"key": key, "used": 0} for key in missing])
        found.update(_read(conn, missing, lock=True))
    return found


def _save(conn: Connection, changed: Mapping[str, Pace]) -> None:
    for key in sorted(changed):
        pace = changed[key]
        values = {name: getattr(pace, name) for name in _FIELDS}
        conn.execute(update(PACING).where(PACING.c.key == key).values(**values))


def _recover(conn: Connection, key: str, pace: Pace) -> None:
    """Back to normal, told once: the update only matches the state this process read."""
    done = conn.execute(
        update(PACING)
        .where(PACING.c.key == key, PACING.c.rate == pace.rate)
        .values(rate=None, slowed_until=None)
    )
    if done.rowcount:
        log.info("pacing: %s is back at its normal rate (slowed by: %s)", label(key), pace.reason)


def _told_slower(key: str, pace: Pace) -> None:
    assert pace.slowed_until is not None
    log.warning(
        "pacing: %s slows down to %d a minute until %s UTC after: %s",
        label(key),
        pace.rate,
        f"{pace.slowed_until:%Y-%m-%d %H:%M}",
        pace.reason,
    )
