"""Directory groups (``auth.ldap``): a signed-in user's access groups read from LDAP / Active Directory.

The user's entry is found under ``user_base`` with ``user_filter``; the groups that list that DN as a member are
found under ``group_base`` with ``group_filter``, then (``nested``) the groups that list those groups, up to
``max_depth`` levels, each group once (a cycle ends there). The server compares DNs, so case and spacing in member
values do not matter. A group's name is its ``group_name_attribute`` (the first value), mapped by ``group_map``;
with ``mapped_only`` unmapped groups are dropped. A name that is not a valid access-group name (letters, digits
and . _ - @ +) is skipped and logged. A user the directory does not know has no directory groups.

A user's groups are kept for ``cache_ttl_s``; the first request after that reads them again, so a member removed
in the directory loses the group's documents within the TTL. A change is written to the audit log ("groups
changed", with what was added and removed). When the directory cannot be reached, the groups read last are kept
for at most ``stale_grace_s`` more (never more than that read gave); past that, or for a user not read before,
requests get 503 ``directory_unavailable`` rather than silently fewer documents.

One connection per read (connect, StartTLS, bind, search, unbind): nothing is shared between threads but the cache.
"""

from __future__ import annotations

import logging
import math
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from rag.acl import token
from rag.errors import ConfigError, InvalidRequestError, RetryLaterError
from rag.settings_auth import LdapSettings
from serving.auth import Principal

if TYPE_CHECKING:
    import ldap3

    from serving.observability import AuditLog

log = logging.getLogger(__name__)

BATCH = 50  # member DNs per group search (one OR filter)


class DirectoryUnavailableError(RetryLaterError):
    code = "directory_unavailable"
    status = 503
    title = "Directory unavailable"
    retry_after = 30


@dataclass(frozen=True)
class _Read:
    groups: frozenset[str]
    at: float


def _valid_name(name: str) -> bool:
    try:
        token("group", name)
    except InvalidRequestError:
        return False
    return True


