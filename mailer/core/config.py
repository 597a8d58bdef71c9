"""config.toml, read once into typed, validated settings.

Every problem is collected before anything starts, each naming the file (or environment
variable) and the key, so an operator fixes them all in one pass. Secrets never live in
the file: it names the environment variables that hold them. Any key can be overridden
from the environment as ``MAILER_SECTION__KEY`` (e.g. ``MAILER_SMTP__HOST``).
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import time, timedelta
from email.headerregistry import Address
from email.utils import parseaddr
from ipaddress import IPv4Network, IPv6Network, ip_interface, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from typing_extensions import TypedDict

from mailer.core.categories import Category
from mailer.core.errors import ConfigError, Problem
from mailer.core.fieldtypes import (
    NO_WORKING_DAY,
    ClockTime,
    Duration,
    TimeZone,
    clock_time,
    email_address,
    holiday_country,
)
from mailer.core.files import read_toml
from mailer.core.money import currency_code

ENV_PREFIX = "MAILER_"
DEFAULT_DATABASE_URL = "sqlite:///var/mailer.db"


def _named_address(value: Any) -> str:
    """'Name <addr@host>' or a bare address; the address part is validated and normalised.

    A bare value is validated whole: parseaddr would make "not an address" into "not" and
    drop what follows a line break.
    """
    text = str(value).strip()
    if any(ord(c) < 32 or c == "\x7f" for c in text):
        raise ValueError(f"{text!r} contains a line break or control character")
    name, addr = parseaddr(text) if "<" in text else ("", text)
    if not addr:
        raise ValueError(f"{text!r} is not an address such as 'Support <help@example.com>'")
    return str(Address(display_name=name, addr_spec=email_address(addr)))


def _time_range(value: Any) -> tuple[time, time] | None:
    """Quiet hours written "21:00-08:00"; an empty string means none."""
    if value in ("", None):
        return None
    if isinstance(value, tuple):
        return value
    start, sep, end = str(value).partition("-")
    if not sep:
        raise ValueError(f"{value!r} is not a range of times such as '21:00-08:00'")
    return clock_time(start.strip()), clock_time(end.strip())


def _host_port(value: str) -> str:
    """Where the web app listens: host:port, port 0 (any free one) to 65535."""
    host, _, port = value.rpartition(":")
    if not (host and port.isdigit() and int(port) <= 65535):
        raise ValueError(f"{value!r} is not host:port such as '127.0.0.1:8025' (port 0-65535)")
    return value


def _network(value: Any) -> IPv4Network | IPv6Network:
    """A proxy's address ("127.0.0.1", "::1") or its network ("10.0.0.0/8")."""
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    try:
        network = ip_network(value, strict=False) if isinstance(value, str) else None
    except ValueError:
        network = None
    if network is None:
        raise ValueError(f"{value!r} is not an address or network such as '::1' or '10.0.0.0/8'")
    if ip_interface(value).ip != network.network_address:
        raise ValueError(f"{value!r} has host bits set: the network is '{network}'")
    return network


def dns_name(value: Any, what: str = "domain", example: str = "example.com") -> str:
    """A domain or DKIM selector: dot-separated labels of letters, digits and hyphens."""
    text = str(value).strip().lower().rstrip(".")
    if not text or not all(_LABEL.fullmatch(label) for label in text.split(".")):
        raise ValueError(f"{value!r} is not a {what} such as {example!r}")
    return text


_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
NamedAddress = Annotated[str, BeforeValidator(_named_address)]
DkimSelector = Annotated[
    str, BeforeValidator(functools.partial(dns_name, what="DKIM selector", example="mail2026"))
]
Hostname = Annotated[str, BeforeValidator(dns_name)]
Network = Annotated[IPv4Network | IPv6Network, BeforeValidator(_network)]
TimeRange = Annotated[tuple[time, time] | None, BeforeValidator(_time_range)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


DATABASES = "use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg"})


