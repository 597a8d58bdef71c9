"""Mail sent on a calendar: schedule files, when they are due (``occurrences``), who they
reach (``audience``), turning a due run into outbox rows (``fanout``, ``firing``, owner of the
schedule-run tables), webinars, the daemon's scheduler, and what marketing reads before and
after (``dryrun``, ``previews``, ``results``).
"""
