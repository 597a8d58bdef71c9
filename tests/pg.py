"""A throwaway PostgreSQL server in a temp dir on a free loopback port, for the tests."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed: apt-get install postgresql (scripts/test does)"
        )
    return Path(found[-1]).parent


def _as_owner(args: list[str]) -> list[str]:
    """initdb refuses to run as root: run the server as the postgres user then."""
    if os.geteuid() != 0:
        return args
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(args)]


@dataclass
class PostgresServer:
    directory: Path
    port: int

    @classmethod
    def start(cls) -> PostgresServer:
        bindir = _bindir()
        directory = Path(tempfile.mkdtemp(prefix="mailer-pg-"))
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres")
        directory.chmod(0o700)
        port = free_port()
        data = directory / "data"
        run = lambda *a: subprocess.run(_as_owner(list(a)), check=True, capture_output=True)  # noqa: E731
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        server = cls(directory, port)
        server._pg_ctl("start")
        return server

    def _pg_ctl(self, action: str) -> None:
        options = (
            f"'-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory}"
            " -c fsync=off -c full_page_writes=off'"
        )
        args = ["-D", str(self.directory / "data"), "-l", str(self.directory / "log")]
        args += ["-w", "-t", "30", "-o", options, "-m", "fast", action]
        subprocess.run(
            _as_owner([str(_bindir() / "pg_ctl"), *args]), check=True, capture_output=True
        )

    def restart(self) -> None:
        """Stopped (every session cut, as a crash or a failover cuts them) and started again
        on the same port with the same data, as an operator's restart under load."""
        self._pg_ctl("restart")

    def halt(self) -> None:
        """Stopped, every session cut, its data kept: the database is away until ``resume``."""
        self._pg_ctl("stop")

    def resume(self) -> None:
        self._pg_ctl("start")

    def stop(self) -> None:
        pg_ctl = _bindir() / "pg_ctl"
        subprocess.run(
            _as_owner([str(pg_ctl), "-D", str(self.directory / "data"), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, *statements: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]
