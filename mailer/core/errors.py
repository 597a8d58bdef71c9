"""One exception tree for everything mailer reports to a person.

    MailerError
     ├── ConfigError        config.toml or the environment is wrong, or names a database
     │                      that cannot be used (carries every problem)
     ├── TemplateError      a template cannot be found, parsed or rendered
     │    └── RenderTimeout  it ran past the time a render may take (and was stopped)
     ├── ImportFileError    a customers file cannot be read at all
     ├── InvalidInput       values given in a form are not valid (carries each, by input)
     ├── AddressTaken       a customer's new address is another customer's
     ├── DatabaseUnavailable  the configured database cannot be opened, created or used yet
     ├── FitFailed          a purchase model cannot be fitted to this purchase history
     ├── InvalidContact (ValueError)  a call, meeting or note to log is incomplete or wrong
     └── NotFound (LookupError)  a customer, template or row that a command named does not exist

The CLI turns these into one clear line each and exit 1. Anything else is a bug: one line
says so, and its traceback is kept in a file (or shown with MAILER_DEBUG=1).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing a person must fix, and where: a file plus a key, line or column.

    A warning is worth knowing but stops nothing: `mailer check` still exits 0.
    """

    where: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class MailerError(Exception):
    """Base of every error that is the user's to fix, not a bug."""


class ConfigError(MailerError):
    """The configuration is invalid; every problem found is listed, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class TemplateError(MailerError):
    """A template is missing, malformed, refers to an undefined variable or escapes the sandbox."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))

    def __reduce__(self) -> tuple[type[TemplateError], tuple[Problem]]:
        """Rebuilt from its Problem when it comes back from a render worker."""
        return (TemplateError, (self.problem,))


class RenderTimeout(TemplateError):
    """A render ran past its time limit and its worker was killed. It is the template's
    fault, not the customer's, so the same template is not tried again in that batch."""


class ImportFileError(MailerError):
    """A customers file cannot be read at all (missing, not CSV, no email column)."""


class InvalidInput(MailerError):
    """Values a person gave are not valid; each problem names its input, so a form can show
    every reason next to its field."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class AddressTaken(MailerError):
    """A customer's address cannot change to one that another customer has (or had, and
    asked to be forgotten)."""


class DatabaseUnavailable(MailerError):
    """The database cannot be opened or created, or its schema is not the current one."""


class InvalidContact(MailerError, ValueError):
    """A call, meeting or note to log is missing something or says something impossible."""


class NotFound(MailerError, LookupError):
    """Something a command named does not exist."""


class SmtpUnavailable(MailerError, ConnectionError):
    """The SMTP server cannot be reached at all: the queue waits instead of burning retries."""


class FitFailed(MailerError):
    """A purchase model could not be fitted to the purchase history: too few repeat
    purchases, or the likelihood has no maximum inside the model's range. Nothing is
    predicted from a model that did not converge."""
