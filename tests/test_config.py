"""config.toml: every mistake is named with its file and key, all at once."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path

import pytest

from mailer.core import config
from mailer.core.errors import ConfigError
from tests.configs import ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config.load(path, env or {})
    return [str(p) for p in caught.value.problems]


def test_shipped_config_loads_and_documents_the_sandbox_defaults() -> None:
    cfg = config.load(ROOT / "config.toml", {})
    assert cfg.settings.sandbox.enabled
    assert cfg.settings.throttle.min_gap == timedelta(hours=20)
    assert cfg.settings.throttle.quiet_hours == (time(21), time(8))
    assert cfg.database_url == f"sqlite:///{ROOT / 'var' / 'mailer.db'}"


def test_an_empty_file_means_every_default(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, ""), {})
    assert cfg.settings.smtp.port == 2525
    assert cfg.settings.autoreply.once_per_sender == timedelta(days=7)
    assert cfg.templates_dir == tmp_path / "templates"


def test_misspelt_key_is_named_with_file_section_and_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "[smtp]\nprot = 25\n")
    assert problems(path) == [f'{path}: [smtp] prot: unknown key (did you mean "port"?)']


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[databse]\nurl = "sqlite://"\n')
    assert problems(path) == [f'{path}: [databse]: unknown key (did you mean "database"?)']


def test_bad_duration_names_the_key_and_the_accepted_forms(tmp_path: Path) -> None:
    path = write(tmp_path, '[throttle]\nmin_gap = "20 hours"\n')
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: [throttle] min_gap: '20 hours' is not a duration")
    assert '"7d"' in problem
    path = write(tmp_path, '[throttle]\nmin_gap = "99999999999d"\n')
    assert problems(path) == [
        f"{path}: [throttle] min_gap: '99999999999d' is longer than 100 years"
    ]


def test_bad_time_zone_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[business_hours]\ntimezone = "Europe/Sofiya"\n')
    assert problems(path) == [
        f"{path}: [business_hours] timezone: 'Europe/Sofiya' is not a known IANA time zone"
    ]


def test_time_zone_abbreviation_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[business_hours]\ntimezone = "EST"\n')
    assert "is not an IANA time zone" in problems(path)[0]


def test_missing_secret_variable_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[smtp]\npassword_env = "SMTP_PASSWORD"\n')
    assert problems(path) == [
        f"{path}: [smtp] password_env: environment variable SMTP_PASSWORD is not set"
    ]


def test_secret_is_read_from_the_named_variable_only(tmp_path: Path) -> None:
    path = write(tmp_path, '[smtp]\npassword_env = "SMTP_PASSWORD"\n')
    cfg = config.load(path, {"SMTP_PASSWORD": "s3cret"})
    assert cfg.secret("smtp", "password_env") == "s3cret"
    assert "s3cret" not in cfg.settings.model_dump_json()


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[smtp]\nport = "x"\nsecurity = "ssl"\n[sender]\nfrom = "not an address"\n'
        '[throttle.caps]\ntransactional = { per_day = 1 }\n[web]\nsecret_env = "WEB_KEY"\n',
    )
    found = problems(path)
    assert len(found) == 5
    assert {p.split(": ")[1] for p in found} == {
        "[smtp] port",
        "[smtp] security",
        "[sender] from",
        "[throttle] caps.transactional",
        "[web] secret_env",
    }


def test_environment_overrides_a_key_and_is_named_when_wrong(tmp_path: Path) -> None:
    path = write(tmp_path, "[smtp]\nport = 25\n")
    cfg = config.load(path, {"MAILER_SMTP__PORT": "587", "MAILER_SMTP__HOST": "mx.example.com"})
    assert (cfg.settings.smtp.port, cfg.settings.smtp.host) == (587, "mx.example.com")
    (problem,) = problems(path, {"MAILER_SMTP__PORT": "many"})
    assert problem.startswith("MAILER_SMTP__PORT (environment): [smtp] port:")


def test_environment_override_of_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    (problem,) = problems(path, {"MAILER_SMTP__HOSTNAME": "x"})
    assert problem.startswith("MAILER_SMTP__HOSTNAME (environment): [smtp] hostname: unknown key")
    (problem,) = problems(path, {"MAILER_BOGUS__KEY": "1"})
    assert problem.startswith("MAILER_BOGUS__KEY (environment): [bogus]: unknown key")


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[smtp]\nport = \n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: not valid TOML") and "line 2" in problem


def test_missing_file_says_how_to_choose_another(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path / "nope.toml")
    assert "MAILER_CONFIG" in problem


def test_sender_address_is_validated_and_display_name_kept(tmp_path: Path) -> None:
    path = write(tmp_path, '[sender]\nfrom = "Служба за клиенти <Help@Example.COM>"\n')
    assert config.load(path, {}).settings.sender.from_ == ("Служба за клиенти <Help@example.com>")


def test_business_hours_must_open_before_they_close(tmp_path: Path) -> None:
    path = write(tmp_path, '[business_hours]\nopen = "18:00"\nclose = "09:00"\n')
    assert problems(path) == [f"{path}: [business_hours]: open must be earlier than close"]


def test_unknown_holidays_country_is_refused_when_the_file_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, '[business_hours]\nholidays = "XX"\n')
    assert problems(path) == [
        f"{path}: [business_hours] holidays: public holidays are not known for country 'XX';"
        " use a two-letter ISO code such as 'BG' or 'DE', or \"\" for none"
    ]
    lower = write(tmp_path, '[business_hours]\nholidays = "bg"\n')
    assert config.load(lower, {}).settings.business_hours.holidays == "BG"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://shop:s3cret@db/shop", "unsupported database 'mysql'; use sqlite:///PATH or"),
        ("postgresql+psycopg2://db/shop", "unsupported database 'postgresql+psycopg2'"),
        ("postgresql//shop:s3cret@db/shop", "not a database URL; use sqlite:///PATH or"),
        ("postgresql://shop:s3cret@db:port/shop", "not a database URL"),
        ("sqlite:/", "not a database URL"),
        ("nonsense", "not a database URL"),
        ("sqlite://", "an SQLite URL names a file after three slashes"),
    ],
)
def test_database_url_is_sqlite_or_postgresql_and_its_password_is_never_repeated(
    tmp_path: Path, url: str, message: str
) -> None:
    path = write(tmp_path, f'[database]\nurl = "{url}"\n')
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: [database] url: {message}")
    assert "s3cret" not in problem


@pytest.mark.parametrize(
    "url", ["sqlite:///var/mailer.db", "postgresql://u:p@db:5432/m", "postgres://db/m"]
)
def test_supported_database_urls_are_accepted(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, f'[database]\nurl = "{url}"\n')
    assert config.load(path, {}).settings.database.url == url


def test_a_config_saved_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    """Windows Notepad begins UTF-8 files with one, which TOML does not allow: it was "not
    valid TOML (at line 1, column 1)"."""
    path = write(tmp_path, '\ufeff[database]\nurl = "sqlite:///var/x.db"\n')
    assert config.load(path, {}).settings.database.url == "sqlite:///var/x.db"


