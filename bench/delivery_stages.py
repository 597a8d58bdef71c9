"""Where a delivery process's own CPU goes, stage by stage, without sending: the same
newsletter `bench/delivery.py` sends, claimed, prepared and recorded as delivered in batches
of 200, one stage at a time, each timed with the CPU clock of the thread that runs it.

    PYTHONPATH=. .venv/bin/python bench/delivery_stages.py [--customers 6000]
        [--postgres | --database-url URL]

Prints, per message, the median over the batches of: claiming (with the throttle's
decisions), preparing (the reader's context, headers and envelope built here, the batch
handed to a render worker and its replies read back; the worker's own CPU is not counted),
and recording the results. `bench/delivery.py` measures the whole, with sending; this says
which stage of the daemon's share to work on, and is steady enough to compare two versions
of one stage run in turn (the whole rate swings with the machine's other work).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import ExitStack

from bench.common import add_database_options, database_url
from bench.delivery import NOW, ROOT, add_customers, messages, warm_up
from mailer import daemon
from mailer.core import config
from mailer.core.clock import ManualClock
from mailer.outbound import outbox
from mailer.outbound.outbox import Outcome, Result
from mailer.outbound.smtp import SmtpTarget
from mailer.store import db, migrate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=6000)
    add_database_options(parser)
    args = parser.parse_args()
    with ExitStack() as stack:
        url = database_url(stack, args, "stages")
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        warm_up(tmp, 10)  # the render workers started first, as a running daemon has them
        engine = db.connect(url)
        migrate.upgrade(engine)
        add_customers(engine, args.customers)
        outbox.enqueue(engine, messages(args.customers), NOW)
        cfg = config.load(ROOT / "config.toml", {"MAILER_PATHS__DATA": tmp})
        target = SmtpTarget(host="127.0.0.1", port=9)  # never connected to
        delivery = daemon.build_delivery(cfg, engine, ManualClock(NOW), target)
        spent: dict[str, list[float]] = {"claim": [], "prepare": [], "record": []}
        clock = time.thread_time  # this thread's CPU: not the render workers', not waits
        while True:
            start = clock()
            claimed = delivery._claim(NOW, delivery.batch_size)
            if not claimed:
                break
            claiming, start = clock() - start, clock()
            ready, _ = delivery._prepare(claimed, NOW)
            preparing = clock() - start
            sent = [
                Outcome(
                    outbox_id=m.outbox_id,
                    result=Result.SENT,
                    at=NOW,
                    message_id=m.message_id,
                    subject=m.subject,
                )
                for m in ready
            ]
            start = clock()
            outbox.record(engine, sent, outbox.leases(claimed))
            for stage, took in zip(spent, (claiming, preparing, clock() - start), strict=True):
                spent[stage].append(took / len(claimed))
        engine.dispose()
    print(f"{args.customers} messages, median CPU a message in the delivery process:")
    for stage, times in spent.items():
        print(f"  {stage:<8} {statistics.median(times) * 1e6:5.0f} us")


if __name__ == "__main__":
    main()
