"""Text from outside (a header, customer data, what staff type) held to one line, or to
plain lines.

Inbound parsing and outbound templates both need it, and a subject read in one and
written by the other must be cleaned the same way.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


def one_line(text: str) -> str:
    """Control characters (CR and LF above all) become single spaces, so a value cannot end
    a header line and start another."""
    return " ".join(CONTROL.sub(" ", text).split())


def plain_lines(text: str) -> str:
    """Text of several lines (a note) as it is kept: line breaks and tabs stay, every other
    control character goes (a NUL, which PostgreSQL cannot store; an escape sequence)."""
    return _CONTROL_BUT_LINES.sub("", text.replace("\r\n", "\n")).strip()


def half_a_character(text: str) -> bool:
    """Holds half of a UTF-16 surrogate pair, which JSON's escapes can carry (a client that
    cut a string inside an emoji) but no UTF-8 text can: no database, page or message."""
    return _SURROGATE.search(text) is not None
