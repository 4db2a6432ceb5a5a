"""E-mail: single messages (.eml) and mailboxes (.mbox), with the standard library's email and mailbox packages.

A message gives a header section (From, To, Cc, Date, Subject, attachment names), its body (text/plain preferred,
else text/html through the HTML reader) and one section per readable text attachment or forwarded message.
"""

from __future__ import annotations

import email
import email.errors
from email.message import EmailMessage, Message
from pathlib import Path

from ingest.document import Section, decode_text
from ingest.formats import markdown
from ingest.formats import text as plain_text
from ingest.formats.html import html_sections
from rag.errors import DocumentError, UnsupportedFormatError

HEADERS = ("From", "To", "Cc", "Date", "Subject")
_TEXT_ATTACHMENTS = {"text/plain", "text/markdown", "text/x-markdown"}
_MAX_DEPTH = 3  # forwarded messages inside forwarded messages...
PARSE_ERRORS = (email.errors.MessageError, IndexError, AttributeError, ValueError, TypeError, LookupError)
NO_SUBJECT = "(no subject)"
_TEXT_SUFFIXES = plain_text.SUFFIXES | markdown.SUFFIXES  # attachments read as text whatever their declared type


def header(message: Message, name: str) -> str:
    """A header as one line of text; a header the parser chokes on falls back to its raw value."""
    try:
        value = message.get(name)
    except PARSE_ERRORS:
        value = next((raw for key, raw in message.raw_items() if key.lower() == name.lower()), None)
    return " ".join(str(value).split()) if value is not None else ""


def _part_text(part: Message, name: str) -> str:
    """A text part's content, decoded by its declared charset, else detected ("" when empty or not text)."""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes) or not data.strip():
        return ""
    charset = part.get_content_charset()
    if charset:
        try:
            return data.decode(charset).strip()
        except (LookupError, UnicodeDecodeError):
            pass  # wrong or unknown charset label: detect instead
    try:
        return decode_text(data, Path(name)).strip()
    except DocumentError:
        return ""


def _attachment_name(part: Message, index: int) -> str:
    try:
        name = part.get_filename()
    except PARSE_ERRORS:
        name = None
    return " ".join(str(name).split()) if name else f"attachment {index} ({part.get_content_type()})"


def _is_attachment(part: Message) -> bool:
    disposition = part.get_content_disposition()
    try:
        has_name = bool(part.get_filename())
    except PARSE_ERRORS:
        has_name = False
    return disposition == "attachment" or (has_name and disposition != "inline")


def _leaves(message: Message) -> list[Message]:
    """Non-multipart parts in order, not descending into attached messages (message/rfc822)."""
    if message.get_content_type() == "message/rfc822" or not message.is_multipart():
        return [message]
    parts: list[Message] = []
    payload = message.get_payload()
    for part in payload if isinstance(payload, list) else []:
        if part.get_content_type() == "message/rfc822":
            parts.append(part)
        else:
            parts.extend(_leaves(part))
    return parts


def _body(message: Message) -> Message | None:
    if isinstance(message, EmailMessage):
        try:
            return message.get_body(preferencelist=("plain", "html"))
        except PARSE_ERRORS:
            return None
    return None


def message_sections(
    message: Message, path: Path, page: int | None = None, base: list[str] | None = None, depth: int = 0
) -> tuple[str, list[Section]]:
    """(subject, sections) of one message; `base` prefixes every heading (for forwarded messages)."""
    subject = header(message, "Subject")
    heading = [*(base or []), subject or NO_SUBJECT]
    body = _body(message)
    body_sections: list[Section] = []
    if body is not None:
        text = _part_text(body, path.name)
        if text and body.get_content_type() == "text/html":
            _, found = html_sections(text, heading)
            body_sections = [Section(s.text, s.heading, page) for s in found]
        elif text:
            body_sections = [Section(text, heading, page)]

    attachment_names: list[str] = []
    attachment_sections: list[Section] = []
    leaves = _leaves(message) if message.is_multipart() else []
    for index, part in enumerate(leaves, start=1):
        if part is body:
            continue
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else inner
            if isinstance(inner, Message):
                inner_subject = header(inner, "Subject") or NO_SUBJECT
                attachment_names.append(f"{inner_subject} (attached message)")
                if depth < _MAX_DEPTH:
                    attachment_sections += message_sections(inner, path, page, heading, depth + 1)[1]
            continue
        if not _is_attachment(part):
            continue
        name = _attachment_name(part, index)
        attachment_names.append(name)
        if part.get_content_type() in _TEXT_ATTACHMENTS or Path(name).suffix.lower() in _TEXT_SUFFIXES:
            text = _part_text(part, name)
            if text:
                attachment_sections.append(Section(text, [*heading, name], page))
    if not message.is_multipart() and body is None and _is_attachment(message):
        attachment_names.append(_attachment_name(message, 1))  # the whole message is one attachment

    lines = [f"{name}: {value}" for name in HEADERS if (value := header(message, name))]
    if attachment_names:
        lines.append("Attachments: " + ", ".join(attachment_names))
    sections = [Section("\n".join(lines), heading, page)] if lines else []
    return subject, sections + body_sections + attachment_sections


def refuse_binary(data: bytes, path: Path, what: str) -> None:
    if b"\x00" in data[:4096]:
        raise UnsupportedFormatError(
            f"{path.name}: binary content in {what} (NUL bytes): check the file type, or export it again as {what}"
        )
