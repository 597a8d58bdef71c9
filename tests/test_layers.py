"""Which parts of mailer load which: the domain packages stack in one order and never import
upward, the web app serves without the inbox watcher or the IMAP edge, SMTP and IMAP are
each spoken in one place only, so their traps are handled in one place, and the pure
decisions load no database, network or event loop, so they stay testable without I/O."""

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
    assert not {"mailer.inbound.watcher", "mailer.inbound.mailbox", "aioimaplib"} & set(loaded)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def runtime_imports(path: Path, *, eager: bool = False) -> set[str]:
    """The modules a file imports when it runs, ``from mailer import b`` as ``mailer.b``;
    ``if TYPE_CHECKING:`` blocks only feed the type checker and are left out. ``eager``:
    only those imported when the file is imported, not by its functions when called."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if left_out(node, eager)
        for statement in node.body  # type: ignore[attr-defined]
        for inner in ast.walk(statement)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            submodules = {f"{node.module}.{a.name}" for a in node.names}
            names |= {node.module} | {m for m in submodules if mailer_source(m) is not None}
    return names


def left_out(node: ast.AST, eager: bool) -> bool:
    """A block whose imports do not run when its file is imported."""
    if isinstance(node, ast.If):
        return "TYPE_CHECKING" in ast.unparse(node.test)
    return eager and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)


def mailer_source(module: str) -> Path | None:
    """The file of a mailer module, or None for anything else (a library, a function)."""
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if module.split(".")[0] == "mailer" and candidate.is_file():
            return candidate
    return None


def loads(path: Path, *, eager: bool = False) -> dict[str, Path]:
    """Every module a file loads, directly or through the mailer modules it imports, with
    the file that imports it; ``eager``: only what importing it loads (see runtime_imports),
    the packages of each mailer module included."""
    found: dict[str, Path] = {}
    seen: set[Path] = set()
    todo = [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in sorted(runtime_imports(current, eager=eager)):
            found.setdefault(name, current)
            parts = name.split(".")
            packages = [".".join(parts[:n]) for n in range(2, len(parts))] if eager else []
            todo += [s for m in [*packages, name] if (s := mailer_source(m)) is not None]
    return found


SLOW_TO_LOAD = ("scipy", "aiosmtpd")  # most of a command's start; needed by few commands


def test_commands_start_without_loading_scipy_or_aiosmtpd() -> None:
    """`mailer --help` and every command import mailer.cli first: scipy is loaded by the
    insight fits and scores that use it, aiosmtpd by the sandbox server, when they run."""
    cli = ROOT / "mailer/cli/__init__.py"
    slow = [
        f"{name} (imported by {by.relative_to(ROOT)})"
        for name, by in loads(cli, eager=True).items()
        if name.split(".")[0] in SLOW_TO_LOAD
    ]
    assert not slow, "imported when any command starts:\n" + "\n".join(slow)
    assert {"scipy.optimize", "aiosmtpd.smtp"} <= set(loads(cli)), "the commands do reach them"


PURE = (
    "mailer/outbound/throttle.py",
    "mailer/outbound/pacing_rules.py",
    "mailer/scheduling/occurrences.py",
    "mailer/inbound/business_hours.py",
    "mailer/inbound/autoreply.py",
    "mailer/inbound/plain_words.py",
    "mailer/inbound/parsing.py",
    "mailer/core/durations.py",
    "mailer/core/clock.py",
    "mailer/customers/edits.py",
    "mailer/relationship/timeline.py",
    "mailer/insight/history.py",
    "mailer/insight/rfm.py",
    "mailer/insight/btyd.py",
    "mailer/insight/next_order.py",
    "mailer/insight/simulate.py",
    "mailer/commerce/order_rows.py",
    "mailer/core/money.py",
    "mailer/web/form_fields.py",
)
# a database, a mail protocol, the event loop or the network: what makes code need I/O to test
IMPURE = (
    "sqlalchemy",
    "sqlmodel",
    "psycopg",
    "aiosqlite",
    "aiosmtplib",
    "aioimaplib",
    "pymap",
    "asyncio",
    "socket",
    "mailer.store",
)


def io_loaded(path: Path) -> list[str]:
    """What in a module's imports, direct or through mailer modules, needs I/O to test."""
    return [
        f"{path.name} loads {name} (imported by {by.name})"
        for name, by in loads(path).items()
        if any(name == bad or name.startswith(bad + ".") for bad in IMPURE)
    ]


