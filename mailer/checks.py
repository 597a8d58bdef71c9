"""`mailer check`: every problem in config, templates and schedules, found in one pass."""

from __future__ import annotations

from pathlib import Path

from mailer import config, schedules
from mailer.clock import Clock
from mailer.errors import ConfigError, Problem
from mailer.templates import TemplateStore


def check_all(config_path: Path, clock: Clock) -> list[Problem]:
    """Problems of all three kinds; with a broken config, the default folders are checked."""
    problems: list[Problem] = []
    company = None
    try:
        cfg = config.load(config_path)
        templates_dir, schedules_dir = cfg.templates_dir, cfg.schedules_dir
        company = cfg.settings.company or None
    except ConfigError as exc:
        problems += exc.problems
        templates_dir, schedules_dir = config.folders(config_path)
    store = TemplateStore(templates_dir)
    problems += store.check(company=company)
    _, schedule_problems = schedules.load_schedules(schedules_dir, store.names(), clock)
    return problems + schedule_problems
