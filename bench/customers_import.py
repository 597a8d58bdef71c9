"""How fast `mailer customers import` takes a large CSV: rows/s for a first import and a re-import.

    .venv/bin/python bench/customers_import.py [--rows 100000] [--database-url URL]

Without --database-url it uses a fresh SQLite file in a temp dir.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from mailer.customers import profiles
from mailer.store import db, migrate

ZONES = ("Europe/Sofia", "Asia/Jakarta", "Asia/Manila", "America/Los_Angeles", "Pacific/Auckland")
LOCALES = ("bg", "id", "tl", "en", "en-NZ")
NAMES = ("Мария Иванова", "Siti Rahmawati", "José Reyes", "Zoë Müller", "Liam O'Connor")


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write("email,name,locale,timezone,birthday,tags,city\n")
        for i in range(rows):
            fh.write(
                f"customer{i}@example.com,{NAMES[i % 5]},{LOCALES[i % 5]},"
                f"{ZONES[i % 5]},19{70 + i % 30}-{i % 12 + 1:02d}-{i % 28 + 1:02d},"
                f"newsletter;{'vip' if i % 7 == 0 else 'webinar'},City {i % 100}\n"
            )


def timed(engine: object, path: Path) -> tuple[float, profiles.ImportReport]:
    start = time.perf_counter()
    report = profiles.import_csv(engine, path, datetime.now(UTC))  # type: ignore[arg-type]
    return time.perf_counter() - start, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "customers.csv"
        write_csv(path, args.rows)
        engine = db.connect(args.database_url or f"sqlite:///{tmp}/bench.db")
        migrate.upgrade(engine)
        first, report = timed(engine, path)
        print(f"first import: {report.inserted} rows in {first:.1f} s")
        again, report = timed(engine, path)
        print(f"re-import:    {report.unchanged} unchanged rows in {again:.1f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"{args.rows / first:.0f} rows/s, peak RSS {peak} MB")


if __name__ == "__main__":
    main()
