"""Mailboxes (.mbox) with the stdlib mailbox package: one document, each message's number as its page."""

from __future__ import annotations

import email
import mailbox
from email import policy
from email.message import Message
from pathlib import Path

from ingest.document import ParsedDocument, ReaderOptions, Section, title_from_filename
from ingest.mail import PARSE_ERRORS, message_sections, refuse_binary
from rag.errors import (
    DocumentError,
    EmptyDocumentError,
)

SUFFIXES = frozenset({".mbox"})


def _parse_mbox_message(handle) -> Message:  # noqa: ANN001 - binary file
    return email.message_from_binary_file(handle, policy=policy.default)


def read(path: Path, options: ReaderOptions | None = None) -> ParsedDocument:
    """One document per mailbox; each message's sections carry its number as the page."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    if not head.strip():
        raise EmptyDocumentError(f"{path.name}: the mailbox is empty: remove it")
    refuse_binary(head, path, "an mbox mailbox")
    box = mailbox.mbox(str(path), factory=_parse_mbox_message, create=False)
    sections: list[Section] = []
    messages = failed = 0
    try:
        for number, key in enumerate(box.iterkeys(), start=1):
            messages += 1
            try:
                sections += message_sections(box[key], path, page=number)[1]
            except PARSE_ERRORS:
                failed += 1  # one broken message does not sink the mailbox
    except (OSError, ValueError, KeyError) as exc:
        raise DocumentError(f"{path.name}: the mailbox could not be read ({exc}): export it again as mbox") from None
    finally:
        box.close()
    if not messages:
        raise EmptyDocumentError(
            f"{path.name}: no messages in the mailbox (no line starts with 'From '): check that it is an mbox export"
        )
    if not sections:
        raise EmptyDocumentError(f"{path.name}: none of the {messages} messages has text ({failed} unreadable)")
    return ParsedDocument(title_from_filename(path), sections, "mbox")
