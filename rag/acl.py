"""Document-level access control: ACL tokens on documents, identities on queries.

A document carries ACL tokens, each one of:

- ``public``: anyone, including a caller with no identity;
- ``group:<name>``: members of that group;
- ``user:<name>``: that one user.

Tokens are namespaced, so a group called ``alice`` grants nothing to the user ``alice``. A caller's identity
(a user and their groups) becomes a set of tokens the same way; a chunk may be returned only when its
document shares at least one token with the caller. No identity means ``public`` only.

Where the tokens of a document come from, first match wins: explicit tokens for the ingest run (CLI flags, the
admin API), a sidecar file beside the document (``<file>.acl``), a mapping file of folder globs
(``--acl-map``), what the registry recorded, and otherwise ``ingest.default_access`` (not public by default).
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rag.errors import ConfigError, InvalidRequestError

PUBLIC = "public"
NAMESPACES = ("group", "user")
SIDECAR_SUFFIX = ".acl"
MAX_SIDECAR_BYTES = 64 * 1024  # a list of tokens; anything bigger is not an ACL file
_NAME = re.compile(r"^[A-Za-z0-9_.@+\-]{1,128}$")


def token(namespace: str, name: str) -> str:
    if namespace not in NAMESPACES:
        raise InvalidRequestError(f"unknown ACL namespace {namespace!r}: use group:NAME, user:NAME or public")
    if not _NAME.match(name):
        raise InvalidRequestError(
            f"invalid {namespace} name {name!r}: use letters, digits and . _ - @ + (at most 128 characters)"
        )
    return f"{namespace}:{name}"


def parse_token(text: str) -> str:
    """``public``, ``group:NAME`` or ``user:NAME``; anything else is an error that says what to write."""
    text = text.strip()
    if text == PUBLIC:
        return PUBLIC
    namespace, sep, name = text.partition(":")
    if not sep:
        raise InvalidRequestError(f"ACL entry {text!r} has no namespace: write group:{text} or user:{text} (or public)")
    return token(namespace.strip(), name.strip())


def normalize_tokens(tokens: Iterable[str]) -> list[str]:
    """Sorted, unique, validated tokens. An empty list is refused: it used to mean public, so an ACL left empty
    by mistake showed the document to everyone."""
    parsed = sorted({parse_token(t) for t in tokens if t.strip()})
    if not parsed:
        raise InvalidRequestError(
            "the ACL is empty: give at least one token (public, group:NAME, user:NAME), or give no ACL at all "
            "to get ingest.default_access"
        )
    return parsed


def normalize_tags(tags: Iterable[str]) -> list[str]:
    """Document tags (labels for search filters, not access): lower case, sorted, unique, validated."""
    cleaned = sorted({t.strip().lower() for t in tags if t.strip()})
    for tag in cleaned:
        if not _NAME.match(tag):
            raise InvalidRequestError(
                f"invalid tag {tag!r}: use letters, digits and . _ - @ + (at most 128 characters)"
            )
    return cleaned


def legacy_tokens(entries: Iterable[str]) -> list[str]:
    """Registries written before tokens were namespaced held bare group names: ``hr`` means ``group:hr``. Such a
    registry recorded no tokens as none (public then)."""
    entries = [e for e in entries if e.strip()]
    if not entries:
        return [PUBLIC]
    return normalize_tokens(e if e == PUBLIC or ":" in e else f"group:{e}" for e in entries)


def tokens_from(groups: Sequence[str] = (), users: Sequence[str] = (), public: bool = False) -> list[str] | None:
    """Tokens from CLI-style options; None when none was given (so other sources may decide)."""
    if not groups and not users and not public:
        return None
    tokens = [token("group", g) for g in groups] + [token("user", u) for u in users]
    return sorted(set(tokens) | ({PUBLIC} if public or not tokens else set()))


def acl_metadata(tokens: Sequence[str]) -> dict[str, str]:
    """What each chunk carries in Chroma's metadata, for inspection; queries filter by the registry's tokens."""
    return {"acl": ",".join(sorted(tokens))}


@dataclass(frozen=True)
class Identity:
    """Who is asking. Built by the serving layer from its authentication; tests and the CLI pass it in."""

    user: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def anonymous(cls) -> Identity:
        return cls()

    @classmethod
    def of(cls, user: str | None = None, groups: Iterable[str] = ()) -> Identity:
        identity = cls(user or None, frozenset(groups))
        identity.tokens()  # validates the names now, not at the first query
        return identity

    def tokens(self) -> frozenset[str]:
        tokens = {PUBLIC} | {token("group", g) for g in self.groups}
        if self.user:
            tokens.add(token("user", self.user))
        return frozenset(tokens)

    def may_see(self, document_tokens: Iterable[str]) -> bool:
        return bool(self.tokens() & set(document_tokens))


@dataclass(frozen=True)
class AclRule:
    pattern: str
    tokens: tuple[str, ...]


class AclMap:
    """Folder-to-tokens mapping, from a YAML file of ``glob: [tokens]`` entries; the first matching glob wins.

    Globs are matched against the document's absolute path; ``**`` crosses folders. Example::

        /srv/docs/hr/**: [group:hr]
        /srv/docs/finance/**: [group:finance, user:cfo]
        /srv/docs/**: [public]
    """

    def __init__(self, rules: Sequence[AclRule]) -> None:
        self.rules = list(rules)

    @classmethod
    def load(cls, path: Path) -> AclMap:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read the ACL map {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"the ACL map {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"the ACL map {path} must map folder globs to lists of tokens")
        rules = []
        for pattern, tokens in data.items():
            if isinstance(tokens, str):
                tokens = [tokens]
            if not isinstance(tokens, list) or not tokens:
                raise ConfigError(f"the ACL map {path}: {pattern!r} needs a list of tokens, e.g. [group:hr]")
            try:
                rules.append(AclRule(str(pattern), tuple(normalize_tokens(str(t) for t in tokens))))
            except InvalidRequestError as exc:
                raise ConfigError(f"the ACL map {path}: {pattern!r}: {exc.message}") from exc
        return cls(rules)

    def tokens_for(self, path: Path) -> list[str] | None:
        text = str(Path(path).resolve())
        for rule in self.rules:
            if fnmatch.fnmatchcase(text, rule.pattern) or fnmatch.fnmatchcase(text, rule.pattern.rstrip("*/") + "/*"):
                return list(rule.tokens)
        return None


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def sidecar_tokens(path: Path, roots: Sequence[Path] | None = None) -> list[str] | None:
    """Tokens from ``<file>.acl`` beside the document: one token per line (or comma separated), # comments.

    With ``roots`` (the admin API's ``server.admin_paths``), the sidecar must resolve inside them like the documents
    do: a symlinked sidecar must not read files the admin API may not. Errors name the line, never its text, so a
    sidecar that points at some other file cannot show what that file says. A sidecar that exists but cannot be
    used fails its document rather than leaving it to a wider default.
    """
    sidecar = Path(str(path) + SIDECAR_SUFFIX)
    name = f"{Path(path).name}{SIDECAR_SUFFIX}"
    try:
        os.lstat(sidecar)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # a document name near the limit: no sidecar can exist beside it
            return None
        raise InvalidRequestError(f"{name}: cannot read the ACL file ({exc.strerror}): check it") from None
    fix = "replace it with a regular file of ACL tokens beside the document"
    try:
        target = sidecar.resolve(strict=True)
    except (OSError, RuntimeError):
        raise InvalidRequestError(f"{name}: the ACL file is a broken or looping symlink: {fix}") from None
    if roots is not None and not _inside(target, [Path(r).resolve() for r in roots]):
        raise InvalidRequestError(f"{name}: the ACL file links outside server.admin_paths: {fix}")
    if not target.is_file():
        raise InvalidRequestError(f"{name}: the ACL file is not a regular file: {fix}")
    try:
        with target.open("rb") as handle:
            data = handle.read(MAX_SIDECAR_BYTES + 1)
    except OSError as exc:
        raise InvalidRequestError(f"{name}: cannot read the ACL file ({exc.strerror}): check its permissions") from None
    if len(data) > MAX_SIDECAR_BYTES:
        raise InvalidRequestError(f"{name}: the ACL file is over {MAX_SIDECAR_BYTES // 1024} KB: {fix}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError(f"{name}: the ACL file is not UTF-8 text: {fix}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        for part in line.split("#", 1)[0].split(","):
            if not part.strip():
                continue
            try:
                entries.append(parse_token(part))
            except InvalidRequestError:
                raise InvalidRequestError(
                    f"{name}: line {number} is not a valid ACL token: write one of public, group:NAME or user:NAME "
                    "per line (NAME: letters, digits and . _ - @ +)"
                ) from None
    return normalize_tokens(entries)


def document_tokens(
    path: Path,
    explicit: list[str] | None,
    acl_map: AclMap | None,
    recorded: list[str] | None = None,
    default: Sequence[str] = (),
    roots: Sequence[Path] | None = None,
) -> list[str]:
    """The ACL tokens one document gets: explicit, else its sidecar file (inside ``roots`` when given), else the
    mapping file, else what the registry recorded last time (a rerun without flags never widens access), else
    ``default`` (``ingest.default_access``, not public unless an admin says so)."""
    if explicit is not None:
        return normalize_tokens(explicit)
    found = sidecar_tokens(path, roots)
    if found is None and acl_map is not None:
        found = acl_map.tokens_for(path)
    if found is None and recorded:
        found = legacy_tokens(recorded)
    return found or normalize_tokens(default)
