"""The last steps of making a message, run in a render worker right after its template:
composing the MIME bytes and DKIM-signing them (``TemplateStore.finish_all``).

Done there, the daemon gets each message back once, ready for SMTP, instead of getting the
rendered text, composing it itself and shipping the bytes out again to be signed: its own
share of a message shrinks to claiming, sending and recording. Everything here is plain
data the daemon worked out (addresses, headers, parts), so the worker needs no database
and no config; this module imports only what composing and signing need, as the worker
imports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from mailer.outbound.compose import Envelope, Part, compose
from mailer.outbound.dkim import Signer
from mailer.outbound.templates import RenderedMessage

__all__ = ["Finish", "Finished"]


class Finished(NamedTuple):
    """A message composed (and signed) in a render worker; a tuple, the cheapest to pickle."""

    subject: str
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Finish:
    """How to turn one rendered message into its bytes: everything but the template's text.
    ``signer`` and ``now`` are the same objects for a whole batch, so they are pickled once
    for it."""

    envelope: Envelope
    headers: Mapping[str, str]
    alternatives: Sequence[Part] = ()
    attachments: Sequence[Part] = ()
    signer: Signer | None = None
    now: datetime  # the signature's time

    def __call__(self, rendered: RenderedMessage) -> Finished:
        return Finished(rendered.subject, self.data(rendered))

    def data(self, rendered: RenderedMessage) -> bytes:
        """The message as SMTP carries it, signed when there is a signer."""
        data = compose(
            self.envelope,
            rendered.subject,
            rendered.text,
            rendered.html,
            headers=self.headers,
            alternatives=self.alternatives,
            attachments=self.attachments,
        )
        return data if self.signer is None else self.signer.sign(data, self.now)
