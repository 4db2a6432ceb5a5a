"""Single sign-on with an OpenID Provider (``auth.oidc``): its metadata and keys, and the check of its tokens.

The provider's metadata (ISSUER/.well-known/openid-configuration) and keys (its ``jwks_uri``) are fetched with httpx
when first needed, not at start, so the server starts while the provider is down; they are kept ``jwks_cache_s``.
A token signed by a key not among the kept ones fetches the keys again (the provider rotated them), at most once per
``jwks_min_refresh_s``. PyJWT checks each token: signature, ``iss``, ``aud``, ``exp`` / ``nbf`` (with ``leeway_s``)
and the algorithm. Every refusal says what was wrong, never what the token holds.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from rag.errors import AuthenticationError, ConfigError, IdentityProviderUnavailableError
from rag.settings_auth import OidcSettings
from serving.auth import KEY_PREFIX, Principal

log = logging.getLogger(__name__)

_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_ASYMMETRIC = re.compile(r"^(RS|PS|ES)(256|384|512)$|^ES256K$|^EdDSA$")
_REFUSALS: list[tuple[type[Exception], str]] = [  # most specific first: PyJWT's errors subclass each other
    (jwt.ExpiredSignatureError, "has expired: get a new one from the provider"),
    (jwt.ImmatureSignatureError, "is not valid yet (nbf / iat in the future): check the clocks of both machines"),
    (jwt.InvalidAudienceError, "is for another audience (aud): this server accepts {audience}"),
    (jwt.InvalidIssuerError, "is from another issuer (iss): this server accepts {issuer}"),
    (jwt.InvalidSignatureError, "has a bad signature: it was not signed by the provider's key"),
    (jwt.InvalidAlgorithmError, "is signed with an algorithm not allowed (auth.oidc.algorithms: {algorithms})"),
    (jwt.MissingRequiredClaimError, "lacks a required claim (exp, iat, iss, aud)"),
    (jwt.DecodeError, "is not a well-formed JWT"),
]


def check_settings(settings: OidcSettings) -> None:
    """A ConfigError that says what to fix, at start, for settings that cannot work."""
    issuer = settings.issuer or ""
    parts = urlsplit(issuer)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"auth.oidc.issuer {issuer!r} is not a URL: write the provider's issuer, https://...")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ConfigError("auth.oidc.issuer must be https:// (plain http only on this machine, for tests)")
    public = urlsplit(settings.public_url or "https://default")
    if public.scheme not in ("http", "https") or not public.hostname or public.query or public.fragment:
        raise ConfigError(
            f"auth.oidc.public_url {settings.public_url!r} is not this server's address: write e.g. "
            "https://rag.example.org (the redirect URI is PUBLIC_URL/auth/callback)"
        )
    if not settings.client_id:
        raise ConfigError("auth.oidc.client_id is empty: set the client id this server has at the provider")
    weak = [a for a in settings.algorithms if not _ASYMMETRIC.match(a)]
    if weak or not settings.algorithms:
        raise ConfigError(f"auth.oidc.algorithms {weak or '[]'}: list asymmetric algorithms only, e.g. [RS256, ES256]")


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenIdProvider:
    """The provider's metadata and keys, fetched lazily and kept; thread-safe (requests check tokens at once)."""

    def __init__(
        self,
        settings: OidcSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_settings(settings)
        self.settings = settings
        self.issuer = str(settings.issuer)
        self.http = httpx.Client(timeout=settings.timeout_s, transport=transport, follow_redirects=False)
        self._clock = clock
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._keys: jwt.PyJWKSet | None = None
        self._fetched = -float("inf")  # when the keys were last fetched (clock), or tried and failed
        self._failed: IdentityProviderUnavailableError | None = None  # why the last fetch failed

    def close(self) -> None:
        self.http.close()

    def metadata(self) -> dict[str, Any]:
        if self._metadata is None or self._stale():
            with self._lock:
                if self._metadata is None and self._failed is not None and not self._may_fetch():
                    # Down: asked again after jwks_min_refresh_s, not on every request.
                    raise IdentityProviderUnavailableError(self._failed.message)
                if self._metadata is None or self._stale():
                    self._refresh()
        assert self._metadata is not None
        return self._metadata

    def endpoint(self, name: str) -> str:
        """A URL from the metadata, e.g. token_endpoint; a provider without it is a 503 that says so."""
        url = self.metadata().get(name)
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise IdentityProviderUnavailableError(f"the OpenID Provider {self.issuer} publishes no {name}")
        return url

    def _stale(self) -> bool:
        return self._clock() - self._fetched > self.settings.jwks_cache_s

    def _may_fetch(self) -> bool:
        return self._clock() - self._fetched >= self.settings.jwks_min_refresh_s

    def _refresh(self) -> None:
        """Fetch the metadata and the keys (under the lock). If the provider fails, keys fetched before stay."""
        self._fetched = self._clock()
        try:
            metadata = self.get_json(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
            if metadata.get("issuer") != self.issuer:
                raise IdentityProviderUnavailableError(
                    f"the OpenID Provider's metadata names issuer {metadata.get('issuer')!r}, not {self.issuer!r}: "
                    "set auth.oidc.issuer to exactly the provider's issuer"
                )
            if not isinstance(metadata.get("jwks_uri"), str):
                raise IdentityProviderUnavailableError(f"the OpenID Provider {self.issuer} publishes no jwks_uri")
            keys = jwt.PyJWKSet.from_dict(self.get_json(metadata["jwks_uri"]))
        except (IdentityProviderUnavailableError, jwt.PyJWKSetError) as exc:
            self._failed = IdentityProviderUnavailableError(
                exc.message if isinstance(exc, IdentityProviderUnavailableError) else f"the provider's keys: {exc}"
            )
            if self._keys is None:
                raise self._failed from None
            log.warning("%s; the provider's keys fetched before stay in use", exc)
            return
        self._metadata, self._keys, self._failed = metadata, keys, None

    def get_json(self, url: str) -> dict[str, Any]:
        return self._json(lambda: self.http.get(url), url)

    def post_json(self, url: str, data: dict[str, str], auth: tuple[str, str] | None = None) -> dict[str, Any]:
        return self._json(lambda: self.http.post(url, data=data, auth=auth), url)

    def _json(self, send: Callable[[], httpx.Response], url: str) -> dict[str, Any]:
        """A JSON object from the provider; a 4xx with an OAuth error body comes back as that body."""
        try:
            response = send()
            body = response.json()
        except httpx.HTTPError as exc:
            raise IdentityProviderUnavailableError(
                f"the OpenID Provider {self.issuer} did not answer ({type(exc).__name__}): check that it runs and "
                "that this server reaches it (auth.oidc.issuer, auth.oidc.timeout_s)"
            ) from None
        except ValueError:
            body = None
        if not isinstance(body, dict) or (response.status_code >= 400 and "error" not in body):
            raise IdentityProviderUnavailableError(
                f"the OpenID Provider answered {url} with HTTP {response.status_code}, not the JSON expected"
            )
        return body

    def signing_key(self, kid: str | None) -> jwt.PyJWK:
        """The provider's key for a token's kid; unknown: the keys are fetched again (rate-limited) first."""
        self.metadata()
        found = _find(self._keys, kid)
        if found is None:
            with self._lock:
                found = _find(self._keys, kid)
                if found is None and self._may_fetch():
                    self._refresh()
                    found = _find(self._keys, kid)
        if found is None:
            raise AuthenticationError(
                "the token is signed by a key the provider does not publish (unknown key id): get a new token"
            )
        return found

    def claims(self, token: str, audience: list[str], *, kind: str = "access token") -> dict[str, Any]:
        """The claims of a token the provider signed for ``audience``; AuthenticationError says what is wrong."""
        settings = self.settings
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in settings.algorithms:
                raise jwt.InvalidAlgorithmError("algorithm not allowed")
            key = self.signing_key(header.get("kid"))
            return jwt.decode(
                token,
                key.key,
                algorithms=settings.algorithms,
                audience=audience,
                issuer=self.issuer,
                leeway=settings.leeway_s,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"the {kind} {self._why(exc, audience)}") from None

    def _why(self, exc: Exception, audience: list[str]) -> str:
        for kind, why in _REFUSALS:
            if isinstance(exc, kind):
                return why.format(audience=audience, issuer=self.issuer, algorithms=self.settings.algorithms)
        return f"is not valid ({type(exc).__name__})"


def _find(keys: jwt.PyJWKSet | None, kid: str | None) -> jwt.PyJWK | None:
    if keys is None:
        return None
    signing = [k for k in keys.keys if k.public_key_use in (None, "sig")]
    if kid is None:  # a token without kid: only a provider with one signing key can have signed it
        return signing[0] if len(signing) == 1 else None
    return next((k for k in signing if k.key_id == kid), None)


def principal_from_claims(claims: dict[str, Any], settings: OidcSettings, via: str) -> Principal:
    """Who the claims name: user from user_claim, groups from groups_claim (a list, or one name), e-mail."""
    user = claims.get(settings.user_claim)
    if not isinstance(user, str) or not user:
        raise AuthenticationError(
            f"the token has no {settings.user_claim!r} claim naming the user: set auth.oidc.user_claim to a claim "
            "the provider sends (e.g. sub, preferred_username, email)"
        )
    groups = claims.get(settings.groups_claim) or []
    groups = [groups] if isinstance(groups, str) else groups
    email = claims.get(settings.email_claim)
    return Principal(
        name=user,
        user=user,
        groups=frozenset(g for g in groups if isinstance(g, str) and g) if isinstance(groups, list) else frozenset(),
        via=via,
        email=email if isinstance(email, str) else None,
    )


class TokenVerifier:
    """``app.state.oidc``: bearer access tokens from the provider, checked; API keys pass through to the key ring."""

    def __init__(self, provider: OpenIdProvider) -> None:
        self.provider = provider
        self.settings = provider.settings
        self.audience = list(self.settings.audience) or [self.settings.client_id]

    def looks_like_token(self, token: str) -> bool:
        """A JWT (three base64url parts); API keys start with ``rag-`` and are never taken for one."""
        return not token.startswith(KEY_PREFIX) and bool(_JWT_SHAPE.match(token))

    def principal(self, token: str) -> Principal:
        return principal_from_claims(self.provider.claims(token, self.audience), self.settings, via="oidc")

    def close(self) -> None:
        self.provider.close()