def test_a_folder_or_a_binary_file_given_as_the_config_is_one_problem(tmp_path: Path) -> None:
    assert problems(tmp_path) == [f"{tmp_path}: is a folder; name the config.toml file inside it"]
    binary = tmp_path / "mailer.db"
    binary.write_bytes(b"SQLite format 3\x00\xff\xfe\x00")
    (problem,) = problems(binary)
    assert problem.startswith(f"{binary}: not UTF-8 text")


@pytest.mark.parametrize(
    "address",
    [
        "support@intranet.local",
        "help@shop.internal",
        "Test Desk <desk@qa.test>",
        "root@localhost",
        "noreply@mail.localhost",
        "bounce@nowhere.invalid",
        "support@shop.example",
    ],
)
def test_sender_at_a_special_use_domain_is_accepted(tmp_path: Path, address: str) -> None:
    path = write(tmp_path, f'[sender]\nfrom = "{address}"\nreply_to = "{address}"\n')
    sender = config.load(path, {}).settings.sender
    assert sender.from_ == sender.reply_to == address


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("not an address", "'not an address' is not a valid email address"),
        ("a@", "'a@' is not a valid email address"),
        ("@b.com", "'@b.com' is not a valid email address"),
        ("sup port@b.com", "'sup port@b.com' is not a valid email address"),
        ("john@gmail", "'john@gmail' is not a valid email address"),
        ("a@b.com\\r\\nBcc: all@b.com", "contains a line break or control character"),
        ("Support <>", "is not an address such as 'Support <help@example.com>'"),
    ],
)
def test_sender_that_is_not_an_address_is_refused(
    tmp_path: Path, address: str, message: str
) -> None:
    path = write(tmp_path, f'[sender]\nfrom = "{address}"\n')
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: [sender] from: ") and message in problem