class Directory:
    """``groups(user)``: the user's access groups from the directory, cached per user for ``cache_ttl_s``."""

    def __init__(
        self, settings: LdapSettings, audit: AuditLog | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.clock = clock
        self.server = _server(settings)  # ldap3 is imported here, when a directory is configured
        for wanted, placeholder in (("user_filter", "{user}"), ("group_filter", "{dn}")):
            _check_filter(wanted, getattr(settings, wanted), placeholder)
        bad = sorted(v for v in settings.group_map.values() if not _valid_name(v))
        if bad:
            raise ConfigError(
                f"auth.ldap.group_map maps to invalid group names {bad}: use letters, digits and . _ - @ +"
            )
        self._lock = threading.Lock()
        self._cache: dict[str, _Read] = {}
        self._reading: dict[str, threading.Lock] = {}
        self._skipped: set[str] = set()  # invalid names logged once each

    def groups(self, user: str) -> frozenset[str]:
        ttl = self.settings.cache_ttl_s
        with self._lock:
            last = self._cache.get(user)
            if last is not None and self.clock() - last.at < ttl:
                return last.groups
            reading = self._reading.setdefault(user, threading.Lock())
        with reading:  # one read per user at a time; who waited uses it
            with self._lock:
                last = self._cache.get(user)
            if last is not None and self.clock() - last.at < ttl:
                return last.groups
            from ldap3.core.exceptions import LDAPException

            try:
                groups = self.read(user)
            except (LDAPException, OSError) as exc:
                return self._unreachable(user, last, exc)
            with self._lock:
                self._cache[user] = _Read(groups, self.clock())
        if last is not None and groups != last.groups:
            self._changed(user, last.groups, groups)
        return groups

    def read(self, user: str) -> frozenset[str]:
        """The user's groups as the directory says now (no cache)."""
        import ldap3
        from ldap3.utils.conv import escape_filter_chars

        s = self.settings
        with self._connect() as conn:
            query = s.user_filter.replace("{user}", escape_filter_chars(user))
            conn.search(s.user_base, query, ldap3.SUBTREE, attributes=[])
            found = [e["dn"] for e in conn.response or [] if e.get("type") == "searchResEntry"]
            if len(found) != 1:
                if found:
                    log.warning("auth.ldap.user_filter finds %d entries for %r: no directory groups", len(found), user)
                return frozenset()
            names = self._group_names(conn, found[0])
        return frozenset(self._access_names(names))

    def _group_names(self, conn: ldap3.Connection, user_dn: str) -> list[str]:
        import ldap3
        from ldap3.utils.conv import escape_filter_chars

        s = self.settings
        seen: set[str] = set()
        names: list[str] = []
        members = [user_dn]
        for _ in range(s.max_depth if s.nested else 1):
            found: list[str] = []
            for start in range(0, len(members), BATCH):
                parts = [
                    s.group_filter.replace("{dn}", escape_filter_chars(dn)) for dn in members[start : start + BATCH]
                ]
                query = parts[0] if len(parts) == 1 else f"(|{''.join(parts)})"
                for entry in conn.extend.standard.paged_search(
                    s.group_base, query, ldap3.SUBTREE, attributes=[s.group_name_attribute], generator=True
                ):
                    if entry.get("type") != "searchResEntry" or entry["dn"].lower() in seen:
                        continue
                    seen.add(entry["dn"].lower())
                    found.append(entry["dn"])
                    value = entry["attributes"].get(s.group_name_attribute)
                    value = value[0] if isinstance(value, list) and value else value
                    if value:
                        names.append(str(value))
            if not found:
                break
            members = found
        else:
            if s.nested and members:
                log.warning(
                    "groups of %s followed to auth.ldap.max_depth=%d levels: deeper ones, if any, are ignored",
                    user_dn,
                    s.max_depth,
                )
        return names

    def _access_names(self, names: Iterable[str]) -> Iterable[str]:
        s = self.settings
        for name in names:
            mapped = s.group_map.get(name)
            if mapped is None and s.mapped_only:
                continue
            mapped = mapped or name
            if _valid_name(mapped):
                yield mapped
            elif mapped not in self._skipped:
                self._skipped.add(mapped)
                log.warning(
                    "directory group %r is not a valid access-group name (letters, digits and . _ - @ +): skipped; "
                    "map it to one in auth.ldap.group_map",
                    mapped,
                )

    def _connect(self) -> ldap3.Connection:
        import ldap3

        s = self.settings
        password = s.bind_password.get_secret_value() if s.bind_password else None
        conn = ldap3.Connection(
            self.server,
            user=s.bind_dn,
            password=password,
            receive_timeout=max(1, math.ceil(s.timeout_s)),  # whole seconds: ldap3 packs it as an integer
            raise_exceptions=True,
            read_only=True,
            auto_referrals=False,  # a referral (AD's DomainDnsZones...) names another server: not followed
        )
        conn.open()
        if s.start_tls:
            conn.start_tls()
        conn.bind()
        return conn

    def _unreachable(self, user: str, last: _Read | None, exc: Exception) -> frozenset[str]:
        grace, url, why = self.settings.stale_grace_s, self.settings.url, _brief(exc)
        if last is not None and self.clock() - last.at < self.settings.cache_ttl_s + grace:
            log.warning("the directory %s cannot be read (%s): %s keeps the groups read before", url, why, user)
            return last.groups
        log.error("the directory %s cannot be read (%s): no groups for %s", url, why, user)
        raise DirectoryUnavailableError(  # the directory's address and the cause are for the admin's log only
            "the directory (auth.ldap) cannot be read, so your groups are unknown: retry later; an admin finds the "
            "cause in the server log"
        )

    def _changed(self, user: str, before: frozenset[str], after: frozenset[str]) -> None:
        added, removed = sorted(after - before), sorted(before - after)
        log.info("directory groups of %s changed: added %s, removed %s", user, added, removed)
        if self.audit is not None:
            who = Principal(f"directory {user}", user, after, via="directory")
            self.audit.record(principal=who, route="directory", outcome="groups changed", added=added, removed=removed)


def _check_filter(name: str, text: str, placeholder: str) -> None:
    """A filter without its placeholder, or that is no LDAP filter, is a ConfigError at start, not a 503 later."""
    from ldap3.core.exceptions import LDAPInvalidFilterError
    from ldap3.operation.search import parse_filter

    if placeholder not in text:
        raise ConfigError(f"auth.ldap.{name} must contain {placeholder}, e.g. (uid={{user}}) / (member={{dn}})")
    try:
        parse_filter(text.replace(placeholder, "x"), None, False, True, None, False)
    except LDAPInvalidFilterError:
        raise ConfigError(
            f"auth.ldap.{name} {text!r} is not an LDAP filter: write it in parentheses, e.g. (uid={{user}})"
        ) from None


def _brief(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _server(settings: LdapSettings) -> ldap3.Server:
    import ldap3

    url = urlsplit(settings.url or "")
    if url.scheme not in ("ldap", "ldaps") or not url.hostname:
        raise ConfigError(f"auth.ldap.url {settings.url!r} is not an LDAP URL: write ldap://HOST[:PORT] or ldaps://…")
    if url.scheme == "ldaps" and settings.start_tls:
        raise ConfigError("auth.ldap: start_tls is for ldap:// URLs; an ldaps:// URL is TLS already")
    tls = None
    if url.scheme == "ldaps" or settings.start_tls:
        ca = str(settings.ca_file) if settings.ca_file else None
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca)
    try:
        port = url.port
    except ValueError:
        raise ConfigError(f"auth.ldap.url {settings.url!r} has an invalid port") from None
    return ldap3.Server(
        url.hostname,
        port=port or (636 if url.scheme == "ldaps" else 389),
        use_ssl=url.scheme == "ldaps",
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=settings.timeout_s,
    )


def directory(settings: LdapSettings, audit: AuditLog | None = None) -> Directory | None:
    """The app's ``directory``: None while ``auth.ldap.url`` is unset."""
    return Directory(settings, audit) if settings.url else None
