"""What every benchmark shares: where its database lives, and the machine it ran on."""

from __future__ import annotations

import argparse
import platform
import tempfile
from contextlib import ExitStack
from pathlib import Path

from tests.pg import PostgresServer


def add_database_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--postgres", action="store_true", help="on a throwaway PostgreSQL")
    where.add_argument("--database-url", help="an empty database to fill")


def database_url(stack: ExitStack, args: argparse.Namespace, name: str) -> str:
    """A new SQLite file in a temporary folder, a database ``name`` on a throwaway
    PostgreSQL, or the URL given, each gone when ``stack`` closes; the line printed names
    the machine and the database, since figures mean nothing without them."""
    if args.postgres:
        server = PostgresServer.start()
        stack.callback(server.stop)
        server.admin(f"CREATE DATABASE {name}")
        url = server.url(name)
    elif args.database_url:
        url = args.database_url
    else:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"mailer-{name}-"))
        url = f"sqlite:///{Path(folder) / f'{name}.db'}"
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, {url.split(':')[0]}")
    return url