def test_pure_decisions_load_no_database_network_or_event_loop() -> None:
    wrong = [line for module in PURE for line in io_loaded(ROOT / module)]
    assert not wrong, "pure decision modules must stay free of I/O:\n" + "\n".join(wrong)


def test_a_pure_module_that_reached_for_the_database_would_be_caught(tmp_path: Path) -> None:
    changed = tmp_path / "throttle.py"
    throttle = (ROOT / PURE[0]).read_text(encoding="utf-8")
    changed.write_text(throttle + "\nfrom mailer.outbound import outbox\n", encoding="utf-8")
    assert any("loads mailer.store.db" in line for line in io_loaded(changed))


# Lowest first. A package may import its own modules and any package of a lower layer, never
# one of its own layer or above: the core knows no database, the purchase models (insight)
# only the core, the store no customer, the outbox no inquiry, and only the application
# (checks, web, daemon, cli) ties them together.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(names.split())
    for names in (
        "core",
        "insight",
        "store",
        "staff hooks",
        "customers sandbox",
        "commerce",
        "outbound",
        "inbound scheduling",
        "relationship",
        "api",
        "checks",
        "web",
        "daemon",
        "cli",
        "__main__",
    )
)


def layer_of(module: str) -> int | None:
    part = module.split(".")[1] if module.count(".") else ""
    return next((i for i, names in enumerate(LAYERS) if part in names), None)


def upward_imports(path: Path) -> list[str]:
    """Imports of mailer packages at this file's own layer or above (its package excepted)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    own, level = module.split(".")[1], layer_of(module)
    assert level is not None, f"{module} belongs to no layer: add its package to LAYERS"
    return [
        f"{module} imports {name}"
        for name in sorted(runtime_imports(path))
        if name.startswith("mailer.")
        and name.split(".")[1] != own
        and (other := layer_of(name)) is not None
        and other >= level
    ]


def test_packages_import_only_downward() -> None:
    files = [p for p in (ROOT / "mailer").rglob("*.py") if "migrations" not in p.parts]
    wrong = [
        line
        for path in files
        if path.name != "__init__.py" or path.parent != ROOT / "mailer"
        for line in upward_imports(path)
    ]
    assert not wrong, "packages must import only from the layers below them:\n" + "\n".join(wrong)


def test_only_the_imap_edge_and_the_sandbox_imap_server_speak_imap() -> None:
    speaking = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "mailer").rglob("*.py")
        if {name.split(".")[0] for name in imported_modules(path)} & {"aioimaplib", "pymap"}
    }
    assert speaking <= {"mailer/inbound/mailbox.py", "mailer/sandbox/imap_server.py"}, (
        "only mailer/inbound/mailbox.py and mailer/sandbox/imap_server.py may import aioimaplib "
        f"or pymap, "
        f"not {sorted(speaking - {'mailer/inbound/mailbox.py', 'mailer/sandbox/imap_server.py'})}"
    )


def test_only_the_smtp_edge_imports_aiosmtplib() -> None:
    speaking = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "mailer").rglob("*.py")
        if any(name.split(".")[0] == "aiosmtplib" for name in imported_modules(path))
    }
    assert speaking == {"mailer/outbound/smtp.py"}


def test_records_of_four_fields_or_more_are_built_with_keywords() -> None:
    """A dataclass of four fields or more is keyword-only, so the type checker holds every
    caller to naming what it passes; a positional call could swap two fields silently."""
    wrong = []
    for path in (ROOT / "mailer").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            decorators = [ast.unparse(d) for d in node.decorator_list]
            fields = [s for s in node.body if isinstance(s, ast.AnnAssign)]
            dataclass = any(d.startswith("dataclass") for d in decorators)
            if dataclass and len(fields) > 3 and not any("kw_only=True" in d for d in decorators):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not wrong, "make these kw_only=True:\n" + "\n".join(wrong)
