"""`mailer api-keys` as an admin runs it: the key printed once, listed without it, revoked."""

from __future__ import annotations

import json

from mailer.api import keys
from tests.command import Mailer

# the fixtures of the `mailer` command's tests
from tests.command import mailer as mailer
from tests.command import project as project


def test_an_admin_creates_lists_and_revokes_keys(mailer: Mailer) -> None:
    mailer("db", "upgrade")
    made = mailer("api-keys", "create", "shop", "--scope", "customers:write", "--scope", "send")
    secret = made.stdout.strip()
    assert secret.startswith("mlr_") and len(secret) > 40 and "\n" not in secret
    assert "customers:write, send, 600 requests a minute" in made.stderr
    assert "shown only now" in made.stderr
    mailer("api-keys", "create", "crm", "--scope", "customers:read", "--rate", "60")
    listed = json.loads(mailer("api-keys", "list", "--json").stdout)
    assert [(k["name"], k["scopes"], k["rate"]) for k in listed] == [
        ("crm", "customers:read", 60),
        ("shop", "customers:write send", None),
    ]
    assert secret not in json.dumps(listed) and keys.hash_key(secret) not in json.dumps(listed)
    assert listed[1]["prefix"] == secret[: keys.PREFIX_LENGTH] and listed[1]["revoked_at"] is None
    revoked = mailer("api-keys", "revoke", "shop")
    assert revoked.stdout.startswith(f"key shop ({listed[1]['prefix']}…) is revoked since")
    mailer("api-keys", "revoke", str(listed[0]["id"]))
    after = json.loads(mailer("api-keys", "list", "--json").stdout)
    assert all(k["revoked_at"] for k in after)
    assert "shop" in mailer("api-keys", "list").stdout


def test_mistakes_are_one_line_each(mailer: Mailer) -> None:
    mailer("db", "upgrade")
    wrong = mailer("api-keys", "create", "shop", "--scope", "customers:delete", check=False)
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert wrong.stderr.strip() == (
        "error: --scope: unknown scope 'customers:delete'; one of customers:read, "
        "customers:write, orders:write, events:write, send, inquiries:read"
    )
    mailer("api-keys", "create", "shop", "--scope", "send")
    twice = mailer("api-keys", "create", "shop", "--scope", "send", check=False)
    assert twice.stderr.strip() == (
        "error: NAME: there is a key named 'shop' already (revoked keys keep their name)"
    )
    slow = mailer("api-keys", "create", "slow", "--scope", "send", "--rate", "0", check=False)
    assert slow.stderr.strip() == "error: --rate: the rate must be at least 1 request a minute"
    missing = mailer("api-keys", "revoke", "nobody", check=False)
    assert missing.stderr.strip() == (
        "error: no API key 'nobody'; `mailer api-keys list` shows them"
    )