def test_settings_that_would_stop_start_up_are_refused_when_the_file_is_read(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, '[business_hours]\ndays = []\n[web]\nbind = "127.0.0.1:99999"\n')
    assert problems(path) == [
        f"{path}: [business_hours] days: business hours need at least one working day,"
        " and none is set",
        f"{path}: [web] bind: '127.0.0.1:99999' is not host:port such as '127.0.0.1:8025'"
        " (port 0-65535)",
    ]


def test_trusted_proxies_are_addresses_or_networks_and_a_bad_one_is_named(
    tmp_path: Path,
) -> None:
    good = write(tmp_path, '[web]\ntrusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1"]\n')
    networks = config.load(good, {}).settings.web.trusted_proxies
    assert [str(n) for n in networks] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
    assert config.load(ROOT / "config.toml", {}).settings.web.trusted_proxies == []
    bad = write(tmp_path, '[web]\ntrusted_proxies = ["127.0.0.1", "proxy.local", "10.1.2.3/8"]\n')
    first, second = problems(bad)
    assert first.startswith(f"{bad}: [web] trusted_proxies.1: 'proxy.local' is not an address")
    host_bits = "'10.1.2.3/8' has host bits set: the network is '10.0.0.0/8'"
    assert second == f"{bad}: [web] trusted_proxies.2: {host_bits}"
    (env,) = problems(good, {"MAILER_WEB__TRUSTED_PROXIES": '["nginx"]'})
    assert env.startswith("MAILER_WEB__TRUSTED_PROXIES (environment): [web] trusted_proxies")


def test_a_bounce_mailbox_is_off_unless_set_and_its_keys_are_checked(tmp_path: Path) -> None:
    assert not config.load(write(tmp_path, ""), {}).settings.bounces.imap.enabled
    path = write(
        tmp_path,
        '[bounces.imap]\nhost = "imap.example.com"\nusername = "bounces"\n'
        'password_env = "BOUNCE_PASSWORD"\nprocessed = "move:Read"\n',
    )
    cfg = config.load(path, {"BOUNCE_PASSWORD": "s3cret"})
    imap = cfg.settings.bounces.imap
    assert imap.enabled and (imap.port, imap.security, imap.mailbox) == (993, "tls", "INBOX")
    assert cfg.secret("bounces.imap", "password_env") == "s3cret"
    assert problems(path) == [
        f"{path}: [bounces.imap] password_env: environment variable BOUNCE_PASSWORD is not set"
    ]
    bad = write(
        tmp_path,
        '[bounces.imap]\nhost = "imap.example.com"\nusername = "bounces"\nport = 0\n'
        'security = "ssl"\nprocessed = "delete"\npoll_secs = 5\n',
    )
    found = problems(bad)
    assert {p.split(": ")[1] for p in found} == {
        "[bounces.imap] port",
        "[bounces.imap] security",
        "[bounces.imap] processed",
        "[bounces.imap] poll_secs",
    }
    assert f'{bad}: [bounces.imap] poll_secs: unknown key (did you mean "poll_seconds"?)' in found
    assert all("\n" not in problem for problem in found)
    half = write(tmp_path, '[bounces.imap]\nmailbox = "Bounces"\n')
    assert problems(half) == [
        f"{half}: [bounces.imap]: set host and username to watch a bounce mailbox,"
        " or leave out the section"
    ]
    (env,) = problems(half, {"MAILER_BOUNCES__IMAP": '{host = "h", username = "u", port = "x"}'})
    assert env.startswith("MAILER_BOUNCES__IMAP (environment): [bounces.imap] port:")
