"""The language a new sender writes in, so that their acknowledgement, and what mailer
sends them after, is in it when a template speaks it.

The model is py3langid's (a maintained fork of langid.py, BSD licensed): naive Bayes over
byte n-grams of 97 languages, Bulgarian, Indonesian and Tagalog among them, shipped inside
the wheel; about 0.2 ms a message and no service to call. It is loaded on first use, in
about a second (the inbox watcher when it starts, the web app before it serves): most
commands never need it.

Only a confident answer counts: the model must find the language more likely than all its
other languages together (Indonesian mail is typically read as 0.67-0.79 Indonesian and the
rest Malay, its close relative). A short or mixed message says nothing and the sender gets
the default language, as before. The model takes about 55 MB of memory once loaded.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

CONFIDENT = 0.5  # the first choice's probability, over all the model's languages
SAMPLE = 2000  # characters read: enough to tell, and a bounded cost for a long message


def written_in(text: str, offered: Collection[str]) -> str | None:
    """The language ``text`` is written in (an ISO 639-1 code, as template folders are
    named), if it is one of ``offered`` and the model is sure of it; None otherwise."""
    if not offered or not text.strip():
        return None
    return choose(_identifier().rank(text[:SAMPLE]), offered)


def load() -> None:
    """Load the model now (about a second), before a caller holds anything that others wait
    for; later calls cost nothing."""
    _identifier()


def choose(ranked: Sequence[tuple[str, float]], offered: Collection[str]) -> str | None:
    """The model's first choice when it is offered and more likely than not."""
    if not ranked:
        return None
    language, probability = ranked[0]
    return language if probability > CONFIDENT and language in offered else None


@functools.cache
def _identifier() -> LanguageIdentifier:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