def check_url(text: str) -> str:
    """A URL of a database mailer can use: an SQLite file, or PostgreSQL through psycopg 3.

    Checked when config.toml is read, so a typo is named there rather than deep inside
    SQLAlchemy on start-up. The URL is never repeated in the message: it may hold a password.
    """
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise ValueError(f"not a database URL; {DATABASES}") from None
    if url.drivername not in _DRIVERS:
        raise ValueError(f"unsupported database {url.drivername!r}; {DATABASES}")
    if url.get_backend_name() == "sqlite" and (url.host or not url.database):
        raise ValueError("an SQLite URL names a file after three slashes: sqlite:///PATH")
    return text


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(Section):
    url: Annotated[str, AfterValidator(check_url)] = DEFAULT_DATABASE_URL


class PathSettings(Section):
    templates: Path = Path("templates")
    schedules: Path = Path("schedules")
    data: Path = Path("var")


class _ServerSettings(Section):
    """How to reach a mail server; the password is read from the named variable, never
    written in config.toml."""

    host: str = "127.0.0.1"
    port: int = Field(default=2525, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "none"
    username: str = ""
    password_env: str = ""


class SmtpSettings(_ServerSettings):
    """One SMTP relay: ``[smtp]``, the default, or one of ``[relays.NAME]``. A message goes
    to the relays that carry its category, the lowest ``priority`` first, shared by
    ``weight`` among relays of equal priority."""

    pool_size: int = Field(default=4, ge=1, le=100)
    rate_per_second: float = Field(default=0, ge=0)
    timeout: Duration = timedelta(seconds=30)
    priority: int = Field(default=1, ge=0)
    weight: int = Field(default=1, ge=1)
    categories: list[Category] = Field(default_factory=lambda: list(Category), min_length=1)


def _table_name(value: str, what: str) -> str:
    """The NAME of a named table such as [relays.NAME]."""
    if not _TABLE_NAME.fullmatch(value):
        raise ValueError(f"{what} name is up to 40 lower-case letters, digits, '-' and '_'")
    return value


_TABLE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
RelayName = Annotated[str, AfterValidator(functools.partial(_table_name, what="a relay's"))]
GroupName = Annotated[str, AfterValidator(functools.partial(_table_name, what="a group's"))]


class _MailboxSettings(_ServerSettings):
    """A mailbox the daemon watches: which one, and what marks a message as read by mailer."""

    mailbox: str = "INBOX"
    processed: str = Field(default="flag", pattern=r"^(flag|move:.+)$")
    poll_seconds: int = Field(default=60, ge=5)


class ImapSettings(_MailboxSettings):
    port: int = Field(default=1143, ge=1, le=65535)
    username: str = "support"
    keep_raw_mb: int = Field(default=25, ge=1)


class BounceMailboxSettings(_MailboxSettings):
    """[bounces.imap]: a mailbox of its own that the return path's mail lands in, watched
    beside support's; off while ``host`` is empty."""

    host: str = ""
    port: int = Field(default=993, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "tls"

    @property
    def enabled(self) -> bool:
        return bool(self.host)

    @model_validator(mode="after")
    def _reachable(self) -> BounceMailboxSettings:
        if self.model_fields_set and not (self.host and self.username):
            missing = " and ".join(key for key in ("host", "username") if not getattr(self, key))
            raise ValueError(f"set {missing} to watch a bounce mailbox, or leave out the section")
        return self


class SenderSettings(Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: NamedAddress = Field(default="Support <support@example.com>", alias="from")
    reply_to: NamedAddress | None = None
    # DKIM: one selector, or several to sign with each (RSA beside Ed25519, or the old and
    # the new key during a rotation); each key is var/dkim/SELECTOR.pem unless named below
    dkim_selector: list[DkimSelector] = []
    dkim_domain: Hostname | None = None  # the From address's domain when not given
    dkim_key_file: Path | None = None  # for a single selector
    dkim_key_env: str = ""  # a variable holding the PEM key, for a single selector

    @field_validator("dkim_selector", mode="before")
    @classmethod
    def _one_or_several(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_key_source(self) -> SenderSettings:
        named = [key for key in ("dkim_key_file", "dkim_key_env") if getattr(self, key)]
        if len(named) > 1:
            raise ValueError("set dkim_key_file or dkim_key_env, not both")
        if named and len(self.dkim_selector) != 1:
            raise ValueError(
                f"{named[0]} names the key of one selector; with {len(self.dkim_selector)} "
                "selectors keep each key in var/dkim/SELECTOR.pem"
            )
        return self


def _return_path(value: str) -> str:
    address = email_address(value)
    if "+" in address.partition("@")[0]:
        raise ValueError(f"{value!r}: mailer adds +ID to it, so it must not have a + already")
    return address


class BounceSettings(Section):
    """Where bounces return and when repeated temporary failures stop mail to an address."""

    # the return path of every message but acknowledgements (which have none): with an
    # address here each message returns to its own, bounces+ID-SIGNATURE@ its domain, so a
    # bounce names the message and customer whatever the bouncing server writes
    return_path: Annotated[str, AfterValidator(_return_path)] | None = None
    soft_limit: int = Field(default=3, ge=1)  # this many soft bounces in a row ...
    soft_window: Duration = timedelta(days=14)  # ... within this time suppress the address
    # rates past which `mailer stats`, the deliverability page and the log warn: Gmail and
    # Yahoo (2024) junk senders whose spam complaints pass 0.3%; a hard-bounce rate over a
    # few percent says a list is stale, and relays (Amazon SES reviews at 5%) act on it
    complaint_rate_max: float = Field(default=0.003, gt=0, lt=1)
    bounce_rate_max: float = Field(default=0.02, gt=0, lt=1)
    imap: BounceMailboxSettings = BounceMailboxSettings()


class PacingGroup(Section):
    """One ``[pacing.groups.NAME]``: domains one provider receives, paced together (their
    replies slow them all down) with a budget of their own; 0: unlimited."""

    domains: list[Hostname] = Field(min_length=1)
    per_minute: int = Field(default=0, ge=0)


class PacingSettings(Section):
    """[pacing]: how many messages a minute each receiving domain may get, and how a
    domain that answers "try later" (421, 4.7.x) is slowed down and recovers."""

    per_minute: int = Field(default=0, ge=0)  # each domain; 0: as fast as the relays go
    deferred_per_minute: int = Field(default=60, ge=1)  # an unlimited domain, once it defers
    floor_per_minute: int = Field(default=1, ge=1)
    slow_for: Duration = timedelta(minutes=10)
    groups: dict[GroupName, PacingGroup] = {}

    @field_validator("groups")
    @classmethod
    def _each_domain_once(cls, groups: dict[str, PacingGroup]) -> dict[str, PacingGroup]:
        seen: dict[str, str] = {}
        for name, group in groups.items():
            for domain in group.domains:
                if domain in seen and seen[domain] != name:
                    raise ValueError(f"{domain} is in groups {seen[domain]} and {name}: keep one")
                seen[domain] = name
        return groups


class SandboxSettings(Section):
    enabled: bool = True
    smtp_port: int = Field(default=2525, ge=1, le=65535)
    imap_port: int = Field(default=1143, ge=1, le=65535)


class CategoryCaps(Section):
    per_day: int | None = Field(default=None, ge=0)
    per_week: int | None = Field(default=None, ge=0)
    per_30d: int | None = Field(default=None, ge=0)


CappedCategory = Literal["marketing", "relationship"]


def _default_caps() -> dict[CappedCategory, CategoryCaps]:
    return {
        "marketing": CategoryCaps(per_day=1, per_week=2, per_30d=6),
        "relationship": CategoryCaps(per_week=1),
    }


class ThrottleSettings(Section):
    min_gap: Duration = timedelta(hours=20)
    quiet_hours: TimeRange = (time(21, 0), time(8, 0))
    caps: dict[CappedCategory, CategoryCaps] = Field(default_factory=_default_caps)


class AutoreplySettings(Section):
    enabled: bool = True
    template: str = "ack"
    once_per_sender: Duration = timedelta(days=7)
    answer_within: Duration = timedelta(hours=4)  # working time, counted in [business_hours]
    max_per_day: int = Field(default=3, ge=1)


class BusinessHoursSettings(Section):
    timezone: TimeZone = "UTC"  # type: ignore[assignment]  # validated into a ZoneInfo
    days: list[Weekday] = ["mon", "tue", "wed", "thu", "fri"]
    open: ClockTime = time(9, 0)
    close: ClockTime = time(17, 0)
    holidays: Annotated[str, AfterValidator(holiday_country)] = ""

    @field_validator("days")
    @classmethod
    def _some_working_day(cls, days: list[Weekday]) -> list[Weekday]:
        if not days:
            raise ValueError(NO_WORKING_DAY)
        return days

    @model_validator(mode="after")
    def _opens_before_closing(self) -> BusinessHoursSettings:
        if self.open >= self.close:
            raise ValueError("open must be earlier than close")
        return self


class WebSettings(Section):
    enabled: bool = True
    bind: Annotated[str, AfterValidator(_host_port)] = "127.0.0.1:8025"
    # `mailer web` alone: processes taking connections from the one socket (`mailer run`
    # serves the app in its own loop, as one)
    processes: int = Field(default=1, ge=1, le=64)
    marketing_reads_inquiries: bool = False
    metrics_token_env: str = ""
    base_url: str = Field(default="http://127.0.0.1:8025", pattern=r"^https?://")
    secret_env: str = ""
    trusted_proxies: list[Network] = []  # whose X-Forwarded-For is believed


class ApiSettings(Section):
    """[api]: the HTTP API under /api/v1. A key's own rate, set when it is created,
    overrides ``rate_per_minute``."""

    rate_per_minute: int = Field(default=600, ge=1)  # requests per key per minute
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)  # a larger request body: 413
    # a transactional send's attachments: their decoded bytes together (413 past it), and
    # how many one message may carry; they widen that route's body limit by their base64
    attachment_max_mb: float = Field(default=10.0, gt=0, le=50)
    attachment_max_count: int = Field(default=10, ge=0, le=100)

    @property
    def attachment_max_bytes(self) -> int:
        return int(self.attachment_max_mb * 1024 * 1024)


class WebhookSettings(Section):
    """[webhooks]: events POSTed to URLs admins register (`mailer webhooks add`)."""

    allow_private: bool = False  # loopback, private and link-local addresses: refused
    timeout: float = Field(default=10.0, gt=0, le=60)  # seconds for one POST and its answer
    max_attempts: int = Field(default=8, ge=1, le=20)  # then the delivery is failed


class FormsSettings(Section):
    """[forms]: the public inquiry and subscribe forms a company's website posts to."""

    cors_origins: list[Annotated[str, Field(pattern=r"^https?://[^/\s]+$")]] = []
    inquiry_thanks_url: str = Field(default="", pattern=r"^(https?://\S+)?$")
    subscribe_thanks_url: str = Field(default="", pattern=r"^(https?://\S+)?$")
    per_ip_per_hour: int = Field(default=20, ge=1)  # posts from one client, both forms
    per_address_per_hour: int = Field(default=5, ge=1)  # posts naming one e-mail address
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)  # a larger post: 413
    max_message_chars: int = Field(default=10_000, ge=100)
    confirm_within: Duration = timedelta(days=7)  # how long a confirmation link works


ScoreRange = Annotated[tuple[int, int], Field(description="lowest and highest score, 1-5")]


class SegmentSettings(Section):
    """One ``[insight.segments.NAME]`` rule: the R, F and M score ranges that put a customer
    in segment NAME. Omitted ranges are 1-5."""

    recency: ScoreRange = (1, 5)
    frequency: ScoreRange = (1, 5)
    monetary: ScoreRange = (1, 5)


class InsightSettings(Section):
    """[insight]: how far ahead expected orders and lifetime value look, and the RFM
    segments in order, the first match winning. No segments: the shipped ones of
    mailer.insight.rfm (new, champions, loyal, potential, can't lose, at risk, hibernating,
    lost); rules given replace them all and must leave no score combination out."""

    horizon: Duration = timedelta(days=90)
    segments: dict[str, SegmentSettings] = {}

    @field_validator("horizon")
    @classmethod
    def _whole_days(cls, horizon: timedelta) -> timedelta:
        if horizon < timedelta(days=1):
            raise ValueError("the horizon is at least one day, e.g. '90d'")
        return horizon


class CompanyValues(TypedDict, total=False):
    """[company]: free-form values every template sees; the few mailer reads are typed."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]
    currencies: list[Annotated[str, AfterValidator(currency_code)]]  # what orders may be in


Role = Literal["delivery", "inbox", "schedules", "web"]
ROLES: tuple[Role, ...] = ("delivery", "inbox", "schedules", "web")


def roles(text: str) -> frozenset[Role]:
    """The roles named in ``--only delivery,web``; ValueError naming what is not a role."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ROLES]
    if unknown or not names:
        wrong = f"{', '.join(map(repr, unknown))} is not a role" if unknown else "no role given"
        raise ValueError(f"{wrong}; roles are {', '.join(ROLES)}")
    return frozenset(name for name in ROLES if name in names)


class DaemonSettings(Section):
    """[daemon]: what `mailer run` runs here. Several machines on one PostgreSQL each run
    some roles; the inbox watcher and the scheduler are led by one process at a time."""

    roles: list[Role] = list(ROLES)

    @field_validator("roles")
    @classmethod
    def _some_role(cls, value: list[Role]) -> list[Role]:
        if not value:
            raise ValueError(f"name at least one role of {', '.join(ROLES)}")
        return value


class Settings(Section):
    """The whole of config.toml. Relative paths are resolved against the file's folder."""

    database: DatabaseSettings = DatabaseSettings()
    paths: PathSettings = PathSettings()
    smtp: SmtpSettings = SmtpSettings()
    relays: dict[RelayName, SmtpSettings] = Field(default={}, validate_default=True)
    imap: ImapSettings = ImapSettings()
    sender: SenderSettings = SenderSettings()
    sandbox: SandboxSettings = SandboxSettings()
    throttle: ThrottleSettings = ThrottleSettings()
    pacing: PacingSettings = PacingSettings()
    bounces: BounceSettings = BounceSettings()
    autoreply: AutoreplySettings = AutoreplySettings()
    business_hours: BusinessHoursSettings = BusinessHoursSettings()
    web: WebSettings = WebSettings()
    daemon: DaemonSettings = DaemonSettings()
    api: ApiSettings = ApiSettings()
    webhooks: WebhookSettings = WebhookSettings()
    forms: FormsSettings = FormsSettings()
    insight: InsightSettings = InsightSettings()
    company: CompanyValues = Field(default_factory=lambda: CompanyValues())

    @field_validator("relays")
    @classmethod
    def _every_category_carried(
        cls, relays: dict[str, SmtpSettings], info: ValidationInfo
    ) -> dict[str, SmtpSettings]:
        """A category no relay carries would wait in the queue for good."""
        smtp = info.data.get("smtp")
        carried = {c for r in [smtp, *relays.values()] if r is not None for c in r.categories}
        if "smtp" in relays:
            raise ValueError("'smtp' names the default relay, [smtp]: call this one otherwise")
        if smtp is not None and (missing := [c.value for c in Category if c not in carried]):
            raise ValueError(f"no relay carries {', '.join(missing)}: add it to some categories")
        return relays


class Config:
    """Validated settings plus where they came from, resolved paths and secrets."""

    def __init__(
        self,
        settings: Settings,
        path: Path,
        secrets: Mapping[str, str],
        overridden: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        self.settings = settings
        self.path = path
        self.base_dir = path.resolve().parent
        self._secrets = dict(secrets)
        self._overridden = dict(overridden or {})

    def where(self, section: str, key: str) -> str:
        """Where a key's value came from, for a problem found after loading, e.g. when the
        database it names cannot be opened: 'config.toml: [database] url'."""
        return _where(self.path, self._overridden, section, [key])

    def resolve(self, relative: Path) -> Path:
        return relative if relative.is_absolute() else self.base_dir / relative

    @property
    def templates_dir(self) -> Path:
        return self.resolve(self.settings.paths.templates)

    @property
    def schedules_dir(self) -> Path:
        return self.resolve(self.settings.paths.schedules)

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.settings.paths.data)

    @property
    def database_url(self) -> str:
        """The database URL, with a relative SQLite path taken from the config's folder."""
        url = self.settings.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            rest = url[len(prefix) :]
            if rest and rest != ":memory:":
                return prefix + str(self.resolve(Path(rest)))
        return url

    def secret(self, section: str, key: str) -> str:
        """The value of the environment variable named by ``[section] key`` ("" if none)."""
        return self._secrets.get(f"{section}.{key}", "")


def default_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("MAILER_CONFIG") or "config.toml")


def load(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, validate; raise ConfigError listing every problem."""
    env = os.environ if env is None else env
    raw = _read_toml(path)
    overridden, problems = _apply_env_overrides(raw, env, path)
    secrets, secret_problems = _read_secrets(raw, env, path)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems += [_problem(err, path, overridden) for err in exc.errors()]
    problems += secret_problems
    if problems:
        raise ConfigError(problems)
    return Config(settings, path, secrets, overridden)


def folders(path: Path, env: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """(templates, schedules) folders, read leniently so `mailer check` can look at them
    even when the rest of the config is broken; defaults stand in for what is unreadable."""
    env = os.environ if env is None else env
    try:
        raw = _read_toml(path)
    except ConfigError:
        raw = {}
    _apply_env_overrides(raw, env, path)
    try:
        paths = PathSettings.model_validate(raw.get("paths", {}))
    except ValidationError:
        paths = PathSettings()
    return path.parent / paths.templates, path.parent / paths.schedules


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return read_toml(path)
    except FileNotFoundError:
        raise ConfigError(
            [Problem(str(path), "file not found (set --config or MAILER_CONFIG)")]
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            [Problem(str(path), "is a folder; name the config.toml file inside it")]
        ) from None
    except OSError as exc:
        raise ConfigError([Problem(str(path), f"cannot be read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [Problem(str(path), f"not UTF-8 text (byte {exc.start}); is it config.toml?")]
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(str(path), f"not valid TOML: {exc}")]) from None


def _apply_env_overrides(
    raw: dict[str, Any], env: Mapping[str, str], path: Path
) -> tuple[dict[tuple[str, str], str], list[Problem]]:
    """Merge MAILER_SECTION__KEY variables into the raw table; remember which keys they set."""
    overridden: dict[tuple[str, str], str] = {}
    problems: list[Problem] = []
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            problems.append(Problem(name, f"[{section}] in {path} is not a table"))
            continue
        table[key] = _env_value(value)
        overridden[(section, key)] = name
    return overridden, problems


def _env_value(text: str) -> Any:
    """A TOML value if the text is one ("587", "true", '["a"]'), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


SECRET_KEYS = (
    ("smtp", "password_env"),
    ("imap", "password_env"),
    ("web", "secret_env"),
    ("web", "metrics_token_env"),
    ("sender", "dkim_key_env"),
    ("bounces.imap", "password_env"),
)


def _read_secrets(
    raw: Mapping[str, Any], env: Mapping[str, str], path: Path
) -> tuple[dict[str, str], list[Problem]]:
    """Look up the variables that the file names for secrets; a named but unset one is a problem."""
    secrets: dict[str, str] = {}
    problems: list[Problem] = []
    relays = raw.get("relays")
    named = [(section, key, _table(raw, section)) for section, key in SECRET_KEYS]
    if isinstance(relays, dict):  # [relays.NAME] password_env, read as ("relays.NAME", key)
        named += [(f"relays.{n}", "password_env", table) for n, table in relays.items()]
    for section, key, table in named:
        variable = table.get(key) if isinstance(table, dict) else None
        if not variable or not isinstance(variable, str):
            continue
        if variable in env:
            secrets[f"{section}.{key}"] = env[variable]
        else:
            where = f"{path}: [{section}] {key}"
            problems.append(Problem(where, f"environment variable {variable} is not set"))
    return secrets, problems


def _table(raw: Mapping[str, Any], section: str) -> Any:
    """The table a dotted section names: "bounces.imap" is [bounces.imap]."""
    table: Any = raw
    for name in section.split("."):
        table = table.get(name) if isinstance(table, dict) else None
    return table


def _problem(err: Any, path: Path, overridden: Mapping[tuple[str, str], str]) -> Problem:
    """Turn one pydantic error into 'file: [section] key: message'."""
    loc = [str(part) for part in err["loc"] if part != "[key]"]
    depth = _table_depth(loc)
    section, rest = ".".join(loc[:depth]), loc[depth:]
    unknown = err["type"] == "extra_forbidden"
    return Problem(_where(path, overridden, section, rest, unknown), _message(err, section, rest))


def _table_depth(loc: list[str]) -> int:
    """How many parts of an error's location name the table its key is in: a section
    ([smtp]), a table inside one ([bounces.imap]) or a named table with a key in it
    ([relays.NAME] port, [pacing.groups.NAME] domains); a bad name itself is a key of the
    table that holds the names ([relays] NAME)."""
    depth = 2 if loc and _named(loc[:1]) and len(loc) > 2 else min(len(loc), 1)
    while depth < len(loc):
        if _named(loc[: depth + 1]) and len(loc) > depth + 2:
            depth += 2
        elif not _named(loc[:depth]) and _model_at(loc[: depth + 1]) is not None:
            depth += 1
        else:
            break
    return depth


def _named(path: list[str]) -> bool:
    """Whether the key ``path`` leads to holds named tables, as ``relays`` does."""
    model = _model_at(path[:-1])
    field = model.model_fields.get(path[-1]) if model is not None and path else None
    return field is not None and get_origin(field.annotation) is dict


def _where(
    path: Path,
    overridden: Mapping[tuple[str, str], str],
    section: str,
    rest: list[str],
    unknown: bool = False,
) -> str:
    """'config.toml: [smtp] port', or 'MAILER_SMTP__PORT (environment): [smtp] port'."""
    key = ".".join(rest)
    top, _, table = section.partition(".")
    set_by = table or (rest[0] if rest else "")  # MAILER_BOUNCES__IMAP sets all [bounces.imap]
    if set_by:
        source = overridden.get((top, set_by))
    elif unknown:  # a section that is no section: a variable that made it is to blame
        source = next((name for (at, _), name in sorted(overridden.items()) if at == top), None)
    else:  # a rule over the section's keys together: the file's, whatever the environment set
        source = None
    where = f"{source} (environment)" if source else str(path)
    return where + (f": [{section}] {key}" if key else f": [{section}]")


def _message(err: Any, section: str, rest: list[str]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key" + _suggestion(section, rest)
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{message} (got {err['input']!r})" if err["type"] != "value_error" else message


def _suggestion(section: str, rest: list[str]) -> str:
    """' (did you mean "port"?)' for a misspelt key, from the fields of its section."""
    model = _model_at([*section.split("."), *rest[:-1]] if rest else [])
    if model is None:
        return ""
    names = [f.alias or n for n, f in model.model_fields.items()]
    close = difflib.get_close_matches(rest[-1] if rest else section, names, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _model_at(path: list[str]) -> type[BaseModel] | None:
    """The settings model found by following field names from the top."""
    model: type[BaseModel] = Settings
    parts = iter(path)
    for part in parts:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if get_origin(annotation) is dict:  # named tables such as [relays.NAME]: skip the name
            annotation = get_args(annotation)[1]
            if next(parts, None) is None:
                return None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model
