"""API keys: who is calling, what they may see (their ACL identity) and whether they may administer.

Keys are stored hashed (SHA-256 of the key; the key is shown once, by ``rag keys create``), in a YAML keys file
(``server.api_keys_file``, default ``data_dir/api_keys.yaml``) and/or in ``server.api_keys`` (e.g. from the
environment). The file is re-read when it changes, so a revoked key stops working on its next request. Callers send
the key as ``Authorization: Bearer <key>`` (what the OpenAI clients send) or ``X-API-Key``.

With ``server.allow_anonymous`` a caller without a key is anonymous: public documents only, never admin. A key
that is sent but unknown is always a 401, even then.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import yaml
from fastapi import Depends, Request
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from pydantic import TypeAdapter, ValidationError

from rag.acl import Identity
from rag.errors import AuthenticationError, ConfigError, PermissionDeniedError, RateLimitedError
from rag.settings import ApiKey, Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "rag-"
_KEYS = TypeAdapter(list[ApiKey])


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller (or the anonymous one)."""

    name: str
    user: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)
    role: str = "employee"

    @property
    def anonymous(self) -> bool:
        return self.user is None

    @property
    def identity(self) -> Identity:
        return Identity.of(self.user, self.groups) if self.user else Identity.anonymous()

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


ANONYMOUS = Principal("anonymous")


def keys_file(settings: Settings) -> Path:
    return settings.server.api_keys_file or settings.data_dir / "api_keys.yaml"


def read_keys_file(path: Path) -> list[ApiKey]:
    """The keys in a keys file; a missing file is no keys, a broken one an error that says where."""
    if not path.is_file():
        return []
    warn_if_shared(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return _KEYS.validate_python(data.get("keys", []) if isinstance(data, dict) else data)
    except (OSError, yaml.YAMLError, ValidationError, AttributeError) as exc:
        raise ConfigError(
            f"the API keys file {path} is not valid: {exc}. Fix it, or recreate it with `rag keys`"
        ) from exc


def warn_if_shared(path: Path) -> None:
    """Key hashes are not keys, but names, users and groups are who-may-see-what: say so if others can read it."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        log.warning("the API keys file %s is readable by other users (mode %o): run `chmod 600 %s`", path, mode, path)


def write_keys_file(path: Path, keys: list[ApiKey]) -> None:
    """Written whole to a temporary file and renamed, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        yaml.safe_dump({"keys": [k.model_dump() for k in keys]}, out, sort_keys=False)
    partial.replace(path)


class KeyRing:
    """The configured keys by hash, re-read from the keys file when its modification time changes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = keys_file(settings)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._by_hash: dict[str, ApiKey] = {}
        self.reload()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def reload(self) -> None:
        keys = [*self.settings.server.api_keys, *read_keys_file(self.path)]
        names = [k.name for k in keys]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"API key names must be unique; repeated: {', '.join(duplicates)}")
        with self._lock:
            self._by_hash = {k.sha256: k for k in keys}
            self._stamp = self._file_stamp()

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, key: str) -> ApiKey | None:
        now = time.monotonic()
        if now - self._checked > 1.0:  # at most one stat a second
            self._checked = now
            if self._file_stamp() != self._stamp:
                self.reload()
        return self._by_hash.get(hash_key(key))


class RateLimiter:
    """``server.rate_limit`` per caller, over a moving window (the ``limits`` library)."""

    def __init__(self, rate: str) -> None:
        try:
            self.item = parse(rate)
        except ValueError as exc:
            raise ConfigError(f"server.rate_limit {rate!r} is not a rate: write e.g. '120/minute'") from exc
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, caller: str) -> None:
        if not self.limiter.hit(self.item, caller):
            reset, _ = self.limiter.get_window_stats(self.item, caller)
            wait = max(1, math.ceil(reset - time.time()))
            raise RateLimitedError(
                f"rate limit of {self.item} exceeded for {caller}: retry in {wait} s (server.rate_limit)",
                retry_after=wait,
            )


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


def authenticate(request: Request) -> Principal:
    """The caller, from their API key; 401 without a valid one (unless anonymous access is on), 429 past the rate
    limit. The principal is kept on the request for logs, metrics and the audit log."""
    ring: KeyRing = request.app.state.keyring
    key = presented_key(request)
    if key is None:
        if not request.app.state.container.settings.server.allow_anonymous:
            raise AuthenticationError(
                "no API key: send 'Authorization: Bearer <key>'; an admin creates keys with `rag keys create`",
            )
        principal = ANONYMOUS
        caller = f"anonymous@{request.client.host if request.client else 'unknown'}"
    else:
        found = ring.lookup(key)
        if found is None:
            raise AuthenticationError("the API key is not valid (unknown or revoked): ask an admin for a key")
        principal = Principal(found.name, found.user, frozenset(found.groups), found.role)
        caller = f"key {found.name}"
    request.state.principal = principal
    request.app.state.rate_limiter.hit(caller)
    return principal


def require_admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if not principal.is_admin:
        raise PermissionDeniedError(f"{principal.name} is not an admin: this route needs a key with role admin")
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]
AdminDep = Annotated[Principal, Depends(require_admin)]
