"""A self-signed certificate for the test servers on loopback (Dovecot, the SMTP sink), made
by openssl, which ``scripts/test`` installs."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """``cert.pem`` and ``key.pem`` written in ``directory``: a certificate for localhost and
    127.0.0.1 that a client trusts when it is given as its CA file."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
