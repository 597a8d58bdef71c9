"""The `mailer` command as a person runs it, on real databases; `run` and `web` in real
processes, the other commands in this one (tests/command.py)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailer import cli
from mailer.cli import common
from mailer.inbound import inquiries
from mailer.inbound.parsing import parse
from mailer.sandbox import smtp_server
from mailer.store import db
from tests.command import Mailer, add_user, runner

# the fixtures of the `mailer` command's tests
from tests.command import mailer as mailer
from tests.command import on_sqlite as on_sqlite
from tests.command import project as project
from tests.command import with_demo as with_demo
from tests.pg import free_port


def test_commands_before_db_upgrade_say_what_to_run(project: dict[str, str]) -> None:
    """In a process of its own: `python -m mailer` itself, its exit code and its stderr."""
    result = runner(project, process=True)("customers", "list", check=False)
    assert result.returncode == 1
    assert "`mailer db upgrade` creates one there" in result.stderr or (
        "run `mailer db upgrade` first" in result.stderr
    )


def test_a_mistyped_sqlite_path_is_named_and_no_empty_database_is_made(
    on_sqlite: tuple[Mailer, dict[str, str]], tmp_path: Path
) -> None:
    """A typo in [database] url must not look like a database whose data is gone."""
    mailer, env = on_sqlite
    mailer("db", "upgrade")
    typo = tmp_path / "var" / "maler.db"
    result = runner({**env, "MAILER_DATABASE__URL": f"sqlite:///{typo}"})("check", check=False)
    assert result.returncode == 1 and not typo.exists()
    assert f"[database] url: no database at {typo}; `mailer db upgrade` creates one there" in (
        result.stdout
    )


def test_db_upgrade_creates_then_reports_up_to_date(mailer: Mailer) -> None:
    assert "upgraded from empty" in mailer("db", "upgrade").stdout
    assert "up to date" in mailer("db", "upgrade").stdout


def test_import_reports_rejected_rows_by_file_and_line_and_exits_1(
    with_demo: Mailer, tmp_path: Path
) -> None:
    csv = tmp_path / "more.csv"
    csv.write_text("email,name\nnew@example.com,Нов Клиент\nbroken@,Broken\n", encoding="utf-8-sig")
    result = with_demo("customers", "import", str(csv), check=False)
    assert result.returncode == 1
    assert f"{csv}:3: rejected broken@" in result.stderr
    assert "1 added, 0 updated, 0 unchanged, 1 rejected" in result.stdout
    report = json.loads(with_demo("customers", "import", str(csv), "--json", check=False).stdout)
    assert report["unchanged"] == 1 and report["rejected"][0]["line"] == 3


def test_import_rejects_each_unreadable_row_by_line_and_finishes_the_rest(
    with_demo: Mailer, tmp_path: Path
) -> None:
    """A 200 KiB cell, a byte that is not UTF-8 and a terminal escape, all past the first
    batch: each row is named by its line, none stops the import or reaches the terminal raw."""
    rows = [f"c{i}@example.com,Customer {i},n" for i in range(3000)]
    rows[1500] = "big@example.com,Big," + "x" * 200 * 1024
    rows[2500] = "latin@example.com,Zo\udce9,n"  # the byte 0xE9 alone
    rows[2600] = "\x1b[31mred@example.com,Red,n"
    csv = tmp_path / "late.csv"
    csv.write_bytes(
        ("email,name,notes\n" + "\n".join(rows) + "\n").encode("utf-8", "surrogateescape")
    )
    result = with_demo("customers", "import", str(csv), check=False)
    assert result.returncode == 1
    assert f"{csv}:1502: rejected big@example.com: notes is 200 KiB long" in result.stderr
    assert f"{csv}:2502: rejected latin@example.com: line 2502: byte 0xE9 is not UTF-8" in (
        result.stderr
    )
    assert f"{csv}:2602: rejected \\x1b[31mred@example.com: " in result.stderr
    assert "\x1b" not in result.stderr
    assert "2997 added, 0 updated, 0 unchanged, 3 rejected" in result.stdout
    report = json.loads(with_demo("customers", "import", str(csv), "--json", check=False).stdout)
    assert report["unchanged"] == 2997
    assert [r["line"] for r in report["rejected"]] == [1502, 2502, 2602]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: path.mkdir(), "a directory, not a CSV file"),
        (lambda path: path.write_bytes(b"PK\x03\x04\x00\x00email"), "not a text file"),
    ],
    ids=["directory", "spreadsheet"],
)
def test_import_of_a_file_it_cannot_read_says_so_in_one_line_and_saves_nothing(
    mailer: Mailer, tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    mailer("db", "upgrade")
    path = tmp_path / "customers.csv"
    make(path)
    result = mailer("customers", "import", str(path), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {path}: {message}")
    assert result.stderr.count("\n") == 1
    assert json.loads(mailer("customers", "list", "--json").stdout) == []


def test_list_and_show_print_json_that_parses(with_demo: Mailer) -> None:
    listed = json.loads(with_demo("customers", "list", "--tag", "webinar", "--json").stdout)
    assert {c["email"] for c in listed} == {
        "maria.ivanova@example.com",
        "siti.rahma@example.com",
        "jose.reyes@example.com",
        "liam.oconnor@example.com",
    }
    shown = json.loads(with_demo("customers", "show", "Maria.Ivanova@example.com", "--json").stdout)
    assert shown["name"] == "Мария Иванова" and shown["fields"] == {"city": "София"}


def test_list_search_finds_any_script_in_any_case_and_takes_no_wildcards(
    with_demo: Mailer,
) -> None:
    def listed(search: str) -> list[dict[str, object]]:
        shown = with_demo("customers", "list", "--search", search, "--json").stdout
        return list(json.loads(shown))

    for typed in ("ИВАНОВА", "мария", "Мар\x01ия"):  # noqa: RUF001
        assert [c["email"] for c in listed(typed)] == ["maria.ivanova@example.com"], typed
    assert listed("%") == listed("_") == []
    assert "search_text" not in listed("Мария")[0]  # the search's own column stays inside


def test_unsubscribe_shows_at_once_in_the_profile(with_demo: Mailer) -> None:
    with_demo("customers", "unsubscribe", "emma.wilson@example.com")
    shown = json.loads(with_demo("customers", "show", "emma.wilson@example.com", "--json").stdout)
    assert shown["unsubscribed_at"] is not None


def test_contacts_logged_show_on_the_customers_timeline_and_last_contact(
    with_demo: Mailer,
) -> None:
    maria = "maria.ivanova@example.com"
    call = ("--kind", "call", "--by", "sam")
    with_demo("contacts", "log", maria, *call, "--direction", "out", "--duration", "15m",
              "--outcome", "agreed a demo", "--note", "About the grinder",
              "--at", "2026-11-20T10:00:00+02:00")  # fmt: skip
    with_demo("contacts", "log", maria, "--kind", "note", "--by", "sam",
              "--note", "Prefers <b>mornings</b>", "--at", "2026-11-21T09:00:00+00:00")  # fmt: skip
    logged = with_demo("contacts", "log", maria, *call, "--direction", "in",
                       "--at", "2026-11-22T08:00:00Z", "--json")  # fmt: skip
    assert json.loads(logged.stdout)["kind"] == "call"
    shown = json.loads(with_demo("customers", "show", maria, "--json").stdout)
    assert shown["name"] == "Мария Иванова" and {"next_contact", "history"} <= set(shown)
    assert [(e["kind"], e["direction"], e["at"]) for e in shown["timeline"]] == [
        ("call", "in", "2026-11-22T08:00:00+00:00"),
        ("note", None, "2026-11-21T09:00:00+00:00"),
        ("call", "out", "2026-11-20T08:00:00+00:00"),
    ]
    first_call = shown["timeline"][2]
    assert (first_call["by"], first_call["text"]) == ("sam", "About the grinder")
    assert first_call["details"]["duration_seconds"] == 900
    assert shown["last_contact"] == {
        "out": {"at": "2026-11-20T08:00:00+00:00", "channel": "call"},
        "in": {"at": "2026-11-22T08:00:00+00:00", "channel": "call"},
    }
    table = with_demo("customers", "show", maria).stdout
    assert "we reached them  2026-11-20 08:00 UTC by call" in table


def test_the_list_sorts_and_filters_by_last_contact_and_fits_80_columns(
    with_demo: Mailer, project: dict[str, str]
) -> None:
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    # at noon UTC, so that the list shows the same day whatever zone it shows times in
    long_ago, lately = (noon - timedelta(days=d) for d in (200, 10))
    with_demo("contacts", "log", "maria.ivanova@example.com", "--kind", "call", "--direction",
              "out", "--by", "sam", "--at", long_ago.isoformat())  # fmt: skip
    with_demo("contacts", "log", "siti.rahma@example.com", "--kind", "call", "--direction",
              "in", "--by", "sam", "--at", lately.isoformat())  # fmt: skip

    def emails(*options: str) -> list[str]:
        found = json.loads(with_demo("customers", "list", *options, "--json").stdout)
        return [c["email"] for c in found]

    assert emails("--sort", "recent")[:2] == ["siti.rahma@example.com", "maria.ivanova@example.com"]
    assert emails("--sort", "quiet")[-2:] == ["maria.ivanova@example.com", "siti.rahma@example.com"]
    quiet = emails("--quiet", "90")
    assert "maria.ivanova@example.com" in quiet and "siti.rahma@example.com" not in quiet
    assert emails("--unanswered") == []  # nobody wrote yet
    refused = with_demo("customers", "list", "--sort", "loudest", check=False)
    assert refused.returncode == 2 and "'loudest' is not one of" in refused.stderr

    narrow = runner({**project, "COLUMNS": "80"})
    lines = narrow("customers", "list", "--sort", "recent").stdout.splitlines()
    assert len(lines) == 2 + 8  # header, rule, one line per customer of the demo
    assert all(len(line) <= 80 for line in lines)
    assert "Siti Rahmawati" in lines[2] and lately.strftime("%Y-%m-%d call") in lines[2]
    help_text = narrow("web", "--help").stdout
    assert "[web] bind" in help_text and "<bool>" not in help_text


def test_contacts_log_mistakes_are_one_line_and_exit_1(with_demo: Mailer) -> None:
    maria = "maria.ivanova@example.com"
    mistakes = {
        ("--kind", "fax", "--direction", "in"): "kind 'fax' is not one of call, meeting, note",
        ("--kind", "call", "--note", "hi"): "a call needs a direction: in (they reached us) "
        "or out (we reached them)",
        ("--kind", "note", "--direction", "out", "--note", "x"): "a note has no direction: "
        "leave it out",
        ("--kind", "note"): "a note needs some text",
        ("--kind", "call", "--direction", "in", "--at", "2026-11-20 10:00"): "--at '2026-11-20 "
        "10:00' has no UTC offset; write it with its UTC offset, e.g. 2026-12-01T09:00:00+02:00",
        ("--kind", "call", "--direction", "in", "--duration", "long"): "--duration: 'long' is "
        'not a duration; write a number and a unit, e.g. "90s", "15m", "20h", "7d", "2w" or '
        '"1h30m"',
        ("--kind", "call", "--direction", "in", "--duration", "8d"): "a call lasts at most a "
        "week: a longer one is a typo",
        ("--kind", "call", "--direction", "in", "--at", "2999-01-01T00:00:00Z"): "it has not "
        "happened yet: log a contact at or before now",
    }
    for args, said in mistakes.items():
        result = with_demo("contacts", "log", maria, *args, check=False)
        assert (result.returncode, result.stderr.strip()) == (1, f"error: {said}"), args
    unknown = with_demo("contacts", "log", "nobody@example.com", "--kind", "note", "--note", "x",
                        check=False)  # fmt: skip
    assert (unknown.returncode, unknown.stderr.strip()) == (
        1,
        "error: no customer nobody@example.com",
    )
    shown = json.loads(with_demo("customers", "show", maria, "--json").stdout)
    assert shown["timeline"] == [] and shown["last_contact"] == {"out": None, "in": None}


def test_unknown_customer_is_one_line_and_exit_1(with_demo: Mailer) -> None:
    result = with_demo("customers", "show", "nobody@example.com", check=False)
    assert (result.returncode, result.stderr.strip()) == (
        1,
        "error: no customer nobody@example.com",
    )


def test_config_mistakes_are_listed_without_a_traceback(
    mailer: Mailer, project: dict[str, str]
) -> None:
    config = Path(project["MAILER_CONFIG"])
    config.write_text(config.read_text() + '\n[smpt]\nhost = "x"\n', encoding="utf-8")
    result = mailer("check", check=False)
    assert result.returncode == 1
    assert f'{config}: [smpt]: unknown key (did you mean "smtp"?)' in result.stdout
    result = mailer("customers", "list", check=False)
    assert result.returncode == 1 and "[smpt]: unknown key" in result.stderr


def test_check_names_what_run_would_stop_on_in_the_same_words(
    on_sqlite: tuple[Mailer, dict[str, str]],
) -> None:
    mailer, env = on_sqlite
    env["MAILER_BUSINESS_HOURS__HOLIDAYS"] = "XX"
    env["MAILER_DATABASE__URL"] = "mysql://shop@db/shop"
    checked = mailer("check", check=False)
    assert checked.returncode == 1
    found = checked.stdout.splitlines()
    assert found == [
        "MAILER_DATABASE__URL (environment): [database] url: unsupported database 'mysql';"
        " use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
        "MAILER_BUSINESS_HOURS__HOLIDAYS (environment): [business_hours] holidays: public"
        " holidays are not known for country 'XX'; use a two-letter ISO code such as 'BG' or"
        " 'DE', or \"\" for none",
    ]
    for command in ("run", "web", "db"):
        started = mailer(command, *(["upgrade"] if command == "db" else []), check=False)
        assert started.returncode == 1
        assert started.stderr.splitlines() == [f"error: {line}" for line in found]


def test_a_database_that_cannot_be_created_and_a_folder_as_config_are_one_line(
    on_sqlite: tuple[Mailer, dict[str, str]], tmp_path: Path
) -> None:
    mailer, env = on_sqlite
    env["MAILER_DATABASE__URL"] = f"sqlite:///{tmp_path / 'config.toml' / 'mailer.db'}"
    problem = (
        "MAILER_DATABASE__URL (environment): [database] url: cannot create the folder"
        f" {tmp_path / 'config.toml'} for the SQLite file: {tmp_path / 'config.toml'} is a file"
    )
    result = mailer("db", "upgrade", check=False)
    assert (result.returncode, result.stderr) == (1, f"error: {problem}\n")
    result = mailer("customers", "list", check=False)
    assert result.returncode == 1 and "[database] url: no database at" in result.stderr
    assert result.stderr.count("\n") == 1
    result = mailer("--config", str(tmp_path), "customers", "list", check=False)
    assert (result.returncode, result.stderr) == (
        1,
        f"error: {tmp_path}: is a folder; name the config.toml file inside it\n",
    )
    # check too says only that: no guesses about folders beside a config that is not there
    del env["MAILER_PATHS__TEMPLATES"], env["MAILER_PATHS__SCHEDULES"]
    for given in (tmp_path, tmp_path / "missing.toml"):
        checked = mailer("--config", str(given), "check", check=False)
        assert checked.returncode == 1 and len(checked.stdout.splitlines()) == 1, checked.stdout


def test_check_warns_of_a_sender_at_a_special_use_domain_and_still_passes(
    mailer: Mailer, project: dict[str, str]
) -> None:
    mailer("db", "upgrade")
    project["MAILER_SENDER__FROM"] = "Support <support@intranet.local>"
    result = mailer("check")
    assert (
        "warning: MAILER_SENDER__FROM (environment): [sender] from: support@intranet.local is at"
        " a special-use domain (.local); mail to or from it will not leave your network"
    ) in result.stdout.splitlines()
    assert "are fine" in result.stdout


def test_check_warns_when_no_sender_is_set_and_mail_would_go_out_from_the_placeholder(
    mailer: Mailer, project: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    shipped = config.read_text(encoding="utf-8")
    without = re.sub(r"(?m)^(from|reply_to) = .*\n", "", shipped)
    assert without != shipped
    config.write_text(without, encoding="utf-8")
    mailer("db", "upgrade")
    result = mailer("check")
    assert (
        f"warning: {config}: [sender] from: not set: mail would go out from the placeholder"
        " Support <support@example.com>"
    ) in result.stdout.splitlines()
    assert "are fine" in result.stdout  # a warning: the placeholder works for a trial


def test_a_bug_is_one_line_saying_where_its_traceback_was_saved(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> None:
        raise KeyError("status")

    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    monkeypatch.setattr(cli, "app", broken)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    (line,) = capsys.readouterr().err.splitlines()
    found = re.fullmatch(
        r"error: unexpected KeyError: 'status' \(a bug in mailer; traceback saved in (\S+),"
        r" or run with MAILER_DEBUG=1\)",
        line,
    )
    assert found, line
    saved = Path(found.group(1))
    assert "raise KeyError" in saved.read_text()
    saved.unlink()
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(KeyError):
        cli.main()


def test_templates_list_and_check(mailer: Mailer) -> None:
    names = {t["name"] for t in json.loads(mailer("templates", "list", "--json").stdout)}
    assert {"ack", "newsletter", "birthday", "webinar_invite", "webinar_reminder"} <= names
    assert json.loads(mailer("templates", "check", "--json").stdout) == []


def test_preview_renders_in_the_customers_language(with_demo: Mailer) -> None:
    bulgarian = json.loads(
        with_demo(
            "templates", "preview", "birthday", "--customer", "maria.ivanova@example.com", "--json"
        ).stdout
    )
    assert bulgarian["variant"] == "bg"
    assert "Мария" in bulgarian["text"]
    english = json.loads(
        with_demo(
            "templates",
            "preview",
            "birthday",
            "--customer",
            "maria.ivanova@example.com",
            "--locale",
            "en",
            "--json",
        ).stdout
    )
    assert english["variant"] is None and english["subject"] != bulgarian["subject"]
    for about in ("desk_reply", "meeting_invitation", "subscribe_confirm"):  # one message each
        shown = with_demo("templates", "preview", about, "--customer", "maria.ivanova@example.com")
        assert "Мария" in shown.stdout or about == "desk_reply", about


def test_run_shows_the_whole_loop_in_the_sandbox_and_stops_on_sigterm(
    with_demo: Mailer, project: dict[str, str], tmp_path: Path
) -> None:
    # this runs on the real clock: no schedules, or a demo birthday on the day would join in
    (tmp_path / "no-schedules").mkdir()
    project["MAILER_PATHS__SCHEDULES"] = str(tmp_path / "no-schedules")
    project["MAILER_SANDBOX__SMTP_PORT"] = str(free_port())
    project["MAILER_SANDBOX__IMAP_PORT"] = str(free_port())
    with_demo("templates", "send-test", "birthday", "--to", "maria.ivanova@example.com")
    command = [sys.executable, "-m", "mailer", "run"]
    with subprocess.Popen(command, env=project, stderr=subprocess.PIPE, text=True) as daemon:
        try:
            started = _read_until(daemon, "is running", 30)
            assert "is running with 8 customers" in started
            web = re.search(r"web app on (http://\S+)", started)
            assert web is not None, started
            with urllib.request.urlopen(web.group(1) + "/healthz", timeout=10) as health:
                assert health.read() == b"ok\n"
            captured = _wait_for_capture(project["MAILER_DATABASE__URL"], 30, count=1)
            inquiry = ("--from", "Siti <siti.rahma@example.com>", "--subject", "Pesanan 17")
            with_demo("sandbox", "send-inquiry", *inquiry, "--body", "Kopi saya belum sampai.")
            # the inquiry itself, kept like any message, and its acknowledgement
            everything = _wait_for_capture(project["MAILER_DATABASE__URL"], 30, count=3)
            # SIGHUP reads the schedule files again: a broken one is reported, not fatal
            (tmp_path / "no-schedules" / "typo.toml").write_text('kind = "newsleter"\n')
            daemon.send_signal(signal.SIGHUP)
            reloaded = _read_until(daemon, "typo.toml not reloaded", 30)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=30) == 0
        finally:
            daemon.kill()
    assert captured[0]["recipients"] == ["maria.ivanova@example.com"]
    assert "not a kind of schedule" in reloaded
    ack = everything[0]
    assert ack["recipients"] == ["siti.rahma@example.com"]
    assert ack["subject"].startswith("Pesan Anda sudah kami terima [#")
    (logged,) = json.loads(with_demo("inquiries", "list", "--json").stdout)
    assert (logged["subject"], logged["status"]) == ("Pesanan 17", "acknowledged")
    shown = json.loads(with_demo("sandbox", "show", str(captured[0]["id"]), "--json").stdout)
    assert "Мария" in shown["text"] and shown["html"].startswith("<!DOCTYPE html>")
    sent = json.loads(with_demo("outbox", "list", "--status", "sent", "--json").stdout)
    assert [m["template"] for m in sent] == ["ack", "birthday"]
    profile = json.loads(
        with_demo("customers", "show", "maria.ivanova@example.com", "--json").stdout
    )
    assert [m["status"] for m in profile["history"]] == ["sent"]


def _wait_for_capture(database_url: str, seconds: float, count: int) -> list[dict[str, object]]:
    """Poll the sandbox table (bounded) until the daemon has delivered ``count`` messages."""
    engine = db.connect(database_url)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                found = smtp_server.find(conn)
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError("nothing reached the sandbox")
    finally:
        engine.dispose()


def test_outbox_show_and_retry_name_what_is_missing(with_demo: Mailer) -> None:
    result = with_demo("outbox", "show", "999", check=False)
    assert (result.returncode, result.stderr.strip()) == (1, "error: no outbox message 999")
    for past_ids in ("99999999999999999999999", "3000000000"):  # int4 on PostgreSQL
        result = with_demo("outbox", "show", past_ids, check=False)
        assert result.returncode == 2 and "should be less than or equal to" in result.stderr
    result = with_demo(
        "schedules", "run", "birthdays", "--at", "0001-01-01T00:00+01:00", check=False
    )
    assert (result.returncode, result.stderr.strip()) == (
        1,
        "error: --at '0001-01-01T00:00+01:00' is not between the years 1900 and 2999",
    )
    result = with_demo("outbox", "retry", "999", check=False)
    assert result.returncode == 1 and "no failed, expired, skipped or cancelled" in result.stderr


def test_an_admin_cancels_a_waiting_message_and_can_queue_it_again(with_demo: Mailer) -> None:
    with_demo("templates", "send-test", "birthday", "--to", "maria.ivanova@example.com")
    (queued,) = json.loads(with_demo("outbox", "list", "--json").stdout)
    cancelled = with_demo("outbox", "cancel", str(queued["id"]))
    assert cancelled.stdout.strip() == f"outbox message {queued['id']} is cancelled"
    (row,) = json.loads(with_demo("outbox", "list", "--json").stdout)
    assert (row["status"], row["reason"]) == ("cancelled", "cancelled by an operator")
    again = with_demo("outbox", "cancel", str(queued["id"]), check=False)
    assert (again.returncode, again.stderr.strip()) == (
        1,
        f"error: no queued, deferred or sending outbox message {queued['id']}",
    )
    with_demo("outbox", "retry", str(queued["id"]))
    (row,) = json.loads(with_demo("outbox", "list", "--json").stdout)
    assert row["status"] == "queued"


def test_send_test_refuses_a_bad_address_an_unknown_template_and_the_unsubscribed(
    with_demo: Mailer,
) -> None:
    result = with_demo("templates", "send-test", "birthday", "--to", "nobody@@x", check=False)
    assert result.returncode == 1 and "not a valid email address" in result.stderr
    result = with_demo("templates", "send-test", "nope", "--to", "a@example.com", check=False)
    assert result.returncode == 1 and "no such template" in result.stderr
    with_demo("customers", "unsubscribe", "siti.rahma@example.com")
    result = with_demo(
        "templates", "send-test", "newsletter", "--to", "siti.rahma@example.com", check=False
    )
    assert result.returncode == 1 and "tests do not go there" in result.stderr


def _read_until(process: subprocess.Popen[str], marker: str, seconds: float) -> str:
    """The process's stderr up to the chunk holding ``marker``, waiting at most ``seconds``.

    Read from the pipe itself: a buffered readline can keep a second line in Python's buffer,
    where select() never reports it, and the wait ran out with the marker already read."""
    assert process.stderr is not None
    pipe = process.stderr.fileno()
    deadline = time.monotonic() + seconds
    seen = b""
    while marker.encode() not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([pipe], [], [], 1)
        chunk = os.read(pipe, 65536) if ready else b""
        if ready and not chunk:
            break  # the process closed its stderr
        seen += chunk
    return seen.decode(errors="replace")


def test_support_lists_reads_and_moves_an_inquiry(with_demo: Mailer, database_url: str) -> None:
    raw = (
        b"From: Siti <siti.rahma@example.com>\r\nSubject: Pesanan saya\r\n"
        b"Message-ID: <q1@mail.example>\r\n\r\nKopi saya belum sampai.\r\n"
        b"\x1b]0;pwned\x07\x1b[31mmerah\r\n"  # retitles and recolours a terminal, raw
    )
    engine = db.connect(database_url)
    with engine.begin() as conn:
        logged = inquiries.log(conn, parse(raw), datetime.now(UTC))
    engine.dispose()
    listed = json.loads(with_demo("inquiries", "list", "--status", "new", "--json").stdout)
    assert [i["subject"] for i in listed] == ["Pesanan saya"]
    shown = with_demo("inquiries", "show", str(logged.inquiry_id)).stdout
    assert "Kopi saya belum sampai.\n\\x1b]0;pwned\\x07\\x1b[31mmerah" in shown
    assert "\x1b" not in shown
    with_demo("inquiries", "set-status", str(logged.inquiry_id), "answered")
    assert json.loads(with_demo("inquiries", "list", "--status", "new", "--json").stdout) == []
    result = with_demo("inquiries", "set-status", "999", "closed", check=False)
    assert (result.returncode, result.stderr.strip()) == (1, "error: no inquiry 999")


def test_schedules_list_shows_when_each_fires_next(with_demo: Mailer) -> None:
    listed = json.loads(with_demo("schedules", "list", "--json").stdout)
    by_name = {s["name"]: s for s in listed}
    assert set(by_name) == {"birthdays", "newsletter", "webinar-spring-roasting", "cart-reminder"}
    assert by_name["webinar-spring-roasting"]["next_fire"] == "2027-05-06T13:00:00+00:00"
    assert by_name["newsletter"]["zones"] >= 5  # one trigger per zone customers live in


def test_schedules_run_dry_run_shows_who_and_why_and_queues_nothing(with_demo: Mailer) -> None:
    at = ("--at", "2026-12-01T09:30:00+02:00")  # 09:00 in Sofia has just passed
    found = json.loads(
        with_demo("schedules", "run", "newsletter", "--dry-run", *at, "--json").stdout
    )
    sofia = next(run for run in found if run["zone"] == "Europe/Sofia")
    assert sofia["occurrence"] == "2026-12-01T09:00" and sofia["customers"] == 2
    assert {s["email"] for s in sofia["sample"]} == {
        "maria.ivanova@example.com",
        "georgi.petrov@example.com",
    }
    assert json.loads(with_demo("outbox", "list", "--json").stdout) == []
    queued = json.loads(with_demo("schedules", "run", "newsletter", *at, "--json").stdout)
    assert sum(run["queued"] for run in queued) == sum(run["customers"] for run in found)
    again = json.loads(
        with_demo("schedules", "run", "newsletter", "--dry-run", *at, "--json").stdout
    )
    assert {s["action"] for run in again for s in run["sample"]} == {"already queued"}


HOURLY = """\
kind = "newsletter"
template = "newsletter"
cron = "0 * * * *"
timezone = "UTC"
valid_for = "90m"
[audience]
tags_any = ["newsletter"]
[params]
headline = "Hourly"
intro = "News."
"""


def test_schedules_run_does_not_catch_up_what_was_planned_before_mailer_saw_it(
    with_demo: Mailer, project: dict[str, str], tmp_path: Path
) -> None:
    """A new hourly file: the last full hour is inside valid_for but history. The dry run
    says why nothing is due and keeps nothing; the run agrees; --at runs that hour on purpose."""
    (tmp_path / "new-schedules").mkdir()
    (tmp_path / "new-schedules" / "hourly.toml").write_text(HOURLY, encoding="utf-8")
    project["MAILER_PATHS__SCHEDULES"] = str(tmp_path / "new-schedules")
    looked = with_demo("schedules", "run", "hourly", "--dry-run").stdout
    assert "nothing of hourly is due" in looked and "does not catch up" in looked
    assert "nothing of hourly is due" in with_demo("schedules", "run", "hourly").stdout
    assert json.loads(with_demo("outbox", "list", "--json").stdout) == []
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    at = (hour + timedelta(minutes=1)).isoformat()
    queued = json.loads(with_demo("schedules", "run", "hourly", "--at", at, "--json").stdout)
    assert hour.strftime("%Y-%m-%dT%H:%M") in {run["occurrence"] for run in queued}
    assert sum(run["queued"] for run in queued) > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nosuch",), "no schedule named 'nosuch'"),
        (("newsletter", "--at", "2026-12-01 09:00"), "has no UTC offset"),
        (("newsletter", "--at", "tomorrow"), "is not a date and time"),
    ],
)
def test_schedules_run_refuses_what_it_cannot_do(
    with_demo: Mailer, args: tuple[str, ...], message: str
) -> None:
    result = with_demo("schedules", "run", *args, check=False)
    assert result.returncode == 1 and message in result.stderr


def test_users_are_added_with_a_role_and_listed_without_their_password(with_demo: Mailer) -> None:
    added = add_user(with_demo, "sam")
    assert added.returncode == 0, added.stderr
    assert "sam can now sign in as support" in added.stdout
    (listed,) = json.loads(with_demo("users", "list", "--json").stdout)
    assert (listed["name"], listed["role"]) == ("sam", "support")
    assert "password_hash" not in listed
    empty = with_demo("users", "add", "bo", "--role", "admin", "--password-stdin", check=False)
    assert empty.returncode == 1 and "at least 10 characters" in empty.stderr
    for name in ("", "bad name!"):
        refused = add_user(with_demo, name)
        assert (refused.returncode, refused.stderr) == (
            1,
            f"error: user name {name!r} is not 1-64 letters, digits or . _ - @ (it is typed to"
            " sign in)\n",
        )
    assert add_user(with_demo, "мария.и").returncode == 0  # a name in any script


def test_a_new_password_is_set_from_the_command_line_and_checked(with_demo: Mailer) -> None:
    add_user(with_demo, "sam")
    new = "a brand new passphrase\n"
    changed = with_demo("users", "password", "sam", "--password-stdin", stdin=new)
    assert "sam has a new password; their sessions have ended" in changed.stdout
    short = with_demo("users", "password", "sam", "--password-stdin", check=False, stdin="x\n")
    assert short.returncode == 1 and "at least 10 characters" in short.stderr
    nobody = with_demo("users", "password", "zed", "--password-stdin", check=False, stdin=new)
    assert nobody.returncode == 1 and "no user named 'zed'" in nobody.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "sam", "--role", "admin"), "error: there is already a user named 'sam'\n"),
        (("add", "bad name!", "--role", "admin"), "error: user name 'bad name!' is not 1-64"),
        (("add", "bo", "--role", "admin", "--timezone", "EST"), "error: timezone: 'EST' is not"),
        (("password", "zed"), "error: no user named 'zed'\n"),
    ],
)
def test_what_would_refuse_a_user_is_said_before_a_password_is_asked_for(
    with_demo: Mailer, args: tuple[str, ...], message: str
) -> None:
    """Typing a password twice to learn that the name is taken wastes the typing: nothing
    is on standard input here, and the refusal comes without a prompt."""
    add_user(with_demo, "sam")
    refused = with_demo("users", *args, check=False, stdin="")
    assert refused.returncode == 1 and refused.stderr.startswith(message), refused.stderr
    assert "Password" not in refused.stdout + refused.stderr


def test_web_serves_the_app_alone_and_stops_on_sigterm(
    with_demo: Mailer, project: dict[str, str]
) -> None:
    command = [sys.executable, "-m", "mailer", "web"]
    with subprocess.Popen(command, env=project, stderr=subprocess.PIPE, text=True) as web:
        try:
            started = _read_until(web, "web app on", 30)
            address = re.search(r"web app on (http://\S+)", started)
            assert address is not None, started
            with urllib.request.urlopen(address.group(1) + "/login", timeout=10) as page:
                assert b"Sign in" in page.read()
            web.send_signal(signal.SIGTERM)
            assert web.wait(timeout=30) == 0
        finally:
            web.kill()


def test_send_inquiry_without_a_running_sandbox_says_to_start_it(
    with_demo: Mailer, project: dict[str, str]
) -> None:
    project["MAILER_SANDBOX__SMTP_PORT"] = str(free_port())  # nothing listens there
    inquiry = ("--from", "ana@example.com", "--subject", "Hello", "--body", "Hi")
    result = with_demo("sandbox", "send-inquiry", *inquiry, check=False)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: the sandbox does not answer: cannot connect to 127.0.0.1:")
    assert line.endswith("; start `mailer run` first")


def test_users_get_a_display_name_a_zone_and_an_address_checked_on_the_way_in(
    with_demo: Mailer,
) -> None:
    added = add_user(with_demo, "sam", "--display-name", "Sam Ivanova", "--timezone", "Asia/Manila")
    assert added.returncode == 0, added.stderr
    with_demo("users", "set", "sam", "--email", "Sam@Northwind.example", "--display-name", "")
    (sam,) = json.loads(with_demo("users", "list", "--json").stdout)
    assert (sam["display_name"], sam["timezone"]) == (None, "Asia/Manila")
    assert sam["email"] == "Sam@northwind.example"
    zone = with_demo("users", "set", "sam", "--timezone", "EST", check=False)
    assert zone.returncode == 1 and "timezone: 'EST' is not an IANA time zone" in zone.stderr
    address = add_user(with_demo, "bo", "--email", "bo@")
    assert address.returncode == 1 and "email: 'bo@' is not a valid email address" in address.stderr
    assert (
        "no user named 'zed'" in with_demo("users", "set", "zed", "--email", "", check=False).stderr
    )


def test_follow_ups_are_added_in_the_assignees_zone_listed_and_done(with_demo: Mailer) -> None:
    assert add_user(with_demo, "sam", "--timezone", "Asia/Manila").returncode == 0
    maria = "maria.ivanova@example.com"
    added = with_demo(
        "followups",
        "add",
        maria,
        "--due",
        "2020-01-02 09:00",
        "--note",
        "call",
        "--assignee",
        "sam",
    )
    assert "follow-up 1 due 2020-01-02 01:00 UTC" in added.stdout  # 09:00 in Manila
    with_demo("followups", "add", maria, "--due", "3d", "--note", "send the catalogue")
    overdue = json.loads(with_demo("followups", "list", "--overdue", "--json").stdout)
    assert [(f["id"], f["email"], f["assignee"]) for f in overdue] == [(1, maria, "sam")]
    assert len(json.loads(with_demo("followups", "list", "--json").stdout)) == 2
    assert json.loads(with_demo("followups", "list", "--assignee", "sam", "--json").stdout)
    assert add_user(with_demo, "bo").returncode == 0
    assert json.loads(with_demo("followups", "list", "--assignee", "bo", "--json").stdout) == []
    misspelt = with_demo("followups", "list", "--assignee", "sma", check=False)
    assert (misspelt.returncode, misspelt.stderr) == (1, "error: no user named 'sma'\n")
    assert "follow-up 1 is done" in with_demo("followups", "done", "1").stdout
    assert with_demo("followups", "list", "--overdue", "--json").stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("nobody@example.com", "--due", "3d"),
            "no customer with the address 'nobody@example.com'",
        ),
        (("maria.ivanova@example.com", "--due", "3d", "--assignee", "zed"), "no staff user named"),
        (("maria.ivanova@example.com", "--due", "someday"), "due: 'someday' is not a due time"),
    ],
)
def test_a_follow_up_for_nobody_or_with_a_bad_due_time_is_one_line(
    with_demo: Mailer, args: tuple[str, ...], message: str
) -> None:
    result = with_demo("followups", "add", *args, "--note", "call", check=False)
    assert result.returncode == 1 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    done = with_demo("followups", "done", "99", check=False)
    assert done.returncode == 1 and "no open follow-up 99" in done.stderr


def test_an_import_stopped_with_ctrl_c_says_how_much_was_saved(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each batch is saved as it is read; the bar vanishes at Ctrl+C, so the operator is
    told what is saved and that running the command again finishes it."""
    with pytest.raises(KeyboardInterrupt), common.progress(300_000, "rows", quiet=False) as saved:
        saved(91_000)
        raise KeyboardInterrupt
    assert capsys.readouterr().err == (
        "interrupted: the first 91,000 of about 300,000 rows are saved (but for those with"
        " errors); the same command again adds the rest and leaves those as they are\n"
    )


def test_a_database_another_process_keeps_locked_is_said_so_with_what_to_do(
    on_sqlite: tuple[Mailer, dict[str, str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SQLite's one writer: a command that waited out the busy timeout (here 0.2 s, not 10)
    says who is likely writing, not only "database is locked"."""
    mailer, env = on_sqlite
    mailer("db", "upgrade")
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = env["MAILER_DATABASE__URL"].removeprefix("sqlite:///")
    csv = tmp_path / "new.csv"
    csv.write_text("email\nana@example.com\n", encoding="utf-8")
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # as an import holds it
        refused = mailer("customers", "import", str(csv), check=False)
    finally:
        writer.close()
    assert refused.returncode == 1
    assert refused.stderr == (
        "error: database: database is locked: another process kept writing to it (mailer run,"
        " an import); try again\n"
    )
