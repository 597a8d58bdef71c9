"""A throwaway Dovecot IMAP server in a temp dir on free loopback ports, for the tests.

Mirrors ``shared/dovecot.sh``: its own config and ``base_dir`` (the system service is never
touched), users in a passwd-file owned ``root:dovecot 0640`` (auth runs as ``dovecot``), mail
stored as ``nobody:nogroup``, stdio detached so the daemonising master cannot hold our pipes.
It also serves implicit TLS and STARTTLS with a self-signed certificate, so the client's TLS
paths are tested against the real thing. The test side talks to it with stdlib ``imaplib``
(call from async tests through ``asyncio.to_thread``), never through the code under test.
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.pg import free_port
from tests.tls import self_signed_certificate

USER = "support"
PASSWORD = "s3cret-pass"
START_SECONDS = 10.0
STOP_SECONDS = 15.0


def _config(directory: Path, port: int, tls_port: int, idle: bool) -> str:
    capability = "" if idle else "imap_capability = IMAP4rev1 LITERAL+ UIDPLUS MOVE NAMESPACE\n"
    return f"""\
instance_name = mailer-test-{port}
base_dir = {directory}/run
state_dir = {directory}/state
log_path = {directory}/log/dovecot.log
info_log_path = {directory}/log/dovecot-info.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{directory}/cert.pem
ssl_key = <{directory}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
verbose_proctitle = yes
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:{directory}/mail/%u/Maildir
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 1
{capability}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {directory}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {directory}/users
  default_fields = home={directory}/mail/%u
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
"""


def _wait_listening(port: int, directory: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    log = (directory / "log" / "dovecot.log").read_text(errors="replace")
    raise RuntimeError(f"dovecot did not listen on {port}:\n{log[-2000:]}")


@dataclass
class DovecotServer:
    directory: Path
    port: int
    tls_port: int
    user: str = USER
    password: str = PASSWORD
    host: str = "127.0.0.1"

    @classmethod
    def start(cls, *, idle: bool = True) -> DovecotServer:
        """Start a master as root (it must switch to the mail uid); ``idle=False`` hides IDLE."""
        if shutil.which("dovecot") is None:
            raise RuntimeError(
                "Dovecot is not installed: apt-get install dovecot-core dovecot-imapd"
            )
        directory = Path(tempfile.mkdtemp(prefix="mailer-dovecot-"))
        directory.chmod(0o755)  # the mail uid must traverse it
        for sub in ("run", "state", "log", f"mail/{USER}"):
            (directory / sub).mkdir(parents=True)
        server = cls(directory, free_port(), free_port())
        self_signed_certificate(directory)
        (directory / "dovecot.conf").write_text(
            _config(directory, server.port, server.tls_port, idle)
        )
        users = directory / "users"
        users.write_text(f"{USER}:{{PLAIN}}{PASSWORD}:::::\n")
        shutil.chown(users, "root", "dovecot")
        users.chmod(0o640)
        shutil.chown(directory / "mail", "nobody", "nogroup")
        shutil.chown(directory / "mail" / USER, "nobody", "nogroup")
        server._dovecot()
        _wait_listening(server.port, directory)
        return server

    @property
    def cafile(self) -> Path:
        return self.directory / "cert.pem"

    def stop(self) -> None:
        """SIGTERM to our master only (it stops its children), bounded wait, then SIGKILL."""
        pid_file = self.directory / "run" / "master.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_SECONDS
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.directory, ignore_errors=True)

    def kick(self) -> None:
        """Kill the user's IMAP session processes, as a crash or a network drop would."""
        for pid in self._sessions():
            os.kill(pid, signal.SIGKILL)

    def wait_until_idling(self, timeout: float) -> None:
        """Block until a session's title says IDLE (``verbose_proctitle``): the server's view."""
        deadline = time.monotonic() + timeout
        while not any(title.endswith(" IDLE]") for title in self._sessions().values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no IMAP session entered IDLE within {timeout} s")
            time.sleep(0.01)

    def _sessions(self) -> dict[int, str]:
        """pid -> title of this instance's imap processes (``dovecot-<instance>/imap [...]``)."""
        sessions = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            if re.match(rf"dovecot-mailer-test-{self.port}/imap( |$)", title):
                sessions[int(entry.name)] = title
        return sessions

    def _dovecot(self) -> None:
        subprocess.run(
            ["dovecot", "-c", str(self.directory / "dovecot.conf")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )

    def connect(self) -> imaplib.IMAP4:
        imap = imaplib.IMAP4(self.host, self.port, timeout=10)
        imap.login(self.user, self.password)
        return imap

    def create(self, mailbox: str) -> None:
        with self.connect() as imap:
            _ok(imap.create(mailbox))

    def append(self, raw: bytes, mailbox: str = "INBOX") -> None:
        with self.connect() as imap:
            _ok(imap.append(mailbox, None, None, raw))

    def append_many(self, raws: list[bytes], mailbox: str = "INBOX") -> None:
        """APPEND each message in order over one connection, as a busy MTA would deliver."""
        with self.connect() as imap:
            for raw in raws:
                _ok(imap.append(mailbox, None, None, raw))

    def flags(self, mailbox: str) -> dict[int, set[str]]:
        """UID -> flags of every message in ``mailbox`` (read-only, so nothing changes)."""
        with self.connect() as imap:
            _ok(imap.select(mailbox, readonly=True))
            typ, data = imap.uid("FETCH", "1:*", "(UID FLAGS)")
            _ok((typ, data))
        found = {}
        for item in data:
            match = re.search(
                rb"UID (\d+) FLAGS \(([^)]*)\)", item if isinstance(item, bytes) else b""
            )
            if match:
                found[int(match[1])] = set(match[2].decode().split())
        return found

    def list_mailboxes(self) -> set[str]:
        with self.connect() as imap:
            typ, data = imap.list()
            _ok((typ, data))
        return {
            line.decode().rsplit(" ", 1)[-1].strip('"') for line in data if isinstance(line, bytes)
        }


def _ok(result: tuple[str, object]) -> None:
    if result[0] != "OK":
        raise RuntimeError(f"IMAP command failed: {result}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
