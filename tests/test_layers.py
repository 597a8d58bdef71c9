"""Which parts of mailer load which: the web app serves without the inbox watcher or the
IMAP edge."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_web_app_loads_without_the_inbox_watcher_or_the_imap_edge() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, mailer.web.server; print(*sorted(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "mailer.web.health" in loaded
    assert not {"mailer.inbox", "mailer.mailbox", "aioimaplib"} & set(loaded)

