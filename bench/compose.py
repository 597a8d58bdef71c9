"""How long `compose` takes for a 5 KB HTML + text newsletter, against an EmailMessage build.

    .venv/bin/python bench/compose.py [--messages 2000] [--rounds 5]

Prints the median microseconds per message over the rounds, for an English and a Bulgarian
message (ASCII-heavy HTML goes quoted-printable, Cyrillic text base64), and what that
leaves for the delivery loop on one core.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage

from mailer.outbound.compose import Envelope, compose, list_unsubscribe_headers

SENDER = "Northwind Coffee Roasters <news@northwind.example>"
UNSUBSCRIBE = list_unsubscribe_headers(
    "https://mail.northwind.example/u/eyJjIjoxMjM0NTYsInQiOiJuZXdzIn0.c2lnbmF0dXJl",
    "unsubscribe@northwind.example",
)
STYLE = 'style="font-family: Georgia, serif; font-size: 16px; line-height: 1.5; color: #333333;"'
LANGUAGES = {
    "en": (
        "Ana Petrova",
        "December news from the roastery: a new Ethiopian natural and our holiday hours",
        "This month we roasted a washed Yirgacheffe with notes of bergamot and peach. ",
    ),
    "bg": (
        "Мария Иванова",
        "Декемврийски новини от печатницата: нов етиопски кафе и празнично работно време",
        "Този месец изпекохме измит Иргачефе с нотки на бергамот и праскова за вас. ",  # noqa: RUF001
    ),
}


def newsletter(sentence: str) -> tuple[str, str]:
    """About 5 KB of inlined HTML and its text part, like a rendered template."""
    paragraphs: list[str] = []
    while len("".join(f"<p {STYLE}>{p}</p>\n" for p in paragraphs).encode()) < 5000:
        paragraphs.append(sentence * 3)
    html = "\n".join(f"<p {STYLE}>{p}</p>" for p in paragraphs)
    html = f'<html><body><table width="100%"><tr><td>\n{html}\n</td></tr></table></body></html>'
    return html, "\n\n".join(paragraphs) + "\n"


def with_compose(name: str, subject: str, text: str, html: str) -> Callable[[], bytes]:
    envelope = Envelope(
        from_=SENDER,
        to_address="customer@example.com",
        to_name=name,
        date=datetime(2026, 12, 1, 9, tzinfo=UTC),
    )
    return lambda: compose(envelope, subject, text, html, headers=UNSUBSCRIBE)


def with_email_message(name: str, subject: str, text: str, html: str) -> Callable[[], bytes]:
    def build() -> bytes:
        message = EmailMessage()
        message["Date"] = datetime(2026, 12, 1, 9, tzinfo=UTC)
        message["From"] = SENDER
        message["To"] = f"{name} <customer@example.com>"
        message["Subject"] = subject
        message["Message-ID"] = "<bench@northwind.example>"
        for header, value in UNSUBSCRIBE.items():
            message[header] = value
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return message.as_bytes(policy=policy.SMTP)

    return build


def microseconds(build: Callable[[], bytes], messages: int, rounds: int) -> float:
    """The median over rounds of the mean time per message."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(messages):
            build()
        times.append((time.perf_counter() - start) / messages * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for language, (name, subject, sentence) in LANGUAGES.items():
        html, text = newsletter(sentence)
        ours = microseconds(with_compose(name, subject, text, html), args.messages, args.rounds)
        baseline = microseconds(
            with_email_message(name, subject, text, html), args.messages // 10, args.rounds
        )
        size = len(with_compose(name, subject, text, html)())
        print(
            f"{language}: html {len(html.encode()):,} B, message {size:,} B: "
            f"compose {ours:.0f} us/message ({1e6 / ours:,.0f}/s on one core), "
            f"EmailMessage {baseline:.0f} us/message ({baseline / ours:.0f}x slower)"
        )


if __name__ == "__main__":
    main()
