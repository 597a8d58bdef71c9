"""Text from outside (a header, customer data) held to one line.

Inbound parsing and outbound templates both need it, and a subject read in one and
written by the other must be cleaned the same way.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(text: str) -> str:
    """Control characters (CR and LF above all) become single spaces, so a value cannot end
    a header line and start another."""
    return " ".join(CONTROL.sub(" ", text).split())
