"""Single e-mail messages (.eml) with the stdlib email package; the message itself is read by ingest.mail."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

from ingest.document import ParsedDocument, ReaderOptions, title_from_filename
from ingest.mail import HEADERS, PARSE_ERRORS, header, message_sections, refuse_binary
from rag.errors import (
    DocumentError,
    EmptyDocumentError,
)

SUFFIXES = frozenset({".eml"})


def read(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    data = path.read_bytes()
    if not data.strip():
        raise EmptyDocumentError(f"{path.name}: the file is empty: remove it or add content")
    refuse_binary(data, path, "an .eml message")
    message = email.message_from_bytes(data, policy=policy.default)
    if not any(header(message, name) for name in (*HEADERS, "Message-ID")):
        raise DocumentError(
            f"{path.name}: not an e-mail message (no From, To, Date or Subject header): export the message from "
            "the mail client as .eml"
        )
    try:
        subject, sections = message_sections(message, path)
    except PARSE_ERRORS as exc:
        raise DocumentError(f"{path.name}: the message could not be parsed ({exc}): export it again as .eml") from None
    if not sections:
        raise EmptyDocumentError(f"{path.name}: the message has no headers or text: remove it")
    return ParsedDocument(subject or title_from_filename(path), sections, "eml")
