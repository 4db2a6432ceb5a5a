"""The ``auth`` and ``conversations`` sections: single sign-on (OIDC), directory groups (LDAP / Active Directory),
identity headers from a trusted reverse proxy, the browser session, and saved conversations.

Each identity source is off until configured (``auth.oidc.issuer``, ``auth.ldap.url``, ``auth.proxy.trusted``);
with none of them, API keys work exactly as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from rag.settings_sections import Section


class OidcSettings(Section):
    """An OpenID Provider: sign-in on the web page (authorization code + PKCE) and bearer access tokens on the API."""

    issuer: str | None = Field(
        None, description="The provider's issuer URL (its .well-known/openid-configuration is read). Unset: off."
    )
    client_id: str = Field("", description="This server's client id at the provider.")
    client_secret: SecretStr | None = Field(
        None, description="The client secret (a confidential client), e.g. from RAG_AUTH__OIDC__CLIENT_SECRET."
    )
    audience: list[str] = Field(
        default_factory=list,
        description="Audiences accepted in API access tokens ('aud'); default: the client id.",
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile", "email"], description="Scopes asked for at sign-in."
    )
    user_claim: str = Field("sub", description="The claim that names the user (the `user:` ACL token).")
    groups_claim: str = Field("groups", description="The claim that lists the user's groups (`group:` tokens).")
    email_claim: str = Field("email", description="The claim that holds the e-mail address.")
    public_url: str | None = Field(
        None,
        description="This server's address as browsers reach it (the redirect URI is PUBLIC_URL/auth/callback); "
        "default: the address of the request.",
    )
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "PS256", "ES256"], description="Signature algorithms accepted."
    )
    leeway_s: float = Field(30.0, ge=0, description="Clock skew allowed on exp / nbf / iat.")
    jwks_cache_s: float = Field(300.0, ge=0, description="How long the provider's keys (JWKS) are kept.")
    jwks_min_refresh_s: float = Field(
        10.0,
        ge=0,
        description="A token signed by a key not in the cached JWKS fetches the JWKS again (key rotation), at "
        "most this often.",
    )
    timeout_s: float = Field(5.0, gt=0, description="Timeout of each request to the provider.")


class LdapSettings(Section):
    """Directory groups: the groups of a signed-in user (OIDC or proxy) are read from LDAP / Active Directory."""

    url: str | None = Field(None, description="ldap:// or ldaps:// URL of the directory. Unset: off.")
    bind_dn: str | None = Field(None, description="DN to bind as (a read-only service account); unset: anonymous.")
    bind_password: SecretStr | None = Field(None, description="Its password, e.g. RAG_AUTH__LDAP__BIND_PASSWORD.")
    start_tls: bool = Field(False, description="Upgrade an ldap:// connection with StartTLS.")
    ca_file: Path | None = Field(
        None, description="CA certificate(s) (PEM) that sign the directory's TLS certificate; default: the system's."
    )
    user_base: str = Field("", description="Where users are searched, e.g. ou=people,dc=example,dc=org.")
    user_filter: str = Field(
        "(uid={user})", description="Finds the user's entry; {user} is the signed-in user name (escaped)."
    )
    group_base: str = Field("", description="Where groups are searched, e.g. ou=groups,dc=example,dc=org.")
    group_filter: str = Field(
        "(|(member={dn})(uniqueMember={dn}))",
        description="Finds the groups that list a member; {dn} is the member's DN (escaped).",
    )
    group_name_attribute: str = Field("cn", description="The attribute that names a group.")
    nested: bool = Field(True, description="Resolve nested groups: a member of a member group is a member.")
    max_depth: int = Field(10, ge=1, le=100, description="Deepest nesting followed.")
    group_map: dict[str, str] = Field(
        default_factory=dict,
        description="Directory group name -> access group name; groups not listed keep their own name.",
    )
    mapped_only: bool = Field(False, description="Only groups in group_map become access groups.")
    cache_ttl_s: float = Field(
        300.0, gt=0, description="A user's groups are read again after this long: removal takes effect within it."
    )
    stale_grace_s: float = Field(
        300.0,
        ge=0,
        description="While the directory cannot be reached, the groups read last are kept this long past the TTL "
        "(never more than that read gave); then, and for users not read before, requests get 503.",
    )
    timeout_s: float = Field(5.0, gt=0, description="Timeout of each LDAP request.")


class ProxySettings(Section):
    """Identity headers set by an authenticating reverse proxy, believed only from the proxy's own addresses."""

    trusted: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of the proxy. Empty: off. A request from any other address "
        "that carries any of the identity headers gets 401.",
    )
    user_header: str = Field("X-Remote-User", description="Header with the user name.")
    groups_header: str = Field("X-Remote-Groups", description="Header with the groups, separated by groups_separator.")
    email_header: str = Field("X-Remote-Email", description="Header with the e-mail address.")
    groups_separator: str = Field(",", min_length=1, description="Separator in the groups header.")


class SessionSettings(Section):
    """The web page's server-side session after an OIDC sign-in."""

    cookie_name: str = Field("rag_session", description="Name of the session cookie (HttpOnly, SameSite).")
    secure_cookie: bool = Field(
        True, description="Mark the cookie Secure (browsers still send it to http://localhost and 127.0.0.1)."
    )
    same_site: Literal["lax", "strict"] = Field("lax", description="The cookie's SameSite attribute.")
    lifetime_h: float = Field(8.0, gt=0, description="A session ends this long after sign-in.")
    idle_h: float = Field(2.0, gt=0, description="A session ends after this long without a request.")


class AuthSettings(Section):
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    ldap: LdapSettings = Field(default_factory=LdapSettings)
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    session: SessionSettings = Field(default_factory=SessionSettings)
    admin_groups: list[str] = Field(
        default_factory=list,
        description="Access groups whose members (signed in by OIDC, proxy or directory) get role admin.",
    )


class ConversationSettings(Section):
    """Saved conversations (data_dir/conversations) and feedback on answers."""

    enabled: bool = Field(True, description="Save conversations per user; off: nothing is kept past the answer.")
    retention_days: float = Field(
        0, ge=0, description="Conversations not updated for this many days are deleted; 0: kept until deleted."
    )
    max_per_user: int = Field(1000, ge=1, description="Most conversations one user keeps; the oldest go first.")
