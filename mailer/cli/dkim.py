"""`mailer dkim ...`: make a signing key, and see that DNS publishes the one in use."""

from __future__ import annotations

from pathlib import Path

import dns.exception
import dns.resolver
import typer

from mailer.cli.common import app_of, err, group, out
from mailer.core import config
from mailer.core.errors import MailerError
from mailer.outbound import dkim

app = group("DKIM signing keys: make one, check what DNS publishes.")

DNS_SECONDS = 5.0  # how long `check` waits for a DNS answer


@app.command("keygen")
def keygen(
    ctx: typer.Context,
    selector: str = typer.Option(..., "--selector", help="The name the key is published under."),
    algorithm: str = typer.Option(
        "rsa", "--algorithm", help="rsa (2048 bits, verified everywhere) or ed25519 (RFC 8463)."
    ),
    out_file: Path | None = typer.Option(
        None, "--out", metavar="FILE", help="[default: var/dkim/SELECTOR.pem under [paths] data]"
    ),
) -> None:
    """Write a new private key and print the DNS TXT record that publishes its public half."""
    cfg = app_of(ctx).config
    try:
        name = config.dns_name(selector, "DKIM selector", "mail2026")
    except ValueError as exc:
        raise MailerError(f"--selector: {exc}") from None
    path = out_file or dkim.key_path(cfg, name)
    if path.is_dir():
        raise MailerError(f"--out {path} is a folder; name the key's file, e.g. {path / name}.pem")
    if path.exists():
        raise MailerError(f"{path} exists; keep it, or choose another --selector or --out")
    private = dkim.generate(_algorithm(algorithm))
    dkim.write_new(path, private)
    key = dkim.Key(name, dkim.signing_domain(cfg), private)
    out.print(dkim.zone_line(key), soft_wrap=True)
    err.print(
        f"wrote {path} (readable by you only). Publish the record above at {key.dns_name}, "
        f'then set [sender] dkim_selector = "{name}"'
        + ("" if out_file is None else f' and dkim_key_file = "{path}"')
        + "; `mailer dkim check` compares them"
    )


def _algorithm(text: str) -> dkim.Algorithm:
    if text == "rsa":
        return "rsa"
    if text == "ed25519":
        return "ed25519"
    raise MailerError(f"--algorithm {text!r}: use rsa or ed25519")


@app.command("check")
def check(
    ctx: typer.Context,
    record: str | None = typer.Option(
        None, "--record", metavar="TEXT", help="Compare with this TXT record instead of DNS."
    ),
    nameserver: str | None = typer.Option(
        None, "--nameserver", metavar="HOST[:PORT]", help="Ask this DNS server [default: system]."
    ),
) -> None:
    """Whether each configured key is the one published for its selector: mail signed with
    a key DNS does not publish fails verification everywhere."""
    signer = dkim.from_config(app_of(ctx).config)
    if signer is None:
        raise MailerError("no [sender] dkim_selector is set: mail goes out unsigned")
    wrong = 0
    for key in signer.keys:
        published = record if record is not None else _lookup(key.dns_name, nameserver)
        try:
            same = dkim.published_key(published) == dkim.published_key(key.public_record)
        except ValueError as exc:
            raise MailerError(f"{key.dns_name}: {exc}") from None
        if same:
            out.print(f"{key.dns_name}: publishes the {key.algorithm} key mailer signs with")
        else:
            wrong += 1
            out.print(f"{key.dns_name}: publishes another key; publish instead:")
            out.print(dkim.zone_line(key), soft_wrap=True)
    if wrong:
        raise typer.Exit(1)


def _lookup(name: str, nameserver: str | None) -> str:
    resolver = dns.resolver.Resolver(configure=nameserver is None)
    if nameserver is not None:
        host, _, port = nameserver.partition(":")
        resolver.nameservers = [host]
        resolver.port = int(port) if port.isdigit() else 53
    try:
        answer = resolver.resolve(name, "TXT", lifetime=DNS_SECONDS)
    except dns.resolver.NXDOMAIN:
        raise MailerError(f"{name}: no such name in DNS; publish the record first") from None
    except (dns.exception.DNSException, OSError) as exc:
        raise MailerError(f"{name}: DNS did not answer ({exc}); try --record TEXT") from None
    texts = [b"".join(rdata.strings).decode(errors="replace") for rdata in answer]
    return next((text for text in texts if "p=" in text), texts[0])
