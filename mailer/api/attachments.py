"""Files sent with a transactional message: what the API takes, and what it refuses.

Refused, each naming the attachment: content that is not base64; a filename that is empty,
names a folder (``/``, ``\\``, ``..``) or holds control characters, which a mail client
would save somewhere else or show as something else; a media type that is not
``type/subtype``, or is a container MIME itself interprets (multipart, message); and
programs, by type, by file extension or by their first bytes, which Gmail and Outlook
refuse or strip anyway, so a receipt that carries one would bounce or arrive without it.
Too many files is 422; too many bytes together is 413, with the limit in the detail.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from mailer.api.problems import FieldError, item_error
from mailer.core.config import ApiSettings
from mailer.outbound.outbox import Attachment

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}")
# what the large mail providers refuse to carry (Gmail's list of blocked file types)
PROGRAM_EXTENSIONS = frozenset(
    {
        ".ade",
        ".adp",
        ".apk",
        ".appx",
        ".appxbundle",
        ".bat",
        ".cab",
        ".chm",
        ".cmd",
        ".com",
        ".cpl",
        ".diagcab",
        ".diagcfg",
        ".diagpkg",
        ".dll",
        ".dmg",
        ".ex",
        ".ex_",
        ".exe",
        ".hta",
        ".img",
        ".ins",
        ".iso",
        ".isp",
        ".jar",
        ".jnlp",
        ".js",
        ".jse",
        ".lib",
        ".lnk",
        ".mde",
        ".msc",
        ".msi",
        ".msix",
        ".msixbundle",
        ".msp",
        ".mst",
        ".nsh",
        ".pif",
        ".ps1",
        ".scr",
        ".sct",
        ".shb",
        ".sys",
        ".vb",
        ".vbe",
        ".vbs",
        ".vhd",
        ".vxd",
        ".wsc",
        ".wsf",
        ".wsh",
        ".xll",
    }
)
PROGRAM_TYPES = frozenset(
    {
        "application/x-msdownload",
        "application/x-msdos-program",
        "application/x-dosexec",
        "application/x-executable",
        "application/x-msi",
        "application/x-ms-installer",
        "application/vnd.microsoft.portable-executable",
        "application/java-archive",
        "application/x-java-archive",
        "application/javascript",
        "text/javascript",
        "application/x-sh",
        "application/x-bat",
        "application/hta",
        "application/vnd.ms-cab-compressed",
        "application/x-apple-diskimage",
    }
)
PROGRAM_MAGIC = (b"MZ", b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xfe\xed\xfa\xcf", b"#!")
CONTAINERS = ("multipart/", "message/")
MAX_FILENAME = 255
_BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"  # without breaks


class AttachmentIn(BaseModel):
    """A file sent with the message, its bytes in base64."""

    model_config = ConfigDict(extra="forbid")

    filename: str = Field(
        max_length=MAX_FILENAME,
        description="a name without folders or control characters, not a program's",
        examples=["invoice-A-1042.pdf"],
        json_schema_extra={
            "pattern": rf"^(?!\s*\.{{1,2}}\s*$)(?=.*\S)[^/\\{_CONTROL.pattern[1:-1]}]+$"
        },
    )
    content_type: str = Field(
        max_length=255,
        description="type/subtype without parameters; not multipart, message or a program",
        examples=["application/pdf"],
        json_schema_extra={"pattern": f"^{_MEDIA_TYPE.pattern}$"},
    )
    content: str = Field(
        description="the file's bytes in base64 (RFC 4648; line breaks are ignored)",
        examples=["JVBERi0xLjcK"],
        json_schema_extra={"contentEncoding": "base64", "pattern": _BASE64},
    )


@dataclass(frozen=True, slots=True)
class Checked:
    """The files as they will be queued, or what is wrong with them."""

    files: list[Attachment]
    errors: list[FieldError]
    too_large: str | None  # the 413's detail when the files together pass the limit


def check(given: Sequence[AttachmentIn], settings: ApiSettings) -> Checked:
    if len(given) > settings.attachment_max_count:
        many = f"{len(given)} attachments; at most {settings.attachment_max_count} a message"
        return Checked([], [item_error(None, "attachments", many)], None)
    files: list[Attachment] = []
    errors: list[FieldError] = []
    for n, item in enumerate(given):
        content, problems = _content(item.content), _problems(item)
        if content is None:
            problems.append(("content", "not base64"))
        elif content.startswith(PROGRAM_MAGIC):
            problems.append(("content", "a program; mail providers refuse to carry programs"))
        errors += [item_error(None, f"attachments.{n}.{name}", text) for name, text in problems]
        if content is not None and not problems:
            files.append(Attachment(item.filename, item.content_type.lower(), content))
    total = sum(len(file.content) for file in files)
    over = total > settings.attachment_max_bytes
    return Checked(files, errors, _too_large(total, settings) if over else None)


def canonical(files: Sequence[Attachment]) -> list[dict[str, str]]:
    """What an Idempotency-Key's hash covers of the files: their names, types and a hash of
    their bytes, so the same file wrapped into other base64 lines is the same call."""
    return [
        {
            "filename": file.filename,
            "content_type": file.content_type,
            "sha256": hashlib.sha256(file.content).hexdigest(),
        }
        for file in files
    ]


def _content(text: str) -> bytes | None:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _problems(item: AttachmentIn) -> list[tuple[str, str]]:
    """What is wrong with an attachment's name and type, by field."""
    found: list[tuple[str, str]] = []
    name = item.filename
    if not name.strip():
        found.append(("filename", "empty; a file needs a name"))
    elif "/" in name or "\\" in name or name.strip() in {".", ".."}:
        found.append(("filename", "a name without folders: no / or \\"))
    elif _CONTROL.search(name):
        found.append(("filename", "holds control characters"))
    elif "." + name.lower().rstrip(". ").rpartition(".")[2] in PROGRAM_EXTENSIONS:
        found.append(("filename", "names a program; mail providers refuse to carry programs"))
    kind = item.content_type.lower()
    if not _MEDIA_TYPE.fullmatch(kind):
        found.append(("content_type", "a media type such as application/pdf, no parameters"))
    elif kind.startswith(CONTAINERS):
        found.append(("content_type", "multipart and message types cannot be attached"))
    elif kind in PROGRAM_TYPES:
        found.append(("content_type", "a program; mail providers refuse to carry programs"))
    return found


def _too_large(total: int, settings: ApiSettings) -> str:
    return (
        f"the attachments come to {total:,} bytes; a message may carry "
        f"{settings.attachment_max_mb:g} MB ({settings.attachment_max_bytes:,} bytes, "
        "[api] attachment_max_mb)"
    )


def body_limit(settings: ApiSettings) -> int:
    """The largest body a send may have: the API's limit, plus the attachments' limit in
    base64 with its line breaks, so files within their limit are never cut off first."""
    return settings.max_body_bytes + settings.attachment_max_bytes * 140 // 100 + 4096
