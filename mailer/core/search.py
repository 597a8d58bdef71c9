"""What a search box means: "contains", in any case and any script, whatever was typed.

Databases fold case differently (SQLite's ``lower()`` and ``LIKE`` fold ASCII only;
PostgreSQL folds by its ctype, ASCII only in a "C" database), so text that is searched by
case is folded here, in Python, both when it is stored and when it is looked for.
"""

from __future__ import annotations

import unicodedata


def term(typed: str) -> str:
    """What the person meant: control characters (a NUL from a crafted link, a pasted tab)
    are never part of a search; whitespace ones become spaces, the rest are dropped."""
    if typed.isprintable():  # no control character (nor other unprintable ones): as typed
        return typed.strip()
    kept = (
        (" " if char.isspace() else "") if unicodedata.category(char) == "Cc" else char
        for char in typed
    )
    return "".join(kept).strip()


def fold(text: str) -> str:
    """Caseless and in one Unicode form: "ИВАНОВА", "Иванова" and "иванова" fold alike,
    as do "STRASSE" and "Straße", or a precomposed "é" and "e" with a combining accent."""
    return unicodedata.normalize("NFKC", term(text)).casefold()
