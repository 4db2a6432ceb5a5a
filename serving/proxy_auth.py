"""Identity headers from an authenticating reverse proxy (``auth.proxy``).

A proxy that signs users in (nginx with basic auth or auth_request, oauth2-proxy, Apache mod_auth_*) passes the
user on in headers (``X-Remote-User``, ``X-Remote-Groups``, ``X-Remote-Email`` by default). Those headers are
believed only when the request's direct peer, the TCP address that connected to this server, is one of
``auth.proxy.trusted``; ``X-Forwarded-For`` plays no part. The same headers from any other address are a 401,
even with a valid API key, so a forged identity is refused rather than ignored.

uvicorn's own ``--proxy-headers`` would replace the peer address with one taken from ``X-Forwarded-For``, so
``rag serve`` turns it off while ``auth.proxy`` is on (see ``serving.connections.connection_options``).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from fastapi import Request

from rag.acl import token
from rag.errors import AuthenticationError, ConfigError, InvalidRequestError
from rag.settings_auth import ProxySettings
from serving.auth import Principal

if TYPE_CHECKING:
    from serving.observability import AuditLog

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_EMAIL = 320


def trusted_networks(trusted: list[str]) -> tuple[Network, ...]:
    """``auth.proxy.trusted`` as networks; an entry that is neither an address nor a CIDR network is a ConfigError."""
    networks = []
    for entry in trusted:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"auth.proxy.trusted: {entry!r} is not an IP address or network (CIDR): write the proxy's address "
                "as this server sees it, e.g. 127.0.0.1, 10.0.0.5 or 10.0.0.0/24"
            ) from None
    return tuple(networks)


def peer_address(host: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The peer as an address (an IPv4-mapped IPv6 one as IPv4); None when it is not an IP address."""
    try:
        address = ipaddress.ip_address((host or "").strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ProxyIdentity:
    """``principal(request)``: the user named by a trusted proxy, None when there is none, 401 for forged headers."""

    def __init__(self, settings: ProxySettings, audit: AuditLog | None = None) -> None:
        self.settings = settings
        self.networks = trusted_networks(settings.trusted)
        self.audit = audit
        self.headers = (settings.user_header, settings.groups_header, settings.email_header)

    def trusts(self, host: str | None) -> bool:
        address = peer_address(host)
        return address is not None and any(address in network for network in self.networks)

    def principal(self, request: Request) -> Principal | None:
        host = request.client.host if request.client else None
        sent = [name for name in self.headers if name in request.headers]
        if not self.trusts(host):
            if sent:
                self._forged(request, host, sent)
            return None
        user = request.headers.get(self.settings.user_header, "").strip()
        if not user:
            return None  # the proxy let this request through unauthenticated: API keys etc. decide
        separator = self.settings.groups_separator
        groups = [g.strip() for g in request.headers.get(self.settings.groups_header, "").split(separator)]
        email = request.headers.get(self.settings.email_header, "").strip()[:MAX_EMAIL] or None
        return Principal(
            f"proxy {_valid('user', user)}",
            user,
            frozenset(_valid("group", g) for g in groups if g),
            via="proxy",
            email=email,
        )

    def _forged(self, request: Request, host: str | None, sent: list[str]) -> None:
        if self.audit is not None:
            self.audit.record(
                principal=Principal(f"address {host}", via="proxy"),
                route=request.url.path,
                outcome="sign-in failed",
                reason="identity headers from an untrusted address",
                headers=sent,
                claimed_user=request.headers.get(self.settings.user_header, "")[:128],
            )
        log.warning("identity headers %s from %s, which is not in auth.proxy.trusted: refused", sent, host)
        raise AuthenticationError(
            f"identity headers ({', '.join(sent)}) are only accepted from the configured proxy addresses "
            f"(auth.proxy.trusted), and this request came from {host}: sign in through the proxy, or send an API "
            "key without these headers"
        )


def _valid(kind: str, name: str) -> str:
    try:
        token(kind, name)
    except InvalidRequestError:
        raise AuthenticationError(
            f"the proxy sent an invalid {kind} name {name[:128]!r}: names may use letters, digits and . _ - @ + "
            "(at most 128 characters); fix the proxy's mapping"
        ) from None
    return name


def proxy_identity(settings: ProxySettings, audit: AuditLog | None = None) -> ProxyIdentity | None:
    """The app's ``proxy_identity``: None while ``auth.proxy.trusted`` is empty."""
    return ProxyIdentity(settings, audit) if settings.trusted else None
