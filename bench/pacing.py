"""What skipping paced domains costs the claim: many queued messages to a domain that has
spent its budget (gmail.com, paced) stand ahead of the rest in the claim's order.

    .venv/bin/python bench/pacing.py [--paced 50000] [--others 2000] [--rounds 7] [--postgres]

"old" is the claim as it was: it takes a batch of the paced domain's rows, which delivery
could only put back (and would take again at once); "new" passes ``skip_domains`` and
takes the rows that can go. The two alternate in one run, each claimed batch is put back
before the next, and the medians are printed with their ratio, the useful rows a batch
held, what the pacing's own reads and writes add per batch, and the load average.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.pg

from sqlalchemy import Engine, update  # noqa: E402

from bench.common import add_database_options, database_url  # noqa: E402
from mailer.core.categories import Category  # noqa: E402
from mailer.core.config import PacingSettings, ThrottleSettings  # noqa: E402
from mailer.outbound import outbox, throttle  # noqa: E402
from mailer.outbound.outbox import OUTBOX, NewMessage, Policy  # noqa: E402
from mailer.outbound.pacing import DomainPacing  # noqa: E402
from mailer.outbound.pacing_rules import Rules  # noqa: E402
from mailer.store import db, migrate  # noqa: E402
from mailer.store.models import OutboxStatus  # noqa: E402

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
BATCH = 200


def queue(engine: Engine, paced: int, others: int) -> None:
    """The paced domain's messages first in the claim's order (higher priority), the others
    after them."""
    messages = [
        NewMessage(
            dedupe_key=f"bench:{n}",
            to_address=f"c{n}@gmail.com" if n < paced else f"c{n}@example.org",
            category=Category.TRANSACTIONAL,
            template="receipt",
            priority=1 if n < paced else 0,
        )
        for n in range(paced + others)
    ]
    outbox.enqueue(engine, messages, NOW - timedelta(minutes=1))


def put_back(engine: Engine, ids: list[int]) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(OUTBOX)
            .where(OUTBOX.c.id.in_(ids))
            .values(status=OutboxStatus.QUEUED, lease_until=None, reserved_at=None)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paced", type=int, default=50_000)
    parser.add_argument("--others", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=7)
    add_database_options(parser)
    args = parser.parse_args()
    with ExitStack() as stack:
        engine = db.connect(database_url(stack, args, "pacing"))
        stack.callback(engine.dispose)
        migrate.upgrade(engine)
        queue(engine, args.paced, args.others)
        policy = Policy(
            rules=throttle.Rules.from_settings(ThrottleSettings()),
            fallback_zone=ZoneInfo("UTC"),
            lease=timedelta(minutes=5),
        )
        pacing = DomainPacing(engine, Rules.from_settings(PacingSettings(per_minute=0)))
        pacing.deferred([("gmail.com", 421, "421 4.7.0 Try again later")], NOW)
        spent = outbox.claim(engine, NOW, 60, policy)
        pacing.hold_back(spent, NOW)  # gmail.com's 60 for this minute
        put_back(engine, [c.id for c in spent])
        run(engine, policy, pacing, args.rounds)


def run(engine: Engine, policy: Policy, pacing: DomainPacing, rounds: int) -> None:
    times: dict[str, list[float]] = {"old": [], "new": [], "hold_back": []}
    useful: dict[str, int] = {}
    for _ in range(rounds):
        for mode in ("old", "new"):
            start = time.perf_counter()
            skip = pacing.paced(NOW) if mode == "new" else {}
            claimed = outbox.claim(engine, NOW, BATCH, policy, skip_domains=list(skip))
            times[mode].append(time.perf_counter() - start)
            useful[mode] = sum(not c.to_address.endswith("@gmail.com") for c in claimed)
            if mode == "new":
                start = time.perf_counter()
                pacing.hold_back(claimed, NOW)
                times["hold_back"].append(time.perf_counter() - start)
            put_back(engine, [c.id for c in claimed])
    median = {mode: statistics.median(values) for mode, values in times.items()}
    print(f"paced rows skipped ahead: {sorted(pacing.paced(NOW))}")
    for mode in ("old", "new"):
        print(f"{mode}: claim {median[mode] * 1000:.1f} ms, {useful[mode]} of {BATCH} can go")
    print(f"hold_back per batch: {median['hold_back'] * 1000:.1f} ms")
    print(f"new/old claim time: {median['new'] / median['old']:.2f}")
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
