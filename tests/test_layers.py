"""Which parts of mailer load which: the web app serves without the inbox watcher or the
IMAP edge, and SMTP is spoken in one place only, so its traps are handled in one place."""

from __future__ import annotations

import ast
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


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def test_only_the_smtp_edge_imports_aiosmtplib() -> None:
    speaking = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "mailer").rglob("*.py")
        if any(name.split(".")[0] == "aiosmtplib" for name in imported_modules(path))
    }
    assert speaking == {"mailer/smtp.py"}
