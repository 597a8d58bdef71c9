"""A fresh machine installs exactly requirements.txt: it must hold every dependency that
pyproject.toml names, at a version pyproject.toml allows, each with its hashes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)")


def locked() -> dict[str, str]:
    """Package name -> version, for every pin in the lock; each pin must carry hashes."""
    text = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", text):
        match = PIN.match(block)
        if match:
            assert "--hash=sha256:" in block, f"{match[1]} is locked without a hash"
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    build = project["build-system"]["requires"]
    names = project["project"]["dependencies"] + project["project"]["optional-dependencies"]["test"]
    return [Requirement(r) for r in names + build]


def test_every_declared_dependency_is_locked_at_an_allowed_version() -> None:
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not in requirements.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.txt has {name}=={pins[name]}, pyproject.toml asks {requirement}: "
            "run scripts/lock"
        )


def test_the_install_scripts_use_the_lock() -> None:
    for script in ("scripts/test", "scripts/quickstart"):
        text = (ROOT / script).read_text(encoding="utf-8")
        assert "install_locked" in text, f"{script} installs without the lock"
        assert "pip install" not in text, f"{script} installs something the lock does not pin"


def test_the_wheel_carries_every_page_template_and_static_file() -> None:
    """The web app's files (the vendored editor too) are package data, or an installed
    mailer serves its pages without them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = project["tool"]["setuptools"]["package-data"]["mailer"]
    package = ROOT / "mailer"
    for path in (package / "web").rglob("*"):
        if path.is_file() and path.suffix != ".py" and "__pycache__" not in path.parts:
            relative = path.relative_to(package)
            assert any(
                relative.match(g) and len(relative.parts) == len(Path(g).parts) for g in globs
            ), f"{relative} is not in the wheel's package data"
