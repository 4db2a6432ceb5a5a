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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

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
    via: str = "key"  # how the caller proved who they are: key, oidc (bearer token), session (web sign-in), proxy
    email: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.user is None

    @property
    def identity(self) -> Identity:
        return Identity.of(self.user, self.groups) if self.user else Identity.anonymous()

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


ANONYMOUS = Principal("anonymous", via="anonymous")
SIGNED_IN = frozenset({"oidc", "session", "proxy"})  # identities whose groups the directory adds to


def keys_file(settings: Settings) -> Path:
    return settings.server.api_keys_file or settings.data_dir / "api_keys.yaml"


def read_keys_file(path: Path) -> list[ApiKey]:
    """The keys in a keys file; a missing file is no keys, a broken one an error that says where (never what the
    file holds: it lists key hashes, users and groups)."""
    if not path.is_file():
        return []
    warn_if_shared(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return _KEYS.validate_python(data.get("keys", []) if isinstance(data, dict) else data)
    except (OSError, yaml.YAMLError, ValidationError, AttributeError) as exc:
        raise ConfigError(
            f"the API keys file {path} is not valid ({_where(exc)}). Fix it, or recreate it with `rag keys`"
        ) from exc


def _where(exc: Exception) -> str:
    """What is wrong in the keys file and where, without quoting it (YAML and pydantic errors quote the input)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        return f"not valid YAML at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}"
    if isinstance(exc, ValidationError):
        first = exc.errors(include_input=False, include_url=False)[0]
        index, *field = first["loc"] or ("?",)
        where = f"key #{index + 1}" if isinstance(index, int) else str(index)
        return f"{exc.error_count()} problem(s); first: {where}, {'.'.join(map(str, field)) or 'entry'}: {first['msg']}"
    if isinstance(exc, OSError):
        return f"cannot read it: {exc.strerror}"
    return f"not YAML of the expected shape ({type(exc).__name__})"


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
    """The configured keys by hash, re-read from the keys file when its modification time changes.

    A keys file that is broken at start-up stops the server (the error says where). One broken while the server runs
    (a bad hand edit) does not lock everybody out: the keys read last keep working and the error is logged once for
    the admin, until the file is fixed.
    """

    recheck_s = 1.0  # at most one stat of the keys file per this many seconds

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
        if now - self._checked > self.recheck_s:
            self._checked = now
            stamp = self._file_stamp()
            if stamp != self._stamp:
                try:
                    self.reload()
                except ConfigError as exc:
                    self._stamp = stamp  # logged once per change of the file, not on every request
                    log.error("%s; until then the %d keys read before stay in use", exc.message, len(self._by_hash))
        return self._by_hash.get(hash_key(key))


class RateLimiter:
    """A rate per caller (``server.rate_limit``, or ``server.auth_failure_limit`` per address), over a moving window
    (the ``limits`` library)."""

    def __init__(self, rate: str, setting: str = "server.rate_limit") -> None:
        self.setting = setting
        try:
            self.item = parse(rate)
        except ValueError as exc:
            raise ConfigError(f"{setting} {rate!r} is not a rate: write e.g. '120/minute'") from exc
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, caller: str) -> None:
        if not self.limiter.hit(self.item, caller):
            reset, _ = self.limiter.get_window_stats(self.item, caller)
            wait = max(1, math.ceil(reset - time.time()))
            raise RateLimitedError(
                f"rate limit of {self.item} exceeded for {caller}: retry in {wait} s ({self.setting})",
                retry_after=wait,
            )


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


def authenticate(request: Request) -> Principal:
    """The caller, 401 without a valid identity (unless anonymous access is on), 429 past the rate limit.

    Where the identity comes from, first match wins: identity headers from a trusted proxy (``auth.proxy``; the
    same headers from any other address are a 401), a bearer token (an OIDC access token when it is a JWT and
    ``auth.oidc`` is set, else an API key), the web page's session cookie, and otherwise anonymous. The directory
    (``auth.ldap``) then adds the groups of a signed-in user. The principal is kept on the request for logs,
    metrics and the audit log (and so a request checked early, such as an upload before its body is read, is not
    checked and counted twice)."""
    checked = getattr(request.state, "principal", None)
    if checked is not None:
        return checked
    state = request.app.state
    address = request.client.host if request.client else "unknown"
    try:
        principal = _identify(request, state)
    except AuthenticationError as exc:
        raise _refused(request, address, exc.message) from None
    if principal is None:
        if not state.container.settings.server.allow_anonymous:
            missing = "no API key: send 'Authorization: Bearer <key>'; an admin creates keys with `rag keys create`"
            raise _refused(request, address, missing)
        principal, caller = ANONYMOUS, f"anonymous@{address}"
    else:
        caller = f"key {principal.name}" if principal.via == "key" else f"{principal.via} {principal.user}"
    if principal.via in SIGNED_IN:
        principal = _with_directory_groups(request, principal)
    request.state.principal = principal
    state.rate_limiter.hit(caller)
    return principal


def _identify(request: Request, state: Any) -> Principal | None:  # noqa: ANN401 - the app's state
    proxy = state.proxy_identity
    if proxy is not None:
        principal = proxy.principal(request)
        if principal is not None:
            return principal
    key = presented_key(request)
    if key is not None:
        verifier = state.oidc
        if verifier is not None and verifier.looks_like_token(key):
            return verifier.principal(key)
        found = state.keyring.lookup(key)
        if found is None:
            raise AuthenticationError("the API key is not valid (unknown or revoked): ask an admin for a key")
        return Principal(found.name, found.user, frozenset(found.groups), found.role)
    sessions = state.sessions
    return sessions.principal(request) if sessions is not None else None


def _with_directory_groups(request: Request, principal: Principal) -> Principal:
    """The directory's groups added to a signed-in user's own, and role admin for members of auth.admin_groups."""
    state = request.app.state
    directory = state.directory
    groups = principal.groups
    if directory is not None and principal.user:
        groups = groups | directory.groups(principal.user)
    admin_groups = state.container.settings.auth.admin_groups
    role = "admin" if principal.is_admin or groups & set(admin_groups) else principal.role
    return replace(principal, groups=frozenset(groups), role=role)


def _refused(request: Request, address: str, message: str) -> AuthenticationError:
    """A 401, counted per address: past server.auth_failure_limit the caller gets 429 (and Retry-After) instead,
    so a client retrying a wrong key, or sending upload after upload without one, is told to back off."""
    request.app.state.auth_failures.hit(f"requests without a valid key from {address}")
    return AuthenticationError(message)


def require_admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if not principal.is_admin:
        raise PermissionDeniedError(f"{principal.name} is not an admin: this route needs a key with role admin")
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]
AdminDep = Annotated[Principal, Depends(require_admin)]
